//! Windows of BDAT transactions (RFC 3030 CHUNKING with RFC 2920 PIPELINING): several whole
//! transactions, `MAIL`, `RCPT`s and `BDAT <size> LAST` with the content, written at once;
//! the replies then read in order and matched to their transaction, so each message gets its
//! own result.

use super::conn::{Connection, Fail, Outcome};
use super::prepared::Prepared;
use super::reply::Reply;

/// What a window did: one outcome per message, in order, and whether the connection can take
/// the next window.
pub(crate) struct WindowOutcome {
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) reusable: bool,
}

/// The replies one transaction earns, in order: MAIL, one per RCPT, BDAT.
struct Expect {
    index: usize,
    rcpts: usize,
}

/// The result of a transaction whose every reply came: a refused MAIL or RCPT is its reason
/// when the BDAT then failed; content taken for only some recipients is a permanent failure
/// (resending it would duplicate it for the others).
fn settle(envelope: &[Reply], bdat: Reply) -> Result<(), Fail> {
    let refusal = envelope.iter().find(|r| !r.is_positive());
    let accepted_rcpts = envelope.iter().skip(1).filter(|r| r.is_positive()).count();
    match refusal {
        None if (200..300).contains(&bdat.code) => Ok(()),
        None => Err(Fail::Reply(bdat)),
        Some(r) if !(200..300).contains(&bdat.code) || accepted_rcpts == 0 => {
            Err(Fail::Reply(r.clone()))
        }
        Some(r) => Err(Fail::Refused(format!(
            "the server took the message for some recipients only; refused: {}",
            r.text()
        ))),
    }
}

/// Content pieces at least this long are written from where they are; shorter ones are
/// copied next to the commands. The kernel copies a few large pieces faster than many small
/// ones (each one costs a user-copy setup), and a copy of a short piece is cheap.
const OWN_SLICE: usize = 512;

/// What a window writes, in order: ranges of the command buffer and the large content
/// pieces between them.
#[derive(Default)]
struct Spans<'a> {
    /// `(end, piece)`: the buffer from the previous end up to `end`, then `piece`.
    runs: Vec<(usize, &'a [u8])>,
}

impl<'a> Spans<'a> {
    /// Appends `piece`: copied into `buf` when short, else kept as its own slice.
    fn add(&mut self, buf: &mut Vec<u8>, piece: &'a [u8]) {
        if piece.len() < OWN_SLICE {
            buf.extend_from_slice(piece);
        } else {
            self.runs.push((buf.len(), piece));
        }
    }

    /// The slices to write, `buf` being the buffer `add` filled.
    fn slices<'b>(&self, buf: &'b [u8]) -> Vec<std::io::IoSlice<'b>>
    where
        'a: 'b,
    {
        let mut out = Vec::with_capacity(2 * self.runs.len() + 1);
        let mut start = 0;
        for &(end, piece) in &self.runs {
            if end > start {
                out.push(std::io::IoSlice::new(&buf[start..end]));
            }
            out.push(std::io::IoSlice::new(piece));
            start = end;
        }
        if buf.len() > start {
            out.push(std::io::IoSlice::new(&buf[start..]));
        }
        out
    }
}

/// `n` in decimal digits, appended to `out`.
fn decimal(n: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

impl Connection {
    /// Sends `messages` as one pipelined window of BDAT transactions (only when `windowed()`).
    /// A message the server cannot take (8BITMIME, SMTPUTF8) is refused without being sent.
    /// When the connection breaks, the messages whose last reply did not come fail as
    /// temporary; they count as not sent (`before_content`) only when the server cannot have
    /// acted on them: it answered nothing in this window, or said 421 (closing) before them.
    pub(crate) async fn send_window(&mut self, messages: &[&Prepared]) -> WindowOutcome {
        let mut outcomes: Vec<Option<Outcome>> = messages.iter().map(|_| None).collect();
        let mut expect = Vec::with_capacity(messages.len());
        self.wbuf.clear();
        // The commands and the content's small pieces go into `wbuf`; pieces of at least
        // `OWN_SLICE` bytes are written from where they are, between them.
        let mut spans = Spans::default();
        for (index, message) in messages.iter().enumerate() {
            if let Some(fail) = self.unsupported(message) {
                outcomes[index] = Some(Outcome {
                    result: Err(fail.into_error()),
                    reusable: true,
                    before_content: true,
                });
                continue;
            }
            if message.eight_bit || message.utf8_addresses {
                for command in super::conn::envelope(message) {
                    self.wbuf.extend_from_slice(command.as_bytes());
                }
            } else {
                // The same commands as `envelope` writes, without their allocations.
                self.wbuf.extend_from_slice(b"MAIL FROM:<");
                if let Some(from) = &message.from {
                    self.wbuf.extend_from_slice(from.as_bytes());
                }
                self.wbuf.extend_from_slice(b">\r\n");
                for to in &message.to {
                    self.wbuf.extend_from_slice(b"RCPT TO:<");
                    self.wbuf.extend_from_slice(to.as_bytes());
                    self.wbuf.extend_from_slice(b">\r\n");
                }
            }
            self.wbuf.extend_from_slice(b"BDAT ");
            decimal(message.content.len(), &mut self.wbuf);
            self.wbuf.extend_from_slice(b" LAST\r\n");
            for piece in message.content.slices() {
                spans.add(&mut self.wbuf, piece);
            }
            expect.push(Expect {
                index,
                rcpts: message.to.len(),
            });
        }
        let mut reusable = true;
        // Once the connection broke: why, and whether the unanswered messages are surely not
        // taken. After a failed write nothing is known of what the server read.
        let mut broken: Option<(String, bool)> = None;
        if !expect.is_empty() {
            let wbuf = std::mem::take(&mut self.wbuf);
            let mut parts = spans.slices(&wbuf);
            let written = self.write_parts(&mut parts).await;
            drop(parts);
            self.wbuf = wbuf;
            if let Err(f) = written {
                broken = Some((f.to_string(), false));
            }
        }
        // Replies read in this window, and whether the last one was 421.
        let mut answered = 0usize;
        let mut closing = false;
        // One transaction's replies (reused: most windows read thousands).
        let mut replies = Vec::new();
        for e in &expect {
            let outcome = match &broken {
                Some((message, not_sent)) => Outcome::broken(message, *not_sent),
                None => {
                    replies.clear();
                    let mut fail = None;
                    while replies.len() < e.rcpts + 2 {
                        match self.read_status().await {
                            Ok(r) => {
                                answered += 1;
                                closing = r.code == 421;
                                replies.push(r);
                            }
                            Err(f) => {
                                fail = Some(f);
                                break;
                            }
                        }
                    }
                    match fail {
                        None => {
                            let bdat = replies.pop().expect("BDAT reply");
                            if closing || replies.iter().any(|r| r.code == 421) {
                                reusable = false;
                            }
                            Outcome {
                                result: settle(&replies, bdat).map_err(Fail::into_error),
                                reusable: true,
                                before_content: false,
                            }
                        }
                        Some(f) => {
                            reusable = false;
                            // Nothing answered is "not taken" only when the server closed
                            // (a reused connection it had dropped); a server that is merely
                            // slow may have queued some of the window already.
                            let not_sent =
                                closing || (answered == 0 && !matches!(f, Fail::TimedOut(_)));
                            let message = match replies.iter().find(|r| r.code == 421) {
                                Some(r) => r.text(),
                                None => f.to_string(),
                            };
                            let outcome = Outcome::broken(&message, not_sent);
                            broken = Some((message, not_sent));
                            outcome
                        }
                    }
                }
            };
            outcomes[e.index] = Some(outcome);
        }
        if broken.is_some() {
            reusable = false;
        }
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| {
                let mut o = o.expect("every message has an outcome");
                o.reusable = reusable;
                o
            })
            .collect();
        WindowOutcome { outcomes, reusable }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::super::error::SendError;
    use super::super::super::url::SmtpUrl;
    use super::super::target::Target;
    use super::*;

    fn r(code: u16) -> Reply {
        Reply {
            code,
            lines: vec![format!("text {code}")],
        }
    }

    #[test]
    fn utf8_addresses_and_8bit_content_ask_for_their_extensions() {
        let m = lettre::Message::builder()
            .from("s@example.com".parse().unwrap())
            .to("zo\u{eb}@example.org".parse().unwrap())
            .header(lettre::message::header::ContentTransferEncoding::EightBit)
            .body("R\u{e9}gion".to_string())
            .unwrap();
        let p = Prepared::new(&m);
        assert_eq!(
            super::super::conn::envelope(&p),
            [
                "MAIL FROM:<s@example.com> SMTPUTF8 BODY=8BITMIME\r\n",
                "RCPT TO:<zo\u{eb}@example.org>\r\n"
            ]
        );
        let plain = message(3);
        assert_eq!(
            super::super::conn::envelope(&plain),
            [
                "MAIL FROM:<s@example.com>\r\n",
                "RCPT TO:<u3@example.org>\r\n"
            ]
        );
    }

    #[test]
    fn short_pieces_are_copied_and_long_ones_written_from_where_they_are() {
        let long = vec![b'x'; OWN_SLICE];
        let longer = vec![b'y'; OWN_SLICE + 1];
        let mut buf = b"BDAT 1 LAST\r\n".to_vec();
        let mut spans = Spans::default();
        for piece in [&b"ab"[..], &long, &longer, b"c", b"", &long] {
            spans.add(&mut buf, piece);
        }
        let slices = spans.slices(&buf);
        let lens: Vec<usize> = slices.iter().map(|s| s.len()).collect();
        assert_eq!(lens, [15, OWN_SLICE, OWN_SLICE + 1, 1, OWN_SLICE]);
        assert_eq!(slices[1].as_ptr(), long.as_ptr(), "not copied");
        let joined: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        let expected = [&b"BDAT 1 LAST\r\nab"[..], &long, &longer, b"c", &long].concat();
        assert_eq!(joined, expected);
        // Nothing large: the buffer in one slice.
        let spans = Spans::default();
        assert_eq!(spans.slices(b"MAIL").len(), 1);
    }

    #[test]
    fn sizes_are_written_in_decimal() {
        for n in [0, 7, 10, 1636, 1_000_000, usize::MAX] {
            let mut out = b"x".to_vec();
            decimal(n, &mut out);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn each_transaction_is_settled_by_its_own_replies() {
        assert!(settle(&[r(250), r(250)], r(250)).is_ok());
        // A refused recipient is the reason, not the BDAT's "no valid recipients".
        let Err(Fail::Reply(x)) = settle(&[r(250), r(550)], r(554)) else {
            panic!()
        };
        assert_eq!(x.code, 550);
        let Err(Fail::Reply(x)) = settle(&[r(451), r(503)], r(503)) else {
            panic!()
        };
        assert_eq!(x.code, 451);
        let Err(Fail::Reply(x)) = settle(&[r(250), r(250)], r(452)) else {
            panic!()
        };
        assert_eq!(x.code, 452);
        // Taken for one of two recipients: permanent, so it is not sent again.
        let partial = settle(&[r(250), r(450), r(250)], r(250));
        assert!(matches!(partial, Err(Fail::Refused(_))), "{partial:?}");
        assert!(matches!(
            partial.unwrap_err().into_error(),
            SendError::Permanent { .. }
        ));
    }

    fn message(i: usize) -> Prepared {
        let m = lettre::Message::builder()
            .from("s@example.com".parse().unwrap())
            .to(format!("u{i}@example.org").parse().unwrap())
            .subject("s")
            .body(format!("line {i}\r\n.dot\r\n"))
            .unwrap();
        Prepared::new(&m)
    }

    /// A scripted server: greets, offers PIPELINING and CHUNKING, reads `n` whole BDAT
    /// transactions (checking each one's content is the message's, not dot-stuffed) written
    /// before any reply, then answers `replies` and closes.
    async fn scripted(
        n: usize,
        replies: &'static str,
    ) -> (Connection, tokio::task::JoinHandle<()>) {
        scripted_slow(n, replies, Duration::ZERO, Duration::from_secs(5)).await
    }

    /// [`scripted`], answering only after `hold`, to a client that waits `timeout`.
    async fn scripted_slow(
        n: usize,
        replies: &'static str,
        hold: Duration,
        timeout: Duration,
    ) -> (Connection, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"220 scripted\r\n").await.unwrap();
            let mut buf = Vec::new();
            let line = |buf: &mut Vec<u8>| {
                let end = buf.windows(2).position(|w| w == b"\r\n")?;
                let l = String::from_utf8(buf[..end].to_vec()).unwrap();
                buf.drain(..end + 2);
                Some(l)
            };
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(l) = line(&mut buf) {
                    assert!(l.starts_with("EHLO "), "{l}");
                    break;
                }
                let k = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..k]);
            }
            s.write_all(b"250-scripted\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
                .await
                .unwrap();
            let mut done = 0;
            let mut expect = Vec::new();
            while done < n {
                let k = s.read(&mut chunk).await.unwrap();
                assert!(k > 0, "client closed after {done} transactions");
                buf.extend_from_slice(&chunk[..k]);
                while done < n {
                    if expect.is_empty() {
                        let Some(l) = line(&mut buf) else { break };
                        expect.push(l);
                        continue;
                    }
                    let Some(size) = expect
                        .last()
                        .and_then(|l: &String| l.strip_prefix("BDAT "))
                        .map(|l| {
                            l.strip_suffix(" LAST")
                                .expect("LAST")
                                .parse::<usize>()
                                .unwrap()
                        })
                    else {
                        let Some(l) = line(&mut buf) else { break };
                        expect.push(l);
                        continue;
                    };
                    if buf.len() < size {
                        break;
                    }
                    let content: Vec<u8> = buf.drain(..size).collect();
                    assert_eq!(expect[0], "MAIL FROM:<s@example.com>");
                    assert_eq!(expect[1], format!("RCPT TO:<u{done}@example.org>"));
                    assert_eq!(content, message(done).content());
                    expect.clear();
                    done += 1;
                }
            }
            tokio::time::sleep(hold).await;
            // The client may have given up and closed by now.
            let _ = s.write_all(replies.as_bytes()).await;
        });
        let url = SmtpUrl::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
        let target = Target::new(&url, timeout).unwrap();
        let conn = Connection::connect(&target).await.unwrap();
        assert!(conn.windowed());
        (conn, server)
    }

    async fn window(n: usize, replies: &'static str) -> WindowOutcome {
        let (mut conn, server) = scripted(n, replies).await;
        let messages: Vec<Prepared> = (0..n).map(message).collect();
        let refs: Vec<&Prepared> = messages.iter().collect();
        let out = conn.send_window(&refs).await;
        server.await.unwrap();
        out
    }

    fn code(o: &Outcome) -> Option<u16> {
        o.result.as_ref().err().and_then(SendError::code)
    }

    #[tokio::test]
    async fn replies_map_to_their_transactions_and_a_break_fails_the_rest_as_temporary() {
        let w = window(
            5,
            "250 ok\r\n250 ok\r\n250 queued\r\n\
             250 ok\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n\
             451 4.3.0 busy\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n\
             250 ok\r\n",
        )
        .await;
        assert!(!w.reusable);
        let o = &w.outcomes;
        assert_eq!(o.len(), 5);
        assert_eq!(o[0].result, Ok(()));
        assert!(matches!(o[1].result, Err(SendError::Permanent { .. })));
        assert_eq!(code(&o[1]), Some(550));
        assert!(matches!(o[2].result, Err(SendError::Temporary { .. })));
        assert_eq!(code(&o[2]), Some(451));
        // Cut short after its MAIL reply: the server may have it, so not `before_content`;
        // the last one was written too.
        for b in &o[3..] {
            assert!(matches!(
                b.result,
                Err(SendError::Temporary { code: None, .. })
            ));
            assert!(!b.before_content);
        }
    }

    /// A server that read the whole window but has not answered when the client's wait ends
    /// may have queued some of it (a slow content scan): every message is an ambiguous
    /// failure, never "surely not taken" (which would send it again at once).
    #[tokio::test]
    async fn a_window_unanswered_in_time_is_ambiguous() {
        let (mut conn, server) = scripted_slow(
            3,
            "250 ok\r\n250 ok\r\n250 queued\r\n",
            Duration::from_millis(1500),
            Duration::from_millis(300),
        )
        .await;
        let messages: Vec<Prepared> = (0..3).map(message).collect();
        let refs: Vec<&Prepared> = messages.iter().collect();
        let w = conn.send_window(&refs).await;
        server.await.unwrap();
        assert!(!w.reusable);
        for o in &w.outcomes {
            assert!(!o.before_content, "{o:?}");
            let Err(SendError::Temporary { message, .. }) = &o.result else {
                panic!("{o:?}")
            };
            assert!(message.contains("timed out"), "{message}");
        }
    }

    #[tokio::test]
    async fn nothing_answered_or_421_means_not_taken() {
        let w = window(3, "").await;
        assert!(!w.reusable);
        assert!(
            w.outcomes
                .iter()
                .all(|o| o.before_content && o.result.is_err())
        );

        let w = window(
            3,
            "250 ok\r\n250 ok\r\n250 queued\r\n421 4.3.2 shutting down\r\n",
        )
        .await;
        assert!(!w.reusable);
        assert_eq!(w.outcomes[0].result, Ok(()));
        for o in &w.outcomes[1..] {
            assert!(o.before_content, "{o:?}");
            assert!(
                matches!(&o.result, Err(SendError::Temporary { message, .. }) if message.contains("421")),
                "{o:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_whole_window_answered_leaves_the_connection_usable() {
        let w = window(
            2,
            "250 ok\r\n250 ok\r\n250 queued\r\n250 ok\r\n450 4.2.0 greylisted\r\n554 5.5.1 no valid recipients\r\n",
        )
        .await;
        assert!(w.reusable);
        assert_eq!(w.outcomes[0].result, Ok(()));
        assert_eq!(code(&w.outcomes[1]), Some(450));
        assert!(w.outcomes[1].result.as_ref().unwrap_err().is_temporary());
    }
}
