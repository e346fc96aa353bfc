//! Reading a server's WAL position and replication state (primary or standby), and waiting for
//! a standby to replay up to a position.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use super::{Lsn, human_bytes};
use crate::step::{StepContext, StepError};

/// What one server says about its WAL.
#[derive(Debug, Clone, Serialize)]
pub struct ServerState {
    /// `pg_is_in_recovery()`: a standby (or a server still recovering).
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` (primaries only).
    pub current_lsn: Option<Lsn>,
    /// `pg_current_wal_flush_lsn()` (primaries only).
    pub flush_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()`: WAL received and flushed by streaming (standbys).
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`: WAL replayed; stays at the end of recovery after promotion.
    pub replay_lsn: Option<Lsn>,
    /// `pg_last_xact_replay_timestamp()`: commit time (on the primary) of the last replayed
    /// transaction; stays after promotion.
    pub last_replay_at: Option<DateTime<Utc>>,
    /// `pg_is_wal_replay_paused()` (standbys only).
    pub replay_paused: Option<bool>,
    /// Status of the WAL receiver (`streaming`, …); `None` when none runs.
    pub receiver_status: Option<String>,
    /// The server's clock when this was read.
    pub now: DateTime<Utc>,
}

/// One row of `pg_stat_replication` on a primary.
#[derive(Debug, Clone, Serialize)]
pub struct SenderRow {
    /// The standby's `application_name` (its `cluster_name`, or `walreceiver`).
    pub application_name: String,
    /// The standby's address (`None` for a unix socket).
    pub client_addr: Option<String>,
    /// `startup`, `catchup`, `streaming`, `backup` or `stopping`.
    pub state: Option<String>,
    /// WAL sent.
    pub sent_lsn: Option<Lsn>,
    /// WAL the standby wrote.
    pub write_lsn: Option<Lsn>,
    /// WAL the standby flushed.
    pub flush_lsn: Option<Lsn>,
    /// WAL the standby replayed.
    pub replay_lsn: Option<Lsn>,
    /// `async`, `potential`, `sync` or `quorum`.
    pub sync_state: Option<String>,
    /// `replay_lag` in seconds (NULL once an idle standby has caught up).
    pub replay_lag_seconds: Option<f64>,
}

const STATE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END, \
     pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
     extract(epoch FROM pg_last_xact_replay_timestamp())::float8, \
     CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END, \
     (SELECT status FROM pg_stat_wal_receiver LIMIT 1), \
     extract(epoch FROM clock_timestamp())::float8";

type StateRow = (
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<bool>,
    Option<String>,
    f64,
);

/// Reads [`ServerState`].
pub async fn server_state(conn: &mut PgConnection) -> Result<ServerState, sqlx::Error> {
    let r: StateRow = sqlx::query_as(STATE_SQL).fetch_one(conn).await?;
    Ok(ServerState {
        in_recovery: r.0,
        current_lsn: lsn(r.1)?,
        flush_lsn: lsn(r.2)?,
        receive_lsn: lsn(r.3)?,
        replay_lsn: lsn(r.4)?,
        last_replay_at: r.5.and_then(ts),
        replay_paused: r.6,
        receiver_status: r.7,
        now: ts(r.8).unwrap_or_else(Utc::now),
    })
}

const SENDERS_SQL: &str = "SELECT application_name, host(client_addr), state, \
     sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text, sync_state, \
     extract(epoch FROM replay_lag)::float8 \
     FROM pg_stat_replication ORDER BY application_name, pid";

type SenderTuple = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
);

/// Reads `pg_stat_replication` (empty on a standby without cascading standbys).
pub async fn senders(conn: &mut PgConnection) -> Result<Vec<SenderRow>, sqlx::Error> {
    let rows: Vec<SenderTuple> = sqlx::query_as(SENDERS_SQL).fetch_all(conn).await?;
    rows.into_iter()
        .map(|r| {
            Ok(SenderRow {
                application_name: r.0.unwrap_or_default(),
                client_addr: r.1,
                state: r.2,
                sent_lsn: lsn(r.3)?,
                write_lsn: lsn(r.4)?,
                flush_lsn: lsn(r.5)?,
                replay_lsn: lsn(r.6)?,
                sync_state: r.7,
                replay_lag_seconds: r.8,
            })
        })
        .collect()
}

/// `cluster_name` of the server (what its WAL receiver reports as `application_name`).
pub async fn cluster_name(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT current_setting('cluster_name')")
        .fetch_one(conn)
        .await
}

/// Polls the standby on `conn` until `pg_last_wal_replay_lsn() >= target`, reporting progress
/// every few seconds. Returns the replay position reached. Fails (retryable) after `timeout`,
/// when the server leaves recovery, or on cancel.
pub async fn wait_for_replay(
    conn: &mut PgConnection,
    target: Lsn,
    timeout: Duration,
    ctx: &StepContext,
    label: &str,
) -> Result<Lsn, StepError> {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let s = server_state(conn)
            .await
            .map_err(|e| StepError::retryable(format!("reading {label}: {e}")))?;
        let replay = s.replay_lsn.unwrap_or_default();
        if replay >= target {
            ctx.progress.line(format!(
                "{label}: replayed up to {replay} (target {target}) after {:.1} s",
                start.elapsed().as_secs_f64()
            ));
            return Ok(replay);
        }
        if !s.in_recovery {
            return Err(StepError::fatal(format!(
                "{label} left recovery at {replay} before reaching {target}"
            )));
        }
        if start.elapsed() >= timeout {
            return Err(StepError::retryable(format!(
                "{label} did not replay up to {target} within {} s: at {replay}, {} behind \
                 (receiver: {})",
                timeout.as_secs(),
                human_bytes(target.bytes_after(replay)),
                s.receiver_status.as_deref().unwrap_or("not running")
            )));
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            ctx.progress.line(format!(
                "{label}: replayed {replay}, {} behind {target} (receiver: {})",
                human_bytes(target.bytes_after(replay)),
                s.receiver_status.as_deref().unwrap_or("not running")
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = ctx.cancel.cancelled() => {
                return Err(StepError::retryable(format!("cancelled while waiting for {label}")));
            }
        }
    }
}

/// Seconds since the epoch (as PostgreSQL's `extract(epoch …)` gives) to a UTC time.
pub fn ts(epoch: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros((epoch * 1e6).round() as i64)
}

fn lsn(text: Option<String>) -> Result<Option<Lsn>, sqlx::Error> {
    text.map(|t| t.parse::<Lsn>().map_err(|e| sqlx::Error::Decode(e.into())))
        .transpose()
}
