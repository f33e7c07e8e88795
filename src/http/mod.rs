//! Plain HTTP routes on the service's listener: the JWKS and the hosted reset-password
//! page now, the JSON shim later.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

pub mod page;
pub mod reset_page;

use crate::service::Auth;

pub fn router(auth: Auth) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(page::STYLESHEET_PATH, get(page::stylesheet))
        .route(reset_page::PATH, reset_page::routes())
        .with_state(auth)
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
