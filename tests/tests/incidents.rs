//! Incidents end to end through the real binary: `drbot cmd` opens, updates and resolves an
//! incident; `drbot serve`'s outbox worker carries each change to a loopback fake of the
//! Statuspage v1 API (with a 429 + `Retry-After` and a few seconds of refused connections on
//! the way: nothing lost, order kept) and to the fake Slack incident channel; `/status`,
//! `/status.json` (checked against `notifier`'s JSON Schema) and `/status/feed.atom` show the
//! incident and its timeline. Statuspage cannot be reached from here, hence its fake.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::{Duration, Instant},
};

use drbot_e2e::{fake_slack::FakeSlack, fake_statuspage::FakeStatuspage, *};
use serde_json::Value;

const TOKEN: &str = "xoxb-incident-test";
const SP_KEY: &str = "sp-secret-key";

/// A GET returning (status, content type, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body.to_string())
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

fn wait_for(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Statuspage incident's update statuses and bodies.
fn timeline(inc: &Value) -> Vec<(String, String)> {
    inc["incident_updates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    (
                        u["status"].as_str().unwrap_or("").to_string(),
                        u["body"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every key `required` by the schema object `schema` is in `doc`.
fn check_required(schema: &Value, doc: &Value, path: &str) {
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap();
        assert!(doc.get(key).is_some(), "{path}.{key} missing in {doc}");
    }
}

/// The document's required keys, and those of its incidents, updates and components.
fn check_document(schema: &Value, doc: &Value) {
    check_required(schema, doc, "$");
    let defs = &schema["$defs"];
    for (i, c) in doc["components"].as_array().unwrap().iter().enumerate() {
        check_required(&defs["component"], c, &format!("$.components[{i}]"));
    }
    let incidents = doc["history"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["current"].as_object().map(|_| &doc["current"]));
    for inc in incidents {
        check_required(&defs["incident"], inc, "incident");
        for u in inc["updates"].as_array().unwrap() {
            check_required(&defs["update"], u, "update");
        }
    }
}

#[test]
fn incident_lifecycle_reaches_statuspage_slack_and_the_status_page() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let statuspage = rt.block_on(FakeStatuspage::start("page1", SP_KEY));
    let slack = FakeSlack::start(TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("drbot.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"

[store]
url = "sqlite://{db}"

[engine]
poll_interval = "50ms"

[slack]
signing_secret = "s3cret"
bot_token = "{TOKEN}"
api_base_url = "{slack_api}"
incident_channel = "CINC"

[statuspage]
base_url = "{sp_api}"
page_id = "page1"
api_key = "{SP_KEY}"
timeout = "3s"

[status_page]
title = "Example status"

[[status_page.components]]
name = "API"
description = "Public REST API"

[[status_page.components]]
name = "Dashboard"

[[people]]
name = "alice"
roles = ["sre-lead"]

[[people]]
name = "bob"
roles = ["oncall"]

[[people]]
name = "dave"
roles = ["viewer"]

[regions.us-east-1]
role = "primary"

[regions.us-west-2]
role = "secondary"

[[runbooks]]
name = "drill"
command = "drill"
request_roles = ["oncall", "sre-lead"]
approve_roles = ["sre-lead"]

[[runbooks.steps]]
name = "noop"
type = "exec"
with = {{ command = "true" }}
"#,
            db = dir.path().join("drbot.db").display(),
            slack_api = slack.base_url(),
            sp_api = statuspage.base_url(),
        ),
    )
    .unwrap();
    let out = drbot(&cfg, &["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = Server::start(&cfg, port, &dir.path().join("serve.log"));

    // Nothing open yet: the page is all operational.
    let (code, ctype, body) = get(port, "/status.json");
    assert_eq!(code, 200);
    assert_eq!(ctype, "application/json");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["overall_status"], "operational");
    assert!(doc["current"].is_null());

    // A viewer may not open incidents.
    let out = cmd(&cfg, "dave", "/dr incident open Nope");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("may not open, update or resolve incidents"));

    // The create meets a 429 with Retry-After first.
    statuspage.answer_next(1, 429, Some(1));
    let said = ok_cmd(&cfg, "bob", "/dr incident open API degraded");
    assert!(said.contains("Incident 1 opened: API degraded"), "{said}");
    assert!(said.contains("slack, statuspage"), "{said}");
    wait_for(30, "the Statuspage create", || {
        statuspage.incidents().len() == 1
    });
    let inc = &statuspage.incidents()[0];
    // The incident's own title, as on drbot's page.
    assert_eq!(inc["name"], "API degraded");
    let first = &timeline(inc)[0];
    assert_eq!(first.0, "investigating");
    assert!(
        first
            .1
            .contains("We are experiencing issues in our primary region (us-east-1)"),
        "{first:?}"
    );
    assert!(
        first.1.contains("We are investigating: API degraded."),
        "{first:?}"
    );
    slack.wait(30, "the Slack broadcast", |s| s.messages("CINC").len() == 1);
    assert!(slack.messages("CINC")[0].text.contains("API degraded"));

    // Statuspage refuses connections for a few seconds while the updates are made.
    let back = rt.block_on(statuspage.refuse_for(Duration::from_secs(4)));
    ok_cmd(
        &cfg,
        "alice",
        "/dr incident update --status identified Replica lag on the primary",
    );
    ok_cmd(
        &cfg,
        "alice",
        "/dr incident update --status monitoring Traffic served from us-west-2",
    );
    ok_cmd(&cfg, "bob", "/dr incident resolve Service fully restored");
    rt.block_on(back).unwrap();
    wait_for(90, "the Statuspage resolve", || {
        statuspage
            .incidents()
            .first()
            .is_some_and(|i| i["status"] == "resolved")
    });
    let incidents = statuspage.incidents();
    assert_eq!(incidents.len(), 1, "a second incident was created");
    let steps: Vec<String> = timeline(&incidents[0])
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        steps,
        ["investigating", "identified", "monitoring", "resolved"]
    );
    let bodies = timeline(&incidents[0]);
    assert!(bodies[1].1.contains("Replica lag on the primary"));
    assert!(bodies[3].1.contains("Service fully restored"));
    let reqs = statuspage.requests();
    assert!(reqs.iter().all(|r| r.authorized));
    assert_eq!(reqs.iter().filter(|r| r.status == 429).count(), 1);

    slack.wait(30, "all Slack broadcasts", |s| {
        s.messages("CINC").len() == 5
    });
    let texts: Vec<String> = slack.messages("CINC").into_iter().map(|m| m.text).collect();
    assert!(texts[1].contains("identified"), "{texts:?}");
    assert!(texts[2].contains("monitoring"), "{texts:?}");
    assert!(texts[3].contains("resolved"), "{texts:?}");
    // Then the report link, once.
    assert!(texts[4].contains("report incident:1"), "{texts:?}");

    // Every delivery done, none failed.
    let out = drbot(&cfg, &["--json", "outbox"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r["state"] == "delivered"), "{rows:?}");
    // The API key never reached the log.
    assert!(!server.log_text().contains(SP_KEY));

    // A second incident, still open, for the page.
    ok_cmd(
        &cfg,
        "bob",
        "/dr incident open --impact critical Logins failing",
    );

    let (code, ctype, html) = get(port, "/status");
    assert_eq!(code, 200);
    assert_eq!(ctype, "text/html; charset=utf-8");
    for text in [
        "Example status",
        "Logins failing",
        "API degraded",
        "Replica lag on the primary",
        "Service fully restored",
        "Public REST API",
        "Major outage",
    ] {
        assert!(html.contains(text), "/status lacks {text:?}");
    }

    let (code, ctype, body) = get(port, "/status.json");
    assert_eq!((code, ctype.as_str()), (200, "application/json"));
    let doc: Value = serde_json::from_str(&body).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../notifier/templates/page/status.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    check_document(&schema, &doc);
    assert_eq!(
        doc["schema_version"],
        schema["properties"]["schema_version"]["const"]
    );
    assert_eq!(doc["overall_status"], "major_outage");
    assert_eq!(doc["components"][0]["name"], "API");
    assert_eq!(doc["components"][0]["status"], "major_outage");
    assert_eq!(doc["current"]["name"], "Logins failing");
    assert_eq!(doc["current"]["impact"], "critical");
    let history = doc["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["name"], "API degraded");
    assert_eq!(history[0]["status"], "resolved");
    let updates: Vec<&str> = history[0]["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        updates,
        ["investigating", "identified", "monitoring", "resolved"]
    );
    assert!(doc["evidence"]["last_backup_verification"].is_null());
    assert!(doc["evidence"]["last_drill"].is_null());

    let (code, ctype, feed) = get(port, "/status/feed.atom");
    assert_eq!(code, 200);
    assert_eq!(ctype, "application/atom+xml; charset=utf-8");
    let xml = roxmltree::Document::parse(&feed).expect("the feed is well-formed XML");
    let root = xml.root_element();
    assert_eq!(root.tag_name().name(), "feed");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2005/Atom")
    );
    let entries: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("entry"))
        .collect();
    assert_eq!(entries.len(), 5);
    assert!(feed.contains(&format!("http://127.0.0.1:{port}/status")));
    drop(server);
}
