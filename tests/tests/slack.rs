//! The Slack front-end end to end: the real `drbot serve` against a loopback fake of the
//! Slack Web API, with requests shaped like Slack's documented slash-command and
//! block_actions payloads (fixtures in `tests/fixtures/slack/`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use drbot_e2e::{fake_slack::*, *};
use serde_json::Value;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TOKEN: &str = "xoxb-test-token-000";
const SLASH: &str = include_str!("../fixtures/slack/slash_command.form");
const BLOCK_ACTIONS: &str = include_str!("../fixtures/slack/block_actions.json");

struct Env {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    cfg: PathBuf,
    slack: FakeSlack,
    server: Server,
}

fn setup(expires: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let slack = FakeSlack::start(TOKEN);
    let port = free_port();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[store]
url = "sqlite://{db}"

[approvals]
expires_after = "{expires}"

[engine]
poll_interval = "50ms"

[slack]
signing_secret = "${{TEST_SLACK_SIGNING_SECRET}}"
bot_token = "${{TEST_SLACK_BOT_TOKEN}}"
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

[[runbooks.steps]]
name = "Check DR health"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo preflight ok"] }}
destructive = false

[[runbooks.steps]]
name = "Promote the DR database"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo promote >> {marker}"] }}

[[runbooks.steps]]
name = "Switch DNS"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo switched; exit 0"] }}
"#,
        db = d.join("drbot.db").display(),
        api = slack.base_url(),
        marker = d.join("marker").display(),
    );
    let cfg = d.join("drbot.toml");
    std::fs::write(&cfg, text).unwrap();
    // SAFETY: set before the server process is spawned; tests in this binary use the same values.
    unsafe {
        std::env::set_var("TEST_SLACK_SIGNING_SECRET", SECRET);
        std::env::set_var("TEST_SLACK_BOT_TOKEN", TOKEN);
    }
    let server = Server::start(&cfg, port, &d.join("serve.log"));
    Env {
        _dir: dir,
        dir: d,
        cfg,
        slack,
        server,
    }
}

fn signed(body: &str, ts: i64) -> Vec<(&'static str, String)> {
    vec![
        ("X-Slack-Request-Timestamp", ts.to_string()),
        ("X-Slack-Signature", slack_signature(SECRET, ts, body)),
    ]
}

fn slash_body(env: &Env, user: &str, channel: &str, text: &str, trigger: &str) -> String {
    fill(
        SLASH.trim(),
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
    )
}

fn slash(env: &Env, user: &str, channel: &str, text: &str, trigger: &str) -> (u16, Value) {
    let body = slash_body(env, user, channel, text, trigger);
    let (status, resp) = http_post(
        env.server.port,
        "/slack/commands",
        &body,
        &signed(&body, unix_now()),
    );
    (status, serde_json::from_str(&resp).unwrap_or(Value::Null))
}

fn click(env: &Env, user: &str, channel: &str, ts: &str, value: &str, trigger: &str) -> u16 {
    let payload = fill(
        BLOCK_ACTIONS,
        &[
            ("user_id", user),
            ("user_name", "someone"),
            ("message_ts", ts),
            ("channel_id", channel),
            ("trigger_id", trigger),
            ("response_url", &env.slack.response_url(trigger)),
            ("action_id", value.split(':').next().unwrap_or("")),
            ("value", value),
            ("action_ts", &format!("{}.000100", unix_now())),
        ],
    );
    let body = format!("payload={}", form_value(&payload));
    http_post(
        env.server.port,
        "/slack/interactions",
        &body,
        &signed(&body, unix_now()),
    )
    .0
}

/// The (only) top-level card in `channel`.
fn card(env: &Env, channel: &str) -> Message {
    let cards: Vec<_> = env
        .slack
        .messages(channel)
        .into_iter()
        .filter(|m| m.thread_ts.is_none())
        .collect();
    assert_eq!(cards.len(), 1, "exactly one card in {channel}: {cards:?}");
    cards[0].clone()
}

fn button_values(m: &Message) -> Vec<String> {
    m.blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["value"].as_str().map(str::to_string))
        .collect()
}

fn header(m: &Message) -> String {
    m.blocks[0]["text"]["text"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn all_text(m: &Message) -> String {
    m.blocks.to_string()
}

fn wait_card(env: &Env, channel: &str) -> Message {
    env.slack.wait(20, "the approval card", |s| {
        s.messages(channel).iter().any(|m| m.thread_ts.is_none())
    });
    card(env, channel)
}

fn ephemeral(env: &Env, trigger: &str) -> String {
    env.slack.wait(10, "an ephemeral reply", |s| {
        !s.responses(trigger).is_empty()
    });
    let r = env.slack.responses(trigger);
    assert_eq!(r[0]["response_type"], "ephemeral");
    assert_eq!(r[0]["replace_original"], false);
    r[0]["text"].as_str().unwrap_or("").to_string()
}

fn marker(env: &Env) -> Vec<String> {
    lines(&env.dir.join("marker"))
}

fn audit_actions(cfg: &Path) -> Vec<Value> {
    let o = drbot(cfg, &["--json", "audit", "--limit", "1000"]);
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn verification_refuses_forged_stale_and_replayed_requests() {
    let env = setup("30m");
    let body = slash_body(&env, "UBOB", "C1", "status", "t-verify-1");
    let now = unix_now();
    // Forged: signed with another secret.
    let forged = vec![
        ("X-Slack-Request-Timestamp", now.to_string()),
        ("X-Slack-Signature", slack_signature("wrong", now, &body)),
    ];
    assert_eq!(
        http_post(env.server.port, "/slack/commands", &body, &forged).0,
        401
    );
    // Missing headers.
    assert_eq!(
        http_post(env.server.port, "/slack/commands", &body, &[]).0,
        401
    );
    // Stale: 6 minutes old, correctly signed.
    assert_eq!(
        http_post(
            env.server.port,
            "/slack/commands",
            &body,
            &signed(&body, now - 360)
        )
        .0,
        401
    );
    // Fresh: accepted once; the identical request replayed is refused.
    let headers = signed(&body, now);
    assert_eq!(
        http_post(env.server.port, "/slack/commands", &body, &headers).0,
        200
    );
    assert_eq!(
        http_post(env.server.port, "/slack/commands", &body, &headers).0,
        401
    );
    // Slack's retry: a new signature, same trigger: acknowledged, not executed again.
    let mut retry = signed(&body, now + 1);
    retry.push(("X-Slack-Retry-Num", "1".into()));
    let (status, resp) = http_post(env.server.port, "/slack/commands", &body, &retry);
    assert_eq!((status, resp.as_str()), (200, ""));
    // A read-only command's audit row is committed within the group commit's linger: wait
    // for it, then past one more linger for a second row that must not come.
    let commands = || {
        audit_actions(&env.cfg)
            .iter()
            .filter(|r| r["action"] == "command")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while commands() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(commands(), 1, "the command ran exactly once");
    // A body over drbot's limit is refused before it is read whole, signed or not.
    let huge = format!("{body}&pad={}", "x".repeat(600 * 1024));
    assert_eq!(
        http_post(
            env.server.port,
            "/slack/commands",
            &huge,
            &signed(&huge, now)
        )
        .0,
        413
    );
    // Garbage with a valid signature: a clear 400, no panic.
    let junk = "payload=%7Bnot-json";
    assert_eq!(
        http_post(
            env.server.port,
            "/slack/interactions",
            junk,
            &signed(junk, unix_now())
        )
        .0,
        400
    );
    let log = env.server.log_text();
    assert!(log.contains("refused a Slack request"), "{log}");
    assert!(
        !log.contains(SECRET) && !log.contains(TOKEN) && !log.contains("t-verify-1"),
        "no secrets or bodies in logs"
    );
}

#[test]
fn unknown_command_gets_ephemeral_usage() {
    let env = setup("30m");
    let (status, v) = slash(&env, "UBOB", "C1", "falover us-west-2", "t-unknown");
    assert_eq!(status, 200);
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Did you mean `failover`?"),
        "{v}"
    );
    let (_, v) = slash(&env, "UBOB", "C1", "failover mars", "t-region");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Usage: /dr failover &lt;region&gt; [--dry-run]"),
        "{v}"
    );
}

#[test]
fn request_approve_run_and_progress_card() {
    let env = setup("30m");
    // A 429 then an ambiguous 5xx on posting: drbot waits, then finds its post instead of
    // posting twice.
    env.slack.inject("chat.postMessage", Fault::RateLimited(1));
    env.slack
        .inject("chat.postMessage", Fault::ServerErrorAfterActing);
    let (status, v) = slash(&env, "UBOB", "C1", "failover us-west-2", "t-req");
    assert_eq!(status, 200);
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"].as_str().unwrap().starts_with("Run 1 requested"),
        "{v}"
    );
    let c1 = wait_card(&env, "C1");
    let inc = wait_card(&env, "CINCIDENT");
    for c in [&c1, &inc] {
        assert!(
            header(c).starts_with("Approval needed: failover (run 1)"),
            "{}",
            header(c)
        );
        let t = all_text(c);
        assert!(t.contains("Promote the DR database ⚠ _destructive_"), "{t}");
        assert!(
            t.contains("bob") && t.contains("region=`us-west-2`") && t.contains("Fingerprint"),
            "{t}"
        );
        assert_eq!(button_values(c), ["approve:1:1", "deny:1:1"]);
    }
    assert!(
        env.slack.calls("chat.postMessage").len() >= 3,
        "the rate-limited and failed posts were retried"
    );
    // Preflight (read-only) result shows on the card before approval.
    env.slack.wait(20, "preflight on the card", |s| {
        all_text(&card_of(s, "C1")).contains("✓ 1. Check DR health")
    });

    // The requester clicks Approve: refused privately, card unchanged.
    let before = card(&env, "C1").updates;
    assert_eq!(
        click(&env, "UBOB", "C1", &c1.ts, "approve:1:1", "t-self"),
        200
    );
    assert!(ephemeral(&env, "t-self").contains("You requested run 1, so you cannot approve it"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        card(&env, "C1").updates,
        before,
        "refused click leaves the card unchanged"
    );
    assert!(marker(&env).is_empty());

    // A second allowed person approves: the run executes and the card becomes the progress card.
    assert_eq!(
        click(&env, "UALICE", "C1", &c1.ts, "approve:1:1", "t-alice"),
        200
    );
    env.slack.wait(30, "progress card done", |s| {
        header(&card_of(s, "C1")).starts_with("Done: failover (run 1)")
    });
    let done = card(&env, "C1");
    assert!(button_values(&done).is_empty(), "buttons gone at quorum");
    let t = all_text(&done);
    assert!(t.contains("approved by *alice*"), "{t}");
    assert!(t.contains("✓ 3. Switch DNS"), "{t}");
    env.slack.wait(20, "incident card done too", |s| {
        header(&card_of(s, "CINCIDENT")).starts_with("Done")
    });
    assert_eq!(marker(&env), ["promote"], "the destructive step ran once");
    // Step details in the card's thread.
    env.slack.wait(20, "thread details", |s| {
        s.messages("C1")
            .iter()
            .filter(|m| m.thread_ts.as_deref() == Some(c1.ts.as_str()))
            .count()
            >= 3
    });
    let replies: Vec<_> = env
        .slack
        .messages("C1")
        .into_iter()
        .filter(|m| m.thread_ts.is_some())
        .collect();
    assert!(
        replies
            .iter()
            .any(|m| m.text.contains("Switch DNS") && m.text.contains("switched")),
        "{replies:?}"
    );
    // Every card post went out exactly once per channel.
    assert_eq!(
        env.slack
            .messages("C1")
            .iter()
            .filter(|m| m.thread_ts.is_none())
            .count(),
        1
    );
    assert_eq!(
        env.slack
            .messages("CINCIDENT")
            .iter()
            .filter(|m| m.thread_ts.is_none())
            .count(),
        1
    );
}

fn card_of(s: &FakeSlack, channel: &str) -> Message {
    s.messages(channel)
        .into_iter()
        .find(|m| m.thread_ts.is_none())
        .expect("card")
}

#[test]
fn deny_unknown_account_and_foreign_buttons() {
    let env = setup("30m");
    slash(&env, "UBOB", "C1", "failover us-west-2", "t-req");
    let c1 = wait_card(&env, "C1");
    // An account drbot does not know: refused, nothing changes.
    click(&env, "USTRANGER", "C1", &c1.ts, "approve:1:1", "t-stranger");
    assert!(ephemeral(&env, "t-stranger").contains("not in drbot's [[people]] list"));
    // A button value naming another run than the card's: refused.
    click(&env, "UALICE", "C1", &c1.ts, "approve:2:1", "t-foreign");
    assert!(ephemeral(&env, "t-foreign").contains("does not belong to this card"));
    // A card that is not drbot's.
    click(
        &env,
        "UALICE",
        "C1",
        "1600000000.000001",
        "approve:1:1",
        "t-nocard",
    );
    assert!(ephemeral(&env, "t-nocard").contains("does not belong to this card"));
    // carol denies.
    click(&env, "UCAROL", "C1", &c1.ts, "deny:1:1", "t-deny");
    env.slack.wait(20, "denied card", |s| {
        header(&card_of(s, "C1")).starts_with("Denied")
    });
    assert!(all_text(&card(&env, "C1")).contains("denied by *carol*"));
    click(&env, "UALICE", "C1", &c1.ts, "approve:1:1", "t-late");
    assert!(ephemeral(&env, "t-late").contains("has no open approval request"));
    assert!(marker(&env).is_empty());
    let clicks: Vec<_> = audit_actions(&env.cfg)
        .into_iter()
        .filter(|r| r["action"] == "click")
        .collect();
    assert_eq!(clicks.len(), 5, "every click is audited, refusals included");
}

#[test]
fn expired_request_refuses_late_clicks() {
    let env = setup("2s");
    slash(&env, "UBOB", "C1", "failover us-west-2", "t-req");
    let c1 = wait_card(&env, "C1");
    std::thread::sleep(Duration::from_millis(2500));
    click(&env, "UALICE", "C1", &c1.ts, "approve:1:1", "t-expired");
    let text = ephemeral(&env, "t-expired");
    assert!(
        text.contains("expired") || text.contains("no open approval request"),
        "{text}"
    );
    env.slack.wait(20, "expired card", |s| {
        header(&card_of(s, "C1")).starts_with("Expired")
    });
    assert!(marker(&env).is_empty());
}

#[test]
fn simultaneous_approvals_execute_once() {
    let env = setup("30m");
    slash(&env, "UBOB", "C1", "failover us-west-2", "t-req");
    let c1 = wait_card(&env, "C1");
    let ts = c1.ts.clone();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| click(&env, "UALICE", "C1", &ts, "approve:1:1", "t-a"));
        let b = s.spawn(|| click(&env, "UCAROL", "C1", &ts, "approve:1:1", "t-b"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a, b), (200, 200));
    env.slack.wait(30, "done", |s| {
        header(&card_of(s, "C1")).starts_with("Done")
    });
    assert_eq!(marker(&env), ["promote"]);
    // The refusal goes to its click's response_url from its own task: wait for it.
    env.slack.wait(30, "the refusal", |s| {
        s.responses("t-a").len() + s.responses("t-b").len() >= 1
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let refused = env.slack.responses("t-a").len() + env.slack.responses("t-b").len();
    assert_eq!(refused, 1, "exactly one of the two clicks was refused");
}

#[test]
fn deleted_card_is_posted_again() {
    let env = setup("30m");
    slash(&env, "UBOB", "C1", "failover us-west-2", "t-req");
    let c1 = wait_card(&env, "C1");
    env.slack.delete("C1", &c1.ts);
    click(&env, "UALICE", "C1", &c1.ts, "approve:1:1", "t-alice");
    env.slack.wait(30, "a new card reaching done", |s| {
        s.messages("C1")
            .iter()
            .any(|m| m.thread_ts.is_none() && header(m).starts_with("Done"))
    });
    assert!(!env.slack.calls("chat.update").is_empty());
    assert_eq!(marker(&env), ["promote"]);
}

#[test]
fn needs_attention_buttons_are_approval_gated() {
    let mut env = setup("30m");
    // Make step 2 slow so the server can be killed while it runs.
    let text = std::fs::read_to_string(&env.cfg)
        .unwrap()
        .replace("echo promote >> ", "sleep 15; echo promote >> ");
    std::fs::write(&env.cfg, text).unwrap();
    let port = env.server.port;
    env.server.kill9();
    env.server = Server::start(&env.cfg, port, &env.dir.join("serve2.log"));
    slash(&env, "UBOB", "C1", "failover us-west-2", "t-req");
    let c1 = wait_card(&env, "C1");
    click(&env, "UALICE", "C1", &c1.ts, "approve:1:1", "t-alice");
    env.slack.wait(20, "step 2 running", |s| {
        all_text(&card_of(s, "C1")).contains("▶ 2.")
    });
    env.server.kill9();
    env.server = Server::start(&env.cfg, port, &env.dir.join("serve3.log"));
    // After the dead process's lease (15 s) lapses.
    env.slack.wait(90, "needs attention", |s| {
        header(&card_of(s, "C1")).starts_with("Needs attention")
    });
    assert_eq!(
        button_values(&card(&env, "C1")),
        ["retry:1:0", "skip:1:0", "abort:1:0"]
    );
    // bob asks to skip; the card then asks for approval of the skip.
    click(&env, "UBOB", "C1", &c1.ts, "skip:1:0", "t-skip");
    env.slack.wait(20, "skip request on the card", |s| {
        button_values(&card_of(s, "C1"))
            .first()
            .is_some_and(|v| v.starts_with("approve:1:"))
    });
    let approve = button_values(&card(&env, "C1"))[0].clone();
    assert!(all_text(&card(&env, "C1")).contains("Approve skip"));
    click(&env, "UBOB", "C1", &c1.ts, &approve, "t-self");
    assert!(ephemeral(&env, "t-self").contains("cannot approve"));
    click(&env, "UCAROL", "C1", &c1.ts, &approve, "t-carol");
    env.slack.wait(30, "done", |s| {
        header(&card_of(s, "C1")).starts_with("Done")
    });
    assert!(all_text(&card(&env, "C1")).contains("↷ 2. Promote the DR database"));
    assert!(
        marker(&env).is_empty(),
        "the interrupted step was skipped, never re-run"
    );
}

/// Slack gives up on an answer after 3 s. While the store is locked for 5 s, a command still
/// gets its HTTP answer in time ("working on it"), and its own answer follows through the
/// command's `response_url` once the work is done, exactly once; a click is acknowledged in
/// time too, and takes effect once the store answers.
#[test]
fn a_command_slower_than_slacks_deadline_is_answered_in_time_and_then_for_real() {
    let env = setup("30m");
    let mut locker = hold_sqlite_lock(&env.dir.join("drbot.db"), 5);
    let sent = std::time::Instant::now();
    let (status, v) = slash(&env, "UBOB", "C1", "failover us-west-2", "t-slow");
    let took = sent.elapsed();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(v["response_type"], "ephemeral");
    assert!(
        v["text"].as_str().unwrap().starts_with("Working on it"),
        "{v}"
    );
    assert!(env.slack.responses("t-slow").is_empty(), "not done yet");
    env.slack
        .wait(60, "the late answer", |s| !s.responses("t-slow").is_empty());
    let late = env.slack.responses("t-slow");
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0]["response_type"], "ephemeral");
    assert!(
        late[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Run 1 requested"),
        "{}",
        late[0]
    );
    assert!(locker.wait().unwrap().success());
    let c1 = wait_card(&env, "C1");

    let mut locker = hold_sqlite_lock(&env.dir.join("drbot.db"), 5);
    let sent = std::time::Instant::now();
    assert_eq!(
        click(&env, "UCAROL", "C1", &c1.ts, "approve:1:1", "t-slow-click"),
        200
    );
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(3), "acknowledged after {took:?}");
    assert!(locker.wait().unwrap().success());
    env.slack.wait(60, "the approved run done", |s| {
        header(&card_of(s, "C1")).starts_with("Done")
    });
}
