//! `pg_base_backup` step: `pg_basebackup -Ft -z` of a cluster into a scratch directory, then
//! uploaded to a backup store as a `base_tar` backup (`base.tar.gz`, `pg_wal.tar.gz`,
//! `backup_manifest`) with its manifest. These are the base backups `pg_pitr` restores.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::is_placeholder;
use crate::{
    backup::{self, BackupKind, Manifest, manifest::valid_name},
    pg,
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_base_backup` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseBackupParams {
    /// The `[postgres.<name>]` cluster to back up (its URL's role needs the REPLICATION
    /// attribute and a `replication` line in `pg_hba.conf`).
    pub cluster: String,
    /// The `[backups.<name>]` store to upload to (default `default`).
    #[serde(default = "default_store")]
    pub store: String,
    /// Backup name (default `<cluster>-base-<UTC time>`, e.g. `main-base-20260127T143000Z`).
    #[serde(default)]
    pub name: Option<String>,
    /// How WAL needed for consistency is included: `stream` (default; a second connection
    /// streams it into `pg_wal.tar.gz`) or `fetch` (collected at the end into `base.tar.gz`).
    #[serde(default = "default_wal_method")]
    pub wal_method: String,
    /// `fast` (default: an immediate checkpoint) or `spread` (gentler on a busy primary).
    #[serde(default = "default_checkpoint")]
    pub checkpoint: String,
    /// Directory for the scratch copy before upload (default: the system temp dir).
    #[serde(default)]
    pub work_dir: Option<String>,
}

fn default_store() -> String {
    "default".into()
}
fn default_wal_method() -> String {
    "stream".into()
}
fn default_checkpoint() -> String {
    "fast".into()
}

/// The `pg_base_backup` step type.
pub struct BaseBackupKind(pub Arc<Resources>);

impl BaseBackupKind {
    fn parse(&self, p: &serde_json::Value) -> Result<BaseBackupParams, String> {
        let p: BaseBackupParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        backup::check_store(&self.0, "store", &p.store)?;
        if !matches!(p.wal_method.as_str(), "stream" | "fetch") {
            return Err(format!(
                "wal_method: `{}` is not `stream` or `fetch`",
                p.wal_method
            ));
        }
        if !matches!(p.checkpoint.as_str(), "fast" | "spread") {
            return Err(format!(
                "checkpoint: `{}` is not `fast` or `spread`",
                p.checkpoint
            ));
        }
        if let Some(n) = &p.name
            && !is_placeholder(n)
            && !valid_name(n)
        {
            return Err(format!(
                "name: `{n}` is not a valid backup name (letters, digits, `.`, `_`, `-`)"
            ));
        }
        Ok(p)
    }
}

impl StepKind for BaseBackupKind {
    fn name(&self) -> &'static str {
        "pg_base_backup"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_basebackup"]
    }
    fn traits(&self) -> StepTraits {
        // Reads the cluster and adds a new backup; running it again just adds another one.
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
        Ok(Box::new(BaseBackup {
            params: self.parse(p)?,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `pg_base_backup` step.
pub struct BaseBackup {
    params: BaseBackupParams,
    resources: Arc<Resources>,
}

/// Removes the scratch directory when dropped (success, failure or cancel).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[async_trait]
impl Step for BaseBackup {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let started = Instant::now();
        let p = &self.params;
        let def = pg::cluster(&self.resources, &p.cluster).map_err(StepError::fatal)?;
        let store_def = self.resources.backups.get(&p.store).ok_or_else(|| {
            StepError::fatal(backup::check_store(&self.resources, "store", &p.store).unwrap_err())
        })?;
        let store = backup::open(store_def).await.map_err(backup::step_error)?;
        let name = match &p.name {
            Some(n) => n.clone(),
            None => format!(
                "{}-base-{}",
                sanitize(&p.cluster),
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            ),
        };
        if !valid_name(&name) {
            return Err(StepError::fatal(format!(
                "`{name}` is not a valid backup name (letters, digits, `.`, `_`, `-`)"
            )));
        }
        if let Some(existing) = store
            .read_manifest(&name)
            .await
            .map_err(backup::step_error)?
        {
            return Err(StepError::fatal(format!(
                "backup `{name}` already exists in {} (a {} backup from {}); name another",
                store.display(),
                existing.kind,
                existing.created_at.format("%Y-%m-%d %H:%M:%S UTC")
            )));
        }

        let base = match &p.work_dir {
            Some(d) => PathBuf::from(d),
            None => std::env::temp_dir(),
        };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let scratch = base.join(format!(
            "drbot-basebackup-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .map_err(|e| StepError::fatal(format!("cannot create {}: {e}", scratch.display())))?;
        let _guard = ScratchDir(scratch.clone());

        let conninfo = pg::conninfo(def).map_err(StepError::fatal)?;
        ctx.progress.line(format!(
            "pg_basebackup of {} (WAL {}, checkpoint {})",
            def.display(),
            p.wal_method,
            p.checkpoint
        ));
        let out = pg::tool(def, "pg_basebackup")
            .as_current_user()
            .password_of(def)
            .arg("-d")
            .arg(conninfo)
            .arg("-D")
            .arg(&scratch)
            .args(["-Ft", "-z", "-X", &p.wal_method, "-c", &p.checkpoint])
            .args(["--no-password", "--label", &format!("drbot {name}")])
            .progress(true)
            .run_ok(ctx)
            .await?;
        let finished = chrono::Utc::now();
        let backup_secs = started.elapsed().as_secs_f64();

        let files = list_files(&scratch)?;
        if !files.iter().any(|f| f == BackupKind::BASE_TAR_FILE) {
            return Err(StepError::fatal(format!(
                "pg_basebackup wrote no {} (it wrote: {})",
                BackupKind::BASE_TAR_FILE,
                files.join(", ")
            ))
            .with_log(out.log));
        }
        let mut stored = Vec::new();
        for file in &files {
            let f = tokio::fs::File::open(scratch.join(file))
                .await
                .map_err(|e| {
                    StepError::fatal(format!("cannot open {}: {e}", scratch.join(file).display()))
                })?;
            ctx.progress
                .line(format!("uploading {file} to {}", store.display()));
            let entry = tokio::select! {
                r = store.put_file(&name, file, f) => r.map_err(backup::step_error)?,
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled during upload")),
            };
            stored.push(entry);
        }
        let manifest = Manifest::new(
            name.clone(),
            BackupKind::BaseTar,
            finished,
            def.display(),
            stored,
            Default::default(),
        );
        store
            .put_manifest(&manifest)
            .await
            .map_err(backup::step_error)?;
        let secs = started.elapsed().as_secs_f64();
        Ok(StepOutput {
            summary: format!(
                "base backup `{name}` of {} stored in {}: {} file(s), {} in {secs:.1}s",
                def.display(),
                store.display(),
                manifest.files.len(),
                pg::human_bytes(manifest.size)
            ),
            log: out.log,
            data: json!({
                "backup": name,
                "store": store.display(),
                "source": def.display(),
                "created_at": manifest.created_at.to_rfc3339(),
                "files": manifest.files.iter().map(|f| json!({"name": f.name, "size": f.size, "sha256": f.sha256})).collect::<Vec<_>>(),
                "size": manifest.size,
                "wal_method": p.wal_method,
                "pg_basebackup_s": backup_secs,
                "duration_s": secs,
            }),
        })
    }
}

/// Letters, digits, `.`, `_`, `-` of a cluster name, for a backup name.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Regular files of `dir`, sorted.
fn list_files(dir: &Path) -> Result<Vec<String>, StepError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir)
        .map_err(|e| StepError::fatal(format!("cannot read {}: {e}", dir.display())))?;
    for entry in rd {
        let entry =
            entry.map_err(|e| StepError::fatal(format!("cannot read {}: {e}", dir.display())))?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}
