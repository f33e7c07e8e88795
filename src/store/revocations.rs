//! Revocations across replicas (PostgreSQL): a transaction that ends sessions or changes
//! what Authorize reports sends a notification as it commits, and every replica empties
//! its session cache when one arrives. The cache's TTL stays as the backstop for
//! notifications missed while a listener reconnects. SQLite has no other replicas.

use secrecy::ExposeSecret;
use sqlx::postgres::PgListener;
use std::future::Future;
use std::time::Duration;

use super::{Backend, Store};

pub(super) const CHANNEL: &str = "portcullis_revocations";

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
            // Whatever was revoked while not listening: forget it all.
            self.sessions.clear();
            loop {
                let received = tokio::select! {
                    _ = &mut stopped => return,
                    received = listener.try_recv() => received,
                };
                match received {
                    Ok(Some(_)) => self.sessions.clear(),
                    // The connection dropped and came back: notifications may be lost.
                    Ok(None) => self.sessions.clear(),
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
