//! The `drbot` command line: `serve`, `check-config`, `migrate`, `runs`, `show`, `audit`,
//! `outbox`, `subscribers`, `notify`, `demo`, `report`, `timeline` and the break-glass
//! `cmd --as <person> '/dr …'`.

pub mod report;
pub mod subscribers;
pub mod text;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{actor::Actor, app::App, approvals, config::Settings, dispatch, reply::Reply};

/// drbot: disaster-recovery chatops with two-person approval.
#[derive(Debug, Parser)]
#[command(name = "drbot", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "./drbot.toml",
        env = "DRBOT_CONFIG"
    )]
    pub config: PathBuf,
    /// Print JSON instead of text (runs, show, audit, cmd, check-config, timeline, outbox,
    /// subscribers count).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the HTTP server and drive runs (resumes interrupted runs on start).
    Serve,
    /// Validate the configuration; lists every problem and exits non-zero if any.
    CheckConfig,
    /// Apply database migrations and exit.
    Migrate,
    /// List recent runs.
    Runs {
        /// Only active runs.
        #[arg(long)]
        active: bool,
        /// How many (1 to 100000).
        #[arg(long, default_value_t = 20, value_parser = limit)]
        limit: i64,
    },
    /// Show one run: plan, steps, approvals.
    Show {
        /// Run id (`42` or `#42`).
        #[arg(value_parser = run_id)]
        run: i64,
    },
    /// Print the audit log, or verify its hash chain.
    Audit {
        /// Verify the chain; exits non-zero and names the rows if it was tampered with.
        #[arg(long)]
        verify: bool,
        /// With --verify: a head printed by an earlier verify (`SEQ:HASH`), kept outside
        /// drbot; that row must still be there with that hash (catches a log cut back and
        /// its head rewound, or rows rewritten with their hashes recomputed).
        #[arg(long, value_name = "SEQ:HASH", requires = "verify", value_parser = anchor)]
        expect_head: Option<(i64, String)>,
        /// Only rows about this run (`42` or `#42`).
        #[arg(long, value_parser = run_id)]
        run: Option<i64>,
        /// Newest N rows (1 to 100000).
        #[arg(long, default_value_t = 50, value_parser = limit)]
        limit: i64,
    },
    /// The delivery outbox (emails, Statuspage calls, chat broadcasts): list rows, or put
    /// failed ones back in the queue.
    Outbox {
        /// Only rows in this state: pending, sending, delivered or failed.
        #[arg(long, value_parser = outbox_state)]
        state: Option<String>,
        /// Newest N rows (1 to 100000).
        #[arg(long, default_value_t = 50, value_parser = limit)]
        limit: i64,
        /// Retry failed row ID (or every failed row with `--retry all`).
        #[arg(long)]
        retry: Option<String>,
    },
    /// Customer email subscribers: import or export CSV, list, count.
    Subscribers {
        /// What to do.
        #[command(subcommand)]
        action: subscribers::SubscribersCmd,
    },
    /// Notification templates.
    Notify {
        /// What to do.
        #[command(subcommand)]
        action: NotifyCmd,
    },
    /// Discord application setup.
    Discord {
        /// What to do.
        #[command(subcommand)]
        action: DiscordCmd,
    },
    /// Build a local two-region environment (PostgreSQL primary and replica, apex-api per
    /// region, file DNS, backups) in a temp dir and show drbot on it: verify a backup, then run
    /// the measured failover drill with two simulated people; prints each step, RTO and RPO.
    /// Needs no config. Cleans up unless `--keep`. `--json` prints the report as JSON.
    Demo {
        /// Keep serving (status page, environment) until Ctrl-C and keep the directory.
        #[arg(long)]
        keep: bool,
    },
    /// Write the post-incident report on `incident:<id>` or `run:<id>`: `<subject>.md` and a
    /// self-contained `<subject>.html` (summary, timeline, RTO breakdown, RTO/RPO against
    /// `[targets]`, steps, approvals, notifications, checklists, lessons learned).
    Report {
        /// `incident:<id>` or `run:<id>`.
        subject: String,
        /// Directory to write into (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Replace report files that exist already (they may hold the team's edits).
        #[arg(long)]
        force: bool,
    },
    /// Print the timeline of `incident:<id>` or `run:<id>`: every event in order, and the
    /// milestones detection → declaration → approval → recovery → verification with the time
    /// between them (`--json` for the model).
    Timeline {
        /// `incident:<id>` or `run:<id>`.
        subject: String,
    },
    /// Break-glass: run a `/dr …` command as a person from `[[people]]`, with the same
    /// grammar, approval rules and audit as chat (recorded as platform `cli`).
    Cmd {
        /// Person (`[[people]].name`) acting.
        #[arg(long = "as")]
        as_person: String,
        /// The command, e.g. '/dr failover us-west-2'. Everything after its first word is
        /// the command's text, even words that look like drbot's own flags (`--config`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        text: Vec<String>,
    },
}

/// `drbot notify …`.
#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Render a template with sample data (the built-in one, or yours from `templates_dir`).
    Preview {
        /// Template name, e.g. `email_subject`, `email_body.html`; omit to list them.
        template: Option<String>,
    },
}

/// `drbot discord …`.
#[derive(Debug, Subcommand)]
pub enum DiscordCmd {
    /// Create or replace the `/dr` application command (globally, or in one guild at once).
    Register {
        /// Guild (server) id, a number: register there only, visible immediately.
        #[arg(long)]
        guild: Option<u64>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // Both ring and aws-lc-rs are in the dependency graph: pick the process-wide TLS provider
    // before any TLS client (Slack's Socket Mode, HTTPS health checks) is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(cli))
}

fn load(cli: &Cli) -> Result<Settings, ExitCode> {
    let store_only = matches!(
        cli.command,
        Cmd::Migrate
            | Cmd::Runs { .. }
            | Cmd::Show { .. }
            | Cmd::Audit { .. }
            | Cmd::Outbox { .. }
            | Cmd::Subscribers { .. }
            | Cmd::Report { .. }
            | Cmd::Timeline { .. }
    );
    let loaded = if store_only {
        Settings::load_for_store(&cli.config).map(|(s, left_out)| {
            for section in left_out {
                eprintln!("{}", text::section_left_out(&section));
            }
            s
        })
    } else {
        Settings::load(&cli.config)
    };
    loaded.map_err(|p| {
        eprintln!("{}", text::config_problems(&cli.config, &p));
        ExitCode::from(2)
    })
}

fn init_logs(settings: &Settings, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRBOT_LOG")
        // sqlx logs an unrecognised connect parameter with its value, which can be a
        // mistyped password: its option parser logs errors only.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},sqlx_postgres::options=error"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if settings.config.server.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn run(cli: Cli) -> ExitCode {
    if let Cmd::Demo { keep } = cli.command {
        // The demo writes its own config; a tracing subscriber for DRBOT_LOG only.
        let filter = tracing_subscriber::EnvFilter::try_from_env("DRBOT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return crate::demo::run(crate::demo::Options {
            keep,
            json: cli.json,
        })
        .await;
    }
    if let Cmd::CheckConfig = cli.command {
        return match Settings::load(&cli.config) {
            Ok(s) => {
                println!("{}", text::config_ok(&s, cli.json));
                ExitCode::SUCCESS
            }
            Err(p) => {
                if cli.json {
                    println!("{}", serde_json::json!({ "ok": false, "problems": p.0 }));
                } else {
                    eprintln!("{}", text::config_problems(&cli.config, &p));
                }
                ExitCode::FAILURE
            }
        };
    }
    let settings = match load(&cli) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let serving = matches!(cli.command, Cmd::Serve);
    init_logs(&settings, if serving { "info" } else { "warn" });
    let app = match App::open(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let audit_writer = app.audit.clone();
    let res = match cli.command {
        Cmd::Serve => serve(app).await,
        // Handled above, before the store is opened.
        Cmd::CheckConfig | Cmd::Demo { .. } => Ok(ExitCode::SUCCESS),
        Cmd::Migrate => {
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Runs { active, limit } => runs(&app, active, limit, cli.json).await,
        Cmd::Show { run } => show(&app, run, cli.json).await,
        Cmd::Audit {
            verify,
            expect_head,
            run,
            limit,
        } => audit(&app, verify.then_some(expect_head), run, limit, cli.json).await,
        Cmd::Outbox {
            state,
            limit,
            retry,
        } => outbox(&app, state, limit, retry, cli.json).await,
        Cmd::Report {
            subject,
            out,
            force,
        } => report::write(&app, &subject, &out, force).await,
        Cmd::Timeline { subject } => report::timeline(&app, &subject, cli.json).await,
        Cmd::Cmd { as_person, text } => cmd(&app, &as_person, &text.join(" "), cli.json).await,
        Cmd::Subscribers { action } => subscribers::run(&app, action, cli.json).await,
        Cmd::Notify {
            action: NotifyCmd::Preview { template },
        } => notify_preview(&app, template.as_deref()),
        Cmd::Discord {
            action: DiscordCmd::Register { guild },
        } => crate::discord::register(&app, guild).await.map(|msg| {
            println!("{msg}");
            ExitCode::SUCCESS
        }),
    };
    // `drbot cmd '/dr status'` queues its audit row: commit it before exiting.
    let res = match (res, audit_writer.flush().await) {
        (Ok(code), Ok(())) => Ok(code),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(app: App) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(app.settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", app.settings.listen))?;
    let owner = crate::driver::owner_id();
    tracing::info!(listen = %app.settings.listen, owner, "drbot serving");
    for w in &app.settings.warnings {
        tracing::warn!(warning = %w, "config");
    }
    let shutdown = CancellationToken::new();
    // The outbox worker delivers Statuspage calls and chat broadcasts under this process's id.
    let outbox = tokio::spawn(crate::notify::run(
        app.clone(),
        owner.clone(),
        shutdown.clone(),
    ));
    let driver = tokio::spawn(crate::driver::run(app.clone(), owner, shutdown.clone()));
    tokio::spawn(crate::reminders::run(app.clone(), shutdown.clone()));
    tokio::spawn(crate::monitor::run(app.clone(), shutdown.clone()));
    tokio::spawn(crate::schedule::run(app.clone(), shutdown.clone()));
    if let Some(slack) = &app.slack {
        tokio::spawn(crate::slack::sync::run_loop(app.clone(), shutdown.clone()));
        if slack.socket_mode {
            tokio::spawn(crate::slack::socket::run(app.clone(), shutdown.clone()));
        }
    }
    if app.discord.is_some() {
        tokio::spawn(crate::discord::sync::run_loop(
            app.clone(),
            shutdown.clone(),
        ));
    }
    let app_audit = app.audit.clone();
    let http = crate::http_serve::serve(
        listener,
        crate::server::router(app.clone()),
        shutdown.clone(),
        app.settings.shutdown_grace,
    );
    let signals = {
        let shutdown = shutdown.clone();
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
            shutdown.cancel();
            anyhow::Ok(())
        }
    };
    tokio::spawn(signals);
    http.await;
    driver.await?;
    outbox.await?;
    // Rows of read-only commands may still be queued.
    app_audit.flush().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn runs(app: &App, active: bool, limit: i64, json: bool) -> anyhow::Result<ExitCode> {
    let runs = app.store.runs(limit, active).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{}", text::run_list(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

async fn outbox(
    app: &App,
    state: Option<String>,
    limit: i64,
    retry: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(which) = retry {
        let id = match which.as_str() {
            "all" => None,
            n => match n.parse::<i64>() {
                Ok(id) => Some(id),
                Err(_) => {
                    eprintln!("{}", text::OUTBOX_RETRY_USAGE);
                    return Ok(ExitCode::from(2));
                }
            },
        };
        let (n, superseded) = app.store.outbox_retry(id).await?;
        println!("{}", text::outbox_retried(n, superseded));
        return Ok(if n == 0 && id.is_some() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    let rows = app.store.outbox_rows(state.as_deref(), limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", text::outbox_rows(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn notify_preview(app: &App, template: Option<&str>) -> anyhow::Result<ExitCode> {
    let templates =
        notifier::templates::Templates::load(app.settings.config.templates_dir.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let names: Vec<&str> = notifier::templates::Templates::names().collect();
    let Some(name) = template else {
        print!("{}", text::template_list(&names));
        return Ok(ExitCode::SUCCESS);
    };
    // A customer notice by the name `/dr notify customers` takes: its three email templates.
    if crate::notify::email::TEMPLATES.contains(&name) {
        use notifier::templates::{EMAIL_HTML, EMAIL_SUBJECT, EMAIL_TEXT};
        for file in [EMAIL_SUBJECT, EMAIL_TEXT, EMAIL_HTML] {
            let ctx = notifier::templates::Templates::sample_context(file);
            let out = templates
                .render(file, &ctx)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", text::template_part(file, &out));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(name) = names
        .iter()
        .find(|n| **n == name || n.split('.').next() == Some(name))
    else {
        eprintln!("{}", text::unknown_template(name, &names));
        return Ok(ExitCode::from(2));
    };
    let ctx = notifier::templates::Templates::sample_context(name);
    let out = templates
        .render(name, &ctx)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn show(app: &App, run: i64, json: bool) -> anyhow::Result<ExitCode> {
    let Some(view) = approvals::view(&app.store, run).await? else {
        if json {
            println!(
                "{}",
                serde_json::json!({ "error": format!("No run {run}.") })
            );
        } else {
            eprintln!("No run {run}.");
        }
        return Ok(ExitCode::from(2));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", text::run_view(&view));
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a `--limit`: 1 to 100000 (`--limit=-1` read as "everything", `0` as nothing).
fn limit(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a number from 1 to 100000")),
    }
}

/// Reads a run id as people write it, `42` or `#42`.
fn run_id(text: &str) -> Result<i64, String> {
    crate::grammar::RunId::parse(text.trim())
        .map(|r| r.0)
        .ok_or_else(|| format!("`{text}` is not a run id like 42"))
}

/// Reads `--state`, in any case.
fn outbox_state(given: &str) -> Result<String, String> {
    let state = given.trim().to_ascii_lowercase();
    if ["pending", "sending", "delivered", "failed"].contains(&state.as_str()) {
        Ok(state)
    } else {
        Err(text::OUTBOX_STATE_USAGE.into())
    }
}

/// Reads `--expect-head SEQ:HASH`.
fn anchor(text: &str) -> Result<(i64, String), String> {
    let bad = || format!("`{text}` is not SEQ:HASH as `audit --verify` prints its head");
    let (seq, hash) = text.split_once(':').ok_or_else(bad)?;
    let seq: i64 = seq.trim().parse().map_err(|_| bad())?;
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    // `0:000…0` is the head of an empty log, which `--verify` prints as such.
    if seq < 0 || (seq == 0 && hash != crate::store::audit::GENESIS) {
        return Err(bad());
    }
    Ok((seq, hash))
}

/// `verify`: `None` prints rows; `Some(anchor)` verifies the chain (against the anchor).
async fn audit(
    app: &App,
    verify: Option<Option<(i64, String)>>,
    run: Option<i64>,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(anchor) = verify {
        let report = app
            .store
            .audit_verify_against(anchor.as_ref().map(|(seq, hash)| (*seq, hash.as_str())))
            .await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", text::audit_report(&report));
        }
        return Ok(if report.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let rows = app.store.audit_rows(run, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", text::audit_rows(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd(app: &App, as_person: &str, line: &str, json: bool) -> anyhow::Result<ExitCode> {
    let actor = Actor::cli(&app.settings, as_person);
    let reply = dispatch::handle(app, &actor, line).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!(
            "{}",
            text::reply(&reply, actor.person.is_none().then_some(as_person))
        );
    }
    Ok(match reply {
        Reply::Refused(_) => ExitCode::from(2),
        Reply::Internal { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
