//! The demo's local two-region environment, built in a fresh directory under `/tmp`:
//! PostgreSQL 15 primary (`us-east-1`, database `apex` with the seed plan's tables) and its
//! streaming replica (`us-west-2`), a third cluster `test-db` for restore tests (the seed's
//! `test-db`; a hot standby cannot host a scratch database), one apex-api service per region,
//! a `file` DNS zone, a local backup directory, and the drbot config that ties them together.
//!
//! Dropping [`DemoEnv`] stops every PostgreSQL server and removes the directory, unless it was
//! told to keep it.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use recovery::pg::{
    is_root,
    local::{LocalCluster, LocalOptions},
};
use tokio_util::sync::CancellationToken;

use super::apex::{self, Apex};

/// Primary region.
pub const PRIMARY: &str = "us-east-1";
/// Secondary (DR) region.
pub const SECONDARY: &str = "us-west-2";
/// The cluster restore tests use.
pub const TEST_DB: &str = "test-db";
/// The DNS name the drill switches.
pub const DNS_NAME: &str = "api.apex.demo";
/// The application database.
pub const DATABASE: &str = "apex";

/// The seed plan's tables with some rows (what verify-backup counts).
const SEED_SQL: &str = "
CREATE TABLE projects (id bigserial PRIMARY KEY, name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE project_payloads (project_id bigint PRIMARY KEY REFERENCES projects (id),
    payload jsonb NOT NULL);
CREATE TABLE project_events (id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id), kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
INSERT INTO projects (name) SELECT 'Sign project ' || g FROM generate_series(1, 200) g;
INSERT INTO project_payloads
    SELECT id, jsonb_build_object('sign', 'SIGN-' || id, 'panels', 1 + id % 7) FROM projects;
INSERT INTO project_events (project_id, kind)
    SELECT 1 + g % 200, (ARRAY['created', 'edited', 'exported'])[1 + g % 3]
    FROM generate_series(1, 1000) g;
";

/// The PostgreSQL clusters, stopped when dropped.
struct Clusters {
    primary: LocalCluster,
    replica: LocalCluster,
    test_db: LocalCluster,
}

/// The built environment.
pub struct DemoEnv {
    /// The demo's directory.
    pub root: PathBuf,
    /// The drbot config written for it.
    pub config_path: PathBuf,
    /// The DNS record file.
    pub dns_file: PathBuf,
    /// The backup directory.
    pub backups_dir: PathBuf,
    /// apex-api of the primary region.
    pub east: Apex,
    /// apex-api of the secondary region.
    pub west: Apex,
    /// drbot's own HTTP listener (status page), bound before the config was written.
    pub listener: Option<std::net::TcpListener>,
    /// drbot's base URL.
    pub base_url: String,
    /// One line per component, for the user.
    pub lines: Vec<String>,
    clusters: Option<Clusters>,
    keep: bool,
}

impl DemoEnv {
    /// Keep the directory when dropped (PostgreSQL is still stopped).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for DemoEnv {
    fn drop(&mut self) {
        // Servers first, then their directories.
        drop(self.clusters.take());
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A fresh, world-searchable directory under `/tmp` (the `postgres` user must reach the
/// clusters inside it when drbot runs as root).
fn make_root() -> anyhow::Result<PathBuf> {
    let base = Path::new("/tmp");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let root = base.join(format!("drbot-demo-{}-{:x}", std::process::id(), stamp));
    std::fs::create_dir(&root).with_context(|| format!("mkdir {}", root.display()))?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    Ok(root)
}

/// Removes a directory on drop unless disarmed (cleanup while the environment is half built).
struct RootGuard(Option<PathBuf>);

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("a setup task panicked: {e}"))?
}

/// Builds the environment; the apex-api services stop when `shutdown` fires.
pub async fn build(shutdown: &CancellationToken) -> anyhow::Result<DemoEnv> {
    let root = make_root()?;
    let guard = RootGuard(Some(root.clone()));
    let opts = LocalOptions {
        archive: false,
        extra_conf: Vec::new(),
    };
    // The primary (seeded, then copied into the replica) and test-db start side by side.
    let (dir_p, dir_r, dir_t) = (
        root.join("pg-us-east-1"),
        root.join("pg-us-west-2"),
        root.join("pg-test-db"),
    );
    let opts_t = opts.clone();
    let test_db = blocking(move || LocalCluster::start_primary(&dir_t, &opts_t));
    let pair = blocking(move || {
        let primary = LocalCluster::start_primary(&dir_p, &opts)?;
        primary.create_database(DATABASE)?;
        primary.psql(DATABASE, SEED_SQL)?;
        let replica = LocalCluster::start_replica(&dir_r, &primary)?;
        Ok((primary, replica))
    });
    let (test_db, pair) = tokio::join!(test_db, pair);
    let (primary, replica) = pair.context("starting the us-east-1 primary and its replica")?;
    let test_db = test_db.context("starting test-db")?;
    let clusters = Clusters {
        primary,
        replica,
        test_db,
    };

    let east = apex::start(
        PRIMARY,
        "127.0.0.1",
        &clusters.primary.url(DATABASE),
        shutdown.clone(),
    )
    .await?;
    // A second loopback address makes the DNS switch visible; 127.0.0.1 if it is not usable.
    let west = match apex::start(
        SECONDARY,
        "127.0.0.2",
        &clusters.replica.url(DATABASE),
        shutdown.clone(),
    )
    .await
    {
        Ok(a) => a,
        Err(_) => {
            apex::start(
                SECONDARY,
                "127.0.0.1",
                &clusters.replica.url(DATABASE),
                shutdown.clone(),
            )
            .await?
        }
    };

    let dns_dir = root.join("dns");
    std::fs::create_dir(&dns_dir)?;
    let dns_file = dns_dir.join("hosts");
    std::fs::write(
        &dns_file,
        format!(
            "# drbot demo DNS zone (file provider)\n{} {DNS_NAME}\n",
            east.addr.ip()
        ),
    )?;
    let backups_dir = root.join("backups");
    std::fs::create_dir(&backups_dir)?;
    let runbooks_dir = root.join("runbooks");
    std::fs::create_dir(&runbooks_dir)?;
    // verify-backup restores on {secondary}, a hot standby here: restore on test-db instead.
    let verify = recovery::builtin::text("verify-backup")
        .context("the built-in verify-backup runbook is missing")?
        .replace("{secondary}", TEST_DB);
    std::fs::write(
        runbooks_dir.join("verify-backup.toml"),
        format!(
            "# drbot demo: the built-in verify-backup, restoring on {TEST_DB} (the DR database is a\n\
             # hot standby, which cannot hold a scratch database).\n{verify}"
        ),
    )?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding drbot's port")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let base_url = format!("http://{addr}");
    let config_path = root.join("drbot.toml");
    let config = config_text(&ConfigInputs {
        root: &root,
        listen: &addr.to_string(),
        base_url: &base_url,
        clusters: &clusters,
        east: &east,
        west: &west,
        dns_file: &dns_file,
        backups_dir: &backups_dir,
        runbooks_dir: &runbooks_dir,
    })?;
    std::fs::write(&config_path, config)?;

    let lines = vec![
        format!(
            "PostgreSQL 15  {PRIMARY} primary          127.0.0.1:{}  database {DATABASE}: projects 200, project_payloads 200, project_events 1000",
            clusters.primary.port()
        ),
        format!(
            "PostgreSQL 15  {SECONDARY} replica          127.0.0.1:{}  streaming from {PRIMARY}",
            clusters.replica.port()
        ),
        format!(
            "PostgreSQL 15  {TEST_DB} (restore tests)  127.0.0.1:{}",
            clusters.test_db.port()
        ),
        format!("apex-api       {PRIMARY}  {}", east.health_url),
        format!("apex-api       {SECONDARY}  {}", west.health_url),
        format!(
            "DNS (file)     {DNS_NAME} -> {}  ({})",
            east.addr.ip(),
            dns_file.display()
        ),
        format!("backups        {}", backups_dir.display()),
        format!(
            "drbot          {base_url}  (config {}, SQLite store)",
            config_path.display()
        ),
    ];
    let mut guard = guard;
    guard.0 = None;
    Ok(DemoEnv {
        root,
        config_path,
        dns_file,
        backups_dir,
        east,
        west,
        listener: Some(listener),
        base_url,
        lines,
        clusters: Some(clusters),
        keep: false,
    })
}

struct ConfigInputs<'a> {
    root: &'a Path,
    listen: &'a str,
    base_url: &'a str,
    clusters: &'a Clusters,
    east: &'a Apex,
    west: &'a Apex,
    dns_file: &'a Path,
    backups_dir: &'a Path,
    runbooks_dir: &'a Path,
}

/// A TOML basic string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn config_text(i: &ConfigInputs<'_>) -> anyhow::Result<String> {
    let bin_dir = LocalCluster::bin_dir()?;
    let os_user = if is_root() {
        "os_user = \"postgres\"\n"
    } else {
        ""
    };
    let mut t = String::new();
    writeln!(
        t,
        "# drbot demo: a local two-region environment (written by `drbot demo`).\n\
         # {PRIMARY} is the primary region, {SECONDARY} the DR region.\n\n\
         builtin_runbooks = [\"drill\", \"verify-backup\"]\n\
         # Holds verify-backup.toml, which replaces the built-in one (restores on {TEST_DB}).\n\
         runbooks_dir = {}\n\n\
         [server]\nlisten = {}\npublic_url = {}\n\n\
         [store]\nurl = {}\n\n\
         [approvals]\nrequired = 1\nexpires_after = \"30m\"\n\n\
         [engine]\nlease = \"15s\"\npoll_interval = \"50ms\"\nshutdown_grace = \"5s\"\n\n\
         [targets]\nrto = \"4h\"\nrpo = \"15m\"\n\n\
         [[people]]\nname = \"alice\"\nroles = [\"oncall\"]\n\n\
         [[people]]\nname = \"bob\"\nroles = [\"oncall\", \"sre-lead\"]\n\n\
         # A second lead, so that a request by bob can be approved too.\n\
         [[people]]\nname = \"carol\"\nroles = [\"sre-lead\"]\n",
        q(&i.runbooks_dir.display().to_string()),
        q(i.listen),
        q(i.base_url),
        q(&format!("sqlite://{}", i.root.join("drbot.db").display())),
    )?;
    for (name, role, apex, desc) in [
        (
            PRIMARY,
            "primary",
            i.east,
            "Primary: apex-api and the primary database",
        ),
        (
            SECONDARY,
            "secondary",
            i.west,
            "DR: apex-api and a streaming replica",
        ),
    ] {
        writeln!(
            t,
            "[regions.{name}]\nrole = \"{role}\"\ndescription = {}\nhealth_url = {}\n\
             vars = {{ dns_zone = \"default\", dns_name = \"{DNS_NAME}\", dns_type = \"A\", dns_value = \"{}\" }}\n",
            q(desc),
            q(&apex.health_url),
            apex.addr.ip()
        )?;
    }
    for (name, c, db) in [
        (PRIMARY, &i.clusters.primary, DATABASE),
        (SECONDARY, &i.clusters.replica, DATABASE),
        (TEST_DB, &i.clusters.test_db, "postgres"),
    ] {
        writeln!(
            t,
            "[postgres.{name}]\nurl = {}\nbin_dir = {}\ndata_dir = {}\n{os_user}",
            q(&c.url(db)),
            q(&bin_dir.display().to_string()),
            q(&c.data_dir().display().to_string()),
        )?;
    }
    writeln!(
        t,
        "[backups.default]\nkind = \"local\"\npath = {}\n\n\
         [dns.default]\nprovider = \"file\"\npath = {}\nformat = \"hosts\"\n\n\
         [status_page]\ntitle = \"Apex (drbot demo)\"\n\n\
         [[status_page.components]]\nname = \"API\"\ndescription = \"apex-api\"\n\n\
         [[status_page.components]]\nname = \"Database\"\ndescription = \"PostgreSQL\"",
        q(&i.backups_dir.display().to_string()),
        q(&i.dns_file.display().to_string()),
    )?;
    Ok(t)
}
