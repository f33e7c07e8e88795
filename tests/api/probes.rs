//! What load balancers and Kubernetes ask: `/healthz`, `/readyz` and gRPC health, and the
//! drain on SIGTERM (not ready at once, still serving through the grace, then gone).

use crate::helpers::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn grpc_health(app: &TestApp) -> i32 {
    grpc_health_of(app, "").await
}

async fn grpc_health_of(app: &TestApp, service: &str) -> i32 {
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

async fn status(app: &TestApp, path: &str) -> StatusCode {
    app.http
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_readiness_drops_at_once_and_the_listener_serves_through_the_grace() {
    let grace = Duration::from_secs(2);
    let mut app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.shutdown_grace = grace;
    })
    .await;
    assert_eq!(status(&app, "/healthz").await, StatusCode::OK);
    assert_eq!(status(&app, "/readyz").await, StatusCode::OK);
    assert_eq!(grpc_health(&app).await, ServingStatus::Serving as i32);
    let user = app.log_in("ada@example.com").await;

    let signalled = Instant::now();
    app.begin_shutdown();
    let not_ready = wait_for_async(|| async {
        (status(&app, "/readyz").await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    assert!(not_ready.is_some(), "/readyz turns 503 on the signal");
    assert_eq!(grpc_health(&app).await, ServingStatus::NotServing as i32);
    // Still serving during the grace: liveness, and real work.
    assert_eq!(status(&app, "/healthz").await, StatusCode::OK);
    assert_eq!(
        grpc_health_of(&app, portcullis::probes::LIVENESS_SERVICE).await,
        ServingStatus::Serving as i32
    );
    assert_eq!(app.authorize(user.token()).await.role(), Role::User);
    assert!(!app.has_stopped(), "the listener serves through the grace");
    assert!(
        signalled.elapsed() < grace,
        "the checks above ran within the grace"
    );

    let stopped = wait_for(|| app.has_stopped().then_some(())).await;
    assert!(stopped.is_some(), "the server exits after the grace");
    assert!(signalled.elapsed() >= grace, "not before the grace ended");
    app.stop().await.expect("a clean exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    let app = spawn_app_on(database, |settings| {
        settings.health_interval = Duration::from_millis(100);
    })
    .await;
    assert_eq!(status(&app, "/readyz").await, StatusCode::OK);
    relay.cut();
    let down = wait_for_async(|| async {
        (status(&app, "/readyz").await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    assert!(down.is_some(), "/readyz turns 503 with the database gone");
    assert_eq!(
        status(&app, "/healthz").await,
        StatusCode::OK,
        "still alive"
    );
    assert_eq!(
        grpc_health_of(&app, portcullis::probes::LIVENESS_SERVICE).await,
        ServingStatus::Serving as i32,
        "a database outage is no reason to restart"
    );
    relay.restore();
    let up = wait_for_async(|| async {
        (status(&app, "/readyz").await == StatusCode::OK).then_some(())
    })
    .await;
    assert!(up.is_some(), "ready again once the database is back");
}
