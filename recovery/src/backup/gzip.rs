//! gzip on dedicated threads between async streams and child pipes: compressing `pg_dump`'s
//! output on its way into the store, and decompressing a stored dump straight into `psql`'s
//! stdin while the async side reads (and hashes) the next chunks.

use std::{
    io::{self, BufRead, Read, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use flate2::{Compression, bufread::MultiGzDecoder, write::GzEncoder};
use tokio::sync::{mpsc, oneshot};

use super::store::CHUNK;

/// Size of the writes into a child's pipe.
const WRITE_BUF: usize = 256 * 1024;

/// A blocking [`BufRead`] over chunks arriving on a channel; an `Err` item is returned as the
/// read error, a closed channel is end of input.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(&self.cur)
    }
    fn consume(&mut self, amt: usize) {
        let _ = self.cur.split_to(amt.min(self.cur.len()));
    }
}

/// Decompresses the gzip data arriving on `rx` (several concatenated members allowed) into
/// `out` (e.g. `psql`'s stdin) on a new thread, adding each written byte count to `written`.
/// The receiver gets the total, or the first read/decode/write error. `out` is closed when
/// the thread ends.
pub fn spawn_gunzip(
    rx: mpsc::Receiver<io::Result<Bytes>>,
    mut out: std::fs::File,
    written: Arc<AtomicU64>,
) -> oneshot::Receiver<io::Result<u64>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("drbot-gunzip".into())
        .spawn(move || {
            let result = (|| {
                let mut decoder = MultiGzDecoder::new(ChannelReader {
                    rx,
                    cur: Bytes::new(),
                });
                let mut buf = vec![0u8; WRITE_BUF];
                let mut total = 0u64;
                loop {
                    let n = match decoder.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    out.write_all(&buf[..n])?;
                    total += n as u64;
                    written.fetch_add(n as u64, Ordering::Relaxed);
                }
                out.flush()?;
                Ok(total)
            })();
            drop(out);
            let _ = done_tx.send(result);
        })
        .expect("spawning a thread");
    done_rx
}

/// A [`Write`] that sends what it gets as ~[`CHUNK`]-sized pieces on a channel.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Compresses everything read from `input` (e.g. `pg_dump`'s stdout) with gzip `level` on a
/// new thread and sends the compressed chunks on the returned channel; a read or compression
/// error is sent as the last item. Returns the channel and the count of bytes read so far.
pub fn spawn_gzip(
    mut input: std::fs::File,
    level: u32,
) -> (mpsc::Receiver<io::Result<Bytes>>, Arc<AtomicU64>) {
    let (tx, rx) = mpsc::channel(8);
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    std::thread::Builder::new()
        .name("drbot-gzip".into())
        .spawn(move || {
            let err_tx = tx.clone();
            let result = (|| {
                let mut enc = GzEncoder::new(
                    ChannelWriter {
                        tx,
                        buf: Vec::with_capacity(CHUNK),
                    },
                    Compression::new(level),
                );
                let mut buf = vec![0u8; WRITE_BUF];
                loop {
                    let n = match input.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    enc.write_all(&buf[..n])?;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                let mut writer = enc.finish()?;
                writer.flush()
            })();
            if let Err(e) = result {
                let _ = err_tx.blocking_send(Err(e));
            }
        })
        .expect("spawning a thread");
    (rx, read)
}
