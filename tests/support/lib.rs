//! Shared helpers for the end-to-end tests: build and run the real `drbot` binary (`serve`,
//! `cmd`, `show`, …) against a config written to a temp dir, and speak plain HTTP to it.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Path of the `drbot` binary, built once per test process if needed.
pub fn drbot_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().expect("workspace root").to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "drbot", "--bin", "drbot"])
            .current_dir(&root);
        // Cargo sets these for the test process, not for the `cargo test` that built it; a
        // build script watching them (ring's does) would see them change, and this build and
        // the next `cargo test` would each rebuild half the dependency tree.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| {
                k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_BIN_")
                    || matches!(
                        k,
                        "CARGO_MANIFEST_DIR"
                            | "CARGO_MANIFEST_PATH"
                            | "CARGO_MANIFEST_LINKS"
                            | "CARGO_CRATE_NAME"
                            | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR"
                            | "CARGO_RUSTC_CURRENT_DIR"
                            | "OUT_DIR"
                    )
            }) {
                build.env_remove(key);
            }
        }
        let status = build.status().expect("running cargo build for drbot");
        assert!(status.success(), "building drbot failed");
        target.join("debug").join("drbot")
    })
    .clone()
}

/// Holds the write lock of the SQLite store `db` from another process for `secs` (as a slow
/// or locked database during an outage would); returns once the lock is held. Wait on the
/// child to know it was let go.
pub fn hold_sqlite_lock(db: &Path, secs: u32) -> std::process::Child {
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n\
             c.execute('ROLLBACK')\n",
        ])
        .arg(db)
        .arg(secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.take().expect("piped stdout")),
        &mut line,
    )
    .expect("the locker's first line");
    assert_eq!(line.trim(), "locked");
    locker
}

/// A free loopback port, never the same one twice in this test process: tests run in
/// parallel, and a port released by one test's probe could otherwise be handed to another
/// test before the first test's server binds it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Runs `drbot --config <config> <args…>` to completion.
pub fn drbot(config: &Path, args: &[&str]) -> Output {
    drbot_env(config, args, &[])
}

/// [`drbot`] with extra environment variables.
pub fn drbot_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(drbot_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("DRBOT_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("running drbot")
}

/// `drbot cmd --as <person> <text>`.
pub fn cmd(config: &Path, person: &str, text: &str) -> Output {
    drbot(config, &["cmd", "--as", person, text])
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `drbot show <run> --json`, parsed.
pub fn show(config: &Path, run: i64) -> serde_json::Value {
    let o = drbot(config, &["show", &run.to_string(), "--json"]);
    assert!(o.status.success(), "show failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("show --json is JSON")
}

/// Waits until `show <run>` satisfies `pred`, or panics after `secs` with the last state.
pub fn wait_run(
    config: &Path,
    run: i64,
    secs: u64,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = show(config, run);
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; run is {}",
            serde_json::to_string_pretty(&v["run"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// State of a run from `show --json`.
pub fn state(v: &serde_json::Value) -> &str {
    v["run"]["state"].as_str().unwrap_or("?")
}

/// A running `drbot serve`.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Server {
    /// Starts `drbot serve` with `config` (whose `server.listen` must use `port`) and waits
    /// for `/healthz`.
    pub fn start(config: &Path, port: u16, log: &Path) -> Server {
        Server::start_env(config, port, log, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_env(config: &Path, port: u16, log: &Path, env: &[(&str, &str)]) -> Server {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = Command::new(drbot_bin())
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env("DRBOT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting drbot serve");
        let server = Server {
            child,
            port,
            log: log.to_path_buf(),
        };
        let mut server = server;
        let deadline = Instant::now() + Duration::from_secs(30);
        // Up means this process logged that it listens and the port answers (another process
        // that took the port would answer /healthz too).
        while !server.log_text().contains("drbot serving")
            || http_get(port, "/healthz").map(|(s, _)| s) != Some(200)
        {
            assert!(
                matches!(server.child.try_wait(), Ok(None)),
                "drbot serve exited at start:\n{}",
                server.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "drbot serve did not come up:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `secs` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, secs: u64) -> std::process::ExitStatus {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "drbot did not exit after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Lines of a marker file (missing file: none).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `path` has at least `n` lines.
pub fn wait_lines(path: &Path, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while lines(path).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} never reached {n} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub mod chromium;
pub mod fake_discord;
pub mod fake_slack;
pub mod fake_statuspage;
pub mod smtpd;

/// Signs a Slack request body: `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`.
pub fn slack_signature(secret: &str, ts: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A raw HTTP/1.1 POST with a form body and headers: (status, body).
pub fn http_post(port: u16, path: &str, body: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok();
    let status = buf
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Fills `{name}` placeholders of a fixture.
pub fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// Percent-encodes a form value.
pub fn form_value(v: &str) -> String {
    serde_urlencoded::to_string([("x", v)])
        .map(|s| s[2..].to_string())
        .unwrap_or_default()
}
