//! A copy of the database is not a key to every account: delivered messages keep no body,
//! undelivered ones and every stored secret are sealed with the master key, a wrong key is
//! refused at start, plain rows from older versions are sealed, and the key can be rotated.

use crate::helpers::*;
use crate::on_both_backends;
use portcullis::Application;
use portcullis::grpc::pb::UpdateProjectSettingsRequest;
use sqlx::Row;
use std::io::{Read, Write};

on_both_backends!(
    a_copy_of_the_database_opens_no_account,
    a_restart_keeps_sessions_and_a_wrong_key_is_refused_changing_nothing,
    plain_rows_from_an_older_version_are_sealed_at_start,
    a_message_an_older_version_sealed_to_its_row_id_is_still_delivered,
    a_message_that_does_not_open_fails_alone_and_holds_up_no_other,
);

/// Every text and byte value of the tables that hold secrets, as an attacker with a copy
/// of the database would read them.
async fn dump(app: &TestApp) -> (Vec<String>, Vec<Vec<u8>>) {
    let pool = app.database.pool().await;
    let mut texts = Vec::new();
    for row in sqlx::query("SELECT subject, body FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        texts.push(row.try_get::<String, _>("subject").unwrap());
        texts.push(row.try_get::<String, _>("body").unwrap());
    }
    for row in sqlx::query(
        "SELECT COALESCE(sms_webhook_secret, '') AS s, COALESCE(external_key_pem, '') AS p FROM projects",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        texts.push(row.try_get::<String, _>("s").unwrap());
        texts.push(row.try_get::<String, _>("p").unwrap());
    }
    let mut bytes = Vec::new();
    for sql in [
        "SELECT private_key AS v FROM signing_keys",
        "SELECT value AS v FROM server_secrets",
    ] {
        for row in sqlx::query(sql).fetch_all(&pool).await.unwrap() {
            bytes.push(row.try_get::<Vec<u8>, _>("v").unwrap());
        }
    }
    pool.close().await;
    (texts, bytes)
}

async fn a_copy_of_the_database_opens_no_account(backend: Backend) {
    let app = spawn_app(backend).await;
    let (pem, _) = ed25519_pem();
    app.update_settings(UpdateProjectSettingsRequest {
        sms_webhook_url: Some("https://sms.example.com/send".into()),
        sms_webhook_secret: Some("webhook-bearer-secret".into()),
        external_token_key_pem: Some(pem.clone()),
        ..Default::default()
    })
    .await;
    // A code login delivered, and one never delivered (its text's webhook cannot be
    // reached): neither code may be read from the database.
    let delivered = app.log_in("reader@example.com").await;
    let delivered_mail = app.mails_to("reader@example.com").remove(0);
    let delivered_code = code_in(&delivered_mail).unwrap();
    app.authenticate("+41791112233").await.unwrap();

    let (texts, bytes) = dump(&app).await;
    for text in &texts {
        assert!(
            text.is_empty() || text.starts_with("pcs1:"),
            "a plain secret or message in the database: {text:.60}"
        );
        assert!(!text.contains(&delivered_code) || text.starts_with("pcs1:"));
        assert!(!text.contains("webhook-bearer-secret") && !text.contains("PRIVATE KEY"));
    }
    assert!(
        texts.iter().filter(|t| t.starts_with("pcs1:")).count() >= 4,
        "the undelivered text's subject and body, the webhook secret and the key are sealed"
    );
    assert!(!bytes.is_empty());
    for value in &bytes {
        assert!(
            value.starts_with(b"PCS1"),
            "a plain signing key or server secret"
        );
    }
    // The service itself still reads them.
    assert_eq!(app.authorize(delivered.jwt()).await.role(), Role::User);
}

/// Replicas and restarts share the issuer of their JWTs.
fn same_issuer(settings: &mut portcullis::Settings) {
    settings.public_url = Some("http://portcullis.test".into());
}

async fn a_restart_keeps_sessions_and_a_wrong_key_is_refused_changing_nothing(backend: Backend) {
    let mut app = spawn_app_with(backend, same_issuer).await;
    let session = app.log_in("keeper@example.com").await;
    app.stop().await.unwrap();

    let restarted = spawn_app_on(app.database.shared(), same_issuer).await;
    assert_eq!(
        restarted.authorize(session.token()).await.role(),
        Role::User
    );
    assert_eq!(restarted.authorize(session.jwt()).await.role(), Role::User);
    let (_, before) = dump(&restarted).await;

    let mut wrong = settings_for(&restarted.database.url);
    wrong.master_key = Some(portcullis::domain::MasterKey::generate().to_base64().into());
    let error = match Application::build(wrong).await {
        Ok(_) => panic!("a wrong master key must be refused"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("master key does not open"), "{error}");
    let (_, after) = dump(&restarted).await;
    assert_eq!(before, after, "a refused start changes nothing");
}

async fn plain_rows_from_an_older_version_are_sealed_at_start(backend: Backend) {
    let mut app = spawn_app_with(backend, same_issuer).await;
    let session = app.log_in("veteran@example.com").await;
    app.stop().await.unwrap();

    // Make the database look as an older version left it: everything plain, no check.
    let key = master_key_of(&app, backend);
    let pool = app.database.pool().await;
    for row in sqlx::query("SELECT kid, private_key FROM signing_keys")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        let kid: String = row.try_get("kid").unwrap();
        let sealed: Vec<u8> = row.try_get("private_key").unwrap();
        let plain = key
            .open(&format!("signing_keys.private_key:{kid}"), &sealed)
            .unwrap();
        sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(plain)
            .bind(&kid)
            .execute(&pool)
            .await
            .unwrap();
    }
    for row in sqlx::query("SELECT name, value FROM server_secrets")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        let name: String = row.try_get("name").unwrap();
        let sealed: Vec<u8> = row.try_get("value").unwrap();
        let plain = key
            .open(&format!("server_secrets.value:{name}"), &sealed)
            .unwrap();
        sqlx::query("UPDATE server_secrets SET value = $1 WHERE name = $2")
            .bind(plain)
            .bind(&name)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE projects SET sms_webhook_secret = 'old-plain-secret'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM master_key_check")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let restarted = spawn_app_on(app.database.shared(), same_issuer).await;
    let (texts, bytes) = dump(&restarted).await;
    assert!(
        bytes.iter().all(|v| v.starts_with(b"PCS1")),
        "sealed at start"
    );
    assert!(!texts.iter().any(|t| t.contains("old-plain-secret")));
    // And still the same keys: the old JWT verifies.
    assert_eq!(restarted.authorize(session.jwt()).await.role(), Role::User);
}

/// The master key the test server seals with.
fn master_key_of(app: &TestApp, backend: Backend) -> portcullis::domain::MasterKey {
    let key = match backend {
        Backend::Postgres => TEST_MASTER_KEY.to_owned(),
        Backend::Sqlite => {
            let file = app.database.url.trim_start_matches("sqlite://").to_owned();
            std::fs::read_to_string(format!("{file}.master-key")).unwrap()
        }
    };
    portcullis::domain::MasterKey::from_base64(&key).unwrap()
}

/// Before seal keys (migration 0014) an outbox row was sealed to its id: one queued by
/// an older version just before an upgrade still goes out, readable.
async fn a_message_an_older_version_sealed_to_its_row_id_is_still_delivered(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = master_key_of(&app, backend);
    let pool = app.database.pool().await;
    // Not due until sealed, so the worker does not lease it half-written.
    let row = sqlx::query(
        "INSERT INTO outbox (channel, recipient, subject, body, next_attempt_at, created_at)
         VALUES ('email', 'upgraded@example.com', '', '', $1, $2) RETURNING id",
    )
    .bind(i64::MAX / 2)
    .bind(app.clock.now())
    .fetch_one(&pool)
    .await
    .unwrap();
    let id: i64 = row.try_get("id").unwrap();
    sqlx::query("UPDATE outbox SET subject = $1, body = $2, next_attempt_at = 0 WHERE id = $3")
        .bind(key.seal_text(&format!("outbox.subject:{id}"), "Queued before the upgrade"))
        .bind(key.seal_text(&format!("outbox.body:{id}"), "Your code is 4711."))
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let mail = app.wait_for_mail("upgraded@example.com", 1).await;
    assert!(mail.contains("Queued before the upgrade"), "{mail}");
    assert!(mail.contains("Your code is 4711."), "{mail}");
}

/// A damaged outbox row (altered, or sealed with another key) is recorded as failed; the
/// messages leased with it still go out.
async fn a_message_that_does_not_open_fails_alone_and_holds_up_no_other(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = master_key_of(&app, backend);
    let pool = app.database.pool().await;
    // Both due at once, committed together: the worker leases them in one batch.
    let mut tx = pool.begin().await.unwrap();
    for (recipient, subject, body) in [
        (
            "damaged@example.com",
            "PCS1:garbage".to_owned(),
            "PCS1:garbage".to_owned(),
        ),
        (
            "intact@example.com",
            key.seal_text("outbox.subject:key:k-intact", "Still here"),
            key.seal_text(
                "outbox.body:key:k-intact",
                "Delivered beside a damaged row.",
            ),
        ),
    ] {
        let seal_key = format!("k-{}", recipient.split('@').next().unwrap());
        sqlx::query(
            "INSERT INTO outbox (channel, recipient, subject, body, next_attempt_at, created_at, seal_key)
             VALUES ('email', $1, $2, $3, 0, $4, $5)",
        )
        .bind(recipient)
        .bind(subject)
        .bind(body)
        .bind(app.clock.now())
        .bind(seal_key)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let mail = app.wait_for_mail("intact@example.com", 1).await;
    assert!(mail.contains("Delivered beside a damaged row."), "{mail}");
    let row = wait_for_async(|| async {
        let row = sqlx::query(
            "SELECT attempts, last_error, sent_at FROM outbox WHERE recipient = 'damaged@example.com'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (row.try_get::<i64, _>("attempts").unwrap() == 1).then_some(row)
    })
    .await
    .expect("the damaged row is recorded as failed");
    pool.close().await;
    assert!(
        row.try_get::<Option<String>, _>("last_error")
            .unwrap()
            .is_some()
    );
    assert_eq!(row.try_get::<Option<i64>, _>("sent_at").unwrap(), None);
    assert!(app.mails_to("damaged@example.com").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sqlite_start_writes_a_private_key_file_and_postgres_needs_one() {
    let app = spawn_app(Backend::Sqlite).await;
    let file = format!(
        "{}.master-key",
        app.database.url.trim_start_matches("sqlite://")
    );
    let metadata = std::fs::metadata(&file).expect("a key file beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    }
    // Losing the key file later is an error that says so, never a silent new key.
    drop(app.database.shared());
    let mut key = String::new();
    std::fs::File::open(&file)
        .unwrap()
        .read_to_string(&mut key)
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let error = match Application::build(settings_for(&app.database.url)).await {
        Ok(_) => panic!("a sealed database without its key must not start"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("is missing"), "{error}");
    assert!(!std::path::Path::new(&file).exists(), "no silent new key");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();

    if postgres_admin_url().is_some() {
        let database = TestDatabase::new(Backend::Postgres).await;
        let mut settings = settings_for(&database.url);
        settings.master_key = None;
        let error = match Application::build(settings).await {
            Ok(_) => panic!("PostgreSQL without a master key must not start"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("PostgreSQL needs a master key"), "{error}");
    }
}
