//! The Statuspage client against a loopback fake of the documented API: request shapes,
//! retryable vs permanent failures (429 + `Retry-After`, 5xx, refused connections, timeouts,
//! 4xx), name truncation, and the API key kept out of errors and Debug output.

#[path = "../../tests/support/fake_statuspage.rs"]
mod fake_statuspage;

use std::sync::Arc;
use std::time::Duration;

use fake_statuspage::FakeStatuspage;
use notifier::statuspage::{
    ComponentStatus, DEFAULT_BASE_URL, Impact, IncidentStatus, IncidentUpdate, MAX_NAME_CHARS,
    NewIncident, StatuspageClient, StatuspageConfig, StatuspageError, UpdateKeys,
};
use recovery::secret::Secret;
use serde_json::json;

const PAGE: &str = "pg7x1";
const KEY: &str = "sp-key-3f9a1c77d2";

async fn setup() -> (Arc<FakeStatuspage>, StatuspageClient) {
    let fake = FakeStatuspage::start(PAGE, KEY).await;
    fake.add_component("cmpapi", "API");
    fake.add_component("cmpdb", "Database");
    let client = client_for(&fake, KEY, Duration::from_secs(5));
    (fake, client)
}

fn client_for(fake: &FakeStatuspage, key: &str, timeout: Duration) -> StatuspageClient {
    StatuspageClient::new(&fake.base_url(), PAGE, Secret::new(key), timeout).unwrap()
}

fn new_incident(name: &str) -> NewIncident {
    NewIncident {
        name: name.to_string(),
        status: IncidentStatus::Investigating,
        impact: Some(Impact::Major),
        body: "We are experiencing issues in our primary region. DR site activated.".into(),
        components: vec![("cmpapi".into(), ComponentStatus::MajorOutage)],
        deliver_notifications: true,
        key: Some("drbot-inc-1".into()),
    }
}

/// A 2xx whose body cannot be read (cut short, or rewritten by a proxy) is an ambiguous
/// retryable error, not a permanent one: Statuspage made the incident, and it is found by key.
#[tokio::test]
async fn a_success_with_an_unreadable_body_is_ambiguous() {
    let (fake, client) = setup().await;
    fake.garble_next_answer();
    let err = client
        .create_incident(&new_incident("Service Degradation - DR Activated"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StatuspageError::Retry {
                ambiguous: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("unreadable answer to HTTP 201"),
        "{err}"
    );
    let found = client.find_unresolved_by_key("drbot-inc-1").await.unwrap();
    assert_eq!(
        found.map(|i| i.id),
        Some(fake.incidents()[0]["id"].as_str().unwrap().into())
    );
}

/// An update whose answer is lost (502 after the change) is a retryable error; the incident,
/// read back, carries the update's key in its metadata beside the incident's.
#[tokio::test]
async fn an_update_keeps_its_keys_in_the_incident_metadata() {
    let (fake, client) = setup().await;
    let created = client
        .create_incident(&new_incident("Service Degradation - DR Activated"))
        .await
        .unwrap();
    assert_eq!(
        client
            .get_incident(&created.id)
            .await
            .unwrap()
            .drbot_update(),
        None
    );
    let update = IncidentUpdate {
        status: IncidentStatus::Identified,
        body: "Traffic is moving to the DR region.".into(),
        components: vec![],
        impact: None,
        deliver_notifications: true,
        keys: Some(UpdateKeys {
            incident: "drbot-inc-1".into(),
            update: "upd-2".into(),
        }),
    };
    fake.lose_next_answer();
    let err = client
        .update_incident(&created.id, &update)
        .await
        .unwrap_err();
    assert!(matches!(err, StatuspageError::Retry { .. }), "{err:?}");
    let read = client.get_incident(&created.id).await.unwrap();
    assert_eq!(read.status, "identified");
    assert_eq!(read.drbot_key(), Some("drbot-inc-1"));
    assert_eq!(read.drbot_update(), Some("upd-2"));
    let reqs = fake.requests();
    let patch = reqs.iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        patch.body["incident"]["metadata"],
        json!({ "drbot": { "key": "drbot-inc-1", "update": "upd-2" } })
    );
    assert!(matches!(
        client.get_incident("missing").await,
        Err(StatuspageError::Permanent { status: 404, .. })
    ));
}

#[tokio::test]
async fn incident_lifecycle_and_component_calls_send_the_documented_shapes() {
    let (fake, client) = setup().await;

    let created = client
        .create_incident(&new_incident("Service Degradation - DR Activated"))
        .await
        .unwrap();
    assert_eq!(created.name, "Service Degradation - DR Activated");
    assert_eq!(created.status, "investigating");
    assert_eq!(created.drbot_key(), Some("drbot-inc-1"));

    let update = IncidentUpdate {
        status: IncidentStatus::Identified,
        body: "Traffic is moving to the DR region.".into(),
        components: vec![("cmpdb".into(), ComponentStatus::DegradedPerformance)],
        impact: None,
        deliver_notifications: false,
        keys: None,
    };
    let updated = client.update_incident(&created.id, &update).await.unwrap();
    assert_eq!(updated.status, "identified");

    let resolved = client
        .resolve_incident(
            &created.id,
            "Service is restored.",
            vec![
                ("cmpapi".into(), ComponentStatus::Operational),
                ("cmpdb".into(), ComponentStatus::Operational),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, "resolved");

    let comp = client
        .set_component_status("cmpdb", ComponentStatus::UnderMaintenance)
        .await
        .unwrap();
    assert_eq!(comp.status, ComponentStatus::UnderMaintenance);
    assert_eq!(comp.name, "Database");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    assert!(reqs.iter().all(|r| r.authorized));
    assert_eq!(
        (
            reqs[0].method.as_str(),
            reqs[0].path.as_str(),
            reqs[0].status
        ),
        ("POST", "/v1/pages/pg7x1/incidents", 201)
    );
    assert_eq!(
        reqs[0].body,
        json!({ "incident": {
            "name": "Service Degradation - DR Activated",
            "status": "investigating",
            "impact_override": "major",
            "body": "We are experiencing issues in our primary region. DR site activated.",
            "component_ids": ["cmpapi"],
            "components": { "cmpapi": "major_outage" },
            "deliver_notifications": true,
            "metadata": { "drbot": { "key": "drbot-inc-1" } },
        }})
    );
    let incident_path = format!("/v1/pages/pg7x1/incidents/{}", created.id);
    assert_eq!(
        (
            reqs[1].method.as_str(),
            reqs[1].path.as_str(),
            reqs[1].status
        ),
        ("PATCH", incident_path.as_str(), 200)
    );
    assert_eq!(
        reqs[1].body,
        json!({ "incident": {
            "status": "identified",
            "body": "Traffic is moving to the DR region.",
            "component_ids": ["cmpdb"],
            "components": { "cmpdb": "degraded_performance" },
            "deliver_notifications": false,
        }})
    );
    assert_eq!(reqs[2].path, incident_path);
    assert_eq!(reqs[2].body["incident"]["status"], "resolved");
    assert_eq!(reqs[2].body["incident"]["body"], "Service is restored.");
    assert_eq!(
        reqs[2].body["incident"]["components"],
        json!({ "cmpapi": "operational", "cmpdb": "operational" })
    );
    assert_eq!(
        (
            reqs[3].method.as_str(),
            reqs[3].path.as_str(),
            reqs[3].status
        ),
        ("PATCH", "/v1/pages/pg7x1/components/cmpdb", 200)
    );
    assert_eq!(
        reqs[3].body,
        json!({ "component": { "status": "under_maintenance" } })
    );

    // What the fake holds now: the timeline and the component statuses.
    let stored = &fake.incidents()[0];
    assert_eq!(stored["status"], "resolved");
    let timeline: Vec<_> = stored["incident_updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(timeline, ["investigating", "identified", "resolved"]);
    assert_eq!(
        fake.component_status("cmpapi").as_deref(),
        Some("operational")
    );
    assert_eq!(
        fake.component_status("cmpdb").as_deref(),
        Some("under_maintenance")
    );
}

#[tokio::test]
async fn an_unresolved_incident_is_found_by_its_drbot_key() {
    let (_fake, client) = setup().await;
    let first = client.create_incident(&new_incident("one")).await.unwrap();
    let mut second = new_incident("two");
    second.key = Some("drbot-inc-2".into());
    let second = client.create_incident(&second).await.unwrap();

    let found = client.find_unresolved_by_key("drbot-inc-2").await.unwrap();
    assert_eq!(found.map(|i| i.id), Some(second.id));
    client
        .resolve_incident(&first.id, "done", vec![], false)
        .await
        .unwrap();
    assert_eq!(
        client.find_unresolved_by_key("drbot-inc-1").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn rate_limit_and_server_errors_are_retryable() {
    let (fake, client) = setup().await;
    fake.answer_next(1, 429, Some(7));
    let err = client
        .create_incident(&new_incident("DR"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StatuspageError::Retry {
            after: Some(Duration::from_secs(7)),
            reason: "HTTP 429".into(),
            ambiguous: false,
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(fake.incidents().is_empty(), "a 429 changed nothing");

    fake.answer_next(1, 503, None);
    let err = client
        .set_component_status("cmpapi", ComponentStatus::PartialOutage)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StatuspageError::Retry {
                after: None,
                ambiguous: true,
                ..
            }
        ),
        "{err:?}"
    );

    // One attempt per call: the client itself did not retry.
    assert_eq!(fake.requests().len(), 2);
    client.create_incident(&new_incident("DR")).await.unwrap();
    assert_eq!(fake.incidents().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_retryable_and_the_fake_comes_back_on_the_same_port() {
    let (fake, client) = setup().await;
    client
        .create_incident(&new_incident("before"))
        .await
        .unwrap();

    let back = fake.refuse_for(Duration::from_millis(700)).await;
    let err = client
        .create_incident(&new_incident("during"))
        .await
        .unwrap_err();
    match &err {
        StatuspageError::Retry {
            after,
            reason,
            ambiguous,
        } => {
            assert_eq!(*after, None);
            assert!(reason.contains("refused"), "{reason}");
            assert!(!ambiguous, "a refused connection was never applied");
        }
        other => panic!("expected Retry, got {other:?}"),
    }
    back.await.unwrap();
    client
        .create_incident(&new_incident("after"))
        .await
        .unwrap();
    let names: Vec<_> = fake
        .incidents()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["before", "after"]);
}

#[tokio::test]
async fn a_timeout_is_retryable_and_ambiguous() {
    let (fake, _) = setup().await;
    let client = client_for(&fake, KEY, Duration::from_millis(300));
    fake.hang_next(Duration::from_secs(2));
    let err = client
        .create_incident(&new_incident("slow"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StatuspageError::Retry { ambiguous: true, reason, .. } if reason == "timed out"),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_requests_are_permanent_with_statuspages_message() {
    let (fake, client) = setup().await;

    let mut bad = new_incident("DR");
    bad.components = vec![("nosuch".into(), ComponentStatus::MajorOutage)];
    let err = client.create_incident(&bad).await.unwrap_err();
    match &err {
        StatuspageError::Permanent { status, message } => {
            assert_eq!(*status, 422);
            assert!(
                message.contains("component nosuch does not exist"),
                "{message}"
            );
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(!err.is_retryable());

    fake.answer_next(1, 400, None);
    let err = client
        .set_component_status("cmpapi", ComponentStatus::Operational)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatuspageError::Permanent { status: 400, .. }),
        "{err:?}"
    );

    let update = IncidentUpdate {
        status: IncidentStatus::Monitoring,
        body: "x".into(),
        components: vec![],
        impact: None,
        deliver_notifications: false,
        keys: None,
    };
    let err = client
        .update_incident("missing1", &update)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatuspageError::Permanent { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_wrong_key_is_permanent_and_no_key_shows_anywhere() {
    let (fake, _) = setup().await;
    let wrong = "sp-wrong-key-88ab";
    let client = client_for(&fake, wrong, Duration::from_secs(5));
    let err = client
        .create_incident(&new_incident("DR"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StatuspageError::Permanent { status: 401, .. }),
        "{err:?}"
    );
    assert!(!fake.requests()[0].authorized);

    let debug = format!("{client:?}");
    assert!(!debug.contains(wrong), "{debug}");
    // An answer that quotes the key: the error (stored in the outbox, logged) does not.
    fake.echo_key_next();
    let echoed = client
        .create_incident(&new_incident("DR"))
        .await
        .unwrap_err();
    let text = echoed.to_string();
    assert!(text.contains("bad credentials: OAuth [redacted]"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "{text}");
    }

    fake.stop_listening().await;
    let err = client
        .create_incident(&new_incident("DR"))
        .await
        .unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "{text}");
    }
}

#[tokio::test]
async fn a_long_multibyte_name_is_cut_to_255_characters() {
    let (fake, client) = setup().await;
    let long = "Dégradation du service 🚨 ".repeat(20);
    assert!(long.chars().count() > MAX_NAME_CHARS);
    let created = client.create_incident(&new_incident(&long)).await.unwrap();
    assert_eq!(created.name.chars().count(), MAX_NAME_CHARS);
    assert!(created.name.ends_with('…'));
    assert!(long.starts_with(created.name.trim_end_matches('…')));
    let sent = fake.requests()[0].body["incident"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(sent, created.name);
}

#[tokio::test]
async fn the_fake_rejects_what_statuspage_rejects() {
    // The fake's checks are what make the shape tests meaningful: prove they bite.
    let (fake, _) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}/pages/{PAGE}/incidents", fake.base_url());
    let cases = [
        json!({ "incident": { "name": "x".repeat(256) } }),
        json!({ "incident": { "name": "DR", "impact": "major" } }),
        json!({ "incident": { "name": "DR", "status": "down" } }),
        json!({ "incident": { "name": "DR", "components": { "cmpapi": "broken" } } }),
        json!({ "incident": { "status": "investigating" } }),
        json!({ "name": "DR" }),
    ];
    for body in cases {
        let resp = http
            .post(&url)
            .header("Authorization", format!("OAuth {KEY}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422, "{body}");
    }
    assert!(fake.incidents().is_empty());
}

#[tokio::test]
async fn bad_ids_and_settings_are_refused_before_sending() {
    let (fake, client) = setup().await;
    let err = client
        .set_component_status("../incidents", ComponentStatus::Operational)
        .await
        .unwrap_err();
    assert!(matches!(err, StatuspageError::Invalid(_)), "{err:?}");
    assert!(fake.requests().is_empty());

    let key = || Secret::new(KEY);
    let t = Duration::from_secs(1);
    assert!(StatuspageClient::new("ftp://x", PAGE, key(), t).is_err());
    assert!(StatuspageClient::new("not a url", PAGE, key(), t).is_err());
    assert!(StatuspageClient::new(&fake.base_url(), "a/b", key(), t).is_err());
    assert!(StatuspageClient::new(&fake.base_url(), PAGE, Secret::new(" "), t).is_err());
}

#[test]
fn config_defaults_and_unknown_fields() {
    let cfg: StatuspageConfig = toml::from_str(
        r#"
        page_id = "pg7x1"
        api_key = "sp-key-3f9a1c77d2"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.base_url, DEFAULT_BASE_URL);
    assert!(!format!("{cfg:?}").contains(KEY));
    assert!(cfg.client().is_ok());

    let err = toml::from_str::<StatuspageConfig>(
        r#"
        page_id = "pg7x1"
        api_key = "k"
        apikey = "typo"
        "#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("apikey"), "{err}");

    let bad = StatuspageConfig {
        timeout: "soon".into(),
        ..cfg
    };
    assert!(matches!(bad.client(), Err(StatuspageError::Invalid(m)) if m.contains("timeout")),);
}
