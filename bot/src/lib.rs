//! drbot library: config, store, grammar, approvals, audit, engine driver and server; wired
//! together by the `drbot` binary (`main.rs`).

pub mod actor;
pub mod alloc;
pub mod app;
pub mod approvals;
pub mod cards;
pub mod checklists;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discord;
pub mod dispatch;
pub mod drill_history;
pub mod driver;
pub mod events;
pub mod grammar;
pub mod http_serve;
pub mod incidents;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod page_cache;
pub mod reminders;
pub mod replay;
pub mod reply;
pub mod report;
pub mod schedule;
pub mod server;
pub mod slack;
pub mod status_page;
pub mod steps;
pub mod store;
pub mod unsubscribe;
