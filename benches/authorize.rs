//! Load generator for the hot path: Authorize (opaque token and JWT) against an empty
//! gRPC call (health Check) on the same server, same box, same client settings.
//! Run: `cargo bench --bench authorize` (PORTCULLIS_BENCH_SECONDS, PORTCULLIS_BENCH_IN_FLIGHT
//! and PORTCULLIS_BENCH_DATABASE_URL change the defaults: 5 s, 64, a temporary SQLite file).
//! It prints figures; it asserts nothing (CI machines are too noisy for that).

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::grpc::pb::AuthorizeRequest;
use portcullis::grpc::pb::Role;
use portcullis::grpc::pb::authentication_service_client::AuthenticationServiceClient;
use portcullis::service::Authenticated;
use portcullis::{Application, Settings};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// mimalloc: per-thread caches instead of glibc's arena locks, which showed in profiles of
/// the hot path (allocation-heavy gRPC messages on all cores).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = env_or("PORTCULLIS_BENCH_SECONDS", 5);
    let in_flight: usize = env_or("PORTCULLIS_BENCH_IN_FLIGHT", 64);
    let dir = tempfile::tempdir()?;
    let url = std::env::var("PORTCULLIS_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let mut settings = Settings::for_database(&url);
    settings.mail_outbox = dir.path().join("outbox");
    let app = Application::build(settings).await?;
    let app_address = app.address();
    let address = format!("http://{app_address}");
    let auth = app.auth().clone();
    let project = auth.create_project("Bench", None, true, false).await?;
    let Authenticated::Anonymous(session) = auth.authenticate(&project.app_token, "", None).await?
    else {
        anyhow::bail!("anonymous login did not return a session");
    };
    tokio::spawn(app.run_until(std::future::pending()));
    let channel = Channel::from_shared(address)?.connect().await?;
    let duration = Duration::from_secs(seconds);

    println!(
        "{in_flight} calls in flight on one connection, {seconds} s each, database {}",
        url.split(':').next().unwrap_or("")
    );
    let health = HealthClient::new(channel.clone());
    let baseline = run(
        "empty call (health Check)",
        in_flight,
        duration,
        move || {
            let mut client = health.clone();
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let client = AuthenticationServiceClient::new(channel.clone());
    // Never issued: 32 random bytes and a wrong 10-byte tag, as an attacker would send.
    let forged = {
        use base64::Engine;
        let mut body = [0u8; 42];
        getrandom::getrandom(&mut body)?;
        format!(
            "usr_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
        )
    };
    for (label, token, role) in [
        ("Authorize, opaque token", session.token.clone(), Role::User),
        ("Authorize, JWT", session.jwt.clone(), Role::User),
        ("Authorize, forged opaque", forged, Role::Public),
    ] {
        let client = client.clone();
        let token = Arc::new(token);
        let rate = run(label, in_flight, duration, move || {
            let mut client = client.clone();
            let token = token.clone();
            async move {
                let answer = client
                    .authorize(AuthorizeRequest {
                        token: (*token).clone(),
                        ..Default::default()
                    })
                    .await;
                answer.is_ok_and(|a| a.into_inner().role() == role)
            }
        })
        .await;
        println!("    {:.2}x the empty call's throughput", rate / baseline);
    }

    // Envoy's ext_authz Check: the same hot path behind Envoy's request shape.
    let authz = AuthorizationClient::new(channel.clone());
    let check = Arc::new(check_request(&session.token, &project.project_id));
    let rate = run("ext_authz Check (gRPC)", in_flight, duration, move || {
        let mut client = authz.clone();
        let request = (*check).clone();
        async move {
            client.check(request).await.is_ok_and(|answer| {
                answer
                    .into_inner()
                    .status
                    .is_some_and(|status| status.code == 0)
            })
        }
    })
    .await;
    println!("    {:.2}x the empty call's throughput", rate / baseline);

    // Forward auth over HTTP/1.1 against a trivial route (the JWKS) on the same server.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let base = format!("http://{}", app_address);
    let trivial = {
        let (http, url) = (http.clone(), format!("{base}/.well-known/jwks.json"));
        run(
            "HTTP trivial route (JWKS)",
            in_flight,
            duration,
            move || {
                let (http, url) = (http.clone(), url.clone());
                async move { http.get(url).send().await.is_ok_and(|r| r.status() == 200) }
            },
        )
        .await
    };
    let url = format!("{base}/auth/forward?project_id={}", project.project_id);
    let token = session.token.clone();
    let rate = run("forward auth (HTTP)", in_flight, duration, move || {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    println!("    {:.2}x the trivial route's throughput", rate / trivial);
    Ok(())
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

/// Runs `call` with `in_flight` concurrent loops for `duration`; prints and returns calls/s.
async fn run<F, Fut>(label: &str, in_flight: usize, duration: Duration, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    if !call().await {
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
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let rate = latencies.len() as f64 / duration.as_secs_f64();
    println!(
        "{label:<28} {rate:>9.0} calls/s   p50 {:>7.2} ms   p99 {:>7.2} ms   failures {failures}",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    rate
}
