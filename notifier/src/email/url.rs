//! The SMTP server URL (`smtp://`, `smtp://…?tls=required|opportunistic`, `smtps://`), parsed
//! into its parts with the password kept out of `Debug`, `Display` and every error.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain text, no TLS (`smtp://host`, default port 25). For loopback relays only.
    Plain,
    /// STARTTLS, refusing servers that do not offer it (`smtp://host?tls=required`, port 587).
    StartTlsRequired,
    /// STARTTLS when the server offers it, else plain text (`?tls=opportunistic`, port 587).
    StartTlsOpportunistic,
    /// TLS from the first byte (`smtps://host`, default port 465).
    ImplicitTls,
}

/// A parsed SMTP server URL: `smtp://user:pass@host:port?tls=required`, `smtps://host`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    host: String,
    port: u16,
    security: Security,
    user: Option<String>,
    password: Option<String>,
    hello_name: Option<String>,
}

/// Why an SMTP URL was refused. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The text is not a URL at all.
    #[error("the SMTP URL is not a valid URL ({0}); expected smtp://user:pass@host:port")]
    Malformed(String),
    /// A scheme other than `smtp` or `smtps`.
    #[error("the SMTP URL has scheme `{0}`; expected `smtp` or `smtps`")]
    Scheme(String),
    /// No host name.
    #[error("the SMTP URL has no host")]
    NoHost,
    /// A `tls=` value other than `required` or `opportunistic` (not shown: the URL is a
    /// secret, and a misplaced password would show).
    #[error("the SMTP URL's tls= value is neither `required` nor `opportunistic`")]
    TlsMode(String),
    /// `?tls=` on an `smtps://` URL, which always uses implicit TLS.
    #[error("the SMTP URL combines smtps:// with ?tls=; smtps:// is always implicit TLS")]
    TlsWithSmtps,
    /// A query parameter other than `tls` (not shown, as above).
    #[error("the SMTP URL has a query parameter other than `tls`, the only one accepted")]
    Parameter(String),
    /// A password without a user name.
    #[error("the SMTP URL has a password but no user name")]
    PasswordWithoutUser,
    /// User or password is not valid percent-encoded UTF-8.
    #[error("the SMTP URL's {0} is not valid percent-encoded UTF-8")]
    Encoding(&'static str),
}

fn decode(part: &str, what: &'static str) -> Result<String, UrlError> {
    percent_decode(part).ok_or(UrlError::Encoding(what))
}

/// Decodes `%XX` escapes; `None` on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl SmtpUrl {
    /// Parses `smtp://[user[:pass]@]host[:port][/helo-name][?tls=required|opportunistic]` or
    /// `smtps://…`. User and password are percent-decoded.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        // url's errors name the problem, never echo the input, so they are safe to keep.
        let url = url::Url::parse(text.trim()).map_err(|e| UrlError::Malformed(e.to_string()))?;
        let implicit = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => return Err(UrlError::Scheme(other.to_string())),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(UrlError::NoHost)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut tls = None;
        for (k, v) in url.query_pairs() {
            match &*k {
                "tls" => tls = Some(v.into_owned()),
                other => return Err(UrlError::Parameter(other.to_string())),
            }
        }
        let security = match (implicit, tls.as_deref()) {
            (true, None) => Security::ImplicitTls,
            (true, Some(_)) => return Err(UrlError::TlsWithSmtps),
            (false, None) => Security::Plain,
            (false, Some("required")) => Security::StartTlsRequired,
            (false, Some("opportunistic")) => Security::StartTlsOpportunistic,
            (false, Some(other)) => return Err(UrlError::TlsMode(other.to_string())),
        };
        let default_port = match security {
            Security::Plain => 25,
            Security::StartTlsRequired | Security::StartTlsOpportunistic => 587,
            Security::ImplicitTls => 465,
        };
        let user = Some(url.username()).filter(|u| !u.is_empty());
        let user = user.map(|u| decode(u, "user name")).transpose()?;
        let password = url.password().map(|p| decode(p, "password")).transpose()?;
        if password.is_some() && user.is_none() {
            return Err(UrlError::PasswordWithoutUser);
        }
        let hello = url.path().trim_matches('/');
        Ok(Self {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            user,
            password,
            hello_name: (!hello.is_empty()).then(|| hello.to_string()),
        })
    }

    /// Server host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// Server port (the scheme's default when the URL has none).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// How the connection is secured.
    pub fn security(&self) -> Security {
        self.security
    }
    /// User name for SMTP AUTH, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// Name sent in EHLO (the URL's path), if any; else the machine's host name.
    pub fn hello_name(&self) -> Option<&str> {
        self.hello_name.as_deref()
    }
    /// The password, for the one place that authenticates with it.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Display for SmtpUrl {
    /// The URL with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.security == Security::ImplicitTls {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
            if self.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(h) = &self.hello_name {
            write!(f, "/{h}")?;
        }
        match self.security {
            Security::StartTlsRequired => f.write_str("?tls=required"),
            Security::StartTlsOpportunistic => f.write_str("?tls=opportunistic"),
            Security::Plain | Security::ImplicitTls => Ok(()),
        }
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

impl std::str::FromStr for SmtpUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, UrlError> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for SmtpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form_with_default_ports() {
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.security()),
            ("127.0.0.1", 2525, Security::Plain)
        );
        assert_eq!(u.user(), None);
        let u = SmtpUrl::parse("smtp://me%40x.org:p%3Ass@mail.x.org?tls=required").unwrap();
        assert_eq!((u.port(), u.security()), (587, Security::StartTlsRequired));
        assert_eq!((u.user(), u.password()), (Some("me@x.org"), Some("p:ss")));
        let u = SmtpUrl::parse("smtp://mail.x.org?tls=opportunistic").unwrap();
        assert_eq!(u.security(), Security::StartTlsOpportunistic);
        let u = SmtpUrl::parse("smtps://u:p@mail.x.org/drbot.example").unwrap();
        assert_eq!((u.port(), u.security()), (465, Security::ImplicitTls));
        assert_eq!(u.hello_name(), Some("drbot.example"));
        assert_eq!(SmtpUrl::parse("smtp://mail").unwrap().port(), 25);
    }

    #[test]
    fn refuses_bad_urls_with_specific_errors_and_no_password() {
        let cases = [
            ("http://u:hunter2@x", UrlError::Scheme("http".into())),
            (
                "smtp://u:hunter2@x?tls=maybe",
                UrlError::TlsMode("maybe".into()),
            ),
            ("smtps://u:hunter2@x?tls=required", UrlError::TlsWithSmtps),
            (
                "smtp://u:hunter2@x?timeout=3",
                UrlError::Parameter("timeout".into()),
            ),
            ("smtp://:hunter2@x", UrlError::PasswordWithoutUser),
            ("smtp://u:hunter2%ff@x", UrlError::Encoding("password")),
        ];
        for (text, want) in cases {
            let got = SmtpUrl::parse(text).unwrap_err();
            assert_eq!(got, want, "{text}");
            assert!(!got.to_string().contains("hunter2"), "{got}");
        }
        // A password pasted into the query is not echoed either.
        for text in ["smtp://u@x?tls=hunter2", "smtp://u@x?hunter2=1"] {
            let got = SmtpUrl::parse(text).unwrap_err();
            assert!(!got.to_string().contains("hunter2"), "{got}");
        }
        let e = SmtpUrl::parse("smtp://u:hunter2@x:99999").unwrap_err();
        assert!(matches!(e, UrlError::Malformed(_)), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(
            SmtpUrl::parse("not a url"),
            Err(UrlError::Malformed(_))
        ));
    }

    #[test]
    fn display_and_debug_hide_the_password() {
        let u = SmtpUrl::parse("smtp://mailer:hunter2@mail.x.org:2587?tls=required").unwrap();
        assert_eq!(
            u.to_string(),
            "smtp://mailer:***@mail.x.org:2587?tls=required"
        );
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(u.password(), Some("hunter2"));
    }
}
