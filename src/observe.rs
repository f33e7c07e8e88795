//! What operators read: one log line per request at INFO (transport, RPC or route,
//! status, latency, request id, project id, client address) and one per security event
//! (target `security`). Never a token, code or password: only ids and outcomes.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;
use tracing::Instrument;

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
/// response by [`tag_route`] for the metrics: paths themselves are unbounded.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub String);

/// Inside the router (as a route layer): remembers which route matched.
pub async fn tag_route(
    matched: Option<axum::extract::MatchedPath>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response
            .extensions_mut()
            .insert(RouteLabel(matched.as_str().to_owned()));
    }
    response
}

/// `(service, method)` of a gRPC path, for the services this server has; unknown paths
/// (anyone can send any) are one "unknown" label.
fn rpc_labels(path: &str) -> (&'static str, &str) {
    const OTHERS: [&str; 3] = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let known = |service: &str| {
        crate::grpc::SERVICE_NAMES
            .iter()
            .chain(&OTHERS)
            .find(|known| **known == service)
            .copied()
    };
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if !method.contains('/') => match known(service) {
            Some(service) => (service, method),
            None => ("unknown", "unknown"),
        },
        _ => ("unknown", "unknown"),
    }
}

/// The name of a gRPC status code, as tonic spells it (without formatting one per call).
fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "Ok",
        "Cancelled",
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

/// Logs each request once it is answered.
pub async fn log_request(request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let grpc = crate::server::is_grpc(&request);
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let caller_request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        transport = if grpc { "grpc" } else { "http" },
        request_id = caller_request_id.as_deref().unwrap_or_default(),
        method = %method,
        project_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(parent) = crate::traces::parent_from(request.headers()) {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    let (response, project) = NOTES
        .scope(
            Mutex::new(None),
            async move {
                let response = next.run(request).await;
                let project = NOTES.with(|notes| notes.lock().ok().and_then(|n| n.clone()));
                (response, project)
            }
            .instrument(span.clone()),
        )
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    // The caller's id, or the one the service gave the request (on the response).
    let request_id = caller_request_id
        .or_else(|| {
            response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let project = project.unwrap_or_default();
    span.record("project_id", project.as_str());
    if grpc {
        // Errors are trailers-only answers: their status is in the headers.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        let code = grpc_code_name(code);
        span.record("status", code);
        let (service, method) = rpc_labels(&path);
        crate::metrics::rpc_handled(service, method, code, started.elapsed());
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
        crate::metrics::http_handled(
            route,
            method.as_str(),
            response.status().as_u16(),
            started.elapsed(),
        );
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
    response
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
    fn code_names_follow_tonic_and_unknown_services_are_one_label() {
        for code in 0..=16 {
            assert_eq!(
                grpc_code_name(code),
                format!("{:?}", tonic::Code::from_i32(code))
            );
        }
        assert_eq!(
            rpc_labels("/portcullis.v1.AuthenticationService/Authorize"),
            ("portcullis.v1.AuthenticationService", "Authorize")
        );
        assert_eq!(rpc_labels("/made.up.Service/X"), ("unknown", "unknown"));
    }
}
