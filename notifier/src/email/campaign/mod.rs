//! Campaigns: one message for many recipients (the customer notice of an incident), its
//! headers and bodies rendered and encoded once, each recipient's values (address,
//! Message-ID, unsubscribe token, slots in the bodies) encoded alone and slotted in as the
//! message is written. `Mailer::send_campaign` sends it through the bulk engine: the same
//! connections, windows, retries and one `Delivery` per recipient as `send_many`, without
//! building each message from scratch.

mod encode;

use std::sync::Arc;

use futures::Stream;
use lettre::message::header::{self, Headers};
use lettre::message::{Mailbox, Mailboxes};
use smallvec::SmallVec;

use super::bulk::{BulkOptions, Delivery};
use super::error::{ConfigError, SendError};
use super::mailer::Mailer;
use super::message::{OutgoingEmail, message_id_parts, unsubscribe_entry};
use super::smtp::{Layout, Prepared};
use super::wire::{plain_address, with_date_now};
use super::workers::Letters;

/// What a campaign sends: the same subject and bodies for every recipient, apart from slots
/// that each recipient fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignContent {
    /// Subject line, the same for everyone; any Unicode (RFC 2047 when not ASCII).
    pub subject: String,
    /// Plain-text body; every slot marker in it is replaced by the recipient's value.
    pub text: String,
    /// HTML body; with it the message is multipart/alternative (text, then HTML). Every slot
    /// marker in it is replaced by the recipient's value, HTML-escaped.
    pub html: Option<String>,
    /// Slot markers (e.g. `{{name}}`), non-empty; `Recipient::values` gives one value per
    /// marker, in this order.
    pub slots: Vec<String>,
    /// One-click unsubscribe URL up to the recipient's token (e.g.
    /// `https://status.example.com/unsubscribe?token=`): every message then has
    /// `List-Unsubscribe` with the prefix and the token, and `List-Unsubscribe-Post`
    /// (RFC 8058).
    pub unsubscribe_prefix: Option<String>,
}

/// One recipient of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `addr@example.com` or `Name <addr@example.com>`.
    pub to: String,
    /// Idempotency key of this delivery, sent as the `Message-ID` (as `OutgoingEmail`'s).
    pub message_id: String,
    /// The recipient's unsubscribe token: required when the campaign has an unsubscribe
    /// prefix, refused otherwise; letters, digits and `-._~` only.
    pub unsubscribe_token: Option<String>,
    /// One value per slot of the campaign, in order.
    pub values: Vec<String>,
}

/// A body as encoded pieces: fixed text, encoded once, and slots.
#[derive(Debug)]
enum Piece {
    Fixed(Vec<u8>),
    Slot(usize),
}

/// A campaign ready to send: everything that is the same for every recipient, on the wire
/// already. Built by `Mailer::campaign`.
#[derive(Debug)]
pub struct Campaign {
    from: Arc<str>,
    domain: String,
    /// The fixed bytes of every message; the recipient's own pieces are its header lines
    /// (`To`, `Message-ID`, `Date`, `List-Unsubscribe`) and then its slot values.
    layout: Arc<Layout>,
    /// The slot of each own piece after the header lines, in order, and whether it is in
    /// the HTML body.
    slot_pieces: Vec<(usize, bool)>,
    /// `List-Unsubscribe: <` and the prefix.
    unsubscribe: Option<Vec<u8>>,
    slots: usize,
}

/// `name: value` header lines as lettre encodes them (folded, RFC 2047 when needed).
fn header_lines(set: impl FnOnce(&mut Headers)) -> Vec<u8> {
    let mut headers = Headers::new();
    set(&mut headers);
    headers.to_string().into_bytes()
}

/// A stretch of a body between slot markers, or the slot of a marker.
enum Part<'a> {
    Text(&'a str),
    Slot(usize),
}

/// `body` as text between markers and the markers' slots, in order (text parts may be empty).
/// Where markers overlap, the earliest wins, then the first in `markers`.
fn split<'a>(body: &'a str, markers: &'a [String]) -> impl Iterator<Item = Part<'a>> + 'a {
    let mut rest = Some(body);
    let mut slot = None;
    std::iter::from_fn(move || {
        if let Some(i) = slot.take() {
            return Some(Part::Slot(i));
        }
        let r = rest?;
        let next = markers
            .iter()
            .enumerate()
            .filter_map(|(i, m)| r.find(m.as_str()).map(|at| (at, i, m.len())))
            .min_by_key(|&(at, i, _)| (at, i));
        Some(Part::Text(match next {
            Some((at, i, len)) => {
                rest = Some(&r[at + len..]);
                slot = Some(i);
                &r[..at]
            }
            None => {
                rest = None;
                r
            }
        }))
    })
}

fn pieces(body: &str, markers: &[String]) -> Vec<Piece> {
    split(body, markers)
        .filter_map(|part| match part {
            Part::Text("") => None,
            Part::Text(text) => {
                let mut bytes = Vec::new();
                encode::piece(text.as_bytes(), &mut bytes);
                Some(Piece::Fixed(bytes))
            }
            Part::Slot(i) => Some(Piece::Slot(i)),
        })
        .collect()
}

const BODY_HEADERS: &str = "; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n";

impl Campaign {
    fn new(mailer: &Mailer, content: CampaignContent) -> Result<Self, SendError> {
        let invalid = |why: String| Err(SendError::Invalid(why));
        if let Some(m) = content.slots.iter().find(|m| m.is_empty()) {
            return invalid(format!("campaign slot marker `{m}` is empty"));
        }
        let unsubscribe = match &content.unsubscribe_prefix {
            Some(prefix) => {
                let entry = unsubscribe_entry(&format!("{prefix}t"), &["https", "http"], "")?;
                if entry != format!("<{prefix}t>") || prefix.len() > 700 {
                    return invalid(format!(
                        "unsubscribe prefix `{prefix}` must be a normalised http(s) URL needing \
                         no quoting, at most 700 characters"
                    ));
                }
                Some(format!("List-Unsubscribe: <{prefix}").into_bytes())
            }
            None => None,
        };
        let from = mailer.sender().clone();
        let head = header_lines(|h| {
            h.set(header::From::from(Mailboxes::from(from.clone())));
            h.set(header::Subject::from(content.subject.clone()));
            h.set(header::MIME_VERSION_1_0);
        });
        let boundary: String = std::iter::once("=_".to_string())
            .chain(std::iter::repeat_with(|| fastrand::alphanumeric().to_string()).take(38))
            .collect();
        let (before_text, html, tail) = match &content.html {
            Some(html) => (
                format!(
                    "Content-Type: multipart/alternative;\r\n boundary=\"{boundary}\"\r\n\r\n\
                     --{boundary}\r\nContent-Type: text/plain{BODY_HEADERS}"
                ),
                Some((
                    format!("\r\n--{boundary}\r\nContent-Type: text/html{BODY_HEADERS}")
                        .into_bytes(),
                    pieces(html, &content.slots),
                )),
                format!("\r\n--{boundary}--\r\n"),
            ),
            None => (
                format!("Content-Type: text/plain{BODY_HEADERS}"),
                None,
                String::new(),
            ),
        };
        let mut layout = Layout::default();
        let mut slot_pieces = Vec::new();
        layout.fixed(&head);
        layout.own();
        layout.fixed(before_text.as_bytes());
        let mut add = |body: &[Piece], html: bool, layout: &mut Layout| {
            for p in body {
                match p {
                    Piece::Fixed(bytes) => layout.fixed(bytes),
                    Piece::Slot(i) => {
                        layout.own();
                        slot_pieces.push((*i, html));
                    }
                }
            }
        };
        add(&pieces(&content.text, &content.slots), false, &mut layout);
        if let Some((headers, body)) = &html {
            layout.fixed(headers);
            add(body, true, &mut layout);
        }
        layout.fixed(tail.as_bytes());
        Ok(Self {
            from: Arc::from(AsRef::<str>::as_ref(&from.email)),
            domain: mailer.domain().to_string(),
            layout: Arc::new(layout),
            slot_pieces,
            unsubscribe,
            slots: content.slots.len(),
        })
    }

    /// A copy sharing no reference count with this one: each bulk worker prepares messages
    /// with its own, so workers on different threads do not contend for one counter.
    fn unshared(&self) -> Campaign {
        Campaign {
            from: Arc::from(&*self.from),
            domain: self.domain.clone(),
            layout: Arc::new((*self.layout).clone()),
            slot_pieces: self.slot_pieces.clone(),
            unsubscribe: self.unsubscribe.clone(),
            slots: self.slots,
        }
    }

    /// The message for `r`, ready for the wire, with the Date of now.
    pub(crate) fn prepare(&self, r: &Recipient) -> Result<Prepared, SendError> {
        let invalid = |why: String| Err(SendError::Invalid(why));
        if r.values.len() != self.slots {
            return invalid(format!(
                "recipient `{}` has {} values for {} slots",
                r.to,
                r.values.len(),
                self.slots
            ));
        }
        let (to, to_line): (Box<str>, _) = if plain_address(&r.to) {
            (r.to.as_str().into(), None)
        } else {
            let mailbox: Mailbox = r.to.parse().map_err(|e| {
                SendError::Invalid(format!("recipient `{}` is not an email address: {e}", r.to))
            })?;
            let line = header_lines(|h| h.set(header::To::from(Mailboxes::from(mailbox.clone()))));
            (AsRef::<str>::as_ref(&mailbox.email).into(), Some(line))
        };
        let (id_local, id_domain) = message_id_parts(&r.message_id, &self.domain)?;
        let token = match (&self.unsubscribe, &r.unsubscribe_token) {
            (Some(_), Some(t))
                if !t.is_empty()
                    && t.len() <= 200
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) =>
            {
                Some(t)
            }
            (None, None) => None,
            (Some(_), _) => {
                return invalid(format!(
                    "recipient `{}` needs an unsubscribe token of 1 to 200 letters, digits or -._~",
                    r.to
                ));
            }
            (None, Some(_)) => {
                return invalid(format!(
                    "recipient `{}` has an unsubscribe token but the campaign has no unsubscribe URL",
                    r.to
                ));
            }
        };
        let values: usize = self
            .slot_pieces
            .iter()
            .map(|&(i, _)| r.values[i].len() * 2)
            .sum();
        let mut own = Vec::with_capacity(300 + r.to.len() + values);
        match &to_line {
            Some(line) => own.extend_from_slice(line),
            None => {
                own.extend_from_slice(b"To: ");
                own.extend_from_slice(r.to.as_bytes());
                own.extend_from_slice(b"\r\n");
            }
        }
        own.extend_from_slice(b"Message-ID: <");
        own.extend_from_slice(id_local.as_bytes());
        own.push(b'@');
        own.extend_from_slice(id_domain.as_bytes());
        own.extend_from_slice(b">\r\nDate: ");
        with_date_now(|date| own.extend_from_slice(date.as_bytes()));
        own.extend_from_slice(b"\r\n");
        if let (Some(prefix), Some(token)) = (&self.unsubscribe, token) {
            own.extend_from_slice(prefix);
            own.extend_from_slice(token.as_bytes());
            own.extend_from_slice(b">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        let mut ends = SmallVec::new();
        let end = |own: &Vec<u8>| {
            u32::try_from(own.len()).map_err(|_| {
                SendError::Invalid(format!("recipient `{}` has values too long", r.to))
            })
        };
        ends.push(end(&own)?);
        for &(slot, html) in &self.slot_pieces {
            write_value(&r.values[slot], html, &mut own);
            ends.push(end(&own)?);
        }
        Ok(Prepared::campaign(
            self.from.clone(),
            to,
            self.layout.clone(),
            own,
            ends,
        ))
    }
}

/// A slot value quoted-printable encoded into `out`, HTML-escaped first in the HTML body.
fn write_value(value: &str, html: bool, out: &mut Vec<u8>) {
    if html && crate::page::format::needs_xml_escape(value) {
        let mut escaped = String::with_capacity(value.len() + 8);
        crate::page::format::escape_xml(value, &mut escaped);
        encode::piece(escaped.as_bytes(), out)
    } else {
        encode::piece(value.as_bytes(), out)
    }
}

impl CampaignContent {
    /// The campaign's message for `r` as an ordinary email: each slot marker replaced by the
    /// recipient's value (HTML-escaped in the HTML body, as the campaign escapes it), the unsubscribe
    /// URL the prefix and the token. Sent with `send_many` or `send`, it carries the same
    /// headers and decodes to the same text as the campaign's message for `r`. A recipient
    /// with too few values gets empty ones: sending refuses it anyway.
    pub fn email_for(&self, r: &Recipient) -> OutgoingEmail {
        let fill = |body: &str, html: bool| {
            let mut out = String::with_capacity(body.len() + 64);
            for part in split(body, &self.slots) {
                match part {
                    Part::Text(text) => out.push_str(text),
                    Part::Slot(i) => {
                        let value = r.values.get(i).map_or("", String::as_str);
                        if html {
                            crate::page::format::escape_xml(value, &mut out);
                        } else {
                            out.push_str(value);
                        }
                    }
                }
            }
            out
        };
        OutgoingEmail {
            to: r.to.clone(),
            subject: self.subject.clone(),
            text: fill(&self.text, false),
            html: self.html.as_deref().map(|h| fill(h, true)),
            unsubscribe_url: self
                .unsubscribe_prefix
                .as_ref()
                .zip(r.unsubscribe_token.as_ref())
                .map(|(prefix, token)| format!("{prefix}{token}")),
            unsubscribe_mailto: None,
            message_id: r.message_id.clone(),
        }
    }
}

/// A campaign's recipients, as the bulk engine sends them.
pub(super) struct CampaignLetters(Arc<Campaign>);

impl Letters for CampaignLetters {
    type Item = Recipient;
    type Writer = Campaign;

    fn writer(&self) -> Campaign {
        self.0.unshared()
    }

    fn prepare(writer: &Campaign, item: &Recipient) -> Result<Prepared, SendError> {
        writer.prepare(item)
    }

    fn message_id(item: &Recipient) -> &str {
        &item.message_id
    }

    fn into_ids(item: Recipient) -> (String, String) {
        (item.message_id, item.to)
    }
}

impl Mailer {
    /// A campaign of `content` from this mailer's sender. Invalid content (an empty slot
    /// marker, an unusable unsubscribe prefix) is refused here, once, not per recipient.
    pub fn campaign(&self, content: CampaignContent) -> Result<Arc<Campaign>, SendError> {
        Campaign::new(self, content).map(Arc::new)
    }

    /// The bytes `send_campaign` would transmit for `recipient`, apart from the Date.
    pub fn format_campaign(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
    ) -> Result<Vec<u8>, SendError> {
        campaign.prepare(recipient).map(|p| p.content())
    }

    /// Sends `campaign` to every recipient of `recipients`, exactly as `send_many` sends
    /// emails (connections, windows, rate limit, retries with the same Message-ID and Date,
    /// one `Delivery` per recipient, bounded memory), each message written from the
    /// campaign's encoded parts and the recipient's values. An invalid recipient gets an
    /// `Invalid` delivery and is not sent.
    pub fn send_campaign<S>(
        &self,
        campaign: Arc<Campaign>,
        recipients: S,
        options: BulkOptions,
    ) -> Result<impl Stream<Item = Delivery> + Send + 'static, ConfigError>
    where
        S: Stream<Item = Recipient> + Send + 'static,
    {
        self.start_bulk(CampaignLetters(campaign), recipients, options)
    }
}

#[cfg(test)]
mod tests;
