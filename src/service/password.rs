//! Email + password accounts per project: register, login, me, change password, forgot
//! password and reset through the mailed link. The same users as the code login: a
//! password is one more way in to a user, kept in `users.password_hash`.
//!
//! Nothing here tells whether an email has an account: unknown emails and wrong passwords
//! fail alike and cost the same (a dummy hash is checked), Register of a known email
//! succeeds and mails the owner (unless the project asks otherwise), and ForgotPassword
//! answers before it even looks.

use std::net::IpAddr;

use super::limits::{AttemptKeys, settle_success};
use super::messages::{
    existing_account_message, removed_password_message, reset_message, verification_message,
};
use super::{Auth, IssuedSession, parse_token};
use crate::domain::{
    Email, HashingError, NewPassword, Password, SecretToken, TokenHash, TokenKind, Verdict,
};
use crate::error::{Error, Result};
use crate::service::Authorization;
use crate::store::{NewUser, ProjectRecord, Tx, UserRecord};

/// The user behind an access token, as the published `auth/me` shows it.
#[derive(Debug, Clone)]
pub struct Me {
    /// The 36-character uid (the JWT `sub`).
    pub id: String,
    pub user_id: i64,
    pub email: String,
}

/// What the hosted reset page needs to know about a link.
#[derive(Debug, Clone)]
pub struct ResetLink {
    pub project_name: String,
    pub state: ResetLinkState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetLinkState {
    /// The link works; the page offers the form for this account.
    Ready {
        email: String,
    },
    Expired,
    Used,
    /// Unknown, replaced by a newer link, or of another project.
    Invalid,
}

impl ResetLinkState {
    /// Why a link does not work, for a person: shown on the page and in gRPC errors.
    pub fn explanation(&self) -> &'static str {
        match self {
            ResetLinkState::Ready { .. } => "this password reset link works",
            ResetLinkState::Expired => {
                "this password reset link has expired; ask for a new one with \"Forgot password\""
            }
            ResetLinkState::Used => {
                "this password reset link was already used; if you need to reset the password \
                 again, ask for a new link with \"Forgot password\""
            }
            ResetLinkState::Invalid => {
                "this password reset link is not valid, or a newer link was sent since; use the \
                 newest link, or ask for a new one with \"Forgot password\""
            }
        }
    }

    fn into_error(self) -> Error {
        match self {
            ResetLinkState::Invalid => Error::NotFound(self.explanation().into()),
            other => Error::failed_precondition(other.explanation()),
        }
    }
}

impl Auth {
    /// Creates a password account, or adds the password to a code-login user that never
    /// confirmed a login. A known email does not reveal itself: the call succeeds and the
    /// owner is mailed, or ALREADY_EXISTS when the project chose to reveal it.
    pub async fn register_password(
        &self,
        project_id: &str,
        email: &str,
        password: &str,
    ) -> Result<()> {
        let project = self.project_by_id(project_id).await?;
        let email = parse_email("email", email)?;
        let password = choose_password("password", password, email.as_str(), &project.name).await?;
        // Hashed before looking the email up, so a known email costs the same time.
        let hash = self.hasher_hash(password.as_password()).await?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let existing = match tx
            .password_user_by_name(&project.id, email.as_str())
            .await?
        {
            Some(existing) => existing,
            None => {
                let user = NewUser {
                    password_hash: Some(hash.clone()),
                    ..NewUser::new(&project.id, Some(email.as_str()), now, None)
                };
                if let Some(user) = tx.insert_user(&user).await? {
                    if project.passwords.require_verified_email {
                        self.mail_email_verification(&mut tx, &project, user.id, &email, now)
                            .await?;
                    }
                    tx.commit().await?;
                    return Ok(());
                }
                // A concurrent registration of the same email won.
                tx.password_user_by_name(&project.id, email.as_str())
                    .await?
                    .ok_or_else(|| {
                        Error::Internal(anyhow::anyhow!("user vanished during registration"))
                    })?
            }
        };
        // A code-login user that never confirmed a code has proven nothing and holds
        // nothing: it takes the password like a new account. A confirmed one has data to
        // protect, so only a proof of the mailbox (the reset link) adds a password to it.
        if existing.password_hash.is_none()
            && existing.user.verified_at.is_none()
            && tx.set_first_password(existing.user.id, &hash).await?
        {
            if project.passwords.require_verified_email {
                self.mail_email_verification(&mut tx, &project, existing.user.id, &email, now)
                    .await?;
            }
            tx.commit().await?;
            return Ok(());
        }
        // Registering again before confirming: a new confirmation link, not a warning.
        if project.passwords.require_verified_email
            && existing.password_hash.is_some()
            && existing.user.verified_at.is_none()
        {
            if self
                .within_message_budget(&mut tx, email.as_str(), now)
                .await?
            {
                self.mail_email_verification(&mut tx, &project, existing.user.id, &email, now)
                    .await?;
                tx.commit().await?;
            }
            return Ok(());
        }
        if project.passwords.reveal_existing {
            return Err(Error::AlreadyExists(
                "an account with this email already exists in this project: log in, or reset \
                 its password with ForgotPassword"
                    .into(),
            ));
        }
        if self
            .within_message_budget(&mut tx, email.as_str(), now)
            .await?
        {
            tx.enqueue_message(&existing_account_message(&project, &email, now))
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Email and password for a session (an opaque token and a JWT, the access token).
    /// Every check is first charged to the account and the client address; over either
    /// limit, RESOURCE_EXHAUSTED with the seconds until the window ends.
    pub async fn password_login(
        &self,
        project_id: &str,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<IssuedSession> {
        let project = self.project_by_id(project_id).await?;
        let email = parse_email("username", username)?;
        let password = Password::parse(password).map_err(|e| Error::invalid("password", e.0))?;
        let account = self
            .store()
            .password_user_by_name(&project.id, email.as_str())
            .await?;
        let stored = account.as_ref().and_then(|a| a.password_hash.clone());
        let keys = AttemptKeys::new(&project.id, email.as_str(), client);
        let verdict = self
            .check_password_counted(&keys, &password, stored.as_deref())
            .await?;
        let (Verdict::Match { rehash }, Some(account), Some(stored)) = (verdict, account, stored)
        else {
            crate::metrics::count_labelled("portcullis_password_logins_total", "outcome", "failed");
            crate::security_event!("login_failed", method = "password", project_id = %project.id);
            return Err(wrong_email_or_password());
        };
        let upgraded = if rehash {
            Some(self.hasher_hash(&password).await?)
        } else {
            None
        };

        let now = self.now();
        let mut tx = self.store().begin().await?;
        settle_success(&mut tx, &keys).await?;
        if project.passwords.require_verified_email && account.user.verified_at.is_none() {
            tx.commit().await?;
            return Err(Error::EmailNotConfirmed(
                "confirm your email first: follow the link in the mail sent when you \
                 registered (registering again sends a new one)"
                    .into(),
            ));
        }
        if let Some(upgraded) = &upgraded {
            // Lost only if the password changed meanwhile, and then the new one stands.
            tx.replace_password(account.user.id, &stored, upgraded)
                .await?;
        }
        let session = self
            .open_session(&mut tx, &project, &account.user, now)
            .await?;
        tx.commit().await?;
        crate::metrics::count_labelled("portcullis_password_logins_total", "outcome", "ok");
        Ok(session)
    }

    /// The user of an access token (a JWT or a USER_TOKEN). With a `project_id`, tokens of
    /// other projects are refused.
    pub async fn me(&self, project_id: &str, token: &str) -> Result<Me> {
        parse_token(token, "access token")?;
        match self.authorize(token).await? {
            Authorization::User {
                id,
                uid,
                name,
                project_id: of_project,
                ..
            } if project_id.trim().is_empty() || of_project == project_id.trim() => Ok(Me {
                id: uid,
                user_id: id,
                email: name.unwrap_or_default(),
            }),
            _ => Err(Error::unauthenticated(
                "invalid, expired or revoked access token",
            )),
        }
    }

    /// Changes the password of the token's user, who must give the current one. Every
    /// other session of the user is revoked; returns how many.
    pub async fn change_password(
        &self,
        token: &str,
        current: &str,
        new: &str,
        client: Option<IpAddr>,
    ) -> Result<u64> {
        let session = self.require_session(token).await?;
        let user = &session.user;
        let current =
            Password::parse(current).map_err(|e| Error::invalid("current_password", e.0))?;
        let project = self.project_by_id(&user.project_id).await?;
        let name = user.name.clone().unwrap_or_default();
        let new = choose_password("new_password", new, &name, &project.name).await?;
        let stored = self.store().password_hash_of(user.id).await?.ok_or_else(|| {
            Error::failed_precondition(
                "this account has no password yet: set one with ForgotPassword, which mails a link",
            )
        })?;
        let keys = AttemptKeys::new(&project.id, &name, client);
        if self
            .check_password_counted(&keys, &current, Some(&stored))
            .await?
            == Verdict::Mismatch
        {
            return Err(Error::PermissionDenied(
                "the current password is wrong".into(),
            ));
        }
        let hash = self.hasher_hash(new.as_password()).await?;

        let mut tx = self.store().begin().await?;
        settle_success(&mut tx, &keys).await?;
        if !tx.replace_password(user.id, &stored, &hash).await? {
            return Err(Error::failed_precondition(
                "the password was changed meanwhile; log in again and retry",
            ));
        }
        let revoked = tx
            .delete_sessions_of_user(user.id, Some(&session.session_id))
            .await?;
        tx.commit().await?;
        crate::security_event!(
            "password_changed",
            project_id = %project.id,
            user_id = user.id,
            sessions_revoked = revoked
        );
        Ok(revoked)
    }

    /// Mails a reset link if the email has an account in the project. Always succeeds for a
    /// well-formed email of an existing project, so the answer does not tell whether there
    /// is an account. The link is in the outbox before the answer (a shutdown right after
    /// loses nothing), and an unknown email costs the same statements, so the timing does
    /// not tell either.
    pub async fn forgot_password(&self, project_id: &str, email: &str) -> Result<()> {
        let project = self.project_by_id(project_id).await?;
        let email = parse_email("email", email)?;
        let now = self.now();
        let token = SecretToken::generate(TokenKind::Reset);
        let expires_at = now + project.passwords.reset_lifetime_seconds;
        let link = self.reset_url(&project, token.expose());
        let message = reset_message(&project, &email, &link, now);

        let mut tx = self.store().begin().await?;
        let account = tx
            .password_user_by_name(&project.id, email.as_str())
            .await?;
        let within_budget = self
            .within_message_budget(&mut tx, email.as_str(), now)
            .await?;
        match account {
            Some(account) if within_budget => {
                tx.put_password_reset(account.user.id, token.hash().as_bytes(), expires_at, now)
                    .await?;
                tx.enqueue_message(&message).await?;
                tx.commit().await?;
            }
            account => {
                if account.is_some() {
                    tracing::info!(
                        "password reset link not sent: too many messages to this recipient"
                    );
                }
                tx.shadow_password_reset(token.hash().as_bytes(), &message)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Mails `email` a link that confirms it (in the caller's transaction).
    async fn mail_email_verification(
        &self,
        tx: &mut Tx,
        project: &ProjectRecord,
        user_id: i64,
        email: &Email,
        now: i64,
    ) -> Result<()> {
        let token = SecretToken::generate(TokenKind::Verify);
        tx.put_email_verification(
            user_id,
            token.hash().as_bytes(),
            now + EMAIL_VERIFICATION_SECONDS,
            now,
        )
        .await?;
        let link = format!(
            "{}/project/{}/auth/email/confirm?token={}",
            self.keys().issuer(),
            project.id,
            token.expose()
        );
        tx.enqueue_message(&verification_message(project, email, &link, now))
            .await?;
        Ok(())
    }

    /// Follows an email confirmation link: the user's email counts as verified, so its
    /// password logs in. Returns the project's name.
    pub async fn confirm_email(&self, project_id: &str, token: &str) -> Result<String> {
        let project = self.project_by_id(project_id).await?;
        let token = token.trim();
        let dead = || {
            Error::failed_precondition(
                "this confirmation link is not valid, has expired or was already used; \
                 register again to get a new one",
            )
        };
        if TokenKind::of(token) != Some(TokenKind::Verify) || token.len() > 128 {
            return Err(dead());
        }
        let now = self.now();
        let mut tx = self.store().begin().await?;
        if tx
            .use_email_verification(&project.id, TokenHash::of(token).as_bytes(), now)
            .await?
            .is_none()
        {
            return Err(dead());
        }
        tx.commit().await?;
        Ok(project.name)
    }

    /// Tells the owner of a mailbox just proven that the password someone set before
    /// the proof was removed, with a reset link to choose one (in the proof's transaction).
    pub(super) async fn mail_removed_password(
        &self,
        tx: &mut Tx,
        project: &ProjectRecord,
        user: &UserRecord,
        now: i64,
    ) -> Result<()> {
        let Some(email) = user.name.as_deref().and_then(|n| Email::parse(n).ok()) else {
            return Ok(());
        };
        let token = SecretToken::generate(TokenKind::Reset);
        let expires_at = now + project.passwords.reset_lifetime_seconds;
        tx.put_password_reset(user.id, token.hash().as_bytes(), expires_at, now)
            .await?;
        let link = self.reset_url(project, token.expose());
        tx.enqueue_message(&removed_password_message(project, &email, &link, now))
            .await?;
        Ok(())
    }

    /// Where a reset link points: the project's own page if it set one, else the page
    /// this service hosts under its public URL.
    fn reset_url(&self, project: &ProjectRecord, token: &str) -> String {
        let base = match &project.passwords.reset_url {
            Some(url) => url.clone(),
            None => format!(
                "{}/project/{}/auth/password/reset",
                self.keys().issuer(),
                project.id
            ),
        };
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}token={token}")
    }

    /// What a reset link is worth right now, for the hosted page. Errors only for an
    /// unknown project or a failing database.
    pub async fn reset_link(&self, project_id: &str, token: &str) -> Result<ResetLink> {
        let project = self.project_by_id(project_id).await?;
        let state = self.reset_link_state(&project, token).await?;
        Ok(ResetLink {
            project_name: project.name,
            state,
        })
    }

    async fn reset_link_state(
        &self,
        project: &ProjectRecord,
        token: &str,
    ) -> Result<ResetLinkState> {
        let token = token.trim();
        if TokenKind::of(token) != Some(TokenKind::Reset) || token.len() > 128 {
            return Ok(ResetLinkState::Invalid);
        }
        let Some(reset) = self
            .store()
            .password_reset(TokenHash::of(token).as_bytes())
            .await?
        else {
            return Ok(ResetLinkState::Invalid);
        };
        Ok(if reset.project_id != project.id {
            ResetLinkState::Invalid
        } else if reset.used_at.is_some() {
            ResetLinkState::Used
        } else if reset.expires_at <= self.now() {
            ResetLinkState::Expired
        } else {
            ResetLinkState::Ready {
                email: reset.email.unwrap_or_default(),
            }
        })
    }

    /// Sets a new password with a reset token: the token dies, every session of the user
    /// is revoked, the failure lock on the account is lifted, and the email counts as
    /// verified (the link proved the mailbox). Returns the project's name.
    pub async fn reset_password(
        &self,
        project_id: &str,
        token: &str,
        new_password: &str,
    ) -> Result<String> {
        let project = self.project_by_id(project_id).await?;
        let email = match self.reset_link_state(&project, token).await? {
            ResetLinkState::Ready { email } => email,
            dead => return Err(dead.into_error()),
        };
        let password = choose_password("password", new_password, &email, &project.name).await?;
        let hash = self.hasher_hash(password.as_password()).await?;

        let now = self.now();
        let mut tx = self.store().begin().await?;
        let token_hash = TokenHash::of(token.trim());
        let Some(user_id) = tx.use_password_reset(token_hash.as_bytes(), now).await? else {
            // Used or expired between the check above and now.
            drop(tx);
            return Err(self.reset_link_state(&project, token).await?.into_error());
        };
        tx.set_password(user_id, &hash).await?;
        tx.mark_user_verified(user_id, now).await?;
        tx.delete_sessions_of_user(user_id, None).await?;
        tx.clear_password_failures(&AttemptKeys::new(&project.id, &email, None).account)
            .await?;
        tx.commit().await?;
        crate::security_event!("password_reset", project_id = %project.id, user_id = user_id);
        Ok(project.name)
    }

    async fn hasher_hash(&self, password: &Password) -> Result<String> {
        self.inner
            .hasher
            .hash(password)
            .await
            .map_err(hashing_error)
    }

    pub(super) async fn hasher_verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict> {
        self.inner
            .hasher
            .verify(password, stored)
            .await
            .map_err(hashing_error)
    }
}

fn wrong_email_or_password() -> Error {
    Error::unauthenticated("wrong email or password")
}

fn hashing_error(error: HashingError) -> Error {
    match error {
        HashingError::Busy => Error::TooManyRequests {
            message: "the service is busy checking passwords; retry in a few seconds".into(),
            retry_after_seconds: 2,
        },
        HashingError::Failed(cause) => Error::Internal(anyhow::anyhow!(cause)),
    }
}

fn parse_email(field: &'static str, input: &str) -> Result<Email> {
    if input.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    Email::parse(input).map_err(|e| Error::invalid(field, format!("is not an email address: {e}")))
}

/// Parses a password someone chose, with what an attacker would try first for this
/// account as hints: the email and project name, whole and word by word.
async fn choose_password(
    field: &'static str,
    input: &str,
    name: &str,
    project_name: &str,
) -> Result<NewPassword> {
    let mut hints = vec![name.to_owned(), project_name.to_owned()];
    for text in [name, project_name] {
        hints.extend(
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|word| word.chars().count() >= 3)
                .map(str::to_owned),
        );
    }
    NewPassword::parse_off_runtime(input.to_owned(), hints)
        .await
        .map_err(|e| Error::invalid(field, e.0))
}

/// How long an email confirmation link works.
const EMAIL_VERIFICATION_SECONDS: i64 = 24 * 3600;
