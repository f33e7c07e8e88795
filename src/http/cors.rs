//! CORS with per-project allowed origins. The project comes from the path
//! (`/project/{id}/...`) or the request's `token` (or event `id`) parameter, which a
//! preflight carries too since it uses the same URL.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tower::{Layer, Service};

use crate::service::Auth;

const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type, x-token, x-request-id";

/// The CORS layer of the HTTP routes. A plain tower layer rather than a boxed middleware:
/// requests without an `Origin` (servers, sidecars, the hot path) pass straight through.
#[derive(Clone)]
pub struct CorsLayer {
    pub auth: Auth,
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            auth: self.auth.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Cors<S> {
    auth: Auth,
    inner: S,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(origin) = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned)
        else {
            return Either::Left(self.inner.call(request));
        };
        // The service made ready is the one called (tower's rule); a clone stays behind.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let auth = self.auth.clone();
        Either::Right(Box::pin(async move {
            Ok(with_origin(auth, origin, request, inner).await)
        }))
    }
}

async fn with_origin<S>(auth: Auth, origin: String, request: Request, mut inner: S) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
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
    let Ok(mut response) = inner.call(request).await;
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
