//! A project admin must not be able to make the service call into its own network
//! through the SMS webhook (SSRF), nor send mail as another domain.

use crate::helpers::*;
use portcullis::grpc::pb::UpdateProjectSettingsRequest;
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An "internal" service: counts every TCP connection; answers `reply` to each request.
async fn internal_listener(reply: String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, connections)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

async fn set_webhook(app: &TestApp, url: &str) -> Result<(), tonic::Status> {
    app.admin
        .clone()
        .update_project_settings(bearer(
            &app.project.admin_token,
            UpdateProjectSettingsRequest {
                sms_webhook_url: Some(url.into()),
                sms_webhook_secret: Some("bearer-secret".into()),
                ..Default::default()
            },
        ))
        .await
        .map(|_| ())
}

/// The outbox row of the newest text: (attempts, last error).
async fn last_text_attempt(app: &TestApp) -> (i64, String) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app.database.url).await.unwrap();
    let row = sqlx::query(
        "SELECT attempts, COALESCE(last_error, '') AS e FROM outbox WHERE channel = 'sms'
         ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (row.try_get("attempts").unwrap(), row.try_get("e").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_internal_addresses() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.policy.webhook_allow_private = false;
    })
    .await;
    let (port, connections) = internal_listener(OK.into()).await;

    // What the URL alone gives away is refused when it is set.
    for url in [
        format!("http://127.0.0.1:{port}/sms"),
        format!("https://127.0.0.1:{port}/sms"),
        format!("https://[::1]:{port}/sms"),
        format!("https://2130706433:{port}/sms"),
        "https://169.254.169.254/latest/meta-data".to_owned(),
        "https://10.0.0.1/sms".to_owned(),
        "http://sms.example.com/send".to_owned(),
    ] {
        let refused = set_webhook(&app, &url).await.expect_err(&url);
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{url}");
        assert!(
            refused.message().contains("sms_webhook_url"),
            "{url}: {}",
            refused.message()
        );
    }

    // A name that resolves to loopback passes the form check, and is refused when sending.
    set_webhook(&app, &format!("https://localhost:{port}/sms"))
        .await
        .expect("a name is only judged once resolved");
    app.authenticate("+41791234567").await.unwrap();
    let (attempts, error) = wait_for_attempt(&app).await;
    assert!(attempts >= 1);
    assert!(error.contains("internal addresses"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the internal listener must never see a connection"
    );
}

async fn wait_for_attempt(app: &TestApp) -> (i64, String) {
    for _ in 0..100 {
        let (attempts, error) = last_text_attempt(app).await;
        if attempts > 0 {
            return (attempts, error);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the text was never attempted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_redirects_are_not_followed() {
    // Allowed private targets (the operator's own local webhook), yet a redirect from it
    // to another internal address is not followed.
    let app = spawn_app(Backend::Sqlite).await;
    let (inner_port, inner) = internal_listener(OK.into()).await;
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{inner_port}/admin\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    );
    let (outer_port, outer) = internal_listener(redirect).await;
    set_webhook(&app, &format!("http://127.0.0.1:{outer_port}/sms"))
        .await
        .unwrap();
    app.authenticate("+41791234568").await.unwrap();
    let (_, error) = wait_for_attempt(&app).await;
    assert!(error.contains("307"), "{error}");
    assert!(outer.load(Ordering::SeqCst) >= 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inner.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_sender_keeps_its_name_but_not_a_foreign_domain() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.mail_from = "Portcullis <no-reply@auth.example.com>".into();
        settings.mail_sender_domains = vec!["acme.test".into()];
    })
    .await;
    let from_of = |mail: &str| {
        mail.lines()
            .find(|l| l.starts_with("From: "))
            .unwrap_or_default()
            .to_owned()
    };
    for (sender, recipient, expected) in [
        (
            "Your Bank <security@bank.test>",
            "one@example.com",
            "From: \"Your Bank\" <no-reply@auth.example.com>",
        ),
        (
            "Acme <login@acme.test>",
            "two@example.com",
            "From: Acme <login@acme.test>",
        ),
    ] {
        app.update_settings(UpdateProjectSettingsRequest {
            mail_sender: Some(sender.into()),
            ..Default::default()
        })
        .await;
        app.authenticate(recipient).await.unwrap();
        let mail = wait_for(|| app.mails_to(recipient).into_iter().next())
            .await
            .expect("a mail");
        assert_eq!(from_of(&mail), expected, "{sender}");
    }
}
