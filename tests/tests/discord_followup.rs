//! Discord interaction-token discipline end to end, through the real binary and a loopback
//! fake of the Discord API: slow commands get a deferred response whose answer is edited in
//! through the interaction webhook, the requester gets a follow-up when the run ends, step
//! details are posted as replies to the card, expired tokens (or ones past
//! `discord.followup_window`) fall back to channel messages, an exhausted rate-limit bucket
//! is waited out, and slow button clicks are deferred, then answered.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use drbot_e2e::{fake_discord::FakeDiscord, *};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const CHANNEL: &str = "1200000000000000000";
const TOKEN: &str = "aW50ZXJhY3Rpb246MTE4MDAwMDAwMDAwMDAwMDAwMDp0ZXN0LXRva2Vu";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[11u8; 32])
}

fn setup(dir: &Path, port: u16, api: &str, followup_window: &str) -> PathBuf {
    let public = hex::encode(key().verifying_key().to_bytes());
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{db}"
[discord]
public_key = "{public}"
bot_token = "discord-bot-token"
application_id = "1160000000000000000"
api_base_url = "{api}"
incident_channel = "{CHANNEL}"
defer_after = "0s"
followup_window = "{followup_window}"
[[people]]
name = "alice"
roles = ["sre-lead"]
discord = "2001"
[[people]]
name = "bob"
roles = ["oncall"]
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
with = {{ command = "echo", args = ["promoted {{region}}"] }}
"#,
        db = dir.join("drbot.db").display()
    );
    let cfg = dir.join("drbot.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Sends `/dr <sub> <options>` as `user` with interaction `token`; returns the HTTP answer.
fn command(port: u16, user: &str, token: &str, id: &str, sub: &str, options: Value) -> Value {
    let body = fill(
        include_str!("../fixtures/discord/application_command.json"),
        &[
            ("channel_id", CHANNEL),
            ("user_id", user),
            ("interaction_id", id),
            (
                "options",
                &json!([{ "type": 1, "name": sub, "options": options }]).to_string(),
            ),
        ],
    )
    .replace(TOKEN, token);
    let ts = unix_now();
    let sig = key().sign(format!("{ts}{body}").as_bytes());
    let headers = vec![
        ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
        ("X-Signature-Timestamp", ts.to_string()),
    ];
    let (status, resp) = http_post(port, "/discord/interactions", &body, &headers);
    assert_eq!(status, 200, "{resp}");
    serde_json::from_str(&resp).unwrap()
}

fn deferred(v: &Value) {
    assert_eq!(v["type"], 5, "a deferred response: {v}");
    assert_eq!(v["data"]["flags"], 64, "ephemeral: {v}");
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn content(v: &Value) -> String {
    v["content"].as_str().unwrap_or("").to_string()
}

#[test]
fn deferred_answers_follow_ups_step_replies_and_expired_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start("discord-bot-token");
    let port = free_port();
    let cfg = setup(dir.path(), port, &fake.base_url(), "14m");
    let _server = Server::start(&cfg, port, &dir.path().join("serve.log"));

    // A deferred `/dr status`: its answer is edited into @original through the webhook, also
    // when Discord does not know @original yet at the first tries (it registers the deferred
    // response a moment after drbot sent it): never posted in the channel instead.
    fake.original_not_yet_known(2);
    deferred(&command(
        port,
        "2002",
        "tok-status",
        "1",
        "status",
        json!([]),
    ));
    let edit = wait_for("the deferred status answer", 30, || {
        fake.webhooks()
            .into_iter()
            .find(|w| w.token == "tok-status")
    });
    assert_eq!(edit.method, "PATCH");
    assert!(content(&edit.body).contains("us-west-2"), "{:?}", edit.body);
    assert_eq!(fake.refused_original(), 2);
    assert!(
        fake.messages(CHANNEL).is_empty(),
        "the private answer stayed private: {:?}",
        fake.messages(CHANNEL)
    );

    // bob requests a failover: the answer arrives the same way, the card in the channel.
    deferred(&command(
        port,
        "2002",
        "tok-request",
        "2",
        "failover",
        json!([{ "type": 3, "name": "region", "value": "us-west-2" }]),
    ));
    let edit = wait_for("the request's answer", 30, || {
        fake.webhooks()
            .into_iter()
            .find(|w| w.token == "tok-request")
    });
    assert!(
        content(&edit.body).starts_with("Run 1 requested"),
        "{:?}",
        edit.body
    );
    let card = wait_for("the approval card", 30, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| !m.body["embeds"].is_null())
    });

    // alice approves; the run succeeds; bob is told through a follow-up on his token.
    deferred(&command(
        port,
        "2001",
        "tok-approve",
        "3",
        "approve",
        json!([{ "type": 4, "name": "run", "value": 1 }]),
    ));
    let told = wait_for("the requester's follow-up", 20, || {
        fake.webhooks()
            .into_iter()
            .find(|w| w.token == "tok-request" && w.method == "POST")
    });
    assert_eq!(told.body["flags"], 64, "{:?}", told.body);
    assert!(
        content(&told.body).starts_with("Run 1 `failover` succeeded"),
        "{:?}",
        told.body
    );
    // Step details are a reply to the card, with the step's output.
    let detail = wait_for("the step detail reply", 30, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| m.body["message_reference"]["message_id"] == card.id.as_str())
    });
    let text = content(&detail.body);
    assert!(
        text.starts_with("Step 1. **Promote** succeeded") && text.contains("promoted us-west-2"),
        "{text}"
    );
    // The card itself ends "Done".
    wait_for("the card to show Done", 30, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| m.id == card.id)
            .filter(|m| {
                m.body["embeds"][0]["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Done"))
            })
    });
    // Each follow-up went out once.
    let follow_ups = fake
        .webhooks()
        .iter()
        .filter(|w| w.token == "tok-request" && w.method == "POST")
        .count();
    assert_eq!(follow_ups, 1);

    // A token Discord no longer honours: the answer goes to the channel, mentioning the user.
    deferred(&command(
        port,
        "2002",
        "expired-token",
        "4",
        "status",
        json!([]),
    ));
    let msg = wait_for("the channel fallback", 30, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| content(&m.body).starts_with("<@2002>"))
    });
    assert!(content(&msg.body).contains("us-west-2"), "{:?}", msg.body);
    assert_eq!(msg.body["allowed_mentions"]["users"], json!(["2002"]));
    assert!(
        !fake.webhooks().iter().any(|w| w.token == "expired-token"),
        "the fake refused the expired token"
    );

    // Webhooks failing however often drbot tries: the answer goes to the channel too.
    deferred(&command(
        port,
        "2003",
        "broken-token",
        "7",
        "status",
        json!([]),
    ));
    let msg = wait_for("the channel fallback after failed webhooks", 20, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| content(&m.body).starts_with("<@2003>"))
    });
    assert!(content(&msg.body).contains("us-west-2"), "{:?}", msg.body);

    // Two channel posts back to back, the first finding its bucket exhausted for 0.6 s:
    // drbot waits the reset out before the second.
    let exhausted_at = fake.posts();
    fake.exhaust_bucket_next(0.6);
    deferred(&command(
        port,
        "2002",
        "expired-a",
        "5",
        "status",
        json!([]),
    ));
    deferred(&command(
        port,
        "2002",
        "expired-b",
        "6",
        "status",
        json!([]),
    ));
    let times = wait_for("two more channel posts", 30, || {
        let t = fake.post_times();
        (t.len() >= exhausted_at + 2).then_some(t)
    });
    let gap = times[exhausted_at + 1] - times[exhausted_at];
    assert!(
        gap >= Duration::from_millis(550),
        "the post after an exhausted bucket came {gap:?} later, before the reset"
    );

    // The interaction tokens never reach the log.
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(
        !log.contains("tok-request")
            && !log.contains("expired-token")
            && !log.contains("broken-token")
    );
}

#[test]
fn past_the_followup_window_answers_go_to_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start("discord-bot-token");
    let port = free_port();
    let cfg = setup(dir.path(), port, &fake.base_url(), "0s");
    let _server = Server::start(&cfg, port, &dir.path().join("serve.log"));

    deferred(&command(
        port,
        "2002",
        "tok-late",
        "1",
        "failover",
        json!([{ "type": 3, "name": "region", "value": "us-west-2" }]),
    ));
    wait_for("the request's answer in the channel", 30, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| content(&m.body).starts_with("<@2002> Run 1 requested"))
    });
    deferred(&command(
        port,
        "2001",
        "tok-late-2",
        "2",
        "approve",
        json!([{ "type": 4, "name": "run", "value": 1 }]),
    ));
    wait_for("the outcome in the channel", 20, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| content(&m.body).starts_with("<@2002> Run 1 `failover` succeeded"))
    });
    assert!(
        fake.webhooks().is_empty(),
        "no webhook call after the window: {:?}",
        fake.webhooks()
    );
}

/// Sends a click on `message` as `user` with interaction `token`; returns the HTTP answer.
fn click(port: u16, user: &str, token: &str, message: &str, custom_id: &str) -> Value {
    let body = fill(
        include_str!("../fixtures/discord/message_component.json"),
        &[
            ("channel_id", CHANNEL),
            ("custom_id", custom_id),
            ("interaction_id", token),
            ("user_id", user),
            ("message_id", message),
        ],
    )
    .replace("aW50ZXJhY3Rpb246Y29tcG9uZW50", token);
    let ts = unix_now();
    let sig = key().sign(format!("{ts}{body}").as_bytes());
    let headers = vec![
        ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
        ("X-Signature-Timestamp", ts.to_string()),
    ];
    let (status, resp) = http_post(port, "/discord/interactions", &body, &headers);
    assert_eq!(status, 200, "{resp}");
    serde_json::from_str(&resp).unwrap()
}

/// A click not handled within `defer_after` (here: every click) is acknowledged at once with
/// DEFERRED_UPDATE_MESSAGE, as Discord drops answers after 3 s; a refusal then reaches the
/// clicker alone as an ephemeral follow-up, and an approval edits the clicked card in place.
#[test]
fn slow_clicks_are_deferred_then_answered() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDiscord::start("discord-bot-token");
    let port = free_port();
    let cfg = setup(dir.path(), port, &fake.base_url(), "14m");
    let _server = Server::start(&cfg, port, &dir.path().join("serve.log"));
    deferred(&command(
        port,
        "2002",
        "tok-request",
        "1",
        "failover",
        json!([{ "type": 3, "name": "region", "value": "us-west-2" }]),
    ));
    let card = wait_for("the approval card", 30, || {
        fake.messages(CHANNEL)
            .into_iter()
            .find(|m| !m.body["embeds"].is_null())
    });
    let approve = card.body["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(approve.starts_with("approve:"), "{approve}");

    // bob requested it: his click is refused, privately, after the deferral.
    let v = click(port, "2002", "tok-click-bob", &card.id, &approve);
    assert_eq!(v["type"], 6, "{v}");
    let told = wait_for("the refusal", 20, || {
        fake.webhooks()
            .into_iter()
            .find(|w| w.token == "tok-click-bob")
    });
    assert_eq!(told.method, "POST");
    assert_eq!(told.body["flags"], 64, "{:?}", told.body);
    assert!(
        content(&told.body).contains("a second person must"),
        "{:?}",
        told.body
    );

    // alice approves: the clicked card is edited through the click's webhook.
    let v = click(port, "2001", "tok-click-alice", &card.id, &approve);
    assert_eq!(v["type"], 6, "{v}");
    let edit = wait_for("the card edit", 20, || {
        fake.webhooks()
            .into_iter()
            .find(|w| w.token == "tok-click-alice")
    });
    assert_eq!(edit.method, "PATCH");
    assert!(
        edit.body["embeds"][0]["title"]
            .as_str()
            .is_some_and(|t| !t.starts_with("Approval needed")),
        "{:?}",
        edit.body
    );
}
