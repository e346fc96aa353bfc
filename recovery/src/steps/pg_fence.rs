//! `pg_fence` step (destructive, idempotent): stop an old primary from taking writes before a
//! replica is promoted, so the two cannot diverge.
//!
//! `mode = "read_only"` (default): `ALTER SYSTEM SET default_transaction_read_only = on`,
//! `pg_reload_conf()`, then terminate every other client session so that none keeps writing
//! (new and re-connected sessions start read-only). This is a soft fence: a client that sets
//! `default_transaction_read_only = off` itself can still write; use `mode = "stop"` when that
//! matters. `mode = "stop"`: `pg_ctl stop -m fast` on the cluster's `data_dir`, as its `os_user`.
//!
//! An unreachable primary cannot be fenced: with `allow_unreachable = true` the step succeeds
//! and its summary says "primary unreachable: not fenced"; otherwise that is a retryable error.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{
    pg,
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// How to fence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceMode {
    /// Read-only by default for every session, existing sessions terminated.
    #[default]
    ReadOnly,
    /// Stop the server with `pg_ctl stop -m fast` (needs `data_dir`).
    Stop,
}

/// Parameters of a `pg_fence` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceParams {
    /// `[postgres.<name>]` of the (old) primary to fence.
    pub cluster: String,
    /// `read_only` (default) or `stop`.
    #[serde(default)]
    pub mode: FenceMode,
    /// Succeed (and say so) when the cluster cannot be reached. Default `false`.
    #[serde(default)]
    pub allow_unreachable: bool,
}

/// The `pg_fence` step type.
pub struct FenceKind(pub Arc<Resources>);

impl StepKind for FenceKind {
    fn name(&self) -> &'static str {
        "pg_fence"
    }
    fn tools(&self) -> &'static [&'static str] {
        &["pg_ctl"]
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: FenceParams = params(p)?;
        pg::check_cluster(&self.0, "cluster", &p.cluster)?;
        if p.mode == FenceMode::Stop
            && let Ok(def) = pg::cluster(&self.0, &p.cluster)
            && def.data_dir.is_none()
        {
            return Err(format!(
                "mode: `stop` needs data_dir in [postgres.{}]",
                p.cluster
            ));
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        Ok(Box::new(Fence {
            res: self.0.clone(),
            p: params(p)?,
        }))
    }
}

/// A runnable `pg_fence`.
pub struct Fence {
    res: Arc<Resources>,
    p: FenceParams,
}

/// What a read-only fence did.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ReadOnlyFence {
    /// The server was a standby already (nothing to fence).
    pub was_standby: bool,
    /// Client sessions terminated.
    pub terminated: i64,
    /// `default_transaction_read_only` as a fresh session sees it afterwards.
    pub read_only: bool,
}

/// Makes `def` read-only for new sessions and terminates the other client sessions; checks the
/// result from a fresh session. Errors: unreachable (retryable) or a failed statement.
pub(crate) async fn fence_read_only(def: &PgClusterDef) -> Result<ReadOnlyFence, StepError> {
    let mut conn = pg::connect(def).await?;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| pg::query_error(def, "SELECT pg_is_in_recovery()", e))?;
    if in_recovery {
        return Ok(ReadOnlyFence {
            was_standby: true,
            terminated: 0,
            read_only: true,
        });
    }
    sqlx::query("ALTER SYSTEM SET default_transaction_read_only = on")
        .execute(&mut conn)
        .await
        .map_err(|e| pg::query_error(def, "ALTER SYSTEM SET default_transaction_read_only", e))?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await
        .map_err(|e| pg::query_error(def, "pg_reload_conf()", e))?;
    // Existing sessions may sit in a write transaction or have overridden the default: end
    // them (waiting up to 5 s each for them to go). Replication connections are not clients.
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 5000) AS ok \
         FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) t WHERE ok",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| pg::query_error(def, "terminating client sessions", e))?;
    drop(conn);
    // A fresh session must see the new default (the reload is asynchronous: poll briefly).
    let mut read_only = false;
    for _ in 0..50 {
        let mut conn = pg::connect(def).await?;
        if pg::read_only_default(&mut conn, def).await? {
            read_only = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if !read_only {
        return Err(StepError::retryable(format!(
            "{}: default_transaction_read_only is still off after the reload",
            def.display()
        )));
    }
    Ok(ReadOnlyFence {
        was_standby: false,
        terminated,
        read_only,
    })
}

/// `pg_ctl stop -m fast` on `def`'s data dir; `Ok(false)` when it was not running.
pub(crate) async fn stop_server(
    def: &PgClusterDef,
    ctx: &StepContext,
) -> Result<(bool, String), StepError> {
    let data = data_dir(def)?;
    let (running, status_log) = server_running(def, ctx).await?;
    if !running {
        return Ok((false, status_log));
    }
    let out = pg::tool(def, "pg_ctl")
        .args(["stop", "-m", "fast", "-w", "-t", "120", "-D"])
        .arg(data)
        .run_ok(ctx)
        .await?;
    Ok((true, format!("{status_log}\n{}", out.log)))
}

/// `def`'s data dir, which the pg_ctl-based steps need.
pub(crate) fn data_dir(def: &PgClusterDef) -> Result<&std::path::Path, StepError> {
    def.data_dir.as_deref().ok_or_else(|| {
        StepError::fatal(format!(
            "{} has no data_dir: cannot run pg_ctl",
            def.display()
        ))
    })
}

/// `pg_ctl status` on `def`'s data dir: whether a server runs there, and the tool's log.
pub(crate) async fn server_running(
    def: &PgClusterDef,
    ctx: &StepContext,
) -> Result<(bool, String), StepError> {
    let data = data_dir(def)?;
    let status = pg::tool(def, "pg_ctl")
        .arg("status")
        .arg("-D")
        .arg(data)
        .run(ctx)
        .await?;
    // pg_ctl status: 0 running, 3 not running, 4 no accessible data dir.
    match status.status.code() {
        Some(3) => Ok((false, status.log)),
        // 4: not a data directory (e.g. emptied by an interrupted rebuild): nothing runs there.
        Some(4) if !data.join("postmaster.pid").exists() => Ok((false, status.log)),
        Some(0) => Ok((true, status.log)),
        _ => Err(StepError::fatal(format!(
            "pg_ctl status on {} failed ({})",
            data.display(),
            status.status
        ))
        .with_log(status.log)),
    }
}

#[async_trait]
impl Step for Fence {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let def = pg::cluster(&self.res, &p.cluster).map_err(StepError::fatal)?;
        let at = format!("{} ({})", p.cluster, def.display());
        match p.mode {
            FenceMode::Stop => {
                let (was_running, log) = stop_server(def, ctx).await?;
                let summary = if was_running {
                    format!("fenced {at}: stopped (pg_ctl stop -m fast)")
                } else {
                    format!("fenced {at}: already stopped")
                };
                Ok(StepOutput {
                    summary,
                    log,
                    data: json!({"cluster": p.cluster, "mode": "stop", "fenced": true, "was_running": was_running}),
                })
            }
            FenceMode::ReadOnly => {
                let res = tokio::select! {
                    r = fence_read_only(def) => r,
                    _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
                };
                match res {
                    Ok(f) => Ok(StepOutput {
                        summary: if f.was_standby {
                            format!("{at} is a standby: read-only already, nothing to fence")
                        } else {
                            format!(
                                "fenced {at}: default_transaction_read_only = on, {} session(s) terminated",
                                f.terminated
                            )
                        },
                        log: String::new(),
                        data: json!({"cluster": p.cluster, "mode": "read_only", "fenced": true, "reachable": true, "detail": f}),
                    }),
                    Err(e)
                        if p.allow_unreachable
                            && e.message.starts_with(pg::conn::CANNOT_CONNECT) =>
                    {
                        Ok(StepOutput {
                            summary: format!(
                                "primary unreachable: not fenced ({at}: {})",
                                e.message
                            ),
                            log: String::new(),
                            data: json!({"cluster": p.cluster, "mode": "read_only", "fenced": false, "reachable": false, "error": e.message}),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}
