//! `/metrics` as Prometheus scrapes it, checked by the real `promtool`.

use crate::helpers::*;
use reqwest::StatusCode;
use std::io::Write;
use std::process::{Command, Stdio};

async fn scrape(app: &TestApp, base: &str) -> String {
    let response = app
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    response.text().await.unwrap()
}

/// A sample line of `metric` whose labels include all of `labels`.
fn has_sample(text: &str, metric: &str, labels: &[&str]) -> bool {
    text.lines().any(|line| {
        line.starts_with(metric)
            && line[metric.len()..].starts_with(['{', ' '])
            && labels.iter().all(|label| line.contains(label))
    })
}

fn promtool() -> Option<std::path::PathBuf> {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var("PORTCULLIS_TEST_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "PORTCULLIS_TEST_REQUIRE_PROMTOOL=1 but promtool is not installed"
        );
        report_skip(
            "promtool's check of /metrics (promtool is not installed)",
            "apt-get install prometheus; CI requires it with PORTCULLIS_TEST_REQUIRE_PROMTOOL=1",
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rpcs_routes_and_outcomes_and_pass_promtool() {
    let app = spawn_app(Backend::Sqlite).await;
    let user = app.log_in("ada@example.com").await;
    // A miss, then hits from the session cache.
    for _ in 0..3 {
        app.authorize(user.token()).await;
    }
    let started = app.authenticate("bob@example.com").await.unwrap();
    let code = app.wait_for_code("bob@example.com", 1).await;
    assert!(
        app.confirm(&wrong(&code), &started.code_token)
            .await
            .is_err()
    );
    assert!(
        app.password_login("nobody@example.com", PASSWORD)
            .await
            .is_err()
    );
    let shim = http_authenticate(&app, "carol@example.com").await;
    assert_eq!(shim.status(), StatusCode::OK);

    let text = scrape(&app, &app.address).await;
    for (metric, labels) in [
        (
            "grpc_server_handled_total",
            &[
                "grpc_service=\"portcullis.v1.AuthenticationService\"",
                "grpc_method=\"Authorize\"",
                "grpc_code=\"OK\"",
                "grpc_type=\"unary\"",
            ][..],
        ),
        (
            "grpc_server_handled_total",
            &["grpc_method=\"Confirm\"", "grpc_code=\"Unauthenticated\""][..],
        ),
        (
            "grpc_server_handling_seconds_bucket",
            &["grpc_method=\"Authorize\"", "le=\"0.005\""][..],
        ),
        (
            "grpc_server_started_total",
            &["grpc_method=\"Authenticate\""][..],
        ),
        (
            "portcullis_http_requests_total",
            &[
                "route=\"/api/authenticate\"",
                "method=\"GET\"",
                "status_class=\"2xx\"",
            ][..],
        ),
        (
            "portcullis_http_request_duration_seconds_bucket",
            &["route=\"/api/authenticate\""][..],
        ),
        ("portcullis_code_logins_started_total", &[][..]),
        ("portcullis_code_logins_confirmed_total", &[][..]),
        ("portcullis_code_logins_failed_total", &[][..]),
        (
            "portcullis_password_logins_total",
            &["outcome=\"failed\""][..],
        ),
        ("portcullis_messages_sent_total", &["channel=\"email\""][..]),
        ("portcullis_outbox_depth", &[][..]),
        ("portcullis_outbox_oldest_age_seconds", &[][..]),
        ("portcullis_session_cache_hits_total", &[][..]),
        ("portcullis_session_cache_misses_total", &[][..]),
        ("portcullis_password_hashing_waiting", &[][..]),
        ("portcullis_db_pool_connections", &[][..]),
        ("portcullis_db_transaction_begin_seconds_bucket", &[][..]),
    ] {
        assert!(
            has_sample(&text, metric, labels),
            "no {metric} {labels:?} in\n{text}"
        );
    }
    // Paths anyone can send are one label, not one series each.
    for path in ["/no/such/page/1", "/no/such/page/2"] {
        app.http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
    }
    let text = scrape(&app, &app.address).await;
    assert!(!text.contains("/no/such/page"), "raw paths became labels");
    assert!(has_sample(
        &text,
        "portcullis_http_requests_total",
        &["route=\"unmatched\""]
    ));

    let Some(promtool) = promtool() else {
        return;
    };
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_listen_metrics_are_served_there_and_not_on_the_main_port() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.metrics_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let address = app.metrics_address.expect("a metrics listener");
    let text = scrape(&app, &format!("http://{address}")).await;
    assert!(text.contains("portcullis_db_pool_connections"), "{text}");
    let main = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
}
