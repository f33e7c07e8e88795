//! Assembly: settings → store, keys, delivery, services → one listener serving gRPC and
//! HTTP. `Application::build` binds (port 0 works, for tests) and `run_until` serves
//! until the shutdown future resolves, letting in-flight calls finish.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request};
use axum::response::Response;
use secrecy::ExposeSecret;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};

use crate::delivery::{self, Deliverer, MailTransport, WebhookClient};
use crate::domain::MasterKey;
use crate::domain::{Clock, CodeKey};
use crate::grpc;
use crate::http;
use crate::jwt::JwtKeys;
use crate::probes::{self, Readiness};
use crate::server::{self, ConnectionLimits, DeadlineLayer, is_grpc};
use crate::service::{Auth, CreatedProject};
use crate::settings::Settings;
use crate::store::{DatabaseOptions, KeyAdoption, Store, StoreError};

pub struct Application {
    listener: TcpListener,
    /// TLS on the listener, when configured.
    tls: Option<Arc<crate::tls::Tls>>,
    /// `--metrics-listen`: `/metrics` there only, not on the main listener.
    metrics_listener: Option<TcpListener>,
    address: SocketAddr,
    settings: Settings,
    store: Store,
    auth: Auth,
    clock: Clock,
    deliverer: Deliverer,
    default_project: Option<CreatedProject>,
}

/// Opens the database, applies migrations and adopts the master key (see
/// [`master_key_for`]): the store is ready to read and write secrets.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let mut store = migrated_store(&settings.database_url, &settings.database).await?;
    let key = master_key_for(settings, &store).await?;
    match store.adopt_master_key(key).await {
        Ok(KeyAdoption::New { sealed_rows }) => {
            tracing::info!(
                sealed_rows,
                "secrets at rest are sealed with the master key"
            )
        }
        Ok(KeyAdoption::Matches { sealed_rows }) if sealed_rows > 0 => {
            tracing::info!(sealed_rows, "sealed values that were stored plain")
        }
        Ok(KeyAdoption::Matches { .. }) => {}
        Err(StoreError::Sealed(_)) => anyhow::bail!(
            "the master key does not open this database's secrets: start with the key it \
             was sealed with (--master-key-file or PORTCULLIS_MASTER_KEY); nothing was changed"
        ),
        Err(error) => anyhow::bail!("cannot check the master key: {error}"),
    }
    Ok(store)
}

/// The master key: `--master-key` (PORTCULLIS_MASTER_KEY) or `--master-key-file`; else, on
/// SQLite, the key file beside the database, written 0600 on the first start (so the
/// zero-set-up start still works). Never a silent new key for a database sealed before,
/// and on PostgreSQL, whose replicas must share one key, never an implicit one.
async fn master_key_for(settings: &Settings, store: &Store) -> anyhow::Result<MasterKey> {
    if let Some(key) = &settings.master_key {
        return MasterKey::from_base64(key.expose_secret())
            .map_err(|e| anyhow::anyhow!("PORTCULLIS_MASTER_KEY: {e}"));
    }
    if let Some(path) = &settings.master_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the master key file {}: {e}", path.display())
        })?;
        return MasterKey::from_base64(&text)
            .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()));
    }
    let Some(path) = default_master_key_path(&settings.database_url) else {
        if settings.database_url.starts_with("sqlite:") {
            // An in-memory database lives and dies with the process: so can its key.
            return Ok(MasterKey::generate());
        }
        anyhow::bail!(
            "PostgreSQL needs a master key that every replica shares, to seal secrets at rest: \
             make one with `head -c 32 /dev/urandom | base64 > master.key && chmod 600 \
             master.key` and start with --master-key-file master.key (or set \
             PORTCULLIS_MASTER_KEY)"
        );
    };
    let read = |path: &std::path::Path| -> anyhow::Result<MasterKey> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the master key file {}: {e}", path.display())
        })?;
        MasterKey::from_base64(&text)
            .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()))
    };
    if path.exists() {
        return read(&path);
    }
    if store.has_master_key_check().await? {
        // Another process starting beside this one may have just written it.
        if path.exists() {
            return read(&path);
        }
        anyhow::bail!(
            "this database's secrets are sealed with a master key, but {} is missing and no \
             key was given (--master-key-file or PORTCULLIS_MASTER_KEY); restore the key file \
             rather than starting over",
            path.display()
        );
    }
    let key = MasterKey::generate();
    match write_private_file(&path, &format!("{}\n", key.to_base64())) {
        Ok(()) => {}
        // Another process starting beside this one wrote it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return read(&path),
        Err(error) => anyhow::bail!(
            "cannot write the master key file {}: {error}",
            path.display()
        ),
    }
    tracing::warn!(
        path = %path.display(),
        "wrote a new master key beside the database: back it up with the database, and keep \
         it elsewhere than the database's backups; without it the sealed secrets are lost"
    );
    Ok(key)
}

/// `portcullis.db` → `portcullis.db.master-key`, for SQLite files.
fn default_master_key_path(database_url: &str) -> Option<std::path::PathBuf> {
    let mut path = crate::store::sqlite_file(database_url)
        .ok()?
        .into_os_string();
    path.push(".master-key");
    Some(path.into())
}

/// Writes `text` to a new file readable by its owner only, whole or not at all: written
/// aside, then linked into place (which fails if the file exists), so a process starting
/// beside this one never reads half a key.
fn write_private_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let aside = path.with_extension(format!("partial-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&aside)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    linked
}

/// Opens the database and applies migrations (see [`migrate`]).
async fn migrated_store(database_url: &str, timeouts: &DatabaseOptions) -> anyhow::Result<Store> {
    let store = Store::connect_with(database_url, timeouts)?;
    migrate(&store).await?;
    Ok(store)
}

/// Applies pending migrations; waits a little for a database that is still starting, then
/// gives up with the cause.
pub async fn migrate(store: &Store) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(error) if tries < 5 => {
                tries += 1;
                tracing::warn!(%error, "database not ready, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(anyhow::anyhow!("cannot open the database: {error}")),
        }
    }
}

/// Builds the core service over an open store.
pub async fn build_auth(
    store: &Store,
    settings: &Settings,
    public_url: String,
    clock: &Clock,
) -> anyhow::Result<Auth> {
    let random_key = || {
        let mut secret = vec![0u8; 32];
        getrandom::getrandom(&mut secret).expect("the operating system's random source failed");
        secret
    };
    let code_secret = store.server_secret("login_code_hmac", random_key).await?;
    let tag_key = store.server_secret("user_token_tag", random_key).await?;
    // Untagged tokens were issued before this secret existed; they live at most a
    // session lifetime after it.
    let now = clock.now();
    let tagged_since = store
        .server_secret("user_token_tag_since", || now.to_be_bytes().to_vec())
        .await?;
    let tagged_since = tagged_since
        .try_into()
        .map(i64::from_be_bytes)
        .unwrap_or(now);
    let user_tokens = crate::domain::UserTokenKey::new(
        tag_key,
        tagged_since + settings.policy.session_ttl_seconds,
    );
    let keys = JwtKeys::load_or_create(store.clone(), clock, public_url).await?;
    Ok(Auth::new(
        store.clone(),
        clock.clone(),
        keys,
        CodeKey::new(code_secret),
        user_tokens,
        settings.policy.clone(),
    ))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.listen))?;
        let address = listener.local_addr()?;
        let metrics_listener = match &settings.metrics_listen {
            Some(metrics) => Some(
                TcpListener::bind(metrics)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {metrics} for metrics: {e}"))?,
            ),
            None => None,
        };
        crate::metrics::handle();
        let tls = settings
            .tls
            .clone()
            .map(crate::tls::Tls::new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
        let clock = Clock::default();
        let store = open_store(&settings)
            .await?
            .with_session_cache(settings.session_cache);
        let public_url = settings.public_url_for(&address.to_string());
        let auth = build_auth(&store, &settings, public_url, &clock).await?;
        let default_project = auth
            .ensure_default_project(settings.owner.as_deref())
            .await?;

        let mail = match &settings.smtp_url {
            Some(url) => {
                MailTransport::from_url(url.expose_secret()).map_err(anyhow::Error::msg)?
            }
            None => MailTransport::Folder,
        };
        let deliverer = Deliverer::new(
            mail,
            settings.sms_webhook.clone(),
            WebhookClient::new(settings.policy.webhook_allow_private),
            settings.mail_outbox.clone(),
            &settings.mail_from,
            settings.mail_sender_domains.clone(),
        )
        .map_err(anyhow::Error::msg)?;

        Ok(Application {
            listener,
            tls,
            metrics_listener,
            address,
            settings,
            store,
            auth,
            clock,
            deliverer,
            default_project,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Where `/metrics` is served apart from the main listener, if it is.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The service clock; tests move it forward to exercise expiry.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// The project created because the database was empty, if this start created one.
    pub fn default_project(&self) -> Option<&CreatedProject> {
        self.default_project.as_ref()
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn delivery_description(&self) -> String {
        self.deliverer.describe()
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight calls finish,
    /// stops the background tasks and closes the database.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        // Report real readiness from the first answer on, not the library's default.
        let readiness = Arc::new(Readiness::new(health_reporter));
        let healthy = probes::database_works(&self.store, &self.clock).await;
        readiness.set_database(healthy).await;
        let health_task = tokio::spawn(probes::watch_database(
            self.store.clone(),
            self.clock.clone(),
            readiness.clone(),
            self.settings.health_interval,
            stopped(),
        ));
        let key_refresh = {
            let keys = self.auth.keys().clone();
            let interval = self.settings.key_refresh;
            let stopped = stopped();
            tokio::spawn(async move {
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if let Err(error) = keys.reload().await {
                        tracing::debug!(%error, "could not re-read signing keys");
                    }
                }
            })
        };
        let revocations = {
            let store = self.store.clone();
            let stopped = stopped();
            tokio::spawn(async move { store.follow_revocations(stopped).await })
        };
        let worker = tokio::spawn(delivery::run_worker(
            self.store.clone(),
            self.deliverer.clone(),
            self.clock.clone(),
            self.settings.delivery.clone(),
            stopped(),
        ));

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(grpc::ENVOY_AUTHZ_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // grpcurl 1.8 and grpcio's reflection client speak only v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(grpc::ENVOY_AUTHZ_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let grpc_routes = grpc::routes(self.auth.clone())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let request_id = HeaderName::from_static("x-request-id");
        let tls = self.tls.clone();
        let tls_watch = tls
            .clone()
            .map(|tls| tokio::spawn(tls.watch(Duration::from_secs(2), stopped())));
        let metrics_server = self.metrics_listener.take().map(|listener| {
            let stopped = stopped();
            let routes = http::metrics_routes(self.auth.clone());
            tokio::spawn(async move {
                let served = axum::serve(listener, routes).with_graceful_shutdown(stopped);
                if let Err(error) = served.await {
                    tracing::warn!(%error, "the metrics listener stopped");
                }
            })
        });
        let mut app: Router = http::router(self.auth.clone())
            .merge(probes::routes(readiness.clone()))
            .merge(grpc_routes.into_axum_router());
        if metrics_server.is_none() {
            app = app.merge(http::metrics_routes(self.auth.clone()));
        }
        let app = app
            .route_layer(crate::observe::TagRouteLayer)
            .fallback(not_found)
            // Every response carries the request id (the caller's, or a new one).
            .layer(PropagateRequestIdLayer::new(request_id.clone()))
            // Whatever runs too long is cut off and answered.
            .layer(DeadlineLayer {
                timeout: self.settings.request_timeout,
            })
            // The request's span, log line and metrics; around the deadline, so requests
            // cut off get theirs too.
            .layer(crate::observe::LogRequestLayer {
                auth: self.auth.clone(),
            })
            // Outermost: every layer inside sees the request id.
            .layer(SetRequestIdLayer::new(
                request_id,
                crate::observe::NewRequestId,
            ));

        tracing::info!(address = %self.address, "serving gRPC and HTTP");
        let limits = ConnectionLimits {
            header_read_timeout: self.settings.header_read_timeout,
            max_connections: self.settings.max_connections,
        };
        let deadline = self.settings.shutdown_timeout;
        let grace = self.settings.shutdown_grace;
        let signalled = Arc::new(std::sync::OnceLock::new());
        let signal_time = signalled.clone();
        server::serve(
            self.listener,
            app,
            limits,
            tls,
            async move {
                shutdown.await;
                // Load balancers see not-ready at once and move away while the listener
                // still serves; only then does it close.
                readiness.drain().await;
                tracing::info!(
                    grace_seconds = grace.as_secs(),
                    "draining: not ready, still serving"
                );
                tokio::time::sleep(grace).await;
                let _ = signal_time.set(Instant::now());
                tracing::info!("shutting down: finishing in-flight requests");
            },
            deadline,
        )
        .await;
        // What is left of the shutdown timeout (at least a second) for the rest.
        let spent = signalled.get().map(Instant::elapsed).unwrap_or_default();
        let left = deadline.saturating_sub(spent).max(Duration::from_secs(1));
        let _ = stop_tx.send(true);
        // Background tasks stop at their next step; one stuck on a silent database does
        // not keep the process alive past the shutdown timeout.
        let stopped = async {
            let _ = tokio::join!(health_task, worker, revocations, key_refresh);
            if let Some(metrics_server) = metrics_server {
                let _ = metrics_server.await;
            }
            if let Some(tls_watch) = tls_watch {
                let _ = tls_watch.await;
            }
            self.store.close().await;
        };
        if tokio::time::timeout(left, stopped).await.is_err() {
            tracing::warn!("shutdown: background tasks did not stop in time; exiting anyway");
        }
        Ok(())
    }
}

/// Unknown paths: a gRPC "unimplemented" for gRPC clients, a plain 404 for everyone else.
async fn not_found(request: Request<Body>) -> Response {
    if is_grpc(&request) {
        tonic::Status::unimplemented(format!("no such method: {}", request.uri().path()))
            .into_http()
    } else {
        http::not_found(request.uri())
    }
}
