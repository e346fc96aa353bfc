//! `pg_drill_measure` step (read-only for production, idempotent): the drill's report. It reads
//! which of the disaster's markers the promoted DR database holds and computes, against
//! `rto_target`/`rpo_target` (the config's `[targets]`, seed: 4 h / 15 min):
//!
//! - `rpo_rows`: markers the primary acknowledged that DR lacks; `rpo_seconds`: the time
//!   between the last acknowledged one and the last one DR has (0 when none is missing; when
//!   none reached DR, the last one DR replayed as the earlier `pg_promote` recorded it, else
//!   only a lower bound, `rpo_at_least`, never reported as met);
//! - `rto_seconds`: from the run's approval (the disaster's time when the run needed none) to
//!   health green on the DR side, which is the end of the last `http_check` that passed after
//!   the disaster and before this step (else now), so a runbook puts its "wait for health"
//!   check right before the measurement.
//!
//! The disaster's record comes from the run's earlier `pg_drill_disaster` step
//! ([`StepContext::last_data_of_kind`]). In a dry run that step is skipped, and so is the
//! measurement; a run without one is an error.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    drill::{
        DEFAULT_TABLE,
        markers::{self, Present},
        measure::{DisasterRecord, Measured, measure},
    },
    engine::StepState,
    pg,
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// The step type whose record is measured.
pub const DISASTER_KIND: &str = "pg_drill_disaster";

/// Parameters of a `pg_drill_measure` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureParams {
    /// `[postgres.<name>]` of the promoted DR cluster.
    pub cluster: String,
    /// Marker table; default: the one the disaster step wrote (`drbot_drill_markers`).
    #[serde(default)]
    pub table: Option<String>,
    /// Recovery time objective, e.g. `"4h"` (the default).
    #[serde(default = "default_rto")]
    pub rto_target: String,
    /// Recovery point objective, e.g. `"15m"` (the default).
    #[serde(default = "default_rpo")]
    pub rpo_target: String,
}

fn default_rto() -> String {
    "4h".into()
}
fn default_rpo() -> String {
    "15m".into()
}

/// The `pg_drill_measure` step type.
pub struct MeasureKind(pub Arc<Resources>);

struct Targets {
    rto: Duration,
    rpo: Duration,
}

impl MeasureKind {
    fn parse(&self, p: &serde_json::Value) -> Result<(MeasureParams, Option<Targets>), String> {
        let p: MeasureParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        if let Some(t) = &p.table
            && !is_placeholder(t)
            && !pg::valid_table(t)
        {
            return Err(format!("table: `{t}` is not a plain table name"));
        }
        if is_placeholder(&p.rto_target) || is_placeholder(&p.rpo_target) {
            return Ok((p, None));
        }
        let targets = Targets {
            rto: duration("rto_target", &p.rto_target)?,
            rpo: duration("rpo_target", &p.rpo_target)?,
        };
        Ok((p, Some(targets)))
    }
}

impl StepKind for MeasureKind {
    fn name(&self) -> &'static str {
        "pg_drill_measure"
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
        let (p, targets) = self.parse(p)?;
        let targets = targets.ok_or("rto_target/rpo_target: unresolved placeholder")?;
        Ok(Box::new(Measure {
            res: self.0.clone(),
            p,
            targets,
        }))
    }
}

/// A runnable `pg_drill_measure`.
pub struct Measure {
    res: Arc<Resources>,
    p: MeasureParams,
    targets: Targets,
}

fn target_text(t: &Targets) -> String {
    format!(
        "RTO {} / RPO {}",
        humantime::format_duration(t.rto),
        humantime::format_duration(t.rpo)
    )
}

fn summary(m: &Measured, t: &Targets) -> String {
    let verdict = if m.met {
        format!("within targets ({})", target_text(t))
    } else {
        let missed: Vec<&str> = [(!m.rto_met, "RTO"), (!m.rpo_met, "RPO")]
            .into_iter()
            .filter_map(|(miss, name)| miss.then_some(name))
            .collect();
        format!("{} over target ({})", missed.join(" and "), target_text(t))
    };
    format!(
        "RPO {} rows ({}{:.2} s), RTO {:.2} s from {} — {verdict}",
        m.rpo_rows,
        if m.rpo_at_least { "at least " } else { "" },
        m.rpo_seconds,
        m.rto_seconds,
        m.rto_from
    )
}

#[async_trait]
impl Step for Measure {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let Some(raw) = ctx.last_data_of_kind(DISASTER_KIND) else {
            if ctx
                .earlier
                .iter()
                .any(|s| s.kind == DISASTER_KIND && s.state == StepState::Skipped)
            {
                return Ok(StepOutput {
                    summary: "nothing to measure: the disaster step was skipped (dry run)".into(),
                    log: String::new(),
                    data: json!({ "measured": false }),
                });
            }
            return Err(StepError::fatal(format!(
                "no `{DISASTER_KIND}` step succeeded earlier in this run: pg_drill_measure \
                 measures a drill's disaster, so put one before it"
            )));
        };
        let record: DisasterRecord = serde_json::from_value(raw.clone()).map_err(|e| {
            StepError::fatal(format!(
                "the `{DISASTER_KIND}` step's record is not a drill record: {e}"
            ))
        })?;
        let table = p.table.clone().unwrap_or_else(|| {
            if record.table.is_empty() {
                DEFAULT_TABLE.into()
            } else {
                record.table.clone()
            }
        });
        let def = pg::cluster(&self.res, &p.cluster).map_err(StepError::fatal)?;
        let read = async {
            let mut conn = pg::connect(def).await?;
            let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| pg::query_error(def, "SELECT pg_is_in_recovery()", e))?;
            let present = markers::present(&mut conn, def, &table, &record.drill).await?;
            Ok::<(bool, Present), StepError>((in_recovery, present))
        };
        let (in_recovery, present) = tokio::select! {
            r = read => r?,
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
        };
        // Green is a passing health check after the disaster: one before it (a preflight check
        // of the primary) says nothing of the recovery.
        let green = ctx
            .earlier
            .iter()
            .rev()
            .filter(|s| s.kind == "http_check" && s.state == StepState::Succeeded)
            .filter_map(|s| s.finished_at_ms)
            .find(|at| *at >= record.disaster_at_ms);
        let green_at_ms = green.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        // The promotion's evidence: the DR database's last replayed commit.
        let replayed_at_ms = ctx
            .last_data_of_kind("pg_promote")
            .and_then(|d| d["last_replayed_commit_at"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis());
        let m = measure(
            &record,
            &present,
            replayed_at_ms,
            ctx.approved_at_ms,
            green_at_ms,
            self.targets.rto,
            self.targets.rpo,
        );
        let mut summary = summary(&m, &self.targets);
        if in_recovery {
            summary.push_str(&format!(" (note: {} is still a standby)", def.display()));
        }
        let mut data = serde_json::to_value(&m).unwrap_or_default();
        if let Some(o) = data.as_object_mut() {
            o.extend([
                ("measured".to_string(), json!(true)),
                ("cluster".to_string(), json!(p.cluster)),
                ("table".to_string(), json!(table)),
                ("drill".to_string(), json!(record.drill)),
                ("markers_acked".to_string(), json!(record.markers_written)),
                ("markers_on_dr".to_string(), json!(present.count)),
                ("last_acked_seq".to_string(), json!(record.last_acked_seq)),
                ("last_seq_on_dr".to_string(), json!(present.max_seq)),
                ("dr_in_recovery".to_string(), json!(in_recovery)),
                (
                    "green_at".to_string(),
                    json!(if green.is_some() {
                        "http_check"
                    } else {
                        "measurement"
                    }),
                ),
                ("green_at_ms".to_string(), json!(green_at_ms)),
                ("approved_at_ms".to_string(), json!(ctx.approved_at_ms)),
                ("disaster_at_ms".to_string(), json!(record.disaster_at_ms)),
                (
                    "rto_target_seconds".to_string(),
                    json!(self.targets.rto.as_secs_f64()),
                ),
                (
                    "rpo_target_seconds".to_string(),
                    json!(self.targets.rpo.as_secs_f64()),
                ),
            ]);
        }
        Ok(StepOutput {
            summary,
            log: String::new(),
            data,
        })
    }
}
