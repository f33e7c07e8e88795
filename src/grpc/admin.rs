//! `portcullis.v1.AdminService`.

use tonic::{Request, Response, Status};

use super::bearer;
use super::pb::admin_service_server::AdminService;
use super::pb::*;
use crate::service::{Auth, ImportRow, ImportedRow, ProjectSettings, SettingsChange};

pub struct AdminApi {
    auth: Auth,
}

impl AdminApi {
    pub fn new(auth: Auth) -> Self {
        AdminApi { auth }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_project(
        &self,
        request: Request<GetProjectRequest>,
    ) -> Result<Response<GetProjectResponse>, Status> {
        let settings = self.auth.project_settings(&bearer(&request)?).await?;
        Ok(Response::new(GetProjectResponse {
            project: Some(settings.into()),
        }))
    }

    async fn update_project_settings(
        &self,
        request: Request<UpdateProjectSettingsRequest>,
    ) -> Result<Response<UpdateProjectSettingsResponse>, Status> {
        let token = bearer(&request)?;
        let change = SettingsChange::from(request.into_inner());
        let settings = self.auth.update_project_settings(&token, &change).await?;
        Ok(Response::new(UpdateProjectSettingsResponse {
            project: Some(settings.into()),
        }))
    }

    async fn import_users(
        &self,
        request: Request<ImportUsersRequest>,
    ) -> Result<Response<ImportUsersResponse>, Status> {
        let token = bearer(&request)?;
        let rows: Vec<ImportRow> = request
            .into_inner()
            .users
            .into_iter()
            .map(|user| ImportRow {
                name: user.name,
                uid: Some(user.uid),
                password_hash: Some(user.password_hash),
            })
            .collect();
        let (imported, report) = self.auth.import_users(&token, &rows).await?;
        let results = rows
            .iter()
            .zip(report)
            .map(|(row, outcome)| match outcome {
                ImportedRow::Imported { user_id, uid, name } => ImportUserResult {
                    name,
                    user_id,
                    uid,
                    error: String::new(),
                },
                ImportedRow::Refused { error } => ImportUserResult {
                    name: row.name.clone(),
                    error,
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(ImportUsersResponse { imported, results }))
    }
}

impl From<ProjectSettings> for Project {
    fn from(settings: ProjectSettings) -> Project {
        Project {
            project_id: settings.project_id,
            name: settings.name,
            app_token: settings.app_token,
            anonymous_login: settings.anonymous_login,
            recovery: settings.recovery,
            code_length: settings.code_length,
            code_lifetime_seconds: settings.code_lifetime_seconds,
            code_attempts: settings.code_attempts,
            mail_sender: settings.mail_sender.unwrap_or_default(),
            link_base: settings.link_base.unwrap_or_default(),
            sms_webhook_url: settings.sms_webhook_url.unwrap_or_default(),
            sms_webhook_secret_set: settings.sms_webhook_secret_set,
            external_token_issuer: settings.external_token_issuer.unwrap_or_default(),
            external_token_audience: settings.external_token_audience.unwrap_or_default(),
            external_token_key_set: settings.external_token_key_set,
            allowed_origins: settings.allowed_origins,
            password_reveal_existing: settings.password_reveal_existing,
            password_reset_url: settings.password_reset_url.unwrap_or_default(),
            password_reset_lifetime_seconds: settings.password_reset_lifetime_seconds,
            password_require_verified_email: settings.password_require_verified_email,
            hasura_jwt_claims: settings.hasura_jwt_claims,
        }
    }
}

impl From<UpdateProjectSettingsRequest> for SettingsChange {
    fn from(body: UpdateProjectSettingsRequest) -> SettingsChange {
        SettingsChange {
            name: body.name,
            anonymous_login: body.anonymous_login,
            recovery: body.recovery,
            code_length: body.code_length,
            code_lifetime_seconds: body.code_lifetime_seconds,
            code_attempts: body.code_attempts,
            mail_sender: body.mail_sender,
            link_base: body.link_base,
            sms_webhook_url: body.sms_webhook_url,
            sms_webhook_secret: body.sms_webhook_secret,
            external_token_issuer: body.external_token_issuer,
            external_token_audience: body.external_token_audience,
            external_token_key_pem: body.external_token_key_pem,
            allowed_origins: body.allowed_origins,
            password_reveal_existing: body.password_reveal_existing,
            password_reset_url: body.password_reset_url,
            password_reset_lifetime_seconds: body.password_reset_lifetime_seconds,
            password_require_verified_email: body.password_require_verified_email,
            hasura_jwt_claims: body.hasura_jwt_claims,
        }
    }
}
