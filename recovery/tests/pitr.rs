//! Point-in-time recovery on real PostgreSQL 15 clusters: `pg_base_backup` into a local
//! directory store, rows before and after a time T (with WAL switched and archived), then
//! `pg_pitr` to T into a new data directory and port: exactly the earlier rows exist. Bad
//! targets (before the backup, in the future) fail clearly, a failed attempt's directory is
//! wiped by the next run, a finished one is never wiped, and foreign directories are refused.
//! A gzipped WAL archive passes `wal_archive_check` and recovers the same rows.

mod pitr_support;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use chrono::Utc;
use pitr_support::{cluster_def, os_user, owned_temp_dir, run_step, run_step_with_progress, s};
use recovery::{
    resources::{BackupStoreDef, PgClusterDef, Resources},
    secret::Secret,
    testkit::pg::PgCluster,
};
use serde_json::json;

/// Stops whatever server runs in a data directory when the test ends (pass or fail).
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.0.join("postmaster.pid").exists() {
            return;
        }
        let pg_ctl = PgCluster::bin("pg_ctl").unwrap();
        let mut cmd = match os_user() {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &u, "--"]).arg(pg_ctl);
                c
            }
            None => Command::new(pg_ctl),
        };
        let _ = cmd
            .arg("-D")
            .arg(&self.0)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `[postgres.<name>]` entry for a cluster pg_pitr will create in `data`.
fn target_def(data: &Path, port: u16) -> PgClusterDef {
    PgClusterDef {
        url: Secret::new(format!("postgres://postgres@127.0.0.1:{port}/postgres")),
        bin_dir: Some(PgCluster::bin_dir().unwrap()),
        data_dir: Some(data.to_path_buf()),
        os_user: os_user(),
    }
}

/// `psql -At` against a server pg_pitr started.
fn psql(port: u16, sql: &str) -> String {
    let out = Command::new(PgCluster::bin("psql").unwrap())
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &port.to_string(), "-d", "postgres", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A source cluster with 100 rows before T (50 of them before the base backup) and 30 after,
/// all archived; returns (cluster, resources with `main` and store `default`, T, time before
/// the backup, backup name, store dir).
struct Setup {
    src: PgCluster,
    res: Resources,
    t: String,
    before_backup: String,
    backup: String,
    _store: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// [`setup`], with `before_backup` done to the source right before its base backup.
async fn setup_with(before_backup: impl FnOnce(&PgCluster)) -> Setup {
    let src = PgCluster::start().unwrap();
    src.psql(
        "postgres",
        "CREATE TABLE items (id int PRIMARY KEY, phase text NOT NULL);\n\
         INSERT INTO items SELECT g, 'before backup' FROM generate_series(1, 50) g;",
    )
    .unwrap();
    before_backup(&src);
    let store = tempfile::tempdir().unwrap();
    let mut res = Resources::default();
    res.postgres.insert("main".into(), cluster_def(&src));
    res.backups.insert(
        "default".into(),
        BackupStoreDef::Local {
            path: store.path().to_path_buf(),
        },
    );
    let before_backup = Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let out = run_step(&res, "pg_base_backup", json!({"cluster": "main"}))
        .await
        .unwrap();
    let backup = out.data["backup"].as_str().unwrap().to_string();
    assert!(backup.starts_with("main-base-"), "{backup}");
    let files: Vec<&str> = out.data["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"base.tar.gz") && files.contains(&"pg_wal.tar.gz"),
        "{files:?}"
    );
    assert!(store.path().join(&backup).join("manifest.json").is_file());
    assert!(out.summary.contains(&backup), "{}", out.summary);

    src.psql(
        "postgres",
        "INSERT INTO items SELECT g, 'after backup, before T' FROM generate_series(51, 100) g;",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Whole seconds, in the `/dr pitr "YYYY-MM-DD HH:MM:SS"` form: at most T itself.
    let t = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    src.psql(
        "postgres",
        "INSERT INTO items SELECT g, 'after T' FROM generate_series(101, 130) g;",
    )
    .unwrap();
    src.archive_current_wal(Duration::from_secs(30)).unwrap();
    Setup {
        src,
        res,
        t,
        before_backup,
        backup,
        _store: store,
    }
}

fn pitr_params(t: &str, archive: &Path, target: &str) -> serde_json::Value {
    json!({
        "target_time": t,
        "wal_archive": s(archive),
        "target_cluster": target,
        "verify_tables": ["items"],
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pitr_recovers_exactly_the_rows_before_the_target() {
    let mut su = setup().await;
    let dir = owned_temp_dir("drbot-pitr-");
    let data = dir.path().join("data");
    let _stop = StopOnDrop(data.clone());
    let port = free_port();
    su.res
        .postgres
        .insert("pitr".into(), target_def(&data, port));
    let archive = su.src.archive_dir().to_path_buf();

    // Targets that cannot work fail before anything is touched.
    let err = run_step(
        &su.res,
        "pg_pitr",
        pitr_params(&su.before_backup, &archive, "pitr"),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("is before the oldest base backup")
            && err.message.contains(&su.backup),
        "{}",
        err.message
    );
    let mut named = pitr_params(&su.before_backup, &archive, "pitr");
    named["backup"] = json!(su.backup);
    let err = run_step(&su.res, "pg_pitr", named).await.unwrap_err();
    assert!(
        err.message
            .contains(&format!("is before backup `{}` finished", su.backup)),
        "{}",
        err.message
    );
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let err = run_step(&su.res, "pg_pitr", pitr_params(&future, &archive, "pitr"))
        .await
        .unwrap_err();
    assert!(err.message.contains("is in the future"), "{}", err.message);
    assert!(!data.exists(), "a rejected target touched the data dir");

    // Recovery to T into a new data dir on a new port.
    let mut p = pitr_params(&su.t, &archive, "pitr");
    p["verify_sql"] = json!([
        "SELECT count(*) = 100 FROM items",
        "SELECT NOT pg_is_in_recovery()"
    ]);
    let out = run_step(&su.res, "pg_pitr", p).await.unwrap();
    assert_eq!(out.data["row_counts"]["items"], 100, "{:#}", out.data);
    assert_eq!(out.data["backup"], su.backup.as_str());
    assert!(out.data["reached_lsn"].as_str().unwrap().contains('/'));
    assert!(
        out.data["timeline"].as_i64().unwrap() >= 2,
        "{:#}",
        out.data
    );
    assert!(
        out.data["stop_point"]
            .as_str()
            .unwrap_or("")
            .contains("recovery stopping before commit"),
        "{:#}",
        out.data
    );
    assert!(
        out.summary.contains("recovered to") && out.summary.contains("items=100"),
        "{}",
        out.summary
    );
    assert_eq!(psql(port, "SELECT count(*), max(id) FROM items"), "100|100");
    assert_eq!(
        psql(port, "SELECT count(*) FROM items WHERE phase = 'after T'"),
        "0"
    );
    assert_eq!(psql(port, "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(psql(port, "SHOW archive_mode"), "off");
    // pg_verify on the recovered cluster: counts, minimums, assertions.
    let out = run_step(
        &su.res,
        "pg_verify",
        json!({"cluster": "pitr", "min_rows": {"items": 100}, "sql": ["SELECT NOT pg_is_in_recovery()"]}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["row_counts"]["items"], 100);
    let err = run_step(
        &su.res,
        "pg_verify",
        json!({"cluster": "pitr", "min_rows": {"items": 101}}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("items has 100 rows, fewer than 101"),
        "{}",
        err.message
    );
    let err = run_step(
        &su.res,
        "pg_verify",
        json!({"cluster": "pitr", "tables": ["nope"]}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("tables: counting nope") && err.message.contains("does not exist"),
        "{}",
        err.message
    );

    // Writable, and the source is untouched.
    psql(
        port,
        "INSERT INTO items VALUES (1000, 'written after PITR')",
    );
    assert_eq!(
        su.src
            .psql("postgres", "SELECT count(*) FROM items")
            .unwrap(),
        "130"
    );
    // Owned by the cluster's os_user, mode 700.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    if os_user().is_some() {
        assert_ne!(meta.uid(), 0);
    }

    // A failing verification is reported as such.
    let mut p = pitr_params(&su.t, &archive, "pitr");
    p["verify_sql"] = json!(["SELECT count(*) = 5 FROM items"]);
    let err = run_step(&su.res, "pg_pitr", p).await.unwrap_err();
    assert!(
        err.message
            .contains("verify_sql: `SELECT count(*) = 5 FROM items` returned false"),
        "{}",
        err.message
    );
}

/// A source that keeps its configuration outside its data directory (as Debian and Ubuntu
/// do) makes base backups without postgresql.conf and pg_hba.conf: pg_pitr writes local-only
/// defaults, and the recovered cluster starts and answers a password login on localhost.
#[tokio::test(flavor = "multi_thread")]
async fn pitr_starts_from_a_backup_without_config_files() {
    let mut su = setup_with(|src| {
        src.psql("postgres", "ALTER ROLE postgres PASSWORD 'pitr-pw'")
            .unwrap();
        // The running server has read them; its base backup will not hold them.
        for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
            std::fs::remove_file(src.data_dir().join(f)).unwrap();
        }
    })
    .await;
    let dir = owned_temp_dir("drbot-pitr-");
    let data = dir.path().join("data");
    let _stop = StopOnDrop(data.clone());
    let port = free_port();
    let mut target = target_def(&data, port);
    target.url = Secret::new(format!(
        "postgres://postgres:pitr-pw@127.0.0.1:{port}/postgres"
    ));
    su.res.postgres.insert("pitr".into(), target);
    let archive = su.src.archive_dir().to_path_buf();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let out = run_step_with_progress(&su.res, "pg_pitr", pitr_params(&su.t, &archive, "pitr"), tx)
        .await
        .unwrap();
    assert_eq!(out.data["row_counts"]["items"], 100, "{:#}", out.data);
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no postgresql.conf, pg_hba.conf, pg_ident.conf")),
        "{lines:?}"
    );
    let hba = std::fs::read_to_string(data.join("pg_hba.conf")).unwrap();
    assert!(hba.contains("127.0.0.1/32 scram-sha-256"), "{hba}");
}

/// An archive whose `archive_command` gzips (`gzip < %p > <dir>/%f.gz`): `wal_archive_check`
/// accepts it, and `pg_pitr` recovers from it exactly as from plain segments.
#[tokio::test(flavor = "multi_thread")]
async fn pitr_replays_a_gzipped_wal_archive() {
    use std::io::Write as _;
    let mut su = setup().await;
    let gz_dir = owned_temp_dir("drbot-walgz-");
    let mut gzipped = 0;
    for entry in std::fs::read_dir(su.src.archive_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).unwrap();
        if name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            std::fs::write(
                gz_dir.path().join(format!("{name}.gz")),
                gz.finish().unwrap(),
            )
            .unwrap();
            gzipped += 1;
        } else {
            std::fs::write(gz_dir.path().join(&name), bytes).unwrap();
        }
    }
    assert!(gzipped >= 2, "only {gzipped} segments archived");
    let archive = gz_dir.path().to_path_buf();

    let out = run_step(
        &su.res,
        "wal_archive_check",
        json!({"archive": s(&archive), "max_age": "15m"}),
    )
    .await
    .unwrap();
    assert!(
        out.data["newest_segment"]
            .as_str()
            .unwrap()
            .ends_with(".gz"),
        "{:#}",
        out.data
    );

    let dir = owned_temp_dir("drbot-pitr-");
    let data = dir.path().join("data");
    let _stop = StopOnDrop(data.clone());
    let port = free_port();
    su.res
        .postgres
        .insert("pitr".into(), target_def(&data, port));
    let out = run_step(&su.res, "pg_pitr", pitr_params(&su.t, &archive, "pitr"))
        .await
        .unwrap();
    assert_eq!(out.data["row_counts"]["items"], 100, "{:#}", out.data);
    assert_eq!(
        psql(port, "SELECT count(*) FROM items WHERE phase = 'after T'"),
        "0"
    );
    assert_eq!(psql(port, "SELECT pg_is_in_recovery()"), "f");

    // A newest segment compressed in a form pg_pitr cannot read fails the check.
    std::fs::write(archive.join("FFFFFFFF0000000000000001.zst"), b"zstd").unwrap();
    let err = run_step(
        &su.res,
        "wal_archive_check",
        json!({"archive": s(&archive), "max_age": "15m"}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains(".zst, which pg_pitr cannot restore"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rerun_wipes_only_its_own_unfinished_attempt() {
    let mut su = setup().await;
    let dir = owned_temp_dir("drbot-pitr-");
    let data = dir.path().join("data");
    let _stop = StopOnDrop(data.clone());
    let port = free_port();
    su.res
        .postgres
        .insert("pitr".into(), target_def(&data, port));
    let archive = su.src.archive_dir().to_path_buf();

    // A target after the newest archived WAL: the server says so and stops; the attempt's
    // directory stays behind, unfinished.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = Utc::now().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let err = run_step(&su.res, "pg_pitr", pitr_params(&late, &archive, "pitr"))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("recovery ended before configured recovery target was reached"),
        "{}\n{}",
        err.message,
        err.log
    );
    assert!(data.join("drbot_pitr.json").is_file());
    assert!(data.join("PG_VERSION").is_file());

    // The re-run wipes that attempt and recovers.
    let out = run_step(&su.res, "pg_pitr", pitr_params(&su.t, &archive, "pitr"))
        .await
        .unwrap();
    assert_eq!(out.data["row_counts"]["items"], 100, "{:#}", out.data);
    assert_eq!(out.data["reused"], false);

    // Once finished, a re-run with the same backup and target only verifies: nothing wiped.
    psql(
        port,
        "INSERT INTO items VALUES (1000, 'written after PITR')",
    );
    let out = run_step(&su.res, "pg_pitr", pitr_params(&su.t, &archive, "pitr"))
        .await
        .unwrap();
    assert_eq!(out.data["reused"], true);
    assert_eq!(out.data["row_counts"]["items"], 101);
    assert!(
        out.summary.contains("already recovered to"),
        "{}",
        out.summary
    );

    // Another target into the finished directory is refused.
    let err = run_step(&su.res, "pg_pitr", pitr_params(&late, &archive, "pitr"))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("holds a finished recovery"),
        "{}",
        err.message
    );
    assert_eq!(psql(port, "SELECT count(*) FROM items"), "101");

    // A non-empty directory pg_pitr did not make is never touched.
    let foreign = owned_temp_dir("drbot-foreign-");
    std::fs::write(foreign.path().join("precious.txt"), "keep me").unwrap();
    su.res
        .postgres
        .insert("foreign".into(), target_def(foreign.path(), free_port()));
    let err = run_step(&su.res, "pg_pitr", pitr_params(&su.t, &archive, "foreign"))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("was not made by pg_pitr"),
        "{}",
        err.message
    );
    assert_eq!(
        std::fs::read_to_string(foreign.path().join("precious.txt")).unwrap(),
        "keep me"
    );
}
