//! The `portcullis` binary: `serve` (default), `migrate`, `project create`.

use portcullis::app::{Application, build_auth, migrate, open_store};
use portcullis::domain::Clock;
use portcullis::settings::{Cli, Command, KeysCommand, OperatorTokenCommand, ProjectCommand};
use tracing_subscriber::EnvFilter;

/// mimalloc: per-thread caches instead of glibc's arena locks, which showed in profiles of
/// the hot path (allocation-heavy gRPC messages on all cores).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often memory mimalloc has kept past its purge delay (1 s) is given back.
const RETURN_FREED_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// mimalloc gives freed memory back to the system a second after it was freed, but only
/// when some thread next allocates or frees: once the load stopped, an idle service kept
/// what the load had freed (argon2id's 19 MiB blocks, request buffers): 48-79 MB two
/// seconds after a soak, 39-58 MB with this thread asking now and then, as allocating
/// would (BENCHMARKS.md, "Memory").
fn return_freed_memory_while_idle() {
    let _ = std::thread::Builder::new()
        .name("memory-upkeep".into())
        .spawn(|| {
            loop {
                std::thread::sleep(RETURN_FREED_MEMORY_EVERY);
                // SAFETY: no arguments to uphold; collects this thread's own cache and
                // purges what the process freed long enough ago.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_args();
    let settings = cli.settings.resolve()?;
    let traces = init_tracing(settings.log_json)?;
    let result = run(cli.command, settings).await;
    if let Some(provider) = traces {
        // Spans still queued go out before the process ends.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    result
}

async fn run(command: Option<Command>, settings: portcullis::Settings) -> anyhow::Result<()> {
    match command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate_command(&settings).await,
        Command::Keys(command) => keys_command(&settings, command).await,
        Command::Project(ProjectCommand::List) => {
            for project in offline_auth(&settings).await?.list_projects().await? {
                println!("{}", serde_json::to_string(&project)?);
            }
            Ok(())
        }
        Command::Project(ProjectCommand::RotateAppToken { project_id }) => {
            let token = offline_auth(&settings)
                .await?
                .rotate_app_token(&project_id)
                .await?;
            println!(
                "{}",
                serde_json::json!({ "project_id": project_id, "app_token": token })
            );
            Ok(())
        }
        Command::Project(ProjectCommand::RotateAdminToken { project_id }) => {
            let token = offline_auth(&settings)
                .await?
                .rotate_admin_token(&project_id)
                .await?;
            println!(
                "{}",
                serde_json::json!({ "project_id": project_id, "admin_token": token })
            );
            Ok(())
        }
        Command::OperatorToken(OperatorTokenCommand::Create) => {
            let token = offline_auth(&settings)
                .await?
                .create_operator_token()
                .await?;
            println!("{}", serde_json::json!({ "operator_token": token }));
            Ok(())
        }
        Command::Backup { to } => {
            if to.exists() {
                anyhow::bail!("{} exists: backup writes a new file", to.display());
            }
            let store = open_store(&settings).await?;
            store.backup_to(&to).await?;
            println!("{}", serde_json::json!({ "backup": to }));
            Ok(())
        }
        Command::Healthcheck { address } => {
            let address = address.unwrap_or_else(|| local_address(&settings.listen));
            if healthcheck(&address).await {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Project(ProjectCommand::Settings { project_id, change }) => {
            let auth = offline_auth(&settings).await?;
            let project = auth
                .update_project_settings_by_id(&project_id, &change)
                .await?;
            println!("{}", serde_json::to_string(&project)?);
            Ok(())
        }
        Command::Project(ProjectCommand::Create {
            name,
            owner,
            anonymous,
            recovery,
        }) => {
            let auth = offline_auth(&settings).await?;
            let project = auth
                .create_project(&name, owner.as_deref(), anonymous, recovery)
                .await?;
            println!("{}", serde_json::to_string(&project)?);
            Ok(())
        }
    }
}

/// `portcullis migrate`: applies what is pending and says what it applied.
async fn migrate_command(settings: &portcullis::Settings) -> anyhow::Result<()> {
    let store = portcullis::store::Store::connect_with(&settings.database_url, &settings.database)?;
    // A new database has no migrations table yet: nothing applied.
    let before = store.applied_migrations().await.unwrap_or_default();
    migrate(&store).await?;
    let applied: Vec<_> = store
        .applied_migrations()
        .await?
        .into_iter()
        .filter(|migration| !before.contains(migration))
        .collect();
    if applied.is_empty() {
        println!("the database is up to date: no migration to apply");
    }
    for (version, description) in &applied {
        println!("applied {version:04} {description}");
    }
    tracing::info!(count = applied.len(), "migrations applied");
    Ok(())
}

/// `portcullis keys ...`: signing keys through the service core; the master key through
/// the store alone.
async fn keys_command(settings: &portcullis::Settings, command: KeysCommand) -> anyhow::Result<()> {
    let now = Clock::default().now();
    match command {
        KeysCommand::List => println!("{}", offline_auth(settings).await?.keys().describe(now)),
        KeysCommand::Rotate => {
            let kid = offline_auth(settings).await?.keys().rotate(now).await?;
            portcullis::security_event!("key_rotated", kid = %kid);
            println!(
                "{}",
                serde_json::json!({ "kid": kid, "signs_from": now + portcullis::jwt::KEY_PUBLISH_SECONDS })
            );
        }
        KeysCommand::Retire { kid } => {
            match offline_auth(settings).await?.keys().retire(&kid, now).await {
                Ok(true) => {
                    portcullis::security_event!("key_retired", kid = %kid);
                    println!("{}", serde_json::json!({ "retired": kid }))
                }
                Ok(false) => anyhow::bail!("no live signing key has the kid {kid:?}"),
                Err(reason) => anyhow::bail!("{reason}"),
            }
        }
        KeysCommand::RotateMaster { new_key_file } => {
            let mut store = open_store(settings).await?;
            let text = std::fs::read_to_string(&new_key_file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", new_key_file.display()))?;
            let new = portcullis::domain::MasterKey::from_base64(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", new_key_file.display()))?;
            let count = store.rotate_master_key(new).await?;
            portcullis::security_event!("master_key_rotated", resealed = count);
            println!("{}", serde_json::json!({ "resealed": count }));
        }
    }
    Ok(())
}

/// `portcullis healthcheck`: whether the server at `address` reports SERVING, within 3 s.
async fn healthcheck(address: &str) -> bool {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await?;
        anyhow::Ok(answer.into_inner().status == ServingStatus::Serving as i32)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), check).await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => {
            eprintln!("{url}: NOT_SERVING");
            false
        }
        Ok(Err(error)) => {
            eprintln!("{url}: {error}");
            false
        }
        Err(_) => {
            eprintln!("{url}: no answer within 3 s");
            false
        }
    }
}

/// The address to reach a server listening on `listen` from this host.
fn local_address(listen: &str) -> String {
    listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]")
}

/// The service core without a server, for commands an operator runs beside it.
async fn offline_auth(
    settings: &portcullis::Settings,
) -> anyhow::Result<portcullis::service::Auth> {
    let store = open_store(settings).await?;
    let public_url = settings.public_url_for(&settings.listen);
    build_auth(&store, settings, public_url, &Clock::default()).await
}

async fn serve(settings: portcullis::Settings) -> anyhow::Result<()> {
    return_freed_memory_while_idle();
    let shutdown = shutdown_signal();
    let app = Application::build(settings).await?;
    tracing::info!("{}", app.delivery_description());
    if let Some(project) = app.default_project() {
        print_first_start(project, &app.address().to_string());
    }
    app.run_until(shutdown).await
}

/// Printed once, on the start that created the default project: the tokens are not
/// shown again (only a hash of the admin token is kept).
///
/// Written without `println!`, which panics when nobody reads the output any more (a
/// closed pipe): the tokens are lost then, but the service keeps running.
fn print_first_start(project: &portcullis::service::CreatedProject, address: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout().lock(),
        "\nCreated the default project (shown once; keep the admin token secret):\n\
         \n  project_id:  {}\n  app_token:   {}\n  admin_token: {}\n  owner:       {}\n\
         \nTry it:\n  grpcurl -plaintext -H 'authorization: Bearer {}' -d '{{\"name\":\"you@example.com\"}}' \\\n    {} portcullis.v1.AuthenticationService/Authenticate\n",
        project.project_id,
        project.app_token,
        project.admin_token,
        project
            .owner
            .as_deref()
            .unwrap_or("(none: set PORTCULLIS_OWNER on first start)"),
        project.app_token,
        address,
    );
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed now, not when the future is
/// first polled, so a signal that arrives during start-up is not lost (or fatal).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr (text or JSON), and traces over OTLP when the environment names an
/// endpoint; returns the trace provider to flush at exit.
fn init_tracing(json: bool) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| QuietStderr)
        // Colours only for a person at a terminal, not in files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    match portcullis::traces::layer()? {
        Some((otel, provider)) => {
            registry.with(otel).init();
            Ok(Some(provider))
        }
        None => {
            registry.init();
            Ok(None)
        }
    }
}

/// Standard error for logs, ignoring write errors: a log pipe that closed (a collector
/// restarting, a parent that stopped reading) must not take the service down with it.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
