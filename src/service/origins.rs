//! Which browser origins may call a project's HTTP endpoints (CORS). The project is
//! found from what the request carries: the project id in the path, or its token.

use super::Auth;
use super::projects::origins_of;
use crate::domain::{MAX_TOKEN_LEN, TokenHash, TokenKind};
use crate::error::Result;
use crate::store::ProjectRecord;

impl Auth {
    /// The allowed origins of the project a request belongs to; empty when no project
    /// can be told (then no origin is allowed).
    pub async fn allowed_origins(
        &self,
        project_id: Option<&str>,
        token: Option<&str>,
    ) -> Result<Vec<String>> {
        let project = match (project_id, token) {
            (Some(id), _) if id.len() <= 64 => self.store().project_by_id(id).await?,
            (_, Some(token)) => self.project_of_token(token.trim()).await?,
            _ => None,
        };
        Ok(project.as_ref().map(origins_of).unwrap_or_default())
    }

    async fn project_of_token(&self, token: &str) -> Result<Option<ProjectRecord>> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let store = self.store();
        let hash = TokenHash::of(token);
        let project_id = match TokenKind::of(token) {
            Some(TokenKind::App) => return Ok(store.project_by_app_token(token).await?),
            Some(TokenKind::Admin) => {
                return Ok(store.project_by_admin_token_hash(hash.as_bytes()).await?);
            }
            Some(TokenKind::Code) => store.login_request_project(hash.as_bytes()).await?,
            Some(TokenKind::Recovery) => store.recovery_token_project(hash.as_bytes()).await?,
            // Event ids, user tokens and JWTs.
            _ => match self.authorize(token).await? {
                super::Authorization::User { project_id, .. } => Some(project_id),
                super::Authorization::Public => {
                    store.event_by_id(token).await?.map(|e| e.project_id)
                }
            },
        };
        match project_id {
            Some(id) => Ok(store.project_by_id(&id).await?),
            None => Ok(None),
        }
    }
}
