//! `portcullis.v1.PasswordService`.

use std::fmt;
use tonic::{Request, Response, Status};

use super::pb::password_service_server::PasswordService;
use super::pb::*;
use super::{bearer, client_address, session_message};
use crate::service::Auth;

pub struct PasswordApi {
    auth: Auth,
}

impl PasswordApi {
    pub fn new(auth: Auth) -> Self {
        PasswordApi { auth }
    }
}

#[tonic::async_trait]
impl PasswordService for PasswordApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let body = request.get_ref();
        self.auth
            .register_password(&body.project_id, &body.email, &body.password)
            .await?;
        Ok(Response::new(RegisterResponse {}))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client = client_address(&self.auth, &request);
        let body = request.get_ref();
        let session = self
            .auth
            .password_login(&body.project_id, &body.username, &body.password, client)
            .await?;
        let access_token = session.jwt.clone();
        Ok(Response::new(LoginResponse {
            access_token,
            session: Some(session_message(session)),
        }))
    }

    async fn me(&self, request: Request<MeRequest>) -> Result<Response<MeResponse>, Status> {
        let token = bearer(&request)?;
        let me = self.auth.me(&request.get_ref().project_id, &token).await?;
        Ok(Response::new(MeResponse {
            id: me.id,
            email: me.email,
            user_id: me.user_id,
        }))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let token = bearer(&request)?;
        let client = client_address(&self.auth, &request);
        let body = request.get_ref();
        let revoked = self
            .auth
            .change_password(&token, &body.current_password, &body.new_password, client)
            .await?;
        Ok(Response::new(ChangePasswordResponse {
            revoked_sessions: revoked as i64,
        }))
    }

    async fn forgot_password(
        &self,
        request: Request<ForgotPasswordRequest>,
    ) -> Result<Response<ForgotPasswordResponse>, Status> {
        let body = request.get_ref();
        self.auth
            .forgot_password(&body.project_id, &body.email)
            .await?;
        Ok(Response::new(ForgotPasswordResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<ResetPasswordRequest>,
    ) -> Result<Response<ResetPasswordResponse>, Status> {
        let body = request.get_ref();
        self.auth
            .reset_password(&body.project_id, &body.token, &body.new_password)
            .await?;
        Ok(Response::new(ResetPasswordResponse {}))
    }
}

// Requests that carry passwords (or a reset token) print without them.

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("project_id", &self.project_id)
            .field("email", &self.email)
            .field("password", &"..")
            .finish()
    }
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("project_id", &self.project_id)
            .field("username", &self.username)
            .field("password", &"..")
            .finish()
    }
}

impl fmt::Debug for ChangePasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangePasswordRequest")
            .field("current_password", &"..")
            .field("new_password", &"..")
            .finish()
    }
}

impl fmt::Debug for ResetPasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetPasswordRequest")
            .field("project_id", &self.project_id)
            .field("token", &"..")
            .field("new_password", &"..")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_print_without_their_secrets() {
        let login = LoginRequest {
            project_id: "p".into(),
            username: "ada@example.com".into(),
            password: "purple monkey dishwasher".into(),
        };
        let printed = format!("{login:?}");
        assert!(printed.contains("ada@example.com") && !printed.contains("purple"));
        let reset = ResetPasswordRequest {
            project_id: "p".into(),
            token: "rst_secret".into(),
            new_password: "purple monkey dishwasher".into(),
        };
        let printed = format!("{reset:?}");
        assert!(!printed.contains("rst_secret") && !printed.contains("purple"));
    }
}
