//! The HTTP surface around the published APIs: CORS per project, request ids, the
//! OpenAPI description, and client addresses behind a trusted proxy.

use crate::helpers::*;
use portcullis::grpc::pb::UpdateProjectSettingsRequest;
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn cors_follows_each_projects_allowed_origins() {
    let app = spawn_app(Backend::Sqlite).await;
    let url = format!("{}/api/delete?token={}", app.address, app.project.app_token);
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "DELETE")
            .send()
    };
    let refused = preflight("https://app.acme.test").await.unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "no origins allowed by default"
    );

    app.update_settings(UpdateProjectSettingsRequest {
        allowed_origins: Some("https://app.acme.test http://localhost:3000".into()),
        ..Default::default()
    })
    .await;
    let allowed = preflight("https://app.acme.test").await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.acme.test"
    );
    assert!(
        allowed.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("DELETE")
    );
    assert_eq!(
        preflight("https://evil.test").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let simple = app
        .http
        .get(format!(
            "{}/api/authorize?token={}",
            app.address, app.project.app_token
        ))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let other = app
        .http
        .get(format!(
            "{}/api/authorize?token={}",
            app.address, app.project.app_token
        ))
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = spawn_app(Backend::Sqlite).await;
    let fresh = app
        .http
        .get(format!("{}/api/authorize?token=x", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()["x-request-id"].to_str().unwrap().len(), 36);
    let kept = app
        .http
        .get(format!("{}/api/authorize?token=x", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn the_openapi_document_describes_every_shim_path() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/authenticate", "get"),
        ("/api/verify/confirm", "get"),
        ("/api/verify/poll", "get"),
        ("/api/resend-code", "get"),
        ("/api/authorize", "get"),
        ("/api/hasura", "get"),
        ("/api/recovery", "get"),
        ("/api/change", "get"),
        ("/api/logout", "get"),
        ("/api/delete", "delete"),
        ("/api/user", "get"),
        ("/api/encrypt", "put"),
        ("/api/logs", "post"),
        ("/api/logs", "get"),
        ("/api/auth0", "put"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is missing"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let session = &schemas["SessionBody"]["properties"];
    for field in [
        "token",
        "jsonWebToken",
        "userId",
        "uid",
        "encrypted",
        "encryptionText",
    ] {
        assert!(session.get(field).is_some(), "SessionBody.{field}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.policy.login_requests_per_address = 2;
        s.policy.trusted_proxies = portcullis::domain::TrustedProxies::parse("127.0.0.1").unwrap();
    })
    .await;
    let ask = |name: &'static str, client: &'static str| {
        app.http
            .get(format!(
                "{}/api/authenticate?name={name}%40example.com&token={}",
                app.address, app.project.app_token
            ))
            .header("x-forwarded-for", client)
            .send()
    };
    assert_eq!(
        ask("a", "203.0.113.1").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        ask("b", "203.0.113.1").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        ask("c", "203.0.113.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        ask("d", "198.51.100.2").await.unwrap().status(),
        StatusCode::OK,
        "another client behind the proxy"
    );
    // A client cannot pick its identity by prepending to the header: the proxy appends.
    assert_eq!(
        ask("e", "198.51.100.99, 203.0.113.1")
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
