//! `redis_promote` step (destructive, idempotent): makes a Redis replica a master with
//! `REPLICAOF NO ONE`, waits until `INFO replication` says `role:master`, then proves a write
//! works (`SET drbot:promoted:<run_id> <timestamp> EX 60`). A server that already is a master
//! only gets the write check, so a re-run after an interruption is harmless.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{
    redis_ops::{self, RedisConn, Role, or_cancel},
    registry::{StepKind, StepTraits, params},
    resources::{RedisDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// How long the server may take to report `role:master` after `REPLICAOF NO ONE`.
const ROLE_WAIT: Duration = Duration::from_secs(10);

/// Parameters of a `redis_promote` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisPromoteParams {
    /// `[redis.<name>]` of the replica to promote.
    pub redis: String,
}

/// The `redis_promote` step type.
pub struct RedisPromoteKind(pub Arc<Resources>);

impl StepKind for RedisPromoteKind {
    fn name(&self) -> &'static str {
        "redis_promote"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: RedisPromoteParams = params(p)?;
        redis_ops::check_server(&self.0, "redis", &p.redis)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        let p: RedisPromoteParams = params(p)?;
        let def = redis_ops::server(&self.0, &p.redis)?.clone();
        Ok(Box::new(RedisPromote { def, p }))
    }
}

/// A runnable `redis_promote`.
pub struct RedisPromote {
    def: RedisDef,
    p: RedisPromoteParams,
}

/// Writes a marker key that expires, proving the server accepts writes.
async fn check_write(conn: &mut RedisConn, ctx: &StepContext) -> Result<String, StepError> {
    let key = format!("drbot:promoted:{}", ctx.run_id);
    let value = chrono::Utc::now().to_rfc3339();
    let ok: String = or_cancel(
        ctx,
        conn.query(
            redis::cmd("SET").arg(&key).arg(&value).arg("EX").arg(60),
            "writing a test key",
        ),
    )
    .await?;
    if ok != "OK" {
        return Err(StepError::retryable(format!(
            "redis {}: SET {key} answered `{ok}`, expected OK",
            conn.label()
        )));
    }
    Ok(key)
}

#[async_trait]
impl Step for RedisPromote {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let name = &self.p.redis;
        let mut conn = or_cancel(ctx, redis_ops::connect(&self.def)).await?;
        let before = or_cancel(ctx, conn.replication()).await?;
        if before.role == Role::Master {
            let key = check_write(&mut conn, ctx).await?;
            let summary = format!(
                "redis {name}: already a master, nothing to promote; writes accepted ({})",
                match before.replicas.len() {
                    1 => "1 replica connected".to_string(),
                    n => format!("{n} replicas connected"),
                }
            );
            ctx.progress.line(summary.clone());
            let data = json!({
                "redis": name,
                "server": self.def.display(),
                "promoted": false,
                "previous_role": before.role,
                "previous_master": null,
                "offset_at_promotion": before.master_repl_offset,
                "write_key": key,
                "before": before,
            });
            let log = serde_json::to_string_pretty(&data).unwrap_or_default();
            return Ok(StepOutput { summary, log, data });
        }
        let master = before.master_addr();
        ctx.progress.line(format!(
            "redis {name}: replica of {}, link {}, offset {}: sending REPLICAOF NO ONE",
            master.as_deref().unwrap_or("?"),
            before.master_link_status.as_deref().unwrap_or("unknown"),
            before
                .offset()
                .map(|o| o.to_string())
                .unwrap_or_else(|| "unknown".into())
        ));
        let ok: String = or_cancel(
            ctx,
            conn.query(
                redis::cmd("REPLICAOF").arg("NO").arg("ONE"),
                "REPLICAOF NO ONE",
            ),
        )
        .await?;
        if ok != "OK" {
            return Err(StepError::retryable(format!(
                "redis {name}: REPLICAOF NO ONE answered `{ok}`, expected OK"
            )));
        }
        let after = redis_ops::wait_for_master(&mut conn, ROLE_WAIT, ctx).await?;
        let key = check_write(&mut conn, ctx).await?;
        let offset = before.offset();
        let summary = format!(
            "redis {name}: promoted to master (was replica of {}, link {}, at offset {}); \
             writes accepted",
            master.as_deref().unwrap_or("?"),
            before.master_link_status.as_deref().unwrap_or("unknown"),
            offset
                .map(|o| o.to_string())
                .unwrap_or_else(|| "unknown".into())
        );
        ctx.progress.line(summary.clone());
        let data = json!({
            "redis": name,
            "server": self.def.display(),
            "promoted": true,
            "previous_role": before.role,
            "previous_master": master,
            "offset_at_promotion": offset,
            "write_key": key,
            "before": before,
            "after": after,
        });
        let log = serde_json::to_string_pretty(&data).unwrap_or_default();
        Ok(StepOutput { summary, log, data })
    }
}
