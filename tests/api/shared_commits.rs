//! Writes that share one COMMIT (SQLite's writer batches concurrent transactions): an
//! answer is given only once its writes are committed and visible to every reader, and
//! a transaction that fails or is abandoned inside a batch takes nothing of the others
//! with it.

use crate::helpers::*;
use crate::on_both_backends;
use std::time::Duration;

on_both_backends!(every_answer_is_committed_before_it_is_given);

async fn every_answer_is_committed_before_it_is_given(backend: Backend) {
    let app = spawn_app(backend).await;
    app.allow_anonymous().await;
    // 48 registrations at once, and 16 more abandoned after a few hundred microseconds:
    // those end inside batches that others commit.
    let calls = (0..64u64).map(|i| {
        let app = &app;
        async move {
            let register = async {
                let session = app.authenticate("").await.expect("registered").session;
                let token = session.expect("a session at once").token;
                // Read at once through another connection (a cache miss).
                (app.authorize(&token).await.role(), token)
            };
            if i % 4 == 3 {
                let patience = Duration::from_micros(100 + 97 * (i % 13));
                tokio::time::timeout(patience, register).await.ok()
            } else {
                Some(register.await)
            }
        }
    });
    let answers: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(answers.len() >= 48, "{} answers", answers.len());
    for (role, token) in &answers {
        assert_eq!(
            *role,
            Role::User,
            "{token:.12} was answered before it was committed"
        );
    }
    // And every one of them is still there, whatever happened to the abandoned ones.
    for (_, token) in &answers {
        assert_eq!(app.authorize(token).await.role(), Role::User);
    }
}
