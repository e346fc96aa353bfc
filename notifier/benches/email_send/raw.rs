//! The minimal sender that measures the sink's maximum: whole SMTP transactions pipelined over
//! N connections (with BDAT when the sink offers CHUNKING, else DATA without waiting for 354),
//! each a prepared copy of the sample message with only its Message-ID changed (no message
//! building). Prints `mode bdat` or `mode data`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Transactions in flight per connection.
const WINDOW: usize = 64;

/// The sample message as sent on the wire (dot-stuffed for DATA), split around its
/// Message-ID value.
fn template(dot_stuff: bool) -> (Vec<u8>, Vec<u8>) {
    let config = notifier::email::EmailConfig::new(
        notifier::email::SmtpUrl::parse("smtp://127.0.0.1:25").unwrap(),
        super::sample::FROM,
    );
    let mailer = notifier::email::Mailer::new(&config).unwrap();
    let bytes = mailer.format(&super::sample::email(0)).unwrap();
    let mut text = String::from_utf8(bytes).unwrap();
    if dot_stuff {
        text = text.replace("\r\n.", "\r\n..");
    }
    let marker = "<bench-0@example.com>";
    let at = text.find(marker).expect("sample has its Message-ID");
    let mut tail = text[at + marker.len()..].to_string();
    if !tail.ends_with("\r\n") {
        tail.push_str("\r\n");
    }
    (text.as_bytes()[..at].to_vec(), tail.into_bytes())
}

/// `raw PORT N C`.
pub fn main(args: &[String]) {
    let port: u16 = args[0].parse().unwrap();
    let messages: usize = args[1].parse().unwrap();
    let connections: usize = args[2].parse().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chunking = rt.block_on(offers_chunking(port));
    let parts = Arc::new(rt.block_on(async { template(!chunking) }));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            tasks.push(tokio::spawn(connection(
                port,
                messages,
                next.clone(),
                parts.clone(),
                chunking,
            )));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    println!("elapsed {:.3}", start.elapsed().as_secs_f64());
    println!("mode {}", if chunking { "bdat" } else { "data" });
    println!("vmhwm_kb {}", super::vm_hwm_kb());
}

/// Whether the sink's EHLO reply lists CHUNKING.
async fn offers_chunking(port: u16) -> bool {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut line = String::new();
    read_reply(&mut reader, &mut line).await;
    wr.write_all(b"EHLO raw.example.com\r\n").await.unwrap();
    let mut chunking = false;
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        assert!(line.len() >= 4, "connection closed");
        chunking |= line[4..].trim().eq_ignore_ascii_case("CHUNKING");
        if line.as_bytes()[3] == b' ' {
            break;
        }
    }
    wr.write_all(b"QUIT\r\n").await.unwrap();
    chunking
}

async fn read_reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, line: &mut String) {
    loop {
        line.clear();
        reader.read_line(line).await.unwrap();
        assert!(line.len() >= 4, "connection closed");
        if line.as_bytes()[3] == b' ' {
            return;
        }
    }
}

async fn connection(
    port: u16,
    messages: usize,
    next: Arc<AtomicUsize>,
    parts: Arc<(Vec<u8>, Vec<u8>)>,
    chunking: bool,
) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut line = String::new();
    read_reply(&mut reader, &mut line).await;
    wr.write_all(b"EHLO raw.example.com\r\n").await.unwrap();
    read_reply(&mut reader, &mut line).await;
    let window = Arc::new(Semaphore::new(WINDOW));
    let done = Arc::new(tokio::sync::Notify::new());
    // Each transaction earns three replies with BDAT (MAIL, RCPT, BDAT), four with DATA (MAIL,
    // RCPT, DATA, end of data); the last one frees a window slot.
    let per = if chunking { 3 } else { 4 };
    let reader_task = {
        let (window, done) = (window.clone(), done.clone());
        tokio::spawn(async move {
            let mut replies = 0usize;
            loop {
                line.clear();
                if reader.read_line(&mut line).await.unwrap() == 0 {
                    return;
                }
                assert!(
                    line.starts_with('2') || line.starts_with('3'),
                    "sink said {line}"
                );
                replies += 1;
                if replies.is_multiple_of(per) {
                    window.add_permits(1);
                    done.notify_one();
                }
            }
        })
    };
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= messages {
            break;
        }
        window.acquire().await.unwrap().forget();
        batch.extend_from_slice(b"MAIL FROM:<status@example.com>\r\nRCPT TO:<customer");
        batch.extend_from_slice(i.to_string().as_bytes());
        let id = format!("<raw-{i}@example.com>");
        if chunking {
            let size = parts.0.len() + id.len() + parts.1.len();
            batch.extend_from_slice(
                format!("@customer.example>\r\nBDAT {size} LAST\r\n").as_bytes(),
            );
        } else {
            batch.extend_from_slice(b"@customer.example>\r\nDATA\r\n");
        }
        batch.extend_from_slice(&parts.0);
        batch.extend_from_slice(id.as_bytes());
        batch.extend_from_slice(&parts.1);
        if !chunking {
            batch.extend_from_slice(b".\r\n");
        }
        if window.available_permits() == 0 || batch.len() > 32 * 1024 {
            wr.write_all(&batch).await.unwrap();
            batch.clear();
        }
    }
    wr.write_all(&batch).await.unwrap();
    // Wait until every transaction of this connection is acknowledged.
    while window.available_permits() < WINDOW {
        done.notified().await;
    }
    wr.write_all(b"QUIT\r\n").await.unwrap();
    reader_task.abort();
}
