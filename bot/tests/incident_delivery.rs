//! Incident changes delivered by the outbox worker to a loopback fake of Statuspage (the
//! documented v1 API) on both backends: create, updates and resolve arrive in order with the
//! templated text, the Statuspage id is recorded, a 429 with `Retry-After` and refused
//! connections lose nothing, and a create retried after an ambiguous failure adopts the
//! incident Statuspage already has instead of creating a second one; an update whose answer
//! was lost is not posted twice.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use drbot::{dispatch, notify::statuspage::StatuspageDeliverer, reply::Reply};
use drbot_e2e::fake_statuspage::FakeStatuspage;
use notifier::outbox::{Deliverer, Delivery, Outcome};
use recovery::secret::Secret;
use serde_json::json;

async fn env_with_fake(b: Backend, fake: &FakeStatuspage) -> Env {
    fake.add_component("cmp-api", "API");
    let mut env = env(b).await;
    let text = config_text(&env.url, 1, "30m", 0, "m").replace(
        "[store]",
        &format!(
            "[statuspage]\nbase_url = \"{}\"\npage_id = \"p1\"\napi_key = \"sp-key\"\ntimeout = \"2s\"\n\n\
             [[status_page.components]]\nname = \"API\"\nstatuspage_id = \"cmp-api\"\n\n[store]",
            fake.base_url()
        ),
    );
    env.app = reconfigure(&env, &text);
    env
}

async fn say(env: &Env, person: &str, text: &str) {
    let r = dispatch::handle(&env.app, &cli(&env.app, person), text).await;
    assert!(matches!(r, Reply::Incident(_)), "{text}: {r:?}");
}

/// Runs worker rounds until no row is pending or sending (or panics after `secs`).
async fn drain(env: &Env, secs: u64) {
    let worker = drbot::notify::worker(&env.app, "test-worker");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        worker.run_once().await.unwrap();
        let left = env
            .app
            .store
            .outbox_rows(Some("pending"), 100)
            .await
            .unwrap()
            .len()
            + env
                .app
                .store
                .outbox_rows(Some("sending"), 100)
                .await
                .unwrap()
                .len();
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox not drained: {:?}",
            env.app.store.outbox_rows(None, 100).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delivered_in_order(b: Backend) {
    let fake = FakeStatuspage::start("p1", "sp-key").await;
    let env = env_with_fake(b, &fake).await;
    say(&env, "bob", "/dr incident open API degraded").await;
    // The create meets a 429 first.
    fake.answer_next(1, 429, Some(1));
    drain(&env, 20).await;
    // A major incident puts the mapped component in partial outage on Statuspage too.
    assert_eq!(
        fake.component_status("cmp-api").as_deref(),
        Some("partial_outage")
    );
    say(
        &env,
        "alice",
        "/dr incident update --status identified Replica lag",
    )
    .await;
    say(
        &env,
        "alice",
        "/dr incident update --status monitoring Failed over",
    )
    .await;
    say(&env, "bob", "/dr incident resolve All clear").await;
    // Statuspage is unreachable for a while: the updates wait, in order.
    let back = fake.refuse_for(Duration::from_secs(2)).await;
    drain(&env, 60).await;
    back.await.unwrap();

    let incidents = fake.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let inc = &incidents[0];
    assert_eq!(inc["name"], "API degraded");
    assert_eq!(inc["status"], "resolved");
    assert_eq!(inc["impact_override"], "major");
    assert_eq!(inc["metadata"]["drbot"]["key"], "drbot:incident:1");
    let statuses: Vec<&str> = inc["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["investigating", "identified", "monitoring", "resolved"]
    );
    let bodies: Vec<&str> = inc["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["body"].as_str().unwrap())
        .collect();
    assert!(
        bodies[0].contains("We are investigating: API degraded."),
        "{bodies:?}"
    );
    assert!(bodies[1].contains("Replica lag"), "{bodies:?}");
    assert!(bodies[3].contains("All clear"), "{bodies:?}");
    // Every request carried the key; the 429 was retried.
    assert_eq!(
        fake.component_status("cmp-api").as_deref(),
        Some("operational")
    );
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| r.authorized));
    assert_eq!(reqs.iter().filter(|r| r.status == 429).count(), 1);
    let row = env.app.store.incident(1).await.unwrap().unwrap();
    assert_eq!(row.statuspage_incident_id.as_deref(), inc["id"].as_str());
    assert!(
        env.app
            .store
            .outbox_rows(Some("failed"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A create whose first attempt may have gone through is not repeated: the retry finds the
/// incident by drbot's key and records its id.
async fn retried_create_adopts_existing(b: Backend) {
    let fake = FakeStatuspage::start("p1", "sp-key").await;
    let env = env_with_fake(b, &fake).await;
    say(&env, "bob", "/dr incident open API degraded").await;
    let client = notifier::statuspage::StatuspageClient::new(
        &fake.base_url(),
        "p1",
        Secret::new("sp-key"),
        Duration::from_secs(2),
    )
    .unwrap();
    // What the lost first attempt did.
    let existing = client
        .create_incident(&notifier::statuspage::NewIncident {
            name: "Service Degradation - DR Activated".into(),
            status: notifier::statuspage::IncidentStatus::Investigating,
            impact: None,
            body: "first attempt".into(),
            components: vec![],
            deliver_notifications: false,
            key: Some("drbot:incident:1".into()),
        })
        .await
        .unwrap();
    let deliverer = StatuspageDeliverer::new(client, env.app.store.clone());
    let payload = json!({
        "op": "create", "incident": 1, "key": "drbot:incident:1", "name": "n", "body": "b",
        "status": "investigating", "impact": "major",
    });
    let d = Delivery {
        id: 1,
        key: "statuspage:incident:1:update:1".into(),
        channel: "statuspage".into(),
        payload,
        ordering_key: None,
        attempt: 2,
    };
    assert_eq!(
        deliverer.deliver(&d).await,
        Outcome::Delivered {
            receipt: Some(existing.id.clone())
        }
    );
    assert_eq!(fake.incidents().len(), 1);
    let row = env.app.store.incident(1).await.unwrap().unwrap();
    assert_eq!(row.statuspage_incident_id, Some(existing.id));
    // An update for an incident without a Statuspage id yet waits for the create.
    let deliverer = Arc::new(deliverer);
    say(&env, "bob", "/dr incident resolve").await;
    say(&env, "bob", "/dr incident open Second").await;
    let d = Delivery {
        payload: json!({
            "op": "update", "incident": 2, "key": "drbot:incident:2", "name": "n", "body": "b",
            "status": "identified", "impact": "major",
        }),
        attempt: 1,
        ..d
    };
    assert!(matches!(
        deliverer.deliver(&d).await,
        Outcome::Retry { after: Some(_), .. }
    ));
}

/// A create Statuspage took but whose answer drbot cannot read (cut short, or rewritten by a
/// proxy) is retried as ambiguous: the retry finds the incident by drbot's key and records
/// its id, so there is one incident and the updates after it reach it.
async fn a_create_with_an_unreadable_answer_is_adopted(b: Backend) {
    let fake = FakeStatuspage::start("p1", "sp-key").await;
    let env = env_with_fake(b, &fake).await;
    fake.garble_next_answer();
    say(&env, "bob", "/dr incident open API degraded").await;
    drain(&env, 30).await;
    assert_eq!(fake.incidents().len(), 1, "{:?}", fake.incidents());
    let id = fake.incidents()[0]["id"].as_str().unwrap().to_string();
    let row = env.app.store.incident(1).await.unwrap().unwrap();
    assert_eq!(row.statuspage_incident_id.as_deref(), Some(id.as_str()));
    say(&env, "bob", "/dr incident resolve").await;
    drain(&env, 30).await;
    assert_eq!(fake.incidents().len(), 1);
    assert_eq!(fake.incidents()[0]["status"], "resolved");
}

/// An update Statuspage took but whose answer was lost (a 502 from a proxy) is not posted,
/// and notified, a second time: the retry reads the incident, finds the update's key in its
/// metadata, and records the row delivered. The next update goes out as usual.
async fn retried_update_is_not_posted_twice(b: Backend) {
    let fake = FakeStatuspage::start("p1", "sp-key").await;
    let env = env_with_fake(b, &fake).await;
    say(&env, "bob", "/dr incident open API degraded").await;
    drain(&env, 20).await;
    say(
        &env,
        "alice",
        "/dr incident update --status identified Replica lag",
    )
    .await;
    fake.lose_next_answer();
    drain(&env, 30).await;
    let count = |needle: &str| {
        fake.incidents()[0]["incident_updates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["body"].as_str().unwrap().contains(needle))
            .count()
    };
    assert_eq!(count("Replica lag"), 1, "{:?}", fake.incidents());
    let inc = fake.incidents()[0].clone();
    assert_eq!(inc["status"], "identified");
    assert_eq!(inc["metadata"]["drbot"]["key"], "drbot:incident:1");
    let update_key = inc["metadata"]["drbot"]["update"]
        .as_str()
        .unwrap()
        .to_string();
    let reqs = fake.requests();
    let patches = reqs
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/incidents/"));
    assert_eq!(patches.count(), 1, "one PATCH, its answer lost: {reqs:?}");
    let gets = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(inc["id"].as_str().unwrap()));
    assert_eq!(gets.count(), 1, "the retry read the incident: {reqs:?}");
    // A later update is not mistaken for the one already taken.
    say(
        &env,
        "alice",
        "/dr incident update --status monitoring Failed over",
    )
    .await;
    drain(&env, 20).await;
    assert_eq!(count("Failed over"), 1);
    let inc = fake.incidents()[0].clone();
    assert_eq!(inc["status"], "monitoring");
    assert_ne!(inc["metadata"]["drbot"]["update"], update_key.as_str());
    let rows = env.app.store.outbox_rows(None, 100).await.unwrap();
    assert!(rows.iter().all(|r| r.state == "delivered"), "{rows:?}");
}

both_backends!(
    a_create_with_an_unreadable_answer_is_adopted,
    delivered_in_order,
    retried_create_adopts_existing,
    retried_update_is_not_posted_twice
);
