//! Where sealed values live, the master key check, sealing what older versions stored
//! plain, and re-sealing under a new master key.

use sqlx::Row;

use super::*;
use crate::domain::{is_sealed, is_sealed_text};

const CHECK_PLACE: &str = "master_key_check";
const CHECK_VALUE: &[u8] = b"portcullis master key check";

/// Names the place of a sealed value from its row's key.
type Place = fn(&str) -> String;

/// The places of sealed values: each binds a value to its row.
pub(super) fn server_secret_place(name: &str) -> String {
    format!("server_secrets.value:{name}")
}
pub(super) fn signing_key_place(kid: &str) -> String {
    format!("signing_keys.private_key:{kid}")
}
pub(super) fn webhook_secret_place(project_id: &str) -> String {
    format!("projects.sms_webhook_secret:{project_id}")
}
pub(super) fn external_key_place(project_id: &str) -> String {
    format!("projects.external_key_pem:{project_id}")
}
/// Where an outbox value is sealed: the row's random seal key, or (rows queued before
/// seal keys, migration 0014) its id.
pub(super) fn outbox_place(column: &str, id: i64, seal_key: Option<&str>) -> String {
    match seal_key {
        Some(key) => format!("outbox.{column}:key:{key}"),
        None => format!("outbox.{column}:{id}"),
    }
}

/// What adopting a master key found.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyAdoption {
    /// The database had no check yet: it is now sealed with this key.
    New { sealed_rows: u64 },
    /// The key opens the database's check.
    Matches { sealed_rows: u64 },
}

impl Store {
    /// Whether the database was sealed with some master key already.
    pub async fn has_master_key_check(&self) -> StoreResult<bool> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM master_key_check")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Checks `key` against the database (refusing the wrong one before anything is
    /// written), seals every value still stored plain, and uses `key` from now on. One
    /// transaction, so replicas starting together agree.
    pub async fn adopt_master_key(&mut self, key: MasterKey) -> StoreResult<KeyAdoption> {
        let key = Arc::new(key);
        let mut tx = self.begin().await?;
        tx.master = Some(key.clone());
        tx.lock_key("master key").await?;
        let check = sqlx::query("SELECT sealed FROM master_key_check WHERE id = 1")
            .fetch_optional(&mut tx.tx)
            .await?;
        let known = match check {
            Some(row) => {
                let sealed: Vec<u8> = row.try_get("sealed")?;
                if key.open(CHECK_PLACE, &sealed)? != CHECK_VALUE {
                    return Err(SealError::WrongKey.into());
                }
                true
            }
            None => false,
        };
        let sealed_rows = tx.reseal_all(None, &key).await?;
        if !known {
            sqlx::query("INSERT INTO master_key_check (id, sealed) VALUES (1, $1)")
                .bind(key.seal(CHECK_PLACE, CHECK_VALUE))
                .execute(&mut tx.tx)
                .await?;
        }
        tx.commit().await?;
        self.master = Some(key);
        Ok(if known {
            KeyAdoption::Matches { sealed_rows }
        } else {
            KeyAdoption::New { sealed_rows }
        })
    }

    /// Re-seals every sealed value under `new` (the store's key must be the current one),
    /// in one transaction; the store uses `new` afterwards. Returns how many values.
    pub async fn rotate_master_key(&mut self, new: MasterKey) -> StoreResult<u64> {
        let old = self.master.clone().ok_or(StoreError::NoMasterKey)?;
        let new = Arc::new(new);
        let mut tx = self.begin().await?;
        tx.lock_key("master key").await?;
        let count = tx.reseal_all(Some(&old), &new).await?;
        sqlx::query("UPDATE master_key_check SET sealed = $1 WHERE id = 1")
            .bind(new.seal(CHECK_PLACE, CHECK_VALUE))
            .execute(&mut tx.tx)
            .await?;
        tx.commit().await?;
        self.master = Some(new);
        Ok(count)
    }

    pub(super) fn master(&self) -> StoreResult<&MasterKey> {
        self.master.as_deref().ok_or(StoreError::NoMasterKey)
    }
}

impl Tx {
    pub(super) fn master(&self) -> StoreResult<&MasterKey> {
        self.master.as_deref().ok_or(StoreError::NoMasterKey)
    }

    /// Seals under `new` every value of every sealed column: values sealed under `old`
    /// are opened first; plain values (older versions) are sealed as they are.
    async fn reseal_all(&mut self, old: Option<&MasterKey>, new: &MasterKey) -> StoreResult<u64> {
        let mut count = 0;
        // Byte columns: (table, key column, value column, place).
        let byte_columns: [(&str, &str, &str, Place); 2] = [
            ("server_secrets", "name", "value", server_secret_place),
            ("signing_keys", "kid", "private_key", signing_key_place),
        ];
        for (table, key, column, place) in byte_columns {
            let rows = sqlx::query(&format!("SELECT {key} AS k, {column} AS v FROM {table}"))
                .fetch_all(&mut self.tx)
                .await?;
            for row in rows {
                let id: String = row.try_get("k")?;
                let value: Vec<u8> = row.try_get("v")?;
                let plain = match (is_sealed(&value), old) {
                    (true, Some(old)) => old.open(&place(&id), &value)?,
                    (true, None) => continue,
                    (false, _) => value,
                };
                sqlx::query(&format!(
                    "UPDATE {table} SET {column} = $1 WHERE {key} = $2"
                ))
                .bind(new.seal(&place(&id), &plain))
                .bind(&id)
                .execute(&mut self.tx)
                .await?;
                count += 1;
            }
        }
        let text_columns: [(&str, Place); 2] = [
            ("sms_webhook_secret", webhook_secret_place),
            ("external_key_pem", external_key_place),
        ];
        for (column, place) in text_columns {
            let rows = sqlx::query(&format!(
                "SELECT id, {column} AS v FROM projects WHERE {column} IS NOT NULL"
            ))
            .fetch_all(&mut self.tx)
            .await?;
            for row in rows {
                let id: String = row.try_get("id")?;
                let value: String = row.try_get("v")?;
                let plain = match (is_sealed_text(&value), old) {
                    (true, Some(old)) => old.open_text(&place(&id), &value)?,
                    (true, None) => continue,
                    (false, _) => value,
                };
                sqlx::query(&format!("UPDATE projects SET {column} = $1 WHERE id = $2"))
                    .bind(new.seal_text(&place(&id), &plain))
                    .bind(&id)
                    .execute(&mut self.tx)
                    .await?;
                count += 1;
            }
        }
        // Delivered messages keep no subject or body; undelivered ones are sealed.
        sqlx::query(
            "UPDATE outbox SET subject = '', body = '' WHERE sent_at IS NOT NULL AND body <> ''",
        )
        .execute(&mut self.tx)
        .await?;
        let rows =
            sqlx::query("SELECT id, seal_key, subject, body FROM outbox WHERE sent_at IS NULL")
                .fetch_all(&mut self.tx)
                .await?;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let seal_key: Option<String> = row.try_get("seal_key")?;
            let current: [String; 2] = [row.try_get("subject")?, row.try_get("body")?];
            // Sealed already and not re-keyed: a start writes nothing.
            if old.is_none() && current.iter().all(|v| is_sealed_text(v)) {
                continue;
            }
            let mut values = Vec::new();
            for (column, value) in ["subject", "body"].into_iter().zip(current) {
                let place = outbox_place(column, id, seal_key.as_deref());
                values.push(match (is_sealed_text(&value), old) {
                    (true, Some(old)) => new.seal_text(&place, &old.open_text(&place, &value)?),
                    (true, None) => value,
                    (false, _) => new.seal_text(&place, &value),
                });
            }
            sqlx::query("UPDATE outbox SET subject = $1, body = $2 WHERE id = $3")
                .bind(&values[0])
                .bind(&values[1])
                .bind(id)
                .execute(&mut self.tx)
                .await?;
            count += 1;
        }
        Ok(count)
    }
}
