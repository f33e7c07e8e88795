//! In the mesh: Envoy's ext_authz over gRPC, forward auth over HTTP, and the real nginx
//! and Caddy running the configs in `deploy/proxies/` in front of an upstream the test
//! runs.

use crate::helpers::*;
use crate::on_both_backends;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tonic::Code;

on_both_backends!(
    envoy_grpc_check_lets_the_bound_projects_users_through_and_no_one_else,
    forward_auth_answers_nginx_caddy_traefik_and_envoy_http,
    hasura_answers_the_same_in_get_and_post_mode_and_jwt_mode_carries_its_claim,
    introspection_tells_live_tokens_of_the_callers_project_and_nothing_else,
);

/// A Check as Envoy sends it: the client's headers and the route's context extensions.
fn check_request(headers: &[(&str, &str)], extensions: &[(&str, &str)]) -> CheckRequest {
    let owned = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders/123".into(),
                    headers: owned(headers),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: owned(extensions),
            ..Default::default()
        }),
    }
}

async fn check(app: &TestApp, request: CheckRequest) -> Result<CheckResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    AuthorizationClient::new(channel)
        .check(request)
        .await
        .map(|r| r.into_inner())
}

/// (HTTP status, headers set, headers removed) of a Check's answer.
fn outcome(response: &CheckResponse) -> (u16, HashMap<String, String>, Vec<String>) {
    let header_map = |options: &[envoy_types::ext_authz::v3::pb::HeaderValueOption]| {
        options
            .iter()
            .filter_map(|o| o.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    let code = response.status.as_ref().map_or(0, |s| s.code);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(code, 0, "OK carries status OK");
            (200, header_map(&ok.headers), ok.headers_to_remove.clone())
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            assert_ne!(code, 0, "a denial carries a non-OK status");
            let status = denied.status.as_ref().map_or(0, |s| s.code) as u16;
            (status, header_map(&denied.headers), Vec::new())
        }
        other => panic!("not an OK or denied response: {other:?}"),
    }
}

async fn envoy_grpc_check_lets_the_bound_projects_users_through_and_no_one_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let mine = app.project.project_id.clone();
    let other = app
        .auth
        .create_project("Other", None, false, false)
        .await
        .unwrap();
    let user = app.log_in("ada@example.com").await;
    let stranger = app.log_in_with(&other.app_token, "eve@example.com").await;
    let bound = [("project_id", mine.as_str())];
    let bearer_of = |token: &str| format!("Bearer {token}");

    for token in [user.token(), user.jwt()] {
        let authorization = bearer_of(token);
        let answer = check(
            &app,
            check_request(
                &[
                    ("authorization", &authorization),
                    // Forged by the client: overwritten on the way to the upstream.
                    ("x-portcullis-uid", "forged"),
                ],
                &bound,
            ),
        )
        .await
        .unwrap();
        let (status, set, removed) = outcome(&answer);
        assert_eq!(status, 200);
        let who = app.authorize(token).await;
        assert_eq!(set["x-portcullis-uid"], who.uid);
        assert_eq!(set["x-portcullis-user-id"], who.id.to_string());
        assert_eq!(set["x-portcullis-name"], "ada@example.com");
        assert_eq!(set["x-portcullis-project-id"], mine);
        assert_eq!(set["x-portcullis-role"], "user");
        assert_eq!(set["x-portcullis-root"], "false");
        assert!(removed.is_empty(), "every header is set: {removed:?}");
    }
    let cookie = format!("theme=dark; portcullis_token={}", user.token());
    let by_cookie = check(&app, check_request(&[("cookie", &cookie)], &bound))
        .await
        .unwrap();
    assert_eq!(outcome(&by_cookie).0, 200, "the token in the cookie");
    let by_x_token = check(&app, check_request(&[("x-token", user.token())], &bound))
        .await
        .unwrap();
    assert_eq!(outcome(&by_x_token).0, 200, "the token in x-token");

    // Refused: no token, a forged one, another project's, a logged-out one.
    let stranger_bearer = bearer_of(stranger.token());
    let forged_bearer = bearer_of("usr_forgedforgedforgedforged");
    for (headers, challenge) in [
        (vec![], "Bearer"),
        (
            vec![("authorization", forged_bearer.as_str())],
            "Bearer error=\"invalid_token\"",
        ),
        (
            vec![("authorization", stranger_bearer.as_str())],
            "Bearer error=\"invalid_token\"",
        ),
    ] {
        let answer = check(&app, check_request(&headers, &bound)).await.unwrap();
        let (status, set, _) = outcome(&answer);
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(set["www-authenticate"], challenge);
        assert_eq!(
            answer.status.as_ref().unwrap().code,
            Code::Unauthenticated as i32
        );
    }
    // The stranger's token is fine for its own project.
    let theirs = check(
        &app,
        check_request(
            &[("authorization", &stranger_bearer)],
            &[("project_id", &other.project_id)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(outcome(&theirs).0, 200);

    // A public route lets anonymous callers through as such, forged headers removed.
    let public = check(
        &app,
        check_request(
            &[("x-portcullis-uid", "forged")],
            &[("project_id", &mine), ("allow_public", "true")],
        ),
    )
    .await
    .unwrap();
    let (status, set, removed) = outcome(&public);
    assert_eq!(status, 200);
    assert_eq!(set["x-portcullis-role"], "public");
    assert!(
        removed.contains(&"x-portcullis-uid".to_owned()),
        "{removed:?}"
    );

    // No project named and no server default: nothing can be checked, so nothing passes.
    let unbound = check(
        &app,
        check_request(&[("authorization", &bearer_of(user.token()))], &[]),
    )
    .await
    .unwrap();
    assert_eq!(outcome(&unbound).0, 403);

    app.logout(user.token()).await.unwrap();
    let after = check(
        &app,
        check_request(&[("authorization", &bearer_of(user.token()))], &bound),
    )
    .await
    .unwrap();
    assert_eq!(outcome(&after).0, 401, "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_default_project_binds_checks_that_name_none() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.policy.authz_project_id = Some("a-project-that-is-not-the-users".into());
    })
    .await;
    let user = app.log_in("ada@example.com").await;
    let bearer = format!("Bearer {}", user.token());
    let unnamed = check(&app, check_request(&[("authorization", &bearer)], &[]))
        .await
        .unwrap();
    assert_eq!(
        outcome(&unnamed).0,
        401,
        "bound to the server's default project, which is not the user's"
    );
    let named = check(
        &app,
        check_request(
            &[("authorization", &bearer)],
            &[("project_id", &app.project.project_id)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(outcome(&named).0, 200, "the route's binding comes first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_fails_unavailable_when_the_database_is_gone_and_nothing_is_cached() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    let app = spawn_app_on(database, |_| {}).await;
    let user = app.log_in("ada@example.com").await;
    relay.cut();
    let bearer = format!("Bearer {}", user.jwt());
    let error = check(
        &app,
        check_request(
            &[("authorization", &bearer)],
            &[("project_id", &app.project.project_id)],
        ),
    )
    .await
    .expect_err("no silent allow, no silent deny");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    relay.restore();
}

async fn forward_auth_answers_nginx_caddy_traefik_and_envoy_http(backend: Backend) {
    let app = spawn_app(backend).await;
    let mine = app.project.project_id.clone();
    let user = app.log_in("ada@example.com").await;
    let get = |path: String, token: Option<&str>| {
        let mut request = app.http.get(format!("{}{path}", app.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let ok = get(format!("/auth/forward?project_id={mine}"), Some(user.jwt()))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["x-portcullis-name"], "ada@example.com");
    assert_eq!(ok.headers()["x-portcullis-role"], "user");

    let none = get(format!("/auth/forward?project_id={mine}"), None)
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = none.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    // Envoy's HTTP ext_authz appends the client's path and query to the prefix, and may
    // use any method; the client's query cannot rebind the project.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let answer = app
            .http
            .request(
                method.clone(),
                format!("{}/auth/envoy/{mine}/orders/123?project_id=x", app.address),
            )
            .bearer_auth(user.token())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{method}");
    }
    let other = app
        .auth
        .create_project("Other", None, false, false)
        .await
        .unwrap();
    let rebound = get(
        format!("/auth/envoy/{}/x?project_id={mine}", other.project_id),
        Some(user.token()),
    )
    .await
    .unwrap();
    assert_eq!(rebound.status(), StatusCode::UNAUTHORIZED);
}

// ---- the real proxies ----

/// The upstream behind the proxy: answers every request with the x-portcullis-* headers
/// it received, as JSON.
async fn spawn_upstream() -> u16 {
    use axum::http::HeaderMap;
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        let seen: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-portcullis-"))
            .map(|(name, value)| {
                (
                    name.to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into(),
                )
            })
            .collect();
        axum::Json(seen)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A config file from `deploy/proxies/` with its placeholders filled in.
fn deploy_config(file: &str, portcullis: u16, upstream: u16, listen: u16, project: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/proxies")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{portcullis}"))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{upstream}"))
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{listen}"))
        .replace(":8000", &format!(":{listen}"))
        .replace("PROJECT_ID", project)
}

/// A proxy process, stopped when dropped.
struct Proxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum ProxyKind {
    Nginx,
    Caddy,
}

impl ProxyKind {
    fn program(self) -> &'static str {
        match self {
            ProxyKind::Nginx => "nginx",
            ProxyKind::Caddy => "caddy",
        }
    }

    /// Whether the proxy is installed; when it is not and CI requires it, a failure.
    fn available(self) -> bool {
        let found = ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
            .iter()
            .any(|dir| Path::new(dir).join(self.program()).exists());
        if !found {
            assert!(
                std::env::var("PORTCULLIS_TEST_REQUIRE_PROXIES").as_deref() != Ok("1"),
                "PORTCULLIS_TEST_REQUIRE_PROXIES=1 but {} is not installed",
                self.program()
            );
            report_skip(
                &format!(
                    "the {} forward-auth test ({} is not installed)",
                    self.program(),
                    self.program()
                ),
                "apt-get install nginx caddy; CI requires them with PORTCULLIS_TEST_REQUIRE_PROXIES=1",
            );
        }
        found
    }

    async fn start(self, portcullis: u16, upstream: u16, project: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = match self {
            ProxyKind::Nginx => {
                let site = deploy_config("nginx.conf", portcullis, upstream, port, project);
                let root = dir.path().display();
                let main = format!(
                    "pid {root}/nginx.pid;\nerror_log {root}/error.log;\ndaemon off;\n\
                     events {{}}\nhttp {{\n  access_log off;\n  \
                     client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n  \
                     fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  \
                     scgi_temp_path {root}/scgi;\n{site}\n}}\n"
                );
                std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
                Command::new("nginx")
                    .args(["-p", &root.to_string(), "-c"])
                    .arg(dir.path().join("nginx.conf"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start nginx")
            }
            ProxyKind::Caddy => {
                let site = deploy_config("Caddyfile", portcullis, upstream, port, project);
                // Test-only globals: no admin endpoint (tests run side by side).
                let file = format!("{{\n\tadmin off\n}}\n{site}");
                std::fs::write(dir.path().join("Caddyfile"), file).unwrap();
                Command::new("caddy")
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(dir.path().join("Caddyfile"))
                    .env("HOME", dir.path())
                    .env("XDG_DATA_HOME", dir.path())
                    .env("XDG_CONFIG_HOME", dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start caddy")
            }
        };
        let proxy = Proxy {
            child,
            port,
            _dir: dir,
        };
        let ready = wait_for(|| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).await;
        assert!(ready.is_some(), "{self:?} did not start listening");
        proxy
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_lets_only_the_projects_users_through() {
    a_real_proxy_in_front_lets_only_the_projects_users_through(ProxyKind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_in_front_lets_only_the_projects_users_through() {
    a_real_proxy_in_front_lets_only_the_projects_users_through(ProxyKind::Caddy).await;
}

async fn a_real_proxy_in_front_lets_only_the_projects_users_through(kind: ProxyKind) {
    if !kind.available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let upstream = spawn_upstream().await;
    let proxy = kind
        .start(app.port, upstream, &app.project.project_id)
        .await;
    let other = app
        .auth
        .create_project("Other", None, false, false)
        .await
        .unwrap();
    let user = app.log_in("ada@example.com").await;
    let stranger = app.log_in_with(&other.app_token, "eve@example.com").await;
    let through = |token: Option<&str>| {
        let mut request = app
            .http
            .get(format!("http://127.0.0.1:{}/orders/123", proxy.port))
            .header("x-portcullis-uid", "forged-uid")
            .header("x-portcullis-root", "true");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let seen: serde_json::Value = {
        let answer = through(Some(user.token())).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{kind:?}");
        answer.json().await.unwrap()
    };
    let who = app.authorize(user.token()).await;
    assert_eq!(
        seen["x-portcullis-uid"],
        who.uid.as_str(),
        "{kind:?}: {seen}"
    );
    assert_eq!(seen["x-portcullis-root"], "false", "{kind:?}: {seen}");
    assert_eq!(seen["x-portcullis-name"], "ada@example.com", "{kind:?}");
    let by_jwt = through(Some(user.jwt())).await.unwrap();
    assert_eq!(by_jwt.status(), StatusCode::OK, "{kind:?}: the JWT too");

    // An anonymous user has no name: the answer has no x-portcullis-name, and the
    // client's own must not slip through in its place.
    app.allow_anonymous().await;
    let anonymous = app
        .authenticate("")
        .await
        .expect("anonymous login")
        .session
        .expect("a session at once");
    let answer = app
        .http
        .get(format!("http://127.0.0.1:{}/", proxy.port))
        .bearer_auth(&anonymous.token)
        .header("x-portcullis-name", "forged-name")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "{kind:?}: anonymous");
    let seen: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(seen["x-portcullis-uid"], anonymous.uid.as_str(), "{kind:?}");
    assert!(
        seen.get("x-portcullis-name").is_none_or(|name| name == ""),
        "{kind:?}: {seen}"
    );

    for (what, token) in [
        ("no token", None),
        ("a forged token", Some("usr_forgedforgedforgedforgedforged")),
        ("another project's token", Some(stranger.token())),
    ] {
        let answer = through(token).await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::UNAUTHORIZED,
            "{kind:?}: {what}"
        );
    }

    app.logout(user.token()).await.unwrap();
    let answer = through(Some(user.token())).await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "{kind:?}: logged out"
    );
}

/// grpcurl describes and calls Check with no .proto files at hand: reflection serves the
/// service's file with every file it imports, and health knows the service.
#[tokio::test]
async fn the_envoy_service_is_reflected_with_its_imports_and_has_health() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let app = spawn_app(Backend::Sqlite).await;
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    // As grpcurl does: the service's file, then each import by name, transitively.
    let ask = |message: MessageRequest| {
        let mut client = ServerReflectionClient::new(channel.clone());
        async move {
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message),
            };
            let mut responses = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = responses.message().await.unwrap().expect("an answer");
            let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response
            else {
                panic!("expected file descriptors, got {response:?}");
            };
            files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                        .unwrap()
                })
                .collect::<Vec<_>>()
        }
    };
    let mut pending: Vec<String> = ask(MessageRequest::FileContainingSymbol(
        "envoy.service.auth.v3.Authorization".into(),
    ))
    .await
    .into_iter()
    .flat_map(|file| file.dependency)
    .collect();
    let mut resolved = std::collections::HashSet::new();
    while let Some(name) = pending.pop() {
        if !resolved.insert(name.clone()) {
            continue;
        }
        let files = ask(MessageRequest::FileByFilename(name.clone())).await;
        assert!(!files.is_empty(), "{name} is not served");
        pending.extend(files.into_iter().flat_map(|file| file.dependency));
    }
    assert!(
        resolved.contains("envoy/config/core/v3/base.proto") && resolved.len() > 10,
        "{resolved:?}"
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

// ---- Hasura's three modes, discovery and introspection ----

fn jwt_payload(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn hasura_answers_the_same_in_get_and_post_mode_and_jwt_mode_carries_its_claim(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mine = app.project.project_id.clone();
    let before = app.log_in("ada@example.com").await;
    assert!(
        jwt_payload(before.jwt())
            .get("https://hasura.io/jwt/claims")
            .is_none(),
        "off by default"
    );
    let url = format!("{}/api/hasura?project_id={mine}", app.address);
    let get: serde_json::Value = app
        .http
        .get(&url)
        .header("x-token", before.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get["X-Hasura-Role"], "user", "{get}");
    for headers in [
        serde_json::json!({ "x-token": before.token() }),
        serde_json::json!({ "Authorization": format!("Bearer {}", before.jwt()) }),
    ] {
        let post = app
            .http
            .post(&url)
            .json(&serde_json::json!({ "headers": headers, "request": { "query": "{ me }" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), StatusCode::OK);
        let post: serde_json::Value = post.json().await.unwrap();
        assert_eq!(post, get, "POST mode answers as GET mode");
    }
    let anonymous: serde_json::Value = app
        .http
        .post(&url)
        .json(&serde_json::json!({ "headers": {}, "request": {} }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anonymous["X-Hasura-Role"], "public");

    let project = app
        .update_settings(portcullis::grpc::pb::UpdateProjectSettingsRequest {
            hasura_jwt_claims: Some(true),
            ..Default::default()
        })
        .await;
    assert!(project.hasura_jwt_claims);
    let after = app.log_in("ada@example.com").await;
    let claims = jwt_payload(after.jwt());
    let hasura = &claims["https://hasura.io/jwt/claims"];
    assert_eq!(hasura["x-hasura-user-id"], claims["sub"], "{claims}");
    assert_eq!(hasura["x-hasura-default-role"], "user");
    assert_eq!(
        hasura["x-hasura-allowed-roles"],
        serde_json::json!(["user"])
    );
    assert_eq!(
        app.authorize(after.jwt()).await.role(),
        Role::User,
        "the claim changes nothing for our own verification"
    );
}

async fn introspection_tells_live_tokens_of_the_callers_project_and_nothing_else(backend: Backend) {
    let app = spawn_app(backend).await;
    let discovery: serde_json::Value = app
        .http
        .get(format!("{}/.well-known/openid-configuration", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = app.log_in("ada@example.com").await;
    assert_eq!(discovery["issuer"], jwt_payload(user.jwt())["iss"]);
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    let jwks = app.http.get(jwks_uri).send().await.unwrap();
    assert_eq!(jwks.status(), StatusCode::OK, "{jwks_uri}");
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );

    let endpoint = discovery["introspection_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let introspect = |caller: Option<String>, token: String| {
        let mut request = app.http.post(&endpoint).form(&[("token", token)]);
        if let Some(caller) = caller {
            request = request.bearer_auth(caller);
        }
        request.send()
    };
    let admin = Some(app.project.admin_token.clone());
    let who = app.authorize(user.token()).await;
    for token in [user.token(), user.jwt()] {
        let answer: serde_json::Value = introspect(admin.clone(), token.into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["sub"], who.uid.as_str());
        assert_eq!(answer["aud"], app.project.project_id.as_str());
        assert_eq!(answer["iss"], discovery["issuer"]);
        let (exp, iat) = (
            answer["exp"].as_i64().unwrap(),
            answer["iat"].as_i64().unwrap(),
        );
        assert!(iat <= app.clock.now() && exp > app.clock.now(), "{answer}");
    }
    let other = app
        .auth
        .create_project("Other", None, false, false)
        .await
        .unwrap();
    let stranger = app.log_in_with(&other.app_token, "eve@example.com").await;
    for token in [
        stranger.token().to_owned(),
        "usr_forgedforgedforgedforged".to_owned(),
        String::new(),
    ] {
        let answer: serde_json::Value = introspect(admin.clone(), token.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            answer,
            serde_json::json!({ "active": false }),
            "{token:.12}"
        );
    }
    for caller in [
        None,
        Some(app.project.app_token.clone()),
        Some("adm_unknown".into()),
    ] {
        let refused = introspect(caller.clone(), user.token().into())
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{caller:?}");
    }
    app.logout(user.token()).await.unwrap();
    let answer: serde_json::Value = introspect(admin, user.token().into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["active"], false, "logged out");
}

// ---- the copy-paste configs that cannot run here ----

/// Every value under `key`, anywhere in the document.
fn find_all<'a>(value: &'a serde_yaml::Value, key: &str, out: &mut Vec<&'a serde_yaml::Value>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (k, v) in map {
                if k.as_str() == Some(key) {
                    out.push(v);
                }
                find_all(v, key, out);
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| find_all(v, key, out)),
        serde_yaml::Value::Tagged(tagged) => find_all(&tagged.value, key, out),
        _ => {}
    }
}

fn all<'a>(value: &'a serde_yaml::Value, key: &str) -> Vec<&'a serde_yaml::Value> {
    let mut out = Vec::new();
    find_all(value, key, &mut out);
    out
}

fn documents(file: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde_yaml::Value::deserialize(document).expect(file))
        .collect()
}

/// Envoy and Istio are not installable here: their files are checked for shape, and every
/// name and path in them against what the server serves.
#[tokio::test]
async fn the_envoy_istio_and_traefik_configs_name_what_the_server_serves() {
    let app = spawn_app(Backend::Sqlite).await;
    let default_port = portcullis::settings::Settings::default_listen_port();
    let status_of = |path: String| {
        let url = format!("{}{path}", app.address);
        let http = app.http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert!(portcullis::grpc::SERVICE_NAMES.contains(&"envoy.service.auth.v3.Authorization"));

    // Envoy over gRPC: the filter's cluster speaks HTTP/2 to the service's port, and the
    // routes send only context extensions the server reads.
    let envoy = &documents("envoy/envoy.yaml")[0];
    let filters: Vec<&str> = all(envoy, "http_filters")
        .iter()
        .flat_map(|list| list.as_sequence().unwrap())
        .filter_map(|filter| filter["name"].as_str())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.jwt_authn",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.router"
        ]
    );
    let cluster_name = all(envoy, "envoy_grpc")[0]["cluster_name"]
        .as_str()
        .unwrap();
    let clusters = all(envoy, "clusters")[0].as_sequence().unwrap();
    let cluster = clusters
        .iter()
        .find(|c| c["name"].as_str() == Some(cluster_name))
        .expect("the ext_authz cluster is defined");
    assert!(
        !all(cluster, "http2_protocol_options").is_empty(),
        "gRPC needs HTTP/2"
    );
    for port in all(cluster, "port_value") {
        assert_eq!(port.as_u64(), Some(u64::from(default_port)));
    }
    for extensions in all(envoy, "context_extensions") {
        for key in extensions.as_mapping().unwrap().keys() {
            assert!(
                ["project_id", "allow_public"].contains(&key.as_str().unwrap()),
                "the server does not read context extension {key:?}"
            );
        }
    }
    assert_eq!(all(envoy, "failure_mode_allow")[0].as_bool(), Some(false));
    let jwks = all(envoy, "remote_jwks")[0]["http_uri"]["uri"]
        .as_str()
        .unwrap();
    let jwks_path = jwks.split_once("8080").unwrap().1;
    assert_eq!(status_of(jwks_path.into()).await, StatusCode::OK, "{jwks}");

    // Envoy over HTTP: the prefix is the server's, bound to a project.
    let envoy_http = &documents("envoy/envoy-http.yaml")[0];
    let prefix = all(envoy_http, "path_prefix")[0].as_str().unwrap();
    let bound = prefix.replace("PROJECT_ID", &app.project.project_id);
    assert_eq!(
        status_of(format!("{bound}/orders/1")).await,
        StatusCode::UNAUTHORIZED,
        "{prefix} answers as ext_authz"
    );

    // Traefik: the forward-auth address answers, and the headers it copies are ours.
    let traefik = &documents("traefik/traefik-dynamic.yml")[0];
    let forward = &all(traefik, "forwardAuth")[0];
    let address = forward["address"].as_str().unwrap();
    let path = address
        .split_once("8080")
        .unwrap()
        .1
        .replace("PROJECT_ID", &app.project.project_id);
    assert_eq!(status_of(path).await, StatusCode::UNAUTHORIZED, "{address}");
    let mut copied: Vec<String> = forward["authResponseHeaders"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_ascii_lowercase())
        .collect();
    copied.sort();
    let mut ours: Vec<String> = portcullis::domain::USER_HEADERS
        .iter()
        .map(|h| h.to_string())
        .collect();
    ours.sort();
    assert_eq!(copied, ours);

    // Istio: the CUSTOM policy names the provider the mesh config defines, on our port.
    let istio = documents("istio/portcullis-ext-authz.yaml");
    let provider = istio
        .iter()
        .flat_map(|d| all(d, "extensionProviders"))
        .flat_map(|list| list.as_sequence().unwrap())
        .next()
        .expect("an extension provider");
    assert_eq!(
        provider["envoyExtAuthzGrpc"]["port"].as_u64(),
        Some(u64::from(default_port))
    );
    let policy = istio
        .iter()
        .find(|d| d["kind"].as_str() == Some("AuthorizationPolicy"))
        .expect("an AuthorizationPolicy");
    assert_eq!(policy["spec"]["action"].as_str(), Some("CUSTOM"));
    assert_eq!(policy["spec"]["provider"]["name"], provider["name"]);
    let jwks_uri = istio
        .iter()
        .flat_map(|d| all(d, "jwksUri"))
        .next()
        .and_then(|v| v.as_str())
        .expect("a jwksUri");
    assert!(jwks_uri.ends_with(jwks_path), "{jwks_uri}");
}

/// The cookie the gate reads is the one the setting names, and only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_reads_the_cookie_the_setting_names() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.policy.authz_cookie = "acme_session".into();
    })
    .await;
    let user = app.log_in("ada@example.com").await;
    let url = format!(
        "{}/auth/forward?project_id={}",
        app.address, app.project.project_id
    );
    let with_cookie = |cookie: String| app.http.get(&url).header("cookie", cookie).send();
    let named = with_cookie(format!("theme=dark; acme_session={}", user.token()))
        .await
        .unwrap();
    assert_eq!(named.status(), StatusCode::OK);
    let default_name = with_cookie(format!("portcullis_token={}", user.token()))
        .await
        .unwrap();
    assert_eq!(default_name.status(), StatusCode::UNAUTHORIZED);
}
