//! The hot path under attack: forged and random USER_TOKENs are refused in memory, so a
//! flood of them never reaches the database; tokens issued before tags keep working
//! until they expire; a logged-out token replayed reaches the database once.

use crate::helpers::*;
use crate::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

on_both_backends!(issued_tokens_carry_a_tag_and_untagged_ones_of_live_sessions_still_work);

fn random_body(bytes: usize) -> String {
    let mut body = vec![0u8; bytes];
    getrandom::getrandom(&mut body).unwrap();
    format!("usr_{}", URL_SAFE_NO_PAD.encode(body))
}

/// A token with a tag of the right length that was never issued.
fn forged_tagged() -> String {
    random_body(42)
}

async fn issued_tokens_carry_a_tag_and_untagged_ones_of_live_sessions_still_work(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.log_in("ada@example.com").await;
    let body = user.token().strip_prefix("usr_").unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(body).unwrap().len(),
        42,
        "32 random bytes and a 10-byte tag"
    );
    assert_eq!(app.authorize(user.token()).await.role(), Role::User);
    for forged in [forged_tagged(), random_body(32), random_body(7)] {
        assert_eq!(
            app.authorize(&forged).await.role(),
            Role::Public,
            "{forged:.12}"
        );
    }

    // A session opened before tags: its untagged token keeps working.
    let legacy = random_body(32);
    let hash = portcullis::domain::TokenHash::of(&legacy);
    let pool = app.database.pool().await;
    let who = app.authorize(user.token()).await;
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind("legacy-session")
    .bind(hash.as_bytes().to_vec())
    .bind(who.id)
    .bind(app.clock.now())
    .bind(app.clock.now() + 3600)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(app.authorize(&legacy).await.role(), Role::User);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_gone_forged_tokens_are_still_refused_at_once() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    let app = spawn_app_on(database, |_| {}).await;
    app.log_in("ada@example.com").await;
    relay.cut();
    // No database needed to know these are nobody's: the answer is public, not an error.
    for _ in 0..50 {
        let answer = app
            .try_authorize(&forged_tagged())
            .await
            .expect("refused in memory, no database call");
        assert_eq!(answer.role(), Role::Public);
    }
    // An untagged token could belong to a session from before tags: that one needs the
    // database (only until the last such session can have expired).
    let legacy = app.try_authorize(&random_body(32)).await;
    assert_eq!(
        legacy.map(|a| a.role()).unwrap_err().code(),
        tonic::Code::Unavailable
    );
    relay.restore();
}

/// An attacker replaying a stolen token after its owner logged out: the first try reads
/// the database, every later one is refused from memory (here, with the database cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_token_replayed_again_and_again_does_not_reach_the_database() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    let app = spawn_app_on(database, |_| {}).await;
    let user = app.log_in("ada@example.com").await;
    assert_eq!(app.authorize(user.token()).await.role(), Role::User);
    app.logout(user.token()).await.unwrap();
    assert_eq!(app.authorize(user.token()).await.role(), Role::Public);
    relay.cut();
    for _ in 0..50 {
        let answer = app
            .try_authorize(user.token())
            .await
            .expect("refused from memory, no database call");
        assert_eq!(answer.role(), Role::Public);
    }
    relay.restore();
}

/// A logout drops that user's cached sessions on every replica and no one else's: the
/// others keep being answered from memory (here, while the database is unreachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_drops_only_that_users_cache_entries_on_every_replica() {
    let Some((relay, database)) = Relay::postgres_database().await else {
        return;
    };
    // Replicas share the public URL (the JWT issuer) and, as both deliver from the one
    // outbox table, the outbox folder.
    let issuer = Some("https://auth.replicas.test".to_owned());
    // A cache TTL far past the wait below: only the notification can drop an entry in
    // time, not its expiry.
    let ttl = std::time::Duration::from_secs(120);
    let first = spawn_app_on(database, |s| {
        s.public_url = issuer.clone();
        s.session_cache = ttl;
    })
    .await;
    let outbox = first.outbox.clone();
    let second = spawn_app_on(first.database.shared(), |s| {
        s.public_url = issuer.clone();
        s.mail_outbox = outbox;
        s.session_cache = ttl;
    })
    .await;
    let leaving = first.log_in("leaving@example.com").await;
    let staying = first.log_in("staying@example.com").await;
    for token in [leaving.token(), staying.token(), staying.jwt()] {
        assert_eq!(
            second.authorize(token).await.role(),
            Role::User,
            "{token:.20}"
        );
    }
    first.logout(leaving.token()).await.unwrap();
    let dropped = wait_for_async(|| async {
        (second.authorize(leaving.token()).await.role() == Role::Public).then_some(())
    })
    .await;
    assert!(
        dropped.is_some(),
        "the other replica drops the logged-out session"
    );
    relay.cut();
    for token in [staying.token(), staying.jwt()] {
        let answer = second
            .try_authorize(token)
            .await
            .expect("answered from the cache, no database needed");
        assert_eq!(answer.role(), Role::User);
    }
    relay.restore();
}

/// Replicas cache projects by app token; a project changed through one is seen by the
/// others at once, well within the cache's lifetime (2 s): the change's commit tells
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_change_reaches_the_other_replicas_cached_project_at_once() {
    let Some((_relay, database)) = Relay::postgres_database().await else {
        return;
    };
    let first = spawn_app_on(database, |_| {}).await;
    let second = spawn_app_on(first.database.shared(), |_| {}).await;
    let app_token = first.project.app_token.clone();
    // Both replicas listen before the second one caches the project (a listener that
    // connects later starts with an empty cache).
    let pool = first.database.pool().await;
    let listening = wait_for_async(|| async {
        let listeners: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (listeners >= 2).then_some(())
    })
    .await;
    assert!(listening.is_some(), "both replicas listen for changes");
    // The second replica reads the project (anonymous login off) and keeps it.
    let refused = second.authenticate_with(&app_token, "").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    first.allow_anonymous().await;
    let changed = std::time::Instant::now();
    loop {
        match second.authenticate_with(&app_token, "").await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::FailedPrecondition);
                assert!(
                    changed.elapsed() < std::time::Duration::from_secs(1),
                    "the other replica still answers from the old project"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
