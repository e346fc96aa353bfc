//! The subscriber store on SQLite and on a real PostgreSQL: import outcomes (added, already
//! present whatever the case, unsubscribed left alone unless resubscribed, stored
//! unsubscribed), tokens (64 hex digits, distinct), unsubscribe by token (idempotent, unknown
//! and malformed tokens name no one), counts and the active list a mass send reads.

mod common;

use std::collections::BTreeSet;

use common::*;
use drbot::store::subscribers::{AddOutcome, NewSubscriber, Unsubscribed, token_shape_ok};

fn new(email: &str, name: Option<&str>) -> NewSubscriber {
    NewSubscriber {
        email: email.into(),
        name: name.map(str::to_string),
        unsubscribed_at: None,
    }
}

async fn import_reports_each_address(b: Backend) {
    let env = env(b).await;
    let s = &env.app.store;
    let out = s
        .import_subscribers(
            &[
                new("Ann@Example.org", Some("Ann")),
                new("bob@example.org", None),
                new("ann@example.ORG", Some("Other Ann")),
                NewSubscriber {
                    unsubscribed_at: Some(1_700_000_000_000),
                    ..new("gone@example.org", None)
                },
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            AddOutcome::Added,
            AddOutcome::Added,
            AddOutcome::AlreadyPresent,
            AddOutcome::AddedUnsubscribed
        ]
    );
    let rows = s.subscribers().await.unwrap();
    let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
    assert_eq!(
        emails,
        ["ann@example.org", "bob@example.org", "gone@example.org"]
    );
    // The first import's name is kept; a repeated address changes nothing.
    assert_eq!(rows[0].name.as_deref(), Some("Ann"));
    assert_eq!(rows[1].name, None);
    assert_eq!(rows[2].unsubscribed_at, Some(1_700_000_000_000));
    // Never unsubscribed before it was subscribed (an export would show that).
    assert!(rows[2].created_at <= 1_700_000_000_000, "{rows:?}");
    let tokens: BTreeSet<&str> = rows.iter().map(|r| r.token.as_str()).collect();
    assert_eq!(tokens.len(), 3, "every subscriber has its own token");
    assert!(rows.iter().all(|r| token_shape_ok(&r.token)), "{rows:?}");

    let c = s.subscriber_counts().await.unwrap();
    assert_eq!((c.active, c.unsubscribed), (2, 1));
}

async fn unsubscribe_is_idempotent_and_sticks(b: Backend) {
    let env = env(b).await;
    let s = &env.app.store;
    s.import_subscribers(
        &[new("ann@example.org", None), new("bob@example.org", None)],
        false,
    )
    .await
    .unwrap();
    let ann = s.subscribers().await.unwrap().remove(0);

    let first = match s.unsubscribe(&ann.token).await.unwrap() {
        Unsubscribed::Now(row) => row,
        other => panic!("expected Now, got {other:?}"),
    };
    assert_eq!(first.email, "ann@example.org");
    let at = first.unsubscribed_at.expect("unsubscribed_at set");
    match s.unsubscribe(&ann.token).await.unwrap() {
        Unsubscribed::Already(row) => assert_eq!(row.unsubscribed_at, Some(at)),
        other => panic!("expected Already, got {other:?}"),
    }
    // Unknown and malformed tokens name no one and change nothing.
    let unknown = "0".repeat(64);
    assert_eq!(
        s.unsubscribe(&unknown).await.unwrap(),
        Unsubscribed::Unknown
    );
    for bad in ["", "abc", "' OR 1=1 --", &ann.token.to_uppercase()] {
        assert_eq!(
            s.unsubscribe(bad).await.unwrap(),
            Unsubscribed::Unknown,
            "{bad}"
        );
        assert_eq!(s.subscriber_by_token(bad).await.unwrap(), None, "{bad}");
    }
    let c = s.subscriber_counts().await.unwrap();
    assert_eq!((c.active, c.unsubscribed), (1, 1));

    // The active list a mass send reads leaves Ann out.
    let active = s.active_subscribers().await.unwrap();
    assert_eq!(
        active.iter().map(|r| r.email.as_str()).collect::<Vec<_>>(),
        ["bob@example.org"]
    );

    // Importing her again does not resubscribe her, unless asked to.
    let out = s
        .import_subscribers(&[new("ANN@example.org", None)], false)
        .await
        .unwrap();
    assert_eq!(out, [AddOutcome::SkippedUnsubscribed]);
    assert_eq!(s.subscriber_counts().await.unwrap().active, 1);
    let out = s
        .import_subscribers(&[new("ann@example.org", None)], true)
        .await
        .unwrap();
    assert_eq!(out, [AddOutcome::Resubscribed]);
    let again = s.subscriber_by_token(&ann.token).await.unwrap().unwrap();
    assert_eq!(again.unsubscribed_at, None);
    assert_eq!(s.subscriber_counts().await.unwrap().active, 2);
    // `resubscribe` leaves subscribed addresses as they are.
    let out = s
        .import_subscribers(&[new("bob@example.org", None)], true)
        .await
        .unwrap();
    assert_eq!(out, [AddOutcome::AlreadyPresent]);
    // An opt-out in the input wins: it unsubscribes bob (at the input's time), and
    // `resubscribe` does not subscribe an address the input says unsubscribed.
    let opted_out = |email: &str| NewSubscriber {
        unsubscribed_at: Some(1_700_000_000_000),
        ..new(email, None)
    };
    let out = s
        .import_subscribers(&[opted_out("bob@example.org")], true)
        .await
        .unwrap();
    assert_eq!(out, [AddOutcome::Unsubscribed]);
    let rows = s.subscribers().await.unwrap();
    let bob = rows.iter().find(|r| r.email == "bob@example.org").unwrap();
    assert_eq!(bob.unsubscribed_at, Some(1_700_000_000_000));
    let out = s
        .import_subscribers(&[opted_out("bob@example.org")], true)
        .await
        .unwrap();
    assert_eq!(out, [AddOutcome::SkippedUnsubscribed]);
    assert_eq!(s.subscriber_counts().await.unwrap().active, 1);
}

async fn addresses_are_unique_in_the_database(b: Backend) {
    let env = env(b).await;
    let s = &env.app.store;
    s.import_subscribers(&[new("ann@example.org", None)], false)
        .await
        .unwrap();
    // The UNIQUE constraint backs the check made in Rust.
    let mut tx = s.write().await.unwrap();
    let dup = sqlx::query(
        "INSERT INTO subscribers (email, name, token, created_at) VALUES ($1, NULL, $2, 0)",
    )
    .bind("ann@example.org")
    .bind("a".repeat(64))
    .execute(&mut *tx)
    .await;
    assert!(dup.is_err(), "a second row for one address must be refused");
}

async fn sql(env: &Env, q: &str) {
    sqlx::query(sqlx::AssertSqlSafe(q.to_string()))
        .execute(env.app.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
}

/// A big import commits in batches (one transaction would hold the store's write lock for the
/// whole file): when a later batch fails, the earlier ones stay, and the error says how many
/// made it and that importing again adds the rest.
async fn a_big_import_commits_in_batches(b: Backend) {
    use drbot::store::subscribers::IMPORT_BATCH;
    let env = env(b).await;
    let s = &env.app.store;
    let total = IMPORT_BATCH * 2 + 10;
    let entries: Vec<NewSubscriber> = (0..total)
        .map(|i| new(&format!("s{i}@example.org"), None))
        .collect();
    // The store refuses one address of the second batch.
    let poison = format!("s{}@example.org", IMPORT_BATCH + 5);
    match s.backend() {
        drbot::store::Backend::Sqlite => {
            sql(
                &env,
                &format!(
                    "CREATE TRIGGER poison BEFORE INSERT ON subscribers \
                     WHEN NEW.email = '{poison}' BEGIN SELECT RAISE(ABORT, 'injected'); END"
                ),
            )
            .await
        }
        drbot::store::Backend::Postgres => {
            sql(
                &env,
                &format!(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF NEW.email = '{poison}' THEN RAISE EXCEPTION 'injected'; END IF; \
                     RETURN NEW; END $$"
                ),
            )
            .await;
            sql(
                &env,
                "CREATE TRIGGER poison BEFORE INSERT ON subscribers \
                 FOR EACH ROW EXECUTE FUNCTION poison()",
            )
            .await
        }
    }
    let e = s.import_subscribers(&entries, false).await.unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains(&format!(
            "{IMPORT_BATCH} of {total} addresses were imported"
        )),
        "{msg}"
    );
    assert_eq!(
        s.subscriber_counts().await.unwrap().active,
        IMPORT_BATCH as i64
    );
}

both_backends!(
    import_reports_each_address,
    unsubscribe_is_idempotent_and_sticks,
    addresses_are_unique_in_the_database,
    a_big_import_commits_in_batches
);

/// An unsubscribe with a guessed token (or a second click) only reads: it never waits for
/// SQLite's one writer, which approvals and run journals hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_never_wait_for_the_writer() {
    let env = env(Backend::Sqlite).await;
    let store = env.app.store.clone();
    let tx = store.write().await.unwrap();
    let guess = "ab".repeat(32);
    let r = tokio::time::timeout(std::time::Duration::from_secs(2), store.unsubscribe(&guess))
        .await
        .expect("an unknown token waited for the write lock")
        .unwrap();
    assert!(matches!(
        r,
        drbot::store::subscribers::Unsubscribed::Unknown
    ));
    drop(tx);
}
