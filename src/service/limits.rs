//! Every counted limit in one place: messages per recipient (a 15-minute window and a
//! day), login requests per client address, wrong codes per name, log lines per event.
//! Each is counted and written in one transaction that first locks its key, so exactly
//! the limit is admitted however many callers race (see `Tx::lock_key`). Password
//! checks per account and per client address are counted per row, atomically, and
//! registered before the password is judged.

use std::net::IpAddr;
use tracing::Instrument;

use super::Auth;
use crate::domain::{Password, Verdict, address_block};
use crate::error::{Error, Result};
use crate::store::{AttemptCount, SendingCounts, SendingQuery, Tx};

const DAY_SECONDS: i64 = 24 * 3600;

/// What sending a code may go ahead with: the client's address block to record on the
/// login request, and whether the mail carries only the link (codes paused).
#[derive(Debug)]
pub(super) struct CodeSending {
    pub client_block: Option<String>,
    pub paused: bool,
}

impl Auth {
    /// Before a code (and link) goes to `recipient`: refuses it past the recipient's
    /// budgets (the short window and the day), so codes cannot be farmed and nobody can
    /// be flooded, and past the client address block's budget of login requests,
    /// whatever names it asks for. Locks the recipient and the block for the rest of the
    /// caller's transaction, which then queues the message; everything is counted in one
    /// read.
    pub(super) async fn check_code_sending(
        &self,
        tx: &mut Tx,
        recipient: &str,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<CodeSending> {
        let policy = &self.inner.policy;
        let block = client.map(address_block);
        tx.lock_key(&format!("recipient:{recipient}")).await?;
        if let Some(block) = &block {
            tx.lock_key(&format!("address:{block}")).await?;
        }
        let counts = tx
            .sending_counts(&self.sending_query(recipient, block.as_deref(), now))
            .await?;
        self.message_budget(&counts)?;
        if block.is_some() && counts.requests_from_block >= policy.login_requests_per_address {
            return Err(Error::TooManyRequests {
                message: format!(
                    "too many login requests from this address; try again in {} minutes",
                    policy.message_window_seconds / 60
                ),
                retry_after_seconds: policy.message_window_seconds,
            });
        }
        Ok(CodeSending {
            client_block: block,
            paused: self.paused_at(counts.code_failures),
        })
    }

    /// [`Auth::check_code_sending`]'s recipient budget for mails that must not reveal it
    /// (password flows): whether the message may be queued. Locks the recipient.
    pub(super) async fn within_message_budget(
        &self,
        tx: &mut Tx,
        recipient: &str,
        now: i64,
    ) -> Result<bool> {
        match self.check_code_sending(tx, recipient, None, now).await {
            Ok(_) => Ok(true),
            Err(Error::TooManyRequests { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    fn sending_query<'a>(
        &self,
        recipient: &'a str,
        client_block: Option<&'a str>,
        now: i64,
    ) -> SendingQuery<'a> {
        let policy = &self.inner.policy;
        SendingQuery {
            recipient,
            window_since: now - policy.message_window_seconds,
            day_since: now - DAY_SECONDS,
            client_block,
            failures_since: now - policy.code_failure_window_seconds,
        }
    }

    fn message_budget(&self, counts: &SendingCounts) -> Result<()> {
        let policy = &self.inner.policy;
        if counts.messages_in_window >= policy.messages_per_recipient {
            let window = policy.message_window_seconds;
            return Err(Error::TooManyRequests {
                message: format!(
                    "too many codes were sent to this name; try again in {} minutes",
                    window / 60
                ),
                retry_after_seconds: window,
            });
        }
        if counts.messages_in_day >= policy.messages_per_recipient_per_day {
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

    /// Whether codes for `name` are paused: its wrong codes over the last day, across all
    /// its code tokens, reached the budget. Magic links keep working (256 random bits
    /// cannot be guessed), so the owner is never locked out.
    pub(super) async fn codes_paused(&self, tx: &mut Tx, name: &str, now: i64) -> Result<bool> {
        let since = now - self.inner.policy.code_failure_window_seconds;
        Ok(self.paused_at(tx.count_code_failures_since(name, since).await?))
    }

    /// The pause rule: this many wrong codes within the window.
    fn paused_at(&self, failures: i64) -> bool {
        failures >= self.inner.policy.code_failures_per_name
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

// Password checks: counted per account and per client address, each a row whose
// failures and pending checks change atomically (see `Tx::spend_password_attempt`).

/// How long a password check counts as running: far beyond any real check (the hashing
/// queue gives up after 10 s), so only checks that will never report back expire.
const PENDING_CHECK_LEASE_SECONDS: i64 = 120;

/// The counters a password check is charged to: the account (by email, known or not, so
/// the limit itself reveals nothing) and the client address.
#[derive(Clone)]
pub(super) struct AttemptKeys {
    /// The account (by email, known or not).
    pub(super) account: String,
    /// The client's address block, when known.
    pub(super) address: Option<String>,
}

impl AttemptKeys {
    pub(super) fn new(project_id: &str, name: &str, client: Option<IpAddr>) -> AttemptKeys {
        AttemptKeys {
            account: format!("account:{project_id}:{name}"),
            address: client.map(|ip| format!("address:{}", crate::domain::address_block(ip))),
        }
    }
}

impl Auth {
    /// Checks a password, counted against the account and the client address: the check is
    /// registered before the password is judged, so concurrent guesses (on any replica)
    /// all count; a wrong password becomes a failure. Over a limit nothing is checked and
    /// the caller learns when to come back. A right password is not charged; the caller
    /// forgives the account's failures with [`settle_success`] when it acts on it.
    ///
    /// The check runs in a task of its own: a client that gives up half-way must not
    /// leave its check pending (five abandoned logins would lock the account). Pending
    /// checks are also a lease, for a process that dies half-way.
    pub(super) async fn check_password_counted(
        &self,
        keys: &AttemptKeys,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict> {
        let (auth, keys, password) = (self.clone(), keys.clone(), password.clone());
        let stored = stored.map(str::to_owned);
        let check = tokio::spawn(
            async move {
                auth.check_password_counted_now(&keys, &password, stored.as_deref())
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        match check.await {
            Ok(verdict) => verdict,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(Error::Internal(anyhow::anyhow!(
                "password check cancelled: {error}"
            ))),
        }
    }

    async fn check_password_counted_now(
        &self,
        keys: &AttemptKeys,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verdict> {
        let policy = &self.inner.policy;
        let window = policy.password_failure_window_seconds;
        let now = self.now();
        let pending_until = now + PENDING_CHECK_LEASE_SECONDS;
        let mut tx = self.store().begin().await?;
        let account = tx
            .spend_password_attempt(&keys.account, now, window, pending_until)
            .await?;
        if let Some(refusal) = over_limit(
            account,
            policy.password_failures_per_account,
            now,
            window,
            "for this account",
            ", or reset the password with ForgotPassword",
        ) {
            if account.failures >= policy.password_failures_per_account {
                crate::metrics::count_labelled("portcullis_lockouts_total", "scope", "account");
                crate::security_event!("lockout", scope = "account");
            }
            return Err(refusal);
        }
        if let Some(address) = &keys.address {
            let count = tx
                .spend_password_attempt(address, now, window, pending_until)
                .await?;
            let limit = policy.password_failures_per_address;
            if let Some(refusal) =
                over_limit(count, limit, now, window, "from this network address", "")
            {
                if count.failures >= limit {
                    crate::metrics::count_labelled("portcullis_lockouts_total", "scope", "address");
                    crate::security_event!("lockout", scope = "address");
                }
                return Err(refusal);
            }
        }
        tx.commit().await?;

        let verdict = self.hasher_verify(password, stored).await;
        let mut tx = self.store().begin().await?;
        match verdict {
            Ok(Verdict::Mismatch) => {
                tx.record_password_failure(&keys.account).await?;
                if let Some(address) = &keys.address {
                    tx.record_password_failure(address).await?;
                }
                tx.commit().await?;
            }
            // A right password (or a check that could not run) is not charged: neither
            // the account nor the address (many people behind one address log in fine).
            Ok(Verdict::Match { .. }) | Err(_) => {
                tx.refund_password_attempt(&keys.account).await?;
                if let Some(address) = &keys.address {
                    tx.refund_password_attempt(address).await?;
                }
                tx.commit().await?;
            }
        }
        verdict
    }
}

/// A right password acted on: the account's failures are forgiven.
pub(super) async fn settle_success(tx: &mut Tx, keys: &AttemptKeys) -> Result<()> {
    tx.clear_password_failures(&keys.account).await?;
    Ok(())
}

/// Why a new check of `whose` passwords is refused, if it is: the failures reached the
/// limit (locked until the window ends), or, with the checks still running, this one
/// would exceed it (retry in a moment).
fn over_limit(
    count: AttemptCount,
    limit: i64,
    now: i64,
    window: i64,
    whose: &str,
    advice: &str,
) -> Option<Error> {
    if count.failures >= limit {
        let retry = (count.window_started_at + window - now).max(1);
        return Some(Error::TooManyRequests {
            message: format!(
                "too many failed password attempts {whose}: try again in {}{advice}",
                minutes(retry)
            ),
            retry_after_seconds: retry,
        });
    }
    if count.failures + count.pending > limit {
        return Some(Error::TooManyRequests {
            message: format!(
                "too many password checks {whose} are running at once: retry in a second"
            ),
            retry_after_seconds: 1,
        });
    }
    None
}

fn minutes(seconds: i64) -> String {
    let minutes = (seconds + 59) / 60;
    if minutes == 1 {
        "1 minute".into()
    } else {
        format!("{minutes} minutes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_times_are_rounded_up_to_minutes() {
        assert_eq!(minutes(1), "1 minute");
        assert_eq!(minutes(60), "1 minute");
        assert_eq!(minutes(61), "2 minutes");
        assert_eq!(minutes(900), "15 minutes");
    }
}
