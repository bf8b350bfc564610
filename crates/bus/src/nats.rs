//! The NATS backend: the same subjects, queue groups and request/reply over a NATS server.
//!
//! # Why core NATS and not JetStream
//!
//! Every subject MisterSmith publishes (wake-ups, task events, cancels, system
//! announcements) goes over core NATS: at most once, nothing stored on the server. The
//! store is the truth and a bus message is only the fast path to it:
//!
//! - a wake-up (`smith.wake.<agent>`) only shortens the wait of workers that also poll
//!   the store for claimable work;
//! - a cancel (`smith.control.cancel`) only hurries along the durable cancel flag in the
//!   store, which a worker reads anyway each time it renews its lease;
//! - a live event (`smith.events.<agent>.<task>`) only tells an SSE stream to read the
//!   store, and a reconnecting stream replays from the store by event id.
//!
//! So no message has to survive a broker restart, and a message lost while the
//! connection is down delays its reader by at most one poll. JetStream would add
//! acknowledgements, storage and consumer state for a guarantee nobody relies on, and a
//! second source of truth that could disagree with the store.
//!
//! # What this backend does to keep that claim true
//!
//! - [`NatsBus::connect`] fails fast and visibly (bad URL, unreachable or silent server,
//!   wrong credentials) within [`CONNECT_TIMEOUT`]: a bus that never connected is a
//!   configuration problem the operator must see at start-up.
//! - Once connected it reconnects forever on its own, with jittered exponential backoff
//!   capped at [`MAX_RECONNECT_DELAY`], and resubscribes every live subscription, so a
//!   subscriber never has to notice a broker restart.
//! - While disconnected, [`Bus::publish`] and [`Bus::request`] fail at once with
//!   [`Error::Backend`] instead of queueing: a message that cannot be delivered now is
//!   not worth delivering late, and a caller must never stall on the fast path.
//! - Each subscription forwards into its own bounded buffer, exactly like
//!   [`crate::memory::MemoryBus`]: when full, messages are dropped for that subscriber
//!   alone and counted in [`Subscription::dropped`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::{PublishErrorKind, RequestErrorKind};
use async_nats::connection::State;
use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerAddr};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::memory::DEFAULT_CAPACITY;
use crate::remote::{capacity_option, percent_decode, query_options, reconnect_delay, redact, CLIENT_NAME};
use crate::subjects::{validate_group, validate_pattern, validate_subject};
use crate::{Bus, Message, Subscription};

pub use crate::remote::{CONNECT_TIMEOUT, MAX_RECONNECT_DELAY};

/// How often to ping an idle server; after three unanswered pings (about 30 s) the
/// connection counts as lost and is replaced, so a half-open socket does not linger.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// A bus on a NATS server. Cheap to clone; clones share one connection.
///
/// Subscriptions end (their `recv` returns `None`) once every clone is dropped.
#[derive(Clone)]
pub struct NatsBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    /// The server URL without credentials, for messages and logs.
    server: String,
    capacity: usize,
    /// Messages the connection may have lost (async-nats' own buffer overflowed, or the
    /// connection dropped): every subscription counts them as dropped, so its reader
    /// re-reads the store.
    lost: Arc<AtomicU64>,
    /// Never sent on; dropped with the last clone, which stops every forwarder.
    _shutdown: watch::Sender<()>,
    shutdown: watch::Receiver<()>,
}

/// What a bus URL says, credentials kept apart from the address.
struct Target {
    address: ServerAddr,
    /// `scheme://host:port` with any credentials hidden.
    display: String,
    auth: Auth,
    capacity: usize,
    /// `?cacertfile=`: PEM certificate authorities to trust instead of the system's; TLS is
    /// then required.
    ca_file: Option<PathBuf>,
}

enum Auth {
    None,
    Token(String),
    UserPassword(String, String),
}

impl NatsBus {
    /// Connects to the server named by `url`: `nats://[user:password@]host[:port]`,
    /// `nats://token@host[:port]`, or `tls://…` for TLS (system trust roots). The port
    /// defaults to 4222; `?capacity=N` sets the per-subscriber buffer (default
    /// [`DEFAULT_CAPACITY`]); `?cacertfile=PATH` names a PEM file of certificate authorities
    /// (a private CA) to trust instead of the system's, and makes TLS required even with
    /// `nats://` (a server that does not offer it is refused, not spoken to in plain text).
    ///
    /// Fails within about [`CONNECT_TIMEOUT`]: [`Error::Config`] for a malformed URL,
    /// rejected credentials or a TLS mismatch, [`Error::Backend`] for a server that is
    /// unreachable or does not answer. Once connected, the bus reconnects by itself.
    pub async fn connect(url: &str) -> Result<NatsBus> {
        let target = parse_url(url)?;
        let server = target.display.clone();
        if let Some(path) = &target.ca_file {
            check_ca_file(path).await.map_err(|why| {
                Error::Config(format!("bus URL for NATS server {server}: cacertfile `{}` {why}", path.display()))
            })?;
        }
        let lost = Arc::new(AtomicU64::new(0));
        let mut options = connect_options(&server, target.auth, target.capacity, lost.clone());
        if let Some(path) = target.ca_file {
            options = options.add_root_certificates(path).require_tls(true);
        }

        // async-nats bounds only the TCP connect by `connection_timeout`; this bounds the
        // handshake too, so a port that accepts and never speaks NATS fails as well.
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, options.connect(target.address)).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => return Err(connect_error(&server, &err)),
            Err(_) => {
                return Err(Error::Backend(format!(
                    "no answer from NATS server {server} within {CONNECT_TIMEOUT:?}; is it a NATS server?"
                )))
            }
        };
        tracing::info!(server = %server, "bus connected to nats");
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        Ok(NatsBus {
            shared: Arc::new(Shared {
                client,
                server,
                capacity: target.capacity,
                lost,
                _shutdown: shutdown_tx,
                shutdown: shutdown_rx,
            }),
        })
    }

    /// Whether the connection is up right now (it may be reconnecting); for health checks.
    pub fn is_connected(&self) -> bool {
        self.shared.client.connection_state() == State::Connected
    }

    /// Fails fast while reconnecting: see the module docs for why nothing is queued.
    fn ensure_connected(&self) -> Result<()> {
        if self.is_connected() {
            return Ok(());
        }
        Err(Error::Backend(format!("not connected to NATS server {}; reconnecting", self.shared.server)))
    }

    /// Wraps an async-nats subscriber in a [`Subscription`] with its own bounded buffer.
    fn forward(&self, pattern: &str, subscriber: async_nats::Subscriber) -> Subscription {
        let (tx, rx) = mpsc::channel(self.shared.capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counts = Counts { dropped: dropped.clone(), lost: self.shared.lost.clone() };
        let task = tokio::spawn(forward(subscriber, tx, counts, pattern.to_owned(), self.shared.shutdown.clone()));
        let abort = task.abort_handle();
        // Aborting drops the async-nats subscriber, which unsubscribes on the server.
        Subscription::new(rx, dropped, Box::new(move || abort.abort()))
    }
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus")
            .field("server", &self.shared.server)
            .field("capacity", &self.shared.capacity)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// Moves messages from one async-nats subscriber into its bounded buffer until the
/// subscription or the bus is dropped. Never waits on a full buffer: the message is
/// dropped and counted, as in the in-process bus.
struct Counts {
    /// This subscription's drops.
    dropped: Arc<AtomicU64>,
    /// The connection's possible losses ([`Shared::lost`]).
    lost: Arc<AtomicU64>,
}

async fn forward(
    mut subscriber: async_nats::Subscriber,
    tx: mpsc::Sender<Arc<Message>>,
    counts: Counts,
    pattern: String,
    mut shutdown: watch::Receiver<()>,
) {
    let Counts { dropped, lost } = counts;
    let mut lost_seen = lost.load(Ordering::Relaxed);
    loop {
        let next = tokio::select! {
            biased;
            next = subscriber.next() => next,
            _ = shutdown.changed() => return,
        };
        // `None`: the connection is closed for good (the client was dropped).
        let Some(message) = next else { return };
        let lost_now = lost.load(Ordering::Relaxed);
        if lost_now != lost_seen {
            dropped.fetch_add(lost_now - lost_seen, Ordering::Relaxed);
            lost_seen = lost_now;
        }
        let message = Message {
            subject: message.subject.into_string(),
            payload: message.payload,
            reply: message.reply.map(|reply| reply.into_string()),
        };
        match tx.try_send(Arc::new(message)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Log once per subscription: a line per drop would be its own outage.
                if dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        pattern = %pattern,
                        capacity = tx.max_capacity(),
                        "bus subscriber is full; dropping its messages"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

/// Whether a `cacertfile` can be used: readable and holding a PEM certificate.
async fn check_ca_file(path: &Path) -> std::result::Result<(), String> {
    let pem = tokio::fs::read_to_string(path).await.map_err(|e| format!("cannot be read: {e}"))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

fn connect_options(server: &str, auth: Auth, capacity: usize, lost: Arc<AtomicU64>) -> ConnectOptions {
    let events_server = server.to_owned();
    // `retry_on_initial_connect` stays off (the default): a server that is down at
    // start-up must be an error the operator sees, not a silent retry loop.
    let options = ConnectOptions::new()
        .name(CLIENT_NAME)
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| reconnect_delay(attempt, MAX_RECONNECT_DELAY))
        .ping_interval(PING_INTERVAL)
        // the client's own buffer per subscription, ahead of ours: as deep as ours
        .subscription_capacity(capacity)
        .event_callback(move |event| {
            let (server, lost) = (events_server.clone(), lost.clone());
            async move { log_event(&server, event, &lost) }
        });
    match auth {
        Auth::None => options,
        Auth::Token(token) => options.token(token),
        Auth::UserPassword(user, password) => options.user_and_password(user, password),
    }
}

fn log_event(server: &str, event: Event, lost: &AtomicU64) {
    match event {
        Event::Connected => tracing::info!(server, "nats connection (re)established"),
        Event::Disconnected => {
            lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(server, "nats connection lost; reconnecting (bus messages are dropped meanwhile)")
        }
        Event::ClientError(err) => tracing::warn!(server, error = %err, "nats reconnect attempt failed"),
        Event::ServerError(err) => tracing::warn!(server, error = %err, "nats server reported an error"),
        Event::SlowConsumer(sid) => {
            // one line at the 1st, 2nd, 4th, 8th… loss: a line per lost message would be an
            // outage of its own
            let n = lost.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(server, sid, lost = n, "nats client buffer full; a subscriber lost messages");
            }
        }
        Event::LameDuckMode => tracing::warn!(server, "nats server is shutting down (lame duck mode)"),
        Event::Draining => tracing::info!(server, "nats connection draining"),
        Event::Closed => tracing::info!(server, "nats connection closed"),
    }
}

fn connect_error(server: &str, err: &async_nats::ConnectError) -> Error {
    let message = format!("cannot connect to NATS server {server}: {err}");
    match err.kind() {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            Error::Config(format!("{message}; check the credentials in the bus URL"))
        }
        ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => Error::Config(message),
        // rustls's verdict on the server's certificate, wrapped in an I/O error
        ConnectErrorKind::Io if message.contains("certificate") => Error::Config(format!(
            "{message}; the server's TLS certificate is not trusted for this host name \
             (system trust roots, or ?cacertfile= for a private CA)"
        )),
        // rustls got something that is not TLS back
        ConnectErrorKind::Io if message.contains("corrupt message") => {
            Error::Config(format!("{message}; the server does not speak TLS, which tls:// and ?cacertfile= require"))
        }
        ConnectErrorKind::Dns | ConnectErrorKind::TimedOut | ConnectErrorKind::Io | ConnectErrorKind::MaxReconnects => {
            Error::Backend(message)
        }
    }
}

/// Splits a `nats://` or `tls://` URL into address, credentials and bus options.
fn parse_url(url: &str) -> Result<Target> {
    let shown = redact(url);
    let bad = |why: String| Error::Config(format!("bus URL `{shown}`: {why}"));
    let (address, query) = url.split_once('?').unwrap_or((url, ""));

    let mut capacity = DEFAULT_CAPACITY;
    let mut ca_file = None;
    for (key, value) in query_options(query) {
        match key {
            "capacity" => capacity = capacity_option(value).map_err(&bad)?,
            "cacertfile" => {
                let path = percent_decode(value).ok_or_else(|| bad("cacertfile is not valid UTF-8".into()))?;
                if path.is_empty() {
                    return Err(bad("cacertfile needs a path".into()));
                }
                ca_file = Some(PathBuf::from(path));
            }
            other => return Err(bad(format!("unknown option `{other}`; supported: capacity, cacertfile"))),
        }
    }

    if !address.starts_with("nats://") && !address.starts_with("tls://") {
        return Err(bad("the NATS backend takes nats:// or tls:// URLs".into()));
    }
    let parsed: ServerAddr = address.parse().map_err(|e: std::io::Error| bad(e.to_string()))?;
    if parsed.host().is_empty() {
        return Err(bad("no host".into()));
    }
    let auth = match (parsed.username(), parsed.password()) {
        (None, _) => Auth::None,
        (Some(token), None) => {
            Auth::Token(percent_decode(token).ok_or_else(|| bad("token is not valid UTF-8".into()))?)
        }
        (Some(user), Some(password)) => {
            let user = percent_decode(user).ok_or_else(|| bad("user is not valid UTF-8".into()))?;
            let password = percent_decode(password).ok_or_else(|| bad("password is not valid UTF-8".into()))?;
            Auth::UserPassword(user, password)
        }
    };
    let mut bare = parsed.into_inner();
    if !matches!(bare.path(), "" | "/") || bare.fragment().is_some() {
        return Err(bad("a NATS URL has no path; expected scheme://[credentials@]host[:port]".into()));
    }
    // async-nats ignores URL credentials (they go in `ConnectOptions`) but would log them.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let address = ServerAddr::from_url(bare).map_err(|e| bad(e.to_string()))?;
    let display = format!("{}://{}:{}", address.scheme(), address.host(), address.port());
    Ok(Target { address, display, auth, capacity, ca_file })
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        validate_subject(subject)?;
        self.ensure_connected()?;
        match self.shared.client.publish(subject.to_owned(), payload).await {
            Ok(()) => Ok(()),
            Err(err) => match err.kind() {
                PublishErrorKind::Send => Err(Error::Closed),
                PublishErrorKind::BadSubject => Err(Error::InvalidSubject(format!("`{subject}`: {err}"))),
                PublishErrorKind::MaxPayloadExceeded => Err(Error::Backend(format!("publish to `{subject}`: {err}"))),
            },
        }
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        validate_pattern(pattern)?;
        // Not `ensure_connected`: a subscription made while reconnecting is sent to the
        // server once the connection is back, which is what a starting worker wants.
        let subscriber = self.shared.client.subscribe(pattern.to_owned()).await.map_err(|_| Error::Closed)?;
        Ok(self.forward(pattern, subscriber))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription> {
        validate_pattern(pattern)?;
        validate_group(group)?;
        let subscriber = self
            .shared
            .client
            .queue_subscribe(pattern.to_owned(), group.to_owned())
            .await
            .map_err(|_| Error::Closed)?;
        Ok(self.forward(pattern, subscriber))
    }

    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        validate_subject(subject)?;
        self.ensure_connected()?;
        let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        // async-nats times only the wait for the reply; this also bounds handing it over.
        let sent = tokio::time::timeout(timeout, self.shared.client.send_request(subject.to_owned(), request));
        match sent.await {
            Ok(Ok(reply)) => Ok(Message {
                subject: reply.subject.into_string(),
                payload: reply.payload,
                reply: reply.reply.map(|reply| reply.into_string()),
            }),
            Ok(Err(err)) => match err.kind() {
                RequestErrorKind::NoResponders => Err(Error::NoResponders(subject.to_owned())),
                RequestErrorKind::TimedOut => Err(Error::Timeout),
                RequestErrorKind::Other => Err(Error::Backend(format!("request to `{subject}`: {err}"))),
            },
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

    #[test]
    fn urls() {
        let target = parse_url("nats://127.0.0.1").unwrap();
        assert_eq!(target.display, "nats://127.0.0.1:4222");
        assert!(matches!(target.auth, Auth::None));
        assert_eq!(target.capacity, DEFAULT_CAPACITY);

        let target = parse_url("nats://al%40ice:p%3Ass@localhost:4333/?capacity=8").unwrap();
        assert_eq!(target.display, "nats://localhost:4333");
        assert!(
            matches!(&target.auth, Auth::UserPassword(u, p) if u == "al@ice" && p == "p:ss"),
            "user and password are decoded"
        );
        assert_eq!(target.capacity, 8);
        assert_eq!(target.address.username(), None, "credentials are not passed on in the address");

        let target = parse_url("tls://s3cret@nats.example:7422").unwrap();
        assert_eq!(target.display, "tls://nats.example:7422");
        assert!(matches!(&target.auth, Auth::Token(t) if t == "s3cret"));
        assert!(target.address.tls_required());
        assert_eq!(target.ca_file, None);

        let target = parse_url("nats://h?cacertfile=/etc/ssl/my%20ca.pem&capacity=3").unwrap();
        assert_eq!(target.ca_file.as_deref(), Some(Path::new("/etc/ssl/my ca.pem")));
        assert_eq!(target.capacity, 3);
    }

    #[test]
    fn bad_urls() {
        // (url, words the message must contain)
        let cases: &[(&str, &[&str])] = &[
            ("nats://host:port", &["invalid port"]),
            ("nats://host:99999", &["invalid port"]),
            ("nats://", &["no host"]),
            ("nats://host/path", &["no path"]),
            ("nats://host?capacity=0", &["capacity"]),
            ("nats://host?capacity=lots", &["capacity"]),
            ("nats://host?size=3", &["`size`", "cacertfile"]),
            ("tls://host?cacertfile=", &["cacertfile needs a path"]),
            ("http://host", &["nats://", "tls://"]),
            ("nats://user:s3cret@host:port", &["***@host:port"]),
        ];
        for &(url, words) in cases {
            crate::conformance::assert_config_error(url, parse_url(url), words);
        }
    }
}
