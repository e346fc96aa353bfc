//! Bulk delivery's API: `BulkOptions`, `Delivery` and `Mailer::send_many` (a stream of emails
//! sent by connection workers under a rate limit, temporary failures retried with exponential
//! backoff; one `Delivery` each). The engine is in `workers.rs`.

use std::time::Duration;

use futures::Stream;

use super::error::{ConfigError, SendError};
use super::mailer::Mailer;
use super::message::OutgoingEmail;
use super::workers::{self, Letters};

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
    ///
    /// `options.concurrency` workers (at most `max_connections`) each own one SMTP connection,
    /// opened with `TCP_NODELAY` and reused for message after message (a new connection after
    /// a broken one). When the server offers CHUNKING and PIPELINING, each worker sends
    /// windows of up to 64 messages as pipelined BDAT transactions and reports each message
    /// by its own replies; otherwise one DATA transaction at a time (MAIL, RCPT and DATA in
    /// one write with PIPELINING, RSET after a refused one). Each message is built once, so
    /// its retries carry the same Message-ID and Date. At most 64 × `concurrency` emails (and
    /// at most 2 × `concurrency` + 4096) are taken from the input and held at once, so it may
    /// be an arbitrarily long lazy stream (wrap an iterator with `futures::stream::iter`). Must
    /// be called inside a Tokio runtime. The stream ends once every message is reported and
    /// every connection closed (QUIT); dropping it stops the send after the messages in flight.
    pub fn send_many<S>(
        &self,
        emails: S,
        options: BulkOptions,
    ) -> Result<impl Stream<Item = Delivery> + Send + 'static, ConfigError>
    where
        S: Stream<Item = OutgoingEmail> + Send + 'static,
    {
        self.start_bulk(self.clone(), emails, options)
    }

    /// Starts the bulk engine on `items` (see `send_many`).
    pub(super) fn start_bulk<L: Letters, S>(
        &self,
        letters: L,
        items: S,
        options: BulkOptions,
    ) -> Result<impl Stream<Item = Delivery> + Send + 'static, ConfigError>
    where
        S: Stream<Item = L::Item> + Send + 'static,
    {
        options.check()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        let workers = options.concurrency.min(self.bulk_options().concurrency);
        Ok(workers::start(
            self.clone(),
            letters,
            items,
            options,
            workers,
        ))
    }
}
