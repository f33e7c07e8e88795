//! Whether this process should get traffic: gRPC health for every service, and the HTTP
//! probes load balancers and Kubernetes use (`/healthz`: alive; `/readyz`: the database
//! works and the process is not draining). The gRPC health service
//! [`LIVENESS_SERVICE`] is `/healthz` over gRPC: SERVING while the process runs, so a
//! liveness probe does not restart replicas for a database outage or during the drain.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::domain::Clock;
use crate::grpc;
use crate::store::Store;

/// The gRPC health service name that only says the process is alive.
pub const LIVENESS_SERVICE: &str = "portcullis.liveness";

/// The readiness of this process, reported to gRPC health and `/readyz` alike.
pub struct Readiness {
    reporter: HealthReporter,
    database: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new(reporter: HealthReporter) -> Readiness {
        Readiness {
            reporter,
            database: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.database.load(Ordering::SeqCst) && !self.draining.load(Ordering::SeqCst)
    }

    /// Records whether the database works; while draining, health stays NOT_SERVING.
    pub async fn set_database(&self, works: bool) {
        self.database.store(works, Ordering::SeqCst);
        self.report().await;
    }

    /// Shutdown began: not ready from now on, whatever the database does.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.report().await;
    }

    async fn report(&self) {
        self.reporter
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let status = if self.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for name in grpc::SERVICE_NAMES {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

pub fn routes(readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> (StatusCode, &'static str) {
    if readiness.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if readiness.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not work\n",
        )
    }
}

/// Whether the database answers and takes a write, each within two seconds.
pub async fn database_works(store: &Store, clock: &Clock) -> bool {
    let patience = Duration::from_secs(2);
    matches!(
        tokio::time::timeout(patience, store.ping()).await,
        Ok(Ok(()))
    ) && match tokio::time::timeout(patience, store.probe_write(clock.now())).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the database refuses writes");
            false
        }
        Err(_) => false,
    }
}

/// Checks the database every `interval` and reports every service NOT_SERVING while it
/// does not answer or refuses writes (a full disk), SERVING again once it works.
pub async fn watch_database(
    store: Store,
    clock: Clock,
    readiness: Arc<Readiness>,
    interval: Duration,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut healthy = readiness.database.load(Ordering::SeqCst);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now_healthy = database_works(&store, &clock).await;
        if now_healthy != healthy {
            if now_healthy {
                tracing::info!("database reachable again: SERVING");
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
            }
            readiness.set_database(now_healthy).await;
            healthy = now_healthy;
        }
    }
}
