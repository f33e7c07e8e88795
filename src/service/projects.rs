//! Projects (tenants): creation, and the default project of a first start.

use super::Auth;
use crate::domain::{Email, SecretToken, TokenKind};
use crate::error::{Error, Result};
use crate::store::{NewProject, NewUser};

/// A new project with its tokens. The admin token is shown here once and stored only as
/// a hash.
#[derive(Debug, serde::Serialize)]
pub struct CreatedProject {
    pub project_id: String,
    pub name: String,
    pub app_token: String,
    pub admin_token: String,
    pub owner: Option<String>,
}

impl Auth {
    /// Creates a project; with an owner, also its root user (verified: the operator vouches
    /// for the address).
    pub async fn create_project(
        &self,
        name: &str,
        owner: Option<&str>,
        anonymous_login: bool,
        recovery: bool,
    ) -> Result<CreatedProject> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name", "must be 1 to 100 characters"));
        }
        let owner = owner
            .map(|o| Email::parse(o).map_err(|e| Error::invalid("owner", e.0)))
            .transpose()?;
        let now = self.now();
        let app_token = SecretToken::generate(TokenKind::App);
        let admin_token = SecretToken::generate(TokenKind::Admin);
        let project_id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.store().begin().await?;
        tx.insert_project(&NewProject {
            id: project_id.clone(),
            name: name.to_owned(),
            app_token: app_token.expose().to_owned(),
            admin_token_hash: admin_token.hash().0,
            anonymous_login,
            recovery,
            created_at: now,
        })
        .await?;
        if let Some(owner) = &owner {
            tx.insert_user(&NewUser {
                uid: uuid::Uuid::new_v4().to_string(),
                project_id: project_id.clone(),
                name: Some(owner.as_str().to_owned()),
                root: true,
                created_at: now,
                verified_at: Some(now),
            })
            .await?;
        }
        tx.commit().await?;
        Ok(CreatedProject {
            project_id,
            name: name.to_owned(),
            app_token: app_token.into_string(),
            admin_token: admin_token.into_string(),
            owner: owner.map(|o| o.as_str().to_owned()),
        })
    }

    /// On an empty database, creates the default project and returns it (once).
    pub async fn ensure_default_project(
        &self,
        owner: Option<&str>,
    ) -> Result<Option<CreatedProject>> {
        if self.store().project_count().await? > 0 {
            return Ok(None);
        }
        self.create_project("Default project", owner, false, false)
            .await
            .map(Some)
    }
}
