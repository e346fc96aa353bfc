//! Incident broadcasts to the Discord incident channel through the outbox, against the
//! loopback fake of the Discord REST API: one message per change, and a delivery made again
//! (a re-claim after a crash) does not post twice (Discord's enforced nonce).

mod common;

use std::{sync::Arc, time::Duration};

use drbot::{
    discord::broadcast::DiscordBroadcast, dispatch, notify::chat::ChatDeliverer, reply::Reply,
};
use drbot_e2e::fake_discord::FakeDiscord;
use notifier::outbox::{Deliverer, Delivery, Outcome};
use serde_json::json;

const CHANNEL: &str = "1200000000000000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_changes_reach_the_discord_channel_once() {
    let fake = FakeDiscord::start("test-bot-token");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let public = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    let text = common::config_text(&url, 1, "30m", 0, "m").replace(
        "[store]",
        &format!(
            "[discord]\npublic_key = \"{public}\"\nbot_token = \"test-bot-token\"\n\
             application_id = \"1160000000000000000\"\napi_base_url = \"{}\"\n\
             incident_channel = \"{CHANNEL}\"\n\n[store]",
            fake.base_url()
        ),
    );
    let store = drbot::store::Store::connect(&url, 4).await.unwrap();
    let app = drbot::app::App::new(common::settings(&text), store);
    let actor = common::cli(&app, "bob");
    for cmd in [
        "/dr incident open DB @everyone down",
        "/dr incident resolve Fixed",
    ] {
        let r = dispatch::handle(&app, &actor, cmd).await;
        let Reply::Incident(v) = r else {
            panic!("{r:?}")
        };
        assert_eq!(v.notified, ["discord"]);
    }
    let worker = drbot::notify::worker(&app, "w1");
    for _ in 0..100 {
        worker.run_once().await.unwrap();
        if app
            .store
            .outbox_rows(Some("delivered"), 10)
            .await
            .unwrap()
            .len()
            == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msgs = fake.messages(CHANNEL);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    let first = msgs[0].body["content"].as_str().unwrap();
    assert!(first.contains("DB @everyone down"), "{first}");
    // The text may hold mentions; none of them pings.
    assert_eq!(msgs[0].body["allowed_mentions"], json!({ "parse": [] }));
    assert!(msgs[1].body["content"].as_str().unwrap().contains("Fixed"));
    // The resolve also posted the report link, after the resolve message.
    let link = msgs[2].body["content"].as_str().unwrap();
    assert!(
        link.starts_with("**Incident 1 report** (DB @everyone down)"),
        "{link}"
    );
    assert!(link.contains("`drbot report incident:1`"), "{link}");
    assert_eq!(msgs[2].body["allowed_mentions"], json!({ "parse": [] }));

    // The same delivery again (its row re-claimed after a crash): no second message.
    let rows = app.store.outbox_rows(None, 10).await.unwrap();
    let row = rows.iter().find(|r| r.key.contains(":update:1")).unwrap();
    let deliverer = ChatDeliverer::new(Arc::new(DiscordBroadcast(app.clone())));
    assert_eq!(deliverer.channel(), "discord");
    let again = deliverer
        .deliver(&Delivery {
            id: row.id,
            key: row.key.clone(),
            channel: "discord".into(),
            payload: json!({ "text": first }),
            ordering_key: None,
            attempt: 2,
        })
        .await;
    assert!(matches!(again, Outcome::Delivered { .. }), "{again:?}");
    assert_eq!(fake.messages(CHANNEL).len(), 3);
}
