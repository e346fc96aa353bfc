//! `backup_fetch` step: downloads a backup (by name or `latest`) from a backup store into
//! `<dest>/<backup name>/`, checking every file's size and SHA-256 against the manifest, and
//! puts a copy of the manifest next to the files. Re-running it just downloads again.

use std::{path::PathBuf, sync::Arc, time::Instant};

use async_trait::async_trait;
use serde::Deserialize;

use crate::{
    backup::{self, BackupKind, check_store, mb, step_error},
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `backup_fetch` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFetchParams {
    /// Backup store (`[backups.<name>]`). Default `default`.
    #[serde(default = "default_store")]
    pub store: String,
    /// The backup's name, or `latest` (newest complete backup by manifest time).
    #[serde(default = "latest")]
    pub backup: String,
    /// Only consider backups of this kind: `sql_gzip`, `custom` or `base_tar`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Directory to download into; the files land in `<dest>/<backup name>/`.
    pub dest: PathBuf,
}

fn default_store() -> String {
    "default".into()
}
fn latest() -> String {
    "latest".into()
}

/// The `backup_fetch` step type.
pub struct BackupFetchKind(pub Arc<Resources>);

impl BackupFetchKind {
    fn parse(
        &self,
        p: &serde_json::Value,
    ) -> Result<(BackupFetchParams, Option<BackupKind>), String> {
        let p: BackupFetchParams = params(p)?;
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
        let kind = match &p.kind {
            None => None,
            Some(k) => Some(BackupKind::parse(k).ok_or_else(|| {
                format!("kind: `{k}` must be `sql_gzip`, `custom` or `base_tar`")
            })?),
        };
        if p.dest.as_os_str().is_empty() {
            return Err("dest: must name a directory".into());
        }
        Ok((p, kind))
    }
}

impl StepKind for BackupFetchKind {
    fn name(&self) -> &'static str {
        "backup_fetch"
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
        Ok(Box::new(BackupFetch {
            params,
            kind,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `backup_fetch` step.
pub struct BackupFetch {
    params: BackupFetchParams,
    kind: Option<BackupKind>,
    resources: Arc<Resources>,
}

#[async_trait]
impl Step for BackupFetch {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let started = Instant::now();
        let p = &self.params;
        let store_def = self
            .resources
            .backups
            .get(&p.store)
            .ok_or_else(|| StepError::fatal(format!("unknown backup store `{}`", p.store)))?;
        let store = backup::open(store_def).await.map_err(step_error)?;
        let manifest = store
            .resolve(&p.backup, self.kind)
            .await
            .map_err(step_error)?;
        let dir = p.dest.join(&manifest.name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StepError::fatal(format!("cannot create {}: {e}", dir.display())))?;
        let mut files = Vec::new();
        for f in &manifest.files {
            let path = dir.join(&f.name);
            ctx.progress.line(format!(
                "downloading {}/{} ({})",
                manifest.name,
                f.name,
                mb(f.size)
            ));
            tokio::select! {
                r = store.fetch_to(&manifest, &f.name, &path) => { r.map_err(step_error)?; }
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled while downloading")),
            }
            files.push(serde_json::json!({
                "name": f.name, "size": f.size, "sha256": f.sha256, "path": path,
            }));
        }
        let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        let manifest_path = dir.join(backup::MANIFEST_FILE);
        tokio::fs::write(&manifest_path, json).await.map_err(|e| {
            StepError::fatal(format!("cannot write {}: {e}", manifest_path.display()))
        })?;
        let seconds = started.elapsed().as_secs_f64();
        Ok(StepOutput {
            summary: format!(
                "fetched backup {} ({}, {}, taken {}) to {} in {seconds:.1}s; checksums ok",
                manifest.name,
                manifest.kind,
                mb(manifest.size),
                manifest.created_at.format("%Y-%m-%d %H:%M:%SZ"),
                dir.display()
            ),
            log: String::new(),
            data: serde_json::json!({
                "backup": manifest.name,
                "kind": manifest.kind,
                "created_at": manifest.created_at,
                "dir": dir,
                "files": files,
                "bytes": manifest.size,
                "seconds": (seconds * 100.0).round() / 100.0,
                "row_counts": manifest.row_counts,
            }),
        })
    }
}
