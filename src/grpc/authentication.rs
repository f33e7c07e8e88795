//! `portcullis.v1.AuthenticationService`.

use tonic::{Request, Response, Status};

use super::bearer;
use super::pb::authentication_service_server::AuthenticationService;
use super::pb::*;
use crate::service::{Auth, Authorization};

pub struct AuthenticationApi {
    auth: Auth,
}

impl AuthenticationApi {
    pub fn new(auth: Auth) -> Self {
        AuthenticationApi { auth }
    }
}

#[tonic::async_trait]
impl AuthenticationService for AuthenticationApi {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let token = bearer(&request)?;
        let started = self
            .auth
            .authenticate(&token, &request.get_ref().name)
            .await?;
        Ok(Response::new(AuthenticateResponse {
            code_token: started.code_token,
            registration: started.registration,
        }))
    }

    async fn resend_code(
        &self,
        request: Request<ResendCodeRequest>,
    ) -> Result<Response<ResendCodeResponse>, Status> {
        let body = request.get_ref();
        self.auth.resend_code(&body.name, &body.code_token).await?;
        Ok(Response::new(ResendCodeResponse {}))
    }

    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let answer = match self.auth.authorize(&request.get_ref().token).await? {
            Authorization::Public => AuthorizeResponse {
                role: "public".into(),
                ..Default::default()
            },
            Authorization::User {
                id,
                uid,
                name,
                root,
                ..
            } => AuthorizeResponse {
                role: "user".into(),
                id,
                uid,
                name: name.unwrap_or_default(),
                root,
            },
        };
        Ok(Response::new(answer))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        self.auth.logout(&bearer(&request)?).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let user = self.auth.get_user(&bearer(&request)?).await?;
        Ok(Response::new(GetUserResponse {
            id: user.id,
            uid: user.uid,
            name: user.name.unwrap_or_default(),
            encrypted: user.encrypted,
            encryption_text: user.encryption_text.unwrap_or_default(),
        }))
    }
}
