//! Notification hub: templates, status page, customer email, chat broadcasts and the durable
//! delivery outbox. Knows nothing of commands.

pub mod chat;
pub mod email;
pub mod outbox;
pub mod page;
pub mod statuspage;
pub mod templates;
