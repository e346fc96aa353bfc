//! `wal_archive_check` step (read-only): is the WAL archive current? Reports the newest
//! archived segment and its age and fails when it is older than `max_age` (the seed plan's
//! RPO of 15 minutes) or, with `cluster`, when `pg_stat_archiver` shows archiving failing.
//! Segments may be plain or gzipped (`.gz`), the forms `pg_pitr`'s `restore_command` reads;
//! a newest segment compressed otherwise (`.zst`, `.lz4`, …) fails the check, as a recovery
//! from that archive would.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    pg,
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `wal_archive_check` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalArchiveCheckParams {
    /// Directory `archive_command` copies WAL segments into.
    pub archive: String,
    /// Oldest acceptable age of the newest segment, e.g. `"15m"` (the default, the seed's RPO).
    #[serde(default = "default_max_age")]
    pub max_age: String,
    /// A `[postgres.<name>]` cluster whose `pg_stat_archiver` is checked too: archiving must
    /// be on, not failing, and its last archived file must be in `archive`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// First switch `cluster` to a new WAL segment (`pg_switch_wal()`) and wait until the
    /// finished one is in `archive`, so everything written so far can be replayed (e.g.
    /// before a PITR to a recent time). Needs `cluster`. Default `false`.
    #[serde(default)]
    pub switch_wal: bool,
}

fn default_max_age() -> String {
    "15m".into()
}

/// The `wal_archive_check` step type.
pub struct WalArchiveCheckKind(pub Arc<Resources>);

impl WalArchiveCheckKind {
    fn parse(&self, p: &serde_json::Value) -> Result<WalArchiveCheckParams, String> {
        let p: WalArchiveCheckParams = params(p)?;
        if p.archive.trim().is_empty() {
            return Err("archive: must not be empty".into());
        }
        if !is_placeholder(&p.max_age) {
            let d = duration("max_age", &p.max_age)?;
            if d.is_zero() {
                return Err("max_age: must be more than zero".into());
            }
        }
        if let Some(c) = &p.cluster {
            pg::check_cluster(&self.0, "cluster", c)?;
        }
        if p.switch_wal && p.cluster.is_none() {
            return Err("switch_wal: needs `cluster` (the cluster whose WAL is switched)".into());
        }
        Ok(p)
    }
}

impl StepKind for WalArchiveCheckKind {
    fn name(&self) -> &'static str {
        "wal_archive_check"
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
        let p = self.parse(p)?;
        let max_age = duration("max_age", &p.max_age)?;
        Ok(Box::new(WalArchiveCheck {
            archive: PathBuf::from(&p.archive),
            max_age,
            cluster: p.cluster,
            switch_wal: p.switch_wal,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `wal_archive_check` step.
pub struct WalArchiveCheck {
    archive: PathBuf,
    max_age: Duration,
    cluster: Option<String>,
    switch_wal: bool,
    resources: Arc<Resources>,
}

/// The newest WAL segment in an archive directory.
#[derive(Debug, Clone, PartialEq)]
pub struct NewestSegment {
    /// File name, e.g. `000000010000000000000003` (maybe with a compression suffix).
    pub name: String,
    /// Time since the file was last written.
    pub age: Duration,
    /// How many segments the directory holds.
    pub count: usize,
}

/// Whether `name` is a WAL segment file (24 hex digits, maybe `.partial` or compressed).
pub fn is_wal_segment(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("");
    let suffix_ok = match name.split_once('.') {
        None => true,
        Some((_, s)) => matches!(
            s,
            "partial" | "gz" | "zst" | "lz4" | "br" | "xz" | "bz2" | "partial.gz"
        ),
    };
    stem.len() == 24 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && suffix_ok
}

/// The compression suffix of a segment file that `pg_pitr`'s `restore_command` cannot read
/// (it reads plain and `.gz` segments), e.g. `Some("zst")`.
pub fn unrestorable_suffix(name: &str) -> Option<&str> {
    match name.split_once('.') {
        Some((_, s)) if !matches!(s, "gz" | "partial" | "partial.gz") => Some(s),
        _ => None,
    }
}

/// The newest (highest-named: timeline, then position) segment of `dir`; `None` when empty.
pub fn newest_segment(dir: &Path) -> Result<Option<NewestSegment>, String> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the WAL archive {}: {e}", dir.display()))?;
    let mut best: Option<(String, PathBuf)> = None;
    let mut count = 0;
    for entry in rd {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_wal_segment(&name) {
            continue;
        }
        count += 1;
        let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
        let better = match &best {
            None => true,
            Some((b, _)) => stem > b.split('.').next().unwrap_or("").to_ascii_uppercase(),
        };
        if better {
            best = Some((name, entry.path()));
        }
    }
    let Some((name, path)) = best else {
        return Ok(None);
    };
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    Ok(Some(NewestSegment { name, age, count }))
}

/// `15m 3s` from a duration, rounded to seconds (`1.2s` below a minute).
fn human(d: Duration) -> String {
    if d < Duration::from_secs(60) && d.subsec_millis() >= 100 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[async_trait]
impl Step for WalArchiveCheck {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let mut switched = None;
        if self.switch_wal
            && let Some(name) = &self.cluster
        {
            let def = pg::cluster(&self.resources, name).map_err(StepError::fatal)?;
            switched = Some(switch_and_wait(def, &self.archive, ctx).await?);
        }
        let dir = self.archive.clone();
        let newest = tokio::task::spawn_blocking(move || newest_segment(&dir))
            .await
            .map_err(|e| StepError::fatal(format!("archive scan panicked: {e}")))?
            .map_err(StepError::fatal)?;
        let mut problems = Vec::new();
        let mut data = json!({
            "archive": self.archive.display().to_string(),
            "max_age_s": self.max_age.as_secs(),
        });
        let mut summary = match &newest {
            None => {
                problems.push(format!(
                    "the WAL archive {} holds no WAL segments",
                    self.archive.display()
                ));
                String::new()
            }
            Some(n) => {
                data["newest_segment"] = json!(n.name);
                data["newest_age_s"] = json!(n.age.as_secs_f64());
                data["segments"] = json!(n.count);
                if let Some(suffix) = unrestorable_suffix(&n.name) {
                    problems.push(format!(
                        "the newest archived WAL segment {} is compressed as .{suffix}, which \
                         pg_pitr cannot restore (its restore_command reads plain and .gz \
                         segments): archive plain or gzip-compressed WAL",
                        n.name
                    ));
                }
                if n.age > self.max_age {
                    problems.push(format!(
                        "the newest archived WAL segment {} is {} old, more than max_age {} \
                         (set archive_timeout to bound it, and check archive_command)",
                        n.name,
                        human(n.age),
                        human(self.max_age)
                    ));
                }
                format!(
                    "newest WAL segment {} is {} old (max {}), {} segment(s) in {}",
                    n.name,
                    human(n.age),
                    human(self.max_age),
                    n.count,
                    self.archive.display()
                )
            }
        };
        if let Some(name) = &self.cluster {
            let def = pg::cluster(&self.resources, name).map_err(StepError::fatal)?;
            let stats = archiver_stats(def).await?;
            if stats.archive_mode == "off" {
                problems.push(format!(
                    "archive_mode is off on {}: no WAL is being archived",
                    def.display()
                ));
            }
            let failing = stats.failed_count > 0
                && match (stats.last_failed_age_s, stats.last_archived_age_s) {
                    (Some(failed), Some(ok)) => failed < ok,
                    (Some(_), None) => true,
                    _ => false,
                };
            if failing {
                problems.push(format!(
                    "archiving is failing on {}: {} failure(s), last for {} {} ago with no \
                     success since (see the server log for archive_command errors)",
                    def.display(),
                    stats.failed_count,
                    stats.last_failed_wal.as_deref().unwrap_or("?"),
                    human(Duration::from_secs_f64(
                        stats.last_failed_age_s.unwrap_or(0.0).max(0.0)
                    ))
                ));
            }
            if let Some(last) = &stats.last_archived_wal
                && !self.archive.join(last).exists()
                && !self.archive.join(format!("{last}.gz")).exists()
            {
                problems.push(format!(
                    "{} reports {last} as last archived, but it is not in {}: does \
                     archive_command write to this directory?",
                    def.display(),
                    self.archive.display()
                ));
            }
            summary.push_str(&format!(
                "; {}: {} archived, last {}, {} failed",
                def.display(),
                stats.archived_count,
                stats.last_archived_wal.as_deref().unwrap_or("none"),
                stats.failed_count
            ));
            data["cluster"] = json!({
                "name": name,
                "display": def.display(),
                "archive_mode": stats.archive_mode,
                "archived_count": stats.archived_count,
                "last_archived_wal": stats.last_archived_wal,
                "last_archived_age_s": stats.last_archived_age_s,
                "failed_count": stats.failed_count,
                "last_failed_wal": stats.last_failed_wal,
                "last_failed_age_s": stats.last_failed_age_s,
                "current_wal": stats.current_wal,
            });
        }
        if let Some(seg) = switched {
            data["switched_segment"] = json!(seg);
        }
        data["ok"] = json!(problems.is_empty());
        if problems.is_empty() {
            Ok(StepOutput {
                summary,
                log: String::new(),
                data,
            })
        } else {
            Err(StepError::retryable(problems.join("; ")).with_log(summary))
        }
    }
}

/// How long a switched segment may take to reach the archive.
const SWITCH_WAIT: Duration = Duration::from_secs(120);

/// `pg_switch_wal()` on the cluster, then waits until the finished segment is archived.
async fn switch_and_wait(
    def: &crate::resources::PgClusterDef,
    archive: &Path,
    ctx: &StepContext,
) -> Result<String, StepError> {
    let mut conn = pg::connect(def).await?;
    let segment: String = sqlx::query_scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| pg::query_error(def, "pg_switch_wal()", e))?;
    ctx.progress.line(format!(
        "switched WAL on {}; waiting for {segment} in {}",
        def.display(),
        archive.display()
    ));
    let deadline = tokio::time::Instant::now() + SWITCH_WAIT;
    loop {
        let found = std::fs::read_dir(archive)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with(&segment))
            })
            .unwrap_or(false);
        if found {
            return Ok(segment);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StepError::retryable(format!(
                "WAL segment {segment} of {} did not reach {} within {}s after pg_switch_wal(): \
                 is archive_command working?",
                def.display(),
                archive.display(),
                SWITCH_WAIT.as_secs()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
        }
    }
}

/// What `pg_stat_archiver` says.
struct ArchiverStats {
    archive_mode: String,
    archived_count: i64,
    last_archived_wal: Option<String>,
    last_archived_age_s: Option<f64>,
    failed_count: i64,
    last_failed_wal: Option<String>,
    last_failed_age_s: Option<f64>,
    current_wal: Option<String>,
}

async fn archiver_stats(def: &crate::resources::PgClusterDef) -> Result<ArchiverStats, StepError> {
    let mut conn = pg::connect(def).await?;
    type Row = (
        String,
        i64,
        Option<String>,
        Option<f64>,
        i64,
        Option<String>,
        Option<f64>,
        Option<String>,
    );
    let row: Row = sqlx::query_as(
        "SELECT current_setting('archive_mode'), archived_count, last_archived_wal, \
                extract(epoch FROM now() - last_archived_time)::float8, \
                failed_count, last_failed_wal, \
                extract(epoch FROM now() - last_failed_time)::float8, \
                CASE WHEN pg_is_in_recovery() THEN NULL \
                     ELSE pg_walfile_name(pg_current_wal_lsn()) END \
         FROM pg_stat_archiver",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| pg::query_error(def, "reading pg_stat_archiver", e))?;
    Ok(ArchiverStats {
        archive_mode: row.0,
        archived_count: row.1,
        last_archived_wal: row.2,
        last_archived_age_s: row.3,
        failed_count: row.4,
        last_failed_wal: row.5,
        last_failed_age_s: row.6,
        current_wal: row.7,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert!(is_wal_segment("000000010000000000000003"));
        assert!(is_wal_segment("000000010000000000000003.gz"));
        assert!(is_wal_segment("000000020000000A000000FF.partial"));
        assert!(!is_wal_segment("00000002.history"));
        assert!(!is_wal_segment("000000010000000000000002.00000028.backup"));
        assert!(!is_wal_segment("README"));
        assert_eq!(unrestorable_suffix("000000010000000000000003"), None);
        assert_eq!(unrestorable_suffix("000000010000000000000003.gz"), None);
        assert_eq!(
            unrestorable_suffix("000000010000000000000003.partial"),
            None
        );
        assert_eq!(
            unrestorable_suffix("000000010000000000000003.zst"),
            Some("zst")
        );
    }

    #[test]
    fn validation_errors_are_specific() {
        let kind = WalArchiveCheckKind(Arc::new(Resources::default()));
        let err = kind
            .validate(&json!({"archive": "/a", "max_age": "soon"}))
            .unwrap_err();
        assert!(err.starts_with("max_age: `soon`"), "{err}");
        let err = kind
            .validate(&json!({"archive": "/a", "cluster": "db"}))
            .unwrap_err();
        assert!(err.contains("unknown PostgreSQL cluster `db`"), "{err}");
        assert!(
            kind.validate(&json!({"archive": "/a", "cluster": "{primary}"}))
                .is_ok()
        );
        let err = kind
            .validate(&json!({"archive": "/a", "maxage": "1m"}))
            .unwrap_err();
        assert!(err.contains("unknown field `maxage`"), "{err}");
    }
}
