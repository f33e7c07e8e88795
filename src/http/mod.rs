//! Plain HTTP on the service's listener: the JSON shim of the published APIs, the hosted
//! pages, the JWKS and the OpenAPI description. Handlers only translate to `Auth`
//! operations; errors take the shapes in `errors`.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::OnceLock;
use utoipa::OpenApi;

mod api;
mod cors;
mod email_page;
mod errors;
mod extract;
mod forward_auth;
mod link_page;
mod oauth;
pub mod page;
mod password_api;
pub mod reset_page;

use crate::service::{Auth, LINK_PATH};

/// JSON bodies beyond this are refused before they are read whole.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(auth: Auth) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/openapi.json", get(openapi))
        .route(page::STYLESHEET_PATH, get(page::stylesheet))
        .route(LINK_PATH, get(link_page::show).post(link_page::confirm))
        .route(reset_page::PATH, reset_page::routes())
        .route(email_page::PATH, email_page::routes())
        .merge(api::routes())
        .merge(password_api::routes())
        .merge(forward_auth::routes())
        .merge(oauth::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(cors::CorsLayer { auth: auth.clone() })
        .with_state(auth)
}

/// `GET /metrics` (Prometheus text format).
pub fn metrics_routes(auth: Auth) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(auth)
}

async fn metrics(State(auth): State<Auth>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&auth).await,
    )
}

/// Public keys for verifying issued JWTs locally; cacheable for a few minutes.
async fn jwks(State(auth): State<Auth>) -> impl IntoResponse {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(auth.keys().jwks()),
    )
}

/// The OpenAPI 3 description of the shim, generated from the handlers' own types.
async fn openapi() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        let mut doc = api::PasswordlessApiDoc::openapi();
        doc.merge(password_api::PasswordApiDoc::openapi());
        doc.info.title = "Portcullis HTTP API".into();
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        doc.info.description = Some(
            "The JSON/HTTP shim of Portcullis: the published passwordless and password APIs, path for path."
                .into(),
        );
        doc.to_json().expect("the OpenAPI document serializes")
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document.as_str(),
    )
}

/// Unknown paths in the shim's own style: JSON errors under `/api` and `/project`, plain
/// text elsewhere. (The listener's fallback calls it for every request that is not gRPC.)
pub fn not_found(uri: &Uri) -> Response {
    shim_error(
        uri.path(),
        StatusCode::NOT_FOUND,
        format!("no endpoint at {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!("{method} is not served at {}", uri.path());
    shim_error(uri.path(), StatusCode::METHOD_NOT_ALLOWED, message)
}

fn shim_error(path: &str, status: StatusCode, message: String) -> Response {
    if path.starts_with("/project/") {
        errors::password_error_response(status, message)
    } else if path.starts_with("/api/") {
        (status, Json(errors::ErrorBody { error: message })).into_response()
    } else {
        (status, format!("{message}\n")).into_response()
    }
}
