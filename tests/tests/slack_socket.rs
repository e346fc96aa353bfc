//! Slack Socket Mode end to end: the real `drbot serve` opens a WebSocket to a loopback fake
//! of Slack (`apps.connections.open` + a WebSocket server speaking Socket Mode envelopes),
//! runs commands and clicks received as envelopes, acknowledges each, ignores re-sent
//! envelopes, and reconnects when Slack asks it to.

use serde_json::{Value, json};

use drbot_e2e::{fake_slack::*, *};

const TOKEN: &str = "xoxb-socket-test";

fn slash_envelope(id: &str, user: &str, text: &str, trigger: &str, retry: u32) -> Value {
    json!({
        "envelope_id": id,
        "type": "slash_commands",
        "accepts_response_payload": true,
        "retry_attempt": retry,
        "retry_reason": if retry > 0 { "timeout" } else { "" },
        "payload": {
            "token": "gIkuvaNzQIHg97ATvDxqgjtO", "team_id": "T0001", "team_domain": "example",
            "channel_id": "C1", "channel_name": "incident", "user_id": user, "user_name": "someone",
            "command": "/dr", "text": text, "api_app_id": "A0MDYCDME", "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.com/commands/T0001/1/x", "trigger_id": trigger
        }
    })
}

fn click_envelope(id: &str, user: &str, ts: &str, value: &str, trigger: &str) -> Value {
    let payload = fill(
        include_str!("../fixtures/slack/block_actions.json"),
        &[
            ("user_id", user),
            ("user_name", "someone"),
            ("message_ts", ts),
            ("channel_id", "C1"),
            ("trigger_id", trigger),
            ("response_url", "https://hooks.slack.com/actions/T0001/1/x"),
            ("action_id", "approve"),
            ("value", value),
            ("action_ts", "1700000000.000200"),
        ],
    );
    json!({
        "envelope_id": id, "type": "interactive", "accepts_response_payload": false,
        "payload": serde_json::from_str::<Value>(&payload).unwrap()
    })
}

fn ack(slack: &FakeSlack, id: &str) -> Value {
    slack.wait(20, "the ack", |s| {
        s.socket_received().iter().any(|m| m["envelope_id"] == id)
    });
    slack
        .socket_received()
        .into_iter()
        .find(|m| m["envelope_id"] == id)
        .unwrap()
}

/// The test config: Socket Mode against `slack`, a SQLite store in `d`.
fn write_config(d: &std::path::Path, port: u16, slack: &FakeSlack) -> std::path::PathBuf {
    let cfg = d.join("drbot.toml");
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
mode = "socket"
app_token = "xapp-1-A0MDYCDME-1-abc"
bot_token = "{TOKEN}"
api_base_url = "{api}"
incident_channel = "CINCIDENT"
[[people]]
name = "alice"
roles = ["sre-lead"]
slack = "UALICE"
[[people]]
name = "bob"
roles = ["oncall"]
slack = "UBOB"
[regions.us-east-1]
role = "primary"
[regions.us-west-2]
role = "secondary"
[[runbooks]]
name = "failover"
command = "failover"
request_roles = ["oncall"]
approve_roles = ["sre-lead"]
[[runbooks.steps]]
name = "Promote"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo promote >> {marker}"] }}
"#,
            db = d.join("drbot.db").display(),
            api = slack.base_url(),
            marker = d.join("marker").display(),
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn commands_and_clicks_over_socket_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slack = FakeSlack::start(TOKEN);
    let port = free_port();
    let cfg = write_config(d, port, &slack);
    let mut server = Server::start(&cfg, port, &d.join("serve.log"));
    // The HTTP endpoints are not served in Socket Mode.
    assert_eq!(http_post(port, "/slack/commands", "x=1", &[]).0, 404);

    slack.socket_send(slash_envelope(
        "env-1",
        "UBOB",
        "failover us-west-2",
        "trig-1",
        0,
    ));
    let a = ack(&slack, "env-1");
    assert!(
        a["payload"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Run 1 requested"),
        "{a}"
    );
    // Slack re-sends the envelope: acknowledged, not run again.
    slack.socket_send(slash_envelope(
        "env-2",
        "UBOB",
        "failover us-west-2",
        "trig-1",
        1,
    ));
    let a = ack(&slack, "env-2");
    assert!(a.get("payload").is_none(), "{a}");

    slack.wait(20, "the card", |s| {
        s.messages("C1").iter().any(|m| m.thread_ts.is_none())
    });
    let card = slack
        .messages("C1")
        .into_iter()
        .find(|m| m.thread_ts.is_none())
        .unwrap();
    slack.socket_send(click_envelope(
        "env-3",
        "UALICE",
        &card.ts,
        "approve:1:1",
        "trig-2",
    ));
    ack(&slack, "env-3");
    slack.wait(30, "done", |s| {
        s.messages("C1").iter().any(|m| {
            m.thread_ts.is_none()
                && m.blocks[0]["text"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Done")
        })
    });
    assert_eq!(lines(&d.join("marker")), ["promote"]);
    let o = drbot(&cfg, &["--json", "runs"]);
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "the re-sent command did not run twice"
    );

    // Slack asks to reconnect: drbot opens a new connection and keeps working.
    slack.socket_send(json!({ "type": "disconnect", "reason": "refresh_requested" }));
    slack.wait(20, "a second connection", |s| s.socket_connections() >= 2);
    slack.socket_send(slash_envelope("env-4", "UBOB", "status", "trig-3", 0));
    let a = ack(&slack, "env-4");
    assert!(
        a["payload"]["text"].as_str().unwrap().contains("Regions"),
        "{a}"
    );
    server.terminate(30);
}

/// Envelopes are handled side by side: one waiting for the store (here SQLite's write lock,
/// held by another process for 20 s) does not hold back the acknowledgement of the next, and
/// is itself acknowledged within Slack's 3 s ("working on it"); its answer follows through
/// its `response_url` once the store answers.
#[test]
fn a_slow_envelope_does_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slack = FakeSlack::start(TOKEN);
    let port = free_port();
    let cfg = write_config(d, port, &slack);
    let mut server = Server::start(&cfg, port, &d.join("serve.log"));
    let mut lock = hold_sqlite_lock(&d.join("drbot.db"), 20);
    let mut slow = slash_envelope("env-slow", "UBOB", "failover us-west-2", "trig-s", 0);
    slow["payload"]["response_url"] = json!(slack.response_url("trig-s"));
    let sent = std::time::Instant::now();
    slack.socket_send(slow);
    std::thread::sleep(std::time::Duration::from_millis(300));
    slack.socket_send(slash_envelope("env-fast", "UBOB", "help", "trig-f", 0));
    let a = ack(&slack, "env-fast");
    assert!(a["payload"]["text"].as_str().is_some(), "{a}");
    assert!(
        !slack
            .socket_received()
            .iter()
            .any(|m| m["envelope_id"] == "env-slow"),
        "the request waiting for the store was answered first"
    );
    let a = ack(&slack, "env-slow");
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(10),
        "acknowledged after {:?}, while the store was still locked",
        sent.elapsed()
    );
    assert!(
        a["payload"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Working on it"),
        "{a}"
    );
    assert!(slack.responses("trig-s").is_empty(), "not done yet");
    assert!(lock.wait().unwrap().success());
    slack.wait(60, "the late answer", |s| !s.responses("trig-s").is_empty());
    let late = slack.responses("trig-s");
    assert_eq!(late.len(), 1, "{late:?}");
    assert!(
        late[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Run 1 requested"),
        "{}",
        late[0]
    );
    assert!(server.terminate(30).success());
}

/// A command whose acknowledgement (which carries its answer) never reached Slack, because the
/// connection dropped: Slack re-sends it on the next connection. It is not run again, and its
/// first answer goes to the re-sent command's `response_url`, so the person still sees it.
#[test]
fn a_re_sent_command_gets_its_first_answer_without_running_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slack = FakeSlack::start(TOKEN);
    let port = free_port();
    let cfg = write_config(d, port, &slack);
    let mut server = Server::start(&cfg, port, &d.join("serve.log"));
    let mut first = slash_envelope("env-1", "UBOB", "failover us-west-2", "trig-1", 0);
    first["payload"]["response_url"] = json!(slack.response_url("trig-1"));
    slack.socket_send_and_drop(first.clone());
    slack.wait(20, "a second connection", |s| s.socket_connections() >= 2);
    let mut again = first;
    again["envelope_id"] = json!("env-2");
    again["retry_attempt"] = json!(1);
    again["retry_reason"] = json!("timeout");
    slack.socket_send(again);
    let a = ack(&slack, "env-2");
    assert!(a.get("payload").is_none(), "{a}");
    slack.wait(20, "the first answer", |s| {
        !s.responses("trig-1").is_empty()
    });
    let answers = slack.responses("trig-1");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(
        answers[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Run 1 requested"),
        "{}",
        answers[0]
    );
    assert!(
        !slack
            .socket_received()
            .iter()
            .any(|m| m["envelope_id"] == "env-1"),
        "the first acknowledgement was sent on the dropped connection"
    );
    let o = drbot(&cfg, &["--json", "runs"]);
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "run once: {runs}");
    assert!(server.terminate(30).success());
}
