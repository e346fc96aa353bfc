//! The durable delivery outbox on SQLite and on a real PostgreSQL: idempotent enqueue,
//! concurrent workers delivering every row exactly once, a crashed worker's rows re-delivered
//! after its lease (with the same key, its late finish ignored), ordering kept through
//! retries, permanent failures recorded and retried on request; a bulk deliverer gets each
//! round's rows at once and every outcome is recorded as for single deliveries.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use common::*;
use drbot::store::{
    Store,
    outbox::{enqueue, enqueue_many},
};
use notifier::outbox::{
    Deliverer, Delivery, Finish, NewDelivery, OutboxStore, Outcome,
    worker::{Worker, WorkerConfig},
};
use serde_json::json;

/// Records deliveries; fails keys on a script first.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<String>>,
    /// key → outcomes to give before delivering.
    script: Mutex<HashMap<String, Vec<Outcome>>>,
    delay: Duration,
    /// Takes rows in bulk (`deliver_many`), recording each call's size.
    bulk: Option<Mutex<Vec<usize>>>,
}

impl Recorder {
    /// One attempt of `d`, without the delay.
    fn attempt(&self, d: &Delivery) -> Outcome {
        if let Some(o) = self
            .script
            .lock()
            .unwrap()
            .get_mut(&d.key)
            .and_then(|v| (!v.is_empty()).then(|| v.remove(0)))
        {
            return o;
        }
        self.delivered.lock().unwrap().push(d.key.clone());
        Outcome::Delivered {
            receipt: Some(format!("r-{}", d.id)),
        }
    }
}

#[async_trait]
impl Deliverer for Recorder {
    fn channel(&self) -> &'static str {
        "test"
    }
    async fn deliver(&self, d: &Delivery) -> Outcome {
        tokio::time::sleep(self.delay).await;
        self.attempt(d)
    }

    fn deliver_many(
        &self,
        rows: Vec<Delivery>,
    ) -> Result<futures::stream::BoxStream<'static, (i64, Outcome)>, Vec<Delivery>> {
        let Some(calls) = &self.bulk else {
            return Err(rows);
        };
        calls.lock().unwrap().push(rows.len());
        // Outcomes come back in another order than the rows went in.
        let outcomes: Vec<_> = rows.iter().rev().map(|d| (d.id, self.attempt(d))).collect();
        Ok(Box::pin(futures::stream::iter(outcomes)))
    }
}

fn new(key: &str, ordering: Option<&str>) -> NewDelivery {
    NewDelivery {
        key: key.to_string(),
        channel: "test".into(),
        payload: json!({ "to": key }),
        ordering_key: ordering.map(str::to_string),
    }
}

async fn add(store: &Store, items: &[NewDelivery]) -> usize {
    let mut tx = store.write().await.unwrap();
    let mut n = 0;
    for d in items {
        n += enqueue(&mut tx, d).await.unwrap() as usize;
    }
    tx.commit().await.unwrap();
    n
}

fn worker(store: &Store, rec: Arc<Recorder>, owner: &str, lease_ms: u64) -> Worker {
    Worker::new(
        Arc::new(store.clone()),
        vec![rec],
        WorkerConfig {
            owner: owner.into(),
            lease: Duration::from_millis(lease_ms),
            batch: 25,
            concurrency: 8,
            max_attempts: 3,
            idle: Duration::from_millis(20),
        },
    )
}

async fn states(store: &Store) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in store.outbox_rows(None, 100_000).await.unwrap() {
        *m.entry(r.state).or_insert(0) += 1;
    }
    m
}

/// A send's progress counts its rows by key prefix through an index, never by reading every
/// row (outbox rows are kept): the plan of the query `outbox_progress` runs names an index.
/// The count itself matches exactly the prefix, and case matters.
async fn progress_by_prefix_uses_an_index(b: Backend) {
    use sqlx::Row;
    let env = env(b).await;
    let s = &env.app.store;
    let items: Vec<_> = (0..50)
        .map(|i| new(&format!("email:run:7:step:1:sub:{i}"), None))
        .chain((0..50).map(|i| new(&format!("email:run:70:step:1:sub:{i}"), None)))
        .chain([new("EMAIL:run:7:step:1:sub:99", None)])
        .collect();
    add(s, &items).await;
    let p = s.outbox_progress("email:run:7:step:1:sub:").await.unwrap();
    assert_eq!(p.total(), 50);
    let plan: Vec<String> = match b {
        Backend::Sqlite => sqlx::query(
            "EXPLAIN QUERY PLAN SELECT state, COUNT(*) AS n FROM outbox WHERE key GLOB $1 \
             GROUP BY state",
        )
        .bind("email:run:7:step:1:sub:*")
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect(),
        Backend::Postgres => {
            let mut c = s.pool().acquire().await.unwrap();
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *c)
                .await
                .unwrap();
            sqlx::query(
                "EXPLAIN SELECT state, COUNT(*) AS n FROM outbox \
                 WHERE key LIKE 'email:run:7:step:1:sub:%' GROUP BY state",
            )
            .fetch_all(&mut *c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect()
        }
    };
    let plan = plan.join("\n");
    assert!(
        plan.contains("INDEX") || plan.contains("outbox_key_prefix"),
        "{plan}"
    );
    assert!(
        !plan.contains("SCAN outbox\n") && !plan.ends_with("SCAN outbox"),
        "{plan}"
    );
}

async fn enqueue_is_idempotent_by_key(b: Backend) {
    let env = env(b).await;
    let s = &env.app.store;
    assert_eq!(add(s, &[new("a", None), new("b", None)]).await, 2);
    assert_eq!(add(s, &[new("a", None), new("c", None)]).await, 1);
    assert_eq!(s.outbox_rows(None, 10).await.unwrap().len(), 3);
}

async fn concurrent_workers_deliver_each_row_once(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    let items: Vec<_> = (0..400).map(|i| new(&format!("k{i}"), None)).collect();
    add(&s, &items).await;
    let rec = Arc::new(Recorder {
        delay: Duration::from_millis(2),
        ..Default::default()
    });
    let mut tasks = Vec::new();
    for w in 0..4 {
        let wk = worker(&s, rec.clone(), &format!("w{w}"), 30_000);
        tasks.push(tokio::spawn(async move {
            while wk.run_once().await.unwrap() > 0 {}
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut got = rec.delivered.lock().unwrap().clone();
    assert_eq!(got.len(), 400, "every row delivered, none twice");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 400, "no duplicates");
    assert_eq!(states(&s).await.get("delivered"), Some(&400));
}

async fn crashed_workers_rows_are_redelivered_after_the_lease(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    add(
        &s,
        &(0..10)
            .map(|i| new(&format!("k{i}"), None))
            .collect::<Vec<_>>(),
    )
    .await;
    // Worker A claims everything and dies before finishing.
    let claimed_at = std::time::Instant::now();
    let lease = Duration::from_secs(3);
    let claimed = s.claim("dead", lease, 100, &["test"]).await.unwrap();
    assert_eq!(claimed.len(), 10);
    assert!(claimed.iter().all(|d| d.attempt == 1));
    // While the lease holds, nobody else gets the rows.
    assert!(
        s.claim("b", Duration::from_secs(30), 100, &["test"])
            .await
            .unwrap()
            .is_empty()
    );
    let lapsed = claimed_at + lease + Duration::from_millis(100);
    tokio::time::sleep(lapsed.saturating_duration_since(std::time::Instant::now())).await;
    let rec = Arc::new(Recorder::default());
    let b_worker = worker(&s, rec.clone(), "b", 30_000);
    assert_eq!(b_worker.run_once().await.unwrap(), 10);
    assert_eq!(rec.delivered.lock().unwrap().len(), 10);
    // The dead owner's late finish changes nothing.
    let late: Vec<_> = claimed
        .iter()
        .map(|d| {
            (
                d.id,
                Finish::Failed {
                    error: "late".into(),
                },
            )
        })
        .collect();
    s.finish("dead", &late).await.unwrap();
    assert_eq!(states(&s).await.get("delivered"), Some(&10));
    let rows = s.outbox_rows(None, 100).await.unwrap();
    assert!(rows.iter().all(|r| r.attempts == 2), "{rows:?}");
}

async fn ordering_is_kept_through_retries(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    add(
        &s,
        &[
            new("update-1", Some("incident-7")),
            new("update-2", Some("incident-7")),
            new("other", None),
            new("update-3", Some("incident-7")),
        ],
    )
    .await;
    let rec = Arc::new(Recorder::default());
    rec.script.lock().unwrap().insert(
        "update-1".into(),
        vec![
            Outcome::Retry {
                error: "429".into(),
                after: Some(Duration::from_millis(50)),
            },
            Outcome::Retry {
                error: "connection refused".into(),
                after: Some(Duration::from_millis(50)),
            },
        ],
    );
    let w = worker(&s, rec.clone(), "w", 30_000);
    for _ in 0..200 {
        w.run_once().await.unwrap();
        if rec.delivered.lock().unwrap().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = rec.delivered.lock().unwrap().clone();
    let order: Vec<_> = got.iter().filter(|k| k.starts_with("update")).collect();
    assert_eq!(order, ["update-1", "update-2", "update-3"], "{got:?}");
    assert!(got.contains(&"other".to_string()));
}

async fn failures_are_recorded_and_retried_on_request(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    add(&s, &[new("bounced", None), new("flaky", None)]).await;
    let rec = Arc::new(Recorder::default());
    rec.script.lock().unwrap().insert(
        "bounced".into(),
        vec![Outcome::Failed {
            error: "550 no such user".into(),
        }],
    );
    let retry = || Outcome::Retry {
        error: "451 try later".into(),
        after: Some(Duration::ZERO),
    };
    rec.script
        .lock()
        .unwrap()
        .insert("flaky".into(), vec![retry(), retry(), retry()]);
    let w = worker(&s, rec.clone(), "w", 30_000);
    for _ in 0..10 {
        w.run_once().await.unwrap();
    }
    let failed = s.outbox_rows(Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let flaky = failed.iter().find(|r| r.key == "flaky").unwrap();
    assert!(
        flaky
            .last_error
            .as_deref()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{flaky:?}"
    );
    assert!(rec.delivered.lock().unwrap().is_empty());
    // `drbot outbox retry`: back to pending, then delivered (the scripts are used up).
    assert_eq!(s.outbox_retry(Some(flaky.id)).await.unwrap(), (1, 0));
    let attempts = |rows: Vec<drbot::store::outbox::OutboxRow>| {
        rows.iter().find(|r| r.key == "flaky").map(|r| r.attempts)
    };
    assert_eq!(
        attempts(s.outbox_rows(Some("pending"), 10).await.unwrap()),
        Some(1)
    );
    w.run_once().await.unwrap();
    assert_eq!(*rec.delivered.lock().unwrap(), ["flaky"]);
    // Delivered at attempt 2: a retried row is never taken for a first attempt.
    assert_eq!(attempts(s.outbox_rows(None, 10).await.unwrap()), Some(2));
    assert_eq!(s.outbox_retry(None).await.unwrap(), (1, 0));
    w.run_once().await.unwrap();
    assert_eq!(states(&s).await.get("delivered"), Some(&2));
    // An old update that failed for good after a newer one of its group went out stays
    // failed: retrying it would take the status back in time.
    add(
        &s,
        &[
            new("update-1", Some("inc-9")),
            new("update-2", Some("inc-9")),
        ],
    )
    .await;
    rec.script.lock().unwrap().insert(
        "update-1".into(),
        vec![Outcome::Failed {
            error: "422 invalid".into(),
        }],
    );
    for _ in 0..3 {
        w.run_once().await.unwrap();
    }
    assert_eq!(states(&s).await.get("failed"), Some(&1));
    assert_eq!(s.outbox_retry(None).await.unwrap(), (0, 1));
    let old = s.outbox_rows(Some("failed"), 10).await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].key, "update-1");
    assert_eq!(s.outbox_retry(Some(old[0].id)).await.unwrap(), (0, 1));
    // The same while the newer one is being sent: the old one, due at once, could land after.
    add(
        &s,
        &[
            new("update-3", Some("inc-10")),
            new("update-4", Some("inc-10")),
        ],
    )
    .await;
    rec.script.lock().unwrap().insert(
        "update-3".into(),
        vec![Outcome::Failed {
            error: "422 invalid".into(),
        }],
    );
    w.run_once().await.unwrap();
    let in_flight = s
        .claim("other", Duration::from_secs(30), 10, &["test"])
        .await
        .unwrap();
    let keys: Vec<_> = in_flight.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["update-4"]);
    assert_eq!(s.outbox_retry(None).await.unwrap(), (0, 2));
}

async fn bulk_rounds_are_delivered_together_and_recorded_each(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    let items: Vec<_> = (0..60).map(|i| new(&format!("k{i}"), None)).collect();
    add(&s, &items).await;
    add(&s, &[new("bounced", None), new("flaky", None)]).await;
    let rec = Arc::new(Recorder {
        bulk: Some(Mutex::default()),
        ..Default::default()
    });
    rec.script.lock().unwrap().insert(
        "bounced".into(),
        vec![Outcome::Failed {
            error: "550 no such user".into(),
        }],
    );
    rec.script.lock().unwrap().insert(
        "flaky".into(),
        vec![Outcome::Retry {
            error: "451 try later".into(),
            after: Some(Duration::ZERO),
        }],
    );
    let w = worker(&s, rec.clone(), "w", 30_000);
    let mut rounds = 0;
    while w.run_once().await.unwrap() > 0 {
        rounds += 1;
        assert!(rounds < 10);
    }
    // Rounds of the worker's batch (25), the retried row in a round of its own.
    let calls = rec.bulk.as_ref().unwrap().lock().unwrap().clone();
    assert_eq!(calls, [25, 25, 12, 1], "{calls:?}");
    let mut got = rec.delivered.lock().unwrap().clone();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 61, "60 rows and `flaky` once, none twice");
    assert_eq!(states(&s).await.get("delivered"), Some(&61));
    let failed = s.outbox_rows(Some("failed"), 10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].key, "bounced");
    let flaky = s.outbox_rows(Some("delivered"), 100).await.unwrap();
    let flaky = flaky.iter().find(|r| r.key == "flaky").unwrap();
    assert_eq!(flaky.attempts, 2, "{flaky:?}");
}

/// One `finish` call records each kind of outcome in its row, and leaves alone a row its
/// caller no longer holds.
async fn one_finish_records_each_kind(b: Backend) {
    let env = env(b).await;
    let s = &env.app.store;
    add(
        s,
        &[
            new("a", None),
            new("b", None),
            new("c", None),
            new("d", None),
        ],
    )
    .await;
    let claimed = s
        .claim("w1", Duration::from_secs(30), 10, &["test"])
        .await
        .unwrap();
    let id = |key: &str| claimed.iter().find(|d| d.key == key).unwrap().id;
    s.finish(
        "w1",
        &[
            (
                id("a"),
                Finish::Delivered {
                    receipt: Some("r-a".into()),
                },
            ),
            (
                id("b"),
                Finish::RetryAt {
                    at_ms: 123,
                    error: "451 later".into(),
                },
            ),
            (
                id("c"),
                Finish::Failed {
                    error: "550 no such user".into(),
                },
            ),
        ],
    )
    .await
    .unwrap();
    s.finish("w2", &[(id("d"), Finish::Delivered { receipt: None })])
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT key, state, next_at, last_error, receipt, finished_at, lease_owner \
         FROM outbox ORDER BY key",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    use sqlx::Row;
    type Got = (
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let got: Vec<Got> = rows
        .iter()
        .map(|r| {
            (
                r.get("key"),
                r.get("state"),
                r.get("next_at"),
                r.get("last_error"),
                r.get("receipt"),
                r.get("finished_at"),
                r.get("lease_owner"),
            )
        })
        .collect();
    let (a, b, c, d) = (&got[0], &got[1], &got[2], &got[3]);
    assert_eq!(
        (a.1.as_str(), a.4.as_deref(), a.6.as_deref()),
        ("delivered", Some("r-a"), None)
    );
    assert!(a.5.is_some());
    assert_eq!(
        (b.1.as_str(), b.2, b.3.as_deref(), b.5, b.6.as_deref()),
        ("pending", 123, Some("451 later"), None, None)
    );
    assert_eq!(
        (c.1.as_str(), c.3.as_deref()),
        ("failed", Some("550 no such user"))
    );
    assert!(c.5.is_some());
    assert_eq!(
        (d.1.as_str(), d.6.as_deref()),
        ("sending", Some("w1")),
        "not w2's to finish"
    );
}

/// `enqueue_many` adds rows in order (ids follow the input, past one statement's thousand),
/// keeps their payloads and ordering keys, and ignores keys already present.
async fn many_are_enqueued_in_order(b: Backend) {
    let env = env(b).await;
    let s = &env.app.store;
    add(s, &[new("k0007", None)]).await;
    let items: Vec<NewDelivery> = (0..2500)
        .map(|i| new(&format!("k{i:04}"), (i % 2 == 0).then_some("group")))
        .collect();
    let mut tx = s.write().await.unwrap();
    let added = enqueue_many(&mut tx, s.backend(), &items).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(added, 2499, "k0007 was there");
    let claimed = s
        .claim("w", Duration::from_secs(30), 5000, &["test"])
        .await
        .unwrap();
    // The ordering group lets only its first row out; the others come in id order.
    let keys: Vec<&str> = claimed.iter().map(|d| d.key.as_str()).collect();
    let mut expected = vec!["k0007", "k0000"];
    let odd: Vec<String> = (0..2500)
        .filter(|i| i % 2 == 1 && *i != 7)
        .map(|i| format!("k{i:04}"))
        .collect();
    expected.extend(odd.iter().map(String::as_str));
    assert_eq!(keys, expected);
    let first = &claimed[1];
    assert_eq!(first.payload, json!({ "to": "k0000" }));
    assert_eq!(first.ordering_key.as_deref(), Some("group"));
    assert_eq!(first.channel, "test");
}

/// Delivers one channel's rows, each after `delay`, recording the keys.
struct Lane {
    channel: &'static str,
    delay: Duration,
    delivered: Mutex<Vec<String>>,
}

#[async_trait]
impl Deliverer for Lane {
    fn channel(&self) -> &'static str {
        self.channel
    }
    async fn deliver(&self, d: &Delivery) -> Outcome {
        tokio::time::sleep(self.delay).await;
        self.delivered.lock().unwrap().push(d.key.clone());
        Outcome::Delivered { receipt: None }
    }
}

fn lane(channel: &'static str, delay_ms: u64) -> Arc<Lane> {
    Arc::new(Lane {
        channel,
        delay: Duration::from_millis(delay_ms),
        delivered: Mutex::new(Vec::new()),
    })
}

/// A worker delivering only `lane`'s channel, leasing as `owner`.
fn lane_worker(
    s: &Store,
    lane: &Arc<Lane>,
    owner: &str,
    lease: Duration,
    batch: usize,
    concurrency: usize,
) -> Worker {
    let cfg = WorkerConfig {
        owner: owner.into(),
        lease,
        batch,
        concurrency,
        max_attempts: 3,
        idle: Duration::from_millis(10),
    };
    Worker::new(Arc::new(s.clone()), vec![lane.clone()], cfg)
}

fn row(key: &str, channel: &str) -> NewDelivery {
    NewDelivery {
        key: key.to_string(),
        channel: channel.into(),
        payload: json!({}),
        ordering_key: None,
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two workers over one store are lanes: each claims only its deliverers' channels, so a row
/// of the quick channel enqueued during the slow channel's long round goes out at once, not
/// after the round (as `serve` runs customer email apart from status page and chat).
async fn a_slow_lane_does_not_hold_back_another(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    let mail: Vec<_> = (0..40).map(|i| row(&format!("m{i:02}"), "mail")).collect();
    add(&s, &mail).await;
    let (slow, quick) = (lane("mail", 50), lane("status", 0));
    let minute = Duration::from_secs(60);
    let slow_lane = lane_worker(&s, &slow, "w", minute, 40, 1);
    let quick_lane = lane_worker(&s, &quick, "w", minute, 64, 8);
    assert_eq!(slow_lane.channels(), ["mail"]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let tasks = [
        tokio::spawn(slow_lane.run(shutdown.clone())),
        tokio::spawn(quick_lane.run(shutdown.clone())),
    ];
    // The slow lane's round (40 rows, one at a time, 50 ms each: 2 s) has begun.
    until("the first mail", || {
        !slow.delivered.lock().unwrap().is_empty()
    })
    .await;
    add(&s, &[row("update-1", "status")]).await;
    until("the status update", || {
        !quick.delivered.lock().unwrap().is_empty()
    })
    .await;
    let mails_by_then = slow.delivered.lock().unwrap().len();
    assert!(
        mails_by_then < 40,
        "the update waited for the round ({mails_by_then} mails)"
    );
    until("every mail", || slow.delivered.lock().unwrap().len() == 40).await;
    shutdown.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*quick.delivered.lock().unwrap(), ["update-1"]);
    let mut mails = slow.delivered.lock().unwrap().clone();
    mails.sort();
    let expected: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    assert_eq!(mails, expected, "each mail once, by its own lane");
    assert_eq!(
        states(&s).await,
        HashMap::from([("delivered".to_string(), 41)])
    );
    // A claim takes only the channels it names.
    add(&s, &[row("later", "status")]).await;
    let none = s
        .claim("x", Duration::from_secs(30), 10, &["mail"])
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let one = s
        .claim("x", Duration::from_secs(30), 10, &["mail", "status"])
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].key, "later");
}

/// A round that outlasts its lease (a slow relay) keeps its rows: the worker extends the
/// lease while the round runs, so another process polling the same channel never re-claims
/// and delivers them a second time.
async fn a_long_round_keeps_its_leases(b: Backend) {
    let env = env(b).await;
    let s = env.app.store.clone();
    let mail: Vec<_> = (0..8).map(|i| row(&format!("m{i:02}"), "mail")).collect();
    add(&s, &mail).await;
    let (first, second) = (lane("mail", 750), lane("mail", 0));
    // Extended every third of it: a loaded machine's late commit still lands in time.
    let lease = Duration::from_secs(2);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let a = tokio::spawn(lane_worker(&s, &first, "a", lease, 8, 1).run(shutdown.clone()));
    // `a` claimed all 8 in its round (6 s, three leases long); `b` polls all along.
    until("a's first mail", || {
        !first.delivered.lock().unwrap().is_empty()
    })
    .await;
    let b = tokio::spawn(lane_worker(&s, &second, "b", lease, 8, 1).run(shutdown.clone()));
    until("every mail", || first.delivered.lock().unwrap().len() == 8).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    a.await.unwrap();
    b.await.unwrap();
    assert!(
        second.delivered.lock().unwrap().is_empty(),
        "re-claimed while leased: {:?}",
        second.delivered.lock().unwrap()
    );
    assert_eq!(
        states(&s).await,
        HashMap::from([("delivered".to_string(), 8)])
    );
}

both_backends!(
    progress_by_prefix_uses_an_index,
    a_long_round_keeps_its_leases,
    a_slow_lane_does_not_hold_back_another,
    many_are_enqueued_in_order,
    one_finish_records_each_kind,
    bulk_rounds_are_delivered_together_and_recorded_each,
    enqueue_is_idempotent_by_key,
    concurrent_workers_deliver_each_row_once,
    crashed_workers_rows_are_redelivered_after_the_lease,
    ordering_is_kept_through_retries,
    failures_are_recorded_and_retried_on_request,
);
