//! A secret a runbook step gets from the environment (`${NAME}` in its `with`, e.g. a health
//! check's `Authorization` header) reaches the peer when the step runs, and nothing else: not
//! the stored plan, `show --json`, the audit log, the logs or any file drbot writes.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

use drbot_e2e::*;

const TOKEN: &str = "sekret-probe-7f3a9c";
const VAR: &str = "DRBOT_TEST_PROBE_TOKEN";

/// A loopback HTTP server answering 200 to everything; records each `Authorization` header.
fn health_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("authorization")
                {
                    s.lock().unwrap().push(value.trim().to_string());
                }
                line.clear();
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, seen)
}

#[test]
fn a_step_secret_from_the_environment_reaches_the_peer_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (health, seen) = health_server();
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
[[people]]
name = "alice"
roles = ["lead"]
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
approve_roles = ["lead"]
[[runbooks.steps]]
name = "Probe {{region}}"
type = "http_check"
with = {{ url = "http://127.0.0.1:{health}/health", headers = {{ Authorization = "Bearer ${{{VAR}}}" }} }}
"#,
            db = d.join("drbot.db").display(),
        ),
    )
    .unwrap();
    let env = [(VAR, TOKEN)];
    // Without the variable the config is refused, naming the key and the variable.
    let o = drbot(&cfg, &["check-config"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains(&format!("environment variable {VAR} is not set"))
            || stderr(&o).contains(&format!("environment variable {VAR} is not set")),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    let mut server = Server::start_env(&cfg, port, &d.join("serve.log"), &env);
    let o = drbot_env(
        &cfg,
        &["cmd", "--as", "bob", "/dr failover us-west-2"],
        &env,
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // A read-only runbook needs no approval: it runs at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = drbot_env(&cfg, &["show", "1", "--json"], &env);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if state(&v) == "succeeded" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not succeed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(*seen.lock().unwrap(), [format!("Bearer {TOKEN}")]);

    // The plan keeps the reference; nothing shows or stores the value.
    let shown = drbot_env(&cfg, &["show", "1", "--json"], &env);
    let shown = stdout(&shown);
    assert!(shown.contains(&format!("Bearer ${{{VAR}}}")), "{shown}");
    let audit = drbot_env(&cfg, &["--json", "audit", "--limit", "1000"], &env);
    assert!(audit.status.success(), "{}", stderr(&audit));
    for (what, text) in [("show --json", shown), ("audit", stdout(&audit))] {
        assert!(!text.contains(TOKEN), "{what} shows the secret");
    }
    assert!(server.terminate(30).success());
    for entry in std::fs::read_dir(d).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
}
