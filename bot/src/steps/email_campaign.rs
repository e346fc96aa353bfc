//! How `email_customers` stores a mass send compactly: the template rendered once per variant
//! (recipients with a name, recipients without) with a slot marker in place of each recipient
//! value, stored as a campaign; each subscriber's outbox row then holds only their values.
//!
//! **Architecture Invariant:** a row is a campaign row only when slotting the subscriber's
//! values into the campaign gives exactly the message rendered for them (subject, both parts
//! and unsubscribe link, compared as text). A template that transforms a recipient value
//! (e.g. `{{ recipient.name|upper }}`) or puts one in the subject, or a value with a line
//! break, makes whole-message rows instead: what a customer receives never depends on which.

use notifier::{
    email::{CampaignContent, Recipient as CampaignRecipient},
    templates::{EmailText, Recipient},
};
use recovery::step::StepError;

use crate::{
    notify::email::{CampaignRowPayload, StoredCampaign},
    store::{Tx, campaigns},
};

/// The recipient values a template sees, in slot order: address, name, unsubscribe link.
const FIELDS: usize = 3;

/// One variant of the send's message as a campaign.
struct Variant {
    /// `named` or `anonymous`, the end of the campaign's key.
    name: &'static str,
    /// `None` when the template cannot be slotted (e.g. a recipient value in the subject).
    content: Option<CampaignContent>,
    /// Its id once stored (on first use).
    id: Option<i64>,
}

/// The campaigns of one send, and the choice of row for each subscriber.
pub struct Planner {
    variants: [Variant; 2],
}

/// A subscriber's row in a campaign: which variant, and the row without the campaign's id.
pub struct CampaignRow {
    variant: usize,
    row: CampaignRowPayload,
}

/// What a subscriber's message is made from.
pub struct Subscriber<'a> {
    /// Their address.
    pub email: &'a str,
    /// Their name, if known.
    pub name: Option<&'a str>,
    /// Their unsubscribe token.
    pub token: &'a str,
    /// Their subscriber id.
    pub id: i64,
    /// The row's `To`.
    pub to: String,
    /// The row's Message-ID.
    pub message_id: String,
}

impl Planner {
    /// Renders each variant once with slot markers through `render` (the send's template for
    /// one recipient). `unsubscribe_prefix` is a subscriber's unsubscribe link up to the token.
    pub fn new(
        render: impl Fn(Recipient) -> Result<EmailText, StepError>,
        unsubscribe_prefix: String,
    ) -> Self {
        let mut random = [0u8; 8];
        // Without randomness the markers are still distinct; a clash with the template's own
        // text only makes whole-message rows (the comparison below fails).
        let _ = getrandom::fill(&mut random);
        let nonce: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let markers: Vec<String> = (0..FIELDS).map(|i| format!("drbot{nonce}v{i}x")).collect();
        let variant = |name: &'static str, named: bool| {
            let recipient = Recipient {
                email: markers[0].clone(),
                name: named.then(|| markers[1].clone()),
                unsubscribe_url: markers[2].clone(),
            };
            let content = match render(recipient) {
                Ok(t) if !markers.iter().any(|m| t.subject.contains(m.as_str())) => {
                    Some(CampaignContent {
                        subject: t.subject,
                        text: t.text,
                        html: Some(t.html),
                        slots: markers.clone(),
                        unsubscribe_prefix: Some(unsubscribe_prefix.clone()),
                    })
                }
                _ => None,
            };
            Variant {
                name,
                content,
                id: None,
            }
        };
        Self {
            variants: [variant("named", true), variant("anonymous", false)],
        }
    }

    /// Whether any variant can carry campaign rows.
    pub fn usable(&self) -> bool {
        self.variants.iter().any(|v| v.content.is_some())
    }

    /// `s`'s campaign row, if the campaign gives exactly `rendered` (their own message) with
    /// `unsubscribe_url`.
    pub fn row(
        &self,
        s: Subscriber<'_>,
        rendered: &EmailText,
        unsubscribe_url: &str,
    ) -> Option<CampaignRow> {
        let variant = if s.name.is_some() { 0 } else { 1 };
        let content = self.variants[variant].content.as_ref()?;
        let raw = [s.email, s.name.unwrap_or(""), unsubscribe_url];
        if raw.iter().any(|v| v.contains(['\r', '\n'])) {
            return None;
        }
        let values: Vec<String> = raw.iter().map(|v| v.to_string()).collect();
        let recipient = CampaignRecipient {
            to: s.to,
            message_id: s.message_id,
            unsubscribe_token: Some(s.token.to_string()),
            values,
        };
        let email = content.email_for(&recipient);
        let same = email.subject == rendered.subject
            && email.text == rendered.text
            && email.html.as_deref() == Some(rendered.html.as_str())
            && email.unsubscribe_url.as_deref() == Some(unsubscribe_url);
        same.then(|| CampaignRow {
            variant,
            row: CampaignRowPayload {
                campaign: 0,
                subscriber: s.id,
                to: recipient.to,
                message_id: recipient.message_id,
                unsubscribe_token: s.token.to_string(),
                values: recipient.values,
            },
        })
    }

    /// `row`'s payload, storing its campaign under `key_prefix` + the variant in `tx` when
    /// this is its first row.
    pub async fn payload(
        &mut self,
        tx: &mut Tx,
        key_prefix: &str,
        row: CampaignRow,
    ) -> anyhow::Result<CampaignRowPayload> {
        let v = &mut self.variants[row.variant];
        let id = match v.id {
            Some(id) => id,
            None => {
                let Some(content) = v.content.clone() else {
                    anyhow::bail!("email campaign `{}` has no content", v.name);
                };
                let json = serde_json::to_string(&StoredCampaign::from(content))?;
                // Keyed by its content too: a step queueing its rows again finds the same
                // campaign, unless what it renders changed meanwhile (a new incident update),
                // which then is a campaign of its own.
                use sha2::Digest as _;
                let digest = hex::encode(&sha2::Sha256::digest(json.as_bytes())[..8]);
                let key = format!("{key_prefix}{}:{digest}", v.name);
                let id = campaigns::insert_tx(tx, &key, &json).await?;
                v.id = Some(id);
                id
            }
        };
        Ok(CampaignRowPayload {
            campaign: id,
            ..row.row
        })
    }
}

#[cfg(test)]
mod tests {
    use notifier::templates::{Context, Templates};

    use super::*;

    const PREFIX: &str = "https://status.example.com/unsubscribe?token=";

    fn render(templates: &Templates) -> impl Fn(Recipient) -> Result<EmailText, StepError> + '_ {
        |r| {
            let mut ctx = Context::sample();
            ctx.recipient = Some(r);
            templates
                .email(&ctx)
                .map_err(|e| StepError::fatal(e.to_string()))
        }
    }

    fn subscriber<'a>(email: &'a str, name: Option<&'a str>) -> Subscriber<'a> {
        Subscriber {
            email,
            name,
            token: "ab12",
            id: 1,
            to: email.to_string(),
            message_id: "m.1".into(),
        }
    }

    /// What the subscriber gets rendered directly.
    fn real(templates: &Templates, email: &str, name: Option<&str>) -> EmailText {
        render(templates)(Recipient {
            email: email.into(),
            name: name.map(str::to_string),
            unsubscribe_url: format!("{PREFIX}ab12"),
        })
        .unwrap()
    }

    #[test]
    fn the_built_in_template_slots_every_recipient() {
        let templates = Templates::load(None).unwrap();
        let planner = Planner::new(render(&templates), PREFIX.into());
        assert!(planner.usable());
        let url = format!("{PREFIX}ab12");
        for (email, name) in [
            ("ann@x.org", Some("Ann")),
            ("bob@x.org", None),
            ("o'brien@x.org", Some("O'Brien & <Sons> / \"Ltd\"")),
            ("zoe@x.org", Some("Zoë 🚀")),
        ] {
            let text = real(&templates, email, name);
            let row = planner.row(subscriber(email, name), &text, &url);
            let row = row.unwrap_or_else(|| panic!("{email}: no campaign row"));
            assert_eq!(row.variant, usize::from(name.is_none()));
            assert_eq!(row.row.values.len(), FIELDS);
        }
    }

    #[test]
    fn line_breaks_and_other_messages_make_whole_rows() {
        let templates = Templates::load(None).unwrap();
        let planner = Planner::new(render(&templates), PREFIX.into());
        let url = format!("{PREFIX}ab12");
        let name = Some("Ann\nBcc: x");
        let text = real(&templates, "ann@x.org", name);
        assert!(
            planner
                .row(subscriber("ann@x.org", name), &text, &url)
                .is_none()
        );
        // A message that is not what the campaign gives (here: another recipient's).
        let other = real(&templates, "bob@x.org", Some("Bob"));
        let s = subscriber("ann@x.org", Some("Ann"));
        assert!(planner.row(s, &other, &url).is_none());
    }

    #[test]
    fn a_recipient_value_in_the_subject_makes_no_campaign() {
        let planner = Planner::new(
            |r: Recipient| {
                Ok(EmailText {
                    subject: format!("News for {}", r.email),
                    text: format!("Hi {}", r.email),
                    html: format!("<p>Hi {}</p>", r.email),
                })
            },
            PREFIX.into(),
        );
        assert!(!planner.usable());
    }
}
