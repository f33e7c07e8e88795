//! The passwordless JSON/HTTP API, replayed request by request as published, checked
//! field by field, and its refusals. (CORS, request ids and OpenAPI: `http_surface`.)

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::UpdateProjectSettingsRequest;
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_backends!(
    every_documented_passwordless_request_answers_with_the_documented_fields,
    anonymous_admin_recovery_and_delete_requests_answer_as_documented,
    bad_input_at_every_path_gets_a_clear_error_and_writes_nothing,
    a_login_over_http_is_seen_over_grpc_until_logout_over_http,
    polling_after_the_magic_link_returns_the_documented_session_fields,
    the_hasura_webhook_never_lets_its_answer_outlive_the_token,
);

/// Sends a request to the shim and returns its status and JSON body.
async fn call(app: &TestApp, method: Method, path_and_query: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .request(method, format!("{}{path_and_query}", app.address))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn get(app: &TestApp, path_and_query: &str) -> (StatusCode, Value) {
    call(app, Method::GET, path_and_query).await
}

/// Asserts the body has exactly these keys.
fn assert_keys(body: &Value, keys: &[&str]) {
    let mut actual: Vec<&str> = body
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    actual.sort_unstable();
    let mut expected = keys.to_vec();
    expected.sort_unstable();
    assert_eq!(actual, expected, "fields of {body}");
}

fn enc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Registers and logs in `name` over HTTP; returns the confirm answer.
async fn http_login(app: &TestApp, name: &str) -> Value {
    let seen = app.mails_to(name).len();
    let (status, started) = get(
        app,
        &format!(
            "/api/authenticate?name={}&token={}",
            enc(name),
            app.project.app_token
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let code = app.wait_for_code(name, seen + 1).await;
    let code_token = started["codeToken"].as_str().unwrap();
    let (status, confirmed) = get(
        app,
        &format!("/api/verify/confirm?code={code}&token={code_token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    confirmed
}

async fn every_documented_passwordless_request_answers_with_the_documented_fields(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let app_token = &app.project.app_token;

    // GET /api/authenticate?name=NAME&token=APP_TOKEN
    let (status, started) = get(
        &app,
        &format!("/api/authenticate?name=ada%40example.com&token={app_token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&started, &["error", "codeToken", "registration"]);
    assert_eq!(started["error"], false);
    assert_eq!(started["registration"], true);
    let code_token = started["codeToken"].as_str().unwrap().to_owned();

    // GET /api/resend-code?name=NAME&token=CODE_TOKEN
    let (status, resent) = get(
        &app,
        &format!("/api/resend-code?name=ada%40example.com&token={code_token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&resent, &["error"]);
    assert_eq!(resent["error"], false);

    // GET /api/verify/poll?token=CODE_TOKEN, before the link is followed
    let (status, polled) = get(&app, &format!("/api/verify/poll?token={code_token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&polled, &["error"]);

    // GET /api/verify/confirm?code=CODE&token=CODE_TOKEN
    let code = app.wait_for_code("ada@example.com", 2).await;
    let (status, confirmed) = get(
        &app,
        &format!("/api/verify/confirm?code={code}&token={code_token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    assert_keys(
        &confirmed,
        &[
            "error",
            "token",
            "jsonWebToken",
            "userId",
            "uid",
            "encrypted",
        ],
    );
    assert_keys(&confirmed["jsonWebToken"], &["token", "expirationDate"]);
    assert!(
        confirmed["jsonWebToken"]["expirationDate"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "ISO 8601"
    );
    assert!(confirmed["userId"].is_string(), "ids are strings");
    assert_eq!(confirmed["uid"].as_str().unwrap().len(), 36);
    assert_eq!(confirmed["encrypted"], false);
    let user_token = confirmed["token"].as_str().unwrap().to_owned();

    // GET /api/authorize?token=USER_TOKEN
    let (status, who) = get(&app, &format!("/api/authorize?token={user_token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&who, &["error", "role", "id", "uid", "name", "root"]);
    assert_eq!(who["role"], "user");
    assert_eq!(who["name"], "ada@example.com");
    assert_eq!(who["id"], confirmed["userId"]);
    assert_eq!(who["root"], false);

    // GET /api/hasura with x-token
    let hasura = app
        .http
        .get(format!("{}/api/hasura", app.address))
        .header("x-token", &user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(hasura.status(), StatusCode::OK);
    let hasura: Value = hasura.json().await.unwrap();
    assert_keys(
        &hasura,
        &[
            "X-Hasura-User-Id",
            "X-Hasura-Role",
            "X-Hasura-Is-Owner",
            "X-Hasura-Custom",
        ],
    );
    assert_eq!(hasura["X-Hasura-User-Id"], confirmed["uid"]);
    assert_eq!(hasura["X-Hasura-Role"], "user");
    assert_eq!(hasura["X-Hasura-Is-Owner"], "false");
    assert_eq!(hasura["X-Hasura-Custom"], "ada@example.com");

    // GET /api/user?token=USER_TOKEN
    let (status, user) = get(&app, &format!("/api/user?token={user_token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&user, &["error", "id", "uid", "encrypted"]);

    // PUT /api/encrypt?token=USER_TOKEN&text=ENCRYPTED_TEXT
    let (status, encrypted) = call(
        &app,
        Method::PUT,
        &format!("/api/encrypt?token={user_token}&text=U2FsdGVk%2Babc"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&encrypted, &["error", "encrypted"]);
    assert_eq!(encrypted["encrypted"], true);
    let (_, user) = get(&app, &format!("/api/user?token={user_token}")).await;
    assert_keys(
        &user,
        &["error", "id", "uid", "encrypted", "encryptionText"],
    );
    assert_eq!(user["encryptionText"], "U2FsdGVk+abc");

    // GET /api/change?name=NAME&token=USER_TOKEN
    let (status, change) = get(
        &app,
        &format!("/api/change?name=ada.l%40example.com&token={user_token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["error"], false);
    let change_code = app.wait_for_code("ada.l@example.com", 1).await;
    let (status, _) = get(
        &app,
        &format!(
            "/api/verify/confirm?code={change_code}&token={}",
            change["codeToken"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&app, &format!("/api/authorize?token={user_token}"))
            .await
            .1["name"],
        "ada.l@example.com"
    );

    // Logs: POST /api/logs?id=EVENT_ID with { data }, GET /api/logs?id=EVENT_ID&token=USER_TOKEN
    let root = app.log_in(OWNER).await;
    let mut logs = app.logs.clone();
    let event = logs
        .create_event(bearer(
            root.token(),
            portcullis::grpc::pb::CreateEventRequest { name: "e".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    let added = app
        .http
        .post(format!("{}/api/logs?id={event}", app.address))
        .json(&serde_json::json!({ "data": "MY_LOG_MESSAGE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    assert_keys(&added.json().await.unwrap(), &["error"]);
    let (status, listed) = get(
        &app,
        &format!("/api/logs?id={event}&token={}", root.token()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_keys(&listed, &["error", "logs"]);
    assert_keys(&listed["logs"][0], &["id", "data", "createdAt"]);
    assert_eq!(listed["logs"][0]["data"], "MY_LOG_MESSAGE");
    assert!(listed["logs"][0]["id"].is_number());

    // PUT /api/auth0?token=USER_TOKEN: not configured yet, a clear error
    let (status, auth0) = call(&app, Method::PUT, &format!("/api/auth0?token={user_token}")).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        auth0["error"].as_str().unwrap().contains("not configured"),
        "{auth0}"
    );

    // GET /api/logout?token=USER_TOKEN, then authorize says public
    let (status, out) = get(&app, &format!("/api/logout?token={user_token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&out, &["error"]);
    let (status, public) = get(&app, &format!("/api/authorize?token={user_token}")).await;
    assert_eq!(status, StatusCode::OK, "invalid tokens are not an error");
    assert_keys(&public, &["error", "role"]);
    assert_eq!(public["role"], "public");
}

async fn anonymous_admin_recovery_and_delete_requests_answer_as_documented(backend: Backend) {
    let app = spawn_app(backend).await;
    app.update_settings(UpdateProjectSettingsRequest {
        anonymous_login: Some(true),
        recovery: Some(true),
        ..Default::default()
    })
    .await;

    // Anonymous: GET /api/authenticate?token=APP_TOKEN
    let (status, anonymous) = get(
        &app,
        &format!("/api/authenticate?token={}", app.project.app_token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&anonymous, &["error", "registration", "token", "id", "uid"]);
    let anonymous_token = anonymous["token"].as_str().unwrap();
    let hasura: Value = app
        .http
        .get(format!("{}/api/hasura", app.address))
        .header("x-token", anonymous_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hasura["X-Hasura-Custom"], "anonymous");

    // Admin import: GET /api/authenticate?name=NAME&token=ADMIN_TOKEN
    let (status, imported) = get(
        &app,
        &format!(
            "/api/authenticate?name=old%40example.com&token={}",
            app.project.admin_token
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&imported, &["error", "registration"]);
    assert_eq!(imported["registration"], true);

    // Recovery: GET /api/recovery?token=USER_TOKEN, then ?token=RECOVERY_TOKEN
    let (status, issued) = get(&app, &format!("/api/recovery?token={anonymous_token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&issued, &["error", "recoveryToken"]);
    let (status, recovered) = get(
        &app,
        &format!(
            "/api/recovery?token={}",
            issued["recoveryToken"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(&recovered, &["error", "recoveryToken", "token"]);
    assert_eq!(
        get(
            &app,
            &format!(
                "/api/authorize?token={}",
                recovered["token"].as_str().unwrap()
            )
        )
        .await
        .1["uid"],
        anonymous["uid"]
    );

    // DELETE /api/delete?token=ADMIN_TOKEN&name=NAME, ?token=ROOT_USER_TOKEN&name=NAME, ?token=USER_TOKEN
    let (status, deleted) = call(
        &app,
        Method::DELETE,
        &format!(
            "/api/delete?token={}&name=old%40example.com",
            app.project.admin_token
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_keys(&deleted, &["error"]);
    let root = app.log_in(OWNER).await;
    app.log_in("bob@example.com").await;
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/delete?token={}&name=bob%40example.com", root.token()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/delete?token={anonymous_token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get(&app, &format!("/api/authorize?token={anonymous_token}"))
            .await
            .1["role"],
        "public"
    );
    let (status, refused) = call(
        &app,
        Method::DELETE,
        &format!(
            "/api/delete?token={}&name=nobody%40example.com",
            root.token()
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(refused["error"].is_string());
}

async fn bad_input_at_every_path_gets_a_clear_error_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = http_login(&app, "eve@example.com").await;
    let user_token = login["token"].as_str().unwrap();
    let before = counts(&app).await;
    let huge = "x".repeat(10_000);
    let token = &app.project.app_token;
    let cases: Vec<(Method, String, StatusCode)> = vec![
        (
            Method::GET,
            "/api/authenticate?name=a%40example.com".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/authenticate?name=a%40example.com&token={token}&extra=1"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/authenticate?name={huge}%40example.com&token={token}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/authenticate?name=%FF%FE&token={token}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/authenticate?name=x%27%29%3B%20DROP%20TABLE%20users%3B--&token={token}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/authenticate?name=a%40example.com&token=app_nope".into(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/verify/confirm?token=code_x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/verify/confirm?code=abcd&token=code_x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/verify/confirm?code=1234&token=code_x".into(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/verify/poll".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/resend-code?token=code_x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/authorize".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/authorize?token=a&token2=b".into(),
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/api/recovery".into(), StatusCode::BAD_REQUEST),
        (
            Method::GET,
            format!("/api/recovery?token={user_token}"),
            StatusCode::GONE,
        ),
        (
            Method::GET,
            "/api/change?token=usr_x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/change?name=not-a-name&token={user_token}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/logout?token=usr_nope".into(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/delete?token=usr_nope".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/api/delete".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            format!("/api/delete?token={user_token}&name=x%40example.com"),
            StatusCode::FORBIDDEN,
        ),
        (Method::GET, "/api/user".into(), StatusCode::BAD_REQUEST),
        (
            Method::PUT,
            format!("/api/encrypt?token={user_token}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            format!("/api/encrypt?token={user_token}&text={huge}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/logs?id=x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/api/logs?id=x&token={user_token}"),
            StatusCode::FORBIDDEN,
        ),
        (Method::PUT, "/api/auth0".into(), StatusCode::BAD_REQUEST),
    ];
    for (method, path, expected) in cases {
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{method} {path:.80}: {body}");
        if status != StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{method} {path:.80}: a clear error, got {body}"
            );
        }
    }

    // Bodies: not JSON, wrong type, wrong content type, too large, unknown event.
    let post = |body: reqwest::Body, content_type: &'static str| {
        app.http
            .post(format!("{}/api/logs?id=no-such-event", app.address))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type, expected) in [
        (
            reqwest::Body::from("{not json"),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            reqwest::Body::from(r#"{"data": 5}"#),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            reqwest::Body::from(r#"{"data": "x"}"#),
            "text/plain",
            StatusCode::BAD_REQUEST,
        ),
        (
            reqwest::Body::from(format!(r#"{{"data": "{}"}}"#, "x".repeat(100_000))),
            "application/json",
            StatusCode::BAD_REQUEST,
        ),
        (
            reqwest::Body::from(r#"{"data": "x"}"#),
            "application/json",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let response = post(body, content_type).await.unwrap();
        assert_eq!(response.status(), expected);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(counts(&app).await, before, "refused requests wrote nothing");

    // Free text that looks like SQL is stored and returned verbatim, never executed.
    let sql = "'); DROP TABLE users;-- \u{1F600} <b>";
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/encrypt?token={user_token}&text={}", enc(sql)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, user) = get(&app, &format!("/api/user?token={user_token}")).await;
    assert_eq!(user["encryptionText"], sql);
    assert_eq!(
        app.database.count("users").await,
        before.0,
        "the users table is still there"
    );
}

async fn counts(app: &TestApp) -> (i64, i64, i64, i64) {
    let database = &app.database;
    (
        database.count("users").await,
        database.count("login_requests").await,
        database.count("sessions").await,
        database.count("logs").await,
    )
}

async fn a_login_over_http_is_seen_over_grpc_until_logout_over_http(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = http_login(&app, "cross@example.com").await;
    let token = login["token"].as_str().unwrap();
    let jwt = login["jsonWebToken"]["token"].as_str().unwrap();

    let over_grpc = app.authorize(token).await;
    assert_eq!(over_grpc.role(), Role::User);
    assert_eq!(over_grpc.uid, login["uid"].as_str().unwrap());
    assert_eq!(app.authorize(jwt).await.role(), Role::User);

    let (status, _) = get(&app, &format!("/api/logout?token={token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.authorize(token).await.role(), Role::Public);
    assert_eq!(app.authorize(jwt).await.role(), Role::Public);
}

async fn the_hasura_webhook_never_lets_its_answer_outlive_the_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = http_login(&app, "hasura@example.com").await;
    let jwt = login["jsonWebToken"]["token"].as_str().unwrap();
    let max_age = |token: &str| {
        let request = app
            .http
            .get(format!("{}/api/hasura", app.address))
            .header("x-token", token.to_owned());
        async move {
            let response = request.send().await.unwrap();
            response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    let fresh = max_age(jwt).await;
    let seconds: i64 = fresh
        .strip_prefix("max-age=")
        .expect("a max-age")
        .parse()
        .unwrap();
    assert!(seconds > 0 && seconds <= 60, "{fresh}");

    app.clock.advance(3600 - 20); // the JWT has 20 seconds left
    let late: i64 = max_age(jwt)
        .await
        .strip_prefix("max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(late <= 20, "max-age {late} outlives the JWT");
    assert_eq!(max_age("usr_nope").await, "no-store");
    let missing = app
        .http
        .get(format!("{}/api/hasura", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::OK);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["X-Hasura-Role"],
        "public"
    );
}

async fn polling_after_the_magic_link_returns_the_documented_session_fields(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, started) = get(
        &app,
        &format!(
            "/api/authenticate?name=poll%40example.com&token={}",
            app.project.app_token
        ),
    )
    .await;
    let code_token = started["codeToken"].as_str().unwrap();
    app.wait_for_code("poll@example.com", 1).await;
    let link = link_in(&app.mails_to("poll@example.com")[0]).expect("a link");
    let token = link.split("token=").nth(1).unwrap();
    let pressed = app
        .http
        .post(format!("{}/login/link", app.address))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);

    let (status, polled) = get(&app, &format!("/api/verify/poll?token={code_token}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_keys(
        &polled,
        &[
            "error",
            "token",
            "jsonWebToken",
            "userId",
            "uid",
            "encrypted",
        ],
    );
    assert_eq!(
        get(
            &app,
            &format!("/api/authorize?token={}", polled["token"].as_str().unwrap())
        )
        .await
        .1["role"],
        "user"
    );
    let (status, again) = get(&app, &format!("/api/verify/poll?token={code_token}")).await;
    assert_eq!(status, StatusCode::GONE, "handed out once");
    assert!(again["error"].is_string());
}
