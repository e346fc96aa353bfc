//! High availability: two `drbot serve` processes share one PostgreSQL store (a real cluster
//! started by the testkit). Exactly one drives the run; when it is SIGKILLed mid-step, the
//! other takes the run over after the lease expires and finishes it under the resume rules.

use std::path::{Path, PathBuf};

use drbot_e2e::*;

fn write_config(dir: &Path, name: &str, port: u16, store_url: &str) -> PathBuf {
    let d = dir.display();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[store]
url = "{store_url}"

[engine]
lease = "5s"
poll_interval = "100ms"

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
with = {{ command = "sh", args = ["-c", "echo $PPID >> {d}/m1"] }}

[[runbooks.steps]]
name = "two (idempotent, slow)"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo two >> {d}/m2; sleep 8"] }}
idempotent = true

[[runbooks.steps]]
name = "three"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo three >> {d}/m3"] }}
"#
    );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn pid_of_owner(owner: &str) -> i32 {
    owner
        .split(':')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("owner is host:pid:…")
}

#[test]
fn the_other_process_takes_over_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let url = recovery::testkit::shared::fresh_database("ha").unwrap();
    let (pa, pb) = (free_port(), free_port());
    let cfg_a = write_config(dir.path(), "a.toml", pa, &url);
    let cfg_b = write_config(dir.path(), "b.toml", pb, &url);
    let mut a = Server::start(&cfg_a, pa, &dir.path().join("a.log"));
    let mut b = Server::start(&cfg_b, pb, &dir.path().join("b.log"));

    let o = cmd(&cfg_a, "bob", "/dr failover us-west-2");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Approved through the other process's config: both agree on the plan fingerprint.
    let o = cmd(&cfg_b, "alice", "/dr approve 1");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    wait_lines(&dir.path().join("m2"), 1, 30);
    let v = show(&cfg_a, 1);
    let owner = v["run"]["lease_owner"]
        .as_str()
        .expect("a process holds the lease")
        .to_string();
    let pid = pid_of_owner(&owner);
    // Step one ran in exactly one process: the lease holder.
    assert_eq!(lines(&dir.path().join("m1")), [pid.to_string()]);
    let (victim, survivor) = if pid == a.pid() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(pid, victim.pid(), "lease owner is one of our two processes");
    victim.kill9();

    let v = wait_run(&cfg_a, 1, 90, "succeeded", |v| state(v) == "succeeded");
    let new_owner_claims: Vec<_> = {
        let o = drbot(
            &cfg_a,
            &["--json", "audit", "--run", "1", "--limit", "1000"],
        );
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "lease.claimed")
            .map(|r| r["detail"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        new_owner_claims
            .iter()
            .any(|d| d.contains(&format!(":{}:", survivor.pid()))),
        "the survivor claimed the run: {new_owner_claims:?}"
    );
    assert_eq!(
        lines(&dir.path().join("m1")).len(),
        1,
        "completed step not re-run"
    );
    assert_eq!(
        lines(&dir.path().join("m2")),
        ["two", "two"],
        "interrupted idempotent step re-run once"
    );
    assert_eq!(lines(&dir.path().join("m3")), ["three"]);
    assert_eq!(v["steps"][2]["state"], "succeeded");
    let o = drbot(&cfg_a, &["audit", "--verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
    survivor.terminate(30);
}
