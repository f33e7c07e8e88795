//! The email + password HTTP API (`/project/{PROJECT_ID}/auth/...`), path for path as
//! published: 201 for register, login and forgot-password, 200 for me; every error as
//! `{ statusCode, message, error }`. The operations are the ones PasswordService calls.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::{PasswordApiError, PasswordErrorBody};
use super::extract::{ClientAddress, PasswordJson};
use crate::error::Error;
use crate::service::Auth;

pub fn routes() -> axum::Router<Auth> {
    axum::Router::new()
        .route("/project/{project_id}/auth/register", post(register))
        .route("/project/{project_id}/auth/login", post(login))
        .route("/project/{project_id}/auth/me", get(me))
        .route("/project/{project_id}/auth/password/forgot", post(forgot))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// User's email.
    email: String,
    /// User's password: 8 to 128 characters, not an easy guess.
    password: String,
}

/// Registers a user. A known email is not revealed (unless the project chose so): the
/// answer is the same, and the owner of the address gets a mail.
#[utoipa::path(post, path = "/project/{project_id}/auth/register", tag = "password",
    params(("project_id" = String, Path, description = "PROJECT_ID")),
    request_body = RegisterBody,
    responses((status = 201, description = "Registered; no body"), (status = "4XX", body = PasswordErrorBody)))]
async fn register(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    PasswordJson(body): PasswordJson<RegisterBody>,
) -> Result<StatusCode, PasswordApiError> {
    auth.register_password(&project_id, &body.email, &body.password)
        .await?;
    Ok(StatusCode::CREATED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The user's email.
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenBody {
    /// A JWT; send it as `Authorization: Bearer <accessToken>`.
    access_token: String,
}

/// Logs a user in. Unknown emails and wrong passwords get the same answer; repeated
/// failures lock the account or the client address for a while (429 with Retry-After).
#[utoipa::path(post, path = "/project/{project_id}/auth/login", tag = "password",
    params(("project_id" = String, Path, description = "PROJECT_ID")),
    request_body = LoginBody,
    responses((status = 201, body = AccessTokenBody), (status = "4XX", body = PasswordErrorBody)))]
async fn login(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    ClientAddress(client): ClientAddress,
    PasswordJson(body): PasswordJson<LoginBody>,
) -> Result<Response, PasswordApiError> {
    let session = auth
        .password_login(&project_id, &body.username, &body.password, client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AccessTokenBody {
            access_token: session.jwt,
        }),
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct MeBody {
    /// User's id (the 36-character uid).
    id: String,
    /// User's email.
    email: String,
}

/// The logged-in user.
#[utoipa::path(get, path = "/project/{project_id}/auth/me", tag = "password",
    params(("project_id" = String, Path, description = "PROJECT_ID"),
        ("Authorization" = String, Header, description = "Bearer ACCESS_TOKEN")),
    responses((status = 200, body = MeBody), (status = "4XX", body = PasswordErrorBody)))]
async fn me(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<MeBody>, PasswordApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::domain::bearer_token)
        .ok_or_else(|| {
            Error::unauthenticated("send the access token as `Authorization: Bearer <accessToken>`")
        })?;
    let me = auth.me(&project_id, token).await?;
    Ok(Json(MeBody {
        id: me.id,
        email: me.email,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotBody {
    /// User's email.
    email: String,
}

/// Mails a reset link to the address if it has an account; answers the same either way.
#[utoipa::path(post, path = "/project/{project_id}/auth/password/forgot", tag = "password",
    params(("project_id" = String, Path, description = "PROJECT_ID")),
    request_body = ForgotBody,
    responses((status = 201, description = "Accepted; no body"), (status = "4XX", body = PasswordErrorBody)))]
async fn forgot(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    PasswordJson(body): PasswordJson<ForgotBody>,
) -> Result<StatusCode, PasswordApiError> {
    auth.forgot_password(&project_id, &body.email).await?;
    Ok(StatusCode::CREATED)
}

/// The OpenAPI description of these paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(register, login, me, forgot),
    tags((name = "password", description = "The email + password API, per project"))
)]
pub struct PasswordApiDoc;
