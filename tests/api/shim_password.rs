//! The email + password JSON/HTTP API, replayed from the published document (its fetch
//! examples included), field by field, with every error as `{ statusCode, message, error }`.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::UpdateProjectSettingsRequest;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    the_documented_fetch_examples_work_as_published,
    every_error_is_a_status_code_message_and_error,
    repeated_wrong_passwords_lock_the_account_with_a_retry_time,
);

const PASSWORD: &str = "correct horse battery staple";

/// POST with `Content-Type: application/json`, as the document's fetch examples do.
async fn post_json(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(password_url(app, path))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
}

/// Asserts the documented error shape and that `statusCode` repeats the HTTP status.
async fn assert_error(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["statusCode"], status.as_u16(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"].is_string(), "{body}");
    body
}

async fn the_documented_fetch_examples_work_as_published(backend: Backend) {
    let app = spawn_app(backend).await;

    // Register, exactly as the example: its password "test" is too weak for our rules, and
    // the example's error branch reads `error.message`.
    let weak = post_json(
        &app,
        "register",
        json!({ "email": "test@test.com", "password": "test" }),
    )
    .await;
    let error = assert_error(weak, StatusCode::BAD_REQUEST).await;
    assert!(
        error["message"].as_str().unwrap().contains("8 characters"),
        "{error}"
    );

    let registered = post_json(
        &app,
        "register",
        json!({ "email": "test@test.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    assert!(
        registered.bytes().await.unwrap().is_empty(),
        "no body in the response"
    );

    // Login
    let login = post_json(
        &app,
        "login",
        json!({ "username": "test@test.com", "password": PASSWORD }),
    )
    .await;
    assert_eq!(login.status(), StatusCode::CREATED);
    let body: Value = login.json().await.unwrap();
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["accessToken"]
    );
    let access_token = body["accessToken"].as_str().unwrap().to_owned();

    // Me, with the example's headers
    let me = app
        .http
        .get(password_url(&app, "me"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {access_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    let mut keys: Vec<&String> = me.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["email", "id"]);
    assert_eq!(me["email"], "test@test.com");

    // The access token is a session like any other, on both transports.
    let who = app.authorize(&access_token).await;
    assert_eq!(who.role(), Role::User);
    assert_eq!(who.uid, me["id"].as_str().unwrap());

    // Forgot password: 201, no body, and a mail with a link to the hosted page.
    let forgot = post_json(&app, "password/forgot", json!({ "email": "test@test.com" })).await;
    assert_eq!(forgot.status(), StatusCode::CREATED);
    assert!(forgot.bytes().await.unwrap().is_empty());
    let mail = wait_for(|| app.mails_to("test@test.com").into_iter().next())
        .await
        .expect("a reset mail");
    let link = mail
        .split_whitespace()
        .find(|w| w.contains("/auth/password/reset?token="))
        .expect("a reset link")
        .to_owned();
    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<form"));

    // Unknown addresses get the same 201.
    let unknown = post_json(
        &app,
        "password/forgot",
        json!({ "email": "nobody@test.com" }),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::CREATED);
}

async fn every_error_is_a_status_code_message_and_error(backend: Backend) {
    let app = spawn_app(backend).await;
    post_json(
        &app,
        "register",
        json!({ "email": "ada@example.com", "password": PASSWORD }),
    )
    .await;
    let users = app.database.count("users").await;

    let raw = |path: &'static str, content_type: &'static str, body: &'static str| {
        app.http
            .post(password_url(&app, path))
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    assert_error(
        raw("register", "application/json", "{not json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        raw(
            "register",
            "text/plain",
            r#"{"email":"a@b.co","password":"x"}"#,
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        raw(
            "login",
            "application/json",
            r#"{"username":"ada@example.com"}"#,
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        post_json(
            &app,
            "register",
            json!({ "email": "b@example.com", "password": PASSWORD, "admin": true }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        post_json(
            &app,
            "register",
            json!({ "email": 5, "password": PASSWORD }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        post_json(
            &app,
            "register",
            json!({ "email": "x'); DROP TABLE users;--", "password": PASSWORD }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let huge = app
        .http
        .post(password_url(&app, "register"))
        .header("Content-Type", "application/json")
        .body(json!({ "email": "c@example.com", "password": "p".repeat(100_000) }).to_string())
        .send()
        .await
        .unwrap();
    assert_error(huge, StatusCode::BAD_REQUEST).await;

    // Unknown project, wrong password and unknown user (the same answer).
    let unknown_project = app
        .http
        .post(format!(
            "{}/project/00000000-0000-0000-0000-000000000000/auth/login",
            app.address
        ))
        .json(&json!({ "username": "ada@example.com", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_error(unknown_project, StatusCode::NOT_FOUND).await;
    let wrong = assert_error(
        post_json(
            &app,
            "login",
            json!({ "username": "ada@example.com", "password": "wrong wrong wrong" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let nobody = assert_error(
        post_json(
            &app,
            "login",
            json!({ "username": "nobody@example.com", "password": "wrong wrong wrong" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(wrong, nobody, "no account enumeration");

    // Me without, or with a bad, token.
    assert_error(
        app.http.get(password_url(&app, "me")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let bad = app
        .http
        .get(password_url(&app, "me"))
        .header("Authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_error(bad, StatusCode::UNAUTHORIZED).await;

    // Wrong method and unknown path.
    let get_login = app
        .http
        .request(Method::GET, password_url(&app, "login"))
        .send()
        .await
        .unwrap();
    assert_error(get_login, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_error(
        app.http
            .get(password_url(&app, "nothing"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;

    assert_eq!(
        app.database.count("users").await,
        users,
        "refused requests wrote nothing"
    );
}

async fn repeated_wrong_passwords_lock_the_account_with_a_retry_time(backend: Backend) {
    let app = spawn_app(backend).await;
    post_json(
        &app,
        "register",
        json!({ "email": "lock@example.com", "password": PASSWORD }),
    )
    .await;
    for _ in 0..5 {
        let response = post_json(
            &app,
            "login",
            json!({ "username": "lock@example.com", "password": "not the password" }),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = post_json(
        &app,
        "login",
        json!({ "username": "lock@example.com", "password": PASSWORD }),
    )
    .await;
    assert!(
        locked.headers().get("retry-after").is_some(),
        "a retry time"
    );
    assert_error(locked, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn cors_and_openapi_cover_the_password_paths() {
    let app = spawn_app(Backend::Sqlite).await;
    app.update_settings(UpdateProjectSettingsRequest {
        allowed_origins: Some("https://shop.example".into()),
        ..Default::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, password_url(&app, "login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(
        preflight("https://other.example").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/project/{project_id}/auth/register", "post"),
        ("/project/{project_id}/auth/login", "post"),
        ("/project/{project_id}/auth/me", "get"),
        ("/project/{project_id}/auth/password/forgot", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is missing"
        );
    }
}
