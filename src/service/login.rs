//! Passwordless login: a code (and a magic link) sent to the name, confirmed with the
//! CODE_TOKEN, the code, or the link. The same flow changes a user's name: the new name
//! is taken only once the code sent to it is confirmed.

use super::limits::CodeSending;
use super::{Auth, parse_name, parse_token};
use crate::domain::{LoginCode, Name, SecretToken, TokenHash, TokenKind};
use crate::error::{Error, Result};
use crate::service::IssuedSession;
use crate::store::{
    LoginRequestRecord, NewLoginRequest, NewMessage, NewUser, ProjectRecord, SealedMessage, Tx,
    UserRecord,
};
use std::net::IpAddr;

/// Where the magic link of a login mail points.
pub const LINK_PATH: &str = "/login/link";

/// How long a link-confirmed login can still be collected by polling.
const POLL_COLLECT_SECONDS: i64 = 10 * 60;

/// What `authenticate` did, by the kind of token it was given.
#[derive(Debug)]
pub enum Authenticated {
    /// App token + name, or user token + new name: a code is on its way.
    CodeSent {
        code_token: String,
        registration: bool,
    },
    /// App token, no name, anonymous login allowed: a session at once.
    Anonymous(IssuedSession),
    /// Admin token + name: registered (or already there) and verified; no token.
    Imported { registration: bool },
}

impl Auth {
    /// Register-or-login by name. The token decides the meaning (see [`Authenticated`]):
    /// APP_TOKEN logs in (or registers anonymously without a name), ADMIN_TOKEN imports
    /// the name, USER_TOKEN (or JWT) starts changing the user's name.
    pub async fn authenticate(
        &self,
        token: &str,
        name: &str,
        client: Option<IpAddr>,
    ) -> Result<Authenticated> {
        let token = parse_token(token, "token")?;
        match TokenKind::of(token) {
            Some(TokenKind::App) => {
                let project = self.project_for_app_token(token).await?;
                if name.trim().is_empty() {
                    self.register_anonymous(&project)
                        .await
                        .map(Authenticated::Anonymous)
                } else {
                    self.start_login(&project, &parse_name(name)?, client).await
                }
            }
            Some(TokenKind::Admin) => {
                let name = parse_name(name)?;
                let project = self.project_for_admin_token(token).await?;
                self.import_name(&project, &name).await
            }
            _ => {
                let code_token = self.change_name(token, name, client).await?;
                Ok(Authenticated::CodeSent {
                    code_token,
                    registration: false,
                })
            }
        }
    }

    async fn start_login(
        &self,
        project: &ProjectRecord,
        name: &Name,
        client: Option<IpAddr>,
    ) -> Result<Authenticated> {
        let now = self.now();
        let code = self.prepare_login_code(project, name, now)?;
        let mut tx = self.store().begin().await?;
        confirm_app_token(&mut tx, project).await?;
        let sending = self
            .check_code_sending(&mut tx, name.as_str(), client, now)
            .await?;
        let (user, registration) = match tx.user_by_name(&project.id, name.as_str()).await? {
            Some(user) => (user, false),
            None => {
                let new_user = NewUser::new(&project.id, Some(name.as_str()), now, None);
                match tx.insert_user(&new_user).await? {
                    Some(user) => (user, true),
                    // A concurrent request registered the same name first.
                    None => (existing_user(&mut tx, project, name).await?, false),
                }
            }
        };
        let code_token = self
            .send_login_code(&mut tx, project, user.id, code, sending)
            .await?;
        tx.commit().await?;
        Ok(Authenticated::CodeSent {
            code_token,
            registration,
        })
    }

    async fn register_anonymous(&self, project: &ProjectRecord) -> Result<IssuedSession> {
        if !project.anonymous_login {
            return Err(Error::failed_precondition(
                "anonymous login is turned off for this project: pass a name",
            ));
        }
        let now = self.now();
        let mut tx = self.store().begin().await?;
        confirm_app_token(&mut tx, project).await?;
        let user = tx
            .insert_user(&NewUser::new(&project.id, None, now, None))
            .await?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("anonymous insert conflicted")))?;
        let session = self.open_session(&mut tx, project, &user, now).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Registers a name as verified without sending anything (migrations by the admin).
    async fn import_name(&self, project: &ProjectRecord, name: &Name) -> Result<Authenticated> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let registration = match tx.user_by_name(&project.id, name.as_str()).await? {
            Some(user) => {
                if tx.prove_mailbox(user.id, now).await? {
                    self.mail_removed_password(&mut tx, project, &user, now)
                        .await?;
                }
                false
            }
            None => {
                let new_user = NewUser::new(&project.id, Some(name.as_str()), now, Some(now));
                tx.insert_user(&new_user).await?.is_some()
            }
        };
        tx.commit().await?;
        Ok(Authenticated::Imported { registration })
    }

    /// Starts changing the name of the user behind `user_token`: sends a code to the new
    /// name and returns its CODE_TOKEN. The name changes when that code is confirmed.
    pub async fn change_name(
        &self,
        user_token: &str,
        name: &str,
        client: Option<IpAddr>,
    ) -> Result<String> {
        let name = &parse_name(name)?;
        let session = self.require_session(user_token).await?;
        let user = session.user;
        if user.name.as_deref() == Some(name.as_str()) {
            return Err(Error::failed_precondition(
                "this is already the user's name",
            ));
        }
        let project = self.project_by_id(&user.project_id).await?;
        let now = self.now();
        let code = self.prepare_login_code(&project, name, now)?;
        let mut tx = self.store().begin().await?;
        if tx.user_by_name(&project.id, name.as_str()).await?.is_some() {
            return Err(name_taken());
        }
        let sending = self
            .check_code_sending(&mut tx, name.as_str(), client, now)
            .await?;
        let code_token = self
            .send_login_code(&mut tx, &project, user.id, code, sending)
            .await?;
        tx.commit().await?;
        Ok(code_token)
    }

    /// Sends a new code (and link) for a login request whose code was never attempted;
    /// the previous code and link stop working. The expiry restarts from now.
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
        if request.consumed_at.is_some()
            || request.confirmed_at.is_some()
            || request.expires_at <= now
        {
            return Err(Error::failed_precondition(
                "this login request has expired or was already confirmed; start a new login",
            ));
        }
        if request.attempted {
            return Err(Error::failed_precondition(
                "a code was already entered for this login request, so it cannot be resent; start a new login",
            ));
        }
        let sending = self
            .check_code_sending(&mut tx, name.as_str(), None, now)
            .await?;
        let project = self.project_by_id(&request.project_id).await?;
        let code = LoginCode::generate(project.codes.length);
        let link = SecretToken::generate_time_led(TokenKind::Link);
        let sealed = self.inner.code_key.seal(&token_hash, &code);
        let expires_at = now + project.codes.lifetime_seconds;
        if !tx
            .replace_login_code(request.id, &sealed, link.hash().as_bytes(), expires_at, now)
            .await?
        {
            return Err(Error::failed_precondition(
                "this login request changed meanwhile; start a new login",
            ));
        }
        tx.enqueue_message(&self.code_message(&project, &name, &code, &link, sending.paused, now))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Exchanges a code and its CODE_TOKEN for a session. Every try spends one attempt
    /// first; the code is judged after, so the budget holds under concurrent guesses.
    pub async fn confirm(&self, code: &str, code_token: &str) -> Result<IssuedSession> {
        let token_hash = code_token_hash(code_token)?;
        let code = LoginCode::parse(code)
            .ok_or_else(|| Error::invalid("code", "must be 4 to 8 digits"))?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let Some(known) = tx.login_request(token_hash.as_bytes()).await? else {
            return Err(dead_request(None, now));
        };
        self.check_code_budget(&mut tx, &known.name, now).await?;
        let Some(request) = tx.spend_login_attempt(token_hash.as_bytes(), now).await? else {
            let request = tx.login_request(token_hash.as_bytes()).await?;
            return Err(dead_request(request.as_ref(), now));
        };
        if !self
            .inner
            .code_key
            .matches(&token_hash, &code, &request.code_hmac)
        {
            // The spent attempt and the failure must stick even though the call fails.
            self.record_code_failure(&mut tx, &request.name, now)
                .await?;
            tx.commit().await?;
            crate::metrics::count("portcullis_code_logins_failed_total");
            crate::security_event!(
                "login_failed",
                method = "code",
                project_id = %request.project_id,
                user_id = request.user_id,
                attempts_left = request.attempts_left
            );
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
        let session = self.finish_login(&mut tx, &request, now).await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Has the magic link of this login request been followed? `Ok(None)`: not yet.
    /// Once it has, the session is handed out exactly once.
    pub async fn poll(&self, code_token: &str) -> Result<Option<IssuedSession>> {
        let token_hash = code_token_hash(code_token)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let collected = tx
            .collect_confirmed_login(token_hash.as_bytes(), now, now - POLL_COLLECT_SECONDS)
            .await?;
        let Some(request) = collected else {
            let request = tx.login_request(token_hash.as_bytes()).await?;
            return match request {
                Some(r)
                    if r.confirmed_at.is_none()
                        && r.consumed_at.is_none()
                        && r.expires_at > now =>
                {
                    Ok(None)
                }
                other => Err(dead_request(other.as_ref(), now)),
            };
        };
        let session = self.finish_login(&mut tx, &request, now).await?;
        tx.commit().await?;
        Ok(Some(session))
    }

    /// The name of the project a live magic link logs into; the link page shows it. Reads
    /// only: opening a link must not confirm anything.
    pub async fn login_link_project(&self, link_token: &str) -> Result<String> {
        let hash = link_token_hash(link_token)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let request = tx.login_request_by_link(hash.as_bytes()).await?;
        drop(tx);
        match request {
            Some(r)
                if r.confirmed_at.is_none() && r.consumed_at.is_none() && r.expires_at > now =>
            {
                Ok(self.project_by_id(&r.project_id).await?.name)
            }
            other => Err(dead_link(other.as_ref())),
        }
    }

    /// Marks the login request of a magic link confirmed; its session goes to whoever
    /// polls with the CODE_TOKEN (the app that started the login), not to the browser.
    pub async fn confirm_link(&self, link_token: &str) -> Result<()> {
        let hash = link_token_hash(link_token)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        if tx.confirm_login_link(hash.as_bytes(), now).await?.is_none() {
            let request = tx.login_request_by_link(hash.as_bytes()).await?;
            return Err(dead_link(request.as_ref()));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Completes a login whose request was just consumed: verifies the user, applies a
    /// pending name change, opens the session.
    async fn finish_login(
        &self,
        tx: &mut Tx,
        request: &LoginRequestRecord,
        now: i64,
    ) -> Result<IssuedSession> {
        let mut user = tx.user_by_id(request.user_id).await?.ok_or_else(|| {
            Error::NotFound("the user of this login request no longer exists".into())
        })?;
        let project = self.project_by_id(&user.project_id).await?;
        if user.name.as_deref() != Some(request.name.as_str()) {
            if tx
                .user_by_name(&user.project_id, &request.name)
                .await?
                .is_some()
            {
                return Err(name_taken());
            }
            tx.rename_user(user.id, &request.name, now).await?;
            user.name = Some(request.name.clone());
        } else if tx.prove_mailbox(user.id, now).await? {
            self.mail_removed_password(tx, &project, &user, now).await?;
        }
        let session = self.open_session(tx, &project, &user, now).await?;
        crate::metrics::count("portcullis_code_logins_confirmed_total");
        Ok(session)
    }

    /// Creates the login request and queues the mail (or text) with its code and link.
    /// Everything a login code needs that no database is asked for: tokens, code, its
    /// HMAC, the mail sealed. Done before the transaction: on SQLite it holds the one
    /// writer, and every other write would wait for this work.
    fn prepare_login_code(
        &self,
        project: &ProjectRecord,
        name: &Name,
        now: i64,
    ) -> Result<PreparedCode> {
        let code_token = SecretToken::generate_time_led(TokenKind::Code);
        let link = SecretToken::generate_time_led(TokenKind::Link);
        let token_hash = code_token.hash();
        let code = LoginCode::generate(project.codes.length);
        let message = self.code_message(project, name, &code, &link, false, now);
        let sealed = self.store().seal_message(message)?;
        Ok(PreparedCode {
            request: NewLoginRequest {
                token_hash: token_hash.0,
                project_id: project.id.clone(),
                user_id: 0,
                name: name.as_str().to_owned(),
                code_hmac: self.inner.code_key.seal(&token_hash, &code),
                link_token_hash: link.hash().0,
                client_block: None,
                attempts_left: project.codes.attempts,
                expires_at: now + project.codes.lifetime_seconds,
                created_at: now,
            },
            sealed,
            code_token,
            code,
            link,
            name: name.clone(),
        })
    }

    /// Records a prepared login request for `user_id` and queues its message.
    async fn send_login_code(
        &self,
        tx: &mut Tx,
        project: &ProjectRecord,
        user_id: i64,
        prepared: PreparedCode,
        sending: CodeSending,
    ) -> Result<String> {
        let PreparedCode {
            mut request,
            mut sealed,
            code_token,
            code,
            link,
            name,
        } = prepared;
        request.user_id = user_id;
        request.client_block = sending.client_block;
        tx.insert_login_request(&request).await?;
        crate::metrics::count("portcullis_code_logins_started_total");
        if sending.paused {
            // Rare (wrong codes piled up for this name): the mail says so.
            let paused = self.code_message(project, &name, &code, &link, true, request.created_at);
            sealed = self.store().seal_message(paused)?;
        }
        tx.enqueue_sealed(sealed).await?;
        Ok(code_token.into_string())
    }

    /// The mail (or text) with a code and a link to `name`.
    fn code_message(
        &self,
        project: &ProjectRecord,
        name: &Name,
        code: &LoginCode,
        link: &SecretToken,
        paused: bool,
        now: i64,
    ) -> NewMessage {
        let base = project
            .delivery
            .link_base
            .as_deref()
            .unwrap_or(self.keys().issuer());
        let url = format!(
            "{}{LINK_PATH}?token={}",
            base.trim_end_matches('/'),
            link.expose()
        );
        super::messages::code_message(project, name, code, &url, paused, now)
    }
}

/// A login code made ready before its transaction (see [`Auth::prepare_login_code`]).
struct PreparedCode {
    /// Its user and client block are filled in within the transaction.
    request: NewLoginRequest,
    sealed: SealedMessage,
    code_token: SecretToken,
    code: LoginCode,
    link: SecretToken,
    /// To write the mail again, should it have to say more.
    name: Name,
}

async fn existing_user(tx: &mut Tx, project: &ProjectRecord, name: &Name) -> Result<UserRecord> {
    tx.user_by_name(&project.id, name.as_str())
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("user vanished during registration")))
}

fn name_taken() -> Error {
    Error::AlreadyExists("this name is already taken in this project".into())
}

/// Why a login request can no longer be used.
fn dead_request(request: Option<&LoginRequestRecord>, now: i64) -> Error {
    match request {
        None => Error::NotFound("unknown code token".into()),
        Some(r) if r.consumed_at.is_some() => {
            Error::failed_precondition("this code token was already used; start a new login")
        }
        Some(r) if r.confirmed_at.is_some() => {
            Error::failed_precondition("this login was confirmed too long ago; start a new login")
        }
        Some(r) if r.expires_at <= now => {
            Error::failed_precondition("the code has expired; start a new login")
        }
        Some(_) => Error::failed_precondition(
            "too many wrong codes: this code token no longer works; start a new login",
        ),
    }
}

/// Why a magic link no longer works.
fn dead_link(request: Option<&LoginRequestRecord>) -> Error {
    match request {
        Some(r) if r.confirmed_at.is_some() || r.consumed_at.is_some() => {
            Error::failed_precondition("this link was already used")
        }
        Some(_) => Error::failed_precondition("this link has expired; start a new login"),
        None => Error::NotFound("unknown link".into()),
    }
}

fn link_token_hash(link_token: &str) -> Result<TokenHash> {
    let token = link_token.trim();
    if token.len() > crate::domain::MAX_TOKEN_LEN || TokenKind::of(token) != Some(TokenKind::Link) {
        return Err(Error::NotFound("unknown link".into()));
    }
    Ok(TokenHash::of(token))
}

fn code_token_hash(code_token: &str) -> Result<TokenHash> {
    let token = parse_token(code_token, "code token")?;
    if TokenKind::of(token) != Some(TokenKind::Code) {
        return Err(Error::NotFound("unknown code token".into()));
    }
    Ok(TokenHash::of(token))
}

/// The app token that named `project` is still its own, checked in the transaction that
/// acts on it (see [`Tx::app_token_is_current`]): a rotated token stops at once.
async fn confirm_app_token(tx: &mut Tx, project: &ProjectRecord) -> Result<()> {
    if tx.app_token_is_current(project).await? {
        Ok(())
    } else {
        Err(Error::unauthenticated("unknown app token"))
    }
}
