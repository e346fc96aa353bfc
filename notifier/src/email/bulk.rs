//! Bulk delivery: a stream of emails sent concurrently through the pool, under a rate limit,
//! with temporary failures retried with exponential backoff; yields one `Delivery` each.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::error::{ConfigError, SendError};
use super::mailer::Mailer;
use super::message::OutgoingEmail;
use super::rate::RateLimiter;

/// How a bulk send proceeds. `Mailer::bulk_options` gives the configured values.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkOptions {
    /// Messages in flight at once; capped at the pool size (`max_connections`).
    pub concurrency: usize,
    /// Most message attempts started per second, retries included; `None` = unlimited.
    pub rate_limit: Option<f64>,
    /// Attempts per message before a temporary failure is reported (≥ 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled at each further retry.
    pub retry_backoff: Duration,
    /// Longest wait between two retries.
    pub max_backoff: Duration,
}

impl BulkOptions {
    /// Checks the values: concurrency ≥ 1, attempts 1–100, rate a positive finite number.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::Range(
                "concurrency",
                "0, expected at least 1".into(),
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            let got = self.max_attempts;
            return Err(ConfigError::Range(
                "max_attempts",
                format!("{got}, expected 1 to 100"),
            ));
        }
        if let Some(r) = self.rate_limit
            && (!r.is_finite() || r <= 0.0)
        {
            return Err(ConfigError::Range(
                "rate_limit",
                format!("{r}, expected a positive number"),
            ));
        }
        Ok(())
    }
}

/// The outcome of one email of a bulk send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The email's `message_id` as given (its idempotency key).
    pub message_id: String,
    /// The recipient as given.
    pub to: String,
    /// SMTP attempts made (0 when the email was invalid).
    pub attempts: u32,
    /// `Ok` once the server accepted it; else the last failure (`Temporary` after the last
    /// attempt, `Permanent` or `Invalid` at once).
    pub result: Result<(), SendError>,
}

impl Mailer {
    /// Sends every email of `emails` and yields one `Delivery` per email, in completion order.
    /// At most `options.concurrency` messages are in flight (and in memory) at once, so the
    /// input may be an arbitrarily long lazy stream. Wrap an iterator with
    /// `futures::stream::iter`.
    pub fn send_many<S>(
        &self,
        emails: S,
        options: BulkOptions,
    ) -> Result<impl Stream<Item = Delivery> + Send + 'static, ConfigError>
    where
        S: Stream<Item = OutgoingEmail> + Send + 'static,
    {
        options.check()?;
        let limiter = options.rate_limit.and_then(RateLimiter::new).map(Arc::new);
        let concurrency = options.concurrency.min(self.bulk_options().concurrency);
        let options = Arc::new(options);
        let mailer = self.clone();
        Ok(emails
            .map(move |email| {
                let (mailer, limiter, options) = (mailer.clone(), limiter.clone(), options.clone());
                async move { mailer.deliver(email, &options, limiter.as_deref()).await }
            })
            .buffer_unordered(concurrency))
    }

    async fn deliver(
        &self,
        email: OutgoingEmail,
        options: &BulkOptions,
        limiter: Option<&RateLimiter>,
    ) -> Delivery {
        let message = self.message(&email);
        let OutgoingEmail { message_id, to, .. } = email;
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                return Delivery {
                    message_id,
                    to,
                    attempts: 0,
                    result: Err(e),
                };
            }
        };
        let mut backoff = options.retry_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if let Some(l) = limiter {
                l.acquire().await;
            }
            match self.transmit(&message).await {
                Err(e) if e.is_temporary() && attempts < options.max_attempts => {
                    tracing::debug!(%message_id, attempts, error = %e, "email retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(options.max_backoff);
                }
                result => {
                    return Delivery {
                        message_id,
                        to,
                        attempts,
                        result,
                    };
                }
            }
        }
    }
}
