//! Passwordless login: a code sent to the name, confirmed with its CODE_TOKEN.

use super::{Auth, parse_name, parse_token};
use crate::domain::{LoginCode, Name, SecretToken, TokenHash, TokenKind};
use crate::error::{Error, Result};
use crate::service::IssuedSession;
use crate::store::{Channel, NewLoginRequest, NewMessage, NewUser, ProjectRecord, Tx};

/// What `authenticate` hands back: the CODE_TOKEN and whether the name was new.
#[derive(Debug)]
pub struct LoginStarted {
    pub code_token: String,
    pub registration: bool,
}

impl Auth {
    /// Register-or-login by name: creates the user if the name is new in the project, and
    /// sends a fresh code to the name.
    pub async fn authenticate(&self, app_token: &str, name: &str) -> Result<LoginStarted> {
        let name = parse_name(name)?;
        let project = self.project_for_app_token(app_token).await?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        self.check_message_budget(&mut tx, &name, now).await?;

        let (user, registration) = match tx.user_by_name(&project.id, name.as_str()).await? {
            Some(user) => (user, false),
            None => {
                let new_user = NewUser {
                    uid: uuid::Uuid::new_v4().to_string(),
                    project_id: project.id.clone(),
                    name: Some(name.as_str().to_owned()),
                    root: false,
                    created_at: now,
                    verified_at: None,
                };
                match tx.insert_user(&new_user).await? {
                    Some(user) => (user, true),
                    // A concurrent request registered the same name first.
                    None => (
                        tx.user_by_name(&project.id, name.as_str())
                            .await?
                            .ok_or_else(|| {
                                Error::Internal(anyhow::anyhow!(
                                    "user vanished during registration"
                                ))
                            })?,
                        false,
                    ),
                }
            }
        };

        let code_token = SecretToken::generate(TokenKind::Code);
        let token_hash = code_token.hash();
        let code = LoginCode::generate(project.code_length);
        tx.insert_login_request(&NewLoginRequest {
            token_hash: token_hash.0,
            project_id: project.id.clone(),
            user_id: user.id,
            name: name.as_str().to_owned(),
            code_hmac: self.inner.code_key.seal(&token_hash, &code),
            attempts_left: project.code_attempts,
            expires_at: now + project.code_lifetime_seconds,
            created_at: now,
        })
        .await?;
        tx.enqueue_message(&code_message(&project, &name, &code, now))
            .await?;
        tx.commit().await?;
        self.inner.outbox.notify();
        Ok(LoginStarted {
            code_token: code_token.into_string(),
            registration,
        })
    }

    /// Sends a new code for a login request whose code was never attempted; the previous
    /// code stops working. The expiry restarts from now.
    pub async fn resend_code(&self, name: &str, code_token: &str) -> Result<()> {
        let name = parse_name(name)?;
        let token_hash = code_token_hash(code_token)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let request = tx
            .login_request(token_hash.as_bytes())
            .await?
            .filter(|request| request.name == name.as_str())
            .ok_or_else(|| {
                Error::NotFound("no login request for this name and code token".into())
            })?;
        if request.consumed_at.is_some() || request.expires_at <= now {
            return Err(Error::failed_precondition(
                "this login request has expired or was already confirmed; start a new login",
            ));
        }
        if request.attempted {
            return Err(Error::failed_precondition(
                "a code was already entered for this login request, so it cannot be resent; start a new login",
            ));
        }
        self.check_message_budget(&mut tx, &name, now).await?;
        let project = self.project_of_request(&request.project_id).await?;
        let code = LoginCode::generate(project.code_length);
        let sealed = self.inner.code_key.seal(&token_hash, &code);
        if !tx
            .replace_login_code(
                request.id,
                &sealed,
                now + project.code_lifetime_seconds,
                now,
            )
            .await?
        {
            return Err(Error::failed_precondition(
                "this login request changed meanwhile; start a new login",
            ));
        }
        tx.enqueue_message(&code_message(&project, &name, &code, now))
            .await?;
        tx.commit().await?;
        self.inner.outbox.notify();
        Ok(())
    }

    /// Exchanges a code and its CODE_TOKEN for a session. Every try spends one attempt
    /// first; a wrong code is judged after, so the budget holds under concurrent guesses.
    pub async fn confirm(&self, code: &str, code_token: &str) -> Result<IssuedSession> {
        let token_hash = code_token_hash(code_token)?;
        let code = LoginCode::parse(code)
            .ok_or_else(|| Error::invalid("code", "must be 4 to 8 digits"))?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let Some(request) = tx.spend_login_attempt(token_hash.as_bytes(), now).await? else {
            let request = tx.login_request(token_hash.as_bytes()).await?;
            return Err(match request {
                None => Error::NotFound("unknown code token".into()),
                Some(r) if r.consumed_at.is_some() => Error::failed_precondition(
                    "this code token was already used; start a new login",
                ),
                Some(r) if r.expires_at <= now => {
                    Error::failed_precondition("the code has expired; start a new login")
                }
                Some(_) => Error::failed_precondition(
                    "too many wrong codes: this code token no longer works; start a new login",
                ),
            });
        };
        if !self
            .inner
            .code_key
            .matches(&token_hash, &code, &request.code_hmac)
        {
            // The spent attempt must stick even though the call fails.
            tx.commit().await?;
            return Err(if request.attempts_left > 0 {
                Error::unauthenticated(format!(
                    "wrong code; {} attempt(s) left",
                    request.attempts_left
                ))
            } else {
                Error::failed_precondition(
                    "wrong code, and no attempts are left; start a new login",
                )
            });
        }
        if !tx.consume_login_request(request.id, now).await? {
            return Err(Error::failed_precondition(
                "this code token was already used; start a new login",
            ));
        }
        tx.mark_user_verified(request.user_id, now).await?;
        let user = tx.user_by_id(request.user_id).await?.ok_or_else(|| {
            Error::NotFound("the user of this login request no longer exists".into())
        })?;
        let session = self.open_session(&mut tx, &user, now).await?;
        tx.commit().await?;
        Ok(session)
    }

    async fn project_of_request(&self, project_id: &str) -> Result<ProjectRecord> {
        self.store()
            .project_by_id(project_id)
            .await?
            .ok_or_else(|| {
                Error::NotFound("the project of this login request no longer exists".into())
            })
    }

    /// Refuses to queue more messages to one recipient than the policy allows per window,
    /// so codes cannot be farmed by asking again and again, and nobody can be flooded.
    async fn check_message_budget(&self, tx: &mut Tx, name: &Name, now: i64) -> Result<()> {
        let policy = &self.inner.policy;
        let sent = tx
            .count_messages_since(name.as_str(), now - policy.message_window_seconds)
            .await?;
        if sent >= policy.messages_per_recipient {
            return Err(Error::TooManyRequests {
                message: format!(
                    "too many codes were sent to this name; try again in {} minutes",
                    policy.message_window_seconds / 60
                ),
                retry_after_seconds: policy.message_window_seconds,
            });
        }
        Ok(())
    }
}

fn code_token_hash(code_token: &str) -> Result<TokenHash> {
    let token = parse_token(code_token, "code token")?;
    if TokenKind::of(token) != Some(TokenKind::Code) {
        return Err(Error::NotFound("unknown code token".into()));
    }
    Ok(TokenHash::of(token))
}

fn code_message(project: &ProjectRecord, name: &Name, code: &LoginCode, now: i64) -> NewMessage {
    let minutes = (project.code_lifetime_seconds / 60).max(1);
    let (channel, subject, body) = match name {
        Name::Email(_) => (
            Channel::Email,
            format!("Your login code for {}: {}", project.name, code.expose()),
            format!(
                "Your login code for {} is:\n\n    {}\n\nIt works once and expires in {minutes} minutes.\n\
                 If you did not try to log in, you can ignore this mail.\n",
                project.name,
                code.expose()
            ),
        ),
        Name::Phone(_) => (
            Channel::Sms,
            String::new(),
            format!(
                "{} is your {} login code. It expires in {minutes} minutes.",
                code.expose(),
                project.name
            ),
        ),
    };
    NewMessage {
        channel,
        recipient: name.as_str().to_owned(),
        subject,
        body,
        sender: project.mail_sender.clone(),
        created_at: now,
    }
}
