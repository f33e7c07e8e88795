//! A full disk: clients are told "storage is full" (UNAVAILABLE / 503), health says
//! NOT_SERVING while writes fail, and once space is freed every write works again without
//! a restart. SQLite on a small tmpfs the test mounts (PostgreSQL's disk is not ours to
//! fill); where mounting is not allowed the test says so and skips, unless
//! PORTCULLIS_TEST_REQUIRE_TMPFS=1.

use crate::helpers::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes a file until the disk refuses more.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 16 * 1024];
    while file.write_all(&chunk).and_then(|_| file.flush()).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_says_so_and_writes_resume_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let Some(tmpfs) = Tmpfs::mount(&disk, "3m") else {
        if std::env::var("PORTCULLIS_TEST_REQUIRE_TMPFS").is_ok_and(|v| v == "1") {
            panic!("PORTCULLIS_TEST_REQUIRE_TMPFS=1 but a tmpfs cannot be mounted here");
        }
        report_skip(
            "the full-disk test (a tmpfs cannot be mounted here: not root?)",
            "running as root; CI requires it with PORTCULLIS_TEST_REQUIRE_TMPFS=1",
        );
        return;
    };
    let app = spawn_app_on(TestDatabase::sqlite_in(dir, &disk), |settings| {
        settings.policy.login_requests_per_address = 1_000_000;
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(app.address.clone())
        .unwrap()
        .connect_lazy();
    let health = HealthClient::new(channel);
    let becomes = |wanted: ServingStatus| {
        let mut health = health.clone();
        async move {
            for _ in 0..100 {
                let status = health
                    .check(HealthCheckRequest {
                        service: "portcullis.v1.AuthenticationService".into(),
                    })
                    .await
                    .expect("health answers")
                    .into_inner()
                    .status();
                if status == wanted {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(becomes(ServingStatus::Serving).await);

    fill(&disk.join("filler"));
    // Writes go on until the database's own files cannot grow either.
    let mut refusal = None;
    for i in 0..2000 {
        match app.authenticate(&format!("full-{i}@example.com")).await {
            Ok(_) => continue,
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("a full disk refuses writes");
    assert_eq!(
        refusal.code(),
        tonic::Code::Unavailable,
        "{}",
        refusal.message()
    );
    assert!(
        refusal.message().contains("storage is full"),
        "{}",
        refusal.message()
    );
    let over_http = http_authenticate(&app, "http-full@example.com").await;
    assert_eq!(over_http.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(over_http.text().await.unwrap().contains("storage is full"));
    assert!(
        becomes(ServingStatus::NotServing).await,
        "health must say NOT_SERVING while writes fail"
    );

    std::fs::remove_file(disk.join("filler")).unwrap();
    assert!(
        becomes(ServingStatus::Serving).await,
        "health must recover once space is back"
    );
    // Every write works again, on every pooled connection, without a restart.
    for i in 0..30 {
        app.authenticate(&format!("after-{i}@example.com"))
            .await
            .unwrap_or_else(|status| panic!("write {i} after freeing space: {status:?}"));
    }
    app.log_in("whole-login@example.com").await;
    drop(app);
    drop(tmpfs);
}
