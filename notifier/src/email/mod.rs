//! Customer email: SMTP by URL (plain, STARTTLS, implicit TLS), multipart text + HTML messages
//! with one-click unsubscribe headers and caller-chosen Message-IDs, pooled concurrent delivery
//! under a rate limit, and temporary failures told apart from permanent ones.

mod bulk;
mod campaign;
mod config;
mod error;
mod mailer;
mod message;
mod rate;
mod redact;
mod smtp;
mod url;
mod wire;
mod workers;

pub use bulk::{BulkOptions, Delivery};
pub use campaign::{Campaign, CampaignContent, Recipient};
pub use config::EmailConfig;
pub use error::{ConfigError, SendError};
pub use mailer::Mailer;
pub use message::OutgoingEmail;
pub use rate::RateLimiter;
pub use url::{Security, SmtpUrl, UrlError};
