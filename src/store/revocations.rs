//! Revocations across replicas (PostgreSQL): a transaction that ends sessions or changes
//! what Authorize reports sends a notification as it commits, naming the users (or `*`
//! for everyone), and every replica drops those users' cached sessions when it arrives;
//! one that changes a project says so, and every replica drops its cached projects.
//! The cache's TTL stays as the backstop for notifications missed while a listener
//! reconnects (it empties the cache when it is back). SQLite has no other replicas.

use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;
use std::future::Future;
use std::time::Duration;

use super::{Backend, Store};

pub(super) const CHANNEL: &str = "portcullis_revocations";

/// The notification that a project changed: replicas drop their cached projects. (A
/// replica that predates it reads no user list in it and drops its cached sessions.)
pub(super) const PROJECTS_CHANGED: &str = "projects";

/// NOTIFY payloads stay well under PostgreSQL's 8000 bytes; past this, everyone.
const MAX_PAYLOAD: usize = 7000;

/// The notification for `revoked`: user ids, comma-separated, or `*`.
pub(super) fn payload(revoked: &super::Revoked) -> String {
    match revoked {
        super::Revoked::Users(users) => {
            let list = users
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            if list.len() <= MAX_PAYLOAD {
                list
            } else {
                "*".into()
            }
        }
        _ => "*".into(),
    }
}

/// The users a notification names; `None`: everyone (or a payload not understood).
fn users_in(payload: &str) -> Option<Vec<i64>> {
    payload
        .split(',')
        .map(|id| id.trim().parse::<i64>().ok())
        .collect()
}

impl Store {
    /// Follows other replicas' revocations until `stopped` resolves. Returns at once on
    /// SQLite.
    pub async fn follow_revocations(&self, stopped: impl Future<Output = ()>) {
        if self.backend != Backend::Postgres {
            return;
        }
        tokio::pin!(stopped);
        loop {
            let mut listener = tokio::select! {
                _ = &mut stopped => return,
                listener = self.listen() => listener,
            };
            let Some(listener) = listener.as_mut() else {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            };
            // Whatever was revoked or changed while not listening: forget it all.
            self.sessions.clear();
            self.projects.clear();
            loop {
                let received = tokio::select! {
                    _ = &mut stopped => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(notification)) if notification.payload() == PROJECTS_CHANGED => {
                        self.projects.clear()
                    }
                    Ok(Some(notification)) => match users_in(notification.payload()) {
                        Some(users) => self.sessions.revoke_users(&users),
                        None => self.sessions.clear(),
                    },
                    // The connection dropped and came back: notifications may be lost.
                    Ok(None) => {
                        self.sessions.clear();
                        self.projects.clear();
                    }
                    Err(error) => {
                        tracing::debug!(%error, "revocation listener lost its connection");
                        break;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let connected = async {
            let mut listener = PgListener::connect(self.url.expose_secret()).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::debug!(%error, "cannot listen for revocations yet");
                None
            }
        }
    }
}
