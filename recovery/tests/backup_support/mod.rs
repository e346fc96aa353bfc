//! Shared by the backup test binaries: one moto S3 server per test binary, and the two kinds
//! of backup store (a local directory, a moto S3 bucket) the same tests run against.

#![allow(dead_code)]

use std::sync::{
    OnceLock,
    atomic::{AtomicU32, Ordering},
};

use recovery::{resources::BackupStoreDef, testkit::moto};

/// Bucket every S3 test uses (each test has its own prefix).
pub const BUCKET: &str = "drbot-tests";

static BUCKET_MADE: OnceLock<String> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(1);

/// Must be called first in every test: starts moto once per test binary through the testkit
/// (which also sets the fake AWS credentials) and creates the bucket. Returns its endpoint.
pub fn moto() -> String {
    BUCKET_MADE
        .get_or_init(|| {
            let endpoint = moto::endpoint();
            // Create the bucket (moto does not check signatures).
            let url = format!("{endpoint}/{BUCKET}");
            let status = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(async {
                        reqwest::Client::new()
                            .put(&url)
                            .send()
                            .await
                            .map(|r| r.status())
                    })
            })
            .join()
            .expect("bucket creation thread");
            match status {
                Ok(s) if s.is_success() => {}
                other => panic!("creating bucket {BUCKET} on moto failed: {other:?}"),
            }
            endpoint
        })
        .clone()
}

/// A store definition of each kind, each empty and private to the caller: `("local", …)` in a
/// fresh temp dir (kept alive by the returned guard) and `("s3", …)` under a fresh prefix.
pub fn stores() -> (Vec<(&'static str, BackupStoreDef)>, tempfile::TempDir) {
    let endpoint = moto();
    let dir = tempfile::tempdir().expect("temp dir");
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("t{}-{n}/backups/", std::process::id());
    (
        vec![
            (
                "local",
                BackupStoreDef::Local {
                    path: dir.path().join("backups"),
                },
            ),
            (
                "s3",
                BackupStoreDef::S3 {
                    bucket: BUCKET.into(),
                    prefix,
                    region: Some("us-east-1".into()),
                    endpoint: Some(endpoint),
                },
            ),
        ],
        dir,
    )
}
