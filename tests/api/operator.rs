//! The OperatorService: many tenants scripted by a platform team, behind operator tokens.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::grpc::pb::operator_service_client::OperatorServiceClient;
use portcullis::grpc::pb::*;
use tonic::Code;

on_both_backends!(an_operator_creates_lists_rekeys_and_deletes_projects);

fn operator(app: &TestApp) -> OperatorServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    OperatorServiceClient::new(channel)
}

async fn an_operator_creates_lists_rekeys_and_deletes_projects(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = operator(&app);
    let off = client
        .list_projects(bearer("opr_anything", ListProjectsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(off.code(), Code::Unauthenticated);
    assert!(off.message().contains("off"), "{}", off.message());

    let token = app.auth.create_operator_token().await.unwrap();
    assert!(token.starts_with("opr_"));
    for wrong in ["opr_unknown", app.project.admin_token.as_str(), ""] {
        let refused = client
            .list_projects(bearer(wrong, ListProjectsRequest {}))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{wrong:.8}");
    }

    let created = client
        .create_project(bearer(
            &token,
            CreateProjectRequest {
                name: "Tenant B".into(),
                owner: "boss@tenant-b.test".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let bad = client
        .create_project(bearer(&token, CreateProjectRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "a name is required");
    let user = app
        .log_in_with(&created.app_token, "member@tenant-b.test")
        .await;
    let listed = client
        .list_projects(bearer(&token, ListProjectsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .projects;
    let tenant = listed
        .iter()
        .find(|p| p.project_id == created.project_id)
        .expect("the new project is listed");
    assert_eq!((tenant.name.as_str(), tenant.users), ("Tenant B", 2));

    let rotated = client
        .rotate_project_tokens(bearer(
            &token,
            RotateProjectTokensRequest {
                project_id: created.project_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let old = app
        .authenticate_with(&created.app_token, "x@tenant-b.test")
        .await
        .unwrap_err();
    assert_eq!(
        old.code(),
        Code::Unauthenticated,
        "the old app token stops at once"
    );
    app.authenticate_with(&rotated.app_token, "x@tenant-b.test")
        .await
        .expect("the new app token works");
    let old_admin = app
        .admin
        .clone()
        .get_project(bearer(&created.admin_token, GetProjectRequest {}))
        .await
        .unwrap_err();
    assert_eq!(old_admin.code(), Code::Unauthenticated);

    assert_eq!(app.authorize(user.token()).await.role(), Role::User);
    let bystander = app.log_in("keep@example.com").await;
    client
        .delete_project(bearer(
            &token,
            DeleteProjectRequest {
                project_id: created.project_id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        app.authorize(user.token()).await.role(),
        Role::Public,
        "its users' sessions end with it"
    );
    assert_eq!(app.authorize(user.jwt()).await.role(), Role::Public);
    let again = client
        .delete_project(bearer(
            &token,
            DeleteProjectRequest {
                project_id: created.project_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let listed = client
        .list_projects(bearer(&token, ListProjectsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .projects;
    assert!(listed.iter().all(|p| p.project_id != created.project_id));
    assert_eq!(
        app.authorize(bystander.token()).await.role(),
        Role::User,
        "other projects' sessions stay"
    );
}
