//! Built-in step providers.

pub mod exec;
pub mod http_check;
