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
//! A row holds either a whole rendered message ([`EmailPayload`]) or one recipient of a
//! campaign ([`CampaignRowPayload`]): the send's message stored once (`email_campaigns`,
//! [`StoredCampaign`]) with slot markers, and in the row only this recipient's values.
//! `email_customers` writes campaign rows wherever slotting the recipient's values into the
//! campaign gives exactly the message rendered for them, and whole messages otherwise.
//!
//! A round's email rows go out together (`deliver_many`): whole messages through the mailer's
//! bulk engine (`Mailer::send_many`), each campaign's rows through the same engine writing
//! from the campaign's encoded parts (`Mailer::send_campaign`), one after the other:
//! `max_connections` connections, each sending pipelined windows of up to 64 messages where
//! the server offers CHUNKING, else one message at a time, under the rate limit, one attempt
//! per row (the outbox schedules retries). The window between "sent" and "recorded" is kept
//! small: the outbox worker records each row as soon as the engine reports it (a message, or a
//! window), so a crash can cause copies of at most the messages in flight, never more than one
//! round's rows (`in_flight_bound` in `serve`'s log).

mod campaigns;
pub mod payload;

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use futures::{Stream, StreamExt, stream::BoxStream};
use notifier::{
    email::{self, BulkOptions, ConfigError, Mailer, RateLimiter, Recipient, SendError},
    outbox::{Deliverer, Delivery, Outcome},
};

use self::campaigns::{Campaigns, Lookup};
pub use self::payload::{
    CampaignRowPayload, EmailPayload, RowPayload, StoredCampaign, message_id, recipient,
};
use crate::store::Store;

/// Outbox channel of customer email.
pub const CHANNEL: &str = "email";

/// The customer email templates `/dr notify customers <template>` can name. `dr-activated` is
/// the built-in "Service Update - DR Activation" (`email_subject.txt`, `email_body.txt`,
/// `email_body.html`, each replaceable from `templates_dir`).
pub const TEMPLATES: &[&str] = &["dr-activated"];

/// Delivers `email` rows.
pub struct EmailDeliverer {
    mailer: Mailer,
    limiter: Option<RateLimiter>,
    policy: Policy,
    campaigns: Campaigns,
}

/// How a failed attempt is recorded: retries with backoff up to `max_attempts`.
#[derive(Debug, Clone, Copy)]
struct Policy {
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl EmailDeliverer {
    /// A deliverer for `[email]`'s settings, reading campaigns from `store`. Must be called
    /// inside the Tokio runtime.
    pub fn new(cfg: &crate::config::EmailConfig, store: Store) -> anyhow::Result<Self> {
        let c = cfg.mailer_config().map_err(anyhow::Error::msg)?;
        let mailer = Mailer::new(&c)?;
        Ok(Self {
            campaigns: Campaigns::new(store, mailer.clone()),
            mailer,
            limiter: c.rate_limit.and_then(RateLimiter::new),
            policy: Policy {
                max_attempts: c.max_attempts,
                backoff: c.retry_backoff,
                max_backoff: c.max_backoff,
            },
        })
    }

    /// `Err` (failed) when `subscriber` unsubscribed after the send was queued.
    async fn still_subscribed(&self, subscriber: i64) -> Result<(), Outcome> {
        match self
            .campaigns
            .store()
            .unsubscribed_among(&[subscriber])
            .await
        {
            Ok(gone) if !gone.is_empty() => Err(unsubscribed()),
            Ok(_) => Ok(()),
            Err(e) => Err(store_retry(&e)),
        }
    }

    /// The email a row's payload stands for, or the outcome that ends the attempt.
    async fn email_of(&self, payload: RowPayload) -> Result<email::OutgoingEmail, Outcome> {
        match payload {
            RowPayload::Whole(p) => {
                self.still_subscribed(p.subscriber).await?;
                Ok(p.into_email())
            }
            RowPayload::Campaign(p) => {
                self.still_subscribed(p.subscriber).await?;
                match self.campaigns.get(p.campaign).await {
                    Ok(Lookup::Found(c)) => Ok(c.content.email_for(&p.into_recipient())),
                    Ok(Lookup::Unusable(error)) => Err(Outcome::Failed { error }),
                    Err(e) => Err(store_retry(&e)),
                }
            }
        }
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

/// The outcome of a row whose subscriber unsubscribed after the send was queued.
fn unsubscribed() -> Outcome {
    Outcome::Failed {
        error: "unsubscribed before it was sent".into(),
    }
}

fn unreadable(e: serde_json::Error) -> Outcome {
    Outcome::Failed {
        error: format!("unreadable email payload: {e}"),
    }
}

fn store_retry(e: &anyhow::Error) -> Outcome {
    tracing::error!(error = %format!("{e:#}"), "reading an email campaign failed");
    Outcome::Retry {
        error: "reading the email campaign failed".into(),
        after: None,
    }
}

/// Row ids and attempts by Message-ID (one id may, in theory, come from two keys).
type RowsOf = HashMap<String, Vec<(i64, u32)>>;

/// One group of a round: its rows by Message-ID and what to send.
struct Group<T> {
    rows_of: RowsOf,
    items: Vec<T>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Self {
            rows_of: HashMap::new(),
            items: Vec::new(),
        }
    }
}

impl<T> Group<T> {
    fn add(&mut self, id: i64, attempt: u32, message_id: String, item: T) {
        self.rows_of
            .entry(message_id)
            .or_default()
            .push((id, attempt));
        self.items.push(item);
    }

    /// Every row of the group with `outcome`.
    fn all(self, outcome: &Outcome) -> BoxStream<'static, (i64, Outcome)> {
        every_row(self.rows_of, outcome)
    }
}

/// Every row of `rows_of` with `outcome`.
fn every_row(rows_of: RowsOf, outcome: &Outcome) -> BoxStream<'static, (i64, Outcome)> {
    let out: Vec<_> = rows_of
        .into_values()
        .flatten()
        .map(|(id, _)| (id, outcome.clone()))
        .collect();
    futures::stream::iter(out).boxed()
}

/// The rows' outcomes from a started bulk send (`send_many` or `send_campaign`); if it could
/// not start (outside a runtime), every row is retried later, none is lost.
fn outcomes<S>(
    sent: Result<S, ConfigError>,
    mut rows_of: RowsOf,
    policy: Policy,
) -> BoxStream<'static, (i64, Outcome)>
where
    S: Stream<Item = email::Delivery> + Send + 'static,
{
    match sent {
        Ok(sent) => sent
            .filter_map(move |d| {
                let row = rows_of.get_mut(&d.message_id).and_then(|ids| ids.pop());
                let out =
                    row.map(|(id, attempt)| (id, policy.outcome(attempt, d.message_id, d.result)));
                futures::future::ready(out)
            })
            .boxed(),
        Err(e) => {
            tracing::error!(error = %e, "bulk email send could not start");
            let outcome = Outcome::Retry {
                error: format!("bulk email send could not start: {e}"),
                after: None,
            };
            every_row(rows_of, &outcome)
        }
    }
}

/// A group item's Message-ID.
trait MessageId {
    fn message_id(&self) -> &str;
}

impl MessageId for Recipient {
    fn message_id(&self) -> &str {
        &self.message_id
    }
}

impl MessageId for email::OutgoingEmail {
    fn message_id(&self) -> &str {
        &self.message_id
    }
}

/// A group split by [`without_unsubscribed`]: what to send, and the rows that end failed.
type Split<T> = (Group<T>, BoxStream<'static, (i64, Outcome)>);

/// Splits off the rows of subscribers who unsubscribed after the send was queued: they end
/// failed ("unsubscribed before it was sent") and are not sent. On a store error the group is
/// handed back whole.
async fn without_unsubscribed<T: MessageId>(
    campaigns: &Campaigns,
    mut group: Group<T>,
    subscribers: HashMap<String, i64>,
) -> Result<Split<T>, (Group<T>, anyhow::Error)> {
    let ids: Vec<i64> = subscribers.values().copied().collect();
    let gone = match campaigns.store().unsubscribed_among(&ids).await {
        Ok(gone) => gone,
        Err(e) => return Err((group, e)),
    };
    let mut left: RowsOf = HashMap::new();
    if !gone.is_empty() {
        group.items.retain(|r| {
            !subscribers
                .get(r.message_id())
                .is_some_and(|s| gone.contains(s))
        });
        for (mid, sub) in &subscribers {
            if gone.contains(sub)
                && let Some(rows) = group.rows_of.remove(mid)
            {
                left.insert(mid.clone(), rows);
            }
        }
    }
    Ok((group, every_row(left, &unsubscribed())))
}

/// A stream that starts (runs `start`) only when first polled: the groups of a round go out
/// one after the other, each on its own connections.
fn later<F>(start: F) -> BoxStream<'static, (i64, Outcome)>
where
    F: Future<Output = BoxStream<'static, (i64, Outcome)>> + Send + 'static,
{
    futures::stream::once(start).flatten().boxed()
}

#[async_trait]
impl Deliverer for EmailDeliverer {
    fn channel(&self) -> &'static str {
        CHANNEL
    }

    async fn deliver(&self, d: &Delivery) -> Outcome {
        let payload = match RowPayload::read(d.payload.clone()) {
            Ok(p) => p,
            Err(e) => return unreadable(e),
        };
        let email = match self.email_of(payload).await {
            Ok(e) => e,
            Err(outcome) => return outcome,
        };
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let message_id = email.message_id.clone();
        let result = self.mailer.send(&email).await;
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
        let mut unreadable_rows = Vec::new();
        let mut whole = Group::default();
        let mut whole_subscribers = HashMap::new();
        // Per campaign: its rows, and each row's subscriber by Message-ID.
        let mut by_campaign: std::collections::BTreeMap<
            i64,
            (Group<Recipient>, HashMap<String, i64>),
        > = Default::default();
        for d in rows {
            match RowPayload::read(d.payload) {
                Ok(RowPayload::Whole(p)) => {
                    whole_subscribers.insert(p.message_id.clone(), p.subscriber);
                    whole.add(d.id, d.attempt, p.message_id.clone(), p.into_email())
                }
                Ok(RowPayload::Campaign(p)) => {
                    let (group, subscribers) = by_campaign.entry(p.campaign).or_default();
                    subscribers.insert(p.message_id.clone(), p.subscriber);
                    group.add(d.id, d.attempt, p.message_id.clone(), p.into_recipient())
                }
                Err(e) => unreadable_rows.push((d.id, unreadable(e))),
            }
        }
        let policy = self.policy;
        let mut streams = vec![futures::stream::iter(unreadable_rows).boxed()];
        if !whole.items.is_empty() {
            let (mailer, options) = (self.mailer.clone(), options.clone());
            let campaigns = self.campaigns.clone();
            streams.push(later(async move {
                let (whole, gone) =
                    match without_unsubscribed(&campaigns, whole, whole_subscribers).await {
                        Ok(split) => split,
                        Err((whole, e)) => return whole.all(&store_retry(&e)),
                    };
                if whole.items.is_empty() {
                    return gone;
                }
                let sent = mailer.send_many(futures::stream::iter(whole.items), options);
                futures::stream::select(gone, outcomes(sent, whole.rows_of, policy)).boxed()
            }));
        }
        for (id, (group, subscribers)) in by_campaign {
            let (mailer, options) = (self.mailer.clone(), options.clone());
            let campaigns = self.campaigns.clone();
            streams.push(later(async move {
                // Whoever unsubscribed since the send was queued gets nothing.
                let (group, gone) = match without_unsubscribed(&campaigns, group, subscribers).await
                {
                    Ok(split) => split,
                    Err((group, e)) => return group.all(&store_retry(&e)),
                };
                if group.items.is_empty() {
                    return gone;
                }
                let loaded = match campaigns.get(id).await {
                    Ok(Lookup::Found(c)) => c,
                    Ok(Lookup::Unusable(error)) => return group.all(&Outcome::Failed { error }),
                    Err(e) => return group.all(&store_retry(&e)),
                };
                let recipients = futures::stream::iter(group.items);
                let sent = match &loaded.built {
                    Ok(campaign) => {
                        let sent = mailer.send_campaign(campaign.clone(), recipients, options);
                        outcomes(sent, group.rows_of, policy)
                    }
                    // Each message then says what is wrong with it.
                    Err(_) => {
                        let emails = recipients.map(move |r| loaded.content.email_for(&r));
                        outcomes(mailer.send_many(emails, options), group.rows_of, policy)
                    }
                };
                futures::stream::select(gone, sent).boxed()
            }));
        }
        Ok(futures::stream::iter(streams).flatten().boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `[email]`'s defaults, a message deferred by greylisting (typically 5 minutes) or
    /// a relay restarting or throttling for half an hour is still retried, not failed.
    #[test]
    fn default_retries_outlast_greylisting_and_a_relay_outage() {
        let cfg: crate::config::EmailConfig =
            toml::from_str("smtp_url = \"smtp://relay:25\"\nfrom = \"s@example.com\"").unwrap();
        let c = cfg.mailer_config().unwrap();
        let policy = Policy {
            max_attempts: c.max_attempts,
            backoff: c.retry_backoff,
            max_backoff: c.max_backoff,
        };
        let waits: Duration = (1..policy.max_attempts)
            .map(|a| policy.retry_after(a))
            .sum();
        assert!(waits >= Duration::from_secs(30 * 60), "{waits:?}");
        assert!(waits <= Duration::from_secs(2 * 3600), "{waits:?}");
        let deferred = || SendError::Temporary {
            code: Some(451),
            message: "4.7.1 greylisted, try again later".into(),
        };
        let mut attempt = 1;
        while let Outcome::Retry { .. } = policy.outcome(attempt, "m".into(), Err(deferred())) {
            attempt += 1;
        }
        assert_eq!(attempt, 10, "the tenth deferral is the last");
    }
}
