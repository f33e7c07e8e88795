//! The operations both transports call. Every rule of authentication lives here or in
//! `domain`; gRPC and HTTP handlers only translate.

mod login;
mod password;
mod projects;
mod sessions;

use std::sync::Arc;

use crate::delivery::OutboxSignal;
use crate::domain::{Clock, CodeKey, MAX_TOKEN_LEN, Name, PasswordHasher, TokenKind};
use crate::error::{Error, Result};
use crate::jwt::JwtKeys;
use crate::store::{ProjectRecord, Store};

pub use login::LoginStarted;
pub use password::{Me, ResetLink, ResetLinkState};
pub use projects::CreatedProject;
pub use sessions::{Authorization, IssuedSession, UserInfo};

/// Tunables of the authentication rules, from the settings.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Lifetime of a session (the opaque USER_TOKEN).
    pub session_ttl_seconds: i64,
    /// Lifetime of a JWT issued beside a session (never beyond the session's).
    pub jwt_ttl_seconds: i64,
    /// At most this many mails or texts to one recipient per window...
    pub messages_per_recipient: i64,
    /// ...of this many seconds.
    pub message_window_seconds: i64,
    /// A password account is locked after this many failed checks...
    pub password_failures_per_account: i64,
    /// ...a client address after this many (over all accounts)...
    pub password_failures_per_address: i64,
    /// ...within this many seconds from the first failure, until the window ends.
    pub password_failure_window_seconds: i64,
    /// At most this many password hashes or checks run at once (on blocking threads).
    pub password_hashing_concurrency: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            session_ttl_seconds: 30 * 24 * 3600,
            jwt_ttl_seconds: 3600,
            messages_per_recipient: 10,
            message_window_seconds: 15 * 60,
            password_failures_per_account: 5,
            password_failures_per_address: 50,
            password_failure_window_seconds: 15 * 60,
            password_hashing_concurrency: PasswordHasher::default_concurrency(),
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
    outbox: OutboxSignal,
    policy: Policy,
    hasher: PasswordHasher,
}

impl Auth {
    pub fn new(
        store: Store,
        clock: Clock,
        keys: JwtKeys,
        code_key: CodeKey,
        outbox: OutboxSignal,
        policy: Policy,
    ) -> Auth {
        let hasher = PasswordHasher::new(policy.password_hashing_concurrency);
        Auth {
            inner: Arc::new(Inner {
                store,
                clock,
                keys,
                code_key,
                outbox,
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

    fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    async fn project_for_app_token(&self, app_token: &str) -> Result<ProjectRecord> {
        let token = parse_token(app_token, "app token")?;
        if TokenKind::of(token) != Some(TokenKind::App) {
            return Err(Error::unauthenticated("unknown app token"));
        }
        self.store()
            .project_by_app_token(token)
            .await?
            .ok_or_else(|| Error::unauthenticated("unknown app token"))
    }
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
