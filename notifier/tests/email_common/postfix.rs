//! A private Postfix instance for the email tests: its own configuration, queue and Maildir in
//! a test directory, listening on its own loopback port, offering PIPELINING and CHUNKING
//! (BDAT) as Postfix does by default. Recipients `unknown*@` get 550, `greylist*@` get 450;
//! every other recipient at `customer.example` is delivered to one Maildir. `.ci/test`
//! installs Debian's postfix; the instance is started as root (Postfix's master needs it) and
//! its delivery agents run as the `postfix` user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running Postfix instance, stopped on drop.
pub struct Postfix {
    conf: PathBuf,
    dir: PathBuf,
    /// Its SMTP port on 127.0.0.1.
    pub port: u16,
}

fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postfix"])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no `postfix` user: run `bash .ci/test` (it installs Debian's postfix)"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const MASTER_CF: &str = "\
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
";

impl Postfix {
    /// Starts an instance under `dir` (made traversable for the `postfix` user).
    pub fn start(dir: &Path) -> Postfix {
        let postfix = Path::new("/usr/sbin/postfix");
        assert!(
            postfix.exists(),
            "postfix is not installed: run `bash .ci/test` (it installs Debian's postfix)"
        );
        let (uid, gid) = (id("-u"), id("-g"));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("conf");
        for sub in ["conf", "queue", "mail", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for sub in ["mail", "data"] {
            std::os::unix::fs::chown(dir.join(sub), Some(uid), Some(gid)).unwrap();
        }
        let port = super::closed_port();
        let d = dir.display();
        std::fs::write(
            conf.join("main.cf"),
            format!(
                "compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
relay_domains =
relayhost =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
in_flow_delay = 0
virtual_mailbox_domains = customer.example
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
smtpd_recipient_restrictions = check_recipient_access regexp:{d}/conf/rcpt, \
permit_mynetworks, reject_unauth_destination
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
"
            ),
        )
        .unwrap();
        std::fs::write(
            conf.join("rcpt"),
            "/^unknown/ 550 5.1.1 User unknown\n/^greylist/ 450 4.7.1 Greylisted, try again\n",
        )
        .unwrap();
        std::fs::write(
            conf.join("master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}"),
        )
        .unwrap();
        let out = Command::new(postfix)
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .output()
            .expect("run postfix start");
        let postfix = Postfix {
            conf,
            dir: dir.to_path_buf(),
            port,
        };
        assert!(
            out.status.success(),
            "postfix start failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            postfix.log()
        );
        super::wait_listening(port, "postfix", || None, || postfix.log());
        postfix
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Postfix's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The delivered messages, raw, once there are `n` of them (panics after 60 s).
    pub fn wait_for_messages(&self, n: usize) -> Vec<Vec<u8>> {
        let new = self.dir.join("mail/maildir/new");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let count = std::fs::read_dir(&new).map_or(0, |d| d.count());
            if count >= n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postfix delivered {count} of {n} messages in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_dir(&new)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .output();
        // Wait for the master to exit before the directory goes.
        let pid = std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid.is_empty() && proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
