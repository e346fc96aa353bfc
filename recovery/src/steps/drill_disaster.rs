//! `pg_drill_disaster` step (destructive, not idempotent): the drill's disaster, simulated for
//! real and measured. It starts a marker writer on the primary (one committed row per tick,
//! see [`crate::drill::markers`]), lets it run for `warmup`, then kills the primary while the
//! writer is still writing: `how = "stop_immediate"` (default) runs `pg_ctl stop -m immediate`
//! on the primary's `data_dir` as its `os_user` (a crash: no shutdown checkpoint, no goodbye to
//! the standby); `how = "block"` makes it read-only (`ALTER SYSTEM SET
//! default_transaction_read_only`, reload, sessions terminated), for a region whose server
//! cannot be stopped from here. The writer's last *acknowledged* marker is recorded as the RPO
//! reference that `pg_drill_measure` compares the promoted DR database with.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    drill::{
        DEFAULT_TABLE,
        markers::{self, MarkerWriter},
        measure::ack_fields,
    },
    pg,
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// How long the writer may take to notice the disaster before it is stopped.
const WRITER_GRACE: Duration = Duration::from_secs(5);
/// Most markers per second.
const MAX_RATE: u32 = 1000;
/// Longest warmup.
const MAX_WARMUP: Duration = Duration::from_secs(3600);

/// How the disaster is simulated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// `pg_ctl stop -m immediate` (needs the primary's `data_dir`).
    #[default]
    StopImmediate,
    /// Read-only for every session, sessions terminated; the server keeps running.
    Block,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            Self::StopImmediate => "stop_immediate",
            Self::Block => "block",
        }
    }
}

/// Parameters of a `pg_drill_disaster` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisasterParams {
    /// `[postgres.<name>]` of the primary to kill.
    pub primary: String,
    /// Marker table (created if missing), `table` or `schema.table`. Default
    /// `drbot_drill_markers`.
    #[serde(default = "default_table")]
    pub table: String,
    /// How long markers are written before the disaster, e.g. `"2s"` (the default).
    #[serde(default = "default_warmup")]
    pub warmup: String,
    /// Markers committed per second, 1 to 1000 (default 50).
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// `stop_immediate` (default) or `block`.
    #[serde(default)]
    pub how: How,
}

fn default_table() -> String {
    DEFAULT_TABLE.into()
}
fn default_warmup() -> String {
    "2s".into()
}
fn default_rate() -> u32 {
    50
}

/// The `pg_drill_disaster` step type.
pub struct DisasterKind(pub Arc<Resources>);

impl DisasterKind {
    fn parse(&self, p: &serde_json::Value) -> Result<(DisasterParams, Option<Duration>), String> {
        let p: DisasterParams = params(p)?;
        pg::check_cluster(&self.0, "primary", &p.primary)?;
        if !is_placeholder(&p.table) && !pg::valid_table(&p.table) {
            return Err(format!(
                "table: `{}` is not a plain table name (lowercase letters, digits, _; \
                 optionally schema.table)",
                p.table
            ));
        }
        let warmup = if is_placeholder(&p.warmup) {
            None
        } else {
            let w = duration("warmup", &p.warmup)?;
            if w.is_zero() || w > MAX_WARMUP {
                return Err("warmup: must be more than zero and at most 1h".into());
            }
            Some(w)
        };
        if p.rate == 0 || p.rate > MAX_RATE {
            return Err(format!("rate: must be 1 to {MAX_RATE} markers per second"));
        }
        if p.how == How::StopImmediate
            && let Ok(def) = pg::cluster(&self.0, &p.primary)
            && def.data_dir.is_none()
        {
            return Err(format!(
                "how: `stop_immediate` needs data_dir in [postgres.{}] (or use how = \"block\")",
                p.primary
            ));
        }
        Ok((p, warmup))
    }
}

impl StepKind for DisasterKind {
    fn name(&self) -> &'static str {
        "pg_drill_disaster"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_ctl"]
    }
    fn traits(&self) -> StepTraits {
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
        let (p, warmup) = self.parse(p)?;
        let warmup = warmup.ok_or("warmup: unresolved placeholder")?;
        Ok(Box::new(Disaster {
            res: self.0.clone(),
            p,
            warmup,
        }))
    }
}

/// A runnable `pg_drill_disaster`.
pub struct Disaster {
    res: Arc<Resources>,
    p: DisasterParams,
    warmup: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl Step for Disaster {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let def = pg::cluster(&self.res, &p.primary).map_err(StepError::fatal)?;
        let at = format!("{} ({})", p.primary, def.display());
        let mut admin = pg::connect(def).await?;
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut admin)
            .await
            .map_err(|e| pg::query_error(def, "SELECT pg_is_in_recovery()", e))?;
        if in_recovery {
            return Err(StepError::fatal(format!(
                "{at} is a standby, not a primary: nothing to simulate the disaster on"
            )));
        }
        markers::ensure_table(&mut admin, def, &p.table).await?;
        drop(admin);
        let drill = format!("run{}-step{}-{}", ctx.run_id, ctx.step_index, now_ms());
        let writer_conn = pg::connect(def).await?;
        let writer = MarkerWriter::start(writer_conn, def.clone(), &p.table, drill.clone(), p.rate);
        ctx.progress.line(format!(
            "writing markers into {} on {at}, {} per second, for {}",
            p.table,
            p.rate,
            humantime::format_duration(self.warmup)
        ));
        tokio::select! {
            _ = tokio::time::sleep(self.warmup) => {}
            _ = ctx.cancel.cancelled() => {
                return Err(StepError::retryable("cancelled before the disaster"));
            }
        }
        let before = writer.report();
        if writer.is_finished() || before.acked == 0 {
            return Err(StepError::fatal(format!(
                "the marker writer on {at} failed before the disaster ({} marker(s) written): {}",
                before.acked,
                before
                    .error
                    .as_deref()
                    .unwrap_or("no marker was acknowledged")
            )));
        }
        writer.disaster_fired();
        let disaster_at_ms = now_ms();
        ctx.progress.line(format!(
            "disaster: {} on {at} while writing ({} marker(s) acknowledged so far)",
            match p.how {
                How::StopImmediate => "pg_ctl stop -m immediate",
                How::Block => "read-only block",
            },
            before.acked
        ));
        let killed = kill(def, p.how, ctx).await;
        let report = writer.finish(WRITER_GRACE).await;
        let log = killed?;
        let last = report.last;
        let mut data = json!({
            "primary": p.primary,
            "table": p.table,
            "how": p.how.as_str(),
            "drill": drill,
            "rate": p.rate,
            "warmup_ms": self.warmup.as_millis() as u64,
            "disaster_at_ms": disaster_at_ms,
            "markers_written": report.acked,
            "writer_error": report.error,
        });
        if let (Some(o), serde_json::Value::Object(a)) =
            (data.as_object_mut(), ack_fields(report.first, last))
        {
            o.extend(a);
        }
        let summary = format!(
            "{} {at} while writing markers: {} acknowledged, last #{} at {}",
            match p.how {
                How::StopImmediate => "killed (pg_ctl stop -m immediate)",
                How::Block => "blocked writes on",
            },
            report.acked,
            last.map_or(0, |a| a.seq),
            last.map(|a| {
                chrono::DateTime::from_timestamp_millis(a.at_ms)
                    .map(|t| t.format("%H:%M:%S%.3f").to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
        );
        Ok(StepOutput { summary, log, data })
    }
}

/// Kills (or blocks) the primary; returns the log of what ran.
async fn kill(def: &PgClusterDef, how: How, ctx: &StepContext) -> Result<String, StepError> {
    match how {
        How::StopImmediate => {
            let data = def.data_dir.as_ref().ok_or_else(|| {
                StepError::fatal(format!(
                    "{} has no data_dir: cannot run pg_ctl",
                    def.display()
                ))
            })?;
            let out = pg::tool(def, "pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-t", "60", "-D"])
                .arg(data)
                .run_ok(ctx)
                .await
                .map_err(|e| StepError {
                    // The primary may or may not be down now: never retry blindly.
                    retryable: false,
                    ..e
                })?;
            Ok(out.log)
        }
        How::Block => {
            let f = tokio::select! {
                r = super::pg_fence::fence_read_only(def) => r,
                _ = ctx.cancel.cancelled() => return Err(StepError::fatal("cancelled during the disaster")),
            }
            .map_err(|e| StepError {
                retryable: false,
                ..e
            })?;
            Ok(format!(
                "default_transaction_read_only = on, {} session(s) terminated",
                f.terminated
            ))
        }
    }
}
