//! Email + password accounts over gRPC (PasswordService) and the hosted reset page over
//! plain HTTP, on both databases.

use futures_util::future::join_all;
use portcullis::grpc::pb::*;
use reqwest::StatusCode;
use sqlx::Row;
use tonic::Code;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    the_whole_journey_from_registration_to_a_reset_password,
    an_unknown_email_and_a_wrong_password_get_the_same_answer_and_no_session,
    an_account_is_locked_after_five_failures_until_its_window_ends,
    concurrent_guesses_never_exceed_the_limit,
    concurrent_right_logins_are_not_locked_out,
    a_client_address_is_locked_after_its_failures_over_all_accounts,
    weak_short_and_malformed_input_is_refused_and_nothing_is_written,
    registering_a_known_email_succeeds_silently_and_mails_its_owner,
    a_project_can_make_register_reveal_a_known_email,
    a_code_user_adds_a_password_only_through_the_mailed_link,
    a_code_user_that_never_confirmed_takes_the_password_at_registration,
    change_password_needs_the_current_password_and_revokes_other_sessions,
    reset_links_work_once_expire_and_are_replaced_by_newer_ones,
    forgot_password_for_an_unknown_email_succeeds_and_sends_nothing,
    a_shutdown_right_after_forgot_password_loses_no_reset_link,
    imported_bcrypt_and_weaker_argon2_hashes_log_in_and_are_upgraded,
    cost_bomb_hashes_are_refused_at_import_and_unchecked_when_already_stored,
    me_refuses_bad_tokens_and_tokens_of_other_projects,
    the_reset_page_shows_a_labelled_form_with_strict_headers,
    the_reset_page_says_why_a_link_no_longer_works,
    the_reset_page_posts_back_and_shows_success_or_what_to_fix,
);

// ---- scenarios ----

async fn the_whole_journey_from_registration_to_a_reset_password(backend: Backend) {
    let app = spawn_app(backend).await;
    let ada = "ada@example.com";

    app.register("Ada@Example.com", PASSWORD)
        .await
        .expect("register");
    let login = app.password_login(ada, PASSWORD).await.expect("login");
    let access_token = login.access_token.clone();
    assert!(access_token.starts_with("eyJ"), "the access token is a JWT");

    let who = me(&app, &access_token).await.expect("me");
    assert_eq!(who.email, ada, "emails are stored lower-cased");
    assert_eq!(who.id.len(), 36, "the id is the uid");
    let authorized = app.authorize(&access_token).await;
    assert_eq!(
        authorized.role(),
        Role::User,
        "Authorize accepts the access token"
    );
    assert_eq!(authorized.uid, who.id);

    let wrong = app
        .password_login(ada, "purple monkey dishwashers")
        .await
        .expect_err("wrong password");
    let unknown = app
        .password_login("nobody@example.com", PASSWORD)
        .await
        .expect_err("unknown user");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message()),
        "an unknown email is indistinguishable from a wrong password"
    );

    for _ in 0..4 {
        let _ = app.password_login(ada, "not the password").await;
    }
    let locked = app
        .password_login(ada, PASSWORD)
        .await
        .expect_err("locked after five failures");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    app.clock.advance(15 * 60 + 1);
    let second = app
        .password_login(ada, PASSWORD)
        .await
        .expect("the lock ends with its window");

    let revoked = change_password(&app, &second.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .expect("change password");
    assert_eq!(revoked.revoked_sessions, 1, "the first session was revoked");
    assert_eq!(app.authorize(&access_token).await.role(), Role::Public);
    assert_eq!(app.authorize(&second.access_token).await.role(), Role::User);

    app.forgot_password(ada).await.expect("forgot");
    let link = app.wait_for_reset_link(ada, 1).await;
    reset_password(&app, &token_of(&link), "quiet harbor at dawn")
        .await
        .expect("reset");

    let after = app
        .password_login(ada, "quiet harbor at dawn")
        .await
        .expect("the new password logs in");
    assert_eq!(me(&app, &after.access_token).await.unwrap().id, who.id);
    let old = app
        .password_login(ada, NEW_PASSWORD)
        .await
        .expect_err("the old password is refused");
    assert_eq!(old.code(), Code::Unauthenticated);
    assert_eq!(
        app.authorize(&second.access_token).await.role(),
        Role::Public,
        "sessions from before the reset are revoked"
    );
}

async fn an_unknown_email_and_a_wrong_password_get_the_same_answer_and_no_session(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.register("grace@example.com", PASSWORD).await.unwrap();
    // The owner exists but logs in by code only: no password is not a different answer.
    let answers = [
        app.password_login("grace@example.com", "cobol forever")
            .await,
        app.password_login("hopper@example.com", "cobol forever")
            .await,
        app.password_login(OWNER, "cobol forever").await,
    ];
    for answer in answers {
        let error = answer.expect_err("refused");
        assert_eq!(error.code(), Code::Unauthenticated);
        assert_eq!(error.message(), "wrong email or password");
    }
    assert_eq!(app.database.count("sessions").await, 0);
}

async fn an_account_is_locked_after_five_failures_until_its_window_ends(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("linus@example.com", PASSWORD).await.unwrap();

    for account in ["linus@example.com", "nobody@example.com"] {
        for _ in 0..5 {
            let error = app
                .password_login(account, "wrong guess")
                .await
                .unwrap_err();
            assert_eq!(error.code(), Code::Unauthenticated);
        }
        let locked = app.password_login(account, PASSWORD).await.unwrap_err();
        assert_eq!(locked.code(), Code::ResourceExhausted, "{account}");
        assert!(
            locked.message().contains("try again in 15 minutes")
                && locked.message().contains("ForgotPassword"),
            "{}",
            locked.message()
        );
        let retry_after: i64 = locked
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&retry_after), "{retry_after}");
    }
    assert_eq!(app.database.count("sessions").await, 0);

    app.clock.advance(15 * 60 + 1);
    app.password_login("linus@example.com", PASSWORD)
        .await
        .expect("unlocked once the window has passed");
}

async fn concurrent_guesses_never_exceed_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alan@example.com", PASSWORD).await.unwrap();

    let guesses = (0..20).map(|i| {
        let app = &app;
        async move {
            app.password_login("alan@example.com", &format!("guess number {i}"))
                .await
        }
    });
    let answers = join_all(guesses).await;
    let judged = answers
        .iter()
        .filter(|a| a.as_ref().is_err_and(|e| e.code() == Code::Unauthenticated))
        .count();
    assert!(judged <= 5, "{judged} guesses were checked");
    assert!(answers.iter().all(|a| {
        a.as_ref()
            .is_err_and(|e| matches!(e.code(), Code::Unauthenticated | Code::ResourceExhausted))
    }));
}

async fn concurrent_right_logins_are_not_locked_out(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("grace@example.com", PASSWORD).await.unwrap();

    let logins = (0..12).map(|_| app.password_login("grace@example.com", PASSWORD));
    for answer in join_all(logins).await {
        if let Err(error) = answer {
            // More checks than the limit at once: asked to retry at once, not locked.
            assert_eq!(error.code(), Code::ResourceExhausted);
            assert!(
                error.message().contains("retry in a second"),
                "{}",
                error.message()
            );
            assert_eq!(error.metadata().get("retry-after").unwrap(), "1");
        }
    }
    app.password_login("grace@example.com", PASSWORD)
        .await
        .expect("not locked afterwards");
}

async fn a_client_address_is_locked_after_its_failures_over_all_accounts(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.policy.password_failures_per_address = 3;
    })
    .await;
    app.register("barbara@example.com", PASSWORD).await.unwrap();

    for guess in ["a@example.com", "b@example.com", "c@example.com"] {
        let error = app.password_login(guess, "wrong guess").await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
    }
    let locked = app
        .password_login("barbara@example.com", PASSWORD)
        .await
        .expect_err("this address has used up its failures");
    assert_eq!(locked.code(), Code::ResourceExhausted);
    assert!(
        locked.message().contains("from this network address"),
        "{}",
        locked.message()
    );

    app.clock.advance(15 * 60 + 1);
    for _ in 0..5 {
        // Right passwords do not use up the address's budget.
        app.password_login("barbara@example.com", PASSWORD)
            .await
            .expect("unlocked, and successes are not counted");
    }
}

async fn weak_short_and_malformed_input_is_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let users = app.database.count("users").await;
    let project = app.project.project_id.clone();

    let cases: [(&str, &str, &str, &str); 8] = [
        (
            &project,
            "eve@example.com",
            "Xq7#pL2",
            "password must be at least 8 characters long",
        ),
        (
            &project,
            "eve@example.com",
            "Eve.Example2024",
            "password is too close to the email address",
        ),
        (
            &project,
            "eve@example.com",
            "password1234",
            "password is too easy to guess: this is a very common password",
        ),
        (
            &project,
            "eve@example.com",
            "qwertyuiop",
            "password is too easy to guess",
        ),
        (
            &project,
            "eve@example.com",
            "eve@example.com",
            "password is too easy to guess",
        ),
        (
            &project,
            "not an email",
            PASSWORD,
            "email is not an email address",
        ),
        (&project, "", PASSWORD, "email is required"),
        ("", "eve@example.com", PASSWORD, "project_id is required"),
    ];
    for (project_id, email, password, message) in cases {
        let error = app
            .register_in(project_id, email, password)
            .await
            .expect_err(password);
        assert_eq!(error.code(), Code::InvalidArgument, "{password}");
        assert!(
            error.message().starts_with(message),
            "{password}: {}",
            error.message()
        );
    }
    let long = "ab€dèfgh".repeat(17);
    let error = app.register("eve@example.com", &long).await.unwrap_err();
    assert!(
        error.message().contains("longer than 128 characters"),
        "{}",
        error.message()
    );

    let unknown = app
        .register_in(
            "00000000-0000-0000-0000-000000000000",
            "eve@example.com",
            PASSWORD,
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(app.database.count("users").await, users);
    assert_eq!(app.database.count("outbox").await, 0);
}

async fn registering_a_known_email_succeeds_silently_and_mails_its_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alan@example.com", PASSWORD).await.unwrap();
    let users = app.database.count("users").await;

    app.register("alan@example.com", "an entirely different phrase")
        .await
        .expect("a known email answers like a new one");
    let mail = app.wait_for_mail("alan@example.com", 1).await;
    assert!(mail.contains("Someone tried to register"), "{mail}");
    assert_eq!(app.database.count("users").await, users);
    app.password_login("alan@example.com", PASSWORD)
        .await
        .expect("the first password still stands");
    app.password_login("alan@example.com", "an entirely different phrase")
        .await
        .expect_err("the second one was not set");
}

async fn a_project_can_make_register_reveal_a_known_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let project = app
        .update_settings(portcullis::grpc::pb::UpdateProjectSettingsRequest {
            password_reveal_existing: Some(true),
            ..Default::default()
        })
        .await;
    assert!(project.password_reveal_existing);
    app.register("ken@example.com", PASSWORD).await.unwrap();

    let error = app
        .register("ken@example.com", PASSWORD)
        .await
        .expect_err("revealed");
    assert_eq!(error.code(), Code::AlreadyExists);
    assert!(
        error.message().contains("already exists"),
        "{}",
        error.message()
    );
    assert_eq!(app.database.count("outbox").await, 0, "no mail then");
}

async fn a_code_user_adds_a_password_only_through_the_mailed_link(backend: Backend) {
    let app = spawn_app(backend).await;
    let margaret = "margaret@example.com";
    let by_code = app.log_in(margaret).await;

    // Someone else registering her email does not get a password into her account.
    app.register(margaret, "apollo guidance computer")
        .await
        .expect("answers like a new registration");
    let refused = app
        .password_login(margaret, "apollo guidance computer")
        .await
        .expect_err("not set");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let no_password = change_password(&app, by_code.token(), "anything at all", PASSWORD)
        .await
        .expect_err("no password to change yet");
    assert_eq!(no_password.code(), Code::FailedPrecondition);
    assert!(
        no_password.message().contains("ForgotPassword"),
        "{}",
        no_password.message()
    );

    // She can, through the link that proves her mailbox.
    app.forgot_password(margaret).await.unwrap();
    // Her mails so far: the login code, and the notice about the registration attempt.
    let notice = app.wait_for_mail(margaret, 2).await;
    assert!(notice.contains("Someone tried to register"), "{notice}");
    let link = app.wait_for_reset_link(margaret, 3).await;
    reset_password(&app, &token_of(&link), PASSWORD)
        .await
        .unwrap();
    let by_password = app
        .password_login(margaret, PASSWORD)
        .await
        .expect("password login");
    let session = by_password.session.expect("a session");
    assert_eq!(
        session.user_id, by_code.session.user_id,
        "one user, two ways in"
    );

    // And a password user still logs in by code.
    let again_by_code = app.log_in(margaret).await;
    assert_eq!(again_by_code.session.user_id, session.user_id);
}

async fn a_code_user_that_never_confirmed_takes_the_password_at_registration(backend: Backend) {
    let app = spawn_app(backend).await;
    app.authenticate("barbara@example.com").await.unwrap();
    let users = app.database.count("users").await;

    app.register("barbara@example.com", PASSWORD).await.unwrap();
    app.password_login("barbara@example.com", PASSWORD)
        .await
        .expect("the pending user got the password");
    assert_eq!(app.database.count("users").await, users, "the same user");
}

async fn change_password_needs_the_current_password_and_revokes_other_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("niklaus@example.com", PASSWORD).await.unwrap();
    let laptop = app
        .password_login("niklaus@example.com", PASSWORD)
        .await
        .unwrap();
    let phone = app
        .password_login("niklaus@example.com", PASSWORD)
        .await
        .unwrap();

    let wrong = change_password(&app, &phone.access_token, "not my password", NEW_PASSWORD)
        .await
        .expect_err("wrong current password");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let weak = change_password(&app, &phone.access_token, PASSWORD, "password1")
        .await
        .expect_err("weak new password");
    assert_eq!(weak.code(), Code::InvalidArgument);
    assert!(
        weak.message().starts_with("new_password is too easy"),
        "{}",
        weak.message()
    );
    let anonymous = change_password(&app, "", PASSWORD, NEW_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(
        app.authorize(&laptop.access_token).await.role(),
        Role::User,
        "refusals revoke nothing"
    );

    let changed = change_password(&app, &phone.access_token, PASSWORD, NEW_PASSWORD)
        .await
        .expect("change");
    assert_eq!(changed.revoked_sessions, 1);
    assert_eq!(
        app.authorize(&laptop.access_token).await.role(),
        Role::Public
    );
    let laptop_token = laptop.session.as_ref().unwrap().token.clone();
    assert_eq!(
        app.authorize(&laptop_token).await.role(),
        Role::Public,
        "the opaque token too"
    );
    assert_eq!(
        app.authorize(&phone.access_token).await.role(),
        Role::User,
        "this session stays"
    );
    app.password_login("niklaus@example.com", NEW_PASSWORD)
        .await
        .expect("new password");
    app.password_login("niklaus@example.com", PASSWORD)
        .await
        .expect_err("old password");
}

async fn reset_links_work_once_expire_and_are_replaced_by_newer_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let edsger = "edsger@example.com";
    app.register(edsger, PASSWORD).await.unwrap();

    app.forgot_password(edsger).await.unwrap();
    let first = token_of(&app.wait_for_reset_link(edsger, 1).await);
    app.forgot_password(edsger).await.unwrap();
    let second = token_of(&app.wait_for_reset_link(edsger, 2).await);
    assert!(
        first.starts_with("rst_") && first.len() >= 40,
        "high-entropy token"
    );
    let stored: Vec<u8> = query_bytes(&app, "SELECT token_hash AS v FROM password_resets").await;
    assert_ne!(stored, second.as_bytes(), "only a hash is stored");

    let replaced = reset_password(&app, &first, NEW_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(replaced.code(), Code::NotFound, "a newer link replaced it");
    reset_password(&app, &second, NEW_PASSWORD)
        .await
        .expect("reset");
    let used = reset_password(&app, &second, "yet another good phrase")
        .await
        .unwrap_err();
    assert_eq!(used.code(), Code::FailedPrecondition);
    assert!(
        used.message().contains("already used"),
        "{}",
        used.message()
    );

    app.forgot_password(edsger).await.unwrap();
    let third = token_of(&app.wait_for_reset_link(edsger, 3).await);
    app.clock.advance(3600 + 1);
    let expired = reset_password(&app, &third, "yet another good phrase")
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );
    app.password_login(edsger, NEW_PASSWORD)
        .await
        .expect("still the reset password");
}

async fn a_shutdown_right_after_forgot_password_loses_no_reset_link(backend: Backend) {
    use sqlx::Connection;
    let mut app = spawn_app(backend).await;
    app.register("tim@example.com", PASSWORD).await.unwrap();

    // Hold the outbox's write lock for a moment, as a busy database would: the answer
    // may wait, but once it is in, the link must be stored.
    let mut holder = sqlx::AnyConnection::connect(&app.database.url)
        .await
        .expect("connect");
    match backend {
        Backend::Sqlite => {
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut holder)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            sqlx::raw_sql("BEGIN; LOCK TABLE outbox IN EXCLUSIVE MODE")
                .execute(&mut holder)
                .await
                .unwrap();
        }
    }
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    };
    let answered = async {
        app.forgot_password("tim@example.com").await.unwrap();
        app.database.count("password_resets").await
    };
    let (stored, ()) = tokio::join!(answered, release);
    assert_eq!(stored, 1, "the reset link must be stored before the answer");
    holder.close().await.unwrap();
    // SIGTERM the moment the answer is in.
    app.stop().await.expect("clean shutdown");

    // It went out before the shutdown, or a restart sends it.
    let restarted = spawn_app_on(app.database.shared(), |_| {}).await;
    let sent = wait_for(|| {
        let mut mails = app.mails_to("tim@example.com");
        mails.extend(restarted.mails_to("tim@example.com"));
        (!mails.is_empty()).then_some(mails)
    })
    .await
    .expect("the reset mail is sent");
    assert_eq!(sent.len(), 1);
    assert!(decode_mail(&sent[0]).contains("/auth/password/reset?token="));
}

async fn forgot_password_for_an_unknown_email_succeeds_and_sends_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("tim@example.com", PASSWORD).await.unwrap();

    app.forgot_password("nobody@example.com")
        .await
        .expect("always succeeds");
    app.forgot_password("tim@example.com").await.unwrap();
    app.wait_for_reset_link("tim@example.com", 1).await;
    assert_eq!(
        app.database.count("outbox").await,
        1,
        "only the known email got mail"
    );
    assert_eq!(app.database.count("password_resets").await, 1);

    let malformed = app.forgot_password("nobody").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

async fn imported_bcrypt_and_weaker_argon2_hashes_log_in_and_are_upgraded(backend: Backend) {
    let app = spawn_app(backend).await;
    // Imported from another system, with that system's hashes and short passwords.
    let bcrypt = bcrypt::hash("test", 4).unwrap().replacen("$2b$", "$2y$", 1);
    let argon2i = weak_argon2_hash("unix and c");
    let row = |name: &str, hash: &str| portcullis::grpc::pb::ImportUser {
        name: name.into(),
        uid: String::new(),
        password_hash: hash.into(),
    };
    let imported = app
        .admin
        .clone()
        .import_users(bearer(
            &app.project.admin_token,
            portcullis::grpc::pb::ImportUsersRequest {
                users: vec![
                    row("dennis@example.com", &bcrypt),
                    row("ken@example.com", &argon2i),
                ],
            },
        ))
        .await
        .expect("import")
        .into_inner();
    assert!(imported.imported, "{:?}", imported.results);

    app.password_login("dennis@example.com", "test")
        .await
        .expect("bcrypt login");
    app.password_login("ken@example.com", "unix and c")
        .await
        .expect("argon2i login");
    for name in ["dennis@example.com", "ken@example.com"] {
        let hash = query_string(
            &app,
            &format!("SELECT password_hash AS v FROM users WHERE name = '{name}'"),
        )
        .await;
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{name}: {hash}"
        );
    }
    app.password_login("dennis@example.com", "test")
        .await
        .expect("and again, from argon2id");
    app.password_login("dennis@example.com", "tset")
        .await
        .expect_err("wrong");
}

async fn cost_bomb_hashes_are_refused_at_import_and_unchecked_when_already_stored(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let digest = "c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
    let bombs = [
        (
            format!("$argon2id$v=19$m=19456,t=2000,p=1${digest}"),
            "t=2000",
        ),
        (
            format!("$argon2id$v=19$m=524288,t=2,p=1${digest}"),
            "m=524288",
        ),
        (
            format!("$argon2id$v=19$m=4294967295,t=2,p=1${digest}"),
            "m=4294967295",
        ),
        (format!("$argon2id$v=19$m=19456,t=2,p=64${digest}"), "p=64"),
        (
            "$2b$31$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_owned(),
            "cost 31",
        ),
    ];
    let row = |name: String, hash: &str| ImportUser {
        name,
        uid: String::new(),
        password_hash: hash.into(),
    };
    let mut rows: Vec<ImportUser> = bombs
        .iter()
        .enumerate()
        .map(|(i, (hash, _))| row(format!("bomb-{i}@example.com"), hash))
        .collect();
    rows.push(row(
        "fine@example.com".into(),
        &weak_argon2_hash("unix and c"),
    ));
    let users_before = app.database.count("users").await;
    let answer = app
        .admin
        .clone()
        .import_users(bearer(
            &app.project.admin_token,
            ImportUsersRequest { users: rows },
        ))
        .await
        .expect("import answers row by row")
        .into_inner();
    assert!(!answer.imported);
    for ((_, reason), result) in bombs.iter().zip(&answer.results) {
        assert!(result.error.contains(reason), "{reason}: {result:?}");
    }
    assert!(answer.results.last().unwrap().error.is_empty());
    assert_eq!(app.database.count("users").await, users_before);

    // A bomb written straight into the database (an older version's import, a restored
    // dump) is refused unchecked: it answers like a wrong password and holds nobody up.
    app.register("victim@example.com", PASSWORD).await.unwrap();
    app.register("bystander@example.com", PASSWORD)
        .await
        .unwrap();
    let pool = app.database.pool().await;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE name = 'victim@example.com'")
        .bind(&bombs[0].0)
        .execute(&pool)
        .await
        .expect("plant the hash");
    pool.close().await;
    let (bomb, bystander) =
        tokio::join!(app.password_login("victim@example.com", PASSWORD), async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            app.password_login("bystander@example.com", PASSWORD).await
        });
    assert_eq!(bomb.unwrap_err().code(), Code::Unauthenticated);
    bystander.expect("another account logs in beside the bomb");
}

async fn me_refuses_bad_tokens_and_tokens_of_other_projects(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let login = app
        .password_login("ada@example.com", PASSWORD)
        .await
        .unwrap();

    let mut request = bearer(
        &login.access_token,
        MeRequest {
            project_id: app.project.project_id.clone(),
        },
    );
    let same = app
        .passwords()
        .me(request)
        .await
        .expect("same project")
        .into_inner();
    assert_eq!(same.email, "ada@example.com");
    request = bearer(
        &login.access_token,
        MeRequest {
            project_id: "another-project".into(),
        },
    );
    let other = app.passwords().me(request).await.unwrap_err();
    assert_eq!(other.code(), Code::Unauthenticated);
    for token in ["", "usr_nope", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"] {
        let error = me(&app, token).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "{token}");
    }
}

async fn the_reset_page_shows_a_labelled_form_with_strict_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("ada@example.com", PASSWORD).await.unwrap();
    app.forgot_password("ada@example.com").await.unwrap();
    let link = app.wait_for_reset_link("ada@example.com", 1).await;
    assert!(
        link.starts_with(&format!(
            "{}/project/{}/auth/password/reset?token=rst_",
            app.address, app.project.project_id
        )),
        "{link}"
    );

    let response = app.http.get(&link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        !csp.contains("script-src") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Default project"),
        "the project's name: {html}"
    );
    assert!(
        html.contains("<label for=\"password\">New password</label>"),
        "{html}"
    );
    assert!(
        html.contains("<label for=\"confirm\">Confirm new password</label>"),
        "{html}"
    );
    assert!(
        html.contains("id=\"password\"") && html.contains("id=\"confirm\""),
        "{html}"
    );
    assert!(html.contains("<form method=\"post\">"), "{html}");
    assert!(!html.contains("<script"), "no script at all");
}

async fn the_reset_page_says_why_a_link_no_longer_works(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("grace@example.com", PASSWORD).await.unwrap();
    app.forgot_password("grace@example.com").await.unwrap();
    let used = app.wait_for_reset_link("grace@example.com", 1).await;
    reset_password(&app, &token_of(&used), NEW_PASSWORD)
        .await
        .unwrap();
    let page = |url: String| {
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, html) = page(used).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("This link was already used"), "{html}");

    app.forgot_password("grace@example.com").await.unwrap();
    let expired = app.wait_for_reset_link("grace@example.com", 2).await;
    app.clock.advance(3601);
    let (status, html) = page(expired).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("This link has expired"), "{html}");
    assert!(html.contains("Forgot password"), "says what to do: {html}");
    let base = format!(
        "{}/project/{}/auth/password/reset",
        app.address, app.project.project_id
    );
    let (status, html) = page(format!("{base}?token=rst_madeup")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("This link does not work"), "{html}");
    let (status, _) = page(base.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no token at all");
    let (status, _) = page(format!(
        "{}/project/nope/auth/password/reset?token=rst_x",
        app.address
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn the_reset_page_posts_back_and_shows_success_or_what_to_fix(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let before = app
        .password_login("ada@example.com", PASSWORD)
        .await
        .unwrap();
    app.forgot_password("ada@example.com").await.unwrap();
    let link = app.wait_for_reset_link("ada@example.com", 1).await;
    let token = token_of(&link);
    let post = |password: &str, confirm: &str| {
        let form = [
            ("token", token.as_str()),
            ("password", password),
            ("confirm", confirm),
        ];
        let request = app.http.post(&link).form(&form);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };

    let (status, html) = post(NEW_PASSWORD, "tangerine lighthouse orbiT").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("The two passwords do not match"), "{html}");
    assert!(html.contains("<label for=\"password\">"), "the form again");
    let (status, html) = post("password1234", "password1234").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("The new password is too easy to guess"),
        "{html}"
    );
    app.password_login("ada@example.com", PASSWORD)
        .await
        .expect("nothing changed yet");

    let (status, html) = post(NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Your password has been changed"), "{html}");
    assert_eq!(
        app.authorize(&before.access_token).await.role(),
        Role::Public
    );
    app.password_login("ada@example.com", NEW_PASSWORD)
        .await
        .expect("new password");

    let (status, html) = post("yet another good phrase", "yet another good phrase").await;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("already used"), "{html}");
}

// ---- helpers for this flow ----

async fn me(app: &TestApp, token: &str) -> Result<MeResponse, tonic::Status> {
    let request = if token.is_empty() {
        tonic::Request::new(MeRequest::default())
    } else {
        bearer(token, MeRequest::default())
    };
    app.passwords().me(request).await.map(|r| r.into_inner())
}

async fn change_password(
    app: &TestApp,
    token: &str,
    current: &str,
    new: &str,
) -> Result<ChangePasswordResponse, tonic::Status> {
    let body = ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
    };
    let request = if token.is_empty() {
        tonic::Request::new(body)
    } else {
        bearer(token, body)
    };
    app.passwords()
        .change_password(request)
        .await
        .map(|r| r.into_inner())
}

async fn reset_password(app: &TestApp, token: &str, new: &str) -> Result<(), tonic::Status> {
    let request = ResetPasswordRequest {
        project_id: app.project.project_id.clone(),
        token: token.into(),
        new_password: new.into(),
    };
    app.passwords().reset_password(request).await.map(|_| ())
}

/// Runs a statement on the test's database (project settings have no API yet).
async fn query_string(app: &TestApp, sql: &str) -> String {
    let pool = app.database.pool().await;
    let row = sqlx::query(sql).fetch_one(&pool).await.expect(sql);
    pool.close().await;
    row.try_get("v").expect("column v")
}

async fn query_bytes(app: &TestApp, sql: &str) -> Vec<u8> {
    let pool = app.database.pool().await;
    let row = sqlx::query(sql).fetch_one(&pool).await.expect(sql);
    pool.close().await;
    row.try_get("v").expect("column v")
}

/// An argon2i hash with costs below today's, as an older system might have stored.
fn weak_argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    argon2::Argon2::new(
        argon2::Algorithm::Argon2i,
        argon2::Version::V0x13,
        argon2::Params::new(4096, 1, 1, None).unwrap(),
    )
    .hash_password(
        password.as_bytes(),
        &SaltString::encode_b64(b"an import's salt").unwrap(),
    )
    .unwrap()
    .to_string()
}
