//! Health reflects the database: NOT_SERVING while it cannot be reached, SERVING again
//! once it can, without a restart. PostgreSQL only: the test cuts the connection with a
//! TCP relay it controls.

use crate::helpers::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_while_postgres_is_unreachable_and_recovers() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
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

    relay.cut();
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

    relay.restore();
    assert!(
        becomes(ServingStatus::Serving).await,
        "SERVING again once the database answers"
    );
    app.log_in("up@example.com").await;
}
