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
            };
            let sql = format!("CREATE DATABASE {}", quote_ident(&name));
            match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {
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
