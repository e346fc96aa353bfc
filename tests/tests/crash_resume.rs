//! Crash resume through the real binary: `drbot serve` is SIGKILLed while a step runs and
//! restarted; completed steps never run again, an interrupted idempotent step is re-run, an
//! interrupted non-idempotent one pauses the run as `needs_attention` until an approved skip.
//! Also: SIGTERM lets the in-flight step finish and the next process continues cleanly.

use std::path::{Path, PathBuf};

use drbot_e2e::*;

fn write_config(dir: &Path, port: u16, store_url: &str, sleep: u32) -> PathBuf {
    let d = dir.display();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[store]
url = "{store_url}"

[engine]
lease = "2s"
poll_interval = "100ms"
shutdown_grace = "20s"

[[people]]
name = "alice"
roles = ["sre-lead"]

[[people]]
name = "bob"
roles = ["oncall"]

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
name = "one"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo one >> {d}/m1"] }}

[[runbooks.steps]]
name = "two (idempotent)"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo two >> {d}/m2; sleep {sleep}"] }}
idempotent = true

[[runbooks.steps]]
name = "three (not idempotent)"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo three >> {d}/m3; sleep {sleep}"] }}

[[runbooks.steps]]
name = "four"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo four >> {d}/m4"] }}
"#
    );
    let path = dir.join("drbot.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn request_and_approve(cfg: &Path) -> i64 {
    let o = cmd(cfg, "bob", "/dr failover us-west-2");
    assert!(
        o.status.success(),
        "request failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = drbot(cfg, &["--json", "cmd", "--as", "alice", "/dr approve 1"]);
    assert!(
        o.status.success(),
        "approve failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json reply");
    assert_eq!(v["reply"], "approved");
    assert_eq!(v["quorum"], true);
    v["view"]["run"]["id"].as_i64().expect("run id")
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("drbot.db").display())
}

#[test]
fn sigkill_mid_step_resumes_without_repeating_non_idempotent_steps() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Steps long enough that a loaded machine still kills inside the step it waited for.
    let cfg = write_config(dir.path(), port, &sqlite_url(dir.path()), 8);
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&cfg, port, &log);
    let run = request_and_approve(&cfg);

    // Kill while the idempotent step two runs.
    wait_lines(&dir.path().join("m2"), 1, 30);
    server.kill9();
    assert_eq!(state(&show(&cfg, run)), "running");
    let mut server = Server::start(&cfg, port, &log);

    // Step two is re-run after the lease expires; kill again while step three runs.
    wait_lines(&dir.path().join("m3"), 1, 30);
    server.kill9();
    let mut server = Server::start(&cfg, port, &log);

    // Step three is not idempotent: the run waits for a person.
    let v = wait_run(&cfg, run, 30, "needs_attention", |v| {
        state(v) == "needs_attention"
    });
    assert!(
        v["run"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not idempotent")
    );
    assert_eq!(v["steps"][2]["state"], "running");

    // Skip needs approval by another person, who names it; bob asks, bob cannot approve,
    // a bare approve names nothing, alice's `skip` approves it.
    let o = cmd(&cfg, "bob", &format!("/dr skip {run}"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = cmd(&cfg, "bob", &format!("/dr skip {run}"));
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stdout(&o).contains("cannot approve"), "{}", stdout(&o));
    let o = cmd(&cfg, "alice", &format!("/dr approve {run}"));
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("/dr skip {run}")),
        "{}",
        stdout(&o)
    );
    let o = cmd(&cfg, "alice", &format!("/dr skip {run}"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    let v = wait_run(&cfg, run, 30, "succeeded", |v| state(v) == "succeeded");
    let states: Vec<_> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["succeeded", "succeeded", "skipped", "succeeded"]);
    assert_eq!(
        lines(&dir.path().join("m1")),
        ["one"],
        "a completed step never re-runs"
    );
    assert_eq!(
        lines(&dir.path().join("m2")),
        ["two", "two"],
        "the interrupted idempotent step re-runs once"
    );
    assert_eq!(
        lines(&dir.path().join("m3")),
        ["three"],
        "the non-idempotent step never runs twice"
    );
    assert_eq!(lines(&dir.path().join("m4")), ["four"]);

    let o = drbot(&cfg, &["audit", "--verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let o = drbot(&cfg, &["--json", "audit", "--limit", "1000"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let actions: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert!(actions.contains(&"run.needs_attention".to_string()));
    assert!(actions.contains(&"decision.requested".to_string()));
    server.terminate(30);
}

#[test]
fn sigterm_finishes_the_step_in_flight_and_hands_over() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Step two outlasts a late SIGTERM; the grace (20 s) outlasts step two.
    let cfg = write_config(dir.path(), port, &sqlite_url(dir.path()), 6);
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&cfg, port, &log);
    let run = request_and_approve(&cfg);
    wait_lines(&dir.path().join("m2"), 1, 30);
    let status = server.terminate(30);
    assert!(
        status.success(),
        "clean exit on SIGTERM:\n{}",
        server.log_text()
    );
    // Step two finished during the grace period; the lease was released, nothing interrupted.
    let v = show(&cfg, run);
    assert_eq!(v["steps"][1]["state"], "succeeded", "{v}");
    assert_eq!(v["steps"][2]["state"], "pending");
    assert!(v["run"]["lease_owner"].is_null());
    let mut server = Server::start(&cfg, port, &log);
    wait_run(&cfg, run, 30, "succeeded", |v| state(v) == "succeeded");
    assert_eq!(lines(&dir.path().join("m2")), ["two"]);
    assert_eq!(lines(&dir.path().join("m3")), ["three"]);
    server.terminate(30);
}
