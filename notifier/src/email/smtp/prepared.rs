//! A message ready for the wire: envelope addresses and the DATA bytes, dot-stuffed and
//! terminated, computed once per email and kept across retries (same Message-ID and Date).

use lettre::Message;

/// One message as the bulk client sends it.
pub(crate) struct Prepared {
    pub(super) from: Option<lettre::Address>,
    pub(super) to: Vec<lettre::Address>,
    /// Dot-stuffed content ending with `\r\n.\r\n`.
    pub(super) data: Vec<u8>,
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
            from: envelope.from().cloned(),
            to: envelope.to().to_vec(),
            eight_bit: !formatted.is_ascii(),
            utf8_addresses: envelope
                .from()
                .into_iter()
                .chain(envelope.to())
                .any(|a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii()),
            data: stuff(&formatted),
        }
    }
}

/// RFC 5321 §4.5.2 transparency: a `.` starting a line is doubled; bare LF becomes CRLF; the
/// content ends with CRLF and then `.` CRLF.
pub(super) fn stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 8);
    let mut line_start = true;
    let mut prev = 0u8;
    for &b in content {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::stuff;

    #[test]
    fn dots_are_doubled_and_the_end_marked() {
        assert_eq!(
            stuff(b".a\r\nb\r\n.\r\n..c"),
            b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
        );
        assert_eq!(stuff(b"a\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(stuff(b""), b".\r\n");
        assert_eq!(stuff(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }
}
