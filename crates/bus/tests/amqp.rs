//! Runs the bus conformance suite against a real AMQP broker (RabbitMQ), plus the AMQP
//! backend's own checks: failing fast and clearly at connect, NATS wildcard semantics on a
//! topic exchange, and surviving a lost connection.
//!
//! `SMITH_TEST_AMQP_URL` names a shared broker (CI: `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! tests that need it skip with a printed reason when it is unset. Losing the connection is
//! simulated with a TCP proxy of our own between the bus and the broker (cut and restored at
//! will, without disturbing the tests that share the broker), and with the broker closing the
//! proxied connection itself through `rabbitmqctl` where the broker runs on this machine.
//! `amqps://` is checked through `socat` terminating TLS in front of the broker, with a
//! certificate `openssl` makes; each of these tests skips with a printed reason when its tool
//! is missing.
#![cfg(feature = "amqp")]

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use smith_bus::amqp::AmqpBus;
use smith_bus::conformance::{fails_fast_while_down, publish_until_heard, round_trip, unique};
use smith_bus::{Bus, Error, Subscription};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const URL_VAR: &str = "SMITH_TEST_AMQP_URL";
const RABBITMQCTL: &str = "/usr/sbin/rabbitmqctl";
const OPENSSL: &str = "/usr/bin/openssl";
const SOCAT: &str = "/usr/bin/socat";

mod conformance {
    smith_bus::bus_conformance!(networked, skip_unless_env = "SMITH_TEST_AMQP_URL");
}

/// The same contract through a namespace and the metrics wrapper: replies travel on the
/// bus's own inbox subjects, outside the namespace.
mod namespaced {
    smith_bus::bus_conformance!(skip_unless_env = "SMITH_TEST_AMQP_URL", async {
        smith_bus::instrument(smith_bus::conformance::open_env(super::URL_VAR, "namespace=amqptest").await)
    });
}

/// The shared broker's URL, or `None` after printing why the test is skipped.
fn shared_url() -> Option<String> {
    let url = std::env::var(URL_VAR).ok();
    if url.is_none() {
        println!("skipped: {URL_VAR} not set");
    }
    url
}

fn with_query(url: &str, option: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{option}")
}

/// The parts of `amqp://user:password@host:port/vhost?query`: (user, host:port, "/vhost?query").
fn split(url: &str) -> (String, String, String) {
    let rest = url.strip_prefix("amqp://").expect("an amqp:// URL");
    let (userinfo, rest) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    let user = userinfo.split(':').next().unwrap().to_owned();
    let (host_port, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (user, host_port.to_owned(), path.to_owned())
}

async fn connect(url: &str) -> AmqpBus {
    match AmqpBus::connect(url).await {
        Ok(bus) => bus,
        Err(e) => panic!("cannot connect to {url}: {e}"),
    }
}

async fn next(sub: &mut Subscription, what: &str) -> Bytes {
    match tokio::time::timeout(Duration::from_secs(2), sub.recv()).await {
        Ok(Some(message)) => message.payload,
        Ok(None) => panic!("{what}: subscription closed"),
        Err(_) => panic!("{what}: nothing arrived"),
    }
}

/// Receives until `marker`, returning what came before it (one publisher's messages arrive
/// in order, so whatever was published before the marker and is missing was not delivered).
async fn until_marker(sub: &mut Subscription, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let payload = String::from_utf8(next(sub, what).await.to_vec()).unwrap();
        if payload == "marker" {
            return seen;
        }
        seen.push(payload);
    }
}

/// Bad URLs, closed ports, silent servers, wrong credentials and unknown virtual hosts give
/// one clear error, quickly, that never shows the password.
#[tokio::test]
async fn connect_fails_fast_and_clearly() {
    // A port that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent_url = format!("amqp://user:s3cret@127.0.0.1:{}/%2f", silent.local_addr().unwrap().port());
    // A port nobody listens on.
    let closed_port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let closed_url = format!("amqp://user:s3cret@127.0.0.1:{closed_port}/%2f");

    // (url, config error rather than unavailable, words the message must contain)
    let mut cases: Vec<(String, bool, Vec<String>)> = vec![
        ("amqp://127.0.0.1:notaport".into(), true, vec!["invalid port".into()]),
        ("amqp://u:s3cret@127.0.0.1:5672/a/b".into(), true, vec!["%2f".into(), "***@".into()]),
        ("amqp://127.0.0.1?capacity=0".into(), true, vec!["capacity".into()]),
        (closed_url, false, vec!["cannot connect".into(), format!("127.0.0.1:{closed_port}")]),
        (silent_url, false, vec!["no answer".into()]),
    ];
    if let Ok(url) = std::env::var(URL_VAR) {
        let (user, host_port, path) = split(&url);
        let query = path.split_once('?').map_or("", |(_, query)| query);
        cases.push((
            format!("amqp://{user}:wr0ng-s3cret@{host_port}{path}"),
            true,
            vec!["credentials".into(), "ACCESS_REFUSED".into(), host_port.clone()],
        ));
        cases.push((
            format!("amqp://{}@{host_port}/no-such-vhost-{:08x}?{query}", userinfo_of(&url), fastrand::u32(..)),
            true,
            vec!["virtual host".into(), "no-such-vhost".into()],
        ));
    } else {
        println!("{URL_VAR} not set: not checking credentials and virtual hosts");
    }
    for (url, config, words) in &cases {
        smith_bus::conformance::open_fails_fast_and_clearly(url, *config, words).await;
    }
}

/// `user:password` of a URL, as written.
fn userinfo_of(url: &str) -> String {
    let rest = url.strip_prefix("amqp://").unwrap();
    rest.rsplit_once('@').map_or("guest:guest", |(userinfo, _)| userinfo).to_owned()
}

/// An exchange that exists with another type is a configuration error naming it.
#[tokio::test]
async fn exchange_of_another_type_is_rejected() {
    let Some(url) = shared_url() else { return };
    let name = format!("smith-test-direct-{:08x}", fastrand::u32(..));
    // Declare it as a `direct` exchange with lapin itself, auto-deleted once unbound.
    let uri = url.split('?').next().unwrap();
    let connection = lapin::Connection::connect(
        uri,
        lapin::ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current()),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let options = lapin::options::ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    channel
        .exchange_declare(&name, lapin::ExchangeKind::Direct, options, lapin::types::FieldTable::default())
        .await
        .unwrap();

    let err = AmqpBus::connect(&with_query(&url, &format!("exchange={name}"))).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&name) && text.contains("?exchange="), "{text}");
    channel.exchange_delete(&name, Default::default()).await.unwrap();
    connection.close(200, "done").await.unwrap();
}

/// NATS wildcards keep their exact meaning on a topic exchange, where `#` (our `>`) also
/// matches zero words and a `#` token would be a wildcard.
#[tokio::test]
async fn nats_wildcards_on_a_topic_exchange() {
    let Some(url) = shared_url() else { return };
    let bus = connect(&url).await;
    let p = unique("wild");
    // (pattern, subjects published in order: the marker last, payload = subject)
    let cases: [(String, Vec<String>, Vec<&str>); 5] = [
        // `a.>` must not match `a`, which `a.#` does.
        (format!("{p}.a.>"), vec![format!("{p}.a"), format!("{p}.a.b"), format!("{p}.a.b.c")], vec!["a.b", "a.b.c"]),
        // `*` is one token, never zero or two.
        (format!("{p}.*.x"), vec![format!("{p}.x"), format!("{p}.a.x"), format!("{p}.a.b.x")], vec!["a.x"]),
        // `*.>` needs at least two tokens.
        (format!("{p}.b.*.>"), vec![format!("{p}.b.a"), format!("{p}.b.a.b")], vec!["b.a.b"]),
        // A `#` token is a literal to NATS.
        (format!("{p}.c.#"), vec![format!("{p}.c.x"), format!("{p}.c"), format!("{p}.c.#")], vec!["c.#"]),
        // A literal pattern matches only itself.
        (format!("{p}.d"), vec![format!("{p}.d.e"), format!("{p}.d")], vec!["d"]),
    ];
    for (pattern, subjects, expected) in cases {
        let mut plain = bus.subscribe(&pattern).await.unwrap();
        let mut member = bus.queue_subscribe(&pattern, "wild").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for subject in &subjects {
            let payload = subject.strip_prefix(&format!("{p}.")).unwrap().to_owned();
            bus.publish(subject, Bytes::from(payload)).await.unwrap();
        }
        // A subject every pattern here matches, published last.
        let marker = pattern.replace(['*', '>'], "m");
        bus.publish(&marker, Bytes::from_static(b"marker")).await.unwrap();
        assert_eq!(until_marker(&mut plain, &pattern).await, expected, "subscriber to {pattern}");
        assert_eq!(until_marker(&mut member, &pattern).await, expected, "queue group on {pattern}");
    }
}

/// Subjects longer than an AMQP routing key (255 bytes) are rejected, not truncated.
#[tokio::test]
async fn long_subjects_are_invalid() {
    let Some(url) = shared_url() else { return };
    let bus = connect(&url).await;
    let long = format!("a.{}", "b".repeat(300));
    assert!(matches!(bus.publish(&long, Bytes::new()).await, Err(Error::InvalidSubject(_))));
    assert!(matches!(bus.subscribe(&long).await, Err(Error::InvalidSubject(_))));
    let fits = format!("{}.{}", unique("long"), "b".repeat(200));
    let mut sub = bus.subscribe(&fits).await.unwrap();
    round_trip(&bus, &fits, &mut sub).await;
}

/// A TCP proxy to the broker whose connections can be cut, and refused until restored.
struct Proxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    up: bool,
    /// Each proxied connection's task and the local port of its leg to the broker.
    links: Vec<(JoinHandle<()>, u16)>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState { up: true, links: Vec::new() }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !shared.lock().unwrap().up {
                    continue; // dropped: the broker is "down"
                }
                let Ok(mut server) = TcpStream::connect(&upstream).await else { continue };
                let local_port = server.local_addr().unwrap().port();
                let link = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                shared.lock().unwrap().links.push((link, local_port));
            }
        });
        Proxy { port, state, accept }
    }

    fn url(&self, shared: &str) -> String {
        let (_, _, path) = split(shared);
        format!("amqp://{}@127.0.0.1:{}{path}", userinfo_of(shared), self.port)
    }

    /// Drops every proxied connection and refuses new ones: the broker is "gone".
    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.up = false;
        for (link, _) in state.links.drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }

    /// Local ports of the live connections to the broker.
    fn broker_side_ports(&self) -> Vec<u16> {
        let state = self.state.lock().unwrap();
        state.links.iter().filter(|(link, _)| !link.is_finished()).map(|&(_, port)| port).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A bus connected to the shared broker through a [`Proxy`], with a subscriber and a queue
/// group member on a fresh subject that have each heard one message.
struct Proxied {
    proxy: Proxy,
    bus: AmqpBus,
    subject: String,
    sub: Subscription,
    member: Subscription,
}

impl Proxied {
    /// Through a proxy to `upstream`, the `host:port` of the `shared` URL.
    async fn start(shared: &str, upstream: String, name: &str) -> Proxied {
        let proxy = Proxy::start(upstream).await;
        let bus = connect(&proxy.url(shared)).await;
        let subject = unique(name);
        let mut sub = bus.subscribe(&subject).await.unwrap();
        let mut member = bus.queue_subscribe(&subject, "workers").await.unwrap();
        round_trip(&bus, &subject, &mut sub).await;
        assert_eq!(next(&mut member, "member").await, "hello");
        Proxied { proxy, bus, subject, sub, member }
    }
}

/// Cut the connection, restore it: the same bus, subscription, queue group member and
/// requests carry on by themselves, and publishing while it is down fails fast.
#[tokio::test]
async fn survives_a_lost_connection() {
    let Some(shared) = shared_url() else { return };
    let (_, upstream, _) = split(&shared);
    let Proxied { proxy, bus, subject, mut sub, mut member } = Proxied::start(&shared, upstream, "lost").await;
    assert!(bus.is_connected());

    proxy.cut();
    expect_down(&bus, &subject).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    expect_back(&bus, &subject, &mut sub, &mut member).await;
}

/// The broker itself closes the connection (`rabbitmqctl close_connection`, as an operator
/// or a broker shutting down would): the bus reconnects at once and everything resumes.
#[tokio::test]
async fn survives_the_broker_closing_the_connection() {
    let Some(shared) = shared_url() else { return };
    let (_, upstream, _) = split(&shared);
    if !std::path::Path::new(RABBITMQCTL).exists() || !upstream.starts_with("127.0.0.1:") {
        println!("skipped: needs {RABBITMQCTL} and the broker on 127.0.0.1");
        return;
    }
    let Proxied { proxy, bus, subject, mut sub, mut member } = Proxied::start(&shared, upstream, "closed").await;

    // Only this bus's connection: the broker knows it by the proxy's port toward it.
    let ports = proxy.broker_side_ports();
    assert_eq!(ports.len(), 1, "one connection per bus");
    let listing = rabbitmqctl(&["list_connections", "-q", "--no-table-headers", "pid", "peer_port"]);
    let pid = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(_, port)| port.trim() == ports[0].to_string())
        .map(|(pid, _)| pid.trim().to_owned())
        .unwrap_or_else(|| panic!("connection from port {} not in {listing:?}", ports[0]));
    rabbitmqctl(&["close_connection", &pid, "smith bus test"]);

    // The broker is still there, so the bus is back at once: wait for its new connection
    // (the down window is too short to catch reliably) and check that everything resumed.
    let closed = Instant::now();
    loop {
        let now = proxy.broker_side_ports();
        if !now.is_empty() && !now.contains(&ports[0]) {
            break;
        }
        assert!(closed.elapsed() < Duration::from_secs(10), "no new connection 10 s after the close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("reconnected {:?} after the broker closed the connection", closed.elapsed());
    expect_back(&bus, &subject, &mut sub, &mut member).await;
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new(RABBITMQCTL).args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Once the bus has noticed the loss, publishing and requests fail at once.
async fn expect_down(bus: &AmqpBus, subject: &str) {
    fails_fast_while_down(bus, subject).await;
    assert!(!bus.is_connected());
}

/// After the broker is reachable again, the subscription and the group member receive again
/// and requests are answered.
async fn expect_back(bus: &AmqpBus, subject: &str, sub: &mut Subscription, member: &mut Subscription) {
    let restored = Instant::now();
    // Each subscription consumes again on its own, so publish until both have heard.
    for (what, sub) in [("subscriber", sub), ("queue group member", member)] {
        let (_, attempts) = publish_until_heard(bus, subject, sub, restored).await;
        println!("{what} heard again {:?} after the restore ({attempts} publishes)", restored.elapsed());
    }
    assert!(bus.is_connected());

    // Request/reply works on the new connection too.
    let service = unique("svc");
    let mut requests = bus.subscribe(&service).await.unwrap();
    let responder = bus.clone();
    let answer = tokio::spawn(async move {
        let request = requests.recv().await.unwrap();
        responder.respond(&request, Bytes::from_static(b"pong")).await.unwrap();
    });
    let reply = bus.request(&service, Bytes::from_static(b"ping"), Duration::from_secs(2)).await.unwrap();
    assert_eq!(reply.payload, "pong");
    answer.await.unwrap();
}

/// `amqps://` end to end: TLS (rustls) to a terminating proxy (`socat`) in front of the broker,
/// with a certificate from a private CA that is untrusted until `?cacertfile=` names it.
#[tokio::test]
async fn amqps_with_a_private_ca() {
    let Some(shared) = shared_url() else { return };
    for tool in [OPENSSL, SOCAT] {
        if !std::path::Path::new(tool).exists() {
            println!("skipped: {tool} is not installed");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("smith-amqps-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let extensions = "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
    smith_bus::conformance::make_certificates(OPENSSL, &dir, "rsa:2048", extensions).await;
    let leaf = std::fs::read_to_string(file("leaf.pem")).unwrap() + &std::fs::read_to_string(file("leaf.key")).unwrap();
    std::fs::write(file("leaf-and-key.pem"), leaf).unwrap();

    let (_, upstream, path) = split(&shared);
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let listen =
        format!("openssl-listen:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}", file("leaf-and-key.pem"));
    let _socat = tokio::process::Command::new(SOCAT)
        .args([listen, format!("tcp:{upstream}")])
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_err() {
        assert!(Instant::now() < deadline, "socat did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("amqps://{}@localhost:{port}{path}", userinfo_of(&shared));
    let err = AmqpBus::connect(&url).await.expect_err("an untrusted certificate was accepted");
    let text = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(text.contains("certificate") && text.contains("cacertfile"), "{text}");

    let bus = connect(&with_query(&url, &format!("cacertfile={}", file("ca.pem")))).await;
    let subject = unique("tls");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    round_trip(&bus, &subject, &mut sub).await;
    drop(bus);
    std::fs::remove_dir_all(&dir).unwrap();
}
