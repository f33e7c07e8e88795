//! The admin token: project settings, registering names without a code, bulk import.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(
    the_admin_reads_and_changes_settings_and_bad_values_change_nothing,
    settings_shape_the_codes_that_are_sent,
    the_admin_token_registers_a_name_verified_without_a_code,
    an_import_writes_all_rows_or_none_and_reports_each,
    admin_calls_need_the_admin_token_of_the_project,
);

async fn the_admin_reads_and_changes_settings_and_bad_values_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.admin.clone();
    let project = admin
        .get_project(bearer(&app.project.admin_token, GetProjectRequest {}))
        .await
        .unwrap()
        .into_inner()
        .project
        .expect("a project");
    assert_eq!(project.project_id, app.project.project_id);
    assert_eq!(project.app_token, app.project.app_token);
    assert_eq!(
        (
            project.code_length,
            project.code_lifetime_seconds,
            project.code_attempts
        ),
        (4, 600, 3)
    );
    assert!(!project.anonymous_login && !project.recovery);

    let changed = app
        .update_settings(UpdateProjectSettingsRequest {
            name: Some("Acme".into()),
            recovery: Some(true),
            mail_sender: Some("Acme <login@acme.test>".into()),
            link_base: Some("https://login.acme.test/".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(changed.name, "Acme");
    assert!(changed.recovery);
    assert!(!changed.anonymous_login, "untouched settings stay");
    assert_eq!(changed.link_base, "https://login.acme.test");

    for bad in [
        UpdateProjectSettingsRequest {
            code_length: Some(3),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            code_length: Some(9),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            code_lifetime_seconds: Some(5),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            code_attempts: Some(0),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            mail_sender: Some("no address".into()),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            link_base: Some("javascript:alert(1)".into()),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            name: Some("x".repeat(10_000)),
            ..Default::default()
        },
        UpdateProjectSettingsRequest {
            external_token_key_pem: Some("not a key".into()),
            ..Default::default()
        },
        // One good field does not slip through beside a bad one.
        UpdateProjectSettingsRequest {
            anonymous_login: Some(true),
            code_attempts: Some(99),
            ..Default::default()
        },
    ] {
        let error = admin
            .update_project_settings(bearer(&app.project.admin_token, bad.clone()))
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Code::InvalidArgument, "{bad:?}");
    }
    let after = admin
        .get_project(bearer(&app.project.admin_token, GetProjectRequest {}))
        .await
        .unwrap()
        .into_inner()
        .project
        .expect("a project");
    assert_eq!(after, changed, "refused changes wrote nothing");
}

async fn settings_shape_the_codes_that_are_sent(backend: Backend) {
    // The operator lets projects send from acme.test (others keep only their name).
    let app = spawn_app_with(backend, |settings| {
        settings.mail_sender_domains = vec!["acme.test".into()];
    })
    .await;
    app.update_settings(UpdateProjectSettingsRequest {
        code_length: Some(6),
        code_attempts: Some(1),
        mail_sender: Some("Acme Login <login@acme.test>".into()),
        link_base: Some("https://login.acme.test".into()),
        ..Default::default()
    })
    .await;
    let started = app.authenticate("dora@example.com").await.unwrap();
    let code = app.wait_for_code("dora@example.com", 1).await;
    assert_eq!(code.len(), 6);
    let mail = &app.mails_to("dora@example.com")[0];
    assert!(
        mail.contains("login@acme.test"),
        "the project's sender: {mail}"
    );
    assert!(
        link_in(mail).is_some_and(|l| l.starts_with("https://login.acme.test/login/link?token=")),
        "{mail}"
    );

    let once = app
        .confirm(&wrong(&code), &started.code_token)
        .await
        .unwrap_err();
    assert_eq!(once.code(), Code::FailedPrecondition, "one attempt only");
}

async fn the_admin_token_registers_a_name_verified_without_a_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let answer = app
        .authenticate_with(&app.project.admin_token, "Imported@Example.com")
        .await
        .unwrap();
    assert!(answer.registration);
    assert!(
        answer.code_token.is_empty() && answer.session.is_none(),
        "no token for imports"
    );
    let again = app
        .authenticate_with(&app.project.admin_token, "imported@example.com")
        .await
        .unwrap();
    assert!(!again.registration);
    assert_eq!(app.database.count("outbox").await, 0, "no mail for imports");

    let login = app.authenticate("imported@example.com").await.unwrap();
    assert!(!login.registration, "the imported user logs in as usual");
}

async fn an_import_writes_all_rows_or_none_and_reports_each(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.admin.clone();
    let uid = "0b7f5f3e-3a9e-4f43-9a57-1f6f0f0e6c11";
    let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    let users = |rows: Vec<ImportUser>| {
        bearer(&app.project.admin_token, ImportUsersRequest { users: rows })
    };
    let row = |name: &str, uid: &str, hash: &str| ImportUser {
        name: name.into(),
        uid: uid.into(),
        password_hash: hash.into(),
    };
    let before = app.database.count("users").await;

    let refused = admin
        .import_users(users(vec![
            row("one@example.com", uid, bcrypt),
            row("not a name", "", ""),
            row("two@example.com", "not-a-uid", ""),
            row("three@example.com", "", "plaintext"),
            row(OWNER, "", ""),
            row("one@example.com", "", ""),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(!refused.imported);
    assert_eq!(
        app.database.count("users").await,
        before,
        "nothing was written"
    );
    let errors: Vec<&str> = refused.results.iter().map(|r| r.error.as_str()).collect();
    assert_eq!(errors[0], "", "a good row");
    assert!(errors[1].starts_with("name "), "{errors:?}");
    assert!(errors[2].contains("uid"), "{errors:?}");
    assert!(errors[3].contains("password_hash"), "{errors:?}");
    assert!(errors[4].contains("already exists"), "{errors:?}");
    assert!(
        errors[5].contains("already exists"),
        "twice in one batch: {errors:?}"
    );

    let imported = admin
        .import_users(users(vec![
            row("one@example.com", uid, bcrypt),
            row("+41791234567", "", ""),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(imported.imported);
    assert_eq!(imported.results[0].uid, uid, "the uid is kept");
    assert!(imported.results[1].user_id > 0);
    assert_eq!(app.database.count("users").await, before + 2);

    let taken_uid = admin
        .import_users(users(vec![row("four@example.com", uid, "")]))
        .await
        .unwrap()
        .into_inner();
    assert!(!taken_uid.imported);
    assert!(
        taken_uid.results[0].error.contains("uid"),
        "{:?}",
        taken_uid.results
    );

    let login = app.log_in("one@example.com").await;
    assert_eq!(app.authorize(login.token()).await.uid, uid);

    let empty = admin.import_users(users(vec![])).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    let huge = admin
        .import_users(users(
            (0..1001)
                .map(|i| row(&format!("u{i}@example.com"), "", ""))
                .collect(),
        ))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument);
}

async fn admin_calls_need_the_admin_token_of_the_project(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut admin = app.admin.clone();
    let user = app.log_in(OWNER).await;
    for token in [
        app.project.app_token.as_str(),
        user.token(),
        "adm_unknown",
        "",
    ] {
        let error = admin
            .get_project(bearer(token, GetProjectRequest {}))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "{token:.12}");
    }
    let other = app
        .auth
        .create_project("Other", None, false, false)
        .await
        .unwrap();
    let theirs = admin
        .get_project(bearer(&other.admin_token, GetProjectRequest {}))
        .await
        .unwrap()
        .into_inner()
        .project
        .expect("a project");
    assert_eq!(
        theirs.project_id, other.project_id,
        "each admin token sees its own project"
    );
}
