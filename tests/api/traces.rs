//! OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the binary exports spans over
//! OTLP to a collector the test runs; a `traceparent` from the caller makes the request's
//! span its child, and database transactions are children of the request.

use crate::helpers::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_traceparent_parents_the_request_span_and_transactions_are_children() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.path().join("t.db").display()))
        .env("PORTCULLIS_MAIL_OUTBOX", dir.path().join("outbox"))
        .env("PORTCULLIS_SHUTDOWN_GRACE", "0")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector_port}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let project = first_start_project(child.stdout.take().unwrap());
    let (app_token, project_id) = (project["app_token"].clone(), project["project_id"].clone());

    let trace_id: [u8; 16] = rand_bytes();
    let http_parent: [u8; 8] = rand_bytes();
    let grpc_parent: [u8; 8] = rand_bytes();
    let traceparent = |parent: &[u8]| format!("00-{}-{}-01", hex(&trace_id), hex(parent));
    let started = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/api/authenticate?name=ada%40example.com&token={app_token}"
        ))
        .header("traceparent", traceparent(&http_parent))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), reqwest::StatusCode::OK);
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut request = tonic::Request::new(portcullis::grpc::pb::AuthorizeRequest {
        token: "usr_unknown".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("traceparent", traceparent(&grpc_parent).parse().unwrap());
    portcullis::grpc::pb::authentication_service_client::AuthenticationServiceClient::new(channel)
        .authorize(request)
        .await
        .unwrap();

    let found = wait_for(|| {
        let spans = collector.spans.lock().unwrap().clone();
        let ours = |parent: &[u8; 8]| {
            spans
                .iter()
                .find(|s| s.trace_id == trace_id && s.parent_span_id == parent)
                .cloned()
        };
        let http = ours(&http_parent)?;
        let grpc = ours(&grpc_parent)?;
        let transaction = spans
            .iter()
            .find(|s| s.name == "db.transaction" && s.parent_span_id == http.span_id)
            .cloned()?;
        Some((http, grpc, transaction))
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let (http, grpc, transaction) = found.unwrap_or_else(|| {
        let names: Vec<String> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| format!("{} parent {}", s.name, hex(&s.parent_span_id)))
            .collect();
        panic!("no span with the caller as parent, or no transaction under it: {names:?}")
    });
    assert_eq!(http.name, "api/authenticate");
    assert_eq!(grpc.name, "portcullis.v1.AuthenticationService/Authorize");
    assert_eq!(transaction.trace_id, trace_id.to_vec());
    let named = http
        .attributes
        .iter()
        .find(|a| a.key == "project_id")
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                Some(s.clone())
            }
            _ => None,
        });
    assert_eq!(
        named.as_deref(),
        Some(project_id.as_str()),
        "the request span names its project: {:?}",
        http.attributes
    );
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes[0] |= 1; // never all zero (an invalid id)
    bytes
}
