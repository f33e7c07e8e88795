//! Slow clients and silent networks: idle or half-sent connections are closed, the
//! connection cap holds, requests have a deadline, a PostgreSQL partition that drops
//! packets (closing nothing) heals within seconds of the network coming back, and
//! shutdown has a deadline even with the database frozen.

use crate::helpers::*;
use portcullis::grpc::pb::AuthenticateRequest;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Whether the server closes the connection within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar before closing is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut held = Vec::new();
    for i in 0..60 {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        if i % 3 != 0 {
            // Partial headers, as a slowloris client sends them.
            stream
                .write_all(b"GET /api/authorize?token=x HTTP/1.1\r\nHost: portcullis\r\nX-a: ")
                .await
                .unwrap();
        }
        held.push(stream);
    }
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "connection {i} is still open"
        );
    }
    // The service still answers everyone else.
    let answer = app
        .http
        .get(format!("{}/api/authorize?token=x", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_clients_wait_for_a_free_slot() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.max_connections = 5;
        settings.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    // Let the server take all five.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("{}/api/authorize?token=x", app.address);
    let http = reqwest::Client::new();
    let waiting = tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a sixth connection was served past the cap"
    );
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_answered_and_leaves_nothing_stuck() {
    use sqlx::Connection;
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.request_timeout = Duration::from_secs(1);
    })
    .await;
    // Another process holds SQLite's write lock: writes wait (up to 5 s busy timeout).
    let mut holder = sqlx::AnyConnection::connect(&app.database.url)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    // DEADLINE_EXCEEDED, not the UNAVAILABLE "database is locked" of SQLite's 5 s busy
    // timeout: the 1 s deadline answered first.
    let refused = app
        .authenticate("slow@example.com")
        .await
        .expect_err("past the deadline");
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    let over_http = http_authenticate(&app, "slow2@example.com").await;
    assert_eq!(over_http.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        over_http
            .text()
            .await
            .unwrap()
            .contains("longer than 1 seconds")
    );

    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    for i in 0..12 {
        app.authenticate(&format!("after-{i}@example.com"))
            .await
            .expect("writes work once the lock is free");
    }
}

async fn health_of(app: &TestApp) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

async fn idle_in_transaction(database: &str) -> i64 {
    use sqlx::Row;
    let admin = postgres_admin_url().unwrap();
    let pool = sqlx::AnyPool::connect(&admin).await.unwrap();
    let row = sqlx::query(
        "SELECT COUNT(*)::BIGINT AS n FROM pg_stat_activity
         WHERE datname = $1 AND state LIKE 'idle in transaction%'",
    )
    .bind(database)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row.try_get("n").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_postgres_partition_heals_within_seconds_of_the_network() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    sqlx::any::install_default_drivers();
    let name = database
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let app = spawn_app_on(database, |settings| {
        settings.request_timeout = Duration::from_secs(2);
        settings.database.statement = Duration::from_secs(2);
        settings.database.idle_in_transaction = Duration::from_secs(2);
    })
    .await;
    for i in 0..5 {
        app.authenticate(&format!("before-{i}@example.com"))
            .await
            .unwrap();
    }

    relay.blackhole();
    // Calls in flight when the network went silent end, with an error, not never.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut client = app.authentication.clone();
        let token = app.project.app_token.clone();
        in_flight.spawn(async move {
            let request = bearer(
                &token,
                AuthenticateRequest {
                    name: format!("during-{i}@example.com"),
                },
            );
            tokio::time::timeout(Duration::from_secs(15), client.authenticate(request)).await
        });
    }
    while let Some(outcome) = in_flight.join_next().await {
        let answer = outcome.unwrap().expect("a call in flight hung past 15 s");
        let status = answer.expect_err("no database");
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            "{status:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.heal();

    // Serving again within seconds of the network healing, with every pooled connection.
    let healed = Instant::now();
    loop {
        if app.authenticate("first-after@example.com").await.is_ok() {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(20),
            "still failing 20 s after the network healed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "serving again {:?} after the network healed",
        healed.elapsed()
    );
    for i in 0..20 {
        app.authenticate(&format!("after-{i}@example.com"))
            .await
            .expect("every call works once healed");
    }
    let mut serving = false;
    for _ in 0..100 {
        if health_of(&app).await == ServingStatus::Serving {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving, "health must be SERVING again");
    // The server ended the transactions the partition orphaned, freeing their locks.
    let mut orphans = i64::MAX;
    for _ in 0..50 {
        orphans = idle_in_transaction(&name).await;
        if orphans == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(orphans, 0, "backends left idle in transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_has_a_deadline_even_with_the_database_frozen() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    let mut app = spawn_app_on(database, |settings| {
        settings.shutdown_timeout = Duration::from_secs(2);
        settings.request_timeout = Duration::from_secs(600);
    })
    .await;
    app.authenticate("before@example.com").await.unwrap();
    relay.blackhole();
    let mut client = app.authentication.clone();
    let token = app.project.app_token.clone();
    let _hanging = tokio::spawn(async move {
        let request = bearer(
            &token,
            AuthenticateRequest {
                name: "stuck@example.com".into(),
            },
        );
        client.authenticate(request).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("shutdown must end by its deadline")
        .expect("shutdown");
    eprintln!("stopped {:?} after SIGTERM", started.elapsed());
}
