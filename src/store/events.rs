//! Events and their log lines.

use sqlx::Row;

use super::*;

impl Store {
    pub async fn event_by_id(&self, id: &str) -> StoreResult<Option<EventRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM events WHERE id = $1",
            EventRecord::column_list()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Log lines of an event, newest first, with ids below `before_id` when given.
    pub async fn list_logs(
        &self,
        event_id: &str,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<LogRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM logs WHERE event_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            LogRecord::column_list()
        ))
        .bind(event_id)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Tx {
    pub async fn insert_event(&mut self, event: &EventRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO events (id, project_id, owner_id, name, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&event.id)
        .bind(&event.project_id)
        .bind(event.owner_id)
        .bind(&event.name)
        .bind(event.created_at)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    pub async fn count_logs_since(&mut self, event_id: &str, since: i64) -> StoreResult<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM logs WHERE event_id = $1 AND created_at >= $2")
                .bind(event_id)
                .bind(since)
                .fetch_one(&mut self.tx)
                .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn insert_log(
        &mut self,
        event_id: &str,
        data: Option<&str>,
        now: i64,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO logs (event_id, data, created_at) VALUES ($1, $2, $3)")
            .bind(event_id)
            .bind(data)
            .bind(now)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }
}
