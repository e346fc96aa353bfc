//! Slack posts made outside the card loop: the notifier's broadcast (one post per key in the
//! incident channel, also when a post hits a rate limit, an ambiguous server error, an
//! unreadable answer or another process's slow post) and checklist messages (re-rendered in
//! order).

mod common;

use drbot::slack::sync::SlackBroadcast;
use drbot_e2e::fake_slack::{FakeSlack, Fault};
use notifier::chat::ChatBroadcast;

/// An app (a process) on the SQLite store in `dir`, posting to `slack`; two calls on one
/// `dir` are two processes sharing a store.
async fn app(slack: &FakeSlack, dir: &tempfile::TempDir) -> drbot::app::App {
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let text = common::config_text(&url, 1, "30m", 0, "m").replace(
        "[store]",
        &format!(
            "[slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-t\"\napi_base_url = \"{}\"\nincident_channel = \"CINC\"\n\n[store]",
            slack.base_url()
        ),
    );
    drbot::app::App::new(
        common::settings(&text),
        drbot::store::Store::connect(&url, 4).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_posts_are_idempotent() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let app = app(&slack, &dir).await;
    let b = SlackBroadcast(app);
    assert_eq!(b.platform(), "slack");
    slack.inject("chat.postMessage", Fault::ServerErrorAfterActing);
    let ts = b
        .post_status("incident-1:update-1", "DR activated: <us-west-2> serving")
        .await
        .unwrap();
    let again = b
        .post_status("incident-1:update-1", "DR activated: <us-west-2> serving")
        .await
        .unwrap();
    assert_eq!(ts, again);
    let msgs = slack.messages("CINC");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].blocks.to_string().contains("&lt;us-west-2&gt;"));
    b.post_status("incident-1:update-2", "monitoring")
        .await
        .unwrap();
    assert_eq!(slack.messages("CINC").len(), 2);
    // A 200 whose body cannot be read: the post went out, so it is found, not made again.
    slack.inject("chat.postMessage", Fault::GarbledAfterActing);
    b.post_status("incident-1:update-3", "resolved")
        .await
        .unwrap();
    let msgs = slack.messages("CINC");
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    // A long update (a person may type up to 4 KB) goes out whole, in sections Slack accepts.
    let long = "We are moving traffic <now> & checking. ".repeat(100);
    b.post_status("incident-1:update-4", &long).await.unwrap();
    let msgs = slack.messages("CINC");
    let blocks = msgs[3].blocks.as_array().unwrap();
    assert!(blocks.len() >= 2, "{blocks:?}");
    let joined: String = blocks
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(joined, drbot::slack::text::esc(&long));
}

/// A post that failed lets its claim go at once: the retry (the outbox's next attempt) posts
/// it, without waiting for the claim to lapse, and still only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_post_can_be_retried_at_once() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let b = SlackBroadcast(app(&slack, &dir).await);
    for _ in 0..5 {
        slack.inject("chat.postMessage", Fault::ServerError);
    }
    assert!(
        b.post_status("incident-1:update-1", "DR activated")
            .await
            .is_err()
    );
    assert!(slack.messages("CINC").is_empty());
    b.post_status("incident-1:update-1", "DR activated")
        .await
        .unwrap();
    assert_eq!(slack.messages("CINC").len(), 1);
}

/// A post slowed by Slack (rate limits, retries) is still in flight, not lost: a second
/// process asked for the same post waits for it instead of posting it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_post_is_not_made_twice_by_another_process() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let one = SlackBroadcast(app(&slack, &dir).await);
    let two = SlackBroadcast(app(&slack, &dir).await);
    slack.inject("chat.postMessage", Fault::Slow(5000));
    let first =
        tokio::spawn(async move { one.post_status("incident-1:update-1", "DR activated").await });
    // The first post has reached Slack (and is held there).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while slack.calls("chat.postMessage").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first post never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let e = two
        .post_status("incident-1:update-1", "DR activated")
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("another drbot process"), "{e:#}");
    let ts = first.await.unwrap().unwrap();
    assert_eq!(
        two.post_status("incident-1:update-1", "DR activated")
            .await
            .unwrap(),
        ts
    );
    let msgs = slack.messages("CINC");
    assert_eq!(msgs.len(), 1, "{msgs:?}");
}

/// alice's new `during-failover` checklist: her actor and the instance id.
async fn during_failover_checklist(app: &drbot::app::App) -> (drbot::actor::Actor, i64) {
    let alice = common::cli(app, "alice");
    match drbot::dispatch::handle(app, &alice, "/dr checklist during-failover").await {
        drbot::reply::Reply::Checklist(v) => (alice, v.instance.id),
        other => panic!("{other:?}"),
    }
}

/// Two ticks in quick succession, the first refresh slowed by Slack: the checklist message
/// ends showing both ticks, never the older render landing last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checklist_refreshes_never_go_backwards() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let app = app(&slack, &dir).await;
    let (alice, id) = during_failover_checklist(&app).await;
    drbot::slack::checklist::post(&app, id, "C1").await;
    assert_eq!(slack.messages("C1").len(), 1);
    app.store
        .toggle_tick(id, "stop-writes", &alice)
        .await
        .unwrap();
    slack.inject("chat.update", Fault::Slow(1500));
    let first = {
        let app = app.clone();
        tokio::spawn(async move { drbot::slack::checklist::refresh(&app, id).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.store
        .toggle_tick(id, "promote-db", &alice)
        .await
        .unwrap();
    drbot::slack::checklist::refresh(&app, id).await;
    first.await.unwrap();
    let view = app.store.checklist(id).await.unwrap().unwrap();
    let shown = &slack.messages("C1")[0];
    assert_eq!(shown.updates, 2);
    assert_eq!(shown.blocks, drbot::slack::text::checklist(&view));
}

/// A checklist posted in two channels, one of its messages since deleted: a tick still
/// updates the other one (before, the refresh stopped at the first message it could not
/// update).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_checklist_message_does_not_keep_the_others_stale() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let app = app(&slack, &dir).await;
    let (alice, id) = during_failover_checklist(&app).await;
    // The first channel's message is one Slack no longer has.
    app.store
        .record_checklist_message(
            "slack",
            &drbot::store::checklists::ChecklistMessage {
                channel: "C0".into(),
                message_id: "1600000000.000001".into(),
                instance: id,
                part: 0,
            },
        )
        .await
        .unwrap();
    drbot::slack::checklist::post(&app, id, "C1").await;
    app.store
        .toggle_tick(id, "stop-writes", &alice)
        .await
        .unwrap();
    drbot::slack::checklist::refresh(&app, id).await;
    let view = app.store.checklist(id).await.unwrap().unwrap();
    let shown = &slack.messages("C1")[0];
    assert_eq!(shown.updates, 1);
    assert_eq!(shown.blocks, drbot::slack::text::checklist(&view));
}

/// A run requested in a channel drbot cannot post in (a DM, a private channel without the
/// app): its card still goes to the incident channel at once, where approvers see it; the
/// failure is reported (before, the first channel's error ended the attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_drbot_is_not_in_does_not_keep_the_card_from_the_incident_channel() {
    let slack = FakeSlack::start("xoxb-t");
    let dir = tempfile::tempdir().unwrap();
    let app = app(&slack, &dir).await;
    slack.not_in_channel("DPRIVATE");
    let run =
        match drbot::dispatch::handle(&app, &common::cli(&app, "bob"), "/dr failover us-west-2")
            .await
        {
            drbot::reply::Reply::Requested(v) => v.run.id,
            other => panic!("{other:?}"),
        };
    assert!(!drbot::slack::sync::ensure_cards(&app, run, Some("DPRIVATE")).await);
    let cards = slack.messages("CINC");
    assert_eq!(cards.len(), 1, "{cards:?}");
    assert!(cards[0].text.contains("failover"), "{}", cards[0].text);
    assert!(slack.messages("DPRIVATE").is_empty());
}
