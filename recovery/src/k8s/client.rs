//! A `kube` client for one `[kubernetes.<name>]` entry: `api_url` (+ bearer `token`) first, else
//! the pod's service account when `in_cluster`, else a kubeconfig file (`kubeconfig`, or
//! `$KUBECONFIG` / `~/.kube/config`) with `context` or its current context. The token is held
//! as a secret by `kube` and never appears in errors or logs.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{resources::KubeClusterDef, step::StepError};

/// How long connecting to an API server may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API answer may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The client configuration for cluster `name` (named in errors). Errors are configuration
/// problems that another attempt will not fix.
pub async fn config(name: &str, def: &KubeClusterDef) -> Result<kube::Config, String> {
    let mut cfg = if let Some(url) = &def.api_url {
        let uri = url.trim().parse().map_err(|e| {
            format!("Kubernetes cluster {name}: api_url `{url}` is not a valid URL: {e}")
        })?;
        let mut cfg = kube::Config::new(uri);
        if let Some(token) = &def.token {
            cfg.auth_info.token = Some(secrecy::SecretString::from(token.expose().to_string()));
        }
        cfg
    } else if def.in_cluster {
        kube::Config::incluster().map_err(|e| {
            format!(
                "Kubernetes cluster {name}: no in-cluster service account ({e}); is drbot \
                 running in a pod of this cluster?"
            )
        })?
    } else {
        let options = KubeConfigOptions {
            context: def.context.clone(),
            ..Default::default()
        };
        let (loaded, file) = match &def.kubeconfig {
            Some(path) => {
                let file = path.display().to_string();
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| format!("Kubernetes cluster {name}: kubeconfig {file}: {e}"))?;
                (
                    kube::Config::from_custom_kubeconfig(kubeconfig, &options).await,
                    file,
                )
            }
            None => (
                kube::Config::from_kubeconfig(&options).await,
                "($KUBECONFIG or ~/.kube/config)".to_string(),
            ),
        };
        loaded.map_err(|e| match &def.context {
            Some(ctx) => {
                format!("Kubernetes cluster {name}: kubeconfig {file}, context `{ctx}`: {e}")
            }
            None => format!("Kubernetes cluster {name}: kubeconfig {file}: {e}"),
        })?
    };
    cfg.connect_timeout = Some(CONNECT_TIMEOUT);
    cfg.read_timeout = Some(READ_TIMEOUT);
    cfg.reset_reader_on_write = true;
    Ok(cfg)
}

/// A client for cluster `name`. Failures are fatal: they come from the configuration.
pub async fn client(name: &str, def: &KubeClusterDef) -> Result<kube::Client, StepError> {
    let cfg = config(name, def).await.map_err(StepError::fatal)?;
    // Both ring and aws-lc-rs are in the build, so rustls cannot pick a provider by itself;
    // `kube` builds its TLS config with the process default. Installing twice is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    kube::Client::try_from(cfg).map_err(|e| {
        StepError::fatal(format!(
            "Kubernetes cluster {name}: cannot build a client: {e}"
        ))
    })
}
