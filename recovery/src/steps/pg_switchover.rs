//! `pg_switchover` step (destructive; put it behind `gate = true`): a planned switchover with
//! zero data loss, e.g. back to the original primary after a failback rebuild.
//!
//! 1. Stop the current primary taking writes. `fence = "stop"` (the default when the primary
//!    has a `data_dir` on this host): `pg_ctl stop -m fast`, whose shutdown waits until the
//!    streaming replica has every WAL record, up to the shutdown checkpoint. `fence =
//!    "read_only"` (the default otherwise): `pg_fence`'s soft fence (new sessions read-only,
//!    existing client sessions terminated); a client that turns `default_transaction_read_only`
//!    off again can still write there, and such writes are lost at the rebuild.
//! 2. Wait until the replica has replayed everything: past the shutdown checkpoint (stop), or up
//!    to the primary's `pg_current_wal_flush_lsn()` (read-only).
//! 3. Promote the replica (`pg_promote` semantics, with RPO evidence: the gap must be 0) and
//!    check that it takes writes.
//! 4. With `rebuild_old = true` (default), rebuild the demoted primary as a streaming replica
//!    of the new one (`pg_rebuild_replica` semantics). A failed rebuild does not fail the
//!    step: the switchover stands, the summary says the rebuild FAILED and why, and the old
//!    primary stays stopped (or, with `fence = "read_only"`, read-only) for a person to
//!    rebuild (the cutover after it is not held up
//!    while nothing serves writes).
//!
//! If the replica does not catch up in time the step fails and the old primary **stays
//! stopped or read-only**: nothing was lost, and a person decides (retry, or undo: `pg_ctl
//! start` it, or `ALTER SYSTEM RESET default_transaction_read_only` there). A primary found
//! stopped uncleanly (crashed) is refused: its last WAL may never have reached the replica.
//! Running it again after a successful switchover (the replica is primary, the old primary a
//! standby; or, with `rebuild_old = false`, stopped or fenced read-only) is a no-op. When the
//! replica is a primary already and the old primary is writable, or cannot be reached to tell,
//! the step refuses: it never reports a switchover done while two primaries may take writes.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{
    pg_fence::{self, FenceMode},
    pg_promote::{self, OldPrimary},
    pg_rebuild_replica,
};
use crate::{
    pg::{self, Lsn, replication},
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_switchover` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverParams {
    /// `[postgres.<name>]` of the current primary, to be demoted.
    pub primary: String,
    /// `[postgres.<name>]` of the streaming replica to promote.
    pub replica: String,
    /// How the primary stops taking writes: `stop` (needs its `data_dir`; the default when it
    /// has one) or `read_only` (the soft fence; the default otherwise).
    #[serde(default)]
    pub fence: Option<FenceMode>,
    /// How long the replica may take to replay up to the fenced primary's WAL. Default 300.
    #[serde(default = "default_catch_up")]
    pub catch_up_seconds: u32,
    /// `wait_seconds` of `pg_promote`. Default 60.
    #[serde(default = "default_wait")]
    pub wait_seconds: u32,
    /// Rebuild the demoted primary as a replica of the new one. Default `true`; it then needs
    /// `data_dir` (and `os_user`).
    #[serde(default = "yes")]
    pub rebuild_old: bool,
    /// Like `pg_rebuild_replica`'s: this host's files restored after the rebuild.
    #[serde(default = "default_keep")]
    pub keep_files: Vec<String>,
    /// Like `pg_rebuild_replica`'s: skip `pg_rewind`. Default `false`.
    #[serde(default)]
    pub force_basebackup: bool,
    /// Like `pg_rebuild_replica`'s: server log of the restarted old primary.
    #[serde(default)]
    pub log_file: Option<String>,
}

fn default_catch_up() -> u32 {
    300
}
fn default_wait() -> u32 {
    60
}
fn yes() -> bool {
    true
}
fn default_keep() -> Vec<String> {
    ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"]
        .map(String::from)
        .to_vec()
}

/// The `pg_switchover` step type.
pub struct SwitchoverKind(pub Arc<Resources>);

impl StepKind for SwitchoverKind {
    fn name(&self) -> &'static str {
        "pg_switchover"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_rewind", "pg_basebackup", "pg_ctl", "pg_controldata"]
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: false,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: SwitchoverParams = params(p)?;
        if p.rebuild_old {
            pg_rebuild_replica::check_local(&self.0, "primary", &p.primary)?;
        } else {
            pg::check_cluster(&self.0, "primary", &p.primary)?;
        }
        pg::check_cluster(&self.0, "replica", &p.replica)?;
        if p.primary == p.replica {
            return Err("replica: must differ from primary".into());
        }
        if p.fence == Some(FenceMode::Stop)
            && let Ok(def) = pg::cluster(&self.0, &p.primary)
            && def.data_dir.is_none()
        {
            return Err(format!(
                "fence: `stop` needs data_dir in [postgres.{}]",
                p.primary
            ));
        }
        if !(1..=86_400).contains(&p.wait_seconds) {
            return Err(format!(
                "wait_seconds: {} is out of range (1 to 86400)",
                p.wait_seconds
            ));
        }
        pg_rebuild_replica::check_keep_files(&p.keep_files)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        Ok(Box::new(Switchover {
            res: self.0.clone(),
            p: params(p)?,
        }))
    }
}

/// A runnable `pg_switchover`.
pub struct Switchover {
    res: Arc<Resources>,
    p: SwitchoverParams,
}

#[async_trait]
impl Step for Switchover {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let primary = pg::cluster(&self.res, &p.primary).map_err(StepError::fatal)?;
        let replica = pg::cluster(&self.res, &p.replica).map_err(StepError::fatal)?;
        let mut log = Vec::new();

        let mode = p.fence.unwrap_or(if primary.data_dir.is_some() {
            FenceMode::Stop
        } else {
            FenceMode::ReadOnly
        });

        let mut rconn = pg::connect(replica).await?;
        let rstate = replication::server_state(&mut rconn)
            .await
            .map_err(|e| pg::query_error(replica, "reading the replica's state", e))?;
        if !rstate.in_recovery {
            return already_switched(p, primary, ctx).await;
        }

        // 1. No more writes on the current primary, and 2. the position the replica must reach.
        let (fence, target, old, undo) = match mode {
            FenceMode::Stop => {
                ctx.progress.line(format!(
                    "stopping {} (pg_ctl stop -m fast): its shutdown waits until the replica has all its WAL",
                    p.primary
                ));
                let (was_running, slog) = pg_fence::stop_server(primary, ctx).await?;
                log.push(slog);
                let checkpoint = shutdown_checkpoint(primary, &p.replica, ctx).await?;
                log.push(format!(
                    "stopped {}: its WAL ends with the shutdown checkpoint at {checkpoint}",
                    p.primary
                ));
                (
                    json!({"mode": "stop", "was_running": was_running, "shutdown_checkpoint": checkpoint}),
                    // Past the checkpoint record's start: the record itself replayed.
                    Lsn(checkpoint.0 + 1),
                    OldPrimary::StoppedCleanly(&p.primary, checkpoint),
                    "stays stopped (nothing was lost; retry, or pg_ctl start it to undo)",
                )
            }
            FenceMode::ReadOnly => {
                ctx.progress
                    .line(format!("fencing {} (read-only)", p.primary));
                let fence = pg_fence::fence_read_only(primary).await?;
                log.push(format!(
                    "fenced {}: read-only, {} session(s) terminated",
                    p.primary, fence.terminated
                ));
                let flush: String = {
                    let mut c = pg::connect(primary).await?;
                    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
                        .fetch_one(&mut c)
                        .await
                        .map_err(|e| pg::query_error(primary, "pg_current_wal_flush_lsn()", e))?
                };
                let flush: Lsn = flush.parse().map_err(StepError::fatal)?;
                let mut fence = json!(fence);
                fence["mode"] = json!("read_only");
                fence["primary_flush_lsn"] = json!(flush);
                (
                    fence,
                    flush,
                    OldPrimary::Live(&p.primary, primary),
                    "stays read-only (nothing was lost; retry, or ALTER SYSTEM RESET \
                     default_transaction_read_only there to undo)",
                )
            }
        };
        let caught_up = replication::wait_for_replay(
            &mut rconn,
            target,
            Duration::from_secs(p.catch_up_seconds.into()),
            ctx,
            &format!("replica {}", p.replica),
        )
        .await
        .map_err(|e| StepError {
            message: format!("{}; {} {undo}", e.message, p.primary),
            ..e
        })?;
        drop(rconn);
        log.push(format!(
            "{} replayed up to {caught_up} (target {target})",
            p.replica
        ));

        // 3. Promote, with evidence that nothing is missing.
        let (ev, promote_summary, promote_log) = pg_promote::promote(
            &p.replica,
            replica,
            old,
            p.wait_seconds,
            p.catch_up_seconds,
            // Stopped or fenced above: a primary that takes writes again is refused.
            false,
            ctx,
        )
        .await?;
        log.push(promote_log);
        log.push(promote_summary);

        // 4. The old primary follows the new one. The switchover stands whatever happens
        // here: a failed rebuild (pg_rewind refused, a base backup cut short) leaves the old
        // primary stopped, which is safe, and must not hold up the cutover that follows
        // while nothing serves writes; the runbook's replication check after the cutover
        // reports it.
        let mut rebuild_error = None;
        let rebuilt = if p.rebuild_old {
            let opts = pg_rebuild_replica::RebuildOptions {
                force_basebackup: p.force_basebackup,
                keep_files: &p.keep_files,
                catch_up: Duration::from_secs(p.catch_up_seconds.into()),
                log_file: p.log_file.as_deref(),
            };
            match pg_rebuild_replica::rebuild(&p.primary, primary, &p.replica, replica, &opts, ctx)
                .await
            {
                Ok((data, summary, rlog)) => {
                    log.push(rlog);
                    log.push(summary);
                    Some(data)
                }
                Err(e) => {
                    ctx.progress.line(format!(
                        "rebuilding {} failed ({}); the switchover stands: {} is primary",
                        p.primary, e.message, p.replica
                    ));
                    log.push(e.log);
                    log.push(format!("rebuilding {} failed: {}", p.primary, e.message));
                    rebuild_error = Some(e.message);
                    None
                }
            }
        } else {
            None
        };

        let summary = format!(
            "switched over: {} is primary (gap {} B, writes OK){}",
            p.replica,
            ev.lsn_gap_bytes
                .map(|g| g.to_string())
                .unwrap_or_else(|| "unknown".into()),
            match (&rebuilt, &rebuild_error) {
                (Some(d), _) => format!(
                    ", {} rebuilt with {} and streaming from it",
                    p.primary,
                    d["method"].as_str().unwrap_or("?")
                ),
                (None, Some(e)) => format!(
                    "; rebuilding {} FAILED ({e}): it is not a replica yet, rebuild it with \
                     pg_rebuild_replica (source {})",
                    p.primary, p.replica
                ),
                (None, None) if mode == FenceMode::Stop => format!(", {} left stopped", p.primary),
                (None, None) => format!(", {} left fenced (read-only)", p.primary),
            }
        );
        Ok(StepOutput {
            summary,
            log: crate::step::trim_output(&log.join("\n"), 32 * 1024),
            data: json!({
                "primary": p.primary,
                "replica": p.replica,
                "fence": fence,
                "replica_caught_up_lsn": caught_up,
                "promote": ev,
                "rebuild": rebuilt,
                "rebuild_error": rebuild_error,
            }),
        })
    }
}

/// The replica is a primary already: a no-op when the switchover was done before (the old
/// primary a standby; or, when it is not to be rebuilt, stopped or fenced read-only);
/// otherwise refused.
async fn already_switched(
    p: &SwitchoverParams,
    primary: &crate::resources::PgClusterDef,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    // (in recovery, read-only for new sessions), or None when it cannot be told.
    let old = match pg::connect(primary).await {
        Ok(mut c) => {
            let in_recovery = replication::server_state(&mut c)
                .await
                .map(|s| s.in_recovery);
            let read_only = pg::read_only_default(&mut c, primary).await;
            in_recovery.ok().zip(read_only.ok())
        }
        Err(_) => None,
    };
    let done = |how: String| StepOutput {
        summary: format!(
            "{} is already the primary and {how}: nothing to do",
            p.replica
        ),
        log: String::new(),
        data: json!({"already_done": true}),
    };
    let unreachable = || {
        StepError::fatal(format!(
            "{} is not in recovery and {} cannot be reached to tell whether it is a standby or \
             fenced: refusing to report the switchover done while it may take writes; check \
             it, then retry or skip this step",
            p.replica, p.primary
        ))
    };
    match old {
        Some((true, _)) => Ok(done(format!("{} a standby", p.primary))),
        Some((false, true)) if !p.rebuild_old => {
            Ok(done(format!("{} fenced read-only", p.primary)))
        }
        Some(_) => Err(StepError::fatal(format!(
            "{} is not in recovery and {} is a primary too{}: refusing to switch over between \
             two primaries; fence or stop {} first",
            p.replica,
            p.primary,
            if p.rebuild_old { "" } else { " taking writes" },
            p.primary
        ))),
        // It does not answer: stopped here (by an earlier run of this step, say)?
        None if primary.data_dir.is_some() => {
            if pg_fence::server_running(primary, ctx).await?.0 {
                Err(unreachable())
            } else if !p.rebuild_old {
                Ok(done(format!("{} stopped", p.primary)))
            } else {
                // Stopped after the promotion (this step's rebuild failed, or it was
                // interrupted): one primary, safe; the rebuild is left to a person, as above.
                Ok(done(format!(
                    "{} stopped, not rebuilt (rebuild it with pg_rebuild_replica, source {})",
                    p.primary, p.replica
                )))
            }
        }
        None => Err(unreachable()),
    }
}

/// The shutdown checkpoint that a stopped `def` ended its WAL with, read with `pg_controldata`.
/// Refused unless it was shut down cleanly: after a crash its last WAL may never have reached
/// `replica`.
async fn shutdown_checkpoint(
    def: &crate::resources::PgClusterDef,
    replica: &str,
    ctx: &StepContext,
) -> Result<Lsn, StepError> {
    let out = pg::controldata(def, pg_fence::data_dir(def)?, ctx).await?;
    let (state, checkpoint) = controldata(&out.stdout);
    if state.as_deref() != Some("shut down") {
        return Err(StepError::fatal(format!(
            "{} is stopped but was not shut down cleanly (pg_controldata: cluster state `{}`): \
             its last WAL may never have reached {replica}. Nothing was promoted; start it and \
             retry, or fail over with pg_promote",
            def.display(),
            state.as_deref().unwrap_or("unknown")
        ))
        .with_log(out.log));
    }
    checkpoint
        .ok_or_else(|| "no `Latest checkpoint location`".to_owned())
        .and_then(|c| c.parse())
        .map_err(|e| {
            StepError::fatal(format!("pg_controldata of {}: {e}", def.display())).with_log(out.log)
        })
}

/// `Database cluster state` and `Latest checkpoint location` from `pg_controldata`'s output.
fn controldata(stdout: &str) -> (Option<String>, Option<String>) {
    let field = |name| pg::controldata_field(stdout, name).map(str::to_owned);
    (
        field("Database cluster state"),
        field("Latest checkpoint location"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controldata_fields() {
        let out = "pg_control version number:            1300\n\
                   Database cluster state:               shut down\n\
                   Latest checkpoint location:           0/3000028\n\
                   Latest checkpoint's REDO location:    0/3000028\n";
        assert_eq!(
            controldata(out),
            (Some("shut down".into()), Some("0/3000028".into()))
        );
        let crashed = "Database cluster state:               in production\n";
        assert_eq!(controldata(crashed), (Some("in production".into()), None));
        assert_eq!(controldata("garbage"), (None, None));
    }
}
