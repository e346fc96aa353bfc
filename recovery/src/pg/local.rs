//! Local PostgreSQL 15 clusters in a directory of the caller's: a primary (`initdb`, started
//! on a free loopback port with trust authentication for the `postgres` user), streaming
//! replicas (`pg_basebackup -R`), WAL archiving, `psql`, stop/kill/restart. `drbot demo` builds
//! its two regions with it, and the test kit's throwaway clusters (`testkit::pg`) wrap it in a
//! temp dir.
//!
//! A cluster directory holds `data/`, `archive/` (WAL archive), `run/` (unix socket) and
//! `postgres.log`. PostgreSQL binaries are looked up in `$DRBOT_PG_BIN`, then
//! `/usr/lib/postgresql/15/bin`, then `pg_config --bindir`. When drbot runs as root, every
//! server-side binary runs as the `postgres` system user through `runuser -u postgres --`, and
//! the cluster directory is given to it (its ancestors must be searchable by it, as under
//! `/tmp`). Dropping a [`LocalCluster`] stops its server (immediate mode); the directory is the
//! caller's to remove.

use std::fs;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{is_root, quote_ident, user_ids};

/// Default PostgreSQL 15 binary directory on Debian/Ubuntu.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Environment variable that overrides the PostgreSQL binary directory.
const BIN_ENV: &str = "DRBOT_PG_BIN";
/// Address every cluster listens on.
const HOST: &str = "127.0.0.1";
/// Superuser name of every cluster (also the OS user the servers run as when tests run as root).
const SUPERUSER: &str = "postgres";
/// Included from `postgresql.conf`; holds the settings that differ per cluster (port, socket dir,
/// archive dir). Rewritten before every start, so it survives being copied by `pg_basebackup` or
/// `pg_rewind` from another cluster.
const LOCAL_CONF: &str = "drbot-local.conf";
/// How many lines of the server log an error carries.
const LOG_TAIL_LINES: usize = 30;
/// How many fresh ports a first start tries before giving up.
const PORT_ATTEMPTS: usize = 5;
/// `pg_ctl -t` for start and stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Options for [`LocalCluster::start_with`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Turn on WAL archiving (`archive_mode = on`) into [`LocalCluster::archive_dir`]. Default `true`.
    pub archive: bool,
    /// Extra `postgresql.conf` settings, written after the built-in ones (so they override them).
    /// Values are written single-quoted by this module: pass them unquoted, e.g. `("work_mem", "8MB")`.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for LocalOptions {
    /// Archiving on, no extra settings.
    fn default() -> Self {
        LocalOptions {
            archive: true,
            extra_conf: Vec::new(),
        }
    }
}

/// One local PostgreSQL cluster (primary or replica) in its own directory.
///
/// Dropping it stops the server (immediate mode); errors are ignored there.
#[derive(Debug)]
pub struct LocalCluster {
    /// The cluster directory: holds `data/`, `archive/`, `run/` (unix socket) and `postgres.log`.
    dir: PathBuf,
    data_dir: PathBuf,
    archive_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    running: bool,
}

impl LocalCluster {
    /// The PostgreSQL binary directory: `$DRBOT_PG_BIN` if set (it must contain `initdb`), else
    /// `/usr/lib/postgresql/15/bin` if it contains `initdb`, else `pg_config --bindir`.
    pub fn bin_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            if !dir.join("initdb").is_file() {
                bail!("${BIN_ENV} is {} but it holds no initdb", dir.display());
            }
            return Ok(dir);
        }
        let default = PathBuf::from(DEFAULT_BIN_DIR);
        if default.join("initdb").is_file() {
            return Ok(default);
        }
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .stdin(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        match from_pg_config {
            Some(dir) if dir.join("initdb").is_file() => Ok(dir),
            _ => bail!(
                "no PostgreSQL binaries: set ${BIN_ENV}, or install PostgreSQL 15 \
                 (`apt-get install -y postgresql-15`) so that {DEFAULT_BIN_DIR}/initdb exists"
            ),
        }
    }

    /// Full path of one PostgreSQL binary in [`LocalCluster::bin_dir`], e.g. `bin("pg_dump")`.
    pub fn bin(name: &str) -> Result<PathBuf> {
        let path = Self::bin_dir()?.join(name);
        if !path.is_file() {
            bail!("PostgreSQL binary {} does not exist", path.display());
        }
        Ok(path)
    }

    /// `initdb` a fresh cluster in directory `dir` (created if missing; it must be empty) with
    /// `opts` and start it as a primary.
    ///
    /// Settings: `wal_level = replica`, `fsync = off`, `wal_log_hints = on` (so `pg_rewind` works),
    /// room for WAL senders and slots, `hot_standby = on`, and when `opts.archive` is set
    /// `archive_mode = on` with an `archive_command` copying into [`LocalCluster::archive_dir`].
    pub fn start_primary(dir: &Path, opts: &LocalOptions) -> Result<LocalCluster> {
        let mut cluster = Self::init_primary(dir, opts)?;
        cluster.start_server(true)?;
        Ok(cluster)
    }

    /// `initdb` plus configuration, without starting the server.
    fn init_primary(dir: &Path, opts: &LocalOptions) -> Result<LocalCluster> {
        let cluster = Self::create_layout(dir)?;

        let data = path_str(&cluster.data_dir)?.to_owned();
        let initdb = cluster.bin_dir.join("initdb");
        cluster.run_checked(
            &initdb,
            &[
                "-D",
                &data,
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
        )?;

        let hba = format!(
            "# Written by drbot: trust for {SUPERUSER} on loopback and the private socket only.\n\
             local all         {SUPERUSER} trust\n\
             local replication {SUPERUSER} trust\n\
             host  all         {SUPERUSER} {HOST}/32 trust\n\
             host  replication {SUPERUSER} {HOST}/32 trust\n"
        );
        write_owned(&cluster.data_dir.join("pg_hba.conf"), &hba)?;

        let mut conf = String::from("\n# --- drbot ---\n");
        let archive_mode = if opts.archive { "on" } else { "off" };
        let settings = [
            ("listen_addresses", HOST),
            ("max_connections", "200"),
            ("shared_buffers", "32MB"),
            ("fsync", "off"),
            ("full_page_writes", "on"),
            ("wal_log_hints", "on"),
            ("wal_level", "replica"),
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
            ("wal_keep_size", "128MB"),
            ("hot_standby", "on"),
            ("archive_mode", archive_mode),
            ("log_line_prefix", "%m [%p] "),
        ];
        for (key, value) in settings {
            conf.push_str(&conf_line(key, value));
        }
        conf.push_str(&format!("include_if_exists '{LOCAL_CONF}'\n"));
        for (key, value) in &opts.extra_conf {
            conf.push_str(&conf_line(key, value));
        }
        append_file(&cluster.data_dir.join("postgresql.conf"), &conf)?;
        Ok(cluster)
    }

    /// Take a base backup of `primary` (`pg_basebackup -R -X stream -c fast`) into directory
    /// `dir` (created if missing; it must be empty), start it as a streaming hot standby, and
    /// check that it is in recovery.
    ///
    /// The replica inherits the primary's `postgresql.conf` (including `extra_conf`); its port,
    /// socket dir and archive dir are its own.
    pub fn start_replica(dir: &Path, primary: &LocalCluster) -> Result<LocalCluster> {
        if !primary.running {
            bail!("cannot take a base backup: the primary is not running");
        }
        let mut replica = Self::create_layout(dir)?;
        let data = path_str(&replica.data_dir)?.to_owned();
        let port = primary.port.to_string();
        let basebackup = replica.bin_dir.join("pg_basebackup");
        replica.run_checked(
            &basebackup,
            &[
                "-h",
                HOST,
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-w",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        replica.start_server(true)?;
        if !replica.is_in_recovery()? {
            bail!(
                "the replica started but is not in recovery\n{}",
                replica.log_tail()
            );
        }
        Ok(replica)
    }

    /// TCP port the server listens on (kept across [`LocalCluster::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host the server listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// Connection URL for database `db` as the superuser: `postgres://postgres@127.0.0.1:PORT/db`.
    /// `db` is inserted as is (not percent-encoded).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@{HOST}:{}/{db}", self.port)
    }

    /// libpq key/value connection string for database `db`, e.g. for
    /// `pg_rewind --source-server` or `primary_conninfo`.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={HOST} port={} user={SUPERUSER} dbname={db}",
            self.port
        )
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The WAL archive directory `archive_command` copies into (empty until WAL gets archived).
    pub fn archive_dir(&self) -> &Path {
        &self.archive_dir
    }

    /// The server log file (`pg_ctl -l`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The cluster's directory, holding the data dir, archive, socket dir and log. It is owned by
    /// the cluster owner (see [`LocalCluster::run_as_owner`]); put extra files for the server here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this handle started the server and has not stopped it since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Run `sql` in database `db` with `psql -X -At -v ON_ERROR_STOP=1` (SQL fed on stdin, so it
    /// may hold several statements, including `CREATE DATABASE`) and return its trimmed stdout
    /// (one line per row, columns separated by `|`). The error includes psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let psql = self.bin_dir.join("psql");
        let port = self.port.to_string();
        let mut cmd = Command::new(&psql);
        cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p"])
            .arg(&port)
            .args(["-U", SUPERUSER, "-d", db, "-f", "-"]);
        prepare(&mut cmd, &self.dir);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", psql.display()))?;
        let mut stdin = child.stdin.take().context("psql stdin")?;
        // Write from a thread so a large result cannot deadlock against a full stdout pipe.
        let sql_owned = sql.to_owned();
        let writer = thread::spawn(move || stdin.write_all(sql_owned.as_bytes()));
        let out = child.wait_with_output().context("waiting for psql")?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("psql stdin writer panicked"))?;
        if !out.status.success() {
            bail!(
                "psql on port {} db {db} failed ({}): {}\nSQL: {sql}",
                self.port,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        written.context("writing SQL to psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `CREATE DATABASE name` (the name is quoted as an identifier).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )?;
        Ok(())
    }

    /// Run a PostgreSQL tool as the cluster owner: through `runuser -u postgres --` when running as
    /// root, directly otherwise; working directory is [`LocalCluster::dir`], stdin is null, `PG*`
    /// environment variables are removed. A bare name such as `Path::new("pg_rewind")` is looked up
    /// with [`LocalCluster::bin`]. The exit status is not checked: look at `Output::status`.
    pub fn run_as_owner(&self, program: &Path, args: &[&str]) -> Result<Output> {
        let program = resolve_program(program)?;
        let mut cmd = owner_command(&program);
        cmd.args(args);
        prepare(&mut cmd, &self.dir);
        cmd.stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", program.display()))
    }

    /// Stop the server (`pg_ctl -m fast stop`). Does nothing if it is not running.
    pub fn stop(&mut self) -> Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stop the server like a crash (`pg_ctl -m immediate stop`): the next start runs crash
    /// recovery. Does nothing if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Start the server again on the same port (after [`LocalCluster::stop`], [`LocalCluster::kill`],
    /// or a tool such as `pg_rewind`); if it is running it is stopped (fast) first. The
    /// per-cluster settings (port, socket dir, archive dir) are rewritten before the start.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start_server(false)
    }

    /// Wait until this replica has replayed everything `primary` has written so far
    /// (`pg_last_wal_replay_lsn() >= ` the primary's `pg_current_wal_lsn()`, or its replay LSN if the
    /// primary is itself a standby). The error on timeout includes both LSNs and this server's log.
    pub fn wait_for_replay(&self, primary: &LocalCluster, timeout: Duration) -> Result<()> {
        let target = primary
            .psql(
                "postgres",
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_lsn() END",
            )
            .context("reading the primary's WAL position")?;
        if target.is_empty() {
            bail!("the primary reported no WAL position");
        }
        let query = format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= '{target}'::pg_lsn, false), \
             pg_last_wal_replay_lsn()"
        );
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.psql("postgres", &query);
            if let Ok(row) = &last
                && row.starts_with("t|")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen = match last {
                    Ok(row) => row,
                    Err(err) => format!("{err:#}"),
                };
                bail!(
                    "replica on port {} did not replay up to {target} within {timeout:?} \
                     (last: {seen})\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `SELECT pg_is_in_recovery()`: true for a standby, false for a primary.
    pub fn is_in_recovery(&self) -> Result<bool> {
        match self
            .psql("postgres", "SELECT pg_is_in_recovery()")?
            .as_str()
        {
            "t" => Ok(true),
            "f" => Ok(false),
            other => bail!("unexpected pg_is_in_recovery() result {other:?}"),
        }
    }

    /// Switch to a new WAL segment and wait until the finished one is in
    /// [`LocalCluster::archive_dir`]; returns its file name. Useful before a PITR from the archive.
    pub fn archive_current_wal(&self, timeout: Duration) -> Result<String> {
        let name = self.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
        let path = self.archive_dir.join(&name);
        let deadline = Instant::now() + timeout;
        while !path.is_file() {
            if Instant::now() >= deadline {
                bail!(
                    "WAL segment {name} not archived into {} within {timeout:?}\n{}",
                    self.archive_dir.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        // The file lands before the archiver reports it in pg_stat_archiver; wait for both.
        loop {
            let last = self.psql(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            )?;
            if last.as_str() >= name.as_str() {
                break;
            }
            if Instant::now() >= deadline {
                bail!("pg_stat_archiver still reports {last:?}, not {name}, after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(name)
    }

    /// Append settings to `postgresql.conf` (after everything else, so they win); they take effect
    /// on [`LocalCluster::restart`] or `SELECT pg_reload_conf()`. Values are written single-quoted.
    pub fn append_conf(&self, settings: &[(&str, &str)]) -> Result<()> {
        let text: String = settings.iter().map(|(k, v)| conf_line(k, v)).collect();
        append_file(&self.data_dir.join("postgresql.conf"), &text)
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => {
                return format!("(no server log at {}: {err})", self.log_path.display());
            }
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "--- last {} lines of {} ---\n{}",
            tail.len(),
            self.log_path.display(),
            tail.join("\n")
        )
    }

    /// Make directory `dir` (if missing; it must be empty) with `data/`, `archive/` and `run/`,
    /// owned by the cluster owner.
    fn create_layout(dir: &Path) -> Result<LocalCluster> {
        let bin_dir = Self::bin_dir()?;
        let owner = owner_ids()?;
        fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        if fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
        {
            bail!(
                "{} is not empty: a new cluster needs an empty directory",
                dir.display()
            );
        }
        if let Some((uid, gid)) = owner {
            check_traversable(dir, uid)?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", dir.display()))?;
        }
        let make = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod {}", path.display()))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", path.display()))?;
            }
            Ok(path)
        };
        let data_dir = make("data")?;
        let archive_dir = make("archive")?;
        let socket_dir = make("run")?;
        let log_path = dir.join("postgres.log");
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            data_dir,
            archive_dir,
            socket_dir,
            log_path,
            bin_dir,
            port: free_port()?,
            running: false,
        })
    }

    /// Write the per-cluster settings file included from `postgresql.conf`.
    fn write_local_conf(&self) -> Result<()> {
        let archive = path_str(&self.archive_dir)?;
        let command = format!("test ! -f {archive}/%f && cp %p {archive}/%f");
        let text = format!(
            "# Written by drbot before every start.\n{}{}{}",
            conf_line("port", &self.port.to_string()),
            conf_line("unix_socket_directories", path_str(&self.socket_dir)?),
            conf_line("archive_command", &command),
        );
        write_owned(&self.data_dir.join(LOCAL_CONF), &text)
    }

    /// `pg_ctl -w start`; with `new_port_on_conflict`, retry on fresh ports while the failure is
    /// "address already in use".
    fn start_server(&mut self, new_port_on_conflict: bool) -> Result<()> {
        let attempts = if new_port_on_conflict {
            PORT_ATTEMPTS
        } else {
            1
        };
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let data = path_str(&self.data_dir)?.to_owned();
        let log = path_str(&self.log_path)?.to_owned();
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.port = free_port()?;
            }
            self.write_local_conf()?;
            let log_len = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
            let out = self.run_as_owner(
                &pg_ctl,
                &[
                    "-D",
                    &data,
                    "-l",
                    &log,
                    "-w",
                    "-t",
                    PG_CTL_TIMEOUT_SECS,
                    "start",
                ],
            )?;
            if out.status.success() {
                self.running = true;
                return Ok(());
            }
            // Leave nothing half-started behind (e.g. after a -t timeout).
            let _ = self.run_as_owner(&pg_ctl, &["-D", &data, "-m", "immediate", "-w", "stop"]);
            let new_log = fs::read(&self.log_path)
                .map(|b| {
                    String::from_utf8_lossy(&b[(log_len as usize).min(b.len())..]).into_owned()
                })
                .unwrap_or_default();
            if attempt < attempts && new_log.contains("Address already in use") {
                continue;
            }
            bail!(
                "PostgreSQL failed to start on port {} (data dir {}):\n{}\n{}\n{}",
                self.port,
                self.data_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim(),
                self.log_tail()
            );
        }
        unreachable!("the last attempt returns or bails")
    }

    /// `pg_ctl -m MODE -w stop`; fine if the server is already down.
    fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let data = path_str(&self.data_dir)?.to_owned();
        let out = self.run_as_owner(
            &pg_ctl,
            &[
                "-D",
                &data,
                "-m",
                mode,
                "-w",
                "-t",
                PG_CTL_TIMEOUT_SECS,
                "stop",
            ],
        )?;
        if out.status.success() {
            self.running = false;
            return Ok(());
        }
        // `pg_ctl status` exits with 3 when no server is running: it was already down.
        let status = self.run_as_owner(&pg_ctl, &["-D", &data, "status"])?;
        if status.status.code() == Some(3) {
            self.running = false;
            return Ok(());
        }
        bail!(
            "pg_ctl -m {mode} stop failed on port {}: {}\n{}",
            self.port,
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log_tail()
        )
    }

    /// Run a binary as the cluster owner and fail (with its output) unless it exits 0.
    fn run_checked(&self, program: &Path, args: &[&str]) -> Result<Output> {
        let out = self.run_as_owner(program, args)?;
        if !out.status.success() {
            bail!(
                "{} {} failed ({}):\n{}\n{}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Also covers a server started behind this handle's back (e.g. via run_as_owner + pg_ctl).
        if self.running || self.data_dir.join("postmaster.pid").exists() {
            if let Ok(data) = path_str(&self.data_dir) {
                let pg_ctl = self.bin_dir.join("pg_ctl");
                let _ = self.run_as_owner(&pg_ctl, &["-D", data, "-m", "immediate", "-w", "stop"]);
            }
            self.running = false;
        }
    }
}

/// `(uid, gid)` of the `postgres` user when running as root (servers must run as it), else `None`.
fn owner_ids() -> Result<Option<(u32, u32)>> {
    if !is_root() {
        return Ok(None);
    }
    user_ids(SUPERUSER)?.map(Some).ok_or_else(|| {
        anyhow!(
            "running as root but there is no `{SUPERUSER}` system user to run PostgreSQL as; \
             install PostgreSQL 15 (`apt-get install -y postgresql-15`) or run as another user"
        )
    })
}

/// Every ancestor of `dir` must be searchable by `uid`, or the server cannot reach its data dir.
fn check_traversable(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for ancestor in dir.ancestors().skip(1) {
        let meta =
            fs::metadata(ancestor).with_context(|| format!("stat {}", ancestor.display()))?;
        if meta.uid() != uid && meta.mode() & 0o001 == 0 {
            bail!(
                "{} is not traversable by the {SUPERUSER} user (mode {:o}); use a temp dir \
                 under a world-searchable path such as /tmp",
                ancestor.display(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// A command that runs `program` as the cluster owner.
fn owner_command(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", SUPERUSER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Common settings for every spawned command: cwd the cluster's directory (readable by its owner),
/// no inherited `PG*` variables, C locale messages.
fn prepare(cmd: &mut Command, cwd: &Path) {
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C").env("LANG", "C");
}

/// A bare program name (`pg_rewind`) is looked up in the PostgreSQL bin dir.
fn resolve_program(program: &Path) -> Result<PathBuf> {
    if program.is_relative()
        && program.components().count() == 1
        && let Some(name) = program.to_str()
    {
        return LocalCluster::bin(name);
    }
    Ok(program.to_path_buf())
}

/// A free TCP port on 127.0.0.1 (bound to port 0 and released).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((HOST, 0)).context("binding 127.0.0.1:0 to find a port")?;
    Ok(listener.local_addr()?.port())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))
}

/// `key = 'value'` with the value quoted for postgresql.conf.
fn conf_line(key: &str, value: &str) -> String {
    format!("{key} = '{}'\n", value.replace('\'', "''"))
}

/// (Over)write a file and give it to the cluster owner, so later server-side tools can rewrite it.
fn write_owned(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))?;
    if let Some((uid, gid)) = owner_ids()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn append_file(path: &Path, text: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_moves_to_a_free_port_when_the_chosen_one_is_taken() -> Result<()> {
        let tmp = tempfile::Builder::new()
            .prefix("drbot-pg-")
            .tempdir_in("/tmp")?;
        let dir = tmp.path();
        let mut pg = LocalCluster::init_primary(dir, &LocalOptions::default())?;
        let taken = pg.port();
        let _hold = std::net::TcpListener::bind((HOST, taken))?;
        pg.start_server(true)?;
        assert_ne!(pg.port(), taken);
        assert_eq!(pg.psql("postgres", "SELECT 1")?, "1");
        // A second cluster refuses a directory that is in use.
        let err = LocalCluster::start_primary(dir, &LocalOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("is not empty"), "{err:#}");
        Ok(())
    }
}
