//! Config entries for the infrastructure steps act on: Kubernetes clusters (`[kubernetes.<name>]`),
//! DNS zones (`[dns.<name>]`) and Redis servers (`[redis.<name>]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[kubernetes.<name>]`: how to reach one Kubernetes cluster (by convention, a region's
/// cluster is named after the region).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeClusterDef {
    /// kubeconfig file. Default: `$KUBECONFIG`, else `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Context inside the kubeconfig (the seed plan's `--context=dr-cluster`). Default: the
    /// kubeconfig's current context.
    #[serde(default)]
    pub context: Option<String>,
    /// Use the pod's service account (drbot running inside this cluster) instead of a
    /// kubeconfig: the API server from `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`
    /// (HTTPS), the bearer token from `<service_account_dir>/token` (re-read as it rotates),
    /// the CA from `<service_account_dir>/ca.crt`.
    #[serde(default)]
    pub in_cluster: bool,
    /// With `in_cluster`: the directory holding the service account's `token`, `ca.crt` and
    /// `namespace`. Default `/var/run/secrets/kubernetes.io/serviceaccount`, where Kubernetes
    /// mounts it.
    #[serde(default)]
    pub service_account_dir: Option<PathBuf>,
    /// API server URL, bypassing kubeconfig (API proxies, tests).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Bearer token sent to `api_url`. Never shown or logged.
    #[serde(default, skip_serializing)]
    pub token: Option<Secret>,
}

/// Format of a `file` DNS provider's record file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsFileFormat {
    /// `address name` lines, as in `/etc/hosts` (A records only).
    #[default]
    Hosts,
    /// A JSON object of records keyed by name.
    Json,
}

/// `[dns.<name>]`: a DNS zone that `dns_switch` changes records in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "provider", rename_all = "snake_case")]
pub enum DnsZoneDef {
    /// Amazon Route53 (or a Route53-compatible API). Credentials come from the standard AWS
    /// chain.
    Route53 {
        /// Hosted zone id, e.g. `Z123EXAMPLE`.
        hosted_zone_id: String,
        /// AWS region for the client (Route53 is global; default `us-east-1`).
        #[serde(default)]
        region: Option<String>,
        /// Endpoint override (tests, Route53-compatible services).
        #[serde(default)]
        endpoint: Option<String>,
    },
    /// A local record file, for demos and machines without a DNS API.
    File {
        /// The record file; created when missing.
        path: PathBuf,
        /// `hosts` (default) or `json`.
        #[serde(default)]
        format: DnsFileFormat,
    },
}

impl DnsZoneDef {
    /// Where the zone is, for plans and logs.
    pub fn display(&self) -> String {
        match self {
            Self::Route53 { hosted_zone_id, .. } => format!("route53 {hosted_zone_id}"),
            Self::File { path, .. } => format!("file {}", path.display()),
        }
    }
}

/// `[redis.<name>]`: one Redis server (by convention a region's is named after it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisDef {
    /// `redis://[:password@]host:port[/db]`. Never shown or logged.
    #[serde(skip_serializing)]
    pub url: Secret,
}

impl RedisDef {
    /// `host:port` of the URL without credentials, for plans and logs.
    pub fn display(&self) -> String {
        let url = self.url.expose();
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
        rest.split('/').next().unwrap_or(rest).to_string()
    }
}

impl KubeClusterDef {
    /// How the cluster is reached, for plans and logs.
    pub fn display(&self) -> String {
        if let Some(url) = &self.api_url {
            return url.clone();
        }
        if self.in_cluster {
            return "in-cluster".into();
        }
        match &self.context {
            Some(c) => format!("context {c}"),
            None => "current context".into(),
        }
    }
}
