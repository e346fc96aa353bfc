//! A `kube` client for one `[kubernetes.<name>]` entry: `api_url` (+ bearer `token`) first, else
//! the pod's service account when `in_cluster`, else a kubeconfig file (`kubeconfig`, or
//! `$KUBECONFIG` / `~/.kube/config`) with `context` or its current context. The token is held
//! as a secret by `kube` and never appears in errors or logs.
//!
//! In-cluster, the config is built here rather than by `kube::Config::incluster`, so that the
//! service account directory can be configured (`service_account_dir`) and a missing piece is
//! named in the error: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the CA
//! bundle `ca.crt` (re-read by `kube` as it rotates), the token file `token` (re-read by
//! `kube` as it rotates; its content never appears in an error), and `namespace` if present.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rustls::pki_types::{CertificateDer, pem::PemObject};

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
        in_cluster(name, def, &|key| std::env::var(key).ok())?
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

/// For `check-config`, offline: a kubeconfig named by `def` (its file, else `$KUBECONFIG` or
/// `~/.kube/config` when a context is named) can be read and holds the context `def` names.
/// An API URL or in-cluster access is checked when a step first connects.
pub fn check_kubeconfig(def: &KubeClusterDef) -> Result<(), String> {
    if def.api_url.is_some() || def.in_cluster {
        return Ok(());
    }
    let (kubeconfig, file) = match &def.kubeconfig {
        Some(path) => (
            Kubeconfig::read_from(path),
            format!("kubeconfig {}", path.display()),
        ),
        None if def.context.is_some() => (
            Kubeconfig::read(),
            "kubeconfig ($KUBECONFIG or ~/.kube/config)".to_string(),
        ),
        None => return Ok(()),
    };
    let kubeconfig = kubeconfig.map_err(|e| format!("{file}: {e}"))?;
    let context = def
        .context
        .as_deref()
        .or(kubeconfig.current_context.as_deref());
    match context {
        Some(c) if kubeconfig.contexts.iter().any(|n| n.name == c) => Ok(()),
        Some(c) => {
            let known: Vec<&str> = kubeconfig
                .contexts
                .iter()
                .map(|n| n.name.as_str())
                .collect();
            Err(format!(
                "{file} has no context `{c}` (it has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        }
        None => Err(format!("{file} names no current context; set `context`")),
    }
}

/// Where Kubernetes mounts a pod's service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The in-cluster configuration of cluster `name`: API server from `env`'s
/// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`, token and CA from the service
/// account directory. Each missing or unusable piece is named; the token is never read into
/// an error.
pub fn in_cluster(
    name: &str,
    def: &KubeClusterDef,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<kube::Config, String> {
    let not_in_pod = "is drbot running in a pod of this cluster?";
    let var = |key: &str| {
        env(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (host, port) = match (
        var("KUBERNETES_SERVICE_HOST"),
        var("KUBERNETES_SERVICE_PORT"),
    ) {
        (Some(h), Some(p)) => (h, p),
        _ => {
            return Err(format!(
                "Kubernetes cluster {name}: in_cluster, but KUBERNETES_SERVICE_HOST and \
                 KUBERNETES_SERVICE_PORT are not both set ({not_in_pod})"
            ));
        }
    };
    let port: u16 = port.parse().map_err(|_| {
        format!("Kubernetes cluster {name}: KUBERNETES_SERVICE_PORT `{port}` is not a port number")
    })?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}");
    let uri = url.parse().map_err(|e| {
        format!("Kubernetes cluster {name}: in-cluster API server `{url}` is not a valid URL: {e}")
    })?;
    let dir: PathBuf = def
        .service_account_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR));
    let token_file = dir.join("token");
    // Read only to check it: `kube` reads the file itself (and again as it rotates) and sends
    // it byte for byte, so a stray newline would break every request.
    let problem = match std::fs::read(&token_file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing".to_string()),
        Err(e) => Some(format!("unreadable ({})", e.kind())),
        Ok(t) if t.is_empty() => Some("empty".to_string()),
        Ok(t) if t.iter().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) => Some(
            "not usable as a bearer token: it holds spaces or line breaks (a trailing newline?)"
                .to_string(),
        ),
        Ok(_) => None,
    };
    if let Some(problem) = problem {
        return Err(format!(
            "Kubernetes cluster {name}: in_cluster, but the service account token {} is \
             {problem} ({not_in_pod})",
            token_file.display()
        ));
    }
    let ca_file = dir.join("ca.crt");
    let roots = read_ca(&ca_file).map_err(|e| {
        format!("Kubernetes cluster {name}: in_cluster, but the CA bundle {e} ({not_in_pod})")
    })?;
    let mut cfg = kube::Config::new(uri);
    cfg.root_cert = Some(roots);
    cfg.root_cert_file = Some(ca_file);
    cfg.auth_info.token_file = Some(token_file.display().to_string());
    if let Ok(ns) = std::fs::read_to_string(dir.join("namespace"))
        && !ns.trim().is_empty()
    {
        cfg.default_namespace = ns.trim().to_string();
    }
    Ok(cfg)
}

/// The DER certificates of a PEM bundle; the error starts with the path.
fn read_ca(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{} is missing", path.display())
        } else {
            format!("{} is unreadable ({})", path.display(), e.kind())
        }
    })?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn def(dir: &Path) -> KubeClusterDef {
        KubeClusterDef {
            in_cluster: true,
            service_account_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const POD_ENV: &[(&str, &str)] = &[
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];

    #[test]
    fn in_cluster_names_what_is_missing_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let d = def(dir.path());
        // Outside a pod: no service environment.
        let err = in_cluster("dr", &d, &env_of(&[])).unwrap_err();
        assert!(
            err.starts_with("Kubernetes cluster dr: in_cluster, but KUBERNETES_SERVICE_HOST"),
            "{err}"
        );
        assert!(err.contains("running in a pod"), "{err}");
        let err = in_cluster(
            "dr",
            &d,
            &env_of(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]),
        )
        .unwrap_err();
        assert!(err.contains("not both set"), "{err}");
        let err = in_cluster(
            "dr",
            &d,
            &env_of(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "https"),
            ]),
        )
        .unwrap_err();
        assert!(err.contains("`https` is not a port number"), "{err}");

        // No token file, then an empty one.
        let err = in_cluster("dr", &d, &env_of(POD_ENV)).unwrap_err();
        let token = dir.path().join("token");
        assert!(
            err.contains(&format!("token {} is missing", token.display())),
            "{err}"
        );
        std::fs::write(&token, "").unwrap();
        let err = in_cluster("dr", &d, &env_of(POD_ENV)).unwrap_err();
        assert!(err.contains("is empty"), "{err}");

        // A token with a trailing newline cannot be sent as a header: said, never shown.
        let secret = "eyJhbGciOiJSUzI1NiJ9.sa-token-never-shown";
        std::fs::write(&token, format!("{secret}\n")).unwrap();
        let err = in_cluster("dr", &d, &env_of(POD_ENV)).unwrap_err();
        assert!(err.contains("a trailing newline?"), "{err}");
        assert!(!err.contains(secret), "{err}");

        // A token but no CA bundle, then one that is not PEM: the token is never shown.
        std::fs::write(&token, secret).unwrap();
        let err = in_cluster("dr", &d, &env_of(POD_ENV)).unwrap_err();
        assert!(err.contains("ca.crt is missing"), "{err}");
        assert!(!err.contains(secret), "{err}");
        std::fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
        let err = in_cluster("dr", &d, &env_of(POD_ENV)).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        assert!(!err.contains(secret), "{err}");

        // Complete: HTTPS to the service address, the token as a file, the pod's namespace.
        std::fs::write(
            dir.path().join("ca.crt"),
            include_str!("../testkit/tls/ca.pem"),
        )
        .unwrap();
        std::fs::write(dir.path().join("namespace"), "apex\n").unwrap();
        let cfg = in_cluster("dr", &d, &env_of(POD_ENV)).unwrap();
        assert_eq!(cfg.cluster_url.to_string(), "https://10.96.0.1:443/");
        assert_eq!(cfg.default_namespace, "apex");
        assert_eq!(
            cfg.auth_info.token_file.as_deref(),
            Some(token.display().to_string().as_str())
        );
        assert!(cfg.auth_info.token.is_none());
        assert_eq!(cfg.root_cert.as_ref().map(Vec::len), Some(1));
        assert!(!format!("{cfg:?}").contains(secret));
        let v6 = in_cluster(
            "dr",
            &d,
            &env_of(&[
                ("KUBERNETES_SERVICE_HOST", "fd00::1"),
                ("KUBERNETES_SERVICE_PORT", "6443"),
            ]),
        )
        .unwrap();
        assert_eq!(v6.cluster_url.to_string(), "https://[fd00::1]:6443/");
    }
}
