//! `send_many`'s own connections against real aiosmtpd servers: connections are reused for many
//! messages, replaced after the server drops one mid-stream (no message lost or doubled), and
//! the pipelined path (server advertising PIPELINING) keeps 4xx/5xx per recipient apart.

mod email_common;

use std::collections::HashMap;
use std::time::Duration;

use email_common::{Smtpd, header};
use futures::StreamExt;
use mailparse::parse_mail;
use notifier::email::{Delivery, EmailConfig, Mailer, OutgoingEmail, SendError, SmtpUrl};

fn emails(n: usize, local: impl Fn(usize) -> String) -> Vec<OutgoingEmail> {
    (0..n)
        .map(|i| OutgoingEmail {
            to: format!("{}@customer.example", local(i)),
            subject: "Service Update - DR Activation".into(),
            text: format!("Hello {i}\n.\n..a line starting with dots"),
            html: Some(format!("<p>Hello {i}</p>")),
            unsubscribe_url: None,
            unsubscribe_mailto: None,
            message_id: format!("conn-{i}"),
        })
        .collect()
}

async fn send(smtpd: &Smtpd, connections: u32, list: Vec<OutgoingEmail>) -> Vec<Delivery> {
    let mut cfg = EmailConfig::new(SmtpUrl::parse(&smtpd.url()).unwrap(), "status@example.com");
    cfg.max_connections = connections;
    cfg.retry_backoff = Duration::from_millis(20);
    let mailer = Mailer::new(&cfg).unwrap();
    let stream = mailer
        .send_many(futures::stream::iter(list), mailer.bulk_options())
        .unwrap();
    stream.collect().await
}

/// Message-ID → messages received; checks the body survived dot-stuffing.
fn received(smtpd: &Smtpd) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for raw in smtpd.messages() {
        let mail = parse_mail(&raw).unwrap();
        let text = mail.subparts[0].get_body().unwrap().replace("\r\n", "\n");
        assert!(
            text.contains("\n.\n..a line starting with dots"),
            "dots lost: {text:?}"
        );
        *counts.entry(header(&mail, "Message-ID")).or_default() += 1;
    }
    counts
}

fn all_ok_once(deliveries: &[Delivery], counts: &HashMap<String, usize>, n: usize) {
    assert_eq!(deliveries.len(), n);
    for d in deliveries {
        assert_eq!(d.result, Ok(()), "{d:?}");
    }
    assert_eq!(counts.len(), n, "{counts:?}");
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
}

#[tokio::test]
async fn each_worker_reuses_one_connection_for_many_messages() {
    for mode in ["plain", "plain,pipe"] {
        let dir = tempfile::tempdir().unwrap();
        let smtpd = Smtpd::custom(dir.path(), mode);
        let deliveries = send(&smtpd, 3, emails(60, |i| format!("user{i}"))).await;
        all_ok_once(&deliveries, &received(&smtpd), 60);
        assert!(deliveries.iter().all(|d| d.attempts == 1));
        let connections = smtpd.log_lines("ehlo.log");
        assert!(
            (1..=3).contains(&connections),
            "{mode}: 60 messages over 3 workers took {connections} connections"
        );
    }
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_replaced_and_nothing_is_lost_or_doubled() {
    for mode in ["drop", "drop,pipe"] {
        let dir = tempfile::tempdir().unwrap();
        let smtpd = Smtpd::custom(dir.path(), mode);
        let deliveries = send(&smtpd, 2, emails(30, |i| format!("user{i}"))).await;
        all_ok_once(&deliveries, &received(&smtpd), 30);
        let drops = smtpd.log_lines("drops.log");
        assert!(drops >= 10, "{mode}: only {drops} drops");
        // Each drop cost its message one more attempt (the server may have had the content).
        let retries: u32 = deliveries.iter().map(|d| d.attempts - 1).sum();
        assert_eq!(retries as usize, drops, "{mode}: {deliveries:?}");
        let connections = smtpd.log_lines("ehlo.log");
        assert!(
            connections > drops && connections <= drops + 2,
            "{mode}: {drops} drops but {connections} connections"
        );
    }
}

#[tokio::test]
async fn pipelined_550_is_permanent_per_recipient_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::custom(dir.path(), "reject,pipe");
    let list = emails(20, |i| {
        if i.is_multiple_of(5) {
            format!("unknown{i}")
        } else {
            format!("user{i}")
        }
    });
    let deliveries = send(&smtpd, 2, list).await;
    assert_eq!(deliveries.len(), 20);
    for d in &deliveries {
        if d.to.starts_with("unknown") {
            assert_eq!(d.attempts, 1, "{d:?}");
            email_common::assert_refused(d, true, 550, "User unknown");
        } else {
            assert_eq!(d.result, Ok(()), "{d:?}");
        }
    }
    let counts = received(&smtpd);
    assert_eq!(counts.len(), 16);
    assert!(counts.values().all(|&c| c == 1));
    // RSET after each refusal kept the connections usable.
    assert!(smtpd.log_lines("ehlo.log") <= 2);
}

#[tokio::test]
async fn pipelined_4xx_at_rcpt_and_at_data_are_retried_to_one_message_each() {
    for mode in ["greylist,pipe", "flaky,pipe", "greylist,flaky,pipe"] {
        let dir = tempfile::tempdir().unwrap();
        let smtpd = Smtpd::custom(dir.path(), mode);
        let deliveries = send(&smtpd, 3, emails(15, |i| format!("user{i}"))).await;
        all_ok_once(&deliveries, &received(&smtpd), 15);
        let expected = if mode.starts_with("greylist,flaky") {
            3
        } else {
            2
        };
        assert!(
            deliveries.iter().all(|d| d.attempts == expected),
            "{mode}: {deliveries:?}"
        );
        assert!(smtpd.log_lines("ehlo.log") <= 3, "{mode}");
    }
}

/// A session the server refuses (here a 554 to EHLO; a rotated password's 535 to AUTH is the
/// same path) is every message's temporary failure, retried, never a permanent one.
#[tokio::test]
async fn a_refused_session_is_a_temporary_failure() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::custom(dir.path(), "refuse");
    let mut cfg = EmailConfig::new(
        SmtpUrl::parse(&format!("smtp://127.0.0.1:{}", smtpd.port)).unwrap(),
        "status@example.com",
    );
    cfg.retry_backoff = Duration::from_millis(10);
    cfg.max_attempts = 2;
    let mailer = Mailer::new(&cfg).unwrap();
    let deliveries: Vec<Delivery> = mailer
        .send_many(
            futures::stream::iter(emails(3, |i| format!("user{i}"))),
            mailer.bulk_options(),
        )
        .unwrap()
        .collect()
        .await;
    assert_eq!(deliveries.len(), 3);
    for d in deliveries {
        let Err(SendError::Temporary {
            code: Some(554),
            message,
        }) = &d.result
        else {
            panic!("{d:?}");
        };
        assert!(message.contains("Service refused"), "{message}");
        assert_eq!(d.attempts, 2);
    }
    assert!(received(&smtpd).is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_a_temporary_failure_after_the_attempts() {
    let port = email_common::closed_port();
    let mut cfg = EmailConfig::new(
        SmtpUrl::parse(&format!("smtp://u:s3cret-pw@127.0.0.1:{port}")).unwrap(),
        "status@example.com",
    );
    cfg.retry_backoff = Duration::from_millis(10);
    cfg.max_attempts = 3;
    let mailer = Mailer::new(&cfg).unwrap();
    let deliveries: Vec<Delivery> = mailer
        .send_many(
            futures::stream::iter(emails(4, |i| format!("user{i}"))),
            mailer.bulk_options(),
        )
        .unwrap()
        .collect()
        .await;
    assert_eq!(deliveries.len(), 4);
    for d in deliveries {
        assert_eq!(d.attempts, 3);
        let Err(SendError::Temporary {
            code: None,
            message,
        }) = &d.result
        else {
            panic!("{d:?}");
        };
        assert!(message.contains(&port.to_string()), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}
