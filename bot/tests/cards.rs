//! Chat cards in the store, on SQLite and on a real PostgreSQL: a card posted again (the old
//! one could not be edited) replaces the old one for edits, and the old one still belongs to
//! its run, so a click made on it is not taken for a foreign button.

mod common;

use common::*;
use drbot::{dispatch, reply::Reply};

async fn failover_run(env: &Env) -> i64 {
    match dispatch::handle(&env.app, &cli(&env.app, "bob"), "/dr failover us-west-2").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("request failed: {other:?}"),
    }
}

async fn post_card(env: &Env, platform: &str, channel: &str, id: &str, run: i64) {
    sqlx::query(
        "INSERT INTO messages (platform, channel, message_id, run_id, created_at) \
         VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(platform.to_string())
    .bind(channel.to_string())
    .bind(id.to_string())
    .bind(run)
    .execute(env.app.store.pool())
    .await
    .unwrap();
}

async fn replaced_cards_still_belong_to_their_run(backend: Backend) {
    let env = env(backend).await;
    let store = &env.app.store;
    let run = failover_run(&env).await;
    post_card(&env, "slack", "C1", "100.1", run).await;
    post_card(&env, "slack", "C2", "100.2", run).await;

    store
        .replace_card("slack", "C1", "100.1", "200.1")
        .await
        .unwrap();
    // The new card is the one edited from now on; the old one still leads to the run.
    let mut cards = store.cards_of("slack", run).await.unwrap();
    cards.sort();
    assert_eq!(
        cards,
        [("C1".into(), "200.1".into()), ("C2".into(), "100.2".into())]
    );
    for id in ["100.1", "200.1"] {
        assert_eq!(
            store.card_run("slack", "C1", id).await.unwrap(),
            Some(run),
            "{id}"
        );
    }
    // Only in its own channel and platform, and never for a message that is not a card.
    assert_eq!(store.card_run("slack", "C2", "100.1").await.unwrap(), None);
    assert_eq!(
        store.card_run("discord", "C1", "100.1").await.unwrap(),
        None
    );
    assert_eq!(store.card_run("slack", "C1", "999.9").await.unwrap(), None);

    // Repeating the replacement (a retry after a crash) changes nothing; replacing the
    // replacement keeps the whole chain.
    store
        .replace_card("slack", "C1", "100.1", "200.1")
        .await
        .unwrap();
    store
        .replace_card("slack", "C1", "200.1", "300.1")
        .await
        .unwrap();
    assert_eq!(
        store.cards_of("slack", run).await.unwrap().len(),
        2,
        "still one card per channel"
    );
    for id in ["100.1", "200.1", "300.1"] {
        assert_eq!(
            store.card_run("slack", "C1", id).await.unwrap(),
            Some(run),
            "{id}"
        );
    }
}

both_backends!(replaced_cards_still_belong_to_their_run);

/// A run whose cards could not be synced (chat API down, rate limited for long) is synced
/// again after a pause until it works, and then left alone: its card never freezes on an old
/// state just because no further change comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_card_sync_is_tried_again() {
    let env = env(Backend::Sqlite).await;
    let run = failover_run(&env).await;
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let seen = calls.clone();
    let task = tokio::spawn(drbot::cards::follow(
        env.app.clone(),
        stop.clone(),
        "test",
        |_: &drbot::app::App, _: &drbot::events::Event| {},
        move |_, id| {
            let seen = seen.clone();
            async move {
                let mut c = seen.lock().unwrap();
                c.push(id);
                // The first two syncs fail.
                c.len() > 2
            }
        },
    ));
    let count = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|id| **id == run)
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "synced {} time(s), never again after failing",
            count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(count(), 3, "a run is left alone once its sync worked");
    stop.cancel();
    task.await.unwrap();
}

/// A long deny reason (a person may write up to the grammar's 4 KB) keeps the Slack card's
/// sections within Slack's 3,000-character limit: else every edit of the card is refused
/// (`invalid_blocks`) and it keeps its Approve and Deny buttons.
#[tokio::test]
async fn a_long_deny_reason_keeps_the_slack_card_within_limits() {
    let env = env(Backend::Sqlite).await;
    let run = failover_run(&env).await;
    let reason = "<b>wrong</b> & region ".repeat(150);
    let text = format!("/dr deny {run} {reason}");
    let view = match dispatch::handle(&env.app, &cli(&env.app, "carol"), &text).await {
        Reply::Denied(v) => v,
        other => panic!("deny failed: {other:?}"),
    };
    let card = drbot::slack::text::card(&view);
    let mut seen_reason = false;
    for block in card.as_array().unwrap() {
        if let Some(t) = block["text"]["text"].as_str() {
            assert!(
                t.chars().count() <= 3_000,
                "{} chars: {t}",
                t.chars().count()
            );
            seen_reason |= t.contains("denied by") && t.contains("&lt;b&gt;wrong");
        }
    }
    assert!(seen_reason, "{card:#}");
}
