//! One SMTP client connection: connect (TCP_NODELAY, implicit TLS or STARTTLS, EHLO, AUTH),
//! then transactions one after another on it with DATA, pipelined when the server allows, with
//! RSET after a failed one and QUIT at the end. Windows of BDAT transactions, for servers with
//! CHUNKING, are in `window.rs`.

use std::time::Duration;

use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::commands::Auth;
use lettre::transport::smtp::extension::{Extension, ServerInfo};
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::error::SendError;
use super::super::url::Security;
use super::prepared::Prepared;
use super::reply::{self, Parse, Reply};
use super::stream::Stream;
use super::target::Target;

/// How a step failed.
#[derive(Debug)]
pub(super) enum Fail {
    /// The connection broke.
    Io(String),
    /// The server did not answer (or take what was written) in time: it may still be working
    /// on what it read.
    TimedOut(String),
    /// The server answered with an error.
    Reply(Reply),
    /// The server's bytes were not SMTP.
    Protocol(String),
    /// drbot cannot go on with this server (a capability it needs is missing).
    Refused(String),
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Io(m) | Fail::TimedOut(m) | Fail::Protocol(m) | Fail::Refused(m) => {
                f.write_str(m)
            }
            Fail::Reply(r) => f.write_str(&r.text()),
        }
    }
}

impl Fail {
    pub(super) fn into_error(self) -> SendError {
        match self {
            Fail::Io(message) | Fail::TimedOut(message) | Fail::Protocol(message) => {
                SendError::Temporary {
                    code: None,
                    message,
                }
            }
            Fail::Refused(message) => SendError::Permanent {
                code: None,
                message,
            },
            Fail::Reply(r) if r.code >= 500 => SendError::Permanent {
                code: Some(r.code),
                message: r.text(),
            },
            Fail::Reply(r) => SendError::Temporary {
                code: Some(r.code),
                message: r.text(),
            },
        }
    }
}

/// What one transaction did.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Accepted, or why not (not yet scrubbed of secrets).
    pub(crate) result: Result<(), SendError>,
    /// The connection can carry the next transaction.
    pub(crate) reusable: bool,
    /// No content byte was written: the server cannot have taken the message, so resending it
    /// on a new connection cannot make a duplicate.
    pub(crate) before_content: bool,
}

impl Outcome {
    /// A message whose transaction the broken connection cut short: temporary; `not_sent`
    /// when the server cannot have taken it.
    pub(super) fn broken(message: &str, not_sent: bool) -> Outcome {
        Outcome {
            result: Err(SendError::Temporary {
                code: None,
                message: message.to_string(),
            }),
            reusable: false,
            before_content: not_sent,
        }
    }
}

/// An open, greeted (and, as configured, encrypted and authenticated) SMTP connection.
pub(crate) struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    timeout: Duration,
    pipelining: bool,
    /// The server offers CHUNKING (RFC 3030): BDAT instead of DATA.
    chunking: bool,
    eight_bit_mime: bool,
    smtputf8: bool,
    pub(super) wbuf: Vec<u8>,
}

async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = std::io::Result<T>>,
) -> Result<T, Fail> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Fail::Io(format!("{what} failed: {e}"))),
        Err(_) => Err(Fail::TimedOut(format!("{what} timed out after {limit:?}"))),
    }
}

impl Connection {
    /// Connects to `target`. Every failure is temporary, a 5xx greeting, EHLO or AUTH reply
    /// and a missing STARTTLS included: they are the session's, not any message's (a password
    /// rotated mid-send, a relay refusing service while overloaded), so the messages are
    /// retried with backoff rather than failed for good, and an operator has time to fix it.
    pub(crate) async fn connect(target: &Target) -> Result<Connection, SendError> {
        Self::open(target).await.map_err(|f| match f.into_error() {
            SendError::Permanent { code, message } => SendError::Temporary {
                code,
                message: format!("the SMTP session failed: {message}"),
            },
            other => other,
        })
    }

    async fn open(target: &Target) -> Result<Connection, Fail> {
        let server = format!("{}:{}", target.host, target.port);
        let tcp = within(
            target.timeout,
            &format!("connection to {server}"),
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await?;
        tcp.set_nodelay(true)
            .map_err(|e| Fail::Io(format!("setting TCP_NODELAY failed: {e}")))?;
        let mut conn = Connection {
            stream: Stream::Plain(tcp),
            buf: Vec::with_capacity(4096),
            start: 0,
            timeout: target.timeout,
            pipelining: false,
            chunking: false,
            eight_bit_mime: false,
            smtputf8: false,
            wbuf: Vec::with_capacity(4096),
        };
        if target.security == Security::ImplicitTls {
            conn.upgrade(target).await?;
        }
        let greeting = conn.read_reply().await?;
        if greeting.code != 220 {
            return Err(Fail::Reply(greeting));
        }
        let mut info = conn.ehlo(target).await?;
        let starttls = matches!(
            target.security,
            Security::StartTlsRequired | Security::StartTlsOpportunistic
        );
        if starttls && info.supports_feature(Extension::StartTls) {
            conn.expect(b"STARTTLS\r\n", 220).await?;
            if conn.start < conn.buf.len() {
                return Err(Fail::Protocol(
                    "server sent data after its STARTTLS reply (possible injection)".into(),
                ));
            }
            conn.upgrade(target).await?;
            info = conn.ehlo(target).await?;
        } else if target.security == Security::StartTlsRequired {
            return Err(Fail::Refused(format!(
                "{server} does not offer STARTTLS, which the SMTP URL requires"
            )));
        }
        if let Some(credentials) = &target.credentials {
            let mechanism = info
                .get_auth_mechanism(&[Mechanism::Plain, Mechanism::Login])
                .ok_or_else(|| {
                    Fail::Refused(format!("{server} offers no AUTH mechanism drbot supports"))
                })?;
            let auth_error = |e: lettre::transport::smtp::Error| Fail::Refused(e.to_string());
            let first = Auth::new(mechanism, credentials.clone(), None).map_err(auth_error)?;
            let mut reply = conn.command(first.to_string().as_bytes()).await?;
            let mut challenges = 0;
            while reply.code == 334 && challenges < 10 {
                challenges += 1;
                let response: Response = reply
                    .raw()
                    .parse()
                    .map_err(|_| Fail::Protocol("malformed AUTH challenge".into()))?;
                let next = Auth::new_from_response(mechanism, credentials.clone(), &response)
                    .map_err(auth_error)?;
                reply = conn.command(next.to_string().as_bytes()).await?;
            }
            if !(200..300).contains(&reply.code) {
                return Err(Fail::Reply(reply));
            }
        }
        Ok(conn)
    }

    async fn upgrade(&mut self, target: &Target) -> Result<(), Fail> {
        let Some(config) = &target.tls else {
            return Err(Fail::Refused(
                "TLS requested without a TLS configuration".into(),
            ));
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(Fail::Protocol(
                "TLS upgrade of a connection that is not plain".into(),
            ));
        };
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
            Fail::Refused(format!("`{}` is not a TLS server name: {e}", target.host))
        })?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let tls = within(
            target.timeout,
            &format!("TLS handshake with {}", target.host),
            connector.connect(name, tcp),
        )
        .await?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    async fn ehlo(&mut self, target: &Target) -> Result<ServerInfo, Fail> {
        let reply = self
            .command(format!("EHLO {}\r\n", target.hello).as_bytes())
            .await?;
        if !(200..300).contains(&reply.code) {
            return Err(Fail::Reply(reply));
        }
        let keywords = || {
            reply.lines.iter().skip(1).map(|l| {
                l.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase()
            })
        };
        self.pipelining = keywords().any(|k| k == "PIPELINING");
        self.chunking = keywords().any(|k| k == "CHUNKING");
        let response: Response = reply
            .raw()
            .parse()
            .map_err(|_| Fail::Protocol("malformed EHLO reply".into()))?;
        let info = ServerInfo::from_response(&response)
            .map_err(|e| Fail::Protocol(format!("malformed EHLO reply: {e}")))?;
        self.eight_bit_mime = info.supports_feature(Extension::EightBitMime);
        self.smtputf8 = info.supports_feature(Extension::SmtpUtfEight);
        Ok(info)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Fail> {
        let stream = &mut self.stream;
        within(self.timeout, "writing to the SMTP server", async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
    }

    /// Writes all of `parts` in order, with vectored writes when the stream takes them.
    pub(super) async fn write_parts(
        &mut self,
        parts: &mut [std::io::IoSlice<'_>],
    ) -> Result<(), Fail> {
        let stream = &mut self.stream;
        within(self.timeout, "writing to the SMTP server", async {
            let mut rest = parts;
            while !rest.is_empty() {
                let n = stream.write_vectored(rest).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                std::io::IoSlice::advance_slices(&mut rest, n);
            }
            stream.flush().await
        })
        .await
    }

    /// PIPELINING and CHUNKING are both offered: `send_window` pipelines whole transactions.
    pub(crate) fn windowed(&self) -> bool {
        self.pipelining && self.chunking
    }

    pub(super) async fn write_wbuf(&mut self) -> Result<(), Fail> {
        let bytes = std::mem::take(&mut self.wbuf);
        let result = self.write(&bytes).await;
        self.wbuf = bytes;
        self.wbuf.clear();
        result
    }

    pub(super) async fn read_reply(&mut self) -> Result<Reply, Fail> {
        loop {
            match reply::parse(&self.buf[self.start..]) {
                Parse::Done(reply, used) => {
                    self.start += used;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(reply);
                }
                Parse::Invalid(message) => return Err(Fail::Protocol(message)),
                Parse::Incomplete => {}
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(4096);
            let (stream, buf) = (&mut self.stream, &mut self.buf);
            let n = within(
                self.timeout,
                "reading from the SMTP server",
                stream.read_buf(buf),
            )
            .await?;
            if n == 0 {
                return Err(Fail::Io("the SMTP server closed the connection".into()));
            }
        }
    }

    /// The next reply, as `read_reply`, but a single-line 2xx one (a window's MAIL, RCPT and
    /// BDAT replies, read by the thousand) is taken without keeping its text.
    pub(super) async fn read_status(&mut self) -> Result<Reply, Fail> {
        let rest = &self.buf[self.start..];
        if let [b'2', d1 @ b'0'..=b'9', d2 @ b'0'..=b'9', b' ', ..] = *rest
            && let Some(nl) = rest[..rest.len().min(reply::MAX_LINE)]
                .iter()
                .position(|&b| b == b'\n')
        {
            self.start += nl + 1;
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            let code = 200 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0');
            return Ok(Reply {
                code,
                lines: Vec::new(),
            });
        }
        self.read_reply().await
    }

    async fn command(&mut self, line: &[u8]) -> Result<Reply, Fail> {
        self.write(line).await?;
        self.read_reply().await
    }

    async fn expect(&mut self, line: &[u8], code: u16) -> Result<Reply, Fail> {
        let reply = self.command(line).await?;
        if reply.code == code {
            Ok(reply)
        } else {
            Err(Fail::Reply(reply))
        }
    }

    /// Sends one message. MAIL, RCPT and DATA go in one write when the server offers
    /// PIPELINING; the content follows the 354 reply (RFC 2920 §3.1). After a refused
    /// transaction the connection is RSET for the next one.
    pub(crate) async fn send(&mut self, message: &Prepared) -> Outcome {
        let unusable = |fail: Fail, before_content| Outcome {
            result: Err(fail.into_error()),
            reusable: false,
            before_content,
        };
        if let Some(fail) = self.unsupported(message) {
            return self.refused(fail).await;
        }
        let mut commands = envelope(message);
        commands.push("DATA\r\n".to_string());
        let data_reply = if self.pipelining {
            for c in &commands {
                self.wbuf.extend_from_slice(c.as_bytes());
            }
            if let Err(f) = self.write_wbuf().await {
                return unusable(f, true);
            }
            let mut refused = None;
            for _ in 1..commands.len() {
                match self.read_reply().await {
                    Ok(r) if !r.is_positive() && refused.is_none() => refused = Some(r),
                    Ok(_) => {}
                    Err(f) => return unusable(f, true),
                }
            }
            let data = match self.read_reply().await {
                Ok(r) => r,
                Err(f) => return unusable(f, true),
            };
            if let Some(refusal) = refused {
                if data.code == 354 {
                    // The server wants content although it refused the envelope: end it
                    // empty, then reset.
                    if let Err(f) = self.command(b".\r\n").await {
                        return unusable(f, true);
                    }
                }
                return self.refused(Fail::Reply(refusal)).await;
            }
            data
        } else {
            let last = commands.len() - 1;
            let mut data = None;
            for (i, c) in commands.iter().enumerate() {
                match self.command(c.as_bytes()).await {
                    Ok(r) if i == last => data = Some(r),
                    Ok(r) if r.is_positive() => {}
                    Ok(r) => return self.refused(Fail::Reply(r)).await,
                    Err(f) => return unusable(f, true),
                }
            }
            data.expect("DATA is the last command")
        };
        if data_reply.code != 354 {
            let fail = if data_reply.is_positive() {
                Fail::Protocol(format!("unexpected reply to DATA: {}", data_reply.text()))
            } else {
                Fail::Reply(data_reply)
            };
            return self.refused(fail).await;
        }
        super::prepared::stuff(&message.content, &mut self.wbuf);
        if let Err(f) = self.write_wbuf().await {
            return unusable(f, false);
        }
        match self.read_reply().await {
            Ok(r) if (200..300).contains(&r.code) => Outcome {
                result: Ok(()),
                reusable: true,
                before_content: false,
            },
            Ok(r) => Outcome {
                reusable: r.code != 421,
                result: Err(Fail::Reply(r).into_error()),
                before_content: false,
            },
            Err(f) => unusable(f, false),
        }
    }

    /// Why `message` cannot go to this server at all (8-bit content or UTF-8 addresses that
    /// it does not accept), if so.
    pub(super) fn unsupported(&self, message: &Prepared) -> Option<Fail> {
        if message.eight_bit && !self.eight_bit_mime {
            return Some(Fail::Refused(
                "the message has 8-bit content and the server does not offer 8BITMIME".into(),
            ));
        }
        if message.utf8_addresses && !self.smtputf8 {
            return Some(Fail::Refused(
                "an address is not ASCII and the server does not offer SMTPUTF8".into(),
            ));
        }
        None
    }

    /// A refused transaction, before any content: RSET so the connection can go on (unless
    /// the server is closing it, 421).
    async fn refused(&mut self, fail: Fail) -> Outcome {
        let closing =
            matches!(&fail, Fail::Reply(r) if r.code == 421) || matches!(&fail, Fail::Protocol(_));
        let reusable = !closing && self.expect(b"RSET\r\n", 250).await.is_ok();
        Outcome {
            result: Err(fail.into_error()),
            reusable,
            before_content: true,
        }
    }

    /// Says goodbye (QUIT) and closes; errors are ignored, the messages are already settled.
    pub(crate) async fn quit(mut self) {
        let _ = self.command(b"QUIT\r\n").await;
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }
}

/// MAIL FROM (with SMTPUTF8 and BODY=8BITMIME as needed) and one RCPT TO per recipient.
pub(super) fn envelope(message: &Prepared) -> Vec<String> {
    let mut mail = format!("MAIL FROM:<{}>", message.from.as_deref().unwrap_or(""));
    if message.utf8_addresses {
        mail.push_str(" SMTPUTF8");
    }
    if message.eight_bit {
        mail.push_str(" BODY=8BITMIME");
    }
    mail.push_str("\r\n");
    let mut commands = vec![mail];
    for to in &message.to {
        commands.push(format!("RCPT TO:<{to}>\r\n"));
    }
    commands
}
