//! Where and how the bulk client connects: host, port, TLS mode with its rustls config, AUTH
//! credentials, EHLO name and the timeout of every network step.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;

use super::super::error::ConfigError;
use super::super::url::{Security, SmtpUrl};

/// The server of a `Mailer`, as the bulk client needs it.
pub(crate) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) security: Security,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) credentials: Option<Credentials>,
    pub(super) hello: String,
    pub(super) timeout: Duration,
}

impl Target {
    /// From the SMTP URL; TLS trusts the Mozilla roots (webpki-roots), like lettre does.
    pub(crate) fn new(url: &SmtpUrl, timeout: Duration) -> Result<Self, ConfigError> {
        let tls = match url.security() {
            Security::Plain => None,
            _ => {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let roots = rustls::RootCertStore::from_iter(
                    webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
                );
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ConfigError::Tls {
                        host: url.host().to_string(),
                        reason: e.to_string(),
                    })?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(config))
            }
        };
        let hello = match url.hello_name() {
            Some(name) => name.to_string(),
            None => lettre::transport::smtp::extension::ClientId::default().to_string(),
        };
        Ok(Self {
            host: url.host().to_string(),
            port: url.port(),
            security: url.security(),
            tls,
            credentials: url.user().map(|u| {
                Credentials::new(
                    u.to_string(),
                    url.password().unwrap_or_default().to_string(),
                )
            }),
            hello,
            timeout,
        })
    }
}
