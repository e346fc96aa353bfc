//! Interactive checklists end to end through the real `drbot serve` and loopback fakes of the
//! Slack and Discord APIs: `/dr checklist` lists them, `/dr checklist <name>` posts one with a
//! button per item, clicks toggle items and update the message in place, the audit log holds
//! each tick with who, and clicks by unknown accounts or on a message of another checklist are
//! refused. A 27-item config checklist spans two Discord messages (25 buttons per message).

use drbot_e2e::{fake_discord::FakeDiscord, fake_slack::FakeSlack, *};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const SECRET: &str = "checklist-signing-secret";
const CHANNEL: &str = "1200000000000000000";

struct Env {
    _dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    slack: FakeSlack,
    discord: FakeDiscord,
    server: Server,
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[11u8; 32])
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slack = FakeSlack::start("xoxb-c");
    let discord = FakeDiscord::start("discord-bot-token");
    let port = free_port();
    let mut long =
        String::from("[[checklists]]\nname = \"game-day\"\ntitle = \"Game day\"\nitems = [\n");
    for i in 1..=27 {
        long.push_str(&format!(
            "  {{ id = \"g{i}\", text = \"Game day step {i}\" }},\n"
        ));
    }
    long.push_str("]\n");
    let cfg = d.join("drbot.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{db}"
[slack]
signing_secret = "{SECRET}"
bot_token = "xoxb-c"
api_base_url = "{slack_api}"
incident_channel = "CINCIDENT"
[discord]
public_key = "{public}"
bot_token = "discord-bot-token"
application_id = "1160000000000000000"
api_base_url = "{discord_api}"
incident_channel = "{CHANNEL}"
[[people]]
name = "alice"
roles = ["sre-lead"]
slack = "UALICE"
discord = "2001"
[[people]]
name = "bob"
roles = ["oncall"]
slack = "UBOB"
discord = "2002"
[regions.us-east-1]
role = "primary"
[regions.us-west-2]
role = "secondary"

[[checklists]]
name = "post-failover"
title = "After the failover (ours)"
items = [{{ id = "smoke", text = "Run our smoke tests" }}]

{long}
"#,
            db = d.join("drbot.db").display(),
            slack_api = slack.base_url(),
            discord_api = discord.base_url(),
            public = hex::encode(key().verifying_key().to_bytes()),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, port, &d.join("serve.log"));
    Env {
        _dir: dir,
        cfg,
        slack,
        discord,
        server,
    }
}

fn slack_signed(body: &str) -> Vec<(&'static str, String)> {
    let ts = unix_now();
    vec![
        ("X-Slack-Request-Timestamp", ts.to_string()),
        ("X-Slack-Signature", slack_signature(SECRET, ts, body)),
    ]
}

fn slash(env: &Env, user: &str, channel: &str, text: &str, trigger: &str) -> String {
    let body = fill(
        include_str!("../fixtures/slack/slash_command.form").trim(),
        &[
            ("channel_id", channel),
            ("user_id", user),
            ("user_name", "someone"),
            ("text", &form_value(text)),
            (
                "response_url",
                &form_value(&env.slack.response_url(trigger)),
            ),
            ("trigger_id", trigger),
        ],
    );
    let (status, resp) = http_post(
        env.server.port,
        "/slack/commands",
        &body,
        &slack_signed(&body),
    );
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    v["text"].as_str().unwrap_or("").to_string()
}

fn slack_click(env: &Env, user: &str, channel: &str, ts: &str, value: &str, trigger: &str) {
    let payload = fill(
        include_str!("../fixtures/slack/block_actions.json"),
        &[
            ("user_id", user),
            ("user_name", "someone"),
            ("message_ts", ts),
            ("channel_id", channel),
            ("trigger_id", trigger),
            ("response_url", &env.slack.response_url(trigger)),
            ("action_id", "tick"),
            ("value", value),
            ("action_ts", &format!("{}.000100", unix_now())),
        ],
    );
    let body = format!("payload={}", form_value(&payload));
    let (status, _) = http_post(
        env.server.port,
        "/slack/interactions",
        &body,
        &slack_signed(&body),
    );
    assert_eq!(status, 200);
}

/// drbot's top-level messages in `channel`, oldest first.
fn slack_messages(env: &Env, channel: &str) -> Vec<drbot_e2e::fake_slack::Message> {
    env.slack
        .messages(channel)
        .into_iter()
        .filter(|m| m.thread_ts.is_none())
        .collect()
}

/// The tick button values of a Slack checklist message, in order.
fn slack_buttons(blocks: &Value) -> Vec<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["accessory"]["value"].as_str().map(str::to_string))
        .collect()
}

fn ephemeral(env: &Env, trigger: &str) -> String {
    env.slack.wait(10, "an ephemeral reply", |s| {
        !s.responses(trigger).is_empty()
    });
    env.slack.responses(trigger)[0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Audit rows with `action`, oldest first, with their detail parsed.
fn audit(env: &Env, action: &str) -> Vec<(Value, Value)> {
    let o = drbot(&env.cfg, &["--json", "audit", "--limit", "1000"]);
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut out: Vec<(Value, Value)> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .map(|r| {
            let d = match &r["detail"] {
                Value::String(s) => serde_json::from_str(s).unwrap(),
                v => v.clone(),
            };
            (r.clone(), d)
        })
        .collect();
    out.sort_by_key(|(r, _)| r["seq"].as_i64());
    out
}

#[test]
fn slack_checklist_round_trip() {
    let env = setup();
    // Listing: the config entry replaces the built-in post-failover; the others are built in.
    let list = slash(&env, "UALICE", "C1", "checklist", "t-list");
    for name in [
        "pre-failover",
        "during-failover",
        "recovery-to-primary",
        "game-day",
    ] {
        assert!(list.contains(&format!("`{name}`")), "{list}");
    }
    assert!(
        list.contains("After the failover (ours)") && !list.contains("Post-Failover"),
        "{list}"
    );

    let answer = slash(&env, "UALICE", "C1", "checklist pre-failover", "t-post");
    assert!(
        answer.contains("Posted checklist *Pre-Failover* (4 items)"),
        "{answer}"
    );
    env.slack.wait(10, "the checklist message", |s| {
        !s.messages("C1").is_empty()
    });
    let m = slack_messages(&env, "C1").remove(0);
    let buttons = slack_buttons(&m.blocks);
    assert_eq!(buttons.len(), 4, "{}", m.blocks);
    assert!(
        buttons[1].starts_with("tick:") && buttons[1].ends_with(":notify-ic"),
        "{buttons:?}"
    );
    assert!(
        m.blocks
            .to_string()
            .contains("Verify primary region is unrecoverable")
    );

    // bob ticks "Notify incident commander": the message is updated in place.
    slack_click(&env, "UBOB", "C1", &m.ts, &buttons[1], "t-c1");
    env.slack.wait(10, "the ticked message", |s| {
        s.messages("C1")[0]
            .blocks
            .to_string()
            .contains("ticked by bob")
    });
    let after = slack_messages(&env, "C1");
    assert_eq!(after.len(), 1, "updated in place, not reposted");
    assert_eq!(after[0].ts, m.ts);
    assert!(after[0].text.contains("1/4 done"), "{}", after[0].text);
    // alice ticks another; bob unticks his.
    slack_click(&env, "UALICE", "C1", &m.ts, &buttons[3], "t-c2");
    env.slack.wait(10, "alice's tick", |s| {
        s.messages("C1")[0]
            .blocks
            .to_string()
            .contains("ticked by alice")
    });
    slack_click(&env, "UBOB", "C1", &m.ts, &buttons[1], "t-c3");
    env.slack.wait(10, "bob's untick", |s| {
        !s.messages("C1")[0]
            .blocks
            .to_string()
            .contains("ticked by bob")
    });

    // An account drbot does not know cannot tick.
    slack_click(&env, "UEVE", "C1", &m.ts, &buttons[0], "t-c4");
    let note = ephemeral(&env, "t-c4");
    assert!(note.contains("not in drbot's [[people]] list"), "{note}");
    // A button value naming this checklist, clicked on another checklist's message: refused.
    slash(&env, "UBOB", "C1", "checklist during-failover", "t-post2");
    env.slack
        .wait(10, "the second checklist", |s| s.messages("C1").len() == 2);
    let other = slack_messages(&env, "C1").remove(1);
    slack_click(&env, "UALICE", "C1", &other.ts, &buttons[0], "t-c5");
    let note = ephemeral(&env, "t-c5");
    assert!(note.contains("does not belong to this card"), "{note}");
    // A value naming an item the checklist lacks: refused.
    let bogus = format!("{}:nope", buttons[0].rsplit_once(':').unwrap().0);
    slack_click(&env, "UALICE", "C1", &m.ts, &bogus, "t-c6");
    assert!(ephemeral(&env, "t-c6").contains("no item `nope`"));
    let first = &slack_messages(&env, "C1")[0];
    let text = first.blocks.to_string();
    assert!(
        text.contains("ticked by alice") && first.text.contains("1/4 done"),
        "{text}"
    );

    // The audit log: three ticks with who and whether ticked, in order; three refusals.
    let ticks = audit(&env, "checklist.tick");
    let got: Vec<(String, String, bool)> = ticks
        .iter()
        .map(|(r, d)| {
            assert!(r["at"].as_i64().unwrap() > 0);
            assert_eq!(r["platform"], "slack");
            (
                r["person"].as_str().unwrap().to_string(),
                d["item"].as_str().unwrap().to_string(),
                d["ticked"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("bob".into(), "notify-ic".into(), true),
            ("alice".into(), "document-state".into(), true),
            ("bob".into(), "notify-ic".into(), false),
        ]
    );
    assert_eq!(ticks[0].1["checklist"], "pre-failover");
    let refused = audit(&env, "checklist.tick_refused");
    let kinds: Vec<&str> = refused
        .iter()
        .map(|(_, d)| d["refusal"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "unknown_account",
            "foreign_button",
            "unknown_checklist_item"
        ]
    );
    assert_eq!(refused[0].0["account"], "UEVE");
}

fn discord_post(env: &Env, body: &str) -> Value {
    let ts = unix_now();
    let sig = key().sign(format!("{ts}{body}").as_bytes());
    let headers = vec![
        ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
        ("X-Signature-Timestamp", ts.to_string()),
    ];
    let (status, resp) = http_post(env.server.port, "/discord/interactions", body, &headers);
    assert_eq!(status, 200, "{resp}");
    serde_json::from_str(&resp).unwrap()
}

fn discord_command(env: &Env, user: &str, name: Option<&str>) -> String {
    let options = match name {
        Some(n) => {
            json!([{ "type": 1, "name": "checklist", "options": [{ "type": 3, "name": "name", "value": n }] }])
        }
        None => json!([{ "type": 1, "name": "checklist", "options": [] }]),
    };
    let body = fill(
        include_str!("../fixtures/discord/application_command.json"),
        &[
            ("channel_id", CHANNEL),
            ("user_id", user),
            ("interaction_id", "1180000000000000002"),
            ("options", &options.to_string()),
        ],
    );
    let seen = env.discord.webhooks().len();
    let v = discord_post(env, &body);
    env.discord.answer_text(&v, seen)
}

fn discord_click(env: &Env, user: &str, message: &str, custom_id: &str) -> Value {
    let body = fill(
        include_str!("../fixtures/discord/message_component.json"),
        &[
            ("channel_id", CHANNEL),
            ("custom_id", custom_id),
            ("interaction_id", "1"),
            ("user_id", user),
            ("message_id", message),
        ],
    );
    discord_post(env, &body)
}

/// The custom_ids of a Discord message body's buttons, row by row.
fn discord_buttons(body: &Value) -> Vec<Vec<String>> {
    body["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row["components"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["custom_id"].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn discord_checklist_round_trip() {
    let env = setup();
    let list = discord_command(&env, "2001", None);
    assert!(list.contains("`game-day` Game day (27 items)"), "{list}");

    // 27 items: two messages, the first with 5 rows of 5 buttons, the second with 2 buttons.
    let answer = discord_command(&env, "2001", Some("game-day"));
    assert!(
        answer.contains("Posted checklist **Game day** (27 items)"),
        "{answer}"
    );
    let msgs = env.discord.messages(CHANNEL);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let (one, two) = (&msgs[0], &msgs[1]);
    let rows = discord_buttons(&one.body);
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.len() == 5));
    assert_eq!(
        discord_buttons(&two.body),
        [vec![
            rows[0][0].replace(":g1", ":g26"),
            rows[0][0].replace(":g1", ":g27"),
        ]]
    );
    assert!(two.body["content"].as_str().unwrap().contains("part 2/2"));

    // bob ticks item 26 on the second message: the answer updates that message, and the
    // first message's count is edited too.
    let tick26 = discord_buttons(&two.body)[0][0].clone();
    let v = discord_click(&env, "2002", &two.id, &tick26);
    assert_eq!(v["type"], 7, "{v}");
    assert_eq!(v["data"]["components"][0]["components"][0]["style"], 3);
    let content = v["data"]["content"].as_str().unwrap();
    assert!(
        content.contains("1/27 done") && content.contains("~~Game day step 26~~ — bob"),
        "{content}"
    );
    let first_edited = || {
        env.discord.messages(CHANNEL)[0].body["content"]
            .as_str()
            .unwrap_or("")
            .contains("1/27 done")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !first_edited() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(first_edited(), "the first message shows the new count");

    // Unknown account: refused ephemerally, nothing ticked.
    let v = discord_click(&env, "9999", &one.id, &rows[0][1]);
    assert_eq!(v["data"]["flags"], 64);
    assert!(
        v["data"]["content"]
            .as_str()
            .unwrap()
            .contains("not in drbot's [[people]] list")
    );
    // A value naming this checklist, clicked on another checklist's message: refused.
    discord_command(&env, "2002", Some("pre-failover"));
    let other = env.discord.messages(CHANNEL)[2].clone();
    assert!(
        other.body["content"]
            .as_str()
            .unwrap()
            .contains("Pre-Failover")
    );
    let v = discord_click(&env, "2001", &other.id, &rows[0][1]);
    assert!(
        v["data"]["content"]
            .as_str()
            .unwrap()
            .contains("does not belong"),
        "{v}"
    );
    // alice ticks item 2 on the first message.
    let v = discord_click(&env, "2001", &one.id, &rows[0][1]);
    assert_eq!(v["type"], 7, "{v}");
    assert!(v["data"]["content"].as_str().unwrap().contains("2/27 done"));

    let ticks = audit(&env, "checklist.tick");
    let got: Vec<(String, String)> = ticks
        .iter()
        .map(|(r, d)| {
            assert_eq!(r["platform"], "discord");
            assert_eq!(d["ticked"], true);
            (
                r["person"].as_str().unwrap().to_string(),
                d["item"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("bob".into(), "g26".into()), ("alice".into(), "g2".into())]
    );
    assert_eq!(audit(&env, "checklist.tick_refused").len(), 2);
}
