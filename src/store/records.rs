//! Rows as plain structs. Each `record!` reads itself from a row and lists its columns
//! (see `rows.rs`); a project's settings are grouped by concern.

use super::rows::{Column, Query, decode_error, record};

record! {
    /// A project (tenant) and its settings. `Debug` leaves out the secrets (webhook
    /// secret, external-token key).
    #[derive(Clone, Debug)]
    pub struct ProjectRecord {
        pub id: String,
        pub name: String,
        pub app_token: String,
        pub anonymous_login: bool,
        pub recovery: bool,
        /// Browser origins allowed to call this project's HTTP endpoints, space-separated;
        /// `*` allows any.
        pub allowed_origins: Option<String>,
        /// Session JWTs carry Hasura's claim (`https://hasura.io/jwt/claims`).
        pub hasura_jwt_claims: bool,
        pub codes: CodeSettings,
        pub delivery: DeliverySettings,
        pub passwords: PasswordSettings,
        pub external_token: ExternalTokenSettings,
    }
}

record! {
    /// How login codes look and how long they work.
    #[derive(Clone, Debug)]
    pub struct CodeSettings {
        /// Digits per code.
        pub length: u32 => "code_length",
        pub lifetime_seconds: i64 => "code_lifetime_seconds",
        /// Wrong codes allowed per login request.
        pub attempts: i64 => "code_attempts",
    }
}

record! {
    /// Where and how a project's mails and texts go.
    #[derive(Clone)]
    pub struct DeliverySettings {
        /// `None`: the service's sender.
        pub mail_sender: Option<String>,
        /// Base URL of magic links; `None`: the service's public URL.
        pub link_base: Option<String>,
        /// Where texts are posted; `None`: the service-wide webhook.
        pub sms_webhook_url: Option<String>,
        pub sms_webhook_secret: Option<String>,
    }
}

impl std::fmt::Debug for DeliverySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySettings")
            .field("mail_sender", &self.mail_sender)
            .field("link_base", &self.link_base)
            .field("sms_webhook_url", &self.sms_webhook_url)
            .field("sms_webhook_secret", &redacted(&self.sms_webhook_secret))
            .finish()
    }
}

record! {
    /// Email + password logins.
    #[derive(Clone, Debug)]
    pub struct PasswordSettings {
        /// Register answers ALREADY_EXISTS for a known email instead of mailing its owner.
        pub reveal_existing: bool => "password_reveal_existing",
        /// Page the password reset link points to; `None`: the page this service hosts.
        pub reset_url: Option<String> => "password_reset_url",
        pub reset_lifetime_seconds: i64 => "password_reset_lifetime_seconds",
        /// Password logins wait until the email is confirmed (Register mails a link).
        pub require_verified_email: bool => "password_require_verified_email",
    }
}

record! {
    /// Short-lived tokens this project signs for other systems.
    #[derive(Clone)]
    pub struct ExternalTokenSettings {
        pub issuer: Option<String> => "external_issuer",
        pub audience: Option<String> => "external_audience",
        /// PEM private key external tokens are signed with.
        pub key_pem: Option<String> => "external_key_pem",
    }
}

impl std::fmt::Debug for ExternalTokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalTokenSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_pem", &redacted(&self.key_pem))
            .finish()
    }
}

fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "[redacted]")
}

record! {
    /// A project as an operator lists it.
    #[derive(Clone, Debug, serde::Serialize)]
    pub struct ProjectSummary {
        pub project_id: String,
        pub name: String,
        pub created_at: i64,
        pub users: i64,
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

record! {
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
}

impl UserRecord {
    /// The record of `user` as inserted with row id `id`: the columns it leaves to their
    /// defaults (no encryption) included. A test reads the row back to keep this honest.
    pub(super) fn inserted(id: i64, user: &NewUser) -> UserRecord {
        UserRecord {
            id,
            uid: user.uid.clone(),
            project_id: user.project_id.clone(),
            name: user.name.clone(),
            root: user.root,
            encrypted: false,
            encryption_text: None,
            created_at: user.created_at,
            verified_at: user.verified_at,
        }
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
    /// uids are UUIDv7 (the millisecond of registration, a counter, 62 random bits), so a
    /// new user's entry goes to the end of the uid index instead of a random page of it.
    pub fn new(
        project_id: &str,
        name: Option<&str>,
        created_at: i64,
        verified_at: Option<i64>,
    ) -> NewUser {
        NewUser {
            uid: crate::domain::random::uuid_v7().to_string(),
            project_id: project_id.to_owned(),
            name: name.map(str::to_owned),
            root: false,
            password_hash: None,
            created_at,
            verified_at,
        }
    }
}

record! {
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

record! {
    /// A live session and the user it belongs to.
    #[derive(Clone, Debug)]
    pub struct SessionUser {
        pub session_id: String,
        pub expires_at: i64 => "session_expires_at",
        pub created_at: i64 => "session_created_at",
        pub user: UserRecord,
    }
}

record! {
    #[derive(Clone, Debug)]
    pub struct SigningKeyRecord {
        pub kid: String,
        /// The Ed25519 seed. Stored as is: whoever can read this table can also rewrite users.
        pub private_key: Vec<u8>,
        pub public_key: Vec<u8>,
        pub created_at: i64,
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

/// An unknown stored channel is an error: a message must not go out by the wrong way.
impl Column for Channel {
    fn read(row: &sqlx::any::AnyRow, column: &'static str) -> sqlx::Result<Self> {
        match String::read(row, column)?.as_str() {
            "email" => Ok(Channel::Email),
            "sms" => Ok(Channel::Sms),
            other => Err(decode_error(
                column,
                format!("{other:?} is not a channel (email, sms)"),
            )),
        }
    }
    fn bind<'q>(&self, query: Query<'q>) -> Query<'q> {
        query.bind(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct NewMessage {
    pub project_id: Option<String>,
    pub channel: Channel,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub sender: Option<String>,
    pub created_at: i64,
}

record! {
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
        /// What the subject and body are sealed to; `None` on rows older than seal keys.
        pub seal_key: Option<String>,
    }
}

record! {
    #[derive(Clone, Debug)]
    pub struct EventRecord {
        pub id: String,
        pub project_id: String,
        pub owner_id: i64,
        pub name: String,
        pub created_at: i64,
    }
}

record! {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct LogRecord {
        pub id: i64,
        pub data: Option<String>,
        pub created_at: i64,
    }
}

/// What [`Tx::sending_counts`](super::Tx::sending_counts) counts, and since when.
#[derive(Clone, Copy, Debug)]
pub struct SendingQuery<'a> {
    pub recipient: &'a str,
    pub window_since: i64,
    pub day_since: i64,
    /// `None`: no client address known, nothing counted for it. Its requests are counted
    /// over the same window as the recipient's messages.
    pub client_block: Option<&'a str>,
    pub failures_since: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendingCounts {
    pub messages_in_window: i64,
    pub messages_in_day: i64,
    pub requests_from_block: i64,
    pub code_failures: i64,
}

/// What one lease got: messages ready to send, and those whose sealed subject or body
/// did not open (altered, or sealed with another master key), to be recorded as failed.
#[derive(Debug, Default)]
pub struct LeasedMessages {
    pub ready: Vec<OutboxMessage>,
    pub unreadable: Vec<UnreadableMessage>,
}

#[derive(Debug)]
pub struct UnreadableMessage {
    pub id: i64,
    pub attempts: i64,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::NewUser;

    /// uids sort as their users registered (UUIDv7), so the uid index grows at its end;
    /// still the 36 characters the published API promises.
    #[test]
    fn new_uids_sort_in_registration_order() {
        let uids: Vec<String> = (0..100)
            .map(|_| NewUser::new("project", None, 0, None).uid)
            .collect();
        assert!(uids.windows(2).all(|pair| pair[0] < pair[1]), "{uids:?}");
        assert!(uids.iter().all(|uid| uid.len() == 36));
    }
}
