//! A message ready for the wire: envelope addresses and the content with CRLF line ends,
//! computed once per email and kept across retries (same Message-ID and Date). BDAT sends the
//! content as it is; DATA dot-stuffs and terminates it (`stuff`) as it writes. A campaign's
//! message is not copied together: its content is the campaign's shared parts with the
//! recipient's own bytes in between (a window copies the short pieces next to its commands
//! and writes the long ones from where they are).

use std::sync::Arc;

use lettre::Message;
use smallvec::SmallVec;

/// What every message of a campaign shares: its fixed bytes, and where the recipient's own
/// pieces go between them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// The fixed bytes, all pieces one after the other.
    bytes: Vec<u8>,
    /// The message in order: `Some(end)`, fixed bytes up to `end` in `bytes` (from where the
    /// previous fixed piece ended); `None`, the recipient's next own piece.
    segments: Vec<Option<usize>>,
}

impl Layout {
    /// Adds fixed bytes (joined to the fixed piece before, if any).
    pub(crate) fn fixed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.bytes.extend_from_slice(bytes);
        match self.segments.last_mut() {
            Some(Some(end)) => *end = self.bytes.len(),
            _ => self.segments.push(Some(self.bytes.len())),
        }
    }

    /// Adds the place of the recipient's next own piece.
    pub(crate) fn own(&mut self) {
        self.segments.push(None);
    }
}

/// A message's content.
pub(crate) enum Content {
    /// All of it in one buffer.
    Whole(Vec<u8>),
    /// A campaign's shared layout with this message's own pieces: `own` holds them one
    /// after the other, `ends[k]` is where piece `k` ends in it.
    Parts {
        layout: Arc<Layout>,
        own: Vec<u8>,
        ends: SmallVec<[u32; 6]>,
    },
}

impl Content {
    /// The content's pieces in order (one for `Whole`).
    pub(super) fn slices(&self) -> impl Iterator<Item = &[u8]> {
        let (whole, parts) = match self {
            Content::Whole(bytes) => (Some(bytes.as_slice()), None),
            Content::Parts { layout, own, ends } => (None, Some((layout, own, ends))),
        };
        let parts = parts.into_iter().flat_map(|(layout, own, ends)| {
            let (mut fixed_at, mut own_at, mut k) = (0, 0, 0);
            layout.segments.iter().map(move |segment| match *segment {
                Some(end) => {
                    let piece = &layout.bytes[fixed_at..end];
                    fixed_at = end;
                    piece
                }
                None => {
                    let end = ends[k] as usize;
                    let piece = &own[own_at..end];
                    (own_at, k) = (end, k + 1);
                    piece
                }
            })
        });
        whole.into_iter().chain(parts)
    }

    /// Its length in bytes.
    pub(super) fn len(&self) -> usize {
        match self {
            Content::Whole(bytes) => bytes.len(),
            Content::Parts { layout, own, .. } => layout.bytes.len() + own.len(),
        }
    }

    /// All of it in one buffer.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for piece in self.slices() {
            out.extend_from_slice(piece);
        }
        out
    }
}

/// One message as the bulk client sends it.
pub(crate) struct Prepared {
    /// The envelope sender, a valid address (`None`: the null sender).
    pub(super) from: Option<Arc<str>>,
    /// The envelope recipients, valid addresses (one, inline, for a bulk message).
    pub(super) to: SmallVec<[Box<str>; 1]>,
    /// The RFC 5322 message, every line ending in CRLF (the last one too).
    pub(super) content: Content,
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
            content: Content::Whole(crlf(formatted)),
        }
    }
}

impl Prepared {
    /// From envelope addresses (valid ones: the caller checked them) and content already in
    /// CRLF lines, the last one too (the bulk path's own message writers).
    pub(crate) fn from_parts(from: Arc<str>, to: Box<str>, content: Vec<u8>) -> Self {
        let eight_bit = !content.is_ascii();
        Self::checked(from, to, Content::Whole(content), eight_bit)
    }

    /// A campaign's message: its layout with the recipient's own pieces (`ends` as in
    /// `Content::Parts`), all ASCII (every part encoded).
    pub(crate) fn campaign(
        from: Arc<str>,
        to: Box<str>,
        layout: Arc<Layout>,
        own: Vec<u8>,
        ends: SmallVec<[u32; 6]>,
    ) -> Self {
        debug_assert!(own.is_ascii() && layout.bytes.is_ascii());
        debug_assert_eq!(
            ends.len(),
            layout.segments.iter().filter(|s| s.is_none()).count()
        );
        Self::checked(from, to, Content::Parts { layout, own, ends }, false)
    }

    fn checked(from: Arc<str>, to: Box<str>, content: Content, eight_bit: bool) -> Self {
        Self {
            utf8_addresses: !from.is_ascii() || !to.is_ascii(),
            eight_bit,
            from: Some(from),
            to: std::iter::once(to).collect(),
            content,
        }
    }

    /// The envelope recipients.
    #[cfg(test)]
    pub(crate) fn recipients(&self) -> &[Box<str>] {
        &self.to
    }

    /// The content as sent with BDAT.
    pub(crate) fn content(&self) -> Vec<u8> {
        self.content.to_vec()
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
pub(super) fn stuff(content: &Content, out: &mut Vec<u8>) {
    out.reserve(content.len() + content.len() / 64 + 8);
    let mut line_start = true;
    for piece in content.slices() {
        for &b in piece {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Content, Layout, crlf, stuff};

    fn stuffed(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        stuff(&Content::Whole(crlf(content.to_vec())), &mut out);
        out
    }

    #[test]
    fn parts_are_the_layout_with_own_pieces_in_their_places() {
        let mut layout = Layout::default();
        layout.fixed(b"A: 1\r\n");
        layout.own();
        layout.fixed(b"\r\n");
        layout.fixed(b"Hello ");
        layout.own();
        layout.own();
        layout.fixed(b"\r\n.end\r\n");
        assert_eq!(
            layout.segments,
            [Some(6), None, Some(14), None, None, Some(22)]
        );
        let content = Content::Parts {
            layout: Arc::new(layout),
            own: b"To: x\r\n.Ann.".to_vec(),
            ends: [7, 11, 12].into_iter().collect(),
        };
        let whole = b"A: 1\r\nTo: x\r\n\r\nHello .Ann.\r\n.end\r\n";
        assert_eq!(content.to_vec(), whole);
        assert_eq!(content.len(), whole.len());
        let pieces: Vec<&[u8]> = content.slices().collect();
        assert_eq!(pieces.len(), 6);
        // Stuffing follows line starts across pieces: ".Ann." is mid-line, ".end" starts one.
        let mut out = Vec::new();
        stuff(&content, &mut out);
        assert_eq!(out, b"A: 1\r\nTo: x\r\n\r\nHello .Ann.\r\n..end\r\n.\r\n");
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
