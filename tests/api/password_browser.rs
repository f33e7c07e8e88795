//! The reset page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) follows the mailed link, fills the form like a person and
//! submits it. Skipped with a message when no browser is installed, unless
//! PORTCULLIS_TEST_REQUIRE_BROWSER=1 (as in CI) makes that a failure.

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::Code;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_resets_a_forgotten_password_in_a_real_browser() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await;
    app.register("ada@example.com", PASSWORD).await.unwrap();
    let before = app
        .password_login("ada@example.com", PASSWORD)
        .await
        .unwrap();
    app.forgot_password("ada@example.com").await.unwrap();
    let link = app.wait_for_reset_link("ada@example.com", 1).await;

    let driver = browser.start_driver().await;
    let page = driver.open_session().await;
    page.goto(&link).await.expect("open the link from the mail");
    let heading = page.find(Locator::Css("h1")).await.unwrap();
    assert_eq!(heading.text().await.unwrap(), "Choose a new password");
    let text = page
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("Default project"),
        "the project's name: {text}"
    );
    assert!(text.contains("ada@example.com"), "the account: {text}");

    fill_labelled(&page, "New password", NEW_PASSWORD).await;
    fill_labelled(&page, "Confirm new password", NEW_PASSWORD).await;
    page.find(Locator::XPath(
        "//button[normalize-space()='Set new password']",
    ))
    .await
    .expect("a submit button")
    .click()
    .await
    .unwrap();
    page.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath(
            "//h1[normalize-space()='Your password has been changed']",
        ))
        .await
        .expect("the success page");
    page.close().await.expect("close the browser");

    app.password_login("ada@example.com", NEW_PASSWORD)
        .await
        .expect("the new password logs in");
    let old = app
        .password_login("ada@example.com", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    assert_eq!(
        app.authorize(&before.access_token).await.role(),
        Role::Public
    );
}

/// Types into the input that the label with this text names, as a person reading the
/// form would find it.
async fn fill_labelled(page: &Client, label: &str, text: &str) {
    let label = page
        .find(Locator::XPath(&format!(
            "//label[normalize-space()='{label}']"
        )))
        .await
        .unwrap_or_else(|_| panic!("a label {label:?}"));
    let id = label
        .attr("for")
        .await
        .unwrap()
        .expect("the label names its input");
    page.find(Locator::Id(&id))
        .await
        .expect("the labelled input")
        .send_keys(text)
        .await
        .unwrap();
}

struct Browser {
    chromium: PathBuf,
    driver: PathBuf,
}

impl Browser {
    /// Chromium and chromedriver from PATH; `None` (after saying so) when missing, unless
    /// they are required.
    fn find() -> Option<Browser> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(on_path);
        let driver = on_path("chromedriver");
        match (chromium, driver) {
            (Some(chromium), Some(driver)) => Some(Browser { chromium, driver }),
            _ if std::env::var("PORTCULLIS_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1") => {
                panic!(
                    "PORTCULLIS_TEST_REQUIRE_BROWSER=1 but chromium or chromedriver is not on PATH \
                     (apt-get install chromium chromium-driver)"
                )
            }
            _ => {
                report_skip(
                    "the browser test (chromium and chromedriver are not both on PATH)",
                    "apt-get install chromium chromium-driver; CI requires it with \
                     PORTCULLIS_TEST_REQUIRE_BROWSER=1",
                );
                None
            }
        }
    }

    async fn start_driver(&self) -> Driver {
        let port = free_port();
        let child = Command::new(&self.driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the browsers it starts are stopped with it.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium: self.chromium.clone(),
            profile: tempfile::tempdir().expect("temp dir"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = reqwest::Client::new();
        loop {
            let ready = http.get(format!("{}/status", driver.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    profile: tempfile::TempDir,
}

impl Driver {
    async fn open_session(&self) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            // Without these Chromium calls home, which this closed network refuses.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a WebDriver session with headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Stops chromedriver and any browser it left running (its process group only).
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
