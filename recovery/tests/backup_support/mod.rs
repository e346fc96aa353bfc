//! Shared by the backup test binaries: one moto S3 server per test binary, and the two kinds
//! of backup store (a local directory, a moto S3 bucket) the same tests run against.

#![allow(dead_code)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use recovery::resources::BackupStoreDef;

/// Bucket every S3 test uses (each test has its own prefix).
pub const BUCKET: &str = "drbot-tests";

static MOTO: OnceLock<String> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(1);

/// `moto_server` from `$DRBOT_MOTO_SERVER`, `~/.cache/drbot-venv/bin`, or `PATH`; panics with
/// what to do when there is none (the test must fail, not pass silently).
fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DRBOT_MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = PathBuf::from(home).join(".cache/drbot-venv/bin/moto_server");
        if venv.is_file() {
            return venv;
        }
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return PathBuf::from("moto_server");
    }
    panic!(
        "moto_server is not installed: run `bash .ci/test` once (it installs moto into \
         ~/.cache/drbot-venv), or set DRBOT_MOTO_SERVER to a moto_server binary"
    );
}

/// Must be called first in every test: sets the fake AWS credentials (before any thread could
/// read the environment) and starts moto once per test binary. Returns its endpoint.
pub fn moto() -> String {
    MOTO.get_or_init(|| {
        // SAFETY: runs once, first thing in the first test; other tests wait on the OnceLock.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
            std::env::set_var("AWS_DEFAULT_REGION", "us-east-1");
            std::env::remove_var("AWS_SESSION_TOKEN");
            std::env::remove_var("AWS_ENDPOINT");
        }
        let bin = moto_binary();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // The child is started from a thread that never ends, so PR_SET_PDEATHSIG (which fires
        // when the spawning thread exits) kills moto exactly when this test binary exits.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt as _;
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let ok = child.is_ok();
            let _ = tx.send(
                child
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", bin.display())),
            );
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        if let Err(e) = rx.recv().expect("moto starter thread") {
            panic!("cannot start moto_server ({e}); run `bash .ci/test` to install it");
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} within 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Create the bucket (moto does not check signatures).
        let url = format!("{endpoint}/{BUCKET}");
        let status = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    reqwest::Client::new()
                        .put(&url)
                        .send()
                        .await
                        .map(|r| r.status())
                })
        })
        .join()
        .expect("bucket creation thread");
        match status {
            Ok(s) if s.is_success() => {}
            other => panic!("creating bucket {BUCKET} on moto failed: {other:?}"),
        }
        endpoint
    })
    .clone()
}

/// A store definition of each kind, each empty and private to the caller: `("local", …)` in a
/// fresh temp dir (kept alive by the returned guard) and `("s3", …)` under a fresh prefix.
pub fn stores() -> (Vec<(&'static str, BackupStoreDef)>, tempfile::TempDir) {
    let endpoint = moto();
    let dir = tempfile::tempdir().expect("temp dir");
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("t{}-{n}/backups/", std::process::id());
    (
        vec![
            (
                "local",
                BackupStoreDef::Local {
                    path: dir.path().join("backups"),
                },
            ),
            (
                "s3",
                BackupStoreDef::S3 {
                    bucket: BUCKET.into(),
                    prefix,
                    region: Some("us-east-1".into()),
                    endpoint: Some(endpoint),
                },
            ),
        ],
        dir,
    )
}
