//! The scratch database a backup is restored into: created with a unique
//! `<prefix>_test_<UTC yyyymmddhhmmss>` name and always dropped (`DROP DATABASE … WITH
//! (FORCE)`), also when the verifying future is cancelled or times out: then the guard's
//! `Drop` drops it from a thread of its own, so it happens even while the runtime shuts down.
//! A hot standby is refused up front (`pg_is_in_recovery()`), with a message that says so.

use std::time::Duration;

use chrono::Utc;
use sqlx::Connection as _;

use crate::{
    pg::{self, quote_ident},
    resources::PgClusterDef,
    step::StepError,
};

/// Attempts at dropping the scratch database before giving up.
const DROP_ATTEMPTS: u32 = 5;

/// A created scratch database; dropped when this guard is, unless [`Scratch::drop_now`] ran.
pub struct Scratch {
    def: PgClusterDef,
    name: String,
    armed: bool,
    /// Scratch databases of earlier verifications that died before dropping them (a kill, a
    /// reboot), dropped before this one was made.
    pub leftovers: Vec<String>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("name", &self.name).finish()
    }
}

impl Scratch {
    /// Creates `<prefix>_test_<UTC yyyymmddhhmmss>` on the cluster `cluster` (`_2`, `_3`, …
    /// appended when another verification took that name in the same second). A hot standby
    /// is refused before anything is created: it cannot hold a scratch database.
    pub async fn create(
        def: &PgClusterDef,
        cluster: &str,
        prefix: &str,
    ) -> Result<Scratch, StepError> {
        let base = format!("{prefix}_test_{}", Utc::now().format("%Y%m%d%H%M%S"));
        let maintenance = pg::url_database(def);
        let mut conn = pg::connect_db(def, &maintenance).await?;
        let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::query_error(def, "SELECT pg_is_in_recovery()", e))?;
        if standby {
            let _ = conn.close().await;
            return Err(StepError::fatal(format!(
                "cluster `{cluster}` ({}) is a hot standby (read-only): restore tests need a \
                 cluster that takes writes; point verify_backup's `cluster` at one (e.g. a \
                 [postgres.verify] cluster)",
                def.display()
            )));
        }
        for n in 1..=50u32 {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}_{n}")
            };
            // Armed before the statement is sent: a cancel while CREATE runs still drops it.
            let mut guard = Scratch {
                def: def.clone(),
                name: name.clone(),
                armed: true,
                leftovers: Vec::new(),
            };
            let sql = format!("CREATE DATABASE {}", quote_ident(&name));
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {
                    guard.leftovers = drop_leftovers(&mut conn, def, prefix).await;
                    let _ = conn.close().await;
                    return Ok(guard);
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {
                    // Someone else's database: never drop it.
                    guard.armed = false;
                }
                Err(e) => {
                    guard.armed = false;
                    return Err(pg::query_error(
                        def,
                        &format!("creating scratch database {name}"),
                        e,
                    ));
                }
            }
        }
        Err(StepError::retryable(format!(
            "could not find a free scratch database name starting with {base}"
        )))
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now and reports whether that worked.
    pub async fn drop_now(mut self) -> Result<(), String> {
        self.armed = false;
        drop_database(&self.def, &self.name).await
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let def = self.def.clone();
        let name = std::mem::take(&mut self.name);
        tracing::warn!(database = %name, "verification interrupted: dropping its scratch database");
        // A thread of its own with its own runtime: works after a cancel, a timeout, and while
        // the caller's runtime is shutting down.
        let spawned = std::thread::Builder::new()
            .name("drbot-drop-scratch".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(database = %name, error = %e, "cannot drop scratch database");
                        return;
                    }
                };
                if let Err(e) = rt.block_on(drop_database(&def, &name)) {
                    tracing::error!(database = %name, error = %e, "scratch database left behind");
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that drops the scratch database");
        }
    }
}

/// How old (by its name) a scratch database nobody is connected to must be to count as left
/// behind by a verification that died: well past any verification's run time.
const LEFTOVER_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(48);

/// Whether `name` is one of `prefix`'s scratch databases named for a time before `before`.
fn is_leftover(name: &str, prefix: &str, before: chrono::NaiveDateTime) -> bool {
    let Some(rest) = name.strip_prefix(&format!("{prefix}_test_")) else {
        return false;
    };
    let (Some(stamp), Some(suffix)) = (rest.get(..14), rest.get(14..)) else {
        return false;
    };
    let suffix_ok = suffix.is_empty()
        || suffix
            .strip_prefix('_')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    suffix_ok
        && chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").is_ok_and(|t| t < before)
}

/// Drops `prefix`'s scratch databases that a verification killed before it could drop them
/// left behind (each a full copy of a backup's data): named more than [`LEFTOVER_AFTER`] ago
/// and with no session. Failures are logged: they never stop this verification.
async fn drop_leftovers(
    conn: &mut sqlx::PgConnection,
    def: &PgClusterDef,
    prefix: &str,
) -> Vec<String> {
    let before = (Utc::now() - LEFTOVER_AFTER).naive_utc();
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT d.datname::text FROM pg_database d WHERE NOT EXISTS \
         (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .fetch_all(&mut *conn)
    .await
    {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "listing left-behind scratch databases failed");
            return Vec::new();
        }
    };
    let mut dropped = Vec::new();
    for name in names.into_iter().filter(|n| is_leftover(n, prefix, before)) {
        match drop_database(def, &name).await {
            Ok(()) => {
                tracing::warn!(database = %name, "dropped a scratch database left behind");
                dropped.push(name);
            }
            Err(e) => tracing::error!(database = %name, error = %e, "scratch database left behind"),
        }
    }
    dropped
}

/// `DROP DATABASE IF EXISTS … WITH (FORCE)` (terminates sessions still restoring), retried.
async fn drop_database(def: &PgClusterDef, name: &str) -> Result<(), String> {
    let maintenance = pg::url_database(def);
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    let mut last = String::new();
    for attempt in 1..=DROP_ATTEMPTS {
        match pg::connect_db(def, &maintenance).await {
            Ok(mut conn) => {
                match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => {
                        let _ = conn.close().await;
                        return Ok(());
                    }
                    Err(e) => last = pg::query_error(def, &format!("dropping {name}"), e).message,
                }
            }
            Err(e) => last = e.message,
        }
        if attempt < DROP_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_old_scratch_names_of_this_prefix_only() {
        let before = chrono::NaiveDate::from_ymd_opt(2026, 11, 26)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        for (name, left) in [
            ("drbot_test_20260101120000", true),
            ("drbot_test_20260101120000_3", true),
            ("drbot_test_20261127120000", false),
            ("drbot_test_20260101120000_", false),
            ("drbot_test_20260101120000x", false),
            ("drbot_test_2026010112", false),
            ("other_test_20260101120000", false),
            ("drbot_prod", false),
            ("drbot_test_2026010112000ü", false),
            ("drbot_test_ü0260101120000", false),
        ] {
            assert_eq!(is_leftover(name, "drbot", before), left, "{name}");
        }
    }
}
