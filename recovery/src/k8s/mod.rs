//! Kubernetes clusters named by `[kubernetes.<name>]`: finding one, building a `kube` client for
//! it, reading and scaling Deployments and StatefulSets, and turning API failures into clear
//! step errors.
//!
//! - [`client`]: `api_url` + `token`, the pod's service account (`in_cluster`), or a
//!   kubeconfig file with an optional context.
//! - [`workload`]: the object a step addresses (`deployment apex/apex-api`), its replica counts,
//!   and scaling through the `scale` subresource.
//! - [`count`]: replica counts given as numbers or as strings a command argument fills.
//! - [`errors`]: 404, 403 and unreachable API servers as fatal or retryable step errors.

pub mod client;
pub mod count;
pub mod errors;
pub mod workload;

use std::future::Future;

use crate::{
    resources::{KubeClusterDef, Resources},
    step::{StepContext, StepError},
    steps::values::is_placeholder,
};

/// Runs `fut` unless the step is cancelled first (then a retryable `cancelled` error, as
/// other steps report it).
pub async fn or_cancel<T>(ctx: &StepContext, fut: impl Future<Output = T>) -> Result<T, StepError> {
    tokio::select! {
        v = fut => Ok(v),
        _ = ctx.cancel.cancelled() => Err(StepError::retryable("cancelled")),
    }
}

/// For `StepKind::validate`: the namespace and name of a workload are valid Kubernetes names
/// (placeholders are accepted until the plan is resolved).
pub fn check_address(namespace: &str, name: &str) -> Result<(), String> {
    if !is_placeholder(namespace) {
        workload::check_name("namespace", namespace, 63)?;
    }
    if !is_placeholder(name) {
        workload::check_name("name", name, 253)?;
    }
    Ok(())
}

/// The cluster called `name`, or an error naming the known ones.
pub fn cluster<'a>(resources: &'a Resources, name: &str) -> Result<&'a KubeClusterDef, String> {
    resources.kubernetes.get(name).ok_or_else(|| {
        let known: Vec<&str> = resources.kubernetes.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("unknown Kubernetes cluster `{name}` (no [kubernetes.<name>] is configured)")
        } else {
            format!(
                "unknown Kubernetes cluster `{name}` (known: {})",
                known.join(", ")
            )
        }
    })
}

/// For `StepKind::validate`: `name` must be a configured cluster, unless it still holds an
/// unresolved `{placeholder}` (checked again once the plan is resolved). `field` prefixes the
/// error, e.g. `kube: unknown Kubernetes cluster …`.
pub fn check_cluster(resources: &Resources, field: &str, name: &str) -> Result<(), String> {
    if is_placeholder(name) {
        return Ok(());
    }
    if name.trim().is_empty() {
        return Err(format!("{field}: must name a [kubernetes.<name>] cluster"));
    }
    cluster(resources, name)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_clusters_name_the_known_ones() {
        let mut r = Resources::default();
        assert_eq!(
            check_cluster(&r, "kube", "apex").unwrap_err(),
            "kube: unknown Kubernetes cluster `apex` (no [kubernetes.<name>] is configured)"
        );
        r.kubernetes
            .insert("us-east-1".into(), KubeClusterDef::default());
        r.kubernetes
            .insert("us-west-2".into(), KubeClusterDef::default());
        assert_eq!(
            check_cluster(&r, "kube", "eu").unwrap_err(),
            "kube: unknown Kubernetes cluster `eu` (known: us-east-1, us-west-2)"
        );
        assert!(check_cluster(&r, "kube", "{region}").is_ok());
        assert!(check_cluster(&r, "kube", "us-west-2").is_ok());
        assert_eq!(
            check_cluster(&r, "kube", " ").unwrap_err(),
            "kube: must name a [kubernetes.<name>] cluster"
        );
    }
}
