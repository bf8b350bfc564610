//! The in-process bus: subscriptions in a locked registry, each with its own bounded buffer.
//!
//! Publishing never blocks and never grows memory: when a subscriber's buffer is full
//! the message is dropped for that subscriber only and its [`Subscription::dropped`]
//! counter goes up. That is acceptable because the bus is only the fast path; the store
//! is the truth, and a subscriber that missed messages re-reads it.
//!
//! The registry is a `std::sync::RwLock` held only for plain loops over a few entries,
//! never across an `.await`. A publish allocates the message once; each matching
//! subscriber costs one reference count.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::error::{Error, Result};
use crate::subjects::{self, validate_group, validate_pattern, validate_subject};
use crate::{Bus, Message, Subscription};

/// Messages buffered per subscriber before new ones are dropped for it.
pub const DEFAULT_CAPACITY: usize = 4096;

/// An in-process bus. Cheap to clone; clones share subscriptions.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    registry: RwLock<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    plain: Vec<Member>,
    /// Keyed by group name alone, as in NATS: one message reaches one member of a
    /// group even when members subscribed with different (overlapping) patterns.
    groups: Vec<Group>,
}

struct Member {
    id: u64,
    pattern: String,
    literal: bool,
    tx: mpsc::Sender<Arc<Message>>,
    dropped: Arc<AtomicU64>,
}

struct Group {
    name: String,
    members: Vec<Member>,
    /// Round-robin cursor; atomic so publishers need only the read lock.
    next: AtomicUsize,
}

enum Offer {
    Delivered,
    Full,
    Closed,
}

impl MemoryBus {
    /// A bus buffering up to [`DEFAULT_CAPACITY`] messages per subscriber.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A bus buffering up to `per_subscriber` messages per subscriber (at least one).
    pub fn with_capacity(per_subscriber: usize) -> Self {
        MemoryBus {
            shared: Arc::new(Shared { capacity: per_subscriber.max(1), registry: RwLock::new(Registry::default()) }),
        }
    }

    /// Builds a bus from the part of a `memory:`/`inproc:` URL after the scheme.
    pub(crate) fn from_url(url: &str, rest: &str) -> Result<Self> {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !host.is_empty() {
            return Err(Error::Config(format!("in-process bus URL `{url}` names `{host}`; use `memory://`")));
        }
        let mut capacity = DEFAULT_CAPACITY;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "capacity" => {
                    capacity = match value.parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => {
                            return Err(Error::Config(format!(
                                "bus URL `{url}`: capacity must be a positive integer, got `{value}`"
                            )))
                        }
                    }
                }
                other => {
                    return Err(Error::Config(format!(
                        "bus URL `{url}`: unknown option `{other}`; supported: capacity"
                    )))
                }
            }
        }
        Ok(Self::with_capacity(capacity))
    }

    /// Live subscriptions, plain and queue members; for diagnostics and tests.
    pub fn subscriptions(&self) -> usize {
        let registry = self.shared.read();
        registry.plain.len() + registry.groups.iter().map(|g| g.members.len()).sum::<usize>()
    }

    /// Registers a subscription; `group` makes it a queue member.
    fn register(&self, pattern: &str, group: Option<&str>) -> Subscription {
        let (tx, rx) = mpsc::channel(self.shared.capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = {
            let mut registry = self.shared.write();
            registry.next_id += 1;
            let member = Member {
                id: registry.next_id,
                pattern: pattern.to_owned(),
                literal: !subjects::has_wildcard(pattern),
                tx,
                dropped: dropped.clone(),
            };
            let id = member.id;
            match group {
                None => registry.plain.push(member),
                Some(name) => match registry.groups.iter_mut().find(|g| g.name == name) {
                    Some(existing) => existing.members.push(member),
                    None => registry.groups.push(Group {
                        name: name.to_owned(),
                        members: vec![member],
                        next: AtomicUsize::new(0),
                    }),
                },
            }
            id
        };
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        Subscription::new(
            rx,
            dropped,
            Box::new(move || {
                if let Some(shared) = shared.upgrade() {
                    shared.write().remove(id);
                }
            }),
        )
    }

    /// Hands `message` to every matching subscriber and one member of each matching
    /// group; returns how many of them were interested (delivered or full).
    fn deliver(&self, message: Message) -> usize {
        let message = Arc::new(message);
        let mut interested = 0;
        let mut stale = false;
        {
            let registry = self.shared.read();
            for member in &registry.plain {
                if !member.matches(&message.subject) {
                    continue;
                }
                match member.offer(&message) {
                    Offer::Delivered => interested += 1,
                    Offer::Full => {
                        member.record_drop();
                        interested += 1;
                    }
                    Offer::Closed => stale = true,
                }
            }
            for group in &registry.groups {
                let (delivered, group_stale) = group.offer(&message);
                interested += usize::from(delivered);
                stale |= group_stale;
            }
        }
        // Subscriptions unregister on drop; this only catches one dropped mid-publish.
        if stale {
            self.shared.write().remove_closed();
        }
        interested
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("capacity", &self.shared.capacity)
            .field("subscriptions", &self.subscriptions())
            .finish()
    }
}

impl Shared {
    // Nothing panics while holding the lock, but a poisoned registry is still consistent.
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    fn remove(&mut self, id: u64) {
        self.plain.retain(|m| m.id != id);
        for group in &mut self.groups {
            group.members.retain(|m| m.id != id);
        }
        self.groups.retain(|g| !g.members.is_empty());
    }

    fn remove_closed(&mut self) {
        let before = self.plain.len();
        self.plain.retain(|m| !m.tx.is_closed());
        let mut removed = before - self.plain.len();
        for group in &mut self.groups {
            let before = group.members.len();
            group.members.retain(|m| !m.tx.is_closed());
            removed += before - group.members.len();
        }
        self.groups.retain(|g| !g.members.is_empty());
        tracing::debug!(removed, "removed closed bus subscriptions");
    }
}

impl Member {
    fn matches(&self, subject: &str) -> bool {
        if self.literal {
            self.pattern == subject
        } else {
            subjects::matches(&self.pattern, subject)
        }
    }

    fn offer(&self, message: &Arc<Message>) -> Offer {
        match self.tx.try_send(message.clone()) {
            Ok(()) => Offer::Delivered,
            Err(TrySendError::Full(_)) => Offer::Full,
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    fn record_drop(&self) {
        // Log once per subscription: at 100k messages/s a line per drop would be its own outage.
        if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                pattern = %self.pattern,
                capacity = self.tx.max_capacity(),
                "bus subscriber is full; dropping its messages"
            );
        }
    }
}

impl Group {
    /// Delivers to one matching member, starting at the round-robin cursor and skipping
    /// full or closed members. Returns (interested, saw a closed member).
    fn offer(&self, message: &Arc<Message>) -> (bool, bool) {
        let subject = message.subject.as_str();
        let matching = self.members.iter().filter(|m| m.matches(subject));
        let count = matching.clone().count();
        if count == 0 {
            return (false, false);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut stale = false;
        let mut first_full: Option<&Member> = None;
        for member in matching.cycle().skip(start).take(count) {
            match member.offer(message) {
                Offer::Delivered => return (true, stale),
                Offer::Full => {
                    first_full.get_or_insert(member);
                }
                Offer::Closed => stale = true,
            }
        }
        match first_full {
            Some(member) => {
                member.record_drop();
                (true, stale)
            }
            None => (false, stale),
        }
    }
}

fn inbox() -> String {
    format!("_INBOX.{:032x}", fastrand::u128(..))
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        validate_subject(subject)?;
        self.deliver(Message { subject: subject.to_owned(), payload, reply: None });
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        validate_pattern(pattern)?;
        Ok(self.register(pattern, None))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription> {
        validate_pattern(pattern)?;
        validate_group(group)?;
        Ok(self.register(pattern, Some(group)))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        validate_subject(subject)?;
        let reply = inbox();
        // Subscribe before publishing so a fast responder cannot answer into the void.
        let mut replies = self.register(&reply, None);
        let interested = self.deliver(Message { subject: subject.to_owned(), payload, reply: Some(reply) });
        if interested == 0 {
            return Err(Error::NoResponders(subject.to_owned()));
        }
        match tokio::time::timeout(timeout, replies.recv()).await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn respond(&self, msg: &Message, payload: Bytes) -> Result<()> {
        self.publish(msg.reply_subject()?, payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: usize) -> Bytes {
        Bytes::from(i.to_string())
    }

    fn drain(sub: &mut Subscription) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(message) = sub.try_recv() {
            out.push(message.payload);
        }
        out
    }

    #[tokio::test]
    async fn full_subscriber_drops_only_its_own_messages() {
        let bus = MemoryBus::with_capacity(8);
        let mut slow = bus.subscribe("a.>").await.unwrap();
        let mut fast = bus.subscribe("a.b").await.unwrap();

        for i in 0..8 {
            bus.publish("a.b", payload(i)).await.unwrap();
        }
        assert_eq!(drain(&mut fast).len(), 8);
        // `slow` is full now: these are dropped for it alone, and publish does not block.
        for i in 8..12 {
            bus.publish("a.b", payload(i)).await.unwrap();
        }
        assert_eq!(drain(&mut fast), (8..12).map(payload).collect::<Vec<_>>());
        assert_eq!(fast.dropped(), 0);
        assert_eq!(slow.dropped(), 4);
        assert_eq!(drain(&mut slow), (0..8).map(payload).collect::<Vec<_>>());

        // Once drained it receives again.
        bus.publish("a.c", payload(12)).await.unwrap();
        assert_eq!(drain(&mut slow), vec![payload(12)]);
        assert_eq!(slow.dropped(), 4);
    }

    #[tokio::test]
    async fn dropped_subscriptions_leave_the_registry() {
        let bus = MemoryBus::new();
        let a = bus.subscribe("a").await.unwrap();
        let b = bus.queue_subscribe("a", "g").await.unwrap();
        let _c = bus.queue_subscribe("a", "g").await.unwrap();
        assert_eq!(bus.subscriptions(), 3);
        drop(a);
        drop(b);
        assert_eq!(bus.subscriptions(), 1);
        bus.publish("a", payload(0)).await.unwrap();
        assert_eq!(bus.subscriptions(), 1);
    }

    #[tokio::test]
    async fn subscription_ends_when_bus_is_dropped() {
        // A subscription outliving its bus ends its stream instead of hanging.
        let bus = MemoryBus::new();
        let mut sub = bus.subscribe("a").await.unwrap();
        bus.publish("a", payload(1)).await.unwrap();
        drop(bus);
        assert_eq!(sub.recv().await.unwrap().payload, payload(1));
        assert!(sub.recv().await.is_none());
    }

    #[tokio::test]
    async fn closed_members_are_pruned_on_publish() {
        let bus = MemoryBus::new();
        let sub = bus.subscribe("a").await.unwrap();
        // Skip the drop hook to leave a closed sender behind, as a drop racing a publish would.
        let mut sub = sub;
        sub.on_drop.take();
        drop(sub);
        assert_eq!(bus.subscriptions(), 1);
        bus.publish("a", payload(0)).await.unwrap();
        assert_eq!(bus.subscriptions(), 0);
    }

    #[tokio::test]
    async fn queue_group_is_round_robin() {
        let bus = MemoryBus::new();
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(bus.queue_subscribe("jobs.*", "workers").await.unwrap());
        }
        for i in 0..9 {
            bus.publish("jobs.x", payload(i)).await.unwrap();
        }
        for member in &mut members {
            assert_eq!(drain(member).len(), 3);
        }
    }

    #[tokio::test]
    async fn queue_group_skips_full_members() {
        let bus = MemoryBus::with_capacity(1);
        let mut a = bus.queue_subscribe("jobs", "workers").await.unwrap();
        let mut b = bus.queue_subscribe("jobs", "workers").await.unwrap();
        for i in 0..2 {
            bus.publish("jobs", payload(i)).await.unwrap();
        }
        // Both full: the third is dropped once, counted against one member.
        bus.publish("jobs", payload(2)).await.unwrap();
        assert_eq!(a.dropped() + b.dropped(), 1);
        let mut got = drain(&mut a);
        got.extend(drain(&mut b));
        got.sort();
        assert_eq!(got, vec![payload(0), payload(1)]);

        // Round-robin fills both again; empty only `b`.
        for i in 3..5 {
            bus.publish("jobs", payload(i)).await.unwrap();
        }
        assert_eq!(drain(&mut b).len(), 1);
        // `a` is full: whoever's turn it is, the message goes to `b`, and nothing is dropped.
        for i in 5..7 {
            bus.publish("jobs", payload(i)).await.unwrap();
            assert_eq!(drain(&mut b), vec![payload(i)]);
        }
        assert_eq!(a.dropped() + b.dropped(), 1);
        assert_eq!(drain(&mut a).len(), 1);
    }

    #[tokio::test]
    async fn queue_group_spans_patterns() {
        // One group name means one delivery, even across overlapping patterns (as in NATS).
        let bus = MemoryBus::new();
        let mut a = bus.queue_subscribe("jobs.*", "workers").await.unwrap();
        let mut b = bus.queue_subscribe("jobs.>", "workers").await.unwrap();
        for i in 0..4 {
            bus.publish("jobs.x", payload(i)).await.unwrap();
        }
        assert_eq!(drain(&mut a).len() + drain(&mut b).len(), 4);
        bus.publish("jobs.x.y", payload(9)).await.unwrap();
        assert_eq!(drain(&mut b), vec![payload(9)]);
    }

    #[tokio::test]
    async fn bad_group_names_are_rejected() {
        let bus = MemoryBus::new();
        for group in ["", "two words"] {
            let err = bus.queue_subscribe("a", group).await.unwrap_err();
            assert!(matches!(err, Error::InvalidSubject(_)), "{group:?}: {err:?}");
        }
    }

    #[tokio::test]
    async fn request_cleans_up_its_inbox() {
        let bus = MemoryBus::new();
        let mut service = bus.subscribe("svc").await.unwrap();
        let responder = bus.clone();
        let task = tokio::spawn(async move {
            let request = service.recv().await.unwrap();
            responder.respond(&request, payload(7)).await.unwrap();
            service
        });
        let reply = bus.request("svc", payload(1), Duration::from_secs(2)).await.unwrap();
        assert_eq!(reply.payload, payload(7));
        let _service = task.await.unwrap();
        assert_eq!(bus.subscriptions(), 1);

        let err = bus.request("nobody", payload(1), Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err, Error::NoResponders("nobody".into()));
        assert_eq!(bus.subscriptions(), 1);
    }
}
