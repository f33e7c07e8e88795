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

/// A mail as it goes out: its envelope (for SMTP) and its text (RFC 5322), which is also
/// what the outbox folder's `.eml` file holds.
pub struct OutgoingMail {
    pub envelope: Envelope,
    pub text: Vec<u8>,
}

/// A mail from `sender` to the bare address `recipient` (names are plain addresses:
/// parsed as one, not as a mailbox with a display name, which costs several times more).
pub fn format_mail(
    sender: Mailbox,
    recipient: &str,
    subject: &str,
    body: &str,
    message_id: String,
) -> Result<OutgoingMail, String> {
    let recipient: Address = recipient
        .parse()
        .map_err(|e| format!("invalid recipient: {e}"))?;
    // Given rather than left to lettre, which would parse it back from the headers.
    let envelope = Envelope::new(Some(sender.email.clone()), vec![recipient.clone()])
        .map_err(|e| format!("cannot build message: {e}"))?;
    let now = std::time::SystemTime::now();
    let text = match plain_mail(&sender, &recipient, subject, body, &message_id, now) {
        Some(text) => text,
        None => lettre_text(sender, &envelope, recipient, subject, body, message_id)?,
    };
    Ok(OutgoingMail { envelope, text })
}

/// The mail's text as lettre formats it (headers encoded and folded where needed).
fn lettre_text(
    sender: Mailbox,
    envelope: &Envelope,
    recipient: Address,
    subject: &str,
    body: &str,
    message_id: String,
) -> Result<Vec<u8>, String> {
    let message = Message::builder()
        .envelope(envelope.clone())
        .message_id(Some(message_id))
        .from(sender)
        .to(Mailbox::new(None, recipient))
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        // Plain 7bit when the text allows (ASCII): the magic link then stays on one line
        // of the .eml, as a person reading the outbox file expects; else lettre's choice.
        .body(match seven_bit(body) {
            Some(crlf) => Body::dangerous_pre_encoded(crlf, ContentTransferEncoding::SevenBit),
            None => Body::new(body.to_owned()),
        })
        .map_err(|e| format!("cannot build message: {e}"))?;
    Ok(message.formatted())
}

/// The text lettre would write for a mail whose headers need no encoding, quoting beyond
/// a display name's, or folding (every mail the service itself words, unless a project's
/// name or sender says otherwise), written directly: lettre's builder parses its own
/// headers back and formats through several layers, a third of a mail's delivery CPU.
/// `None` for anything else, which lettre formats. A test holds the two byte for byte.
fn plain_mail(
    sender: &Mailbox,
    recipient: &Address,
    subject: &str,
    body: &str,
    message_id: &str,
    date: std::time::SystemTime,
) -> Option<Vec<u8>> {
    let body = seven_bit(body)?;
    let address: &str = sender.email.as_ref();
    // A display name of letters and digits goes as it is; with single spaces, quoted.
    let from = match sender.name.as_deref() {
        None => address.to_owned(),
        Some(name) if !plain_text(name) => return None,
        Some(name) if name.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            format!("{name} <{address}>")
        }
        Some(name) if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') => {
            format!("\"{name}\" <{address}>")
        }
        Some(_) => return None,
    };
    let headers = [
        ("Message-ID", message_id),
        ("From", from.as_str()),
        ("To", recipient.as_ref()),
        ("Subject", subject),
    ];
    let plain = |(header, value): &(&str, &str)| {
        header.len() + 2 + value.len() <= MAX_PLAIN_LINE && plain_text(value)
    };
    if !headers.iter().all(plain) {
        return None;
    }
    let mut text = Vec::with_capacity(256 + subject.len() + body.len());
    for (header, value) in headers {
        for part in [header, ": ", value, "\r\n"] {
            text.extend_from_slice(part.as_bytes());
        }
    }
    // httpdate writes RFC 7231's "GMT"; mail wants a numeric zone, as lettre writes.
    let date = httpdate::fmt_http_date(date);
    for part in [
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\nDate: "
            .as_slice(),
        date.strip_suffix("GMT")?.as_bytes(),
        b"+0000\r\n\r\n",
        &body,
    ] {
        text.extend_from_slice(part);
    }
    Some(text)
}

/// Header lines up to this long are written as they are: lettre folds only longer ones.
const MAX_PLAIN_LINE: usize = 76;

/// Text lettre writes into a header unchanged: printable ASCII and single inner spaces,
/// nothing that reads as an encoded word.
fn plain_text(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.contains("  ")
        && !text.contains("=?")
}

/// `text` as a 7bit body (CRLF line endings) when RFC 5322 allows it: ASCII without NUL,
/// lines of at most 998 bytes. lettre itself picks quoted-printable past 76 characters a
/// line, which splits the magic link.
fn seven_bit(text: &str) -> Option<Vec<u8>> {
    // One pass (it runs for every mail): lone LFs become CRLF, CRLFs stay.
    let mut crlf = Vec::with_capacity(text.len() + text.len() / 32 + 8);
    let (mut line, mut previous) = (0usize, 0u8);
    for &byte in text.as_bytes() {
        match byte {
            0 | 0x80.. => return None,
            b'\n' => {
                if line - usize::from(previous == b'\r') > 998 {
                    return None;
                }
                if previous != b'\r' {
                    crlf.push(b'\r');
                }
                line = 0;
            }
            _ => line += 1,
        }
        crlf.push(byte);
        previous = byte;
    }
    (line <= 998).then_some(crlf)
}

pub(super) async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    mail: &OutgoingMail,
) -> Result<(), String> {
    transport
        .send_raw(&mail.envelope, &mail.text)
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

    /// Mails in every shape the fast path might take: where it writes a mail, the bytes are
    /// lettre's (Date aside, which lettre takes from the clock); where lettre must encode,
    /// quote or fold, it declines.
    #[test]
    fn plain_mails_are_written_as_lettre_writes_them() {
        let names = [
            None,
            Some("Portcullis"),
            Some("Acme Login"),
            Some("Acme Inc."),
            Some("A"),
            Some("Ünï"),
            Some("x  y"),
            Some("a,b"),
            Some(" lead"),
            Some("averyveryveryveryveryveryveryveryveryveryverylongnamethatgoesonandonandon"),
        ];
        let addresses = [
            "no-reply@auth.example.com",
            "a@b.co",
            "user.name+tag@sub.example.org",
        ];
        let words = [
            "Your",
            "login",
            "code",
            "for",
            "Acme:",
            "1234",
            "(parens)",
            "\"q\"",
            "a,b",
            "semi;colon",
            "<angle>",
            "back\\slash",
            "tab\tword",
            "ä",
            "=?utf-8?q?x?=",
            "abcdefghijklmnopqrstuvwxyz0123456789",
        ];
        let long_line = format!("{}\n", "x".repeat(999));
        let bodies = [
            "Your login code for Acme is:\n\n    1234\n\nOr this link:\n\n    https://x.test/l?token=abc\n",
            "Grüße\n",
            "a\r\nb\n",
            "lone\rcr\r\r\nend",
            "no line end",
            &long_line,
        ];
        let (mut seed, mut plain, mut declined) = (0x9E37_79B9_7F4A_7C15u64, 0, 0);
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..5000 {
            let sender = Mailbox::new(
                names[next(names.len())].map(str::to_owned),
                addresses[next(addresses.len())].parse().unwrap(),
            );
            let mut subject = String::new();
            for i in 0..1 + next(7) {
                if i > 0 {
                    subject.push_str(if next(8) == 0 { "  " } else { " " });
                }
                subject.push_str(words[next(words.len())]);
            }
            let recipient: Address = addresses[next(addresses.len())].parse().unwrap();
            let body = bodies[next(bodies.len())];
            let id = format!(
                "<outbox.{}.1796000000@{}>",
                next(100_000),
                sender.email.domain()
            );
            let envelope =
                Envelope::new(Some(sender.email.clone()), vec![recipient.clone()]).unwrap();
            let by_lettre = lettre_text(
                sender.clone(),
                &envelope,
                recipient.clone(),
                &subject,
                body,
                id.clone(),
            )
            .unwrap();
            let text = String::from_utf8(by_lettre.clone()).unwrap();
            let date = text
                .lines()
                .find_map(|line| line.strip_prefix("Date: "))
                .unwrap();
            let date = httpdate::parse_http_date(&date.replace("+0000", "GMT")).unwrap();
            match plain_mail(&sender, &recipient, &subject, body, &id, date) {
                Some(ours) => {
                    plain += 1;
                    assert_eq!(String::from_utf8(ours).unwrap(), text);
                }
                None => declined += 1,
            }
        }
        // Both paths taken, each often: a fast path that never applies fails here too.
        assert!(
            plain > 300 && declined > 300,
            "{plain} written, {declined} declined"
        );
    }

    #[test]
    fn the_service_s_own_mails_take_the_plain_path() {
        let sender: Mailbox = "Portcullis <no-reply@auth.example.com>".parse().unwrap();
        let recipient: Address = "someone@example.com".parse().unwrap();
        let body = "Your login code for Acme is:\n\n    1234\n";
        let mail = plain_mail(
            &sender,
            &recipient,
            "Your login code for Acme: 1234",
            body,
            "<outbox.7.1796000000@auth.example.com>",
            std::time::SystemTime::UNIX_EPOCH,
        );
        let mail = String::from_utf8(mail.expect("written without lettre")).unwrap();
        assert!(mail.starts_with("Message-ID: <outbox.7.1796000000@auth.example.com>\r\nFrom: Portcullis <no-reply@auth.example.com>\r\n"));
        assert!(mail.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n\r\nYour login code for Acme is:\r\n\r\n    1234\r\n"));
        // A non-ASCII subject is lettre's to encode.
        let encoded = format_mail(
            sender,
            "someone@example.com",
            "Grüße",
            body,
            "<x@y.z>".into(),
        )
        .unwrap();
        assert!(
            String::from_utf8(encoded.text)
                .unwrap()
                .contains("Subject: =?utf-8?")
        );
    }
}
