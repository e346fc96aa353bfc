//! The engine against an in-memory journal (a test double of drbot's store journal, which is
//! tested end to end elsewhere): step order, retries with backoff, timeouts that kill the
//! process group, `on_failure`, cancel before the next step, dry runs, gates, checklist holds
//! (`requires`), preflight, and the resume rules for interrupted steps. `http_check` runs
//! against a real local HTTP server.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use recovery::{engine::*, plan::Plan, registry::Registry, runbook::RunbookDef, step::StepError};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Mem {
    steps: Vec<StepStatus>,
    results: Vec<Option<StepResult>>,
    events: Vec<String>,
    finished: Option<Finish>,
    cancel: bool,
    approved: bool,
    approved_at_ms: Option<i64>,
    records: Vec<StepRecord>,
    /// Checklist items ticked (what `hold_for` checks).
    ticked: Vec<String>,
}

struct MemJournal {
    plan: Plan,
    mem: Mutex<Mem>,
}

impl MemJournal {
    fn new(plan: Plan, approved: bool) -> Self {
        let n = plan.steps.len();
        let mem = Mem {
            steps: vec![
                StepStatus {
                    state: StepState::Pending,
                    attempts: 0,
                    gate_approved: false
                };
                n
            ],
            results: vec![None; n],
            approved,
            ..Default::default()
        };
        Self {
            plan,
            mem: Mutex::new(mem),
        }
    }
    fn events(&self) -> Vec<String> {
        self.mem.lock().unwrap().events.clone()
    }
    fn state(&self, i: usize) -> StepState {
        self.mem.lock().unwrap().steps[i].state
    }
    fn log(&self, e: String) {
        self.mem.lock().unwrap().events.push(e);
    }
}

#[async_trait]
impl Journal for MemJournal {
    async fn snapshot(&self, run_id: i64) -> Result<RunSnapshot, JournalError> {
        let m = self.mem.lock().unwrap();
        Ok(RunSnapshot {
            run_id,
            plan: self.plan.clone(),
            steps: m.steps.clone(),
            approved: m.approved,
            approved_at_ms: m.approved_at_ms,
            records: m.records.clone(),
        })
    }
    async fn cancel_requested(&self, _: i64) -> Result<bool, JournalError> {
        Ok(self.mem.lock().unwrap().cancel)
    }
    async fn step_started(&self, _: i64, idx: usize, attempt: u32) -> Result<(), JournalError> {
        let mut m = self.mem.lock().unwrap();
        m.steps[idx].state = StepState::Running;
        m.steps[idx].attempts = attempt;
        m.events.push(format!("start {idx} #{attempt}"));
        Ok(())
    }
    async fn step_progress(&self, _: i64, idx: usize, line: &str) {
        self.log(format!("progress {idx} {line}"));
    }
    async fn step_retrying(
        &self,
        _: i64,
        idx: usize,
        attempt: u32,
        _: &StepError,
        delay_ms: u64,
    ) -> Result<(), JournalError> {
        self.log(format!("retry {idx} #{attempt} after {delay_ms}"));
        Ok(())
    }
    async fn step_finished(&self, _: i64, idx: usize, r: &StepResult) -> Result<(), JournalError> {
        let mut m = self.mem.lock().unwrap();
        m.steps[idx].state = r.state;
        m.results[idx] = Some(r.clone());
        if m.records.len() <= idx {
            m.records.resize(idx + 1, StepRecord::default());
        }
        m.records[idx] = StepRecord {
            data: r.data.clone(),
            finished_at_ms: Some(1_000 + idx as i64),
            error: r.error.clone(),
        };
        m.events.push(format!("end {idx} {}", r.state.as_str()));
        Ok(())
    }
    async fn preflight_done(&self, _: i64) -> Result<(), JournalError> {
        self.log("preflight done".into());
        Ok(())
    }
    async fn await_gate(&self, _: i64, idx: usize) -> Result<(), JournalError> {
        self.log(format!("gate {idx}"));
        Ok(())
    }
    async fn hold_for(
        &self,
        _: i64,
        idx: usize,
        requires: &[String],
    ) -> Result<Option<String>, JournalError> {
        let mut m = self.mem.lock().unwrap();
        let missing: Vec<String> = requires
            .iter()
            .filter(|r| !m.ticked.contains(r))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        m.events.push(format!("held {idx} {}", missing.join(",")));
        Ok(Some(missing.join(", ")))
    }
    async fn needs_attention(&self, _: i64, idx: usize, _: &str) -> Result<(), JournalError> {
        self.log(format!("attention {idx}"));
        Ok(())
    }
    async fn finish(&self, _: i64, f: &Finish) -> Result<(), JournalError> {
        self.mem.lock().unwrap().finished = Some(f.clone());
        Ok(())
    }
}

fn plan(steps: &str, dry_run: bool) -> Plan {
    let text = format!(
        "name = \"t\"\ncommand = \"drill\"\nrequest_roles = [\"r\"]\napprove_roles = [\"r\"]\n{steps}"
    );
    let rb: RunbookDef = toml::from_str(&text).expect("runbook parses");
    let problems = rb.problems(&Registry::builtin(), "rb");
    assert!(problems.is_empty(), "{problems:?}");
    Plan::resolve(
        &Registry::builtin(),
        &rb,
        BTreeMap::new(),
        BTreeMap::new(),
        "rev",
        dry_run,
    )
    .expect("plan")
}

fn exec(name: &str, script: &str, extra: &str) -> String {
    format!(
        "[[steps]]\nname = \"{name}\"\ntype = \"exec\"\nwith = {{ command = \"sh\", args = [\"-c\", '''{script}'''] }}\n{extra}\n"
    )
}

async fn drive(j: &MemJournal) -> Driven {
    Engine::new(Registry::builtin())
        .drive(j, 1, CancellationToken::new(), CancellationToken::new())
        .await
        .expect("drive")
}

#[tokio::test]
async fn steps_run_in_order_and_output_is_captured() {
    let p = plan(
        &(exec("a", "echo hello; echo oops >&2", "")
            + &exec("b", "echo $DRBOT_RUN_ID-$DRBOT_STEP_INDEX", "")),
        false,
    );
    let j = MemJournal::new(p, true);
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    let m = j.mem.lock().unwrap();
    let a = m.results[0].as_ref().unwrap();
    assert!(
        a.log.contains("hello") && a.log.contains("oops"),
        "{}",
        a.log
    );
    assert_eq!(m.results[1].as_ref().unwrap().log, "1-1");
    let order: Vec<_> = m
        .events
        .iter()
        .filter(|e| !e.starts_with("progress"))
        .cloned()
        .collect();
    assert_eq!(
        order,
        [
            "start 0 #1",
            "end 0 succeeded",
            "start 1 #1",
            "end 1 succeeded"
        ]
    );
}

#[tokio::test]
async fn child_environment_holds_no_secrets_of_drbot() {
    // SAFETY: the test sets a variable before spawning anything that reads the environment.
    unsafe { std::env::set_var("DRBOT_TEST_SECRET_TOKEN", "xoxb-should-not-leak") };
    let p = plan(&exec("env", "env", ""), false);
    let j = MemJournal::new(p, true);
    drive(&j).await;
    let log = j.mem.lock().unwrap().results[0]
        .as_ref()
        .unwrap()
        .log
        .clone();
    assert!(!log.contains("xoxb-should-not-leak"), "{log}");
    assert!(log.contains("PATH="), "{log}");
}

#[tokio::test]
async fn retryable_failures_are_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("count");
    let script = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", f.display());
    let p = plan(
        &exec(
            "flaky",
            &script,
            "retries = 3\nbackoff = \"50ms\"\nidempotent = true",
        ),
        false,
    );
    let j = MemJournal::new(p, true);
    let started = Instant::now();
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "backoff 50 ms then 100 ms"
    );
    let ev = j.events();
    assert!(ev.contains(&"retry 0 #1 after 50".to_string()), "{ev:?}");
    assert!(ev.contains(&"retry 0 #2 after 100".to_string()), "{ev:?}");
    assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn failure_aborts_or_continues_as_configured() {
    let p = plan(
        &(exec("bad", "exit 3", "on_failure = \"continue\"")
            + &exec("next", "true", "")
            + &exec("fatal", "exit 4", "")
            + &exec("never", "true", "")),
        false,
    );
    let j = MemJournal::new(p, true);
    let d = drive(&j).await;
    assert_eq!(
        d,
        Driven::Finished(Finish::Failed {
            step: 2,
            error: "`sh` exited with status 4".into()
        })
    );
    assert_eq!(j.state(0), StepState::Failed);
    assert_eq!(j.state(1), StepState::Succeeded);
    assert_eq!(j.state(3), StepState::Pending);
}

/// A crash (or a store error, or a lost lease) between recording an `abort` step's failure
/// and ending the run: the next drive ends the run failed with the recorded error and runs
/// nothing after the failed step; a failed `continue` step is passed as before.
#[tokio::test]
async fn a_failed_abort_step_ends_the_run_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("after");
    let after = exec("switch", &format!("echo x >> {}", f.display()), "");
    let p = plan(
        &(exec("verify", "exit 4", "")
            + &exec("soft", "exit 3", "on_failure = \"continue\"")
            + &after),
        false,
    );
    let j = MemJournal::new(p.clone(), true);
    {
        let mut m = j.mem.lock().unwrap();
        m.steps[0].state = StepState::Failed;
        m.records = vec![StepRecord {
            data: serde_json::Value::Null,
            finished_at_ms: Some(7),
            error: Some("replica is 3 GB behind".into()),
        }];
    }
    let d = drive(&j).await;
    let failed = Finish::Failed {
        step: 0,
        error: "replica is 3 GB behind".into(),
    };
    assert_eq!(d, Driven::Finished(failed.clone()));
    assert_eq!(j.mem.lock().unwrap().finished, Some(failed));
    assert!(j.events().is_empty(), "nothing started: {:?}", j.events());
    assert!(
        !f.exists(),
        "the step after the failed abort step never ran"
    );

    // A failed `continue` step is passed over as before: the run goes on.
    let j = MemJournal::new(p, true);
    {
        let mut m = j.mem.lock().unwrap();
        m.steps[0].state = StepState::Succeeded;
        m.steps[1].state = StepState::Failed;
    }
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x\n");
    assert_eq!(j.events(), ["start 2 #1", "end 2 succeeded"]);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("late");
    let script = format!("(sleep 1; echo late > {}) & sleep 60", f.display());
    let p = plan(&exec("slow", &script, "timeout = \"300ms\""), false);
    let j = MemJournal::new(p, true);
    let started = Instant::now();
    let d = drive(&j).await;
    assert!(
        matches!(d, Driven::Finished(Finish::Failed { ref error, .. }) if error.contains("timed out")),
        "{d:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !f.exists(),
        "the background child must have been killed with its group"
    );
}

#[tokio::test]
async fn missing_program_is_a_clear_error() {
    let p = plan(
        "[[steps]]\nname = \"x\"\ntype = \"exec\"\nwith = { command = \"no-such-program-xyz\" }\nretries = 3\n",
        false,
    );
    let j = MemJournal::new(p, true);
    let d = drive(&j).await;
    assert!(
        matches!(d, Driven::Finished(Finish::Failed { ref error, .. }) if error.contains("could not start `no-such-program-xyz`")),
        "{d:?}"
    );
    assert!(
        !j.events().iter().any(|e| e.starts_with("retry")),
        "not retryable"
    );
}

#[tokio::test]
async fn cancel_stops_before_the_next_step() {
    let p = plan(&(exec("a", "true", "") + &exec("b", "true", "")), false);
    let j = MemJournal::new(p, true);
    j.mem.lock().unwrap().cancel = true;
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Cancelled));
    assert_eq!(j.state(0), StepState::Pending);
}

#[tokio::test]
async fn dry_run_runs_only_read_only_steps() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m");
    let steps = exec(
        "read",
        &format!("echo read >> {}", f.display()),
        "destructive = false",
    ) + &exec(
        "write",
        &format!("echo write >> {}", f.display()),
        "gate = true",
    );
    let j = MemJournal::new(plan(&steps, true), true);
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "read\n");
    assert_eq!(j.state(1), StepState::Skipped);
}

#[tokio::test]
async fn preflight_stops_at_the_first_destructive_step_until_approved() {
    let steps = exec("check", "true", "destructive = false") + &exec("change", "true", "");
    let j = MemJournal::new(plan(&steps, false), false);
    assert_eq!(drive(&j).await, Driven::AwaitingApproval(1));
    assert_eq!(j.state(0), StepState::Succeeded);
    assert_eq!(j.state(1), StepState::Pending);
    j.mem.lock().unwrap().approved = true;
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert_eq!(
        j.events()
            .iter()
            .filter(|e| e.starts_with("start 0"))
            .count(),
        1,
        "preflight not repeated"
    );
}

#[tokio::test]
async fn gates_pause_until_approved() {
    let steps = exec("a", "true", "") + &exec("b", "true", "gate = true");
    let j = MemJournal::new(plan(&steps, false), true);
    assert_eq!(drive(&j).await, Driven::AwaitingGate(1));
    j.mem.lock().unwrap().steps[1].gate_approved = true;
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert_eq!(
        j.events()
            .iter()
            .filter(|e| e.starts_with("start 0"))
            .count(),
        1
    );
}

/// A gate on a read-only step before the first destructive one ends preflight: the gate is
/// asked for only once the run is approved, never beside the run's own pending request.
#[tokio::test]
async fn a_gated_read_only_step_ends_preflight() {
    let steps = exec("look", "true", "destructive = false")
        + &exec("confirm", "true", "destructive = false\ngate = true")
        + &exec("change", "true", "");
    let j = MemJournal::new(plan(&steps, false), false);
    assert_eq!(drive(&j).await, Driven::AwaitingApproval(1));
    assert_eq!(j.state(1), StepState::Pending);
    assert!(
        !j.events().iter().any(|e| e.starts_with("gate")),
        "{:?}",
        j.events()
    );
    j.mem.lock().unwrap().approved = true;
    assert_eq!(drive(&j).await, Driven::AwaitingGate(1));
    j.mem.lock().unwrap().steps[1].gate_approved = true;
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
}

#[tokio::test]
async fn required_checklist_items_hold_the_step_whatever_was_approved() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("promoted");
    let p = plan(
        &(exec("look", "true", "destructive = false")
            + &exec(
                "promote",
                &format!("echo x >> {}", f.display()),
                "gate = true\nrequires = [\"pre:a\", \"pre:b\"]",
            )),
        false,
    );
    // Not approved yet: a step with `requires` ends preflight; nothing is checked or held.
    let j = MemJournal::new(p.clone(), false);
    assert_eq!(drive(&j).await, Driven::AwaitingApproval(1));
    assert!(!j.events().iter().any(|e| e.starts_with("held")));
    // Approved, gate approved too, one item ticked: held, the step never starts.
    let j = MemJournal::new(p, true);
    {
        let mut m = j.mem.lock().unwrap();
        m.steps[1].gate_approved = true;
        m.ticked = vec!["pre:a".into()];
    }
    assert_eq!(drive(&j).await, Driven::Held(1));
    assert_eq!(drive(&j).await, Driven::Held(1));
    assert!(!f.exists(), "a held step did not run");
    assert!(j.events().contains(&"held 1 pre:b".to_string()));
    assert!(!j.events().iter().any(|e| e.starts_with("start 1")));
    // Both ticked: it runs once.
    j.mem.lock().unwrap().ticked.push("pre:b".into());
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "x\n");
    // Gate not approved yet: held before the gate is even asked for, then the gate.
    let p = plan(
        &exec("promote", "true", "gate = true\nrequires = [\"pre:a\"]"),
        false,
    );
    let j = MemJournal::new(p, true);
    assert_eq!(drive(&j).await, Driven::Held(0));
    assert!(!j.events().iter().any(|e| e.starts_with("gate")));
    j.mem.lock().unwrap().ticked.push("pre:a".into());
    assert_eq!(drive(&j).await, Driven::AwaitingGate(0));
}

#[tokio::test]
async fn interrupted_steps_follow_the_resume_rules() {
    let steps = exec("done", "true", "")
        + &exec("idem", "true", "idempotent = true")
        + &exec("once", "true", "");
    let j = MemJournal::new(plan(&steps, false), true);
    {
        let mut m = j.mem.lock().unwrap();
        m.steps[0].state = StepState::Succeeded;
        m.steps[1].state = StepState::Running;
        m.steps[1].attempts = 1;
    }
    // Idempotent interrupted step: re-run; then the next one runs normally.
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    let ev = j.events();
    assert!(
        !ev.iter().any(|e| e.starts_with("start 0")),
        "completed steps never re-run"
    );
    assert!(ev.contains(&"start 1 #2".to_string()), "{ev:?}");
    // Non-idempotent interrupted step: needs attention, nothing runs.
    let j = MemJournal::new(plan(&steps, false), true);
    {
        let mut m = j.mem.lock().unwrap();
        m.steps[0].state = StepState::Succeeded;
        m.steps[1].state = StepState::Succeeded;
        m.steps[2].state = StepState::Running;
    }
    assert_eq!(drive(&j).await, Driven::NeedsAttention(2));
    assert_eq!(j.events(), ["attention 2"]);
}

#[tokio::test]
async fn http_check_counts_answers_from_a_real_server() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(move || {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
        .route(
            "/down",
            axum::routing::get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let ok = format!(
        "[[steps]]\nname = \"health\"\ntype = \"http_check\"\nwith = {{ url = \"http://127.0.0.1:{port}/health\", count = 3, interval = \"20ms\" }}\n"
    );
    let j = MemJournal::new(plan(&ok, false), true);
    assert_eq!(drive(&j).await, Driven::Finished(Finish::Succeeded));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert!(
        j.events().iter().any(|e| e.contains("check 3/3: 200")),
        "{:?}",
        j.events()
    );

    let down = format!(
        "[[steps]]\nname = \"health\"\ntype = \"http_check\"\nwith = {{ url = \"http://127.0.0.1:{port}/down\" }}\nretries = 1\nbackoff = \"10ms\"\n"
    );
    let j = MemJournal::new(plan(&down, false), true);
    let d = drive(&j).await;
    assert!(
        matches!(d, Driven::Finished(Finish::Failed { ref error, .. }) if error.contains("answered 503, expected 200")),
        "{d:?}"
    );
    assert!(j.events().iter().any(|e| e.starts_with("retry 0 #1")));

    let closed = format!(
        "[[steps]]\nname = \"health\"\ntype = \"http_check\"\nwith = {{ url = \"http://127.0.0.1:{}/x\", request_timeout = \"1s\" }}\n",
        free_port()
    );
    let j = MemJournal::new(plan(&closed, false), true);
    let d = drive(&j).await;
    assert!(
        matches!(d, Driven::Finished(Finish::Failed { ref error, .. }) if error.contains("unreachable")),
        "{d:?}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test step type that records what it was told about the steps before it.
struct Probe;

struct ProbeStep(String);

impl recovery::registry::StepKind for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn traits(&self) -> recovery::registry::StepTraits {
        recovery::registry::StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        p["tag"].as_str().map(|_| ()).ok_or("needs `tag`".into())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn recovery::step::Step>, String> {
        self.validate(p)?;
        Ok(Box::new(ProbeStep(p["tag"].as_str().unwrap().into())))
    }
}

#[async_trait]
impl recovery::step::Step for ProbeStep {
    async fn run(
        &self,
        ctx: &recovery::step::StepContext,
    ) -> Result<recovery::step::StepOutput, StepError> {
        if self.0 == "deaf" {
            // Never looks at ctx.cancel (like a connect that hangs).
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(recovery::step::StepOutput {
            summary: self.0.clone(),
            log: String::new(),
            data: serde_json::json!({
                "tag": self.0,
                "earlier": ctx.earlier,
                "last_probe": ctx.last_data_of_kind("probe"),
                "approved_at_ms": ctx.approved_at_ms,
            }),
        })
    }
}

fn probe_plan(tags: &[&str]) -> (Plan, Registry) {
    let mut reg = Registry::builtin();
    reg.register(Arc::new(Probe));
    let steps: String = tags
        .iter()
        .map(|t| {
            format!(
                "[[steps]]\nname = \"step {t}\"\ntype = \"probe\"\nwith = {{ tag = \"{t}\" }}\n\
                 on_failure = \"continue\"\n"
            )
        })
        .collect();
    let text = format!(
        "name = \"t\"\ncommand = \"drill\"\nrequest_roles = [\"r\"]\napprove_roles = [\"r\"]\n{steps}"
    );
    let rb: RunbookDef = toml::from_str(&text).expect("runbook parses");
    let plan =
        Plan::resolve(&reg, &rb, BTreeMap::new(), BTreeMap::new(), "rev", false).expect("plan");
    (plan, reg)
}

#[tokio::test]
async fn steps_see_what_earlier_steps_recorded_also_after_a_resume() {
    let (p, reg) = probe_plan(&["a", "b", "c"]);
    let j = MemJournal::new(p.clone(), true);
    j.mem.lock().unwrap().approved_at_ms = Some(42);
    let engine = Engine::new(reg);
    let d = engine
        .drive(&j, 1, CancellationToken::new(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(d, Driven::Finished(Finish::Succeeded));
    let data = |j: &MemJournal, i: usize| j.mem.lock().unwrap().results[i].clone().unwrap().data;
    let first = data(&j, 0);
    assert_eq!(first["earlier"], serde_json::json!([]));
    assert_eq!(first["last_probe"], serde_json::Value::Null);
    assert_eq!(first["approved_at_ms"], 42);
    let third = data(&j, 2);
    let earlier = third["earlier"].as_array().unwrap();
    assert_eq!(earlier.len(), 2);
    assert_eq!(earlier[0]["kind"], "probe");
    assert_eq!(earlier[0]["name"], "step a");
    assert_eq!(earlier[0]["state"], "succeeded");
    assert_eq!(earlier[0]["data"]["tag"], "a");
    assert!(earlier[1]["finished_at_ms"].as_i64().unwrap() > 0);
    assert_eq!(
        third["last_probe"]["tag"], "b",
        "the latest one of the kind"
    );

    // A resumed run (another process) gets the records from the journal, not from memory.
    let j = MemJournal::new(p, true);
    {
        let mut m = j.mem.lock().unwrap();
        m.steps[0].state = StepState::Succeeded;
        m.records = vec![StepRecord {
            data: serde_json::json!({ "tag": "before the crash" }),
            finished_at_ms: Some(7),
            error: None,
        }];
        // Step b (`on_failure = "continue"`) failed for good before the crash: it is not the
        // last *succeeded* probe.
        m.steps[1].state = StepState::Failed;
    }
    let d = engine
        .drive(&j, 1, CancellationToken::new(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(d, Driven::Finished(Finish::Succeeded));
    let third = data(&j, 2);
    assert_eq!(third["earlier"][0]["data"]["tag"], "before the crash");
    assert_eq!(third["earlier"][0]["finished_at_ms"], 7);
    assert_eq!(third["earlier"][1]["state"], "failed");
    assert_eq!(third["last_probe"]["tag"], "before the crash");
    assert_eq!(third["approved_at_ms"], serde_json::Value::Null);
}

/// Resources where cluster `main` is at `url` with data directory `data_dir`.
fn cluster(url: &str, data_dir: &str) -> Arc<recovery::resources::Resources> {
    let mut r = recovery::resources::Resources::default();
    r.postgres.insert(
        "main".into(),
        recovery::resources::PgClusterDef {
            url: recovery::secret::Secret::new(url),
            bin_dir: None,
            data_dir: Some(data_dir.into()),
            os_user: None,
        },
    );
    Arc::new(r)
}

/// A plan approved while `[postgres.main]` was one cluster is not run against another: when
/// the config changed since (the host, or only the data directory), the step fails before it
/// is built, saying what it would now touch; a rotated password alone changes nothing.
#[tokio::test]
async fn a_step_whose_resources_changed_since_approval_does_not_run() {
    let registry = |resources| {
        let mut reg = Registry::with_resources(resources);
        reg.register(Arc::new(Probe));
        reg
    };
    let text = "name = \"t\"\ncommand = \"drill\"\nrequest_roles = [\"r\"]\napprove_roles = [\"r\"]\n\
                [[steps]]\nname = \"probe main\"\ntype = \"probe\"\n\
                with = { tag = \"a\", cluster = \"main\" }\non_failure = \"continue\"\n\
                [[steps]]\nname = \"after\"\ntype = \"probe\"\nwith = { tag = \"b\" }\n";
    let rb: RunbookDef = toml::from_str(text).expect("runbook parses");
    let approved = registry(cluster("postgres://u:old@db-a:5432/app", "/data/a"));
    let p = Plan::resolve(
        &approved,
        &rb,
        BTreeMap::new(),
        BTreeMap::new(),
        "rev",
        false,
    )
    .expect("plan");
    assert_eq!(p.steps[0].touches, ["cluster main (db-a:5432/app)"]);
    assert_eq!(p.steps[0].resources.len(), 64);
    for (url, data, runs) in [
        ("postgres://u:old@db-b:5432/app", "/data/a", false),
        ("postgres://u:old@db-a:5432/app", "/data/b", false),
        ("postgres://u:new@db-a:5432/app", "/data/a", true),
    ] {
        let j = MemJournal::new(p.clone(), true);
        let d = Engine::new(registry(cluster(url, data)))
            .drive(&j, 1, CancellationToken::new(), CancellationToken::new())
            .await
            .unwrap();
        if runs {
            assert_eq!(d, Driven::Finished(Finish::Succeeded), "{url} {data}");
            continue;
        }
        let Driven::Finished(Finish::Failed { step: 0, error }) = d else {
            panic!("{url} {data}: {d:?}")
        };
        assert!(
            error.contains("changed since the plan was approved")
                && error.contains("(now: cluster main (db-")
                && !error.contains("old"),
            "{error}"
        );
        assert!(
            j.mem.lock().unwrap().results[0]
                .as_ref()
                .is_some_and(|r| r.data.is_null()),
            "the step never ran"
        );
        assert!(
            j.mem.lock().unwrap().results[1].is_none(),
            "nothing after it runs, `on_failure = \"continue\"` or not"
        );
    }
}

/// A step that never looks at its cancellation token is dropped the stop grace after it was
/// told to stop: the drive ends (interrupted) instead of outliving the process's lease.
#[tokio::test]
async fn a_step_that_ignores_its_stop_is_dropped() {
    let (p, reg) = probe_plan(&["deaf", "after"]);
    let j = MemJournal::new(p, true);
    let engine = Engine::new(reg).with_stop_grace(Duration::from_millis(200));
    let stop = CancellationToken::new();
    let told = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        told.cancel();
    });
    let d = tokio::time::timeout(
        Duration::from_secs(30),
        engine.drive(&j, 1, CancellationToken::new(), stop),
    )
    .await
    .expect("the drive ended although the step ignored its stop")
    .unwrap();
    assert_eq!(d, Driven::Interrupted);
    let results = j.mem.lock().unwrap().results.clone();
    assert!(
        results.iter().all(Option::is_none),
        "nothing recorded: {results:?}"
    );
}
