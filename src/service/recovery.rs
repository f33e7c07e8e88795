//! Recovery tokens: a long-lived secret a user can keep to log in again without a code,
//! when the project allows it.

use super::{Auth, parse_token};
use crate::domain::{SecretToken, TokenHash, TokenKind};
use crate::error::{Error, Result};
use crate::service::IssuedSession;

/// A login by recovery token: the new session and the token that replaces the used one.
#[derive(Debug)]
pub struct Recovered {
    pub session: IssuedSession,
    pub recovery_token: String,
}

impl Auth {
    /// Issues the recovery token of the user behind `user_token`, replacing any earlier one.
    pub async fn issue_recovery_token(&self, user_token: &str) -> Result<String> {
        let user = self.require_session(user_token).await?.user;
        let project = self.project_by_id(&user.project_id).await?;
        if !project.recovery {
            return Err(recovery_disabled());
        }
        let token = SecretToken::generate(TokenKind::Recovery);
        let mut tx = self.store().begin().await?;
        tx.replace_recovery_token(user.id, token.hash().as_bytes(), self.now())
            .await?;
        tx.commit().await?;
        Ok(token.into_string())
    }

    /// Logs in with a recovery token. The token is used up: a new one comes back with the
    /// session.
    pub async fn recover(&self, recovery_token: &str) -> Result<Recovered> {
        let token = parse_token(recovery_token, "recovery token")?;
        let unknown = || Error::unauthenticated("unknown or already used recovery token");
        if TokenKind::of(token) != Some(TokenKind::Recovery) {
            return Err(unknown());
        }
        let now = self.now();
        let next = SecretToken::generate(TokenKind::Recovery);
        let mut tx = self.store().begin().await?;
        let user_id = tx
            .rotate_recovery_token(TokenHash::of(token).as_bytes(), next.hash().as_bytes(), now)
            .await?
            .ok_or_else(unknown)?;
        let user = tx.user_by_id(user_id).await?.ok_or_else(unknown)?;
        let project = self.project_by_id(&user.project_id).await?;
        if !project.recovery {
            return Err(recovery_disabled());
        }
        let session = self.open_session(&mut tx, &project, &user, now).await?;
        tx.commit().await?;
        Ok(Recovered {
            session,
            recovery_token: next.into_string(),
        })
    }
}

/// What `recovery` did with the token it was given.
#[derive(Debug)]
pub enum RecoveryOutcome {
    /// A USER_TOKEN asked for a recovery token.
    Issued(String),
    /// A RECOVERY_TOKEN logged in.
    Recovered(Recovered),
}

impl Auth {
    /// The published API's one recovery route: a USER_TOKEN gets a recovery token, a
    /// RECOVERY_TOKEN logs in.
    pub async fn recovery(&self, token: &str) -> Result<RecoveryOutcome> {
        if TokenKind::of(token.trim()) == Some(TokenKind::Recovery) {
            self.recover(token).await.map(RecoveryOutcome::Recovered)
        } else {
            self.issue_recovery_token(token)
                .await
                .map(RecoveryOutcome::Issued)
        }
    }
}

fn recovery_disabled() -> Error {
    Error::failed_precondition("recovery tokens are turned off for this project")
}
