//! `Mailer`: the pooled SMTP transport (lettre over tokio and rustls) built from an
//! `EmailConfig`, and the sending of one message with its failure classified.

use std::fmt;
use std::sync::Arc;

use lettre::message::Mailbox;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::bulk::BulkOptions;
use super::config::EmailConfig;
use super::error::{ConfigError, SendError};
use super::message::{OutgoingEmail, build};
use super::redact::Redactor;
use super::smtp::{Prepared, Target};
use super::url::{Security, SmtpUrl};

/// Sends email through one SMTP server over a shared connection pool. Cheap to clone; clones
/// share the pool. `Debug` shows the server without its password.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// The same server for the bulk path's own connections.
    target: Target,
    /// The bulk path's fast message writer (`None` when the sender's address is not ASCII).
    wire: Option<super::wire::Writer>,
    from: Mailbox,
    domain: String,
    redactor: Redactor,
    server: String,
    defaults: BulkOptions,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.inner.server)
            .field("from", &self.inner.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer for `url` (see `EmailConfig::url`) sending as `from`, other settings default.
    /// Must be called inside a Tokio runtime.
    pub fn from_url(url: &str, from: &str) -> Result<Self, ConfigError> {
        Self::new(&EmailConfig::new(SmtpUrl::parse(url)?, from))
    }

    /// A mailer for `config`. Connects lazily, on the first send. Must be called inside a
    /// Tokio runtime, where the pool's housekeeping task runs; drop it there too.
    pub fn new(config: &EmailConfig) -> Result<Self, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        let from: Mailbox = config.from.parse().map_err(|e| ConfigError::From {
            from: config.from.clone(),
            reason: format!("{e}"),
        })?;
        let domain = from.email.domain().to_string();
        if config.max_connections == 0 || config.max_connections > 1000 {
            let got = config.max_connections.to_string();
            return Err(ConfigError::Range(
                "max_connections",
                format!("{got}, expected 1 to 1000"),
            ));
        }
        let defaults = BulkOptions {
            concurrency: config.max_connections as usize,
            rate_limit: config.rate_limit,
            max_attempts: config.max_attempts,
            retry_backoff: config.retry_backoff,
            max_backoff: config.max_backoff,
        };
        defaults.check()?;
        if config.timeout.is_zero() {
            return Err(ConfigError::Range(
                "timeout",
                "0s, expected more than zero".into(),
            ));
        }
        let url = &config.url;
        let tls = |host: &str| {
            TlsParameters::new(host.to_string()).map_err(|e| ConfigError::Tls {
                host: host.to_string(),
                reason: e.to_string(),
            })
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host())
            .port(url.port())
            .timeout(Some(config.timeout))
            .pool_config(PoolConfig::new().max_size(config.max_connections));
        builder = match url.security() {
            Security::Plain => builder.tls(Tls::None),
            Security::StartTlsRequired => builder.tls(Tls::Required(tls(url.host())?)),
            Security::StartTlsOpportunistic => builder.tls(Tls::Opportunistic(tls(url.host())?)),
            Security::ImplicitTls => builder.tls(Tls::Wrapper(tls(url.host())?)),
        };
        if let Some(user) = url.user() {
            let password = url.password().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.into(), password.into()));
        }
        if let Some(name) = url.hello_name() {
            builder = builder.hello_name(ClientId::Domain(name.to_string()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                transport: builder.build(),
                target: Target::new(url, config.timeout)?,
                wire: super::wire::Writer::new(&from, &domain),
                from,
                domain,
                redactor: Redactor::new(url.user(), url.password()),
                server: url.to_string(),
                defaults,
            }),
        })
    }

    /// The bulk-send options from the config (concurrency = `max_connections`).
    pub fn bulk_options(&self) -> BulkOptions {
        self.inner.defaults.clone()
    }

    /// The exact bytes (RFC 5322) that `send` would transmit for `email`, apart from `Date`
    /// and the MIME boundary.
    pub fn format(&self, email: &OutgoingEmail) -> Result<Vec<u8>, SendError> {
        Ok(self.message(email)?.formatted())
    }

    pub(crate) fn message(&self, email: &OutgoingEmail) -> Result<Message, SendError> {
        build(&self.inner.from, &self.inner.domain, email)
    }

    /// `email` as `send_many` sends it: written by the bulk path's own writer when it applies
    /// (the same bytes lettre writes), else built by lettre.
    pub(crate) fn prepare(&self, email: &OutgoingEmail) -> Result<Prepared, SendError> {
        if let Some(prepared) = self.inner.wire.as_ref().and_then(|w| w.prepare(email)) {
            return Ok(prepared);
        }
        self.message(email).map(|m| Prepared::new(&m))
    }

    /// The exact bytes (RFC 5322, CRLF lines) that `send_many` transmits for `email`, apart
    /// from `Date` and the MIME boundary: the same as `format`'s, written several times faster
    /// for the common email (see `wire.rs`).
    pub fn format_bulk(&self, email: &OutgoingEmail) -> Result<Vec<u8>, SendError> {
        self.prepare(email).map(|p| p.content())
    }

    /// Sends `email` once, without retrying. A `Temporary` error may be retried by the caller
    /// (with the same `message_id`); a `Permanent` or `Invalid` one should be recorded.
    pub async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let message = self.message(email)?;
        self.transmit(&message).await
    }

    pub(crate) async fn transmit(&self, message: &Message) -> Result<(), SendError> {
        match self.inner.transport.send(message.clone()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.classify(&e)),
        }
    }

    /// The sender, as configured.
    pub(crate) fn sender(&self) -> &Mailbox {
        &self.inner.from
    }

    /// The sender's domain, which completes bare Message-IDs.
    pub(crate) fn domain(&self) -> &str {
        &self.inner.domain
    }

    pub(crate) fn target(&self) -> &Target {
        &self.inner.target
    }

    /// `e` with the password scrubbed from its text.
    pub(crate) fn scrub(&self, e: SendError) -> SendError {
        let r = &self.inner.redactor;
        match e {
            SendError::Temporary { code, message } => SendError::Temporary {
                code,
                message: r.scrub(&message),
            },
            SendError::Permanent { code, message } => SendError::Permanent {
                code,
                message: r.scrub(&message),
            },
            SendError::Invalid(m) => SendError::Invalid(r.scrub(&m)),
        }
    }

    /// Maps lettre's error to temporary (4xx, network, TLS, timeout) or permanent (5xx,
    /// message the server cannot take), with the password scrubbed from the text.
    fn classify(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let message = self.inner.redactor.scrub(&e.to_string());
        let code = e.status().map(u16::from);
        if e.is_permanent() || (e.is_client() && code.is_none()) {
            SendError::Permanent { code, message }
        } else {
            SendError::Temporary { code, message }
        }
    }
}
