//! The audit log's hash chain on SQLite and PostgreSQL: append-only triggers, and
//! `drbot audit --verify` (the real binary) naming an edited, deleted or inserted row.

mod common;

use common::*;
use std::time::Duration;

use drbot::{
    dispatch,
    store::{Backend as StoreBackend, audit_writer::AuditWriter},
};

/// Builds a chain of audit rows by running a few commands.
async fn chain(b: Backend) -> Env {
    let env = env(b).await;
    for text in [
        "/dr status",
        "/dr runs",
        "/dr failover us-west-2",
        "/dr run 1",
        "/dr help",
    ] {
        dispatch::handle(&env.app, &cli(&env.app, "bob"), text).await;
        if text.contains("failover") {
            // A change is committed before its reply; read-only commands may still be queued.
            let rows = env.app.store.audit_rows(None, 100).await.unwrap();
            assert!(
                rows.iter()
                    .any(|r| r.detail.to_string().contains("failover"))
            );
        }
    }
    env.app.audit.flush().await.unwrap();
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 6);
    env
}

async fn sql(env: &Env, q: &str) {
    sqlx::query(sqlx::AssertSqlSafe(q.to_string()))
        .execute(env.app.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
}

/// An attacker with database access first removes the append-only triggers.
async fn drop_guards(env: &Env) {
    match env.app.store.backend() {
        StoreBackend::Sqlite => {
            sql(env, "DROP TRIGGER audit_log_no_update").await;
            sql(env, "DROP TRIGGER audit_log_no_delete").await;
            sql(env, "DROP TRIGGER audit_head_forward_only").await;
            sql(env, "DROP TRIGGER audit_head_no_delete").await;
        }
        StoreBackend::Postgres => {
            sql(env, "DROP TRIGGER audit_log_no_update ON audit_log").await;
            sql(env, "DROP TRIGGER audit_head_forward_only ON audit_head").await;
        }
    }
}

/// Runs the real `drbot audit --verify` against the env's store: (exit code, output).
fn verify_cli(env: &Env) -> (i32, String) {
    verify_cli_with(env, &[])
}

/// `verify_cli` with more arguments.
fn verify_cli_with(env: &Env, extra: &[&str]) -> (i32, String) {
    let cfg = env.dir.path().join("verify.toml");
    let text = config_text(
        &env.url,
        1,
        "30m",
        0,
        &env.dir.path().join("m").display().to_string(),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drbot"))
        .arg("--config")
        .arg(&cfg)
        .args(["audit", "--verify"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn append_only_triggers_refuse_changes(b: Backend) {
    let env = chain(b).await;
    let upd = sqlx::query("UPDATE audit_log SET detail = 'x' WHERE seq = 2")
        .execute(env.app.store.pool())
        .await;
    assert!(upd.is_err(), "UPDATE must be refused");
    let del = sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(env.app.store.pool())
        .await;
    assert!(del.is_err(), "DELETE must be refused");
    for q in [
        "UPDATE audit_head SET seq = 3",
        "UPDATE audit_head SET seq = seq",
        "DELETE FROM audit_head",
    ] {
        let r = sqlx::query(q).execute(env.app.store.pool()).await;
        assert!(r.is_err(), "{q} must be refused");
    }
    if env.app.store.backend() == StoreBackend::Postgres {
        for q in ["TRUNCATE audit_log", "TRUNCATE audit_head"] {
            let r = sqlx::query(q).execute(env.app.store.pool()).await;
            assert!(r.is_err(), "{q} must be refused");
        }
    }
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: 6 rows"), "{out}");
}

async fn edited_row_is_named(b: Backend) {
    let env = chain(b).await;
    drop_guards(&env).await;
    sql(&env, "UPDATE audit_log SET person = 'alice' WHERE seq = 3").await;
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 3: content does not match its hash (edited)"),
        "{out}"
    );
}

async fn deleted_row_is_named(b: Backend) {
    let env = chain(b).await;
    drop_guards(&env).await;
    sql(&env, "DELETE FROM audit_log WHERE seq = 4").await;
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 4..4 missing"), "{out}");
    assert!(
        out.contains("row 5: does not follow the row before it"),
        "{out}"
    );
}

async fn deleted_tail_is_detected(b: Backend) {
    let env = chain(b).await;
    drop_guards(&env).await;
    sql(&env, "DELETE FROM audit_log WHERE seq = 6").await;
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the newest row should be 6 but the log ends at 5"),
        "{out}"
    );
}

async fn inserted_row_is_named(b: Backend) {
    let env = chain(b).await;
    drop_guards(&env).await;
    // Make room in the middle and insert a forged row 3 chained to row 2.
    sql(&env, "UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3").await;
    sql(&env, "UPDATE audit_log SET seq = seq - 99 WHERE seq >= 103").await;
    sql(
        &env,
        "INSERT INTO audit_log (seq, at, person, account, platform, channel, action, run_id, detail, prev_hash, hash) \
         SELECT 3, at, 'alice', 'cli:alice', 'cli', NULL, 'approve', 1, '{}', hash, hash FROM audit_log WHERE seq = 2",
    )
    .await;
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 3: content does not match its hash"),
        "{out}"
    );
    assert!(
        out.contains("row 4: content does not match its hash"),
        "{out}"
    );
}

async fn concurrent_commands_are_all_audited_in_one_chain(b: Backend) {
    let env = env(b).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = env.app.clone();
        tasks.push(tokio::spawn(async move {
            let who = ["alice", "bob", "carol"][i % 3];
            dispatch::handle(&app, &cli(&app, who), "/dr status").await
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), drbot::reply::Reply::Status(_)));
    }
    env.app.audit.flush().await.unwrap();
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 200, "every command has its row");
}

fn status_row(env: &Env, who: &str) -> drbot::store::audit::Entry {
    drbot::store::audit::Entry {
        actor: cli(&env.app, who),
        action: "command".into(),
        run_id: None,
        detail: serde_json::json!({ "text": "/dr status" }),
    }
}

/// Queued rows wait (here: an hour) for company in their transaction; a row someone waits for
/// ends the wait at once and commits everything queued before it, in order, in one group.
async fn queued_rows_linger_until_someone_waits(b: Backend) {
    let env = env(b).await;
    let writer = AuditWriter::spawn_with(env.app.store.clone(), Duration::from_secs(3600));
    for who in ["alice", "bob", "carol"] {
        writer.queue(status_row(&env, who)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.app.store.audit_rows(None, 10).await.unwrap().is_empty(),
        "queued rows are not committed alone while they linger"
    );
    let seq = writer.append(status_row(&env, "bob")).await.unwrap();
    assert_eq!(
        seq, 4,
        "the awaited row comes after the three queued before it"
    );
    let rows = env.app.store.audit_rows(None, 10).await.unwrap();
    let people: Vec<_> = rows.iter().map(|r| r.person.clone().unwrap()).collect();
    assert_eq!(people, ["alice", "bob", "carol", "bob"]);
    assert!(
        rows.iter().all(|r| r.at == rows[0].at),
        "one transaction for the four: {rows:?}"
    );
    // A flush is waited for too.
    writer.queue(status_row(&env, "carol")).await.unwrap();
    writer.flush().await.unwrap();
    assert_eq!(env.app.store.audit_rows(None, 10).await.unwrap().len(), 5);
}

/// With nobody waiting, queued rows are committed when the linger ends.
async fn queued_rows_are_committed_after_the_linger(b: Backend) {
    let env = env(b).await;
    let writer = AuditWriter::spawn_with(env.app.store.clone(), Duration::from_millis(50));
    for who in ["alice", "bob"] {
        writer.queue(status_row(&env, who)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = env.app.store.audit_rows(None, 10).await.unwrap();
        if rows.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queued rows never committed: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Makes every audit insert fail (a real error from the store) until `audit_fail` is emptied.
async fn fail_audit_inserts(env: &Env) {
    sql(env, "CREATE TABLE audit_fail (x INTEGER)").await;
    sql(env, "INSERT INTO audit_fail VALUES (1)").await;
    match env.app.store.backend() {
        StoreBackend::Sqlite => {
            sql(
                env,
                "CREATE TRIGGER audit_fail_now BEFORE INSERT ON audit_log \
                 WHEN EXISTS (SELECT 1 FROM audit_fail) \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            )
            .await
        }
        StoreBackend::Postgres => {
            sql(
                env,
                "CREATE FUNCTION audit_fail_now() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF EXISTS (SELECT 1 FROM audit_fail) THEN \
                 RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$",
            )
            .await;
            sql(
                env,
                "CREATE TRIGGER audit_fail_now BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION audit_fail_now()",
            )
            .await
        }
    }
}

/// A group commit that fails loses none of its queued rows (nobody waits for them): the writer
/// commits them again, in order, once the store takes them. A caller who waits is told of the
/// failure, and the writer goes on afterwards.
async fn queued_rows_survive_a_failed_commit(b: Backend) {
    let env = env(b).await;
    fail_audit_inserts(&env).await;
    let writer = AuditWriter::spawn_with(env.app.store.clone(), Duration::from_secs(3600));
    for who in ["alice", "bob"] {
        writer.queue(status_row(&env, who)).await.unwrap();
    }
    let err = writer.append(status_row(&env, "carol")).await.unwrap_err();
    assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
    // Attempts at the two queued rows fail while the store refuses them; a caller who waits
    // meanwhile is told at once, never held behind them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        writer.append(status_row(&env, "carol")),
    )
    .await
    .expect("a waiting caller is answered while queued rows are retried");
    assert!(again.is_err());
    assert!(env.app.store.audit_rows(None, 10).await.unwrap().is_empty());

    sql(&env, "DELETE FROM audit_fail").await;
    writer.flush().await.unwrap();
    let rows = env.app.store.audit_rows(None, 10).await.unwrap();
    let people: Vec<_> = rows.iter().map(|r| r.person.clone().unwrap()).collect();
    assert_eq!(people, ["alice", "bob"], "the queued rows, in order");
    assert_eq!(writer.append(status_row(&env, "carol")).await.unwrap(), 3);
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows, 3);
}

/// The head `audit --verify` prints, as `SEQ:HASH`.
fn printed_head(out: &str) -> String {
    out.split(", head ")
        .nth(1)
        .unwrap_or_else(|| panic!("no head in {out}"))
        .trim()
        .to_string()
}

/// Someone who drops the guards can cut the log back and rewind its head so that the chain
/// alone looks intact; a head kept from an earlier verify shows it.
async fn a_rewound_head_is_caught_by_an_earlier_anchor(b: Backend) {
    let env = chain(b).await;
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 0, "{out}");
    let head = printed_head(&out);
    assert!(head.starts_with("6:") && head.len() == 66, "{head}");
    let third = env.app.store.audit_rows(None, 100).await.unwrap()[2]
        .hash
        .clone();
    drop_guards(&env).await;
    sql(&env, "DELETE FROM audit_log WHERE seq >= 5").await;
    sql(
        &env,
        "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4)",
    )
    .await;
    let (code, out) = verify_cli(&env);
    assert_eq!(code, 0, "the chain alone cannot tell: {out}");
    let (code, out) = verify_cli_with(&env, &["--expect-head", &head]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 6, recorded earlier, is missing (the log was cut back)"),
        "{out}"
    );
    let (code, out) = verify_cli_with(&env, &["--expect-head", &format!("3:{third}")]);
    assert_eq!(code, 0, "an older anchor still holds: {out}");
    let (code, out) = verify_cli_with(&env, &["--expect-head", &format!("3:{}", "0".repeat(64))]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 3: its hash is not the one recorded earlier"),
        "{out}"
    );
    let (code, _) = verify_cli_with(&env, &["--expect-head", "six:abc"]);
    assert_eq!(code, 2, "a malformed anchor is a usage error");
    // The head an empty log printed (`0:` and the genesis hash) holds for every later log; any
    // other row 0 is malformed.
    let genesis = format!("0:{}", drbot::store::audit::GENESIS);
    let (code, out) = verify_cli_with(&env, &["--expect-head", &genesis]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit log intact"), "{out}");
    let (code, _) = verify_cli_with(&env, &["--expect-head", &format!("0:{}", "1".repeat(64))]);
    assert_eq!(code, 2);
}

/// Verifying a store that a running drbot keeps appending to is no false alarm.
async fn verify_while_rows_are_appended(b: Backend) {
    let env = chain(b).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (app, stop) = (env.app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                dispatch::handle(&app, &cli(&app, "bob"), "/dr failover us-west-2 --dry-run").await;
                n += 1;
            }
            n
        })
    };
    for _ in 0..30 {
        let report = env.app.store.audit_verify().await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
}

both_backends!(
    a_rewound_head_is_caught_by_an_earlier_anchor,
    verify_while_rows_are_appended,
    queued_rows_linger_until_someone_waits,
    queued_rows_are_committed_after_the_linger,
    queued_rows_survive_a_failed_commit,
    concurrent_commands_are_all_audited_in_one_chain,
    append_only_triggers_refuse_changes,
    edited_row_is_named,
    deleted_row_is_named,
    deleted_tail_is_detected,
    inserted_row_is_named,
);

/// On SQLite every commit reaches the disk before it returns (`synchronous = FULL`): a power
/// loss never forgets an audit row or a step that started.
#[tokio::test]
async fn sqlite_commits_are_synced() {
    let env = env(Backend::Sqlite).await;
    for _ in 0..4 {
        let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(env.app.store.pool())
            .await
            .unwrap();
        assert_eq!(mode, 2, "FULL");
    }
}

/// A TCP proxy to PostgreSQL that, once armed, lets the next `COMMIT` through and then cuts the
/// connection before the server's answer reaches the client: a commit that took effect but
/// reported an error (as a network failure at that moment does). With `outage_ms` set, it then
/// refuses every connection for that long (the store away).
struct CommitCutter {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    outage_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Until when the proxy refuses connections.
type Away = std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>;

impl CommitCutter {
    async fn start(upstream: String) -> CommitCutter {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64, AtomicUsize},
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let outage_ms = Arc::new(AtomicU64::new(0));
        let away: Away = Default::default();
        let (a, c) = (armed.clone(), cuts.clone());
        let (o, w) = (outage_ms.clone(), away.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if w.lock()
                    .unwrap()
                    .is_some_and(|t| std::time::Instant::now() < t)
                {
                    drop(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(proxy(
                    client,
                    server,
                    a.clone(),
                    c.clone(),
                    o.clone(),
                    w.clone(),
                ));
            }
        });
        CommitCutter {
            port,
            armed,
            cuts,
            outage_ms,
        }
    }
}

/// Pipes one connection, reading the client's side as PostgreSQL messages.
async fn proxy(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    outage_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    away: Away,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
    });
    let mut startup = true;
    let mut cutting = false;
    loop {
        // Startup packets have no type byte; the rest do.
        let mut kind = [0u8; 1];
        if !startup && from_client.read_exact(&mut kind).await.is_err() {
            break;
        }
        let mut len = [0u8; 4];
        if from_client.read_exact(&mut len).await.is_err() {
            break;
        }
        let n = u32::from_be_bytes(len).saturating_sub(4) as usize;
        let mut body = vec![0u8; n];
        if from_client.read_exact(&mut body).await.is_err() {
            break;
        }
        let mut msg = Vec::with_capacity(n + 5);
        if !startup {
            msg.push(kind[0]);
        }
        msg.extend_from_slice(&len);
        msg.extend_from_slice(&body);
        if !startup
            && matches!(kind[0], b'Q' | b'P')
            && body.windows(6).any(|w| w == b"COMMIT")
            && armed.swap(false, Ordering::SeqCst)
        {
            // From here on nothing the server says reaches the client (the statements before
            // were all answered: a client sends COMMIT after their results).
            cutting = true;
            answers.abort();
            cuts.fetch_add(1, Ordering::SeqCst);
            let outage = Duration::from_millis(outage_ms.load(Ordering::SeqCst));
            if !outage.is_zero() {
                *away.lock().unwrap() = Some(std::time::Instant::now() + outage);
            }
        }
        // While the store is away, every live connection dies at its next message too.
        let gone = away
            .lock()
            .unwrap()
            .is_some_and(|t| std::time::Instant::now() < t);
        if gone && !cutting {
            break;
        }
        if to_server.write_all(&msg).await.is_err() {
            break;
        }
        if startup {
            // The protocol-3.0 startup message ends the untyped part (an SSLRequest does not).
            startup = body.get(..4) != Some(&196_608u32.to_be_bytes()[..]);
            continue;
        }
        // Simple query, or the Sync that runs an extended one: the server commits; the
        // connection is cut before its answer.
        if cutting && matches!(kind[0], b'Q' | b'S') {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
    }
    answers.abort();
}

/// A group commit whose answer is lost although it took effect is seen to have landed: its
/// awaited row's caller is told so, and its queued rows are not committed a second time (which
/// would have put them in the log twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_answer_is_lost_is_not_appended_twice() {
    let env = env(Backend::Postgres).await;
    let (head, tail) = env.url.rsplit_once('@').unwrap();
    let (hostport, db) = tail.split_once('/').unwrap();
    let cutter = CommitCutter::start(hostport.to_string()).await;
    let url = format!("{head}@127.0.0.1:{}/{db}", cutter.port);
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let writer = AuditWriter::spawn_with(store.clone(), Duration::from_secs(3600));
    writer.append(status_row(&env, "alice")).await.unwrap();
    cutter
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for who in ["bob", "carol"] {
        writer.queue(status_row(&env, who)).await.unwrap();
    }
    let seq = writer
        .append(status_row(&env, "dave"))
        .await
        .expect("the commit took effect");
    assert_eq!(seq, 4);
    assert_eq!(cutter.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    writer.flush().await.unwrap();
    let rows = env.app.store.audit_rows(None, 100).await.unwrap();
    let people: Vec<_> = rows.iter().map(|r| r.person.clone().unwrap()).collect();
    assert_eq!(people, ["alice", "bob", "carol", "dave"], "each row once");
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// The same, when the store then stays away longer than the writer's own look (about a
/// second): the waiting caller is told the commit failed, and the queued rows are held until
/// the store can say whether it landed. It did, so they are not committed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_commit_answer_then_an_outage_does_not_append_twice() {
    let env = env(Backend::Postgres).await;
    let (head, tail) = env.url.rsplit_once('@').unwrap();
    let (hostport, db) = tail.split_once('/').unwrap();
    let cutter = CommitCutter::start(hostport.to_string()).await;
    let url = format!("{head}@127.0.0.1:{}/{db}", cutter.port);
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let writer = AuditWriter::spawn_with(store.clone(), Duration::from_secs(3600));
    writer.append(status_row(&env, "alice")).await.unwrap();
    cutter
        .outage_ms
        .store(3_000, std::sync::atomic::Ordering::SeqCst);
    cutter
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for who in ["bob", "carol"] {
        writer.queue(status_row(&env, who)).await.unwrap();
    }
    let told = writer.append(status_row(&env, "dave")).await;
    assert!(told.is_err(), "nobody could tell the caller: {told:?}");
    assert_eq!(cutter.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    writer.flush().await.unwrap();
    // And the writer goes on.
    writer.append(status_row(&env, "alice")).await.unwrap();
    let rows = env.app.store.audit_rows(None, 100).await.unwrap();
    let people: Vec<_> = rows.iter().map(|r| r.person.clone().unwrap()).collect();
    assert_eq!(
        people,
        ["alice", "bob", "carol", "dave", "alice"],
        "each row once"
    );
    let report = env.app.store.audit_verify().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
