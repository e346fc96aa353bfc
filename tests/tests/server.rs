//! The HTTP server of the real binary: `/healthz`, `/readyz` (store reachable, on a real
//! PostgreSQL that is then stopped), `/metrics` in Prometheus text after a run.

use std::{path::Path, time::Duration};

use drbot_e2e::*;
use recovery::testkit::pg::PgCluster;

fn write_config(dir: &Path, port: u16, store_url: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
log_format = "json"

[store]
url = "{store_url}"

[engine]
poll_interval = "100ms"

[[people]]
name = "alice"
roles = ["sre-lead"]

[[people]]
name = "bob"
roles = ["oncall"]

[regions.us-east-1]
role = "primary"

[[runbooks]]
name = "verify-backup"
command = "verify-backup"
request_roles = ["oncall"]
approve_roles = ["sre-lead"]

[[runbooks.steps]]
name = "check"
type = "exec"
with = {{ command = "true" }}
destructive = false
"#
    );
    let path = dir.join("drbot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut pg = PgCluster::start().unwrap();
    pg.create_database("drbot").unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), port, &pg.url("drbot"));
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&cfg, port, &log);
    assert_eq!(http_get(port, "/healthz").unwrap(), (200, "ok\n".into()));
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);

    // A read-only runbook needs no approval: it runs at once.
    let o = cmd(&cfg, "bob", "/dr verify-backup latest");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    wait_run(&cfg, 1, 30, "succeeded", |v| state(v) == "succeeded");
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE drbot_runs gauge"), "{body}");
    assert!(body.contains("drbot_store_up 1"), "{body}");
    assert!(body.contains("drbot_runs{state=\"succeeded\"} 1"), "{body}");
    assert!(
        body.contains("drbot_step_duration_seconds_count{kind=\"exec\"} 1"),
        "{body}"
    );

    // Structured JSON logs.
    let logs = server.log_text();
    let line = logs
        .lines()
        .find(|l| l.contains("drbot serving"))
        .expect("startup line");
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(v["level"], "INFO");

    // The store goes away: not ready, still alive.
    pg.kill().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http_get(port, "/readyz").unwrap().0, 503);
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    // Metrics still answer, with the process's counters and the store marked down.
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("drbot_store_up 0"), "{body}");
    assert!(
        body.contains("drbot_step_duration_seconds_count{kind=\"exec\"} 1"),
        "{body}"
    );
    assert!(!body.contains("drbot_runs{"), "{body}");
    pg.restart().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http_get(port, "/readyz").map(|r| r.0) != Some(200) {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.terminate(30).success());
    assert!(
        !server.log_text().contains("postgres://postgres@"),
        "store URL is not logged with credentials"
    );
}

/// A client that sends part of a request and stalls is cut off after the header timeout, and
/// one stalled at shutdown does not keep `serve` from stopping.
#[test]
fn stalled_clients_are_cut_off_and_never_block_shutdown() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = format!("sqlite://{}", dir.path().join("drbot.db").display());
    let cfg = write_config(dir.path(), port, &store);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "poll_interval = \"100ms\"",
        "poll_interval = \"100ms\"\nshutdown_grace = \"2s\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("serve.log");
    let mut server = Server::start(&cfg, port, &log);

    let started = std::time::Instant::now();
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /status HTTP/1.1\r\nHo").unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = Vec::new();
    match stalled.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled connection is still open long after the header timeout: {e}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "cut off after {waited:?}, before the 10 s header timeout"
    );
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);

    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /status HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert!(server.terminate(10).success());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
