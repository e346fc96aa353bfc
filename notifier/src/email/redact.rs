//! Scrubbing of the SMTP password from error text: the password itself and the base64 forms
//! that AUTH PLAIN and AUTH LOGIN put on the wire, in case a server echoes them back.

/// The strings that must never appear in an error message.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Secrets derived from the user name and password of the SMTP URL.
    pub(crate) fn new(user: Option<&str>, password: Option<&str>) -> Self {
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Self::default();
        };
        let user = user.unwrap_or("");
        let mut secrets = vec![
            password.to_string(),
            base64(password.as_bytes()),
            base64(format!("\0{user}\0{password}").as_bytes()),
        ];
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn scrubs_password_and_auth_payloads() {
        let r = Redactor::new(Some("mailer"), Some("hunter2"));
        let plain = base64(b"\0mailer\0hunter2");
        let text = format!("535 bad auth hunter2 {plain} {}", base64(b"hunter2"));
        let out = r.scrub(&text);
        assert_eq!(out, "535 bad auth *** *** ***");
        assert_eq!(Redactor::new(None, None).scrub("as is"), "as is");
    }
}
