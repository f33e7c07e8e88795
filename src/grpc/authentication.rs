//! `portcullis.v1.AuthenticationService`.

use tonic::{Request, Response, Status};

use super::pb::authentication_service_server::AuthenticationService;
use super::pb::*;
use super::{bearer, client_address, session_message};
use crate::service::{Auth, Authenticated, Authorization};

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
        let answer = match self
            .auth
            .authenticate(
                &token,
                &request.get_ref().name,
                client_address(&self.auth, &request),
            )
            .await?
        {
            Authenticated::CodeSent {
                code_token,
                registration,
            } => AuthenticateResponse {
                code_token,
                registration,
                session: None,
            },
            Authenticated::Anonymous(session) => AuthenticateResponse {
                code_token: String::new(),
                registration: true,
                session: Some(session_message(session)),
            },
            Authenticated::Imported { registration } => AuthenticateResponse {
                code_token: String::new(),
                registration,
                session: None,
            },
        };
        Ok(Response::new(answer))
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
        let body = request.get_ref();
        let answer = match self
            .auth
            .authorize_for(&body.token, Some(&body.project_id))
            .await?
        {
            Authorization::Public => AuthorizeResponse {
                role: Role::Public.into(),
                ..Default::default()
            },
            Authorization::User {
                id,
                uid,
                name,
                root,
                ..
            } => AuthorizeResponse {
                role: Role::User.into(),
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

    async fn change_name(
        &self,
        request: Request<ChangeNameRequest>,
    ) -> Result<Response<ChangeNameResponse>, Status> {
        let token = bearer(&request)?;
        let client = client_address(&self.auth, &request);
        let code_token = self
            .auth
            .change_name(&token, &request.get_ref().name, client)
            .await?;
        Ok(Response::new(ChangeNameResponse { code_token }))
    }

    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        self.auth
            .delete_user(&bearer(&request)?, &request.get_ref().name)
            .await?;
        Ok(Response::new(DeleteUserResponse {}))
    }

    async fn set_encryption(
        &self,
        request: Request<SetEncryptionRequest>,
    ) -> Result<Response<SetEncryptionResponse>, Status> {
        let encrypted = self
            .auth
            .toggle_encryption(&bearer(&request)?, &request.get_ref().text)
            .await?;
        Ok(Response::new(SetEncryptionResponse { encrypted }))
    }

    async fn exchange_token(
        &self,
        request: Request<ExchangeTokenRequest>,
    ) -> Result<Response<ExchangeTokenResponse>, Status> {
        let token = self.auth.exchange_token(&bearer(&request)?).await?;
        Ok(Response::new(ExchangeTokenResponse { token }))
    }
}
