//! `pg_promote` step (destructive, idempotent): promote a streaming replica and record RPO
//! evidence.
//!
//! Before promoting it reads the primary's WAL position when the primary is reachable (and
//! optionally waits for the replica to catch up with it). It promotes with
//! `pg_promote(wait => true, wait_seconds => N)`, then checks `pg_is_in_recovery()` is false
//! and that a write commits. The evidence is read after promotion, when
//! `pg_last_wal_replay_lsn()` and `pg_last_xact_replay_timestamp()` hold the end of recovery
//! (promotion replays all WAL already received): `replica_replay_lsn`, `primary_lsn`,
//! `lsn_gap_bytes`, `last_replayed_commit_at`, `primary_reachable`. With the primary
//! unreachable the gap is unknown and the summary says so; runbooks put such a promote behind
//! `gate = true`. Promoting a server that is no longer in recovery is a no-op that reports the
//! same evidence.
//!
//! It refuses to promote while the old primary answers and still accepts writes (not in
//! recovery, `default_transaction_read_only` off): that would leave two writable primaries
//! (split brain), and the old one's later writes would be lost at failback. The primary must be
//! fenced (`pg_fence`) or stopped first, unless `allow_writable_primary` says clients are cut
//! off from it by other means.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    pg::{self, Lsn, human_bytes, replication},
    registry::{StepKind, StepTraits, params},
    resources::{PgClusterDef, Resources},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `pg_promote` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteParams {
    /// `[postgres.<name>]` of the replica to promote.
    pub replica: String,
    /// `[postgres.<name>]` of the old primary, read (when reachable) for RPO evidence.
    #[serde(default)]
    pub primary: Option<String>,
    /// `wait_seconds` of `pg_promote`: how long promotion may take. Default 60.
    #[serde(default = "default_wait")]
    pub wait_seconds: u32,
    /// With the primary reachable, wait up to this many seconds for the replica to replay up
    /// to the primary's flushed WAL before promoting (fence the primary first). Default 0.
    #[serde(default)]
    pub catch_up_seconds: u32,
    /// Promote even when the old primary answers and accepts writes (it is cut off from its
    /// clients by other means, e.g. network isolation). Default false: such a promote is
    /// refused, since both servers would take writes.
    #[serde(default)]
    pub allow_writable_primary: bool,
}

fn default_wait() -> u32 {
    60
}

/// The `pg_promote` step type.
pub struct PromoteKind(pub Arc<Resources>);

impl StepKind for PromoteKind {
    fn name(&self) -> &'static str {
        "pg_promote"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let p: PromoteParams = params(p)?;
        pg::check_cluster(&self.0, "replica", &p.replica)?;
        if let Some(primary) = &p.primary {
            pg::check_cluster(&self.0, "primary", primary)?;
            if primary == &p.replica {
                return Err("primary: must differ from replica".into());
            }
        }
        if !(1..=86_400).contains(&p.wait_seconds) {
            return Err(format!(
                "wait_seconds: {} is out of range (1 to 86400)",
                p.wait_seconds
            ));
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        self.validate(p)?;
        Ok(Box::new(Promote {
            res: self.0.clone(),
            p: params(p)?,
        }))
    }
}

/// A runnable `pg_promote`.
pub struct Promote {
    res: Arc<Resources>,
    p: PromoteParams,
}

/// RPO evidence of a promotion.
#[derive(Debug, Clone, Serialize)]
pub struct RpoEvidence {
    /// End of recovery on the promoted replica: the last WAL it replayed.
    pub replica_replay_lsn: Option<Lsn>,
    /// The replica's replay position just before promotion (promotion then replays the WAL
    /// it had received).
    pub replica_replay_lsn_before: Option<Lsn>,
    /// WAL the replica had received when promotion started.
    pub replica_receive_lsn: Option<Lsn>,
    /// The old primary's `pg_current_wal_lsn()` just before promotion, if reachable.
    pub primary_lsn: Option<Lsn>,
    /// The old primary's `pg_current_wal_flush_lsn()` just before promotion, if reachable.
    pub primary_flush_lsn: Option<Lsn>,
    /// WAL the old primary had that the promoted replica did not replay (`None`: unknown).
    pub lsn_gap_bytes: Option<u64>,
    /// Primary-side commit time of the last transaction the replica replayed.
    pub last_replayed_commit_at: Option<DateTime<Utc>>,
    /// The old primary's last commit time (`pg_last_committed_xact()`, needs
    /// `track_commit_timestamp = on`), if reachable.
    pub primary_last_commit_at: Option<DateTime<Utc>>,
    /// Commits lost at most this many seconds apart: primary's last commit minus the last
    /// replayed one (when both are known), 0 when the gap is 0.
    pub rpo_seconds: Option<f64>,
    /// Seconds from the last replayed commit to the promotion: an upper bound of the window of
    /// lost commits when the primary is unreachable.
    pub seconds_since_last_replayed_commit: Option<f64>,
    /// Whether the old primary answered.
    pub primary_reachable: bool,
    /// Why it did not, if it did not.
    pub primary_error: Option<String>,
    /// Whether `lsn_gap_bytes` is known.
    pub lag_known: bool,
    /// The replica was already promoted before this step ran (no-op).
    pub already_promoted: bool,
    /// When the promotion finished (the replica's clock).
    pub promoted_at: DateTime<Utc>,
}

/// What the old primary looked like right before promotion.
struct PrimaryLook {
    reachable: bool,
    /// It answered, is not in recovery and is not read-only by default: it takes writes.
    writable: bool,
    error: Option<String>,
    lsn: Option<Lsn>,
    flush_lsn: Option<Lsn>,
    last_commit_at: Option<DateTime<Utc>>,
}

async fn look(def: &PgClusterDef) -> PrimaryLook {
    let mut out = PrimaryLook {
        reachable: false,
        writable: false,
        error: None,
        lsn: None,
        flush_lsn: None,
        last_commit_at: None,
    };
    let mut conn = match pg::connect(def).await {
        Ok(c) => c,
        Err(e) => {
            // A server that answers but refuses drbot (a rotated password, too many clients)
            // is running, and may take writes: unknown counts as writable.
            out.writable = e.message.starts_with(pg::conn::REFUSED);
            out.error = Some(e.message);
            return out;
        }
    };
    match replication::server_state(&mut conn).await {
        Ok(s) if s.in_recovery => {
            out.reachable = true;
            out.error =
                Some("the primary is in recovery (a standby): no current WAL position".into());
            out.lsn = s.replay_lsn;
            out.flush_lsn = s.replay_lsn;
        }
        Ok(s) => {
            out.reachable = true;
            // Unknown counts as writable: promoting beside a writable primary is the harm.
            out.writable = !pg::read_only_default(&mut conn, def).await.unwrap_or(false);
            out.lsn = s.current_lsn;
            out.flush_lsn = s.flush_lsn;
            // Only with track_commit_timestamp = on; an error just means unknown.
            out.last_commit_at = sqlx::query_scalar::<_, Option<f64>>(
                "SELECT extract(epoch FROM timestamp)::float8 FROM pg_last_committed_xact()",
            )
            .fetch_one(&mut conn)
            .await
            .ok()
            .flatten()
            .and_then(replication::ts);
        }
        Err(e) => {
            out.writable = true;
            out.error = Some(pg::query_error(def, "reading the WAL position", e).message);
        }
    }
    out
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// What `promote` knows of the old primary.
#[derive(Clone, Copy)]
pub(crate) enum OldPrimary<'a> {
    /// None was named: the gap is unknown.
    Unnamed,
    /// Named: looked at right before the promotion (reachable, writable, its WAL position).
    Live(&'a str, &'a PgClusterDef),
    /// Stopped cleanly by the caller: its WAL ends with the shutdown checkpoint at this
    /// position, so the gap is known although it no longer answers.
    StoppedCleanly(&'a str, Lsn),
}

impl OldPrimary<'_> {
    fn name(&self) -> Option<&str> {
        match self {
            OldPrimary::Unnamed => None,
            OldPrimary::Live(n, _) | OldPrimary::StoppedCleanly(n, _) => Some(n),
        }
    }
}

/// Promotes `replica_def` (see the module doc) and returns the evidence, a summary and a log.
pub(crate) async fn promote(
    replica_name: &str,
    replica_def: &PgClusterDef,
    primary: OldPrimary<'_>,
    wait_seconds: u32,
    catch_up_seconds: u32,
    allow_writable_primary: bool,
    ctx: &StepContext,
) -> Result<(RpoEvidence, String, String), StepError> {
    let mut log = Vec::<String>::new();
    let mut conn = pg::connect(replica_def).await?;
    let before = replication::server_state(&mut conn)
        .await
        .map_err(|e| pg::query_error(replica_def, "reading the replica's WAL state", e))?;
    let already_promoted = !before.in_recovery;
    let look = match primary {
        OldPrimary::Live(_, def) => look(def).await,
        OldPrimary::StoppedCleanly(_, checkpoint) => PrimaryLook {
            reachable: false,
            writable: false,
            error: Some(format!(
                "stopped cleanly: its WAL ends with the shutdown checkpoint at {checkpoint}"
            )),
            lsn: Some(checkpoint),
            flush_lsn: Some(checkpoint),
            last_commit_at: None,
        },
        OldPrimary::Unnamed => PrimaryLook {
            reachable: false,
            writable: false,
            error: Some("no primary named".into()),
            lsn: None,
            flush_lsn: None,
            last_commit_at: None,
        },
    };
    if let Some(e) = &look.error {
        log.push(format!("primary: {e}"));
    }
    if let (false, true, OldPrimary::Live(name, def)) = (already_promoted, look.writable, primary) {
        if !allow_writable_primary {
            let why = match &look.error {
                Some(e) => {
                    format!(
                        "answers but drbot cannot read its state ({e}), so it may accept writes"
                    )
                }
                None => "answers and accepts writes".to_string(),
            };
            return Err(StepError::fatal(format!(
                "the old primary {name} ({}) {why}: promoting {replica_name} now could leave \
                 two writable primaries. Nothing was done. Fence {name} (pg_fence) or stop it, \
                 or give drbot access to it, then request the promotion again",
                def.display()
            )));
        }
        log.push(format!(
            "primary {name} accepts writes: promoting anyway (allow_writable_primary)"
        ));
        ctx.progress.line(format!(
            "primary {name} still accepts writes: promoting anyway (allow_writable_primary)"
        ));
    }
    if !already_promoted {
        if let (Some(target), true) = (look.flush_lsn, catch_up_seconds > 0) {
            let res = replication::wait_for_replay(
                &mut conn,
                target,
                Duration::from_secs(catch_up_seconds.into()),
                ctx,
                &format!("replica {replica_name}"),
            )
            .await;
            if let Err(e) = res {
                // Promote anyway: the evidence below shows what is missing.
                log.push(format!("catch-up: {}", e.message));
                ctx.progress
                    .line(format!("catch-up incomplete: {}", e.message));
            }
        }
        ctx.progress.line(format!(
            "promoting {replica_name} ({})",
            replica_def.display()
        ));
        let promoted: bool = tokio::select! {
            r = sqlx::query_scalar("SELECT pg_promote(wait => true, wait_seconds => $1)")
                .bind(wait_seconds as i32)
                .fetch_one(&mut conn) => r.map_err(|e| pg::query_error(replica_def, "pg_promote()", e))?,
            _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled while promoting")),
        };
        if !promoted {
            return Err(StepError::retryable(format!(
                "pg_promote() on {replica_name} did not finish within {wait_seconds} s"
            )));
        }
        log.push(format!(
            "pg_promote(wait => true, wait_seconds => {wait_seconds}) returned true"
        ));
    } else {
        log.push(format!(
            "{replica_name} is not in recovery: already promoted, nothing to do"
        ));
    }
    let after = replication::server_state(&mut conn)
        .await
        .map_err(|e| pg::query_error(replica_def, "reading the WAL state after promotion", e))?;
    if after.in_recovery {
        return Err(StepError::retryable(format!(
            "{replica_name} is still in recovery after pg_promote()"
        )));
    }
    // A fence copied over with the configuration (or an earlier fence of this server) must not
    // leave the new primary read-only.
    if pg::read_only_default(&mut conn, replica_def).await? {
        for sql in [
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .map_err(|e| pg::query_error(replica_def, sql, e))?;
        }
        log.push(
            "default_transaction_read_only was on: reset (ALTER SYSTEM RESET) and reloaded".into(),
        );
        drop(conn);
        // The reload is asynchronous: a new session sees the default once the postmaster has
        // read the file; waited for (up to 10 s) rather than guessed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            conn = pg::connect(replica_def).await?;
            if !pg::read_only_default(&mut conn, replica_def).await?
                || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    write_check(&mut conn, replica_def).await?;
    log.push("write check: CREATE TEMP TABLE + INSERT committed".into());

    let replay = after.replay_lsn.or(before.replay_lsn);
    let lsn_gap = look.lsn.map(|p| p.bytes_after(replay.unwrap_or_default()));
    let last_replayed = after.last_replay_at.or(before.last_replay_at);
    let rpo_seconds = match (lsn_gap, look.last_commit_at, last_replayed) {
        (Some(0), _, _) => Some(0.0),
        (_, Some(p), Some(r)) => Some(secs(p - r).max(0.0)),
        _ => None,
    };
    let ev = RpoEvidence {
        replica_replay_lsn: replay,
        replica_replay_lsn_before: before.replay_lsn,
        replica_receive_lsn: before.receive_lsn,
        primary_lsn: look.lsn,
        primary_flush_lsn: look.flush_lsn,
        lsn_gap_bytes: lsn_gap,
        last_replayed_commit_at: last_replayed,
        primary_last_commit_at: look.last_commit_at,
        rpo_seconds,
        seconds_since_last_replayed_commit: last_replayed.map(|t| secs(after.now - t).max(0.0)),
        primary_reachable: look.reachable,
        primary_error: look.error.clone(),
        lag_known: lsn_gap.is_some(),
        already_promoted,
        promoted_at: after.now,
    };
    let verb = if already_promoted {
        "already promoted"
    } else {
        "promoted"
    };
    let commit = last_replayed
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| "unknown".into());
    let summary = match (lsn_gap, primary.name()) {
        (Some(gap), Some(pname)) => format!(
            "{verb} {replica_name}, writes OK; RPO: {} behind primary {pname}{}, last replayed commit {commit}",
            human_bytes(gap),
            rpo_seconds
                .map(|s| format!(" ({s:.1} s of commits)"))
                .unwrap_or_default()
        ),
        (_, Some(pname)) => format!(
            "{verb} {replica_name}, writes OK; primary {pname} unreachable: lag unknown, \
             last replayed commit {commit}{}",
            ev.seconds_since_last_replayed_commit
                .map(|s| format!(" ({s:.1} s before promotion: commits after it may be lost)"))
                .unwrap_or_default()
        ),
        (_, None) => format!(
            "{verb} {replica_name}, writes OK; no primary given: lag unknown, last replayed commit {commit}"
        ),
    };
    Ok((ev, summary, log.join("\n")))
}

/// A real write: a transaction that gets a transaction id and commits.
async fn write_check(conn: &mut sqlx::PgConnection, def: &PgClusterDef) -> Result<(), StepError> {
    use sqlx::Connection as _;
    let mut tx = conn
        .begin()
        .await
        .map_err(|e| pg::query_error(def, "BEGIN", e))?;
    for sql in [
        "CREATE TEMP TABLE drbot_promote_check (at timestamptz) ON COMMIT DROP",
        "INSERT INTO drbot_promote_check VALUES (now())",
        "SELECT pg_current_xact_id()",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.map_err(|e| {
            StepError::retryable(format!(
                "write check on the promoted server failed ({sql}): {}",
                pg::scrub(def, &e.to_string())
            ))
        })?;
    }
    tx.commit()
        .await
        .map_err(|e| pg::query_error(def, "COMMIT of the write check", e))
}

#[async_trait]
impl Step for Promote {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let p = &self.p;
        let replica = pg::cluster(&self.res, &p.replica).map_err(StepError::fatal)?;
        let primary = match &p.primary {
            Some(name) => OldPrimary::Live(
                name.as_str(),
                pg::cluster(&self.res, name).map_err(StepError::fatal)?,
            ),
            None => OldPrimary::Unnamed,
        };
        let (ev, summary, log) = promote(
            &p.replica,
            replica,
            primary,
            p.wait_seconds,
            p.catch_up_seconds,
            p.allow_writable_primary,
            ctx,
        )
        .await?;
        let mut data = serde_json::to_value(&ev).unwrap_or_default();
        if let Some(obj) = data.as_object_mut() {
            obj.insert("replica".into(), json!(p.replica));
            obj.insert("primary".into(), json!(p.primary));
        }
        Ok(StepOutput { summary, log, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::test_def;

    #[test]
    fn wait_seconds_beyond_a_day_is_refused_at_validation() {
        let mut res = Resources::default();
        res.postgres
            .insert("dr".into(), test_def("postgres://u@h/d"));
        let kind = PromoteKind(Arc::new(res));
        for (wait, ok) in [
            (0u64, false),
            (1, true),
            (86_400, true),
            (86_401, false),
            (3_000_000_000, false),
        ] {
            let r = kind.validate(&json!({"replica": "dr", "wait_seconds": wait}));
            assert_eq!(r.is_ok(), ok, "{wait}: {r:?}");
        }
    }
}
