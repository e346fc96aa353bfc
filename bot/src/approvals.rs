//! The two-person approval engine: requests, approvals, denials, cancels, decisions on runs
//! that need attention, and expiry.
//!
//! **Architecture Invariant:** every function here reads, checks and writes inside one
//! serialised write transaction ([`Store::write`]), so concurrent clicks cannot both reach
//! quorum, and the database's own constraints (no self-approval, approval bound to the
//! request's requester and fingerprint, one pending request per run, one active destructive
//! run per target) back the checks made in Rust.

use std::collections::BTreeMap;

use recovery::plan::Plan;
use serde_json::json;

use crate::{
    actor::Actor,
    app::App,
    events::Event,
    reply::{RunView, UserError},
    store::{
        Store, Tx, audit, now_ms,
        runs::{self, NewRun, RequestAction, RequestRow, RunRow, RunState},
    },
};

/// Why an approval-engine call did not go ahead.
#[derive(Debug)]
pub enum Fail {
    /// The person can fix or should understand it.
    User(UserError),
    /// drbot broke.
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail::Internal(e)
    }
}

impl From<UserError> for Fail {
    fn from(e: UserError) -> Self {
        Fail::User(e)
    }
}

/// Result of the approval engine.
pub type Outcome<T> = Result<T, Fail>;

/// Loads a run with its steps, newest request and approvals.
pub async fn view(store: &Store, run_id: i64) -> anyhow::Result<Option<RunView>> {
    let Some(run) = store.run(run_id).await? else {
        return Ok(None);
    };
    let steps = store.steps(run_id).await?;
    let request = store.latest_request(run_id).await?;
    let approvals = match &request {
        Some(r) => store.approvals(r.id).await?,
        None => vec![],
    };
    Ok(Some(RunView {
        run,
        steps,
        request,
        approvals,
    }))
}

async fn view_or_missing(store: &Store, run_id: i64) -> Outcome<RunView> {
    view(store, run_id)
        .await?
        .ok_or(Fail::User(UserError::UnknownRun { run: run_id }))
}

fn person_of(actor: &Actor) -> Outcome<&str> {
    actor
        .person
        .as_deref()
        .ok_or(Fail::User(UserError::UnknownAccount))
}

fn roles_of<'a>(app: &'a App, person: &str) -> &'a [String] {
    app.settings
        .person(person)
        .map(|p| p.roles.as_slice())
        .unwrap_or(&[])
}

/// Requests the runbook bound to `command` with `args`. Destructive plans await approval;
/// read-only ones (and dry runs) are queued at once.
pub async fn request(
    app: &App,
    actor: &Actor,
    command: &str,
    args: BTreeMap<String, String>,
    dry_run: bool,
    text: &str,
) -> Outcome<RunView> {
    let prepared = prepare(app, actor, command, args, dry_run)?;
    let mut tx = app.store.write().await?;
    let run_id = insert_request(app, &mut tx, actor, &prepared, text).await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    publish_requested(app, &prepared, run_id);
    view_or_missing(&app.store, run_id).await
}

/// A request checked and its plan resolved, not yet written.
pub struct Prepared {
    /// The resolved plan.
    pub plan: Plan,
    /// Whether the run must wait for approval.
    pub needs_approval: bool,
}

/// Checks that `actor` may request the runbook bound to `command` and resolves its plan.
/// drbot itself (a `[[schedules]]` entry, platform `system`) needs no request role: the
/// schedule was put in the config by whoever controls it, and approvals still apply.
pub fn prepare(
    app: &App,
    actor: &Actor,
    command: &str,
    args: BTreeMap<String, String>,
    dry_run: bool,
) -> Outcome<Prepared> {
    let person = person_of(actor)?;
    let settings = &app.settings;
    let runbook = settings
        .runbook_for(command)
        .ok_or_else(|| UserError::NoRunbook {
            command: command.to_string(),
        })?;
    if actor.platform != crate::config::Platform::System
        && !roles_of(app, person)
            .iter()
            .any(|r| runbook.request_roles.contains(r))
    {
        return Err(UserError::NotAllowedToRequest {
            runbook: runbook.name.clone(),
            roles: runbook.request_roles.clone(),
        }
        .into());
    }
    let vars = settings.vars(args.get("region").map(String::as_str));
    let plan = Plan::resolve(
        &settings.registry,
        runbook,
        args,
        vars,
        &settings.revision,
        dry_run,
    )
    .map_err(|e| UserError::PlanFailed {
        message: e.to_string(),
    })?;
    let needs_approval = plan.is_destructive() && !dry_run;
    Ok(Prepared {
        plan,
        needs_approval,
    })
}

/// Writes a prepared request inside `tx` (run, approval request, audit row); returns the run
/// id. Call [`publish_requested`] after the commit.
pub async fn insert_request(
    app: &App,
    tx: &mut Tx,
    actor: &Actor,
    prepared: &Prepared,
    text: &str,
) -> Outcome<i64> {
    let person = person_of(actor)?;
    let settings = &app.settings;
    let plan = &prepared.plan;
    let (needs_approval, dry_run) = (prepared.needs_approval, plan.dry_run);
    if needs_approval && let Some(other) = runs::active_on_target(tx, &plan.target).await? {
        return Err(UserError::TargetBusy {
            target: plan.target.clone(),
            run: other,
        }
        .into());
    }
    let state = if needs_approval {
        RunState::AwaitingApproval
    } else {
        RunState::Queued
    };
    let run_id = runs::insert_run(
        tx,
        &NewRun {
            plan,
            command: text,
            state,
            requested_by: person,
            requested_account: &actor.account,
            platform: actor.platform.as_str(),
            channel: actor.channel.as_deref(),
        },
    )
    .await?;
    let defs = plan
        .checklists
        .iter()
        .map(|name| {
            settings
                .config
                .checklists
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| anyhow::anyhow!("runbook checklist `{name}` is not configured"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opened = crate::store::checklists::open_for_run(tx, run_id, &defs, person).await?;
    let mut detail = json!({
        "runbook": plan.runbook, "version": plan.version, "args": plan.args,
        "fingerprint": plan.fingerprint, "dry_run": dry_run, "needs_approval": needs_approval,
    });
    if needs_approval {
        let expires = now_ms() + settings.expires_after.as_millis() as i64;
        let req = runs::insert_request(
            tx,
            run_id,
            RequestAction::Run,
            None,
            &plan.fingerprint,
            person,
            &actor.account,
            settings.config.approvals.required as i64,
            expires,
        )
        .await?;
        detail["request_id"] = json!(req);
    }
    if !opened.is_empty() {
        detail["checklists"] = json!(opened);
    }
    audit::append(tx, actor, "run.requested", Some(run_id), detail).await?;
    Ok(run_id)
}

/// Tells the front-ends (approval cards) and the driver about a committed request.
pub fn publish_requested(app: &App, prepared: &Prepared, run_id: i64) {
    app.events.publish(Event::RunRequested {
        run_id,
        runbook: prepared.plan.runbook.clone(),
        needs_approval: prepared.needs_approval,
    });
}

/// Loads a run and its open request inside `tx`, expiring the request if it is past due.
/// Returns the run and the still-pending request, or the refusal to give.
async fn open_request(
    tx: &mut Tx,
    run_id: i64,
) -> Outcome<Result<(RunRow, RequestRow), UserError>> {
    let Some(run) = Store::run_tx(tx, run_id).await? else {
        return Ok(Err(UserError::UnknownRun { run: run_id }));
    };
    let Some(req) = Store::pending_request_tx(tx, run_id).await? else {
        return Ok(Err(UserError::NothingToApprove {
            run: run_id,
            state: run.state.as_str().to_string(),
        }));
    };
    if now_ms() >= req.expires_at {
        expire_in(tx, &run, &req).await?;
        if matches!(req.action, RequestAction::Run | RequestAction::Gate) {
            return Ok(Err(UserError::Expired { run: run_id }));
        }
        return Ok(Err(UserError::DecisionExpired {
            run: run_id,
            action: req.action.as_str().into(),
        }));
    }
    Ok(Ok((run, req)))
}

async fn expire_in(tx: &mut Tx, run: &RunRow, req: &RequestRow) -> anyhow::Result<()> {
    runs::close_request(tx, req.id, "expired", None, None).await?;
    if matches!(req.action, RequestAction::Run | RequestAction::Gate) {
        runs::set_run_state(
            tx,
            run.id,
            RunState::Expired,
            Some("approval request expired"),
        )
        .await?;
    }
    audit::append(
        tx,
        &Actor::system(),
        "request.expired",
        Some(run.id),
        json!({ "request_id": req.id, "action": req.action.as_str() }),
    )
    .await?;
    Ok(())
}

/// Whether the run's plan, resolved again from today's config, still has the approved
/// fingerprint.
fn plan_still_current(app: &App, run: &RunRow) -> bool {
    let s = &app.settings;
    let Some(rb) = s
        .config
        .runbooks
        .iter()
        .find(|r| r.name == run.plan.runbook)
    else {
        return false;
    };
    let vars = s.vars(run.plan.args.get("region").map(String::as_str));
    match Plan::resolve(
        &s.registry,
        rb,
        run.plan.args.clone(),
        vars,
        &s.revision,
        run.plan.dry_run,
    ) {
        Ok(p) => p.fingerprint == run.fingerprint,
        Err(_) => false,
    }
}

/// The roles that may ask for, and approve, actions on `run`: `(request_roles,
/// approve_roles)` of its runbook. When the runbook is no longer in the config (renamed or
/// removed since the run started), only the abort of a run that needs attention is still
/// possible, with the roles of every configured runbook (still two people): a run paused
/// under a runbook since removed can always be ended, and nothing else can be done to it.
fn run_roles(app: &App, run: &RunRow, abort: bool) -> (Vec<String>, Vec<String>) {
    let runbooks = &app.settings.config.runbooks;
    if let Some(rb) = runbooks.iter().find(|r| r.name == run.plan.runbook) {
        return (rb.request_roles.clone(), rb.approve_roles.clone());
    }
    if !(abort && run.state == RunState::NeedsAttention) {
        return (Vec::new(), Vec::new());
    }
    let union = |roles: fn(&recovery::runbook::RunbookDef) -> &Vec<String>| {
        let mut all: Vec<String> = runbooks.iter().flat_map(|r| roles(r).clone()).collect();
        all.sort();
        all.dedup();
        all
    };
    (union(|r| &r.request_roles), union(|r| &r.approve_roles))
}

/// The role that lets `person` approve `run` (an abort of it when `abort`), if any.
fn approving_role(app: &App, run: &RunRow, person: &str, abort: bool) -> Result<String, UserError> {
    let (_, allowed) = run_roles(app, run, abort);
    roles_of(app, person)
        .iter()
        .find(|r| allowed.contains(r))
        .cloned()
        .ok_or(UserError::NotAllowedToApprove {
            runbook: run.runbook.clone(),
            roles: allowed,
        })
}

/// Records `actor`'s approval of run `run_id`'s open request. When `request_id` is given
/// (a button), it must be that open request. At quorum the requested action goes ahead.
pub async fn approve(
    app: &App,
    actor: &Actor,
    run_id: i64,
    request_id: Option<i64>,
) -> Outcome<(RunView, bool)> {
    let person = person_of(actor)?;
    let mut tx = app.store.write().await?;
    let (run, req) = match open_request(&mut tx, run_id).await? {
        Ok(x) => x,
        Err(e) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            return Err(e.into());
        }
    };
    if request_id.is_some_and(|id| id != req.id) {
        return Err(UserError::StaleRequest {
            run: run_id,
            action: req.action.as_str().into(),
        }
        .into());
    }
    // A retry, skip or abort decides for a run that needs attention, and for no other: its
    // approval never puts an ended run back in the queue.
    let decision = matches!(
        req.action,
        RequestAction::Retry | RequestAction::Skip | RequestAction::Abort
    );
    if decision && run.state != RunState::NeedsAttention {
        return Err(UserError::NothingToApprove {
            run: run_id,
            state: run.state.as_str().into(),
        }
        .into());
    }
    // Typed, a decision is approved by naming it (`/dr retry 42`, see `decide_or_approve`):
    // a bare `/dr approve 42` could approve a retry that replaced the skip its approver was
    // reading. A button names its request.
    if decision && request_id.is_none() {
        return Err(UserError::NameTheDecision {
            run: run_id,
            action: req.action.as_str().into(),
        }
        .into());
    }
    if req.requester == person {
        return Err(UserError::SelfApproval { run: run_id }.into());
    }
    let role = approving_role(app, &run, person, req.action == RequestAction::Abort)?;
    let current = if req.action == RequestAction::Run {
        plan_still_current(app, &run) && req.fingerprint == run.fingerprint
    } else {
        req.fingerprint == run.fingerprint
    };
    if !current {
        runs::close_request(&mut tx, req.id, "void", None, Some("plan changed")).await?;
        if req.action == RequestAction::Run {
            runs::set_run_state(
                &mut tx,
                run_id,
                RunState::Void,
                Some("plan changed; request again"),
            )
            .await?;
        }
        audit::append(
            &mut tx,
            actor,
            "request.void",
            Some(run_id),
            json!({ "request_id": req.id, "fingerprint": req.fingerprint }),
        )
        .await?;
        tx.commit().await.map_err(anyhow::Error::from)?;
        return Err(UserError::PlanChanged { run: run_id }.into());
    }
    let inserted = runs::insert_approval(
        &mut tx,
        &req,
        person,
        &actor.account,
        actor.platform.as_str(),
        &role,
    )
    .await?;
    if !inserted {
        return Err(UserError::AlreadyApproved { run: run_id }.into());
    }
    let count = runs::approvals_of(&mut *tx, req.id).await?.len() as i64;
    let quorum = count >= req.required;
    // The state this approval set, published as soon as it is committed (a driver may move
    // the run on right after: the event must not lag behind the run's own events).
    let mut new_state = None;
    audit::append(
        &mut tx,
        actor,
        "approve",
        Some(run_id),
        json!({
            "request_id": req.id, "action": req.action.as_str(), "fingerprint": req.fingerprint,
            "role": role, "approvals": count, "required": req.required,
        }),
    )
    .await?;
    if quorum {
        runs::close_request(&mut tx, req.id, "approved", None, None).await?;
        let step = req.step_idx.unwrap_or(0);
        let next = match req.action {
            RequestAction::Run => RunState::Queued,
            RequestAction::Gate => {
                runs::mark_gate_approved(&mut tx, run_id, step).await?;
                RunState::Queued
            }
            RequestAction::Retry => {
                runs::resolve_interrupted_step(&mut tx, run_id, step, false).await?;
                RunState::Queued
            }
            RequestAction::Skip => {
                runs::resolve_interrupted_step(&mut tx, run_id, step, true).await?;
                RunState::Queued
            }
            RequestAction::Abort => RunState::Aborted,
        };
        runs::set_run_state(&mut tx, run_id, next, None).await?;
        new_state = Some(next);
        audit::append(
            &mut tx,
            &Actor::system(),
            "request.approved",
            Some(run_id),
            json!({ "request_id": req.id, "action": req.action.as_str(), "state": next.as_str() }),
        )
        .await?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    app.events.publish(Event::Approved {
        run_id,
        request_id: req.id,
        person: person.to_string(),
        quorum,
    });
    if let Some(state) = new_state {
        app.events.publish(Event::RunStateChanged {
            run_id,
            state: state.as_str().to_string(),
            detail: None,
        });
    }
    let view = view_or_missing(&app.store, run_id).await?;
    Ok((view, quorum))
}

/// One Deny by an allowed person ends the open request.
pub async fn deny(
    app: &App,
    actor: &Actor,
    run_id: i64,
    request_id: Option<i64>,
    reason: Option<&str>,
) -> Outcome<RunView> {
    let person = person_of(actor)?;
    let mut tx = app.store.write().await?;
    let (run, req) = match open_request(&mut tx, run_id).await? {
        Ok(x) => x,
        Err(e) => {
            tx.commit().await.map_err(anyhow::Error::from)?;
            return Err(e.into());
        }
    };
    if request_id.is_some_and(|id| id != req.id) {
        return Err(UserError::StaleRequest {
            run: run_id,
            action: req.action.as_str().into(),
        }
        .into());
    }
    if req.requester != person {
        approving_role(app, &run, person, req.action == RequestAction::Abort)?;
    }
    runs::close_request(&mut tx, req.id, "denied", Some(person), reason).await?;
    if matches!(req.action, RequestAction::Run | RequestAction::Gate) {
        runs::set_run_state(&mut tx, run_id, RunState::Denied, Some("denied")).await?;
    }
    audit::append(
        &mut tx,
        actor,
        "deny",
        Some(run_id),
        json!({ "request_id": req.id, "action": req.action.as_str(), "reason": reason }),
    )
    .await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    app.events.publish(Event::Denied {
        run_id,
        request_id: req.id,
        person: person.to_string(),
    });
    view_or_missing(&app.store, run_id).await
}

/// The requester (or an approver) cancels: at once if nothing is running, else before the
/// next step. A run needing attention is ended with `abort`, which needs approval.
pub async fn cancel(app: &App, actor: &Actor, run_id: i64) -> Outcome<(RunView, bool)> {
    let person = person_of(actor)?;
    let mut tx = app.store.write().await?;
    let Some(run) = Store::run_tx(&mut tx, run_id).await? else {
        return Err(UserError::UnknownRun { run: run_id }.into());
    };
    if run.requested_by != person && approving_role(app, &run, person, false).is_err() {
        return Err(UserError::NotAllowedToCancel { run: run_id }.into());
    }
    let driven = run.lease_owner.is_some();
    let immediate = match run.state {
        RunState::AwaitingApproval | RunState::AwaitingGate => true,
        RunState::Queued if !driven => true,
        RunState::Queued | RunState::Running => false,
        other => {
            return Err(UserError::CannotCancel {
                run: run_id,
                state: other.as_str().into(),
            }
            .into());
        }
    };
    if immediate {
        if let Some(req) = Store::pending_request_tx(&mut tx, run_id).await? {
            runs::close_request(&mut tx, req.id, "cancelled", Some(person), None).await?;
        }
        runs::set_run_state(&mut tx, run_id, RunState::Cancelled, Some("cancelled")).await?;
    } else {
        sqlx::query("UPDATE runs SET cancel_requested = 1, updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(anyhow::Error::from)?;
    }
    audit::append(
        &mut tx,
        actor,
        "cancel",
        Some(run_id),
        json!({ "immediate": immediate }),
    )
    .await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    if immediate {
        app.events.publish(Event::RunStateChanged {
            run_id,
            state: "cancelled".into(),
            detail: None,
        });
    }
    Ok((view_or_missing(&app.store, run_id).await?, immediate))
}

/// Asks to retry, skip or abort the interrupted step of a run needing attention; another
/// allowed person must approve.
pub async fn decide(
    app: &App,
    actor: &Actor,
    run_id: i64,
    action: RequestAction,
) -> Outcome<RunView> {
    let person = person_of(actor)?;
    let mut tx = app.store.write().await?;
    let Some(run) = Store::run_tx(&mut tx, run_id).await? else {
        return Err(UserError::UnknownRun { run: run_id }.into());
    };
    if run.state != RunState::NeedsAttention {
        return Err(UserError::NotNeedingAttention {
            run: run_id,
            state: run.state.as_str().into(),
        }
        .into());
    }
    let (request_roles, approve_roles) = run_roles(app, &run, action == RequestAction::Abort);
    if request_roles.is_empty() && approve_roles.is_empty() {
        return Err(UserError::RunbookRemoved {
            run: run_id,
            runbook: run.plan.runbook.clone(),
        }
        .into());
    }
    let allowed = roles_of(app, person)
        .iter()
        .any(|r| request_roles.contains(r) || approve_roles.contains(r));
    if !allowed {
        let mut roles: Vec<String> = request_roles.into_iter().chain(approve_roles).collect();
        roles.sort();
        roles.dedup();
        return Err(UserError::NotAllowedToRequest {
            runbook: run.runbook.clone(),
            roles,
        }
        .into());
    }
    if let Some(open) = Store::pending_request_tx(&mut tx, run_id).await? {
        if now_ms() < open.expires_at {
            return Err(UserError::RequestOpen {
                run: run_id,
                action: open.action.as_str().into(),
            }
            .into());
        }
        expire_in(&mut tx, &run, &open).await?;
        if matches!(open.action, RequestAction::Run | RequestAction::Gate) {
            // The run expired with it: nothing is left to decide.
            tx.commit().await.map_err(anyhow::Error::from)?;
            app.events.publish(Event::Expired {
                run_id,
                request_id: open.id,
            });
            return Err(UserError::Expired { run: run_id }.into());
        }
    }
    // The step the run paused at: the interrupted one, the held one, else (paused with no
    // step started, as after drbot failed between steps) the first one still to run, where
    // the run resumes. Never none: a decision always names its step.
    let steps = Store::steps_tx(&mut tx, run_id).await?;
    let step = steps
        .iter()
        .find(|s| s.state == recovery::engine::StepState::Running)
        .map(|s| s.idx)
        .or(run.held_step)
        .or_else(|| {
            steps
                .iter()
                .find(|s| s.state == recovery::engine::StepState::Pending)
                .map(|s| s.idx)
        });
    let expires = now_ms() + app.settings.expires_after.as_millis() as i64;
    let req = runs::insert_request(
        &mut tx,
        run_id,
        action,
        step,
        &run.fingerprint,
        person,
        &actor.account,
        app.settings.config.approvals.required as i64,
        expires,
    )
    .await?;
    audit::append(
        &mut tx,
        actor,
        "decision.requested",
        Some(run_id),
        json!({ "request_id": req, "action": action.as_str(), "step": step }),
    )
    .await?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    app.events.publish(Event::DecisionRequested {
        run_id,
        request_id: req,
        action: action.as_str().into(),
    });
    view_or_missing(&app.store, run_id).await
}

/// What `/dr retry|skip|abort <run>` did.
#[derive(Debug)]
pub enum Decided {
    /// Asked for the decision (it waits for approval).
    Requested(RunView),
    /// Approved the same decision someone else had asked for; `true` at quorum.
    Approved(RunView, bool),
}

/// `/dr retry|skip|abort <run>`: approves the open request for that very decision when
/// someone else asked for it (the typed way to approve a decision: the approver names what
/// they approve), else asks for it ([`decide`]).
pub async fn decide_or_approve(
    app: &App,
    actor: &Actor,
    run_id: i64,
    action: RequestAction,
) -> Outcome<Decided> {
    let person = person_of(actor)?;
    let open = app
        .store
        .latest_request(run_id)
        .await?
        .filter(|r| r.state == "pending" && r.action == action && now_ms() < r.expires_at);
    if let Some(open) = open {
        if open.requester == person {
            return Err(UserError::SelfApproval { run: run_id }.into());
        }
        // `approve` checks again, in its transaction, that this request is still the open one.
        let (view, quorum) = approve(app, actor, run_id, Some(open.id)).await?;
        return Ok(Decided::Approved(view, quorum));
    }
    decide(app, actor, run_id, action)
        .await
        .map(Decided::Requested)
}

/// Expires every pending request past its deadline; returns how many.
pub async fn expire_due(app: &App) -> anyhow::Result<usize> {
    let due = app.store.expired_requests(now_ms()).await?;
    let mut n = 0;
    for id in due {
        let mut tx = app.store.write().await?;
        let Some(req) = Store::request_tx(&mut tx, id).await? else {
            continue;
        };
        if req.state != "pending" || now_ms() < req.expires_at {
            continue;
        }
        let Some(run) = Store::run_tx(&mut tx, req.run_id).await? else {
            continue;
        };
        expire_in(&mut tx, &run, &req).await?;
        tx.commit().await?;
        app.events.publish(Event::Expired {
            run_id: run.id,
            request_id: id,
        });
        n += 1;
    }
    Ok(n)
}
