//! Backup storage against a local directory and a real moto S3 server, the same tests for
//! both: streaming round trip, "latest" by manifest time (not mtime, incomplete backups never
//! listed), SHA-256 and size mismatches detected, bad manifests and names refused.

mod backup_support;

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use recovery::backup::{self, BackupError, BackupKind, BackupStore, Manifest, ManifestFile};
use tokio::io::AsyncReadExt;

/// Deterministic, poorly compressible bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn put(
    store: &BackupStore,
    name: &str,
    kind: BackupKind,
    day: u32,
    files: &[(&str, &[u8])],
) -> Manifest {
    let mut entries = Vec::new();
    for (file, bytes) in files {
        entries.push(store.put_file(name, file, *bytes).await.expect("put_file"));
    }
    let manifest = Manifest::new(
        name,
        kind,
        Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap(),
        "127.0.0.1:5432/app",
        entries,
        BTreeMap::from([("projects".to_string(), 3)]),
    );
    store.put_manifest(&manifest).await.expect("put_manifest");
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_round_trip_on_both_stores() {
    let (defs, _dir) = backup_support::stores();
    let big = data(21 * 1024 * 1024 + 17, 1); // more than one multipart part
    let small = b"hello\n".to_vec();
    for (label, def) in defs {
        let store = backup::open(&def).await.expect(label);
        assert!(store.list().await.unwrap().is_empty(), "{label}");
        let m = put(
            &store,
            "b1",
            BackupKind::BaseTar,
            1,
            &[("base.tar.gz", &big), ("pg_wal.tar.gz", &small)],
        )
        .await;
        assert_eq!(m.size, big.len() as u64 + small.len() as u64);
        let file = m.file("base.tar.gz").unwrap();
        assert_eq!(file.size, big.len() as u64);
        assert_eq!(
            file.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&big))
        );

        let listed = store.list().await.unwrap();
        assert_eq!(listed, vec![m.clone()], "{label}");
        assert_eq!(store.resolve("b1", None).await.unwrap(), m);
        assert_eq!(
            store
                .resolve("latest", Some(BackupKind::BaseTar))
                .await
                .unwrap(),
            m
        );

        let dest_dir = tempfile::tempdir().unwrap();
        let dest = dest_dir.path().join("base.tar.gz");
        let n = store.fetch_to(&m, "base.tar.gz", &dest).await.unwrap();
        assert_eq!(n, big.len() as u64);
        assert!(
            std::fs::read(&dest).unwrap() == big,
            "{label}: fetched bytes differ"
        );

        let mut read = Vec::new();
        store
            .open_read(&m, "pg_wal.tar.gz")
            .await
            .unwrap()
            .read_to_end(&mut read)
            .await
            .unwrap();
        assert_eq!(read, small);

        let err = store.open_read(&m, "nope.tar").await.err().unwrap();
        assert!(err.to_string().contains("has no file `nope.tar`"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_chosen_by_manifest_time_never_by_mtime() {
    let (defs, _dir) = backup_support::stores();
    for (label, def) in defs {
        let store = backup::open(&def).await.expect(label);
        // Written first, but its manifest says it is the newest.
        let newest = put(
            &store,
            "zz-written-first",
            BackupKind::SqlGzip,
            20,
            &[("dump.sql.gz", b"a")],
        )
        .await;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // Written later (newer mtime), older manifest time.
        let older = put(
            &store,
            "aa-written-later",
            BackupKind::SqlGzip,
            10,
            &[("dump.sql.gz", b"b")],
        )
        .await;
        let custom = put(
            &store,
            "custom-one",
            BackupKind::Custom,
            5,
            &[("dump.pgdump", b"c")],
        )
        .await;
        // Newest of all by time and by mtime, but without a manifest: incomplete, never listed.
        store
            .put_file("half-written", "dump.sql.gz", &b"partial"[..])
            .await
            .unwrap();
        assert!(store.exists("half-written").await.unwrap());
        assert!(!store.exists("never-written").await.unwrap());

        let names: Vec<String> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            ["zz-written-first", "aa-written-later", "custom-one"],
            "{label}"
        );
        assert_eq!(
            store.resolve("latest", None).await.unwrap(),
            newest,
            "{label}"
        );
        assert_eq!(
            store
                .resolve("latest", Some(BackupKind::SqlGzip))
                .await
                .unwrap(),
            newest
        );
        assert_eq!(
            store
                .resolve("latest", Some(BackupKind::Custom))
                .await
                .unwrap(),
            custom
        );
        assert_eq!(
            store
                .resolve("aa-written-later", Some(BackupKind::SqlGzip))
                .await
                .unwrap(),
            older
        );

        let err = store
            .resolve("latest", Some(BackupKind::BaseTar))
            .await
            .unwrap_err();
        assert!(matches!(err, BackupError::NotFound(_)), "{err}");
        assert!(
            err.to_string().contains("no complete base_tar backup"),
            "{err}"
        );
        let err = store.resolve("half-written", None).await.unwrap_err();
        assert!(
            err.to_string().contains("not found (or incomplete)"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("zz-written-first, aa-written-later"),
            "{err}"
        );
        let err = store
            .resolve("custom-one", Some(BackupKind::SqlGzip))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "backup `custom-one` is a custom backup, not sql_gzip"
        );
        let err = store.resolve("../etc", None).await.unwrap_err();
        assert!(err.to_string().contains("not a valid backup name"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_and_size_mismatches_are_detected() {
    let (defs, _dir) = backup_support::stores();
    let original = data(3 * 1024 * 1024, 7);
    let mut tampered = original.clone();
    tampered[1_000_000] ^= 0x55;
    for (label, def) in defs {
        let store = backup::open(&def).await.expect(label);
        let m = put(
            &store,
            "b",
            BackupKind::SqlGzip,
            1,
            &[("dump.sql.gz", &original)],
        )
        .await;
        // Same size, one byte flipped, the old manifest kept.
        store
            .put_file("b", "dump.sql.gz", &tampered[..])
            .await
            .unwrap();

        let dest_dir = tempfile::tempdir().unwrap();
        let dest = dest_dir.path().join("dump.sql.gz");
        let err = store.fetch_to(&m, "dump.sql.gz", &dest).await.unwrap_err();
        assert!(
            matches!(err, BackupError::Checksum { .. }),
            "{label}: {err}"
        );
        assert!(
            err.to_string()
                .contains("checksum mismatch for b/dump.sql.gz"),
            "{err}"
        );
        assert!(
            !dest.exists(),
            "{label}: a bad download must not appear at dest"
        );
        assert_eq!(
            std::fs::read_dir(dest_dir.path()).unwrap().count(),
            0,
            "{label}: partial left"
        );

        let mut sink = Vec::new();
        let err = store
            .open_read(&m, "dump.sql.gz")
            .await
            .unwrap()
            .read_to_end(&mut sink)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("checksum mismatch"),
            "{label}: {err}"
        );

        // Shorter than the manifest says.
        store
            .put_file("b", "dump.sql.gz", &original[..1000])
            .await
            .unwrap();
        let err = store.fetch_to(&m, "dump.sql.gz", &dest).await.unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Size {
                    expected: 3145728,
                    actual: 1000,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_must_match_what_is_stored() {
    let (defs, _dir) = backup_support::stores();
    for (label, def) in defs {
        let store = backup::open(&def).await.expect(label);
        let entry = store
            .put_file("m", "dump.sql.gz", &b"12345"[..])
            .await
            .unwrap();
        let mut manifest = Manifest::new(
            "m",
            BackupKind::SqlGzip,
            Utc::now(),
            "src",
            vec![entry.clone()],
            BTreeMap::new(),
        );

        manifest.files = vec![ManifestFile {
            size: 6,
            ..entry.clone()
        }];
        let err = store.put_manifest(&manifest).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("the manifest says 6 bytes, the store holds 5"),
            "{label}: {err}"
        );

        manifest.files = vec![ManifestFile {
            name: "missing.gz".into(),
            ..entry.clone()
        }];
        let err = store.put_manifest(&manifest).await.unwrap_err();
        assert!(
            err.to_string().contains("missing.gz, which cannot be read"),
            "{label}: {err}"
        );

        manifest.files = vec![];
        assert!(store.put_manifest(&manifest).await.is_err());
        assert!(
            store.list().await.unwrap().is_empty(),
            "{label}: nothing complete yet"
        );

        let err = store
            .put_file("m", "manifest.json", &b"{}"[..])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("written by put_manifest"), "{err}");
        let err = store.put_file("m", "a/b", &b""[..]).await.unwrap_err();
        assert!(err.to_string().contains("not a valid file name"), "{err}");
    }
}
