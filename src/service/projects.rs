//! Projects (tenants): creation, and the default project of a first start.

use super::Auth;
use crate::domain::{Email, LoginCode, SecretToken, TokenKind};
use crate::error::{Error, Result};
use crate::jwt::ExternalKey;
use crate::store::{NewProject, NewUser, ProjectRecord, ProjectSummary, Tx};

/// A new project with its tokens. The admin token is shown here once and stored only as
/// a hash.
#[derive(Debug, serde::Serialize)]
pub struct CreatedProject {
    pub project_id: String,
    pub name: String,
    pub app_token: String,
    pub admin_token: String,
    pub owner: Option<String>,
}

impl Auth {
    /// Creates a project; with an owner, also its root user (verified: the operator vouches
    /// for the address).
    pub async fn create_project(
        &self,
        name: &str,
        owner: Option<&str>,
        anonymous_login: bool,
        recovery: bool,
    ) -> Result<CreatedProject> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Error::invalid("name", "must be 1 to 100 characters"));
        }
        let owner = owner
            .map(|o| Email::parse(o).map_err(|e| Error::invalid("owner", e.0)))
            .transpose()?;
        let mut tx = self.store().begin().await?;
        let created = self
            .insert_project(&mut tx, name, owner.as_ref(), anonymous_login, recovery)
            .await?;
        tx.commit().await?;
        crate::security_event!("project_created", project_id = %created.project_id);
        Ok(created)
    }

    async fn insert_project(
        &self,
        tx: &mut Tx,
        name: &str,
        owner: Option<&Email>,
        anonymous_login: bool,
        recovery: bool,
    ) -> Result<CreatedProject> {
        let now = self.now();
        let app_token = SecretToken::generate(TokenKind::App);
        let admin_token = SecretToken::generate(TokenKind::Admin);
        let project_id = crate::domain::random::uuid_v4().to_string();
        tx.insert_project(&NewProject {
            id: project_id.clone(),
            name: name.to_owned(),
            app_token: app_token.expose().to_owned(),
            admin_token_hash: admin_token.hash().0,
            anonymous_login,
            recovery,
            created_at: now,
        })
        .await?;
        if let Some(owner) = owner {
            tx.insert_user(&NewUser {
                root: true,
                ..NewUser::new(&project_id, Some(owner.as_str()), now, Some(now))
            })
            .await?;
        }
        Ok(CreatedProject {
            project_id,
            name: name.to_owned(),
            app_token: app_token.into_string(),
            admin_token: admin_token.into_string(),
            owner: owner.map(|o| o.as_str().to_owned()),
        })
    }

    /// On an empty database, creates the default project and returns it (once).
    pub async fn ensure_default_project(
        &self,
        owner: Option<&str>,
    ) -> Result<Option<CreatedProject>> {
        let owner = owner
            .map(|o| Email::parse(o).map_err(|e| Error::invalid("owner", e.0)))
            .transpose()?;
        // Replicas starting together on an empty database: the first-start lock makes
        // one of them create the project and the others see it.
        let mut tx = self.store().begin().await?;
        tx.lock_first_start().await?;
        if tx.project_count().await? > 0 {
            return Ok(None);
        }
        let created = self
            .insert_project(&mut tx, "Default project", owner.as_ref(), false, false)
            .await?;
        tx.commit().await?;
        Ok(Some(created))
    }
}

impl Auth {
    /// Every project, for the operator's command line.
    pub async fn list_projects(&self) -> Result<Vec<ProjectSummary>> {
        Ok(self.store().list_projects().await?)
    }

    /// A new app token for the project; the old one stops working at once.
    pub async fn rotate_app_token(&self, project_id: &str) -> Result<String> {
        let token = SecretToken::generate(TokenKind::App);
        self.replace_tokens(project_id, Some(&token), None).await?;
        Ok(token.into_string())
    }

    /// A new admin token for the project; the old one stops working at once. Only its
    /// hash is kept, so this is the one time it is shown.
    pub async fn rotate_admin_token(&self, project_id: &str) -> Result<String> {
        let token = SecretToken::generate(TokenKind::Admin);
        self.replace_tokens(project_id, None, Some(&token)).await?;
        Ok(token.into_string())
    }

    /// Replaces the project's app token, admin token, or both, in one transaction that
    /// touches nothing else of the project.
    pub(super) async fn replace_tokens(
        &self,
        project_id: &str,
        app: Option<&SecretToken>,
        admin: Option<&SecretToken>,
    ) -> Result<()> {
        let project_id = super::parse_project_id(project_id)?;
        let mut tx = self.store().begin().await?;
        if let Some(app) = app
            && !tx.set_app_token(project_id, app.expose()).await?
        {
            return Err(super::no_such_project());
        }
        if let Some(admin) = admin
            && !tx.set_admin_token_hash(project_id, &admin.hash().0).await?
        {
            return Err(super::no_such_project());
        }
        tx.commit().await?;
        crate::observe::note_project(project_id);
        if app.is_some() {
            crate::security_event!("app_token_rotated", project_id = %project_id);
        }
        if admin.is_some() {
            crate::security_event!("admin_token_rotated", project_id = %project_id);
        }
        Ok(())
    }
}

/// A project's settings as its admin sees them. Secrets (the SMS webhook secret, the
/// external token key) are never shown back, only whether they are set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectSettings {
    pub project_id: String,
    pub name: String,
    pub app_token: String,
    pub anonymous_login: bool,
    pub recovery: bool,
    pub code_length: u32,
    pub code_lifetime_seconds: i64,
    pub code_attempts: i64,
    pub mail_sender: Option<String>,
    pub link_base: Option<String>,
    pub sms_webhook_url: Option<String>,
    pub sms_webhook_secret_set: bool,
    pub external_token_issuer: Option<String>,
    pub external_token_audience: Option<String>,
    pub external_token_key_set: bool,
    /// Browser origins allowed to call the HTTP endpoints (CORS).
    pub allowed_origins: Vec<String>,
    pub password_reveal_existing: bool,
    pub password_reset_url: Option<String>,
    pub password_reset_lifetime_seconds: i64,
    pub password_require_verified_email: bool,
    pub hasura_jwt_claims: bool,
}

impl From<&ProjectRecord> for ProjectSettings {
    fn from(p: &ProjectRecord) -> ProjectSettings {
        ProjectSettings {
            project_id: p.id.clone(),
            name: p.name.clone(),
            app_token: p.app_token.clone(),
            anonymous_login: p.anonymous_login,
            recovery: p.recovery,
            code_length: p.codes.length,
            code_lifetime_seconds: p.codes.lifetime_seconds,
            code_attempts: p.codes.attempts,
            mail_sender: p.delivery.mail_sender.clone(),
            link_base: p.delivery.link_base.clone(),
            sms_webhook_url: p.delivery.sms_webhook_url.clone(),
            sms_webhook_secret_set: p.delivery.sms_webhook_secret.is_some(),
            external_token_issuer: p.external_token.issuer.clone(),
            external_token_audience: p.external_token.audience.clone(),
            external_token_key_set: p.external_token.key_pem.is_some(),
            allowed_origins: origins_of(p),
            password_reveal_existing: p.passwords.reveal_existing,
            password_reset_url: p.passwords.reset_url.clone(),
            password_reset_lifetime_seconds: p.passwords.reset_lifetime_seconds,
            password_require_verified_email: p.passwords.require_verified_email,
            hasura_jwt_claims: p.hasura_jwt_claims,
        }
    }
}

/// A change to a project's settings: `None` leaves a setting as it is; for the optional
/// text settings an empty string clears them. The doc comments are the CLI's help
/// (`portcullis project settings`); the gRPC request converts into this type.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SettingsChange {
    /// The project's display name (shown in mails and on hosted pages).
    #[arg(long)]
    pub name: Option<String>,
    /// Allow logins without a name (anonymous users).
    #[arg(long = "anonymous")]
    pub anonymous_login: Option<bool>,
    /// Allow users to fetch recovery tokens.
    #[arg(long)]
    pub recovery: Option<bool>,
    /// Digits per login code, 4 to 8.
    #[arg(long)]
    pub code_length: Option<u32>,
    /// Seconds a login code works, 60 to 3600.
    #[arg(long = "code-lifetime")]
    pub code_lifetime_seconds: Option<i64>,
    /// Wrong codes allowed per login request, 1 to 10.
    #[arg(long)]
    pub code_attempts: Option<i64>,
    /// Sender of this project's mails, e.g. "Acme <login@acme.test>" ("" to clear).
    #[arg(long)]
    pub mail_sender: Option<String>,
    /// Base URL of magic links ("" to clear: the service's public URL).
    #[arg(long)]
    pub link_base: Option<String>,
    /// This project's SMS webhook ("" to clear: the service-wide one).
    #[arg(long)]
    pub sms_webhook_url: Option<String>,
    /// Bearer secret sent to this project's SMS webhook ("" to clear).
    #[arg(long)]
    pub sms_webhook_secret: Option<String>,
    /// Issuer (iss) of external tokens.
    #[arg(long)]
    pub external_token_issuer: Option<String>,
    /// Audience (aud) of external tokens.
    #[arg(long)]
    pub external_token_audience: Option<String>,
    /// File with the PEM private key external tokens are signed with (an empty file
    /// clears it).
    #[arg(long = "external-token-key-file", value_name = "FILE", value_parser = read_text_file)]
    pub external_token_key_pem: Option<String>,
    /// Browser origins allowed to call the project's HTTP endpoints (CORS), e.g.
    /// "https://app.acme.test http://localhost:3000", or "*" ("" to clear).
    #[arg(long)]
    pub allowed_origins: Option<String>,
    /// Register answers ALREADY_EXISTS for a known email instead of mailing its owner.
    #[arg(long)]
    pub password_reveal_existing: Option<bool>,
    /// Page password reset links point to, `?token=` appended ("" for the hosted page).
    #[arg(long)]
    pub password_reset_url: Option<String>,
    /// Seconds a password reset link works, 300 to 86400.
    #[arg(long = "password-reset-lifetime")]
    pub password_reset_lifetime_seconds: Option<i64>,
    /// Password logins wait until the email is confirmed; Register mails a link.
    #[arg(long)]
    pub password_require_verified_email: Option<bool>,
    /// Session JWTs carry Hasura's claim (https://hasura.io/jwt/claims), for Hasura's
    /// JWT mode.
    #[arg(long)]
    pub hasura_jwt_claims: Option<bool>,
}

/// A file's text, for settings given as a file on the command line.
fn read_text_file(path: &str) -> std::result::Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

impl SettingsChange {
    /// Checks every field and applies the change to `project`; on error, `project` may be
    /// partly changed and must not be stored.
    pub fn apply(&self, project: &mut ProjectRecord) -> Result<()> {
        if let Some(name) = &self.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(Error::invalid("name", "must be 1 to 100 characters"));
            }
            project.name = name.to_owned();
        }
        if let Some(on) = self.anonymous_login {
            project.anonymous_login = on;
        }
        if let Some(on) = self.recovery {
            project.recovery = on;
        }
        if let Some(length) = self.code_length {
            if !(LoginCode::MIN_LENGTH..=LoginCode::MAX_LENGTH).contains(&length) {
                return Err(Error::invalid("code_length", "must be 4 to 8 digits"));
            }
            project.codes.length = length;
        }
        if let Some(seconds) = self.code_lifetime_seconds {
            if !(60..=3600).contains(&seconds) {
                return Err(Error::invalid(
                    "code_lifetime_seconds",
                    "must be 60 to 3600 seconds",
                ));
            }
            project.codes.lifetime_seconds = seconds;
        }
        if let Some(attempts) = self.code_attempts {
            if !(1..=10).contains(&attempts) {
                return Err(Error::invalid("code_attempts", "must be 1 to 10"));
            }
            project.codes.attempts = attempts;
        }
        if let Some(sender) = text_setting(&self.mail_sender, "mail_sender")? {
            project.delivery.mail_sender = sender
                .map(|s| crate::delivery::validate_sender(&s).map(|()| s))
                .transpose()
                .map_err(|e| Error::invalid("mail_sender", e))?;
        }
        if let Some(base) = text_setting(&self.link_base, "link_base")? {
            project.delivery.link_base = base.map(|b| http_url(b, "link_base")).transpose()?;
        }
        if let Some(url) = text_setting(&self.sms_webhook_url, "sms_webhook_url")? {
            project.delivery.sms_webhook_url =
                url.map(|u| http_url(u, "sms_webhook_url")).transpose()?;
        }
        if let Some(secret) = text_setting(&self.sms_webhook_secret, "sms_webhook_secret")? {
            project.delivery.sms_webhook_secret = secret;
        }
        if let Some(issuer) = text_setting(&self.external_token_issuer, "external_token_issuer")? {
            project.external_token.issuer = issuer;
        }
        if let Some(audience) =
            text_setting(&self.external_token_audience, "external_token_audience")?
        {
            project.external_token.audience = audience;
        }
        if let Some(origins) = text_setting(&self.allowed_origins, "allowed_origins")? {
            project.allowed_origins = origins.map(|o| parse_origins(&o)).transpose()?;
        }
        if let Some(reveal) = self.password_reveal_existing {
            project.passwords.reveal_existing = reveal;
        }
        if let Some(on) = self.hasura_jwt_claims {
            project.hasura_jwt_claims = on;
        }
        if let Some(require) = self.password_require_verified_email {
            project.passwords.require_verified_email = require;
        }
        if let Some(url) = text_setting(&self.password_reset_url, "password_reset_url")? {
            project.passwords.reset_url =
                url.map(|u| http_url(u, "password_reset_url")).transpose()?;
        }
        if let Some(seconds) = self.password_reset_lifetime_seconds {
            if !(300..=86_400).contains(&seconds) {
                return Err(Error::invalid(
                    "password_reset_lifetime_seconds",
                    "must be 300 to 86400 seconds",
                ));
            }
            project.passwords.reset_lifetime_seconds = seconds;
        }
        if let Some(pem) = &self.external_token_key_pem {
            if pem.len() > 16 * 1024 {
                return Err(Error::invalid(
                    "external_token_key_pem",
                    "is longer than 16 KiB",
                ));
            }
            project.external_token.key_pem = if pem.trim().is_empty() {
                None
            } else {
                ExternalKey::parse(pem).map_err(|e| Error::invalid("external_token_key_pem", e))?;
                Some(pem.trim().to_owned())
            };
        }
        Ok(())
    }
}

/// `None`: not part of the change; `Some(None)`: clear it; `Some(Some(v))`: set it.
fn text_setting(value: &Option<String>, field: &'static str) -> Result<Option<Option<String>>> {
    match value {
        None => Ok(None),
        Some(v) if v.len() > 1000 => Err(Error::invalid(field, "is longer than 1000 characters")),
        Some(v) if v.trim().is_empty() => Ok(Some(None)),
        Some(v) => Ok(Some(Some(v.trim().to_owned()))),
    }
}

/// The origins a project allows, one per entry.
pub fn origins_of(project: &ProjectRecord) -> Vec<String> {
    project
        .allowed_origins
        .as_deref()
        .map(|o| o.split(' ').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Checks a list of origins (`scheme://host[:port]`, no path) or `*`; returns them
/// normalized and space-separated.
fn parse_origins(list: &str) -> Result<String> {
    let origins: Vec<String> = list
        .split([' ', ','])
        .filter(|o| !o.is_empty())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    if origins.len() > 50 {
        return Err(Error::invalid(
            "allowed_origins",
            "lists more than 50 origins",
        ));
    }
    for origin in &origins {
        let valid = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains(['/', '?', '#', '@'])
            });
        if !valid {
            return Err(Error::invalid(
                "allowed_origins",
                format!(
                    "has {origin:?}, which is not an origin like https://app.example.com (no path) or *"
                ),
            ));
        }
    }
    Ok(origins.join(" "))
}

fn http_url(url: String, field: &'static str) -> Result<String> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(Error::invalid(field, "must be an http:// or https:// URL"))
    }
}

impl Auth {
    /// The settings of the admin token's project.
    pub async fn project_settings(&self, admin_token: &str) -> Result<ProjectSettings> {
        Ok(ProjectSettings::from(
            &self.project_for_admin_token(admin_token).await?,
        ))
    }

    /// Changes the settings of the admin token's project.
    pub async fn update_project_settings(
        &self,
        admin_token: &str,
        change: &SettingsChange,
    ) -> Result<ProjectSettings> {
        let project = self.project_for_admin_token(admin_token).await?;
        self.store_settings(project, change).await
    }

    /// Changes a project's settings by id: for the operator's command line, which has the
    /// database itself and so needs no token.
    pub async fn update_project_settings_by_id(
        &self,
        project_id: &str,
        change: &SettingsChange,
    ) -> Result<ProjectSettings> {
        let project = self.project_by_id(project_id).await?;
        self.store_settings(project, change).await
    }

    async fn store_settings(
        &self,
        mut project: ProjectRecord,
        change: &SettingsChange,
    ) -> Result<ProjectSettings> {
        change.apply(&mut project)?;
        // Refused early when the URL alone shows it; the sender checks again after DNS.
        if let Some(url) = &project.delivery.sms_webhook_url
            && change.sms_webhook_url.is_some()
        {
            crate::delivery::check_webhook_url(url, self.inner.policy.webhook_allow_private)
                .map_err(|e| Error::invalid("sms_webhook_url", e))?;
        }
        let mut tx = self.store().begin().await?;
        tx.update_project(&project).await?;
        tx.commit().await?;
        crate::security_event!("settings_changed", project_id = %project.id);
        Ok(ProjectSettings::from(&project))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{CodeSettings, DeliverySettings, ExternalTokenSettings, PasswordSettings};

    #[test]
    fn debug_output_leaves_a_projects_secrets_out() {
        let mut project = project();
        project.delivery.sms_webhook_secret = Some("webhook-bearer-secret".into());
        project.external_token.key_pem = Some("-----BEGIN PRIVATE KEY-----MC4".into());
        let shown = format!("{project:?}");
        assert!(
            !shown.contains("webhook-bearer-secret") && !shown.contains("MC4"),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"));
    }

    fn project() -> ProjectRecord {
        ProjectRecord {
            id: "p".into(),
            name: "P".into(),
            app_token: "app_x".into(),
            anonymous_login: false,
            recovery: false,
            allowed_origins: None,
            hasura_jwt_claims: false,
            codes: CodeSettings {
                length: 4,
                lifetime_seconds: 600,
                attempts: 3,
            },
            delivery: DeliverySettings {
                mail_sender: None,
                link_base: None,
                sms_webhook_url: None,
                sms_webhook_secret: None,
            },
            passwords: PasswordSettings {
                reveal_existing: false,
                reset_url: None,
                reset_lifetime_seconds: 3600,
                require_verified_email: false,
            },
            external_token: ExternalTokenSettings {
                issuer: None,
                audience: None,
                key_pem: None,
            },
        }
    }

    #[test]
    fn a_change_sets_what_it_names_and_leaves_the_rest() {
        let mut p = project();
        let change = SettingsChange {
            anonymous_login: Some(true),
            code_length: Some(6),
            link_base: Some("https://login.acme.test/".into()),
            ..Default::default()
        };
        change.apply(&mut p).unwrap();
        assert!(p.anonymous_login);
        assert_eq!(p.codes.length, 6);
        assert_eq!(
            p.delivery.link_base.as_deref(),
            Some("https://login.acme.test")
        );
        assert_eq!(p.codes.attempts, 3);
    }

    #[test]
    fn origins_are_normalized() {
        let mut p = project();
        let change = SettingsChange {
            allowed_origins: Some("https://App.test, http://localhost:3000/".into()),
            ..Default::default()
        };
        change.apply(&mut p).unwrap();
        assert_eq!(
            origins_of(&p),
            ["https://app.test", "http://localhost:3000"]
        );
    }

    #[test]
    fn empty_text_clears_and_bad_values_are_refused() {
        let mut p = project();
        p.delivery.sms_webhook_url = Some("https://sms.test".into());
        SettingsChange {
            sms_webhook_url: Some(String::new()),
            ..Default::default()
        }
        .apply(&mut p)
        .unwrap();
        assert_eq!(p.delivery.sms_webhook_url, None);
        for change in [
            SettingsChange {
                code_length: Some(3),
                ..Default::default()
            },
            SettingsChange {
                code_attempts: Some(0),
                ..Default::default()
            },
            SettingsChange {
                link_base: Some("ftp://x".into()),
                ..Default::default()
            },
            SettingsChange {
                mail_sender: Some("not a mailbox".into()),
                ..Default::default()
            },
            SettingsChange {
                external_token_key_pem: Some("-----BEGIN NOTHING-----".into()),
                ..Default::default()
            },
            SettingsChange {
                allowed_origins: Some("https://app.test/path".into()),
                ..Default::default()
            },
            SettingsChange {
                allowed_origins: Some("app.test".into()),
                ..Default::default()
            },
        ] {
            assert!(change.apply(&mut project()).is_err(), "{change:?}");
        }
    }
}
