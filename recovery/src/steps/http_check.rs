//! `http_check` step: GETs a URL `count` times, `interval` apart; every answer must have the
//! expected status (the seed plan's "10 checks, 5 s apart").

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::{
    registry::{StepKind, StepTraits, params},
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of an `http_check` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckParams {
    /// URL to GET (http or https).
    pub url: String,
    /// Status every answer must have (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// How many checks must pass (default 1).
    #[serde(default = "default_count")]
    pub count: u32,
    /// Pause between checks, e.g. `"5s"` (default 5 s).
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Time limit of one request (default 10 s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
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

fn parse(p: &serde_json::Value) -> Result<(HttpCheckParams, Duration, Duration), String> {
    let p: HttpCheckParams = params(p)?;
    let interval = humantime::parse_duration(&p.interval).map_err(|e| format!("interval: {e}"))?;
    let timeout = humantime::parse_duration(&p.request_timeout)
        .map_err(|e| format!("request_timeout: {e}"))?;
    if p.count == 0 {
        return Err("count: must be at least 1".into());
    }
    if !(100..=599).contains(&p.expect_status) {
        return Err(format!(
            "expect_status: {} is not an HTTP status",
            p.expect_status
        ));
    }
    Ok((p, interval, timeout))
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
        let (p, _, _) = parse(p)?;
        if !p.url.contains('{') && reqwest::Url::parse(&p.url).is_err() {
            return Err(format!("url: `{}` is not a valid URL", p.url));
        }
        Ok(())
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        let (params, interval, timeout) = parse(p)?;
        let url = reqwest::Url::parse(&params.url)
            .map_err(|e| format!("url: `{}` is not a valid URL: {e}", params.url))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Box::new(HttpCheck {
            params,
            url,
            interval,
            client,
        }))
    }
}

/// A runnable `http_check` step.
pub struct HttpCheck {
    params: HttpCheckParams,
    url: reqwest::Url,
    interval: Duration,
    client: reqwest::Client,
}

#[async_trait]
impl Step for HttpCheck {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let n = self.params.count;
        let mut log = Vec::new();
        for i in 1..=n {
            let started = std::time::Instant::now();
            let res = tokio::select! {
                r = self.client.get(self.url.clone()).send() => r,
                _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
            };
            let line = match res {
                Ok(r) if r.status().as_u16() == self.params.expect_status => format!(
                    "check {i}/{n}: {} in {} ms",
                    r.status().as_u16(),
                    started.elapsed().as_millis()
                ),
                Ok(r) => {
                    let msg = format!(
                        "check {i}/{n}: {} answered {}, expected {}",
                        self.url,
                        r.status().as_u16(),
                        self.params.expect_status
                    );
                    log.push(msg.clone());
                    return Err(StepError::retryable(msg).with_log(log.join("\n")));
                }
                Err(e) => {
                    let msg = format!(
                        "check {i}/{n}: {} unreachable: {}",
                        self.url,
                        error_chain(&e)
                    );
                    log.push(msg.clone());
                    return Err(StepError::retryable(msg).with_log(log.join("\n")));
                }
            };
            ctx.progress.line(line.clone());
            log.push(line);
            if i < n {
                tokio::select! {
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = ctx.cancel.cancelled() => return Err(StepError::retryable("cancelled")),
                }
            }
        }
        Ok(StepOutput {
            summary: format!(
                "{n}/{n} checks of {} answered {}",
                self.url, self.params.expect_status
            ),
            log: log.join("\n"),
            data: serde_json::json!({ "checks": n }),
        })
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
