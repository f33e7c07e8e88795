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
    ) -> StoreResult<Vec<OutboxMessage>> {
        // Most polls find nothing: look first without a transaction, which on SQLite would
        // take the write lock every second.
        let due = sqlx::query(
            "SELECT id FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let rows: Vec<OutboxMessage> = sqlx::query_as(&format!(
            "SELECT {} FROM outbox WHERE sent_at IS NULL AND next_attempt_at <= $1
             ORDER BY next_attempt_at, id LIMIT $2",
            OutboxMessage::column_list()
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx.tx)
        .await?;
        let master = self.master()?;
        let messages: Vec<OutboxMessage> = rows
            .into_iter()
            .map(|mut message| {
                message.subject = master.open_text(
                    &sealing::outbox_place("subject", message.id),
                    &message.subject,
                )?;
                message.body =
                    master.open_text(&sealing::outbox_place("body", message.id), &message.body)?;
                Ok(message)
            })
            .collect::<StoreResult<_>>()?;
        let mut leased = Vec::with_capacity(messages.len());
        for message in messages {
            // Only the replica whose update matches the row it read wins the lease.
            let done = sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1, lease_owner = $4
                 WHERE id = $2 AND next_attempt_at = $3 AND sent_at IS NULL",
            )
            .bind(now + lease_seconds)
            .bind(message.id)
            .bind(message.next_attempt_at)
            .bind(owner)
            .execute(&mut *tx.tx)
            .await?;
            if done.rows_affected() == 1 {
                leased.push(message);
            }
        }
        tx.commit().await?;
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a delivery by the lease's owner; false when the lease was lost meanwhile.
    pub async fn mark_message_sent(&self, id: i64, owner: &str, now: i64) -> StoreResult<bool> {
        // A delivered message keeps no subject or body: a copy of the database must not
        // hold live codes and links.
        let done = sqlx::query(
            "UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL,
               subject = '', body = '', lease_owner = NULL
             WHERE id = $2 AND lease_owner = $3 AND sent_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Tx {
    /// How many messages were queued for this recipient since `since`.
    pub async fn count_messages_since(&mut self, recipient: &str, since: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE recipient = $1 AND created_at >= $2",
        )
        .bind(recipient)
        .bind(since)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Queues a message; its subject and body are sealed (bound to the row's id) until
    /// it is delivered, then erased.
    pub async fn enqueue_message(&mut self, message: &NewMessage) -> StoreResult<()> {
        let row = sqlx::query(
            "INSERT INTO outbox (channel, recipient, subject, body, sender, next_attempt_at, created_at, project_id)
             VALUES ($1, $2, '', '', $3, $4, $4, $5) RETURNING id",
        )
        .bind(message.channel.as_str())
        .bind(&message.recipient)
        .bind(message.sender.as_deref())
        .bind(message.created_at)
        .bind(message.project_id.as_deref())
        .fetch_one(&mut *self.tx)
        .await?;
        let id: i64 = row.try_get("id")?;
        let master = self.master()?;
        sqlx::query("UPDATE outbox SET subject = $1, body = $2 WHERE id = $3")
            .bind(master.seal_text(&sealing::outbox_place("subject", id), &message.subject))
            .bind(master.seal_text(&sealing::outbox_place("body", id), &message.body))
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
