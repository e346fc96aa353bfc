//! `pg_rebuild_replica` step (destructive): turn an old primary into a streaming replica of
//! the new primary (the seed's "Recovery to Primary", first half).
//!
//! On the cluster's host, as its `os_user`: stop it if it runs (`pg_ctl stop -m fast`), then
//! `pg_rewind --target-pgdata … --source-server '<conninfo>' --write-recovery-conf` (password
//! in `PGPASSWORD`, never in argv). If the rewind fails (or `force_basebackup = true`), the data
//! directory is emptied and refilled with `pg_basebackup -R -X stream -c fast`. Both write
//! `primary_conninfo` and `standby.signal` (PostgreSQL 12+). Files named in `keep_files`
//! (this host's own configuration), and the files in the data directory they `include` or
//! `include_if_exists` by plain name, are put back afterwards, since both tools copy the
//! source's. They are kept durably in `<data_dir>.drbot-kept.json` until the rebuilt server
//! streams, so a re-run after an interrupted attempt (a kill, a failed `pg_basebackup` that
//! left the directory empty) puts back this host's files, not the source's or none.
//! Then `pg_ctl start`, and wait until the replica streams and has replayed up to the source's
//! flushed WAL, with progress lines.

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{
    pg::{self, replication},
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_rebuild_replica` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildParams {
    /// `[postgres.<name>]` of the cluster to rebuild (the old primary); needs `data_dir`.
    pub cluster: String,
    /// `[postgres.<name>]` of the primary it will stream from.
    pub source: String,
    /// Skip `pg_rewind` and take a fresh base backup. Default `false`.
    #[serde(default)]
    pub force_basebackup: bool,
    /// Files in the data directory that belong to this host and are restored after the
    /// rewind or base backup. Default: `postgresql.conf`, `pg_hba.conf`, `pg_ident.conf`.
    #[serde(default = "default_keep")]
    pub keep_files: Vec<String>,
    /// How long to wait for the rebuilt replica to catch up. Default 600 s.
    #[serde(default = "default_catch_up")]
    pub catch_up_seconds: u32,
    /// Server log for `pg_ctl start -l`. Default `<data_dir>/drbot-pg_ctl.log`.
    #[serde(default)]
    pub log_file: Option<String>,
}

fn default_keep() -> Vec<String> {
    ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"]
        .map(String::from)
        .to_vec()
}

/// Plain file names (no `/`) that a PostgreSQL configuration file pulls in with `include` or
/// `include_if_exists` (`include_dir` is left alone).
pub(crate) fn included_files(conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in conf.lines() {
        let line = line.trim();
        let rest = if let Some(r) = line.strip_prefix("include_if_exists") {
            r
        } else if let Some(r) = line.strip_prefix("include") {
            if r.starts_with("_dir") {
                continue;
            }
            r
        } else {
            continue;
        };
        if !(rest.starts_with(char::is_whitespace) || rest.starts_with('=')) {
            continue;
        }
        let rest = rest.trim_start().trim_start_matches('=').trim_start();
        let name = match rest.strip_prefix('\'') {
            Some(quoted) => quoted.split('\'').next().unwrap_or(""),
            None => rest
                .split(|c: char| c.is_whitespace() || c == '#')
                .next()
                .unwrap_or(""),
        };
        if !name.is_empty() && !name.contains('/') && name != "." && name != ".." {
            out.push(name.to_string());
        }
    }
    out
}

fn default_catch_up() -> u32 {
    600
}

/// The `pg_rebuild_replica` step type.
pub struct RebuildReplicaKind(pub Arc<Resources>);

/// Checks `keep_files` entries are plain file names.
pub(crate) fn check_keep_files(files: &[String]) -> Result<(), String> {
    for f in files {
        if f.is_empty() || f.contains('/') || f == "." || f == ".." {
            return Err(format!(
                "keep_files: `{f}` must be a file name inside the data directory"
            ));
        }
    }
    Ok(())
}

/// Checks `name` is a cluster with a data directory (when it is already resolved).
pub(crate) fn check_local(res: &Resources, field: &str, name: &str) -> Result<(), String> {
    pg::check_cluster(res, field, name)?;
    if let Ok(def) = pg::cluster(res, name)
        && def.data_dir.is_none()
    {
        return Err(format!(
            "{field}: [postgres.{name}] needs data_dir (and os_user) to be rebuilt on this host"
        ));
    }
    Ok(())
}

impl StepKind for RebuildReplicaKind {
    fn name(&self) -> &'static str {
        "pg_rebuild_replica"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_rewind", "pg_basebackup", "pg_ctl"]
    }
    fn traits(&self) -> StepTraits {
        // Running it again rebuilds again: harmless for a replica, and a half-done rebuild is
        // finished by a re-run (a failed rewind falls back to a fresh base backup).
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: RebuildParams = params(p)?;
        check_local(&self.0, "cluster", &p.cluster)?;
        pg::check_cluster(&self.0, "source", &p.source)?;
        if p.cluster == p.source {
            return Err("source: must differ from cluster".into());
        }
        check_keep_files(&p.keep_files)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        Ok(Box::new(RebuildReplica {
            res: self.0.clone(),
            p: params(p)?,
        }))
    }
}

/// A runnable `pg_rebuild_replica`.
pub struct RebuildReplica {
    res: Arc<Resources>,
    p: RebuildParams,
}

/// How to rebuild.
pub(crate) struct RebuildOptions<'a> {
    pub force_basebackup: bool,
    pub keep_files: &'a [String],
    pub catch_up: Duration,
    pub log_file: Option<&'a str>,
}

/// Rebuilds `def` as a replica of `source` (see the module doc). Returns data, summary, log.
pub(crate) async fn rebuild(
    name: &str,
    def: &PgClusterDef,
    source_name: &str,
    source: &PgClusterDef,
    opts: &RebuildOptions<'_>,
    ctx: &StepContext,
) -> Result<(serde_json::Value, String, String), StepError> {
    let data_dir = def.data_dir.as_deref().ok_or_else(|| {
        StepError::fatal(format!(
            "[postgres.{name}] has no data_dir: cannot rebuild it"
        ))
    })?;
    let mut log: Vec<String> = Vec::new();
    // The source must be a primary: that is what the rebuilt server will follow.
    {
        let mut conn = pg::connect(source).await?;
        let s = replication::server_state(&mut conn)
            .await
            .map_err(|e| pg::query_error(source, "reading the source's state", e))?;
        if s.in_recovery {
            return Err(StepError::fatal(format!(
                "source {source_name} ({}) is in recovery: rebuild from the primary",
                source.display()
            )));
        }
        // pg_rewind reads the source's timeline from its control file, which a recently
        // promoted server updates only at its next checkpoint.
        sqlx::query("CHECKPOINT")
            .execute(&mut conn)
            .await
            .map_err(|e| pg::query_error(source, "CHECKPOINT", e))?;
    }
    let conninfo = pg::conninfo(source).map_err(StepError::fatal)?;

    ctx.progress.line(format!("stopping {name} if it runs"));
    let (was_running, stop_log) = super::pg_fence::stop_server(def, ctx).await?;
    log.push(stop_log);

    // This host's files are kept beside the data directory until the rebuilt server runs: an
    // attempt interrupted after the directory was emptied or rewound (a kill, a failed
    // pg_basebackup) is re-run with them, never with the source's copies or with nothing.
    let kept = kept_path(data_dir);
    let saved = match read_kept(&kept)? {
        Some(saved) => {
            ctx.progress.line(format!(
                "restoring this host's files as an interrupted attempt kept them in {}",
                kept.display()
            ));
            log.push(format!("this host's files from {}", kept.display()));
            saved
        }
        None => {
            let saved = host_files(data_dir, opts.keep_files);
            write_kept(&kept, &saved).map_err(|e| {
                StepError::fatal(format!(
                    "cannot keep this host's files in {} before rebuilding: {e}",
                    kept.display()
                ))
            })?;
            saved
        }
    };

    let mut method = "pg_rewind";
    let mut rewind_error: Option<String> = None;
    if opts.force_basebackup {
        rewind_error = Some("skipped: force_basebackup = true".into());
    } else {
        ctx.progress
            .line(format!("pg_rewind {name} from {source_name}"));
        let out = pg::tool(def, "pg_rewind")
            .arg("--target-pgdata")
            .arg(data_dir)
            .arg(format!("--source-server={conninfo}"))
            .args(["--write-recovery-conf", "--progress"])
            .password_of(source)
            .progress(true)
            .run(ctx)
            .await?;
        log.push(out.log.clone());
        if !out.status.success() {
            let last = out
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim()
                .to_string();
            ctx.progress.line(format!(
                "pg_rewind failed ({last}): falling back to pg_basebackup"
            ));
            rewind_error = Some(last);
        }
    }
    if rewind_error.is_some() {
        method = "pg_basebackup";
        empty_data_dir(data_dir)
            .map_err(|e| StepError::fatal(format!("cannot empty {}: {e}", data_dir.display())))?;
        ctx.progress
            .line(format!("pg_basebackup {name} from {source_name}"));
        let out = pg::tool(def, "pg_basebackup")
            .arg("--pgdata")
            .arg(data_dir)
            .arg(format!("--dbname={conninfo}"))
            .args([
                "--write-recovery-conf",
                "--wal-method=stream",
                "--checkpoint=fast",
                "--no-password",
            ])
            .password_of(source)
            .progress(true)
            .run_ok(ctx)
            .await?;
        log.push(out.log);
    }

    for (file, text) in &saved {
        if let Some(text) = text {
            pg::write_owned(data_dir, &data_dir.join(file), text).map_err(|e| {
                StepError::fatal(format!(
                    "cannot restore {file} in {}: {e}",
                    data_dir.display()
                ))
            })?;
            log.push(format!("restored this host's {file}"));
        }
    }
    if !data_dir.join("standby.signal").exists() {
        return Err(StepError::fatal(format!(
            "{method} did not write standby.signal into {}",
            data_dir.display()
        ))
        .with_log(log.join("\n")));
    }

    let log_file = opts
        .log_file
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| data_dir.join("drbot-pg_ctl.log"));
    ctx.progress
        .line(format!("starting {name} as a standby of {source_name}"));
    let out = pg::tool(def, "pg_ctl")
        .args(["start", "-w", "-t", "300", "-D"])
        .arg(data_dir)
        .arg("-l")
        .arg(&log_file)
        .run_ok(ctx)
        .await
        .map_err(|e| {
            let tail = server_log_tail(&log_file);
            let log = format!("{}\n{tail}", e.log);
            StepError { log, ..e }
        })?;
    log.push(out.log);

    // Caught up: replayed everything the source had flushed once it streams.
    let mut conn = pg::connect(def).await?;
    let state = replication::server_state(&mut conn)
        .await
        .map_err(|e| pg::query_error(def, "reading the rebuilt server's state", e))?;
    if !state.in_recovery {
        return Err(StepError::fatal(format!(
            "{name} started but is not in recovery: it is not a standby"
        ))
        .with_log(log.join("\n")));
    }
    let target: String = {
        let mut src = pg::connect(source).await?;
        sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
            .fetch_one(&mut src)
            .await
            .map_err(|e| pg::query_error(source, "pg_current_wal_flush_lsn()", e))?
    };
    let target: pg::Lsn = target.parse().map_err(StepError::fatal)?;
    let started = std::time::Instant::now();
    let replayed = replication::wait_for_replay(&mut conn, target, opts.catch_up, ctx, name)
        .await
        .map_err(|e| e.with_log(log.join("\n")))?;
    let mut receiver = None;
    for _ in 0..100 {
        let s = replication::server_state(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "reading the WAL receiver", e))?;
        receiver = s.receiver_status.clone();
        if receiver.as_deref() == Some("streaming") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if receiver.as_deref() != Some("streaming") {
        return Err(StepError::retryable(format!(
            "{name} caught up to {target} but its WAL receiver is {}",
            receiver.as_deref().unwrap_or("not running")
        ))
        .with_log(log.join("\n")));
    }
    let summary = format!(
        "{name} rebuilt with {method}{} as a standby of {source_name}: streaming, replayed {replayed} (source flushed {target})",
        match (&rewind_error, opts.force_basebackup) {
            (Some(e), false) => format!(" (pg_rewind failed: {e})"),
            _ => String::new(),
        }
    );
    // Running and streaming: the kept copy has done its job.
    if let Err(e) = std::fs::remove_file(&kept) {
        log.push(format!("could not remove {}: {e}", kept.display()));
        tracing::warn!(file = %kept.display(), error = %e, "could not remove the kept host files");
    }
    let data = json!({
        "cluster": name,
        "source": source_name,
        "method": method,
        "rewind_error": rewind_error,
        "was_running": was_running,
        "replay_lsn": replayed,
        "source_flush_lsn": target,
        "catch_up_seconds": started.elapsed().as_secs_f64(),
        "receiver": receiver,
    });
    Ok((data, summary, log.join("\n")))
}

/// This host's kept files: each name and its text (`None`: the file did not exist).
type HostFiles = Vec<(String, Option<String>)>;

/// Where a rebuild keeps this host's files: `<data_dir>.drbot-kept.json`, beside the data
/// directory (which is emptied or rewound).
fn kept_path(data_dir: &Path) -> std::path::PathBuf {
    let mut name = data_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".drbot-kept.json");
    data_dir.with_file_name(name)
}

/// `keep_files` as they are in `data_dir` (`None`: the file does not exist), with the files
/// their configuration includes by plain name (per-host settings such as the port).
fn host_files(data_dir: &Path, keep_files: &[String]) -> HostFiles {
    let mut saved: HostFiles = keep_files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(data_dir.join(f)).ok()))
        .collect();
    let mut i = 0;
    while i < saved.len() {
        let included = saved[i]
            .1
            .as_deref()
            .map(included_files)
            .unwrap_or_default();
        for f in included {
            if !saved.iter().any(|(k, _)| *k == f) {
                let text = std::fs::read_to_string(data_dir.join(&f)).ok();
                saved.push((f, text));
            }
        }
        i += 1;
    }
    saved
}

/// The files an interrupted attempt kept in `kept`, if it left them.
fn read_kept(kept: &Path) -> Result<Option<HostFiles>, StepError> {
    match std::fs::read(kept) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            StepError::fatal(format!(
                "{} (this host's files kept by an earlier attempt) is unreadable: {e}; \
                 restore them by hand, then remove it",
                kept.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StepError::fatal(format!(
            "cannot read {}: {e}",
            kept.display()
        ))),
    }
}

/// Writes `saved` to `kept` durably (a temporary file, synced, renamed, its directory synced),
/// readable by its owner only: a crash leaves the whole copy or none.
fn write_kept(kept: &Path, saved: &[(String, Option<String>)]) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = kept.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(saved).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, kept)?;
    if let Some(dir) = kept.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes everything inside a stopped server's data directory, `PG_VERSION` last (so a
/// half-emptied directory is still recognised by a re-run). Refuses a directory that is not a
/// PostgreSQL data directory (unless it is already empty) or whose server still runs.
fn empty_data_dir(dir: &Path) -> std::io::Result<()> {
    let entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Ok(());
    }
    if !dir.join("PG_VERSION").is_file() {
        return Err(std::io::Error::other(
            "no PG_VERSION: not a PostgreSQL data directory, refusing to empty it",
        ));
    }
    if dir.join("postmaster.pid").exists() {
        return Err(std::io::Error::other(
            "postmaster.pid exists: the server may still run",
        ));
    }
    for e in entries {
        if e.file_name() == "PG_VERSION" {
            continue;
        }
        let path = e.path();
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    std::fs::remove_file(dir.join("PG_VERSION"))
}

fn server_log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let lines: Vec<&str> = t.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            format!("--- {} ---\n{}", path.display(), tail.join("\n"))
        }
        Err(_) => String::new(),
    }
}

#[async_trait]
impl Step for RebuildReplica {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let def = pg::cluster(&self.res, &p.cluster).map_err(StepError::fatal)?;
        let source = pg::cluster(&self.res, &p.source).map_err(StepError::fatal)?;
        let opts = RebuildOptions {
            force_basebackup: p.force_basebackup,
            keep_files: &p.keep_files,
            catch_up: Duration::from_secs(p.catch_up_seconds.into()),
            log_file: p.log_file.as_deref(),
        };
        let (data, summary, log) = rebuild(&p.cluster, def, &p.source, source, &opts, ctx).await?;
        Ok(StepOutput { summary, log, data })
    }
}

#[cfg(test)]
mod tests {
    use super::included_files;

    #[test]
    fn finds_plain_included_files_only() {
        let conf = "port = 5432\n\
            include_if_exists 'drbot-local.conf'\n\
            include = 'host.conf'   # this host\n\
            include_dir 'conf.d'\n\
            include '/etc/postgresql/shared.conf'\n\
            # include 'commented.conf'\n\
            included_setting = on\n\
            include bare.conf\n";
        assert_eq!(
            included_files(conf),
            ["drbot-local.conf", "host.conf", "bare.conf"]
        );
        assert!(included_files("").is_empty());
    }
}
