//! `pg_pitr` step: point-in-time recovery into a new cluster. Restores a `base_tar` backup
//! (made by `pg_base_backup`) from a backup store into the target cluster's empty data
//! directory, configures recovery the PostgreSQL 12+ way (`restore_command`, which reads
//! archived segments plain or gzipped, `recovery_target_time`, `recovery_target_action =
//! 'promote'` in `postgresql.auto.conf` plus `recovery.signal`), starts it on its port, waits
//! until recovery has finished and the server is promoted, then reports what was reached and
//! counts rows.
//!
//! Re-running after a crash is safe: the data directory carries a marker
//! (`drbot_pitr.json`); an unfinished attempt's directory is wiped and redone, a finished one
//! with the same backup and target is only re-verified, and any other non-empty directory is
//! never touched.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::values::is_placeholder;
use crate::{
    backup::{self, BackupKind, BackupStore, Manifest, manifest::valid_name},
    pg,
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput, trim_output},
};

/// Parameters of a `pg_pitr` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PitrParams {
    /// The `[backups.<name>]` store holding base backups (default `default`).
    #[serde(default = "default_store")]
    pub store: String,
    /// `latest` (default: the newest `base_tar` backup finished before `target_time`) or a
    /// backup name.
    #[serde(default = "default_backup")]
    pub backup: String,
    /// Recover up to this time: `YYYY-MM-DD HH:MM[:SS]` (UTC) or RFC 3339, e.g. `{timestamp}`.
    pub target_time: String,
    /// Directory holding the archived WAL (what `archive_command` copies into), plain or
    /// gzipped (`<segment>.gz`); the new server reads it with [`restore_command`].
    pub wal_archive: String,
    /// The `[postgres.<name>]` cluster to create: its `data_dir` (must be empty, absent, or
    /// left by an unfinished `pg_pitr`), `os_user`, `bin_dir`, and the URL's port to start on.
    pub target_cluster: String,
    /// Tables (optionally `schema.table`) whose row counts are reported.
    #[serde(default)]
    pub verify_tables: Vec<String>,
    /// SQL assertions run on the recovered cluster; each must return one row whose first
    /// column is `true`, e.g. `SELECT count(*) > 0 FROM projects`.
    #[serde(default)]
    pub verify_sql: Vec<String>,
    /// Whether a transaction committed exactly at `target_time` is recovered (default
    /// `true`; `false` stops just before it, e.g. for a corruption's timestamp).
    #[serde(default = "yes")]
    pub inclusive: bool,
    /// Keep the backup's `archive_mode` on the recovered cluster. Default `false`: archiving
    /// is turned off so it never writes into the production archive.
    #[serde(default)]
    pub keep_archiving: bool,
}

fn default_store() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}
fn default_backup() -> String {
    "latest".into()
}

/// Marker file written into the target data directory by `pg_pitr`.
pub const MARKER_FILE: &str = "drbot_pitr.json";
/// Server log written by `pg_ctl -l`, inside the target data directory.
pub const LOG_FILE: &str = "drbot_pitr.log";
/// How often recovery progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// `pg_ctl start -t`: how long `pg_ctl` waits for the server to accept connections.
const START_WAIT_SECS: &str = "300";

/// What the marker records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Marker {
    made_by: String,
    backup: String,
    target_time: String,
    port: u16,
    started_at: String,
    finished: bool,
}

/// The configuration files a base backup may lack, each with what pg_pitr writes instead.
const MISSING_CONFIG: &[(&str, &str)] = &[
    (
        "postgresql.conf",
        "# Written by drbot pg_pitr: the base backup had no postgresql.conf (the cluster kept\n\
         # its configuration outside its data directory). Recovery settings are in\n\
         # postgresql.auto.conf.\nlisten_addresses = 'localhost'\n",
    ),
    (
        "pg_hba.conf",
        "# Written by drbot pg_pitr: the base backup had no pg_hba.conf. Local connections only.\n\
         local all all peer\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n",
    ),
    (
        "pg_ident.conf",
        "# Written by drbot pg_pitr: the base backup had no pg_ident.conf.\n",
    ),
];

/// The settings a server replaying a primary's WAL with `hot_standby` needs at least the
/// primary's values of, as `pg_controldata` names them, each with its setting's name.
const PRIMARY_SETTINGS: &[(&str, &str)] = &[
    ("max_connections setting", "max_connections"),
    ("max_worker_processes setting", "max_worker_processes"),
    ("max_wal_senders setting", "max_wal_senders"),
    ("max_prepared_xacts setting", "max_prepared_transactions"),
    ("max_locks_per_xact setting", "max_locks_per_transaction"),
];

/// The [`PRIMARY_SETTINGS`] found in `pg_controldata`'s output (numbers only).
fn primary_settings(controldata: &str) -> Vec<(&'static str, u64)> {
    PRIMARY_SETTINGS
        .iter()
        .filter_map(|(label, setting)| {
            let v = pg::controldata_field(controldata, label)?.parse().ok()?;
            Some((*setting, v))
        })
        .collect()
}

/// Parses `YYYY-MM-DD HH:MM[:SS[.f]]` (UTC, optional `UTC`/`Z` suffix, `T` or space) or RFC 3339.
pub fn parse_target_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    let bare = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix(" utc"))
        .or_else(|| t.strip_suffix('Z'))
        .or_else(|| t.strip_suffix('z'))
        .unwrap_or(t)
        .trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(bare, fmt) {
            return Ok(n.and_utc());
        }
    }
    Err(format!(
        "`{s}` is not a time: use `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339 like \
         `2026-01-27T14:30:00Z`"
    ))
}

/// A time as PostgreSQL and people read it: `2026-01-27 14:30:00.250000+00`.
fn pg_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

fn show_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The `restore_command` reading WAL from `archive`: the plain file `%f`, else its gzipped
/// `%f.gz` (what `wal_archive_check` accepts besides plain segments), decompressed into `%p`.
/// PostgreSQL runs it with `sh -c`; a missing file fails, as recovery expects. `archive` holds
/// none of [`bad_archive_char`], so double quotes keep it one word.
pub fn restore_command(archive: &Path) -> String {
    let dir = archive.display();
    format!(
        "if [ -f \"{dir}/%f.gz\" ] && [ ! -f \"{dir}/%f\" ]; \
         then gzip -dc \"{dir}/%f.gz\" > \"%p\"; \
         else cp \"{dir}/%f\" \"%p\"; fi"
    )
}

/// Characters a WAL archive path may not hold (it goes into a shell command in a quoted
/// configuration value).
fn bad_archive_char(c: char) -> bool {
    matches!(c, '\'' | '"' | '%' | '\\' | '$' | '`' | '\n' | '\r')
}

/// The `pg_pitr` step type.
pub struct PitrKind(pub Arc<Resources>);

impl PitrKind {
    fn parse(&self, p: &serde_json::Value) -> Result<PitrParams, String> {
        let p: PitrParams = params(p)?;
        backup::check_store(&self.0, "store", &p.store)?;
        pg::check_cluster(&self.0, "target_cluster", &p.target_cluster)?;
        if !is_placeholder(&p.target_time) {
            parse_target_time(&p.target_time).map_err(|e| format!("target_time: {e}"))?;
        }
        if p.backup != "latest" && !is_placeholder(&p.backup) && !valid_name(&p.backup) {
            return Err(format!(
                "backup: `{}` is neither `latest` nor a valid backup name",
                p.backup
            ));
        }
        if p.wal_archive.trim().is_empty() {
            return Err("wal_archive: must name the WAL archive directory".into());
        }
        if !is_placeholder(&p.wal_archive) {
            if !Path::new(&p.wal_archive).is_absolute() {
                return Err(format!(
                    "wal_archive: `{}` must be an absolute path",
                    p.wal_archive
                ));
            }
            if p.wal_archive.chars().any(bad_archive_char) {
                return Err(format!(
                    "wal_archive: `{}` holds a quote, `%`, `$`, backslash or backtick, which \
                     restore_command cannot carry",
                    p.wal_archive
                ));
            }
        }
        if p.verify_tables.iter().any(|t| t.trim().is_empty()) {
            return Err("verify_tables: table names must not be empty".into());
        }
        if p.verify_sql.iter().any(|t| t.trim().is_empty()) {
            return Err("verify_sql: assertions must not be empty".into());
        }
        if let Some(def) = self.0.postgres.get(&p.target_cluster) {
            target_data_dir(&self.0, &p.target_cluster, def)
                .map_err(|e| format!("target_cluster: {e}"))?;
        }
        Ok(p)
    }
}

/// The target's data directory: set, absolute, and no other cluster's.
fn target_data_dir(res: &Resources, name: &str, def: &PgClusterDef) -> Result<PathBuf, String> {
    let dir = def.data_dir.clone().ok_or_else(|| {
        format!("[postgres.{name}] has no data_dir: pg_pitr needs one to restore into")
    })?;
    if !dir.is_absolute() || dir.parent().is_none_or(|p| p.parent().is_none()) {
        return Err(format!(
            "[postgres.{name}] data_dir `{}` must be an absolute path below a directory",
            dir.display()
        ));
    }
    for (other, odef) in &res.postgres {
        if other != name && odef.data_dir.as_deref() == Some(dir.as_path()) {
            return Err(format!(
                "[postgres.{name}] data_dir {} is also the data_dir of [postgres.{other}]; \
                 pg_pitr only restores into a directory of its own",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

impl StepKind for PitrKind {
    fn name(&self) -> &'static str {
        "pg_pitr"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_ctl", "pg_controldata"]
    }
    fn traits(&self) -> StepTraits {
        // Starts a new cluster; a re-run wipes only its own unfinished attempt.
        StepTraits {
            destructive: true,
            idempotent: false,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.parse(p).map(|_| ())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(Pitr {
            params: self.parse(p)?,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `pg_pitr` step.
pub struct Pitr {
    params: PitrParams,
    resources: Arc<Resources>,
}

/// Everything one run works with.
struct Job<'a> {
    def: &'a PgClusterDef,
    data: PathBuf,
    data_s: String,
    port: u16,
    ctx: &'a StepContext,
}

#[async_trait]
impl Step for Pitr {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let started = Instant::now();
        let p = &self.params;
        let target = parse_target_time(&p.target_time)
            .map_err(|e| StepError::fatal(format!("target_time: {e}")))?;
        let now = Utc::now();
        if target > now {
            return Err(StepError::fatal(format!(
                "target time {} is in the future (now {}): nothing to recover to yet",
                show_time(target),
                show_time(now)
            )));
        }
        let def = pg::cluster(&self.resources, &p.target_cluster).map_err(StepError::fatal)?;
        let data =
            target_data_dir(&self.resources, &p.target_cluster, def).map_err(StepError::fatal)?;
        let port = pg::port(def)?;
        let archive = PathBuf::from(&p.wal_archive);
        if !archive.is_dir() {
            return Err(StepError::fatal(format!(
                "the WAL archive {} is not a directory",
                archive.display()
            )));
        }
        let store_def = self.resources.backups.get(&p.store).ok_or_else(|| {
            StepError::fatal(backup::check_store(&self.resources, "store", &p.store).unwrap_err())
        })?;
        let store = backup::open(store_def).await.map_err(backup::step_error)?;
        let manifest = choose_backup(&store, &p.backup, target).await?;
        let extra_tars: Vec<&str> = manifest
            .files
            .iter()
            .map(|f| f.name.as_str())
            .filter(|n| {
                n.ends_with(".tar.gz")
                    && *n != BackupKind::BASE_TAR_FILE
                    && *n != BackupKind::WAL_TAR_FILE
            })
            .collect();
        if !extra_tars.is_empty() {
            return Err(StepError::fatal(format!(
                "backup `{}` holds tablespace tarballs ({}), which pg_pitr does not restore",
                manifest.name,
                extra_tars.join(", ")
            )));
        }
        let job = Job {
            def,
            data_s: data.display().to_string(),
            data,
            port,
            ctx,
        };
        let marker = Marker {
            made_by: "drbot pg_pitr".into(),
            backup: manifest.name.clone(),
            target_time: target.to_rfc3339(),
            port,
            started_at: now.to_rfc3339(),
            finished: false,
        };
        ctx.progress.line(format!(
            "PITR to {} from backup `{}` ({}) into {} on port {port}",
            show_time(target),
            manifest.name,
            show_time(manifest.created_at),
            job.data_s
        ));

        let reused = job.prepare(&marker).await?;
        let recovery_started = Instant::now();
        if !reused {
            for file in [BackupKind::BASE_TAR_FILE, BackupKind::WAL_TAR_FILE] {
                if manifest.file(file).is_none() {
                    continue;
                }
                let dest = if file == BackupKind::WAL_TAR_FILE {
                    job.data.join("pg_wal")
                } else {
                    job.data.clone()
                };
                ctx.progress
                    .line(format!("restoring {file} into {}", dest.display()));
                job.extract(&store, &manifest, file, &dest).await?;
            }
            job.write_missing_config().await?;
            job.configure(&archive, target, p.inclusive, p.keep_archiving)?;
            job.start().await?;
        }
        let progress = match job.wait_for_promotion().await {
            Ok(p) => p,
            Err(e) => {
                job.stop().await;
                return Err(e);
            }
        };
        let recovery_secs = recovery_started.elapsed().as_secs_f64();
        let mut conn = pg::connect(def).await?;
        let row_counts = super::pg_verify::check(def, &mut conn, &p.verify_tables, &p.verify_sql)
            .await
            .map_err(|mut e| {
                // Name this step's parameters (`verify_tables`, `verify_sql`).
                e.message = format!("verify_{}", e.message);
                e
            })?;
        drop(conn);
        if !reused {
            job.write_marker(&Marker {
                finished: true,
                ..marker
            })?;
        }
        let stop_point = job.stop_point();
        let secs = started.elapsed().as_secs_f64();
        let counts_text = row_counts
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let summary = format!(
            "{} {} from `{}` on {} in {secs:.1}s: replayed to {} (last commit {}){}{}",
            if reused {
                "already recovered to"
            } else {
                "recovered to"
            },
            show_time(target),
            manifest.name,
            def.display(),
            progress.replay_lsn.as_deref().unwrap_or("?"),
            progress.replay_time.as_deref().unwrap_or("none"),
            if counts_text.is_empty() { "" } else { "; " },
            counts_text
        );
        Ok(StepOutput {
            summary,
            log: job.log_excerpt(),
            data: json!({
                "target_time": target.to_rfc3339(),
                "backup": manifest.name,
                "backup_created_at": manifest.created_at.to_rfc3339(),
                "store": store.display(),
                "target_cluster": p.target_cluster,
                "display": def.display(),
                "data_dir": job.data_s,
                "port": port,
                "reached_lsn": progress.replay_lsn,
                "replay_end": progress.replay_time,
                "current_lsn": progress.current_lsn,
                "timeline": progress.timeline,
                "stop_point": stop_point,
                "row_counts": row_counts.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "verify_sql": p.verify_sql,
                "recovery_s": recovery_secs,
                "duration_s": secs,
                "reused": reused,
                "log_file": job.data.join(LOG_FILE).display().to_string(),
            }),
        })
    }
}

/// The base backup to restore: `latest` is the newest `base_tar` finished before `target`
/// (an error when an unusable manifest might be that one, see `Listing::newest`).
async fn choose_backup(
    store: &BackupStore,
    backup: &str,
    target: DateTime<Utc>,
) -> Result<Manifest, StepError> {
    if backup == "latest" {
        let listing = store.list_all().await.map_err(backup::step_error)?;
        // An unusable manifest that might be the backup meant stops here, naming it.
        if let Some(m) = listing
            .newest(|k| k == BackupKind::BaseTar, Some(target))
            .map_err(backup::step_error)?
        {
            return Ok(m.clone());
        }
        let base: Vec<&Manifest> = listing
            .complete
            .iter()
            .filter(|m| m.kind == BackupKind::BaseTar)
            .collect();
        let Some(oldest) = base.last() else {
            return Err(StepError::fatal(format!(
                "no base_tar backup in {} (take one with a pg_base_backup step)",
                store.display()
            )));
        };
        return Err(StepError::fatal(format!(
            "target time {} is before the oldest base backup `{}` (finished {}): there is no \
             base backup to recover from",
            show_time(target),
            oldest.name,
            show_time(oldest.created_at)
        )));
    }
    let m = store
        .resolve(backup, Some(BackupKind::BaseTar))
        .await
        .map_err(backup::step_error)?;
    if m.created_at > target {
        return Err(StepError::fatal(format!(
            "target time {} is before backup `{}` finished ({}): pick an older backup or a \
             later time",
            show_time(target),
            m.name,
            show_time(m.created_at)
        )));
    }
    Ok(m)
}

/// Recovery state as last seen.
#[derive(Debug, Default)]
struct Progress {
    replay_lsn: Option<String>,
    replay_time: Option<String>,
    current_lsn: Option<String>,
    timeline: Option<i64>,
}

impl Job<'_> {
    fn write_marker(&self, m: &Marker) -> Result<(), StepError> {
        let text = serde_json::to_string_pretty(m).unwrap_or_default();
        pg::write_owned(&self.data, &self.data.join(MARKER_FILE), &text).map_err(|e| {
            StepError::fatal(format!(
                "cannot write {}: {e}",
                self.data.join(MARKER_FILE).display()
            ))
        })
    }

    /// Makes the data directory ready. `Ok(true)`: it already holds this very recovery,
    /// finished and running.
    async fn prepare(&self, marker: &Marker) -> Result<bool, StepError> {
        let dir = &self.data;
        if dir.exists() {
            let entries: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| StepError::fatal(format!("cannot read {}: {e}", dir.display())))?
                .filter_map(|e| e.ok())
                .collect();
            if !entries.is_empty() {
                let old: Option<Marker> = std::fs::read_to_string(dir.join(MARKER_FILE))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                let Some(old) = old else {
                    return Err(StepError::fatal(format!(
                        "{} exists, is not empty and was not made by pg_pitr: refusing to \
                         touch it (point target_cluster's data_dir at an empty or new directory)",
                        dir.display()
                    )));
                };
                if old.finished {
                    let same = old.backup == marker.backup && old.target_time == marker.target_time;
                    if same && self.running().await? {
                        self.ctx.progress.line(format!(
                            "{} already holds this recovery, finished and running: verifying",
                            dir.display()
                        ));
                        return Ok(true);
                    }
                    return Err(StepError::fatal(format!(
                        "{} holds a finished recovery (backup `{}` to {}) that may be in use{}: \
                         refusing to wipe it; remove it by hand or restore into another directory",
                        dir.display(),
                        old.backup,
                        old.target_time,
                        if same { " but is not running" } else { "" }
                    )));
                }
                self.ctx.progress.line(format!(
                    "{} holds an unfinished pg_pitr attempt (started {}): wiping it",
                    dir.display(),
                    old.started_at
                ));
                if dir.join("postmaster.pid").exists() {
                    self.stop().await;
                }
                let d = dir.clone();
                tokio::task::spawn_blocking(move || wipe(&d))
                    .await
                    .map_err(|e| StepError::fatal(format!("wipe panicked: {e}")))?
                    .map_err(StepError::fatal)?;
            }
        } else {
            std::fs::create_dir(dir).map_err(|e| {
                StepError::fatal(format!("cannot create the data dir {}: {e}", dir.display()))
            })?;
        }
        self.own_dir(dir)?;
        self.write_marker(marker)?;
        Ok(false)
    }

    /// `chown os_user` (when root) and `chmod 700`.
    fn own_dir(&self, dir: &Path) -> Result<(), StepError> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| StepError::fatal(format!("chmod {}: {e}", dir.display())))?;
        if let Some(user) = self.def.os_user.as_deref().filter(|_| pg::is_root()) {
            let (uid, gid) = pg::user_ids(user)
                .map_err(|e| StepError::fatal(format!("cannot look up os_user `{user}`: {e}")))?
                .ok_or_else(|| {
                    StepError::fatal(format!("os_user `{user}` does not exist on this host"))
                })?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| StepError::fatal(format!("chown {}: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// Streams `file` of the backup (checked against its SHA-256) into `tar -xz` as os_user.
    async fn extract(
        &self,
        store: &BackupStore,
        manifest: &Manifest,
        file: &str,
        dest: &Path,
    ) -> Result<(), StepError> {
        let mut reader = store
            .open_read(manifest, file)
            .await
            .map_err(backup::step_error)?;
        let mut cmd = pg::owner_command(self.def, Path::new("tar"));
        cmd.arg("-xzf")
            .arg("-")
            .arg("-C")
            .arg(dest)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StepError::fatal(format!("could not start tar: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let feed = async {
            let r = tokio::io::copy(&mut reader, &mut stdin).await;
            drop(stdin);
            r
        };
        let errs = async {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        };
        let (copied, errs) = tokio::select! {
            r = async { tokio::join!(feed, errs) } => r,
            _ = self.ctx.cancel.cancelled() => {
                return Err(StepError::retryable(format!("cancelled while restoring {file}")));
            }
        };
        let status = child
            .wait()
            .await
            .map_err(|e| StepError::fatal(format!("waiting for tar failed: {e}")))?;
        if let Err(e) = copied {
            let broken_pipe = e.kind() == std::io::ErrorKind::BrokenPipe;
            let err =
                backup::BackupError::from_io(format!("restoring {}/{file}", manifest.name), e);
            if !broken_pipe || status.success() {
                return Err(backup::step_error(err).with_log(errs));
            }
        }
        if !status.success() {
            return Err(StepError::fatal(format!(
                "tar could not extract {file} into {} ({status}): {}",
                dest.display(),
                errs.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
            ))
            .with_log(errs));
        }
        Ok(())
    }

    /// A cluster whose configuration lives outside its data directory (Debian and Ubuntu keep
    /// it in /etc/postgresql) leaves it out of its base backups, and PostgreSQL does not start
    /// without it: writes local-only defaults (Debian's own pg_hba rules), with the settings a
    /// server replaying that WAL needs at least the primary's values of (read with
    /// `pg_controldata`).
    async fn write_missing_config(&self) -> Result<(), StepError> {
        let missing: Vec<&(&str, &str)> = MISSING_CONFIG
            .iter()
            .filter(|(file, _)| !self.data.join(file).exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let out = pg::controldata(self.def, &self.data, self.ctx).await?;
        let primary = primary_settings(&out.stdout);
        for (file, text) in &missing {
            let path = self.data.join(file);
            let mut text = text.to_string();
            if *file == "postgresql.conf" {
                for (k, v) in &primary {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            pg::write_owned(&self.data, &path, &text)
                .map_err(|e| StepError::fatal(format!("cannot write {}: {e}", path.display())))?;
        }
        let names: Vec<&str> = missing.iter().map(|(f, _)| *f).collect();
        self.ctx.progress.line(format!(
            "the base backup has no {} (configuration kept outside the data directory): \
             wrote local-only defaults",
            names.join(", ")
        ));
        Ok(())
    }

    /// Recovery settings in `postgresql.auto.conf`, plus `recovery.signal`.
    fn configure(
        &self,
        archive: &Path,
        target: DateTime<Utc>,
        inclusive: bool,
        keep_archiving: bool,
    ) -> Result<(), StepError> {
        if !self.data.join("PG_VERSION").is_file() {
            return Err(StepError::fatal(format!(
                "the restored backup has no PG_VERSION in {}: not a base backup",
                self.data_s
            )));
        }
        for stale in [
            "postmaster.pid",
            "postmaster.opts",
            "standby.signal",
            "recovery.signal",
        ] {
            let _ = std::fs::remove_file(self.data.join(stale));
        }
        let io = |e: std::io::Error, what: &Path| {
            StepError::fatal(format!("cannot write {}: {e}", what.display()))
        };
        let auto = self.data.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let restore = restore_command(archive);
        text.push_str(&format!(
            "# Added by drbot pg_pitr: recovery to {}.\n",
            show_time(target)
        ));
        let mut settings = vec![
            ("restore_command", restore),
            ("recovery_target_time", pg_time(target)),
            ("recovery_target_inclusive", inclusive.to_string()),
            ("recovery_target_action", "promote".into()),
            ("recovery_target_timeline", "latest".into()),
            ("hot_standby", "on".into()),
            ("port", self.port.to_string()),
        ];
        if !keep_archiving {
            settings.push(("archive_mode", "off".into()));
        }
        for (k, v) in settings {
            text.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        pg::write_owned(&self.data, &auto, &text).map_err(|e| io(e, &auto))?;
        let signal = self.data.join("recovery.signal");
        pg::write_owned(&self.data, &signal, "").map_err(|e| io(e, &signal))?;
        Ok(())
    }

    async fn start(&self) -> Result<(), StepError> {
        self.ctx.progress.line(format!(
            "starting PostgreSQL on port {} in recovery",
            self.port
        ));
        let log = self.data.join(LOG_FILE);
        let out = pg::tool(self.def, "pg_ctl")
            .args(["-D", &self.data_s, "-l"])
            .arg(&log)
            .args(["-w", "-t", START_WAIT_SECS, "start"])
            .run(self.ctx)
            .await?;
        if out.status.success() {
            return Ok(());
        }
        // pg_ctl gave up waiting, but a server still replaying WAL is fine.
        if self.running().await? {
            return Ok(());
        }
        Err(self
            .server_failed("the recovery server did not start")
            .with_log(format!("{}\n{}", out.log, self.log_excerpt())))
    }

    /// Whether a server runs in the data dir (`pg_ctl status`).
    async fn running(&self) -> Result<bool, StepError> {
        let out = pg::tool(self.def, "pg_ctl")
            .args(["-D", &self.data_s, "status"])
            .run(self.ctx)
            .await?;
        Ok(out.status.success())
    }

    /// Stops the server in the data dir, if any (immediate: its state is being thrown away).
    async fn stop(&self) {
        let ctx = StepContext {
            cancel: Default::default(),
            ..self.ctx.clone()
        };
        let _ = pg::tool(self.def, "pg_ctl")
            .args(["-D", &self.data_s, "-m", "immediate", "-w", "stop"])
            .run(&ctx)
            .await;
    }

    /// Polls until recovery has finished (`pg_is_in_recovery()` false), reporting progress.
    async fn wait_for_promotion(&self) -> Result<Progress, StepError> {
        let mut conn: Option<sqlx::PgConnection> = None;
        let mut last_report: Option<Instant> = None;
        let mut last_err = String::new();
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(StepError::retryable("cancelled while waiting for recovery"));
            }
            if conn.is_none() {
                match pg::connect(self.def).await {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        last_err = e.message;
                        if !self.running().await? {
                            return Err(self.server_failed("the recovery server stopped"));
                        }
                    }
                }
            }
            if let Some(c) = conn.as_mut() {
                let row: Result<(bool, Option<String>, Option<String>), _> = sqlx::query_as(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, \
                     to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', \
                             'YYYY-MM-DD HH24:MI:SS.US \"UTC\"')",
                )
                .fetch_one(&mut *c)
                .await;
                match row {
                    Ok((false, lsn, time)) => {
                        let (current, timeline): (Option<String>, Option<String>) = sqlx::query_as(
                            "SELECT pg_current_wal_lsn()::text, \
                                 pg_walfile_name(pg_current_wal_lsn())",
                        )
                        .fetch_one(&mut *c)
                        .await
                        .map_err(|e| pg::query_error(self.def, "reading WAL position", e))?;
                        return Ok(Progress {
                            replay_lsn: lsn,
                            replay_time: time,
                            current_lsn: current,
                            timeline: timeline
                                .and_then(|w| i64::from_str_radix(w.get(..8)?, 16).ok()),
                        });
                    }
                    Ok((true, lsn, time)) => {
                        if last_report.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
                            last_report = Some(Instant::now());
                            self.ctx.progress.line(format!(
                                "recovering: replayed up to {} (last commit {})",
                                lsn.as_deref().unwrap_or("?"),
                                time.as_deref().unwrap_or("none yet")
                            ));
                        }
                    }
                    Err(e) => {
                        last_err = pg::scrub(self.def, &e.to_string());
                        conn = None;
                        if !self.running().await? {
                            return Err(self.server_failed("the recovery server stopped"));
                        }
                    }
                }
            }
            tracing::trace!(error = %last_err, "waiting for recovery");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = self.ctx.cancel.cancelled() => {}
            }
        }
    }

    /// The server log (and the newest file of `log/`, when `logging_collector` is on).
    fn server_log(&self) -> String {
        let mut text = std::fs::read_to_string(self.data.join(LOG_FILE)).unwrap_or_default();
        if let Ok(rd) = std::fs::read_dir(self.data.join("log")) {
            let newest = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .max();
            if let Some((_, path)) = newest
                && let Ok(t) = std::fs::read_to_string(path)
            {
                text.push_str(&t);
            }
        }
        pg::scrub(self.def, &text)
    }

    /// The last lines of the server log, for the run log.
    fn log_excerpt(&self) -> String {
        let text = self.server_log();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        trim_output(&tail, 16 * 1024)
    }

    /// An error carrying the server's own FATAL/PANIC message.
    fn server_failed(&self, what: &str) -> StepError {
        let text = self.server_log();
        let fatal: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
            .map(|l| {
                l.split_once("FATAL:")
                    .or_else(|| l.split_once("PANIC:"))
                    .map_or(l, |(_, m)| m.trim())
            })
            .collect();
        let mut msg = format!("{what} on port {}", self.port);
        match fatal.last() {
            Some(m) => msg.push_str(&format!(": {m}")),
            None => msg.push_str(&format!(" (see {})", self.data.join(LOG_FILE).display())),
        }
        if text.contains("recovery ended before configured recovery target was reached") {
            msg.push_str(
                " (the WAL archive ends before the target time: is WAL up to the target \
                 archived? run wal_archive_check)",
            );
        }
        StepError::fatal(msg).with_log(self.log_excerpt())
    }

    /// The server's own words on where recovery stopped (the last recovery's lines).
    fn stop_point(&self) -> Option<String> {
        let log = self.server_log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("recovery stopping") || l.contains("last completed transaction"))
            .map(|l| l.split_once("LOG:").map_or(l, |(_, m)| m.trim()))
            .collect();
        let stop = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("recovery stopping"));
        let last = lines.iter().rev().find(|l| l.starts_with("last completed"));
        match (stop, last) {
            (None, None) => None,
            (a, b) => Some(
                a.into_iter()
                    .chain(b)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

/// Removes everything inside `dir` (not `dir` itself).
fn wipe(dir: &Path) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in rd {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        let r = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_settings_from_controldata() {
        let out = "Database cluster state:               in archive recovery\n\
                   max_connections setting:              200\n\
                   max_worker_processes setting:         8\n\
                   max_wal_senders setting:              10\n\
                   max_prepared_xacts setting:           0\n\
                   max_locks_per_xact setting:           64\n";
        assert_eq!(
            primary_settings(out),
            [
                ("max_connections", 200),
                ("max_worker_processes", 8),
                ("max_wal_senders", 10),
                ("max_prepared_transactions", 0),
                ("max_locks_per_transaction", 64)
            ]
        );
        assert!(primary_settings("max_connections setting: lots\ngarbage").is_empty());
    }

    #[test]
    fn target_times() {
        let want = "2026-01-27T14:30:00Z".parse::<DateTime<Utc>>().unwrap();
        for s in [
            "2026-01-27 14:30:00",
            "2026-01-27 14:30",
            "2026-01-27 14:30:00 UTC",
            "2026-01-27T14:30:00Z",
            "2026-01-27T16:30:00+02:00",
            " 2026-01-27T14:30:00 ",
        ] {
            assert_eq!(parse_target_time(s).unwrap(), want, "{s}");
        }
        assert_eq!(
            pg_time(parse_target_time("2026-01-27T14:30:00.25Z").unwrap()),
            "2026-01-27 14:30:00.250000+00"
        );
        let err = parse_target_time("yesterday").unwrap_err();
        assert!(err.contains("YYYY-MM-DD HH:MM:SS"), "{err}");
    }

    /// The restore_command as PostgreSQL runs it (`%f`, `%p` filled in, `sh -c`) against an
    /// archive holding a plain and a gzipped segment.
    #[test]
    fn restore_command_reads_plain_and_gzipped_segments() {
        use std::io::Write as _;
        let archive = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let a = archive.path();
        std::fs::write(a.join("000000010000000000000001"), b"plain segment").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"gzipped segment").unwrap();
        std::fs::write(a.join("000000010000000000000002.gz"), gz.finish().unwrap()).unwrap();
        // Both forms of one segment: the plain file is used.
        std::fs::write(a.join("000000010000000000000003"), b"plain wins").unwrap();
        std::fs::write(a.join("000000010000000000000003.gz"), b"not gzip").unwrap();
        let restore = |f: &str| {
            let p = out.path().join("RECOVERYXLOG");
            let _ = std::fs::remove_file(&p);
            let cmd = restore_command(a)
                .replace("%f", f)
                .replace("%p", &p.display().to_string());
            let ok = std::process::Command::new("sh")
                .args(["-c", &cmd])
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            (ok, std::fs::read(&p).ok())
        };
        assert_eq!(
            restore("000000010000000000000001"),
            (true, Some(b"plain segment".to_vec()))
        );
        assert_eq!(
            restore("000000010000000000000002"),
            (true, Some(b"gzipped segment".to_vec()))
        );
        assert_eq!(
            restore("000000010000000000000003"),
            (true, Some(b"plain wins".to_vec()))
        );
        // A segment the archive does not hold fails, as recovery expects at its end.
        assert!(!restore("000000010000000000000004").0);
        assert!(!restore("00000002.history").0);
    }

    #[test]
    fn validation() {
        let mut res = Resources::default();
        let def = |dir: Option<&str>| PgClusterDef {
            url: crate::secret::Secret::new("postgres://postgres@127.0.0.1:5999/postgres"),
            bin_dir: None,
            data_dir: dir.map(PathBuf::from),
            os_user: None,
        };
        res.postgres
            .insert("main".into(), def(Some("/srv/pg/main")));
        res.postgres
            .insert("pitr".into(), def(Some("/srv/pg/pitr")));
        res.postgres.insert("nodir".into(), def(None));
        res.postgres
            .insert("clash".into(), def(Some("/srv/pg/main")));
        res.backups.insert(
            "default".into(),
            crate::resources::BackupStoreDef::Local {
                path: "/tmp/x".into(),
            },
        );
        let kind = PitrKind(Arc::new(res));
        let base = json!({"target_time": "{timestamp}", "wal_archive": "/archive", "target_cluster": "pitr"});
        assert!(kind.validate(&base).is_ok());
        let with = |k: &str, v: serde_json::Value| {
            let mut p = base.clone();
            p[k] = v;
            kind.validate(&p).unwrap_err()
        };
        assert!(
            with("target_time", json!("soon")).starts_with("target_time: `soon` is not a time")
        );
        assert!(with("wal_archive", json!("/a'b")).starts_with("wal_archive:"));
        assert!(with("wal_archive", json!("archive")).contains("absolute"));
        assert!(with("target_cluster", json!("nodir")).contains("has no data_dir"));
        assert!(
            with("target_cluster", json!("clash")).contains("also the data_dir of [postgres.main]")
        );
        assert!(
            with("target_cluster", json!("nope")).contains("unknown PostgreSQL cluster `nope`")
        );
        assert!(with("store", json!("s3")).contains("unknown backup store `s3`"));
        assert!(with("backup", json!("../x")).starts_with("backup:"));
        assert!(with("verify_tables", json!([""])).starts_with("verify_tables:"));
    }
}
