//! Cross-platform approvals through the real binary: requested in Slack, approved by clicking
//! the card in Discord (where the same human's other account is still the requester), and both
//! platforms' cards end in the same state. Fakes of both APIs record what drbot sent.

use drbot_e2e::{fake_discord::FakeDiscord, fake_slack::FakeSlack, *};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::Value;

const SECRET: &str = "cross-platform-signing-secret";
const CHANNEL: &str = "1200000000000000000";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn discord_post(port: u16, body: &str) -> (u16, Value) {
    let ts = unix_now();
    let sig = key().sign(format!("{ts}{body}").as_bytes());
    let headers = vec![
        ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
        ("X-Signature-Timestamp", ts.to_string()),
    ];
    let (status, resp) = http_post(port, "/discord/interactions", body, &headers);
    (status, serde_json::from_str(&resp).unwrap_or(Value::Null))
}

fn click(port: u16, user: &str, message: &str, custom_id: &str) -> (u16, Value) {
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
    discord_post(port, &body)
}

/// drbot's cards in `channel` (messages with an embed), oldest first.
fn cards(discord: &FakeDiscord, channel: &str) -> Vec<drbot_e2e::fake_discord::DMessage> {
    discord
        .messages(channel)
        .into_iter()
        .filter(|m| !m.body["embeds"].is_null())
        .collect()
}

fn title(body: &Value) -> String {
    body["embeds"][0]["title"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn requested_in_slack_approved_in_discord() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let slack = FakeSlack::start("xoxb-x");
    let discord = FakeDiscord::start("discord-bot-token");
    let port = free_port();
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
signing_secret = "{SECRET}"
bot_token = "xoxb-x"
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
roles = ["oncall", "sre-lead"]
slack = "UBOB"
discord = "2002"
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
            slack_api = slack.base_url(),
            discord_api = discord.base_url(),
            public = hex::encode(key().verifying_key().to_bytes()),
            marker = d.join("marker").display(),
        ),
    )
    .unwrap();
    discord.rate_limit_next();
    let server = Server::start(&cfg, port, &d.join("serve.log"));

    // bob asks in Slack.
    let body = fill(
        include_str!("../fixtures/slack/slash_command.form").trim(),
        &[
            ("channel_id", "C1"),
            ("user_id", "UBOB"),
            ("user_name", "bob"),
            ("text", &form_value("failover us-west-2")),
            ("response_url", &form_value("http://127.0.0.1:9/r")),
            ("trigger_id", "trig-x"),
        ],
    );
    let ts = unix_now();
    let headers = vec![
        ("X-Slack-Request-Timestamp", ts.to_string()),
        ("X-Slack-Signature", slack_signature(SECRET, ts, &body)),
    ];
    assert_eq!(
        http_post(server.port, "/slack/commands", &body, &headers).0,
        200
    );

    // The approval card shows up in Discord too (after a 429 that drbot waited out).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while discord.messages(CHANNEL).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no Discord card");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let card = discord.messages(CHANNEL)[0].clone();
    assert!(
        title(&card.body).starts_with("Approval needed: failover (run 1)"),
        "{}",
        card.body
    );
    assert_eq!(
        card.body["components"][0]["components"][0]["custom_id"],
        "approve:1:1"
    );
    assert!(discord.posts() >= 2, "the rate-limited post was retried");

    // bob's Discord account is still bob: refused, ephemerally.
    let (status, v) = click(server.port, "2002", &card.id, "approve:1:1");
    assert_eq!(status, 200);
    assert_eq!(v["type"], 4);
    assert_eq!(v["data"]["flags"], 64);
    assert!(
        v["data"]["content"]
            .as_str()
            .unwrap()
            .contains("cannot approve"),
        "{v}"
    );
    // A button naming another run than its card: refused.
    let (_, v) = click(server.port, "2001", &card.id, "approve:2:1");
    assert!(
        v["data"]["content"]
            .as_str()
            .unwrap()
            .contains("does not belong to this card"),
        "{v}"
    );
    // alice approves in Discord: the card is updated in place.
    let (_, v) = click(server.port, "2001", &card.id, "approve:1:1");
    assert_eq!(v["type"], 7, "{v}");
    assert!(
        v["data"]["embeds"][0]["fields"]
            .to_string()
            .contains("approved by alice"),
        "{v}"
    );

    // Both platforms' cards end in the same state.
    slack.wait(30, "Slack card done", |s| {
        s.messages("C1").iter().any(|m| {
            m.thread_ts.is_none()
                && m.blocks[0]["text"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Done")
        })
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !title(&discord.messages(CHANNEL)[0].body).starts_with("Done") {
        assert!(
            std::time::Instant::now() < deadline,
            "Discord card not done: {}",
            discord.messages(CHANNEL)[0].body
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        cards(&discord, CHANNEL).len(),
        1,
        "one Discord card, edited in place"
    );
    // The step's details are a reply to that card.
    let card_id = cards(&discord, CHANNEL)[0].id.clone();
    assert!(
        discord
            .messages(CHANNEL)
            .iter()
            .any(|m| m.body["message_reference"]["message_id"] == card_id.as_str()),
        "step details replied to the card"
    );
    assert_eq!(lines(&d.join("marker")), ["promote"]);

    // Requested in Discord from another channel: the card goes there and to the incident
    // channel (and to Slack's incident channel).
    let options = serde_json::json!([{ "type": 1, "name": "failover", "options": [{ "type": 3, "name": "region", "value": "us-east-1" }] }]);
    let body = fill(
        include_str!("../fixtures/discord/application_command.json"),
        &[
            ("channel_id", "1210000000000000000"),
            ("user_id", "2002"),
            ("interaction_id", "5"),
            ("options", &options.to_string()),
        ],
    );
    let seen = discord.webhooks().len();
    let (_, v) = discord_post(server.port, &body);
    let text = discord.answer_text(&v, seen);
    assert!(text.starts_with("Run 2 requested"), "{text}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cards(&discord, "1210000000000000000").is_empty() || cards(&discord, CHANNEL).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "Discord cards for run 2 missing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(title(&discord.messages("1210000000000000000")[0].body).contains("(run 2)"));
    slack.wait(20, "Slack incident card for run 2", |s| {
        s.messages("CINCIDENT").iter().any(|m| {
            m.blocks[0]["text"]["text"]
                .as_str()
                .unwrap_or("")
                .contains("(run 2)")
        })
    });
}
