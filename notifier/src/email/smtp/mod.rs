//! drbot's own small SMTP client for bulk sends: one connection per worker, opened with
//! `TCP_NODELAY`, STARTTLS or implicit TLS (rustls) and AUTH, reused for many messages, with
//! MAIL/RCPT/DATA sent in one write when the server advertises PIPELINING (RFC 2920).
//! lettre still builds the messages and sends single emails.

mod conn;
mod prepared;
mod reply;
mod stream;
mod target;
mod window;

pub(crate) use conn::{Connection, Outcome};
pub(crate) use prepared::Prepared;
pub(crate) use target::Target;
