//! Projects.

use sqlx::Row;

use super::rows::{Column, Record};
use super::*;

/// The value of a unique column that finds a project.
enum Key<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl Store {
    /// Cached (see `project_cache`).
    pub async fn project_by_app_token(
        &self,
        app_token: &str,
    ) -> StoreResult<Option<ProjectRecord>> {
        if let Some(project) = self.projects.get(app_token) {
            return Ok(Some(project));
        }
        let generation = self.projects.generation();
        let project = self
            .project_where("app_token", Key::Text(app_token))
            .await?;
        if let Some(project) = &project {
            self.projects.insert(generation, app_token, project);
        }
        Ok(project)
    }

    pub async fn project_by_admin_token_hash(
        &self,
        hash: &[u8],
    ) -> StoreResult<Option<ProjectRecord>> {
        self.project_where("admin_token_hash", Key::Bytes(hash))
            .await
    }

    pub async fn project_by_id(&self, id: &str) -> StoreResult<Option<ProjectRecord>> {
        self.project_where("id", Key::Text(id)).await
    }

    /// The project whose `column` (a unique one) holds `value`, its secrets opened.
    async fn project_where(
        &self,
        column: &'static str,
        value: Key<'_>,
    ) -> StoreResult<Option<ProjectRecord>> {
        let sql = format!(
            "SELECT {} FROM projects WHERE {column} = $1",
            ProjectRecord::column_list()
        );
        let query = sqlx::query_as(&sql);
        let query = match value {
            Key::Text(text) => query.bind(text),
            Key::Bytes(bytes) => query.bind(bytes),
        };
        let project: Option<ProjectRecord> = query.fetch_optional(&self.pool).await?;
        project.map(|project| self.opened(project)).transpose()
    }
}

impl Store {
    /// A project as read, with its sealed secrets opened.
    fn opened(&self, mut project: ProjectRecord) -> StoreResult<ProjectRecord> {
        let master = self.master()?;
        if let Some(secret) = &project.delivery.sms_webhook_secret {
            project.delivery.sms_webhook_secret =
                Some(master.open_text(&sealing::webhook_secret_place(&project.id), secret)?);
        }
        if let Some(pem) = &project.external_token.key_pem {
            project.external_token.key_pem =
                Some(master.open_text(&sealing::external_key_place(&project.id), pem)?);
        }
        Ok(project)
    }
}

impl Store {
    /// Every project with its user count, oldest first.
    pub async fn list_projects(&self) -> StoreResult<Vec<ProjectSummary>> {
        Ok(sqlx::query_as(
            "SELECT p.id AS project_id, p.name, p.created_at,
                    (SELECT COUNT(*) FROM users u WHERE u.project_id = p.id) AS users
             FROM projects p ORDER BY p.created_at, p.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Whether `hash` is an operator token's; `None`: no operator token exists at all
    /// (the operator API is off).
    pub async fn operator_token_known(&self, hash: &[u8]) -> StoreResult<Option<bool>> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM operator_tokens) AS n,
                    (SELECT COUNT(*) FROM operator_tokens WHERE token_hash = $1) AS known",
        )
        .bind(hash)
        .fetch_one(&self.pool)
        .await?;
        let (n, known): (i64, i64) = (row.try_get("n")?, row.try_get("known")?);
        Ok((n > 0).then_some(known > 0))
    }
}

impl Tx {
    pub async fn insert_operator_token(&mut self, hash: &[u8], now: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO operator_tokens (token_hash, created_at) VALUES ($1, $2)")
            .bind(hash)
            .bind(now)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Deletes a project and everything of it (users, sessions, logs, queued messages);
    /// its users' uids are retired. False: no such project.
    pub async fn delete_project(&mut self, project_id: &str, now: i64) -> StoreResult<bool> {
        self.revoke_everyone();
        self.projects_changed = true;
        sqlx::query(
            "INSERT INTO retired_uids (uid, retired_at)
             SELECT uid, $2 FROM users WHERE project_id = $1 ON CONFLICT DO NOTHING",
        )
        .bind(project_id)
        .bind(now)
        .execute(&mut self.tx)
        .await?;
        let done = sqlx::query("DELETE FROM projects WHERE id = $1")
            .bind(project_id)
            .execute(&mut self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a project's app token; false: no such project.
    pub async fn set_app_token(&mut self, project_id: &str, token: &str) -> StoreResult<bool> {
        self.projects_changed = true;
        let done = sqlx::query("UPDATE projects SET app_token = $2 WHERE id = $1")
            .bind(project_id)
            .bind(token)
            .execute(&mut self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces a project's admin token (only its hash is stored); false: no such project.
    pub async fn set_admin_token_hash(
        &mut self,
        project_id: &str,
        hash: &[u8],
    ) -> StoreResult<bool> {
        self.projects_changed = true;
        let done = sqlx::query("UPDATE projects SET admin_token_hash = $2 WHERE id = $1")
            .bind(project_id)
            .bind(hash)
            .execute(&mut self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `project` still has the app token it was found by, read in this
    /// transaction: it may have come from the cache, and another process (an operator's
    /// command on the same SQLite file) may have rotated the token or deleted the project
    /// since. If not, the cache is dropped.
    pub async fn app_token_is_current(&mut self, project: &ProjectRecord) -> StoreResult<bool> {
        let current = sqlx::query("SELECT 1 AS one FROM projects WHERE id = $1 AND app_token = $2")
            .bind(&project.id)
            .bind(&project.app_token)
            .fetch_optional(&mut self.tx)
            .await?
            .is_some();
        if !current {
            self.projects.clear();
        }
        Ok(current)
    }

    pub async fn project_count(&mut self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM projects")
            .fetch_one(&mut self.tx)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Serializes first-start set-up across processes until this transaction ends. On
    /// SQLite the transaction already holds the write lock (BEGIN IMMEDIATE).
    pub async fn lock_first_start(&mut self) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            // A fixed key of our own: "portcullis first start".
            sqlx::query("SELECT pg_advisory_xact_lock(7076157364011520001)")
                .execute(&mut self.tx)
                .await?;
        }
        Ok(())
    }

    /// Writes every column of `project` (the caller merged the change into the record),
    /// its secrets sealed.
    pub async fn update_project(&mut self, project: &ProjectRecord) -> StoreResult<()> {
        self.projects_changed = true;
        let master = self.master()?;
        let mut sealed = project.clone();
        sealed.delivery.sms_webhook_secret = project
            .delivery
            .sms_webhook_secret
            .as_deref()
            .map(|secret| master.seal_text(&sealing::webhook_secret_place(&project.id), secret));
        sealed.external_token.key_pem = project
            .external_token
            .key_pem
            .as_deref()
            .map(|pem| master.seal_text(&sealing::external_key_place(&project.id), pem));
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let sql = SQL.get_or_init(|| {
            // Every column is bound in order; `id` ($1) is the one that finds the row.
            let assignments: Vec<String> = ProjectRecord::column_names()
                .iter()
                .enumerate()
                .filter(|(_, column)| **column != "id")
                .map(|(i, column)| format!("{column} = ${}", i + 1))
                .collect();
            format!(
                "UPDATE projects SET {} WHERE id = $1",
                assignments.join(", ")
            )
        });
        sealed.bind(sqlx::query(sql)).execute(&mut self.tx).await?;
        Ok(())
    }

    pub async fn insert_project(&mut self, project: &NewProject) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO projects (id, name, app_token, admin_token_hash, anonymous_login, recovery, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(&project.app_token)
        .bind(project.admin_token_hash.as_slice())
        .bind(project.anonymous_login as i64)
        .bind(project.recovery as i64)
        .bind(project.created_at)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }
}
