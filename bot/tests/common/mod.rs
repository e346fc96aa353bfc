//! Shared helpers for drbot's integration tests: a config builder and an `App` on a fresh
//! SQLite file or a fresh database on a real PostgreSQL cluster started by the testkit.

#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use drbot::{
    actor::Actor,
    app::App,
    config::{Platform, Settings, parse_str},
    store::{Store, runs::RunState},
};

/// Which store backend a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps a test's temporary files alive.
pub struct Env {
    pub app: App,
    pub dir: tempfile::TempDir,
    pub url: String,
}

/// People: alice (oncall, sre-lead; slack + discord), bob (oncall; slack), carol (sre-lead;
/// discord), dave (viewer), plus `extra_leads` people `lead001…` with role sre-lead.
pub fn config_text(
    store_url: &str,
    required: u32,
    expires: &str,
    extra_leads: usize,
    marker: &str,
) -> String {
    let mut people = String::from(
        r#"
[[people]]
name = "alice"
roles = ["oncall", "sre-lead"]
slack = "UALICE"
discord = "1001"

[[people]]
name = "bob"
roles = ["oncall"]
slack = "UBOB"

[[people]]
name = "carol"
roles = ["sre-lead"]
discord = "1003"

[[people]]
name = "dave"
roles = ["viewer"]
slack = "UDAVE"
"#,
    );
    for i in 0..extra_leads {
        people.push_str(&format!(
            "\n[[people]]\nname = \"lead{i:03}\"\nroles = [\"sre-lead\"]\n"
        ));
    }
    format!(
        r#"
[store]
url = "{store_url}"
max_connections = 16

[approvals]
required = {required}
expires_after = "{expires}"

[engine]
lease = "3s"
poll_interval = "50ms"
shutdown_grace = "5s"

{people}

[regions.us-east-1]
role = "primary"
vars = {{ marker = "{marker}-east" }}

[regions.us-west-2]
role = "secondary"
vars = {{ marker = "{marker}" }}

[[runbooks]]
name = "failover"
command = "failover"
request_roles = ["oncall", "sre-lead"]
approve_roles = ["sre-lead"]

[[runbooks.steps]]
name = "preflight"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo preflight {{region}} >> {{region.marker}}.pre"] }}
destructive = false
idempotent = true

[[runbooks.steps]]
name = "promote"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo promote {{region}} >> {{region.marker}}"] }}

[[runbooks.steps]]
name = "switch"
type = "exec"
with = {{ command = "sh", args = ["-c", "echo switch >> {{region.marker}}"] }}
gate = true

[[runbooks]]
name = "pitr"
command = "pitr"
request_roles = ["sre-lead"]
approve_roles = ["sre-lead", "oncall"]

[[runbooks.steps]]
name = "recover"
type = "exec"
with = {{ command = "true" }}
"#
    )
}

/// A fresh store URL for `backend` under `dir`.
pub fn store_url(backend: Backend, dir: &std::path::Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("drbot.db").display()),
        Backend::Postgres => {
            recovery::testkit::shared::fresh_database("drbot").expect("fresh PostgreSQL database")
        }
    }
}

/// The lines of a marker file (none when it does not exist yet).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Builds validated settings from config text.
pub fn settings(text: &str) -> Settings {
    let parsed = parse_str(text, std::path::Path::new("."), &|_| None)
        .unwrap_or_else(|e| panic!("test config does not parse:\n{e}"));
    Settings::from_parsed(parsed, PathBuf::from("test.toml"))
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"))
}

/// An app with the default test config (1 approval, 30 min expiry).
pub async fn env(backend: Backend) -> Env {
    env_with(backend, 1, "30m", 0).await
}

/// An app with a chosen approval rule.
pub async fn env_with(backend: Backend, required: u32, expires: &str, extra: usize) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = store_url(backend, dir.path());
    let marker = dir.path().join("marker");
    let text = config_text(
        &url,
        required,
        expires,
        extra,
        &marker.display().to_string(),
    );
    let s = settings(&text);
    let store = Store::connect(&url, 16).await.expect("store connects");
    Env {
        app: App::new(s, store),
        dir,
        url,
    }
}

/// Same store, a different config text (e.g. to change the plan).
pub fn reconfigure(env: &Env, text: &str) -> App {
    let s = settings(text);
    App::new(s, env.app.store.clone())
}

pub fn cli(app: &App, person: &str) -> Actor {
    Actor::cli(&app.settings, person)
}

pub fn slack(app: &App, id: &str) -> Actor {
    Actor::chat(&app.settings, Platform::Slack, id, "C1")
}

pub fn discord(app: &App, id: &str) -> Actor {
    Actor::chat(&app.settings, Platform::Discord, id, "D1")
}

/// Waits until run `id` reaches one of `states` (or panics after `secs`).
pub async fn wait_state(app: &App, id: i64, states: &[RunState], secs: u64) -> RunState {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let run = app
            .store
            .run(id)
            .await
            .expect("read run")
            .expect("run exists");
        if states.contains(&run.state) {
            return run.state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run {id} stuck in {:?} (wanted {states:?}); detail {:?}",
            run.state,
            run.detail
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the test body on both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::common::Backend::Sqlite).await }) *
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::common::Backend::Postgres).await }) *
        }
    };
}

/// Serves `app`'s real router (`drbot::server::router`) on a loopback port until the test's
/// runtime ends; returns its address.
pub async fn serve(app: &App) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().unwrap();
    let router = drbot::server::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// GET `http://addr{path}`: (status, content type, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ctype, r.text().await.unwrap())
}
