//! drbot's own small SMTP client for bulk sends: one connection per worker, opened with
//! `TCP_NODELAY`, STARTTLS or implicit TLS (rustls) and AUTH, reused for many messages: windows
//! of pipelined BDAT transactions when the server offers CHUNKING and PIPELINING (RFC 3030,
//! `window.rs`), else DATA with MAIL/RCPT/DATA in one write when it offers PIPELINING (RFC
//! 2920). lettre sends single emails and builds the messages `wire.rs` does not write.

mod conn;
mod prepared;
mod reply;
mod stream;
mod target;
mod window;

pub(crate) use conn::{Connection, Outcome};
pub(crate) use prepared::{Layout, Prepared};
pub(crate) use target::Target;
