//! The outbox's email deliverer against a real SMTP server (aiosmtpd on loopback): a row is
//! sent as stored (its Message-ID, recipient, unsubscribe headers, text and HTML); a 4xx is a
//! retry after `[email]`'s backoff, doubled per attempt, until `max_attempts` makes it a
//! failure; a 5xx and an unreadable payload fail at once; the rate limit spaces sends out.

use std::time::{Duration, Instant};

use drbot::{
    config::{EmailConfig, Secret},
    notify::email::{EmailDeliverer, EmailPayload, message_id},
};
use drbot_e2e::smtpd::Smtpd;
use mailparse::{MailHeaderMap, parse_mail};
use notifier::outbox::{Deliverer, Delivery, Outcome};
use serde_json::json;

fn config(url: &str, rate_limit: Option<f64>) -> EmailConfig {
    EmailConfig {
        smtp_url: Secret::new(url),
        from: "Example Status <status@example.com>".into(),
        max_connections: 4,
        rate_limit,
        max_attempts: 3,
        retry_backoff: "200ms".into(),
        max_backoff: "1s".into(),
        timeout: "5s".into(),
    }
}

fn row(sub: i64, to: &str, attempt: u32) -> Delivery {
    let key = format!("email:run:7:step:1:sub:{sub}");
    let payload = EmailPayload {
        subscriber: sub,
        to: to.into(),
        subject: "Service Update - DR Activation".into(),
        text: "Dear Customer,\nhttps://status.example.com/unsubscribe?token=t\n".into(),
        html: "<p>Dear Customer,</p>".into(),
        unsubscribe_url: "https://status.example.com/unsubscribe?token=t".into(),
        message_id: message_id(&key),
    };
    Delivery {
        id: sub,
        key,
        channel: "email".into(),
        payload: serde_json::to_value(payload).unwrap(),
        ordering_key: None,
        attempt,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_is_sent_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "accept");
    let d = EmailDeliverer::new(&config(&smtpd.url(), None)).unwrap();
    let out = d
        .deliver(&row(3, "\"Ann\" <ann@customer.example>", 1))
        .await;
    assert_eq!(
        out,
        Outcome::Delivered {
            receipt: Some("email.run.7.step.1.sub.3".into())
        }
    );
    let raw = smtpd.messages();
    assert_eq!(raw.len(), 1);
    let m = parse_mail(&raw[0]).unwrap();
    let h = |n: &str| m.headers.get_first_value(n).unwrap_or_default();
    assert_eq!(h("Message-ID"), "<email.run.7.step.1.sub.3@example.com>");
    assert_eq!(h("To"), "Ann <ann@customer.example>");
    assert_eq!(h("Subject"), "Service Update - DR Activation");
    assert_eq!(
        h("List-Unsubscribe"),
        "<https://status.example.com/unsubscribe?token=t>"
    );
    assert_eq!(h("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    assert_eq!(m.ctype.mimetype, "multipart/alternative");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_back_off_then_give_up_and_permanent_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "tempfail,reject");
    let d = EmailDeliverer::new(&config(&smtpd.url(), None)).unwrap();

    // First attempt: 451, retried after the configured backoff; the second goes through.
    match d.deliver(&row(1, "a@customer.example", 1)).await {
        Outcome::Retry { error, after } => {
            assert!(error.contains("451"), "{error}");
            assert_eq!(after, Some(Duration::from_millis(200)));
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert!(matches!(
        d.deliver(&row(1, "a@customer.example", 2)).await,
        Outcome::Delivered { .. }
    ));
    // A later attempt waits twice as long.
    match d.deliver(&row(2, "b@customer.example", 2)).await {
        Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_millis(400))),
        other => panic!("expected a retry, got {other:?}"),
    }
    // At `max_attempts` a temporary failure is recorded as failed.
    match d.deliver(&row(3, "c@customer.example", 3)).await {
        Outcome::Failed { error } => {
            assert!(error.contains("gave up after 3 attempts"), "{error}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // 5xx: failed at once.
    match d.deliver(&row(4, "unknown@customer.example", 1)).await {
        Outcome::Failed { error } => assert!(error.contains("550"), "{error}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // A payload that is not an email row.
    let mut bad = row(5, "e@customer.example", 1);
    bad.payload = json!({ "text": "hello" });
    match d.deliver(&bad).await {
        Outcome::Failed { error } => assert!(error.contains("unreadable email payload")),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(smtpd.count(), 1, "only the retried message arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_sends() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "accept");
    let d = EmailDeliverer::new(&config(&smtpd.url(), Some(20.0))).unwrap();
    let rows: Vec<Delivery> = (0..11)
        .map(|i| row(i, &format!("r{i}@customer.example"), 1))
        .collect();
    let start = Instant::now();
    let outs = futures::future::join_all(rows.iter().map(|r| d.deliver(r))).await;
    let took = start.elapsed();
    assert!(outs.iter().all(|o| matches!(o, Outcome::Delivered { .. })));
    // 11 sends at 20 per second: the last starts 10 intervals of 50 ms after the first.
    assert!(took >= Duration::from_millis(480), "{took:?}");
    assert_eq!(smtpd.count(), 11);
}
