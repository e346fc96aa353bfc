//! `redis_check` step (read-only): a Redis server's replication role, link and lag, from
//! `INFO replication`.
//!
//! On a replica the lag in bytes is the master's `master_repl_offset` minus the replica's
//! `slave_repl_offset`. The master is reached through the `[redis.<name>]` entry whose address
//! is the one the replica follows, else through the replica's own URL with that address (a
//! replica's master usually shares its password). With the master unreachable the lag is
//! unknown: the step says so and succeeds, so that a runbook can go on to a gated promote. On
//! a master, the lag of each connected replica is reported.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use crate::{
    redis_ops::{self, ReplicationInfo, Role, bytes, or_cancel},
    registry::{StepKind, StepTraits, params},
    resources::{RedisDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `redis_check` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCheckParams {
    /// `[redis.<name>]` of the server to look at.
    pub redis: String,
    /// Role the server must have: `master` or `replica`. Default: either.
    #[serde(default)]
    pub expect_role: Option<String>,
    /// Largest acceptable replication lag in bytes: of this replica behind its master, or of
    /// any replica of this master. Default: no limit.
    #[serde(default)]
    pub max_lag_bytes: Option<u64>,
}

/// The `redis_check` step type.
pub struct RedisCheckKind(pub Arc<Resources>);

fn parse_role(s: &str) -> Result<Role, String> {
    match s.trim() {
        "master" | "primary" => Ok(Role::Master),
        "replica" | "slave" => Ok(Role::Replica),
        other => Err(format!(
            "expect_role: `{other}` is not a role (master or replica)"
        )),
    }
}

impl StepKind for RedisCheckKind {
    fn name(&self) -> &'static str {
        "redis_check"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: RedisCheckParams = params(p)?;
        redis_ops::check_server(&self.0, "redis", &p.redis)?;
        if let Some(role) = &p.expect_role
            && !role.contains('{')
        {
            parse_role(role)?;
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        let p: RedisCheckParams = params(p)?;
        let expect_role = p.expect_role.as_deref().map(parse_role).transpose()?;
        let def = redis_ops::server(&self.0, &p.redis)?.clone();
        Ok(Box::new(RedisCheck {
            res: self.0.clone(),
            def,
            expect_role,
            p,
        }))
    }
}

/// A runnable `redis_check`.
pub struct RedisCheck {
    res: Arc<Resources>,
    def: RedisDef,
    expect_role: Option<Role>,
    p: RedisCheckParams,
}

/// What the master of a replica said, if it could be reached.
struct MasterView {
    /// The `[redis.<name>]` entry used, if one has the master's address.
    name: Option<String>,
    offset: Option<u64>,
    error: Option<String>,
}

impl RedisCheck {
    /// Reads the master's offset: through a configured entry with its address, else with the
    /// replica's URL pointed at that address.
    async fn look_at_master(&self, addr: &str) -> MasterView {
        let wanted = redis_ops::normalize_addr(addr);
        let configured = self
            .res
            .redis
            .iter()
            .find(|(_, d)| redis_ops::normalize_addr(&d.display()) == wanted);
        let conn = match configured {
            Some((_, def)) => redis_ops::connect(def).await,
            None => match retarget(self.def.url.expose(), addr) {
                Some(url) => redis_ops::connect_url(&url, addr, Duration::from_secs(3)).await,
                None => Err(StepError::fatal(format!(
                    "master address `{addr}` is not usable"
                ))),
            },
        };
        let name = configured.map(|(n, _)| n.clone());
        let info = match conn {
            Ok(mut c) => c.replication().await,
            Err(e) => Err(e),
        };
        match info {
            Ok(i) => MasterView {
                name,
                offset: i.master_repl_offset,
                error: None,
            },
            Err(e) => MasterView {
                name,
                offset: None,
                error: Some(e.message),
            },
        }
    }
}

/// `url` with its host and port replaced by `addr` (`host:port`).
fn retarget(url: &str, addr: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    let (host, port) = addr.rsplit_once(':')?;
    u.set_host(Some(host)).ok()?;
    u.set_port(Some(port.parse().ok()?)).ok()?;
    Some(u.to_string())
}

#[async_trait]
impl Step for RedisCheck {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let name = &self.p.redis;
        let mut conn = or_cancel(ctx, redis_ops::connect(&self.def)).await?;
        let mut info = or_cancel(ctx, conn.replication()).await?;
        let mut summary = format!("redis {name}: ");
        let mut data = json!({
            "redis": name,
            "server": self.def.display(),
            "max_lag_bytes": self.p.max_lag_bytes,
        });
        let mut too_far = false;
        match info.role {
            Role::Replica => {
                let addr = info.master_addr().unwrap_or_else(|| "?".into());
                let master = tokio::select! {
                    m = self.look_at_master(&addr) => m,
                    _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
                };
                // Read the replica again after the master, so the lag is never understated
                // by writes that happened in between.
                if master.offset.is_some() {
                    info = or_cancel(ctx, conn.replication()).await?;
                }
                let lag = match (master.offset, info.offset()) {
                    (Some(m), Some(r)) => Some(m.saturating_sub(r)),
                    _ => None,
                };
                summary.push_str(&format!("replica of {addr}, {}", link_text(&info)));
                match lag {
                    Some(l) => summary.push_str(&format!(", {} behind", bytes(l))),
                    None => summary.push_str(", lag unknown (master unreachable)"),
                }
                if info.master_sync_in_progress {
                    summary.push_str(", full sync in progress");
                }
                too_far = matches!((lag, self.p.max_lag_bytes), (Some(l), Some(max)) if l > max);
                data["master"] = json!({
                    "address": addr,
                    "name": master.name,
                    "reachable": master.offset.is_some(),
                    "offset": master.offset,
                    "error": master.error,
                });
                data["lag_bytes"] = json!(lag);
            }
            Role::Master => {
                let own = info.master_repl_offset.unwrap_or(0);
                let parts: Vec<String> = info
                    .replicas
                    .iter()
                    .map(|r| {
                        let lag = own.saturating_sub(r.offset);
                        if self.p.max_lag_bytes.is_some_and(|max| lag > max) {
                            too_far = true;
                        }
                        format!("{}:{} {}, {} behind", r.ip, r.port, r.state, bytes(lag))
                    })
                    .collect();
                summary.push_str("master");
                match parts.len() {
                    0 => summary.push_str(", no replicas connected"),
                    1 => summary.push_str(&format!(", 1 replica ({})", parts[0])),
                    n => summary.push_str(&format!(", {n} replicas ({})", parts.join("; "))),
                }
                data["lag_bytes"] = json!(
                    info.replicas
                        .iter()
                        .map(|r| own.saturating_sub(r.offset))
                        .max()
                );
            }
        }
        data["info"] = json!(info);
        let log = serde_json::to_string_pretty(&data).unwrap_or_default();
        ctx.progress.line(summary.clone());
        if let Some(want) = self.expect_role
            && want != info.role
        {
            return Err(StepError::fatal(format!(
                "{summary}: expected a {want}, it is a {}",
                info.role
            ))
            .with_log(log));
        }
        if too_far {
            return Err(StepError::retryable(format!(
                "{summary}: beyond the limit of {}",
                bytes(self.p.max_lag_bytes.unwrap_or(0))
            ))
            .with_log(log));
        }
        Ok(StepOutput { summary, log, data })
    }
}

/// `link up`, `link down for 12 s`.
fn link_text(info: &ReplicationInfo) -> String {
    match info.master_link_status.as_deref() {
        Some("up") => "link up".into(),
        Some(s) => match info.master_link_down_since_seconds {
            Some(secs) => format!("link {s} for {secs} s"),
            None => format!("link {s}"),
        },
        None => "link unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retargets_urls_and_parses_roles() {
        assert_eq!(
            retarget("redis://:pw@10.0.0.1:6380/2", "10.0.1.5:6379").as_deref(),
            Some("redis://:pw@10.0.1.5:6379/2")
        );
        assert_eq!(retarget("redis://h:1", "nohostport"), None);
        assert_eq!(parse_role("replica"), Ok(Role::Replica));
        assert_eq!(parse_role("master"), Ok(Role::Master));
        assert_eq!(
            parse_role("leader").unwrap_err(),
            "expect_role: `leader` is not a role (master or replica)"
        );
    }
}
