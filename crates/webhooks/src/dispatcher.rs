//! The dispatcher: the feed reader that records deliveries, and the sender that sends them.
//!
//! Why the cursor moves in the transaction that records the deliveries: a crash between the
//! two could neither skip an event (the cursor moved, its deliveries lost) nor record one twice.
//! Why a claim holds a delivery for a while instead of marking it sent: a sender that dies
//! mid-attempt leaves it to be sent again after the hold — at least once, never lost.

use crate::guard::{Guard, Refused};
use crate::metrics;
use crate::sign::signature;
use crate::{Error, Result};
use serde_json::json;
use smith_core::webhook::{kinds_match, secret_key, task_webhook_wants};
use smith_core::{AttemptOutcome, Delivery, DeliveryState, Event, EventKind, Micros, NewDelivery, Webhook};
use smith_store::{FeedFilter, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The lease whose holder runs the dispatcher: one process at a time.
pub const LEASE: &str = "webhooks-dispatcher";
/// How long the stored cursor may stay behind what was read without calling for a delivery.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Empty reads of the feed in a row after which it is read every `poll` instead of `feed_poll`.
const IDLE_POLLS: u32 = 8;
/// The clock skew allowed between this process and whoever dates tasks' ends, when passing the
/// feed over unread.
const SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Options {
    /// Holds the lease as this node.
    pub node_id: String,
    /// How long a delivery is retried before it is marked failed (from its first recording).
    pub retry_for: Duration,
    /// One attempt's deadline, connect to the end of the answer.
    pub timeout: Duration,
    /// Attempts in flight at most.
    pub max_in_flight: usize,
    /// The wait before the first retry; it doubles after each failure, up to `max_backoff`,
    /// plus up to a quarter of jitter.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How often due deliveries are looked for when no new one wakes the sender.
    pub poll: Duration,
    /// How often the feed is read for new events once it is caught up: a burst of commits is
    /// one page, and an idle feed costs one cheap read (its high-water mark) per period.
    pub feed_poll: Duration,
    /// Events read from the feed at once.
    pub page: usize,
    pub lease_ttl: Duration,
    pub guard: Guard,
}

impl Options {
    pub fn new(node_id: impl Into<String>) -> Self {
        Options {
            node_id: node_id.into(),
            retry_for: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            max_in_flight: 64,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            poll: Duration::from_millis(250),
            feed_poll: Duration::from_millis(25),
            page: 1000,
            lease_ttl: Duration::from_secs(6),
            guard: Guard::default(),
        }
    }

    /// When the attempt after `attempts` failed ones is due, or `None` when the delivery,
    /// recorded at `created`, is out of time.
    pub fn next_attempt(&self, created: Micros, attempts: u32, now: Micros) -> Option<Micros> {
        let base = self.backoff.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(self.max_backoff);
        let delay = base + base.mul_f64(fastrand::f64() * 0.25);
        let next = now.plus(delay);
        (next <= created.plus(self.retry_for)).then_some(next)
    }
}

/// The dispatcher's handle: cheap to clone; [`Dispatcher::run`] is its supervised loop.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    guard: Arc<Guard>,
    /// Recorded deliveries wake the sender.
    recorded: Notify,
    leader: AtomicBool,
    became_leader: Notify,
}

impl Dispatcher {
    pub fn new(opts: Options, store: Arc<dyn Store>) -> Result<Self> {
        let guard = Arc::new(opts.guard.clone());
        let client = reqwest::Client::builder()
            .dns_resolver(guard.resolver())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(opts.timeout)
            .pool_max_idle_per_host(opts.max_in_flight)
            .user_agent(concat!("MisterSmith-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let inner = Inner {
            opts,
            store,
            client,
            guard,
            recorded: Notify::new(),
            leader: AtomicBool::new(false),
            became_leader: Notify::new(),
        };
        Ok(Dispatcher { inner: Arc::new(inner) })
    }

    /// Holds the lease and, while it does, reads the feed and sends deliveries; gives the lease
    /// up when stopped.
    pub async fn run(self, stop: CancellationToken) -> Result<()> {
        let inner = &self.inner;
        let result = tokio::select! {
            r = inner.lease_loop(&stop) => r,
            r = inner.feed_loop(&stop) => r,
            r = inner.send_loop(&stop) => r,
            r = inner.gauge_loop(&stop) => r,
        };
        if inner.leader.swap(false, Ordering::AcqRel) {
            let _ = inner.store.release_lease(LEASE, &inner.opts.node_id).await;
        }
        result
    }
}

impl Inner {
    fn leading(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    async fn pause(&self, stop: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn lease_loop(&self, stop: &CancellationToken) -> Result<()> {
        let every = self.opts.lease_ttl / 3;
        loop {
            let held = match self.store.acquire_lease(LEASE, &self.opts.node_id, self.opts.lease_ttl).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the webhooks lease");
                    false
                }
            };
            if held != self.leading() {
                tracing::info!(node = %self.opts.node_id, held, "webhooks dispatcher lease changed");
                self.leader.store(held, Ordering::Release);
                if held {
                    self.became_leader.notify_waiters();
                }
            }
            if !self.pause(stop, every).await {
                return Ok(());
            }
        }
    }

    /// Waits until this process leads, or is stopped (false).
    async fn wait_to_lead(&self, stop: &CancellationToken) -> bool {
        while !self.leading() {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = self.became_leader.notified() => {}
                _ = tokio::time::sleep(self.opts.poll * 4) => {}
            }
        }
        !stop.is_cancelled()
    }

    async fn feed_loop(&self, stop: &CancellationToken) -> Result<()> {
        // The feed is polled, not followed on the bus: a subscription to every event would
        // cost every task's hot path a delivery to this loop, subscribed or not.
        // (where the store's cursor is, how far this dispatcher has read): a page that calls for
        // no delivery moves only the second, written with the next deliveries or once a second,
        // so the feed's hot path does not pay a write per page and a restart re-reads at most
        // a second of the feed (which records nothing it did not record the first time)
        let mut state: Option<(u64, u64)> = None;
        let mut persisted_at = Instant::now();
        // the subscriptions read after the previous page: what this page's kinds come from
        let mut known: Option<Vec<Webhook>> = None;
        // Every event after the cursor was committed after this time: a task with an event there
        // is unfinished or finished since. Known once the feed has been read to its end.
        let mut fresh_since: Option<Micros> = None;
        // empty reads in a row: past a few, the feed is idle and read at the slower pace
        let mut idle = 0u32;
        loop {
            if !self.wait_to_lead(stop).await {
                return Ok(());
            }
            let (persisted, from) = match state {
                Some(s) => s,
                None => {
                    let c = self.store.webhook_cursor().await?;
                    (c, c)
                }
            };
            let before = match known.take() {
                Some(h) => h,
                None => self.store.webhooks(None).await?,
            };
            // Nobody subscribes and no task with a webhook of its own can have an event after
            // the cursor: the feed up to its head is passed over unread (three small reads in
            // place of reading every finished task's event and webhook).
            if let (true, Some(since)) = (before.is_empty(), fresh_since) {
                let read_at = Micros::now();
                let head = self.store.feed_head().await?;
                // read after the head: a subscription committed before any of its events
                let hooks = self.store.webhooks(None).await?;
                if hooks.is_empty() && head > from && !self.store.task_webhooks_live(since).await? {
                    state = Some(self.pass_over(persisted, head, &mut persisted_at).await?);
                    fresh_since = Some(Micros(read_at.0 - SKEW.as_micros() as i64));
                    known = Some(hooks);
                    // nothing to deliver is waiting: look again at the slower pace
                    if !self.pause(stop, self.opts.poll).await {
                        return Ok(());
                    }
                    continue;
                }
                if !hooks.is_empty() {
                    known = Some(hooks);
                    state = Some((persisted, from));
                    continue;
                }
            }
            let read_at = Micros::now();
            // read only the kinds someone wants (the rest is passed over by the cursor all the same)
            let kinds = wanted_kinds(&before);
            let filter = FeedFilter { kinds: kinds.clone(), ..Default::default() };
            let page = self.store.feed(from, &filter, self.opts.page).await?;
            if page.cursor == from {
                // nothing committed since: no subscription to read again, nothing to record; an
                // idle feed is looked at every `poll`, a busy one every `feed_poll`
                known = Some(before);
                state = Some((persisted, from));
                idle = idle.saturating_add(1);
                let wait = if idle > IDLE_POLLS { self.opts.poll } else { self.opts.feed_poll };
                if !self.pause(stop, wait).await {
                    return Ok(());
                }
                continue;
            }
            // read after the page: every subscription committed before its events is here; one
            // that wants a kind the page left out makes the page be read again
            let hooks = self.store.webhooks(None).await?;
            if !covers(&kinds, &wanted_kinds(&hooks)) {
                known = Some(hooks);
                state = Some((persisted, from));
                continue;
            }
            idle = 0;
            let deliveries = self.deliveries_of(&page.events, &hooks).await?;
            known = Some(hooks);
            let n = deliveries.len();
            let persist = n > 0 || (page.cursor != persisted && persisted_at.elapsed() >= PERSIST_EVERY);
            if persist {
                for d in &deliveries {
                    ::metrics::counter!(metrics::RECORDED, "tenant" => d.tenant.clone()).increment(1);
                }
                match self.store.enqueue_deliveries(persisted, page.cursor, deliveries).await {
                    Ok(()) => {
                        state = Some((page.cursor, page.cursor));
                        persisted_at = Instant::now();
                    }
                    // another dispatcher moved it (a lease handover): start again from where it is
                    Err(e) if e.code() == smith_core::Code::Conflict => {
                        tracing::warn!(error = %e, "the webhook cursor moved under this dispatcher");
                        state = None;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                state = Some((persisted, page.cursor));
            }
            if n > 0 {
                self.recorded.notify_one();
            }
            if !page.more {
                fresh_since = Some(Micros(read_at.0 - SKEW.as_micros() as i64));
                if !self.pause(stop, self.opts.feed_poll).await {
                    return Ok(());
                }
            }
        }
    }

    /// Moves the cursor over the feed up to `head`, which calls for no delivery: in memory, and in the
    /// store at most once a second. The new `(stored, read)` state.
    async fn pass_over(&self, persisted: u64, head: u64, persisted_at: &mut Instant) -> Result<(u64, u64)> {
        if persisted_at.elapsed() < PERSIST_EVERY {
            return Ok((persisted, head));
        }
        match self.store.enqueue_deliveries(persisted, head, Vec::new()).await {
            Ok(()) => {
                *persisted_at = Instant::now();
                Ok((head, head))
            }
            // another dispatcher moved it: read it again
            Err(e) if e.code() == smith_core::Code::Conflict => {
                tracing::warn!(error = %e, "the webhook cursor moved under this dispatcher");
                let c = self.store.webhook_cursor().await?;
                Ok((c, c))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The deliveries a page of events calls for: each event to each subscription of its tenant
    /// that wants it, and a task's terminal and request events to the task's own webhook.
    async fn deliveries_of(&self, events: &[Event], hooks: &[Webhook]) -> Result<Vec<NewDelivery>> {
        let ends: Vec<_> =
            events.iter().filter(|e| task_webhook_wants(e.kind.as_str())).filter_map(|e| e.task_id).collect();
        let own: HashMap<_, _> = self.store.task_webhooks(&ends).await?.into_iter().collect();
        let mut out = Vec::new();
        let now = Micros::now();
        for e in events {
            let kind = e.kind.as_str();
            let Some(tenant) = e.tenant.as_deref() else { continue };
            let mut payload = None;
            for h in hooks.iter().filter(|h| h.wants(kind, Some(tenant), e.at)) {
                let body = payload.get_or_insert_with(|| body_of(e)).clone();
                out.push(delivery(e, Some(h.id.clone()), tenant, &h.url, Some(h.secret.clone()), body, now));
            }
            let Some(w) = e.task_id.filter(|_| task_webhook_wants(kind)).and_then(|t| own.get(&t)) else { continue };
            let body = payload.get_or_insert_with(|| body_of(e)).clone();
            out.push(delivery(e, None, tenant, &w.url, w.secret.clone(), body, now));
        }
        Ok(out)
    }

    async fn send_loop(&self, stop: &CancellationToken) -> Result<()> {
        let mut flying: JoinSet<()> = JoinSet::new();
        // a claim holds a delivery past any attempt's end, so a live sender never sees it twice
        let hold = self.opts.timeout * 2 + Duration::from_secs(5);
        loop {
            if !self.leading() {
                // a lost lease: let the attempts in flight end, take no more
                while flying.join_next().await.is_some() {}
                if !self.wait_to_lead(stop).await {
                    return Ok(());
                }
            }
            let free = self.opts.max_in_flight.saturating_sub(flying.len());
            let mut full = false;
            if free > 0 {
                let due = self.store.claim_deliveries(Micros::now(), hold, free).await?;
                full = due.len() == free;
                for d in due {
                    let this = self.clone_for_send();
                    flying.spawn(async move { this.attempt(d).await });
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    // what is in flight is held, and sent again by whoever leads next
                    flying.abort_all();
                    return Ok(());
                }
                Some(_) = flying.join_next(), if !flying.is_empty() => {
                    while flying.try_join_next().is_some() {}
                }
                _ = self.recorded.notified(), if !full => {}
                _ = tokio::time::sleep(self.opts.poll), if !full => {}
            }
        }
    }

    fn clone_for_send(&self) -> Sender {
        Sender {
            store: self.store.clone(),
            client: self.client.clone(),
            guard: self.guard.clone(),
            opts: self.opts.clone(),
        }
    }

    async fn gauge_loop(&self, stop: &CancellationToken) -> Result<()> {
        let mut tenants: Vec<String> = Vec::new();
        loop {
            if self.leading() {
                let pending = self.store.pending_deliveries().await?;
                for t in &tenants {
                    if !pending.iter().any(|(p, _)| p == t) {
                        ::metrics::gauge!(metrics::PENDING, "tenant" => t.clone()).set(0.0);
                    }
                }
                for (t, n) in &pending {
                    ::metrics::gauge!(metrics::PENDING, "tenant" => t.clone()).set(*n as f64);
                }
                tenants = pending.into_iter().map(|(t, _)| t).collect();
                let head = self.store.feed_head().await?;
                let cursor = self.store.webhook_cursor().await?;
                ::metrics::gauge!(metrics::FEED_LAG).set(head.saturating_sub(cursor) as f64);
            }
            if !self.pause(stop, Duration::from_secs(2)).await {
                return Ok(());
            }
        }
    }
}

/// The event kinds a dispatcher must read: those a task's own webhook is sent and those any
/// subscription names; empty when that is every kind (no filter).
fn wanted_kinds(hooks: &[Webhook]) -> Vec<EventKind> {
    let kinds: Vec<EventKind> = EventKind::ALL
        .into_iter()
        .filter(|k| task_webhook_wants(k.as_str()) || hooks.iter().any(|h| kinds_match(&h.kinds, k.as_str())))
        .collect();
    if kinds.len() == EventKind::ALL.len() {
        return Vec::new();
    }
    kinds
}

/// Whether a page read for `read` kinds holds every kind in `wanted` (empty: every kind).
fn covers(read: &[EventKind], wanted: &[EventKind]) -> bool {
    read.is_empty() || (!wanted.is_empty() && wanted.iter().all(|k| read.contains(k)))
}

/// The body of every delivery of an event: `{type, timestamp, data}`, `data` the event.
fn body_of(e: &Event) -> serde_json::Value {
    json!({"type": e.kind.as_str(), "timestamp": e.at.rfc3339(), "data": e})
}

fn delivery(
    e: &Event,
    webhook_id: Option<String>,
    tenant: &str,
    url: &str,
    secret: Option<String>,
    payload: serde_json::Value,
    now: Micros,
) -> NewDelivery {
    NewDelivery {
        id: NewDelivery::new_id(),
        webhook_id,
        tenant: tenant.to_string(),
        task_id: e.task_id,
        event_pos: e.pos,
        event_type: e.kind.as_str().to_string(),
        url: url.to_string(),
        secret,
        payload,
        created_at: now,
    }
}

/// What one attempt needs, owned by its task.
struct Sender {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    guard: Arc<Guard>,
    opts: Options,
}

/// How one request went.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
    refused: bool,
}

impl Sender {
    async fn attempt(self, d: Delivery) {
        let started = Instant::now();
        let answer = self.send(&d).await;
        let code = metrics::code(answer.status, answer.refused);
        ::metrics::histogram!(metrics::ATTEMPT_DURATION, "code" => code).record(started.elapsed().as_secs_f64());
        let now = Micros::now();
        let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
        let (state, next_at) = match () {
            _ if ok => (DeliveryState::Delivered, None),
            _ if answer.refused => (DeliveryState::Failed, None),
            _ => match self.opts.next_attempt(d.created_at, d.attempts + 1, now) {
                Some(next) => (DeliveryState::Pending, Some(next)),
                None => (DeliveryState::Failed, None),
            },
        };
        if ok {
            if let Some(at) = d.payload["data"]["at"].as_str().and_then(Micros::parse_rfc3339) {
                ::metrics::histogram!(metrics::DELIVERY_LATENCY).record(now.since(at) as f64 / 1e6);
            }
        }
        let outcome = match state {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Pending => "retrying",
            DeliveryState::Failed => "failed",
        };
        ::metrics::counter!(metrics::DELIVERIES, "tenant" => d.tenant.clone(), "outcome" => outcome).increment(1);
        if !ok {
            tracing::debug!(delivery = %d.id, status = ?answer.status, error = ?answer.error, outcome, "webhook attempt failed");
        }
        let record = AttemptOutcome { state, next_at, status: answer.status, error: answer.error, at: now };
        // a record that cannot be written leaves the delivery held: it is sent again after the hold
        for wait in [0, 100, 500, 2000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match self.store.record_attempt(&d.id, &record).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(delivery = %d.id, error = %e, "cannot record a webhook attempt"),
            }
        }
    }

    async fn send(&self, d: &Delivery) -> Answer {
        let fail = |error: String, refused: bool| Answer { status: None, error: Some(error), refused };
        // an address in the URL is never resolved, so the resolver's check does not see it
        if let Err(e @ (Refused::Address(..) | Refused::Url(_))) = self.guard.check_literal(&d.url) {
            return fail(e.to_string(), true);
        }
        let body = match serde_json::to_vec(&d.payload) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot serialize the payload: {e}"), true),
        };
        let timestamp = Micros::now().0 / 1_000_000;
        let mut req = self
            .client
            .post(&d.url)
            .timeout(self.opts.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(key) = d.secret.as_deref().and_then(|s| secret_key(s).ok()) {
            req = req.header("webhook-signature", signature(&key, &d.id, timestamp, &body));
        }
        match req.body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // the answer's body is not needed, only read so the connection can be reused
                let _ = tokio::time::timeout(self.opts.timeout, resp.bytes()).await;
                let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
                Answer { status: Some(status), error, refused: false }
            }
            Err(e) => {
                let refused = refusal(&e);
                let error = match &refused {
                    Some(r) => r.to_string(),
                    None if e.is_timeout() => format!("no answer within {:?}", self.opts.timeout),
                    None => describe(&e),
                };
                fail(error, refused.is_some_and(|r| matches!(r, Refused::Address(..))))
            }
        }
    }
}

/// The guard's refusal inside a client error, if that is why it failed.
fn refusal(e: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        source = s.source();
    }
    None
}

/// A client error with its causes, without the URL (which may carry a token in its query).
fn describe(e: &reqwest::Error) -> String {
    let mut text = String::from(if e.is_connect() { "cannot connect" } else { "request failed" });
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_is_read_for_the_kinds_someone_wants() {
        let hook = |kinds: &[&str]| Webhook {
            id: "w".into(),
            tenant: "t".into(),
            url: "https://x".into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            description: None,
            secret: String::new(),
            created_at: Micros(0),
        };
        let ends = [
            EventKind::Succeeded,
            EventKind::Failed,
            EventKind::Cancelled,
            EventKind::TimedOut,
            EventKind::ApprovalRequested,
            EventKind::InputRequested,
        ];
        assert_eq!(wanted_kinds(&[]), ends, "a task's own webhook: its end, and a person asked");
        let mut with_queued = vec![EventKind::Queued];
        with_queued.extend(ends);
        assert_eq!(wanted_kinds(&[hook(&["task.queued"])]), with_queued);
        assert!(wanted_kinds(&[hook(&["task.*"])]).contains(&EventKind::Retrying));
        assert!(!wanted_kinds(&[hook(&["task.*"])]).contains(&EventKind::Output));
        assert_eq!(wanted_kinds(&[hook(&["task.*"]), hook(&["*"])]), Vec::<EventKind>::new(), "every kind: no filter");
        // a page read for fewer kinds than a subscription committed meanwhile wants is read again
        let all = wanted_kinds(&[hook(&["*"])]);
        assert!(covers(&all, &ends) && covers(&all, &all) && covers(&with_queued, &ends));
        assert!(!covers(&ends, &all), "every kind is more than the terminal ones");
        assert!(!covers(&ends, &with_queued));
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_until_out_of_time() {
        let mut o = Options::new("n");
        o.backoff = Duration::from_secs(1);
        o.max_backoff = Duration::from_secs(60);
        o.retry_for = Duration::from_secs(3600);
        let t0 = Micros(1_000_000_000_000);
        for (attempts, base) in [(1, 1), (2, 2), (3, 4), (4, 8), (7, 60), (30, 60)] {
            let next = o.next_attempt(t0, attempts, t0).expect("in time");
            let delay = next.since(t0) as f64 / 1e6;
            assert!(delay >= base as f64 && delay <= base as f64 * 1.25 + 1e-6, "{attempts}: {delay}");
        }
        assert_eq!(o.next_attempt(t0, 3, t0.plus(Duration::from_secs(3599))), None, "out of time");
    }
}
