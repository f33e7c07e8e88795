//! `portcullis.v1.RecoveryService`.

use tonic::{Request, Response, Status};

use super::pb::recovery_service_server::RecoveryService;
use super::pb::*;
use super::{bearer, session_message};
use crate::service::Auth;

pub struct RecoveryApi {
    auth: Auth,
}

impl RecoveryApi {
    pub fn new(auth: Auth) -> Self {
        RecoveryApi { auth }
    }
}

#[tonic::async_trait]
impl RecoveryService for RecoveryApi {
    async fn issue_recovery_token(
        &self,
        request: Request<IssueRecoveryTokenRequest>,
    ) -> Result<Response<IssueRecoveryTokenResponse>, Status> {
        let recovery_token = self.auth.issue_recovery_token(&bearer(&request)?).await?;
        Ok(Response::new(IssueRecoveryTokenResponse { recovery_token }))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let recovered = self.auth.recover(&request.get_ref().recovery_token).await?;
        Ok(Response::new(RecoverResponse {
            session: Some(session_message(recovered.session)),
            recovery_token: recovered.recovery_token,
        }))
    }
}
