//! The loopback SMTP sink: accepts every message and discards it, counting messages and
//! remembering Message-IDs to detect duplicates. Offers PIPELINING and CHUNKING (BDAT, RFC
//! 3030; `sink data` leaves CHUNKING out, so senders use DATA). Single-threaded, so its
//! capacity is one core whichever sender drives it. Prints `PORT n`; answers `stats` on stdin
//! with `messages unique duplicates seconds` since the previous `stats`, then resets.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Stats {
    messages: u64,
    duplicates: u64,
    ids: HashSet<Vec<u8>>,
    first: Option<Instant>,
    last: Option<Instant>,
}

type Shared = Arc<Mutex<Stats>>;

pub fn main(args: &[String]) {
    let chunking = args.first().map(String::as_str) != Some("data");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", listener.local_addr().unwrap().port());
        let stats: Shared = Arc::default();
        let control = stats.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "stats" {
                    let s = std::mem::take(&mut *control.lock().unwrap());
                    let secs = match (s.first, s.last) {
                        (Some(a), Some(b)) => (b - a).as_secs_f64(),
                        _ => 0.0,
                    };
                    println!("{} {} {} {secs:.4}", s.messages, s.ids.len(), s.duplicates);
                }
            }
            std::process::exit(0);
        });
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(session(stream, stats.clone(), chunking));
        }
    });
}

fn starts_with_ci(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The Message-ID in the header section of `content`, if any.
fn message_id(content: &[u8]) -> Option<Vec<u8>> {
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        if starts_with_ci(line, b"message-id:") {
            return Some(line[11..].trim_ascii().to_vec());
        }
    }
    None
}

/// Counts one accepted message.
fn accepted(stats: &Shared, id: Option<Vec<u8>>) {
    let mut s = stats.lock().unwrap();
    s.messages += 1;
    s.last = Some(Instant::now());
    if let Some(id) = id
        && !s.ids.insert(id)
    {
        s.duplicates += 1;
    }
}

/// Where a session is in the byte stream.
enum State {
    Commands,
    /// Inside DATA: still in the headers?
    Data {
        headers: bool,
    },
    /// Inside a BDAT chunk: bytes still to come, whether it is the LAST one.
    Bdat {
        remaining: usize,
        last: bool,
    },
}

async fn session(mut stream: TcpStream, stats: Shared, chunking: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    let mut state = State::Commands;
    let mut id: Option<Vec<u8>> = None;
    // The message's BDAT bytes so far (its Message-ID is looked up at BDAT LAST).
    let mut content: Vec<u8> = Vec::with_capacity(8192);
    if stream.write_all(b"220 sink ESMTP\r\n").await.is_err() {
        return;
    }
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut start = 0;
        let mut quit = false;
        while start < filled || matches!(state, State::Bdat { remaining: 0, .. }) {
            if let State::Bdat { remaining, last } = &mut state {
                let take = (*remaining).min(filled - start);
                content.extend_from_slice(&buf[start..start + take]);
                start += take;
                *remaining -= take;
                if *remaining > 0 {
                    break;
                }
                if *last {
                    accepted(&stats, message_id(&content));
                    content.clear();
                    out.extend_from_slice(b"250 2.0.0 queued\r\n");
                } else {
                    out.extend_from_slice(b"250 2.0.0 chunk\r\n");
                }
                state = State::Commands;
                continue;
            }
            let Some(pos) = buf[start..filled].iter().position(|&b| b == b'\n') else {
                break;
            };
            let end = start + pos + 1;
            let line = buf[start..end]
                .strip_suffix(b"\r\n")
                .unwrap_or(&buf[start..end - 1]);
            match &mut state {
                State::Data { headers } => {
                    if line == b"." {
                        state = State::Commands;
                        accepted(&stats, id.take());
                        out.extend_from_slice(b"250 2.0.0 queued\r\n");
                    } else if *headers {
                        if line.is_empty() {
                            *headers = false;
                        } else if starts_with_ci(line, b"message-id:") {
                            id = Some(line[11..].trim_ascii().to_vec());
                        }
                    }
                }
                State::Bdat { .. } => unreachable!("handled above"),
                State::Commands => {
                    if starts_with_ci(line, b"EHLO") {
                        out.extend_from_slice(b"250-sink\r\n250-PIPELINING\r\n");
                        if chunking {
                            out.extend_from_slice(b"250-CHUNKING\r\n");
                        }
                        out.extend_from_slice(
                            b"250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 10485760\r\n",
                        );
                    } else if starts_with_ci(line, b"MAIL") {
                        let mut s = stats.lock().unwrap();
                        s.first.get_or_insert_with(Instant::now);
                        out.extend_from_slice(b"250 2.1.0 Ok\r\n");
                    } else if starts_with_ci(line, b"DATA") {
                        (state, id) = (State::Data { headers: true }, None);
                        out.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                    } else if chunking && starts_with_ci(line, b"BDAT ") {
                        let text = std::str::from_utf8(&line[5..]).unwrap_or("");
                        let mut words = text.split_ascii_whitespace();
                        let size = words.next().and_then(|w| w.parse::<usize>().ok());
                        let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                        match size {
                            Some(remaining) => state = State::Bdat { remaining, last },
                            None => out.extend_from_slice(b"501 5.5.4 Syntax: BDAT size\r\n"),
                        }
                    } else if starts_with_ci(line, b"QUIT") {
                        out.extend_from_slice(b"221 2.0.0 Bye\r\n");
                        quit = true;
                        break;
                    } else if line.is_empty() {
                        // stray blank line
                    } else {
                        // HELO, RCPT, RSET, NOOP: all fine.
                        out.extend_from_slice(b"250 2.0.0 Ok\r\n");
                    }
                }
            }
            start = end;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if quit {
            return;
        }
    }
}
