//! Identity never crosses projects: a caller serving one project can bind Authorize and
//! the Hasura webhook to it, and a uid once given to a user is never given to another.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::{AuthorizeRequest, DeleteUserRequest, ImportUser, ImportUsersRequest};
use reqwest::StatusCode;
use serde_json::Value;

on_both_backends!(
    a_caller_bound_to_one_project_sees_other_projects_tokens_as_public,
    a_deleted_users_uid_is_never_given_to_another_user,
);

async fn a_caller_bound_to_one_project_sees_other_projects_tokens_as_public(backend: Backend) {
    let app = spawn_app(backend).await;
    let other = app
        .auth
        .create_project("Other", Some("other-owner@example.com"), false, false)
        .await
        .expect("second project");
    let mine = app.project.project_id.clone();
    // The root user of project A: the richest identity to smuggle.
    let root = app.log_in(OWNER).await;

    for token in [root.token(), root.jwt()] {
        let bound = |project_id: &str| AuthorizeRequest {
            token: token.into(),
            project_id: project_id.into(),
        };
        let mut grpc = app.authentication.clone();
        let foreign = grpc.authorize(bound(&other.project_id)).await.unwrap();
        assert_eq!(foreign.get_ref().role(), Role::Public);
        assert!(foreign.get_ref().uid.is_empty() && !foreign.get_ref().root);
        let own = grpc.authorize(bound(&mine)).await.unwrap();
        assert_eq!(own.get_ref().role(), Role::User);
        assert!(own.get_ref().root);
        // Unbound callers keep the published behaviour.
        assert_eq!(
            grpc.authorize(bound("")).await.unwrap().get_ref().role(),
            Role::User
        );

        let http = |query: String| {
            app.http
                .get(format!(
                    "{}/api/authorize?token={token}{query}",
                    app.address
                ))
                .send()
        };
        let foreign: Value = http(format!("&project_id={}", other.project_id))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(foreign["role"], "public", "{foreign}");
        assert!(foreign.get("uid").is_none());
        let own: Value = http(format!("&project_id={mine}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(own["role"], "user");

        let hasura = |project_id: &str| {
            app.http
                .get(format!(
                    "{}/api/hasura?project_id={project_id}",
                    app.address
                ))
                .header("x-token", token)
                .send()
        };
        let foreign = hasura(&other.project_id).await.unwrap();
        assert_eq!(foreign.status(), StatusCode::OK);
        let foreign: Value = foreign.json().await.unwrap();
        assert_eq!(foreign["X-Hasura-Role"], "public", "{foreign}");
        assert!(foreign.get("X-Hasura-Is-Owner").is_none());
        assert!(foreign.get("X-Hasura-User-Id").is_none());
        let own: Value = hasura(&mine).await.unwrap().json().await.unwrap();
        assert_eq!(own["X-Hasura-Role"], "user");
        assert_eq!(own["X-Hasura-Is-Owner"], "true");
    }
}

async fn a_deleted_users_uid_is_never_given_to_another_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let b = app
        .auth
        .create_project("B", Some("b-owner@example.com"), false, false)
        .await
        .expect("project B");

    // bob lives in project B, then deletes his account.
    let started = app
        .authenticate_with(&b.app_token, "bob@example.com")
        .await
        .unwrap();
    let code = app.wait_for_code("bob@example.com", 1).await;
    let bob = app.confirm(&code, &started.code_token).await.unwrap();
    let bob_uid = app.authorize(&bob.token).await.uid;
    app.authentication
        .clone()
        .delete_user(bearer(
            &bob.token,
            DeleteUserRequest {
                name: String::new(),
            },
        ))
        .await
        .expect("bob deletes himself");

    // carol lives in B; dave lives in A.
    let started = app
        .authenticate_with(&b.app_token, "carol@example.com")
        .await
        .unwrap();
    let code = app.wait_for_code("carol@example.com", 1).await;
    let carol = app.confirm(&code, &started.code_token).await.unwrap();
    let carol_uid = app.authorize(&carol.token).await.uid;
    let dave = app.log_in("dave@example.com").await;
    let dave_uid = app.authorize(dave.token()).await.uid;

    // A's admin tries to import mallory under each: deleted, another project's, its own.
    let mut answers = Vec::new();
    for uid in [&bob_uid, &carol_uid, &dave_uid] {
        let users_before = app.database.count("users").await;
        let answer = app
            .admin
            .clone()
            .import_users(bearer(
                &app.project.admin_token,
                ImportUsersRequest {
                    users: vec![ImportUser {
                        name: "mallory@example.com".into(),
                        uid: uid.clone(),
                        password_hash: String::new(),
                    }],
                },
            ))
            .await
            .expect("import answers")
            .into_inner();
        assert!(!answer.imported, "uid {uid} was given to mallory");
        assert_eq!(app.database.count("users").await, users_before);
        answers.push(answer.results[0].error.clone());
    }
    assert!(answers[0].contains("uid is already in use"), "{answers:?}");
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "the refusal must not tell deleted, foreign and own uids apart: {answers:?}"
    );
}
