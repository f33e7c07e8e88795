//! Events and their logs: the root user creates an event; anyone holding its id adds
//! log lines (a write-only capability, e.g. for a client app); only the root user reads.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Auth;
use crate::domain::SecretToken;
use crate::error::{Error, Result};
use crate::store::{EventRecord, LogRecord, UserRecord};

/// The longest log line accepted, in bytes.
pub const MAX_LOG_DATA_LEN: usize = 8 * 1024;
const MAX_PAGE_SIZE: u32 = 200;
const DEFAULT_PAGE_SIZE: u32 = 50;

/// One page of logs, newest first.
#[derive(Debug)]
pub struct LogPage {
    pub logs: Vec<LogRecord>,
    /// Pass it back for the next (older) page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl Auth {
    /// Creates an event owned by the root user behind `user_token`; returns its id.
    pub async fn create_event(&self, user_token: &str, name: &str) -> Result<String> {
        let owner = self.require_root(user_token).await?;
        let name = name.trim();
        if name.chars().count() > 200 {
            return Err(Error::invalid("name", "is longer than 200 characters"));
        }
        let event = EventRecord {
            // The id is a capability to add logs, so it must not be guessable.
            id: SecretToken::generate_raw(16),
            project_id: owner.project_id.clone(),
            owner_id: owner.id,
            name: name.to_owned(),
            created_at: self.now(),
        };
        let mut tx = self.store().begin().await?;
        tx.insert_event(&event).await?;
        tx.commit().await?;
        Ok(event.id)
    }

    /// Adds a log line to an event. Anyone with the event id may, within a rate limit.
    pub async fn add_log(&self, event_id: &str, data: Option<&str>) -> Result<()> {
        if event_id.trim().is_empty() {
            return Err(Error::invalid("id", "is empty: pass the event id"));
        }
        if event_id.len() > 100 {
            return Err(Error::NotFound("unknown event".into()));
        }
        if data.is_some_and(|d| d.len() > MAX_LOG_DATA_LEN) {
            return Err(Error::invalid(
                "data",
                format!("is longer than {MAX_LOG_DATA_LEN} bytes"),
            ));
        }
        let event = self
            .store()
            .event_by_id(event_id.trim())
            .await?
            .ok_or_else(|| Error::NotFound("unknown event".into()))?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        self.check_log_budget(&mut tx, &event.id, now).await?;
        tx.insert_log(&event.id, data, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lists an event's logs, newest first. Only the root user of the event's project.
    pub async fn list_logs(
        &self,
        user_token: &str,
        event_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<LogPage> {
        let root = self.require_root(user_token).await?;
        let event = self
            .store()
            .event_by_id(event_id.trim())
            .await?
            // Another project's event is as unknown as a missing one.
            .filter(|event| event.project_id == root.project_id)
            .ok_or_else(|| Error::NotFound("unknown event".into()))?;
        let before = parse_page_token(page_token)?;
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let mut logs = self
            .store()
            .list_logs(&event.id, before, size as i64 + 1)
            .await?;
        let next_page_token = (logs.len() > size).then(|| {
            logs.truncate(size);
            URL_SAFE_NO_PAD.encode(logs[size - 1].id.to_string())
        });
        Ok(LogPage {
            logs,
            next_page_token,
        })
    }

    async fn require_root(&self, user_token: &str) -> Result<UserRecord> {
        let user = self.require_session(user_token).await?.user;
        if !user.root {
            return Err(Error::PermissionDenied(
                "only the project's root user may do this".into(),
            ));
        }
        Ok(user)
    }
}

fn parse_page_token(token: &str) -> Result<Option<i64>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a page token from an earlier answer");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.parse::<i64>().map(Some).map_err(|_| invalid())
}
