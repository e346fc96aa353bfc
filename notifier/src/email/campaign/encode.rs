//! The campaign's body encoding: quoted-printable (RFC 2045 §6.7) written piece by piece, each
//! piece starting a new encoded line and, unless it ends with a line break, closed by a soft
//! line break; so a body's fixed text is encoded once and each recipient's values are encoded
//! alone and slotted in between, and the decoded body is the whole text as if encoded at once.

/// Longest encoded line before its soft line break `=` (so lines are at most 76 characters).
const MAX: usize = 75;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `text` (any line ends; bare LF and CRLF are line breaks) quoted-printable encoded
/// to `out`, starting at the beginning of a line and ending at the beginning of one: a piece
/// that does not end with a line break ends with a soft line break. `=`, control characters
/// other than tab, bytes above 126, and a space or tab before a line break or at the end are
/// encoded; no output line is longer than 76 characters. The output never contains `=_`, so a
/// boundary starting with `=_` cannot occur in it.
pub(crate) fn piece(text: &[u8], out: &mut Vec<u8>) {
    // The common slot value (a name, a number): one short line needing no escapes.
    if let Some(&last) = text.last()
        && text.len() <= MAX
        && last != b' '
        && text
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'=')
    {
        out.extend_from_slice(text);
        out.extend_from_slice(b"=\r\n");
        return;
    }
    general(text, out);
}

/// `piece` for any text.
fn general(text: &[u8], out: &mut Vec<u8>) {
    out.reserve(text.len() + text.len() / 16 + 3);
    let mut col = 0;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'\n' || (b == b'\r' && text.get(i + 1) == Some(&b'\n')) {
            out.extend_from_slice(b"\r\n");
            col = 0;
            i += if b == b'\r' { 2 } else { 1 };
            continue;
        }
        let line_end = match text.get(i + 1) {
            None | Some(b'\n') => true,
            Some(b'\r') => text.get(i + 2) == Some(&b'\n'),
            _ => false,
        };
        let literal = (b == b'\t' || (b' '..=b'~').contains(&b))
            && b != b'='
            && !((b == b' ' || b == b'\t') && line_end);
        let width = if literal { 1 } else { 3 };
        if col + width > MAX {
            out.extend_from_slice(b"=\r\n");
            col = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        col += width;
        i += 1;
    }
    if !text.is_empty() && !text.ends_with(b"\n") {
        out.extend_from_slice(b"=\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(pieces: &[&str]) -> String {
        let mut out = Vec::new();
        for p in pieces {
            piece(p.as_bytes(), &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    fn decode(s: &str) -> Vec<u8> {
        quoted_printable::decode(s.as_bytes(), quoted_printable::ParseMode::Robust).unwrap()
    }

    #[test]
    fn pieces_decode_to_the_whole_text() {
        let e = enc(&["Dear ", "Ann", ",\nYour = bill ", "", "é is due.\n"]);
        assert_eq!(
            e,
            "Dear=20=\r\nAnn=\r\n,\r\nYour =3D bill=20=\r\n=C3=A9 is due.\r\n"
        );
        assert_eq!(
            decode(&e),
            "Dear Ann,\r\nYour = bill é is due.\r\n".as_bytes()
        );
    }

    #[test]
    fn lines_stay_short_and_trailing_space_is_encoded() {
        let long = "x".repeat(200) + " \n" + &"é".repeat(60) + "\t";
        let e = enc(&[&long]);
        assert!(e.split("\r\n").all(|l| l.len() <= 76), "{e}");
        assert!(e.contains("=20\r\n"));
        assert!(e.ends_with("=09=\r\n"));
        assert!(!e.contains("=_"));
        assert_eq!(decode(&e), long.replace('\n', "\r\n").as_bytes());
    }

    #[test]
    fn short_plain_values_take_the_short_path_with_the_same_result() {
        let x75 = "x".repeat(75);
        let x76 = "x".repeat(76);
        for text in [
            "", "Ann", "12345", "a b", "a ", " a", "a=b", "a\tb", "é", "a\n", &x75, &x76, "~!",
        ] {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            piece(text.as_bytes(), &mut fast);
            general(text.as_bytes(), &mut slow);
            assert_eq!(fast, slow, "{text:?}");
        }
    }

    #[test]
    fn crlf_and_bare_cr_are_kept_apart() {
        let e = enc(&["a\r\nb\rc"]);
        assert_eq!(e, "a\r\nb=0Dc=\r\n");
    }
}
