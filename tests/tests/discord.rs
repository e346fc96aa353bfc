//! The Discord front-end end to end: the real `drbot serve` receiving interactions signed with
//! a test Ed25519 key pair (payloads shaped as Discord documents them, in
//! `tests/fixtures/discord/`), and `drbot discord register` against a loopback fake of the
//! Discord API that records what it got.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use drbot_e2e::{fake_discord::FakeDiscord, *};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};

const COMMAND: &str = include_str!("../fixtures/discord/application_command.json");
const PING: &str = include_str!("../fixtures/discord/ping.json");

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn setup(dir: &Path, port: u16, api: &str) -> PathBuf {
    let public = hex::encode(key().verifying_key().to_bytes());
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[store]
url = "sqlite://{db}"
[discord]
public_key = "{public}"
bot_token = "test-bot-token"
application_id = "1160000000000000000"
api_base_url = "{api}"
incident_channel = "1200000000000000000"
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
with = {{ command = "true" }}
"#,
        db = dir.join("drbot.db").display()
    );
    let cfg = dir.join("drbot.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn signed(body: &str, ts: i64) -> Vec<(&'static str, String)> {
    let sig = key().sign(format!("{ts}{body}").as_bytes());
    vec![
        ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
        ("X-Signature-Timestamp", ts.to_string()),
        ("Content-Type", "application/json".into()),
    ]
}

fn command(user: &str, options: Value) -> String {
    fill(
        COMMAND,
        &[
            ("channel_id", "1200000000000000000"),
            ("user_id", user),
            ("interaction_id", "1180000000000000002"),
            ("options", &options.to_string()),
        ],
    )
}

fn post(port: u16, body: &str) -> (u16, Value) {
    let (status, resp) = http_post(
        port,
        "/discord/interactions",
        body,
        &signed(body, unix_now()),
    );
    (status, serde_json::from_str(&resp).unwrap_or(Value::Null))
}

fn sub(name: &str, options: Value) -> Value {
    json!([{ "type": 1, "name": name, "options": options }])
}

/// Posts a signed command; the text of its ephemeral answer (at once, or deferred on a slow
/// machine and then sent as an edit of `@original`).
fn ask(fake: &FakeDiscord, port: u16, body: &str) -> String {
    let seen = fake.webhooks().len();
    let (status, v) = post(port, body);
    assert_eq!(status, 200, "{v}");
    fake.answer_text(&v, seen)
}

#[test]
fn interactions_are_verified_and_commands_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let fake = FakeDiscord::start("test-bot-token");
    let cfg = setup(dir.path(), port, &fake.base_url());
    let _server = Server::start(&cfg, port, &dir.path().join("serve.log"));

    // Discord probes with bad signatures: they must get 401.
    assert_eq!(http_post(port, "/discord/interactions", PING, &[]).0, 401);
    let mut forged = signed(PING, unix_now());
    forged[0].1 = hex::encode([0u8; 64]);
    assert_eq!(
        http_post(port, "/discord/interactions", PING, &forged).0,
        401
    );
    let tampered = PING.replace("\"type\":1", "\"type\":2");
    assert_eq!(
        http_post(
            port,
            "/discord/interactions",
            &tampered,
            &signed(PING, unix_now())
        )
        .0,
        401
    );
    assert_eq!(
        http_post(
            port,
            "/discord/interactions",
            PING,
            &signed(PING, unix_now() - 600)
        )
        .0,
        401
    );
    let headers = signed(PING, unix_now());
    let (status, body) = http_post(port, "/discord/interactions", PING, &headers);
    assert_eq!((status, body.trim()), (200, r#"{"type":1}"#));
    // The same signed request again (a replay, even within the window): 401, not handled.
    assert_eq!(
        http_post(port, "/discord/interactions", PING, &headers).0,
        401
    );

    // bob requests a failover; options map to the shared grammar.
    let failover = sub(
        "failover",
        json!([{ "type": 3, "name": "region", "value": "us-west-2" }]),
    );
    let text = ask(&fake, port, &command("2002", failover.clone()));
    assert!(text.starts_with("Run 1 requested"), "{text}");
    // bob cannot approve his own request; alice can.
    let approve = sub("approve", json!([{ "type": 4, "name": "run", "value": 1 }]));
    assert!(ask(&fake, port, &command("2002", approve.clone())).contains("cannot approve"));
    // An account drbot does not know: read-only only.
    assert!(
        ask(&fake, port, &command("9999", approve.clone()))
            .contains("not in drbot's [[people]] list")
    );
    assert!(ask(&fake, port, &command("9999", sub("status", json!([])))).contains("us-west-2"));
    assert!(ask(&fake, port, &command("2001", approve)).starts_with("Approved: run 1 goes ahead"));
    // A region Discord offered from an older registration: the grammar names the problem.
    let stale = sub(
        "failover",
        json!([{ "type": 3, "name": "region", "value": "eu-central-1" }]),
    );
    let text = ask(&fake, port, &command("2002", stale));
    assert!(
        text.contains("Unknown region `eu-central-1`")
            && text.contains("Usage: /dr failover <region> [--dry-run]"),
        "{text}"
    );
    let dry = sub(
        "failover",
        json!([{ "type": 3, "name": "region", "value": "us-west-2" }, { "type": 5, "name": "dry_run", "value": true }]),
    );
    assert!(ask(&fake, port, &command("2002", dry)).contains("queued (no approval needed)"));
    // Garbage that is correctly signed: a clear answer, no panic.
    assert_eq!(post(port, "{not json").0, 400);
    let o = drbot(&cfg, &["--json", "audit", "--limit", "100"]);
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["platform"] == "discord" && r["person"] == "alice")
    );
}

#[derive(Default, Clone)]
struct Recorded(Arc<Mutex<Vec<(String, String, Value)>>>);

fn fake_discord(rec: Recorded) -> u16 {
    use axum::{
        Json, Router,
        extract::{Path as AxPath, State},
        http::HeaderMap,
        routing::put,
    };
    async fn put_commands(
        State(rec): State<Recorded>,
        AxPath(rest): AxPath<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        rec.0.lock().unwrap().push((rest, auth, body.clone()));
        Json(body)
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/api/v10/applications/{*rest}", put(put_commands))
                .with_state(rec);
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app)
                .await
                .unwrap();
        });
    });
    port
}

#[test]
fn register_puts_the_dr_command() {
    let rec = Recorded::default();
    let api_port = fake_discord(rec.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(
        dir.path(),
        free_port(),
        &format!("http://127.0.0.1:{api_port}/api/v10"),
    );
    // A guild is a snowflake: anything else never reaches a URL the bot token is sent to.
    for bad in ["../../../../x", "1?a=b", ""] {
        let o = drbot(&cfg, &["discord", "register", "--guild", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("--guild"), "{}", stderr(&o));
    }
    let o = drbot(
        &cfg,
        &["discord", "register", "--guild", "1150000000000000000"],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("registered /dr in guild"));
    let calls = rec.0.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let (path, auth, body) = &calls[0];
    assert_eq!(
        path,
        "1160000000000000000/guilds/1150000000000000000/commands"
    );
    assert_eq!(auth, "Bot test-bot-token");
    let dr = &body[0];
    assert_eq!(dr["name"], "dr");
    let failover = dr["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "failover")
        .unwrap();
    let region = &failover["options"][0];
    assert_eq!(region["required"], true);
    assert_eq!(
        region["choices"],
        json!([{ "name": "us-east-1", "value": "us-east-1" }, { "name": "us-west-2", "value": "us-west-2" }])
    );
    let incident = dr["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "incident")
        .unwrap();
    assert_eq!(incident["type"], 2);
    assert_eq!(incident["options"].as_array().unwrap().len(), 3);
    assert!(!stdout(&o).contains("test-bot-token") && !stderr(&o).contains("test-bot-token"));
}
