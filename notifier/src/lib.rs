//! Notification hub (templates, status page, email, chat broadcasts, outbox). Filled in by the notification issue.
