//! `http_check` against a real loopback HTTP server whose health answer the test switches
//! between failing and passing: status, body and JSON expectations, HEAD and headers, the
//! `all` and `until` modes, cancellation and validation.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::IntoResponse,
};
use recovery::{
    registry::Registry,
    step::{ProgressSink, Step, StepContext, StepError, StepOutput},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The health endpoint's state: healthy or not, with an optional script of answers served
/// first (true = healthy), and the methods it was called with.
#[derive(Default)]
struct Health {
    healthy: AtomicBool,
    script: Mutex<VecDeque<bool>>,
    hits: AtomicUsize,
    methods: Mutex<Vec<String>>,
}

impl Health {
    fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn health(State(h): State<Arc<Health>>, method: Method) -> impl IntoResponse {
    h.hits.fetch_add(1, Ordering::SeqCst);
    h.methods.lock().unwrap().push(method.to_string());
    let scripted = h.script.lock().unwrap().pop_front();
    if scripted.unwrap_or_else(|| h.healthy.load(Ordering::SeqCst)) {
        (
            StatusCode::OK,
            axum::Json(
                json!({"status": "ok", "checks": {"db": "up", "cache": "up"}, "version": 3}),
            ),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "degraded", "checks": {"db": "down", "cache": "up"}})),
        )
    }
}

/// 200 with a body that says the database is down: only body checks catch it.
async fn lying() -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "checks": {"db": "down"}}))
}

async fn secure(headers: HeaderMap) -> impl IntoResponse {
    if headers.get("x-token").and_then(|v| v.to_str().ok()) == Some("t0k") {
        (StatusCode::OK, "welcome")
    } else {
        (StatusCode::UNAUTHORIZED, "missing token")
    }
}

async fn server() -> (String, Arc<Health>) {
    let h = Arc::new(Health::default());
    let app = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/lying", axum::routing::get(lying))
        .route("/secure", axum::routing::get(secure))
        .route("/text", axum::routing::get(|| async { "all systems go" }))
        .route(
            "/redirecting",
            axum::routing::get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "/text?session=s3cret")],
                    "see elsewhere",
                )
            }),
        )
        .with_state(h.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, h)
}

fn build(params: serde_json::Value) -> Box<dyn Step> {
    let reg = Registry::builtin();
    let k = reg.get("http_check").unwrap();
    k.validate(&params)
        .unwrap_or_else(|e| panic!("{params}: {e}"));
    k.build(&params).unwrap()
}

/// Runs a step with a given cancel token; returns its result and its progress lines.
async fn run_with(
    step: &dyn Step,
    cancel: CancellationToken,
) -> (Result<StepOutput, StepError>, Vec<String>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let ctx = StepContext {
        run_id: 1,
        step_index: 0,
        attempt: 1,
        vars: Default::default(),
        progress: ProgressSink::new(tx),
        cancel,
        ..Default::default()
    };
    let r = step.run(&ctx).await;
    drop(ctx);
    let mut lines = vec![];
    while let Some(l) = rx.recv().await {
        println!("  [http_check] {l}");
        lines.push(l);
    }
    (r, lines)
}

async fn run(params: serde_json::Value) -> (Result<StepOutput, StepError>, Vec<String>) {
    let step = build(params);
    run_with(step.as_ref(), CancellationToken::new()).await
}

#[tokio::test]
async fn all_checks_pass_with_status_body_and_json() {
    let (base, h) = server().await;
    h.set(true);
    let (r, lines) = run(json!({
        "url": format!("{base}/health"),
        "count": 3,
        "interval": "10ms",
        "expect_body_contains": "\"db\"",
        "expect_json": [
            {"path": "/status", "equals": "ok"},
            {"path": "checks.db", "equals": "up"},
            {"path": "version", "equals": 3},
        ],
    }))
    .await;
    let out = r.unwrap();
    assert_eq!(
        out.summary,
        format!(
            "3/3 checks of {base}/health passed (status 200, body contains `\"db\"`, /status = \
             \"ok\", checks.db = \"up\", version = 3)"
        )
    );
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("check 3/3: 200 in "), "{lines:?}");
    assert_eq!(out.data["checks"], 3);
    assert_eq!(h.hits(), 3);
    assert_eq!(*h.methods.lock().unwrap(), ["GET", "GET", "GET"]);
}

#[tokio::test]
async fn failures_name_the_check_and_show_the_body() {
    let (base, h) = server().await;
    h.set(false);
    let (r, lines) =
        run(json!({"url": format!("{base}/health"), "count": 10, "interval": "10ms"})).await;
    let e = r.unwrap_err();
    assert!(e.retryable);
    assert_eq!(
        e.message,
        format!(
            "check 1/10: {base}/health answered 503, expected 200; body: \
             {{\"checks\":{{\"cache\":\"up\",\"db\":\"down\"}},\"status\":\"degraded\"}}"
        )
    );
    assert_eq!(lines.len(), 1);

    // 200, but the JSON says the database is down.
    let (r, _) = run(json!({
        "url": format!("{base}/lying"),
        "expect_json": [{"path": "/status", "equals": "ok"}, {"path": "checks.db", "equals": "up"}],
    }))
    .await;
    assert_eq!(
        r.unwrap_err().message,
        format!("check 1/1: {base}/lying `checks.db` is \"down\", expected \"up\"")
    );
    let (r, _) = run(json!({
        "url": format!("{base}/lying"),
        "expect_json": [{"path": "/checks/cache", "equals": "up"}],
    }))
    .await;
    let msg = r.unwrap_err().message;
    assert!(msg.contains("`/checks/cache` is missing; body: {"), "{msg}");
    let (r, _) =
        run(json!({"url": format!("{base}/text"), "expect_json": [{"path": "a", "equals": 1}]}))
            .await;
    let msg = r.unwrap_err().message;
    assert!(
        msg.contains("body is not JSON (") && msg.ends_with("body: all systems go"),
        "{msg}"
    );
    let (r, _) =
        run(json!({"url": format!("{base}/text"), "expect_body_contains": "all is well"})).await;
    assert_eq!(
        r.unwrap_err().message,
        format!("check 1/1: {base}/text body does not contain `all is well`; body: all systems go")
    );

    // The health turns bad between checks 2 and 3 of 5: check 3 fails.
    h.set(true);
    let flipper = {
        let h = h.clone();
        let start = h.hits();
        tokio::spawn(async move {
            while h.hits() < start + 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            h.set(false);
        })
    };
    let (r, lines) =
        run(json!({"url": format!("{base}/health"), "count": 5, "interval": "300ms"})).await;
    flipper.await.unwrap();
    let e = r.unwrap_err();
    assert!(e.message.starts_with("check 3/5: "), "{}", e.message);
    assert!(lines[0].starts_with("check 1/5: 200") && lines[1].starts_with("check 2/5: 200"));
    assert!(e.log.contains("check 2/5: 200"), "{}", e.log);
}

#[tokio::test]
async fn until_mode_waits_for_consecutive_passes() {
    let (base, h) = server().await;
    // A flapping service: a pass in between failures does not count as healthy.
    h.set(true);
    h.script
        .lock()
        .unwrap()
        .extend([false, false, true, false, true, true]);
    let (r, lines) = run(json!({
        "url": format!("{base}/health"),
        "mode": "until",
        "count": 3,
        "interval": "10ms",
        "expect_json": [{"path": "status", "equals": "ok"}],
    }))
    .await;
    let out = r.unwrap();
    assert_eq!(out.data["checks"], 7);
    assert_eq!(out.data["failures"], 3);
    assert_eq!(h.hits(), 7);
    assert!(
        lines[0].starts_with("check 1: answered 503, expected 200; body: ")
            && lines[0].ends_with("(0/3 consecutive passes)"),
        "{lines:?}"
    );
    assert!(lines[2].ends_with("1/3 consecutive passes"), "{lines:?}");
    assert!(lines[3].ends_with("(0/3 consecutive passes)"), "{lines:?}");
    assert!(lines[6].ends_with("3/3 consecutive passes"), "{lines:?}");
    assert!(
        out.summary
            .starts_with(&format!("{base}/health healthy after 7 checks in ")),
        "{}",
        out.summary
    );

    // Failing until the test switches it to passing while the step polls.
    h.set(false);
    let step = build(json!({
        "url": format!("{base}/health"),
        "mode": "until",
        "count": 2,
        "interval": "20ms",
        "max_wait": "30s",
    }));
    let start = h.hits();
    let flipper = {
        let h = h.clone();
        tokio::spawn(async move {
            while h.hits() < start + 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            h.set(true);
        })
    };
    let (r, _) = run_with(step.as_ref(), CancellationToken::new()).await;
    flipper.await.unwrap();
    let out = r.unwrap();
    assert!(out.data["failures"].as_u64().unwrap() >= 4, "{}", out.data);
    assert_eq!(out.data["consecutive_passes"], 2);
}

#[tokio::test]
async fn until_mode_gives_up_at_max_wait_and_stops_on_cancel() {
    let (base, h) = server().await;
    h.set(false);
    let started = std::time::Instant::now();
    let (r, lines) = run(json!({
        "url": format!("{base}/health"),
        "mode": "until",
        "count": 2,
        "interval": "50ms",
        "max_wait": "400ms",
    }))
    .await;
    let e = r.unwrap_err();
    assert!(e.retryable);
    assert!(
        e.message.starts_with(&format!(
            "{base}/health not healthy within 400ms: 0/2 consecutive passes after "
        )) && e
            .message
            .contains("last problem: answered 503, expected 200"),
        "{}",
        e.message
    );
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // Without max_wait it polls until the step's timeout, or until cancelled.
    let step = build(json!({"url": format!("{base}/health"), "mode": "until", "interval": "20ms"}));
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let before = h.hits();
    let h2 = h.clone();
    tokio::spawn(async move {
        while h2.hits() < before + 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.cancel();
    });
    let (r, _) = tokio::time::timeout(Duration::from_secs(10), run_with(step.as_ref(), cancel))
        .await
        .expect("the step stops promptly when cancelled");
    assert_eq!(r.unwrap_err().message, "cancelled");
}

#[tokio::test]
async fn head_and_headers() {
    let (base, h) = server().await;
    h.set(true);
    let (r, _) = run(
        json!({"url": format!("{base}/health"), "method": "HEAD", "count": 2, "interval": "1ms"}),
    )
    .await;
    r.unwrap();
    assert_eq!(*h.methods.lock().unwrap(), ["HEAD", "HEAD"]);

    let (r, _) = run(json!({
        "url": format!("{base}/secure"),
        "headers": {"X-Token": "t0k"},
        "expect_body_contains": "welcome",
    }))
    .await;
    r.unwrap();
    let (r, _) =
        run(json!({"url": format!("{base}/secure"), "headers": {"X-Token": "wrong"}})).await;
    assert_eq!(
        r.unwrap_err().message,
        format!("check 1/1: {base}/secure answered 401, expected 200; body: missing token")
    );
    let (r, _) = run(json!({"url": format!("{base}/secure"), "expect_status": 401})).await;
    r.unwrap();
}

/// A health URL that redirects (to an SSO login, a maintenance page answering 200) is judged
/// by its own answer: the redirect is not followed.
#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, _h) = server().await;
    let (r, _) = run(json!({"url": format!("{base}/redirecting")})).await;
    let e = r.unwrap_err();
    assert!(e.retryable);
    assert_eq!(
        e.message,
        format!(
            "check 1/1: {base}/redirecting answered 302 (redirect to {base}/text, not \
             followed), expected 200"
        )
    );
    assert!(!e.message.contains("s3cret"), "{}", e.message);
    // A body check that the redirect's target would pass does not pass either.
    let (r, _) = run(json!({
        "url": format!("{base}/redirecting"),
        "expect_body_contains": "all systems go",
    }))
    .await;
    assert!(r.unwrap_err().message.contains("answered 302"));

    let (r, _) = run(json!({"url": format!("{base}/redirecting"), "expect_status": 302})).await;
    let out = r.unwrap();
    assert_eq!(out.data["last_status"], 302);
}

#[tokio::test]
async fn unreachable_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (r, lines) =
        run(json!({"url": format!("http://127.0.0.1:{port}/health"), "request_timeout": "2s"}))
            .await;
    let e = r.unwrap_err();
    assert!(e.retryable);
    assert!(
        e.message.starts_with(&format!(
            "check 1/1: http://127.0.0.1:{port}/health unreachable: "
        )),
        "{}",
        e.message
    );
    assert_eq!(lines.len(), 1);
}

/// A token in the URL (its query or user info, often from `${NAME}`) is never shown: not in
/// the error, its progress lines, nor the transport error's own text.
#[tokio::test]
async fn a_token_in_the_url_is_never_shown() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://probe:s3cret@127.0.0.1:{port}/health?key=s3cret&region=west");
    let (r, lines) = run(json!({"url": url, "request_timeout": "2s"})).await;
    let e = r.unwrap_err();
    let shown = format!("{} {} {lines:?}", e.message, e.log);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        e.message.contains(&format!(
            "http://probe:***@127.0.0.1:{port}/health?key=***&region=***"
        )),
        "{}",
        e.message
    );
}

#[test]
fn validation_errors() {
    let reg = Registry::builtin();
    let k = reg.get("http_check").unwrap();
    let err = |p: serde_json::Value| k.validate(&p).unwrap_err();
    let url = "http://127.0.0.1:1/health";
    k.validate(
        &json!({"url": "{region.health_url}", "headers": {"Authorization": "Bearer {token}"}}),
    )
    .unwrap();
    assert_eq!(
        err(json!({"url": url, "method": "HEAD", "expect_json": [{"path": "/a", "equals": 1}]})),
        "expect_json: a HEAD answer has no body (use GET)"
    );
    assert_eq!(
        err(json!({"url": url, "method": "HEAD", "expect_body_contains": "ok"})),
        "expect_body_contains: a HEAD answer has no body (use GET)"
    );
    assert!(
        err(json!({"url": url, "method": "POST"})).starts_with("method: unknown variant `POST`")
    );
    assert!(
        err(json!({"url": url, "mode": "sometimes"}))
            .starts_with("mode: unknown variant `sometimes`")
    );
    assert_eq!(
        err(json!({"url": url, "expect_json": [{"path": "a..b", "equals": 1}]})),
        "expect_json[0].path: `a..b` has an empty segment"
    );
    assert!(
        err(json!({"url": url, "expect_json": [{"path": "/a"}]}))
            .contains("missing field `equals`")
    );
    assert_eq!(
        err(json!({"url": url, "headers": {"bad header": "x"}})),
        "headers: `bad header` is not a valid header name"
    );
    assert_eq!(
        err(json!({"url": url, "max_wait": "1m"})),
        "max_wait: only applies to mode = \"until\""
    );
    assert!(
        err(json!({"url": url, "mode": "until", "max_wait": "soon"}))
            .starts_with("max_wait: `soon`")
    );
    assert_eq!(
        err(json!({"url": url, "count": 0})),
        "count: must be at least 1"
    );
    assert!(err(json!({"url": url, "expect": 200})).contains("unknown field `expect`"));
    assert!(err(json!({"url": "ftp://x/y"})).contains("not an http or https URL"));
    assert!(err(json!({"url": "not a url"})).contains("not a valid URL"));
}
