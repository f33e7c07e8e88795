//! The load generator: every hot and write path of the service, each printed beside its
//! baseline measured in the same run on the same box (the machine is noisy; only ratios
//! within one run mean something).
//!
//! Rows: the empty gRPC call; Authorize with a live opaque token, a JWT, a forged token
//! and a revoked one; ext_authz Check; a trivial HTTP route; forward auth; the Hasura
//! webhook; raw single-row insert transactions and primary-key selects on the same
//! database; code-login starts (`/api/authenticate`, new names, many addresses) and the
//! outbox draining them; raw argon2id; password logins; Authorize while password logins
//! saturate the hashing pool, and while 100 sessions a second are logged out. (The
//! memory of the real binary under mixed load is the soak's to measure: `benches/soak.rs`.)
//!
//! Run: `cargo bench --bench load`. SQLite always (one replica: one file on one host);
//! PostgreSQL too, with one and with two replicas, when PORTCULLIS_BENCH_POSTGRES_URL names
//! a server (each run gets a fresh database). PORTCULLIS_BENCH_SECONDS (5) per row,
//! PORTCULLIS_BENCH_IN_FLIGHT (64) calls in flight, PORTCULLIS_BENCH_ONLY (`sqlite`,
//! `postgres`), PORTCULLIS_BENCH_ROWS (`reads,http,writes,passwords,revocations`: the
//! groups of rows to run; the empty call and Authorize alone always run). The servers run
//! in this process. It prints figures and a Markdown table; it asserts nothing.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::domain::TrustedProxies;
use portcullis::grpc::pb::authentication_service_client::AuthenticationServiceClient;
use portcullis::grpc::pb::password_service_client::PasswordServiceClient;
use portcullis::grpc::pb::{AuthorizeRequest, LoginRequest, Role};
use portcullis::service::{Auth, Authenticated, CreatedProject, Policy};
use portcullis::{Application, Settings};
use sqlx::{Connection, Executor};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The service's allocator, so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Password accounts the login rows cycle through.
const ACCOUNTS: usize = 32;
/// Sessions logged out per second in the revocation row.
const LOGOUTS_PER_SECOND: u64 = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let load = Load {
        duration: Duration::from_secs(env_or("PORTCULLIS_BENCH_SECONDS", 5)),
        in_flight: env_or("PORTCULLIS_BENCH_IN_FLIGHT", 64),
        groups: env_or("PORTCULLIS_BENCH_ROWS", String::new())
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let only: String = env_or("PORTCULLIS_BENCH_ONLY", String::new());
    let postgres: Option<String> = std::env::var("PORTCULLIS_BENCH_POSTGRES_URL").ok();
    println!(
        "{} calls in flight, {} s a row, {} cores",
        load.in_flight,
        load.duration.as_secs(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut tables = String::new();
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let raw = format!("sqlite://{}?mode=rwc", dir.path().join("raw.db").display());
        tables += &bench("SQLite, 1 replica", &url, &raw, 1, &load).await?;
    }
    if let Some(admin) = postgres.filter(|_| only.is_empty() || only == "postgres") {
        for replicas in [1, 2] {
            let service = PostgresDatabase::create(&admin, "service").await?;
            let raw = PostgresDatabase::create(&admin, "raw").await?;
            let label = format!("PostgreSQL, {replicas} replica(s)");
            tables += &bench(&label, &service.url, &raw.url, replicas, &load).await?;
            service.drop().await?;
            raw.drop().await?;
        }
    }
    println!("\n{tables}");
    Ok(())
}

/// Runs every row against `replicas` servers on `url`; the raw baselines on `raw_url`.
/// Returns the Markdown table.
async fn bench(
    label: &str,
    url: &str,
    raw_url: &str,
    replicas: usize,
    load: &Load,
) -> anyhow::Result<String> {
    println!("\n== {label} ==");
    let cluster = Cluster::start(url, replicas).await?;
    let mut table = Table::new(label);

    // Connections up, code paths warm: the first row would otherwise pay for them.
    let forged = vec![forged_token()];
    cluster
        .authorize(&load.warm_up(), &forged, Role::Public)
        .await;
    let sessions = cluster.sessions(load.in_flight).await?;
    let opaque: Vec<String> = sessions.iter().map(|(token, _)| token.clone()).collect();
    let jwts: Vec<String> = sessions.iter().map(|(_, jwt)| jwt.clone()).collect();
    let empty_call = async |l: &Load| cluster.empty_calls(l).await;
    let authorize_alone = async |l: &Load| cluster.authorize(l, &opaque, Role::User).await;

    let (alone, empty) = load.versus(authorize_alone, empty_call).await;
    table.row(
        "Authorize, live opaque token",
        &alone,
        Some(("empty gRPC call", &empty)),
    );
    if load.wants("reads") {
        let revoked = cluster.revoked_tokens(load.in_flight).await?;
        for (row, tokens, role) in [
            ("Authorize, JWT", &jwts, Role::User),
            ("Authorize, forged opaque", &forged, Role::Public),
            (
                "Authorize, logged-out token replayed",
                &revoked,
                Role::Public,
            ),
        ] {
            let (stats, empty) = load
                .versus(
                    async |l: &Load| cluster.authorize(l, tokens, role).await,
                    empty_call,
                )
                .await;
            table.row(row, &stats, Some(("empty gRPC call", &empty)));
        }
        let raw = RawDatabase::open(raw_url).await?;
        let (stats, raw_select) = load
            .versus(
                async |l: &Load| cluster.sessions_read(l, &opaque).await,
                async |l: &Load| raw.selects(l).await,
            )
            .await;
        table.row(
            "session read from the database (cache bypassed)",
            &stats,
            Some(("raw primary-key select", &raw_select)),
        );
        let check = check_request(&opaque[0], &cluster.project.project_id);
        let (stats, empty) = load
            .versus(
                async |l: &Load| cluster.ext_authz(l, &check).await,
                empty_call,
            )
            .await;
        table.row("ext_authz Check", &stats, Some(("empty gRPC call", &empty)));
    }
    if load.wants("http") {
        let trivial = async |l: &Load| cluster.http_get(l, "/.well-known/jwks.json", None).await;
        let forward = format!("/auth/forward?project_id={}", cluster.project.project_id);
        let bearer = ("authorization", format!("Bearer {}", opaque[0]));
        let (stats, base) = load
            .versus(
                async |l: &Load| cluster.http_get(l, &forward, Some(bearer.clone())).await,
                trivial,
            )
            .await;
        table.row("forward auth", &stats, Some(("trivial HTTP route", &base)));
        let x_token = ("x-token", opaque[0].clone());
        let (stats, base) = load
            .versus(
                async |l: &Load| {
                    cluster
                        .http_get(l, "/api/hasura", Some(x_token.clone()))
                        .await
                },
                trivial,
            )
            .await;
        table.row(
            "Hasura webhook",
            &stats,
            Some(("trivial HTTP route", &base)),
        );
    }
    if load.wants("writes") {
        let raw = RawDatabase::open(raw_url).await?;
        // On SQLite the baseline is SQLite itself (its C API, one connection, as the issue
        // measured it); PostgreSQL's is an insert transaction from one sqlx connection.
        let native_path = raw_url
            .strip_prefix("sqlite://")
            .map(|path| path.split('?').next().unwrap_or(path).to_owned() + ".native");
        // Mail delivery goes on during the baseline's turns too: what waited at the end of
        // each code-start turn says whether it kept up with the row.
        let waiting = std::sync::atomic::AtomicI64::new(0);
        // The process's CPU time during the code-start turns: steadier than the rate on a
        // noisy machine, and it counts the mail delivered meanwhile.
        let cpu_in_turns = std::sync::Mutex::new(Duration::ZERO);
        let (stats, baseline) = load
            .versus(
                async |l: &Load| {
                    let before = process_cpu_time();
                    let stats = cluster.code_starts(l).await;
                    if let (Some(before), Some(after)) = (before, process_cpu_time()) {
                        *cpu_in_turns.lock().unwrap() += after.saturating_sub(before);
                    }
                    waiting.fetch_max(cluster.outbox_backlog().await, Ordering::Relaxed);
                    stats
                },
                async |l: &Load| match &native_path {
                    Some(path) => {
                        let (path, duration) = (path.clone(), l.duration);
                        tokio::task::spawn_blocking(move || native_sqlite_inserts(&path, duration))
                            .await
                            .expect("the raw insert thread")
                            .expect("raw inserts")
                    }
                    None => raw.inserts(l).await,
                },
            )
            .await;
        let baseline_name = match native_path {
            Some(_) => "raw insert transaction, SQLite's C API",
            None => "raw insert transaction, sqlx",
        };
        table.row(
            "code-login start (new names, many addresses)",
            &stats,
            Some((baseline_name, &baseline)),
        );
        if raw_url.starts_with("sqlite:") {
            let through_sqlx = raw.inserts(load).await;
            table.row("raw insert transaction, sqlx", &through_sqlx, None);
        }
        let cpu = cpu_in_turns.into_inner().unwrap();
        if !cpu.is_zero() && !stats.latencies.is_empty() {
            table.note(format!(
                "CPU per code start (service, its mail and the in-process client, all \
                 threads): {:.0} µs",
                cpu.as_secs_f64() * 1e6 / stats.latencies.len() as f64
            ));
        }
        let (mails, drained) = cluster.drain_outbox().await?;
        table.note(format!(
            "outbox: at most {} messages waiting at the end of a code-start turn; {mails} left \
             after the row, drained in {:.1} s",
            waiting.into_inner(),
            drained.as_secs_f64()
        ));
        let disk = tempfile::tempdir()?;
        table.note(format!(
            "mail written as files to {} ({:.0} µs a file; {:.0} µs on the disk beside the \
             database)",
            cluster._outbox.path().display(),
            file_cost(cluster._outbox.path())?.as_secs_f64() * 1e6,
            file_cost(disk.path())?.as_secs_f64() * 1e6,
        ));
    }
    if load.wants("passwords") {
        let accounts = cluster.password_accounts().await?;
        // Each replica hashes on its own pool.
        let concurrency = Policy::default().password_hashing_concurrency * replicas;
        let (stats, hashing) = load
            .versus(
                async |l: &Load| cluster.password_logins(l, &accounts).await,
                async |l: &Load| raw_argon2(l.duration, concurrency).await,
            )
            .await;
        table.row(
            "password login",
            &stats,
            Some((&format!("raw argon2id x {concurrency} thread(s)"), &hashing)),
        );
        let logins = std::sync::Mutex::new(Stats::default());
        let (during, alone) = load
            .versus(
                async |l: &Load| {
                    let (login, during) = tokio::join!(
                        cluster.password_logins(l, &accounts),
                        cluster.authorize(l, &opaque, Role::User)
                    );
                    logins.lock().expect("stats").merge(login);
                    during
                },
                authorize_alone,
            )
            .await;
        table.row(
            "Authorize while logins saturate hashing",
            &during,
            Some(("Authorize alone", &alone)),
        );
        let logins = logins.into_inner().expect("stats");
        table.row("  (password logins meanwhile)", &logins, None);
    }
    if load.wants("revocations") {
        let logged_out = Arc::new(AtomicU64::new(0));
        let active = Arc::new(AtomicBool::new(false));
        let revoker = tokio::spawn(
            cluster
                .clone()
                .log_out_continuously(logged_out.clone(), active.clone()),
        );
        let (during, alone) = load
            .versus(
                async |l: &Load| {
                    active.store(true, Ordering::SeqCst);
                    let stats = cluster.authorize(l, &opaque, Role::User).await;
                    active.store(false, Ordering::SeqCst);
                    stats
                },
                authorize_alone,
            )
            .await;
        revoker.abort();
        let logouts = logged_out.load(Ordering::Relaxed) as f64 / during.elapsed.as_secs_f64();
        table.row(
            &format!("Authorize while {logouts:.0} sessions/s are logged out"),
            &during,
            Some(("Authorize alone", &alone)),
        );
    }
    Ok(table.markdown())
}

/// How hard and how long each row pushes.
struct Load {
    duration: Duration,
    in_flight: usize,
    /// Row groups to run (`reads`, `http`, `writes`, `passwords`, `revocations`); empty: all.
    groups: Vec<String>,
}

/// Latencies of one row (or of its baseline), merged over the slices it ran in.
#[derive(Clone, Default)]
struct Stats {
    latencies: Vec<Duration>,
    failures: u64,
    elapsed: Duration,
    /// Calls/s are multiplied by this (a one-thread baseline standing for several).
    scale: f64,
}

impl Load {
    fn wants(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }

    fn warm_up(&self) -> Load {
        Load {
            duration: Duration::from_secs(1),
            in_flight: self.in_flight,
            groups: Vec::new(),
        }
    }

    /// `row` and `baseline` in turns, a second each, for the row's duration each: this
    /// machine's speed changes by 2x from minute to minute, and a ratio is only worth
    /// something when both sides saw the same machine.
    async fn versus(
        &self,
        row: impl AsyncFn(&Load) -> Stats,
        baseline: impl AsyncFn(&Load) -> Stats,
    ) -> (Stats, Stats) {
        let slice = self.warm_up();
        let (mut row_stats, mut base_stats) = (Stats::default(), Stats::default());
        for _ in 0..self.duration.as_secs().max(1) {
            row_stats.merge(row(&slice).await);
            base_stats.merge(baseline(&slice).await);
        }
        (row_stats, base_stats)
    }

    /// `in_flight` loops calling `call(worker)` for the row's duration.
    async fn run<F, Fut>(&self, call: F) -> Stats
    where
        F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send,
    {
        self.run_with(self.in_flight, call).await
    }

    async fn run_with<F, Fut>(&self, in_flight: usize, call: F) -> Stats
    where
        F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let started = Instant::now();
        let deadline = started + self.duration;
        let workers: Vec<_> = (0..in_flight)
            .map(|worker| {
                let call = call.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failures = 0u64;
                    while Instant::now() < deadline {
                        let start = Instant::now();
                        if !call(worker).await {
                            failures += 1;
                        }
                        latencies.push(start.elapsed());
                    }
                    (latencies, failures)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut failures = 0;
        for worker in workers {
            let (l, f) = worker.await.expect("worker");
            latencies.extend(l);
            failures += f;
        }
        // Until the last call ended: slow calls (password logins) run past the deadline.
        Stats::of(latencies, failures, started.elapsed())
    }
}

impl Stats {
    fn of(latencies: Vec<Duration>, failures: u64, elapsed: Duration) -> Stats {
        Stats {
            latencies,
            failures,
            elapsed,
            scale: 1.0,
        }
    }

    fn merge(&mut self, other: Stats) {
        self.latencies.extend(other.latencies);
        self.failures += other.failures;
        self.elapsed += other.elapsed;
        self.scale = other.scale;
    }

    fn rate(&self) -> f64 {
        self.scale * self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 * p) as usize).min(sorted.len().max(1) - 1);
        sorted.get(at).copied().unwrap_or_default()
    }
}

/// The rows of one configuration, printed as they come and as Markdown at the end.
struct Table {
    title: String,
    rows: Vec<String>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: &str) -> Table {
        Table {
            title: title.to_owned(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, label: &str, stats: &Stats, baseline: Option<(&str, &Stats)>) {
        let ratio = baseline
            .map(|(name, base)| {
                format!(
                    "{:.2}x {name} ({:.0}/s)",
                    stats.rate() / base.rate(),
                    base.rate()
                )
            })
            .unwrap_or_default();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (p50, p99) = (ms(stats.percentile(0.50)), ms(stats.percentile(0.99)));
        println!(
            "{label:<46} {:>9.0}/s  p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  failures {:<5} {ratio}",
            stats.rate(),
            stats.failures
        );
        self.rows.push(format!(
            "| {label} | {:.0}/s | {p50:.2} ms | {p99:.2} ms | {} | {ratio} |",
            stats.rate(),
            stats.failures
        ));
    }

    fn note(&mut self, note: String) {
        println!("{note}");
        self.notes.push(note);
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "### {}\n\n| row | rate | p50 | p99 | failures | against its baseline |\n| --- | ---: | ---: | ---: | ---: | --- |\n",
            self.title
        );
        for row in &self.rows {
            let _ = writeln!(out, "{row}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out + "\n"
    }
}

/// Servers sharing one database, with a project, and clients for each.
#[derive(Clone)]
struct Cluster {
    auths: Vec<Auth>,
    grpc: Vec<Channel>,
    http_bases: Vec<String>,
    http: Http1,
    project: Arc<CreatedProject>,
    _outbox: Arc<tempfile::TempDir>,
}

/// The HTTP rows' client, a load generator's as wrk is one: a keep-alive HTTP/1.1
/// connection per worker, made on first use, each request written as bytes and its answer
/// read by its Content-Length, nothing else between it and the service. reqwest's pool and
/// layers took ~15 % of a code start's CPU on this 2-core box, and hyper's client
/// connection after it (a task per connection, a channel to it, header maps both ways)
/// still ~10 %: that is not the service's.
#[derive(Clone, Default)]
struct Http1 {
    connections: Arc<std::sync::Mutex<Vec<Http1Slot>>>,
}

/// A worker's connection, once made (and until it breaks).
type Http1Slot = Arc<tokio::sync::Mutex<Option<Http1Connection>>>;

struct Http1Connection {
    stream: tokio::net::TcpStream,
    /// What has been read and not yet taken.
    received: Vec<u8>,
}

impl Http1 {
    /// GET `path` (with its query) from `address` on `worker`'s connection: whether the
    /// answer was a 200 (its body read, so the connection can carry the next request).
    async fn get_ok(
        &self,
        worker: usize,
        address: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> bool {
        let slot = {
            let mut connections = self.connections.lock().unwrap();
            if connections.len() <= worker {
                connections.resize_with(worker + 1, Default::default);
            }
            connections[worker].clone()
        };
        let mut connection = slot.lock().await;
        if connection.is_none() {
            *connection = Http1Connection::open(address).await;
        }
        let Some(open) = connection.as_mut() else {
            return false;
        };
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\n");
        for (name, value) in headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        request.push_str("\r\n");
        match open.exchange(request.as_bytes()).await {
            Some((status, true)) => status == 200,
            Some((status, false)) => {
                *connection = None;
                status == 200
            }
            None => {
                // Broken, closed, or an answer this client does not read: a new one next.
                *connection = None;
                false
            }
        }
    }
}

impl Http1Connection {
    async fn open(address: &str) -> Option<Http1Connection> {
        let stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Http1Connection {
            stream,
            received: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` and reads its answer whole: its status and whether the connection
    /// stays open; `None` when it broke or the answer has no length.
    async fn exchange(&mut self, request: &[u8]) -> Option<(u16, bool)> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await.ok()?;
        let head_end = loop {
            if let Some(at) = self.received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.read_more().await?;
        };
        let head = std::str::from_utf8(&self.received[..head_end]).ok()?;
        let status = head.get(9..12)?.parse().ok()?;
        let mut length = None;
        let mut keeps_open = true;
        for line in head.split("\r\n").skip(1) {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                keeps_open = !value.trim().eq_ignore_ascii_case("close");
            }
        }
        // Every answer of the rows' routes has a length (none is chunked).
        let end = head_end + length?;
        while self.received.len() < end {
            self.read_more().await?;
        }
        self.received.drain(..end);
        Some((status, keeps_open))
    }

    async fn read_more(&mut self) -> Option<()> {
        use tokio::io::AsyncReadExt;
        self.received.reserve(4096);
        match self.stream.read_buf(&mut self.received).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(()),
        }
    }
}

impl Cluster {
    async fn start(url: &str, replicas: usize) -> anyhow::Result<Cluster> {
        let outbox = mail_folder()?;
        let mut cluster = Cluster {
            auths: Vec::new(),
            grpc: Vec::new(),
            http_bases: Vec::new(),
            http: Http1::default(),
            project: Arc::new(CreatedProject {
                project_id: String::new(),
                name: String::new(),
                app_token: String::new(),
                admin_token: String::new(),
                owner: None,
            }),
            _outbox: Arc::new(outbox),
        };
        for _ in 0..replicas {
            let mut settings = Settings::for_database(url);
            settings.mail_outbox = cluster._outbox.path().to_owned();
            // One issuer for every replica, as behind one load balancer.
            settings.public_url = Some("http://portcullis.bench".into());
            // One master key for every replica (PostgreSQL asks for one).
            settings.master_key = Some("YmVuY2ggbWFzdGVyIGtleSBvZiAzMiBieXRlcyEhISE=".into());
            // Clients reach us through a proxy on loopback that names them.
            settings.policy.trusted_proxies =
                TrustedProxies::parse("127.0.0.1/32").map_err(anyhow::Error::msg)?;
            let app = Application::build(settings).await?;
            let address = app.address();
            cluster.auths.push(app.auth().clone());
            tokio::spawn(app.run_until(std::future::pending()));
            cluster.grpc.push(
                Channel::from_shared(format!("http://{address}"))?
                    .connect()
                    .await?,
            );
            cluster.http_bases.push(address.to_string());
        }
        let project = cluster.auths[0]
            .create_project("Bench", None, true, false)
            .await?;
        cluster.project = Arc::new(project);
        Ok(cluster)
    }

    fn replica(&self, worker: usize) -> &Auth {
        &self.auths[worker % self.auths.len()]
    }

    /// `count` anonymous sessions: (opaque token, JWT).
    async fn sessions(&self, count: usize) -> anyhow::Result<Vec<(String, String)>> {
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            let Authenticated::Anonymous(session) = self.auths[0]
                .authenticate(&self.project.app_token, "", None)
                .await?
            else {
                anyhow::bail!("anonymous login did not return a session");
            };
            sessions.push((session.token, session.jwt));
        }
        Ok(sessions)
    }

    /// Tokens of sessions that were live (and cached) and then logged out.
    async fn revoked_tokens(&self, count: usize) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::new();
        for (i, (token, _)) in self.sessions(count).await?.into_iter().enumerate() {
            self.replica(i).authorize(&token).await?;
            self.auths[0].logout(&token).await?;
            tokens.push(token);
        }
        Ok(tokens)
    }

    /// The hot path's database read itself (what a cache miss costs), worker `i` with
    /// token `i`.
    async fn sessions_read(&self, load: &Load, tokens: &[String]) -> Stats {
        let (auths, tokens) = (self.auths.clone(), Arc::new(tokens.to_vec()));
        load.run(move |worker| {
            let auth = auths[worker % auths.len()].clone();
            let token = tokens[worker % tokens.len()].clone();
            async move { auth.get_user(&token).await.is_ok() }
        })
        .await
    }

    /// Health Check over gRPC: the empty call every gRPC row is compared with.
    async fn empty_calls(&self, load: &Load) -> Stats {
        let clients: Vec<_> = self.grpc.iter().cloned().map(HealthClient::new).collect();
        load.run(move |worker| {
            let mut client = clients[worker % clients.len()].clone();
            async move {
                let request = HealthCheckRequest {
                    service: String::new(),
                };
                client.check(request).await.is_ok()
            }
        })
        .await
    }

    /// Envoy's ext_authz Check, expecting an OK.
    async fn ext_authz(&self, load: &Load, check: &CheckRequest) -> Stats {
        let clients: Vec<_> = self
            .grpc
            .iter()
            .cloned()
            .map(AuthorizationClient::new)
            .collect();
        let check = Arc::new(check.clone());
        load.run(move |worker| {
            let mut client = clients[worker % clients.len()].clone();
            let request = (*check).clone();
            async move {
                let answer = client.check(request).await;
                answer.is_ok_and(|a| a.into_inner().status.is_some_and(|s| s.code == 0))
            }
        })
        .await
    }

    /// Authorize over gRPC, worker `i` with token `i` (cycling), expecting `role`.
    async fn authorize(&self, load: &Load, tokens: &[String], role: Role) -> Stats {
        let clients: Vec<_> = self
            .grpc
            .iter()
            .cloned()
            .map(AuthenticationServiceClient::new)
            .collect();
        let tokens = Arc::new(tokens.to_vec());
        load.run(move |worker| {
            let mut client = clients[worker % clients.len()].clone();
            let token = tokens[worker % tokens.len()].clone();
            async move {
                let request = AuthorizeRequest {
                    token,
                    ..Default::default()
                };
                let answer = client.authorize(request).await;
                answer.is_ok_and(|a| a.into_inner().role() == role)
            }
        })
        .await
    }

    async fn http_get(&self, load: &Load, path: &str, header: Option<(&str, String)>) -> Stats {
        let (http, bases, path) = (self.http.clone(), self.http_bases.clone(), path.to_owned());
        let header = header.map(|(n, v)| (n.to_owned(), v));
        load.run(move |worker| {
            let (http, base, path, header) = (
                http.clone(),
                bases[worker % bases.len()].clone(),
                path.clone(),
                header.clone(),
            );
            async move {
                let header = header.as_ref().map(|(n, v)| (n.as_str(), v.as_str()));
                http.get_ok(worker, &base, &path, header.as_slice()).await
            }
        })
        .await
    }

    /// `/api/authenticate` with a name never seen, from a client address of its own /24.
    async fn code_starts(&self, load: &Load) -> Stats {
        // Across the row's turns too: a name seen before would be a lighter login.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let (http, bases) = (self.http.clone(), self.http_bases.clone());
        let app_token = self.project.app_token.clone();
        load.run(move |worker| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = format!("/api/authenticate?token={app_token}&name=bench-{n}%40example.com");
            let forwarded = format!("10.{}.{}.7", (n >> 8) & 0xff, n & 0xff);
            let (http, base) = (http.clone(), bases[worker % bases.len()].clone());
            async move {
                http.get_ok(worker, &base, &path, &[("x-forwarded-for", &forwarded)])
                    .await
            }
        })
        .await
    }

    /// Waits (at most a minute) until every queued message went out: (messages queued
    /// when the wait began, how long it took).
    async fn drain_outbox(&self) -> anyhow::Result<(i64, Duration)> {
        let started = Instant::now();
        let first = self.outbox_backlog().await;
        while self.outbox_backlog().await != 0 && started.elapsed().as_secs() < 60 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((first, started.elapsed()))
    }

    /// Messages not delivered yet (-1: unknown).
    async fn outbox_backlog(&self) -> i64 {
        self.auths[0].load().await.outbox.map_or(-1, |(n, _)| n)
    }

    /// Registers the password accounts: (email, password).
    async fn password_accounts(&self) -> anyhow::Result<Arc<Vec<(String, String)>>> {
        let mut accounts = Vec::new();
        for i in 0..ACCOUNTS {
            let email = format!("password-{i}@example.com");
            let password = format!("{}-{i}-staple", forged_token());
            self.auths[0]
                .register_password(&self.project.project_id, &email, &password)
                .await?;
            accounts.push((email, password));
        }
        Ok(Arc::new(accounts))
    }

    /// Password logins over gRPC, 32 in flight, each worker on an account of its own.
    async fn password_logins(&self, load: &Load, accounts: &Arc<Vec<(String, String)>>) -> Stats {
        let clients: Vec<_> = self
            .grpc
            .iter()
            .cloned()
            .map(PasswordServiceClient::new)
            .collect();
        let (accounts, project_id) = (accounts.clone(), self.project.project_id.clone());
        load.run_with(ACCOUNTS, move |worker| {
            let mut client = clients[worker % clients.len()].clone();
            let (username, password) = accounts[worker].clone();
            let project_id = project_id.clone();
            async move {
                let request = LoginRequest {
                    project_id,
                    username,
                    password,
                };
                client.login(request).await.is_ok()
            }
        })
        .await
    }

    /// Forever, while `active`: LOGOUTS_PER_SECOND times a second, a session is opened, authorized on
    /// one replica (so it is cached there) and logged out on another.
    async fn log_out_continuously(self, done: Arc<AtomicU64>, active: Arc<AtomicBool>) {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / LOGOUTS_PER_SECOND));
        for n in 0usize.. {
            tick.tick().await;
            if !active.load(Ordering::SeqCst) {
                continue;
            }
            let (cluster, done) = (self.clone(), done.clone());
            tokio::spawn(async move {
                let opened = cluster
                    .replica(n)
                    .authenticate(&cluster.project.app_token, "", None);
                let Ok(Authenticated::Anonymous(session)) = opened.await else {
                    return;
                };
                let _ = cluster.replica(n + 1).authorize(&session.token).await;
                if cluster.replica(n).logout(&session.token).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

/// The baselines' own database (a separate file or database): single-row insert
/// transactions from one connection, and primary-key selects over a pool the service's
/// size.
struct RawDatabase {
    url: String,
    pool: sqlx::AnyPool,
}

impl RawDatabase {
    async fn open(url: &str) -> anyhow::Result<RawDatabase> {
        sqlx::any::install_default_drivers();
        let pool_size = if url.starts_with("sqlite") { 8 } else { 16 };
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(pool_size)
            .connect(url)
            .await?;
        let mut conn = pool.acquire().await?;
        if url.starts_with("sqlite") {
            // As the service's: WAL, NORMAL sync.
            conn.execute("PRAGMA journal_mode = WAL").await?;
            conn.execute("PRAGMA synchronous = NORMAL").await?;
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_rows (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL)",
            )
            .await?;
        } else {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_rows (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL, created_at BIGINT NOT NULL)",
            )
            .await?;
        }
        for i in 0..1000i64 {
            sqlx::query("INSERT INTO bench_rows (name, created_at) VALUES ($1, $2)")
                .bind(format!("seed-{i}"))
                .bind(i)
                .execute(&mut *conn)
                .await?;
        }
        drop(conn);
        Ok(RawDatabase {
            url: url.to_owned(),
            pool,
        })
    }

    /// Single-row insert transactions from one connection, as fast as they go.
    async fn inserts(&self, load: &Load) -> Stats {
        let Ok(mut conn) = sqlx::AnyConnection::connect(&self.url).await else {
            return Stats::of(Vec::new(), 1, load.duration);
        };
        let mut latencies = Vec::new();
        let mut failures = 0;
        let started = Instant::now();
        while started.elapsed() < load.duration {
            let start = Instant::now();
            let done = async {
                let mut tx = conn.begin().await?;
                sqlx::query("INSERT INTO bench_rows (name, created_at) VALUES ($1, $2)")
                    .bind("row")
                    .bind(0i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            };
            if done.await.is_err() {
                failures += 1;
            }
            latencies.push(start.elapsed());
        }
        Stats::of(latencies, failures, started.elapsed())
    }

    /// Primary-key selects, `in_flight` at once.
    async fn selects(&self, load: &Load) -> Stats {
        let pool = self.pool.clone();
        load.run(move |worker| {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT name, created_at FROM bench_rows WHERE id = $1")
                    .bind((worker % 1000) as i64 + 1)
                    .fetch_optional(&pool)
                    .await
                    .is_ok_and(|row| row.is_some())
            }
        })
        .await
    }
}

/// A SQLite connection through the C API, with no driver between.
struct NativeSqlite(*mut libsqlite3_sys::sqlite3);

impl NativeSqlite {
    fn open(path: &str) -> anyhow::Result<NativeSqlite> {
        let file = std::ffi::CString::new(path)?;
        let mut db = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; closed on drop.
        let rc = unsafe { libsqlite3_sys::sqlite3_open(file.as_ptr(), &mut db) };
        let db = NativeSqlite(db);
        anyhow::ensure!(rc == libsqlite3_sys::SQLITE_OK, "sqlite3_open failed: {rc}");
        db.exec(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000",
        )?;
        Ok(db)
    }

    /// Runs `sql` (one or more statements, no parameters).
    fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let sql = std::ffi::CString::new(sql)?;
        // SAFETY: the connection is open; sql is NUL-terminated; no callback.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_exec(
                self.0,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        anyhow::ensure!(rc == libsqlite3_sys::SQLITE_OK, "sqlite3_exec failed: {rc}");
        Ok(())
    }
}

impl Drop for NativeSqlite {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once; statements are finalized by then.
        unsafe { libsqlite3_sys::sqlite3_close(self.0) };
    }
}

/// CPU time used by this process so far, all threads (Linux: /proc/self/stat, in clock
/// ticks of 10 ms); `None` elsewhere.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Where the service writes its mail: in memory (tmpfs) where the machine has one. The
/// bench measures the service; a file per message on a disk measures the disk's inode
/// allocator (on some machines here ~0.5 ms of kernel time a file, more than a whole code
/// start). Production sends through SMTP.
fn mail_folder() -> anyhow::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    Ok(if shm.is_dir() {
        tempfile::tempdir_in(shm)?
    } else {
        tempfile::tempdir()?
    })
}

/// Time to write one small file the way the outbox does (write, then rename), in `dir`.
fn file_cost(dir: &std::path::Path) -> anyhow::Result<Duration> {
    const FILES: u32 = 500;
    let dir = tempfile::tempdir_in(dir)?;
    let body = vec![b'x'; 3000];
    let started = Instant::now();
    for i in 0..FILES {
        let partial = dir.path().join(format!("{i}.partial"));
        std::fs::write(&partial, &body)?;
        std::fs::rename(&partial, dir.path().join(format!("{i}.eml")))?;
    }
    Ok(started.elapsed() / FILES)
}

/// Single-row insert transactions through SQLite's C API, one connection, WAL and NORMAL
/// sync, the insert prepared once: the database's own limit.
fn native_sqlite_inserts(path: &str, duration: Duration) -> anyhow::Result<Stats> {
    use libsqlite3_sys as ffi;
    let db = NativeSqlite::open(path)?;
    db.exec(
        "CREATE TABLE IF NOT EXISTS bench_rows (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL)",
    )?;
    let insert =
        std::ffi::CString::new("INSERT INTO bench_rows (name, created_at) VALUES (?1, ?2)")?;
    let mut statement = std::ptr::null_mut();
    // SAFETY: the connection is open; the statement is finalized below.
    let rc = unsafe {
        ffi::sqlite3_prepare_v2(
            db.0,
            insert.as_ptr(),
            -1,
            &mut statement,
            std::ptr::null_mut(),
        )
    };
    anyhow::ensure!(rc == ffi::SQLITE_OK, "prepare failed: {rc}");
    let mut latencies = Vec::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let start = Instant::now();
        let name = format!("row-{}", latencies.len());
        db.exec("BEGIN")?;
        // SAFETY: statement is prepared; SQLITE_TRANSIENT copies the text.
        let rc = unsafe {
            ffi::sqlite3_bind_text(
                statement,
                1,
                name.as_ptr().cast(),
                name.len() as i32,
                ffi::SQLITE_TRANSIENT(),
            );
            ffi::sqlite3_bind_int64(statement, 2, latencies.len() as i64);
            let rc = ffi::sqlite3_step(statement);
            ffi::sqlite3_reset(statement);
            rc
        };
        anyhow::ensure!(rc == ffi::SQLITE_DONE, "insert failed: {rc}");
        db.exec("COMMIT")?;
        latencies.push(start.elapsed());
    }
    // SAFETY: created above and not used after.
    unsafe { ffi::sqlite3_finalize(statement) };
    Ok(Stats::of(latencies, 0, duration))
}

/// argon2id at the service's parameters (m=19456 KiB, t=2, p=1) on one core, counted
/// as `threads` cores' worth.
async fn raw_argon2(duration: Duration, threads: usize) -> Stats {
    tokio::task::spawn_blocking(move || {
        use argon2::{Algorithm, Argon2, Params, Version};
        let params = Params::new(19_456, 2, 1, Some(32)).expect("parameters");
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = [0u8; 32];
        let mut latencies = Vec::new();
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            let start = Instant::now();
            argon2
                .hash_password_into(
                    b"correct horse battery staple",
                    b"sixteen byte salt",
                    &mut out,
                )
                .expect("hash");
            latencies.push(start.elapsed());
        }
        Stats {
            scale: threads as f64,
            ..Stats::of(latencies, 0, duration)
        }
    })
    .await
    .expect("hashing thread")
}

/// An opaque token never issued: random bytes and a wrong tag, as an attacker sends.
fn forged_token() -> String {
    use base64::Engine;
    let mut body = [0u8; 42];
    getrandom::getrandom(&mut body).expect("randomness");
    format!(
        "usr_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    )
}

/// A Check as Envoy sends it for a request carrying `token`, on a route bound to `project`.
fn check_request(token: &str, project: &str) -> CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/orders/1".into(),
                    headers: [("authorization".to_owned(), format!("Bearer {token}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("project_id".to_owned(), project.to_owned())].into(),
            ..Default::default()
        }),
    }
}

/// A fresh database on a PostgreSQL server, dropped at the end.
struct PostgresDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    async fn create(admin: &str, purpose: &str) -> anyhow::Result<PostgresDatabase> {
        let mut salt = [0u8; 4];
        getrandom::getrandom(&mut salt)?;
        let name = format!(
            "portcullis_bench_{purpose}_{}_{}",
            std::process::id(),
            u32::from_le_bytes(salt)
        );
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        Ok(PostgresDatabase {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn drop(self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await?;
        Ok(())
    }
}
