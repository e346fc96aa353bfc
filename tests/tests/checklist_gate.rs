//! A runbook's checklist gate end to end through the real `drbot serve` and the loopback fakes
//! of Slack and Discord: a run of a runbook with `checklists` gets its checklist posted next to
//! its cards on both platforms; a read-only step with `ticks` ticks its item as drbot; the
//! approved run's gated step with `requires` does not run (its `exec` writes a file that stays
//! absent) until one item is ticked by a signed Slack click and the other by a signed Discord
//! click; then the gate is asked for, approved, and the step runs exactly once.

use drbot_e2e::{fake_discord::FakeDiscord, fake_slack::FakeSlack, *};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;

const SECRET: &str = "checklist-gate-signing-secret";
const CHANNEL: &str = "1210000000000000000";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[13u8; 32])
}

struct Env {
    _dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    promoted: std::path::PathBuf,
    slack: FakeSlack,
    discord: FakeDiscord,
    server: Server,
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slack = FakeSlack::start("xoxb-g");
    let discord = FakeDiscord::start("discord-bot-token");
    let port = free_port();
    let promoted = d.join("promoted");
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
poll_interval = "100ms"
[slack]
signing_secret = "{SECRET}"
bot_token = "xoxb-g"
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
[[people]]
name = "carol"
roles = ["sre-lead"]
slack = "UCAROL"
[regions.us-east-1]
role = "primary"
[regions.us-west-2]
role = "secondary"

[[runbooks]]
name = "failover"
command = "failover"
request_roles = ["oncall", "sre-lead"]
approve_roles = ["sre-lead"]
checklists = ["pre-failover"]

[[runbooks.steps]]
name = "look"
type = "exec"
with = {{ command = "true" }}
destructive = false
idempotent = true
ticks = ["pre-failover:document-state"]

[[runbooks.steps]]
name = "promote"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo promoted >> {promoted}"] }}
gate = true
requires = ["pre-failover:notify-ic", "pre-failover:activate-dr-team"]
"#,
            db = d.join("drbot.db").display(),
            slack_api = slack.base_url(),
            discord_api = discord.base_url(),
            public = hex::encode(key().verifying_key().to_bytes()),
            promoted = promoted.display(),
        ),
    )
    .unwrap();
    let server = Server::start(&cfg, port, &d.join("serve.log"));
    Env {
        _dir: dir,
        cfg,
        promoted,
        slack,
        discord,
        server,
    }
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
    let ts = unix_now();
    let headers = vec![
        ("X-Slack-Request-Timestamp", ts.to_string()),
        ("X-Slack-Signature", slack_signature(SECRET, ts, &body)),
    ];
    let (status, _) = http_post(env.server.port, "/slack/interactions", &body, &headers);
    assert_eq!(status, 200);
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
    let ts = unix_now();
    let sig = key().sign(format!("{ts}{body}").as_bytes());
    let headers = vec![
        ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
        ("X-Signature-Timestamp", ts.to_string()),
    ];
    let (status, resp) = http_post(env.server.port, "/discord/interactions", &body, &headers);
    assert_eq!(status, 200, "{resp}");
    serde_json::from_str(&resp).unwrap()
}

/// The Slack checklist message of the run in the incident channel.
fn slack_checklist(env: &Env) -> Option<drbot_e2e::fake_slack::Message> {
    env.slack
        .messages("CINCIDENT")
        .into_iter()
        .find(|m| m.thread_ts.is_none() && m.text.starts_with("Checklist Pre-Failover"))
}

/// The Discord checklist message of the run in the incident channel.
fn discord_checklist(env: &Env) -> Option<drbot_e2e::fake_discord::DMessage> {
    env.discord.messages(CHANNEL).into_iter().find(|m| {
        m.body["content"]
            .as_str()
            .is_some_and(|c| c.contains("Checklist: Pre-Failover"))
    })
}

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

fn detail(v: &Value) -> &str {
    v["run"]["detail"].as_str().unwrap_or("")
}

#[test]
fn the_gate_refuses_until_the_required_items_are_ticked_in_slack_and_discord() {
    let env = setup();
    let o = cmd(&env.cfg, "bob", "/dr failover us-west-2");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cmd(&env.cfg, "alice", "/dr approve 1");
    assert!(o.status.success(), "{}", stderr(&o));

    // Approved, yet the gated step waits for its checklist items; no gate is asked for.
    let v = wait_run(&env.cfg, 1, 30, "the checklist hold", |v| {
        state(v) == "needs_attention" && v["run"]["held_step"] == 1
    });
    assert!(
        detail(&v).contains("step 2 `promote` waits for checklist items to be ticked")
            && detail(&v).contains("`pre-failover:notify-ic`")
            && detail(&v).contains("`pre-failover:activate-dr-team`"),
        "{}",
        detail(&v)
    );
    assert!(!env.promoted.exists(), "a held step did not run");

    // The checklist is posted next to the run's card in Slack, with drbot's tick of the item
    // the read-only step ticked; the card says why the run waits.
    env.slack
        .wait(20, "the run's Slack checklist with drbot's tick", |_| {
            slack_checklist(&env).is_some_and(|m| m.blocks.to_string().contains("ticked by drbot"))
        });
    env.slack.wait(20, "the card naming the hold", |s| {
        s.messages("CINCIDENT").iter().any(|m| {
            m.text
                .starts_with("Waiting for checklist items: failover (run 1)")
        })
    });
    let m = slack_checklist(&env).unwrap();
    let value = |item: &str| {
        m.blocks
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["accessory"]["value"].as_str())
            .find(|v| v.ends_with(&format!(":{item}")))
            .unwrap()
            .to_string()
    };
    // bob ticks one item in Slack: the run is checked again and held for the other only.
    slack_click(
        &env,
        "UBOB",
        "CINCIDENT",
        &m.ts,
        &value("notify-ic"),
        "t-g1",
    );
    let v = wait_run(&env.cfg, 1, 30, "the hold for the last item", |v| {
        state(v) == "needs_attention"
            && detail(v).contains("activate-dr-team")
            && !detail(v).contains("notify-ic")
    });
    assert_eq!(v["run"]["held_step"], 1);
    assert!(!env.promoted.exists(), "still held");

    // Discord shows the same checklist with bob's Slack tick; alice ticks the last item there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let dm = loop {
        if let Some(dm) = discord_checklist(&env)
            && dm.body["content"]
                .as_str()
                .is_some_and(|c| c.contains("— bob") && c.contains("— drbot"))
        {
            break dm;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Discord checklist: {:?}",
            discord_checklist(&env).map(|m| m.body)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let activate = dm.body["components"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row["components"].as_array().unwrap().iter())
        .filter_map(|b| b["custom_id"].as_str())
        .find(|c| c.ends_with(":activate-dr-team"))
        .unwrap()
        .to_string();
    let r = discord_click(&env, "2001", &dm.id, &activate);
    assert_eq!(r["type"], 7, "{r}");

    // All ticked: now the gate is asked for, and only its approval runs the step, once.
    wait_run(&env.cfg, 1, 30, "the gate request", |v| {
        state(v) == "awaiting_gate"
    });
    assert!(!env.promoted.exists(), "the gate is not approved yet");
    let o = cmd(&env.cfg, "carol", "/dr approve 1");
    assert!(o.status.success(), "{}", stderr(&o));
    wait_run(&env.cfg, 1, 30, "the run's end", |v| {
        state(v) == "succeeded"
    });
    assert_eq!(lines(&env.promoted), ["promoted"], "ran exactly once");

    // The audit log: drbot's tick for the step, bob's from Slack, alice's from Discord.
    let ticks: Vec<(String, String, String)> = audit(&env, "checklist.tick")
        .iter()
        .map(|(r, d)| {
            (
                r["platform"].as_str().unwrap_or("").to_string(),
                r["account"].as_str().unwrap_or("").to_string(),
                d["item"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ticks,
        [
            ("system".into(), "drbot".into(), "document-state".into()),
            ("slack".into(), "UBOB".into(), "notify-ic".into()),
            ("discord".into(), "2001".into(), "activate-dr-team".into()),
        ]
    );
    assert_eq!(audit(&env, "run.held").len(), 2);
    assert_eq!(audit(&env, "run.requeued").len(), 2);
}
