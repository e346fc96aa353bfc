//! The workloads steps scale: a Deployment or StatefulSet addressed by kind, namespace and name;
//! reading its replica counts and setting `spec.replicas` through the `scale` subresource
//! (so a role that may only patch `deployments/scale` is enough), and counting the pods its
//! selector still matches (a scale to 0 is done only when none is left, terminating ones
//! included).

use std::fmt;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde::Deserialize;

/// Which kind of workload a step addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// `apps/v1` Deployment (the default).
    #[default]
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The lower-case kind used in parameters and messages: `deployment`, `statefulset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
        }
    }
    /// The API resource name: `deployments`, `statefulsets`.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
        }
    }
}

/// One workload: `deployment apex/apex-api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// Replica counts of a workload as its controller last reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// `spec.replicas` (1 when unset, as the API server defaults it).
    pub desired: u32,
    /// `status.replicas`: pods the controller has created and not yet deleted.
    pub current: u32,
    /// `status.readyReplicas` (0 when absent).
    pub ready: u32,
    /// `status.availableReplicas` (0 when absent).
    pub available: u32,
    /// `status.updatedReplicas` (0 when absent).
    pub updated: u32,
    /// Whether the controller has seen the latest spec (`status.observedGeneration` ≥
    /// `metadata.generation`); until then the status counts describe an older spec.
    pub observed: bool,
}

fn count(v: Option<i32>) -> u32 {
    v.unwrap_or(0).max(0) as u32
}

fn observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Reads the workload's replica counts.
pub async fn read(client: &kube::Client, target: &Target) -> Result<Replicas, kube::Error> {
    Ok(read_with_selector(client, target).await?.0)
}

/// Reads the workload's replica counts and its pod selector as a label selector string
/// (`app=worker,tier in (a,b)`), or why the selector cannot be used to find its pods.
pub async fn read_with_selector(
    client: &kube::Client,
    target: &Target,
) -> Result<(Replicas, Result<String, String>), kube::Error> {
    Ok(match target.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &target.namespace);
            let d = api.get(&target.name).await?;
            let status = d.status.unwrap_or_default();
            let selector = selector_string(d.spec.as_ref().map(|s| &s.selector));
            let replicas = Replicas {
                desired: count(d.spec.and_then(|s| s.replicas).or(Some(1))),
                current: count(status.replicas),
                ready: count(status.ready_replicas),
                available: count(status.available_replicas),
                updated: count(status.updated_replicas),
                observed: observed(d.metadata.generation, status.observed_generation),
            };
            (replicas, selector)
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), &target.namespace);
            let s = api.get(&target.name).await?;
            let status = s.status.unwrap_or_default();
            let selector = selector_string(s.spec.as_ref().map(|s| &s.selector));
            let replicas = Replicas {
                desired: count(s.spec.and_then(|s| s.replicas).or(Some(1))),
                current: count(Some(status.replicas)),
                ready: count(status.ready_replicas),
                available: count(status.available_replicas),
                updated: count(status.updated_replicas),
                observed: observed(s.metadata.generation, status.observed_generation),
            };
            (replicas, selector)
        }
    })
}

/// A workload's `spec.selector` as a label selector string. An empty selector would match
/// every pod of the namespace, so it is refused rather than waited on.
fn selector_string(selector: Option<&LabelSelector>) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(sel) = selector {
        for (k, v) in sel.match_labels.iter().flatten() {
            parts.push(format!("{k}={v}"));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.as_deref().unwrap_or_default().join(",");
            parts.push(match e.operator.as_str() {
                "In" => format!("{} in ({values})", e.key),
                "NotIn" => format!("{} notin ({values})", e.key),
                "Exists" => e.key.clone(),
                "DoesNotExist" => format!("!{}", e.key),
                other => {
                    return Err(format!(
                        "its spec.selector uses the unknown operator `{other}` on `{}`",
                        e.key
                    ));
                }
            });
        }
    }
    if parts.is_empty() {
        return Err("its spec.selector is empty, so it names no pods of its own".into());
    }
    Ok(parts.join(","))
}

/// Pods matching `selector` in `namespace` that still run or are terminating (phase neither
/// `Succeeded` nor `Failed`: an evicted pod left behind does not count); returns how many,
/// and how many of those are terminating.
pub async fn live_pods(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> Result<(u32, u32), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api.list(&ListParams::default().labels(selector)).await?;
    let mut live = 0u32;
    let mut terminating = 0u32;
    for p in &pods.items {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        live = live.saturating_add(1);
        if p.metadata.deletion_timestamp.is_some() {
            terminating = terminating.saturating_add(1);
        }
    }
    Ok((live, terminating))
}

/// Sets `spec.replicas` with a merge patch on the `scale` subresource; returns the replicas
/// the API server stored.
pub async fn scale(
    client: &kube::Client,
    target: &Target,
    replicas: u32,
) -> Result<u32, kube::Error> {
    let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
    let params = PatchParams::default();
    let scale = match target.kind {
        WorkloadKind::Deployment => {
            Api::<Deployment>::namespaced(client.clone(), &target.namespace)
                .patch_scale(&target.name, &params, &patch)
                .await?
        }
        WorkloadKind::StatefulSet => {
            Api::<StatefulSet>::namespaced(client.clone(), &target.namespace)
                .patch_scale(&target.name, &params, &patch)
                .await?
        }
    };
    Ok(count(scale.spec.and_then(|s| s.replicas)))
}

/// Checks a namespace (a DNS-1123 label) or object name (a DNS-1123 subdomain) given as a
/// step parameter, so a typo fails at `check-config` rather than as an odd API path.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), String> {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if value.is_empty() {
        return Err(format!("{field}: must not be empty"));
    }
    if value.len() > max
        || !ok_chars
        || !ok_ends(value.chars().next())
        || !ok_ends(value.chars().last())
        || (max == 63 && value.contains('.'))
    {
        return Err(format!(
            "{field}: `{value}` is not a valid Kubernetes name (lower-case letters, digits and \
             '-', at most {max} characters, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_display() {
        assert!(check_name("name", "apex-api", 253).is_ok());
        assert!(check_name("name", "apex.api", 253).is_ok());
        assert!(check_name("namespace", "apex.api", 63).is_err());
        assert!(check_name("name", "Apex", 253).is_err());
        assert!(check_name("name", "../x", 253).is_err());
        assert!(check_name("name", "-x", 253).is_err());
        assert_eq!(
            check_name("name", "", 253).unwrap_err(),
            "name: must not be empty"
        );
        let t = Target {
            kind: WorkloadKind::StatefulSet,
            namespace: "apex".into(),
            name: "db".into(),
        };
        assert_eq!(t.to_string(), "statefulset apex/db");
        assert!(observed(Some(2), Some(2)));
        assert!(!observed(Some(3), Some(2)));
        assert!(!observed(Some(1), None));
        assert!(observed(None, None));
    }

    #[test]
    fn selectors_become_label_selector_strings() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let req = |key: &str, operator: &str, values: Option<Vec<&str>>| LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.map(|v| v.into_iter().map(String::from).collect()),
        };
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "worker".to_string())].into()),
            match_expressions: Some(vec![
                req("tier", "In", Some(vec!["a", "b"])),
                req("canary", "NotIn", Some(vec!["yes"])),
                req("team", "Exists", None),
                req("legacy", "DoesNotExist", None),
            ]),
        };
        assert_eq!(
            selector_string(Some(&sel)).unwrap(),
            "app=worker,tier in (a,b),canary notin (yes),team,!legacy"
        );
        assert!(selector_string(None).unwrap_err().contains("empty"));
        assert!(
            selector_string(Some(&LabelSelector::default()))
                .unwrap_err()
                .contains("empty")
        );
        let odd = LabelSelector {
            match_expressions: Some(vec![req("x", "Near", None)]),
            ..Default::default()
        };
        assert!(selector_string(Some(&odd)).unwrap_err().contains("`Near`"));
    }
}
