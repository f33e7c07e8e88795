//! Every counted limit in one place: messages per recipient (a 15-minute window and a
//! day), login requests per client address, wrong codes per name, log lines per event.
//! Each is counted and written in one transaction that first locks its key, so exactly
//! the limit is admitted however many callers race (see `Tx::lock_key`). Password
//! failures are counted per row, atomically, in `password`.

use std::net::IpAddr;

use super::Auth;
use crate::domain::address_block;
use crate::error::{Error, Result};
use crate::store::Tx;

const DAY_SECONDS: i64 = 24 * 3600;

impl Auth {
    /// Refuses a message to `recipient` past either of its budgets (the short window and
    /// the day), so codes cannot be farmed and nobody can be flooded. Locks the recipient
    /// for the rest of the caller's transaction, which then queues the message.
    pub(super) async fn check_message_budget(
        &self,
        tx: &mut Tx,
        recipient: &str,
        now: i64,
    ) -> Result<()> {
        let policy = &self.inner.policy;
        tx.lock_key(&format!("recipient:{recipient}")).await?;
        let window = policy.message_window_seconds;
        if tx.count_messages_since(recipient, now - window).await? >= policy.messages_per_recipient
        {
            return Err(Error::TooManyRequests {
                message: format!(
                    "too many codes were sent to this name; try again in {} minutes",
                    window / 60
                ),
                retry_after_seconds: window,
            });
        }
        if tx
            .count_messages_since(recipient, now - DAY_SECONDS)
            .await?
            >= policy.messages_per_recipient_per_day
        {
            return Err(Error::TooManyRequests {
                message: format!(
                    "this name got its {} messages for today; try again tomorrow",
                    policy.messages_per_recipient_per_day
                ),
                retry_after_seconds: DAY_SECONDS,
            });
        }
        Ok(())
    }

    /// [`Auth::check_message_budget`] for mails that must not reveal the budget (password
    /// flows): whether the message may be queued.
    pub(super) async fn within_message_budget(
        &self,
        tx: &mut Tx,
        recipient: &str,
        now: i64,
    ) -> Result<bool> {
        match self.check_message_budget(tx, recipient, now).await {
            Ok(()) => Ok(true),
            Err(Error::TooManyRequests { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Refuses more login requests from one client address block than the policy allows
    /// per window, whatever names it asks for; returns the block to record.
    pub(super) async fn check_client_budget(
        &self,
        tx: &mut Tx,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<Option<String>> {
        let Some(client) = client else {
            return Ok(None);
        };
        let block = address_block(client);
        let policy = &self.inner.policy;
        tx.lock_key(&format!("address:{block}")).await?;
        let since = now - policy.message_window_seconds;
        if tx.count_login_requests_from(&block, since).await? >= policy.login_requests_per_address {
            return Err(Error::TooManyRequests {
                message: format!(
                    "too many login requests from this address; try again in {} minutes",
                    policy.message_window_seconds / 60
                ),
                retry_after_seconds: policy.message_window_seconds,
            });
        }
        Ok(Some(block))
    }

    /// Whether codes for `name` are paused: its wrong codes over the last day, across all
    /// its code tokens, reached the budget. Magic links keep working (256 random bits
    /// cannot be guessed), so the owner is never locked out.
    pub(super) async fn codes_paused(&self, tx: &mut Tx, name: &str, now: i64) -> Result<bool> {
        let policy = &self.inner.policy;
        Ok(tx
            .count_code_failures_since(name, now - policy.code_failure_window_seconds)
            .await?
            >= policy.code_failures_per_name)
    }

    /// Before a code is judged: locks the name (so concurrent guesses are counted one by
    /// one) and refuses every code, the right one too, once the name's budget is spent.
    pub(super) async fn check_code_budget(&self, tx: &mut Tx, name: &str, now: i64) -> Result<()> {
        tx.lock_key(&format!("name:{name}")).await?;
        if self.codes_paused(tx, name, now).await? {
            return Err(Error::failed_precondition(format!(
                "too many wrong codes were entered for this name today, so codes are refused \
                 for {} hours; log in with the link in the mail (or text) instead",
                self.inner.policy.code_failure_window_seconds / 3600
            )));
        }
        Ok(())
    }

    /// Counts a wrong code against its name.
    pub(super) async fn record_code_failure(
        &self,
        tx: &mut Tx,
        name: &str,
        now: i64,
    ) -> Result<()> {
        let window = self.inner.policy.code_failure_window_seconds;
        tx.record_code_failure(name, now, now - window).await?;
        Ok(())
    }

    /// Refuses a log line past the event's budget per minute.
    pub(super) async fn check_log_budget(
        &self,
        tx: &mut Tx,
        event_id: &str,
        now: i64,
    ) -> Result<()> {
        let limit = self.inner.policy.log_lines_per_event_per_minute;
        tx.lock_key(&format!("event:{event_id}")).await?;
        if tx.count_logs_since(event_id, now - 60).await? >= limit {
            return Err(Error::TooManyRequests {
                message: format!("this event accepts at most {limit} log lines a minute"),
                retry_after_seconds: 60,
            });
        }
        Ok(())
    }
}
