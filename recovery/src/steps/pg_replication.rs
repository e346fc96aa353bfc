//! `pg_replication_check` step (read-only): is the replica streaming, how far behind is it?
//!
//! Reads `pg_stat_replication` on the primary when it is reachable, and
//! `pg_is_in_recovery()`, `pg_last_wal_receive_lsn()`, `pg_last_wal_replay_lsn()` and
//! `pg_last_xact_replay_timestamp()` on the replica. Lag in bytes is measured against the
//! primary's current WAL position; lag in seconds is the time since the last replayed commit
//! (0 when caught up), i.e. at most that many seconds of commits are missing on the replica.
//! WAL in flight when the primary was read gets up to 1 s to be replayed first, so that on an
//! idle primary a checkpoint record does not make hours since the last commit read as lag.
//! With the primary unreachable the lag is unknown: the step says so and succeeds, so that a
//! runbook can go on to a gated promote.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{
    pg::{self, Lsn, human_bytes, replication},
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_replication_check` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationCheckParams {
    /// `[postgres.<name>]` of the primary (may be unreachable).
    pub primary: String,
    /// `[postgres.<name>]` of the streaming replica.
    pub replica: String,
    /// Largest acceptable lag in time, e.g. `"15m"` (the seed's RPO). Default `"15m"`.
    #[serde(default = "default_max_lag")]
    pub max_lag: String,
    /// Largest acceptable lag in bytes of WAL behind the primary. Default: no limit.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
}

/// How long WAL in flight gets to be replayed before the lag is measured.
const SETTLE: Duration = Duration::from_secs(1);

fn default_max_lag() -> String {
    "15m".into()
}

/// The `pg_replication_check` step type.
pub struct ReplicationCheckKind(pub Arc<Resources>);

impl StepKind for ReplicationCheckKind {
    fn name(&self) -> &'static str {
        "pg_replication_check"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: ReplicationCheckParams = params(p)?;
        pg::check_cluster(&self.0, "primary", &p.primary)?;
        pg::check_cluster(&self.0, "replica", &p.replica)?;
        if p.primary == p.replica {
            return Err("replica: must differ from primary".into());
        }
        if !p.max_lag.contains('{') {
            parse_duration(&p.max_lag)?;
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        let p: ReplicationCheckParams = params(p)?;
        let max_lag = parse_duration(&p.max_lag)?;
        Ok(Box::new(ReplicationCheck {
            res: self.0.clone(),
            p,
            max_lag,
        }))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("max_lag: `{s}` is not a duration like \"15m\" ({e})"))
}

/// A runnable `pg_replication_check`.
pub struct ReplicationCheck {
    res: Arc<Resources>,
    p: ReplicationCheckParams,
    max_lag: Duration,
}

/// What the primary said, if it could be reached.
pub(crate) struct PrimaryView {
    pub reachable: bool,
    pub error: Option<String>,
    pub state: Option<replication::ServerState>,
    pub senders: Vec<replication::SenderRow>,
}

/// Connects to the primary and reads its state and `pg_stat_replication`; unreachable is data.
pub(crate) async fn look_at_primary(def: &crate::resources::PgClusterDef) -> PrimaryView {
    let mut conn = match pg::connect(def).await {
        Ok(c) => c,
        Err(e) => {
            return PrimaryView {
                reachable: false,
                error: Some(e.message),
                state: None,
                senders: vec![],
            };
        }
    };
    let state = match replication::server_state(&mut conn).await {
        Ok(s) => s,
        Err(e) => {
            return PrimaryView {
                reachable: false,
                error: Some(pg::query_error(def, "reading the WAL position", e).message),
                state: None,
                senders: vec![],
            };
        }
    };
    let senders = replication::senders(&mut conn).await.unwrap_or_default();
    PrimaryView {
        reachable: true,
        error: None,
        state: Some(state),
        senders,
    }
}

#[async_trait]
impl Step for ReplicationCheck {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let primary_def = pg::cluster(&self.res, &p.primary).map_err(StepError::fatal)?;
        let replica_def = pg::cluster(&self.res, &p.replica).map_err(StepError::fatal)?;
        // The primary first: a replica read afterwards can only be further along.
        let primary = tokio::select! {
            v = look_at_primary(primary_def) => v,
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
        };
        let mut conn = pg::connect(replica_def).await?;
        let mut replica = replication::server_state(&mut conn)
            .await
            .map_err(|e| pg::query_error(replica_def, "reading the replica's WAL state", e))?;
        let name = replication::cluster_name(&mut conn)
            .await
            .unwrap_or_default();
        if !replica.in_recovery {
            return Err(StepError::fatal(format!(
                "replica {} ({}) is not in recovery: it is a primary, not a standby",
                p.replica,
                replica_def.display()
            )));
        }
        // The position the replica should have reached.
        let primary_lsn: Option<Lsn> = primary.state.as_ref().and_then(|s| {
            if s.in_recovery {
                s.replay_lsn
            } else {
                s.current_lsn
            }
        });
        // WAL the primary wrote just before it was read (a checkpoint, a running-xacts record)
        // is usually replayed within milliseconds. Wait a moment for it rather than report, on
        // an idle primary, the hours since the last replayed commit as lag.
        if let Some(target) = primary_lsn {
            let deadline = tokio::time::Instant::now() + SETTLE;
            while replica.replay_lsn.unwrap_or_default() < target
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                replica = replication::server_state(&mut conn).await.map_err(|e| {
                    pg::query_error(replica_def, "reading the replica's WAL state", e)
                })?;
            }
        }
        let replay = replica.replay_lsn.unwrap_or_default();
        let sender = match primary.senders.as_slice() {
            [one] => Some(one),
            many => many
                .iter()
                .find(|r| !name.is_empty() && r.application_name == name),
        };
        let (lag_bytes, lag_seconds, lag_known) = match primary_lsn {
            Some(target) => {
                let bytes = target.bytes_after(replay);
                let secs = if bytes == 0 {
                    Some(0.0)
                } else if let Some(at) = replica.last_replay_at {
                    Some(((replica.now - at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0))
                } else {
                    sender.and_then(|s| s.replay_lag_seconds)
                };
                (Some(bytes), secs, secs.is_some())
            }
            None => (None, None, false),
        };
        let since_last_commit = replica
            .last_replay_at
            .map(|at| ((replica.now - at).num_milliseconds() as f64 / 1e3).max(0.0));
        let received_not_replayed = replica
            .receive_lsn
            .map(|r| r.bytes_after(replay))
            .unwrap_or(0);

        let mut summary = format!("replica {}: ", p.replica);
        match (lag_bytes, lag_seconds) {
            (Some(b), Some(s)) => summary.push_str(&format!("lag {} / {s:.1} s", human_bytes(b))),
            (Some(b), None) => summary.push_str(&format!("lag {} / unknown s", human_bytes(b))),
            _ => summary.push_str(&format!(
                "primary {} unreachable: lag unknown (replayed {replay}, {} received but not \
                 yet replayed, last replayed commit {})",
                p.primary,
                human_bytes(received_not_replayed),
                since_last_commit
                    .map(|s| format!("{s:.1} s ago"))
                    .unwrap_or_else(|| "unknown".into())
            )),
        }
        match (sender, replica.receiver_status.as_deref()) {
            (Some(s), _) => summary.push_str(&format!(
                ", {}, {}",
                s.state.as_deref().unwrap_or("?"),
                s.sync_state.as_deref().unwrap_or("?")
            )),
            (None, Some(status)) => summary.push_str(&format!(", receiver {status}")),
            (None, None) => summary.push_str(", no WAL receiver running"),
        }
        if replica.replay_paused == Some(true) {
            summary.push_str(", replay PAUSED");
        }

        let data = json!({
            "primary": {
                "name": p.primary,
                "reachable": primary.reachable,
                "error": primary.error,
                "state": primary.state,
                "replication": primary.senders,
            },
            "replica": {
                "name": p.replica,
                "cluster_name": name,
                "state": replica,
            },
            "lag_bytes": lag_bytes,
            "lag_seconds": lag_seconds,
            "lag_known": lag_known,
            "seconds_since_last_replayed_commit": since_last_commit,
            "max_lag_seconds": self.max_lag.as_secs_f64(),
            "max_lag_bytes": p.max_lag_bytes,
        });
        let log = serde_json::to_string_pretty(&data).unwrap_or_default();
        ctx.progress.line(summary.clone());

        if primary.reachable {
            let too_old = match lag_seconds {
                Some(s) => s > self.max_lag.as_secs_f64(),
                None => true,
            };
            let too_far = matches!((lag_bytes, p.max_lag_bytes), (Some(b), Some(max)) if b > max);
            if too_old || too_far {
                return Err(StepError::retryable(format!(
                    "{summary}: beyond the limit ({}{})",
                    humantime::format_duration(self.max_lag),
                    p.max_lag_bytes
                        .map(|b| format!(", {}", human_bytes(b)))
                        .unwrap_or_default()
                ))
                .with_log(log));
            }
        }
        Ok(StepOutput { summary, log, data })
    }
}
