//! Throwaway PostgreSQL 15 clusters for tests: primaries, streaming replicas, promotion, WAL archiving.
//!
//! A [`PgCluster`] is a [`LocalCluster`] (see `recovery::pg::local`, which `drbot demo` uses too)
//! in its own temp dir under `/tmp`: it listens on `127.0.0.1` on a free port with trust
//! authentication for the `postgres` user, and is stopped (immediate mode) and removed when
//! dropped. Every method of [`LocalCluster`] is available on it (`psql`, `url`, `stop`, …).
//!
//! PostgreSQL binaries are looked up in `$DRBOT_PG_BIN`, then `/usr/lib/postgresql/15/bin`, then
//! `pg_config --bindir`. When the tests run as root, every server-side binary is run as the
//! `postgres` system user through `runuser -u postgres --`, and the temp dir is chowned to it.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use tempfile::TempDir;

pub use crate::pg::local::{LocalCluster, LocalOptions as PgOptions};

/// One throwaway PostgreSQL cluster (primary or replica) in its own temp dir.
///
/// Dropping it stops the server (immediate mode) and removes the temp dir; errors are ignored there.
#[derive(Debug)]
pub struct PgCluster {
    // Dropped first: the server stops before its directory goes.
    cluster: LocalCluster,
    _dir: TempDir,
}

impl PgCluster {
    /// The PostgreSQL binary directory (see [`LocalCluster::bin_dir`]).
    pub fn bin_dir() -> Result<PathBuf> {
        LocalCluster::bin_dir()
    }

    /// Full path of one PostgreSQL binary in [`PgCluster::bin_dir`], e.g. `bin("pg_dump")`.
    pub fn bin(name: &str) -> Result<PathBuf> {
        LocalCluster::bin(name)
    }

    /// Start a primary with [`PgOptions::default`] (WAL archiving on).
    pub fn start() -> Result<PgCluster> {
        Self::start_with(PgOptions::default())
    }

    /// `initdb` a fresh cluster with `opts` and start it as a primary (see
    /// [`LocalCluster::start_primary`] for its settings).
    pub fn start_with(opts: PgOptions) -> Result<PgCluster> {
        let dir = temp_dir()?;
        let cluster = LocalCluster::start_primary(dir.path(), &opts)?;
        Ok(PgCluster { cluster, _dir: dir })
    }

    /// Take a base backup of `primary`, start it as a streaming hot standby in its own temp dir,
    /// and check that it is in recovery (see [`LocalCluster::start_replica`]).
    pub fn start_replica_of(primary: &PgCluster) -> Result<PgCluster> {
        let dir = temp_dir()?;
        let cluster = LocalCluster::start_replica(dir.path(), primary)?;
        Ok(PgCluster { cluster, _dir: dir })
    }
}

impl Deref for PgCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl DerefMut for PgCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

/// A fresh temp dir under `/tmp` (searchable by the `postgres` user on the way), else under
/// the system temp dir.
fn temp_dir() -> Result<TempDir> {
    let base = Path::new("/tmp");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("drbot-pg-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a temp dir in {}", base.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

    #[test]
    fn primary_replica_promote() -> Result<()> {
        let primary = PgCluster::start()?;
        assert!(!primary.is_in_recovery()?);
        primary.psql(
            "postgres",
            "CREATE TABLE items (id int PRIMARY KEY, name text);\n\
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;",
        )?;

        let replica = PgCluster::start_replica_of(&primary)?;
        assert_ne!(replica.port(), primary.port());
        assert_ne!(replica.data_dir(), primary.data_dir());
        assert!(replica.is_in_recovery()?);

        primary.psql("postgres", "INSERT INTO items VALUES (101, 'late')")?;
        replica.wait_for_replay(&primary, REPLAY_TIMEOUT)?;
        assert_eq!(
            replica.psql("postgres", "SELECT count(*) FROM items")?,
            "101"
        );
        assert_eq!(
            replica.psql("postgres", "SELECT name FROM items WHERE id = 101")?,
            "late"
        );
        let err = replica
            .psql("postgres", "INSERT INTO items VALUES (102, 'nope')")
            .unwrap_err();
        assert!(format!("{err:#}").contains("read-only"), "{err:#}");

        // The primary archives WAL into its own archive dir.
        let segment = primary.archive_current_wal(REPLAY_TIMEOUT)?;
        assert!(primary.archive_dir().join(&segment).is_file());

        assert_eq!(
            replica.psql("postgres", "SELECT pg_promote(wait => true)")?,
            "t"
        );
        assert!(!replica.is_in_recovery()?);
        replica.psql(
            "postgres",
            "INSERT INTO items VALUES (102, 'after promote')",
        )?;
        assert_eq!(
            replica.psql("postgres", "SELECT count(*) FROM items")?,
            "102"
        );

        // After promotion the replica archives into its own archive dir, on the new timeline.
        let segment = replica.archive_current_wal(REPLAY_TIMEOUT)?;
        assert!(segment.starts_with("00000002"), "{segment}");
        assert!(replica.archive_dir().join("00000002.history").is_file());
        assert!(!primary.archive_dir().join(&segment).exists());
        Ok(())
    }

    #[test]
    fn stop_kill_restart_keeps_data() -> Result<()> {
        let mut pg = PgCluster::start_with(PgOptions {
            archive: false,
            extra_conf: vec![("work_mem".into(), "8MB".into())],
        })?;
        assert_eq!(pg.psql("postgres", "SHOW archive_mode")?, "off");
        assert_eq!(pg.psql("postgres", "SHOW work_mem")?, "8MB");
        pg.create_database("drbot test")?;
        pg.psql(
            "drbot test",
            "CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2), (3);",
        )?;
        let port = pg.port();
        assert_eq!(
            pg.url("app"),
            format!("postgres://postgres@127.0.0.1:{port}/app")
        );

        pg.stop()?;
        assert!(!pg.is_running());
        assert!(pg.psql("postgres", "SELECT 1").is_err());
        pg.stop()?; // no-op when already stopped
        pg.restart()?;
        assert_eq!(pg.port(), port);
        assert_eq!(pg.psql("drbot test", "SELECT sum(v) FROM t")?, "6");

        pg.psql("drbot test", "INSERT INTO t VALUES (4)")?;
        pg.kill()?;
        assert!(pg.psql("postgres", "SELECT 1").is_err());
        pg.restart()?;
        assert_eq!(pg.port(), port);
        assert_eq!(pg.psql("drbot test", "SELECT sum(v) FROM t")?, "10");

        // restart() of a running server stops it first.
        pg.restart()?;
        assert_eq!(pg.psql("drbot test", "SELECT count(*) FROM t")?, "4");

        // Tools run as the cluster owner; bare names are found in the bin dir.
        let data = pg.data_dir().to_str().unwrap().to_owned();
        let out = pg.run_as_owner(Path::new("pg_controldata"), &["-D", &data])?;
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("in production"));
        assert!(PgCluster::bin("pg_dump")?.is_file());
        assert!(PgCluster::bin("no_such_tool").is_err());

        let err = pg
            .psql("postgres", "SELECT * FROM missing_table")
            .unwrap_err();
        assert!(format!("{err:#}").contains("missing_table"), "{err:#}");
        Ok(())
    }

    #[test]
    fn two_clusters_get_different_ports_and_drop_cleans_up() -> Result<()> {
        let a = PgCluster::start()?;
        let b = PgCluster::start()?;
        assert_ne!(a.port(), b.port());
        assert_eq!(a.host(), "127.0.0.1");
        assert_eq!(a.psql("postgres", "SELECT 1")?, "1");
        assert_eq!(b.psql("postgres", "SELECT 2")?, "2");

        let dir = a.dir().to_path_buf();
        let port = a.port();
        assert!(dir.is_dir());
        assert!(a.log_path().is_file());
        drop(a);
        assert!(!dir.exists(), "{} still exists", dir.display());
        assert!(
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(1)
            )
            .is_err(),
            "something still listens on port {port}"
        );
        assert_eq!(b.psql("postgres", "SELECT 3")?, "3");

        // A stopped cluster is cleaned up too.
        let mut c = PgCluster::start()?;
        c.stop()?;
        let dir = c.dir().to_path_buf();
        drop(c);
        assert!(!dir.exists());
        Ok(())
    }
}
