//! Backup storage against a local directory and a real moto S3 server, the same tests for
//! both: streaming round trip, "latest" by manifest time (not mtime, incomplete backups never
//! listed), SHA-256 and size mismatches detected, bad manifests and names refused, and an
//! unusable manifest that might be the newest backup stopping "latest".

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

/// Writes `bytes` as backup `name`'s manifest.json behind the store's back (as a broken
/// upload or a hand edit would).
async fn put_raw_manifest(def: &recovery::resources::BackupStoreDef, name: &str, bytes: &[u8]) {
    use recovery::resources::BackupStoreDef;
    match def {
        BackupStoreDef::Local { path } => {
            std::fs::create_dir_all(path.join(name)).unwrap();
            std::fs::write(path.join(name).join("manifest.json"), bytes).unwrap();
        }
        BackupStoreDef::S3 {
            bucket,
            prefix,
            endpoint,
            ..
        } => {
            let url = format!(
                "{}/{bucket}/{prefix}{name}/manifest.json",
                endpoint.as_deref().unwrap()
            );
            let status = reqwest::Client::new()
                .put(&url)
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_success(), "PUT {url}: {status}");
        }
    }
}

/// A manifest naming a file outside its backup (`../…`, as a hand edit or someone with write
/// access to the store could) is unusable: fetching it would write outside the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_naming_a_path_outside_its_backup_is_refused() {
    let (defs, _dir) = backup_support::stores();
    for (label, def) in defs {
        let store = backup::open(&def).await.expect(label);
        for (i, bad) in ["../../etc/cron.d/x", "a/b", "manifest.json", ""]
            .into_iter()
            .enumerate()
        {
            let name = format!("t{i}");
            let entry = store
                .put_file(&name, "dump.sql.gz", &b"12345"[..])
                .await
                .unwrap();
            let manifest = Manifest::new(
                &name,
                BackupKind::SqlGzip,
                Utc::now(),
                "src",
                vec![entry],
                BTreeMap::new(),
            );
            let mut m = serde_json::to_value(&manifest).unwrap();
            m["files"][0]["name"] = bad.into();
            put_raw_manifest(&def, &name, m.to_string().as_bytes()).await;
            let err = store.read_manifest(&name).await.unwrap_err().to_string();
            assert!(
                err.contains("is not a valid file name"),
                "{label} {bad}: {err}"
            );
        }
        // The same manifest with its real file name is read.
        let entry = store
            .put_file("ok", "dump.sql.gz", &b"12345"[..])
            .await
            .unwrap();
        let manifest = Manifest::new(
            "ok",
            BackupKind::SqlGzip,
            Utc::now(),
            "src",
            vec![entry],
            BTreeMap::new(),
        );
        let m = serde_json::to_value(&manifest).unwrap();
        put_raw_manifest(&def, "ok", m.to_string().as_bytes()).await;
        assert!(
            store.read_manifest("ok").await.unwrap().is_some(),
            "{label}"
        );
    }
}

/// A garbage manifest where the newest backup should be: `latest` fails naming it instead of
/// quietly choosing an older backup; a backup named explicitly still resolves, and an
/// unusable manifest that is certainly older, or of another kind, does not get in the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_refuses_to_skip_an_unusable_manifest_that_may_be_newer() {
    let (defs, _dir) = backup_support::stores();
    for (label, def) in defs {
        let store = backup::open(&def).await.expect(label);
        let older = put(
            &store,
            "20260110T120000Z",
            BackupKind::SqlGzip,
            10,
            &[("dump.sql.gz", b"a")],
        )
        .await;
        // Readable enough to tell it is older (missing fields make it unusable).
        put_raw_manifest(
            &def,
            "20260105T120000Z",
            br#"{"name": "20260105T120000Z", "kind": "sql_gzip", "created_at": "2026-01-05T12:00:00Z"}"#,
        )
        .await;
        // Newer, but readable enough to tell it is a base backup.
        put_raw_manifest(
            &def,
            "20260125T120000Z",
            br#"{"name": "20260125T120000Z", "kind": "base_tar", "created_at": "2026-01-25T12:00:00Z"}"#,
        )
        .await;
        assert_eq!(
            store
                .resolve("latest", Some(BackupKind::SqlGzip))
                .await
                .unwrap(),
            older,
            "{label}"
        );
        let err = store
            .resolve("latest", Some(BackupKind::BaseTar))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("20260125T120000Z/manifest.json: missing field `source`")
                && err.to_string().contains(
                    "Backup `20260125T120000Z` may be the latest one (no readable one qualifies)"
                ),
            "{label}: {err}"
        );

        // Garbage in the newest backup's place.
        put_raw_manifest(&def, "20260120T120000Z", b"\x00\x01 not a manifest").await;
        for kind in [None, Some(BackupKind::SqlGzip)] {
            let err = store.resolve("latest", kind).await.unwrap_err();
            assert!(!err.is_retryable(), "{label}: {err}");
            let msg = err.to_string();
            assert!(
                msg.starts_with("invalid manifest ")
                    && msg.contains("20260120T120000Z/manifest.json: ")
                    && msg.contains(
                        "Backup `20260120T120000Z` may be the latest one (the newest readable \
                         one is `20260110T120000Z`), so `latest` picks none: repair or remove \
                         that manifest, or name the backup to use"
                    ),
                "{label}: {msg}"
            );
        }
        // Both newer unusable manifests are named when both may be the one meant.
        let msg = store.resolve("latest", None).await.unwrap_err().to_string();
        assert!(
            msg.ends_with("(other unusable manifests: `20260125T120000Z`)"),
            "{label}: {msg}"
        );
        // Named explicitly, the readable backup still resolves; the listing shows the rest.
        assert_eq!(
            store.resolve("20260110T120000Z", None).await.unwrap(),
            older
        );
        assert_eq!(store.list().await.unwrap(), vec![older.clone()], "{label}");
        let listing = store.list_all().await.unwrap();
        let unusable: Vec<(&str, Option<BackupKind>)> = listing
            .unusable
            .iter()
            .map(|u| (u.name.as_str(), u.kind))
            .collect();
        assert_eq!(
            unusable,
            [
                ("20260105T120000Z", Some(BackupKind::SqlGzip)),
                ("20260120T120000Z", None),
                ("20260125T120000Z", Some(BackupKind::BaseTar)),
            ],
            "{label}"
        );
    }
}
