//! The post-incident report of a scripted incident on the demo environment (`drbot demo`'s
//! real PostgreSQL primary and streaming replica, apex-api services, file DNS), driven through
//! the real code: alice declares the incident and requests the measured drill through
//! `dispatch::handle`, the real driver runs its preflight, bob approves with `/dr approve`,
//! the driver runs the failover (kill the primary, promote, switch DNS, health green, measure),
//! alice ticks two items of the post-failover checklist and resolves the incident. The outbox
//! worker carries every notification to a loopback fake of Slack.
//!
//! Checks: the report link reaches the incident channel exactly once (and queuing it again
//! adds nothing); `drbot report`'s Markdown is snapshot-tested (times, durations and other
//! measured values masked by insta filters); the HTML page served at
//! `/reports/incidents/<id>` loads in headless Chromium, whose DOM holds the headings, the
//! measured RTO the drill recorded, and no script from hostile input; a screenshot is saved
//! to `target/test-artifacts/incident-report.png`.

mod common;

use std::time::{Duration, Instant};

use drbot::{
    app::App,
    config::Settings,
    dispatch,
    reply::Reply,
    report::{self, Subject},
    store::runs::RunState,
};
use drbot_e2e::{chromium, fake_slack::FakeSlack};
use sqlx::Row as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const HOSTILE: &str = "<script>document.title='pwned'</script>";

/// The real driver, until [`Driver::stop`].
struct Driver {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Driver {
    fn start(app: &App) -> Driver {
        let stop = CancellationToken::new();
        let task = tokio::spawn(drbot::driver::run(
            app.clone(),
            drbot::driver::owner_id(),
            stop.clone(),
        ));
        Driver { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the driver stops")
            .expect("the driver task");
    }
}

async fn say(app: &App, person: &str, text: &str) -> Reply {
    let actor = common::cli(app, person);
    dispatch::handle(app, &actor, text).await
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outbox_drained(app: &App) -> bool {
    let rows = app.store.outbox_rows(None, 1000).await.unwrap();
    rows.iter()
        .all(|r| r.state == "delivered" || r.state == "failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_incident_report() {
    let shutdown = CancellationToken::new();
    let mut env = drbot::demo::env::build(&shutdown).await.expect("demo env");
    let slack = FakeSlack::start("xoxb-t");
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let text = text.replacen("[server]\n", "[server]\nreports = true\n", 1)
        + &format!(
            "\n\n[slack]\nsigning_secret = \"s\"\nbot_token = \"xoxb-t\"\napi_base_url = \"{}\"\n\
             incident_channel = \"CINC\"\n",
            slack.base_url()
        );
    std::fs::write(&env.config_path, text).unwrap();
    let settings = Settings::load(&env.config_path).expect("config");
    let app = App::open(settings).await.expect("app");
    let listener = tokio::net::TcpListener::from_std(env.listener.take().unwrap()).unwrap();
    let http = {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, drbot::server::router(app))
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        })
    };
    let outbox = tokio::spawn(drbot::notify::run(
        app.clone(),
        "report-test".into(),
        shutdown.clone(),
    ));

    // The incident. The driver runs only between people's commands, so that the audit order
    // (and the snapshot) does not depend on when its poll wakes up.
    let r = say(
        &app,
        "alice",
        "/dr incident open Primary database unreachable",
    )
    .await;
    let Reply::Incident(v) = r else {
        panic!("{r:?}")
    };
    let incident = v.incident.id;
    let r = say(&app, "alice", "/dr drill").await;
    let Reply::Requested(v) = r else {
        panic!("{r:?}")
    };
    let run = v.run.id;
    let driver = Driver::start(&app);
    wait_for("the drill's preflight", 120, async || {
        sqlx::query("SELECT preflight_done FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(app.store.pool())
            .await
            .unwrap()
            .try_get::<i64, _>("preflight_done")
            .unwrap()
            == 1
    })
    .await;
    driver.stop().await;
    let r = say(&app, "bob", &format!("/dr approve {run}")).await;
    assert!(matches!(r, Reply::Approved { .. }), "{r:?}");
    let driver = Driver::start(&app);
    let end = common::wait_state(
        &app,
        run,
        &[
            RunState::Succeeded,
            RunState::Failed,
            RunState::NeedsAttention,
        ],
        300,
    )
    .await;
    driver.stop().await;
    assert_eq!(
        end,
        RunState::Succeeded,
        "{:#?}",
        app.store.steps(run).await
    );

    let r = say(&app, "alice", "/dr checklist post-failover").await;
    let Reply::Checklist(list) = r else {
        panic!("{r:?}")
    };
    let alice = common::cli(&app, "alice");
    for item in &list.instance.items[..2] {
        app.store
            .toggle_tick(list.instance.id, &item.id, &alice)
            .await
            .unwrap();
    }
    let r = say(
        &app,
        "alice",
        &format!("/dr incident resolve Service restored from us-west-2 {HOSTILE}"),
    )
    .await;
    assert!(matches!(r, Reply::Incident(_)), "{r:?}");

    // The report link, once.
    let page = format!("{}{}", env.base_url, Subject::Incident(incident).path());
    let links = || {
        slack
            .messages("CINC")
            .into_iter()
            .filter(|m| m.text.contains(&page))
            .count()
    };
    wait_for("the report link in Slack", 60, async || links() == 1).await;
    let mut tx = app.store.write().await.unwrap();
    let row = app.store.incident(incident).await.unwrap().unwrap();
    let again = report::link::enqueue_tx(&mut tx, &app, &row).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, 0, "the link is queued once");
    let r = say(&app, "alice", "/dr incident resolve again").await;
    assert!(matches!(r, Reply::Refused(_)), "{r:?}");
    wait_for("the outbox to drain", 60, async || {
        outbox_drained(&app).await
    })
    .await;
    assert_eq!(links(), 1, "{:#?}", slack.messages("CINC"));

    // `drbot report incident:<id>` writes both files.
    let out = tempfile::tempdir().unwrap();
    let code = drbot::cli::report::write(&app, &format!("incident:{incident}"), out.path(), false)
        .await
        .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let md = std::fs::read_to_string(out.path().join(format!("incident-{incident}.md"))).unwrap();
    let html =
        std::fs::read_to_string(out.path().join(format!("incident-{incident}.html"))).unwrap();
    assert!(!html.contains("<script"), "escaped");
    assert!(
        !html.contains(" src=") && !html.contains("<link"),
        "self-contained"
    );

    // The RTO the drill measured, as the report prints it.
    let records = app.store.step_records(run).await.unwrap();
    let rto = drbot::status_page::recorded(&records, "rto_seconds").expect("a measured RTO");
    let rto_text = report::seconds(Some(rto));
    assert!(md.contains(&format!(
        "| RTO, measured by the drill (approval → health green) | {rto_text} | 4h | met |"
    )));
    insta::with_settings!({
        filters => vec![
            (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)? UTC", "[time]"),
            (r"\b\d{2}:\d{2}:\d{2}\.\d{3}\b", "[clock]"),
            (r"\d+ h \d{2} min|\d+ min \d{2} s|\d+\.\d+ ?s\b|\d+ ms\b", "[duration]"),
            (r"127\.0\.0\.\d+:\d+", "[host:port]"),
            (r"/tmp/[^\s|)]+", "[path]"),
            (r"#\d+", "#[n]"),
            (r"\b\d+ (B|rows?|acknowledged|checks)\b", "[n] $1"),
        ],
    }, {
        insta::assert_snapshot!("incident_report_markdown", md);
    });

    // The page drbot serves, in a real browser.
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking({
        let (profile, page) = (profile.path().to_path_buf(), page.clone());
        move || chromium::run(&profile, &["--dump-dom", page.as_str()])
    })
    .await
    .unwrap();
    assert!(
        dom.contains(&format!(
            "<h1>Incident {incident}: Primary database unreachable</h1>"
        )),
        "{dom}"
    );
    for h in [
        "Summary",
        "Recovery objectives",
        "RTO breakdown",
        "Timeline",
        "Steps",
        "Requests and approvals",
        "Notifications",
        "Checklists",
        "Lessons learned",
    ] {
        assert!(
            dom.contains(&format!("\">{h}</h2>")),
            "no heading {h}\n{dom}"
        );
    }
    assert!(
        dom.contains(&format!(
            "<td>RTO, measured by the drill (approval → health green)</td><td>{rto_text}</td>"
        )),
        "{dom}"
    );
    assert!(dom.contains("<title>Incident"), "{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("pwned</title>"));
    assert!(dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"));
    let png = chromium::artifact_dir().join("incident-report.png");
    let size = tokio::task::spawn_blocking({
        let (profile, page, png) = (profile.path().to_path_buf(), page.clone(), png.clone());
        move || chromium::screenshot(&profile, &page, &png, (1280, 2000), 40_000)
    })
    .await
    .unwrap();
    eprintln!("screenshot: {} ({size} bytes)", png.display());

    // A run's report is served too; an unknown one is a 404.
    let port: u16 = env.base_url.rsplit(':').next().unwrap().parse().unwrap();
    let get = |path: String| {
        tokio::task::spawn_blocking(move || {
            drbot_e2e::http_get(port, &path).expect("drbot answers")
        })
    };
    let (status, body) = get(Subject::Run(run).path()).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("<h1>Run {run}: drill</h1>")),
        "{body}"
    );
    let (status, _) = get("/reports/runs/999".into()).await.unwrap();
    assert_eq!(status, 404);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = outbox.await;
        let _ = http.await;
    })
    .await;
    app.audit.flush().await.unwrap();
}
