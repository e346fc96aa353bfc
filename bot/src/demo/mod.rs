//! `drbot demo`: one command that shows drbot working on this machine. It builds a real local
//! two-region environment ([`env`]: PostgreSQL primary and streaming replica, an apex-api
//! service per region ([`apex`]), a `file` DNS zone, a backup directory, seed tables and a
//! backup of them), writes a config for it and runs drbot in-process on that config: the HTTP
//! server (status page), the outbox worker and the real driver. Then two simulated people use
//! the real approval engine: alice requests `/dr verify-backup latest` and `/dr drill` through
//! `dispatch::handle`, bob approves the drill through `approvals::approve`. Each step is printed
//! with its state and duration, then the measured RTO and RPO against the targets
//! ([`report`]), and where to look. Everything is stopped and removed at the end, unless
//! `--keep`, which keeps serving until Ctrl-C and leaves the directory.

pub mod apex;
pub mod env;
pub mod report;

use std::{
    collections::BTreeSet,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use recovery::step::StepContext;
use serde_json::{Value, json};
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::{
    actor::Actor,
    app::App,
    approvals::{self, Fail},
    config::Settings,
    dispatch,
    reply::Reply,
    store::runs::{RunRow, RunState},
};
use report::{DemoReport, Figures, RunReport, StepLine};

/// How long a demo run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the demo looks at the store while a run goes on.
const POLL: Duration = Duration::from_millis(20);

/// `drbot demo` options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Keep the environment: serve until Ctrl-C, leave the directory.
    pub keep: bool,
    /// Print the report as JSON on stdout (the narration goes to stderr).
    pub json: bool,
}

/// Narration: stdout, or stderr when stdout carries JSON.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    fn line(&self, s: impl std::fmt::Display) {
        if self.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

/// Runs the demo; the exit code says whether everything worked.
pub async fn run(opts: Options) -> ExitCode {
    let out = Out { json: opts.json };
    let report = Arc::new(Mutex::new(DemoReport {
        ok: false,
        root: String::new(),
        config: String::new(),
        status_url: String::new(),
        verify_backup: None,
        drill: None,
        figures: None,
        error: None,
    }));
    let shutdown = CancellationToken::new();
    let res = tokio::select! {
        r = demo(opts, out, &shutdown, report.clone()) => r,
        _ = tokio::signal::ctrl_c() => {
            let kept = report.lock().map(|r| r.ok).unwrap_or(false);
            if kept {
                Ok(())
            } else {
                Err(anyhow!("interrupted"))
            }
        }
    };
    shutdown.cancel();
    let mut rep = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = &res {
        rep.ok = false;
        rep.error = Some(format!("{e:#}"));
        eprintln!("drbot demo failed: {e:#}");
    }
    if opts.keep && !rep.root.is_empty() {
        out.line(format!(
            "PostgreSQL stopped; the directory {} is kept (remove it with: rm -rf {})",
            rep.root, rep.root
        ));
    }
    if opts.json {
        println!(
            "{}",
            serde_json::to_string(&rep)
                .unwrap_or_else(|e| json!({ "error": e.to_string() }).to_string())
        );
    }
    if rep.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn demo(
    opts: Options,
    out: Out,
    shutdown: &CancellationToken,
    report: Arc<Mutex<DemoReport>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    out.line("drbot demo: building a local two-region environment ...");
    let mut env = env::build(shutdown).await?;
    if opts.keep {
        env.keep();
    }
    {
        let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
        r.root = env.root.display().to_string();
        r.config = env.config_path.display().to_string();
        r.status_url = format!("{}/status", env.base_url);
    }
    for l in &env.lines {
        out.line(format!("  {l}"));
    }
    let settings = Settings::load(&env.config_path).map_err(|p| {
        anyhow!(
            "{}",
            crate::cli::text::config_problems(&env.config_path, &p)
        )
    })?;
    let app = App::open(settings).await?;
    let owner = crate::driver::owner_id();
    let listener = tokio::net::TcpListener::from_std(
        env.listener.take().context("drbot's listener is gone")?,
    )?;
    let http = {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, crate::server::router(app))
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        })
    };
    let outbox = tokio::spawn(crate::notify::run(
        app.clone(),
        owner.clone(),
        shutdown.clone(),
    ));
    let driver = tokio::spawn(crate::driver::run(app.clone(), owner, shutdown.clone()));

    let backup = make_backup(&app).await?;
    out.line(format!("  backup         {backup}"));
    out.line(format!(
        "  (built in {:.1} s)",
        started.elapsed().as_secs_f64()
    ));

    let result = scenario(&app, out, &report).await;
    let ok = match &result {
        Ok(ok) => *ok,
        Err(_) => false,
    };
    where_to_look(out, &env, opts.keep).await;
    result?;
    if opts.keep {
        report.lock().unwrap_or_else(|p| p.into_inner()).ok = ok;
        out.line(format!(
            "\nKept: drbot serves {}/status and the environment runs until Ctrl-C.\n\
             Config: {}",
            env.base_url,
            env.config_path.display()
        ));
        // Ctrl-C ends the demo (in `run`); dropping this future then stops PostgreSQL.
        std::future::pending::<()>().await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = driver.await;
        let _ = outbox.await;
        let _ = http.await;
    })
    .await;
    app.audit.flush().await?;
    drop(app);
    let root = env.root.clone();
    drop(env);
    out.line(format!(
        "\nCleaned up: PostgreSQL stopped, {} removed (run `drbot demo --keep` to explore).",
        root.display()
    ));
    report.lock().unwrap_or_else(|p| p.into_inner()).ok = ok;
    Ok(())
}

/// A backup of the primary's seed tables into the backup directory.
async fn make_backup(app: &App) -> anyhow::Result<String> {
    let kind = app
        .settings
        .registry
        .get("backup_create")
        .context("no backup_create step type")?;
    let step = kind
        .build(&json!({ "cluster": env::PRIMARY, "store": "default" }))
        .map_err(|e| anyhow!("backup_create: {e}"))?;
    let ctx = StepContext {
        run_id: 0,
        attempt: 1,
        ..Default::default()
    };
    let out = step
        .run(&ctx)
        .await
        .map_err(|e| anyhow!("backing up {}: {}", env::PRIMARY, e.message))?;
    Ok(out.summary)
}

/// The two runs; `Ok(false)` when one failed or the drill missed its targets.
async fn scenario(app: &App, out: Out, report: &Mutex<DemoReport>) -> anyhow::Result<bool> {
    let alice = Actor::cli(&app.settings, "alice");
    let bob = Actor::cli(&app.settings, "bob");

    out.line("\nalice: /dr verify-backup latest   (read-only: runs without approval)");
    let v = requested(dispatch::handle(app, &alice, "/dr verify-backup latest").await)?;
    let mut printed = BTreeSet::new();
    let run = follow(app, v.run.id, out, &mut printed, Until::End).await?;
    let verify = run_report(app, &run).await?;
    out.line(format!("  verify-backup: {}", verify.state));
    let verified = verify.state == "succeeded";
    report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .verify_backup = Some(verify);

    out.line("\nalice: /dr drill");
    let v = requested(dispatch::handle(app, &alice, "/dr drill").await)?;
    let id = v.run.id;
    let req = v
        .request
        .as_ref()
        .context("the drill asked for no approval")?
        .id;
    out.line(format!(
        "  run {id} awaits approval; preflight (read-only) runs meanwhile:"
    ));
    let mut printed = BTreeSet::new();
    let run = follow(app, id, out, &mut printed, Until::Preflight).await?;
    let mut figures: Option<Figures> = None;
    if run.state == RunState::AwaitingApproval {
        out.line(format!(
            "bob: /dr approve {id}   (sre-lead; the two-person rule: not the requester)"
        ));
        match approvals::approve(app, &bob, id, Some(req)).await {
            Ok((_, quorum)) => out.line(format!(
                "  approved{}",
                if quorum {
                    ": quorum reached, run queued"
                } else {
                    ""
                }
            )),
            Err(Fail::User(e)) => return Err(anyhow!("bob's approval was refused: {e}")),
            Err(Fail::Internal(e)) => return Err(e),
        }
        let run = follow(app, id, out, &mut printed, Until::End).await?;
        let drill = run_report(app, &run).await?;
        out.line(format!("  drill: {}", drill.state));
        figures = report::figures(
            &measured(app, id).await?,
            report::configured_waits(&run.plan),
        );
        report.lock().unwrap_or_else(|p| p.into_inner()).drill = Some(drill);
    } else {
        let drill = run_report(app, &run).await?;
        out.line(format!("  drill: {} before approval", drill.state));
        report.lock().unwrap_or_else(|p| p.into_inner()).drill = Some(drill);
    }
    let drilled = report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drill
        .as_ref()
        .is_some_and(|d| d.state == "succeeded");
    match &figures {
        Some(f) => out.line(format!("\nResult\n{}", report::figures_text(f))),
        None => out.line("\nResult: the drill measured nothing"),
    }
    let met = figures.as_ref().is_some_and(|f| f.met);
    report.lock().unwrap_or_else(|p| p.into_inner()).figures = figures;
    Ok(verified && drilled && met)
}

fn requested(r: Reply) -> anyhow::Result<crate::reply::RunView> {
    match r {
        Reply::Requested(v) => Ok(v),
        other => Err(anyhow!(
            "the request was not accepted: {}",
            crate::cli::text::reply(&other, None).trim()
        )),
    }
}

/// When [`follow`] returns.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    /// The run's preflight is over (or the run ended).
    Preflight,
    /// The run ended, or waits for people the demo does not simulate.
    End,
}

/// Prints each step of run `id` as it finishes, until `until`; returns the run.
async fn follow(
    app: &App,
    id: i64,
    out: Out,
    printed: &mut BTreeSet<i64>,
    until: Until,
) -> anyhow::Result<RunRow> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let run = app
            .store
            .run(id)
            .await?
            .with_context(|| format!("run {id} vanished"))?;
        for s in app.store.steps(id).await? {
            if matches!(s.state.as_str(), "succeeded" | "failed" | "skipped")
                && printed.insert(s.idx)
            {
                out.line(report::step_text(&step_line(&run, &s)));
            }
        }
        let preflight_done = || async {
            sqlx::query("SELECT preflight_done FROM runs WHERE id = $1")
                .bind(id)
                .fetch_one(app.store.pool())
                .await
                .and_then(|r| r.try_get::<i64, _>("preflight_done"))
                .map(|v| v != 0)
        };
        let done = match (until, run.state) {
            (_, s) if !s.is_active() => true,
            (_, RunState::AwaitingGate | RunState::NeedsAttention) => true,
            (Until::Preflight, RunState::AwaitingApproval) => preflight_done().await?,
            (Until::Preflight, _) => true,
            (Until::End, _) => false,
        };
        if done {
            return Ok(run);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "run {id} is still {} after {}",
                run.state.as_str(),
                humantime::format_duration(RUN_TIMEOUT)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn step_line(run: &RunRow, s: &crate::store::runs::StepRow) -> StepLine {
    let wait = run
        .plan
        .steps
        .get(s.idx as usize)
        .map_or(Duration::ZERO, report::step_wait);
    StepLine {
        n: s.idx as usize + 1,
        name: s.name.clone(),
        kind: s.kind.clone(),
        state: s.state.as_str().to_string(),
        duration_ms: s.duration_ms.unwrap_or(0),
        configured_wait_ms: wait.as_millis() as i64,
        summary: s
            .error
            .clone()
            .or_else(|| s.summary.clone())
            .unwrap_or_default(),
    }
}

async fn run_report(app: &App, run: &RunRow) -> anyhow::Result<RunReport> {
    let steps = app.store.steps(run.id).await?;
    Ok(RunReport {
        run: run.id,
        state: match &run.detail {
            Some(d) if run.state != RunState::Succeeded => {
                format!("{} ({d})", run.state.as_str())
            }
            _ => run.state.as_str().to_string(),
        },
        steps: steps.iter().map(|s| step_line(run, s)).collect(),
    })
}

/// What the drill's measurement step recorded (`null` if it did not run).
async fn measured(app: &App, run: i64) -> anyhow::Result<Value> {
    let row = sqlx::query(
        "SELECT data FROM run_steps WHERE run_id = $1 AND kind = 'pg_drill_measure' \
         AND state = 'succeeded' ORDER BY idx DESC LIMIT 1",
    )
    .bind(run)
    .fetch_optional(app.store.pool())
    .await?;
    let data: Option<String> = match row {
        Some(r) => r.try_get("data")?,
        None => None,
    };
    Ok(data
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or(Value::Null))
}

async fn where_to_look(out: Out, env: &env::DemoEnv, keep: bool) {
    let cfg = env.config_path.display();
    let dns = tokio::fs::read_to_string(&env.dns_file)
        .await
        .unwrap_or_default();
    let record = dns
        .lines()
        .find(|l| l.contains(env::DNS_NAME) && !l.trim_start().starts_with('#'))
        .unwrap_or("(no record)")
        .trim()
        .to_string();
    out.line(format!(
        "\nWhere to look{}\n\
         \x20 status page   {}/status   (also /status.json, /status/feed.atom)\n\
         \x20 audit log     drbot audit --config {cfg}\n\
         \x20 runs          drbot runs --config {cfg}   and   drbot show <run> --config {cfg}\n\
         \x20 outbox        drbot outbox --config {cfg}\n\
         \x20 DNS file      {}   now: {record}\n\
         \x20 backups       {}",
        if keep {
            ""
        } else {
            " (while the demo runs; `drbot demo --keep` keeps it all up)"
        },
        env.base_url,
        env.dns_file.display(),
        env.backups_dir.display(),
    ));
}
