//! `verify_backup` step (the seed's weekly automated restore test): restores a stored backup
//! into a new scratch database `<prefix>_test_<UTC yyyymmddhhmmss>`, checks its SHA-256,
//! compares row counts with the manifest and configured minimums, runs smoke SQL and an
//! optional smoke command, and always drops the scratch database. It touches nothing else, so
//! it is neither destructive nor harmful to repeat. A hot standby (`pg_is_in_recovery()`) is
//! refused before anything is created or restored: it cannot hold a scratch database, and in
//! an active-passive layout the DR cluster is one.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::Instant,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Connection as _;

use crate::{
    backup::{
        self, BackupKind, BackupStore, Manifest, check_store, default_tables, mb,
        restore::{self, RestoreStats},
        scratch::Scratch,
        step_error,
    },
    pg::{self, GroupGuard, capture, check_tables, last_line},
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput, trim_output},
    steps::values::duration,
};

/// Parameters of a `verify_backup` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBackupParams {
    /// Backup store (`[backups.<name>]`) holding the backup. Default `default`.
    #[serde(default = "default_store")]
    pub store: String,
    /// The backup's name, or `latest` (the newest complete sql_gzip or custom backup by
    /// manifest time). Usually `{backup}` from `/dr verify-backup <name|latest>`.
    #[serde(default = "latest")]
    pub backup: String,
    /// Only consider backups of this kind: `sql_gzip` or `custom`. Default: either.
    #[serde(default)]
    pub kind: Option<String>,
    /// The `[postgres.<name>]` cluster the scratch database is created on. It must take
    /// writes: a hot standby is refused.
    pub cluster: String,
    /// Scratch database name prefix (lowercase letters, digits, `_`; at most 40). Default `drbot`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Tables to count after the restore. Default: projects, project_payloads, project_events.
    /// Each must exist; tables the manifest counted are checked too.
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// Minimum row count per table, e.g. `{ projects = 1 }`.
    #[serde(default)]
    pub min_rows: BTreeMap<String, i64>,
    /// SQL assertions run in the scratch database; each returns one boolean that must be true.
    #[serde(default)]
    pub smoke_sql: Vec<SmokeSql>,
    /// A command run after the restore (e.g. `pytest tests/smoke/`), with
    /// `DRBOT_SCRATCH_DB_URL` (no password; `PGPASSWORD` is set when the cluster has one).
    #[serde(default)]
    pub smoke_command: Option<SmokeCommand>,
    /// Parallel jobs of `pg_restore -j` for custom-format dumps. Default 2.
    #[serde(default = "two")]
    pub jobs: u32,
    /// Where a custom-format dump is downloaded before `pg_restore` (which needs a file).
    /// Default: the system temp dir.
    #[serde(default)]
    pub temp_dir: Option<PathBuf>,
}

/// One smoke SQL assertion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeSql {
    /// Shown in the result, e.g. `every payload has a project`.
    pub label: String,
    /// A query returning one row with one boolean column, true when the check passes.
    pub sql: String,
}

/// The optional smoke command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeCommand {
    /// Program to run (looked up in PATH).
    pub command: String,
    /// Arguments, passed as they are (no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Time limit, e.g. `"10m"`. Default 10 minutes.
    #[serde(default = "ten_minutes")]
    pub timeout: String,
}

fn default_store() -> String {
    "default".into()
}
fn latest() -> String {
    "latest".into()
}
fn default_prefix() -> String {
    "drbot".into()
}
fn two() -> u32 {
    2
}
fn ten_minutes() -> String {
    "10m".into()
}

/// Bytes of the smoke command's output kept.
const SMOKE_LOG: usize = 8 * 1024;

/// The `verify_backup` step type.
pub struct VerifyBackupKind(pub Arc<Resources>);

impl VerifyBackupKind {
    fn parse(&self, p: &serde_json::Value) -> Result<VerifyBackupParams, String> {
        let p: VerifyBackupParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        check_store(&self.0, "store", &p.store)?;
        if p.backup.trim().is_empty() {
            return Err("backup: name a backup or `latest`".into());
        }
        if !p.backup.contains('{')
            && p.backup != "latest"
            && !backup::manifest::valid_name(&p.backup)
        {
            return Err(format!(
                "backup: `{}` is not a backup name (letters, digits, `.`, `_`, `-`) or `latest`",
                p.backup
            ));
        }
        if let Some(k) = &p.kind {
            match BackupKind::parse(k) {
                Some(BackupKind::SqlGzip | BackupKind::Custom) => {}
                _ => return Err(format!("kind: `{k}` must be `sql_gzip` or `custom`")),
            }
        }
        let prefix_ok = !p.prefix.is_empty()
            && p.prefix.len() <= 40
            && p.prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && p.prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !prefix_ok {
            return Err(format!(
                "prefix: `{}` must start with a lowercase letter and hold at most 40 lowercase \
                 letters, digits or `_`",
                p.prefix
            ));
        }
        check_tables("tables", &p.tables)?;
        check_tables("min_rows", p.min_rows.keys())?;
        if let Some((t, n)) = p.min_rows.iter().find(|(_, n)| **n < 0) {
            return Err(format!("min_rows.{t}: {n} is negative"));
        }
        if !(1..=64).contains(&p.jobs) {
            return Err(format!("jobs: {} must be between 1 and 64", p.jobs));
        }
        for (i, s) in p.smoke_sql.iter().enumerate() {
            if s.label.trim().is_empty() {
                return Err(format!("smoke_sql[{i}].label: must not be empty"));
            }
            if s.sql.trim().is_empty() {
                return Err(format!("smoke_sql[{i}].sql: must not be empty"));
            }
        }
        if let Some(c) = &p.smoke_command {
            if c.command.trim().is_empty() {
                return Err("smoke_command.command: must not be empty".into());
            }
            duration("smoke_command.timeout", &c.timeout)?;
        }
        Ok(p)
    }
}

impl StepKind for VerifyBackupKind {
    fn name(&self) -> &'static str {
        "verify_backup"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["psql", "pg_restore"]
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.parse(p).map(|_| ())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(VerifyBackup {
            params: self.parse(p)?,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `verify_backup` step.
pub struct VerifyBackup {
    params: VerifyBackupParams,
    resources: Arc<Resources>,
}

/// Row count check of one table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableCheck {
    /// Rows counted in the source when the backup was taken (from the manifest).
    pub expected: Option<i64>,
    /// Configured minimum.
    pub min: Option<i64>,
    /// Rows in the restored database (`None`: the table is missing).
    pub got: Option<i64>,
    /// Whether the table passed.
    pub ok: bool,
}

/// Outcome of one smoke check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SmokeResult {
    /// The check's label (or the command line).
    pub label: String,
    /// Whether it passed.
    pub ok: bool,
    /// What went wrong, when it failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The result stored with the step (StepOutput.data, or inside the error's log).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Whether everything passed.
    pub passed: bool,
    /// The backup verified.
    pub backup: String,
    /// Its kind.
    pub kind: BackupKind,
    /// When it was taken.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Where it was taken from.
    pub source: String,
    /// The cluster restored into.
    pub cluster: String,
    /// The scratch database (dropped).
    pub scratch_db: String,
    /// Whether the scratch database was dropped.
    pub scratch_dropped: bool,
    /// Bytes read from the store.
    pub bytes: u64,
    /// Bytes of SQL applied (plain dumps).
    pub sql_bytes: Option<u64>,
    /// Seconds spent restoring.
    pub restore_seconds: f64,
    /// Seconds for the whole verification.
    pub duration_seconds: f64,
    /// Stored bytes restored per second, in MB/s.
    pub throughput_mb_s: f64,
    /// Per-table row counts.
    pub tables: BTreeMap<String, TableCheck>,
    /// Smoke checks.
    pub smoke: Vec<SmokeResult>,
    /// Every problem found, one sentence each.
    pub problems: Vec<String>,
}

#[async_trait]
impl Step for VerifyBackup {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let started = Instant::now();
        let p = &self.params;
        let def = pg::cluster(&self.resources, &p.cluster).map_err(StepError::fatal)?;
        let store_def = self
            .resources
            .backups
            .get(&p.store)
            .ok_or_else(|| StepError::fatal(format!("unknown backup store `{}`", p.store)))?;
        let store = backup::open(store_def).await.map_err(step_error)?;
        let manifest = find(&store, &p.backup, p.kind.as_deref()).await?;
        ctx.progress.line(format!(
            "verifying backup {} ({}, {}, taken {} from {}) in a scratch database on {}",
            manifest.name,
            manifest.kind,
            mb(manifest.size),
            manifest.created_at.format("%Y-%m-%d %H:%M:%SZ"),
            manifest.source,
            def.display()
        ));
        let scratch = Scratch::create(def, &p.cluster, &p.prefix).await?;
        for left in &scratch.leftovers {
            ctx.progress.line(format!(
                "dropped scratch database {left}, left behind by a verification that died"
            ));
        }
        let scratch_db = scratch.name().to_string();
        ctx.progress
            .line(format!("created scratch database {scratch_db}"));

        let checked = self.check(ctx, &store, &manifest, def, &scratch_db).await;

        let dropped = scratch.drop_now().await;
        match &dropped {
            Ok(()) => ctx
                .progress
                .line(format!("dropped scratch database {scratch_db}")),
            Err(e) => ctx
                .progress
                .line(format!("could not drop scratch database {scratch_db}: {e}")),
        }
        let (stats, tables, smoke, mut problems, log) = match checked {
            Ok(c) => c,
            // Cancelled, or the restore itself failed: nothing more to report than the error.
            Err(mut e) => {
                if let Err(d) = &dropped {
                    e.message.push_str(&format!("; also: {d}"));
                }
                return Err(e);
            }
        };
        if let Err(e) = &dropped {
            problems.push(format!(
                "scratch database {scratch_db} was not dropped: {e}"
            ));
        }
        let duration = started.elapsed().as_secs_f64();
        let report = VerifyReport {
            passed: problems.is_empty(),
            backup: manifest.name.clone(),
            kind: manifest.kind,
            created_at: manifest.created_at,
            source: manifest.source.clone(),
            cluster: def.display(),
            scratch_db,
            scratch_dropped: dropped.is_ok(),
            bytes: stats.stored_bytes,
            sql_bytes: stats.sql_bytes,
            restore_seconds: round2(stats.seconds),
            duration_seconds: round2(duration),
            throughput_mb_s: round2(stats.stored_bytes as f64 / 1e6 / stats.seconds.max(1e-3)),
            tables,
            smoke,
            problems,
        };
        let data = serde_json::to_value(&report).unwrap_or_default();
        if report.passed {
            Ok(StepOutput {
                summary: summary(&report),
                log,
                data,
            })
        } else {
            let json = serde_json::to_string_pretty(&report).unwrap_or_default();
            Err(StepError::fatal(format!(
                "backup {} failed verification: {}",
                report.backup,
                report.problems.join("; ")
            ))
            .with_log(trim_output(&format!("{log}\nresult: {json}"), 32 * 1024)))
        }
    }
}

type Checked = (
    RestoreStats,
    BTreeMap<String, TableCheck>,
    Vec<SmokeResult>,
    Vec<String>,
    String,
);

impl VerifyBackup {
    /// Restore, count, smoke-test. `Err` when the restore could not complete (or was
    /// cancelled); check failures are returned as problems.
    async fn check(
        &self,
        ctx: &StepContext,
        store: &BackupStore,
        manifest: &Manifest,
        def: &PgClusterDef,
        db: &str,
    ) -> Result<Checked, StepError> {
        let p = &self.params;
        let temp_dir = p.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let stats = restore::restore(store, manifest, def, db, p.jobs, &temp_dir, ctx).await?;
        ctx.progress.line(format!(
            "restored {} in {:.1}s; checksum ok; counting rows",
            mb(stats.stored_bytes),
            stats.seconds
        ));
        let mut problems = Vec::new();
        let mut conn = pg::connect_db(def, db).await?;

        // Tables: the configured ones, those the manifest counted, those with a minimum.
        let names: BTreeSet<String> = p
            .tables
            .iter()
            .chain(manifest.row_counts.keys())
            .chain(p.min_rows.keys())
            .cloned()
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        let counts = tokio::select! {
            r = pg::count_rows(&mut conn, &names) => {
                r.map_err(|e| pg::query_error(def, "counting rows", e))?
            }
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled while counting rows")),
        };
        let mut tables = BTreeMap::new();
        for (t, got) in counts {
            let expected = manifest.row_counts.get(&t).copied();
            let min = p.min_rows.get(&t).copied();
            let mut ok = true;
            match got {
                None => {
                    ok = false;
                    problems.push(match expected {
                        Some(n) => format!(
                            "table {t} is missing from the restored database (the source had {n} rows)"
                        ),
                        None => format!("table {t} is missing from the restored database"),
                    });
                }
                Some(n) => {
                    if let Some(e) = expected
                        && n != e
                    {
                        ok = false;
                        problems.push(format!("table {t} has {n} rows, the manifest says {e}"));
                    }
                    if let Some(m) = min
                        && n < m
                    {
                        ok = false;
                        problems.push(format!(
                            "table {t} has {n} rows, fewer than the minimum {m}"
                        ));
                    }
                }
            }
            tables.insert(
                t,
                TableCheck {
                    expected,
                    min,
                    got,
                    ok,
                },
            );
        }

        let mut smoke = Vec::new();
        for s in &p.smoke_sql {
            let res = tokio::select! {
                r = sqlx::query_scalar::<_, Option<bool>>(sqlx::AssertSqlSafe(s.sql.clone()))
                    .fetch_all(&mut conn) => r,
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled during smoke SQL")),
            };
            let (ok, detail) = match res {
                Ok(rows) if rows.len() == 1 && rows[0] == Some(true) => (true, String::new()),
                Ok(rows) if rows.len() == 1 => (false, format!("returned {:?}", rows[0])),
                Ok(rows) => (false, format!("returned {} rows, expected one", rows.len())),
                Err(e) => (false, pg::scrub(def, &e.to_string())),
            };
            if !ok {
                problems.push(format!("smoke check `{}` failed: {detail}", s.label));
            }
            smoke.push(SmokeResult {
                label: s.label.clone(),
                ok,
                detail,
            });
        }
        let _ = conn.close().await;

        let mut log = stats.log.clone();
        if let Some(cmd) = &p.smoke_command {
            let (result, out) = run_smoke_command(ctx, cmd, def, db).await?;
            if !result.ok {
                problems.push(format!("smoke command failed: {}", result.detail));
            }
            smoke.push(result);
            log.push('\n');
            log.push_str(&out);
        }
        Ok((stats, tables, smoke, problems, log))
    }
}

/// Finds the backup to verify: by name, or the newest sql_gzip/custom one for `latest` (an
/// error when an unusable manifest might be newer, rather than an older backup).
async fn find(
    store: &BackupStore,
    backup: &str,
    kind: Option<&str>,
) -> Result<Manifest, StepError> {
    let kind = match kind {
        Some(k) => Some(
            BackupKind::parse(k).ok_or_else(|| StepError::fatal(format!("unknown kind `{k}`")))?,
        ),
        None => None,
    };
    let manifest = if backup == "latest" && kind.is_none() {
        store
            .list_all()
            .await
            .map_err(step_error)?
            .newest(
                |k| matches!(k, BackupKind::SqlGzip | BackupKind::Custom),
                None,
            )
            .map_err(step_error)?
            .cloned()
            .ok_or_else(|| {
                StepError::fatal(format!(
                    "no complete sql_gzip or custom backup in {}",
                    store.display()
                ))
            })?
    } else {
        store.resolve(backup, kind).await.map_err(step_error)?
    };
    if manifest.kind == BackupKind::BaseTar {
        return Err(StepError::fatal(format!(
            "backup `{}` is a base backup; verify_backup restores sql_gzip and custom dumps",
            manifest.name
        )));
    }
    Ok(manifest)
}

/// Runs the smoke command with the scratch database's URL; returns its result and log.
async fn run_smoke_command(
    ctx: &StepContext,
    c: &SmokeCommand,
    def: &PgClusterDef,
    db: &str,
) -> Result<(SmokeResult, String), StepError> {
    let limit = duration("smoke_command.timeout", &c.timeout).map_err(StepError::fatal)?;
    let url = pg::db_url_without_password(def, db)?;
    let label = std::iter::once(c.command.as_str())
        .chain(c.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = tokio::process::Command::new(&c.command);
    cmd.args(&c.args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for key in ["PATH", "HOME", "LANG", "TMPDIR"] {
        if let Ok(v) = std::env::var(key) {
            cmd.env(key, v);
        }
    }
    cmd.env("DRBOT_SCRATCH_DB_URL", &url)
        .env("DRBOT_SCRATCH_DB", db)
        .envs(&c.env);
    if let Some(p) = pg::password(def) {
        cmd.env("PGPASSWORD", p);
    }
    if let Some(cwd) = &c.cwd {
        cmd.current_dir(cwd);
    }
    ctx.progress
        .line(format!("running smoke command `{label}`"));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let detail = format!("could not start `{}`: {e}", c.command);
            return Ok((
                SmokeResult {
                    label,
                    ok: false,
                    detail: detail.clone(),
                },
                detail,
            ));
        }
    };
    let mut group = GroupGuard::new(child.id());
    let out = capture(child.stdout.take(), def, SMOKE_LOG);
    let err = capture(child.stderr.take(), def, SMOKE_LOG);
    let all = async { tokio::join!(out, err, child.wait()) };
    let (out, err, status) = tokio::select! {
        r = all => r,
        _ = tokio::time::sleep(limit) => {
            group.kill();
            let detail = format!("`{label}` did not finish within {}", humantime::format_duration(limit));
            return Ok((SmokeResult { label, ok: false, detail: detail.clone() }, detail));
        }
        _ = ctx.cancel.cancelled() => {
            group.kill();
            return Err(StepError::retryable("cancelled during the smoke command"));
        }
    };
    group.kill();
    let text = [out.as_str(), err.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    let log = format!("$ {label}\n{text}");
    let (ok, detail) = match status {
        Ok(s) if s.success() => (true, String::new()),
        Ok(s) => (
            false,
            format!(
                "`{label}` exited with {}{}",
                s.code()
                    .map_or("a signal".to_string(), |c| format!("status {c}")),
                match last_line(&text) {
                    "" => String::new(),
                    l => format!(": {l}"),
                }
            ),
        ),
        Err(e) => (false, format!("waiting for `{label}`: {e}")),
    };
    Ok((SmokeResult { label, ok, detail }, log))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One line for the chat card.
fn summary(r: &VerifyReport) -> String {
    let counts: Vec<String> = r
        .tables
        .iter()
        .map(|(t, c)| format!("{t} {}", c.got.unwrap_or(0)))
        .collect();
    let smoke = if r.smoke.is_empty() {
        String::new()
    } else {
        format!(", {} smoke checks passed", r.smoke.len())
    };
    format!(
        "backup {} verified: rows match ({}){smoke}; {} restored in {:.1}s ({:.1} MB/s); scratch database dropped",
        r.backup,
        counts.join(", "),
        mb(r.bytes),
        r.restore_seconds,
        r.throughput_mb_s
    )
}
