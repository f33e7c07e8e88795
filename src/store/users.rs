//! Users.

use super::*;

/// The user insert (a macro, so `concat!` can add PostgreSQL's RETURNING to it). SQLite
/// needs the WHERE to read ON CONFLICT as the upsert clause.
macro_rules! users_insert {
    () => {
        "INSERT INTO users (uid, project_id, name, root, password_hash, created_at, verified_at)
         SELECT $1, $2, $3, $4, $5, $6, $7
         WHERE NOT EXISTS (SELECT 1 FROM retired_uids WHERE uid = $1)
         ON CONFLICT DO NOTHING"
    };
}

/// A user by name, through the pool or inside a transaction.
async fn user_by_name<'e>(
    db: impl Executor<'e, Database = Any>,
    project_id: &str,
    name: &str,
) -> StoreResult<Option<UserRecord>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {} FROM users WHERE project_id = $1 AND name = $2",
        UserRecord::column_list()
    ))
    .bind(project_id)
    .bind(name)
    .fetch_optional(db)
    .await?)
}

impl Store {
    pub async fn user_by_name(
        &self,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<UserRecord>> {
        user_by_name(&self.pool, project_id, name).await
    }
}

impl Tx {
    pub async fn user_by_name(
        &mut self,
        project_id: &str,
        name: &str,
    ) -> StoreResult<Option<UserRecord>> {
        user_by_name(&mut self.tx, project_id, name).await
    }

    /// Inserts a user; `None` when its name is already taken in the project, or its uid
    /// was ever given to a user (of any project, deleted too), also when a concurrent
    /// registration won the race. Never aborts the transaction, so a whole import batch
    /// can be checked and reported.
    pub async fn insert_user(&mut self, user: &NewUser) -> StoreResult<Option<UserRecord>> {
        // SQLite runs a RETURNING through a temporary table of its own, opened and closed
        // per statement in the one writer's time: there the record is the row as inserted
        // and the statement a constant (no formatting on every code start).
        let bound = |sql| {
            sqlx::query(sql)
                .bind(user.uid.as_str())
                .bind(user.project_id.as_str())
                .bind(user.name.as_deref())
                .bind(user.root as i64)
                .bind(user.password_hash.as_deref())
                .bind(user.created_at)
                .bind(user.verified_at)
        };
        match self.backend {
            Backend::Sqlite => {
                let done = bound(users_insert!()).execute(&mut self.tx).await?;
                Ok(match (done.rows_affected(), done.last_insert_id()) {
                    (1, Some(id)) => Some(UserRecord::inserted(id, user)),
                    _ => None,
                })
            }
            Backend::Postgres => {
                let sql = format!(
                    concat!(users_insert!(), " RETURNING {}"),
                    UserRecord::column_list()
                );
                let row = bound(&sql).fetch_optional(&mut self.tx).await?;
                Ok(row.map(|row| sqlx::FromRow::from_row(&row)).transpose()?)
            }
        }
    }

    /// The first proof that the user holds the mailbox (a code or link confirmed, or an
    /// admin's import). A password set before it was chosen by someone who never proved
    /// the mailbox, maybe not its owner: it is removed and every session is ended (all of
    /// them were opened with it: nothing else opens a session on an unverified user).
    /// Returns whether a password was removed.
    pub async fn prove_mailbox(&mut self, user_id: i64, now: i64) -> StoreResult<bool> {
        // Take the row's lock first (PostgreSQL): a Register racing this proof then either
        // set its password before, and it is removed here, or finds the user verified.
        sqlx::query("UPDATE users SET verified_at = verified_at WHERE id = $1")
            .bind(user_id)
            .execute(&mut self.tx)
            .await?;
        let removed = sqlx::query(
            "UPDATE users SET password_hash = NULL, verified_at = $1
             WHERE id = $2 AND verified_at IS NULL AND password_hash IS NOT NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut self.tx)
        .await?
        .rows_affected()
            == 1;
        if removed {
            self.revoke_user(user_id);
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut self.tx)
                .await?;
            sqlx::query("DELETE FROM password_resets WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut self.tx)
                .await?;
        } else {
            self.mark_user_verified(user_id, now).await?;
        }
        Ok(removed)
    }

    pub async fn mark_user_verified(&mut self, user_id: i64, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE users SET verified_at = $1 WHERE id = $2 AND verified_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    pub async fn user_by_id(&mut self, user_id: i64) -> StoreResult<Option<UserRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM users WHERE id = $1",
            UserRecord::column_list()
        ))
        .bind(user_id)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Renames a user; `Conflict` when the name is taken in the project.
    pub async fn rename_user(&mut self, user_id: i64, name: &str, now: i64) -> StoreResult<()> {
        self.revoke_user(user_id);
        sqlx::query("UPDATE users SET name = $1, verified_at = $2 WHERE id = $3")
            .bind(name)
            .bind(now)
            .bind(user_id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Deletes a user; sessions, login requests and recovery tokens go with it (foreign
    /// keys cascade).
    pub async fn delete_user(&mut self, user_id: i64, now: i64) -> StoreResult<bool> {
        self.revoke_user(user_id);
        sqlx::query(
            "INSERT INTO retired_uids (uid, retired_at) SELECT uid, $2 FROM users WHERE id = $1
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(now)
        .execute(&mut self.tx)
        .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_encryption(
        &mut self,
        user_id: i64,
        encrypted: bool,
        text: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE users SET encrypted = $1, encryption_text = $2 WHERE id = $3")
            .bind(encrypted as i64)
            .bind(text)
            .bind(user_id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite an inserted user's record is made from what was inserted, not read back:
    /// it must be the row as stored, defaults included. A name taken gives none.
    #[tokio::test]
    async fn an_inserted_user_is_the_row_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        let store = Store::connect(&url).unwrap();
        store.migrate().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.insert_project(&NewProject {
            id: "p".into(),
            name: "P".into(),
            app_token: "app_p".into(),
            admin_token_hash: [1; 32],
            anonymous_login: false,
            recovery: false,
            created_at: 1,
        })
        .await
        .unwrap();
        for (name, verified_at) in [(Some("a@example.com"), Some(6)), (None, None)] {
            let user = NewUser::new("p", name, 5, verified_at);
            let inserted = tx.insert_user(&user).await.unwrap().expect("inserted");
            let stored = tx.user_by_id(inserted.id).await.unwrap().expect("stored");
            assert_eq!(format!("{inserted:?}"), format!("{stored:?}"));
        }
        let again = NewUser::new("p", Some("a@example.com"), 7, None);
        assert!(
            tx.insert_user(&again).await.unwrap().is_none(),
            "name taken"
        );
        tx.commit().await.unwrap();
        store.close().await;
    }
}
