//! Webhooks: deliveries of events to URLs, sent from the store's commit-ordered feed.
//!
//! The [`Dispatcher`] runs where it holds the `webhooks` lease (one process at a time): it reads
//! the feed after its durable cursor, records the deliveries the events call for (a tenant's
//! subscriptions, a task's own webhook) in the same transaction that moves the cursor, and
//! sends each at least once, signed the Standard Webhooks way ([`sign`]), retried with
//! exponential backoff and jitter for `retry_for`, then marked failed. Every connection passes
//! the SSRF [`guard`].

mod dispatcher;
pub mod guard;
pub mod metrics;
pub mod sign;

pub use dispatcher::{Dispatcher, Options, LEASE};
pub use guard::{Allowed, Guard, Refused};

/// Errors of the dispatcher's loops (each is a restart of its supervised child).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Store(#[from] smith_store::Error),
    #[error("http client: {0}")]
    Client(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
