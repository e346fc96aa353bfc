//! Shared by the email tests: starts a real aiosmtpd SMTP server on loopback (from the venv
//! that `.ci/test` prepares) and reads the Maildir it writes; `postfix` starts a private
//! Postfix (CHUNKING).

#![allow(dead_code)]

pub mod postfix;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Waits up to 20 s for a test server `name` to accept connections on 127.0.0.1:`port`.
/// `exited` tells why the server is gone (fails at once); `log` is shown on a timeout.
pub fn wait_listening(
    port: u16,
    name: &str,
    mut exited: impl FnMut() -> Option<String>,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(why) = exited() {
            panic!("{name} exited before listening: {why}");
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {port} within 20 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running aiosmtpd, killed on drop.
pub struct Smtpd {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The Maildir it delivers to.
    pub maildir: PathBuf,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The custom handler. `mode` is a comma-separated set: `flaky` answers 451 to the first DATA
/// of each recipient set; `reject` answers 550 at RCPT for addresses starting with `unknown`;
/// `greylist` answers 450 at the first RCPT of each address; `drop` closes the connection
/// without a reply (and without storing) at every third DATA, logging `drop` lines to
/// `drops.log`; `pipe` advertises PIPELINING (aiosmtpd reads commands in order, so pipelined
/// ones work); `refuse` answers EHLO with `554` (a relay refusing service). Every EHLO is
/// logged to `ehlo.log` (one line per connection). Accepted messages go to the Maildir.
const HANDLER: &str = r#"
import mailbox, os

class Handler:
    def __init__(self, maildir, mode):
        self.box = mailbox.Maildir(maildir)
        self.mode = set(mode.split(","))
        self.seen = set()
        self.greylisted = set()
        self.datas = 0
        self.dir = os.path.dirname(os.path.abspath(maildir))

    @classmethod
    def from_cli(cls, parser, *args):
        return cls(*args)

    def log(self, name, line):
        with open(os.path.join(self.dir, name), "a") as f:
            f.write(line + "\n")

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.log("ehlo.log", hostname)
        if "refuse" in self.mode:
            return ["554 5.7.1 Service refused, try again later"]
        if "pipe" in self.mode:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "reject" in self.mode and address.startswith("unknown"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if "greylist" in self.mode and address not in self.greylisted:
            self.greylisted.add(address)
            return "450 4.2.0 <%s>: Recipient address rejected: Greylisted" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.datas += 1
        if "drop" in self.mode and self.datas % 3 == 0:
            self.log("drops.log", "drop")
            server.transport.close()
            return "421 4.3.0 closing"
        key = tuple(envelope.rcpt_tos)
        if "flaky" in self.mode and key not in self.seen:
            self.seen.add(key)
            return "451 4.3.0 Mailbox temporarily unavailable, try again"
        self.box.add(envelope.original_content)
        return "250 2.0.0 Ok: queued"
"#;

impl Smtpd {
    /// aiosmtpd with its stock Maildir handler.
    pub fn mailbox(dir: &Path) -> Smtpd {
        let maildir = dir.join("maildir");
        Self::start(
            dir,
            &maildir,
            &["-c", "aiosmtpd.handlers.Mailbox"],
            &[&maildir],
        )
    }

    /// aiosmtpd with the test handler in `mode` (see `HANDLER`, e.g. `flaky` or `reject,pipe`).
    pub fn custom(dir: &Path, mode: &str) -> Smtpd {
        let maildir = dir.join("maildir");
        std::fs::write(dir.join("drbot_test_handler.py"), HANDLER).unwrap();
        Self::start(
            dir,
            &maildir,
            &["-c", "drbot_test_handler.Handler"],
            &[&maildir, Path::new(mode)],
        )
    }

    fn start(dir: &Path, maildir: &Path, class: &[&str], args: &[&Path]) -> Smtpd {
        let python = python();
        let port = free_port();
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(class)
            .args(args)
            .env("PYTHONPATH", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        let mut smtpd = Smtpd {
            child,
            port,
            maildir: maildir.to_path_buf(),
        };
        wait_listening(
            port,
            "aiosmtpd",
            || smtpd.child.try_wait().unwrap().map(|s| s.to_string()),
            String::new,
        );
        smtpd
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Lines of the handler's log `name` (`ehlo.log`: one per connection; `drops.log`).
    pub fn log_lines(&self, name: &str) -> usize {
        let dir = self.maildir.parent().unwrap();
        std::fs::read_to_string(dir.join(name)).map_or(0, |t| t.lines().count())
    }

    /// Every message in the Maildir (`new/` and `cur/`), raw.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else {
                continue;
            };
            for entry in entries {
                out.push(std::fs::read(entry.unwrap().path()).unwrap());
            }
        }
        out
    }
}

/// The value of header `name` in a parsed message (decoded), panicking when missing.
pub fn header(mail: &mailparse::ParsedMail<'_>, name: &str) -> String {
    use mailparse::MailHeaderMap;
    mail.headers
        .get_first_value(name)
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// A free port where nothing listens (for connection-refused tests).
pub fn closed_port() -> u16 {
    free_port()
}

/// Asserts that `d` ended in a refusal: permanent or temporary as `permanent` says, with SMTP
/// `code` and a server text containing `text`.
pub fn assert_refused(d: &notifier::email::Delivery, permanent: bool, code: u16, text: &str) {
    use notifier::email::SendError;
    let (was_permanent, got, message) = match &d.result {
        Err(SendError::Permanent { code, message }) => (true, code, message),
        Err(SendError::Temporary { code, message }) => (false, code, message),
        _ => panic!("expected an SMTP refusal: {d:?}"),
    };
    let kind = if permanent { "permanent" } else { "temporary" };
    assert_eq!(
        (was_permanent, *got),
        (permanent, Some(code)),
        "expected a {kind} {code}: {d:?}"
    );
    assert!(message.contains(text), "{message}");
}
