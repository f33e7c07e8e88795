//! Delivery of mails and texts. Operations only queue messages in the `outbox` table, in
//! the same transaction as the change that caused them; the worker here sends them, with
//! retries and backoff, so delivery survives restarts and SMTP outages.

mod mail;
mod sms;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::Clock;
use crate::store::{Channel, OutboxMessage, Store};

pub use mail::{MailTransport, OutgoingMail, format_mail, sender_for, validate_sender};
pub use sms::{SmsWebhook, WebhookClient, check_webhook_url};

/// Sends one message for real, or writes it into the outbox folder.
#[derive(Clone)]
pub struct Deliverer {
    mail: MailTransport,
    /// The service-wide SMS webhook; a project's own webhook takes precedence.
    sms: Option<SmsWebhook>,
    webhooks: WebhookClient,
    /// The outbox folder: texts while no SMS webhook is configured, mails while no SMTP
    /// server is.
    folder: FolderWriter,
    /// `--mail-from`, parsed once (checked when the settings were read).
    default_sender: lettre::message::Mailbox,
    /// Domains projects may send from (`--mail-sender-domains`).
    sender_domains: Vec<String>,
}

impl Deliverer {
    pub fn new(
        mail: MailTransport,
        sms: Option<SmsWebhook>,
        webhooks: WebhookClient,
        outbox_dir: PathBuf,
        default_sender: &str,
        sender_domains: Vec<String>,
    ) -> Result<Deliverer, String> {
        let default_sender = default_sender
            .parse()
            .map_err(|e| format!("invalid mail sender {default_sender:?}: {e}"))?;
        Ok(Deliverer {
            mail,
            sms,
            webhooks,
            folder: FolderWriter::start(outbox_dir),
            default_sender,
            sender_domains,
        })
    }

    pub fn describe(&self) -> String {
        match &self.mail {
            MailTransport::Smtp(_) => "mail is sent through SMTP".to_owned(),
            MailTransport::Folder => format!(
                "no SMTP server configured: mail is written as .eml files to {}",
                self.folder.path.display()
            ),
        }
    }

    /// Sends one message; `project_sms` is the webhook of the message's project, if any.
    async fn deliver(
        &self,
        message: &OutboxMessage,
        project_sms: Option<SmsWebhook>,
    ) -> Result<(), String> {
        match message.channel {
            Channel::Email => {
                match &self.mail {
                    MailTransport::Smtp(transport) => {
                        mail::send(transport, &self.mail_of(message)?).await
                    }
                    // (The worker sends folder mails in batches; one is a batch of one.)
                    MailTransport::Folder => self
                        .write_mails(std::slice::from_ref(message))
                        .await
                        .remove(0),
                }
            }
            Channel::Sms => match project_sms.as_ref().or(self.sms.as_ref()) {
                Some(webhook) => {
                    self.webhooks
                        .send(webhook, &message.recipient, &message.body)
                        .await
                }
                None => {
                    let text = format!("To: {}\n\n{}\n", message.recipient, message.body);
                    let file = (file_name(message, "sms.txt"), text.into_bytes());
                    self.folder.write(vec![file]).await.remove(0)
                }
            },
        }
    }

    /// Whether `message` goes into the outbox folder as a mail: those are written in
    /// batches (see [`Deliverer::write_mails`]).
    fn writes_mail_to_folder(&self, message: &OutboxMessage) -> bool {
        message.channel == Channel::Email && matches!(self.mail, MailTransport::Folder)
    }

    /// Writes mails into the outbox folder in one trip to its thread: one wake-up of it
    /// and of the caller for the batch, rather than for each file (together ~4 % of a
    /// code start's CPU). The outcome of each, in order.
    async fn write_mails(&self, messages: &[OutboxMessage]) -> Vec<Result<(), String>> {
        let mut outcomes: Vec<_> = messages
            .iter()
            .map(|message| {
                let mail = self.mail_of(message)?;
                Ok((file_name(message, "eml"), mail.text))
            })
            .collect();
        let files = outcomes
            .iter_mut()
            .filter_map(|o| o.as_mut().ok())
            .map(std::mem::take);
        let mut written = self.folder.write(files.collect()).await.into_iter();
        outcomes
            .into_iter()
            // (The thread answers for every file; a missing answer is no success.)
            .map(|outcome| outcome.and_then(|_| written.next().unwrap_or_else(|| Err(stopped()))))
            .collect()
    }

    fn mail_of(&self, message: &OutboxMessage) -> Result<OutgoingMail, String> {
        let sender = sender_for(
            message.sender.as_deref(),
            &self.default_sender,
            &self.sender_domains,
        );
        format_mail(
            sender,
            &message.recipient,
            &message.subject,
            &message.body,
            message_id(message, &self.default_sender),
        )
    }
}

/// A message's file in the outbox folder: its id (so files sort as queued), then its
/// recipient with anything but `@.+-_` and ASCII letters and digits replaced.
fn file_name(message: &OutboxMessage, extension: &str) -> String {
    let recipient: String = message
        .recipient
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.+-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{:010}-{recipient}.{extension}", message.id)
}

/// Writes the outbox folder's files one after another on a thread of its own: files
/// created at the same time in one folder wait for its lock (on ext4 the waiters spin,
/// burning the CPU that logins need), and a blocking-pool trip per file cost more than
/// the write itself.
#[derive(Clone)]
struct FolderWriter {
    path: PathBuf,
    batches: std::sync::mpsc::Sender<FilesToWrite>,
}

struct FilesToWrite {
    /// (name, contents)
    files: Vec<(String, Vec<u8>)>,
    /// The outcome of each file, in order.
    written: tokio::sync::oneshot::Sender<Vec<Result<(), String>>>,
}

impl FolderWriter {
    /// The thread ends when the last clone is dropped.
    fn start(folder: PathBuf) -> FolderWriter {
        let (batches, queue) = std::sync::mpsc::channel::<FilesToWrite>();
        let path = folder.clone();
        std::thread::Builder::new()
            .name("outbox-folder".into())
            .spawn(move || {
                for batch in queue {
                    let outcomes = (batch.files.iter())
                        .map(|(name, bytes)| write_whole_file(&folder, name, bytes))
                        .collect();
                    // The sender may have stopped waiting (shutdown): the files are there anyway.
                    let _ = batch.written.send(outcomes);
                }
            })
            .expect("cannot start the outbox folder's thread");
        FolderWriter { path, batches }
    }

    /// Writes `files` (name, contents): the outcome of each, in order.
    async fn write(&self, files: Vec<(String, Vec<u8>)>) -> Vec<Result<(), String>> {
        if files.is_empty() {
            return Vec::new();
        }
        let count = files.len();
        let (written, outcomes) = tokio::sync::oneshot::channel();
        let sent = self.batches.send(FilesToWrite { files, written });
        match sent {
            Ok(()) => match outcomes.await {
                Ok(outcomes) => outcomes,
                Err(_) => vec![Err(stopped()); count],
            },
            Err(_) => vec![Err(stopped()); count],
        }
    }
}

fn stopped() -> String {
    "the outbox folder's thread stopped".to_owned()
}

/// Writes `name` in `folder` (made if missing) under another name first, then renames
/// it, so a reader never sees half a message.
fn write_whole_file(folder: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let path = folder.join(name);
    let partial = path.with_extension("partial");
    let written = match std::fs::write(&partial, bytes) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(folder)
                .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
            std::fs::write(&partial, bytes)
        }
        written => written,
    };
    written.map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, &path).map_err(|e| format!("cannot rename {}: {e}", path.display()))
}

/// The same Message-ID every time a message (an outbox row) is sent: delivery is at least
/// once (a crash right after the SMTP server accepted a message sends it again), and
/// receivers drop a repeated Message-ID.
fn message_id(message: &OutboxMessage, server_sender: &lettre::message::Mailbox) -> String {
    let domain = server_sender.email.domain();
    format!("<outbox.{}.{}@{domain}>", message.id, message.created_at)
}

/// Seconds before the next try after `attempts` failures: 5 s doubling, at most an hour.
pub fn backoff_seconds(attempts: i64) -> i64 {
    (5i64 << attempts.clamp(0, 10)).min(3600)
}

/// How the worker leases and sends: short leases renewed while sending, so a message is
/// sent by one worker at a time and a dead worker's messages go out again within seconds;
/// several messages in flight, so mail keeps up with logins.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub lease: Duration,
    pub renew_every: Duration,
    pub in_flight: usize,
}

impl Default for WorkerConfig {
    fn default() -> WorkerConfig {
        WorkerConfig {
            lease: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            in_flight: 16,
        }
    }
}

/// How often the worker looks in the database for messages due (retries, other
/// processes', ones queued while it was busy). Those this process queues it is handed in
/// memory, and told of the rest (see [`crate::store::LocalOutbox`]).
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Deliveries wait at most this long to be recorded together (while others are in
/// flight; the last one is recorded at once).
const RECORD_EVERY: Duration = Duration::from_millis(50);

/// Runs until `shutdown` resolves, sending what is due; then lets the sends in flight end.
/// Deliveries are recorded together (see [`RECORD_EVERY`]), in as few statements as may be.
pub async fn run_worker(
    store: Store,
    deliverer: Deliverer,
    clock: Clock,
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use tokio::time::{Instant, sleep_until};
    // This worker's name on its leases: a restarted process is a new owner.
    let owner = crate::domain::random::uuid_v4().to_string();
    let lease_seconds = config.lease.as_secs().max(1) as i64;
    let local = store.local_outbox();
    // A worker that sends nothing (no slots) takes nothing either.
    if config.in_flight > 0 {
        local.attach(&owner, lease_seconds);
    }
    let mut sending = tokio::task::JoinSet::new();
    let mut delivered = Vec::new();
    let mut record_at = Instant::now();
    let (mut poll_now, mut next_poll) = (true, Instant::now());
    tokio::pin!(shutdown);
    loop {
        // What finished (and, after a database error, what could not be recorded then:
        // again before its lease runs out).
        if !delivered.is_empty()
            && (sending.is_empty() || Instant::now() >= record_at)
            && !record_delivered(&store, &owner, &clock, &mut delivered).await
        {
            record_at = Instant::now() + POLL_EVERY;
        }
        // First the messages this process queued, leased to this worker already (sent
        // only well within their lease: past that, another worker may have them); a
        // quarter of the slots stays for the database's (retries, other processes').
        let now = clock.now();
        let room = config.in_flight.saturating_sub(sending.len());
        let mut ready: Vec<_> = local
            .take(room - room / 4)
            .into_iter()
            .filter(|message| message.next_attempt_at - now >= lease_seconds / 2)
            .collect();
        let room = room - ready.len();
        if room > 0 && (poll_now || Instant::now() >= next_poll) {
            (poll_now, next_poll) = (false, Instant::now() + POLL_EVERY);
            match store
                .lease_due_messages(now, lease_seconds, room as i64, &owner)
                .await
            {
                Ok(leased) => {
                    // A full batch: more may be due.
                    poll_now = leased.ready.len() + leased.unreadable.len() == room;
                    for message in leased.unreadable {
                        tracing::error!(id = message.id, error = %message.error, "an outbox message does not open");
                        let (id, attempts) = (message.id, message.attempts);
                        record_failure(&store, &owner, &clock, id, attempts, &message.error).await;
                    }
                    ready.extend(leased.ready);
                }
                // An unreachable database is reported by health; anything else is a bug to see.
                Err(error @ crate::store::StoreError::Unavailable(_)) => {
                    tracing::debug!(%error, "outbox poll failed")
                }
                Err(error) => tracing::error!(%error, "outbox poll failed"),
            }
        }
        // Mails for the outbox folder go in one task and one trip to its thread: a file
        // takes microseconds, so their leases need no renewing; the others one task each.
        let (to_folder, one_by_one): (Vec<_>, Vec<_>) = ready
            .into_iter()
            .partition(|message| deliverer.writes_mail_to_folder(message));
        if !to_folder.is_empty() {
            let outcome = Outcome::new(&store, &clock, &owner);
            let deliverer = deliverer.clone();
            sending.spawn(async move {
                let written = deliverer.write_mails(&to_folder).await;
                let mut delivered = Vec::with_capacity(to_folder.len());
                for (message, written) in to_folder.iter().zip(written) {
                    delivered.extend(outcome.record(message, written).await);
                }
                delivered
            });
        }
        for message in one_by_one {
            sending.spawn(send_leased(
                Outcome::new(&store, &clock, &owner),
                deliverer.clone(),
                config.clone(),
                message,
            ));
        }
        let has_room = sending.len() < config.in_flight;
        tokio::select! {
            _ = &mut shutdown => break,
            Some(done) = sending.join_next(), if !sending.is_empty() => {
                if delivered.is_empty() {
                    record_at = Instant::now() + RECORD_EVERY;
                }
                delivered.extend(done.unwrap_or_default());
                while let Some(done) = sending.try_join_next() {
                    delivered.extend(done.unwrap_or_default());
                }
            }
            _ = local.arrived() => {}
            _ = local.queued_unleased() => poll_now = true,
            _ = sleep_until(next_poll), if has_room => {}
            _ = sleep_until(record_at), if !delivered.is_empty() => {}
        }
    }
    local.detach();
    while let Some(done) = sending.join_next().await {
        delivered.extend(done.unwrap_or_default());
    }
    record_delivered(&store, &owner, &clock, &mut delivered).await;
}

/// Marks these messages sent; on a database error (false) they stay in `delivered` for
/// a later turn (should their leases run out first, they go again: at least once).
async fn record_delivered(
    store: &Store,
    owner: &str,
    clock: &Clock,
    delivered: &mut Vec<i64>,
) -> bool {
    match store
        .mark_messages_sent(delivered, owner, clock.now())
        .await
    {
        Ok(lost) => {
            for id in lost {
                tracing::warn!(id, "sent after the lease was lost: may go twice");
            }
            delivered.clear();
            true
        }
        Err(error) => {
            tracing::warn!(%error, "could not record deliveries");
            false
        }
    }
}

/// Records a failed attempt; the message is tried again after a backoff.
async fn record_failure(
    store: &Store,
    owner: &str,
    clock: &Clock,
    id: i64,
    attempts: i64,
    error: &str,
) {
    let retry_at = clock.now() + backoff_seconds(attempts);
    if let Err(error) = store.mark_message_failed(id, owner, retry_at, error).await {
        tracing::warn!(id, %error, "could not record delivery outcome");
    }
}

/// Where a sending task records what became of its messages.
struct Outcome {
    store: Store,
    clock: Clock,
    owner: String,
}

impl Outcome {
    fn new(store: &Store, clock: &Clock, owner: &str) -> Outcome {
        Outcome {
            store: store.clone(),
            clock: clock.clone(),
            owner: owner.to_owned(),
        }
    }

    /// Counts a delivery and returns its id, for the worker to record with others; a
    /// failure is recorded here (the message goes again after a backoff).
    async fn record(&self, message: &OutboxMessage, outcome: Result<(), String>) -> Option<i64> {
        let channel = message.channel.as_str();
        match outcome {
            Ok(()) => {
                crate::metrics::count_labelled(
                    "portcullis_messages_sent_total",
                    "channel",
                    channel,
                );
                Some(message.id)
            }
            Err(error) => {
                crate::metrics::count_labelled(
                    "portcullis_messages_failed_total",
                    "channel",
                    channel,
                );
                tracing::warn!(id = message.id, channel, %error, "delivery failed, will retry");
                let (store, clock, owner) = (&self.store, &self.clock, &self.owner);
                record_failure(store, owner, clock, message.id, message.attempts, &error).await;
                None
            }
        }
    }
}

/// Sends one leased message, renewing the lease meanwhile; stops (without recording
/// anything) if the lease is lost, since another worker owns the message then. Returns
/// the id of a message delivered (none or one), for the worker to record.
async fn send_leased(
    outcome: Outcome,
    deliverer: Deliverer,
    config: WorkerConfig,
    message: OutboxMessage,
) -> Vec<i64> {
    let (store, clock, owner) = (&outcome.store, &outcome.clock, &outcome.owner);
    let project_sms = match (message.channel, &message.project_id) {
        (Channel::Sms, Some(project_id)) => project_webhook(store, project_id).await,
        _ => None,
    };
    let renew = async {
        loop {
            tokio::time::sleep(config.renew_every).await;
            let until = clock.now() + config.lease.as_secs().max(1) as i64;
            match store.renew_lease(message.id, owner, until).await {
                Ok(true) => {}
                Ok(false) => return,
                // The database is away: the lease may run out, and the message go twice.
                Err(error) => tracing::debug!(id = message.id, %error, "lease renewal failed"),
            }
        }
    };
    let sent = tokio::select! {
        sent = deliverer.deliver(&message, project_sms) => sent,
        () = renew => {
            tracing::warn!(id = message.id, "lease lost while sending: left to its new owner");
            return Vec::new();
        }
    };
    outcome.record(&message, sent).await.into_iter().collect()
}

async fn project_webhook(store: &Store, project_id: &str) -> Option<SmsWebhook> {
    let project = store.project_by_id(project_id).await.ok().flatten()?;
    Some(SmsWebhook {
        url: project.delivery.sms_webhook_url?,
        secret: project.delivery.sms_webhook_secret.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail_to(id: i64, recipient: &str) -> OutboxMessage {
        OutboxMessage {
            id,
            project_id: None,
            channel: Channel::Email,
            recipient: recipient.into(),
            subject: "Your code".into(),
            body: format!("code {id}"),
            sender: None,
            attempts: 0,
            next_attempt_at: 0,
            created_at: 0,
            seal_key: None,
        }
    }

    fn folder_deliverer(folder: PathBuf) -> Deliverer {
        let webhooks = WebhookClient::new(false);
        let sender = "Portcullis <no-reply@auth.example.com>";
        Deliverer::new(
            MailTransport::Folder,
            None,
            webhooks,
            folder,
            sender,
            Vec::new(),
        )
        .unwrap()
    }

    /// A batch of mails for the folder: each outcome is its own mail's, in order, a mail
    /// that cannot be built failing alone; and a folder that cannot be made fails them all.
    #[tokio::test]
    async fn a_batch_for_the_folder_reports_each_mail_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let deliverer = folder_deliverer(dir.path().join("outbox"));
        let batch = [
            mail_to(1, "a@example.com"),
            mail_to(2, "not an address"),
            mail_to(3, "c@example.com"),
        ];
        let outcomes = deliverer.write_mails(&batch).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            outcomes[1]
                .as_ref()
                .unwrap_err()
                .contains("invalid recipient")
        );
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "0000000001-a@example.com.eml",
                "0000000003-c@example.com.eml"
            ]
        );
        let third = std::fs::read_to_string(dir.path().join("outbox").join(&files[1])).unwrap();
        assert!(
            third.contains("code 3") && third.contains("To: c@example.com"),
            "{third}"
        );

        // The folder's place is taken by a file: nothing can be written there.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let outcomes = folder_deliverer(blocked).write_mails(&batch).await;
        assert!(outcomes.iter().all(Result::is_err), "{outcomes:?}");
        assert!(deliverer.write_mails(&[]).await.is_empty());
    }

    #[test]
    fn backoff_doubles_and_is_capped_at_an_hour() {
        assert_eq!(backoff_seconds(0), 5);
        assert_eq!(backoff_seconds(1), 10);
        assert_eq!(backoff_seconds(3), 40);
        assert_eq!(backoff_seconds(50), 3600);
    }
}
