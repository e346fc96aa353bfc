//! Shared by the promote and failback tests: `Resources` built from testkit clusters, running a
//! step kind through the registry, and a writer loop that records which inserts were
//! acknowledged.

#![allow(dead_code)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use recovery::{
    registry::Registry,
    resources::{PgClusterDef, Resources},
    secret::Secret,
    step::{ProgressSink, StepContext, StepError, StepOutput},
    testkit::pg::PgCluster,
};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// The `[postgres.<name>]` definition of a testkit cluster.
pub fn def(c: &PgCluster) -> PgClusterDef {
    PgClusterDef {
        url: Secret::new(c.url("postgres")),
        bin_dir: Some(PgCluster::bin_dir().unwrap()),
        data_dir: Some(c.data_dir().to_path_buf()),
        os_user: Some("postgres".into()),
    }
}

/// A registry whose PostgreSQL steps know `clusters` by name.
pub fn registry(clusters: &[(&str, &PgCluster)]) -> Registry {
    let mut res = Resources::default();
    for (name, c) in clusters {
        res.postgres.insert(name.to_string(), def(c));
    }
    Registry::with_resources(Arc::new(res))
}

/// Validates, builds and runs one step of type `kind`; progress lines are printed.
pub async fn run(
    reg: &Registry,
    kind: &str,
    params: serde_json::Value,
) -> Result<StepOutput, StepError> {
    let k = reg
        .get(kind)
        .unwrap_or_else(|| panic!("step type {kind} not registered"));
    k.validate(&params)
        .unwrap_or_else(|e| panic!("{kind} {params}: {e}"));
    let step = k.build(&params).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let label = kind.to_string();
    let printer = tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            println!("  [{label}] {l}");
        }
    });
    let ctx = StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::new(tx),
        cancel: CancellationToken::new(),
        ..Default::default()
    };
    let out = step.run(&ctx).await;
    drop(ctx);
    let _ = printer.await;
    match &out {
        Ok(o) => println!("{kind}: {}\n{}\n{}", o.summary, o.log, o.data),
        Err(e) => println!(
            "{kind} failed: {} (retryable {})\n{}",
            e.message, e.retryable, e.log
        ),
    }
    out
}

/// One acknowledged insert.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    /// Row id.
    pub id: i64,
    /// Client clock when the commit was acknowledged.
    pub at: DateTime<Utc>,
}

/// A task inserting rows with increasing ids into `w` until stopped or an insert fails.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<(Vec<Acked>, Option<String>)>,
}

/// Creates table `w` on `primary` (database postgres).
pub fn create_table(primary: &PgCluster) {
    primary
        .psql(
            "postgres",
            "CREATE TABLE w (id bigint PRIMARY KEY, at timestamptz NOT NULL, pad text)",
        )
        .unwrap();
}

impl Writer {
    /// Starts writing to `url`, ids from `first`.
    pub async fn start(url: String, first: i64) -> Writer {
        Writer::spawn(url, first, false).await
    }

    /// Like [`Writer::start`], but a client that will not be fenced: after an error it
    /// reconnects (until stopped) and turns `default_transaction_read_only` off in every session.
    /// The error it returns is the first one it met.
    pub async fn start_insistent(url: String, first: i64) -> Writer {
        Writer::spawn(url, first, true).await
    }

    async fn spawn(url: String, first: i64, insist: bool) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let mut conn = Some(PgConnection::connect(&url).await.unwrap());
        let handle = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut first_error = None;
            let mut id = first;
            while !s.load(Ordering::SeqCst) {
                let r = match conn.as_mut() {
                    Some(c) => sqlx::query(
                        "INSERT INTO w (id, at, pad) VALUES ($1, clock_timestamp(), repeat('x', 200))",
                    )
                    .bind(id)
                    .execute(c)
                    .await
                    .map(|_| true),
                    None => match PgConnection::connect(&url).await {
                        Ok(mut c) => {
                            let r = sqlx::query("SET default_transaction_read_only = off")
                                .execute(&mut c)
                                .await
                                .map(|_| false);
                            conn = Some(c);
                            r
                        }
                        Err(e) => Err(e),
                    },
                };
                match r {
                    Ok(true) => {
                        acked.push(Acked { id, at: Utc::now() });
                        id += 1;
                    }
                    Ok(false) => continue,
                    Err(e) if insist => {
                        first_error.get_or_insert(e.to_string());
                        conn = None;
                        // The failed insert may have committed: never reuse its id.
                        id += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(e) => return (acked, Some(e.to_string())),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, first_error)
        });
        Writer { stop, handle }
    }
    /// Waits until it has written at least `n` rows (or ended).
    pub async fn wait_for(&self, n: usize, url: &str) {
        let mut conn = PgConnection::connect(url).await.unwrap();
        for _ in 0..600 {
            let c: i64 = sqlx::query_scalar("SELECT count(*) FROM w")
                .fetch_one(&mut conn)
                .await
                .unwrap();
            if c as usize >= n || self.handle.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("writer did not reach {n} rows");
    }
    /// Stops it (or collects it after it failed): acknowledged rows and the error that ended it.
    pub async fn finish(self) -> (Vec<Acked>, Option<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap()
    }
}

/// The acknowledged ids that `c` does not have.
pub fn lost(acked: &[Acked], c: &PgCluster) -> Vec<i64> {
    let present = ids(c);
    acked
        .iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect()
}

/// Ids present in `w`.
pub fn ids(c: &PgCluster) -> BTreeSet<i64> {
    c.psql("postgres", "SELECT id FROM w ORDER BY id")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}
