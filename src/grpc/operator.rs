//! `portcullis.v1.OperatorService`.

use tonic::{Request, Response, Status};

use super::bearer;
use super::pb::operator_service_server::OperatorService;
use super::pb::*;
use crate::service::Auth;

pub struct OperatorApi {
    auth: Auth,
}

impl OperatorApi {
    pub fn new(auth: Auth) -> Self {
        OperatorApi { auth }
    }
}

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn create_project(
        &self,
        request: Request<CreateProjectRequest>,
    ) -> Result<Response<CreateProjectResponse>, Status> {
        let token = bearer(&request)?;
        let body = request.into_inner();
        let owner = Some(body.owner.trim()).filter(|owner| !owner.is_empty());
        let created = self
            .auth
            .operator_create_project(&token, &body.name, owner)
            .await?;
        Ok(Response::new(CreateProjectResponse {
            project_id: created.project_id,
            app_token: created.app_token,
            admin_token: created.admin_token,
        }))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>, Status> {
        let projects = self
            .auth
            .operator_list_projects(&bearer(&request)?)
            .await?
            .into_iter()
            .map(|p| ProjectSummary {
                project_id: p.project_id,
                name: p.name,
                created_at: p.created_at,
                users: p.users,
            })
            .collect();
        Ok(Response::new(ListProjectsResponse { projects }))
    }

    async fn rotate_project_tokens(
        &self,
        request: Request<RotateProjectTokensRequest>,
    ) -> Result<Response<RotateProjectTokensResponse>, Status> {
        let token = bearer(&request)?;
        let rotated = self
            .auth
            .operator_rotate_tokens(&token, &request.get_ref().project_id)
            .await?;
        Ok(Response::new(RotateProjectTokensResponse {
            app_token: rotated.app_token,
            admin_token: rotated.admin_token,
        }))
    }

    async fn delete_project(
        &self,
        request: Request<DeleteProjectRequest>,
    ) -> Result<Response<DeleteProjectResponse>, Status> {
        let token = bearer(&request)?;
        self.auth
            .operator_delete_project(&token, &request.get_ref().project_id)
            .await?;
        Ok(Response::new(DeleteProjectResponse {}))
    }
}
