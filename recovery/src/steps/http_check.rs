//! `http_check` step: checks an HTTP(S) health endpoint `count` times, `interval` apart (the
//! seed plan's "10 checks, 5 s apart").
//!
//! A check passes when the answer has the expected status and, when asked, a body that
//! contains a string and JSON fields with given values. In `mode = "all"` (default) every
//! check must pass; in `mode = "until"` the step polls until `count` consecutive checks pass
//! ("wait until health is green"), bounded by `max_wait` or else by the step's timeout. Each
//! check reports one progress line; a failure names the check and shows a short body snippet.
//!
//! Redirects are not followed: the step judges the URL's own answer, so a health URL that
//! redirects to an SSO login or a maintenance page answering 200 fails (naming the status and
//! where it points, without the query string) unless `expect_status` is that 3xx status.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use crate::{
    registry::{StepKind, StepTraits, params},
    step::{Step, StepContext, StepError, StepOutput},
    steps::values::is_placeholder,
};

/// Largest part of a body read for the checks.
const MAX_BODY: usize = 1024 * 1024;
/// Characters of body shown in failure messages.
const SNIPPET: usize = 160;

/// Parameters of an `http_check` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckParams {
    /// URL to check (http or https).
    pub url: String,
    /// `GET` (default) or `HEAD` (status only, no body checks).
    #[serde(default)]
    pub method: HttpMethod,
    /// Extra request headers, e.g. `{ Authorization = "Bearer …" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Status every passing answer has (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Text the body must contain.
    #[serde(default)]
    pub expect_body_contains: Option<String>,
    /// JSON fields the body must have: `[{ path = "/status", equals = "ok" }]`; `path` is a
    /// JSON pointer (`/checks/db`) or dotted (`checks.db`, `items.0.name`).
    #[serde(default)]
    pub expect_json: Vec<JsonExpect>,
    /// `all` (default): `count` checks, every one must pass. `until`: poll until `count`
    /// consecutive checks pass.
    #[serde(default)]
    pub mode: CheckMode,
    /// How many checks must pass (default 1); consecutive ones in `until` mode.
    #[serde(default = "default_count")]
    pub count: u32,
    /// Pause between checks, e.g. `"5s"` (default 5 s).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Time limit of one request (default 10 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// `until` mode only: give up after this long, e.g. `"10m"`, failing with the last
    /// problem seen. Default: poll until the step's timeout.
    #[serde(default)]
    pub max_wait: Option<String>,
}

/// One expected JSON field of the body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonExpect {
    /// JSON pointer (`/status`) or dotted path (`status.db`).
    pub path: String,
    /// The value the field must equal (any JSON value).
    pub equals: serde_json::Value,
}

/// Request method of an `http_check`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum HttpMethod {
    /// Fetches status and body.
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    /// Fetches the status only.
    #[serde(rename = "HEAD", alias = "head")]
    Head,
}

/// How checks are counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMode {
    /// `count` checks, every one must pass.
    #[default]
    All,
    /// Poll until `count` consecutive checks pass.
    Until,
}

fn default_status() -> u16 {
    200
}
fn default_count() -> u32 {
    1
}
fn default_interval() -> String {
    "5s".into()
}
fn default_request_timeout() -> String {
    "10s".into()
}

/// The `http_check` step type (read-only).
pub struct HttpCheckKind;

/// Checked parameters with durations parsed and JSON paths turned into pointers.
struct Parsed {
    p: HttpCheckParams,
    interval: Duration,
    timeout: Duration,
    max_wait: Option<Duration>,
    pointers: Vec<String>,
}

fn duration(key: &str, v: &str) -> Result<Duration, String> {
    crate::steps::values::duration(key, v)
}

fn parse(p: &serde_json::Value) -> Result<Parsed, String> {
    let p: HttpCheckParams = params(p)?;
    let interval = duration("interval", &p.interval)?;
    let timeout = duration("request_timeout", &p.request_timeout)?;
    if timeout.is_zero() {
        return Err("request_timeout: must be more than zero".into());
    }
    if p.count == 0 {
        return Err("count: must be at least 1".into());
    }
    if !(100..=599).contains(&p.expect_status) {
        return Err(format!(
            "expect_status: {} is not an HTTP status",
            p.expect_status
        ));
    }
    let max_wait = match (&p.max_wait, p.mode) {
        (Some(_), CheckMode::All) => {
            return Err("max_wait: only applies to mode = \"until\"".into());
        }
        (Some(w), CheckMode::Until) => Some(duration("max_wait", w)?),
        (None, _) => None,
    };
    if p.method == HttpMethod::Head {
        if p.expect_body_contains.is_some() {
            return Err("expect_body_contains: a HEAD answer has no body (use GET)".into());
        }
        if !p.expect_json.is_empty() {
            return Err("expect_json: a HEAD answer has no body (use GET)".into());
        }
    }
    if p.expect_body_contains.as_deref() == Some("") {
        return Err("expect_body_contains: must not be empty".into());
    }
    let pointers = p
        .expect_json
        .iter()
        .enumerate()
        .map(|(i, e)| json_pointer(&e.path).map_err(|m| format!("expect_json[{i}].path: {m}")))
        .collect::<Result<Vec<_>, _>>()?;
    for (name, value) in &p.headers {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("headers: `{name}` is not a valid header name"))?;
        if !is_placeholder(value) {
            HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: not a valid header value"))?;
        }
    }
    Ok(Parsed {
        p,
        interval,
        timeout,
        max_wait,
        pointers,
    })
}

/// `/a/b` as it is, `a.b.0` as `/a/b/0`.
fn json_pointer(path: &str) -> Result<String, String> {
    let path = path.trim();
    if path.is_empty() {
        return Err("must not be empty (use `/status` or `status.db`)".into());
    }
    if path.starts_with('/') {
        return Ok(path.to_string());
    }
    let mut out = String::new();
    for seg in path.split('.') {
        if seg.is_empty() {
            return Err(format!("`{path}` has an empty segment"));
        }
        out.push('/');
        out.push_str(&seg.replace('~', "~0").replace('/', "~1"));
    }
    Ok(out)
}

impl StepKind for HttpCheckKind {
    fn name(&self) -> &'static str {
        "http_check"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        let parsed = parse(p)?;
        let url = &parsed.p.url;
        if !is_placeholder(url) {
            check_url(url)?;
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        let Parsed {
            p: params,
            interval,
            timeout,
            max_wait,
            pointers,
        } = parse(p)?;
        let url = check_url(&params.url)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &params.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: `{name}` is not a valid header name"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = shared_client()?;
        Ok(Box::new(HttpCheck {
            shown: shown_url(&url),
            params,
            url,
            headers,
            interval,
            max_wait,
            pointers,
            client,
            timeout,
        }))
    }
}

fn check_url(url: &str) -> Result<reqwest::Url, String> {
    // Never echoed as written: `${NAME}`s are expanded by now, and a password or a token may
    // hold any character. A URL that parses is shown without them.
    let u = reqwest::Url::parse(url).map_err(|e| format!("url: not a valid URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "url: `{}` is not an http or https URL",
            shown_url(&u)
        ));
    }
    Ok(u)
}

/// The URL without a password, for messages.
fn shown_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    // A query often carries a token (`?key=${HEALTH_KEY}`): its names stay, its values go.
    if u.query().is_some() {
        let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.set_query(None);
        let mut q = u.query_pairs_mut();
        for name in &names {
            q.append_pair(name, "***");
        }
    }
    u.to_string()
}

/// A runnable `http_check` step.
pub struct HttpCheck {
    params: HttpCheckParams,
    url: reqwest::Url,
    shown: String,
    headers: HeaderMap,
    interval: Duration,
    max_wait: Option<Duration>,
    pointers: Vec<String>,
    client: reqwest::Client,
    /// Bound on each request, from connecting to the end of the body.
    timeout: Duration,
}

/// The HTTP client every health check shares. Building a client loads the system's root
/// certificates (about 17 million instructions), which each attempt of each check step did
/// when it built its own client. It keeps no idle connections: each check connects afresh
/// (as a user would), and no pooled connection outlives the runtime that opened it. It
/// follows no redirects: a 302 to a login page is the URL's answer, not the login page's.
fn shared_client() -> Result<reqwest::Client, String> {
    static CLIENT: std::sync::LazyLock<Result<reqwest::Client, String>> =
        std::sync::LazyLock::new(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| format!("http client: {e}"))
        });
    CLIENT.clone()
}

/// The outcome of one check.
struct Outcome {
    /// Status, when an answer came.
    status: Option<u16>,
    /// Why it failed, `None` when it passed.
    problem: Option<String>,
    millis: u128,
}

impl HttpCheck {
    /// What a passing answer looks like, for summaries.
    fn criteria(&self) -> String {
        let mut parts = vec![format!("status {}", self.params.expect_status)];
        if let Some(s) = &self.params.expect_body_contains {
            parts.push(format!("body contains `{s}`"));
        }
        for e in &self.params.expect_json {
            parts.push(format!("{} = {}", e.path, e.equals));
        }
        parts.join(", ")
    }

    /// Sends one request and judges the answer.
    async fn check_once(&self) -> Outcome {
        let started = Instant::now();
        let method = match self.params.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Head => reqwest::Method::HEAD,
        };
        let res = self
            .client
            .request(method, self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .send()
            .await;
        let resp = match res {
            Ok(r) => r,
            Err(e) => {
                return Outcome {
                    status: None,
                    problem: Some(format!("unreachable: {}", error_chain(&e.without_url()))),
                    millis: started.elapsed().as_millis(),
                };
            }
        };
        let status = resp.status().as_u16();
        let redirect = resp
            .status()
            .is_redirection()
            .then(|| redirect_target(&self.url, resp.headers()));
        let body = match self.params.method {
            HttpMethod::Head => Ok(Vec::new()),
            HttpMethod::Get => read_body(resp).await,
        };
        let millis = started.elapsed().as_millis();
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                return Outcome {
                    status: Some(status),
                    problem: Some(format!(
                        "answered {status}, but reading the body failed: {e}"
                    )),
                    millis,
                };
            }
        };
        Outcome {
            status: Some(status),
            problem: self.judge(status, redirect.as_deref(), &body),
            millis,
        }
    }

    /// `None` when the answer passes, else why not. `redirect` is where a 3xx answer points.
    fn judge(&self, status: u16, redirect: Option<&str>, body: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(body);
        let with_body = |msg: String| {
            if text.trim().is_empty() {
                format!("{msg} (empty body)")
            } else {
                format!("{msg}; body: {}", snippet(&text))
            }
        };
        if status != self.params.expect_status {
            if let Some(to) = redirect {
                return Some(format!(
                    "answered {status} (redirect to {to}, not followed), expected {}",
                    self.params.expect_status
                ));
            }
            return Some(with_body(format!(
                "answered {status}, expected {}",
                self.params.expect_status
            )));
        }
        if let Some(s) = &self.params.expect_body_contains
            && !text.contains(s.as_str())
        {
            return Some(with_body(format!("body does not contain `{s}`")));
        }
        if self.params.expect_json.is_empty() {
            return None;
        }
        let doc: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Some(with_body(format!("body is not JSON ({e})"))),
        };
        for (e, pointer) in self.params.expect_json.iter().zip(&self.pointers) {
            match doc.pointer(pointer) {
                None => return Some(with_body(format!("`{}` is missing", e.path))),
                Some(v) if *v != e.equals => {
                    return Some(format!(
                        "`{}` is {}, expected {}",
                        e.path,
                        clip(&v.to_string()),
                        e.equals
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Sleeps `interval` unless cancelled.
    async fn pause(&self, ctx: &StepContext) -> Result<(), StepError> {
        tokio::select! {
            _ = tokio::time::sleep(self.interval) => Ok(()),
            _ = ctx.cancel.cancelled() => Err(StepError::retryable("cancelled")),
        }
    }

    async fn run_all(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let n = self.params.count;
        let started = Instant::now();
        let mut log = Vec::new();
        let mut last_status = None;
        for i in 1..=n {
            let o = tokio::select! {
                o = self.check_once() => o,
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
            };
            last_status = o.status.or(last_status);
            if let Some(problem) = o.problem {
                let msg = format!("check {i}/{n}: {} {}", self.shown, problem);
                ctx.progress.line(format!("check {i}/{n}: {problem}"));
                log.push(msg.clone());
                return Err(StepError::retryable(msg).with_log(log.join("\n")));
            }
            let line = format!(
                "check {i}/{n}: {} in {} ms",
                o.status.unwrap_or(0),
                o.millis
            );
            ctx.progress.line(line.clone());
            log.push(line);
            if i < n {
                self.pause(ctx).await?;
            }
        }
        Ok(StepOutput {
            summary: format!(
                "{n}/{n} checks of {} passed ({})",
                self.shown,
                self.criteria()
            ),
            log: log.join("\n"),
            data: json!({
                "mode": "all",
                "url": self.shown,
                "checks": n,
                "passes": n,
                "last_status": last_status,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            }),
        })
    }

    async fn run_until(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let need = self.params.count;
        let started = Instant::now();
        let mut log: Vec<String> = Vec::new();
        let mut streak = 0u32;
        let mut checks = 0u64;
        let mut failures = 0u64;
        let mut last_problem: Option<String> = None;
        let mut last_status = None;
        loop {
            checks += 1;
            let o = tokio::select! {
                o = self.check_once() => o,
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
            };
            last_status = o.status.or(last_status);
            let line = match o.problem {
                None => {
                    streak += 1;
                    format!(
                        "check {checks}: {} in {} ms, {streak}/{need} consecutive passes",
                        o.status.unwrap_or(0),
                        o.millis
                    )
                }
                Some(problem) => {
                    streak = 0;
                    failures += 1;
                    let line = format!("check {checks}: {problem} (0/{need} consecutive passes)");
                    last_problem = Some(problem);
                    line
                }
            };
            ctx.progress.line(line.clone());
            log.push(line);
            if log.len() > 200 {
                log.drain(..100);
                log.insert(0, "… earlier checks trimmed …".into());
            }
            if streak >= need {
                let secs = started.elapsed().as_secs_f64();
                return Ok(StepOutput {
                    summary: format!(
                        "{} healthy after {checks} checks in {secs:.1} s: {need} consecutive \
                         passes ({})",
                        self.shown,
                        self.criteria()
                    ),
                    log: log.join("\n"),
                    data: json!({
                        "mode": "until",
                        "url": self.shown,
                        "checks": checks,
                        "failures": failures,
                        "consecutive_passes": streak,
                        "last_status": last_status,
                        "elapsed_ms": started.elapsed().as_millis() as u64,
                    }),
                });
            }
            if let Some(max) = self.max_wait
                && started.elapsed() + self.interval > max
            {
                let msg = format!(
                    "{} not healthy within {}: {streak}/{need} consecutive passes after \
                     {checks} checks; last problem: {}",
                    self.shown,
                    humantime::format_duration(max),
                    last_problem.as_deref().unwrap_or("none")
                );
                return Err(StepError::retryable(msg).with_log(log.join("\n")));
            }
            self.pause(ctx).await?;
        }
    }
}

#[async_trait]
impl Step for HttpCheck {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        match self.params.mode {
            CheckMode::All => self.run_all(ctx).await,
            CheckMode::Until => self.run_until(ctx).await,
        }
    }
}

/// Where a redirect points, for messages: scheme, host, port and path of its `Location`
/// (resolved against the checked URL), never its user info, query string or fragment, which
/// can carry tokens.
fn redirect_target(base: &reqwest::Url, headers: &HeaderMap) -> String {
    let Some(location) = headers.get(reqwest::header::LOCATION) else {
        return "no Location header".into();
    };
    let Some(mut u) = location
        .to_str()
        .ok()
        .and_then(|l| base.join(l.trim()).ok())
    else {
        return "an unparsable Location".into();
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    clip(u.as_str())
}

/// Reads at most [`MAX_BODY`] bytes of the body.
async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| error_chain(&e.without_url()))?
    {
        let room = MAX_BODY - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_BODY {
            break;
        }
    }
    Ok(out)
}

/// The start of a body on one line.
fn snippet(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    clip(&one_line)
}

fn clip(s: &str) -> String {
    if s.chars().count() <= SNIPPET {
        s.to_string()
    } else {
        let cut: String = s.chars().take(SNIPPET).collect();
        format!("{cut}…")
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_and_snippets() {
        assert_eq!(json_pointer("/status").unwrap(), "/status");
        assert_eq!(json_pointer("checks.db").unwrap(), "/checks/db");
        assert_eq!(json_pointer("a/b.0").unwrap(), "/a~1b/0");
        assert!(json_pointer("a..b").unwrap_err().contains("empty segment"));
        assert!(json_pointer(" ").is_err());
        assert_eq!(snippet("a\n  b\tc"), "a b c");
        assert_eq!(clip(&"é".repeat(200)).chars().count(), SNIPPET + 1);
        let u = reqwest::Url::parse("https://u:pw@h/x").unwrap();
        assert_eq!(shown_url(&u), "https://u:***@h/x");
        let u = reqwest::Url::parse("https://h/x?key=s3cret&v=2").unwrap();
        assert_eq!(shown_url(&u), "https://h/x?key=***&v=***");
        for bad in [
            "ftp://u:s3cret@h/x?k=s3cret",
            "http://u:s3cret@[zz/x?k=s3cret",
            "http://u:s3/cret@h/x",
            "http://u:s3?cret@h/x",
            "http://u:s3#cret@h/x",
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(!e.contains("s3"), "{e}");
        }
        assert!(
            check_url("ftp://u:pw@h/x")
                .unwrap_err()
                .contains("ftp://u:***@h/x")
        );
    }

    #[test]
    fn redirect_targets_hide_queries_and_credentials() {
        let base = reqwest::Url::parse("http://svc:8080/health").unwrap();
        let at = |loc: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                reqwest::header::LOCATION,
                HeaderValue::from_str(loc).unwrap(),
            );
            redirect_target(&base, &h)
        };
        assert_eq!(
            at("https://u:pw@sso.example/login?token=s3cret#x"),
            "https://sso.example/login"
        );
        assert_eq!(at("/maintenance?x=1"), "http://svc:8080/maintenance");
        assert_eq!(
            redirect_target(&base, &HeaderMap::new()),
            "no Location header"
        );
    }
}
