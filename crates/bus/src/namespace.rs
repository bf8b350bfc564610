//! A namespace over any bus: every subject is prefixed, so several MisterSmith deployments
//! (or test runs) can share one broker without hearing each other. Chosen with
//! `?namespace=NAME` on the bus URL.

use crate::{subjects, Bus, Error, Message, Result, Subscription};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Namespaced {
    inner: Arc<dyn Bus>,
    /// `NAME.`
    prefix: String,
}

impl Namespaced {
    pub fn new(inner: Arc<dyn Bus>, name: &str) -> Result<Self> {
        subjects::validate_subject(name).map_err(|_| {
            Error::Config(format!("bus namespace {name:?} must be a valid subject (letters, digits, '-', '_')"))
        })?;
        if name.contains('.') {
            return Err(Error::Config(format!("bus namespace {name:?} must be one token (no '.')")));
        }
        Ok(Namespaced { inner, prefix: format!("{name}.") })
    }

    /// Strips the prefix from what a subscription receives, so callers see their own subjects.
    fn unwrap_subscription(&self, mut inner: Subscription) -> Subscription {
        let (tx, rx) = mpsc::channel(crate::memory::DEFAULT_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let prefix = self.prefix.clone();
        let counted = dropped.clone();
        let task = tokio::spawn(async move {
            while let Some(mut m) = inner.recv().await {
                if let Some(s) = m.subject.strip_prefix(&prefix) {
                    m.subject = s.to_string();
                }
                if tx.try_send(Arc::new(m)).is_err() {
                    if tx.is_closed() {
                        return;
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Subscription::new(rx, dropped, Box::new(move || task.abort()))
    }
}

#[async_trait]
impl Bus for Namespaced {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        subjects::validate_subject(subject)?;
        self.inner.publish(&format!("{}{subject}", self.prefix), payload).await
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        subjects::validate_pattern(pattern)?;
        let sub = self.inner.subscribe(&format!("{}{pattern}", self.prefix)).await?;
        Ok(self.unwrap_subscription(sub))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription> {
        subjects::validate_pattern(pattern)?;
        let sub = self.inner.queue_subscribe(&format!("{}{pattern}", self.prefix), group).await?;
        Ok(self.unwrap_subscription(sub))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        subjects::validate_subject(subject)?;
        let mut m = self.inner.request(&format!("{}{subject}", self.prefix), payload, timeout).await?;
        if let Some(s) = m.subject.strip_prefix(&self.prefix) {
            m.subject = s.to_string();
        }
        Ok(m)
    }

    /// Reply subjects are the inner bus's own inboxes: answered as they are.
    async fn respond(&self, msg: &Message, payload: Bytes) -> Result<()> {
        self.inner.respond(msg, payload).await
    }
}
