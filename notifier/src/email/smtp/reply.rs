//! One SMTP reply (RFC 5321 §4.2): a three-digit code and its text lines, parsed from the
//! bytes a server sent, with limits on line and reply size.

/// Longest reply line accepted (Postfix's `line_length_limit`).
pub(super) const MAX_LINE: usize = 1000;
/// Largest whole reply accepted.
pub(super) const MAX_REPLY: usize = 100_000;

/// A complete reply: its code and its text lines, without the codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub(crate) code: u16,
    /// The text after the code on each line.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// 2xx or 3xx.
    pub(crate) fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// `code text` with multi-line text joined by spaces.
    pub(crate) fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
            .trim_end()
            .to_string()
    }

    /// The reply as the server wrote it (for lettre's parsers).
    pub(crate) fn raw(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            out.push_str(&format!("{}{sep}{line}\r\n", self.code));
        }
        out
    }
}

/// Result of looking for a complete reply at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parse {
    /// A reply and the number of bytes it used.
    Done(Reply, usize),
    /// More bytes are needed.
    Incomplete,
    /// The bytes are not an SMTP reply.
    Invalid(String),
}

/// Parses one reply from the start of `buf`.
pub(super) fn parse(buf: &[u8]) -> Parse {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() - pos > MAX_LINE {
                return Parse::Invalid("SMTP reply line too long".into());
            }
            return Parse::Incomplete;
        };
        if nl > MAX_LINE {
            return Parse::Invalid("SMTP reply line too long".into());
        }
        let raw = &buf[pos..pos + nl];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += nl + 1;
        if pos > MAX_REPLY {
            return Parse::Invalid("SMTP reply too large".into());
        }
        let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
        let (Some(digits), sep) = (digits, line.get(3).copied()) else {
            return Parse::Invalid(format!(
                "malformed SMTP reply line `{}`",
                String::from_utf8_lossy(line)
            ));
        };
        let this: u16 = std::str::from_utf8(digits).unwrap().parse().unwrap();
        if !(200..600).contains(&this) || code.is_some_and(|c| c != this) {
            return Parse::Invalid(format!("unexpected SMTP reply code {this}"));
        }
        code = Some(this);
        let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
        lines.push(text);
        match sep {
            None | Some(b' ') => {
                let reply = Reply { code: this, lines };
                return Parse::Done(reply, pos);
            }
            Some(b'-') => {}
            Some(_) => {
                return Parse::Invalid(format!(
                    "malformed SMTP reply line `{}`",
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line_replies() {
        let Parse::Done(r, used) = parse(b"250 2.0.0 Ok\r\nrest") else {
            panic!()
        };
        assert_eq!(
            (r.code, r.lines.clone(), used),
            (250, vec!["2.0.0 Ok".into()], 14)
        );
        assert_eq!(r.text(), "250 2.0.0 Ok");
        let ehlo = b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
        let Parse::Done(r, used) = parse(ehlo) else {
            panic!()
        };
        assert_eq!(used, ehlo.len());
        assert_eq!(r.lines, ["mx.example", "PIPELINING", "SIZE 100"]);
        assert_eq!(r.raw().as_bytes(), ehlo);
        assert!(matches!(
            parse(b"354\r\n"),
            Parse::Done(Reply { code: 354, .. }, 5)
        ));
    }

    #[test]
    fn incomplete_and_invalid_input() {
        assert_eq!(parse(b"250-a\r\n250 b"), Parse::Incomplete);
        assert_eq!(parse(b""), Parse::Incomplete);
        assert!(matches!(parse(b"hello\r\n"), Parse::Invalid(_)));
        assert!(matches!(parse(b"250-a\r\n451 b\r\n"), Parse::Invalid(_)));
        assert!(matches!(parse(b"999 x\r\n"), Parse::Invalid(_)));
        assert!(matches!(parse(b"250x\r\n"), Parse::Invalid(_)));
        assert!(matches!(parse(&[b'2'; 2000]), Parse::Invalid(_)));
    }
}
