//! Recovery tokens: issued to a logged-in user, used once to log in again.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(
    recovery_is_refused_while_the_project_disables_it,
    a_recovery_token_logs_in_once_and_is_replaced,
);

async fn issue(app: &TestApp, token: &str) -> Result<String, tonic::Status> {
    let request = bearer(token, IssueRecoveryTokenRequest {});
    app.recovery
        .clone()
        .issue_recovery_token(request)
        .await
        .map(|r| r.into_inner().recovery_token)
}

async fn recover(app: &TestApp, token: &str) -> Result<RecoverResponse, tonic::Status> {
    let request = RecoverRequest {
        recovery_token: token.into(),
    };
    app.recovery
        .clone()
        .recover(request)
        .await
        .map(|r| r.into_inner())
}

async fn recovery_is_refused_while_the_project_disables_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.log_in("forgetful@example.com").await;
    let refused = issue(&app, user.token()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(app.database.count("recovery_tokens").await, 0);

    app.update_settings(UpdateProjectSettingsRequest {
        recovery: Some(true),
        ..Default::default()
    })
    .await;
    let token = issue(&app, user.token()).await.expect("allowed now");
    app.update_settings(UpdateProjectSettingsRequest {
        recovery: Some(false),
        ..Default::default()
    })
    .await;
    let later = recover(&app, &token).await.unwrap_err();
    assert_eq!(
        later.code(),
        Code::FailedPrecondition,
        "turning it off stops existing tokens too"
    );
}

async fn a_recovery_token_logs_in_once_and_is_replaced(backend: Backend) {
    let app = spawn_app(backend).await;
    app.update_settings(UpdateProjectSettingsRequest {
        recovery: Some(true),
        ..Default::default()
    })
    .await;
    let user = app.log_in("forgetful@example.com").await;

    let first = issue(&app, user.token()).await.unwrap();
    assert!(first.starts_with("rec_"));
    let second = issue(&app, user.token()).await.unwrap();
    let replaced = recover(&app, &first).await.unwrap_err();
    assert_eq!(
        replaced.code(),
        Code::Unauthenticated,
        "issuing again replaced the first token"
    );

    let recovered = recover(&app, &second).await.expect("recover");
    let session = recovered.session.expect("a session");
    assert_eq!(session.uid, user.session.uid);
    assert_eq!(app.authorize(&session.token).await.role(), Role::User);
    let used = recover(&app, &second).await.unwrap_err();
    assert_eq!(
        used.code(),
        Code::Unauthenticated,
        "a recovery token works once"
    );
    recover(&app, &recovered.recovery_token)
        .await
        .expect("the replacement works");

    for bad in ["", "rec_unknown", &"r".repeat(10_000)] {
        let error = recover(&app, bad).await.unwrap_err();
        assert!(
            matches!(error.code(), Code::Unauthenticated | Code::InvalidArgument),
            "{bad:.10}: {error:?}"
        );
    }
    let stranger = issue(&app, "usr_unknown").await.unwrap_err();
    assert_eq!(stranger.code(), Code::Unauthenticated);
}
