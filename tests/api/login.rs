//! The passwordless flow over gRPC: authenticate, code by mail, confirm, authorize,
//! user info, logout.

use crate::helpers::*;
use crate::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

on_both_backends!(
    a_new_name_logs_in_with_the_mailed_code_and_is_authorized_until_logout,
    a_known_name_is_not_a_registration,
    the_jwt_verifies_against_the_published_jwks,
    a_jwt_stops_authorizing_when_it_expires_while_the_opaque_token_still_works,
    logout_revokes_only_that_session,
    the_owner_is_authorized_as_root,
    invalid_tokens_are_public_not_errors,
    resending_a_code_kills_the_previous_one,
    a_logout_on_one_replica_reaches_the_others_within_the_cache_lifetime,
);

async fn a_new_name_logs_in_with_the_mailed_code_and_is_authorized_until_logout(backend: Backend) {
    let app = spawn_app(backend).await;

    let started = app
        .authenticate("Ada@Example.com")
        .await
        .expect("authenticate");
    assert!(started.registration, "a new name is a registration");
    let code = app.wait_for_code("ada@example.com", 1).await;
    assert_eq!(code.len(), 4, "codes are 4 digits by default");
    let mail = &app.mails_to("ada@example.com")[0];
    assert!(mail.contains("To: ada@example.com"), "{mail}");

    let session = app
        .confirm(&code, &started.code_token)
        .await
        .expect("confirm");
    assert!(session.token.starts_with("usr_"));
    assert_eq!(session.uid.len(), 36, "uid is a 36-character id");
    let jwt = session
        .json_web_token
        .clone()
        .expect("a JWT beside the session");
    let expires = jwt.expiration_date.expect("an expiration date");
    assert!(
        expires.seconds > app.clock.now(),
        "the JWT expires in the future"
    );

    for token in [&session.token, &jwt.token] {
        let who = app.authorize(token).await;
        assert_eq!(who.role(), Role::User);
        assert_eq!(who.id, session.user_id);
        assert_eq!(who.uid, session.uid);
        assert_eq!(who.name, "ada@example.com");
        assert!(!who.root);
    }

    let user = app.get_user(&session.token).await.expect("get user");
    assert_eq!(user.id, session.user_id);
    assert_eq!(user.uid, session.uid);
    assert_eq!(user.name, "ada@example.com");
    assert!(!user.encrypted);

    app.logout(&session.token).await.expect("logout");
    assert_eq!(app.authorize(&session.token).await.role(), Role::Public);
    assert_eq!(
        app.authorize(&jwt.token).await.role(),
        Role::Public,
        "the JWT dies with its session"
    );
    let after = app
        .get_user(&session.token)
        .await
        .expect_err("the session is gone");
    assert_eq!(after.code(), tonic::Code::Unauthenticated);
}

async fn a_known_name_is_not_a_registration(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app.log_in("grace@example.com").await;

    let again = app
        .authenticate("grace@example.com")
        .await
        .expect("authenticate");
    assert!(!again.registration);
    let code = app.wait_for_code("grace@example.com", 2).await;
    let session = app
        .confirm(&code, &again.code_token)
        .await
        .expect("confirm");
    assert_eq!(session.user_id, first.session.user_id, "same user");
    assert_eq!(session.uid, first.session.uid);
    assert_ne!(session.token, first.token(), "a new session");
}

async fn the_jwt_verifies_against_the_published_jwks(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.log_in("linus@example.com").await;

    let jwks: serde_json::Value = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("JSON");
    let header = jsonwebtoken::decode_header(login.jwt()).expect("a JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.expect("kid in the header");
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the signing key is published");
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");

    let key =
        jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[&app.project.project_id]);
    validation.set_issuer(&[&format!("http://127.0.0.1:{}", app.port)]);
    let data = jsonwebtoken::decode::<serde_json::Value>(login.jwt(), &key, &validation)
        .expect("verifies");
    assert_eq!(data.claims["sub"], login.session.uid.as_str());
    assert!(data.claims["sid"].is_string());
    assert!(data.claims["iat"].is_i64());

    // One flipped signature byte and the token is worthless.
    let (head, signature) = login.jwt().rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 1;
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, &key, &validation).is_err());
    assert_eq!(app.authorize(&forged).await.role(), Role::Public);
}

async fn a_jwt_stops_authorizing_when_it_expires_while_the_opaque_token_still_works(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let login = app.log_in("margaret@example.com").await;

    app.clock.advance(3601);
    assert_eq!(app.authorize(login.jwt()).await.role(), Role::Public);
    assert_eq!(app.authorize(login.token()).await.role(), Role::User);

    app.clock.advance(31 * 24 * 3600);
    assert_eq!(
        app.authorize(login.token()).await.role(),
        Role::Public,
        "sessions expire too"
    );
}

async fn logout_revokes_only_that_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let phone = app.log_in("barbara@example.com").await;
    let laptop = app.log_in("barbara@example.com").await;

    app.logout(phone.token()).await.expect("logout");
    assert_eq!(app.authorize(phone.token()).await.role(), Role::Public);
    assert_eq!(app.authorize(laptop.token()).await.role(), Role::User);
    assert_eq!(app.authorize(laptop.jwt()).await.role(), Role::User);

    let again = app
        .logout(phone.token())
        .await
        .expect_err("already logged out");
    assert_eq!(again.code(), tonic::Code::Unauthenticated);
}

async fn the_owner_is_authorized_as_root(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.log_in(OWNER).await;
    let started = app.authenticate(OWNER).await.expect("authenticate");
    assert!(!started.registration, "the owner exists from the start");

    let who = app.authorize(owner.token()).await;
    assert_eq!(who.role(), Role::User);
    assert!(who.root);
    assert!(app.authorize(owner.jwt()).await.root);

    let someone = app.log_in("someone@example.com").await;
    assert!(!app.authorize(someone.token()).await.root);
}

async fn invalid_tokens_are_public_not_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let login = app.log_in("ken@example.com").await;
    let long = "x".repeat(100_000);
    for token in [
        "",
        "usr_doesnotexist",
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
        &app.project.app_token,
        &app.project.admin_token,
        &long,
        &login.token()[..login.token().len() - 1],
    ] {
        let who = app.authorize(token).await;
        assert_eq!(who.role(), Role::Public, "token {:.40}", token);
        assert_eq!(who.id, 0);
        assert!(who.uid.is_empty());
    }
}

async fn resending_a_code_kills_the_previous_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let started = app.authenticate("alan@example.com").await.unwrap();
    let first = app.wait_for_code("alan@example.com", 1).await;

    app.resend_code("alan@example.com", &started.code_token)
        .await
        .expect("resend");
    let second = app.wait_for_code("alan@example.com", 2).await;

    if first != second {
        let old = app
            .confirm(&first, &started.code_token)
            .await
            .expect_err("the old code is dead");
        assert_eq!(old.code(), tonic::Code::Unauthenticated);
        // That wrong try counts as an attempt, so no more resends for this request.
        let resend = app
            .resend_code("alan@example.com", &started.code_token)
            .await
            .expect_err("attempted");
        assert_eq!(resend.code(), tonic::Code::FailedPrecondition);
    }
    app.confirm(&second, &started.code_token)
        .await
        .expect("the new code works");
}

async fn a_logout_on_one_replica_reaches_the_others_within_the_cache_lifetime(backend: Backend) {
    let cache = std::time::Duration::from_millis(300);
    let first = spawn_app_with(backend, |s| s.session_cache = cache).await;
    // Both replicas deliver from the one outbox table, so both write to one folder.
    let outbox = first.outbox.clone();
    let second = spawn_app_on(first.database.shared(), |s| {
        s.session_cache = cache;
        s.mail_outbox = outbox;
    })
    .await;
    let login = first.log_in("replicated@example.com").await;
    assert_eq!(
        second.authorize(login.token()).await.role(),
        Role::User,
        "the other replica knows the session"
    );

    first.logout(login.token()).await.unwrap();
    assert_eq!(
        first.authorize(login.token()).await.role(),
        Role::Public,
        "at once where it happened"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while second.authorize(login.token()).await.role() != Role::Public {
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica stops honouring it once its cache entry expires"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_logout_reaches_the_other_replicas_at_once() {
    if postgres_admin_url().is_none() {
        return;
    }
    // A cache lifetime far beyond the wait below: only the notification can explain it.
    let cache = std::time::Duration::from_secs(300);
    // Replicas share one public URL (the JWT issuer), as a deployment behind one name does.
    let public_url = Some("https://auth.example.test".to_owned());
    let first = spawn_app_with(Backend::Postgres, |s| {
        s.session_cache = cache;
        s.public_url = public_url.clone();
    })
    .await;
    let outbox = first.outbox.clone();
    let second = spawn_app_on(first.database.shared(), |s| {
        s.session_cache = cache;
        s.mail_outbox = outbox;
        s.public_url = public_url.clone();
    })
    .await;
    let login = first.log_in("notified@example.com").await;
    for token in [login.token(), login.jwt()] {
        assert_eq!(
            second.authorize(token).await.role(),
            Role::User,
            "cached on the other replica"
        );
    }

    first.logout(login.token()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while second.authorize(login.jwt()).await.role() != Role::Public {
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica dropped the session from its cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(second.authorize(login.token()).await.role(), Role::Public);
}

/// The outbox folder removed while the service runs (tidying up a first start's mail) is
/// made again for the next message.
#[tokio::test]
async fn the_outbox_folder_removed_while_serving_is_made_again() {
    let app = spawn_app(Backend::Sqlite).await;
    app.log_in("first@example.com").await;
    std::fs::remove_dir_all(&app.outbox).unwrap();
    app.authenticate("ada@example.com").await.unwrap();
    let code = app.wait_for_code("ada@example.com", 1).await;
    assert_eq!(code.len(), 4);
}
