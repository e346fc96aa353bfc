//! The store: SQLite (embedded default) or PostgreSQL through one sqlx `Any` pool, with the
//! migrations of `migrations/` embedded and applied on connect.
//!
//! **Architecture Invariant:** every write goes through [`Store::write`], which serialises
//! writers (`BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on PostgreSQL).
//! The approval rules, the audit hash chain and the run state machine rely on it: each reads,
//! checks and writes inside one such transaction.
//! The one exception is the delivery outbox's claim/finish bookkeeping ([`outbox`]), which
//! touches only outbox rows and uses row locks so delivery workers run concurrently.

pub mod audit;
pub mod audit_writer;
pub mod campaigns;
pub mod checklists;
pub mod evidence;
pub mod incidents;
pub mod messages;
pub mod outbox;
pub mod report;
pub mod runs;
pub mod subscribers;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    AnyPool, Connection, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A write transaction (see the module's invariant).
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Handle to the database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// How long the first connection to a PostgreSQL store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects (creating a SQLite file if missing) and applies migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            anyhow::bail!("store.url must start with `sqlite:`, `postgres://` or `postgresql://`");
        };
        let opts = AnyConnectOptions::from_str(&url).context("store.url is not a valid URL")?;
        if backend == Backend::Postgres {
            // One direct attempt first: the pool retries a refused connection until its acquire
            // timeout and then says only that it timed out, hiding why.
            match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::AnyConnection::connect_with(&opts))
                .await
            {
                Ok(Ok(c)) => {
                    let _ = c.close().await;
                }
                Ok(Err(e)) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot open the store ({})", redact_url(&url))));
                }
                Err(_) => anyhow::bail!(
                    "cannot open the store ({}): no answer within {} s",
                    redact_url(&url),
                    CONNECT_TIMEOUT.as_secs()
                ),
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                // SQLite serialises writers anyway; a few connections serve the reads.
                Backend::Sqlite => max_connections.clamp(2, 4),
                Backend::Postgres => max_connections.max(2),
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // synchronous = FULL: a commit is on disk before it returns, so a
                        // power loss never forgets a step that started or an audit row (WAL
                        // with NORMAL survives a crash of drbot, not of the machine).
                        conn.execute(
                            "PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; \
                             PRAGMA synchronous = FULL; PRAGMA cache_size = -256; \
                             PRAGMA wal_autocheckpoint = 0;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open the store ({})", redact_url(&url)))?;
        if backend == Backend::Sqlite {
            pool.execute("PRAGMA journal_mode = WAL")
                .await
                .context("enabling WAL mode")?;
        }
        let store = Store { pool, backend };
        if backend == Backend::Sqlite {
            store.spawn_checkpointer();
        }
        store.migrate().await?;
        Ok(store)
    }

    /// SQLite: checkpoints the WAL in the background (PASSIVE: never blocks readers or
    /// writers) instead of inside whichever commit crosses the threshold, which would stall
    /// that request for milliseconds.
    fn spawn_checkpointer(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        handle.spawn(async move {
            while !pool.is_closed() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Err(e) = pool.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        });
    }

    /// Applies pending migrations (also done by `connect`).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            // Several processes may start together; migrate one at a time.
            conn.execute("SELECT pg_advisory_lock(72431)").await?;
        }
        let res = migrator
            .run(&mut *conn)
            .await
            .context("applying migrations");
        if self.backend == Backend::Postgres {
            conn.execute("SELECT pg_advisory_unlock(72431)").await?;
        }
        res
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a serialised write transaction.
    pub async fn write(&self) -> anyhow::Result<Tx> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                tx.execute("SELECT pg_advisory_xact_lock(72432)").await?;
                Ok(tx)
            }
        }
    }

    /// Starts a transaction that takes only row locks, not the global writer lock of
    /// [`Store::write`] (on SQLite, where the database is the lock, the same `BEGIN IMMEDIATE`).
    pub async fn begin_rows(&self) -> anyhow::Result<Tx> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => Ok(self.pool.begin().await?),
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        match self.pool.acquire().await {
            Ok(mut c) => c.ping().await.is_ok(),
            Err(_) => false,
        }
    }
}

/// `sqlite://drbot.db` → `sqlite://drbot.db?mode=rwc` so the file is created if missing.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Hides the passwords in a database URL: the one in `user:password@` and the values of
/// query parameters named `password` or ending in it (`?password=`, `&sslpassword=`).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &base[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &base[..s + 3], &creds[..c], &base[at..]),
                None => base.to_string(),
            }
        }
        _ => base.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                    format!("{name}=***")
                }
                _ => p.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=drbot&password=S3cret&sslmode=require"),
            "postgres://h/db?user=drbot&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:a@b@h/db?sslpassword=k&PASSWORD=x"),
            "postgres://u:***@h/db?sslpassword=***&PASSWORD=***"
        );
        assert_eq!(
            redact_url("sqlite:///tmp/x.db?mode=rwc"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url("sqlite:///tmp/x.db"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
    }
}
