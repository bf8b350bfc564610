//! Subject-based publish/subscribe (NATS semantics) for wake-ups, live event fan-out and control messages.
//!
//! The bus is only the fast path: a message may be dropped (a slow subscriber, a
//! restarted broker), so nothing may depend on seeing every message. The store is the
//! truth; a bus message tells a reader *when* to look, never *what* is there.
//!
//! Backends implement the object-safe [`Bus`] trait and are held as `Arc<dyn Bus>`,
//! chosen by URL in [`open`]. The in-process [`memory::MemoryBus`] is always compiled;
//! every backend must pass the `conformance` suite.

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod error;
mod events;
mod instrumented;
pub mod memory;
pub mod metrics;
pub mod namespace;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(any(feature = "nats", feature = "amqp"))]
mod remote;
pub mod subjects;

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

pub use error::{Error, Result};
pub use events::publish_events;
pub use instrumented::{instrument, Instrumented};
pub use metrics::describe_metrics;

/// One message as a subscriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub payload: Bytes,
    /// Where to send the answer, for messages published by [`Bus::request`].
    pub reply: Option<String>,
}

impl Message {
    /// The subject to answer this message on; an error for a message that asked for no reply.
    pub fn reply_subject(&self) -> Result<&str> {
        self.reply.as_deref().ok_or_else(|| {
            Error::InvalidSubject(format!("message on `{}` has no reply subject to respond to", self.subject))
        })
    }
}

/// A live subscription: a bounded buffer of messages. Dropping it unsubscribes.
///
/// When the buffer is full, new messages for this subscription are dropped (and
/// counted in [`Subscription::dropped`]) rather than slowing the publisher down.
/// It is also a [`futures_util::Stream`] of messages.
pub struct Subscription {
    // Shared with the publisher so fan-out costs a reference count, not a copy, per subscriber.
    rx: mpsc::Receiver<Arc<Message>>,
    dropped: Arc<AtomicU64>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
    /// Sees each message as it is handed to the caller (metrics).
    tap: Option<Tap>,
}

type Tap = Box<dyn Fn(&Message) + Send + Sync>;

impl Subscription {
    /// `on_drop` runs once when the subscription is dropped, to unregister it promptly.
    pub(crate) fn new(
        rx: mpsc::Receiver<Arc<Message>>,
        dropped: Arc<AtomicU64>,
        on_drop: Box<dyn FnOnce() + Send + Sync>,
    ) -> Self {
        Subscription { rx, dropped, on_drop: Some(on_drop), tap: None }
    }

    /// Adds `tap`, which sees every message this subscription hands out from now on (after
    /// any tap added before).
    pub(crate) fn tapped(mut self, tap: Tap) -> Self {
        self.tap = Some(match self.tap.take() {
            None => tap,
            Some(first) => Box::new(move |m| {
                first(m);
                tap(m);
            }),
        });
        self
    }

    fn delivered(&self, m: Arc<Message>) -> Message {
        if let Some(tap) = &self.tap {
            tap(&m);
        }
        Arc::unwrap_or_clone(m)
    }

    /// The next message; `None` once the bus has shut down.
    pub async fn recv(&mut self) -> Option<Message> {
        let m = self.rx.recv().await?;
        Some(self.delivered(m))
    }

    /// The next message if one is already buffered.
    pub fn try_recv(&mut self) -> Option<Message> {
        let m = self.rx.try_recv().ok()?;
        Some(self.delivered(m))
    }

    /// Messages dropped because this subscriber's buffer was full.
    ///
    /// Non-zero means this subscriber missed messages: re-read the store.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(unsubscribe) = self.on_drop.take() {
            unsubscribe();
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("buffered", &self.rx.len()).field("dropped", &self.dropped()).finish()
    }
}

impl futures_util::Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx).map(|message| message.map(|m| self.delivered(m)))
    }
}

/// A subject-based publish/subscribe bus with NATS semantics.
///
/// Delivery is at most once and best effort: the bus is the fast path, the store is the
/// truth. Messages from one publisher to one subscriber arrive in publish order.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Fire-and-forget. Subjects are dot-separated tokens; publishing to a subject with
    /// wildcards is [`Error::InvalidSubject`].
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()>;

    /// `pattern` may use `*` (one token) and `>` (one or more trailing tokens).
    async fn subscribe(&self, pattern: &str) -> Result<Subscription>;

    /// Like [`Bus::subscribe`], but each message goes to exactly one member of `group`.
    /// Several groups on one subject each get a copy, as does every plain subscriber.
    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription>;

    /// Publishes with a fresh reply subject and waits for the first reply.
    /// [`Error::NoResponders`] if nobody is subscribed, [`Error::Timeout`] after `timeout`.
    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message>;

    /// Answers a request: publishes to `msg.reply`, an error if there is none.
    async fn respond(&self, msg: &Message, payload: Bytes) -> Result<()>;
}

#[cfg(all(feature = "nats", feature = "amqp"))]
const SUPPORTED_SCHEMES: &str = "memory://, inproc://, nats://, tls://, amqp://, amqps://";
#[cfg(all(feature = "nats", not(feature = "amqp")))]
const SUPPORTED_SCHEMES: &str = "memory://, inproc://, nats://, tls://";
#[cfg(all(not(feature = "nats"), feature = "amqp"))]
const SUPPORTED_SCHEMES: &str = "memory://, inproc://, amqp://, amqps://";
#[cfg(not(any(feature = "nats", feature = "amqp")))]
const SUPPORTED_SCHEMES: &str = "memory://, inproc://";

/// Opens the bus named by `url` (uninstrumented: wrap it with [`instrument`] for metrics).
///
/// - `memory://`, `memory:` or `inproc://`: an in-process bus (this process only);
///   `?capacity=N` sets the per-subscriber buffer (default
///   [`memory::DEFAULT_CAPACITY`]).
/// - `nats://` or `tls://` (feature `nats`): a NATS server, see
///   [`nats::NatsBus::connect`] for credentials and options.
/// - `amqp://` or `amqps://` (feature `amqp`): an AMQP 0.9.1 broker (RabbitMQ, Amazon MQ for
///   RabbitMQ), see [`amqp::AmqpBus::connect`] for credentials, options and how subjects map
///   onto a topic exchange.
pub async fn open(url: &str) -> Result<Arc<dyn Bus>> {
    let (url, namespace) = split_namespace(url);
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(Error::Config(format!("bus URL `{url}` has no scheme; supported: {SUPPORTED_SCHEMES}")));
    };
    let bus: Arc<dyn Bus> = match scheme {
        "memory" | "inproc" => Arc::new(memory::MemoryBus::from_url(&url, rest)?),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Arc::new(nats::NatsBus::connect(&url).await?),
        #[cfg(feature = "amqp")]
        "amqp" | "amqps" => Arc::new(amqp::AmqpBus::connect(&url).await?),
        other => {
            return Err(Error::Config(format!("unsupported bus URL scheme `{other}`; supported: {SUPPORTED_SCHEMES}")))
        }
    };
    match namespace {
        Some(ns) => Ok(Arc::new(namespace::Namespaced::new(bus, &ns)?)),
        None => Ok(bus),
    }
}

/// Takes `namespace=NAME` out of the URL's query, leaving the rest for the backend.
fn split_namespace(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut namespace = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("namespace=") {
            Some(ns) => {
                namespace = Some(ns.to_string());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespaces_keep_deployments_apart() {
        let inner: Arc<dyn Bus> = Arc::new(memory::MemoryBus::new());
        let a = namespace::Namespaced::new(inner.clone(), "a").unwrap();
        let b = namespace::Namespaced::new(inner.clone(), "b").unwrap();
        let mut sa = a.subscribe("smith.events.>").await.unwrap();
        let mut sb = b.subscribe("smith.events.>").await.unwrap();
        a.publish("smith.events.echo.1", Bytes::from_static(b"x")).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), sa.recv()).await.unwrap().unwrap();
        assert_eq!(got.subject, "smith.events.echo.1", "callers see their own subjects");
        assert!(tokio::time::timeout(Duration::from_millis(100), sb.recv()).await.is_err(), "b hears nothing of a");
        assert!(namespace::Namespaced::new(inner.clone(), "a.b").is_err());
        assert_eq!(
            split_namespace("nats://h:4222?namespace=t1&capacity=8"),
            ("nats://h:4222?capacity=8".to_string(), Some("t1".to_string()))
        );
        assert_eq!(split_namespace("memory://?namespace=t1"), ("memory://".to_string(), Some("t1".to_string())));
        let bus = open("memory://?namespace=t9").await.unwrap();
        let mut s = bus.subscribe("x").await.unwrap();
        bus.publish("x", Bytes::from_static(b"y")).await.unwrap();
        assert_eq!(s.recv().await.unwrap().subject, "x");
    }

    #[tokio::test]
    async fn open_memory_urls() {
        for url in ["memory://", "memory:", "inproc://", "memory://?capacity=8"] {
            let bus = open(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let mut sub = bus.subscribe("a").await.unwrap();
            bus.publish("a", Bytes::from_static(b"x")).await.unwrap();
            assert_eq!(sub.recv().await.unwrap().payload, "x", "{url}");
        }
    }

    #[tokio::test]
    async fn open_rejects_bad_urls() {
        // (url, words the message must contain)
        let mut cases: Vec<(&str, &[&str])> = vec![
            ("kafka://x", &["`kafka`", "memory://"]),
            ("memory", &["no scheme", "memory://"]),
            ("memory://somewhere", &["somewhere"]),
            ("memory://?capacity=0", &["capacity"]),
            ("memory://?capacity=lots", &["capacity"]),
            ("memory://?size=3", &["`size`"]),
        ];
        if cfg!(feature = "nats") {
            // Rejected before any connection attempt.
            cases.push(("nats://localhost:port", &["invalid port"]));
        } else {
            cases.push(("nats://localhost:4222", &["`nats`", "memory://", "inproc://"]));
        }
        if cfg!(feature = "amqp") {
            // Rejected before any connection attempt, without showing the password.
            cases.push(("amqp://localhost:port", &["invalid port"]));
            cases.push(("amqps://u:s3cret@localhost/a/b", &["***@localhost", "%2f"]));
            cases.push(("amqp://localhost?exchange=amq.topic", &["reserved"]));
            cases.push(("amqp://localhost?size=3", &["`size`"]));
        } else {
            cases.push(("amqp://localhost", &["`amqp`", "memory://"]));
        }
        for &(url, words) in &cases {
            crate::conformance::assert_config_error(url, open(url).await, words);
        }
    }

    #[test]
    fn error_codes() {
        use smith_core::Code;
        assert_eq!(Error::InvalidSubject("x".into()).code(), Code::InvalidArgument);
        assert_eq!(Error::Timeout.code(), Code::Unavailable);
        assert_eq!(Error::NoResponders("x".into()).code(), Code::Unavailable);
        assert_eq!(Error::Config("x".into()).code(), Code::Internal);
    }
}
