//! `send_many` against a real Postfix, which offers PIPELINING and CHUNKING: the messages go
//! as pipelined windows of BDAT transactions (Postfix's log counts BDAT commands and no DATA),
//! each delivered message arrives once and exactly as `Mailer::format` builds it (no
//! dot-stuffing, same headers), and a recipient refused in the middle of a window (550) or
//! greylisted (450, retried then given up) fails alone while the transactions around it go
//! through. A campaign (`send_campaign`) goes the same way: each accepted recipient gets one
//! message, byte for byte the one `format_campaign` writes for them.

mod email_common;

use std::collections::HashMap;
use std::time::Duration;

use email_common::header;
use email_common::postfix::Postfix;
use futures::StreamExt;
use mailparse::parse_mail;
use notifier::email::{
    BulkOptions, CampaignContent, EmailConfig, Mailer, OutgoingEmail, Recipient, SmtpUrl,
};

const N: usize = 300;

fn local(i: usize) -> String {
    if i % 25 == 7 {
        format!("unknown{i}")
    } else if i % 40 == 11 {
        format!("greylist{i}")
    } else {
        format!("user{i}")
    }
}

fn email(i: usize) -> OutgoingEmail {
    OutgoingEmail {
        to: format!("{}@customer.example", local(i)),
        subject: format!("Service Update {i} - DR Activation"),
        text: format!(
            "Dear Customer {i},\n.\n..two dots\n.leading dot\nFrom the team\nR\u{e9}gion \
             primaire indisponible.\n"
        ),
        html: Some(format!("<p>Dear Customer {i}</p>\n.<p>dot</p>")),
        unsubscribe_url: Some(format!("https://status.example.com/unsubscribe?token=t{i}")),
        unsubscribe_mailto: None,
        message_id: format!("pf-{i}"),
    }
}

/// `n` of the Message-ID `<prefix-n@domain>`.
fn number(id: &str, prefix: &str) -> usize {
    id.trim_start_matches('<')
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split('@').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Message-ID {id}"))
}

/// A mailer to `postfix` over `connections` connections, retrying after 20 ms.
fn mailer(postfix: &Postfix, connections: u32) -> Mailer {
    let mut cfg = EmailConfig::new(
        SmtpUrl::parse(&postfix.url()).unwrap(),
        "Status <status@example.com>",
    );
    cfg.max_connections = connections;
    cfg.retry_backoff = Duration::from_millis(20);
    Mailer::new(&cfg).unwrap()
}

/// `text` with CRLF made LF (Postfix's Maildir uses LF), the Date line and the MIME boundary
/// replaced by fixed strings (both differ between two builds of one email).
fn normalize(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("Date: ") {
            out.push_str("Date: X\n");
        } else {
            out.push_str(line);
        }
    }
    match out.split_once("boundary=\"") {
        Some((_, rest)) => {
            let boundary = rest.split('"').next().unwrap().to_string();
            out.replace(&boundary, "BOUNDARY")
        }
        None => out,
    }
}

#[tokio::test]
async fn bdat_windows_through_postfix_deliver_each_message_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let postfix = Postfix::start(dir.path());
    let mailer = mailer(&postfix, 4);
    let options = BulkOptions {
        max_attempts: 2,
        ..mailer.bulk_options()
    };
    let deliveries: Vec<_> = mailer
        .send_many(futures::stream::iter((0..N).map(email)), options)
        .unwrap()
        .collect()
        .await;
    assert_eq!(deliveries.len(), N);

    let mut expected_ok = 0;
    for d in &deliveries {
        if d.to.starts_with("unknown") {
            assert_eq!(d.attempts, 1, "{d:?}");
            email_common::assert_refused(d, true, 550, "User unknown");
        } else if d.to.starts_with("greylist") {
            assert_eq!(d.attempts, 2, "{d:?}");
            email_common::assert_refused(d, false, 450, "Greylisted");
        } else {
            expected_ok += 1;
            assert_eq!(d.result, Ok(()), "{d:?}");
            assert_eq!(d.attempts, 1, "{d:?}");
        }
    }
    assert!(expected_ok > 250 && expected_ok < N, "{expected_ok}");

    // Each accepted message arrives once, as built: Postfix only adds its trace headers above.
    let messages = postfix.wait_for_messages(expected_ok);
    assert_eq!(messages.len(), expected_ok);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw in &messages {
        let mail = parse_mail(raw).unwrap();
        let id = header(&mail, "Message-ID");
        let i = number(&id, "pf");
        *seen.entry(id.clone()).or_default() += 1;
        assert_eq!(
            header(&mail, "Delivered-To"),
            format!("user{i}@customer.example")
        );
        let delivered = normalize(std::str::from_utf8(raw).unwrap());
        let built = normalize(&String::from_utf8(mailer.format(&email(i)).unwrap()).unwrap());
        let Some(added) = delivered.strip_suffix(&built) else {
            panic!("message {i} differs from what was built:\n{delivered}\n---\n{built}");
        };
        for line in added.lines() {
            assert!(
                [
                    "Return-Path:",
                    "X-Original-To:",
                    "Delivered-To:",
                    "Received:",
                    "\t"
                ]
                .iter()
                .any(|p| line.starts_with(p)),
                "unexpected line added above message {i}: {line}"
            );
        }
        let body = mail.subparts[0].get_body().unwrap().replace("\r\n", "\n");
        assert!(body.contains("\n.\n..two dots\n.leading dot\n"), "{body:?}");
    }
    assert_eq!(seen.len(), expected_ok);
    assert!(seen.values().all(|&c| c == 1), "{seen:?}");

    // Postfix's own count: every transaction was a BDAT one, none used DATA. Its
    // `disconnect` lines read e.g. `ehlo=1 mail=40 rcpt=38/40 bdat=38/40 quit=1`.
    let log = postfix.log();
    let (mut bdat_ok, mut bdat_all, mut mails) = (0, 0, 0);
    for line in log.lines().filter(|l| l.contains(" disconnect from ")) {
        assert!(!line.contains(" data="), "{line}");
        for word in line.split_whitespace() {
            if let Some(v) = word.strip_prefix("bdat=") {
                let (ok, all) = v.split_once('/').unwrap_or((v, v));
                bdat_ok += ok.parse::<usize>().unwrap();
                bdat_all += all.parse::<usize>().unwrap();
            } else if let Some(v) = word.strip_prefix("mail=") {
                mails += v.split('/').next().unwrap().parse::<usize>().unwrap();
            }
        }
    }
    let greylisted = deliveries
        .iter()
        .filter(|d| d.to.starts_with("greylist"))
        .count();
    assert_eq!(bdat_ok, expected_ok, "{log}");
    assert_eq!(bdat_all, N + greylisted, "{log}");
    assert_eq!(mails, N + greylisted, "{log}");
}

fn recipient(i: usize) -> Recipient {
    Recipient {
        to: format!("{}@customer.example", local(i)),
        message_id: format!("cp-{i}"),
        unsubscribe_token: Some(format!("t{i}")),
        values: vec![i.to_string(), format!("Zo\u{eb} & <{i}>")],
    }
}

#[tokio::test]
async fn a_campaign_through_postfix_reaches_each_accepted_recipient_once_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let postfix = Postfix::start(dir.path());
    let mailer = mailer(&postfix, 3);
    let campaign = mailer
        .campaign(CampaignContent {
            subject: "Service Update - DR Activation".into(),
            text: "Dear Customer {{n}} ({{name}}),\n.\n..two dots\nR\u{e9}gion primaire \
                   indisponible.\n"
                .into(),
            html: Some("<p>Dear {{name}}</p>\n.<p>customer {{n}}</p>".into()),
            slots: vec!["{{n}}".into(), "{{name}}".into()],
            unsubscribe_prefix: Some("https://status.example.com/unsubscribe?token=".into()),
        })
        .unwrap();
    let options = BulkOptions {
        max_attempts: 2,
        ..mailer.bulk_options()
    };
    let n = 200;
    let mut bad = recipient(n);
    bad.values.pop();
    let list: Vec<Recipient> = (0..n).map(recipient).chain([bad]).collect();
    let deliveries: Vec<_> = mailer
        .send_campaign(campaign.clone(), futures::stream::iter(list), options)
        .unwrap()
        .collect()
        .await;
    assert_eq!(deliveries.len(), n + 1);
    let mut expected_ok = 0;
    for d in &deliveries {
        if d.message_id == format!("cp-{n}") {
            assert_eq!(d.attempts, 0, "{d:?}");
            assert!(
                matches!(&d.result, Err(notifier::email::SendError::Invalid(m)) if m.contains("1 values for 2 slots")),
                "{d:?}"
            );
        } else if d.to.starts_with("unknown") {
            email_common::assert_refused(d, true, 550, "User unknown");
        } else if d.to.starts_with("greylist") {
            assert_eq!(d.attempts, 2, "{d:?}");
            email_common::assert_refused(d, false, 450, "Greylisted");
        } else {
            expected_ok += 1;
            assert_eq!((&d.result, d.attempts), (&Ok(()), 1), "{d:?}");
        }
    }
    assert!(expected_ok > 170 && expected_ok < n, "{expected_ok}");

    let messages = postfix.wait_for_messages(expected_ok);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw in &messages {
        let mail = parse_mail(raw).unwrap();
        let id = header(&mail, "Message-ID");
        let i = number(&id, "cp");
        *seen.entry(id.clone()).or_default() += 1;
        let delivered = normalize(std::str::from_utf8(raw).unwrap());
        let written = mailer.format_campaign(&campaign, &recipient(i)).unwrap();
        let written = normalize(std::str::from_utf8(&written).unwrap());
        assert!(
            delivered.ends_with(&written),
            "message {i} differs from what was written:\n{delivered}\n---\n{written}"
        );
        let text = mail.subparts[0].get_body().unwrap().replace("\r\n", "\n");
        assert_eq!(
            text,
            format!(
                "Dear Customer {i} (Zo\u{eb} & <{i}>),\n.\n..two dots\nR\u{e9}gion primaire \
                 indisponible.\n"
            )
        );
        let html = mail.subparts[1].get_body().unwrap().replace("\r\n", "\n");
        assert_eq!(
            html,
            format!("<p>Dear Zo\u{eb} &amp; &lt;{i}&gt;</p>\n.<p>customer {i}</p>")
        );
    }
    assert_eq!(seen.len(), expected_ok);
    assert!(seen.values().all(|&c| c == 1), "{seen:?}");
}
