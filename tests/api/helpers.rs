//! Spawns the real server on port 0 with its own database (a SQLite file, or a fresh
//! PostgreSQL database when PORTCULLIS_TEST_POSTGRES_URL is set) and gives tests real
//! clients for it.

use portcullis::Application;
use portcullis::domain::Clock;
pub use portcullis::grpc::pb::Role;
use portcullis::grpc::pb::admin_service_client::AdminServiceClient;
use portcullis::grpc::pb::authentication_service_client::AuthenticationServiceClient;
use portcullis::grpc::pb::log_service_client::LogServiceClient;
use portcullis::grpc::pb::password_service_client::PasswordServiceClient;
use portcullis::grpc::pb::recovery_service_client::RecoveryServiceClient;
use portcullis::grpc::pb::verification_service_client::VerificationServiceClient;
use portcullis::grpc::pb::*;
use portcullis::service::Auth;
use portcullis::service::CreatedProject;
use portcullis::settings::Settings;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const OWNER: &str = "owner@example.com";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named scenario once per backend: `<name>_on_sqlite` always,
/// `<name>_on_postgres` when PostgreSQL is configured (or required).
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if $crate::helpers::postgres_admin_url().is_some() {
                        super::$scenario($crate::helpers::Backend::Postgres).await;
                    }
                }
            )*
        }
    };
}

/// The PostgreSQL server to create test databases on; panics when it is required but
/// not configured.
pub fn postgres_admin_url() -> Option<String> {
    let required = std::env::var("PORTCULLIS_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    match std::env::var("PORTCULLIS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if required => {
            panic!("PORTCULLIS_TEST_REQUIRE_POSTGRES=1 but PORTCULLIS_TEST_POSTGRES_URL is not set")
        }
        _ => {
            report_skip(
                "the PostgreSQL half of every on_both_backends test (and PostgreSQL-only tests)",
                "PORTCULLIS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres",
            );
            None
        }
    }
}

/// `host:port` of the PostgreSQL server tests use (for relays that stand in between).
pub fn postgres_address() -> String {
    let url = postgres_admin_url().expect("PostgreSQL configured");
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let host_port = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    }
}

/// Says, once per test run and where a plain `cargo test` shows it, that some tests ran
/// as no-ops and what turns them on. (libtest captures `eprintln!` of passing tests, so a
/// skip said that way is never seen; writing to the stderr handle is not captured.)
pub fn report_skip(what: &str, how: &str) {
    use std::io::Write;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.iter().any(|w| w == what) {
        return;
    }
    said.push(what.to_owned());
    let _ = writeln!(
        std::io::stderr(),
        "\nSKIPPED (reported as passed): {what}. Turn on with {how}."
    );
}

/// A database of its own for one test; dropped with it.
pub struct TestDatabase {
    pub url: String,
    _dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
                TestDatabase {
                    url,
                    _dir: dir,
                    postgres: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url().expect("PostgreSQL configured");
                let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut conn = connect_admin(&admin).await;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = with_database(&admin, &name);
                TestDatabase {
                    url,
                    _dir: dir,
                    postgres: Some((admin, name)),
                }
            }
        }
    }

    /// A SQLite database file in `folder` (a small tmpfs, say) inside `dir`, which goes
    /// with the database.
    pub fn sqlite_in(dir: tempfile::TempDir, folder: &Path) -> TestDatabase {
        TestDatabase {
            url: format!("sqlite://{}", folder.join("portcullis.db").display()),
            _dir: dir,
            postgres: None,
        }
    }

    /// Another handle on the same database, for a second replica; only the original drops it.
    pub fn shared(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            _dir: tempfile::tempdir().expect("temp dir"),
            postgres: None,
        }
    }

    /// The same database reached through 127.0.0.1:`port` (a relay the test controls).
    pub fn through(mut self, port: u16) -> TestDatabase {
        let (user, rest) = self
            .url
            .split_once('@')
            .expect("user@host in a PostgreSQL URL");
        let (_, path) = rest.split_once('/').expect("a database in the URL");
        self.url = format!("{user}@127.0.0.1:{port}/{path}");
        self
    }

    /// A pool of its own on the test database, as a person with a copy of it would read.
    pub async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Counts rows of a table, to check that refused requests wrote nothing.
    pub async fn count(&self, table: &str) -> i64 {
        let pool = self.pool().await;
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&pool)
            .await
            .expect("count rows");
        let n: i64 = row.try_get("n").expect("count");
        pool.close().await;
        n
    }
}

async fn connect_admin(admin_url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    let url = with_sslmode_disabled(admin_url);
    sqlx::AnyConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"))
}

/// Loopback TLS only costs time in tests.
fn with_sslmode_disabled(url: &str) -> String {
    if url.contains("sslmode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// The same server URL with another database name.
pub fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = admin_url
        .split_once('?')
        .map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    let url = match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    };
    with_sslmode_disabled(&url)
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside async context; a small runtime of its own does the work.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let mut conn = connect_admin(&admin).await;
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// Set with `--metrics-listen`.
    pub metrics_address: Option<std::net::SocketAddr>,
    pub clock: Clock,
    pub project: CreatedProject,
    pub outbox: PathBuf,
    pub authentication: AuthenticationServiceClient<Channel>,
    pub verification: VerificationServiceClient<Channel>,
    pub recovery: RecoveryServiceClient<Channel>,
    pub logs: LogServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
    pub http: reqwest::Client,
    /// The service core, for set-up a test cannot do over the wire (a second project).
    pub auth: Auth,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _outbox_dir: tempfile::TempDir,
    // Last, so the server is stopped before its database goes.
    pub database: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the app with settings adjusted by `configure`.
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new(backend).await;
    spawn_app_on(database, configure).await
}

/// The master key of every test database on PostgreSQL (SQLite ones get their key file
/// beside the database, as a first start does).
pub const TEST_MASTER_KEY: &str = "dGVzdHMgb25seTogMzIgYnl0ZXMgb2Yga2V5IG1hdGU=";

/// Default settings for a test app on `database_url`.
pub fn settings_for(database_url: &str) -> Settings {
    let mut settings = Settings::for_database(database_url);
    // Tests stop servers often; the drain before closing is tested on its own.
    settings.shutdown_grace = Duration::ZERO;
    if database_url.starts_with("postgres") {
        settings.master_key = Some(TEST_MASTER_KEY.to_owned().into());
    }
    settings
}

pub async fn spawn_app_on(
    database: TestDatabase,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let outbox_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = settings_for(&database.url);
    settings.owner = Some(OWNER.into());
    settings.mail_outbox = outbox_dir.path().to_path_buf();
    settings.health_interval = Duration::from_millis(100);
    // Tests' webhooks listen on 127.0.0.1; the SSRF tests turn this off again.
    settings.policy.webhook_allow_private = true;
    configure(&mut settings);

    let app = Application::build(settings)
        .await
        .expect("build the application");
    let port = app.port();
    let metrics_address = app.metrics_address();
    let clock = app.clock();
    let auth = app.auth().clone();
    let project = match app.default_project() {
        Some(project) => CreatedProject {
            project_id: project.project_id.clone(),
            name: project.name.clone(),
            app_token: project.app_token.clone(),
            admin_token: project.admin_token.clone(),
            owner: project.owner.clone(),
        },
        // The database already had projects: make one for this test.
        None => app
            .auth()
            .create_project("Test project", Some(OWNER), false, false)
            .await
            .expect("create project"),
    };
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = shutdown_rx.await;
    }));

    let address = format!("http://127.0.0.1:{port}");
    let channel = Channel::from_shared(address.clone())
        .expect("uri")
        .connect_lazy();
    TestApp {
        address,
        port,
        metrics_address,
        clock,
        project,
        outbox: outbox_dir.path().to_path_buf(),
        authentication: AuthenticationServiceClient::new(channel.clone()),
        verification: VerificationServiceClient::new(channel.clone()),
        recovery: RecoveryServiceClient::new(channel.clone()),
        logs: LogServiceClient::new(channel.clone()),
        admin: AdminServiceClient::new(channel),
        // Redirects are the test's business, not the client's.
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        auth,
        shutdown: Some(shutdown_tx),
        server: Some(server),
        _outbox_dir: outbox_dir,
        database,
    }
}

impl TestApp {
    /// Tells the server to shut down, as SIGTERM does, without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server task has ended.
    pub fn has_stopped(&self) -> bool {
        self.server
            .as_ref()
            .is_none_or(|server| server.is_finished())
    }

    /// Asks the server to shut down (as SIGTERM does) and waits until it has.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(server) => server.await.expect("the server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// `GET /api/authenticate` for `name` with the project's app token.
pub async fn http_authenticate(app: &TestApp, name: &str) -> reqwest::Response {
    let name: String = form_urlencoded::byte_serialize(name.as_bytes()).collect();
    app.http
        .get(format!(
            "{}/api/authenticate?name={name}&token={}",
            app.address, app.project.app_token
        ))
        .send()
        .await
        .expect("authenticate over HTTP")
}

/// A path of the email + password JSON API of the test's project.
pub fn password_url(app: &TestApp, path: &str) -> String {
    format!(
        "{}/project/{}/auth/{path}",
        app.address, app.project.project_id
    )
}

/// Wraps a message in a request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A finished login.
pub struct LoggedIn {
    pub session: Session,
}

impl LoggedIn {
    pub fn token(&self) -> &str {
        &self.session.token
    }

    pub fn jwt(&self) -> &str {
        &self.session.json_web_token.as_ref().expect("a JWT").token
    }
}

impl TestApp {
    pub async fn authenticate(&self, name: &str) -> Result<AuthenticateResponse, tonic::Status> {
        self.authenticate_with(&self.project.app_token, name).await
    }

    pub async fn authenticate_with(
        &self,
        token: &str,
        name: &str,
    ) -> Result<AuthenticateResponse, tonic::Status> {
        let request = bearer(token, AuthenticateRequest { name: name.into() });
        self.authentication
            .clone()
            .authenticate(request)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn confirm(&self, code: &str, code_token: &str) -> Result<Session, tonic::Status> {
        let request = ConfirmRequest {
            code: code.into(),
            code_token: code_token.into(),
        };
        let response = self
            .verification
            .clone()
            .confirm(request)
            .await?
            .into_inner();
        Ok(response
            .session
            .expect("a confirmed login carries a session"))
    }

    pub async fn authorize(&self, token: &str) -> AuthorizeResponse {
        self.try_authorize(token)
            .await
            .expect("authorize answers every token")
    }

    /// Authorize, with its error (for when the database may be out of reach).
    pub async fn try_authorize(&self, token: &str) -> Result<AuthorizeResponse, tonic::Status> {
        let request = AuthorizeRequest {
            token: token.into(),
            ..Default::default()
        };
        let answer = self.authentication.clone().authorize(request).await?;
        Ok(answer.into_inner())
    }

    pub async fn resend_code(&self, name: &str, code_token: &str) -> Result<(), tonic::Status> {
        let request = ResendCodeRequest {
            name: name.into(),
            code_token: code_token.into(),
        };
        self.authentication
            .clone()
            .resend_code(request)
            .await
            .map(|_| ())
    }

    pub async fn get_user(&self, token: &str) -> Result<GetUserResponse, tonic::Status> {
        self.authentication
            .clone()
            .get_user(bearer(token, GetUserRequest {}))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn logout(&self, token: &str) -> Result<(), tonic::Status> {
        self.authentication
            .clone()
            .logout(bearer(token, LogoutRequest {}))
            .await
            .map(|_| ())
    }

    /// A PasswordService client on this server.
    pub fn passwords(&self) -> PasswordServiceClient<Channel> {
        let channel = Channel::from_shared(self.address.clone())
            .expect("uri")
            .connect_lazy();
        PasswordServiceClient::new(channel)
    }

    /// Registers an email + password account in the test's project.
    pub async fn register(&self, email: &str, password: &str) -> Result<(), tonic::Status> {
        self.register_in(&self.project.project_id, email, password)
            .await
    }

    pub async fn register_in(
        &self,
        project_id: &str,
        email: &str,
        password: &str,
    ) -> Result<(), tonic::Status> {
        let request = RegisterRequest {
            project_id: project_id.into(),
            email: email.into(),
            password: password.into(),
        };
        self.passwords().register(request).await.map(|_| ())
    }

    /// PasswordService/Login in the test's project.
    pub async fn password_login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<LoginResponse, tonic::Status> {
        let request = LoginRequest {
            project_id: self.project.project_id.clone(),
            username: email.into(),
            password: password.into(),
        };
        self.passwords()
            .login(request)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn forgot_password(&self, email: &str) -> Result<(), tonic::Status> {
        let request = ForgotPasswordRequest {
            project_id: self.project.project_id.clone(),
            email: email.into(),
        };
        self.passwords().forgot_password(request).await.map(|_| ())
    }

    /// Waits for the `count`th mail to `recipient` and returns its decoded text.
    pub async fn wait_for_mail(&self, recipient: &str, count: usize) -> String {
        let mails = wait_for(|| {
            let mails = self.mails_to(recipient);
            (mails.len() >= count).then_some(mails)
        })
        .await
        .unwrap_or_else(|| panic!("no mail #{count} for {recipient} in the outbox"));
        mails[count - 1].clone()
    }

    /// The password reset link in the `count`th mail to `recipient`.
    pub async fn wait_for_reset_link(&self, recipient: &str, count: usize) -> String {
        let mail = self.wait_for_mail(recipient, count).await;
        mail.split_whitespace()
            .find(|word| word.contains("/auth/password/reset?token="))
            .unwrap_or_else(|| panic!("no reset link in {mail}"))
            .to_owned()
    }

    /// Changes project settings with the admin token.
    pub async fn update_settings(&self, change: UpdateProjectSettingsRequest) -> Project {
        self.admin
            .clone()
            .update_project_settings(bearer(&self.project.admin_token, change))
            .await
            .expect("update settings")
            .into_inner()
            .project
            .expect("the changed project")
    }

    /// Lets the project register anonymous users (an app token and no name).
    pub async fn allow_anonymous(&self) {
        let project = self
            .update_settings(UpdateProjectSettingsRequest {
                anonymous_login: Some(true),
                ..Default::default()
            })
            .await;
        assert!(project.anonymous_login);
    }

    pub async fn poll(&self, code_token: &str) -> Result<PollResponse, tonic::Status> {
        let request = PollRequest {
            code_token: code_token.into(),
        };
        self.verification
            .clone()
            .poll(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Logs `name` in through the whole code flow.
    pub async fn log_in(&self, name: &str) -> LoggedIn {
        self.log_in_with(&self.project.app_token, name).await
    }

    /// Logs `name` in to the project of `app_token`.
    pub async fn log_in_with(&self, app_token: &str, name: &str) -> LoggedIn {
        let seen = self.mails_to(name).len();
        let started = self
            .authenticate_with(app_token, name)
            .await
            .expect("authenticate");
        let code = self.wait_for_code(name, seen + 1).await;
        let session = self
            .confirm(&code, &started.code_token)
            .await
            .expect("confirm");
        LoggedIn { session }
    }

    /// Messages (mails and texts) written to the outbox folder for `recipient`, oldest first.
    pub fn mails_to(&self, recipient: &str) -> Vec<String> {
        read_outbox(&self.outbox, recipient)
    }

    /// Waits until `count` messages reached `recipient` and returns the code of the last.
    pub async fn wait_for_code(&self, recipient: &str, count: usize) -> String {
        let mails = wait_for(|| {
            let mails = self.mails_to(recipient);
            (mails.len() >= count).then_some(mails)
        })
        .await
        .unwrap_or_else(|| panic!("no message #{count} for {recipient} in the outbox"));
        code_in(&mails[count - 1]).expect("a code in the message")
    }
}

pub fn read_outbox(dir: &Path, recipient: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.contains(&format!("-{recipient}.")) && !name.ends_with(".partial")
        })
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| decode_mail(&text))
        .collect()
}

/// A mail as a person reads it: a quoted-printable body decoded (long lines such as the
/// magic link are wrapped that way on the wire).
pub fn decode_mail(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let Some((headers, body)) = raw.split_once("\n\n") else {
        return raw;
    };
    if !headers
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return raw;
    }
    let bytes = body.replace("=\n", "").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'=' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    format!("{headers}\n\n{}", String::from_utf8_lossy(&out))
}

/// The password test accounts register with, and the one they change to.
pub const PASSWORD: &str = "purple monkey dishwasher";
pub const NEW_PASSWORD: &str = "tangerine lighthouse orbit";

/// The token a link carries (`...?token=`).
pub fn token_of(link: &str) -> String {
    link.split_once("token=")
        .expect("a token in the link")
        .1
        .to_owned()
}

/// The magic link in a login mail.
pub fn link_in(message: &str) -> Option<String> {
    message
        .split_whitespace()
        .find(|word| word.starts_with("http") && word.contains("/login/link?token="))
        .map(str::to_owned)
}

/// The first run of 4 to 8 digits standing alone on a line or at the start of a text.
pub fn code_in(message: &str) -> Option<String> {
    message.lines().find_map(|line| {
        let word = line.split_whitespace().next()?;
        (word.len() >= 4 && word.len() <= 8 && word.bytes().all(|b| b.is_ascii_digit()))
            .then(|| word.to_owned())
    })
}

/// Polls `check` for up to ten seconds.
pub async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`wait_for`] with an async check.
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A code that is not `code` (to test wrong guesses).
pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| char::from(b'0' + ((c as u8 - b'0' + 1) % 10)))
        .collect()
}

/// A TCP relay to PostgreSQL that a test controls, to play the network's faults:
/// `cut` closes every relayed connection and refuses new ones until `restore` (a server
/// that went away); `blackhole` forwards nothing more on the connections open now, ever,
/// and holds new ones until `heal`, closing nothing (a silent partition).
pub struct Relay {
    pub port: u16,
    faults: Faults,
}

impl Relay {
    /// A fresh PostgreSQL test database reached through a new relay; `None` when
    /// PostgreSQL is not configured (the test then has nothing to do).
    pub async fn postgres_database() -> Option<(Relay, TestDatabase)> {
        postgres_admin_url()?;
        let relay = Relay::start(postgres_address()).await;
        let database = TestDatabase::new(Backend::Postgres)
            .await
            .through(relay.port);
        Some((relay, database))
    }

    pub async fn start(target: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let faults = Faults::default();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            faults: faults.clone(),
        };
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if faults.refusing.load(Ordering::SeqCst) {
                    continue; // dropping `inbound` closes it
                }
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let born = (
                    faults.cuts.load(Ordering::SeqCst),
                    faults.holes.load(Ordering::SeqCst),
                );
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(faults.clone().pipe(in_read, out_write, born));
                tokio::spawn(faults.clone().pipe(out_read, in_write, born));
            }
        });
        relay
    }

    pub fn cut(&self) {
        self.faults.refusing.store(true, Ordering::SeqCst);
        self.faults.cuts.fetch_add(1, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.faults.refusing.store(false, Ordering::SeqCst);
    }

    pub fn blackhole(&self) {
        self.faults.frozen.store(true, Ordering::SeqCst);
        self.faults.holes.fetch_add(1, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.faults.frozen.store(false, Ordering::SeqCst);
    }
}

/// The faults a relay plays, shared with its connections.
#[derive(Clone, Default)]
struct Faults {
    refusing: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
    holes: Arc<AtomicU64>,
}

impl Faults {
    /// Whether a connection born at `born` may forward now; `None` when it was cut.
    fn may_forward(&self, born: (u64, u64)) -> Option<bool> {
        if self.cuts.load(Ordering::SeqCst) != born.0 {
            return None;
        }
        Some(self.holes.load(Ordering::SeqCst) == born.1 && !self.frozen.load(Ordering::SeqCst))
    }

    /// Copies one direction while the faults allow; returning drops (closes) both halves.
    async fn pipe(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        born: (u64, u64),
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match self.may_forward(born) {
                None => return,
                Some(false) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Some(true) => {}
            }
            let n = match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buffer))
                .await
            {
                Err(_) => continue,
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            loop {
                match self.may_forward(born) {
                    None => return,
                    Some(true) => break,
                    Some(false) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }
}

/// A fresh Ed25519 key pair as PEM (PKCS#8 private, SPKI public).
pub fn ed25519_pem() -> (String, String) {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut private = hex("302e020100300506032b657004220420");
    private.extend_from_slice(&seed);
    let mut public = hex("302a300506032b6570032100");
    public.extend_from_slice(signing.verifying_key().as_bytes());
    let pem = |label: &str, der: &[u8]| {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
        )
    };
    (pem("PRIVATE KEY", &private), pem("PUBLIC KEY", &public))
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// What `portcullis serve` prints about the project it created on a first start
/// (`project_id`, `app_token`, `admin_token`, `owner`), read from its standard output.
pub fn first_start_project(
    stdout: impl std::io::Read,
) -> std::collections::HashMap<String, String> {
    use std::io::BufRead;
    let mut project = std::collections::HashMap::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("stdout");
        if let Some((key, value)) = line.trim().split_once(": ") {
            project.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        if line.contains("admin_token:") {
            break;
        }
    }
    project
}
