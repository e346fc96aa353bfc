//! A moto server (fake S3 and Route53 on one loopback port) for tests: started once per test
//! binary, killed when the binary exits, with fake AWS credentials in the environment so the
//! standard credential chain finds them.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Access key id of the fake credentials (moto accepts any).
pub const ACCESS_KEY_ID: &str = "testing";
/// Secret access key of the fake credentials.
pub const SECRET_ACCESS_KEY: &str = "testing";
/// Region the tests use.
pub const REGION: &str = "us-east-1";

static MOTO: OnceLock<String> = OnceLock::new();

/// `moto_server` from `$DRBOT_MOTO_SERVER`, `~/.cache/drbot-venv/bin`, or `PATH`; panics with
/// what to do when there is none (the test must fail, not pass silently).
pub fn binary() -> PathBuf {
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

/// Must be called first in every test that uses moto: sets the fake AWS credentials and
/// region (before any other thread could read the environment), turns the EC2 metadata
/// lookup off, and starts moto once per test binary. Returns its endpoint,
/// `http://127.0.0.1:PORT`.
pub fn endpoint() -> String {
    MOTO.get_or_init(|| {
        // SAFETY: runs once, first thing in the first test; other tests wait on the OnceLock.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY);
            std::env::set_var("AWS_DEFAULT_REGION", REGION);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            std::env::remove_var("AWS_SESSION_TOKEN");
            std::env::remove_var("AWS_ENDPOINT");
            std::env::remove_var("AWS_ENDPOINT_URL");
            std::env::remove_var("AWS_PROFILE");
        }
        start()
    })
    .clone()
}

/// Starts `moto_server` on a free loopback port and waits until it listens.
fn start() -> String {
    let bin = binary();
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
    format!("http://127.0.0.1:{port}")
}
