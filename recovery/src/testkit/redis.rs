//! Test helper: throwaway `redis-server` processes on loopback ports (a master, replicas of
//! it), with no persistence, killed when dropped.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

const HOST: &str = "127.0.0.1";

/// Options for [`RedisServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass` (and `masterauth`, so replicas of this server can use the same one).
    pub password: Option<String>,
}

/// A running `redis-server` child process; killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    dir: TempDir,
}

/// Path of `redis-server`; panics with install instructions when it is missing.
pub fn redis_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DRBOT_REDIS_SERVER").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "redis-server is not installed: run .ci/test (it installs what the tests need) or \
         `apt-get install -y redis-server`"
    );
}

impl RedisServer {
    /// Starts a master without a password.
    pub fn start() -> Result<RedisServer> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a master.
    pub fn start_with(opts: RedisOptions) -> Result<RedisServer> {
        Self::launch(&opts, None)
    }

    /// Starts a replica of `master` (same password) and waits until its link is up.
    pub fn start_replica_of(master: &RedisServer) -> Result<RedisServer> {
        let opts = RedisOptions {
            password: master.password.clone(),
        };
        let replica = Self::launch(&opts, Some(master.port))?;
        replica.wait_link_up(Duration::from_secs(30))?;
        Ok(replica)
    }

    fn launch(opts: &RedisOptions, master_port: Option<u16>) -> Result<RedisServer> {
        let bin = redis_server_bin();
        let mut last_err = None;
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("drbot-redis-")
                .tempdir()
                .context("creating a temporary directory")?;
            let port = free_port()?;
            let log = fs::File::create(dir.path().join("redis.log"))?;
            let mut cmd = Command::new(&bin);
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", HOST])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                // Replicas sync at once instead of after the default 5 s wait for more of them.
                .args(["--repl-diskless-sync-delay", "0"])
                .args(["--dir", path_str(dir.path())?])
                .args(["--logfile", ""]);
            if let Some(pw) = &opts.password {
                cmd.args(["--requirepass", pw]).args(["--masterauth", pw]);
            }
            if let Some(mp) = master_port {
                cmd.args(["--replicaof", HOST, &mp.to_string()]);
            }
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut server = RedisServer {
                child: Some(child),
                port,
                password: opts.password.clone(),
                dir,
            };
            match server.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = server.log();
                    if log.contains("Address already in use") {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e.context(format!("redis-server log:\n{log}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start redis-server")))
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("redis-server exited at start with {status}");
            }
            if let Ok(pong) = self.cmd::<String>(&["PING"])
                && pong == "PONG"
            {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "redis-server on port {} not ready after {within:?}",
                    self.port
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until this replica reports `master_link_status:up`.
    pub fn wait_link_up(&self, within: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let info = self.info_replication()?;
            if info.contains("master_link_status:up") {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!(
                    "replica on port {} has no link to its master after {within:?}:\n{info}",
                    self.port
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until this replica has processed everything its master had at call time.
    pub fn wait_caught_up(&self, master: &RedisServer, within: Duration) -> Result<()> {
        let target = field(&master.info_replication()?, "master_repl_offset")
            .ok_or_else(|| anyhow!("master has no master_repl_offset"))?;
        let start = Instant::now();
        loop {
            let info = self.info_replication()?;
            if field(&info, "slave_repl_offset").is_some_and(|o| o >= target) {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!("replica did not reach offset {target} within {within:?}:\n{info}");
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@{HOST}:{}", self.port),
            None => format!("redis://{HOST}:{}", self.port),
        }
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Runs one command (blocking) and converts the answer.
    pub fn cmd<T: ::redis::FromRedisValue>(&self, args: &[&str]) -> Result<T> {
        let client = ::redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        let (name, rest) = args.split_first().ok_or_else(|| anyhow!("empty command"))?;
        let mut c = ::redis::cmd(name);
        for a in rest {
            c.arg(*a);
        }
        Ok(c.query(&mut conn)?)
    }

    /// The text of `INFO replication`.
    pub fn info_replication(&self) -> Result<String> {
        self.cmd(&["INFO", "replication"])
    }

    /// The `role:` of `INFO replication` (`master` or `slave`).
    pub fn role(&self) -> Result<String> {
        let info = self.info_replication()?;
        info.lines()
            .find_map(|l| l.trim().strip_prefix("role:").map(str::to_string))
            .ok_or_else(|| anyhow!("no role in INFO replication:\n{info}"))
    }

    /// Kills the server at once (a crashed primary).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A numeric `key:value` field of INFO text.
fn field(info: &str, key: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':')?.parse().ok())
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((HOST, 0)).context("binding 127.0.0.1:0 to find a port")?;
    Ok(listener.local_addr()?.port())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))
}
