//! The benchmark's sample email: about the size of the seed's DR activation notice.

use notifier::email::{CampaignContent, OutgoingEmail, Recipient};

/// The sender of every message.
pub const FROM: &str = "Example Status <status@example.com>";

/// The email for recipient `i`, with Message-ID `bench-{i}@example.com`.
pub fn email(i: usize) -> OutgoingEmail {
    let text = format!(
        "Dear Customer {i},\n\nWe are currently experiencing issues with our primary \
         infrastructure region. We have activated our disaster recovery procedures.\n\n\
         Expected impact:\n- Brief service interruption (5-15 minutes)\n- Some recent data may \
         need to be re-synced\n\nWe will provide updates every 30 minutes.\n\n\
         Status page: https://status.example.com\n\nThank you for your patience.\n"
    );
    let html = format!(
        "<!doctype html><html><body><p>Dear Customer {i},</p><p>We are currently experiencing \
         issues with our primary infrastructure region. We have activated our disaster recovery \
         procedures.</p><p>Expected impact:</p><ul><li>Brief service interruption (5-15 \
         minutes)</li><li>Some recent data may need to be re-synced</li></ul><p>We will provide \
         updates every 30 minutes.</p><p><a href=\"https://status.example.com\">Status page</a>\
         </p><p>Thank you for your patience.</p></body></html>"
    );
    OutgoingEmail {
        to: format!("customer{i}@customer.example"),
        subject: "Service Update - DR Activation".into(),
        text,
        html: Some(html),
        unsubscribe_url: Some(format!(
            "https://status.example.com/unsubscribe?token=tok{i:08}"
        )),
        unsubscribe_mailto: None,
        message_id: format!("bench-{i}"),
    }
}

/// The same notice as a campaign: rendered once, the customer number in slot `{{n}}`.
pub fn campaign() -> CampaignContent {
    let email = email(0);
    CampaignContent {
        subject: email.subject,
        text: email.text.replace("Customer 0", "Customer {{n}}"),
        html: email
            .html
            .map(|h| h.replace("Customer 0", "Customer {{n}}")),
        slots: vec!["{{n}}".into()],
        unsubscribe_prefix: Some("https://status.example.com/unsubscribe?token=".into()),
    }
}

/// Recipient `i` of the campaign: the same address, Message-ID and token as `email(i)`.
pub fn recipient(i: usize) -> Recipient {
    let n = i.to_string();
    let zeros = "00000000".get(n.len()..).unwrap_or("");
    Recipient {
        to: ["customer", &n, "@customer.example"].concat(),
        message_id: ["bench-", &n].concat(),
        unsubscribe_token: Some(["tok", zeros, &n].concat()),
        values: vec![n],
    }
}
