//! External tokens: a JWT signed with the project's own key, issuer and audience, in the
//! shape an Auth0-style custom token exchange accepts as its subject token.

use super::Auth;
use crate::error::{Error, Result};
use crate::jwt::{ExternalClaims, ExternalKey};

/// External tokens are short-lived: they are meant to be exchanged at once.
const EXTERNAL_TOKEN_SECONDS: i64 = 300;

impl Auth {
    pub async fn exchange_token(&self, user_token: &str) -> Result<String> {
        let user = self.require_session(user_token).await?.user;
        let project = self.project_by_id(&user.project_id).await?;
        let (Some(issuer), Some(audience), Some(pem)) = (
            project.external_token.issuer.as_deref(),
            project.external_token.audience.as_deref(),
            project.external_token.key_pem.as_deref(),
        ) else {
            return Err(Error::failed_precondition(
                "external tokens are not configured for this project (issuer, audience and key)",
            ));
        };
        let key = ExternalKey::parse(pem)
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored external key {e}")))?;
        let now = self.now();
        let claims = ExternalClaims {
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            sub: user.uid,
            iat: now,
            exp: now + EXTERNAL_TOKEN_SECONDS,
            name: user.name,
        };
        key.sign(&claims).map_err(|e| Error::Internal(e.into()))
    }
}
