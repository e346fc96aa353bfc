//! The customer email step types on SQLite and on a real PostgreSQL: the built-in
//! `notify-customers` runbook validates against drbot's registry (the recovery library's own
//! lacks these kinds); `[email]` without `server.public_url` is refused; without `[email]` the
//! steps send nothing and say so;
//! `/dr notify customers` knows the templates; `email_preview` renders the subject and first
//! lines for the open incident and counts the active subscribers; `email_customers` writes one
//! outbox row per active subscriber (rendered for them, with their unsubscribe link and a
//! Message-ID derived from the row key), follows the rows until delivered, and when run again
//! adds no row and sends nothing twice. With the built-in templates every row is a campaign
//! row (the send's message stored once, the row holding the subscriber's values); a template
//! that transforms a recipient value makes whole-message rows for the recipients it affects,
//! and each recipient's message is the same either way.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use common::*;
use drbot::{
    app::App,
    config::parse_str,
    dispatch,
    notify::email::{RowPayload, StoredCampaign},
    reply::{Reply, UserError},
    store::Store,
    store::subscribers::NewSubscriber,
};
use notifier::email::{CampaignContent, OutgoingEmail};
use notifier::outbox::{
    Deliverer, Delivery, Outcome,
    worker::{Worker, WorkerConfig},
};
use recovery::step::{ProgressSink, StepContext, StepError, StepOutput};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const PUBLIC: &str = "https://status.example.com";

fn email_config(base: &str) -> String {
    format!(
        "builtin_runbooks = [\"notify-customers\"]\n\
         [server]\npublic_url = \"{PUBLIC}\"\n\
         [email]\nsmtp_url = \"smtp://127.0.0.1:1\"\nfrom = \"Example Status <status@example.com>\"\n\
         {base}"
    )
}

async fn email_env(b: Backend) -> Env {
    let mut env = env(b).await;
    let text = email_config(&config_text(&env.url, 1, "30m", 0, "m"));
    env.app = reconfigure(&env, &text);
    env
}

/// One email row as received: its key, subscriber, whether it was a campaign row, and the
/// email it stands for.
#[derive(Debug, Clone)]
struct Sent {
    key: String,
    subscriber: i64,
    campaign: bool,
    email: OutgoingEmail,
}

/// Records the email rows it is given, as a deliverer for channel `email`; a campaign row is
/// read as the email its values make in its stored campaign.
struct Recorder {
    store: Store,
    sent: Mutex<Vec<Sent>>,
}

impl Recorder {
    fn new(store: &Store) -> Self {
        Self {
            store: store.clone(),
            sent: Mutex::default(),
        }
    }
    fn sent(&self) -> Vec<Sent> {
        let mut sent = self.sent.lock().unwrap().clone();
        sent.sort_by(|a, b| a.key.cmp(&b.key));
        sent
    }
}

#[async_trait]
impl Deliverer for Recorder {
    fn channel(&self) -> &'static str {
        "email"
    }
    async fn deliver(&self, d: &Delivery) -> Outcome {
        let sent = match RowPayload::read(d.payload.clone()).expect("email payload") {
            RowPayload::Whole(p) => Sent {
                key: d.key.clone(),
                subscriber: p.subscriber,
                campaign: false,
                email: p.into_email(),
            },
            RowPayload::Campaign(p) => {
                let json = self.store.email_campaign(p.campaign).await.unwrap();
                let stored: StoredCampaign =
                    serde_json::from_str(&json.expect("the campaign is stored")).unwrap();
                Sent {
                    key: d.key.clone(),
                    subscriber: p.subscriber,
                    campaign: true,
                    email: CampaignContent::from(stored).email_for(&p.into_recipient()),
                }
            }
        };
        self.sent.lock().unwrap().push(sent);
        Outcome::Delivered { receipt: None }
    }
}

/// A worker delivering email rows to a new `Recorder` until the token is cancelled.
fn start_worker(
    app: &App,
) -> (
    Arc<Recorder>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let rec = Arc::new(Recorder::new(&app.store));
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        Arc::new(app.store.clone()),
        vec![rec.clone()],
        WorkerConfig {
            owner: "test".into(),
            lease: Duration::from_secs(30),
            batch: 8,
            concurrency: 4,
            max_attempts: 3,
            idle: Duration::from_millis(20),
        },
    );
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    (rec, shutdown, worker)
}

/// Runs `email_customers` (step 1 of `run`) until its rows are delivered.
async fn send(app: &App, run: i64) -> StepOutput {
    tokio::time::timeout(
        Duration::from_secs(30),
        run_step(app, "email_customers", run, 1),
    )
    .await
    .expect("the send finishes")
    .unwrap()
}

fn step_ctx(run: i64, idx: usize) -> StepContext {
    StepContext {
        run_id: run,
        step_index: idx,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::none(),
        cancel: CancellationToken::new(),
        ..Default::default()
    }
}

async fn run_step(app: &App, kind: &str, run: i64, idx: usize) -> Result<StepOutput, StepError> {
    let step = app
        .settings
        .registry
        .get(kind)
        .unwrap_or_else(|| panic!("{kind} is registered"))
        .build(&json!({ "template": "dr-activated" }))
        .unwrap();
    step.run(&step_ctx(run, idx)).await
}

async fn say(app: &App, person: &str, text: &str) -> Reply {
    dispatch::handle(app, &cli(app, person), text).await
}

/// A send to a large list on SQLite (one writer at a time) queues its rows in batches, each
/// its own transaction: the run's lease is renewed between them, so the driver never has to
/// stop the step (one transaction for the whole list held the write lock past two thirds of
/// the lease, the step was stopped and retried, forever). The run here has a 2 s lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_list_is_queued_without_starving_the_lease() {
    let mut env = env(Backend::Sqlite).await;
    let text = email_config(&config_text(&env.url, 1, "30m", 0, "m"))
        .replace("lease = \"3s\"", "lease = \"2s\"");
    assert!(text.contains("lease = \"2s\""));
    env.app = reconfigure(&env, &text);
    let app = &env.app;
    const N: i64 = 40_000;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO subscribers (email, name, token, created_at) \
         SELECT 'c' || i || '@customer.example', CASE WHEN i % 3 = 0 THEN NULL ELSE 'C ' || i END, \
         printf('%064x', i), 0 FROM n",
    )
    .bind(N)
    .execute(app.store.pool())
    .await
    .unwrap();
    let r = say(
        app,
        "alice",
        "/dr incident open --impact major Database outage",
    )
    .await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let run = match say(app, "bob", "/dr notify customers dr-activated").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("expected a request, got {other:?}"),
    };
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drbot::driver::run(app.clone(), "t".into(), stop.clone()));
    let r = say(app, "alice", &format!("/dr approve {run}")).await;
    assert!(matches!(r, Reply::Approved { quorum: true, .. }), "{r:?}");
    let prefix = format!("email:run:{run}:step:1:sub:");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !app.store.email_send_queued(&prefix).await.unwrap() {
        let state = app.store.run(run).await.unwrap().unwrap().state;
        assert!(
            std::time::Instant::now() < deadline,
            "the rows were never all queued (run {})",
            state.as_str()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = app.store.outbox_progress(&prefix).await.unwrap();
    assert_eq!(p.total(), N);
    let stopped: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE run_id = $1 AND action = 'email.enqueued'",
    )
    .bind(run)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(stopped, 1, "queued once");
    stop.cancel();
    driver.await.unwrap();
}

/// A send stopped after queueing rows but before marking itself queued, whose incident was
/// resolved meanwhile, resumes with the rows it queued (it cannot render more without the
/// incident) instead of failing.
#[tokio::test]
async fn a_send_stopped_part_way_resumes_after_the_incident_is_resolved() {
    let env = email_env(Backend::Sqlite).await;
    let app = &env.app;
    app.store
        .import_subscribers(
            &[NewSubscriber {
                email: "ann@customer.example".into(),
                name: Some("Ann".into()),
                unsubscribed_at: None,
            }],
            false,
        )
        .await
        .unwrap();
    let run = match say(app, "bob", "/dr notify customers dr-activated").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("expected a request, got {other:?}"),
    };
    let r = say(
        app,
        "alice",
        "/dr incident open --impact major Database outage",
    )
    .await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let (_rec, shutdown, worker) = start_worker(app);
    assert_eq!(send(app, run).await.summary, "Sent 1 email");
    // As if the step had stopped before marking the send queued.
    sqlx::query("DELETE FROM email_sends")
        .execute(app.store.pool())
        .await
        .unwrap();
    let r = say(app, "alice", "/dr incident resolve").await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let out = send(app, run).await;
    assert_eq!(out.summary, "Sent 1 email");
    assert_eq!(out.data["resumed"], true);
    shutdown.cancel();
    worker.await.unwrap();
}

async fn builtin_runbook_validates_and_needs_email(b: Backend) {
    let env = email_env(b).await;
    let s = &env.app.settings;
    let rb = s.runbook_for("notify-customers").expect("built-in enabled");
    let kinds: Vec<&str> = rb.steps.iter().map(|st| st.kind.as_str()).collect();
    assert_eq!(kinds, ["email_preview", "email_customers"]);
    let preview = s.registry.get("email_preview").unwrap().traits();
    assert!(!preview.destructive && preview.idempotent);
    let send = s.registry.get("email_customers").unwrap().traits();
    assert!(send.destructive && send.idempotent);

    // [email] without server.public_url is refused: unsubscribe links point there.
    let text = email_config(&config_text(&env.url, 1, "30m", 0, "m"))
        .replace(&format!("public_url = \"{PUBLIC}\""), "");
    let parsed = parse_str(&text, std::path::Path::new("."), &|_| None).unwrap();
    let problems = drbot::config::Settings::from_parsed(parsed, "t.toml".into())
        .err()
        .expect("refused")
        .0;
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("email: set `server.public_url`")),
        "{problems:?}"
    );

    // The grammar knows the templates.
    match say(&env.app, "bob", "/dr notify customers nope").await {
        Reply::Refused(UserError::Parse { message }) => {
            assert!(
                message.contains("Known templates: dr-activated"),
                "{message}"
            );
        }
        other => panic!("expected a parse refusal, got {other:?}"),
    }
}

async fn preview_then_send_once(b: Backend) {
    let env = email_env(b).await;
    let app = &env.app;
    app.store
        .import_subscribers(
            &[
                NewSubscriber {
                    email: "ann@customer.example".into(),
                    name: Some("Ann".into()),
                    unsubscribed_at: None,
                },
                NewSubscriber {
                    email: "bob@customer.example".into(),
                    name: None,
                    unsubscribed_at: None,
                },
                NewSubscriber {
                    email: "gone@customer.example".into(),
                    name: None,
                    unsubscribed_at: Some(1),
                },
            ],
            false,
        )
        .await
        .unwrap();
    let run = match say(app, "bob", "/dr notify customers dr-activated").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("expected a request, got {other:?}"),
    };

    // No open incident: the preview says what is missing.
    let e = run_step(app, "email_preview", run, 0).await.unwrap_err();
    assert!(e.message.contains("no open incident"), "{e:?}");
    assert!(!e.retryable);

    let r = say(
        app,
        "alice",
        "/dr incident open --impact major Database outage",
    )
    .await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let out = run_step(app, "email_preview", run, 0).await.unwrap();
    assert_eq!(
        out.summary,
        "Subject: \"Service Update - DR Activation\" · 2 recipients"
    );
    assert!(out.log.contains("Dear Customer,"), "{}", out.log);
    assert!(out.log.contains("(1 unsubscribed)"), "{}", out.log);
    assert!(
        !out.log.contains("ann@customer.example"),
        "the card shows no customer"
    );
    assert_eq!(out.data["recipients"], 2);

    // The send: a worker delivers the rows while the step follows them.
    let (rec, shutdown, worker) = start_worker(app);
    let out = send(app, run).await;
    assert_eq!(out.summary, "Sent 2 emails");
    assert_eq!(out.data["delivered"], 2);
    assert_eq!(out.data["failed"], 0);
    assert_eq!(out.data["resumed"], false);

    let sent = rec.sent();
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().all(|s| s.campaign),
        "the built-in template slots cleanly"
    );
    let subs = app.store.subscribers().await.unwrap();
    for s in &sent {
        let p = &s.email;
        let sub = subs.iter().find(|x| x.id == s.subscriber).unwrap();
        assert_eq!(s.key, format!("email:run:{run}:step:1:sub:{}", sub.id));
        let created = app.store.run(run).await.unwrap().unwrap().created_at;
        assert_eq!(
            p.message_id,
            format!("email.run.{run}.step.1.sub.{}.{created}", sub.id)
        );
        let url = format!("{PUBLIC}/unsubscribe?token={}", sub.token);
        assert_eq!(p.unsubscribe_url.as_deref(), Some(url.as_str()));
        assert_eq!(p.subject, "Service Update - DR Activation");
        assert!(p.text.contains(&url), "{}", p.text);
        let html = p.html.as_deref().unwrap();
        assert!(html.contains(&format!("href=\"{url}\"")), "{html}");
        assert!(p.text.contains("/status"), "status page link: {}", p.text);
    }
    let ann = sent.iter().find(|s| s.email.to.contains("ann@")).unwrap();
    assert_eq!(ann.email.to, "Ann <ann@customer.example>");
    assert!(
        ann.email.text.starts_with("Dear Ann,"),
        "{}",
        ann.email.text
    );
    let bob = sent.iter().find(|s| s.email.to.contains("bob@")).unwrap();
    assert!(
        bob.email.text.starts_with("Dear Customer,"),
        "{}",
        bob.email.text
    );
    assert!(sent.iter().all(|s| !s.email.to.contains("gone@")));
    let audit = app.store.audit_rows(Some(run), 100).await.unwrap();
    let enqueued: Vec<_> = audit
        .iter()
        .filter(|r| r.action == "email.enqueued")
        .collect();
    assert_eq!(enqueued.len(), 1);
    assert!(
        enqueued[0].detail.contains("\"recipients\":2"),
        "{}",
        enqueued[0].detail
    );
    assert!(
        enqueued[0].detail.contains("\"campaign_rows\":2"),
        "{}",
        enqueued[0].detail
    );

    // Running the step again (a resume after a crash) adds no row and sends nothing twice,
    // even with a new subscriber since.
    app.store
        .import_subscribers(
            &[NewSubscriber {
                email: "late@customer.example".into(),
                name: None,
                unsubscribed_at: None,
            }],
            false,
        )
        .await
        .unwrap();
    let again = run_step(app, "email_customers", run, 1).await.unwrap();
    assert_eq!(again.data["delivered"], 2);
    assert_eq!(again.data["resumed"], true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec.sent().len(), 2);
    assert_eq!(app.store.outbox_rows(None, 100).await.unwrap().len(), 2);
    shutdown.cancel();
    worker.await.unwrap();
}

/// A template that transforms a recipient value: the recipients it affects get whole-message
/// rows, the others campaign rows, and everyone the message rendered for them.
async fn transformed_values_get_whole_rows(b: Backend) {
    let mut env = email_env(b).await;
    let templates = env.dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("email_body.txt"),
        "Dear {{ (recipient.name or \"Customer\")|upper }},\n\
         Unsubscribe: {{ recipient.unsubscribe_url }}\n",
    )
    .unwrap();
    let text = format!(
        "templates_dir = \"{}\"\n{}",
        templates.display(),
        email_config(&config_text(&env.url, 1, "30m", 0, "m"))
    );
    env.app = reconfigure(&env, &text);
    let app = &env.app;
    let people = [
        ("ann@customer.example", Some("Ann")),
        ("bob@customer.example", None),
    ];
    let subs: Vec<NewSubscriber> = people
        .iter()
        .map(|(email, name)| NewSubscriber {
            email: email.to_string(),
            name: name.map(str::to_string),
            unsubscribed_at: None,
        })
        .collect();
    app.store.import_subscribers(&subs, false).await.unwrap();
    let run = match say(app, "bob", "/dr notify customers dr-activated").await {
        Reply::Requested(v) => v.run.id,
        other => panic!("expected a request, got {other:?}"),
    };
    let r = say(app, "alice", "/dr incident open Database outage").await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");
    let (rec, shutdown, worker) = start_worker(app);
    let out = send(app, run).await;
    assert_eq!(out.summary, "Sent 2 emails");
    let sent = rec.sent();
    let ann = sent.iter().find(|s| s.email.to.contains("ann@")).unwrap();
    assert!(!ann.campaign, "the name is transformed: a whole message");
    assert!(
        ann.email.text.starts_with("Dear ANN,\n"),
        "{}",
        ann.email.text
    );
    let bob = sent.iter().find(|s| s.email.to.contains("bob@")).unwrap();
    assert!(bob.campaign, "no name: the campaign gives the same message");
    assert!(
        bob.email.text.starts_with("Dear CUSTOMER,\n"),
        "{}",
        bob.email.text
    );
    let subs = app.store.subscribers().await.unwrap();
    for s in &sent {
        let sub = subs.iter().find(|x| x.id == s.subscriber).unwrap();
        let url = format!("{PUBLIC}/unsubscribe?token={}", sub.token);
        assert!(
            s.email.text.ends_with(&format!("Unsubscribe: {url}")),
            "{}",
            s.email.text
        );
    }
    shutdown.cancel();
    worker.await.unwrap();
}

async fn without_email_nothing_is_sent(b: Backend) {
    let mut env = env(b).await;
    let text = format!(
        "builtin_runbooks = [\"notify-customers\"]\n{}",
        config_text(&env.url, 1, "30m", 0, "m")
    );
    env.app = reconfigure(&env, &text);
    let app = &env.app;
    app.store
        .import_subscribers(
            &[NewSubscriber {
                email: "ann@customer.example".into(),
                name: None,
                unsubscribed_at: None,
            }],
            false,
        )
        .await
        .unwrap();
    let out = run_step(app, "email_preview", 1, 0).await.unwrap();
    assert_eq!(
        out.summary,
        "No [email] configured: no customer email will be sent"
    );
    let out = run_step(app, "email_customers", 1, 1).await.unwrap();
    assert_eq!(out.summary, "No [email] configured: no customer email sent");
    assert!(app.store.outbox_rows(None, 10).await.unwrap().is_empty());
}

both_backends!(
    builtin_runbook_validates_and_needs_email,
    preview_then_send_once,
    transformed_values_get_whole_rows,
    without_email_nothing_is_sent
);
