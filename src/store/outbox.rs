//! The outbox: mails and texts waiting to be sent.

use sqlx::Row;
use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// The outbox's insert (a macro, so `concat!` can add PostgreSQL's RETURNING to it).
macro_rules! outbox_insert {
    () => {
        "INSERT INTO outbox (channel, recipient, subject, body, sender, next_attempt_at, created_at, project_id, seal_key, lease_owner)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    };
}

impl Store {
    /// (messages not delivered yet, creation time of the oldest).
    pub async fn outbox_backlog(&self) -> StoreResult<(i64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("oldest")?))
    }

    /// Messages due for delivery, leased to `owner` for `lease_seconds` so another worker
    /// does not send them at the same time (the owner renews the lease while sending).
    pub async fn lease_due_messages(
        &self,
        now: i64,
        lease_seconds: i64,
        limit: i64,
        owner: &str,
    ) -> StoreResult<LeasedMessages> {
        // Most polls find nothing: look first without a transaction, which on SQLite would
        // take the write lock every second.
        let due = sqlx::query(
            "SELECT id FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(LeasedMessages::default());
        }
        // One statement leases the batch. A message another worker leased meanwhile no
        // longer matches `next_attempt_at <= now` (PostgreSQL re-checks that condition
        // on the row it waited for), so only one worker gets each.
        let rows: Vec<OutboxMessage> = sqlx::query_as(&format!(
            "UPDATE outbox SET next_attempt_at = $1, lease_owner = $2
             WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $3
                          ORDER BY next_attempt_at, id LIMIT $4)
               AND sent_at IS NULL AND next_attempt_at <= $3
             RETURNING {}",
            OutboxMessage::column_list()
        ))
        .bind(now + lease_seconds)
        .bind(owner)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        let master = self.master()?;
        let mut leased = LeasedMessages::default();
        for mut message in rows {
            let place =
                |column| sealing::outbox_place(column, message.id, message.seal_key.as_deref());
            let opened = master
                .open_text(&place("subject"), &message.subject)
                .and_then(|subject| {
                    Ok((subject, master.open_text(&place("body"), &message.body)?))
                });
            match opened {
                Ok((subject, body)) => {
                    (message.subject, message.body) = (subject, body);
                    leased.ready.push(message);
                }
                // One damaged row must not hold up the messages leased with it.
                Err(error) => leased.unreadable.push(UnreadableMessage {
                    id: message.id,
                    attempts: message.attempts,
                    error: error.to_string(),
                }),
            }
        }
        leased.ready.sort_by_key(|message| message.id);
        Ok(leased)
    }

    /// Extends `owner`'s lease on a message being sent; false when the lease was lost
    /// (it ran out and another worker took the message), and the sender must stop.
    pub async fn renew_lease(&self, id: i64, owner: &str, until: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $1
             WHERE id = $2 AND lease_owner = $3 AND sent_at IS NULL",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records deliveries by the leases' owner, a statement per up to
    /// [`MARK_SENT_BATCH`], all in one transaction: should one statement fail, none is
    /// recorded and a later try finds every lease as it was (had the first statements
    /// stuck, it would report their messages as sent after their leases were lost).
    /// Returns the ids whose lease was lost meanwhile (another worker may send those
    /// again).
    pub async fn mark_messages_sent(
        &self,
        ids: &[i64],
        owner: &str,
        now: i64,
    ) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            // No transaction: on SQLite it would take the writer for nothing.
            return Ok(Vec::new());
        }
        let mut recorded = Vec::with_capacity(ids.len());
        let mut tx = self.begin().await?;
        for batch in ids.chunks(MARK_SENT_BATCH) {
            // Placeholders rounded up to a power of two (the last id repeated), so a few
            // statements, prepared once, serve every batch size.
            let placeholders = batch.len().next_power_of_two();
            let list: Vec<String> = (0..placeholders).map(|i| format!("${}", i + 3)).collect();
            // A delivered message keeps no subject or body: a copy of the database must
            // not hold live codes and links.
            let sql = format!(
                "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL,
                   subject = '', body = '', lease_owner = NULL
                 WHERE lease_owner = $2 AND sent_at IS NULL AND id IN ({})
                 RETURNING id",
                list.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(now).bind(owner);
            for i in 0..placeholders {
                query = query.bind(batch[i.min(batch.len() - 1)]);
            }
            for row in query.fetch_all(&mut tx.tx).await? {
                recorded.push(row.try_get::<i64, _>("id")?);
            }
        }
        tx.commit().await?;
        recorded.sort_unstable();
        Ok(ids
            .iter()
            .copied()
            .filter(|id| recorded.binary_search(id).is_err())
            .collect())
    }

    pub async fn mark_message_failed(
        &self,
        id: i64,
        owner: &str,
        retry_at: i64,
        error: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2,
               lease_owner = NULL
             WHERE id = $3 AND lease_owner = $4 AND sent_at IS NULL",
        )
        .bind(retry_at)
        .bind(error)
        .bind(id)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

/// Most deliveries one statement records.
const MARK_SENT_BATCH: usize = 256;

impl Tx {
    /// What the limits on sending a code to `recipient` count, in one read: messages to
    /// it in the window and in the day, login requests from the client's address block,
    /// and wrong codes entered for it.
    pub async fn sending_counts(&mut self, query: &SendingQuery<'_>) -> StoreResult<SendingCounts> {
        let row = sqlx::query(
            "SELECT
               (SELECT COUNT(*) FROM outbox WHERE recipient = $1 AND created_at >= $2) AS in_window,
               (SELECT COUNT(*) FROM outbox WHERE recipient = $1 AND created_at >= $3) AS in_day,
               (SELECT COUNT(*) FROM login_requests WHERE client_block = $4 AND created_at >= $2)
                 AS from_block,
               (SELECT COUNT(*) FROM code_failures WHERE name = $1 AND failed_at >= $5)
                 AS code_failures",
        )
        .bind(query.recipient)
        .bind(query.window_since)
        .bind(query.day_since)
        .bind(query.client_block)
        .bind(query.failures_since)
        .fetch_one(&mut self.tx)
        .await?;
        Ok(SendingCounts {
            messages_in_window: row.try_get("in_window")?,
            messages_in_day: row.try_get("in_day")?,
            requests_from_block: row.try_get("from_block")?,
            code_failures: row.try_get("code_failures")?,
        })
    }

    /// Queues a message; its subject and body are sealed (bound to a random key of the
    /// row's own) until it is delivered, then erased.
    pub async fn enqueue_message(&mut self, message: &NewMessage) -> StoreResult<()> {
        let sealed = SealedMessage::seal(self.master()?, message.clone());
        self.enqueue_sealed(sealed).await
    }

    /// Queues a message sealed beforehand (outside the transaction, which on SQLite holds
    /// the one writer: sealing is work every other write would wait for). While this
    /// process's delivery worker runs, the message is queued leased to it and handed to it
    /// in memory once committed (see [`LocalOutbox`]).
    pub async fn enqueue_sealed(&mut self, sealed: SealedMessage) -> StoreResult<()> {
        let SealedMessage {
            plain,
            seal_key,
            subject,
            body,
        } = sealed;
        let claim = self.local_outbox.claim();
        let next_attempt_at = plain.created_at + claim.as_ref().map_or(0, |c| c.lease_seconds);
        // SQLite runs a RETURNING through a temporary table of its own, in the one
        // writer's time: there the id is the row id of the insert.
        let bound = |sql| {
            sqlx::query(sql)
                .bind(plain.channel.as_str())
                .bind(plain.recipient.as_str())
                .bind(subject)
                .bind(body)
                .bind(plain.sender.as_deref())
                .bind(next_attempt_at)
                .bind(plain.created_at)
                .bind(plain.project_id.as_deref())
                .bind(seal_key.as_str())
                .bind(claim.as_ref().map(|c| c.owner.as_str()))
        };
        let id = match self.backend {
            Backend::Sqlite => bound(outbox_insert!())
                .execute(&mut self.tx)
                .await?
                .last_insert_id(),
            Backend::Postgres => Some(
                bound(concat!(outbox_insert!(), " RETURNING id"))
                    .fetch_one(&mut self.tx)
                    .await?
                    .try_get("id")?,
            ),
        };
        let leased = match (claim, id) {
            (Some(_), Some(id)) => Some(OutboxMessage {
                id,
                project_id: plain.project_id,
                channel: plain.channel,
                recipient: plain.recipient,
                subject: plain.subject,
                body: plain.body,
                sender: plain.sender,
                attempts: 0,
                next_attempt_at,
                created_at: plain.created_at,
                seal_key: Some(seal_key),
            }),
            // (No id: SQLite always gives one. Were it missing, the lease would run out and
            // any worker would send the message.)
            _ => None,
        };
        let local = self.local_outbox.clone();
        self.on_commit
            .push(Box::new(move || local.committed(leased)));
        Ok(())
    }
}

/// Messages this process queues already leased to its own delivery worker, handed to it
/// in memory once their transaction commits: the worker need not find and lease them in
/// the database, an UPDATE that rewrites each message's row (on SQLite in the one
/// writer's time: as much as the rest of a code start's writes). Should the process die
/// first, the lease runs out and any worker sends the message, as with any lease.
#[derive(Debug, Default)]
pub struct LocalOutbox {
    state: Mutex<Local>,
    arrived: tokio::sync::Notify,
    /// A message was queued unleased: the worker finds it in the database.
    queued: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Local {
    /// The running worker's lease owner and lease; `None`: no worker, nothing is claimed.
    worker: Option<LocalClaim>,
    handed: VecDeque<OutboxMessage>,
}

#[derive(Clone, Debug)]
struct LocalClaim {
    owner: String,
    lease_seconds: i64,
}

/// Messages waiting in memory past which new ones are queued unleased, for whichever
/// worker comes first: a worker this far behind would not send them within their lease.
const HANDED_LIMIT: usize = 1024;

impl LocalOutbox {
    fn state(&self) -> std::sync::MutexGuard<'_, Local> {
        self.state.lock().expect("outbox lock poisoned")
    }

    /// The delivery worker starts taking messages: leased to `owner` for `lease_seconds`.
    pub fn attach(&self, owner: &str, lease_seconds: i64) {
        self.state().worker = Some(LocalClaim {
            owner: owner.to_owned(),
            lease_seconds,
        });
    }

    /// The worker stops: nothing more is claimed, and what waits in memory is left to its
    /// leases (it goes out once they run out).
    pub fn detach(&self) {
        let mut state = self.state();
        state.worker = None;
        state.handed.clear();
    }

    fn claim(&self) -> Option<LocalClaim> {
        let state = self.state();
        (state.handed.len() < HANDED_LIMIT)
            .then(|| state.worker.clone())
            .flatten()
    }

    /// A message's transaction committed: one leased to the worker is handed to it, and
    /// for one queued unleased it looks in the database now rather than at its next tick.
    fn committed(&self, leased: Option<OutboxMessage>) {
        match leased {
            Some(message) => {
                self.state().handed.push_back(message);
                self.arrived.notify_one();
            }
            None => self.queued.notify_one(),
        }
    }

    /// Up to `max` messages handed over, oldest first.
    pub fn take(&self, max: usize) -> Vec<OutboxMessage> {
        let mut state = self.state();
        let count = max.min(state.handed.len());
        state.handed.drain(..count).collect()
    }

    /// Resolves when a message is handed over.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    /// Resolves when this process queued a message unleased (no worker, or one too far
    /// behind): it waits in the database.
    pub async fn queued_unleased(&self) {
        self.queued.notified().await
    }
}

impl Store {
    /// A message's subject and body sealed as [`Tx::enqueue_sealed`] stores them.
    pub fn seal_message(&self, message: NewMessage) -> StoreResult<SealedMessage> {
        Ok(SealedMessage::seal(self.master()?, message))
    }

    /// Where this process's delivery worker takes the messages handed to it.
    pub fn local_outbox(&self) -> &LocalOutbox {
        &self.local_outbox
    }
}

/// A message ready to queue: its subject and body sealed under a random key of its own,
/// and as written, for a worker it is handed to in memory.
#[derive(Debug)]
pub struct SealedMessage {
    plain: NewMessage,
    seal_key: String,
    subject: String,
    body: String,
}

impl SealedMessage {
    fn seal(master: &MasterKey, plain: NewMessage) -> SealedMessage {
        let seal_key = crate::domain::random::uuid_v4().simple().to_string();
        let place = |column| sealing::outbox_place(column, 0, Some(&seal_key));
        SealedMessage {
            subject: master.seal_text(&place("subject"), &plain.subject),
            body: master.seal_text(&place("body"), &plain.body),
            seal_key,
            plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MasterKey;

    fn mail(n: usize) -> NewMessage {
        NewMessage {
            project_id: None,
            channel: Channel::Email,
            recipient: format!("r{n}@example.com"),
            subject: "Your code".into(),
            body: format!("code {n}"),
            sender: None,
            created_at: 1_000,
        }
    }

    /// A store holding `count` mails, due at 1 000.
    async fn store_with_mail(dir: &tempfile::TempDir, count: usize) -> Store {
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        let mut store = Store::connect(&url).expect("store");
        store.migrate().await.expect("migrations");
        store
            .adopt_master_key(MasterKey::generate())
            .await
            .expect("master key");
        let mut tx = store.begin().await.unwrap();
        for n in 0..count {
            tx.enqueue_message(&mail(n)).await.unwrap();
        }
        tx.commit().await.unwrap();
        store
    }

    async fn execute(store: &Store, sql: &str) {
        let mut tx = store.begin().await.unwrap();
        sqlx::query(sql).execute(&mut tx.tx).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// A backlog of deliveries (recorded late, after the database was away) is recorded
    /// whatever its size: in several statements, each with a padded list of ids. Only the
    /// owner's leases count; anything else is reported as lost.
    #[tokio::test]
    async fn deliveries_of_any_number_are_recorded_and_only_the_owners() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_mail(&dir, 300).await;
        let mine = store
            .lease_due_messages(1_000, 10, 299, "me")
            .await
            .unwrap();
        let theirs = store
            .lease_due_messages(1_000, 10, 1, "them")
            .await
            .unwrap();
        assert_eq!((mine.ready.len(), theirs.ready.len()), (299, 1));

        let mut ids: Vec<i64> = mine.ready.iter().map(|m| m.id).collect();
        let other = theirs.ready[0].id;
        ids.push(other);
        let lost = store.mark_messages_sent(&ids, "me", 1_001).await.unwrap();
        assert_eq!(lost, vec![other], "another owner's message is not recorded");
        assert_eq!(store.outbox_backlog().await.unwrap().0, 1);
        // Recorded once: a second time finds nothing leased any more.
        let again = store
            .mark_messages_sent(&ids[..3], "me", 1_002)
            .await
            .unwrap();
        assert_eq!(again, ids[..3].to_vec());
    }

    /// A backlog recorded in several statements is recorded whole or not at all: a
    /// failure in the second statement leaves the first statement's messages leased, and
    /// the retry records them all without calling any of them lost.
    #[tokio::test]
    async fn a_backlog_that_fails_halfway_is_recorded_whole_on_the_next_try() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_mail(&dir, 300).await;
        let mine = store
            .lease_due_messages(1_000, 10, 300, "me")
            .await
            .unwrap();
        let ids: Vec<i64> = mine.ready.iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 300);

        // The database fails on a message of the second statement (ids past the 256th).
        let failing = ids[MARK_SENT_BATCH + 10];
        execute(
            &store,
            &format!(
                "CREATE TRIGGER fail_once BEFORE UPDATE OF sent_at ON outbox
                 WHEN NEW.id = {failing} BEGIN SELECT RAISE(ABORT, 'disk gone'); END"
            ),
        )
        .await;
        let failed = store.mark_messages_sent(&ids, "me", 1_001).await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!(
            store.outbox_backlog().await.unwrap().0,
            300,
            "nothing recorded"
        );

        execute(&store, "DROP TRIGGER fail_once").await;
        let lost = store.mark_messages_sent(&ids, "me", 1_002).await.unwrap();
        assert_eq!(lost, Vec::<i64>::new(), "none reported as lost");
        assert_eq!(store.outbox_backlog().await.unwrap().0, 0);
    }
}
