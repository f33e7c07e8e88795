//! Projects.

use sqlx::Row;

use super::*;

impl Store {
    pub async fn project_count(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM projects")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

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
        row.as_ref().map(ProjectRecord::from_row).transpose()
    }

    pub async fn project_by_id(&self, id: &str) -> StoreResult<Option<ProjectRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ProjectRecord::from_row).transpose()
    }
}

impl Tx {
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
