//! The outbox's email deliverer against a real SMTP server (aiosmtpd on loopback): a row is
//! sent as stored (its Message-ID, recipient, unsubscribe headers, text and HTML); a 4xx is a
//! retry after `[email]`'s backoff, doubled per attempt, until `max_attempts` makes it a
//! failure; a 5xx and an unreadable payload fail at once; the rate limit spaces sends out.
//! Campaign rows (a stored campaign and the recipient's values) arrive as the message their
//! values slot into, in a round with whole-message rows, and one alone; a row naming a missing
//! campaign fails with that reason.

use std::time::{Duration, Instant};

use drbot::{
    config::{EmailConfig, Secret},
    notify::email::{CampaignRowPayload, EmailDeliverer, EmailPayload, StoredCampaign, message_id},
    store::{Store, campaigns},
};
use drbot_e2e::smtpd::Smtpd;
use futures::StreamExt;
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

async fn store(dir: &std::path::Path) -> Store {
    Store::connect(&format!("sqlite://{}", dir.join("drbot.db").display()), 2)
        .await
        .unwrap()
}

async fn deliverer(dir: &std::path::Path, url: &str, rate_limit: Option<f64>) -> EmailDeliverer {
    EmailDeliverer::new(&config(url, rate_limit), store(dir).await).unwrap()
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
        message_id: message_id(&key, 1_795_874_977_554),
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
    let d = deliverer(dir.path(), &smtpd.url(), None).await;
    let out = d
        .deliver(&row(3, "\"Ann\" <ann@customer.example>", 1))
        .await;
    assert_eq!(
        out,
        Outcome::Delivered {
            receipt: Some("email.run.7.step.1.sub.3.1795874977554".into())
        }
    );
    let raw = smtpd.messages();
    assert_eq!(raw.len(), 1);
    let m = parse_mail(&raw[0]).unwrap();
    let h = |n: &str| m.headers.get_first_value(n).unwrap_or_default();
    assert_eq!(
        h("Message-ID"),
        "<email.run.7.step.1.sub.3.1795874977554@example.com>"
    );
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
    let d = deliverer(dir.path(), &smtpd.url(), None).await;

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
    let d = deliverer(dir.path(), &smtpd.url(), Some(20.0)).await;
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

/// A campaign as `email_customers` stores it: markers for address, name and unsubscribe link.
fn stored_campaign() -> StoredCampaign {
    StoredCampaign {
        subject: "Service Update - DR Activation".into(),
        text: "Dear V1,\nUnsubscribe: V2\n".into(),
        html: Some("<p>Dear V1,</p><a href=\"V2\">Unsubscribe</a>".into()),
        slots: ["V0", "V1", "V2"].map(String::from).to_vec(),
        unsubscribe_prefix: Some("https://status.example.com/unsubscribe?token=".into()),
    }
}

/// `s` escaped for HTML: `& < > " '`.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn campaign_row(campaign: i64, sub: i64, name: &str) -> Delivery {
    let key = format!("email:run:8:step:1:sub:{sub}");
    let email = format!("c{sub}@customer.example");
    let url = format!("https://status.example.com/unsubscribe?token=tok{sub}");
    let values = vec![email.clone(), name.to_string(), url];
    let payload = CampaignRowPayload {
        campaign,
        subscriber: sub,
        to: email,
        message_id: message_id(&key, 1_795_874_977_554),
        unsubscribe_token: format!("tok{sub}"),
        values,
    };
    Delivery {
        id: 100 + sub,
        key,
        channel: "email".into(),
        payload: serde_json::to_value(payload).unwrap(),
        ordering_key: None,
        attempt: 1,
    }
}

/// Stores the test campaign; returns its id.
async fn insert_campaign(store: &Store) -> i64 {
    let mut tx = store.write().await.unwrap();
    let json = serde_json::to_string(&stored_campaign()).unwrap();
    let id = campaigns::insert_tx(&mut tx, "email:run:8:step:1:named", &json)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_rows_arrive_as_the_message_their_values_make() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "accept");
    let store = store(dir.path()).await;
    let id = insert_campaign(&store).await;
    let d = EmailDeliverer::new(&config(&smtpd.url(), None), store).unwrap();

    // One round: campaign rows, a whole-message row, a row of a missing campaign.
    let mut rows: Vec<Delivery> = (1..=5)
        .map(|i| campaign_row(id, i, &format!("Cust<{i}> & Co")))
        .collect();
    rows.push(row(9, "whole@customer.example", 1));
    rows.push(campaign_row(id + 1, 6, "Nobody"));
    let Ok(stream) = d.deliver_many(rows) else {
        panic!("the bulk path takes the rows")
    };
    let mut outs: Vec<(i64, Outcome)> = stream.collect().await;
    outs.sort_by_key(|(row, _)| *row);
    assert_eq!(outs.len(), 7);
    for (row, out) in &outs {
        match row {
            9 | 101..=105 => assert!(matches!(out, Outcome::Delivered { .. }), "{row}: {out:?}"),
            106 => assert!(
                matches!(out, Outcome::Failed { error } if error.contains("is not in the store")),
                "{out:?}"
            ),
            other => panic!("unexpected row {other}"),
        }
    }
    // And one alone, as after a bulk refusal.
    let alone = campaign_row(id, 7, "Zoë");
    assert_eq!(
        d.deliver(&alone).await,
        Outcome::Delivered {
            receipt: Some("email.run.8.step.1.sub.7.1795874977554".into())
        }
    );

    let raw = smtpd.messages();
    assert_eq!(raw.len(), 7, "5 + 1 campaign rows and the whole one");
    for i in [1, 2, 3, 4, 5, 7] {
        let m = raw
            .iter()
            .map(|r| parse_mail(r).unwrap())
            .find(|m| {
                m.headers.get_first_value("To").as_deref()
                    == Some(format!("c{i}@customer.example").as_str())
            })
            .unwrap_or_else(|| panic!("message to c{i}"));
        let h = |n: &str| m.headers.get_first_value(n).unwrap_or_default();
        let name = if i == 7 {
            "Zoë".to_string()
        } else {
            format!("Cust<{i}> & Co")
        };
        let url = format!("https://status.example.com/unsubscribe?token=tok{i}");
        assert_eq!(
            h("Message-ID"),
            format!("<email.run.8.step.1.sub.{i}.1795874977554@example.com>")
        );
        assert_eq!(h("Subject"), "Service Update - DR Activation");
        assert_eq!(h("List-Unsubscribe"), format!("<{url}>"));
        assert_eq!(h("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
        let text = m.subparts[0].get_body().unwrap();
        assert_eq!(text, format!("Dear {name},\r\nUnsubscribe: {url}\r\n"));
        let html = m.subparts[1].get_body().unwrap();
        assert_eq!(
            html,
            format!(
                "<p>Dear {},</p><a href=\"{url}\">Unsubscribe</a>",
                escape(&name)
            )
        );
    }
}

/// A subscriber who unsubscribed after the send was queued (or before a `--retry`) gets
/// nothing: their row ends failed, in a round and alone, whether it is a campaign's row or a
/// whole message (a name a campaign cannot carry, a template override); the others are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_recipients_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "accept");
    let store = store(dir.path()).await;
    let id = insert_campaign(&store).await;
    for (sub, gone) in [(1, false), (2, true), (3, false), (4, true)] {
        sqlx::query(
            "INSERT INTO subscribers (id, email, name, token, created_at, unsubscribed_at) \
             VALUES ($1, $2, NULL, $3, 0, $4)",
        )
        .bind(sub)
        .bind(format!("c{sub}@customer.example"))
        .bind(format!("{sub:064}"))
        .bind(gone.then_some(5_i64))
        .execute(store.pool())
        .await
        .unwrap();
    }
    let d = EmailDeliverer::new(&config(&smtpd.url(), None), store).unwrap();
    let mut rows: Vec<Delivery> = (1..=3).map(|i| campaign_row(id, i, "Cust")).collect();
    rows.push(row(1, "c1-whole@customer.example", 1));
    rows.push(row(2, "c2@customer.example", 1));
    let Ok(stream) = d.deliver_many(rows) else {
        panic!("the bulk path takes the rows")
    };
    let mut outs: Vec<(i64, Outcome)> = stream.collect().await;
    outs.sort_by_key(|(row, _)| *row);
    let gone = Outcome::Failed {
        error: "unsubscribed before it was sent".into(),
    };
    let ids: Vec<i64> = outs.iter().map(|(row, _)| *row).collect();
    assert_eq!(ids, [1, 2, 101, 102, 103], "{outs:?}");
    for (i, out) in outs.iter().enumerate() {
        if [1, 3].contains(&i) {
            assert_eq!(out.1, gone, "{outs:?}");
        } else {
            assert!(matches!(out.1, Outcome::Delivered { .. }), "{outs:?}");
        }
    }
    assert_eq!(d.deliver(&campaign_row(id, 4, "Cust")).await, gone);
    assert_eq!(d.deliver(&row(4, "c4@customer.example", 1)).await, gone);
    let to: Vec<String> = smtpd
        .messages()
        .iter()
        .map(|r| {
            parse_mail(r)
                .unwrap()
                .headers
                .get_first_value("To")
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(to.len(), 3, "{to:?}");
    assert!(
        !to.iter().any(|t| t.contains("c2@") || t.contains("c4@")),
        "{to:?}"
    );
}
