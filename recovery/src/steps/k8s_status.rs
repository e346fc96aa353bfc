//! `k8s_status` step: reads a Deployment's or StatefulSet's replica counts (read-only). Placed
//! before the first destructive step it runs as preflight, so the approval card shows the
//! current replicas; with `expect_ready_at_least` it also checks a minimum.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::k8s_scale::default_namespace;
use crate::{
    k8s::{
        self,
        count::Count,
        errors::{Verb, step_error},
        or_cancel,
        workload::{self, Target, WorkloadKind},
    },
    registry::{StepKind, StepTraits, params},
    resources::Resources,
    step::{Step, StepContext, StepError, StepOutput},
};

/// Parameters of a `k8s_status` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
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
    /// Fail (retryably) when fewer replicas than this are ready.
    #[serde(default)]
    pub expect_ready_at_least: Option<Count>,
}

/// The `k8s_status` step type (read-only).
pub struct StatusKind(pub Arc<Resources>);

impl StatusKind {
    fn check(&self, p: &StatusParams) -> Result<(), String> {
        k8s::check_cluster(&self.0, "kube", &p.kube)?;
        k8s::check_address(&p.namespace, &p.name)?;
        if let Some(c) = &p.expect_ready_at_least {
            c.value("expect_ready_at_least")?;
        }
        Ok(())
    }
}

impl StepKind for StatusKind {
    fn name(&self) -> &'static str {
        "k8s_status"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        self.check(&params(p)?)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        let p: StatusParams = params(p)?;
        self.check(&p)?;
        k8s::cluster(&self.0, &p.kube)?;
        workload::check_name("namespace", &p.namespace, 63)?;
        workload::check_name("name", &p.name, 253)?;
        let expect = match &p.expect_ready_at_least {
            Some(c) => Some(c.resolved("expect_ready_at_least")?),
            None => None,
        };
        Ok(Box::new(Status {
            target: Target {
                kind: p.kind,
                namespace: p.namespace,
                name: p.name,
            },
            expect,
            kube: p.kube,
            resources: self.0.clone(),
        }))
    }
}

/// A runnable `k8s_status` step.
pub struct Status {
    kube: String,
    target: Target,
    expect: Option<u32>,
    resources: Arc<Resources>,
}

#[async_trait]
impl Step for Status {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let t = &self.target;
        let def = k8s::cluster(&self.resources, &self.kube).map_err(StepError::fatal)?;
        let client = or_cancel(ctx, k8s::client::client(&self.kube, def)).await??;
        let r = or_cancel(ctx, workload::read(&client, t))
            .await?
            .map_err(|e| step_error(e, t, &self.kube, Verb::Get))?;
        let plural = if r.desired == 1 {
            "replica"
        } else {
            "replicas"
        };
        let summary = format!("{t}: {} {plural}, {} ready", r.desired, r.ready);
        if let Some(min) = self.expect
            && r.ready < min
        {
            return Err(StepError::retryable(format!(
                "{summary}; expected at least {min} ready"
            )));
        }
        Ok(StepOutput {
            summary,
            log: String::new(),
            data: json!({
                "cluster": self.kube,
                "kind": t.kind.as_str(),
                "namespace": t.namespace,
                "name": t.name,
                "replicas": r.desired,
                "current": r.current,
                "ready": r.ready,
                "available": r.available,
                "updated": r.updated,
            }),
        })
    }
}
