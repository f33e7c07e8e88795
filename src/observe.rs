//! What operators read: one log line per request at INFO (transport, RPC or route,
//! status, latency, request id, project id, client address) and one per security event
//! (target `security`). Never a token, code or password: only ids and outcomes.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use futures_util::future::BoxFuture;
use prost::Message;
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;
use tracing::Instrument;

use crate::service::Auth;

tokio::task_local! {
    /// What the operations of the request being served noted about it.
    static NOTES: Mutex<Option<String>>;
}

/// Notes the project the current request acts for, for its log line. Outside a request
/// (a background task, the command line) it does nothing.
pub fn note_project(project_id: &str) {
    let _ = NOTES.try_with(|notes| {
        if let Ok(mut notes) = notes.lock() {
            notes.get_or_insert_with(|| project_id.to_owned());
        }
    });
}

/// The route template a request matched (`/project/{project_id}/auth/login`), put on the
/// response by [`TagRouteLayer`] for the metrics: paths themselves are unbounded.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub axum::extract::MatchedPath);

/// Inside the router (as a route layer): remembers which route matched. A plain tower
/// layer rather than a boxed middleware: it wraps every route, on the hot path.
#[derive(Clone, Copy, Debug)]
pub struct TagRouteLayer;

impl<S> tower::Layer<S> for TagRouteLayer {
    type Service = TagRoute<S>;

    fn layer(&self, inner: S) -> TagRoute<S> {
        TagRoute { inner }
    }
}

#[derive(Clone, Debug)]
pub struct TagRoute<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for TagRoute<S>
where
    S: tower::Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TaggedRoute<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let matched = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .cloned();
        TaggedRoute {
            inner: self.inner.call(request),
            matched,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct TaggedRoute<F> {
        #[pin]
        inner: F,
        matched: Option<axum::extract::MatchedPath>,
    }
}

impl<F, E> std::future::Future for TaggedRoute<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(matched) = this.matched.take() {
            response.extensions_mut().insert(RouteLabel(matched));
        }
        std::task::Poll::Ready(Ok(response))
    }
}

/// Request ids for requests that came without one: UUIDs, as tower-http's
/// `MakeRequestUuid` makes them, from the service's pool of OS randomness (a system call
/// each was a measurable part of a request).
#[derive(Clone, Copy, Debug)]
pub struct NewRequestId;

impl tower_http::request_id::MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<tower_http::request_id::RequestId> {
        let id = crate::domain::random::uuid_v4().to_string();
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// `service/method` of every RPC this server answers, read once from its descriptors.
fn known_rpcs() -> &'static HashSet<String> {
    static RPCS: OnceLock<HashSet<String>> = OnceLock::new();
    RPCS.get_or_init(|| {
        let mut rpcs: HashSet<String> = [
            "grpc.health.v1.Health/Check",
            "grpc.health.v1.Health/Watch",
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .map(String::from)
        .into();
        for set in [
            crate::grpc::FILE_DESCRIPTOR_SET,
            crate::grpc::ENVOY_AUTHZ_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set).expect("built-in descriptors");
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        rpcs.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        rpcs
    })
}

/// `(service, method)` of a gRPC path, for the RPCs this server has; any other path
/// (anyone can send any) is one "unknown" label, so callers cannot grow the series.
fn rpc_labels(path: &str) -> (&'static str, &'static str) {
    known_rpcs()
        .get(path.trim_start_matches('/'))
        .and_then(|rpc| rpc.split_once('/'))
        .unwrap_or(("unknown", "unknown"))
}

/// The name of a gRPC status code as go-grpc-prometheus spells it (dashboards filter on
/// `grpc_code!="OK"`), without formatting one per call.
fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|code| NAMES.get(code))
        .copied()
        .unwrap_or("Unknown")
}

/// The request's span, log line and metrics, written once it is answered. A plain tower
/// layer rather than a boxed middleware: it sits on the hot path, and calling the inner
/// service directly spares cloning the whole stack of routes under it per request.
#[derive(Clone)]
pub struct LogRequestLayer {
    pub auth: Auth,
}

impl<S> tower::Layer<S> for LogRequestLayer {
    type Service = LogRequest<S>;

    fn layer(&self, inner: S) -> LogRequest<S> {
        LogRequest {
            auth: self.auth.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct LogRequest<S> {
    auth: Auth,
    inner: S,
}

impl<S> tower::Service<Request<Body>> for LogRequest<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        log_request(&self.auth, request, &mut self.inner)
    }
}

/// Logs the request once `inner` has answered it.
fn log_request<S>(
    auth: &Auth,
    request: Request<Body>,
    inner: &mut S,
) -> BoxFuture<'static, Result<Response, Infallible>>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    let started = Instant::now();
    let grpc = crate::server::is_grpc(&request);
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    // Set by the request-id layer outside this one: the caller's, or a new one.
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // The client as the rest of the service sees it (X-Forwarded-For from a trusted proxy).
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let client = auth
        .client_address(peer, forwarded)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let rpc = grpc.then(|| rpc_labels(&path));
    if let Some((service, method)) = rpc {
        crate::metrics::rpc_started(service, method);
    }
    let span = tracing::info_span!(
        "request",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        transport = if grpc { "grpc" } else { "http" },
        request_id = request_id.as_str(),
        method = %method,
        project_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(parent) = crate::traces::parent_from(request.headers()) {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    // Made now, polled in the request's scope and span below (calls only build futures).
    let answer = inner.call(request);
    Box::pin(async move {
        let (response, project) = NOTES
            .scope(
                Mutex::new(None),
                async move {
                    let Ok(response) = answer.await;
                    let project = NOTES.with(|notes| notes.lock().ok().and_then(|mut n| n.take()));
                    (response, project)
                }
                .instrument(span.clone()),
            )
            .await;
        let took = started.elapsed();
        let latency_ms = took.as_secs_f64() * 1e3;
        let project = project.unwrap_or_default();
        span.record("project_id", project.as_str());
        if let Some((service, method)) = rpc {
            // Errors are trailers-only answers: their status is in the headers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or(0);
            let code = grpc_code_name(code);
            span.record("status", code);
            crate::metrics::rpc_handled(service, method, code, took);
            tracing::info!(
                target: "request",
                transport = "grpc",
                rpc = %path.trim_start_matches('/'),
                status = %code,
                latency_ms = format_args!("{latency_ms:.2}"),
                request_id = %request_id,
                project_id = %project,
                client = %client,
                "request"
            );
        } else {
            span.record("status", response.status().as_u16());
            let route = response
                .extensions()
                .get::<RouteLabel>()
                .map_or("unmatched", |label| label.0.as_str());
            crate::metrics::http_handled(route, &method, response.status().as_u16(), took);
            tracing::info!(
                target: "request",
                transport = "http",
                method = %method,
                route = %path,
                status = response.status().as_u16(),
                latency_ms = format_args!("{latency_ms:.2}"),
                request_id = %request_id,
                project_id = %project,
                client = %client,
                "request"
            );
        }
        Ok(response)
    })
}

/// A security event, as one log line with target `security`.
#[macro_export]
macro_rules! security_event {
    ($event:literal $(, $($field:tt)*)?) => {
        tracing::info!(target: "security", event = $event $(, $($field)*)?, "security event")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_go_grpc_prometheus_and_unknown_rpcs_are_one_label() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(1), "Canceled");
        for code in 2..=16 {
            assert_eq!(
                grpc_code_name(code),
                format!("{:?}", tonic::Code::from_i32(code))
            );
        }
        assert_eq!(grpc_code_name(99), "Unknown");
        assert_eq!(
            rpc_labels("/portcullis.v1.AuthenticationService/Authorize"),
            ("portcullis.v1.AuthenticationService", "Authorize")
        );
        assert_eq!(
            rpc_labels("/envoy.service.auth.v3.Authorization/Check"),
            ("envoy.service.auth.v3.Authorization", "Check")
        );
        assert_eq!(rpc_labels("/grpc.health.v1.Health/Check").1, "Check");
        // A known service with a made-up method must not become a series of its own.
        assert_eq!(
            rpc_labels("/portcullis.v1.AuthenticationService/Made_Up_1234"),
            ("unknown", "unknown")
        );
        assert_eq!(rpc_labels("/made.up.Service/X"), ("unknown", "unknown"));
    }
}
