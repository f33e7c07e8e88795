//! Health reflects the database: NOT_SERVING while it cannot be reached, SERVING again
//! once it can, without a restart. PostgreSQL only: the test cuts the connection with a
//! TCP relay it controls.

use crate::helpers::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Relays TCP to PostgreSQL while `up`; when cut, drops every relayed connection and
/// refuses new ones.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropping `inbound` closes it
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                // Only cuts after this connection was opened end it.
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Relay { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_while_postgres_is_unreachable_and_recovers() {
    if postgres_admin_url().is_none() {
        return;
    }
    let relay = Relay::start(postgres_address()).await;
    let database = TestDatabase::new(Backend::Postgres)
        .await
        .through(relay.port);
    let app = spawn_app_on(database, |_| {}).await;
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    let health = HealthClient::new(channel);
    let status = |service: &'static str| {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest {
                service: service.into(),
            };
            health
                .check(request)
                .await
                .expect("health answers")
                .into_inner()
                .status()
        }
    };
    let becomes = |wanted: ServingStatus| async move {
        for _ in 0..100 {
            if status("portcullis.v1.AuthenticationService").await == wanted {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert_eq!(status("").await, ServingStatus::Serving);
    assert_eq!(
        status("portcullis.v1.VerificationService").await,
        ServingStatus::Serving
    );

    relay.set_up(false);
    assert!(
        becomes(ServingStatus::NotServing).await,
        "NOT_SERVING while the database is unreachable"
    );
    assert_eq!(status("").await, ServingStatus::NotServing);
    let refused = app
        .authenticate("down@example.com")
        .await
        .expect_err("no database");
    assert_eq!(
        refused.code(),
        tonic::Code::Unavailable,
        "{}",
        refused.message()
    );

    relay.set_up(true);
    assert!(
        becomes(ServingStatus::Serving).await,
        "SERVING again once the database answers"
    );
    app.log_in("up@example.com").await;
}
