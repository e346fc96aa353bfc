//! `pg_active_transactions` and `pg_terminate_backends` against a real PostgreSQL 15 cluster:
//! open transactions are listed; only the chosen sessions are terminated, never drbot's own
//! connection or server processes.

mod pitr_support;

use std::str::FromStr;

use pitr_support::{run_step, with_cluster};
use recovery::testkit::pg::PgCluster;
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, postgres::PgConnectOptions};

async fn session(pg: &PgCluster, app: &str) -> (PgConnection, i32) {
    let opts = PgConnectOptions::from_str(&pg.url("postgres"))
        .unwrap()
        .application_name(app);
    let mut c = PgConnection::connect_with(&opts).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (c, pid)
}

async fn alive(c: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(c)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_open_transactions_and_terminates_only_chosen_backends() {
    let pg = PgCluster::start_with(recovery::testkit::pg::PgOptions {
        archive: false,
        extra_conf: vec![],
    })
    .unwrap();
    pg.psql("postgres", "CREATE TABLE items (id int)").unwrap();
    let res = with_cluster("main", &pg);

    let (mut victim, victim_pid) = session(&pg, "victim").await;
    victim
        .execute("BEGIN; INSERT INTO items VALUES (1)")
        .await
        .unwrap();
    let (mut other_tx, other_tx_pid) = session(&pg, "other").await;
    other_tx.execute("BEGIN; SELECT 1").await.unwrap();
    let (mut idle, idle_pid) = session(&pg, "victim").await; // same app, but no transaction

    let out = run_step(&res, "pg_active_transactions", json!({"cluster": "main"}))
        .await
        .unwrap();
    let listed = out.data["transactions"].as_array().unwrap();
    let pids: Vec<i64> = listed.iter().map(|t| t["pid"].as_i64().unwrap()).collect();
    assert!(pids.contains(&(victim_pid as i64)), "{pids:?}");
    assert!(pids.contains(&(other_tx_pid as i64)), "{pids:?}");
    assert!(
        !pids.contains(&(idle_pid as i64)),
        "an idle session is listed: {pids:?}"
    );
    let v = listed.iter().find(|t| t["pid"] == victim_pid).unwrap();
    assert_eq!(v["state"], "idle in transaction");
    assert_eq!(v["application"], "victim");
    assert_eq!(v["user"], "postgres");
    assert!(
        v["query"].as_str().unwrap().contains("INSERT INTO items"),
        "{v}"
    );
    assert!(v["xact_start"].as_str().unwrap().ends_with('Z'));
    assert!(
        out.summary.contains("2 open transaction(s)"),
        "{}",
        out.summary
    );
    assert!(
        out.log.contains(&format!("pid {victim_pid} ")),
        "{}",
        out.log
    );

    // Filter: idle in transaction, application "victim": only the victim.
    let out = run_step(
        &res,
        "pg_terminate_backends",
        json!({"cluster": "main", "idle_in_transaction_longer_than": "0s", "application_name": "victim"}),
    )
    .await
    .unwrap();
    let terminated: Vec<i64> = out.data["terminated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(terminated, vec![victim_pid as i64], "{}", out.summary);
    assert!(!alive(&mut victim).await);
    assert!(alive(&mut other_tx).await);
    assert!(alive(&mut idle).await);
    // The victim's uncommitted row is gone with it.
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM items").unwrap(),
        "0"
    );

    // Explicit pids: a client backend is terminated; a server process, drbot's own kind of
    // connection and a pid that does not exist are skipped with reasons.
    let checkpointer = pg
        .psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
        )
        .unwrap();
    let out = run_step(
        &res,
        "pg_terminate_backends",
        json!({"cluster": "main", "pids": format!("{other_tx_pid}, {checkpointer} 999999")}),
    )
    .await
    .unwrap();
    assert_eq!(
        out.data["terminated"][0]["pid"], other_tx_pid,
        "{:#}",
        out.data
    );
    assert_eq!(out.data["terminated"].as_array().unwrap().len(), 1);
    let skipped = out.data["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a client backend (checkpointer)"),
        "{skipped:?}"
    );
    assert!(
        skipped[1]["reason"]
            .as_str()
            .unwrap()
            .contains("no such backend"),
        "{skipped:?}"
    );
    assert!(!alive(&mut other_tx).await);
    assert!(alive(&mut idle).await);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
        )
        .unwrap(),
        "1"
    );

    // Nothing left in a transaction.
    let out = run_step(&res, "pg_active_transactions", json!({"cluster": "main"}))
        .await
        .unwrap();
    assert_eq!(
        out.data["transactions"].as_array().unwrap().len(),
        0,
        "{}",
        out.summary
    );
}
