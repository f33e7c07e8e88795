//! `portcullis.v1.VerificationService`.

use tonic::{Request, Response, Status};

use super::pb::verification_service_server::VerificationService;
use super::pb::*;
use super::session_message;
use crate::service::Auth;

pub struct VerificationApi {
    auth: Auth,
}

impl VerificationApi {
    pub fn new(auth: Auth) -> Self {
        VerificationApi { auth }
    }
}

#[tonic::async_trait]
impl VerificationService for VerificationApi {
    async fn confirm(
        &self,
        request: Request<ConfirmRequest>,
    ) -> Result<Response<ConfirmResponse>, Status> {
        let body = request.get_ref();
        let session = self.auth.confirm(&body.code, &body.code_token).await?;
        Ok(Response::new(ConfirmResponse {
            session: Some(session_message(session)),
        }))
    }

    async fn poll(&self, request: Request<PollRequest>) -> Result<Response<PollResponse>, Status> {
        let session = self.auth.poll(&request.get_ref().code_token).await?;
        Ok(Response::new(PollResponse {
            confirmed: session.is_some(),
            session: session.map(session_message),
        }))
    }

    async fn confirm_link(
        &self,
        request: Request<ConfirmLinkRequest>,
    ) -> Result<Response<ConfirmLinkResponse>, Status> {
        self.auth
            .confirm_link(&request.get_ref().link_token)
            .await?;
        Ok(Response::new(ConfirmLinkResponse {}))
    }
}
