//! The outbox: mails and texts waiting to be sent.

use sqlx::Row;

use super::*;

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

    /// Records deliveries by the leases' owner, in one statement; returns the ids whose
    /// lease was lost meanwhile (another worker may send those again).
    pub async fn mark_messages_sent(
        &self,
        ids: &[i64],
        owner: &str,
        now: i64,
    ) -> StoreResult<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 3)).collect();
        // A delivered message keeps no subject or body: a copy of the database must not
        // hold live codes and links.
        let sql = format!(
            "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL,
               subject = '', body = '', lease_owner = NULL
             WHERE lease_owner = $2 AND sent_at IS NULL AND id IN ({})
             RETURNING id",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(now).bind(owner);
        for id in ids {
            query = query.bind(*id);
        }
        let recorded: Vec<i64> = query
            .fetch_all(&self.writer)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        Ok(ids
            .iter()
            .copied()
            .filter(|id| !recorded.contains(id))
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
        let sealed = SealedMessage::seal(self.master()?, message);
        self.enqueue_sealed(&sealed).await
    }

    /// Queues a message sealed beforehand (outside the transaction, which on SQLite holds
    /// the one writer: sealing is work every other write would wait for).
    pub async fn enqueue_sealed(&mut self, sealed: &SealedMessage) -> StoreResult<()> {
        let message = &sealed.message;
        sqlx::query(
            "INSERT INTO outbox (channel, recipient, subject, body, sender, next_attempt_at, created_at, project_id, seal_key)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
        )
        .bind(message.channel.as_str())
        .bind(&message.recipient)
        .bind(&message.subject)
        .bind(&message.body)
        .bind(message.sender.as_deref())
        .bind(message.created_at)
        .bind(message.project_id.as_deref())
        .bind(&sealed.seal_key)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// A message's subject and body sealed as [`Tx::enqueue_sealed`] stores them.
    pub fn seal_message(&self, message: &NewMessage) -> StoreResult<SealedMessage> {
        Ok(SealedMessage::seal(self.master()?, message))
    }
}

/// A message ready to queue: its subject and body sealed under a random key of its own.
#[derive(Debug)]
pub struct SealedMessage {
    message: NewMessage,
    seal_key: String,
}

impl SealedMessage {
    fn seal(master: &MasterKey, message: &NewMessage) -> SealedMessage {
        let seal_key = uuid::Uuid::new_v4().simple().to_string();
        let place = |column| sealing::outbox_place(column, 0, Some(&seal_key));
        SealedMessage {
            message: NewMessage {
                subject: master.seal_text(&place("subject"), &message.subject),
                body: master.seal_text(&place("body"), &message.body),
                ..message.clone()
            },
            seal_key,
        }
    }
}
