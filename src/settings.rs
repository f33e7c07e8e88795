//! Command line and settings. Each setting comes from a flag, else a `PORTCULLIS_*`
//! environment variable, else the TOML file given by `--config`, else its default.

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use crate::delivery::{SmsWebhook, WorkerConfig, check_webhook_url};
use crate::domain::TrustedProxies;
use crate::service::Policy;
pub use crate::store::DatabaseOptions;

/// No `Debug`, here and on the argument types below: they hold secrets as given (SMTP
/// password, webhook secret, master key); [`Settings`] keeps them redacted.
#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Self-hosted authentication service: gRPC first, with a JSON/HTTP shim"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses the command line. Every setting is accepted anywhere (`portcullis keys list
    /// --database-url ...`), but a command's `--help` shows only the settings it uses:
    /// the server's own (listen address, SMTP, limits, timeouts) only under `serve`.
    pub fn parse_args() -> Cli {
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        for path in [
            &["migrate"][..],
            &["project", "create"],
            &["project", "settings"],
            &["project", "list"],
            &["project", "rotate-app-token"],
            &["project", "rotate-admin-token"],
            &["backup"],
            &["operator-token", "create"],
            &["keys", "list"],
            &["keys", "rotate"],
            &["keys", "rotate-master"],
            &["keys", "retire"],
            &["healthcheck"],
        ] {
            let used: &[&str] = match path[0] {
                "migrate" | "backup" => &["config", "database_url", "log_format", "help"],
                "healthcheck" => &["config", "listen", "help"],
                _ => OFFLINE_SETTINGS,
            };
            hide_unused_settings(&mut command, path, used);
        }
        let matches = command.get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The settings a command that works on the database beside the server reads.
const OFFLINE_SETTINGS: &[&str] = &[
    "config",
    "database_url",
    "master_key_file",
    "master_key",
    "public_url",
    "webhook_allow_private",
    "log_format",
    "help",
];

fn hide_unused_settings(command: &mut clap::Command, path: &[&str], used: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        *command = std::mem::take(command).mut_args(|arg| {
            let unused = arg.is_global_set() && !used.contains(&arg.get_id().as_str());
            arg.hide(unused)
        });
        return;
    };
    if let Some(sub) = command.find_subcommand_mut(first) {
        hide_unused_settings(sub, rest, used);
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the service (the default when no command is given).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage the keys JWTs are signed with.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Operator tokens for the OperatorService.
    #[command(subcommand)]
    OperatorToken(OperatorTokenCommand),
    /// Copy the SQLite database, consistently, while the service runs (VACUUM INTO); for
    /// PostgreSQL use pg_dump.
    Backup {
        /// The file to write; it must not exist yet.
        #[arg(long)]
        to: PathBuf,
    },
    /// Ask a running server whether it serves (gRPC health); exit 0 if so, 1 if not. For
    /// a container's HEALTHCHECK.
    Healthcheck {
        /// The server to ask [default: the --listen address, 0.0.0.0 read as 127.0.0.1]
        #[arg(long)]
        address: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List the live signing keys as JSON: kid, created_at, and whether it signs now.
    List,
    /// Add a signing key. It is published at once and signs new tokens ten minutes later
    /// (once verifiers' cached JWKS know it); the old keys keep verifying.
    Rotate,
    /// Re-seal every secret at rest under a new master key (32 bytes, base64, in a file),
    /// in one transaction; then start every replica with the new key.
    RotateMaster {
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Stop a key from verifying; tokens it signed stop working. Retire a key once it has
    /// stopped signing for longer than the JWT lifetime.
    Retire {
        #[arg(long)]
        kid: String,
    },
}

#[derive(Subcommand)]
pub enum OperatorTokenCommand {
    /// Create an operator token (printed once; only its hash is kept). The first one
    /// turns the OperatorService on.
    Create,
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project and print its id and tokens as one JSON object.
    Create {
        /// The project's display name (shown in mails and on hosted pages).
        #[arg(long)]
        name: String,
        /// The owner's email: becomes the project's root user.
        #[arg(long)]
        owner: Option<String>,
        /// Allow logins without a name (anonymous users).
        #[arg(long)]
        anonymous: bool,
        /// Allow users to fetch recovery tokens.
        #[arg(long)]
        recovery: bool,
    },
    /// List every project as JSON lines: project_id, name, created_at, users.
    List,
    /// Give the project a new app token (printed once); the old one stops at once.
    RotateAppToken {
        #[arg(long)]
        project_id: String,
    },
    /// Give the project a new admin token (printed once: only its hash is kept); the old
    /// one stops at once.
    RotateAdminToken {
        #[arg(long)]
        project_id: String,
    },
    /// Change a project's settings (only those given) and print them as one JSON object.
    Settings {
        /// The project to change.
        #[arg(long)]
        project_id: String,
        #[command(flatten)]
        change: Box<crate::service::SettingsChange>,
    },
}

/// Settings as given on the command line or in the environment. `None` means "not given
/// here": the TOML file, then the default, decides.
#[derive(Args, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsArgs {
    /// TOML file with any of the settings below (keys as the long flags, with underscores).
    #[arg(long, env = "PORTCULLIS_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on, for gRPC and HTTP alike [default: 127.0.0.1:8080]
    #[arg(long, env = "PORTCULLIS_LISTEN", global = true)]
    pub listen: Option<String>,
    /// sqlite://FILE (created if missing) or postgres://USER@HOST/DB [default: sqlite://portcullis.db]
    #[arg(long, env = "PORTCULLIS_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// SMTP server, e.g. smtp://user:pass@host:587?tls=required (STARTTLS) or smtps://user:pass@host:465.
    /// Without it, mail is written to the outbox folder.
    #[arg(
        long,
        env = "PORTCULLIS_SMTP_URL",
        global = true,
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,
    /// Webhook that sends texts (codes for phone names): POST JSON {"recipient", "message"}.
    /// Without it, texts are written to the outbox folder.
    #[arg(long, env = "PORTCULLIS_SMS_WEBHOOK_URL", global = true)]
    pub sms_webhook_url: Option<String>,
    /// Bearer secret sent to the SMS webhook.
    #[arg(
        long,
        env = "PORTCULLIS_SMS_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub sms_webhook_secret: Option<String>,
    /// Sender of mails, e.g. "Acme <login@acme.test>" [default: Portcullis <no-reply@localhost>]
    #[arg(long, env = "PORTCULLIS_MAIL_FROM", global = true)]
    pub mail_from: Option<String>,
    /// Folder where mails (.eml) and texts are written while no SMTP server is configured [default: ./mail-outbox]
    #[arg(long, env = "PORTCULLIS_MAIL_OUTBOX", global = true)]
    pub mail_outbox: Option<PathBuf>,
    /// Public base URL of this service: base of links in mails, and the JWT issuer [default: http://LISTEN]
    #[arg(long, env = "PORTCULLIS_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Owner (root user) of the default project created on first start.
    #[arg(long, env = "PORTCULLIS_OWNER", global = true)]
    pub owner: Option<String>,
    /// Lifetime of a session (the USER_TOKEN), in seconds [default: 2592000, 30 days]
    #[arg(long, env = "PORTCULLIS_SESSION_TTL", global = true)]
    pub session_ttl: Option<i64>,
    /// Lifetime of a JWT issued beside a session, in seconds [default: 3600]
    #[arg(long, env = "PORTCULLIS_JWT_TTL", global = true)]
    pub jwt_ttl: Option<i64>,
    /// How long Authorize may answer from its in-process session cache, in milliseconds;
    /// 0 turns the cache off. Logout and deletes take effect at once in this process and,
    /// on PostgreSQL, in every replica (LISTEN/NOTIFY); this lifetime is the backstop
    /// [default: 5000]
    #[arg(long, env = "PORTCULLIS_SESSION_CACHE_MS", global = true)]
    pub session_cache_ms: Option<u64>,
    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For
    /// names the client, for per-client limits. Without it the peer address counts.
    #[arg(long, env = "PORTCULLIS_TRUSTED_PROXIES", global = true)]
    pub trusted_proxies: Option<String>,
    /// How often signing keys are re-read (to publish rotated keys and drop retired ones),
    /// in milliseconds [default: 60000]
    #[arg(long, env = "PORTCULLIS_KEY_REFRESH_MS", global = true)]
    pub key_refresh_ms: Option<u64>,
    /// Let webhooks reach loopback, private and link-local addresses, and use plain http
    /// (for a webhook on the local network; off, a project admin cannot make the service
    /// call into its own network) [default: false]
    #[arg(long, env = "PORTCULLIS_WEBHOOK_ALLOW_PRIVATE", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_allow_private: Option<bool>,
    /// The project whose tokens ext_authz and forward auth accept where the proxy names
    /// none (Envoy's context_extensions project_id, a `project_id` query parameter)
    /// [default: none: such checks are refused]
    #[arg(long, env = "PORTCULLIS_AUTHZ_PROJECT_ID", global = true)]
    pub authz_project_id: Option<String>,
    /// Cookie that ext_authz and forward auth read a token from, after the Authorization
    /// header [default: portcullis_token]
    #[arg(long, env = "PORTCULLIS_AUTHZ_COOKIE", global = true)]
    pub authz_cookie: Option<String>,
    /// Domains a project's mail_sender may send from, comma-separated; other senders keep
    /// their display name on the --mail-from address [default: none]
    #[arg(long, env = "PORTCULLIS_MAIL_SENDER_DOMAINS", global = true)]
    pub mail_sender_domains: Option<String>,
    /// File holding the master key (32 bytes, base64) that seals secrets at rest. Without
    /// it (or PORTCULLIS_MASTER_KEY), SQLite uses DATABASE.master-key, written on first
    /// start; PostgreSQL requires one
    #[arg(long, env = "PORTCULLIS_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, base64 (prefer the file: environments leak)
    #[arg(
        long,
        env = "PORTCULLIS_MASTER_KEY",
        global = true,
        hide_env_values = true
    )]
    pub master_key: Option<String>,
    /// Seconds a client has to send its request headers (and a new connection its first
    /// byte) before the connection is closed [default: 10]
    #[arg(long, env = "PORTCULLIS_HEADER_READ_TIMEOUT", global = true)]
    pub header_read_timeout: Option<i64>,
    /// At most this many open connections; further clients wait until one closes [default: 10000]
    #[arg(long, env = "PORTCULLIS_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<i64>,
    /// Seconds a request (HTTP or gRPC) may run before it is answered with a timeout [default: 30]
    #[arg(long, env = "PORTCULLIS_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Option<i64>,
    /// Seconds in-flight requests get after SIGTERM; then the process exits anyway [default: 30]
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_TIMEOUT", global = true)]
    pub shutdown_timeout: Option<i64>,
    /// PEM certificate chain for TLS on the listener (gRPC and HTTP alike); with --tls-key
    #[arg(long, env = "PORTCULLIS_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "PORTCULLIS_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate they signed (mTLS)
    #[arg(long, env = "PORTCULLIS_TLS_CLIENT_CA", global = true)]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve /metrics on this address (e.g. 0.0.0.0:9090) instead of the main listener
    #[arg(long, env = "PORTCULLIS_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<String>,
    /// Seconds the listener keeps serving after SIGTERM while /readyz answers 503 and gRPC
    /// health NOT_SERVING, so load balancers move away first [default: 5]
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE", global = true)]
    pub shutdown_grace: Option<i64>,
    /// PostgreSQL: milliseconds one statement may run before the server cancels it [default: 10000]
    #[arg(long, env = "PORTCULLIS_DATABASE_STATEMENT_TIMEOUT_MS", global = true)]
    pub database_statement_timeout_ms: Option<i64>,
    /// PostgreSQL: milliseconds a transaction may sit idle (its client gone quiet) before the
    /// server ends it and frees its locks [default: 15000]
    #[arg(
        long,
        env = "PORTCULLIS_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        global = true
    )]
    pub database_idle_in_transaction_timeout_ms: Option<i64>,
    /// Milliseconds to wait for a database connection (connecting included) [default: 3000]
    #[arg(long, env = "PORTCULLIS_DATABASE_ACQUIRE_TIMEOUT_MS", global = true)]
    pub database_acquire_timeout_ms: Option<i64>,
    /// Database connections per replica [default: 8 on SQLite, for reads, beside its one
    /// writer connection; 16 on PostgreSQL]
    #[arg(long, env = "PORTCULLIS_DATABASE_POOL_SIZE", global = true)]
    pub database_pool_size: Option<i64>,
    /// At most this many mails or texts to one recipient a day, beside 10 per 15 minutes [default: 30]
    #[arg(long, env = "PORTCULLIS_MESSAGES_PER_RECIPIENT_PER_DAY", global = true)]
    pub messages_per_recipient_per_day: Option<i64>,
    /// Wrong login codes a name may get in 24 hours over all its code tokens; past it codes
    /// are refused (magic links keep working) [default: 10]
    #[arg(long, env = "PORTCULLIS_CODE_FAILURES_PER_NAME", global = true)]
    pub code_failures_per_name: Option<i64>,
    /// How often the database is checked for the health service, in milliseconds [default: 2000]
    #[arg(long, env = "PORTCULLIS_HEALTH_INTERVAL_MS", global = true)]
    pub health_interval_ms: Option<u64>,
    /// Log format: "text" or "json" [default: text]
    #[arg(long, env = "PORTCULLIS_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// Settings with every default applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub database_url: String,
    pub smtp_url: Option<SecretString>,
    pub sms_webhook: Option<SmsWebhook>,
    pub mail_from: String,
    pub mail_outbox: PathBuf,
    /// Domains projects may send mail from; other senders keep only their display name.
    pub mail_sender_domains: Vec<String>,
    pub master_key_file: Option<PathBuf>,
    pub master_key: Option<SecretString>,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub shutdown_grace: Duration,
    pub metrics_listen: Option<String>,
    /// TLS on the listener; `None`: plain (h2c and HTTP/1.1).
    pub tls: Option<crate::tls::TlsFiles>,
    pub database: DatabaseOptions,
    /// Leases and concurrency of the outbox worker (defaults; tests shorten the lease).
    pub delivery: WorkerConfig,
    /// `None`: `http://` + the address actually bound (known only after binding).
    pub public_url: Option<String>,
    pub owner: Option<String>,
    pub health_interval: Duration,
    pub session_cache: Duration,
    pub key_refresh: Duration,
    pub log_json: bool,
    pub policy: Policy,
}

impl Settings {
    /// The port the service listens on unless told otherwise (and the deploy files use).
    pub const fn default_listen_port() -> u16 {
        8080
    }
}

impl SettingsArgs {
    /// Fills what flags and environment left open from the TOML file, then defaults.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str::<SettingsArgs>(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?
            }
            None => SettingsArgs::default(),
        };
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| format!("127.0.0.1:{}", Settings::default_listen_port()));
        let public_url = self
            .public_url
            .or(file.public_url)
            .map(|url| url.trim_end_matches('/').to_owned());
        let defaults = Policy::default();
        let log_format = self
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            anyhow::bail!("log format must be \"text\" or \"json\", not {log_format:?}");
        }
        let policy = Policy {
            session_ttl_seconds: positive("session TTL", self.session_ttl.or(file.session_ttl))?
                .unwrap_or(defaults.session_ttl_seconds),
            jwt_ttl_seconds: positive("JWT TTL", self.jwt_ttl.or(file.jwt_ttl))?
                .unwrap_or(defaults.jwt_ttl_seconds),
            trusted_proxies: TrustedProxies::parse(
                &self
                    .trusted_proxies
                    .or(file.trusted_proxies)
                    .unwrap_or_default(),
            )
            .map_err(|e| anyhow::anyhow!("trusted proxies: {e}"))?,
            messages_per_recipient_per_day: count(
                "messages per recipient per day",
                self.messages_per_recipient_per_day
                    .or(file.messages_per_recipient_per_day),
            )?
            .unwrap_or(defaults.messages_per_recipient_per_day),
            code_failures_per_name: count(
                "code failures per name",
                self.code_failures_per_name.or(file.code_failures_per_name),
            )?
            .unwrap_or(defaults.code_failures_per_name),
            webhook_allow_private: self
                .webhook_allow_private
                .or(file.webhook_allow_private)
                .unwrap_or(false),
            authz_project_id: self
                .authz_project_id
                .or(file.authz_project_id)
                .filter(|id| !id.trim().is_empty()),
            authz_cookie: match self.authz_cookie.or(file.authz_cookie) {
                Some(name) if crate::domain::is_cookie_name(&name) => name,
                Some(name) => anyhow::bail!("authz cookie {name:?} is not a cookie name"),
                None => defaults.authz_cookie,
            },
            ..defaults
        };
        let sms_webhook = self
            .sms_webhook_url
            .or(file.sms_webhook_url)
            .map(|url| SmsWebhook {
                url,
                secret: self
                    .sms_webhook_secret
                    .or(file.sms_webhook_secret)
                    .map(SecretString::from),
            });
        if let Some(webhook) = &sms_webhook {
            check_webhook_url(&webhook.url, policy.webhook_allow_private)
                .map_err(|e| anyhow::anyhow!("SMS webhook URL {:?} {e}", webhook.url))?;
        }
        let mail_sender_domains = self
            .mail_sender_domains
            .or(file.mail_sender_domains)
            .unwrap_or_default()
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        Ok(Settings {
            listen,
            database_url: self
                .database_url
                .or(file.database_url)
                .unwrap_or_else(|| "sqlite://portcullis.db".into()),
            smtp_url: self.smtp_url.or(file.smtp_url).map(SecretString::from),
            sms_webhook,
            mail_sender_domains,
            master_key_file: self.master_key_file.or(file.master_key_file),
            master_key: self.master_key.or(file.master_key).map(SecretString::from),
            header_read_timeout: seconds(
                "header read timeout",
                self.header_read_timeout.or(file.header_read_timeout),
                10,
            )?,
            max_connections: count(
                "max connections",
                self.max_connections.or(file.max_connections),
            )?
            .unwrap_or(10_000) as usize,
            request_timeout: seconds(
                "request timeout",
                self.request_timeout.or(file.request_timeout),
                30,
            )?,
            shutdown_timeout: seconds(
                "shutdown timeout",
                self.shutdown_timeout.or(file.shutdown_timeout),
                30,
            )?,
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            tls: match (
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
                self.tls_client_ca.or(file.tls_client_ca),
            ) {
                (Some(cert), Some(key), client_ca) => Some(crate::tls::TlsFiles {
                    cert,
                    key,
                    client_ca,
                }),
                (None, None, None) => None,
                (None, None, Some(_)) => {
                    anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key")
                }
                _ => anyhow::bail!("--tls-cert and --tls-key go together"),
            },
            shutdown_grace: match self.shutdown_grace.or(file.shutdown_grace) {
                Some(grace @ 0..=300) => Duration::from_secs(grace as u64),
                Some(other) => {
                    anyhow::bail!("shutdown grace must be 0 to 300 seconds, not {other}")
                }
                None => Duration::from_secs(5),
            },
            delivery: WorkerConfig::default(),
            database: DatabaseOptions {
                pool_size: match self.database_pool_size.or(file.database_pool_size) {
                    Some(size @ 1..=1000) => Some(size as u32),
                    Some(other) => {
                        anyhow::bail!("database pool size must be 1 to 1000, not {other}")
                    }
                    None => None,
                },
                statement: millis(
                    "database statement timeout",
                    self.database_statement_timeout_ms
                        .or(file.database_statement_timeout_ms),
                    10_000,
                )?,
                idle_in_transaction: millis(
                    "database idle-in-transaction timeout",
                    self.database_idle_in_transaction_timeout_ms
                        .or(file.database_idle_in_transaction_timeout_ms),
                    15_000,
                )?,
                acquire: millis(
                    "database acquire timeout",
                    self.database_acquire_timeout_ms
                        .or(file.database_acquire_timeout_ms),
                    3_000,
                )?,
            },
            mail_from: {
                let mail_from = self
                    .mail_from
                    .or(file.mail_from)
                    .unwrap_or_else(|| "Portcullis <no-reply@localhost>".into());
                crate::delivery::validate_sender(&mail_from)
                    .map_err(|e| anyhow::anyhow!("--mail-from {mail_from:?} {e}"))?;
                mail_from
            },
            mail_outbox: self
                .mail_outbox
                .or(file.mail_outbox)
                .unwrap_or_else(|| "mail-outbox".into()),
            public_url,
            owner: self.owner.or(file.owner),
            health_interval: Duration::from_millis(
                self.health_interval_ms
                    .or(file.health_interval_ms)
                    .unwrap_or(2000)
                    .max(50),
            ),
            session_cache: Duration::from_millis(
                self.session_cache_ms
                    .or(file.session_cache_ms)
                    .unwrap_or(5000),
            ),
            key_refresh: Duration::from_millis(
                self.key_refresh_ms
                    .or(file.key_refresh_ms)
                    .unwrap_or(60_000)
                    .max(50),
            ),
            log_json: log_format == "json",
            policy,
        })
    }
}

fn positive(what: &str, value: Option<i64>) -> anyhow::Result<Option<i64>> {
    match value {
        Some(v) if v <= 0 => anyhow::bail!("{what} must be a positive number of seconds"),
        other => Ok(other),
    }
}

fn seconds(what: &str, value: Option<i64>, default: u64) -> anyhow::Result<Duration> {
    match value {
        Some(v) if !(1..=86_400).contains(&v) => {
            anyhow::bail!("{what} must be 1 to 86400 seconds, not {v}")
        }
        Some(v) => Ok(Duration::from_secs(v as u64)),
        None => Ok(Duration::from_secs(default)),
    }
}

fn millis(what: &str, value: Option<i64>, default: u64) -> anyhow::Result<Duration> {
    match value {
        Some(v) if !(1..=3_600_000).contains(&v) => {
            anyhow::bail!("{what} must be 1 to 3600000 milliseconds, not {v}")
        }
        Some(v) => Ok(Duration::from_millis(v as u64)),
        None => Ok(Duration::from_millis(default)),
    }
}

fn count(what: &str, value: Option<i64>) -> anyhow::Result<Option<i64>> {
    match value {
        Some(v) if !(1..=1_000_000).contains(&v) => {
            anyhow::bail!("{what} must be a whole number from 1 to 1000000, not {v}")
        }
        other => Ok(other),
    }
}

impl Settings {
    /// The public base URL: as configured, else derived from the bound address.
    pub fn public_url_for(&self, bound: &str) -> String {
        self.public_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{bound}")
        })
    }

    /// Settings for tests and embedding: defaults, with the given database.
    pub fn for_database(database_url: &str) -> Settings {
        SettingsArgs {
            database_url: Some(database_url.into()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        }
        .resolve()
        .expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_settings_leaves_secrets_out() {
        let settings = SettingsArgs {
            smtp_url: Some("smtp://mailer:smtp-password@mail.test:587".into()),
            sms_webhook_url: Some("https://sms.test/send".into()),
            sms_webhook_secret: Some("webhook-bearer-secret".into()),
            master_key: Some("bWFzdGVyIGtleSBtYXRlcmlhbCBvZiAzMiBieXRlcyE=".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let shown = format!("{settings:?}");
        for secret in [
            "smtp-password",
            "webhook-bearer-secret",
            "bWFzdGVyIGtleSBtYXRlcmlhbCBvZiAzMiBieXRlcyE=",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nmail_from = \"Acme <a@acme.test>\"\n",
        )
        .unwrap();
        let args = SettingsArgs {
            config: Some(path),
            listen: Some("127.0.0.1:7000".into()),
            ..Default::default()
        };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.listen, "127.0.0.1:7000");
        assert_eq!(settings.mail_from, "Acme <a@acme.test>");
        assert_eq!(settings.database_url, "sqlite://portcullis.db");
        assert_eq!(
            settings.public_url_for("127.0.0.1:7000"),
            "http://127.0.0.1:7000"
        );
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let error = SettingsArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
    }
}
