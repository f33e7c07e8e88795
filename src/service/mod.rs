//! The operations both transports call. Every rule of authentication lives here or in
//! `domain`; gRPC and HTTP handlers only translate.

mod events;
mod external;
mod gate;
mod limits;
mod login;
mod messages;
mod operator;
mod origins;
mod password;
mod projects;
mod recovery;
mod sessions;
mod users;

use std::net::IpAddr;
use std::sync::Arc;

use crate::domain::UserTokenKey;
use crate::domain::{
    Clock, CodeKey, MAX_TOKEN_LEN, Name, PasswordHasher, TokenHash, TokenKind, TrustedProxies,
};
use crate::error::{Error, Result};
use crate::jwt::JwtKeys;
use crate::store::{ProjectRecord, Store};

pub use crate::store::ProjectSummary;
pub use events::{LogPage, MAX_LOG_DATA_LEN};
pub use gate::{GateCheck, GateDecision};
pub use login::{Authenticated, LINK_PATH};
pub use operator::RotatedTokens;
pub use password::{Me, ResetLink, ResetLinkState};
pub use projects::{CreatedProject, ProjectSettings, SettingsChange};
pub use recovery::{Recovered, RecoveryOutcome};
pub use sessions::{Authorization, IssuedSession, UserInfo};
pub use users::{ImportRow, ImportedRow, MAX_IMPORT_BATCH};

/// How loaded the process is.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// (messages not delivered yet, age in seconds of the oldest); `None`: unknown (the
    /// database did not answer).
    pub outbox: Option<(i64, i64)>,
    pub hashing_running: usize,
    pub hashing_waiting: usize,
    pub pool_size: u32,
    pub pool_idle: usize,
}

/// Tunables of the authentication rules, from the settings.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Lifetime of a session (the opaque USER_TOKEN).
    pub session_ttl_seconds: i64,
    /// Lifetime of a JWT issued beside a session (never beyond the session's).
    pub jwt_ttl_seconds: i64,
    /// At most this many mails or texts to one recipient per window...
    pub messages_per_recipient: i64,
    /// ...of this many seconds; and at most this many login requests (codes) from one
    /// client address block in the same window, over all names.
    pub message_window_seconds: i64,
    pub login_requests_per_address: i64,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// A password account is locked after this many failed checks...
    pub password_failures_per_account: i64,
    /// ...a client address after this many (over all accounts)...
    pub password_failures_per_address: i64,
    /// ...within this many seconds from the first failure, until the window ends.
    pub password_failure_window_seconds: i64,
    /// At most this many password hashes or checks run at once (on blocking threads).
    pub password_hashing_concurrency: usize,
    /// At most this many mails or texts to one recipient per day (beside the window above).
    pub messages_per_recipient_per_day: i64,
    /// Wrong codes a name may get over all its code tokens within the window below;
    /// past it codes are refused (the right one too) and mails carry only the link.
    pub code_failures_per_name: i64,
    pub code_failure_window_seconds: i64,
    /// Log lines one event accepts per minute.
    pub log_lines_per_event_per_minute: i64,
    /// Webhooks may target private and loopback addresses, over plain http too.
    pub webhook_allow_private: bool,
    /// The project ext_authz and forward auth bind to where the proxy names none.
    pub authz_project_id: Option<String>,
    /// The cookie they read a token from, after the Authorization header.
    pub authz_cookie: String,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            session_ttl_seconds: 30 * 24 * 3600,
            jwt_ttl_seconds: 3600,
            messages_per_recipient: 10,
            message_window_seconds: 15 * 60,
            login_requests_per_address: 60,
            trusted_proxies: TrustedProxies::default(),
            password_failures_per_account: 5,
            password_failures_per_address: 50,
            password_failure_window_seconds: 15 * 60,
            password_hashing_concurrency: PasswordHasher::default_concurrency(),
            messages_per_recipient_per_day: 30,
            code_failures_per_name: 10,
            code_failure_window_seconds: 24 * 3600,
            log_lines_per_event_per_minute: 120,
            webhook_allow_private: false,
            authz_project_id: None,
            authz_cookie: "portcullis_token".into(),
        }
    }
}

/// The authentication service's core: cheap to clone, shared by every handler.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Clock,
    keys: JwtKeys,
    code_key: CodeKey,
    /// Tags new USER_TOKENs and judges presented ones before any lookup.
    user_tokens: UserTokenKey,
    policy: Policy,
    hasher: PasswordHasher,
}

impl Auth {
    pub fn new(
        store: Store,
        clock: Clock,
        keys: JwtKeys,
        code_key: CodeKey,
        user_tokens: UserTokenKey,
        policy: Policy,
    ) -> Auth {
        let hasher = PasswordHasher::new(policy.password_hashing_concurrency);
        Auth {
            inner: Arc::new(Inner {
                store,
                clock,
                keys,
                code_key,
                user_tokens,
                policy,
                hasher,
            }),
        }
    }

    pub fn keys(&self) -> &JwtKeys {
        &self.inner.keys
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// How loaded this process is, for the metrics.
    pub async fn load(&self) -> Load {
        let now = self.now();
        let (hashing_running, hashing_waiting) = self.inner.hasher.load();
        let (pool_size, pool_idle) = self.store().pool_load();
        let outbox = match self.store().outbox_backlog().await {
            Ok((depth, oldest)) => {
                Some((depth, oldest.map_or(0, |created| (now - created).max(0))))
            }
            Err(error) => {
                tracing::debug!(%error, "outbox backlog unknown");
                None
            }
        };
        Load {
            outbox,
            hashing_running,
            hashing_waiting,
            pool_size,
            pool_idle,
        }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// The client behind a connection from `peer`, believing `X-Forwarded-For` only from
    /// the trusted proxies.
    pub fn client_address(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: Option<&str>,
    ) -> Option<IpAddr> {
        peer.map(|peer| {
            self.inner
                .policy
                .trusted_proxies
                .client(peer, forwarded_for)
        })
    }

    /// The project a caller names by id: the one lookup, with one set of words.
    async fn project_by_id(&self, project_id: &str) -> Result<ProjectRecord> {
        let project = self
            .store()
            .project_by_id(parse_project_id(project_id)?)
            .await?
            .ok_or_else(no_such_project)?;
        crate::observe::note_project(&project.id);
        Ok(project)
    }

    async fn project_for_admin_token(&self, admin_token: &str) -> Result<ProjectRecord> {
        let token = parse_token(admin_token, "admin token")?;
        if TokenKind::of(token) != Some(TokenKind::Admin) {
            return Err(Error::unauthenticated("unknown admin token"));
        }
        let project = self
            .store()
            .project_by_admin_token_hash(TokenHash::of(token).as_bytes())
            .await?
            .ok_or_else(|| Error::unauthenticated("unknown admin token"))?;
        crate::observe::note_project(&project.id);
        Ok(project)
    }

    async fn project_for_app_token(&self, app_token: &str) -> Result<ProjectRecord> {
        let token = parse_token(app_token, "app token")?;
        if TokenKind::of(token) != Some(TokenKind::App) {
            return Err(Error::unauthenticated("unknown app token"));
        }
        let project = self
            .store()
            .project_by_app_token(token)
            .await?
            .ok_or_else(|| Error::unauthenticated("unknown app token"))?;
        crate::observe::note_project(&project.id);
        Ok(project)
    }
}

/// A project id as a caller gave it: present and of sane size.
fn parse_project_id(project_id: &str) -> Result<&str> {
    let id = project_id.trim();
    if id.is_empty() {
        return Err(Error::invalid("project_id", "is required"));
    }
    if id.len() > 64 {
        return Err(Error::invalid("project_id", "is longer than 64 characters"));
    }
    Ok(id)
}

fn no_such_project() -> Error {
    Error::NotFound("no project has this project_id".into())
}

/// A token as presented: present and of sane size. Its kind and validity are judged later.
fn parse_token<'a>(token: &'a str, what: &'static str) -> Result<&'a str> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::unauthenticated(format!("missing {what}")));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::invalid(
            "token",
            format!("is longer than {MAX_TOKEN_LEN} characters"),
        ));
    }
    Ok(token)
}

fn parse_name(input: &str) -> Result<Name> {
    Name::parse(input).map_err(|e| Error::invalid("name", e.0))
}
