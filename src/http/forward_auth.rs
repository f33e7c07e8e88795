//! Forward auth over HTTP, one handler for three proxy dialects:
//! - nginx `auth_request`, Traefik `forwardAuth` and Caddy `forward_auth`:
//!   `/auth/forward?project_id=...[&allow_public=true]`;
//! - Envoy's HTTP ext_authz with `path_prefix: /auth/envoy/PROJECT_ID`: any method, the
//!   original path appended. The project sits in the prefix, which the operator writes,
//!   never in what the client controls (its path and query).
//!
//! 200 with the `x-portcullis-*` headers for the proxy to copy to the upstream (all six,
//! empty where they do not apply), or 401 with a `WWW-Authenticate` challenge and a small
//! JSON body.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Deserialize;

use super::errors::ApiError;
use crate::domain::{PresentedToken, Refusal};
use crate::service::{Auth, GateCheck, GateDecision};

pub fn routes() -> axum::Router<Auth> {
    axum::Router::new()
        .route("/auth/forward", any(forward))
        .route("/auth/envoy/{project_id}", any(envoy))
        .route("/auth/envoy/{project_id}/{*path}", any(envoy))
}

#[derive(Deserialize)]
struct ForwardParams {
    project_id: Option<String>,
    #[serde(default)]
    allow_public: bool,
}

async fn forward(
    State(auth): State<Auth>,
    Query(params): Query<ForwardParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    tracing::debug!(
        method = text("x-forwarded-method"),
        uri = text("x-forwarded-uri").or(text("x-original-uri")),
        host = text("x-forwarded-host"),
        "forward auth"
    );
    decide(
        &auth,
        &headers,
        params.project_id.as_deref(),
        params.allow_public,
    )
    .await
}

/// Envoy's HTTP ext_authz: the project from the prefix; the rest of the path (and any
/// query) is the client's and is not read.
async fn envoy(
    State(auth): State<Auth>,
    Path(params): Path<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let project_id = params
        .iter()
        .find(|(key, _)| key == "project_id")
        .map(|(_, value)| value.as_str());
    decide(&auth, &headers, project_id, false).await
}

async fn decide(
    auth: &Auth,
    headers: &HeaderMap,
    project_id: Option<&str>,
    allow_public: bool,
) -> Result<Response, ApiError> {
    let check = GateCheck {
        presented: PresentedToken::from_headers(|name| {
            headers.get(name).and_then(|v| v.to_str().ok())
        }),
        project_id,
        allow_public,
    };
    Ok(match auth.gate(check).await? {
        GateDecision::Allow(pass) => {
            let mut response = StatusCode::OK.into_response();
            for (name, value) in pass.set {
                if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                    response
                        .headers_mut()
                        .insert(HeaderName::from_static(name), value);
                }
            }
            // Every header is in the answer, empty when it does not apply: a proxy that
            // copies a header only when present (Caddy before 2.7 writes its placeholder
            // instead) would otherwise pass the client's own copy through.
            for name in pass.remove {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static(name), HeaderValue::from_static(""));
            }
            response
        }
        GateDecision::Deny(refusal) => refused(refusal),
    })
}

fn refused(refusal: Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        refusal.body(),
    )
        .into_response();
    if let Some(challenge) = refusal.challenge() {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}
