//! Standard discovery and introspection, so gateways and meshes configure by issuer:
//! OpenID Provider metadata (`/.well-known/openid-configuration`) and RFC 7662 token
//! introspection (`POST /oauth/introspect`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::domain::bearer_token;
use crate::service::{Auth, Authorization};

pub const INTROSPECTION_PATH: &str = "/oauth/introspect";

pub fn routes() -> axum::Router<Auth> {
    axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route(INTROSPECTION_PATH, post(introspect))
}

/// The issuer's metadata: where its keys are and how its tokens are signed. There is no
/// authorization endpoint (logins go through the APIs), so this is what JWT verifiers
/// (Istio RequestAuthentication, Envoy jwt_authn, gateways) need, not a full OIDC
/// provider.
async fn discovery(State(auth): State<Auth>) -> impl IntoResponse {
    let issuer = auth.keys().issuer();
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "introspection_endpoint": format!("{issuer}{INTROSPECTION_PATH}"),
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "sid"],
        })),
    )
}

#[derive(Deserialize)]
struct IntrospectionForm {
    #[serde(default)]
    token: String,
}

/// RFC 7662: the caller authenticates with its project's admin token as Bearer; live
/// tokens of that project are `active`, everything else is `{"active": false}`.
async fn introspect(
    State(auth): State<Auth>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<IntrospectionForm>,
) -> Response {
    let caller = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let Some(caller) = caller else {
        return unauthorized("an admin token is required as Bearer");
    };
    let answer = match auth.introspect(caller, form.token.trim()).await {
        Ok(answer) => answer,
        Err(crate::error::Error::Unauthenticated(message)) => return unauthorized(&message),
        Err(error) => return super::errors::ApiError(error).into_response(),
    };
    let mut body = match answer {
        Some(Authorization::User {
            uid,
            project_id,
            expires_at,
            issued_at,
            name,
            ..
        }) => json!({
            "active": true,
            "sub": uid,
            "aud": project_id,
            "client_id": project_id,
            "username": name,
            "exp": expires_at,
            "iat": issued_at,
            "iss": auth.keys().issuer(),
            "token_type": "Bearer",
        }),
        _ => json!({ "active": false }),
    };
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|_, value| !value.is_null());
    }
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    )
        .into_response()
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "invalid_client", "error_description": message })),
    )
        .into_response()
}
