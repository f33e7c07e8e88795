//! The hosted email confirmation page: the link in the verification mail opens a page
//! with one button (GET changes nothing, so mail scanners that open links confirm
//! nothing); the button posts back here (POST), which confirms the email.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde::Deserialize;

use super::page::{self, capitalized, escape};
use crate::error::Error;
use crate::service::Auth;

/// Where the confirmation link points (with `?token=...`), and where the form posts.
pub const PATH: &str = "/project/{project_id}/auth/email/confirm";

pub fn routes() -> MethodRouter<Auth> {
    get(show)
        .post(confirm)
        .layer(DefaultBodyLimit::max(4 * 1024))
}

#[derive(Deserialize)]
pub struct TokenParam {
    #[serde(default)]
    token: String,
}

/// GET: the button.
async fn show(Query(query): Query<TokenParam>) -> Response {
    let body = format!(
        "<h1>Confirm your email</h1>\n\
         <p>Confirm that this address is yours to finish creating your account.</p>\n\
         <form method=\"post\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         <button type=\"submit\">Confirm my email</button>\n\
         </form>",
        token = escape(&query.token),
    );
    page::render(StatusCode::OK, "Confirm your email", &body)
}

/// POST: confirms, or says why the link does not work.
async fn confirm(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    axum::Form(form): axum::Form<TokenParam>,
) -> Response {
    match auth.confirm_email(&project_id, &form.token).await {
        Ok(project_name) => page::render(
            StatusCode::OK,
            &format!("Email confirmed - {project_name}"),
            &format!(
                "<h1>Your email is confirmed</h1>\n<p>You can now log in to {} with your \
                 password.</p>",
                escape(&project_name)
            ),
        ),
        Err(error) => {
            let status = error.http_status();
            if status.is_server_error() {
                tracing::error!(error = ?error, "the email confirmation page failed");
            }
            let text = match &error {
                Error::FailedPrecondition(message) | Error::NotFound(message) => message.clone(),
                Error::InvalidArgument { .. } => {
                    "this page does not exist; check that you opened the whole link".into()
                }
                _ => "something went wrong on our side; please try again later".into(),
            };
            page::render(
                status,
                "Email confirmation",
                &format!(
                    "<h1>This link does not work</h1>\n<p>{}.</p>",
                    escape(&capitalized(&text))
                ),
            )
        }
    }
}
