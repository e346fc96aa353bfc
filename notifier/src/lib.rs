//! Notification hub: templates, status page, customer email, chat broadcasts and the durable
//! delivery outbox. Knows nothing of commands. This build has the chat broadcast interface;
//! the rest arrives with the notification issue.

pub mod chat;
pub mod email;
pub mod outbox;
pub mod page;
pub mod templates;
pub mod statuspage;
