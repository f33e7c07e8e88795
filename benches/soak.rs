//! Soak: minutes of mixed load against real `portcullis` processes, with a fault injected
//! every minute, and a report of what each fault cost and how fast the service healed.
//!
//! Load: Authorize calls on live sessions, code logins whose codes arrive by mail at an SMTP
//! sink run here (and are confirmed from that mail), password logins, logouts.
//! Faults, in turn: clients cancelling requests mid-flight, the database link frozen for 5 s
//! (PostgreSQL, through a relay run here), SMTP down for 20 s, one replica killed with -9 and
//! restarted.
//!
//! Run: `cargo bench --bench soak` (release build). Settings by environment:
//! PORTCULLIS_SOAK_SECONDS (600), PORTCULLIS_SOAK_BACKEND (`sqlite`, `postgres` or `both`;
//! sqlite), PORTCULLIS_SOAK_POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres),
//! PORTCULLIS_SOAK_FAULT_EVERY (60 s). SQLite runs one replica (it is one file on one host);
//! PostgreSQL runs two. It prints a Markdown report; it asserts nothing.

use portcullis::grpc::pb::authentication_service_client::AuthenticationServiceClient;
use portcullis::grpc::pb::password_service_client::PasswordServiceClient;
use portcullis::grpc::pb::verification_service_client::VerificationServiceClient;
use portcullis::grpc::pb::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tonic::transport::Channel;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `PORTCULLIS_SOAK_MODE=mail` measures mail throughput instead: how many mails a
    // second one replica hands to a local SMTP sink (the sink's own count) while logins
    // pour in.
    if env_or("PORTCULLIS_SOAK_MODE", String::new()) == "mail" {
        println!(
            "{}",
            mail_throughput(env_or("PORTCULLIS_SOAK_MAILS", 2000)).await?
        );
        return Ok(());
    }
    let seconds: u64 = env_or("PORTCULLIS_SOAK_SECONDS", 600);
    let fault_every: u64 = env_or("PORTCULLIS_SOAK_FAULT_EVERY", 60);
    let backend: String = env_or("PORTCULLIS_SOAK_BACKEND", "sqlite".to_owned());
    let backends: Vec<&str> = match backend.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "postgres" => vec!["postgres"],
        _ => vec!["sqlite"],
    };
    for backend in backends {
        let report = soak(
            backend,
            Duration::from_secs(seconds),
            Duration::from_secs(fault_every),
        )
        .await?;
        println!("{report}");
    }
    Ok(())
}

/// Queues `mails` code logins as fast as 64 callers can, then waits for the sink to have
/// them all; mails/s from the first request to the last mail.
async fn mail_throughput(mails: u64) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let sink = SmtpSink::start().await?;
    let master_key = dir.path().join("master.key");
    std::fs::write(&master_key, base64_key())?;
    let url = format!("sqlite://{}", dir.path().join("mail.db").display());
    let mut replica = Replica::new(0, &url, sink.port, dir.path(), &master_key)?;
    replica.start().await?;
    let project = replica
        .first_start
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no default project"))?;
    let channel = replica.channel();
    let started = Instant::now();
    let counter = Arc::new(AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (channel, token, counter) =
            (channel.clone(), project.app_token.clone(), counter.clone());
        callers.spawn(async move {
            let client = AuthenticationServiceClient::new(channel);
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= mails {
                    return;
                }
                let request = with_deadline(
                    AuthenticateRequest {
                        name: format!("m{n}@soak.test"),
                    },
                    Some(&token),
                    Some(&client_address(n)),
                );
                let _ = client.clone().authenticate(request).await;
            }
        });
    }
    while callers.join_next().await.is_some() {}
    let queued = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (sink.mails.lock().unwrap().len() as u64) < mails && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = sink.mails.lock().unwrap().len();
    let elapsed = started.elapsed();
    replica.stop().await;
    Ok(format!(
        "mail throughput: {delivered} of {mails} mails at the sink in {:.1} s = {:.0} mails/s \
         (logins queued in {:.1} s = {:.0}/s)",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        queued.as_secs_f64(),
        mails as f64 / queued.as_secs_f64(),
    ))
}

// ---------------------------------------------------------------------------------------
// The run

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Cancellations,
    DatabaseFreeze,
    SmtpDown,
    KillReplica,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::Cancellations => "400 calls cancelled mid-flight (1-20 ms deadlines)",
            Fault::DatabaseFreeze => "database link frozen 5 s",
            Fault::SmtpDown => "SMTP down 20 s",
            Fault::KillReplica => "one replica killed -9, restarted",
        }
    }
}

struct FaultRecord {
    fault: Fault,
    started: f64,
    ended: f64,
}

async fn soak(backend: &str, duration: Duration, fault_every: Duration) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let sink = SmtpSink::start().await?;
    let (database_url, relay, pg_cleanup) = match backend {
        "postgres" => {
            let admin: String = env_or(
                "PORTCULLIS_SOAK_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            );
            let name = format!("portcullis_soak_{}", uuid::Uuid::new_v4().simple());
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&admin).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await?;
            pool.close().await;
            let relay = Relay::start("127.0.0.1:5432".into()).await?;
            let (user, _) = admin.split_once('@').unwrap_or(("postgres://postgres", ""));
            let url = format!("{user}@127.0.0.1:{}/{name}?sslmode=disable", relay.port);
            (url, Some(relay), Some((admin, name)))
        }
        _ => (
            format!("sqlite://{}", dir.path().join("soak.db").display()),
            None,
            None,
        ),
    };
    let replicas_wanted = if backend == "postgres" { 2 } else { 1 };
    let master_key = dir.path().join("master.key");
    std::fs::write(&master_key, base64_key())?;
    let mut replicas = Vec::new();
    for i in 0..replicas_wanted {
        let mut replica = Replica::new(i, &database_url, sink.port, dir.path(), &master_key)?;
        replica.start().await?;
        replicas.push(replica);
    }
    let project = replicas[0]
        .first_start
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the first replica printed no default project"))?;
    let channels: Vec<Channel> = replicas.iter().map(|r| r.channel()).collect();
    let addresses: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://127.0.0.1:{}", r.port))
        .collect();
    let replicas = Arc::new(tokio::sync::Mutex::new(replicas));

    let stats = Stats::new();
    let sessions = Sessions::default();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));

    // Password accounts, registered before the clock starts.
    let passwords = PasswordServiceClient::new(channels[0].clone());
    let accounts: Vec<String> = (0..32).map(|i| format!("pw{i}@soak.test")).collect();
    for email in &accounts {
        passwords
            .clone()
            .register(RegisterRequest {
                project_id: project.project_id.clone(),
                email: email.clone(),
                password: PASSWORD.into(),
            })
            .await?;
    }

    let mut tasks = Vec::new();
    for worker in 0..16 {
        tasks.push(tokio::spawn(authorize_loop(
            channels[worker % channels.len()].clone(),
            sessions.clone(),
            stats.clone(),
            stop.clone(),
        )));
    }
    for worker in 0..4 {
        tasks.push(tokio::spawn(code_login_loop(
            channels[worker % channels.len()].clone(),
            project.app_token.clone(),
            sink.clone(),
            sessions.clone(),
            stats.clone(),
            stop.clone(),
            counter.clone(),
            acked.clone(),
        )));
    }
    for worker in 0..2 {
        tasks.push(tokio::spawn(password_login_loop(
            channels[worker % channels.len()].clone(),
            project.project_id.clone(),
            accounts.clone(),
            sessions.clone(),
            stats.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(logout_loop(
        channels.clone(),
        sessions.clone(),
        stats.clone(),
        stop.clone(),
    )));
    let rss = tokio::spawn(sample_rss(replicas.clone(), stats.clone(), stop.clone()));

    // The faults, in turn, the first half a period in.
    let mut faults = vec![Fault::Cancellations];
    if relay.is_some() {
        faults.push(Fault::DatabaseFreeze);
    }
    faults.extend([Fault::SmtpDown, Fault::KillReplica]);
    let mut records = Vec::new();
    let mut next = fault_every / 2;
    let mut turn = 0;
    while stats.elapsed() + next.as_secs_f64() < duration.as_secs_f64() {
        tokio::time::sleep(next).await;
        let fault = faults[turn % faults.len()];
        turn += 1;
        let started = stats.elapsed();
        match fault {
            Fault::Cancellations => {
                cancellations(&addresses, &project, counter.clone()).await;
            }
            Fault::DatabaseFreeze => {
                let relay = relay.as_ref().expect("relay");
                relay.freeze(true);
                tokio::time::sleep(Duration::from_secs(5)).await;
                relay.freeze(false);
            }
            Fault::SmtpDown => {
                sink.down.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(20)).await;
                sink.down.store(false, Ordering::SeqCst);
            }
            Fault::KillReplica => {
                let mut replicas = replicas.lock().await;
                let victim = turn % replicas.len();
                replicas[victim].kill9().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(error) = replicas[victim].start().await {
                    eprintln!("restart failed: {error}");
                }
            }
        }
        records.push(FaultRecord {
            fault,
            started,
            ended: stats.elapsed(),
        });
        next = fault_every.saturating_sub(Duration::from_secs_f64(stats.elapsed() - started));
    }
    let left = duration.as_secs_f64() - stats.elapsed();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    let _ = rss.await;

    // Mail: every acknowledged login start must produce exactly one mail; wait for stragglers.
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    let drain_deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < drain_deadline {
        let received = sink.recipients();
        if acked.iter().all(|r| received.contains_key(r)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let received = sink.recipients();
    let lost = acked.iter().filter(|r| !received.contains_key(*r)).count();
    let duplicated_recipients = received.values().filter(|&&n| n > 1).count();
    let duplicated_ids = sink.duplicate_message_ids();

    // What each process keeps once the load is over and the mail is out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled_rss: Vec<u64> = {
        let replicas = replicas.lock().await;
        replicas.iter().filter_map(Replica::rss_kib).collect()
    };
    {
        let mut replicas = replicas.lock().await;
        for replica in replicas.iter_mut() {
            replica.stop().await;
        }
    }
    if let Some((admin, name)) = pg_cleanup {
        let pool = sqlx::AnyPool::connect(&admin).await?;
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await;
        pool.close().await;
    }

    Ok(report(
        backend,
        replicas_wanted,
        duration,
        &stats,
        &records,
        acked.len(),
        lost,
        duplicated_recipients,
        duplicated_ids,
        &settled_rss,
    ))
}

const PASSWORD: &str = "correct horse battery staple";

fn base64_key() -> String {
    use base64::Engine;
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).expect("random");
    base64::engine::general_purpose::STANDARD.encode(key)
}

// ---------------------------------------------------------------------------------------
// Load

#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<Vec<String>>>);

impl Sessions {
    fn add(&self, token: String) {
        let mut all = self.0.lock().unwrap();
        all.push(token);
        if all.len() > 5000 {
            all.remove(0);
        }
    }
    fn pick(&self, n: u64) -> Option<String> {
        let all = self.0.lock().unwrap();
        (!all.is_empty()).then(|| all[n as usize % all.len()].clone())
    }
    fn take(&self, n: u64) -> Option<String> {
        let mut all = self.0.lock().unwrap();
        (all.len() > 50).then(|| {
            let i = n as usize % all.len();
            all.swap_remove(i)
        })
    }
}

fn with_deadline<T>(message: T, token: Option<&str>, forwarded: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_secs(5));
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(forwarded) = forwarded
        && let Ok(value) = forwarded.parse()
    {
        request.metadata_mut().insert("x-forwarded-for", value);
    }
    request
}

fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(status) => format!("{:?}", status.code()),
    }
}

/// A client address from the documentation prefix, one /64 per call: per-address limits
/// are not what this soak measures.
fn client_address(n: u64) -> String {
    format!("2001:db8:{:x}:{:x}::1", (n >> 16) & 0xffff, n & 0xffff)
}

// `..Default::default()`: AuthorizeRequest may grow optional fields (a project binding).
#[allow(clippy::needless_update)]
async fn authorize_loop(channel: Channel, sessions: Sessions, stats: Stats, stop: Arc<AtomicBool>) {
    let client = AuthenticationServiceClient::new(channel);
    let mut n = rand_u64();
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
        let Some(token) = sessions.pick(n >> 33) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let result = client
            .clone()
            .authorize(with_deadline(
                AuthorizeRequest {
                    token,
                    ..Default::default()
                },
                None,
                None,
            ))
            .await;
        let kind = match &result {
            Ok(answer) if answer.get_ref().role() == portcullis::grpc::pb::Role::User => {
                "ok".to_owned()
            }
            // A session logged out meanwhile: the right answer, not an error.
            Ok(_) => "ok (public)".to_owned(),
            Err(_) => outcome(&result),
        };
        stats.record("authorize", &kind);
        if result.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn code_login_loop(
    channel: Channel,
    app_token: String,
    sink: SmtpSink,
    sessions: Sessions,
    stats: Stats,
    stop: Arc<AtomicBool>,
    counter: Arc<AtomicU64>,
    acked: Arc<Mutex<HashSet<String>>>,
) {
    let authentication = AuthenticationServiceClient::new(channel.clone());
    let verification = VerificationServiceClient::new(channel);
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("u{n}@soak.test");
        let started = authentication
            .clone()
            .authenticate(with_deadline(
                AuthenticateRequest { name: name.clone() },
                Some(&app_token),
                Some(&client_address(n)),
            ))
            .await;
        stats.record("code login start", &outcome(&started));
        let Ok(started) = started else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        acked.lock().unwrap().insert(name.clone());
        let code_token = started.into_inner().code_token;
        // The code comes by mail; a person would wait a while for it.
        let Some(code) = sink.wait_for_code(&name, Duration::from_secs(30)).await else {
            stats.record("code arrives by mail", "not within 30 s");
            continue;
        };
        stats.record("code arrives by mail", "ok");
        let confirmed = verification
            .clone()
            .confirm(with_deadline(
                ConfirmRequest { code, code_token },
                None,
                None,
            ))
            .await;
        stats.record("code login confirm", &outcome(&confirmed));
        if let Ok(confirmed) = confirmed
            && let Some(session) = confirmed.into_inner().session
        {
            sessions.add(session.token);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn password_login_loop(
    channel: Channel,
    project_id: String,
    accounts: Vec<String>,
    sessions: Sessions,
    stats: Stats,
    stop: Arc<AtomicBool>,
) {
    let client = PasswordServiceClient::new(channel);
    let mut n = rand_u64();
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
        let email = accounts[(n >> 33) as usize % accounts.len()].clone();
        let result = client
            .clone()
            .login(with_deadline(
                LoginRequest {
                    project_id: project_id.clone(),
                    username: email,
                    password: PASSWORD.into(),
                },
                None,
                Some(&client_address(n >> 40)),
            ))
            .await;
        stats.record("password login", &outcome(&result));
        if let Ok(login) = result
            && let Some(session) = login.into_inner().session
        {
            sessions.add(session.token);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn logout_loop(
    channels: Vec<Channel>,
    sessions: Sessions,
    stats: Stats,
    stop: Arc<AtomicBool>,
) {
    let mut n = rand_u64();
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
        if let Some(token) = sessions.take(n >> 33) {
            let client =
                AuthenticationServiceClient::new(channels[n as usize % channels.len()].clone());
            let result = client
                .clone()
                .logout(with_deadline(LogoutRequest {}, Some(&token), None))
                .await;
            stats.record("logout", &outcome(&result));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Callers that give up: code-login starts and password logins with deadlines of 1-20 ms,
/// and as many dropped by the client at random points.
///
/// They come on connections of their own, as other clients would: HTTP/2 servers end a
/// connection that resets too many streams, which would otherwise hit the steady load.
async fn cancellations(addresses: &[String], project: &FirstStart, counter: Arc<AtomicU64>) {
    let channels: Vec<Channel> = (0..8)
        .map(|i| {
            Channel::from_shared(addresses[i % addresses.len()].clone())
                .expect("address")
                .connect_lazy()
        })
        .collect();
    let mut calls = Vec::new();
    for i in 0..400u64 {
        let channel = channels[i as usize % channels.len()].clone();
        let app_token = project.app_token.clone();
        let project_id = project.project_id.clone();
        let n = counter.fetch_add(1, Ordering::Relaxed);
        calls.push(tokio::spawn(async move {
            let deadline = Duration::from_millis(1 + (n * 7919) % 20);
            if i % 2 == 0 {
                let mut request = with_deadline(
                    AuthenticateRequest {
                        name: format!("gone{n}@soak.test"),
                    },
                    Some(&app_token),
                    Some(&client_address(n)),
                );
                request.set_timeout(deadline);
                let mut client = AuthenticationServiceClient::new(channel);
                let _ = tokio::time::timeout(deadline, client.authenticate(request)).await;
            } else {
                let mut request = with_deadline(
                    LoginRequest {
                        project_id,
                        username: format!("pw{}@soak.test", n % 32),
                        password: PASSWORD.into(),
                    },
                    None,
                    Some(&client_address(n)),
                );
                request.set_timeout(deadline);
                let mut client = PasswordServiceClient::new(channel);
                let _ = tokio::time::timeout(deadline, client.login(request)).await;
            }
        }));
    }
    for call in calls {
        let _ = call.await;
    }
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("random");
    u64::from_le_bytes(bytes) | 1
}

// ---------------------------------------------------------------------------------------
// Counting

type CountKey = (u64, String, String);

#[derive(Clone)]
struct Stats {
    start: Instant,
    /// (second, operation, outcome) → calls.
    counts: Arc<Mutex<BTreeMap<CountKey, u64>>>,
    /// (second, replica, RSS in KiB).
    rss: Arc<Mutex<Vec<(u64, usize, u64)>>>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            start: Instant::now(),
            counts: Arc::default(),
            rss: Arc::default(),
        }
    }

    fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn record(&self, operation: &str, outcome: &str) {
        let second = self.start.elapsed().as_secs();
        *self
            .counts
            .lock()
            .unwrap()
            .entry((second, operation.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// Failures by operation and kind in [from, to) seconds.
    fn errors_between(&self, from: f64, to: f64) -> BTreeMap<String, u64> {
        let mut errors = BTreeMap::new();
        for ((second, operation, outcome), n) in self.counts.lock().unwrap().iter() {
            let s = *second as f64;
            // Second `s` covers [s, s + 1): it belongs where most of it lies.
            if s >= from.round() && s < to.round() && !outcome.starts_with("ok") {
                *errors.entry(format!("{operation}: {outcome}")).or_default() += n;
            }
        }
        errors
    }

    /// The first second from `from` on after which `quiet` seconds pass without an error
    /// and with successful writes.
    fn healed_at(&self, from: f64, quiet: u64) -> Option<u64> {
        let counts = self.counts.lock().unwrap();
        let mut per_second: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for ((second, operation, outcome), n) in counts.iter() {
            let entry = per_second.entry(*second).or_default();
            if !outcome.starts_with("ok") {
                entry.0 += n;
            } else if operation != "authorize" {
                entry.1 += n;
            }
        }
        let last = *per_second.keys().last()?;
        let errors_at = |t: u64| per_second.get(&t).map_or(0, |e| e.0);
        let writes_at = |t: u64| per_second.get(&t).map_or(0, |e| e.1);
        let mut s = from.ceil() as u64;
        while s + quiet <= last {
            match (s..s + quiet).rev().find(|&t| errors_at(t) > 0) {
                // Restart the quiet stretch after the last error in it.
                Some(t) => s = t + 1,
                None if (s..s + quiet).map(writes_at).sum::<u64>() > 0 => return Some(s),
                None => s += 1,
            }
        }
        None
    }
}

async fn sample_rss(
    replicas: Arc<tokio::sync::Mutex<Vec<Replica>>>,
    stats: Stats,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        {
            let replicas = replicas.lock().await;
            for (i, replica) in replicas.iter().enumerate() {
                if let Some(kib) = replica.rss_kib() {
                    stats
                        .rss
                        .lock()
                        .unwrap()
                        .push((stats.start.elapsed().as_secs(), i, kib));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    backend: &str,
    replicas: usize,
    duration: Duration,
    stats: &Stats,
    records: &[FaultRecord],
    acked: usize,
    lost: usize,
    duplicated_recipients: usize,
    duplicated_ids: usize,
    settled_rss: &[u64],
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Soak on {backend}, {replicas} replica(s), {} s\n",
        duration.as_secs()
    );
    let mut totals: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((_, operation, outcome), n) in stats.counts.lock().unwrap().iter() {
        *totals
            .entry((operation.clone(), outcome.clone()))
            .or_default() += n;
    }
    let _ = writeln!(out, "| operation | outcome | calls |\n| --- | --- | ---: |");
    for ((operation, outcome), n) in &totals {
        let _ = writeln!(out, "| {operation} | {outcome} | {n} |");
    }
    let _ = writeln!(
        out,
        "\n| at (s) | fault | errors during | errors in the 30 s after | error-free with writes again after |\n| ---: | --- | --- | --- | ---: |"
    );
    for record in records {
        let during = stats.errors_between(record.started, record.ended);
        let after = stats.errors_between(record.ended, record.ended + 30.0);
        let healed = stats
            .healed_at(record.ended, 5)
            .map(|s| format!("{:.0} s", (s as f64 - record.ended).max(0.0)))
            .unwrap_or_else(|| "not within the run".into());
        let _ = writeln!(
            out,
            "| {:.0} | {} | {} | {} | {healed} |",
            record.started,
            record.fault.describe(),
            summarize(&during),
            summarize(&after),
        );
    }
    let _ = writeln!(
        out,
        "\nMail: {acked} code logins acknowledged, {lost} without a mail at the end, \
         {duplicated_recipients} recipients got more than one mail, {duplicated_ids} Message-IDs \
         arrived more than once."
    );
    let rss = stats.rss.lock().unwrap();
    let mut by_minute: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (second, _, kib) in rss.iter() {
        by_minute.entry(second / 60).or_default().push(*kib);
    }
    let series: Vec<String> = by_minute
        .iter()
        .map(|(minute, kibs)| {
            format!(
                "{minute}:{}",
                kibs.iter().max().copied().unwrap_or(0) / 1024
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "RSS per replica, largest in each minute (minute:MiB): {}",
        series.join(" ")
    );
    let settled: Vec<String> = settled_rss
        .iter()
        .map(|kib| format!("{}", kib / 1024))
        .collect();
    let _ = writeln!(
        out,
        "RSS per replica 2 s after the load stopped and the mail went out (MiB): {}",
        settled.join(" ")
    );
    out
}

fn summarize(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(kind, n)| format!("{kind} ×{n}"))
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------
// Replicas: the real binary, as an operator runs it

#[derive(Clone)]
struct FirstStart {
    project_id: String,
    app_token: String,
}

struct Replica {
    index: usize,
    port: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    first_start: Option<FirstStart>,
}

impl Replica {
    fn new(
        index: usize,
        database_url: &str,
        smtp_port: u16,
        dir: &Path,
        master_key: &Path,
    ) -> anyhow::Result<Replica> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--database-url".into(),
            database_url.to_owned(),
            "--smtp-url".into(),
            format!("smtp://127.0.0.1:{smtp_port}"),
            "--public-url".into(),
            "http://soak.test".into(),
            "--owner".into(),
            "owner@soak.test".into(),
            "--trusted-proxies".into(),
            "127.0.0.1".into(),
            "--mail-outbox".into(),
            dir.join(format!("outbox-{index}")).display().to_string(),
            "serve".into(),
        ];
        let env = vec![
            ("RUST_LOG".into(), "warn".into()),
            (
                "PORTCULLIS_MASTER_KEY_FILE".into(),
                master_key.display().to_string(),
            ),
        ];
        Ok(Replica {
            index,
            port,
            args,
            env,
            log: dir.join(format!("replica-{index}.log")),
            child: None,
            first_start: None,
        })
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("address")
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy()
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let printed = Arc::new(Mutex::new(String::new()));
        {
            let printed = printed.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    printed.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        self.child = Some(child);
        // Serving once gRPC health answers SERVING.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel());
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if answer.is_ok_and(|a| a.get_ref().status == 1) {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "replica {} did not start; see {}",
                    self.index,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let printed = printed.lock().unwrap().clone();
        let field = |name: &str| {
            printed
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if let (Some(project_id), Some(app_token)) = (field("project_id:"), field("app_token:")) {
            self.first_start = Some(FirstStart {
                project_id,
                app_token,
            });
        }
        Ok(())
    }

    async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill(); // SIGKILL
            let _ = child.wait().await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(40), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

// ---------------------------------------------------------------------------------------
// SMTP sink: accepts every mail (or, while down, answers 421 and hangs up), keeps the
// recipient, the Message-ID and the login code of each.

/// Recipient, Message-ID, login code.
type ReceivedMail = (String, Option<String>, Option<String>);

#[derive(Clone)]
struct SmtpSink {
    port: u16,
    down: Arc<AtomicBool>,
    mails: Arc<Mutex<Vec<ReceivedMail>>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl SmtpSink {
    async fn start() -> anyhow::Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sink = SmtpSink {
            port: listener.local_addr()?.port(),
            down: Arc::default(),
            mails: Arc::default(),
            arrived: Arc::default(),
        };
        let this = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(this.clone().session(stream));
            }
        });
        Ok(sink)
    }

    async fn session(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        if self.down.load(Ordering::SeqCst) {
            let _ = write.write_all(b"421 sink.test down\r\n").await;
            return;
        }
        if write.write_all(b"220 sink.test ESMTP\r\n").await.is_err() {
            return;
        }
        let mut recipient = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if self.down.load(Ordering::SeqCst) {
                let _ = write.write_all(b"421 sink.test going down\r\n").await;
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250-sink.test\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("RCPT TO:") {
                recipient = line[8..].trim().trim_matches(['<', '>']).to_owned();
                b"250 OK\r\n"
            } else if upper.starts_with("DATA") {
                if write.write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                let mut data = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line == "." {
                        break;
                    }
                    data.push_str(&line);
                    data.push('\n');
                }
                let header = |name: &str| {
                    data.lines()
                        .take_while(|l| !l.is_empty())
                        .find(|l| l.to_ascii_lowercase().starts_with(name))
                        .map(|l| l[name.len()..].trim().to_owned())
                };
                let code = header("subject:").and_then(|s| {
                    s.rsplit(':')
                        .next()
                        .map(str::trim)
                        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
                        .map(str::to_owned)
                });
                self.mails
                    .lock()
                    .unwrap()
                    .push((recipient.clone(), header("message-id:"), code));
                self.arrived.notify_waiters();
                b"250 queued\r\n"
            } else if upper.starts_with("QUIT") {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            } else {
                b"250 OK\r\n"
            };
            if write.write_all(reply).await.is_err() {
                return;
            }
        }
    }

    async fn wait_for_code(&self, recipient: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            if let Some(code) = self
                .mails
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(r, _, _)| r == recipient)
                .and_then(|(_, _, code)| code.clone())
            {
                return Some(code);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }

    fn recipients(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (recipient, _, _) in self.mails.lock().unwrap().iter() {
            *counts.entry(recipient.clone()).or_default() += 1;
        }
        counts
    }

    fn duplicate_message_ids(&self) -> usize {
        let mut seen = HashMap::<String, usize>::new();
        for (_, id, _) in self.mails.lock().unwrap().iter() {
            if let Some(id) = id {
                *seen.entry(id.clone()).or_default() += 1;
            }
        }
        seen.values().filter(|&&n| n > 1).count()
    }
}

// ---------------------------------------------------------------------------------------
// A TCP relay to PostgreSQL that can freeze: bytes stop flowing both ways while the
// sockets stay open, as in a silent network partition.

struct Relay {
    port: u16,
    frozen: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: String) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (frozen, watcher) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let watcher = watcher.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, watcher.clone()), pump(ro, wi, watcher.clone()));
                });
            }
        });
        Ok(Relay { port, frozen })
    }

    fn freeze(&self, frozen: bool) {
        let _ = self.frozen.send(frozen);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        // While frozen nothing is read, so nothing is passed on: the peer's bytes wait.
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
