//! The drill's marker table and writer. Each drill writes rows tagged with its own `drill` id and
//! a sequence number `seq` counting 1, 2, 3, … in commit order (one writer, one autocommit
//! `INSERT` per tick). A marker is *acknowledged* when its commit returned to the writer, so the
//! acknowledged markers of a drill are exactly `seq` 1 to the last acknowledged one, and the
//! ones a promoted replica lacks are the data a real disaster would have lost.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Row};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{pg, resources::PgClusterDef, step::StepError};

/// How long a marker `INSERT` may take before the writer gives up on it.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates the marker table if missing (`id bigserial`, `drill text`, `seq bigint`,
/// `written_at timestamptz default clock_timestamp()`), adding the tag columns to an older one.
pub async fn ensure_table(
    conn: &mut PgConnection,
    def: &PgClusterDef,
    table: &str,
) -> Result<(), StepError> {
    let t = pg::quote_table(table);
    let sql = [
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (id bigserial PRIMARY KEY, drill text, seq bigint, \
             written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS drill text"),
        format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS seq bigint"),
    ];
    for s in sql {
        // Identifiers quoted by quote_table from a name valid_table accepted.
        sqlx::query(sqlx::AssertSqlSafe(s))
            .execute(&mut *conn)
            .await
            .map_err(|e| pg::query_error(def, &format!("preparing marker table {table}"), e))?;
    }
    Ok(())
}

/// One acknowledged marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Its `seq` (1 for the drill's first marker).
    pub seq: i64,
    /// Its `id` in the table.
    pub id: i64,
    /// Its `written_at` on the primary's clock, Unix ms.
    pub at_ms: i64,
}

/// What the writer did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterReport {
    /// The first acknowledged marker.
    pub first: Option<Ack>,
    /// The last acknowledged marker.
    pub last: Option<Ack>,
    /// Markers acknowledged.
    pub acked: i64,
    /// The error that ended the writer, if one did.
    pub error: Option<String>,
    /// Whether that error came before [`MarkerWriter::disaster_fired`] was called.
    pub failed_before_disaster: bool,
}

#[derive(Default)]
struct Shared {
    report: WriterReport,
    disaster: bool,
}

/// A running marker writer.
pub struct MarkerWriter {
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl MarkerWriter {
    /// Starts writing markers of drill `drill` into `table` on `conn`, `rate` per second. The
    /// writer ends at the first failed `INSERT` (after a disaster that is the expected end) or
    /// when stopped.
    pub fn start(
        mut conn: PgConnection,
        def: PgClusterDef,
        table: &str,
        drill: String,
        rate: u32,
    ) -> Self {
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let stop = CancellationToken::new();
        let sql = format!(
            "INSERT INTO {} (drill, seq) VALUES ($1, $2) \
             RETURNING id, floor(extract(epoch FROM written_at) * 1000)::bigint AS at_ms",
            pg::quote_table(table)
        );
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let task = {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = 0i64;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => break,
                    }
                    seq += 1;
                    let insert = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(&drill)
                        .bind(seq)
                        .fetch_one(&mut conn);
                    let res = tokio::select! {
                        r = tokio::time::timeout(INSERT_TIMEOUT, insert) => r,
                        _ = stop.cancelled() => break,
                    };
                    let row = match res {
                        Ok(Ok(row)) => row,
                        Ok(Err(e)) => {
                            fail(&shared, pg::scrub(&def, &e.to_string()));
                            break;
                        }
                        Err(_) => {
                            fail(
                                &shared,
                                format!("no answer within {}s", INSERT_TIMEOUT.as_secs()),
                            );
                            break;
                        }
                    };
                    let ack = match (row.try_get("id"), row.try_get("at_ms")) {
                        (Ok(id), Ok(at_ms)) => Ack { seq, id, at_ms },
                        (Err(e), _) | (_, Err(e)) => {
                            fail(&shared, format!("reading the marker back: {e}"));
                            break;
                        }
                    };
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.report.first.get_or_insert(ack);
                    s.report.last = Some(ack);
                    s.report.acked += 1;
                }
            })
        };
        Self { shared, stop, task }
    }

    /// What the writer has done so far.
    pub fn report(&self) -> WriterReport {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report
            .clone()
    }

    /// Whether the writer has ended (an `INSERT` failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// From now on a failed `INSERT` is the disaster's doing, not a broken drill.
    pub fn disaster_fired(&self) {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .disaster = true;
    }

    /// Lets the writer end by itself (its next `INSERT` fails once the primary is gone) for up
    /// to `grace`, then stops it; returns the final report.
    pub async fn finish(mut self, grace: Duration) -> WriterReport {
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.stop.cancel();
            let _ = (&mut self.task).await;
        }
        self.report()
    }
}

impl Drop for MarkerWriter {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

fn fail(shared: &Mutex<Shared>, error: String) {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.report.failed_before_disaster = !s.disaster;
    s.report.error = Some(error);
}

/// The markers of drill `drill` found in `table` on a (promoted) server: count, last `seq` and
/// its time. A missing table holds none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Present {
    /// Markers of the drill present.
    pub count: i64,
    /// Highest `seq` present.
    pub max_seq: Option<i64>,
    /// `written_at` of that marker, Unix ms.
    pub max_seq_at_ms: Option<i64>,
}

/// Reads what [`Present`] describes.
pub async fn present(
    conn: &mut PgConnection,
    def: &PgClusterDef,
    table: &str,
    drill: &str,
) -> Result<Present, StepError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(pg::quote_table(table))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg::query_error(def, &format!("looking for table {table}"), e))?;
    if !exists {
        return Ok(Present::default());
    }
    let sql = format!(
        "SELECT (SELECT count(*) FROM {t} WHERE drill = $1) AS count, seq AS max_seq, \
         floor(extract(epoch FROM written_at) * 1000)::bigint AS at_ms \
         FROM {t} WHERE drill = $1 ORDER BY seq DESC LIMIT 1",
        t = pg::quote_table(table)
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(drill)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| pg::query_error(def, &format!("reading markers from {table}"), e))?;
    let Some(row) = row else {
        return Ok(Present::default());
    };
    let get = |c: &str| -> Result<Option<i64>, StepError> {
        row.try_get::<Option<i64>, _>(c)
            .map_err(|e| pg::query_error(def, &format!("reading markers from {table}"), e))
    };
    Ok(Present {
        count: get("count")?.unwrap_or(0),
        max_seq: get("max_seq")?,
        max_seq_at_ms: get("at_ms")?,
    })
}
