//! `k8s_scale` step: sets a Deployment's or StatefulSet's replicas through the `scale`
//! subresource, then waits until the workload has settled (the seed plan's "scale the DR
//! region up / the failed region down"). Destructive and idempotent: running it again with the
//! same target changes nothing.
//!
//! Settled means the controller has observed the new count and:
//! - for a target above 0, at least `target` replicas are ready. More is fine: an autoscaler
//!   whose `minReplicas` is above the target, or surge pods, keep more ready, and waiting for
//!   exactly `target` would time out and make a retry patch against the autoscaler;
//! - for a target of 0, no replica is ready and no pod matching the workload's
//!   `spec.selector` is left, terminating ones included: `readyReplicas` drops as soon as a
//!   pod is marked for deletion, while the pod keeps serving and writing during its grace
//!   period. This needs the RBAC verb `list` on `pods`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::values::{duration, is_placeholder};
use crate::{
    k8s::{
        self,
        count::Count,
        errors::{Verb, step_error},
        or_cancel,
        workload::{self, Replicas, Target, WorkloadKind},
    },
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `k8s_scale` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleParams {
    /// The `[kubernetes.<name>]` cluster, e.g. `"{region}"`.
    pub kube: String,
    /// Namespace of the workload (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// `deployment` (default) or `statefulset`.
    #[serde(default)]
    pub kind: WorkloadKind,
    /// Name of the Deployment or StatefulSet.
    pub name: String,
    /// Target replicas: a number, or a string such as `"{replicas}"` that resolves to one.
    pub replicas: Count,
    /// How long to wait for `readyReplicas` to reach the target, e.g. `"5m"` (default);
    /// `"0s"` sets the replicas and does not wait.
    #[serde(default = "default_wait")]
    pub wait: String,
    /// Pause between status reads while waiting (default `"2s"`).
    #[serde(default = "default_poll")]
    pub poll: String,
}

pub(crate) fn default_namespace() -> String {
    "default".into()
}
fn default_wait() -> String {
    "5m".into()
}
fn default_poll() -> String {
    "2s".into()
}

/// The `k8s_scale` step type.
pub struct ScaleKind(pub Arc<Resources>);

impl ScaleKind {
    fn check(&self, p: &ScaleParams) -> Result<(), String> {
        k8s::check_cluster(&self.0, "kube", &p.kube)?;
        k8s::check_address(&p.namespace, &p.name)?;
        p.replicas.value("replicas")?;
        if !is_placeholder(&p.wait) {
            duration("wait", &p.wait)?;
        }
        if !is_placeholder(&p.poll) && duration("poll", &p.poll)?.is_zero() {
            return Err("poll: must be longer than 0s".into());
        }
        Ok(())
    }
}

impl StepKind for ScaleKind {
    fn name(&self) -> &'static str {
        "k8s_scale"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.check(&params(p)?)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        let p: ScaleParams = params(p)?;
        self.check(&p)?;
        k8s::cluster(&self.0, &p.kube)?;
        workload::check_name("namespace", &p.namespace, 63)?;
        workload::check_name("name", &p.name, 253)?;
        Ok(Box::new(Scale {
            target: Target {
                kind: p.kind,
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            },
            replicas: p.replicas.resolved("replicas")?,
            wait: duration("wait", &p.wait)?,
            poll: duration("poll", &p.poll)?,
            kube: p.kube,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `k8s_scale` step.
pub struct Scale {
    kube: String,
    target: Target,
    replicas: u32,
    wait: Duration,
    poll: Duration,
    resources: Arc<Resources>,
}

impl Scale {
    /// Whether the replica counts have settled at the target (for a target of 0 the pods are
    /// checked as well, see the module documentation).
    fn settled(&self, r: &Replicas) -> bool {
        r.observed
            && if self.replicas == 0 {
                r.ready == 0
            } else {
                r.ready >= self.replicas
            }
    }
}

/// Pods a scale to 0 is still waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leftover {
    /// Pods still running or terminating.
    live: u32,
    /// Of those, how many are terminating.
    terminating: u32,
}

impl Leftover {
    fn describe(&self) -> String {
        let pods = if self.live == 1 { "pod" } else { "pods" };
        if self.terminating == self.live {
            format!("{} {pods} still terminating", self.live)
        } else {
            format!(
                "{} {pods} left ({} terminating)",
                self.live, self.terminating
            )
        }
    }
}

#[async_trait]
impl Step for Scale {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let started = Instant::now();
        let (t, target) = (&self.target, self.replicas);
        let def = k8s::cluster(&self.resources, &self.kube).map_err(StepError::fatal)?;
        let client = or_cancel(ctx, k8s::client::client(&self.kube, def)).await??;
        let before = or_cancel(ctx, workload::read(&client, t))
            .await?
            .map_err(|e| step_error(e, t, &self.kube, Verb::Get))?;
        let previous = before.desired;
        if previous != target {
            or_cancel(ctx, workload::scale(&client, t, target))
                .await?
                .map_err(|e| step_error(e, t, &self.kube, Verb::Patch))?;
        }
        let change = if previous == target {
            format!("{t} already at {target} replicas")
        } else {
            format!("{t} scaled {previous} → {target}")
        };
        let data = |ready: u32, waited: bool| {
            json!({
                "cluster": self.kube,
                "kind": t.kind.as_str(),
                "namespace": t.namespace,
                "name": t.name,
                "previous": previous,
                "target": target,
                "ready": ready,
                "waited": waited,
                "elapsed_ms": started.elapsed().as_millis() as u64,
            })
        };
        if self.wait.is_zero() {
            let ready = before.ready;
            ctx.progress
                .line(format!("{}: {ready}/{target} ready (not waiting)", t.name));
            return Ok(StepOutput {
                summary: format!("{change}, not waiting ({ready}/{target} ready before)"),
                log: String::new(),
                data: data(ready, false),
            });
        }
        // An absurd `wait` (say `"500000000years"`) means no deadline rather than an overflow.
        let deadline = started.checked_add(self.wait);
        let mut reported: Option<(u32, Option<Leftover>)> = None;
        let mut last: Option<Replicas> = None;
        let mut leftover: Option<Leftover> = None;
        loop {
            let last_error = match or_cancel(ctx, workload::read_with_selector(&client, t)).await? {
                Ok((r, selector)) => {
                    last = Some(r);
                    let mut pods_error = None;
                    let settled = self.settled(&r);
                    if settled && target == 0 {
                        let selector = selector.map_err(|e| {
                            StepError::fatal(format!(
                                "{t}: cannot tell whether its pods have stopped: {e}"
                            ))
                        })?;
                        match or_cancel(ctx, workload::live_pods(&client, &t.namespace, &selector))
                            .await?
                        {
                            Ok((live, terminating)) => {
                                leftover = Some(Leftover { live, terminating });
                            }
                            Err(e) => {
                                let err = step_error(e, t, &self.kube, Verb::ListPods);
                                if !err.retryable {
                                    return Err(err);
                                }
                                pods_error = Some(err.message);
                            }
                        }
                    } else {
                        leftover = None;
                    }
                    let pods_left = leftover.filter(|l| l.live > 0);
                    if reported != Some((r.ready, pods_left)) {
                        let mut line = format!("{}: {}/{target} ready", t.name, r.ready);
                        if let Some(l) = pods_left {
                            line.push_str(&format!(", {}", l.describe()));
                        }
                        ctx.progress.line(line);
                        reported = Some((r.ready, pods_left));
                    }
                    let done = settled
                        && pods_error.is_none()
                        && (target > 0 || leftover.is_some_and(|l| l.live == 0));
                    if done {
                        let secs = started.elapsed().as_secs_f64();
                        let mut summary =
                            format!("{change}, {}/{target} ready in {secs:.1}s", r.ready);
                        if r.desired != target {
                            summary.push_str(&format!(
                                " (spec.replicas is now {}, changed by something else such as \
                                 an autoscaler)",
                                r.desired
                            ));
                        }
                        return Ok(StepOutput {
                            summary,
                            log: String::new(),
                            data: data(r.ready, true),
                        });
                    }
                    pods_error
                }
                Err(e) => {
                    let err = step_error(e, t, &self.kube, Verb::Get);
                    if !err.retryable {
                        return Err(err);
                    }
                    Some(err.message)
                }
            };
            let now = Instant::now();
            let pause = match deadline {
                Some(deadline) if now >= deadline => {
                    return Err(StepError::retryable(timeout_message(
                        t, target, self.wait, last, leftover, last_error,
                    )));
                }
                Some(deadline) => self.poll.min(deadline - now),
                None => self.poll,
            };
            or_cancel(ctx, tokio::time::sleep(pause)).await?;
        }
    }
}

fn timeout_message(
    t: &Target,
    target: u32,
    wait: Duration,
    last: Option<Replicas>,
    leftover: Option<Leftover>,
    last_error: Option<String>,
) -> String {
    let wait = humantime::format_duration(wait);
    if let (Some(r), Some(l)) = (last, leftover)
        && target == 0
        && r.ready == 0
        && l.live > 0
    {
        let mut msg = format!(
            "{t}: 0/0 ready, but {} after waiting {wait} (target 0 replicas)",
            l.describe()
        );
        if let Some(e) = last_error {
            msg.push_str(&format!("; last request failed: {e}"));
        }
        return msg;
    }
    let mut msg = match last {
        Some(r) => format!(
            "{t}: {}/{target} ready after waiting {wait} (target {target} replicas)",
            r.ready
        ),
        None => format!("{t}: readiness unknown after waiting {wait} (target {target} replicas)"),
    };
    if let Some(r) = last {
        if r.desired != target {
            msg.push_str(&format!(
                "; spec.replicas is now {}, changed by something else (an autoscaler?)",
                r.desired
            ));
        } else if !r.observed {
            msg.push_str("; the controller has not yet observed the new replica count");
        }
    }
    if let Some(e) = last_error {
        msg.push_str(&format!("; last status read failed: {e}"));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::KubeClusterDef;

    fn kind() -> ScaleKind {
        let mut r = Resources::default();
        r.kubernetes.insert("dr".into(), KubeClusterDef::default());
        ScaleKind(Arc::new(r))
    }

    fn err(p: serde_json::Value) -> String {
        kind().validate(&p).unwrap_err()
    }

    #[test]
    fn validate_names_the_bad_parameter() {
        let ok = json!({ "kube": "dr", "name": "apex-api", "replicas": 5 });
        assert!(kind().validate(&ok).is_ok());
        assert!(
            kind()
                .validate(
                    &json!({ "kube": "{region}", "namespace": "{ns}", "name": "{app}",
                                   "replicas": "{n}", "wait": "{wait}" })
                )
                .is_ok()
        );
        assert_eq!(
            err(json!({ "kube": "west", "name": "a", "replicas": 1 })),
            "kube: unknown Kubernetes cluster `west` (known: dr)"
        );
        assert_eq!(
            err(json!({ "kube": "dr", "name": "a", "replicas": "many" })),
            "replicas: `many` is not a replica count (a whole number, 0 or more)"
        );
        assert!(
            err(json!({ "kube": "dr", "name": "a", "replicas": -2 }))
                .starts_with("replicas: -2 is not a replica count")
        );
        assert!(
            err(json!({ "kube": "dr", "name": "a", "replicas": 1, "kind": "daemonset" }))
                .starts_with("kind: unknown variant `daemonset`")
        );
        assert!(
            err(json!({ "kube": "dr", "name": "a", "replicas": 1, "wait": "soon" }))
                .starts_with("wait: `soon`")
        );
        assert_eq!(
            err(json!({ "kube": "dr", "name": "a", "replicas": 1, "poll": "0s" })),
            "poll: must be longer than 0s"
        );
        assert!(
            err(json!({ "kube": "dr", "name": "Apex_API", "replicas": 1 }))
                .starts_with("name: `Apex_API` is not a valid Kubernetes name")
        );
        let e = err(json!({ "kube": "dr", "name": "a", "replicas": 1, "timeout": "1m" }));
        assert!(
            e.starts_with("timeout: unknown field `timeout`, expected one of"),
            "{e}"
        );
        assert!(
            kind()
                .build(&json!({ "kube": "dr", "name": "a", "replicas": "{n}" }))
                .is_err()
        );
    }
}
