//! The passwordless HTTP API (`/api/...`), path for path as published: thin translation to
//! the same `Auth` operations the gRPC services call. Success is HTTP 200 with
//! `error: false` and the documented fields; failures are `{ "error": "message" }` with a
//! fitting status.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::errors::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiQuery, ClientAddress};
use crate::domain::PresentedToken;
use crate::service::{Auth, Authenticated, Authorization, IssuedSession, RecoveryOutcome};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn routes() -> axum::Router<Auth> {
    axum::Router::new()
        .route("/api/authenticate", get(authenticate))
        .route("/api/verify/confirm", get(confirm))
        .route("/api/verify/poll", get(poll))
        .route("/api/resend-code", get(resend_code))
        .route("/api/authorize", get(authorize))
        .route("/api/hasura", get(hasura).post(hasura_post))
        .route("/api/recovery", get(recovery))
        .route("/api/change", get(change))
        .route("/api/logout", get(logout))
        .route("/api/delete", delete(delete_user))
        .route("/api/user", get(user))
        .route("/api/encrypt", put(encrypt))
        .route("/api/logs", get(list_logs).post(add_log))
        .route("/api/auth0", put(auth0))
}

/// `{ "error": false }`
#[derive(Serialize, ToSchema)]
pub struct Done {
    /// Always `false` on success.
    pub error: bool,
}

const DONE: Done = Done { error: false };

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthenticateParams {
    /// Email or phone number; omit for an anonymous login.
    #[serde(default)]
    name: Option<String>,
    /// APP_TOKEN, ADMIN_TOKEN (import) or USER_TOKEN (name update).
    token: String,
}

#[derive(Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticateBody {
    error: bool,
    /// The CODE_TOKEN, when a code was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    code_token: Option<String>,
    /// Whether the user is new.
    registration: bool,
    /// Only for anonymous logins: the USER_TOKEN.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
}

/// Registration and login: creates the user if the name is new and sends a code.
#[utoipa::path(get, path = "/api/authenticate", params(AuthenticateParams), tag = "passwordless",
    responses((status = 200, body = AuthenticateBody), (status = "4XX", body = ErrorBody)))]
async fn authenticate(
    State(auth): State<Auth>,
    ClientAddress(client): ClientAddress,
    ApiQuery(params): ApiQuery<AuthenticateParams>,
) -> ApiResult<AuthenticateBody> {
    let name = params.name.unwrap_or_default();
    Ok(Json(
        match auth.authenticate(&params.token, &name, client).await? {
            Authenticated::CodeSent {
                code_token,
                registration,
            } => AuthenticateBody {
                code_token: Some(code_token),
                registration,
                ..Default::default()
            },
            Authenticated::Anonymous(session) => AuthenticateBody {
                registration: true,
                id: Some(session.user_id.to_string()),
                uid: Some(session.uid),
                token: Some(session.token),
                ..Default::default()
            },
            Authenticated::Imported { registration } => AuthenticateBody {
                registration,
                ..Default::default()
            },
        },
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConfirmParams {
    /// The code from the mail or text.
    code: String,
    /// The CODE_TOKEN.
    token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonWebTokenBody {
    token: String,
    /// ISO 8601.
    expiration_date: String,
}

#[derive(Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    error: bool,
    /// The USER_TOKEN; absent while a poll finds no confirmation yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_web_token: Option<JsonWebTokenBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_text: Option<String>,
}

impl From<IssuedSession> for SessionBody {
    fn from(session: IssuedSession) -> SessionBody {
        SessionBody {
            error: false,
            token: Some(session.token),
            json_web_token: Some(JsonWebTokenBody {
                token: session.jwt,
                expiration_date: iso_date(session.jwt_expires_at),
            }),
            user_id: Some(session.user_id.to_string()),
            uid: Some(session.uid),
            encrypted: Some(session.encrypted),
            encryption_text: session.encryption_text,
        }
    }
}

fn iso_date(unix_seconds: i64) -> String {
    prost_types::Timestamp {
        seconds: unix_seconds,
        nanos: 0,
    }
    .to_string()
}

/// Confirms a login request with the code sent to the user.
#[utoipa::path(get, path = "/api/verify/confirm", params(ConfirmParams), tag = "passwordless",
    responses((status = 200, body = SessionBody), (status = "4XX", body = ErrorBody)))]
async fn confirm(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<ConfirmParams>,
) -> ApiResult<SessionBody> {
    Ok(Json(
        auth.confirm(&params.code, &params.token).await?.into(),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenParams {
    token: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeParams {
    token: String,
    /// The project the caller serves: another project's token gets role `public`.
    #[serde(default)]
    project_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectParams {
    /// The project the caller serves: another project's token gets role `public`.
    #[serde(default)]
    project_id: Option<String>,
}

/// Whether the magic link was followed; once it was, the session (once).
#[utoipa::path(get, path = "/api/verify/poll", params(TokenParams), tag = "passwordless",
    responses((status = 200, body = SessionBody, description = "`token` is absent until the link was followed"),
        (status = "4XX", body = ErrorBody)))]
async fn poll(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> ApiResult<SessionBody> {
    Ok(Json(match auth.poll(&params.token).await? {
        Some(session) => session.into(),
        None => SessionBody::default(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NameTokenParams {
    name: String,
    token: String,
}

/// Sends a new code for a login request whose code was never tried.
#[utoipa::path(get, path = "/api/resend-code", params(NameTokenParams), tag = "passwordless",
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
async fn resend_code(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<NameTokenParams>,
) -> ApiResult<Done> {
    auth.resend_code(&params.name, &params.token).await?;
    Ok(Json(DONE))
}

#[derive(Serialize, ToSchema)]
pub struct AuthorizeBody {
    error: bool,
    /// `user` or `public`.
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<bool>,
}

/// Who a token belongs to; invalid tokens get the `public` role, not an error.
#[utoipa::path(get, path = "/api/authorize", params(AuthorizeParams), tag = "passwordless",
    responses((status = 200, body = AuthorizeBody), (status = "4XX", body = ErrorBody)))]
async fn authorize(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<AuthorizeParams>,
) -> ApiResult<AuthorizeBody> {
    let authorization = auth
        .authorize_for(&params.token, params.project_id.as_deref())
        .await?;
    Ok(Json(match authorization {
        Authorization::Public => AuthorizeBody {
            error: false,
            role: "public",
            id: None,
            uid: None,
            name: None,
            root: None,
        },
        Authorization::User {
            id,
            uid,
            name,
            root,
            ..
        } => AuthorizeBody {
            error: false,
            role: "user",
            id: Some(id.to_string()),
            uid: Some(uid),
            name: Some(name.unwrap_or_default()),
            root: Some(root),
        },
    }))
}

#[derive(Serialize, ToSchema)]
pub struct HasuraBody {
    #[serde(rename = "X-Hasura-Role")]
    role: &'static str,
    #[serde(rename = "X-Hasura-User-Id", skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(rename = "X-Hasura-Is-Owner", skip_serializing_if = "Option::is_none")]
    is_owner: Option<String>,
    /// The user's name, or `anonymous`.
    #[serde(rename = "X-Hasura-Custom", skip_serializing_if = "Option::is_none")]
    custom: Option<String>,
}

/// Hasura's authorization webhook: session variables for the token in `x-token`.
#[utoipa::path(get, path = "/api/hasura", tag = "passwordless",
    params(("x-token" = Option<String>, Header, description = "USER_TOKEN or JWT"), ProjectParams),
    responses((status = 200, body = HasuraBody, description = "`Cache-Control: max-age` never outlives the token")))]
async fn hasura(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<ProjectParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let presented =
        PresentedToken::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    hasura_answer(&auth, presented, params.project_id.as_deref()).await
}

/// Hasura's POST mode (`HASURA_GRAPHQL_AUTH_HOOK_MODE=POST`): the client's headers come
/// in the body, with the GraphQL request; the answer is the GET mode's.
#[derive(Deserialize, ToSchema)]
pub struct HasuraPostBody {
    /// The client's request headers, as Hasura forwards them.
    #[serde(default)]
    headers: std::collections::HashMap<String, String>,
    /// The GraphQL request (not read).
    #[serde(default)]
    #[allow(dead_code)]
    request: serde_json::Value,
}

#[utoipa::path(post, path = "/api/hasura", tag = "passwordless", params(ProjectParams),
    request_body = HasuraPostBody,
    responses((status = 200, body = HasuraBody, description = "As the GET webhook")))]
async fn hasura_post(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<ProjectParams>,
    ApiJson(body): ApiJson<HasuraPostBody>,
) -> Result<Response, ApiError> {
    let presented = PresentedToken::from_headers(|name| {
        body.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    });
    hasura_answer(&auth, presented, params.project_id.as_deref()).await
}

async fn hasura_answer(
    auth: &Auth,
    presented: PresentedToken<'_>,
    project_id: Option<&str>,
) -> Result<Response, ApiError> {
    let authorization = auth
        .authorize_for(presented.webhook_token(), project_id)
        .await?;
    let max_age = auth.cacheable_seconds(&authorization);
    let body = match authorization {
        Authorization::Public => HasuraBody {
            role: "public",
            user_id: None,
            is_owner: None,
            custom: None,
        },
        Authorization::User {
            uid, name, root, ..
        } => HasuraBody {
            role: "user",
            user_id: Some(uid),
            is_owner: Some(root.to_string()),
            custom: Some(name.unwrap_or_else(|| "anonymous".into())),
        },
    };
    let cache = if max_age > 0 {
        format!("max-age={max_age}")
    } else {
        "no-store".to_owned()
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&cache) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryBody {
    error: bool,
    /// The (new) RECOVERY_TOKEN.
    recovery_token: String,
    /// With a recovery token: the new USER_TOKEN.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// With a USER_TOKEN: issues a recovery token. With a RECOVERY_TOKEN: logs in (and
/// replaces the recovery token).
#[utoipa::path(get, path = "/api/recovery", params(TokenParams), tag = "passwordless",
    responses((status = 200, body = RecoveryBody), (status = "4XX", body = ErrorBody)))]
async fn recovery(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> ApiResult<RecoveryBody> {
    Ok(Json(match auth.recovery(&params.token).await? {
        RecoveryOutcome::Recovered(recovered) => RecoveryBody {
            error: false,
            recovery_token: recovered.recovery_token,
            token: Some(recovered.session.token),
        },
        RecoveryOutcome::Issued(recovery_token) => RecoveryBody {
            error: false,
            recovery_token,
            token: None,
        },
    }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeBody {
    error: bool,
    /// Confirm the code sent to the new name with this CODE_TOKEN.
    code_token: String,
}

/// Starts changing the user's name; it changes once the code sent to it is confirmed.
#[utoipa::path(get, path = "/api/change", params(NameTokenParams), tag = "passwordless",
    responses((status = 200, body = ChangeBody), (status = "4XX", body = ErrorBody)))]
async fn change(
    State(auth): State<Auth>,
    ClientAddress(client): ClientAddress,
    ApiQuery(params): ApiQuery<NameTokenParams>,
) -> ApiResult<ChangeBody> {
    let code_token = auth
        .change_name(&params.token, &params.name, client)
        .await?;
    Ok(Json(ChangeBody {
        error: false,
        code_token,
    }))
}

/// Revokes the token's session.
#[utoipa::path(get, path = "/api/logout", params(TokenParams), tag = "passwordless",
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
async fn logout(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> ApiResult<Done> {
    auth.logout(&params.token).await?;
    Ok(Json(DONE))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// USER_TOKEN, the root user's USER_TOKEN, or ADMIN_TOKEN.
    token: String,
    /// The user to delete (root user or admin only); omit to delete yourself.
    #[serde(default)]
    name: Option<String>,
}

/// Deletes a user.
#[utoipa::path(delete, path = "/api/delete", params(DeleteParams), tag = "passwordless",
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
async fn delete_user(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> ApiResult<Done> {
    auth.delete_user(&params.token, params.name.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(DONE))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    error: bool,
    id: String,
    uid: String,
    encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_text: Option<String>,
}

/// The user the token belongs to.
#[utoipa::path(get, path = "/api/user", params(TokenParams), tag = "passwordless",
    responses((status = 200, body = UserBody), (status = "4XX", body = ErrorBody)))]
async fn user(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> ApiResult<UserBody> {
    let user = auth.get_user(&params.token).await?;
    Ok(Json(UserBody {
        error: false,
        id: user.id.to_string(),
        uid: user.uid,
        encrypted: user.encrypted,
        encryption_text: user.encryption_text,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EncryptParams {
    token: String,
    /// The encryption of "Hello Encryption"; required when turning encryption on.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EncryptBody {
    error: bool,
    /// The new state.
    encrypted: bool,
}

/// Toggles the client-side encryption flag.
#[utoipa::path(put, path = "/api/encrypt", params(EncryptParams), tag = "passwordless",
    responses((status = 200, body = EncryptBody), (status = "4XX", body = ErrorBody)))]
async fn encrypt(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<EncryptParams>,
) -> ApiResult<EncryptBody> {
    let encrypted = auth
        .toggle_encryption(&params.token, params.text.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(EncryptBody {
        error: false,
        encrypted,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AddLogParams {
    /// The EVENT_ID.
    id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddLogBody {
    /// The log line (up to 8 KiB), or null.
    #[serde(default)]
    data: Option<String>,
}

/// Adds a log line to an event.
#[utoipa::path(post, path = "/api/logs", params(AddLogParams), request_body = AddLogBody, tag = "passwordless",
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
async fn add_log(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<AddLogParams>,
    ApiJson(body): ApiJson<AddLogBody>,
) -> ApiResult<Done> {
    auth.add_log(&params.id, body.data.as_deref()).await?;
    Ok(Json(DONE))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ListLogsParams {
    /// The EVENT_ID.
    id: String,
    /// The root user's USER_TOKEN.
    token: String,
    /// 1 to 200 (default 50).
    #[serde(default)]
    page_size: Option<u32>,
    /// `nextPageToken` of the previous page.
    #[serde(default)]
    page_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogBody {
    id: i64,
    data: Option<String>,
    /// ISO 8601.
    created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsBody {
    error: bool,
    /// Newest first.
    logs: Vec<LogBody>,
    /// Present when there are older logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// Lists an event's logs, newest first.
#[utoipa::path(get, path = "/api/logs", params(ListLogsParams), tag = "passwordless",
    responses((status = 200, body = LogsBody), (status = "4XX", body = ErrorBody)))]
async fn list_logs(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<ListLogsParams>,
) -> ApiResult<LogsBody> {
    let page = auth
        .list_logs(
            &params.token,
            &params.id,
            params.page_size.unwrap_or_default(),
            params.page_token.as_deref().unwrap_or_default(),
        )
        .await?;
    Ok(Json(LogsBody {
        error: false,
        logs: page
            .logs
            .into_iter()
            .map(|log| LogBody {
                id: log.id,
                data: log.data,
                created_at: iso_date(log.created_at),
            })
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Auth0Body {
    error: bool,
    token: String,
}

/// An external token for an Auth0-style custom token exchange.
#[utoipa::path(put, path = "/api/auth0", params(TokenParams), tag = "passwordless",
    responses((status = 200, body = Auth0Body), (status = "4XX", body = ErrorBody)))]
async fn auth0(
    State(auth): State<Auth>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> ApiResult<Auth0Body> {
    let token = auth.exchange_token(&params.token).await?;
    Ok(Json(Auth0Body {
        error: false,
        token,
    }))
}

/// The OpenAPI description of these paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(authenticate, confirm, poll, resend_code, authorize, hasura, hasura_post, recovery, change, logout,
        delete_user, user, encrypt, add_log, list_logs, auth0),
    tags((name = "passwordless", description = "The passwordless API: login by code or magic link"))
)]
pub struct PasswordlessApiDoc;
