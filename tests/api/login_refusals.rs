//! What the login flow refuses, with which status, and that refusals write nothing.

use crate::helpers::*;
use crate::on_both_backends;
use tonic::Code;

on_both_backends!(
    a_wrong_code_is_refused_and_spends_an_attempt,
    a_code_token_dies_when_its_attempts_run_out,
    an_expired_code_is_refused,
    a_code_token_confirms_only_once,
    an_unknown_app_token_is_refused_and_nothing_is_written,
    bad_names_are_refused_and_nothing_is_written,
    malformed_codes_and_code_tokens_are_refused,
    resend_is_refused_for_the_wrong_name_or_a_used_request,
    asking_for_codes_again_and_again_is_limited,
    one_client_asking_codes_for_many_names_is_limited,
    missing_or_malformed_credentials_are_unauthenticated,
);

async fn a_wrong_code_is_refused_and_spends_an_attempt(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("eve@example.com").await.unwrap();
    let code = app.wait_for_code("eve@example.com", 1).await;

    let error = app
        .confirm(&wrong(&code), &started.code_token)
        .await
        .expect_err("wrong code");
    assert_eq!(error.code(), Code::Unauthenticated);
    assert!(
        error.message().contains("2 attempt(s) left"),
        "{}",
        error.message()
    );
    assert_eq!(app.database.count("sessions").await, 0);

    app.confirm(&code, &started.code_token)
        .await
        .expect("the right code still works");
}

async fn a_code_token_dies_when_its_attempts_run_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("mallory@example.com").await.unwrap();
    let code = app.wait_for_code("mallory@example.com", 1).await;
    let bad = wrong(&code);

    for left in [2, 1] {
        let error = app.confirm(&bad, &started.code_token).await.unwrap_err();
        assert!(
            error.message().contains(&format!("{left} attempt(s) left")),
            "{}",
            error.message()
        );
    }
    let last = app.confirm(&bad, &started.code_token).await.unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition, "{}", last.message());

    let right = app
        .confirm(&code, &started.code_token)
        .await
        .expect_err("dead, even with the right code");
    assert_eq!(right.code(), Code::FailedPrecondition);
    assert!(
        right.message().contains("too many wrong codes"),
        "{}",
        right.message()
    );
    assert_eq!(app.database.count("sessions").await, 0);
}

async fn an_expired_code_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("trent@example.com").await.unwrap();
    let code = app.wait_for_code("trent@example.com", 1).await;

    app.clock.advance(10 * 60 + 1);
    let error = app
        .confirm(&code, &started.code_token)
        .await
        .expect_err("expired");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("expired"), "{}", error.message());

    let resend = app
        .resend_code("trent@example.com", &started.code_token)
        .await
        .expect_err("expired");
    assert_eq!(resend.code(), Code::FailedPrecondition);
}

async fn a_code_token_confirms_only_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("peggy@example.com").await.unwrap();
    let code = app.wait_for_code("peggy@example.com", 1).await;
    app.confirm(&code, &started.code_token)
        .await
        .expect("first confirm");

    let again = app
        .confirm(&code, &started.code_token)
        .await
        .expect_err("second confirm");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );
    assert_eq!(app.database.count("sessions").await, 1);
}

async fn an_unknown_app_token_is_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let users_before = app.database.count("users").await;
    for token in ["app_unknown", "nonsense", "adm_unknown", "usr_unknown"] {
        let error = app
            .authenticate_with(token, "victor@example.com")
            .await
            .expect_err("unknown app token");
        assert_eq!(error.code(), Code::Unauthenticated, "{token}");
    }
    assert_eq!(app.database.count("users").await, users_before);
    assert_eq!(app.database.count("login_requests").await, 0);
    assert_eq!(app.database.count("outbox").await, 0);
}

async fn bad_names_are_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let users_before = app.database.count("users").await;
    let huge = format!("{}@example.com", "a".repeat(10_000));
    for name in [
        "not-an-email",
        "a@b",
        "@example.com",
        "0791234567",
        &huge,
        "x'); DROP TABLE users;--@example.com",
    ] {
        let error = app.authenticate(name).await.expect_err("bad name");
        assert_eq!(error.code(), Code::InvalidArgument, "{name:.40}");
        assert!(error.message().starts_with("name "), "{}", error.message());
    }
    assert_eq!(app.database.count("users").await, users_before);
    assert_eq!(app.database.count("login_requests").await, 0);
    assert_eq!(app.database.count("outbox").await, 0);
}

async fn malformed_codes_and_code_tokens_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("walter@example.com").await.unwrap();
    let code = app.wait_for_code("walter@example.com", 1).await;

    for bad_code in ["", "12", "abcd", "123456789", &"9".repeat(5000)] {
        let error = app
            .confirm(bad_code, &started.code_token)
            .await
            .expect_err("malformed code");
        assert_eq!(error.code(), Code::InvalidArgument, "{bad_code:.20}");
    }
    let unknown = app
        .confirm(&code, "code_unknown")
        .await
        .expect_err("unknown code token");
    assert_eq!(unknown.code(), Code::NotFound);
    let huge = app
        .confirm(&code, &"c".repeat(10_000))
        .await
        .expect_err("oversized code token");
    assert_eq!(huge.code(), Code::InvalidArgument);

    // Malformed input spent no attempt.
    let error = app
        .confirm(&wrong(&code), &started.code_token)
        .await
        .unwrap_err();
    assert!(
        error.message().contains("2 attempt(s) left"),
        "{}",
        error.message()
    );
}

async fn resend_is_refused_for_the_wrong_name_or_a_used_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("oscar@example.com").await.unwrap();
    let code = app.wait_for_code("oscar@example.com", 1).await;

    let other = app
        .resend_code("someone.else@example.com", &started.code_token)
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
    let unknown = app
        .resend_code("oscar@example.com", "code_nope")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    app.confirm(&code, &started.code_token).await.unwrap();
    let used = app
        .resend_code("oscar@example.com", &started.code_token)
        .await
        .unwrap_err();
    assert_eq!(used.code(), Code::FailedPrecondition);
    assert_eq!(
        app.mails_to("oscar@example.com").len(),
        1,
        "no mail was sent for refused resends"
    );
}

async fn asking_for_codes_again_and_again_is_limited(backend: Backend) {
    let app = spawn_app(backend).await;
    for _ in 0..10 {
        app.authenticate("sybil@example.com")
            .await
            .expect("within the budget");
    }
    let error = app
        .authenticate("sybil@example.com")
        .await
        .expect_err("over the budget");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert!(error.metadata().get("retry-after").is_some());
    assert_eq!(app.database.count("login_requests").await, 10);

    // Others are not affected, and the budget comes back with time.
    app.authenticate("someone@example.com")
        .await
        .expect("another name");
    app.clock.advance(15 * 60 + 1);
    app.authenticate("sybil@example.com")
        .await
        .expect("a new window");
}

async fn missing_or_malformed_credentials_are_unauthenticated(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.authentication.clone();
    let no_metadata = client
        .authenticate(portcullis::grpc::pb::AuthenticateRequest {
            name: "a@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_metadata.code(), Code::Unauthenticated);
    assert!(
        no_metadata.message().contains("authorization"),
        "{}",
        no_metadata.message()
    );

    let mut request = tonic::Request::new(portcullis::grpc::pb::GetUserRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    let basic = client.get_user(request).await.unwrap_err();
    assert_eq!(basic.code(), Code::Unauthenticated);

    let unknown = app.get_user("usr_unknown").await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
}

async fn one_client_asking_codes_for_many_names_is_limited(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.policy.login_requests_per_address = 3).await;
    for i in 0..3 {
        app.authenticate(&format!("name{i}@example.com"))
            .await
            .expect("within the budget");
    }
    let error = app
        .authenticate("name3@example.com")
        .await
        .expect_err("over the budget");
    assert_eq!(error.code(), Code::ResourceExhausted);
    assert!(
        error.message().contains("this address"),
        "{}",
        error.message()
    );
    assert_eq!(app.database.count("login_requests").await, 3);

    // A header from an untrusted peer changes nothing: the peer address counts.
    let spoofed = app
        .http
        .get(format!(
            "{}/api/authenticate?name=name4%40example.com&token={}",
            app.address, app.project.app_token
        ))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert!(spoofed.headers().get("retry-after").is_some());

    // With time the budget comes back.
    app.clock.advance(15 * 60 + 1);
    app.authenticate("name5@example.com")
        .await
        .expect("a new window");
}
