//! The operator's API: projects (tenants) created, listed, re-keyed and deleted by the
//! platform team, behind an operator token. Off until `portcullis operator-token create`
//! made one.

use super::{Auth, CreatedProject, ProjectSummary, parse_token};
use crate::domain::{SecretToken, TokenHash, TokenKind};
use crate::error::{Error, Result};

/// A project's new tokens, shown once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotatedTokens {
    pub app_token: String,
    pub admin_token: String,
}

impl Auth {
    /// A new operator token (printed once; only its hash is kept). The first one turns
    /// the operator API on.
    pub async fn create_operator_token(&self) -> Result<String> {
        let token = SecretToken::generate(TokenKind::Operator);
        let mut tx = self.store().begin().await?;
        tx.insert_operator_token(&token.hash().0, self.now())
            .await?;
        tx.commit().await?;
        crate::security_event!("operator_token_created");
        Ok(token.into_string())
    }

    /// Checks an operator token.
    pub async fn require_operator(&self, token: &str) -> Result<()> {
        let token = parse_token(token, "operator token")?;
        // Only operator tokens are ever stored there: any other token simply matches none.
        let known = self
            .store()
            .operator_token_known(TokenHash::of(token).as_bytes())
            .await?;
        match known {
            Some(true) => Ok(()),
            Some(false) => Err(Error::unauthenticated("unknown operator token")),
            None => Err(Error::unauthenticated(
                "the operator API is off: create a token with `portcullis operator-token create`",
            )),
        }
    }

    pub async fn operator_create_project(
        &self,
        operator: &str,
        name: &str,
        owner: Option<&str>,
    ) -> Result<CreatedProject> {
        self.require_operator(operator).await?;
        self.create_project(name, owner, false, false).await
    }

    pub async fn operator_list_projects(&self, operator: &str) -> Result<Vec<ProjectSummary>> {
        self.require_operator(operator).await?;
        self.list_projects().await
    }

    /// New app and admin tokens for a project; the old ones stop at once.
    pub async fn operator_rotate_tokens(
        &self,
        operator: &str,
        project_id: &str,
    ) -> Result<RotatedTokens> {
        self.require_operator(operator).await?;
        let app = SecretToken::generate(TokenKind::App);
        let admin = SecretToken::generate(TokenKind::Admin);
        self.replace_tokens(project_id, Some(&app), Some(&admin))
            .await?;
        Ok(RotatedTokens {
            app_token: app.into_string(),
            admin_token: admin.into_string(),
        })
    }

    /// Deletes a project with all its users and their data; their uids are retired.
    pub async fn operator_delete_project(&self, operator: &str, project_id: &str) -> Result<()> {
        self.require_operator(operator).await?;
        let mut tx = self.store().begin().await?;
        if !tx.delete_project(project_id.trim(), self.now()).await? {
            return Err(Error::NotFound("no project has this project_id".into()));
        }
        tx.commit().await?;
        crate::security_event!("project_deleted", project_id = %project_id.trim());
        Ok(())
    }
}
