//! `backup_create` step: `pg_dump` of one database streamed into a backup store (plain SQL
//! gzip-compressed on the way, or custom format as is), with the row counts of the chosen
//! tables taken in the same snapshot as the dump, then the manifest written last. It only
//! reads the database and adds a new backup, so it is neither destructive nor harmful to repeat.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde::Deserialize;
use sqlx::Connection as _;

use crate::{
    backup::{
        self, BackupKind, BackupStore, Manifest, check_store, default_tables, gzip::spawn_gzip, mb,
        step_error,
    },
    pg::{self, GroupGuard, capture, check_tables, last_line, spawn_error},
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `backup_create` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupCreateParams {
    /// The `[postgres.<name>]` cluster to dump.
    pub cluster: String,
    /// Database to dump. Default: the database in the cluster's URL.
    #[serde(default)]
    pub database: Option<String>,
    /// `sql_gzip` (plain SQL, gzip-compressed; default) or `custom` (`pg_dump -Fc`).
    #[serde(default = "sql_gzip")]
    pub format: String,
    /// Backup store (`[backups.<name>]`) to write to. Default `default`.
    #[serde(default = "default_store")]
    pub store: String,
    /// Tables whose row counts go into the manifest (those that exist are counted).
    /// Default: projects, project_payloads, project_events.
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// gzip level 1 (fastest) to 9 (smallest) for `sql_gzip`. Default 6.
    #[serde(default = "six")]
    pub gzip_level: u32,
}

fn sql_gzip() -> String {
    "sql_gzip".into()
}
fn default_store() -> String {
    "default".into()
}
fn six() -> u32 {
    6
}

/// Bytes of pg_dump's stderr kept.
const MAX_LOG: usize = 8 * 1024;

/// The `backup_create` step type.
pub struct BackupCreateKind(pub Arc<Resources>);

impl BackupCreateKind {
    fn parse(&self, p: &serde_json::Value) -> Result<(BackupCreateParams, BackupKind), String> {
        let p: BackupCreateParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        check_store(&self.0, "store", &p.store)?;
        let kind = match BackupKind::parse(&p.format) {
            Some(k @ (BackupKind::SqlGzip | BackupKind::Custom)) => k,
            _ => {
                return Err(format!(
                    "format: `{}` must be `sql_gzip` or `custom`",
                    p.format
                ));
            }
        };
        if let Some(db) = &p.database
            && db.trim().is_empty()
        {
            return Err("database: must not be empty".into());
        }
        check_tables("tables", &p.tables)?;
        if !(1..=9).contains(&p.gzip_level) {
            return Err(format!("gzip_level: {} must be 1 to 9", p.gzip_level));
        }
        Ok((p, kind))
    }
}

impl StepKind for BackupCreateKind {
    fn name(&self) -> &'static str {
        "backup_create"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_dump"]
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
        let (params, kind) = self.parse(p)?;
        Ok(Box::new(BackupCreate {
            params,
            kind,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `backup_create` step.
pub struct BackupCreate {
    params: BackupCreateParams,
    kind: BackupKind,
    resources: Arc<Resources>,
}

#[async_trait]
impl Step for BackupCreate {
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
        let db = p.database.clone().unwrap_or_else(|| pg::url_database(def));
        let source = match def.display().rsplit_once('/') {
            Some((hostport, _)) => format!("{hostport}/{db}"),
            None => format!("{}/{db}", def.display()),
        };

        // One snapshot for the counts and the dump, so they agree even while writes go on.
        let mut conn = pg::connect_db(def, &db).await?;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "starting the snapshot", e))?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "exporting the snapshot", e))?;
        let counts = pg::count_rows(&mut conn, &p.tables)
            .await
            .map_err(|e| pg::query_error(def, "counting rows", e))?;
        let row_counts = counts
            .into_iter()
            .filter_map(|(t, n)| n.map(|n| (t, n)))
            .collect();

        let created_at = Utc::now();
        let name = unique_name(&store, &created_at.format("%Y%m%dT%H%M%SZ").to_string()).await?;
        ctx.progress.line(format!(
            "dumping {source} into backup {name} ({}) in {}",
            self.kind,
            store.display()
        ));
        let dumped = tokio::select! {
            r = self.dump(ctx, def, &db, &snapshot, &store, &name) => r,
            _ = ctx.cancel.cancelled() => Err(StepError::retryable("cancelled while dumping")),
        };
        let _ = conn.close().await;
        let (file, log) = match dumped {
            Ok(x) => x,
            Err(e) => {
                // Without a manifest it is never listed; remove what was written anyway.
                let _ = store.remove(&name).await;
                return Err(e);
            }
        };
        let manifest = Manifest::new(&name, self.kind, created_at, source, vec![file], row_counts);
        store.put_manifest(&manifest).await.map_err(step_error)?;
        let seconds = started.elapsed().as_secs_f64();
        let counts: Vec<String> = manifest
            .row_counts
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        let mut data = serde_json::to_value(&manifest).unwrap_or_default();
        data["store"] = serde_json::Value::String(store.display().to_string());
        data["seconds"] = serde_json::json!((seconds * 100.0).round() / 100.0);
        Ok(StepOutput {
            summary: format!(
                "backup {name} ({}, {}) of {} in {seconds:.1}s; rows: {}",
                self.kind,
                mb(manifest.size),
                manifest.source,
                if counts.is_empty() {
                    "none of the tables exist".to_string()
                } else {
                    counts.join(", ")
                }
            ),
            log,
            data,
        })
    }
}

impl BackupCreate {
    /// Runs pg_dump into the store; returns the stored file and the log.
    async fn dump(
        &self,
        ctx: &StepContext,
        def: &PgClusterDef,
        db: &str,
        snapshot: &str,
        store: &BackupStore,
        name: &str,
    ) -> Result<(backup::ManifestFile, String), StepError> {
        let format = match self.kind {
            BackupKind::Custom => "c",
            _ => "p",
        };
        let tool = pg::tool(def, "pg_dump")
            .as_current_user()
            .password_of(def)
            .args(["-w", "-F", format, "--snapshot", snapshot, "-d"])
            .arg(pg::db_conninfo(def, db)?);
        let mut child = tool
            .command()
            .spawn()
            .map_err(|e| spawn_error("pg_dump", def, e))?;
        let mut group = GroupGuard::new(child.id());
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| StepError::fatal("pg_dump has no stdout"))?;
        let err = capture(child.stderr.take(), def, MAX_LOG);
        let upload = async {
            match self.kind {
                BackupKind::Custom => store.put_file(name, BackupKind::CUSTOM_FILE, stdout).await,
                _ => {
                    let fd = stdout
                        .into_owned_fd()
                        .map_err(|e| backup::BackupError::io("pg_dump's stdout".to_string(), e))?;
                    let (rx, _read) = spawn_gzip(std::fs::File::from(fd), self.params.gzip_level);
                    let stream = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|item| (item, rx))
                    });
                    let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
                    store
                        .put_file(name, BackupKind::SQL_GZIP_FILE, reader)
                        .await
                }
            }
        };
        let (uploaded, err, status) = tokio::join!(upload, err, child.wait());
        group.kill();
        let status = status.map_err(|e| StepError::fatal(format!("waiting for pg_dump: {e}")))?;
        let log = format!("$ {}\n{err}\n({status})", tool.display());
        let file = dump_outcome(db, uploaded, status, &err).map_err(|e| e.with_log(log.clone()))?;
        ctx.progress
            .line(format!("stored {} ({})", file.name, mb(file.size)));
        Ok((file, log))
    }
}

/// The stored file, or the error that explains the failure. A failed upload comes first: the
/// store stopped reading, so pg_dump then failed on a broken pipe, which only hides the cause.
fn dump_outcome(
    db: &str,
    uploaded: Result<backup::ManifestFile, backup::BackupError>,
    status: std::process::ExitStatus,
    stderr: &str,
) -> Result<backup::ManifestFile, StepError> {
    match uploaded {
        Err(e) => {
            let mut e = step_error(e);
            if !status.success() {
                e.message
                    .push_str(&format!(" (pg_dump of {db} then stopped: {status})"));
            }
            Err(e)
        }
        Ok(_) if !status.success() => Err(StepError::retryable(format!(
            "pg_dump of {db} failed ({status}): {}",
            last_line(stderr)
        ))),
        Ok(file) => Ok(file),
    }
}

/// `base`, or `base-2`, `base-3`, … when a backup of that name already exists.
async fn unique_name(store: &BackupStore, base: &str) -> Result<String, StepError> {
    for n in 1..=100u32 {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        if !store.exists(&name).await.map_err(step_error)? {
            return Ok(name);
        }
    }
    Err(StepError::retryable(format!(
        "too many backups named {base}-*"
    )))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    fn file() -> backup::ManifestFile {
        backup::ManifestFile {
            name: "dump.sql.gz".into(),
            size: 1,
            sha256: "00".into(),
        }
    }

    #[test]
    fn a_failed_upload_is_the_reported_cause_not_pg_dumps_broken_pipe() {
        let upload = || {
            Err(backup::BackupError::io(
                "uploading app/dump.sql.gz to s3://bucket",
                std::io::Error::other("connection refused"),
            ))
        };
        let broken_pipe = std::process::ExitStatus::from_raw(1 << 8);
        let stderr = "pg_dump: error: could not write to output file: Broken pipe";
        let e = dump_outcome("app", upload(), broken_pipe, stderr).unwrap_err();
        assert!(e.message.contains("connection refused"), "{}", e.message);
        assert!(e.message.contains("s3://bucket"), "{}", e.message);
        assert!(!e.message.contains("Broken pipe"), "{}", e.message);
        assert!(
            e.message.contains("pg_dump of app then stopped"),
            "{}",
            e.message
        );
        let ok = std::process::ExitStatus::from_raw(0);
        let e = dump_outcome("app", upload(), ok, "").unwrap_err();
        assert!(!e.message.contains("then stopped"), "{}", e.message);
        // pg_dump failing on its own is pg_dump's error.
        let e = dump_outcome(
            "app",
            Ok(file()),
            broken_pipe,
            "pg_dump: error: permission denied for table t",
        )
        .unwrap_err();
        assert!(e.message.contains("permission denied"), "{}", e.message);
        assert!(e.retryable);
        assert_eq!(dump_outcome("app", Ok(file()), ok, "").unwrap(), file());
    }
}
