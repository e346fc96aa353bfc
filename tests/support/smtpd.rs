//! A real SMTP server for the end-to-end tests: aiosmtpd (from the venv `.ci/test` prepares)
//! on loopback, delivering to a Maildir the tests read, with a handler that can answer `451`
//! to the first attempt of each recipient.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The Python interpreter that has aiosmtpd: `$DRBOT_AIOSMTPD_PYTHON`, else the venv that
/// `.ci/test` creates. Panics with how to get it when neither works.
pub fn python() -> PathBuf {
    let candidate = std::env::var_os("DRBOT_AIOSMTPD_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/drbot-venv/bin/python"))
        })
        .expect("neither DRBOT_AIOSMTPD_PYTHON nor HOME is set");
    let ok = Command::new(&candidate)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "aiosmtpd is not available through {}; run `bash .ci/test` (it installs aiosmtpd into \
         ~/.cache/drbot-venv and sets DRBOT_AIOSMTPD_PYTHON)",
        candidate.display()
    );
    candidate
}

/// The handler: every accepted message goes to the Maildir. With `tempfail`, the first DATA
/// of each recipient set is answered `451` (and logged to `tempfail.log`), later ones accepted;
/// with `reject`, recipients whose address starts with `unknown` get `550` at RCPT.
const HANDLER: &str = r#"
import mailbox, os

class Handler:
    def __init__(self, maildir, mode):
        self.box = mailbox.Maildir(maildir)
        self.mode = set(mode.split(","))
        self.failed = set()
        self.dir = os.path.dirname(os.path.abspath(maildir))

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "reject" in self.mode and address.startswith("unknown"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        key = ",".join(envelope.rcpt_tos)
        if "tempfail" in self.mode and key not in self.failed:
            self.failed.add(key)
            with open(os.path.join(self.dir, "tempfail.log"), "a") as f:
                f.write(key + "\n")
            return "451 4.3.0 Mailbox temporarily unavailable, try again"
        self.box.add(envelope.original_content)
        return "250 2.0.0 Ok: queued"
"#;

/// A running aiosmtpd, killed on drop.
pub struct Smtpd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The Maildir it delivers to.
    pub maildir: PathBuf,
    dir: PathBuf,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtpd {
    /// Starts aiosmtpd in `dir` with the handler in `mode`: `accept`, or a comma-separated
    /// set of `tempfail` and `reject`.
    pub fn start(dir: &Path, mode: &str) -> Smtpd {
        let maildir = dir.join("maildir");
        std::fs::write(dir.join("drbot_e2e_smtp.py"), HANDLER).expect("handler file");
        let port = crate::free_port();
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "drbot_e2e_smtp.Handler"])
            .arg(&maildir)
            .arg(mode)
            .env("PYTHONPATH", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let mut smtpd = Smtpd {
            child,
            port,
            maildir,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = smtpd.child.try_wait().expect("aiosmtpd status") {
                panic!("aiosmtpd exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        smtpd
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// How many messages the Maildir holds.
    pub fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|sub| {
                std::fs::read_dir(self.maildir.join(sub)).map_or(0, |entries| entries.count())
            })
            .sum()
    }

    /// Every message in the Maildir, raw.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    out.push(bytes);
                }
            }
        }
        out
    }

    /// Recipients the `tempfail` handler answered `451`, one line each.
    pub fn tempfailed(&self) -> Vec<String> {
        crate::lines(&self.dir.join("tempfail.log"))
    }

    /// Waits until the Maildir holds at least `n` messages, or panics after `secs`.
    pub fn wait_count(&self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "the SMTP server got {} of {n} messages within {secs} s",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
