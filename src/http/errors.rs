//! How errors look on the HTTP shim. The two published APIs shape them differently:
//! the passwordless one as `{ "error": "message" }`, the password one as
//! `{ "statusCode", "message", "error" }`. The status code comes from
//! [`Error::http_status`] either way, so the mapping lives in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// An error of the passwordless API.
#[derive(Debug)]
pub struct ApiError(pub Error);

/// `{ "error": "what went wrong" }`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a developer to act on.
    pub error: String,
}

impl<E: Into<Error>> From<E> for ApiError {
    fn from(error: E) -> ApiError {
        ApiError(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.log();
        let status = self.0.http_status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.0.to_string(),
            }),
        )
            .into_response();
        add_retry_after(&self.0, &mut response);
        response
    }
}

/// An error of the password API: `{ statusCode, message, error }`.
#[derive(Debug)]
pub struct PasswordApiError(pub Error);

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordErrorBody {
    /// The HTTP status code, repeated.
    pub status_code: u16,
    /// What went wrong.
    pub message: String,
    /// The status's reason phrase, e.g. "Bad Request".
    pub error: String,
}

impl<E: Into<Error>> From<E> for PasswordApiError {
    fn from(error: E) -> PasswordApiError {
        PasswordApiError(error.into())
    }
}

impl IntoResponse for PasswordApiError {
    fn into_response(self) -> Response {
        self.0.log();
        let mut response = password_error_response(self.0.http_status(), self.0.to_string());
        add_retry_after(&self.0, &mut response);
        response
    }
}

/// `{ statusCode, message, error }` with the status's reason phrase as `error`.
pub fn password_error_response(status: StatusCode, message: String) -> Response {
    let body = PasswordErrorBody {
        status_code: status.as_u16(),
        message,
        error: status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    (status, Json(body)).into_response()
}

fn add_retry_after(error: &Error, response: &mut Response) {
    if let Error::TooManyRequests {
        retry_after_seconds,
        ..
    } = error
        && let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
}

/// A request the shim refuses before any operation runs (malformed query or body).
pub fn bad_request(message: impl Into<String>) -> Error {
    Error::invalid("request", message.into())
}

/// For rejections that carry their own status (e.g. a body over the size limit).
pub fn rejection(status: StatusCode, message: String) -> Error {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Error::invalid("body", "is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Error::invalid(
            "body",
            "must be JSON: send `Content-Type: application/json`",
        ),
        _ => bad_request(message),
    }
}
