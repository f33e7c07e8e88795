//! The only code that talks SMTP (lettre).

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

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
        // As many pooled connections as the worker has messages in flight. (lettre gives
        // no way to set TCP_NODELAY on its socket; sending several at once hides the
        // Nagle stall at the end of each message.)
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("invalid SMTP URL: {e}"))?
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(16))
            .build();
        Ok(MailTransport::Smtp(transport))
    }
}

/// A mail from `sender` to the bare address `recipient` (names are plain addresses:
/// parsed as one, not as a mailbox with a display name, which costs several times more).
pub fn build_message(
    sender: Mailbox,
    recipient: &str,
    subject: &str,
    body: &str,
    message_id: Option<String>,
) -> Result<Message, String> {
    let recipient: Address = recipient
        .parse()
        .map_err(|e| format!("invalid recipient: {e}"))?;
    // Given rather than left to lettre, which would parse it back from the headers.
    let envelope = Envelope::new(Some(sender.email.clone()), vec![recipient.clone()])
        .map_err(|e| format!("cannot build message: {e}"))?;
    Message::builder()
        .envelope(envelope)
        .message_id(message_id)
        .from(sender)
        .to(Mailbox::new(None, recipient))
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        // Plain 7bit when the text allows (ASCII): the magic link then stays on one line
        // of the .eml, as a person reading the outbox file expects; else lettre's choice.
        .body(seven_bit(body).unwrap_or_else(|| Body::new(body.to_owned())))
        .map_err(|e| format!("cannot build message: {e}"))
}

/// `text` as a 7bit body (CRLF line endings) when RFC 5322 allows it: ASCII without NUL,
/// lines of at most 998 bytes. lettre itself picks quoted-printable past 76 characters a
/// line, which splits the magic link.
fn seven_bit(text: &str) -> Option<Body> {
    let fits =
        text.is_ascii() && !text.contains('\0') && text.lines().all(|line| line.len() <= 998);
    if !fits {
        return None;
    }
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    Some(Body::dangerous_pre_encoded(
        crlf.into_bytes(),
        ContentTransferEncoding::SevenBit,
    ))
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

/// The From of a project's mail: its `mail_sender` as given when the address's domain is
/// one the operator listed (`--mail-sender-domains`); otherwise only its display name, on
/// the server's own address, so a project cannot send as someone else's domain.
pub fn sender_for(
    requested: Option<&str>,
    server: &Mailbox,
    allowed_domains: &[String],
) -> Mailbox {
    let Some(requested) = requested.and_then(|r| r.parse::<Mailbox>().ok()) else {
        return server.clone();
    };
    let domain = requested.email.domain();
    if allowed_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
    {
        return requested;
    }
    Mailbox::new(requested.name.or(server.name.clone()), server.email.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_sender_keeps_its_name_but_not_a_foreign_address() {
        let text = "Portcullis <no-reply@auth.example.com>";
        let server: Mailbox = text.parse().unwrap();
        let allowed = vec!["acme.test".to_owned()];
        let sender = |requested| sender_for(requested, &server, &allowed).to_string();
        assert_eq!(
            sender(Some("Acme <login@acme.test>")),
            "Acme <login@acme.test>"
        );
        assert_eq!(
            sender(Some("Bank <security@bank.test>")),
            "Bank <no-reply@auth.example.com>"
        );
        assert_eq!(sender(Some("security@bank.test")), text);
        assert_eq!(sender(Some("not a mailbox")), text);
        assert_eq!(sender(None), text);
    }
}
