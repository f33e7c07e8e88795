//! Extractors whose rejections speak the shim's error format instead of axum's plain
//! text: `ApiQuery`/`ApiJson` for the passwordless API, `PasswordJson` for the password
//! API.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

use super::errors::{ApiError, PasswordApiError, bad_request, rejection};
use crate::error::Error;
use crate::service::Auth;

/// Query parameters; unknown parameters are refused by the types' `deny_unknown_fields`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e: QueryRejection| ApiError(query_error(e)))
    }
}

fn query_error(rejection: QueryRejection) -> Error {
    let text = rejection.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    bad_request(format!("has invalid query parameters: {detail}"))
}

/// A JSON body of the passwordless API.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| ApiJson(value))
            .map_err(|e| ApiError(json_error(e)))
    }
}

/// A JSON body of the password API.
pub struct PasswordJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PasswordJson<T> {
    type Rejection = PasswordApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| PasswordJson(value))
            .map_err(|e| PasswordApiError(json_error(e)))
    }
}

fn json_error(error: JsonRejection) -> Error {
    match &error {
        JsonRejection::JsonDataError(e) => {
            bad_request(format!("has an invalid JSON body: {}", e.body_text()))
        }
        JsonRejection::JsonSyntaxError(_) => bad_request("has a body that is not valid JSON"),
        _ => rejection(error.status(), error.body_text()),
    }
}

/// The client's address: the peer, or whom a trusted proxy's `X-Forwarded-For` names.
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<Auth> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, auth: &Auth) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(ClientAddress(auth.client_address(peer, forwarded)))
    }
}
