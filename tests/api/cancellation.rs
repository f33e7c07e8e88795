//! Clients that give up: requests dropped at random points (HTTP disconnects, gRPC
//! deadlines) must leave no transaction open behind them, so every later write works at
//! once instead of failing on a connection that still holds the write lock.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::AuthenticateRequest;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio::task::JoinSet;

on_both_backends!(every_write_works_at_once_after_clients_abandon_requests_at_random_points);

const PASSWORD: &str = "correct horse battery staple";

/// A small deterministic generator: the seed is printed, so a failure can be replayed.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A delay of 0..max_ms milliseconds, in microsecond steps, so cancellations land
    /// at every await point of a request and not only at round numbers.
    fn delay(&mut self, max_ms: u64) -> Duration {
        Duration::from_micros(self.next() % (max_ms * 1000))
    }
}

async fn every_write_works_at_once_after_clients_abandon_requests_at_random_points(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |settings| {
        // The abandoned requests that do complete count against the per-address budget.
        settings.policy.login_requests_per_address = 100_000;
        settings.policy.password_failures_per_address = 100_000;
    })
    .await;
    let registered = app
        .http
        .post(password_url(&app, "register"))
        .json(&json!({ "email": "steady@example.com", "password": PASSWORD }))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("cancellation seed: {seed}");
    let mut random = Xorshift(seed);

    // 16 callers at a time, each giving up after a random few milliseconds.
    let mut callers = JoinSet::new();
    for i in 0..400u64 {
        if callers.len() >= 16 {
            callers.join_next().await;
        }
        let patience = random.delay(25);
        let kind = random.next() % 4;
        let http = app.http.clone();
        let mut grpc = app.authentication.clone();
        let address = app.address.clone();
        let app_token = app.project.app_token.clone();
        let register_url = password_url(&app, "register");
        let login_url = password_url(&app, "login");
        callers.spawn(async move {
            let name = format!("gives-up-{i}@example.com");
            match kind {
                0 => {
                    let url = format!("{address}/api/authenticate?name={name}&token={app_token}");
                    let _ = http.get(url).timeout(patience).send().await;
                }
                1 => {
                    let mut request = bearer(&app_token, AuthenticateRequest { name });
                    request.set_timeout(patience);
                    let _ = tokio::time::timeout(patience, grpc.authenticate(request)).await;
                }
                2 => {
                    let body = json!({ "email": name, "password": PASSWORD });
                    let _ = http
                        .post(register_url)
                        .json(&body)
                        .timeout(patience)
                        .send()
                        .await;
                }
                _ => {
                    let body = json!({ "username": "steady@example.com", "password": PASSWORD });
                    let _ = http
                        .post(login_url)
                        .json(&body)
                        .timeout(patience)
                        .send()
                        .await;
                }
            }
        });
    }
    while callers.join_next().await.is_some() {}

    // Now every kind of write must work at once: more callers than pooled connections, so
    // a connection left inside a transaction would be handed to one of them. A stuck
    // write lock answers with an error after SQLite's 5 s busy timeout; the patience
    // below only bounds a hang (password hashing queues behind one core here).
    let patience = Duration::from_secs(30);
    for round in 0..3 {
        let mut writes = JoinSet::new();
        for i in 0..24 {
            let http = app.http.clone();
            let mut grpc = app.authentication.clone();
            let app_token = app.project.app_token.clone();
            let register_url = password_url(&app, "register");
            let login_url = password_url(&app, "login");
            writes.spawn(async move {
                let name = format!("after-{round}-{i}@example.com");
                let started = tokio::time::timeout(
                    patience,
                    grpc.authenticate(bearer(
                        &app_token,
                        AuthenticateRequest { name: name.clone() },
                    )),
                )
                .await
                .map_err(|_| format!("authenticate for {name} hung"))?
                .map_err(|status| format!("authenticate for {name}: {status:?}"))?;
                assert!(!started.get_ref().code_token.is_empty());
                if i >= 4 {
                    // Password hashing is slow in a debug build: a few suffice.
                    return Ok(());
                }

                let registered = http
                    .post(register_url)
                    .json(&json!({ "email": format!("pw-{name}"), "password": PASSWORD }))
                    .timeout(patience)
                    .send()
                    .await
                    .map_err(|e| format!("register hung: {e}"))?;
                if registered.status() != StatusCode::CREATED {
                    return Err(format!(
                        "register: {} {}",
                        registered.status(),
                        registered.text().await.unwrap_or_default()
                    ));
                }
                let login = http
                    .post(login_url)
                    .json(&json!({ "username": format!("pw-{name}"), "password": PASSWORD }))
                    .timeout(patience)
                    .send()
                    .await
                    .map_err(|e| format!("login hung: {e}"))?;
                if login.status() != StatusCode::CREATED {
                    return Err(format!(
                        "login: {} {}",
                        login.status(),
                        login.text().await.unwrap_or_default()
                    ));
                }
                Ok::<(), String>(())
            });
        }
        while let Some(outcome) = writes.join_next().await {
            if let Err(failure) = outcome.expect("writer task") {
                panic!("round {round}: a write failed after abandoned requests: {failure}");
            }
        }
    }

    // The code login of a steady user still runs to its end.
    let session = app.log_in("still-works@example.com").await;
    app.logout(session.token()).await.expect("logout");
}
