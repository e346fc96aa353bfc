//! `redis_replicate` step (destructive, idempotent): makes a Redis server a replica of another
//! (`REPLICAOF host port`), then waits until its link to the master is up and the full sync is
//! done: the failback's "Redis Standby" again, or a primary region's Redis syncing from the DR
//! one before the cutover. The master must report `role:master` first, so the step never builds
//! a chain or a loop of replicas. A server already following that master with its link up is
//! left alone, so a re-run after an interruption is harmless. The server's own data is
//! replaced by the master's: that is why it is destructive.
//!
//! A master with a password needs `masterauth` in the replica's configuration (as any standby
//! has); the step does not send passwords to a server's configuration.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    redis_ops::{self, Role, or_cancel},
    registry::{StepKind, StepTraits, params},
    resources::{RedisDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `redis_replicate` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisReplicateParams {
    /// `[redis.<name>]` of the server to make a replica.
    pub redis: String,
    /// `[redis.<name>]` of the master it will follow.
    pub master: String,
    /// `host:port` the replica reaches the master at, when it differs from the address in the
    /// master's URL (which drbot uses). Default: that address.
    #[serde(default)]
    pub master_address: Option<String>,
    /// How long the link may take to come up and the full sync to finish, e.g. `"2m"`
    /// (default).
    #[serde(default = "default_wait")]
    pub wait: String,
}

fn default_wait() -> String {
    "2m".into()
}

/// The `redis_replicate` step type.
pub struct RedisReplicateKind(pub Arc<Resources>);

impl StepKind for RedisReplicateKind {
    fn name(&self) -> &'static str {
        "redis_replicate"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: RedisReplicateParams = params(p)?;
        redis_ops::check_server(&self.0, "redis", &p.redis)?;
        redis_ops::check_server(&self.0, "master", &p.master)?;
        if !is_placeholder(&p.redis) && p.redis == p.master {
            return Err(format!(
                "master: `{}` cannot be a replica of itself",
                p.master
            ));
        }
        if let Some(a) = &p.master_address
            && !is_placeholder(a)
        {
            redis_ops::split_addr(a).map_err(|e| format!("master_address: {e}"))?;
        }
        if !is_placeholder(&p.wait) && duration("wait", &p.wait)?.is_zero() {
            return Err("wait: must be longer than 0s".into());
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        let p: RedisReplicateParams = params(p)?;
        let def = redis_ops::server(&self.0, &p.redis)?.clone();
        let master = redis_ops::server(&self.0, &p.master)?.clone();
        let address = match &p.master_address {
            Some(a) => redis_ops::split_addr(a).map_err(|e| format!("master_address: {e}"))?,
            None => redis_ops::url_addr(master.url.expose()).ok_or_else(|| {
                format!(
                    "master: [redis.{}] has no host in its URL; set master_address",
                    p.master
                )
            })?,
        };
        Ok(Box::new(RedisReplicate {
            wait: duration("wait", &p.wait)?,
            def,
            master,
            address,
            p,
        }))
    }
}

/// A runnable `redis_replicate`.
pub struct RedisReplicate {
    def: RedisDef,
    master: RedisDef,
    /// Where the replica reaches the master.
    address: (String, u16),
    wait: Duration,
    p: RedisReplicateParams,
}

#[async_trait]
impl Step for RedisReplicate {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let name = &self.p.redis;
        let master_name = &self.p.master;
        let (host, port) = &self.address;
        let addr = format!("{host}:{port}");

        // The master must be a master: following a replica would build a chain (or a loop).
        let mut mconn = or_cancel(ctx, redis_ops::connect(&self.master)).await?;
        let minfo = or_cancel(ctx, mconn.replication()).await?;
        if minfo.role != Role::Master {
            return Err(StepError::fatal(format!(
                "redis {master_name} ({}) is a replica of {}, not a master: promote it first",
                self.master.display(),
                minfo.master_addr().unwrap_or_else(|| "?".into())
            )));
        }

        let mut conn = or_cancel(ctx, redis_ops::connect(&self.def)).await?;
        let before = or_cancel(ctx, conn.replication()).await?;
        let already = before.role == Role::Replica
            && before.master_addr().map(|a| redis_ops::normalize_addr(&a))
                == Some(redis_ops::normalize_addr(&addr));
        if already {
            ctx.progress.line(format!(
                "redis {name}: already a replica of {addr} (link {}); waiting for the link",
                before.master_link_status.as_deref().unwrap_or("unknown")
            ));
        } else {
            ctx.progress.line(format!(
                "redis {name}: {} {}: sending REPLICAOF {host} {port} (its data is replaced by \
                 {master_name}'s)",
                before.role,
                match before.master_addr() {
                    Some(m) => format!("of {m}"),
                    None => format!("with {} replicas", before.replicas.len()),
                }
            ));
            let ok: String = or_cancel(
                ctx,
                conn.query(redis::cmd("REPLICAOF").arg(host).arg(*port), "REPLICAOF"),
            )
            .await?;
            if !ok.starts_with("OK") {
                return Err(StepError::retryable(format!(
                    "redis {name}: REPLICAOF {addr} answered `{ok}`, expected OK"
                )));
            }
        }
        let after = redis_ops::wait_for_link(&mut conn, &addr, self.wait, ctx).await?;
        let summary = if already {
            format!("redis {name}: already a replica of {master_name} ({addr}), link up")
        } else {
            format!(
                "redis {name}: now a replica of {master_name} ({addr}), link up, synced at offset \
                 {} (was a {}{})",
                after
                    .offset()
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                before.role,
                before
                    .master_addr()
                    .map(|m| format!(" of {m}"))
                    .unwrap_or_default()
            )
        };
        ctx.progress.line(summary.clone());
        let data = json!({
            "redis": name,
            "server": self.def.display(),
            "master": master_name,
            "master_address": addr,
            "changed": !already,
            "previous_role": before.role,
            "previous_master": before.master_addr(),
            "before": before,
            "after": after,
        });
        let log = serde_json::to_string_pretty(&data).unwrap_or_default();
        Ok(StepOutput { summary, log, data })
    }
}
