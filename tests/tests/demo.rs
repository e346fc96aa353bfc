//! `drbot demo` as a new user runs it: the real binary builds its two-region environment
//! (real PostgreSQL primary and replica, apex-api services, file DNS), verifies a backup and
//! runs the measured drill with two simulated people. Its printed RPO and RTO are parsed and
//! checked for sanity, it exits 0, and afterwards its directory and PostgreSQL servers are gone.
//! With `--keep` it serves the status page (showing the drill's evidence; the drill history
//! charts its drill and verification) and a valid audit chain until SIGINT, then stops
//! PostgreSQL and leaves the directory.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use drbot_e2e::{drbot, drbot_bin, http_get, stdout};

/// Processes whose command line mentions `dir` (PostgreSQL servers run with `-D <dir>/…`).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push(cmd);
        }
    }
    found
}

/// The number after `prefix` on the line that starts with it (after spaces).
fn figure(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in `{line}`"))
}

#[test]
fn demo_runs_the_measured_drill_and_cleans_up() {
    let out = Command::new(drbot_bin())
        .arg("demo")
        .env_remove("DRBOT_LOG")
        .output()
        .expect("running drbot demo");
    let text = stdout(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{text}\n{err}", out.status);

    let rpo_rows = figure(&text, "RPO:");
    assert!(rpo_rows >= 0.0 && rpo_rows.fract() == 0.0, "{rpo_rows}");
    let rto = figure(&text, "RTO:");
    assert!(rto > 0.0 && rto < 120.0, "RTO {rto}\n{text}");
    assert!(text.contains("target 4h: met"), "{text}");
    // Every step of both runs succeeded, in the drill's order.
    for step in [
        "Restore and check backup latest on test-db",
        "Replication us-east-1 → us-west-2",
        "Open the drill incident",
        "Disaster: kill the us-east-1 database while writing markers",
        "Promote the us-west-2 database",
        "Switch DNS api.apex.demo to us-west-2",
        "Health green in us-west-2",
        "Measure RPO and RTO",
        "Resolve the drill incident",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(step))
            .unwrap_or_else(|| panic!("no step `{step}` in:\n{text}"));
        assert!(line.trim_start().starts_with("ok "), "{line}");
    }
    assert!(text.contains("verify-backup: succeeded"), "{text}");
    assert!(text.contains("drill: succeeded"), "{text}");
    assert!(text.contains("status page   http://127.0.0.1:"), "{text}");
    assert!(text.contains("drbot audit --config /"), "{text}");

    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("Cleaned up: PostgreSQL stopped, "))
        .and_then(|l| l.split(" removed").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no clean-up line in:\n{text}"));
    assert!(root.starts_with("/tmp") || root.starts_with(std::env::temp_dir()));
    assert!(!root.exists(), "{} is still there", root.display());
    let left = processes_under(&root);
    assert!(left.is_empty(), "still running: {left:#?}");
}

#[test]
fn demo_keep_serves_the_evidence_until_sigint() {
    let mut child = Command::new(drbot_bin())
        .args(["demo", "--keep", "--json"])
        .env_remove("DRBOT_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running drbot demo --keep");
    // The narration is on stderr with --json; wait for "Kept:" and the config path after it.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut narration = String::new();
    let mut config = None;
    while config.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no config line; so far:\n{narration}"));
        narration.push_str(&line);
        narration.push('\n');
        if let Some(path) = line.strip_prefix("Config: ") {
            config = Some(PathBuf::from(path.trim()));
        }
    }
    let config = config.unwrap();
    let root = config.parent().unwrap().to_path_buf();
    let port: u16 = narration
        .lines()
        .find_map(|l| {
            l.trim_start()
                .strip_prefix("status page   http://127.0.0.1:")
        })
        .and_then(|l| l.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no status page port in:\n{narration}"));

    let (code, body) = http_get(port, "/status.json").expect("status page answers");
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let drill = &page["evidence"]["last_drill"];
    let rto = drill["rto_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && rto < 120.0, "{page}");
    assert_eq!(drill["met"], true, "{page}");
    assert_eq!(page["evidence"]["last_backup_verification"]["passed"], true);
    // The drill resolved its own incident: none is current, the drill's is in the history.
    assert!(page["current"].is_null(), "{page}");
    assert_eq!(page["history"][0]["status"], "resolved", "{page}");
    assert!(
        page["history"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("DR drill"),
        "{page}"
    );
    // The drill history charts the demo's real drill and verification: one point each.
    for slug in ["rto", "rpo", "verification"] {
        let (code, svg) = http_get(port, &format!("/status/history/{slug}.svg")).unwrap();
        assert_eq!(code, 200, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{slug}: {svg}");
    }
    let (code, history) = http_get(port, "/status/history").unwrap();
    assert_eq!(code, 200, "{history}");
    assert_eq!(history.matches("<svg").count(), 3, "{history}");
    // The same store through the CLI: the audit chain verifies.
    let audit = Command::new(drbot_bin())
        .args(["audit", "--verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );

    // SIGINT ends it: exit 0, PostgreSQL stopped, the directory kept.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let report: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("a JSON report on stdout");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["figures"]["rpo_rows"].as_i64().unwrap() >= 0);
    assert!(root.join("drbot.toml").is_file());
    // The config it wrote is one `check-config` has nothing to say about.
    let check = drbot(&root.join("drbot.toml"), &["check-config"]);
    let said = format!("{}{}", stdout(&check), drbot_e2e::stderr(&check));
    assert!(check.status.success(), "{said}");
    assert!(!said.contains("warning"), "{said}");
    let left = processes_under(&root);
    let _ = std::fs::remove_dir_all(&root);
    assert!(left.is_empty(), "still running: {left:#?}");
}
