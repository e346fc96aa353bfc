//! What an `email` outbox row holds: a whole rendered message ([`EmailPayload`]) or one
//! recipient of a stored campaign ([`CampaignRowPayload`], the campaign itself a
//! [`StoredCampaign`] in `email_campaigns`); and the recipient's `To` and Message-ID.

use notifier::email::{CampaignContent, OutgoingEmail, Recipient};
use serde::{Deserialize, Serialize};

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
    /// The email to send.
    pub fn into_email(self) -> OutgoingEmail {
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

/// One recipient of a campaign, as stored in its outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignRowPayload {
    /// The campaign's id in `email_campaigns`.
    pub campaign: i64,
    /// The subscriber's id.
    pub subscriber: i64,
    /// Recipient, `addr` or `"Name" <addr>`.
    pub to: String,
    /// Message-ID (without domain: the sender's is added), the same for every attempt.
    pub message_id: String,
    /// The subscriber's unsubscribe token, appended to the campaign's unsubscribe prefix.
    pub unsubscribe_token: String,
    /// One value per slot of the campaign, in its order.
    pub values: Vec<String>,
}

impl CampaignRowPayload {
    /// The campaign's recipient.
    pub fn into_recipient(self) -> Recipient {
        Recipient {
            to: self.to,
            message_id: self.message_id,
            unsubscribe_token: Some(self.unsubscribe_token),
            values: self.values,
        }
    }
}

/// A campaign as stored in `email_campaigns.content` (JSON): `notifier`'s `CampaignContent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCampaign {
    /// Subject line, the same for every recipient.
    pub subject: String,
    /// Plain-text part with slot markers.
    pub text: String,
    /// HTML part with slot markers.
    pub html: Option<String>,
    /// The slot markers, in the order of each row's values.
    pub slots: Vec<String>,
    /// The unsubscribe URL up to the token.
    pub unsubscribe_prefix: Option<String>,
}

impl From<StoredCampaign> for CampaignContent {
    fn from(c: StoredCampaign) -> Self {
        CampaignContent {
            subject: c.subject,
            text: c.text,
            html: c.html,
            slots: c.slots,
            unsubscribe_prefix: c.unsubscribe_prefix,
        }
    }
}

impl From<CampaignContent> for StoredCampaign {
    fn from(c: CampaignContent) -> Self {
        StoredCampaign {
            subject: c.subject,
            text: c.text,
            html: c.html,
            slots: c.slots,
            unsubscribe_prefix: c.unsubscribe_prefix,
        }
    }
}

/// An `email` row's payload, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowPayload {
    /// A whole message.
    Whole(EmailPayload),
    /// A campaign's recipient.
    Campaign(CampaignRowPayload),
}

impl RowPayload {
    /// Reads a row's payload: a campaign recipient when it names a campaign, else a message.
    pub fn read(payload: serde_json::Value) -> Result<Self, serde_json::Error> {
        if payload.get("campaign").is_some() {
            serde_json::from_value(payload).map(RowPayload::Campaign)
        } else {
            serde_json::from_value(payload).map(RowPayload::Whole)
        }
    }
}

/// The Message-ID of the row with idempotency `key` of a run created at `run_created_ms`: the
/// key with every character outside letters, digits and `.-` turned into `.`, then the
/// run's creation time (e.g. `email:run:7:step:1:sub:42` → `email.run.7.step.1.sub.42.
/// 1795874977554`), so it is the same for every attempt of that row, and differs from the
/// row of the same key in another store (a store recreated after its region was lost counts
/// runs from 1 again, and receivers drop a Message-ID they have seen).
pub fn message_id(key: &str, run_created_ms: i64) -> String {
    let mut id: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect();
    id.push_str(&format!(".{run_created_ms}"));
    id
}

/// The `To` of a subscriber: `"Name" <addr>` when a name is known and valid, else the address.
pub fn recipient(email: &str, name: Option<&str>) -> String {
    let Ok(address) = email.parse::<lettre::Address>() else {
        return email.to_string();
    };
    lettre::message::Mailbox::new(name.map(str::to_string), address).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_ids_follow_the_key() {
        assert_eq!(
            message_id("email:run:7:step:1:sub:42", 1_795_874_977_554),
            "email.run.7.step.1.sub.42.1795874977554"
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

    #[test]
    fn payloads_are_read_by_kind_and_strictly() {
        let row = json!({
            "campaign": 3, "subscriber": 9, "to": "a@x.org", "message_id": "m.9",
            "unsubscribe_token": "ab12", "values": ["a@x.org", ""]
        });
        let RowPayload::Campaign(p) = RowPayload::read(row.clone()).unwrap() else {
            panic!("not a campaign row");
        };
        assert_eq!((p.campaign, p.values.len()), (3, 2));
        let mut extra = row;
        extra["subject"] = json!("x");
        let e = RowPayload::read(extra).unwrap_err().to_string();
        assert!(e.contains("unknown field `subject`"), "{e}");
        let whole = json!({
            "subscriber": 9, "to": "a@x.org", "subject": "s", "text": "t", "html": "h",
            "unsubscribe_url": "https://x/u?token=1", "message_id": "m.9"
        });
        assert!(matches!(
            RowPayload::read(whole).unwrap(),
            RowPayload::Whole(p) if p.message_id == "m.9"
        ));
        let e = RowPayload::read(json!({ "to": 1 }))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
    }
}
