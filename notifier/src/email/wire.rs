//! The bulk path's message writer: for the common email (ASCII addresses and subject, header
//! lines that need no folding, bodies that lettre sends as 7bit or quoted-printable) it writes
//! the very bytes that lettre's builder (`message::build`) would, in one pass into one buffer,
//! several times faster; for any other email it declines and lettre builds it. The unit tests
//! compare both writers byte for byte (apart from Date and the MIME boundary, which differ
//! between any two builds).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use email_encoding::body::Encoding;
use std::sync::Arc;

use lettre::message::Mailbox;

use super::message::{OutgoingEmail, byte_class, message_id_header, unsubscribe_entry};
use super::smtp::Prepared;

/// Longest header line (without CRLF) that lettre's header encoder never folds.
const MAX_LINE: usize = 76;

/// What every message from one sender shares.
pub(crate) struct Writer {
    /// `From: …\r\n` exactly as lettre writes it for the sender.
    from_line: Vec<u8>,
    from: Arc<str>,
    domain: String,
}

impl Writer {
    /// For messages from `from` (Message-IDs completed with `domain`).
    pub(crate) fn new(from: &Mailbox, domain: &str) -> Option<Self> {
        if !from.email.to_string().is_ascii() {
            return None;
        }
        // lettre's own rendering of the From header, taken from a probe message.
        let probe = lettre::Message::builder()
            .from(from.clone())
            .to("probe@example.com".parse().ok()?)
            .body(String::new())
            .ok()?
            .formatted();
        let start = probe.windows(6).position(|w| w == b"From: ")?;
        let mut end = start;
        loop {
            let nl = probe[end..].windows(2).position(|w| w == b"\r\n")? + end + 2;
            end = nl;
            if !matches!(probe.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        Some(Self {
            from_line: probe[start..end].to_vec(),
            from: Arc::from(AsRef::<str>::as_ref(&from.email)),
            domain: domain.to_string(),
        })
    }

    /// `email` ready for the wire, or `None` when lettre must build it (anything outside the
    /// common case, including every invalid email, so that errors stay lettre's).
    pub(crate) fn prepare(&self, email: &OutgoingEmail) -> Option<Prepared> {
        if !plain_address(&email.to) {
            return None;
        }
        let content = with_date_now(|date| self.write(email, date, &boundary()))?;
        Some(Prepared::from_parts(
            self.from.clone(),
            email.to.as_str().into(),
            content,
        ))
    }

    /// The message bytes with the given Date value and boundary (`None` as for `prepare`).
    fn write(&self, email: &OutgoingEmail, date: &str, boundary: &str) -> Option<Vec<u8>> {
        if !plain_address(&email.to) {
            return None;
        }
        let id = message_id_header(&email.message_id, &self.domain).ok()?;
        let mut unsubscribe = Vec::new();
        if let Some(url) = &email.unsubscribe_url {
            unsubscribe.push(unsubscribe_entry(url, &["https", "http"], "").ok()?);
        }
        if let Some(mailto) = &email.unsubscribe_mailto {
            unsubscribe.push(unsubscribe_entry(mailto, &["mailto"], "").ok()?);
        }
        let text = body(&email.text)?;
        let html = match &email.html {
            Some(h) => Some(body(h)?),
            None => None,
        };
        let size = 700 + text.1.len() * 21 / 20 + html.as_ref().map_or(0, |h| h.1.len() * 21 / 20);
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&self.from_line);
        header(&mut out, "To", &email.to)?;
        header(&mut out, "Subject", &email.subject)?;
        header(&mut out, "Message-ID", &id)?;
        header(&mut out, "Date", date)?;
        match unsubscribe.as_slice() {
            [] => {}
            [one] => header(&mut out, "List-Unsubscribe", one)?,
            many => header(&mut out, "List-Unsubscribe", &many.join(", "))?,
        }
        if email.unsubscribe_url.is_some() {
            out.extend_from_slice(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        match html {
            Some(html) => {
                out.extend_from_slice(b"Content-Type: multipart/alternative;\r\n boundary=\"");
                out.extend_from_slice(boundary.as_bytes());
                out.extend_from_slice(b"\"\r\n\r\n");
                for (kind, body) in [("plain", text), ("html", html)] {
                    out.extend_from_slice(b"--");
                    out.extend_from_slice(boundary.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    part(&mut out, kind, body);
                }
                out.extend_from_slice(b"--");
                out.extend_from_slice(boundary.as_bytes());
                out.extend_from_slice(b"--\r\n");
            }
            None => part(&mut out, "plain", text),
        }
        Some(out)
    }
}

/// Whether `to` is `local@domain` with only dot-atom characters (no display name, comment or
/// quoting): a local part of at most 64 ASCII `atext` characters, a domain of at most 253
/// letters, digits and hyphens in labels of at most 63. Such an address needs no quoting in a
/// header or in `RCPT TO`, and lettre's `Address` accepts it.
pub(super) fn plain_address(to: &str) -> bool {
    let Some(at) = to.bytes().position(|b| b == b'@') else {
        return false;
    };
    let (user, domain) = (&to[..at], &to[at + 1..]);
    user.len() <= 64
        && domain.len() <= 253
        && dot_atom(user, &USER, 64)
        && dot_atom(domain, &DOMAIN, 63)
}

/// `atext`: the bytes of a local part's atoms.
const USER: [bool; 256] = byte_class(b"!#$%&'*+/=?^_`{|}~-");
/// The bytes of a domain's labels.
const DOMAIN: [bool; 256] = byte_class(b"-");

/// Non-empty atoms of `ok` bytes, each at most `max` long, joined by single dots, in one pass.
fn dot_atom(s: &str, ok: &[bool; 256], max: usize) -> bool {
    // Bytes since the last dot: a dot is refused first, after a dot, and last.
    let mut atom = 0;
    for b in s.bytes() {
        if b == b'.' {
            if atom == 0 {
                return false;
            }
            atom = 0;
        } else if ok[usize::from(b)] && atom < max {
            atom += 1;
        } else {
            return false;
        }
    }
    atom > 0
}

/// Appends `Name: value\r\n` when lettre would write the value as it is: printable ASCII on a
/// line short enough not to be folded.
fn header(out: &mut Vec<u8>, name: &str, value: &str) -> Option<()> {
    if name.len() + 2 + value.len() > MAX_LINE || !value.bytes().all(|b| (b' '..=b'~').contains(&b))
    {
        return None;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    Some(())
}

/// One text part as lettre writes it.
fn part(out: &mut Vec<u8>, kind: &str, (encoding, text): (Encoding, &str)) {
    out.extend_from_slice(b"Content-Type: text/");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"; charset=utf-8\r\nContent-Transfer-Encoding: ");
    out.extend_from_slice(match encoding {
        Encoding::SevenBit => b"7bit".as_slice(),
        _ => b"quoted-printable",
    });
    out.extend_from_slice(b"\r\n\r\n");
    SCRATCH.with(|scratch| {
        let mut crlf_text = scratch.borrow_mut();
        crlf(text, &mut crlf_text);
        match encoding {
            Encoding::SevenBit => out.extend_from_slice(&crlf_text),
            _ => quoted_printable(&crlf_text, out),
        }
    });
    out.extend_from_slice(b"\r\n");
}

/// How lettre encodes a body (`Body::new`): the encoding it picks for the text as given, then
/// the text with CRLF line ends, encoded. `None` for 8bit and base64 (left to lettre).
fn body(text: &str) -> Option<(Encoding, &str)> {
    match Encoding::choose(text, false) {
        e @ (Encoding::SevenBit | Encoding::QuotedPrintable) => Some((e, text)),
        Encoding::EightBit | Encoding::Base64 => None,
    }
}

thread_local! {
    /// A body with CRLF line ends, before encoding (reused from message to message).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `text` into `out` (cleared first) with a CR before every LF that has none (lettre's
/// `in_place_crlf_line_endings`).
fn crlf(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    out.clear();
    let mut start = 0;
    while let Some(at) = bytes[start..].iter().position(|&b| b == b'\n') {
        let lf = start + at;
        out.extend_from_slice(&bytes[start..lf]);
        if lf == 0 || bytes[lf - 1] != b'\r' {
            out.push(b'\r');
        }
        out.push(b'\n');
        start = lf + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The quoted-printable encoding of the `quoted_printable` crate (0.5, text mode, 76-character
/// lines) that lettre uses, byte for byte: CRLF is a hard line break, a space or tab before it
/// is encoded, `=` and bytes outside `\t`, ` `..`~` become `=XX`, and a soft break `=` CRLF
/// keeps lines at 76 characters, moved before the last item when the line is full.
/// Appended to `out`.
fn quoted_printable(input: &[u8], out: &mut Vec<u8>) {
    const LIMIT: usize = 76;
    out.reserve(input.len() + input.len() / 20 + 8);
    let start = out.len();
    let mut q = Qp {
        out,
        start,
        on_line: 0,
        backup: start,
    };
    let needs = |b: u8| !matches!(b, b'\t' | b' '..=b'<' | b'>'..=b'~');
    let mut was_cr = false;
    let mut i = 0;
    while i < input.len() {
        let byte = input[i];
        i += 1;
        if was_cr {
            if byte == b'\n' {
                q.trailing_space_tab(LIMIT);
                q.out.extend_from_slice(b"\r\n");
                q.on_line = 0;
                was_cr = false;
                continue;
            }
            q.append(b"=0D", LIMIT);
        }
        if byte == b'\r' {
            was_cr = true;
            continue;
        }
        was_cr = false;
        if LIMIT - q.on_line >= 3 && !needs(byte) {
            let max_run = LIMIT - q.on_line - 2;
            let start = i - 1;
            let window = &input[i..input.len().min(start + max_run)];
            let end = i + window
                .iter()
                .position(|&b| needs(b))
                .unwrap_or(window.len());
            q.out.extend_from_slice(&input[start..end]);
            q.on_line += end - start;
            q.backup = q.out.len();
            i = end;
            continue;
        }
        match byte {
            b'=' => q.append(b"=3D", LIMIT),
            b'\t' | b' '..=b'~' => q.append(&[byte], LIMIT),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                q.append(
                    &[b'=', HEX[(byte >> 4) as usize], HEX[(byte & 15) as usize]],
                    LIMIT,
                )
            }
        }
    }
    if was_cr {
        q.append(b"=0D", LIMIT);
    } else {
        q.trailing_space_tab(LIMIT);
    }
}

/// The quoted-printable writer's state.
struct Qp<'a> {
    out: &'a mut Vec<u8>,
    /// Where this body starts in `out`.
    start: usize,
    on_line: usize,
    /// Where the last appended item starts.
    backup: usize,
}

impl Qp<'_> {
    fn append(&mut self, item: &[u8], limit: usize) {
        if self.on_line + item.len() > limit {
            if self.on_line == limit {
                self.on_line = self.out.len() - self.backup;
                self.out.splice(self.backup..self.backup, *b"=\r\n");
            } else {
                self.out.extend_from_slice(b"=\r\n");
                self.on_line = 0;
            }
        }
        self.out.extend_from_slice(item);
        self.on_line += item.len();
        self.backup = self.out.len() - item.len();
    }

    fn trailing_space_tab(&mut self, limit: usize) {
        if self.out.len() == self.start {
            return;
        }
        let code: &[u8] = match self.out.last() {
            Some(b' ') => b"=20",
            Some(b'\t') => b"=09",
            _ => return,
        };
        self.on_line -= 1;
        self.out.pop();
        self.append(code, limit);
    }
}

thread_local! {
    /// The Date value of the current second, formatted once per second and thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `f` of the `Date` value for now, as lettre writes it (`httpdate`, with `GMT` as `+0000`).
pub(super) fn with_date_now<T>(f: impl FnOnce(&str) -> T) -> T {
    let secs = coarse_seconds();
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let now = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            *cached = (secs, date(now));
        }
        f(&cached.1)
    })
}

/// Seconds since the Unix epoch from the kernel's coarse real-time clock (updated every tick,
/// a few milliseconds at most behind): a header with a resolution of one second needs no
/// more, and it is read several times faster than the precise clock, once per message.
#[cfg(target_os = "linux")]
fn coarse_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME_COARSE exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 {
        u64::try_from(ts.tv_sec).unwrap_or(0)
    } else {
        precise_seconds()
    }
}

/// Seconds since the Unix epoch (other systems: the precise clock).
#[cfg(not(target_os = "linux"))]
fn coarse_seconds() -> u64 {
    precise_seconds()
}

fn precise_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn date(at: SystemTime) -> String {
    let mut value = httpdate::fmt_http_date(at);
    if value.ends_with(" GMT") {
        value.truncate(value.len() - "GMT".len());
        value.push_str("+0000");
    }
    value
}

/// A MIME boundary like lettre's: 40 random letters and digits.
fn boundary() -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::message::build;
    use super::*;

    fn from() -> Mailbox {
        "Example Status <status@example.com>".parse().unwrap()
    }

    /// lettre's bytes for `email` with Date and boundary set to ours.
    fn lettre_bytes(email: &OutgoingEmail, date: &str, boundary: &str) -> Option<Vec<u8>> {
        let message = build(&from(), "example.com", email).ok()?;
        let text = String::from_utf8(message.formatted()).unwrap();
        let mut out = String::new();
        for line in text.split_inclusive("\r\n") {
            if line.starts_with("Date: ") {
                out.push_str(&format!("Date: {date}\r\n"));
            } else {
                out.push_str(line);
            }
        }
        if let Some((_, rest)) = out.split_once("boundary=\"") {
            let theirs = rest.split('"').next().unwrap().to_string();
            out = out.replace(&theirs, boundary);
        }
        Some(out.into_bytes())
    }

    fn sample(i: usize) -> OutgoingEmail {
        OutgoingEmail {
            to: format!("customer{i}@customer.example"),
            subject: "Service Update - DR Activation".into(),
            text: format!("Dear Customer {i},\n\nWe are experiencing issues.\n"),
            html: Some(format!(
                "<p>Dear Customer {i},</p><p>{}</p>",
                "x ".repeat(60)
            )),
            unsubscribe_url: Some(format!("https://status.example.com/u?token=t{i}")),
            unsubscribe_mailto: None,
            message_id: format!("bench-{i}"),
        }
    }

    fn check(email: &OutgoingEmail) -> bool {
        let writer = Writer::new(&from(), "example.com").unwrap();
        let (date, boundary) = ("Thu, 26 Nov 2026 23:00:40 +0000", "B0undary");
        let ours = writer.write(email, date, boundary);
        let theirs = lettre_bytes(email, date, boundary);
        if let Some(o) = &ours {
            assert_eq!(
                String::from_utf8_lossy(o),
                String::from_utf8_lossy(theirs.as_ref().expect("lettre refused it")),
                "{email:?}"
            );
        }
        ours.is_some()
    }

    #[test]
    fn the_common_email_is_written_as_lettre_writes_it() {
        assert!(check(&sample(7)));
        let mut e = sample(1);
        e.html = None;
        assert!(check(&e));
        e.unsubscribe_url = None;
        assert!(check(&e));
        e.unsubscribe_mailto = Some("mailto:u@example.com?subject=unsubscribe".into());
        assert!(check(&e));
        e.unsubscribe_url = Some("https://e.example/u".into());
        e.unsubscribe_mailto = Some("mailto:u@e.example".into());
        assert!(check(&e));
        e.to = "Ann.O'Neil+x@Example.ORG".into();
        assert!(check(&e));
        let mut e = sample(2);
        e.text = ".leading dot\n..two\r\nlone\rcr \ntrailing space \nTab\t\nend".into();
        e.html = Some(format!("= {} =\u{e9}\u{20ac}\r\n\t", "summer ".repeat(40)));
        assert!(check(&e));
        e.message_id = "a-b.c@other.example".into();
        assert!(check(&e));
    }

    #[test]
    fn anything_else_is_left_to_lettre() {
        let mut cases = Vec::new();
        for to in [
            "Ann <ann@example.org>",
            "\"a b\"@example.org",
            "a..b@example.org",
            "not an address",
            "ann@",
            &format!("{}@example.org", "a".repeat(80)),
        ] {
            let mut e = sample(3);
            e.to = to.into();
            cases.push(e);
        }
        for subject in ["R\u{e9}gion", "a\r\nBcc: x", &"long ".repeat(20)] {
            let mut e = sample(3);
            e.subject = subject.into();
            cases.push(e);
        }
        let mut e = sample(3);
        e.text = "\u{e9}".repeat(50); // base64
        cases.push(e);
        let mut e = sample(3);
        e.message_id = "bad id".into();
        cases.push(e);
        let mut e = sample(3);
        e.unsubscribe_url = Some("javascript:x".into());
        cases.push(e);
        for e in &cases {
            assert!(!check(e), "{e:?}");
        }
    }

    /// A small deterministic generator, so that failures reproduce.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn text(&mut self, max: usize) -> String {
            const PIECES: &[&str] = &[
                "a",
                "word",
                " ",
                "  ",
                "\n",
                "\r\n",
                "\r",
                ".",
                "=",
                "\t",
                "\u{e9}",
                "\u{20ac}",
                "-",
                "<p>",
                "x",
                "0123456789",
                "\n.",
                " \n",
                "\t\r\n",
            ];
            let n = (self.next() as usize) % max;
            (0..n)
                .map(|_| PIECES[(self.next() as usize) % PIECES.len()])
                .collect()
        }
    }

    #[test]
    fn generated_emails_match_lettre_byte_for_byte() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut fast = 0;
        for i in 0..3000 {
            let mut e = sample(i);
            e.text = g.text(200);
            e.html = (!g.next().is_multiple_of(3)).then(|| g.text(300));
            e.subject = g.text(12).replace(['\r', '\n'], "");
            if g.next().is_multiple_of(4) {
                e.unsubscribe_url = None;
            }
            if check(&e) {
                fast += 1;
            }
        }
        // Many take the fast path; the rest (non-ASCII subjects, base64 bodies) are lettre's.
        assert!(fast > 400, "{fast}");
    }

    #[test]
    fn quoted_printable_matches_the_crate() {
        let mut g = Gen(42);
        for _ in 0..5000 {
            let s = g.text(400);
            let mut crlf_text = Vec::new();
            crlf(&s, &mut crlf_text);
            let s = crlf_text;
            let mut ours = b"prefix ".to_vec();
            super::quoted_printable(&s, &mut ours);
            assert_eq!(
                String::from_utf8(ours[7..].to_vec()).unwrap(),
                String::from_utf8(::quoted_printable::encode(&s)).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn plain_addresses_are_dot_atoms_only() {
        let long_label = format!("a@{}.example", "x".repeat(63));
        for ok in ["a@b.c", "a.b-c+d@x-y.example", "u{1}@d", &long_label] {
            assert!(plain_address(ok), "{ok}");
            assert!(ok.parse::<lettre::Address>().is_ok(), "{ok}");
        }
        let (long_user, longer_label) = (
            format!("{}@b.c", "u".repeat(65)),
            format!("a@{}.example", "x".repeat(64)),
        );
        for bad in [
            ".a@b",
            "a.@b",
            "a..b@c",
            "a@b..c",
            "a@.b",
            "a@b.",
            "@b",
            "a@",
            "a@b@c",
            "\"q\"@b",
            "Ann <a@b>",
            "a b@c",
            "a@b_c",
            "",
            "ab",
            "\u{e9}@b",
            &long_user,
            &longer_label,
        ] {
            assert!(!plain_address(bad), "{bad}");
        }
    }

    #[test]
    fn the_coarse_clock_is_the_real_time_to_the_second() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let coarse = coarse_seconds();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // A tick behind at most, so never more than one second before `before`.
        assert!(
            coarse + 1 >= before && coarse <= after,
            "{before} {coarse} {after}"
        );
    }

    #[test]
    fn dates_are_lettres() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_795_732_667);
        let m = lettre::Message::builder()
            .from(from())
            .to("a@example.org".parse().unwrap())
            .date(at)
            .body(String::new())
            .unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(
            text.contains(&format!("\r\nDate: {}\r\n", date(at))),
            "{text}"
        );
        assert!(with_date_now(|d| d.ends_with(" +0000")));
    }
}
