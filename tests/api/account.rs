//! Deleting users and the client-side encryption flag.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(
    a_user_deletes_itself_and_everything_of_it_goes,
    only_the_root_user_or_the_admin_deletes_others_and_never_across_projects,
    the_encryption_flag_toggles_and_keeps_its_check_text,
);

async fn delete(app: &TestApp, token: &str, name: &str) -> Result<(), tonic::Status> {
    let request = bearer(token, DeleteUserRequest { name: name.into() });
    app.authentication
        .clone()
        .delete_user(request)
        .await
        .map(|_| ())
}

async fn a_user_deletes_itself_and_everything_of_it_goes(backend: Backend) {
    let app = spawn_app(backend).await;
    let phone = app.log_in("leaving@example.com").await;
    let laptop = app.log_in("leaving@example.com").await;
    app.authenticate("leaving@example.com").await.unwrap(); // a pending login request
    let users = app.database.count("users").await;

    delete(&app, phone.token(), "").await.expect("delete self");
    assert_eq!(app.database.count("users").await, users - 1);
    for token in [phone.token(), laptop.token(), laptop.jwt()] {
        assert_eq!(
            app.authorize(token).await.role(),
            Role::Public,
            "every session went with the user"
        );
    }
    assert_eq!(app.database.count("sessions").await, 0);
    assert_eq!(app.database.count("login_requests").await, 0);
    let again = app.authenticate("leaving@example.com").await.unwrap();
    assert!(again.registration, "the name is free");

    let gone = delete(&app, phone.token(), "").await.unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
}

async fn only_the_root_user_or_the_admin_deletes_others_and_never_across_projects(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let root = app.log_in(OWNER).await;
    let alice = app.log_in("alice@example.com").await;
    app.log_in("bob@example.com").await;
    app.log_in("carol@example.com").await;

    let denied = delete(&app, alice.token(), "bob@example.com")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        !app.authenticate("bob@example.com")
            .await
            .unwrap()
            .registration,
        "bob is still there"
    );

    delete(&app, root.token(), "bob@example.com")
        .await
        .expect("root deletes by name");
    delete(&app, &app.project.admin_token, "Carol@Example.com")
        .await
        .expect("admin deletes by name");
    for name in ["bob@example.com", "carol@example.com"] {
        assert!(
            app.authenticate(name).await.unwrap().registration,
            "{name} was deleted"
        );
    }
    let missing = delete(&app, root.token(), "nobody@example.com")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = delete(&app, &app.project.admin_token, "")
        .await
        .unwrap_err();
    assert_eq!(
        bad.code(),
        Code::InvalidArgument,
        "the admin must name the user"
    );
    let owner = delete(&app, &app.project.admin_token, OWNER)
        .await
        .unwrap_err();
    assert_eq!(owner.code(), Code::FailedPrecondition, "the owner stays");

    // Another project's admin and root see nothing of this project's users.
    let other = app
        .auth
        .create_project("Other", Some("other-owner@example.com"), false, false)
        .await
        .unwrap();
    let cross = delete(&app, &other.admin_token, "alice@example.com")
        .await
        .unwrap_err();
    assert_eq!(cross.code(), Code::NotFound);
    let started = app
        .authenticate_with(&other.app_token, "other-owner@example.com")
        .await
        .unwrap();
    let code = app.wait_for_code("other-owner@example.com", 1).await;
    let other_root = app.confirm(&code, &started.code_token).await.unwrap();
    let cross = delete(&app, &other_root.token, "alice@example.com")
        .await
        .unwrap_err();
    assert_eq!(cross.code(), Code::NotFound);
    assert_eq!(
        app.authorize(alice.token()).await.role(),
        Role::User,
        "alice is untouched"
    );
}

async fn the_encryption_flag_toggles_and_keeps_its_check_text(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.log_in("secret@example.com").await;
    let mut client = app.authentication.clone();
    let toggle = |text: &str| bearer(user.token(), SetEncryptionRequest { text: text.into() });

    let missing = client.set_encryption(toggle("")).await.unwrap_err();
    assert_eq!(
        missing.code(),
        Code::InvalidArgument,
        "turning on needs the check text"
    );
    let huge = client
        .set_encryption(toggle(&"x".repeat(5000)))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert!(
        !app.get_user(user.token()).await.unwrap().encrypted,
        "refusals changed nothing"
    );

    let on = client
        .set_encryption(toggle("U2FsdGVkX1+abc"))
        .await
        .unwrap()
        .into_inner();
    assert!(on.encrypted);
    let info = app.get_user(user.token()).await.unwrap();
    assert!(info.encrypted);
    assert_eq!(info.encryption_text, "U2FsdGVkX1+abc");
    let next = app.log_in("secret@example.com").await;
    assert!(next.session.encrypted, "confirm reports the flag");
    assert_eq!(next.session.encryption_text, "U2FsdGVkX1+abc");

    let off = client
        .set_encryption(toggle(""))
        .await
        .unwrap()
        .into_inner();
    assert!(!off.encrypted);
    let info = app.get_user(user.token()).await.unwrap();
    assert!(!info.encrypted);
    assert_eq!(info.encryption_text, "");
}
