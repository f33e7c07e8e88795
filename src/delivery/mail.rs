//! The only code that talks SMTP (lettre).

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone)]
pub enum MailTransport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP server: messages are written to the outbox folder.
    Folder,
}

impl MailTransport {
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS), `smtps://host:465` (implicit
    /// TLS), `smtp://host:25` (plain, for local relays and tests).
    pub fn from_url(url: &str) -> Result<MailTransport, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("invalid SMTP URL: {e}"))?
            .build();
        Ok(MailTransport::Smtp(transport))
    }
}

pub fn build_message(
    sender: &str,
    recipient: &str,
    subject: &str,
    body: &str,
) -> Result<Message, String> {
    Message::builder()
        .from(
            sender
                .parse()
                .map_err(|e| format!("invalid sender {sender:?}: {e}"))?,
        )
        .to(recipient
            .parse()
            .map_err(|e| format!("invalid recipient: {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .map_err(|e| format!("cannot build message: {e}"))
}

pub(super) async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: Message,
) -> Result<(), String> {
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP: {e}"))
}

/// Checks that `sender` is a mailbox a mail can be sent from, e.g. `Acme <login@acme.test>`.
pub fn validate_sender(sender: &str) -> Result<(), String> {
    sender
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|_| "must be a mail address, optionally with a name: Name <address@domain>".into())
}
