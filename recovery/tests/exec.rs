//! The `exec` step's output capture with real child processes: output that is not UTF-8, a
//! very long line, and a background process left holding the pipes after the command exits.

use std::time::{Duration, Instant};

use recovery::{
    registry::Registry,
    step::{ProgressSink, StepContext, StepError, StepOutput},
    steps::exec::MAX_LINE,
};
use serde_json::{Value, json};

/// Runs an `exec` step built from the registry; returns its result and its progress lines.
async fn run(params: Value) -> (Result<StepOutput, StepError>, Vec<String>) {
    let reg = Registry::builtin();
    let k = reg.get("exec").unwrap();
    k.validate(&params).unwrap();
    let step = k.build(&params).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::new(tx),
        ..Default::default()
    };
    let out = step.run(&ctx).await;
    drop(ctx);
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l);
    }
    (out, lines)
}

fn sh(script: &str) -> Value {
    json!({ "command": "sh", "args": ["-c", script] })
}

/// A byte that is not UTF-8 used to end the capture, closing the pipe: the command then died
/// of SIGPIPE on its next write.
#[tokio::test]
async fn output_that_is_not_utf8_is_kept_and_the_command_runs_on() {
    let (out, lines) = run(sh(r#"printf "\377\n"; sleep 0.1; echo ok"#)).await;
    let out = out.unwrap_or_else(|e| panic!("{}: {}", e.message, e.log));
    assert_eq!(out.summary, "`sh` exited 0");
    assert_eq!(out.log, "\u{FFFD}\nok");
    assert_eq!(lines, ["\u{FFFD}", "ok"]);
}

/// A 1 MB line without a newline keeps its first MAX_LINE bytes and says how much was dropped.
#[tokio::test]
async fn a_very_long_line_is_capped_but_read_to_its_end() {
    let mut params = sh(r#"head -c 1048576 /dev/zero | tr '\0' x; echo; echo after"#);
    // A log budget far above the line, so only the line cap can shorten it.
    params["max_output"] = json!(8 * 1024 * 1024);
    let (out, lines) = run(params).await;
    let out = out.unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(
        lines.len(),
        2,
        "{:?}",
        lines.iter().map(String::len).collect::<Vec<_>>()
    );
    let expected = format!(
        "{} … [{} more bytes of this line dropped]",
        "x".repeat(MAX_LINE),
        1_048_576 - MAX_LINE
    );
    assert_eq!(lines[0], expected);
    assert_eq!(lines[1], "after");
    assert_eq!(out.log, format!("{expected}\nafter"));

    // The same without a final newline, ended by the end of the output.
    let (out, _) = run(sh(r#"head -c 1048576 /dev/zero | tr '\0' y"#)).await;
    let log = out.unwrap().log;
    assert!(log.len() < 2 * MAX_LINE, "{} bytes kept", log.len());
    assert!(log.starts_with(&"y".repeat(1000)), "{log}");
    assert!(log.ends_with(" more bytes of this line dropped]"), "{log}");
}

/// A background process that keeps the pipes open does not hold the step until it ends.
#[tokio::test]
async fn a_background_process_holding_the_pipes_does_not_hold_the_step() {
    let started = Instant::now();
    let (out, lines) = run(sh("sleep 30 & echo started")).await;
    let took = started.elapsed();
    let out = out.unwrap_or_else(|e| panic!("{}", e.message));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(lines, ["started"]);
    assert!(
        out.log
            .starts_with("started\n… [stopped reading output 2s after `sh` exited"),
        "{}",
        out.log
    );
}
