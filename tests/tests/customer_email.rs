//! Customer email end to end through the real binary, a SQLite store and a real SMTP server
//! (aiosmtpd on loopback): subscribers imported with `drbot subscribers import` (a bad line
//! reported by number, the rest imported); `/dr notify customers dr-activated` requested with
//! `drbot cmd` by one person, its preview (subject, recipient count) on the run while it waits,
//! approved by another; every subscriber gets exactly one multipart text + HTML email with
//! `List-Unsubscribe` and one-click `List-Unsubscribe-Post`; the unsubscribe URL taken from a
//! received email shows a confirm page on GET (which unsubscribes no one) and unsubscribes on
//! the RFC 8058 POST, after which a second send skips that subscriber. A server answering 451
//! to each recipient's first attempt still gets every recipient exactly once.

use std::{collections::BTreeMap, path::Path, time::Duration};

use drbot_e2e::{smtpd::Smtpd, *};
use mailparse::{MailHeaderMap, parse_mail};

const SUBJECT: &str = "Service Update - DR Activation";

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
max_connections = 4
retry_backoff = "200ms"
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

/// Requests the notification as olivia, waits for the preview, approves as sam, waits for the
/// end; returns the run's `show --json`.
fn send(cfg: &Path, recipients: usize) -> serde_json::Value {
    let out = ok_cmd(cfg, "olivia", "/dr notify customers dr-activated");
    let run: i64 = out
        .strip_prefix("Run ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {out}"));
    assert!(out.contains("waiting for approval"), "{out}");
    // The preview runs while the request waits: the run shows the subject and the count.
    let v = wait_run(cfg, run, 30, "the preview", |v| {
        v["steps"][0]["state"] == "succeeded"
    });
    assert_eq!(state(&v), "awaiting_approval");
    assert_eq!(
        v["steps"][0]["summary"],
        format!("Subject: \"{SUBJECT}\" · {recipients} recipients")
    );
    let log = v["steps"][0]["log"].as_str().unwrap_or_default();
    assert!(log.contains("Dear Customer,"), "{log}");
    assert_eq!(
        v["steps"][1]["state"], "pending",
        "nothing sent before approval"
    );
    // Two people: the requester cannot approve her own mass send.
    let own = cmd(cfg, "olivia", &format!("/dr approve {run}"));
    assert_eq!(own.status.code(), Some(2), "{}", stdout(&own));
    ok_cmd(cfg, "sam", &format!("/dr approve {run}"));
    let v = wait_run(cfg, run, 120, "the send", |v| {
        matches!(state(v), "succeeded" | "failed")
    });
    assert_eq!(state(&v), "succeeded", "{v:#}");
    assert_eq!(
        v["steps"][1]["summary"],
        format!("Sent {recipients} emails")
    );
    v
}

/// Messages in the Maildir by recipient address.
fn by_recipient(smtpd: &Smtpd) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for raw in smtpd.messages() {
        let mail = parse_mail(&raw).unwrap();
        let to = mail.headers.get_first_value("To").unwrap_or_default();
        let addr = to
            .rsplit_once('<')
            .map(|(_, a)| a.trim_end_matches('>').to_string())
            .unwrap_or(to);
        out.entry(addr).or_default().push(raw);
    }
    out
}

fn header(mail: &mailparse::ParsedMail<'_>, name: &str) -> String {
    mail.headers
        .get_first_value(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[test]
fn notify_customers_end_to_end_with_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "accept");
    let port = free_port();
    let cfg = write_config(dir.path(), port, &smtpd.url());
    let check = drbot(&cfg, &["check-config"]);
    assert!(check.status.success(), "{}", stderr(&check));

    let csv = dir.path().join("subscribers.csv");
    std::fs::write(
        &csv,
        "email,name\n\
         Ann@Customer.example,Ann Archer\n\
         bob@customer.example,\n\
         not-an-address,Broken\n\
         carol@customer.example,\"Carol, Ops\"\n\
         dan@customer.example,Dan\n\
         erin@customer.example,Erin\n\
         ann@customer.example,Ann again\n",
    )
    .unwrap();
    let out = drbot(&cfg, &["subscribers", "import", csv.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "a bad line is reported: {text}");
    assert!(
        text.contains("5 added, 1 already present") && text.contains("1 invalid"),
        "{text}"
    );
    assert!(
        text.contains("line 4: `not-an-address` is not a valid email address"),
        "{text}"
    );
    let count = drbot(&cfg, &["subscribers", "count"]);
    assert_eq!(
        stdout(&count).trim(),
        "5 active subscribers, 0 unsubscribed"
    );
    // The import is audited: who (the OS user) and what it changed.
    let audit = drbot(&cfg, &["--json", "audit", "--limit", "1000"]);
    let rows: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let import = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "subscribers.import")
        .unwrap_or_else(|| panic!("no subscribers.import row: {rows}"));
    assert!(
        import["account"].as_str().unwrap().starts_with("cli:"),
        "{import}"
    );
    let detail: serde_json::Value =
        serde_json::from_str(import["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        (detail["added"].as_u64(), detail["invalid"].as_u64()),
        (Some(5), Some(1))
    );

    let log = dir.path().join("serve.log");
    let _server = Server::start(&cfg, port, &log);
    ok_cmd(
        &cfg,
        "olivia",
        "/dr incident open --impact major Database outage",
    );

    send(&cfg, 5);
    smtpd.wait_count(5, 30);
    let mail = by_recipient(&smtpd);
    let expected = [
        "ann@customer.example",
        "bob@customer.example",
        "carol@customer.example",
        "dan@customer.example",
        "erin@customer.example",
    ];
    assert_eq!(
        mail.keys().map(String::as_str).collect::<Vec<_>>(),
        expected
    );
    let mut ids = std::collections::BTreeSet::new();
    let mut ann_unsubscribe = String::new();
    for (addr, msgs) in &mail {
        assert_eq!(msgs.len(), 1, "{addr} got {} emails", msgs.len());
        let m = parse_mail(&msgs[0]).unwrap();
        assert_eq!(header(&m, "Subject"), SUBJECT);
        assert_eq!(
            header(&m, "From"),
            "\"Example Status\" <status@example.com>"
        );
        assert!(ids.insert(header(&m, "Message-ID")), "Message-IDs differ");
        assert_eq!(
            header(&m, "List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click"
        );
        let unsub = header(&m, "List-Unsubscribe");
        let url = unsub
            .trim()
            .strip_prefix('<')
            .and_then(|u| u.strip_suffix('>'))
            .unwrap_or_else(|| panic!("List-Unsubscribe is `{unsub}`"));
        assert!(
            url.starts_with(&format!("http://127.0.0.1:{port}/unsubscribe?token=")),
            "{url}"
        );
        assert_eq!(m.ctype.mimetype, "multipart/alternative");
        assert_eq!(m.subparts.len(), 2);
        assert_eq!(m.subparts[0].ctype.mimetype, "text/plain");
        assert_eq!(m.subparts[1].ctype.mimetype, "text/html");
        let text = m.subparts[0].get_body().unwrap();
        let html = m.subparts[1].get_body().unwrap();
        assert!(
            text.contains(url) && html.contains(url),
            "each part links {url}"
        );
        assert!(
            text.contains(&format!("http://127.0.0.1:{port}/status")),
            "{text}"
        );
        if addr == "ann@customer.example" {
            assert_eq!(header(&m, "To"), "\"Ann Archer\" <ann@customer.example>");
            assert!(text.starts_with("Dear Ann Archer,"), "{text}");
            ann_unsubscribe = url.to_string();
        }
        if addr == "bob@customer.example" {
            assert!(text.starts_with("Dear Customer,"), "{text}");
        }
    }

    // The link: a GET shows the confirm page and unsubscribes no one (mail scanners fetch
    // links); the one-click POST unsubscribes, and again is harmless.
    let path = ann_unsubscribe
        .strip_prefix(&format!("http://127.0.0.1:{port}"))
        .unwrap()
        .to_string();
    let (status, page) = http_get(port, &path).unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert!(page.contains("ann@customer.example"), "{page}");
    let count = drbot(&cfg, &["subscribers", "count"]);
    assert_eq!(
        stdout(&count).trim(),
        "5 active subscribers, 0 unsubscribed"
    );
    for _ in 0..2 {
        let (status, page) = http_post(port, &path, "List-Unsubscribe=One-Click", &[]);
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("You are unsubscribed"), "{page}");
    }
    let count = drbot(&cfg, &["subscribers", "count"]);
    assert_eq!(
        stdout(&count).trim(),
        "4 active subscribers, 1 unsubscribed"
    );
    // A token that names no one: one 404 page, no detail.
    for bad in [
        format!("/unsubscribe?token={}", "0".repeat(64)),
        "/unsubscribe?token=garbage".to_string(),
        "/unsubscribe".to_string(),
    ] {
        let (status, page) = http_post(port, &bad, "List-Unsubscribe=One-Click", &[]);
        assert_eq!(status, 404, "{bad}: {page}");
        assert!(page.contains("not valid") && !page.contains("@"), "{page}");
        assert_eq!(http_get(port, &bad).map(|(s, _)| s), Some(404), "{bad}");
    }
    let export = drbot(&cfg, &["subscribers", "export"]);
    let csv = stdout(&export);
    let ann_line = csv
        .lines()
        .find(|l| l.starts_with("ann@customer.example,"))
        .unwrap_or_else(|| panic!("{csv}"));
    assert!(
        !ann_line.ends_with(','),
        "unsubscribed_at exported: {ann_line}"
    );

    // A second send skips her.
    send(&cfg, 4);
    smtpd.wait_count(9, 30);
    let mail = by_recipient(&smtpd);
    assert_eq!(mail["ann@customer.example"].len(), 1);
    for addr in &expected[1..] {
        assert_eq!(mail[*addr].len(), 2, "{addr}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtpd.count(), 9, "nothing more arrives");
}

#[test]
fn a_451_on_the_first_attempt_is_retried_and_each_recipient_gets_one_email() {
    let dir = tempfile::tempdir().unwrap();
    let smtpd = Smtpd::start(dir.path(), "tempfail");
    let port = free_port();
    let cfg = write_config(dir.path(), port, &smtpd.url());
    let csv = dir.path().join("subscribers.csv");
    std::fs::write(
        &csv,
        "email,name\na@customer.example,A\nb@customer.example,B\nc@customer.example,C\n",
    )
    .unwrap();
    let out = drbot(&cfg, &["subscribers", "import", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));

    let log = dir.path().join("serve.log");
    let _server = Server::start(&cfg, port, &log);
    ok_cmd(&cfg, "olivia", "/dr incident open Database outage");
    send(&cfg, 3);
    smtpd.wait_count(3, 30);
    let mail = by_recipient(&smtpd);
    assert_eq!(mail.len(), 3);
    assert!(mail.values().all(|m| m.len() == 1), "one email each");
    let mut failed = smtpd.tempfailed();
    failed.sort();
    assert_eq!(
        failed,
        [
            "a@customer.example",
            "b@customer.example",
            "c@customer.example"
        ],
        "each recipient's first attempt was refused"
    );
    // Each row took two attempts and is delivered.
    let rows = drbot(&cfg, &["--json", "outbox"]);
    let rows: serde_json::Value = serde_json::from_slice(&rows.stdout).unwrap();
    let emails: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["channel"] == "email")
        .collect();
    assert_eq!(emails.len(), 3);
    for r in emails {
        assert_eq!(r["state"], "delivered", "{r}");
        assert_eq!(r["attempts"], 2, "{r}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtpd.count(), 3, "nothing more arrives");
}
