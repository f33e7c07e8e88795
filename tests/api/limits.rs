//! Limits hold exactly under 100 concurrent callers, on both databases; a name's wrong
//! codes are budgeted across all its code tokens; abandoned password checks lock no one.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::*;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinSet;
use tonic::Code;

on_both_backends!(
    one_name_gets_exactly_its_message_budget_from_100_concurrent_logins,
    one_address_gets_exactly_its_login_requests_from_100_concurrent_calls,
    concurrent_wrong_codes_over_many_tokens_get_exactly_the_name_budget,
    one_event_takes_exactly_its_log_lines_from_150_concurrent_calls,
    past_the_budget_a_phone_gets_a_link_by_text_instead_of_a_code,
    the_daily_cap_per_recipient_holds_beside_the_fifteen_minute_window,
    one_account_judges_exactly_its_failure_limit_from_100_concurrent_guesses,
    one_address_judges_exactly_its_failure_limit_over_40_accounts,
    abandoned_password_logins_never_lock_the_account,
    checks_left_running_by_a_dead_process_are_forgotten_after_their_lease,
);

/// Runs `calls` copies of `call` at once; returns how many succeeded, and the codes of
/// the failures.
async fn race<F, Fut>(calls: usize, call: F) -> (usize, Vec<Code>)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for i in 0..calls {
        set.spawn(call(i));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    while let Some(outcome) = set.join_next().await {
        match outcome.expect("caller task") {
            Ok(()) => ok += 1,
            Err(status) => failed.push(status.code()),
        }
    }
    (ok, failed)
}

async fn one_name_gets_exactly_its_message_budget_from_100_concurrent_logins(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.policy.login_requests_per_address = 100_000;
    })
    .await;
    let (ok, failed) = race(100, |_| {
        let mut client = app.authentication.clone();
        let token = app.project.app_token.clone();
        async move {
            let request = bearer(
                &token,
                AuthenticateRequest {
                    name: "busy@example.com".into(),
                },
            );
            client.authenticate(request).await.map(|_| ())
        }
    })
    .await;
    assert_eq!(ok, 10, "exactly the 15-minute budget of 10 messages");
    assert!(
        failed.iter().all(|c| *c == Code::ResourceExhausted),
        "{failed:?}"
    );
    assert_eq!(app.database.count("outbox").await, 10);
}

async fn one_address_gets_exactly_its_login_requests_from_100_concurrent_calls(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ok, failed) = race(100, |i| {
        let mut client = app.authentication.clone();
        let token = app.project.app_token.clone();
        async move {
            let name = format!("visitor-{i}@example.com");
            client
                .authenticate(bearer(&token, AuthenticateRequest { name }))
                .await
                .map(|_| ())
        }
    })
    .await;
    assert_eq!(ok, 60, "exactly 60 login requests per address per window");
    assert!(
        failed.iter().all(|c| *c == Code::ResourceExhausted),
        "{failed:?}"
    );
}

async fn concurrent_wrong_codes_over_many_tokens_get_exactly_the_name_budget(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.policy.messages_per_recipient = 1_000;
        settings.policy.messages_per_recipient_per_day = 1_000;
    })
    .await;
    let name = "target@example.com";
    // An attacker asks for 12 code tokens: 36 attempts, if each token had its own budget.
    let mut tokens = Vec::new();
    for _ in 0..12 {
        tokens.push(app.authenticate(name).await.unwrap().code_token);
    }
    let real_code = app.wait_for_code(name, 12).await;
    let codes: Vec<String> = app
        .mails_to(name)
        .iter()
        .map(|m| code_in(m).expect("a code"))
        .collect();
    let (wrong_judged, refused) = {
        let mut set = JoinSet::new();
        for (token, code) in tokens.iter().zip(&codes).cycle().take(36) {
            let mut verification = app.verification.clone();
            let (token, guess) = (token.clone(), wrong(code));
            set.spawn(async move {
                verification
                    .confirm(ConfirmRequest {
                        code: guess,
                        code_token: token,
                    })
                    .await
                    .expect_err("a wrong code never logs in")
            });
        }
        let (mut judged, mut refused) = (0, 0);
        while let Some(status) = set.join_next().await {
            let status = status.unwrap();
            if status.message().contains("codes are refused") {
                refused += 1;
            } else {
                judged += 1;
            }
        }
        (judged, refused)
    };
    assert_eq!(
        wrong_judged, 10,
        "exactly the name's budget of wrong codes is judged"
    );
    assert_eq!(refused, 26);
    assert_eq!(app.database.count("code_failures").await, 10);

    // Now even the right code of the newest token is refused...
    let last = tokens.last().unwrap();
    let refused = app.confirm(&real_code, last).await.expect_err("paused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("link"), "{}", refused.message());
    // ...a new login mails only a link, and says why...
    let started = app.authenticate(name).await.unwrap();
    let mail = wait_for(|| app.mails_to(name).into_iter().nth(12))
        .await
        .expect("a 13th mail");
    assert!(code_in(&mail).is_none(), "no code past the budget: {mail}");
    assert!(mail.contains("codes are paused"), "{mail}");
    // ...and the link logs the owner in.
    let link = link_in(&mail).expect("a link");
    let link_token = link.split("token=").nth(1).unwrap().to_owned();
    app.verification
        .clone()
        .confirm_link(ConfirmLinkRequest { link_token })
        .await
        .expect("the link works past the code budget");
    let polled = app.poll(&started.code_token).await.unwrap();
    assert!(polled.session.is_some(), "the owner is never locked out");
}

async fn one_event_takes_exactly_its_log_lines_from_150_concurrent_calls(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.log_in(OWNER).await;
    let event_id = app
        .logs
        .clone()
        .create_event(bearer(
            root.token(),
            CreateEventRequest {
                name: "checkout".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    let (ok, failed) = race(150, |i| {
        let mut logs = app.logs.clone();
        let event_id = event_id.clone();
        async move {
            let request = AddLogRequest {
                event_id,
                data: Some(format!("line {i}")),
            };
            logs.add_log(request).await.map(|_| ())
        }
    })
    .await;
    assert_eq!(ok, 120, "exactly 120 log lines a minute");
    assert!(
        failed.iter().all(|c| *c == Code::ResourceExhausted),
        "{failed:?}"
    );
}

async fn past_the_budget_a_phone_gets_a_link_by_text_instead_of_a_code(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.policy.code_failures_per_name = 2;
    })
    .await;
    let phone = "+41791234567";
    let started = app.authenticate(phone).await.unwrap();
    let code = app.wait_for_code(phone, 1).await;
    for _ in 0..2 {
        app.confirm(&wrong(&code), &started.code_token)
            .await
            .expect_err("wrong");
    }
    app.authenticate(phone).await.unwrap();
    let text = wait_for(|| app.mails_to(phone).into_iter().nth(1))
        .await
        .expect("a second text");
    assert!(code_in(&text).is_none(), "{text}");
    assert!(text.contains("/login/link?token="), "{text}");
    assert!(text.contains("codes are paused"), "{text}");
}

async fn the_daily_cap_per_recipient_holds_beside_the_fifteen_minute_window(backend: Backend) {
    let app = spawn_app(backend).await;
    let name = "daily@example.com";
    let mut sent = 0;
    for window in 0..4 {
        for _ in 0..10 {
            if app.authenticate(name).await.is_ok() {
                sent += 1;
            }
        }
        let refused = app.authenticate(name).await.expect_err("window full");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        if window == 3 {
            assert!(refused.message().contains("today"), "{}", refused.message());
        }
        app.clock.advance(16 * 60);
    }
    assert_eq!(sent, 30, "10 a window, 30 a day");
    app.clock.advance(24 * 3600);
    app.authenticate(name).await.expect("a new day");
}

async fn password_login_status(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.http
        .post(password_url(app, "login"))
        .json(&json!({ "username": email, "password": password }))
        .send()
        .await
        .expect("login")
        .status()
}

const PASSWORD: &str = "correct horse battery staple";

/// The failures counted against a password-limit key.
async fn failures_of(app: &TestApp, key: &str) -> i64 {
    use sqlx::Row;
    let pool = app.database.pool().await;
    let row = sqlx::query("SELECT failures FROM password_failures WHERE key = $1")
        .bind(key)
        .fetch_optional(&pool)
        .await
        .unwrap();
    pool.close().await;
    row.map(|r| r.try_get("failures").unwrap()).unwrap_or(0)
}

async fn register_password(app: &TestApp, email: &str) {
    let registered = app
        .http
        .post(password_url(app, "register"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
}

/// `calls` wrong-password logins at once, each for `email_of(i)`; returns the statuses.
async fn guess_at_once(
    app: &TestApp,
    calls: usize,
    email_of: impl Fn(usize) -> String,
) -> Vec<StatusCode> {
    let mut set = JoinSet::new();
    for i in 0..calls {
        let http = app.http.clone();
        let url = password_url(app, "login");
        let body = json!({ "username": email_of(i), "password": "not the password at all" });
        set.spawn(async move { http.post(url).json(&body).send().await.unwrap().status() });
    }
    let mut statuses = Vec::new();
    while let Some(status) = set.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}

async fn one_account_judges_exactly_its_failure_limit_from_100_concurrent_guesses(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    register_password(&app, "target@example.com").await;
    let statuses = guess_at_once(&app, 100, |_| "target@example.com".into()).await;
    let judged = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(
        judged, 5,
        "exactly the account's limit is judged: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    let key = format!("account:{}:target@example.com", app.project.project_id);
    assert_eq!(failures_of(&app, &key).await, 5);
    assert_eq!(
        password_login_status(&app, "target@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "locked until the window ends"
    );
}

async fn one_address_judges_exactly_its_failure_limit_over_40_accounts(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.policy.password_failures_per_address = 10;
    })
    .await;
    let statuses = guess_at_once(&app, 40, |i| format!("account-{i}@example.com")).await;
    let judged = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(
        judged, 10,
        "exactly the address's limit is judged: {statuses:?}"
    );
    assert_eq!(failures_of(&app, "address:127.0.0.1").await, 10);
}

async fn abandoned_password_logins_never_lock_the_account(backend: Backend) {
    let app = spawn_app(backend).await;
    register_password(&app, "patient@example.com").await;
    // Clients that give up after a few milliseconds, more of them than the account's
    // failure limit (5), some at once.
    let mut set = JoinSet::new();
    for i in 0..12u64 {
        let http = app.http.clone();
        let url = password_url(&app, "login");
        set.spawn(async move {
            let body = json!({ "username": "patient@example.com", "password": PASSWORD });
            let _ = http
                .post(url)
                .json(&body)
                .timeout(Duration::from_millis(2 + i % 6))
                .send()
                .await;
        });
    }
    while set.join_next().await.is_some() {}
    // The abandoned checks finish on their own (one hash at a time here, slow in a debug
    // build); then the right password works.
    let mut status = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..300 {
        status = password_login_status(&app, "patient@example.com", PASSWORD).await;
        if status != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status,
        StatusCode::CREATED,
        "abandoned logins must not lock the account"
    );
}

async fn checks_left_running_by_a_dead_process_are_forgotten_after_their_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    register_password(&app, "survivor@example.com").await;
    // A process died with five checks running for this account: their marks stay behind.
    let now = app.clock.now();
    let key = format!("account:{}:survivor@example.com", app.project.project_id);
    let pool = app.database.pool().await;
    sqlx::query(
        "INSERT INTO password_failures (key, failures, pending, window_started_at, pending_until)
         VALUES ($1, 0, 5, $2, $3)",
    )
    .bind(&key)
    .bind(now)
    .bind(now + 120)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(
        password_login_status(&app, "survivor@example.com", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS,
        "while the dead checks' lease runs they still count"
    );
    app.clock.advance(121);
    assert_eq!(
        password_login_status(&app, "survivor@example.com", PASSWORD).await,
        StatusCode::CREATED,
        "after the lease the dead checks are forgotten"
    );
}
