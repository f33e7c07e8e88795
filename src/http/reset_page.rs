//! The hosted reset-password page: the link in the reset mail opens a form (GET) that
//! posts back here (POST), which calls the same operation as the gRPC ResetPassword.
//! Plain HTML: no script, strict headers from [`page::render`].

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde::Deserialize;

use super::page::{self, capitalized, escape};
use crate::error::Error;
use crate::service::{Auth, ResetLinkState};

/// Where the reset link points (with `?token=...`), and where the form posts.
pub const PATH: &str = "/project/{project_id}/auth/password/reset";

/// The page's routes; the form is small, so its body is too.
pub fn routes() -> MethodRouter<Auth> {
    get(show)
        .post(submit)
        .layer(DefaultBodyLimit::max(16 * 1024))
}

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// GET: the form, or why the link no longer works.
async fn show(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    Query(query): Query<LinkQuery>,
) -> Response {
    current_page(&auth, &project_id, &query.token, None).await
}

/// POST: sets the password, or shows the form again with what to fix.
async fn submit(
    State(auth): State<Auth>,
    Path(project_id): Path<String>,
    axum::Form(form): axum::Form<ResetForm>,
) -> Response {
    if form.password != form.confirm {
        let problem = "The two passwords do not match. Type the same new password twice.";
        return current_page(&auth, &project_id, &form.token, Some(problem)).await;
    }
    match auth
        .reset_password(&project_id, &form.token, &form.password)
        .await
    {
        Ok(project_name) => success(&project_name),
        Err(Error::InvalidArgument { message, .. }) => {
            let problem = format!("The new password {message}");
            current_page(&auth, &project_id, &form.token, Some(&problem)).await
        }
        Err(Error::TooManyRequests { message, .. }) => {
            current_page(
                &auth,
                &project_id,
                &form.token,
                Some(&capitalized(&message)),
            )
            .await
        }
        // The link died (expired, used, replaced): the page says which.
        Err(Error::NotFound(_) | Error::FailedPrecondition(_)) => {
            current_page(&auth, &project_id, &form.token, None).await
        }
        Err(other) => failure(other),
    }
}

/// The page for the link as it stands: the form (with `problem` above it, if any) while
/// the link works, else the reason it does not.
async fn current_page(
    auth: &Auth,
    project_id: &str,
    token: &str,
    problem: Option<&str>,
) -> Response {
    let link = match auth.reset_link(project_id, token).await {
        Ok(link) => link,
        Err(error) => return failure(error),
    };
    match &link.state {
        ResetLinkState::Ready { email } => {
            let status = if problem.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            form_page(status, &link.project_name, email, token, problem)
        }
        dead => {
            let status = if *dead == ResetLinkState::Invalid {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::GONE
            };
            let title = match dead {
                ResetLinkState::Expired => "This link has expired",
                ResetLinkState::Used => "This link was already used",
                _ => "This link does not work",
            };
            let body = format!(
                "<h1>{title}</h1>\n<p class=\"muted\">{project}</p>\n<p>{reason}.</p>",
                project = escape(&link.project_name),
                reason = escape(&capitalized(dead.explanation())),
            );
            page::render(status, &format!("{title} - {}", link.project_name), &body)
        }
    }
}

fn form_page(
    status: StatusCode,
    project_name: &str,
    email: &str,
    token: &str,
    problem: Option<&str>,
) -> Response {
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    let body = format!(
        "<h1>Choose a new password</h1>\n\
         <p class=\"muted\">For your {project} account <strong>{email}</strong></p>\n\
         {problem}\
         <form method=\"post\">\n\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
         <input type=\"email\" name=\"username\" value=\"{email}\" autocomplete=\"username\" readonly hidden>\n\
         <label for=\"password\">New password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"8\" maxlength=\"128\" required autofocus aria-describedby=\"password-help\">\n\
         <p id=\"password-help\" class=\"muted\">At least 8 characters. A few unrelated words make \
         a strong password that is easy to remember.</p>\n\
         <label for=\"confirm\">Confirm new password</label>\n\
         <input id=\"confirm\" name=\"confirm\" type=\"password\" autocomplete=\"new-password\" \
         minlength=\"8\" maxlength=\"128\" required>\n\
         <button type=\"submit\">Set new password</button>\n\
         </form>",
        project = escape(project_name),
        email = escape(email),
        token = escape(token),
    );
    page::render(
        status,
        &format!("Choose a new password - {project_name}"),
        &body,
    )
}

fn success(project_name: &str) -> Response {
    let body = format!(
        "<h1>Your password has been changed</h1>\n\
         <p>You can now log in to {project} with your new password.</p>\n\
         <p class=\"muted\">For your safety, every device that was logged in to this account \
         has been logged out.</p>",
        project = escape(project_name),
    );
    page::render(
        StatusCode::OK,
        &format!("Password changed - {project_name}"),
        &body,
    )
}

fn failure(error: Error) -> Response {
    let (status, text) = match &error {
        Error::NotFound(_) | Error::InvalidArgument { .. } => (
            StatusCode::NOT_FOUND,
            "This page does not exist. Check that you opened the whole link from the mail.",
        ),
        Error::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is temporarily unavailable. Please try again in a moment.",
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side. Please try again later.",
        ),
    };
    if status.is_server_error() {
        // The cause stays in the log; the person sees the text above.
        tracing::error!(error = ?error, "the reset page failed");
    }
    page::render(
        status,
        "Password reset",
        &format!("<h1>Password reset</h1>\n<p>{text}</p>"),
    )
}
