//! A crash in the middle of a 10,000-recipient customer email: `drbot serve` is killed with
//! SIGKILL after some but not all messages reached the SMTP server (aiosmtpd on loopback),
//! then started again, and the send resumes and finishes.
//!
//! The contract checked: every recipient gets the message at least once, with exactly one
//! distinct Message-ID per recipient; the only copies are messages that were in flight at the
//! kill (accepted by the server, their acknowledgement lost with the process), so the raw
//! duplicates are at most the outbox worker's in-flight bound, which `serve` logs. SMTP cannot
//! give exactly-once; the fixed Message-ID lets receivers drop such a copy. Each message is
//! the recipient's own: addressed by name where they have one (every third has none), their
//! greeting, and their unsubscribe link in the body and in `List-Unsubscribe`: the send goes
//! out as two campaigns (named, anonymous) whose rows hold only the recipient's values.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use drbot_e2e::{smtpd::Smtpd, *};
use mailparse::MailHeaderMap;

const RECIPIENTS: usize = 10_000;

fn write_config(dir: &Path, port: u16, smtp: &str) -> std::path::PathBuf {
    let cfg = dir.join("drbot.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
builtin_runbooks = ["notify-customers"]

[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"

[store]
url = "sqlite://{db}"

[engine]
lease = "2s"
poll_interval = "100ms"
shutdown_grace = "2s"

[[people]]
name = "olivia"
roles = ["oncall", "sre-lead"]

[[people]]
name = "sam"
roles = ["sre-lead"]

[regions.us-east-1]
role = "primary"

[regions.us-west-2]
role = "secondary"

[email]
smtp_url = "{smtp}"
from = "Example Status <status@example.com>"
max_connections = 8
"#,
            db = dir.join("drbot.db").display()
        ),
    )
    .unwrap();
    cfg
}

fn ok_cmd(cfg: &Path, person: &str, text: &str) -> String {
    let out = cmd(cfg, person, text);
    assert!(
        out.status.success(),
        "{text}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The email lane's in-flight bound, from `serve`'s log line `outbox worker started
/// lane="email" in_flight_bound=N …`.
fn in_flight_bound(log: &str) -> usize {
    // The log may be coloured: drop ANSI escape sequences (ESC [ … m).
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .find(|l| l.contains("outbox worker started") && l.contains("lane=\"email\""))
        .and_then(|l| l.split("in_flight_bound=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `outbox worker started concurrency=` line in:\n{log}"))
}

#[test]
fn sigkill_mid_send_then_restart_delivers_everyone_once_per_message_id() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "accept");
    let port = free_port();
    let cfg = write_config(dir.path(), port, &smtpd.url());

    let mut csv = String::from("email,name\n");
    for i in 0..RECIPIENTS {
        let name = if i % 3 == 2 {
            String::new()
        } else {
            format!("User {i}")
        };
        csv.push_str(&format!("user{i:05}@customer.example,{name}\n"));
    }
    let file = dir.path().join("subscribers.csv");
    std::fs::write(&file, csv).unwrap();
    let out = drbot(&cfg, &["subscribers", "import", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("10000 added"), "{}", stdout(&out));

    let log = dir.path().join("serve.log");
    let mut server = Server::start(&cfg, port, &log);
    ok_cmd(
        &cfg,
        "olivia",
        "/dr incident open --impact major Database outage",
    );
    let out = ok_cmd(&cfg, "olivia", "/dr notify customers dr-activated");
    let run: i64 = out
        .strip_prefix("Run ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {out}"));
    let v = wait_run(&cfg, run, 120, "the preview", |v| {
        v["steps"][0]["state"] == "succeeded"
    });
    assert_eq!(
        v["steps"][0]["summary"],
        "Subject: \"Service Update - DR Activation\" · 10,000 recipients"
    );
    ok_cmd(&cfg, "sam", &format!("/dr approve {run}"));
    let approved = Instant::now();
    eprintln!("approved after {:?}", started.elapsed());

    // Kill it once some, not all, messages arrived.
    let deadline = Instant::now() + Duration::from_secs(300);
    while smtpd.count() < 1_500 {
        assert!(
            Instant::now() < deadline,
            "the send did not get going: {} messages\n{}",
            smtpd.count(),
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    let at_kill = smtpd.count();
    let bound = in_flight_bound(&server.log_text());
    assert!(
        at_kill < RECIPIENTS,
        "the kill came too late to test anything ({at_kill} delivered)"
    );
    eprintln!(
        "SIGKILL after {at_kill} of {RECIPIENTS} messages, {:?} after the approval",
        approved.elapsed()
    );
    let killed = Instant::now();

    // Restart: the run resumes (the send step is idempotent) and the outbox re-claims the
    // dead process's rows after their lease.
    let log2 = dir.path().join("serve2.log");
    let _server = Server::start(&cfg, port, &log2);
    let v = wait_run(&cfg, run, 600, "the resumed send", |v| {
        matches!(state(v), "succeeded" | "failed")
    });
    assert_eq!(state(&v), "succeeded", "{v:#}");
    assert_eq!(v["steps"][1]["summary"], "Sent 10,000 emails");
    eprintln!("the send finished {:?} after the restart", killed.elapsed());
    std::thread::sleep(Duration::from_millis(500));

    // Every recipient: at least one message, one distinct Message-ID.
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let messages = smtpd.messages();
    for raw in &messages {
        let (headers, _) = mailparse::parse_headers(raw).unwrap();
        let to = headers.get_first_value("To").unwrap_or_default();
        let addr = to
            .rsplit_once('<')
            .map(|(_, a)| a.trim_end_matches('>').to_string())
            .unwrap_or(to);
        let id = headers.get_first_value("Message-ID").expect("Message-ID");
        check_content(raw, &addr);
        if let Some(other) = owner.insert(id.clone(), addr.clone()) {
            assert_eq!(other, addr, "Message-ID {id} went to two recipients");
        }
        ids.entry(addr).or_default().insert(id);
    }
    assert_eq!(ids.len(), RECIPIENTS, "every recipient got the message");
    for (addr, set) in &ids {
        assert_eq!(
            set.len(),
            1,
            "{addr} got {} distinct Message-IDs",
            set.len()
        );
    }
    let duplicates = messages.len() - RECIPIENTS;
    eprintln!(
        "raw duplicates after the SIGKILL: {duplicates} (in-flight bound {bound}; {} messages for {RECIPIENTS} recipients)",
        messages.len()
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates exceed the worker's in-flight bound {bound}"
    );
}

/// The message to `addr` (`userNNNNN@…`) greets them by name (when they have one) and carries
/// their unsubscribe link in the text, the HTML and `List-Unsubscribe`.
fn check_content(raw: &[u8], addr: &str) {
    let mail = mailparse::parse_mail(raw).unwrap();
    let i: usize = addr
        .strip_prefix("user")
        .and_then(|r| r.get(..5))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected recipient {addr}"));
    let to = mail.headers.get_first_value("To").unwrap_or_default();
    let text = mail.subparts[0].get_body().unwrap();
    let html = mail.subparts[1].get_body().unwrap();
    if i % 3 == 2 {
        assert_eq!(to, addr);
        assert!(text.starts_with("Dear Customer,"), "{addr}: {text}");
    } else {
        // lettre quotes a name with a space.
        assert_eq!(to, format!("\"User {i}\" <{addr}>"));
        assert!(
            text.starts_with(&format!("Dear User {i},")),
            "{addr}: {text}"
        );
    }
    let list = mail.headers.get_first_value("List-Unsubscribe").unwrap();
    let url = list.trim_start_matches('<').trim_end_matches('>');
    assert!(url.contains("/unsubscribe?token="), "{addr}: {list}");
    assert!(text.contains(url), "{addr}: {text}");
    assert!(html.contains(&format!("href=\"{url}\"")), "{addr}: {html}");
}
