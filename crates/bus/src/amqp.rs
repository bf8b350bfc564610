//! The AMQP 0.9.1 backend (RabbitMQ, Amazon MQ for RabbitMQ): the same subjects, queue groups
//! and request/reply as NATS, over one topic exchange, with lapin as the client.
//!
//! # Mapping NATS onto AMQP
//!
//! - **Subjects** are routing keys on one non-durable topic exchange (`smith`, or
//!   `?exchange=NAME`), which the bus declares. NATS `*` and AMQP `*` both match one word;
//!   NATS `>` becomes `#`. AMQP's `#` also matches *zero* words (`a.#` matches `a`), so a
//!   subscription whose pattern has a `>` re-checks each message against the NATS pattern
//!   and drops what NATS would not have delivered.
//! - **A subscription** is a server-named, exclusive, auto-delete queue bound with its
//!   pattern: it lives as long as the subscription, and no longer than the connection.
//! - **A queue group** is one shared auto-delete queue per (group, pattern) that every member
//!   consumes from, so the broker hands each message to one member. Unlike NATS, members of
//!   one group that subscribe with *different* patterns get one copy per pattern.
//! - **Request/reply**: each bus has a private inbox, `_INBOX.<random>`, and an exclusive
//!   queue bound to `_INBOX.<random>.*`; a request carries `reply_to = _INBOX.<random>.<n>`,
//!   and a response is an ordinary publish to that subject, matched to its request by `<n>`.
//!   Requests are published `mandatory` on a channel in confirm mode, so a request no queue
//!   is bound for comes back from the broker as [`Error::NoResponders`] instead of timing out.
//!
//! Messages are transient (non-persistent), consumed without acknowledgements, and nothing
//! is stored for a subscriber that is not there, as on core NATS: the bus is only the fast
//! path (see the crate docs), so a message lost in a broker restart costs a reader one poll.
//!
//! # What this backend does to keep that claim true
//!
//! - [`AmqpBus::connect`] fails fast and visibly within about [`CONNECT_TIMEOUT`] (bad URL,
//!   unreachable or silent broker, wrong credentials, unknown virtual host), naming the
//!   broker without the password.
//! - Once connected, a supervisor task watches the connection and, when it is lost,
//!   reconnects forever with jittered exponential backoff capped at [`MAX_RECONNECT_DELAY`],
//!   declaring the exchange and the reply queue again; every live subscription declares,
//!   binds and consumes its queue again on the new connection by itself.
//! - While disconnected, or while the broker blocks publishers (a resource alarm),
//!   [`Bus::publish`] and [`Bus::request`] fail at once with [`Error::Backend`] instead of
//!   queueing: a message that cannot be delivered now is not worth delivering late, and a
//!   caller must never stall on the fast path.
//! - Each subscription forwards into its own bounded buffer, exactly like
//!   [`crate::memory::MemoryBus`]: when full, messages are dropped for that subscriber alone
//!   and counted in [`Subscription::dropped`].

mod target;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind, Event, ExchangeKind};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::remote::{reconnect_delay, CLIENT_NAME};
use crate::subjects::{self, validate_group, validate_pattern, validate_subject};
use crate::{Bus, Message, Subscription};
use target::{binding_key, check_key_len, group_queue, needs_filter, Target, GROUP_QUEUE_EXPIRY};

pub use crate::remote::{CONNECT_TIMEOUT, MAX_RECONNECT_DELAY};
pub use target::{DEFAULT_EXCHANGE, DEFAULT_HEARTBEAT, MAX_KEY_LEN};

/// How often the supervisor looks at the connection and its shared channels, besides
/// hearing lapin's error events.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A bus on an AMQP 0.9.1 broker. Cheap to clone; clones share one connection.
///
/// Subscriptions end (their `recv` returns `None`) once every clone is dropped.
#[derive(Clone)]
pub struct AmqpBus {
    shared: Arc<Shared>,
}

struct Shared {
    core: Arc<Core>,
    /// Never sent on; dropped with the last clone, which stops the supervisor and every
    /// subscription task.
    _shutdown: watch::Sender<()>,
    shutdown: watch::Receiver<()>,
}

/// What the supervisor and the subscription tasks share (never the shutdown sender, so
/// they do not keep the bus alive).
struct Core {
    target: Target,
    /// PEM certificates from `?cacertfile=`, trusted besides the system's.
    ca_pem: Option<String>,
    /// The current connection; `None` while reconnecting.
    live: watch::Sender<Option<Arc<Live>>>,
    replies: Arc<Replies>,
}

/// One connection and the channels every publisher shares.
struct Live {
    connection: Connection,
    /// Plain publishes and responses; one channel, so one publisher's messages stay in order.
    publisher: Channel,
    /// Requests: confirm mode, so a `mandatory` request that reached no queue comes back.
    requester: Channel,
}

/// Requests waiting for their reply, by the number ending their reply subject.
struct Replies {
    /// `_INBOX.<random>`, the same across reconnects.
    inbox: String,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Message>>>,
}

/// What a subscription consumes.
struct Spec {
    pattern: String,
    binding: String,
    /// Re-check each message against `pattern` (see [`target::needs_filter`]).
    filter: bool,
    /// The shared queue of a queue group; `None` for a plain subscription.
    group_queue: Option<String>,
}

impl AmqpBus {
    /// Connects to the broker named by `url`: `amqp://[user:password@]host[:port][/vhost]`,
    /// or `amqps://…` for TLS (rustls, system trust roots; port 5671, which Amazon MQ
    /// requires). The port defaults to 5672, the virtual host to `/` (`%2f`). Options:
    /// `?capacity=N` sets the per-subscriber buffer (default
    /// [`DEFAULT_CAPACITY`](crate::memory::DEFAULT_CAPACITY)), `?exchange=NAME` the topic
    /// exchange (default [`DEFAULT_EXCHANGE`]), `?heartbeat=SECONDS` the heartbeat (default
    /// [`DEFAULT_HEARTBEAT`], 0 for none), `?cacertfile=PATH` a PEM file of certificate
    /// authorities to trust besides the system's (`amqps` only; a private CA).
    ///
    /// Fails within about [`CONNECT_TIMEOUT`]: [`Error::Config`] for a malformed URL,
    /// rejected credentials, an unknown virtual host or an exchange of another type,
    /// [`Error::Backend`] for a broker that is unreachable or does not answer. Once
    /// connected, the bus reconnects by itself.
    pub async fn connect(url: &str) -> Result<AmqpBus> {
        let target = Target::parse(url, CONNECT_TIMEOUT)?;
        let ca_pem = match &target.ca_file {
            None => None,
            Some(path) => Some(read_ca_file(path).await.map_err(|why| {
                Error::Config(format!("bus URL for AMQP broker {}: cacertfile `{path}` {why}", target.display))
            })?),
        };
        let replies = Arc::new(Replies {
            inbox: format!("_INBOX.{:032x}", fastrand::u128(..)),
            next: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
        });
        let opening = open_live(&target, ca_pem.as_deref(), &replies);
        let (live, events) = match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(failure)) => return Err(failure.into_error(&target)),
            Err(_) => {
                return Err(Error::Backend(format!(
                    "no answer from AMQP broker {} within {CONNECT_TIMEOUT:?}; is it an AMQP broker?",
                    target.display
                )))
            }
        };
        tracing::info!(broker = %target.display, exchange = %target.exchange, "bus connected to amqp");
        let core = Arc::new(Core { target, ca_pem, live: watch::Sender::new(Some(live)), replies });
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        tokio::spawn(supervise(core.clone(), events, shutdown_rx.clone()));
        Ok(AmqpBus { shared: Arc::new(Shared { core, _shutdown: shutdown_tx, shutdown: shutdown_rx }) })
    }

    /// Whether the connection is up right now (it may be reconnecting); for health checks.
    pub fn is_connected(&self) -> bool {
        self.shared.core.live().is_ok()
    }

    async fn subscribe_as(&self, pattern: &str, group: Option<&str>) -> Result<Subscription> {
        validate_pattern(pattern)?;
        let binding = binding_key(pattern);
        check_key_len(&binding)?;
        if let Some(group) = group {
            validate_group(group)?;
        }
        let core = &self.shared.core;
        let spec = Arc::new(Spec {
            pattern: pattern.to_owned(),
            filter: needs_filter(pattern),
            group_queue: group.map(|group| group_queue(&core.target.exchange, group, pattern)),
            binding,
        });
        // Consume before returning, so whatever is published after `subscribe` returns
        // arrives. While reconnecting the task consumes once the connection is back, which
        // is what a starting worker wants (as with NATS).
        let first = match core.live() {
            Ok(live) => match consume(&live, &core.target.exchange, &spec).await {
                Ok(consuming) => Some(consuming),
                Err(err) if live.is_up() => {
                    return Err(Error::Backend(format!(
                        "subscribe to `{pattern}` on AMQP broker {}: {err}",
                        core.target.display
                    )))
                }
                Err(_) => None,
            },
            Err(_) => None,
        };
        let (tx, rx) = mpsc::channel(core.target.capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_subscription(
            core.clone(),
            spec,
            first,
            Sink { tx, dropped: dropped.clone() },
            self.shared.shutdown.clone(),
        ));
        let abort = task.abort_handle();
        // Aborting drops the consumer and its channel: lapin cancels the consumer and
        // closes the channel, and the broker deletes the auto-delete queue.
        Ok(Subscription::new(rx, dropped, Box::new(move || abort.abort())))
    }
}

impl fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBus")
            .field("broker", &self.shared.core.target.display)
            .field("exchange", &self.shared.core.target.exchange)
            .field("capacity", &self.shared.core.target.capacity)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Core {
    /// The connection if it is up; fails fast while reconnecting (see the module docs).
    fn live(&self) -> Result<Arc<Live>> {
        match &*self.live.borrow() {
            Some(live) if live.is_up() => Ok(live.clone()),
            _ => Err(Error::Backend(format!("not connected to AMQP broker {}; reconnecting", self.target.display))),
        }
    }

    /// The connection, if a message can be published on it now. While the broker blocks
    /// publishers (a memory or disk alarm) lapin holds every frame back, so a publish would
    /// wait for as long as the alarm lasts: fail at once instead.
    fn publishable(&self) -> Result<Arc<Live>> {
        let live = self.live()?;
        if live.connection.status().blocked() {
            return Err(Error::Backend(format!(
                "AMQP broker {} blocks publishing (resource alarm)",
                self.target.display
            )));
        }
        Ok(live)
    }
}

impl Live {
    fn is_up(&self) -> bool {
        self.broken().is_none()
    }

    /// Why this connection cannot be used any more, if it cannot.
    fn broken(&self) -> Option<String> {
        let status = self.connection.status();
        if !status.connected() {
            return Some(format!("connection is {:?}", status.state()));
        }
        for (name, channel) in [("publish", &self.publisher), ("request", &self.requester)] {
            if !channel.status().connected() {
                return Some(format!("{name} channel is {:?}", channel.status().state()));
            }
        }
        None
    }
}

/// Why a connection could not be opened, and at which step.
struct OpenFailure {
    step: &'static str,
    error: lapin::Error,
}

impl OpenFailure {
    fn at(step: &'static str) -> impl FnOnce(lapin::Error) -> OpenFailure {
        move |error| OpenFailure { step, error }
    }

    /// The error to report: [`Error::Config`] where retrying cannot help (credentials,
    /// virtual host, exchange, certificate), [`Error::Backend`] otherwise.
    fn into_error(self, target: &Target) -> Error {
        let message = format!("cannot connect to AMQP broker {} ({}): {}", target.display, self.step, self.error);
        let amqp = match self.error.kind() {
            ErrorKind::ProtocolError(amqp) => amqp,
            // rustls's verdict on the broker's certificate, wrapped in an I/O error.
            ErrorKind::IOError(io) if io.to_string().contains("certificate") => {
                return Error::Config(format!(
                    "{message}; the broker's TLS certificate is not trusted for this host name \
                     (system trust roots, plus ?cacertfile= for a private CA)"
                ))
            }
            _ => return Error::Backend(message),
        };
        match amqp.get_id() {
            // ACCESS_REFUSED: bad credentials at login, or no permission on the vhost.
            403 => Error::Config(format!(
                "{message}; check the credentials in the bus URL and the user's permissions on virtual host `{}`",
                target.uri.vhost
            )),
            // NOT_ALLOWED / INVALID_PATH: no such virtual host.
            530 | 402 => Error::Config(format!("{message}; check the virtual host `{}`", target.uri.vhost)),
            // PRECONDITION_FAILED: the exchange exists with another type or durability.
            406 => Error::Config(format!(
                "{message}; exchange `{}` exists with other settings; choose another with ?exchange=",
                target.exchange
            )),
            _ => Error::Backend(message),
        }
    }
}

/// The PEM text of a `cacertfile`, or why it cannot be used.
async fn read_ca_file(path: &str) -> Result<String, String> {
    let pem = tokio::fs::read_to_string(path).await.map_err(|e| format!("cannot be read: {e}"))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("holds no PEM certificate".into());
    }
    Ok(pem)
}

/// Opens a connection, declares the exchange, and starts consuming the reply queue.
async fn open_live(
    target: &Target,
    ca_pem: Option<&str>,
    replies: &Arc<Replies>,
) -> Result<(Arc<Live>, BoxStream<'static, Event>), OpenFailure> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current())
        .with_connection_name(CLIENT_NAME.into());
    let tls = OwnedTLSConfig { identity: None, cert_chain: ca_pem.map(str::to_owned) };
    let connection = Connection::connect_uri_with_config(target.uri.clone(), properties, tls)
        .await
        .map_err(OpenFailure::at("connect and log in"))?;
    // Listen before anything else can fail: lapin drops events nobody listens to.
    let events = connection.events_listener().boxed();

    let publisher = connection.create_channel().await.map_err(OpenFailure::at("open channel"))?;
    let options = ExchangeDeclareOptions { durable: false, auto_delete: false, ..ExchangeDeclareOptions::default() };
    publisher
        .exchange_declare(&target.exchange, ExchangeKind::Topic, options, FieldTable::default())
        .await
        .map_err(OpenFailure::at("declare exchange"))?;

    let requester = connection.create_channel().await.map_err(OpenFailure::at("open channel"))?;
    requester.confirm_select(ConfirmSelectOptions::default()).await.map_err(OpenFailure::at("confirm mode"))?;

    let inbox = Spec {
        pattern: format!("{}.*", replies.inbox),
        binding: format!("{}.*", replies.inbox),
        filter: false,
        group_queue: None,
    };
    let (channel, consumer) =
        consume_once(&connection, &target.exchange, &inbox).await.map_err(OpenFailure::at("reply queue"))?;
    tokio::spawn(route_replies(replies.clone(), channel, consumer));

    Ok((Arc::new(Live { connection, publisher, requester }), events))
}

/// Watches the connection and replaces it when it is lost, until the bus is dropped.
async fn supervise(core: Arc<Core>, mut events: BoxStream<'static, Event>, mut shutdown: watch::Receiver<()>) {
    let broker = core.target.display.clone();
    loop {
        let Some(live) = core.live.borrow().clone() else { return };
        let reason = tokio::select! {
            _ = shutdown.changed() => {
                close(&live, "bus dropped").await;
                return;
            }
            reason = failure(&live, &mut events) => reason,
        };
        core.live.send_replace(None);
        tracing::warn!(broker = %broker, reason = %reason, "amqp connection lost; reconnecting (bus messages are dropped meanwhile)");
        // Ends every consumer of the old connection, so its subscriptions move to the new one.
        close(&live, "reconnecting").await;
        drop(live);

        let mut attempt = 1;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(reconnect_delay(attempt, MAX_RECONNECT_DELAY)) => {}
            }
            let opening = open_live(&core.target, core.ca_pem.as_deref(), &core.replies);
            match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
                Ok(Ok((live, new_events))) => {
                    events = new_events;
                    core.live.send_replace(Some(live));
                    tracing::info!(broker = %broker, attempt, "amqp connection re-established");
                    break;
                }
                Ok(Err(failure)) => {
                    let error = failure.into_error(&core.target);
                    tracing::warn!(broker = %broker, attempt, error = %error, "amqp reconnect attempt failed");
                }
                Err(_) => tracing::warn!(broker = %broker, attempt, "amqp reconnect attempt timed out"),
            }
            attempt += 1;
        }
    }
}

/// Waits until `live` fails: an error lapin reports, or a closed connection or channel.
async fn failure(live: &Live, events: &mut BoxStream<'static, Event>) -> String {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(err)) => return err.to_string(),
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(reason = %reason, "amqp broker blocked publishing (resource alarm)");
                }
                Some(Event::ConnectionUnblocked) => tracing::info!("amqp broker unblocked publishing"),
                Some(_) => {}
                None => return "connection closed".into(),
            },
            _ = tick.tick() => {
                if let Some(reason) = live.broken() {
                    return reason;
                }
            }
        }
    }
}

async fn close(live: &Live, why: &str) {
    if live.connection.status().connected() {
        // Best effort: the broker cleans up after a connection that just goes away, too.
        let _ = tokio::time::timeout(Duration::from_secs(1), live.connection.close(200, why)).await;
    }
}

/// Declares a subscription's queue, binds it and consumes from it on `live`.
async fn consume(live: &Live, exchange: &str, spec: &Spec) -> Result<(Channel, Consumer), lapin::Error> {
    // A group's auto-delete queue vanishes when its last member leaves, which can happen
    // between a new member's declare and consume (NOT_FOUND, closing that channel): try again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match consume_once(&live.connection, exchange, spec).await {
            Err(err) if attempt < 3 && spec.group_queue.is_some() && is_not_found(&err) => continue,
            result => return result,
        }
    }
}

fn is_not_found(err: &lapin::Error) -> bool {
    matches!(err.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

async fn consume_once(
    connection: &Connection,
    exchange: &str,
    spec: &Spec,
) -> Result<(Channel, Consumer), lapin::Error> {
    let channel = connection.create_channel().await?;
    let queue = match &spec.group_queue {
        None => {
            let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
            channel.queue_declare("", options, FieldTable::default()).await?.name().clone()
        }
        Some(name) => {
            let options = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
            let mut arguments = FieldTable::default();
            let expiry = i64::try_from(GROUP_QUEUE_EXPIRY.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-expires".into(), AMQPValue::LongLongInt(expiry));
            channel.queue_declare(name, options, arguments).await?;
            ShortString::from(name.as_str())
        }
    };
    channel
        .queue_bind(queue.as_str(), exchange, &spec.binding, QueueBindOptions::default(), FieldTable::default())
        .await?;
    let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
    let consumer = channel.basic_consume(queue.as_str(), "", options, FieldTable::default()).await?;
    Ok((channel, consumer))
}

/// A subscription's end of its bounded buffer.
struct Sink {
    tx: mpsc::Sender<Arc<Message>>,
    dropped: Arc<AtomicU64>,
}

/// Why a subscription stopped consuming.
enum Stopped {
    /// The subscription or the bus is gone: the task ends.
    Done,
    /// The consumer ended (connection lost, queue deleted): consume again.
    Lost,
}

/// Feeds one subscription for its whole life: consumes, and consumes again after every
/// loss, until the subscription or the bus is dropped.
async fn run_subscription(
    core: Arc<Core>,
    spec: Arc<Spec>,
    mut consuming: Option<(Channel, Consumer)>,
    sink: Sink,
    mut shutdown: watch::Receiver<()>,
) {
    let mut live_rx = core.live.subscribe();
    let mut failures = 0;
    loop {
        if let Some((channel, consumer)) = consuming.take() {
            match forward(consumer, &spec, &sink, &mut shutdown).await {
                Stopped::Done => return,
                Stopped::Lost => tracing::debug!(pattern = %spec.pattern, "amqp consumer ended; consuming again"),
            }
            drop(channel);
        }
        if failures > 0 {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(reconnect_delay(failures + 1, MAX_RECONNECT_DELAY)) => {}
            }
        }
        // Wait for a connection that is up.
        let live = loop {
            let current = live_rx.borrow_and_update().clone();
            if let Some(live) = current.filter(|live| live.is_up()) {
                break live;
            }
            tokio::select! {
                changed = live_rx.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        };
        if sink.tx.is_closed() {
            return;
        }
        match consume(&live, &core.target.exchange, &spec).await {
            Ok(opened) => {
                failures = 0;
                consuming = Some(opened);
            }
            Err(err) => {
                failures += 1;
                // Expected while a lost connection is being replaced; worth a warning only
                // when the connection itself is fine.
                if live.is_up() {
                    tracing::warn!(pattern = %spec.pattern, error = %err, "amqp subscription could not consume; retrying");
                }
            }
        }
    }
}

/// Moves deliveries from one consumer into the subscription's bounded buffer. Never waits
/// on a full buffer: the message is dropped and counted, as in the in-process bus.
async fn forward(mut consumer: Consumer, spec: &Spec, sink: &Sink, shutdown: &mut watch::Receiver<()>) -> Stopped {
    loop {
        let next = tokio::select! {
            biased;
            next = consumer.next() => next,
            _ = shutdown.changed() => return Stopped::Done,
            _ = sink.tx.closed() => return Stopped::Done,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => {
                tracing::debug!(pattern = %spec.pattern, error = %err, "amqp consumer failed");
                return Stopped::Lost;
            }
            None => return Stopped::Lost,
        };
        let subject = delivery.routing_key.as_str();
        if spec.filter && !subjects::matches(&spec.pattern, subject) {
            continue;
        }
        let message = Message {
            subject: subject.to_owned(),
            reply: delivery.properties.reply_to().as_ref().map(|reply| reply.as_str().to_owned()),
            payload: Bytes::from(delivery.data),
        };
        match sink.tx.try_send(Arc::new(message)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Log once per subscription: a line per drop would be its own outage.
                if sink.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        pattern = %spec.pattern,
                        capacity = sink.tx.max_capacity(),
                        "bus subscriber is full; dropping its messages"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => return Stopped::Done,
        }
    }
}

/// Hands each reply on this connection's inbox queue to the request waiting for it.
async fn route_replies(replies: Arc<Replies>, _channel: Channel, mut consumer: Consumer) {
    while let Some(Ok(delivery)) = consumer.next().await {
        let subject = delivery.routing_key.as_str();
        let Some(id) = subject.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok()) else { continue };
        let Some(waiting) = replies.take(id) else { continue };
        let _ = waiting.send(Message {
            subject: subject.to_owned(),
            reply: delivery.properties.reply_to().as_ref().map(|reply| reply.as_str().to_owned()),
            payload: Bytes::from(delivery.data),
        });
    }
}

impl Replies {
    /// A fresh reply subject and the receiver of its reply; the returned guard forgets the
    /// request when the caller stops waiting.
    fn register(self: &Arc<Self>) -> (String, oneshot::Receiver<Message>, PendingGuard) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (format!("{}.{id}", self.inbox), rx, PendingGuard { replies: self.clone(), id })
    }

    fn take(&self, id: u64) -> Option<oneshot::Sender<Message>> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Message>>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct PendingGuard {
    replies: Arc<Replies>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.replies.take(self.id);
    }
}

/// Where the broker put a request.
enum Routed {
    /// At least one queue took it.
    Queued,
    /// No queue is bound for its subject: nobody can answer.
    Unroutable,
}

/// Publishes a request `mandatory` and waits for the broker's confirm, which carries the
/// message back if no queue took it.
async fn publish_request(
    requester: Channel,
    exchange: String,
    subject: String,
    payload: Bytes,
    reply: String,
) -> Result<Routed, String> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let properties = BasicProperties::default().with_reply_to(reply.into());
    let confirm =
        requester.basic_publish(&exchange, &subject, options, &payload, properties).await.map_err(|e| e.to_string())?;
    match confirm.await.map_err(|e| e.to_string())? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(Routed::Queued),
        Confirmation::Ack(Some(_)) => Ok(Routed::Unroutable),
        Confirmation::Nack(_) => Err("the broker refused the request (nack)".into()),
    }
}

#[async_trait::async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        validate_subject(subject)?;
        check_key_len(subject)?;
        let core = &self.shared.core;
        let live = core.publishable()?;
        let sent = live
            .publisher
            .basic_publish(
                &core.target.exchange,
                subject,
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await;
        // Not in confirm mode: this resolves at once, and awaiting it spares lapin from
        // keeping the dropped confirmation around.
        let sent = match sent {
            Ok(confirm) => confirm.await.map(drop),
            Err(err) => Err(err),
        };
        sent.map_err(|err| {
            Error::Backend(format!("publish to `{subject}` on AMQP broker {}: {err}", core.target.display))
        })
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        self.subscribe_as(pattern, None).await
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription> {
        self.subscribe_as(pattern, Some(group)).await
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        validate_subject(subject)?;
        check_key_len(subject)?;
        let core = &self.shared.core;
        let live = core.publishable()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let (reply, answer, _pending) = core.replies.register();
        // Its own task, so a caller that gives up cannot leave lapin holding an unread confirm.
        let published = tokio::spawn(publish_request(
            live.requester.clone(),
            core.target.exchange.clone(),
            subject.to_owned(),
            payload,
            reply,
        ));
        match tokio::time::timeout_at(deadline, published).await {
            Err(_) => return Err(Error::Timeout),
            Ok(Err(join)) => return Err(Error::Backend(format!("request to `{subject}`: {join}"))),
            Ok(Ok(Ok(Routed::Unroutable))) => return Err(Error::NoResponders(subject.to_owned())),
            Ok(Ok(Err(why))) => {
                return Err(Error::Backend(format!(
                    "request to `{subject}` on AMQP broker {}: {why}",
                    core.target.display
                )))
            }
            Ok(Ok(Ok(Routed::Queued))) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(message)) => Ok(message),
            // The reply route is gone: the connection was lost while waiting.
            Ok(Err(_)) => Err(Error::Backend(format!("lost the connection to AMQP broker {}", core.target.display))),
            Err(_) => Err(Error::Timeout),
        }
    }

    async fn respond(&self, msg: &Message, payload: Bytes) -> Result<()> {
        self.publish(msg.reply_subject()?, payload).await
    }
}
