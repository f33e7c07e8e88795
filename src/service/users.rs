//! What users do to their own account (and what the root user or admin does to others):
//! delete, the client-side encryption flag, bulk import.

use super::{Auth, parse_name, parse_token};
use crate::domain::{TokenKind, check_password_hash};
use crate::error::{Error, Result};
use crate::store::{NewUser, UserRecord};

/// At most this many users per import call.
pub const MAX_IMPORT_BATCH: usize = 1000;
/// The longest check text stored with the encryption flag.
pub const MAX_ENCRYPTION_TEXT_LEN: usize = 4096;

/// One user to import.
#[derive(Debug, Clone, Default)]
pub struct ImportRow {
    pub name: String,
    /// A 36-character uid to keep (e.g. the Hasura user id of the old system).
    pub uid: Option<String>,
    /// An existing password hash in PHC/modular form (argon2 or bcrypt).
    pub password_hash: Option<String>,
}

/// The outcome of one row: the user, or why it was refused.
#[derive(Debug, Clone)]
pub enum ImportedRow {
    Imported {
        user_id: i64,
        uid: String,
        name: String,
    },
    Refused {
        error: String,
    },
}

impl Auth {
    /// Deletes a user. A user token without a name deletes its own user; with a name, only
    /// the project's root user may delete that user. The admin token deletes by name.
    /// Never across projects; the owner (root user) itself cannot be deleted.
    pub async fn delete_user(&self, token: &str, name: &str) -> Result<()> {
        let token = parse_token(token, "token")?;
        let (project_id, name) = if TokenKind::of(token) == Some(TokenKind::Admin) {
            (
                self.project_for_admin_token(token).await?.id,
                parse_name(name)?,
            )
        } else {
            let caller = self.require_session(token).await?.user;
            if name.trim().is_empty() {
                return self.delete_one(&caller).await;
            }
            if !caller.root {
                return Err(Error::PermissionDenied(
                    "only the project's root user may delete other users".into(),
                ));
            }
            (caller.project_id, parse_name(name)?)
        };
        let user = self
            .store()
            .user_by_name(&project_id, name.as_str())
            .await?
            .ok_or_else(|| Error::NotFound("no user with this name in the project".into()))?;
        self.delete_one(&user).await
    }

    async fn delete_one(&self, user: &UserRecord) -> Result<()> {
        if user.root {
            return Err(Error::failed_precondition(
                "the project's owner (root user) cannot be deleted",
            ));
        }
        let mut tx = self.store().begin().await?;
        if !tx.delete_user(user.id, self.now()).await? {
            return Err(Error::NotFound("the user no longer exists".into()));
        }
        tx.commit().await?;
        crate::security_event!("user_deleted", project_id = %user.project_id, user_id = user.id);
        Ok(())
    }

    /// Toggles the client-side encryption flag. Turning it on stores `text` (the client's
    /// encryption of a known string, to check keys later); turning it off clears it.
    /// Returns the new state.
    pub async fn toggle_encryption(&self, user_token: &str, text: &str) -> Result<bool> {
        let user = self.require_session(user_token).await?.user;
        if text.len() > MAX_ENCRYPTION_TEXT_LEN {
            return Err(Error::invalid(
                "text",
                format!("is longer than {MAX_ENCRYPTION_TEXT_LEN} bytes"),
            ));
        }
        let encrypted = !user.encrypted;
        if encrypted && text.is_empty() {
            return Err(Error::invalid(
                "text",
                "is required when turning encryption on: the encrypted check text",
            ));
        }
        let mut tx = self.store().begin().await?;
        tx.set_encryption(user.id, encrypted, encrypted.then_some(text))
            .await?;
        tx.commit().await?;
        Ok(encrypted)
    }

    /// Imports users into the admin token's project, all or nothing: when any row is
    /// refused, nothing is written and the report says which rows and why.
    pub async fn import_users(
        &self,
        admin_token: &str,
        rows: &[ImportRow],
    ) -> Result<(bool, Vec<ImportedRow>)> {
        let project = self.project_for_admin_token(admin_token).await?;
        if rows.is_empty() {
            return Err(Error::invalid("users", "is empty"));
        }
        if rows.len() > MAX_IMPORT_BATCH {
            return Err(Error::invalid(
                "users",
                format!("has more than {MAX_IMPORT_BATCH} rows: split the import"),
            ));
        }
        let now = self.now();
        let parsed: Vec<std::result::Result<NewUser, String>> = rows
            .iter()
            .map(|row| parse_import_row(&project.id, row, now))
            .collect();
        let mut tx = self.store().begin().await?;
        let mut report = Vec::with_capacity(rows.len());
        let mut all_ok = true;
        for row in parsed {
            let outcome = match row {
                Err(error) => ImportedRow::Refused { error },
                Ok(user) => match tx.insert_user(&user).await? {
                    Some(record) => ImportedRow::Imported {
                        user_id: record.id,
                        uid: record.uid,
                        name: record.name.unwrap_or_default(),
                    },
                    None if tx
                        .user_by_name(&project.id, user.name.as_deref().unwrap_or_default())
                        .await?
                        .is_some() =>
                    {
                        ImportedRow::Refused {
                            error: "name already exists in the project (or twice in this batch)"
                                .into(),
                        }
                    }
                    None => ImportedRow::Refused {
                        error: "uid is already in use".into(),
                    },
                },
            };
            all_ok &= matches!(outcome, ImportedRow::Imported { .. });
            report.push(outcome);
        }
        if all_ok {
            tx.commit().await?;
        }
        Ok((all_ok, report))
    }
}

/// An import row as a verified user to insert, or why it is refused.
fn parse_import_row(
    project_id: &str,
    row: &ImportRow,
    now: i64,
) -> std::result::Result<NewUser, String> {
    let name = parse_name(&row.name).map_err(|e| e.to_string())?;
    let uid = match row.uid.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        Some(uid) => uuid::Uuid::parse_str(uid)
            .map_err(|_| "uid must be a 36-character UUID".to_owned())?
            .hyphenated()
            .to_string(),
        None => crate::domain::random::uuid_v7().to_string(),
    };
    let password_hash = match row
        .password_hash
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        Some(hash) => {
            check_password_hash(hash)?;
            Some(hash.to_owned())
        }
        None => None,
    };
    Ok(NewUser {
        uid,
        password_hash,
        ..NewUser::new(project_id, Some(name.as_str()), now, Some(now))
    })
}
