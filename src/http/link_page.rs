//! The page behind the magic link. Opening it (GET) changes nothing — mail scanners open
//! links — it only shows one button; pressing it (POST) confirms the login request, and
//! the app that started the login collects the session by polling.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::page::{escape, render};
use crate::error::Error;
use crate::service::{Auth, LINK_PATH};

#[derive(Deserialize)]
pub struct LinkParams {
    #[serde(default)]
    token: String,
}

pub async fn show(State(auth): State<Auth>, Query(params): Query<LinkParams>) -> Response {
    match auth.login_link_project(&params.token).await {
        Ok(project_name) => render(
            StatusCode::OK,
            "Confirm your login",
            &format!(
                "<h1>Log in to {project}?</h1>\n\
                 <p>Press the button to confirm the login you started. The app you started it in will continue by itself.</p>\n\
                 <form method=\"post\" action=\"{LINK_PATH}\">\n\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
                 <button type=\"submit\">Confirm login</button>\n</form>\n\
                 <p class=\"muted\">If you did not try to log in, close this page: nothing happens.</p>",
                project = escape(&project_name),
                token = escape(&params.token),
            ),
        ),
        Err(error) => failure(error),
    }
}

pub async fn confirm(State(auth): State<Auth>, Form(params): Form<LinkParams>) -> Response {
    match auth.confirm_link(&params.token).await {
        Ok(()) => render(
            StatusCode::OK,
            "Login confirmed",
            "<h1>Login confirmed</h1>\n<p>You can close this page and return to the app.</p>",
        ),
        Err(error) => failure(error),
    }
}

fn failure(error: Error) -> Response {
    let status = error.http_status();
    let (title, message) = match &error {
        Error::FailedPrecondition(_) => ("Link no longer valid", error.to_string()),
        Error::NotFound(_) | Error::InvalidArgument { .. } | Error::Unauthenticated(_) => (
            "Unknown link",
            "This link is not valid. Start a new login in the app.".to_owned(),
        ),
        _ => ("Something went wrong", error.to_string()),
    };
    let body = format!(
        "<h1>{title}</h1>\n<p class=\"error\">{}</p>",
        escape(&message)
    );
    render(status, title, &body)
}
