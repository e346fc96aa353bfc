//! Customer email from the outbox: one row per recipient (channel `email`) holding the
//! rendered message ([`EmailPayload`]), sent through the pooled [`Mailer`] under the configured
//! rate limit. A 4xx reply (or no connection) is a `Retry` with the configured backoff; a 5xx
//! reply or an invalid message is `Failed` and recorded; after `max_attempts` a temporary
//! failure is recorded as failed too.
//!
//! **Delivery contract (at least once, deduplicable):** SMTP cannot give exactly-once. The
//! server may accept a message (queue it and answer 250) whose answer a crash of drbot loses;
//! the row, still claimed by the dead process, is delivered again after its lease. Every
//! attempt of a row carries the same `Message-ID` ([`message_id`], derived from the row's
//! key), so receivers and their mail systems can drop the copy.
//!
//! A round's email rows go out together (`deliver_many`) through the mailer's bulk engine
//! (`Mailer::send_many`): `max_connections` connections, each sending pipelined windows of up
//! to 64 messages where the server offers CHUNKING, else one message at a time, under the rate
//! limit, one attempt per row (the outbox schedules retries). The window between "sent" and
//! "recorded" is kept small: the outbox worker records each row as soon as the engine reports
//! it (a message, or a window), so a crash can cause copies of at most the messages in flight,
//! never more than one round's rows (`in_flight_bound` in `serve`'s log).

use std::time::Duration;

use std::collections::HashMap;

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use notifier::{
    email::{BulkOptions, Mailer, OutgoingEmail, RateLimiter, SendError},
    outbox::{Deliverer, Delivery, Outcome},
};
use serde::{Deserialize, Serialize};

/// Outbox channel of customer email.
pub const CHANNEL: &str = "email";

/// The customer email templates `/dr notify customers <template>` can name. `dr-activated` is
/// the built-in "Service Update - DR Activation" (`email_subject.txt`, `email_body.txt`,
/// `email_body.html`, each replaceable from `templates_dir`).
pub const TEMPLATES: &[&str] = &["dr-activated"];

/// One rendered email to one recipient, as stored in its outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailPayload {
    /// The subscriber's id.
    pub subscriber: i64,
    /// Recipient, `addr` or `"Name" <addr>`.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text part.
    pub text: String,
    /// HTML part.
    pub html: String,
    /// The subscriber's one-click unsubscribe URL.
    pub unsubscribe_url: String,
    /// Message-ID (without domain: the sender's is added), the same for every attempt.
    pub message_id: String,
}

impl EmailPayload {
    fn into_email(self) -> OutgoingEmail {
        OutgoingEmail {
            to: self.to,
            subject: self.subject,
            text: self.text,
            html: Some(self.html),
            unsubscribe_url: Some(self.unsubscribe_url),
            unsubscribe_mailto: None,
            message_id: self.message_id,
        }
    }
}

/// The Message-ID of the row with idempotency `key`: the key with every character outside
/// letters, digits and `.-` turned into `.` (e.g. `email:run:7:step:1:sub:42` →
/// `email.run.7.step.1.sub.42`), so it is the same for every attempt of that row.
pub fn message_id(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// The `To` of a subscriber: `"Name" <addr>` when a name is known and valid, else the address.
pub fn recipient(email: &str, name: Option<&str>) -> String {
    let Ok(address) = email.parse::<lettre::Address>() else {
        return email.to_string();
    };
    lettre::message::Mailbox::new(name.map(str::to_string), address).to_string()
}

/// Delivers `email` rows.
pub struct EmailDeliverer {
    mailer: Mailer,
    limiter: Option<RateLimiter>,
    policy: Policy,
}

/// How a failed attempt is recorded: retries with backoff up to `max_attempts`.
#[derive(Debug, Clone, Copy)]
struct Policy {
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl EmailDeliverer {
    /// A deliverer for `[email]`'s settings. Must be called inside the Tokio runtime.
    pub fn new(cfg: &crate::config::EmailConfig) -> anyhow::Result<Self> {
        let c = cfg.mailer_config().map_err(anyhow::Error::msg)?;
        let mailer = Mailer::new(&c)?;
        Ok(Self {
            mailer,
            limiter: c.rate_limit.and_then(RateLimiter::new),
            policy: Policy {
                max_attempts: c.max_attempts,
                backoff: c.retry_backoff,
                max_backoff: c.max_backoff,
            },
        })
    }
}

impl Policy {
    /// Wait before attempt `attempt + 1`: the backoff doubled per earlier retry, capped.
    fn retry_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// The outcome of attempt `attempt` of a row that ended in `result`.
    fn outcome(&self, attempt: u32, message_id: String, result: Result<(), SendError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Delivered {
                receipt: Some(message_id),
            },
            Err(e @ SendError::Temporary { .. }) if attempt >= self.max_attempts => {
                Outcome::Failed {
                    error: format!("gave up after {attempt} attempts: {e}"),
                }
            }
            Err(e @ SendError::Temporary { .. }) => Outcome::Retry {
                error: e.to_string(),
                after: Some(self.retry_after(attempt)),
            },
            Err(e) => Outcome::Failed {
                error: e.to_string(),
            },
        }
    }
}

fn unreadable(e: serde_json::Error) -> Outcome {
    Outcome::Failed {
        error: format!("unreadable email payload: {e}"),
    }
}

#[async_trait]
impl Deliverer for EmailDeliverer {
    fn channel(&self) -> &'static str {
        CHANNEL
    }

    async fn deliver(&self, d: &Delivery) -> Outcome {
        let payload: EmailPayload = match serde_json::from_value(d.payload.clone()) {
            Ok(p) => p,
            Err(e) => return unreadable(e),
        };
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let message_id = payload.message_id.clone();
        let result = self.mailer.send(&payload.into_email()).await;
        self.policy.outcome(d.attempt, message_id, result)
    }

    fn deliver_many(
        &self,
        rows: Vec<Delivery>,
    ) -> Result<BoxStream<'static, (i64, Outcome)>, Vec<Delivery>> {
        let options = BulkOptions {
            max_attempts: 1,
            ..self.mailer.bulk_options()
        };
        // `send_many` refuses only bad options (checked here) or a call outside the runtime.
        if let Err(e) = options.check() {
            tracing::error!(error = %e, "bulk email options refused: sending row by row");
            return Err(rows);
        }
        // Row ids and attempts by Message-ID (one id may, in theory, come from two keys).
        let mut rows_of: HashMap<String, Vec<(i64, u32)>> = HashMap::new();
        let mut unreadable_rows = Vec::new();
        let mut emails = Vec::with_capacity(rows.len());
        for d in rows {
            match serde_json::from_value::<EmailPayload>(d.payload) {
                Ok(p) => {
                    rows_of
                        .entry(p.message_id.clone())
                        .or_default()
                        .push((d.id, d.attempt));
                    emails.push(p.into_email());
                }
                Err(e) => unreadable_rows.push((d.id, unreadable(e))),
            }
        }
        let sent = match self
            .mailer
            .send_many(futures::stream::iter(emails), options)
        {
            Ok(s) => s.boxed(),
            Err(e) => {
                // Outside a runtime: every row is retried later, none is lost.
                tracing::error!(error = %e, "bulk email send could not start");
                let error = format!("bulk email send could not start: {e}");
                let retry: Vec<_> = rows_of
                    .into_values()
                    .flatten()
                    .map(|(id, _)| {
                        let outcome = Outcome::Retry {
                            error: error.clone(),
                            after: None,
                        };
                        (id, outcome)
                    })
                    .collect();
                return Ok(futures::stream::iter(unreadable_rows.into_iter().chain(retry)).boxed());
            }
        };
        let policy = self.policy;
        let sent = sent.filter_map(move |d| {
            let row = rows_of.get_mut(&d.message_id).and_then(|ids| ids.pop());
            let out =
                row.map(|(id, attempt)| (id, policy.outcome(attempt, d.message_id, d.result)));
            futures::future::ready(out)
        });
        Ok(futures::stream::iter(unreadable_rows).chain(sent).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_follow_the_key() {
        assert_eq!(
            message_id("email:run:7:step:1:sub:42"),
            "email.run.7.step.1.sub.42"
        );
    }

    #[test]
    fn recipients_are_quoted_mailboxes() {
        assert_eq!(recipient("ann@x.org", None), "ann@x.org");
        assert_eq!(
            recipient("ann@x.org", Some("Ann, Sales")),
            "\"Ann, Sales\" <ann@x.org>"
        );
    }
}
