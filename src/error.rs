//! The one error type every operation returns, and its mapping to gRPC status codes.
//! Clients see stable, actionable messages; internal causes are logged, never returned.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed, missing or oversized input. Nothing was written.
    #[error("{field} {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },

    /// The credential is missing, unknown, expired or wrong.
    #[error("{0}")]
    Unauthenticated(String),

    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    AlreadyExists(String),

    /// The request is well-formed but the state does not allow it (expired, used up,
    /// disabled by the project).
    #[error("{0}")]
    FailedPrecondition(String),

    /// The password is right, but the project wants the email confirmed first.
    #[error("{0}")]
    EmailNotConfirmed(String),

    /// Too many requests; the client may retry after the given number of seconds.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_seconds: i64,
    },

    /// The database or another dependency cannot be reached right now.
    #[error("the service is temporarily unavailable, retry shortly")]
    Unavailable(#[source] StoreError),

    /// The database's storage is full: writes fail until space is freed.
    #[error("storage is full: nothing can be saved until the operator frees space; retry later")]
    StorageFull(#[source] StoreError),

    #[error("an internal error occurred")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field,
            message: message.into(),
        }
    }

    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::Unauthenticated(message.into())
    }

    pub fn failed_precondition(message: impl Into<String>) -> Error {
        Error::FailedPrecondition(message.into())
    }

    /// The HTTP status that fits, for the JSON shim and the hosted pages.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::FailedPrecondition(_) => StatusCode::GONE,
            Error::EmailNotConfirmed(_) => StatusCode::FORBIDDEN,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::StorageFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Logs what the client will not see: internal causes with their chain.
    pub fn log(&self) {
        match self {
            Error::Unavailable(cause) => tracing::warn!(error = %cause, "dependency unavailable"),
            Error::StorageFull(cause) => tracing::error!(error = %cause, "storage is full"),
            Error::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            _ => {}
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Error {
        match error {
            StoreError::Unavailable(_) => Error::Unavailable(error),
            StoreError::StorageFull(_) => Error::StorageFull(error),
            other => Error::Internal(other.into()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> tonic::Status {
        use tonic::Code;
        error.log();
        let code = match &error {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) | Error::EmailNotConfirmed(_) => Code::FailedPrecondition,
            Error::TooManyRequests { .. } => Code::ResourceExhausted,
            Error::Unavailable(_) | Error::StorageFull(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        };
        let mut status = tonic::Status::new(code, error.to_string());
        if let Error::TooManyRequests {
            retry_after_seconds,
            ..
        } = &error
            && let Ok(value) = retry_after_seconds.to_string().parse()
        {
            status.metadata_mut().insert("retry-after", value);
        }
        status
    }
}
