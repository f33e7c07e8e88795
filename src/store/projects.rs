//! Projects.

use sqlx::Row;

use super::*;

impl Store {
    pub async fn project_by_app_token(
        &self,
        app_token: &str,
    ) -> StoreResult<Option<ProjectRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE app_token = $1"
        ))
        .bind(app_token)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|row| self.opened(ProjectRecord::from_row(row)?))
            .transpose()
    }

    pub async fn project_by_admin_token_hash(
        &self,
        hash: &[u8],
    ) -> StoreResult<Option<ProjectRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE admin_token_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|row| self.opened(ProjectRecord::from_row(row)?))
            .transpose()
    }

    pub async fn project_by_id(&self, id: &str) -> StoreResult<Option<ProjectRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|row| self.opened(ProjectRecord::from_row(row)?))
            .transpose()
    }
}

impl Store {
    /// A project as read, with its sealed secrets opened.
    fn opened(&self, mut project: ProjectRecord) -> StoreResult<ProjectRecord> {
        let master = self.master()?;
        if let Some(secret) = &project.sms_webhook_secret {
            project.sms_webhook_secret =
                Some(master.open_text(&sealing::webhook_secret_place(&project.id), secret)?);
        }
        if let Some(pem) = &project.external_key_pem {
            project.external_key_pem =
                Some(master.open_text(&sealing::external_key_place(&project.id), pem)?);
        }
        Ok(project)
    }
}

impl Tx {
    pub async fn project_count(&mut self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM projects")
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Serializes first-start set-up across processes until this transaction ends. On
    /// SQLite the transaction already holds the write lock (BEGIN IMMEDIATE).
    pub async fn lock_first_start(&mut self) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            // A fixed key of our own: "portcullis first start".
            sqlx::query("SELECT pg_advisory_xact_lock(7076157364011520001)")
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Writes every setting of `project` (the caller merged the change into the record).
    pub async fn update_project_settings(&mut self, project: &ProjectRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE projects SET name = $2, anonymous_login = $3, recovery = $4, code_length = $5,
               code_lifetime_seconds = $6, code_attempts = $7, mail_sender = $8, link_base = $9,
               sms_webhook_url = $10, sms_webhook_secret = $11, external_issuer = $12,
               external_audience = $13, external_key_pem = $14, allowed_origins = $15,
               password_reveal_existing = $16, password_reset_url = $17,
               password_reset_lifetime_seconds = $18, password_require_verified_email = $19
             WHERE id = $1",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(project.anonymous_login as i64)
        .bind(project.recovery as i64)
        .bind(i64::from(project.code_length))
        .bind(project.code_lifetime_seconds)
        .bind(project.code_attempts)
        .bind(project.mail_sender.as_deref())
        .bind(project.link_base.as_deref())
        .bind(project.sms_webhook_url.as_deref())
        .bind(
            project
                .sms_webhook_secret
                .as_deref()
                .map(|secret| {
                    self.master()
                        .map(|m| m.seal_text(&sealing::webhook_secret_place(&project.id), secret))
                })
                .transpose()?,
        )
        .bind(project.external_issuer.as_deref())
        .bind(project.external_audience.as_deref())
        .bind(
            project
                .external_key_pem
                .as_deref()
                .map(|pem| {
                    self.master()
                        .map(|m| m.seal_text(&sealing::external_key_place(&project.id), pem))
                })
                .transpose()?,
        )
        .bind(project.allowed_origins.as_deref())
        .bind(project.password_reveal_existing as i64)
        .bind(project.password_reset_url.as_deref())
        .bind(project.password_reset_lifetime_seconds)
        .bind(project.password_require_verified_email as i64)
        .execute(&mut *self.tx)
        .await?;
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
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
