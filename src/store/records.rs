//! Rows as plain structs, and the column lists their queries select.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StoreResult, flag};

pub(super) const PROJECT_COLUMNS: &str = "id, name, app_token, anonymous_login, recovery, code_length, \
     code_lifetime_seconds, code_attempts, mail_sender, link_base, sms_webhook_url, sms_webhook_secret, \
     external_issuer, external_audience, external_key_pem, allowed_origins, \
     password_reveal_existing, password_reset_url, password_reset_lifetime_seconds, \
     password_require_verified_email";

/// `Debug` leaves out the secrets (webhook secret, external-token key).
#[derive(Clone)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
    pub app_token: String,
    pub anonymous_login: bool,
    pub recovery: bool,
    pub code_length: u32,
    pub code_lifetime_seconds: i64,
    pub code_attempts: i64,
    pub mail_sender: Option<String>,
    /// Base URL of magic links; `None`: the service's public URL.
    pub link_base: Option<String>,
    /// Where texts are posted; `None`: the service-wide webhook.
    pub sms_webhook_url: Option<String>,
    pub sms_webhook_secret: Option<String>,
    pub external_issuer: Option<String>,
    pub external_audience: Option<String>,
    /// PEM private key external tokens are signed with.
    pub external_key_pem: Option<String>,
    /// Browser origins allowed to call this project's HTTP endpoints, space-separated;
    /// `*` allows any.
    pub allowed_origins: Option<String>,
    /// Register answers ALREADY_EXISTS for a known email instead of mailing its owner.
    pub password_reveal_existing: bool,
    /// Page the password reset link points to; `None`: the page this service hosts.
    pub password_reset_url: Option<String>,
    pub password_reset_lifetime_seconds: i64,
    /// Password logins wait until the email is confirmed (Register mails a link).
    pub password_require_verified_email: bool,
}

impl std::fmt::Debug for ProjectRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |secret: &Option<String>| secret.as_ref().map(|_| "[redacted]");
        f.debug_struct("ProjectRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("anonymous_login", &self.anonymous_login)
            .field("recovery", &self.recovery)
            .field("sms_webhook_url", &self.sms_webhook_url)
            .field("sms_webhook_secret", &set(&self.sms_webhook_secret))
            .field("external_key_pem", &set(&self.external_key_pem))
            .finish_non_exhaustive()
    }
}

impl ProjectRecord {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(ProjectRecord {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            app_token: row.try_get("app_token")?,
            anonymous_login: flag(row, "anonymous_login")?,
            recovery: flag(row, "recovery")?,
            code_length: row.try_get::<i64, _>("code_length")? as u32,
            code_lifetime_seconds: row.try_get("code_lifetime_seconds")?,
            code_attempts: row.try_get("code_attempts")?,
            mail_sender: row.try_get("mail_sender")?,
            link_base: row.try_get("link_base")?,
            sms_webhook_url: row.try_get("sms_webhook_url")?,
            sms_webhook_secret: row.try_get("sms_webhook_secret")?,
            external_issuer: row.try_get("external_issuer")?,
            external_audience: row.try_get("external_audience")?,
            external_key_pem: row.try_get("external_key_pem")?,
            allowed_origins: row.try_get("allowed_origins")?,
            password_reveal_existing: flag(row, "password_reveal_existing")?,
            password_reset_url: row.try_get("password_reset_url")?,
            password_reset_lifetime_seconds: row.try_get("password_reset_lifetime_seconds")?,
            password_require_verified_email: flag(row, "password_require_verified_email")?,
        })
    }
}

pub struct NewProject {
    pub id: String,
    pub name: String,
    pub app_token: String,
    pub admin_token_hash: [u8; 32],
    pub anonymous_login: bool,
    pub recovery: bool,
    pub created_at: i64,
}

pub(super) const USER_COLUMNS: &str =
    "id, uid, project_id, name, root, encrypted, encryption_text, created_at, verified_at";

#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: i64,
    pub uid: String,
    pub project_id: String,
    pub name: Option<String>,
    pub root: bool,
    pub encrypted: bool,
    pub encryption_text: Option<String>,
    pub created_at: i64,
    pub verified_at: Option<i64>,
}

impl UserRecord {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(UserRecord {
            id: row.try_get("id")?,
            uid: row.try_get("uid")?,
            project_id: row.try_get("project_id")?,
            name: row.try_get("name")?,
            root: flag(row, "root")?,
            encrypted: flag(row, "encrypted")?,
            encryption_text: row.try_get("encryption_text")?,
            created_at: row.try_get("created_at")?,
            verified_at: row.try_get("verified_at")?,
        })
    }
}

pub struct NewUser {
    pub uid: String,
    pub project_id: String,
    pub name: Option<String>,
    pub root: bool,
    /// PHC-form hash (argon2id, or an imported bcrypt/argon2 one); `None` for code users.
    pub password_hash: Option<String>,
    pub created_at: i64,
    pub verified_at: Option<i64>,
}

impl NewUser {
    /// A plain (not root) user with a fresh uid; `verified_at` when the name is vouched for.
    pub fn new(
        project_id: &str,
        name: Option<&str>,
        created_at: i64,
        verified_at: Option<i64>,
    ) -> NewUser {
        NewUser {
            uid: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.to_owned(),
            name: name.map(str::to_owned),
            root: false,
            password_hash: None,
            created_at,
            verified_at,
        }
    }
}

pub(super) const LOGIN_REQUEST_COLUMNS: &str = "id, project_id, user_id, name, code_hmac, \
     attempts_left, attempted, expires_at, confirmed_at, consumed_at";

#[derive(Clone, Debug)]
pub struct LoginRequestRecord {
    pub id: i64,
    pub project_id: String,
    pub user_id: i64,
    pub name: String,
    pub code_hmac: Vec<u8>,
    pub attempts_left: i64,
    pub attempted: bool,
    pub expires_at: i64,
    /// Set when the magic link was followed.
    pub confirmed_at: Option<i64>,
    pub consumed_at: Option<i64>,
}

impl LoginRequestRecord {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(LoginRequestRecord {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            code_hmac: row.try_get("code_hmac")?,
            attempts_left: row.try_get("attempts_left")?,
            attempted: flag(row, "attempted")?,
            expires_at: row.try_get("expires_at")?,
            confirmed_at: row.try_get("confirmed_at")?,
            consumed_at: row.try_get("consumed_at")?,
        })
    }
}

pub struct NewLoginRequest {
    pub token_hash: [u8; 32],
    pub project_id: String,
    pub user_id: i64,
    pub name: String,
    pub code_hmac: Vec<u8>,
    pub link_token_hash: [u8; 32],
    /// The client's address block (see `domain::address_block`), when known.
    pub client_block: Option<String>,
    pub attempts_left: i64,
    pub expires_at: i64,
    pub created_at: i64,
}

pub struct NewSession {
    pub id: String,
    pub token_hash: [u8; 32],
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

pub(super) const SESSION_USER_COLUMNS: &str = "s.id AS session_id, s.expires_at AS session_expires_at, \
     u.id, u.uid, u.project_id, u.name, u.root, u.encrypted, u.encryption_text, u.created_at, u.verified_at";

/// A live session and the user it belongs to.
#[derive(Clone, Debug)]
pub struct SessionUser {
    pub session_id: String,
    pub expires_at: i64,
    pub user: UserRecord,
}

impl SessionUser {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(SessionUser {
            session_id: row.try_get("session_id")?,
            expires_at: row.try_get("session_expires_at")?,
            user: UserRecord::from_row(row)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// The Ed25519 seed. Stored as is: whoever can read this table can also rewrite users.
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: i64,
}

impl SigningKeyRecord {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(SigningKeyRecord {
            kid: row.try_get("kid")?,
            private_key: row.try_get("private_key")?,
            public_key: row.try_get("public_key")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

pub struct NewMessage {
    pub project_id: Option<String>,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub sender: Option<String>,
    pub created_at: i64,
}

pub(super) const OUTBOX_COLUMNS: &str = "id, project_id, channel, recipient, subject, body, sender, attempts, next_attempt_at, created_at";

#[derive(Clone, Debug)]
pub struct OutboxMessage {
    pub id: i64,
    pub project_id: Option<String>,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub sender: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub created_at: i64,
}

impl OutboxMessage {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        let channel: String = row.try_get("channel")?;
        Ok(OutboxMessage {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            channel: if channel == "sms" {
                Channel::Sms
            } else {
                Channel::Email
            },
            recipient: row.try_get("recipient")?,
            subject: row.try_get("subject")?,
            body: row.try_get("body")?,
            sender: row.try_get("sender")?,
            attempts: row.try_get("attempts")?,
            created_at: row.try_get("created_at")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
        })
    }
}

pub(super) const EVENT_COLUMNS: &str = "id, project_id, owner_id, name, created_at";

#[derive(Clone, Debug)]
pub struct EventRecord {
    pub id: String,
    pub project_id: String,
    pub owner_id: i64,
    pub name: String,
    pub created_at: i64,
}

impl EventRecord {
    pub(super) fn from_row(row: &AnyRow) -> StoreResult<Self> {
        Ok(EventRecord {
            id: row.try_get("id")?,
            project_id: row.try_get("project_id")?,
            owner_id: row.try_get("owner_id")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub id: i64,
    pub data: Option<String>,
    pub created_at: i64,
}
