//! CORS with per-project allowed origins. The project comes from the path
//! (`/project/{id}/...`) or the request's `token` (or event `id`) parameter, which a
//! preflight carries too since it uses the same URL.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::service::Auth;

const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type, x-token, x-request-id";

pub async fn layer(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    // Only owned strings cross the await: a request body is not `Sync`.
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let allowed = origin_allowed(&auth, &path, &query, &origin).await;
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !allowed {
            return (
                StatusCode::FORBIDDEN,
                "origin not allowed for this project\n",
            )
                .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow(headers, &origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let mut response = next.run(request).await;
    if allowed {
        allow(response.headers_mut(), &origin);
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-request-id, retry-after"),
        );
    }
    response
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

async fn origin_allowed(auth: &Auth, path: &str, query: &str, origin: &str) -> bool {
    let project_id = path
        .strip_prefix("/project/")
        .and_then(|rest| rest.split('/').next());
    let token = query_value(query, "token").or_else(|| query_value(query, "id"));
    match auth.allowed_origins(project_id, token.as_deref()).await {
        Ok(origins) => origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin)),
        Err(_) => false,
    }
}

fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == key).then(|| v.into_owned()))
}
