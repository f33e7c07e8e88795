//! Mail through a real SMTP conversation: lettre talks to a listener this test runs.

use crate::helpers::*;
use crate::on_both_backends;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

on_both_backends!(
    the_code_arrives_over_smtp_and_logs_in,
    two_replicas_and_a_slow_smtp_server_send_each_mail_once_with_a_stable_message_id,
);

/// A minimal SMTP server that accepts everything and keeps each message's DATA.
struct SmtpSink {
    port: u16,
    messages: Arc<Mutex<Vec<(String, String)>>>,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        SmtpSink::start_slow(std::time::Duration::ZERO).await
    }

    /// A sink that takes `delay` to accept each message, as a busy mail server does.
    async fn start_slow(delay: std::time::Duration) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
                    let mut recipient = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO")
                        {
                            b"250-sink.test\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            recipient = line[8..].trim().trim_matches(['<', '>']).to_owned();
                            b"250 OK\r\n"
                        } else if upper.starts_with("DATA") {
                            write.write_all(b"354 go ahead\r\n").await.unwrap();
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            tokio::time::sleep(delay).await;
                            store
                                .lock()
                                .unwrap()
                                .push((recipient.clone(), decode_mail(&data)));
                            b"250 queued\r\n"
                        } else if upper.starts_with("QUIT") {
                            write.write_all(b"221 bye\r\n").await.unwrap();
                            break;
                        } else {
                            b"250 OK\r\n"
                        };
                        write.write_all(reply).await.unwrap();
                    }
                });
            }
        });
        SmtpSink { port, messages }
    }

    fn received(&self) -> Vec<(String, String)> {
        self.messages.lock().unwrap().clone()
    }
}

async fn the_code_arrives_over_smtp_and_logs_in(backend: Backend) {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(backend, |settings| {
        settings.smtp_url = Some(format!("smtp://127.0.0.1:{}", sink.port).into());
        settings.mail_from = "Portcullis Test <login@portcullis.test>".into();
    })
    .await;

    let started = app.authenticate("hedy@example.com").await.unwrap();
    let (recipient, data) = wait_for(|| sink.received().into_iter().next())
        .await
        .expect("a message reached the SMTP listener");
    assert_eq!(recipient, "hedy@example.com");
    assert!(
        data.contains("From: \"Portcullis Test\" <login@portcullis.test>")
            || data.contains("From: Portcullis Test <login@portcullis.test>"),
        "{data}"
    );
    let code = code_in(&data).expect("a code in the mail");

    let session = app
        .confirm(&code, &started.code_token)
        .await
        .expect("confirm");
    assert_eq!(app.authorize(&session.token).await.role(), Role::User);
    assert!(
        app.mails_to("hedy@example.com").is_empty(),
        "nothing went to the outbox folder"
    );
}

async fn two_replicas_and_a_slow_smtp_server_send_each_mail_once_with_a_stable_message_id(
    backend: Backend,
) {
    // Each mail takes longer than a lease: only renewing it keeps the other replica off.
    let sink = SmtpSink::start_slow(std::time::Duration::from_secs(3)).await;
    let configure = |settings: &mut portcullis::Settings| {
        settings.smtp_url = Some(format!("smtp://127.0.0.1:{}", sink.port).into());
        // Leases are counted in whole seconds: 2 s is at least one.
        settings.delivery.lease = std::time::Duration::from_secs(2);
        settings.delivery.renew_every = std::time::Duration::from_millis(300);
        settings.delivery.in_flight = 4;
    };
    let first = spawn_app_with(backend, configure).await;
    let second = spawn_app_on(first.database.shared(), configure).await;
    let names: Vec<String> = (0..12).map(|i| format!("once-{i}@example.com")).collect();
    for (i, name) in names.iter().enumerate() {
        let app = if i % 2 == 0 { &first } else { &second };
        app.authenticate(name).await.unwrap();
    }
    wait_for(|| (sink.received().len() >= names.len()).then_some(()))
        .await
        .expect("every mail arrives");
    // Time for a duplicate to show up, if any was going to.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let received = sink.received();
    let mut recipients: Vec<&str> = received.iter().map(|(r, _)| r.as_str()).collect();
    recipients.sort_unstable();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(recipients, expected, "each mail exactly once");
    let mut ids: Vec<String> = received
        .iter()
        .map(|(_, data)| {
            data.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .expect("a Message-ID")
                .to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), names.len(), "one Message-ID per message");
    assert!(ids[0].contains("<outbox."), "{}", ids[0]);
}

/// A process killed while holding leases: its messages go out from the next process as
/// soon as the (short) leases run out, not after a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_leased_by_a_dead_process_go_out_once_their_lease_runs_out() {
    // The first process queues a mail but never sends it (no worker slots)...
    let mut first = spawn_app_with(Backend::Sqlite, |settings| {
        settings.delivery.in_flight = 0;
    })
    .await;
    first.authenticate("orphan@example.com").await.unwrap();
    first.stop().await.unwrap();
    // ...and died holding its lease, with 3 of the default 10 s left.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&first.database.url).await.unwrap();
    let leased = sqlx::query(
        "UPDATE outbox SET lease_owner = 'a dead process', next_attempt_at = $1
         WHERE sent_at IS NULL",
    )
    .bind(first.clock.now() + 3)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(leased.rows_affected(), 1);
    pool.close().await;

    let second = spawn_app_on(first.database.shared(), |_| {}).await;
    let mail = wait_for(|| second.mails_to("orphan@example.com").into_iter().next())
        .await
        .expect("sent by the next process once the dead one's lease ran out");
    assert!(code_in(&mail).is_some());
}
