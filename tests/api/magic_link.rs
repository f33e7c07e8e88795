//! The magic link: opening it changes nothing, its button confirms, and the app that
//! started the login collects the session by polling, once.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::ConfirmLinkRequest;
use reqwest::StatusCode;
use tonic::Code;

on_both_backends!(
    following_the_link_lets_the_app_collect_the_session_once_by_polling,
    a_used_or_expired_link_shows_a_clear_page_and_confirms_nothing,
    resending_a_code_replaces_the_link,
    confirm_link_over_grpc_confirms_like_the_button,
);

async fn open_link(app: &TestApp, recipient: &str, mail_number: usize) -> String {
    app.wait_for_code(recipient, mail_number).await;
    let mail = &app.mails_to(recipient)[mail_number - 1];
    let link = link_in(mail).expect("a link in the login mail");
    assert!(
        link.starts_with(&app.address),
        "the link points at this service: {link}"
    );
    link
}

fn token_of(link: &str) -> String {
    link.split("token=")
        .nth(1)
        .expect("a token parameter")
        .to_owned()
}

async fn following_the_link_lets_the_app_collect_the_session_once_by_polling(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("ada@example.com").await.unwrap();
    let link = open_link(&app, "ada@example.com", 1).await;

    // A mail scanner opening the link confirms nothing.
    let page = app.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("script"),
        "{csp}"
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Default project"),
        "the page names the project: {html}"
    );
    assert!(html.contains("<form method=\"post\""), "{html}");
    let not_yet = app.poll(&started.code_token).await.expect("poll");
    assert!(!not_yet.confirmed);
    assert!(not_yet.session.is_none());

    // Pressing the button confirms.
    let confirmed = app
        .http
        .post(format!("{}/login/link", app.address))
        .form(&[("token", token_of(&link))])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::OK);
    assert!(confirmed.text().await.unwrap().contains("Login confirmed"));

    let polled = app.poll(&started.code_token).await.expect("poll");
    assert!(polled.confirmed);
    let session = polled.session.expect("the session, once");
    let who = app.authorize(&session.token).await;
    assert_eq!(who.role(), Role::User);
    assert_eq!(who.name, "ada@example.com");

    let again = app
        .poll(&started.code_token)
        .await
        .expect_err("the session is handed out once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let code = app.wait_for_code("ada@example.com", 1).await;
    let confirm = app
        .confirm(&code, &started.code_token)
        .await
        .expect_err("the request is used");
    assert_eq!(confirm.code(), Code::FailedPrecondition);
}

async fn a_used_or_expired_link_shows_a_clear_page_and_confirms_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.authenticate("grace@example.com").await.unwrap();
    let link = open_link(&app, "grace@example.com", 1).await;
    let post = |token: String| {
        let http = app.http.clone();
        let url = format!("{}/login/link", app.address);
        async move {
            http.post(url)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(token_of(&link)).await.status(), StatusCode::OK);
    let reused = post(token_of(&link)).await;
    assert_eq!(reused.status(), StatusCode::GONE);
    assert!(reused.text().await.unwrap().contains("already used"));
    let reopened = app.http.get(&link).send().await.unwrap();
    assert_eq!(reopened.status(), StatusCode::GONE);
    assert!(app.poll(&first.code_token).await.unwrap().confirmed);

    let second = app.authenticate("grace@example.com").await.unwrap();
    let link = open_link(&app, "grace@example.com", 2).await;
    app.clock.advance(10 * 60 + 1);
    let expired = post(token_of(&link)).await;
    assert_eq!(expired.status(), StatusCode::GONE);
    assert!(expired.text().await.unwrap().contains("expired"));
    let poll = app.poll(&second.code_token).await.expect_err("expired");
    assert_eq!(poll.code(), Code::FailedPrecondition);

    for garbage in ["lnk_nope", "", "<script>alert(1)</script>"] {
        let page = post(garbage.to_owned()).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "{garbage}");
        assert!(
            !page.text().await.unwrap().contains("<script>"),
            "user input is escaped"
        );
    }
    let unknown = app
        .poll("code_unknown")
        .await
        .expect_err("unknown code token");
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn resending_a_code_replaces_the_link(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("alan@example.com").await.unwrap();
    let old = open_link(&app, "alan@example.com", 1).await;
    app.resend_code("alan@example.com", &started.code_token)
        .await
        .unwrap();
    let new = open_link(&app, "alan@example.com", 2).await;
    assert_ne!(old, new);

    let old_page = app.http.get(&old).send().await.unwrap();
    assert_eq!(
        old_page.status(),
        StatusCode::NOT_FOUND,
        "the old link is dead"
    );
    assert_eq!(
        app.http.get(&new).send().await.unwrap().status(),
        StatusCode::OK
    );
}

async fn confirm_link_over_grpc_confirms_like_the_button(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("hedy@example.com").await.unwrap();
    let link = open_link(&app, "hedy@example.com", 1).await;
    let request = ConfirmLinkRequest {
        link_token: token_of(&link),
    };
    app.verification
        .clone()
        .confirm_link(request.clone())
        .await
        .expect("confirm link");
    let again = app
        .verification
        .clone()
        .confirm_link(request)
        .await
        .expect_err("once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let session = app
        .poll(&started.code_token)
        .await
        .unwrap()
        .session
        .expect("session");
    assert_eq!(app.authorize(&session.token).await.name, "hedy@example.com");
}

/// Someone reading the outbox folder (`cat` on the .eml) gets a link that works: the
/// mail is plain 7bit, the link on one line, not quoted-printable split across lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_in_an_outbox_file_is_on_one_line() {
    let app = spawn_app(Backend::Sqlite).await;
    app.authenticate("cat@example.com").await.unwrap();
    let link = open_link(&app, "cat@example.com", 1).await;
    let raw = std::fs::read_dir(&app.outbox)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().contains("cat@example.com"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .expect("the .eml file");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-transfer-encoding: 7bit"),
        "{raw}"
    );
    assert!(
        raw.lines().any(|line| line.trim() == link),
        "the link whole on one line: {raw}"
    );
}
