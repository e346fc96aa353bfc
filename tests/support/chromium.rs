//! Headless Chromium for page tests: find the browser (`DRBOT_CHROMIUM`, else `chromium`,
//! `chromium-browser` or `google-chrome` on `PATH`), run it with a throwaway profile and a
//! timeout, and check the PNG screenshots it writes.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// Longest a Chromium run may take.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// `DRBOT_CHROMIUM` if set, else the first of the usual names on `PATH`.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DRBOT_CHROMIUM") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in BROWSERS {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "headless Chromium not found (looked for {} on PATH, or DRBOT_CHROMIUM): run `bash .ci/test`, \
         which installs Debian's chromium",
        BROWSERS.join(", ")
    );
}

/// Runs headless Chromium with `args` after the common flags and a profile in `profile`;
/// returns stdout. Panics on a non-zero exit or after [`TIMEOUT`].
pub fn run(profile: &Path, args: &[&str]) -> String {
    let bin = bin();
    let mut child = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; run `bash .ci/test`", bin.display()));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} took longer than {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    assert!(
        status.success(),
        "chromium {args:?} failed with {status}:\n{err}"
    );
    out
}

/// `$CARGO_TARGET_DIR/test-artifacts` (else the workspace's `target/test-artifacts`), created.
pub fn artifact_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("creating the test artifact directory");
    dir
}

/// Screenshots `url` at `width`×`height` into `png` and checks it is a PNG of that size
/// holding more than a blank page would (`min_bytes`); returns its size in bytes.
pub fn screenshot(
    profile: &Path,
    url: &str,
    png: &Path,
    (width, height): (u32, u32),
    min_bytes: usize,
) -> usize {
    let _ = std::fs::remove_file(png);
    run(
        profile,
        &[
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={width},{height}"),
            url,
        ],
    );
    let bytes = std::fs::read(png)
        .unwrap_or_else(|e| panic!("Chromium wrote no screenshot at {}: {e}", png.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let w = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let h = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
    assert_eq!((w, h), (width, height), "screenshot size");
    assert!(
        bytes.len() > min_bytes,
        "screenshot is only {} bytes: blank page?",
        bytes.len()
    );
    bytes.len()
}
