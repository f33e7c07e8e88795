//! Account takeover by pre-registration: a password set for an address before its owner
//! proved the mailbox must not survive the proof, by either route (Register first, or a
//! code login started first), nor when the proof and the Register race.

use crate::helpers::*;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    a_password_registered_before_the_owner_logs_in_by_code_is_removed_with_its_sessions,
    a_password_added_to_a_pending_code_login_does_not_survive_the_code,
    a_register_racing_the_owners_code_never_keeps_its_password,
    a_project_can_hold_password_logins_until_the_email_is_confirmed,
);

const ATTACKER_PASSWORD: &str = "mallory picked this one herself";
const OWNER_PASSWORD: &str = "the owner's own long passphrase";

async fn register(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.http
        .post(password_url(app, "register"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("register")
        .status()
}

/// A password login: the access token, or the status that refused it.
async fn password_login(app: &TestApp, email: &str, password: &str) -> Result<String, StatusCode> {
    let response = app
        .http
        .post(password_url(app, "login"))
        .json(&json!({ "username": email, "password": password }))
        .send()
        .await
        .expect("login");
    if response.status() != StatusCode::CREATED {
        return Err(response.status());
    }
    let body: Value = response.json().await.expect("JSON");
    Ok(body["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned())
}

async fn me_status(app: &TestApp, token: &str) -> StatusCode {
    app.http
        .get(password_url(app, "me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me")
        .status()
}

/// The victim's side after the proof: the attacker's password and session are gone, the
/// victim was told, and the link in that mail sets a password of the victim's choosing.
async fn assert_taken_back(app: &TestApp, victim: &str, attacker_token: &str) {
    assert_eq!(
        password_login(app, victim, ATTACKER_PASSWORD).await,
        Err(StatusCode::UNAUTHORIZED),
        "the attacker's password must not work after the owner proved the mailbox"
    );
    assert_eq!(
        me_status(app, attacker_token).await,
        StatusCode::UNAUTHORIZED,
        "the attacker's session must be revoked"
    );
    assert_eq!(app.authorize(attacker_token).await.role(), Role::Public);

    let notice = wait_for(|| {
        app.mails_to(victim)
            .into_iter()
            .map(|m| decode_mail(&m))
            .find(|m| m.contains("was removed"))
    })
    .await
    .expect("a mail telling the owner the password was removed");
    let link = notice
        .split_whitespace()
        .find(|word| word.starts_with("http") && word.contains("/auth/password/reset?token="))
        .expect("a link to set a password");
    assert!(link.contains("/auth/password/reset?token=rst_"), "{link}");
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let reset = app
        .http
        .post(password_url(app, "password/reset"))
        .form(&[
            ("token", token.as_str()),
            ("password", OWNER_PASSWORD),
            ("confirm", OWNER_PASSWORD),
        ])
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), StatusCode::OK);
    assert!(password_login(app, victim, OWNER_PASSWORD).await.is_ok());
}

async fn a_password_registered_before_the_owner_logs_in_by_code_is_removed_with_its_sessions(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let victim = "victim@example.com";

    // The published flow stays as documented: register 201, then login 201 at once.
    assert_eq!(
        register(&app, victim, ATTACKER_PASSWORD).await,
        StatusCode::CREATED
    );
    let attacker_token = password_login(&app, victim, ATTACKER_PASSWORD)
        .await
        .expect("login right after register works");
    assert_eq!(me_status(&app, &attacker_token).await, StatusCode::OK);

    // The owner logs in by code: the mailbox is proven.
    let owner = app.log_in(victim).await;

    // The owner's own code session is untouched by the clean-up.
    assert_eq!(app.authorize(owner.token()).await.role(), Role::User);
    assert_taken_back(&app, victim, &attacker_token).await;
}

async fn a_password_added_to_a_pending_code_login_does_not_survive_the_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let victim = "pending@example.com";

    // The attacker starts a code login for the victim (an unverified user now exists)...
    app.authenticate(victim).await.expect("authenticate");
    // ...then Register gives that user the attacker's password.
    assert_eq!(
        register(&app, victim, ATTACKER_PASSWORD).await,
        StatusCode::CREATED
    );
    let attacker_token = password_login(&app, victim, ATTACKER_PASSWORD)
        .await
        .expect("login");

    let owner = app.log_in(victim).await;

    assert_eq!(app.authorize(owner.token()).await.role(), Role::User);
    assert_taken_back(&app, victim, &attacker_token).await;
}

async fn a_register_racing_the_owners_code_never_keeps_its_password(backend: Backend) {
    let app = spawn_app(backend).await;
    // Each victim has a code in hand; the attacker's Register and the owner's Confirm run
    // at the same instant. Whichever lands first, the attacker's password must not work.
    let mut victims = Vec::new();
    for i in 0..8 {
        let victim = format!("race-{i}@example.com");
        let started = app.authenticate(&victim).await.expect("authenticate");
        let code = app.wait_for_code(&victim, 1).await;
        victims.push((victim, started.code_token, code));
    }
    // Register hashes before it writes, one hash at a time: spread the confirms over
    // that queue, so some land before a Register's write and some after.
    let started = std::time::Instant::now();
    assert_eq!(
        register(&app, "timing@example.com", ATTACKER_PASSWORD).await,
        StatusCode::CREATED
    );
    let register_time = started.elapsed();
    let mut races = tokio::task::JoinSet::new();
    for (i, (victim, code_token, code)) in victims.clone().into_iter().enumerate() {
        let delay = register_time * 2 * i as u32;
        let http = app.http.clone();
        let register_url = password_url(&app, "register");
        let mut verification = app.verification.clone();
        races.spawn(async move {
            let register = http
                .post(register_url)
                .json(&json!({ "email": victim, "password": ATTACKER_PASSWORD }))
                .send();
            let confirm = async {
                tokio::time::sleep(delay).await;
                verification
                    .confirm(portcullis::grpc::pb::ConfirmRequest { code, code_token })
                    .await
            };
            let (registered, confirmed) = tokio::join!(register, confirm);
            assert_eq!(registered.expect("register").status(), StatusCode::CREATED);
            confirmed.expect("the owner's code works");
        });
    }
    while let Some(race) = races.join_next().await {
        race.expect("race");
    }
    for (victim, _, _) in victims {
        assert_eq!(
            password_login(&app, &victim, ATTACKER_PASSWORD).await,
            Err(StatusCode::UNAUTHORIZED),
            "{victim}: a password registered beside the owner's proof survived it"
        );
    }
}

async fn a_project_can_hold_password_logins_until_the_email_is_confirmed(backend: Backend) {
    let app = spawn_app(backend).await;
    let project = app
        .update_settings(portcullis::grpc::pb::UpdateProjectSettingsRequest {
            password_require_verified_email: Some(true),
            ..Default::default()
        })
        .await;
    assert!(project.password_require_verified_email);
    let email = "careful@example.com";

    assert_eq!(
        register(&app, email, OWNER_PASSWORD).await,
        StatusCode::CREATED
    );
    let refused = app
        .http
        .post(password_url(&app, "login"))
        .json(&json!({ "username": email, "password": OWNER_PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("JSON error");
    assert_eq!(body["statusCode"], 403);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("confirm your email first"),
        "{body}"
    );
    let over_grpc = app
        .password_login(email, OWNER_PASSWORD)
        .await
        .expect_err("gRPC refuses too");
    assert_eq!(over_grpc.code(), tonic::Code::FailedPrecondition);
    // A wrong password still says only that.
    assert_eq!(
        password_login(&app, email, "not the password at all").await,
        Err(StatusCode::UNAUTHORIZED)
    );

    let mail = wait_for(|| app.mails_to(email).into_iter().next())
        .await
        .expect("a confirmation mail");
    let link = decode_mail(&mail)
        .split_whitespace()
        .find(|w| w.contains("/auth/email/confirm?token=vfy_"))
        .expect("a confirmation link")
        .to_owned();
    // Opening the link (as a mail scanner would) confirms nothing.
    let page = app.http.get(&link).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<form method=\"post\">")
    );
    assert_eq!(
        password_login(&app, email, OWNER_PASSWORD).await,
        Err(StatusCode::FORBIDDEN)
    );

    let token = link.split("token=").nth(1).unwrap();
    let confirm = |token: String| {
        app.http
            .post(link.split('?').next().unwrap())
            .form(&[("token", token)])
            .send()
    };
    let confirmed = confirm(token.to_owned()).await.expect("confirm");
    assert_eq!(confirmed.status(), StatusCode::OK);
    assert!(password_login(&app, email, OWNER_PASSWORD).await.is_ok());

    // The link works once; a made-up one never.
    let again = confirm(token.to_owned()).await.expect("confirm again");
    assert_eq!(again.status(), StatusCode::GONE);
    let forged = confirm("vfy_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())
        .await
        .expect("forged");
    assert_eq!(forged.status(), StatusCode::GONE);
}
