//! Anonymous users, and names added or changed later through the code flow.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::ChangeNameRequest;
use tonic::Code;

on_both_backends!(
    anonymous_login_is_refused_unless_the_project_allows_it,
    an_anonymous_user_adds_a_name_and_keeps_its_identity,
    a_name_change_takes_effect_only_when_the_new_name_confirms,
    a_taken_name_is_refused_without_revealing_more,
);

async fn anonymous_login_is_refused_unless_the_project_allows_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let users = app.database.count("users").await;
    let refused = app
        .authenticate("")
        .await
        .expect_err("anonymous is off by default");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("anonymous"),
        "{}",
        refused.message()
    );
    assert_eq!(app.database.count("users").await, users);

    app.allow_anonymous().await;
    let answer = app.authenticate("").await.expect("anonymous login");
    assert!(answer.registration);
    assert!(answer.code_token.is_empty());
    let session = answer.session.expect("a session at once");
    let who = app.authorize(&session.token).await;
    assert_eq!(who.role(), Role::User);
    assert_eq!(who.name, "");
    assert_eq!(who.uid, session.uid);
}

async fn an_anonymous_user_adds_a_name_and_keeps_its_identity(backend: Backend) {
    let app = spawn_app(backend).await;
    app.allow_anonymous().await;
    let anonymous = app.authenticate("").await.unwrap().session.unwrap();

    let update = app
        .authenticate_with(&anonymous.token, "Ada@Example.com")
        .await
        .expect("name update");
    assert!(!update.registration);
    assert_eq!(
        app.authorize(&anonymous.token).await.name,
        "",
        "no name before the code is confirmed"
    );
    let code = app.wait_for_code("ada@example.com", 1).await;
    let session = app.confirm(&code, &update.code_token).await.unwrap();

    assert_eq!(session.user_id, anonymous.user_id, "same user");
    assert_eq!(session.uid, anonymous.uid, "same uid");
    assert_eq!(
        app.authorize(&anonymous.token).await.name,
        "ada@example.com",
        "the old session sees the name"
    );
    let login = app.authenticate("ada@example.com").await.unwrap();
    assert!(!login.registration, "the name now belongs to that user");
}

async fn a_name_change_takes_effect_only_when_the_new_name_confirms(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.log_in("old@example.com").await;
    let mut client = app.authentication.clone();
    let change = client
        .change_name(bearer(
            user.token(),
            ChangeNameRequest {
                name: "new@example.com".into(),
            },
        ))
        .await
        .expect("change name")
        .into_inner();
    assert_eq!(app.authorize(user.token()).await.name, "old@example.com");

    let code = app.wait_for_code("new@example.com", 1).await;
    let wrong = app
        .confirm(&wrong(&code), &change.code_token)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(app.authorize(user.token()).await.name, "old@example.com");

    let session = app.confirm(&code, &change.code_token).await.unwrap();
    assert_eq!(session.uid, user.session.uid);
    assert_eq!(app.authorize(user.token()).await.name, "new@example.com");
    let old = app.authenticate("old@example.com").await.unwrap();
    assert!(old.registration, "the old name is free again");

    let same = client
        .change_name(bearer(
            user.token(),
            ChangeNameRequest {
                name: "new@example.com".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(same.code(), Code::FailedPrecondition);
    let bad = client
        .change_name(bearer(
            user.token(),
            ChangeNameRequest {
                name: "nope".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let nobody = client
        .change_name(bearer(
            "usr_unknown",
            ChangeNameRequest {
                name: "x@example.com".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::Unauthenticated);
}

async fn a_taken_name_is_refused_without_revealing_more(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.log_in("alice@example.com").await;
    app.log_in("bob@example.com").await;

    let taken = app
        .authenticate_with(alice.token(), "bob@example.com")
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert_eq!(
        taken.message(),
        "this name is already taken in this project"
    );
    assert!(
        app.mails_to("bob@example.com").len() == 1,
        "bob got no mail about it"
    );

    // Taken between the request and the confirmation: refused at confirmation.
    let change = app
        .authenticate_with(alice.token(), "carol@example.com")
        .await
        .unwrap();
    let code = app.wait_for_code("carol@example.com", 1).await;
    app.log_in("carol@example.com").await;
    let late = app.confirm(&code, &change.code_token).await.unwrap_err();
    assert_eq!(late.code(), Code::AlreadyExists);
    assert_eq!(app.authorize(alice.token()).await.name, "alice@example.com");
}
