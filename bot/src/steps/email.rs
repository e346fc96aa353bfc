//! Customer email step types: `email_preview` (read-only: renders the message for the open
//! incident and counts the recipients, so the approval card shows what will go out and to how
//! many) and `email_customers` (destructive: the mass send itself). Without `[email]` both
//! succeed and say that nothing is (or will be) sent, so runbooks that include customer email
//! run where none is set up.
//!
//! `email_customers` enqueues one outbox row per active subscriber, 2,000 per write
//! transaction, keyed `email:run:<run>:step:<index>:sub:<id>`: their values in the send's
//! campaign where that gives exactly their rendered message, else the message itself
//! ([`super::email_campaign`]); then it marks the send queued (`email_sends`) and follows the
//! rows until each is delivered or failed. Re-running it (after a crash, or a retry) enqueues
//! nothing new once the send is marked queued and only follows its rows (stopped part-way,
//! it adds the rows still missing; with the incident resolved meanwhile, it follows the rows
//! already queued): it is idempotent,
//! and the outbox delivers each row at least once with a fixed Message-ID (see
//! [`crate::notify::email`] for what a crash can duplicate). Rows already enqueued still go out
//! when the run is cancelled while it follows them, and a subscriber who unsubscribes during a
//! send may still get the message already queued for them; the next send leaves them out.

use std::time::Duration;

use async_trait::async_trait;
use notifier::{
    outbox::NewDelivery,
    templates::{Context, EmailText, Recipient, Templates},
};
use recovery::{
    registry::{StepKind, StepTraits, params},
    step::{Step, StepContext, StepError, StepOutput},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    AppSlot,
    email_campaign::{Planner, Subscriber},
};
use crate::{
    actor::Actor,
    app::App,
    notify::email::{CHANNEL, EmailPayload, TEMPLATES, message_id, recipient},
    store::{
        Backend, audit,
        outbox::{ENQUEUE_MANY_CHUNK, OutboxProgress, enqueue_many, mark_send_queued},
    },
};

/// Lines of the text part shown in the preview.
pub const PREVIEW_LINES: usize = 5;

/// How often `email_customers` looks at its rows.
const POLL: Duration = Duration::from_millis(500);

/// Least time between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Parameters of `email_preview` and `email_customers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailParams {
    /// The customer email template, e.g. `dr-activated` (usually `{template}`, the argument of
    /// `/dr notify customers <template>`).
    pub template: String,
}

fn parse(p: &serde_json::Value) -> Result<EmailParams, String> {
    let p: EmailParams = params(p)?;
    // A `{placeholder}` is checked again once the plan is resolved.
    if !p.template.contains('{') && !TEMPLATES.contains(&p.template.as_str()) {
        return Err(format!(
            "template: unknown customer email template `{}` (known: {})",
            p.template,
            TEMPLATES.join(", ")
        ));
    }
    Ok(p)
}

/// `email_preview`: read-only, idempotent.
pub struct EmailPreviewKind(pub AppSlot);

/// `email_customers`: destructive, idempotent (re-running adds no rows).
pub struct EmailCustomersKind(pub AppSlot);

impl StepKind for EmailPreviewKind {
    fn name(&self) -> &'static str {
        "email_preview"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: false,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        parse(p).map(drop)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(Preview {
            slot: self.0.clone(),
            template: parse(p)?.template,
        }))
    }
}

impl StepKind for EmailCustomersKind {
    fn name(&self) -> &'static str {
        "email_customers"
    }
    fn traits(&self) -> StepTraits {
        StepTraits {
            destructive: true,
            idempotent: true,
            overridable: false,
        }
    }
    fn validate(&self, p: &serde_json::Value) -> Result<(), String> {
        parse(p).map(drop)
    }
    fn build(&self, p: &serde_json::Value) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(Send {
            slot: self.0.clone(),
            template: parse(p)?.template,
        }))
    }
}

/// What every message of a send is made from.
struct Source {
    templates: Templates,
    context: Context,
    public_url: String,
    incident: String,
}

impl Source {
    /// The templates, the open incident's context and the public URL, or why not.
    async fn load(app: &App) -> Result<Self, StepError> {
        let public_url = app
            .settings
            .config
            .server
            .public_url
            .clone()
            .ok_or_else(|| {
                StepError::fatal(
                    "server.public_url is not set: customer email needs it for unsubscribe links",
                )
            })?;
        let templates = Templates::load(app.settings.config.templates_dir.as_deref())
            .map_err(|e| StepError::fatal(format!("notification templates: {e}")))?;
        let incident = app.store.open_incident().await.map_err(store_error)?.ok_or_else(|| {
            StepError::fatal(
                "no open incident: customer email describes one (open it with `/dr incident open <title>`)",
            )
        })?;
        let updates = app
            .store
            .incident_updates(incident.id)
            .await
            .map_err(store_error)?;
        Ok(Self {
            context: crate::incidents::context(app, &incident, &updates),
            incident: format!(
                "#{} {} ({})",
                incident.id,
                incident.name,
                incident.status.as_str()
            ),
            templates,
            public_url,
        })
    }

    /// The message of `template` for one subscriber.
    fn render(
        &self,
        template: &str,
        email: &str,
        name: Option<&str>,
        token: &str,
    ) -> Result<EmailText, StepError> {
        self.render_for(
            template,
            Recipient {
                email: email.to_string(),
                name: name.map(str::to_string),
                unsubscribe_url: crate::unsubscribe::url(&self.public_url, token),
            },
        )
    }

    /// The message of `template` for `recipient`.
    fn render_for(&self, template: &str, recipient: Recipient) -> Result<EmailText, StepError> {
        if !TEMPLATES.contains(&template) {
            return Err(StepError::fatal(format!(
                "unknown customer email template `{template}` (known: {})",
                TEMPLATES.join(", ")
            )));
        }
        let mut ctx = self.context.clone();
        ctx.recipient = Some(recipient);
        self.templates
            .email(&ctx)
            .map_err(|e| StepError::fatal(format!("rendering `{template}`: {e}")))
    }
}

fn store_error(e: anyhow::Error) -> StepError {
    StepError::retryable(format!("store: {e:#}"))
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn recipients(n: i64) -> String {
    format!(
        "{} recipient{}",
        thousands(n),
        if n == 1 { "" } else { "s" }
    )
}

/// `email_preview`'s summary without `[email]`.
pub const NO_EMAIL_PREVIEW: &str = "No [email] configured: no customer email will be sent";
/// `email_customers`'s summary without `[email]`.
pub const NO_EMAIL_SENT: &str = "No [email] configured: no customer email sent";

/// The output of either step when `[email]` is absent: runbooks that mention customer email
/// (e.g. the built-in `failover`) still run where none is set up.
fn no_email(summary: &str, template: &str) -> StepOutput {
    StepOutput {
        summary: summary.into(),
        log: String::new(),
        data: json!({ "template": template, "email_configured": false, "recipients": 0 }),
    }
}

struct Preview {
    slot: AppSlot,
    template: String,
}

#[async_trait]
impl Step for Preview {
    async fn run(&self, _ctx: &StepContext) -> Result<StepOutput, StepError> {
        let app = self.slot.get()?;
        if app.settings.config.email.is_none() {
            return Ok(no_email(NO_EMAIL_PREVIEW, &self.template));
        }
        let source = Source::load(app).await?;
        // A neutral recipient: the card must not show a customer's name or address.
        let text = source.render(&self.template, "subscriber@example.com", None, "…")?;
        let counts = app.store.subscriber_counts().await.map_err(store_error)?;
        let lines: Vec<&str> = text
            .text
            .lines()
            .skip_while(|l| l.trim().is_empty())
            .take(PREVIEW_LINES)
            .collect();
        let mut log = format!(
            "Subject: {}\nRecipients: {} ({} unsubscribed)\nIncident: {}\n\n",
            text.subject,
            recipients(counts.active),
            thousands(counts.unsubscribed),
            source.incident
        );
        for l in &lines {
            log.push_str(l);
            log.push('\n');
        }
        Ok(StepOutput {
            summary: format!(
                "Subject: \"{}\" · {}",
                text.subject,
                recipients(counts.active)
            ),
            log,
            data: json!({
                "template": self.template,
                "subject": text.subject,
                "recipients": counts.active,
                "unsubscribed": counts.unsubscribed,
                "first_lines": lines,
            }),
        })
    }
}

struct Send {
    slot: AppSlot,
    template: String,
}

impl Send {
    /// Enqueues one row per active subscriber unless this step's rows are all queued (its
    /// `email_sends` row); returns the subject when it enqueued. Rows go in batches of
    /// [`ENQUEUE_TX_ROWS`], each its own transaction, so the store's write lock (on SQLite,
    /// every writer's, the run's lease renewal included) is never held for a whole list; the
    /// step stops between batches when told to. Run again, it adds only the rows still
    /// missing (their keys are unique) and then marks the send queued.
    async fn enqueue(
        &self,
        app: &App,
        ctx: &StepContext,
        prefix: &str,
    ) -> Result<Option<String>, StepError> {
        // Resuming needs neither the incident nor the templates any more.
        if app
            .store
            .email_send_queued(prefix)
            .await
            .map_err(store_error)?
        {
            return Ok(None);
        }
        let source = match Source::load(app).await {
            Ok(s) => s,
            // Stopped part-way, and the incident resolved since: what is queued goes out.
            Err(e) => {
                let queued = app
                    .store
                    .outbox_progress(prefix)
                    .await
                    .map_err(store_error)?
                    .total();
                if queued == 0 {
                    return Err(e);
                }
                let mut tx = app.store.write().await.map_err(store_error)?;
                mark_send_queued(&mut tx, prefix, queued as usize)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(|e| store_error(e.into()))?;
                ctx.progress.line(format!(
                    "resuming: {queued} emails were queued before the step stopped; the rest \
                     cannot be rendered any more ({}), so only those go out",
                    e.message
                ));
                return Ok(None);
            }
        };
        let run_created = app
            .store
            .run(ctx.run_id)
            .await
            .map_err(store_error)?
            .map_or(0, |r| r.created_at);
        let subs = app.store.active_subscribers().await.map_err(store_error)?;
        let mut planner = Planner::new(
            |r| source.render_for(&self.template, r),
            crate::unsubscribe::url(&source.public_url, ""),
        );
        let campaign_key = prefix.strip_suffix("sub:").unwrap_or(prefix);
        let mut subject = None;
        let mut campaign_rows = 0usize;
        let backend = app.store.backend();
        // Subscribers with a name first: each campaign's rows are then contiguous, so an outbox
        // round mostly sends from one campaign.
        let ordered: Vec<_> = subs
            .iter()
            .filter(|s| s.name.is_some())
            .chain(subs.iter().filter(|s| s.name.is_none()))
            .collect();
        for batch in ordered.chunks(ENQUEUE_TX_ROWS) {
            if ctx.cancel.is_cancelled() {
                return Err(StepError::retryable(
                    "stopped while queueing the emails; the rows queued so far are kept, and \
                     the step queues the rest when it runs again",
                ));
            }
            let mut tx = app.store.write().await.map_err(store_error)?;
            let mut rows = Vec::with_capacity(ENQUEUE_MANY_CHUNK);
            for s in batch {
                let text = source.render(&self.template, &s.email, s.name.as_deref(), &s.token)?;
                let key = format!("{prefix}{}", s.id);
                let unsubscribe_url = crate::unsubscribe::url(&source.public_url, &s.token);
                subject.get_or_insert_with(|| text.subject.clone());
                let to = recipient(&s.email, s.name.as_deref());
                let msg_id = message_id(&key, run_created);
                let subscriber = Subscriber {
                    email: &s.email,
                    name: s.name.as_deref(),
                    token: &s.token,
                    id: s.id,
                    to: to.clone(),
                    message_id: msg_id.clone(),
                };
                let payload = match planner.row(subscriber, &text, &unsubscribe_url) {
                    Some(row) => {
                        campaign_rows += 1;
                        let row = planner
                            .payload(&mut tx, campaign_key, row)
                            .await
                            .map_err(store_error)?;
                        serde_json::to_value(&row)
                    }
                    None => serde_json::to_value(&EmailPayload {
                        subscriber: s.id,
                        to,
                        unsubscribe_url,
                        message_id: msg_id,
                        subject: text.subject,
                        text: text.text,
                        html: text.html,
                    }),
                }
                .map_err(|e| StepError::fatal(format!("email payload: {e}")))?;
                rows.push(NewDelivery {
                    key,
                    channel: CHANNEL.into(),
                    payload,
                    ordering_key: None,
                });
                if rows.len() == ENQUEUE_MANY_CHUNK {
                    enqueue_many(&mut tx, backend, &rows)
                        .await
                        .map_err(store_error)?;
                    rows.clear();
                }
            }
            enqueue_many(&mut tx, backend, &rows)
                .await
                .map_err(store_error)?;
            // The campaign stored with the first batch is committed with it; the next batches
            // name it.
            tx.commit().await.map_err(|e| store_error(e.into()))?;
            if backend == Backend::Sqlite {
                // SQLite hands its lock to no one in turn: a writer that waits (the run's
                // lease renewal) polls, and would lose every race against the next batch.
                tokio::time::sleep(SQLITE_YIELD).await;
            }
        }
        if campaign_rows < subs.len() {
            tracing::info!(
                run = ctx.run_id,
                whole_rows = subs.len() - campaign_rows,
                template_slots = planner.usable(),
                "customer email: some rows hold whole messages (the template transforms a \
                 recipient value, or a value has a line break)"
            );
        }
        let mut tx = app.store.write().await.map_err(store_error)?;
        mark_send_queued(&mut tx, prefix, subs.len())
            .await
            .map_err(store_error)?;
        audit::append(
            &mut tx,
            &Actor::system(),
            "email.enqueued",
            Some(ctx.run_id),
            json!({
                "template": self.template,
                "step": ctx.step_index,
                "recipients": subs.len(),
                "campaign_rows": campaign_rows,
                "subject": subject,
                "incident": source.incident,
            }),
        )
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(|e| store_error(e.into()))?;
        Ok(Some(subject.unwrap_or_default()))
    }
}

/// Rows queued per write transaction by `email_customers`.
const ENQUEUE_TX_ROWS: usize = 2_000;

/// The pause between two batches on SQLite, in which other writers get the lock.
const SQLITE_YIELD: std::time::Duration = std::time::Duration::from_millis(50);

fn progress_line(p: &OutboxProgress) -> String {
    let mut line = format!("sent {}/{}", thousands(p.delivered), thousands(p.total()));
    if p.failed > 0 {
        line.push_str(&format!(", {} failed", thousands(p.failed)));
    }
    line
}

#[async_trait]
impl Step for Send {
    async fn run(&self, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let app = self.slot.get()?;
        if app.settings.config.email.is_none() {
            return Ok(no_email(NO_EMAIL_SENT, &self.template));
        }
        let prefix = format!("email:run:{}:step:{}:sub:", ctx.run_id, ctx.step_index);
        let resumed = match self.enqueue(app, ctx, &prefix).await? {
            Some(_) => false,
            None => {
                ctx.progress
                    .line("resuming: this step's emails are already queued");
                true
            }
        };
        let mut last: Option<(OutboxProgress, tokio::time::Instant)> = None;
        let p = loop {
            let p = app
                .store
                .outbox_progress(&prefix)
                .await
                .map_err(store_error)?;
            let due = last.as_ref().is_none_or(|(before, at)| {
                (before.delivered, before.failed) != (p.delivered, p.failed)
                    && at.elapsed() >= PROGRESS_EVERY
            });
            if p.open() == 0 {
                break p;
            }
            if due {
                ctx.progress.line(progress_line(&p));
                last = Some((p.clone(), tokio::time::Instant::now()));
            }
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    return Err(StepError::retryable(format!(
                        "interrupted with {} emails still queued (the outbox still delivers them)",
                        thousands(p.open())
                    )));
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        };
        let data = json!({
            "template": self.template,
            "recipients": p.total(),
            "delivered": p.delivered,
            "failed": p.failed,
            "resumed": resumed,
        });
        if p.total() == 0 {
            return Ok(StepOutput {
                summary: "No active subscribers: nothing to send".into(),
                log: String::new(),
                data,
            });
        }
        let example = p
            .failed_example
            .as_deref()
            .map(|e| format!("\nfirst failure: {e}"))
            .unwrap_or_default();
        if p.delivered == 0 {
            return Err(StepError::fatal(format!(
                "none of the {} emails was delivered (see `drbot outbox --state failed`)",
                thousands(p.total())
            ))
            .with_log(format!("{}{example}", progress_line(&p))));
        }
        let summary = if p.failed == 0 {
            format!(
                "Sent {} email{}",
                thousands(p.delivered),
                if p.delivered == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "Sent {} of {} emails; {} failed (see `drbot outbox --state failed`)",
                thousands(p.delivered),
                thousands(p.total()),
                thousands(p.failed)
            )
        };
        Ok(StepOutput {
            summary,
            log: format!("{}{example}", progress_line(&p)),
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(recipients(1), "1 recipient");
    }

    #[test]
    fn params_are_checked() {
        assert!(parse(&json!({ "template": "dr-activated" })).is_ok());
        assert!(parse(&json!({ "template": "{template}" })).is_ok());
        let e = parse(&json!({ "template": "nope" })).unwrap_err();
        assert!(e.contains("unknown customer email template `nope`"), "{e}");
        assert!(e.contains("dr-activated"), "{e}");
        let e = parse(&json!({ "template": "dr-activated", "to": "x" })).unwrap_err();
        assert!(e.contains("unknown field `to`"), "{e}");
    }
}
