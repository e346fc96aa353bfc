//! A message ready for the wire: envelope addresses and the content with CRLF line ends,
//! computed once per email and kept across retries (same Message-ID and Date). BDAT sends the
//! content as it is; DATA dot-stuffs and terminates it (`stuff`) as it writes.

use std::sync::Arc;

use lettre::Message;

/// One message as the bulk client sends it.
pub(crate) struct Prepared {
    /// The envelope sender, a valid address (`None`: the null sender).
    pub(super) from: Option<Arc<str>>,
    /// The envelope recipients, valid addresses.
    pub(super) to: Vec<Box<str>>,
    /// The RFC 5322 message, every line ending in CRLF (the last one too).
    pub(super) content: Vec<u8>,
    /// The content has non-ASCII bytes (needs 8BITMIME).
    pub(super) eight_bit: bool,
    /// An address has non-ASCII characters (needs SMTPUTF8).
    pub(super) utf8_addresses: bool,
}

impl Prepared {
    /// From a built lettre message.
    pub(crate) fn new(message: &Message) -> Self {
        let envelope = message.envelope();
        let formatted = message.formatted();
        Self {
            from: envelope.from().map(|a| Arc::from(AsRef::<str>::as_ref(a))),
            to: envelope
                .to()
                .iter()
                .map(|a| Box::from(AsRef::<str>::as_ref(a)))
                .collect(),
            eight_bit: !formatted.is_ascii(),
            utf8_addresses: envelope
                .from()
                .into_iter()
                .chain(envelope.to())
                .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii()),
            content: crlf(formatted),
        }
    }
}

impl Prepared {
    /// From envelope addresses (valid ones: the caller checked them) and content already in
    /// CRLF lines, the last one too (the bulk path's own message writers).
    pub(crate) fn from_parts(from: Arc<str>, to: Box<str>, content: Vec<u8>) -> Self {
        let eight_bit = !content.is_ascii();
        Self::checked(from, to, content, eight_bit)
    }

    /// As `from_parts`, for content known to be ASCII (a campaign's: every part encoded).
    pub(crate) fn from_ascii_parts(from: Arc<str>, to: Box<str>, content: Vec<u8>) -> Self {
        debug_assert!(content.is_ascii());
        Self::checked(from, to, content, false)
    }

    fn checked(from: Arc<str>, to: Box<str>, content: Vec<u8>, eight_bit: bool) -> Self {
        Self {
            utf8_addresses: !from.is_ascii() || !to.is_ascii(),
            eight_bit,
            from: Some(from),
            to: vec![to],
            content,
        }
    }

    /// The envelope recipients.
    #[cfg(test)]
    pub(crate) fn recipients(&self) -> &[Box<str>] {
        &self.to
    }

    /// The content as sent with BDAT.
    pub(crate) fn content(&self) -> &[u8] {
        &self.content
    }
}

/// `content` with every bare LF made CRLF and a final CRLF added when missing; lettre's output
/// is normally CRLF already, and is then returned as it is, without a copy.
pub(super) fn crlf(content: Vec<u8>) -> Vec<u8> {
    let bare_lf = content
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || content[i - 1] != b'\r'));
    let mut out = if bare_lf {
        let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 2);
        let mut prev = 0u8;
        for &b in &content {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        out
    } else {
        content
    };
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// RFC 5321 §4.5.2 transparency for DATA: appends `content` (CRLF lines) to `out` with a `.`
/// starting a line doubled, then the terminating `.` CRLF.
pub(super) fn stuff(content: &[u8], out: &mut Vec<u8>) {
    out.reserve(content.len() + content.len() / 64 + 8);
    let mut line_start = true;
    for &b in content {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::{crlf, stuff};

    fn stuffed(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        stuff(&crlf(content.to_vec()), &mut out);
        out
    }

    #[test]
    fn dots_are_doubled_and_the_end_marked() {
        assert_eq!(
            stuffed(b".a\r\nb\r\n.\r\n..c"),
            b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
        );
        assert_eq!(stuffed(b"a\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuffed(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }

    #[test]
    fn content_gets_crlf_line_ends_and_no_stuffing() {
        assert_eq!(crlf(b".a\nb".to_vec()), b".a\r\nb\r\n");
        assert_eq!(crlf(b"\n.\r\n".to_vec()), b"\r\n.\r\n");
        assert_eq!(crlf(b"a\r\n".to_vec()), b"a\r\n");
        assert_eq!(crlf(Vec::new()), b"");
    }
}
