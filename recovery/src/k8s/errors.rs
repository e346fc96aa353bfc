//! Failed Kubernetes API calls as step errors: a missing object, missing RBAC rights and
//! rejected credentials are fatal and say what to fix; an unreachable or overloaded API server
//! is retryable. Messages name the object and the cluster, never the token.

use super::workload::Target;
use crate::step::StepError;

/// What a failed call was doing, for the message: `get`, `patch` or listing the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Reading the object or its scale.
    Get,
    /// Changing the scale.
    Patch,
    /// Listing the pods the workload's selector matches.
    ListPods,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Patch => "patch",
            Verb::ListPods => "list the pods of",
        }
    }
}

/// The step error for `err`, raised while doing `verb` on `target` in cluster `cluster`.
pub fn step_error(err: kube::Error, target: &Target, cluster: &str, verb: Verb) -> StepError {
    match err {
        kube::Error::Api(status) => {
            let code = status.code;
            let detail = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match code {
                403 if verb == Verb::ListPods => StepError::fatal(format!(
                    "forbidden: {detail} (cluster {cluster}; to wait until a scale to 0 has \
                     stopped every pod, drbot's account needs the RBAC verb list on pods (core \
                     group) in namespace {ns})",
                    ns = target.namespace,
                )),
                404 if verb != Verb::ListPods => {
                    StepError::fatal(format!("{target} not found in cluster {cluster}"))
                }
                403 => StepError::fatal(format!(
                    "forbidden: {detail} (cluster {cluster}; drbot's account needs the RBAC verbs \
                     get and patch on {res} and {res}/scale in group apps, namespace {ns})",
                    res = target.kind.resource(),
                    ns = target.namespace,
                )),
                401 => StepError::fatal(format!(
                    "unauthorized: cluster {cluster} rejected drbot's credentials ({detail})"
                )),
                409 | 429 | 500..=599 => StepError::retryable(format!(
                    "cluster {cluster} answered {code} to {} {target}: {detail}",
                    verb.as_str()
                )),
                _ => StepError::fatal(format!(
                    "cluster {cluster} refused to {} {target}: {code} {}: {detail}",
                    verb.as_str(),
                    status.reason
                )),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => StepError::retryable(format!(
            "cannot reach Kubernetes cluster {cluster} to {} {target}: {}",
            verb.as_str(),
            chain(&err)
        )),
        kube::Error::SerdeError(_) => StepError::fatal(format!(
            "cluster {cluster} answered {} {target} with something that is not a Kubernetes \
             object: {}",
            verb.as_str(),
            chain(&err)
        )),
        kube::Error::Auth(_) => StepError::fatal(format!(
            "Kubernetes cluster {cluster}: cannot authenticate: {}",
            chain(&err)
        )),
        other => StepError::retryable(format!(
            "Kubernetes cluster {cluster}: {} {target} failed: {}",
            verb.as_str(),
            chain(&other)
        )),
    }
}

/// The error and its sources in one line, skipping repeats (`client error (Connect): tcp
/// connect error: Connection refused (os error 111)`).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
