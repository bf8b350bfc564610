//! Runs the bus conformance suite against a real NATS server, plus the NATS backend's own
//! checks: failing fast at connect, credentials, surviving a server restart.
//!
//! `SMITH_TEST_NATS_URL` names a shared server (CI: `nats://127.0.0.1:4222`); tests that
//! need it skip with a printed reason when it is unset. Tests that kill or configure a
//! server start a private `nats-server` on a free loopback port and skip only when the
//! binary is missing.
#![cfg(feature = "nats")]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smith_bus::conformance::{fails_fast_while_down, publish_until_heard, round_trip, unique};
use smith_bus::nats::NatsBus;
use smith_bus::{Bus, Error};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

mod conformance {
    smith_bus::bus_conformance!(networked, skip_unless_env = "SMITH_TEST_NATS_URL");
}

/// A `nats-server` of our own on a fixed loopback port, killed on drop.
struct PrivateServer {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl PrivateServer {
    /// Starts one with extra `args`, or `None` after printing why the test is skipped.
    fn start(args: &[&str]) -> Option<PrivateServer> {
        if !Path::new(NATS_SERVER).exists() {
            println!("skipped: {NATS_SERVER} is not installed (apt-get install nats-server)");
            return None;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        let mut server = PrivateServer { port, args: args.iter().map(|a| a.to_string()).collect(), child: None };
        server.restart();
        Some(server)
    }

    fn url(&self, credentials: &str) -> String {
        format!("nats://{credentials}127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and waits until it accepts connections.
    fn restart(&mut self) {
        self.kill();
        let child = Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {NATS_SERVER}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server outright (SIGKILL): no lame-duck notice, connections just die.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn connect(url: &str) -> NatsBus {
    match NatsBus::connect(url).await {
        Ok(bus) => bus,
        Err(e) => panic!("cannot connect to {url}: {e}"),
    }
}

/// Bad URLs, closed ports and silent servers give one clear error, quickly.
#[tokio::test]
async fn connect_fails_fast_and_clearly() {
    // A port that accepts connections and never says a word.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent_url = format!("nats://user:s3cret@127.0.0.1:{}", silent.local_addr().unwrap().port());
    // A port nobody listens on.
    let closed_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
    let closed_url = format!("nats://s3cret@127.0.0.1:{closed_port}");

    // (url, config error rather than unavailable, words the message must contain)
    let cases: &[(&str, bool, &[&str])] = &[
        ("nats://127.0.0.1:notaport", true, &["invalid port"]),
        ("nats://:s3cret@127.0.0.1:99999", true, &["invalid port"]),
        ("nats://127.0.0.1:4222?capacity=0", true, &["capacity"]),
        ("nats://127.0.0.1:4222/some/path", true, &["no path"]),
        (&closed_url, false, &["cannot connect", &format!("127.0.0.1:{closed_port}")]),
        (&silent_url, false, &["no answer"]),
    ];
    for &(url, config, words) in cases {
        smith_bus::conformance::open_fails_fast_and_clearly(url, config, words).await;
    }
}

/// User and password (or a token) come from the URL; wrong ones are a configuration error.
#[tokio::test]
async fn credentials_from_the_url() {
    // (server args, good credentials, bad credentials)
    let cases = [
        (&["--user", "smith", "--pass", "p@ss word"][..], "smith:p%40ss%20word@", "smith:wrong@"),
        (&["--auth", "t0ken"][..], "t0ken@", "wrong@"),
    ];
    for (args, good, bad) in cases {
        let Some(server) = PrivateServer::start(args) else { return };

        let started = Instant::now();
        let err = NatsBus::connect(&server.url(bad)).await.expect_err("wrong credentials accepted");
        assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
        assert!(matches!(err, Error::Config(_)), "{args:?}: {err:?}");
        let text = err.to_string();
        assert!(text.contains("credentials"), "{text:?}");
        assert!(!text.contains("wrong"), "{text:?} leaks the credentials");

        let err = NatsBus::connect(&server.url("")).await.expect_err("no credentials accepted");
        assert!(matches!(err, Error::Config(_)), "{args:?}: {err:?}");

        let bus = connect(&server.url(good)).await;
        let subject = unique("auth");
        let mut sub = bus.subscribe(&subject).await.unwrap();
        round_trip(&bus, &subject, &mut sub).await;
    }
}

/// Kill the server, start it again on the same port: the same bus and subscription carry
/// on by themselves, and publishing while it is down fails fast instead of hanging.
#[tokio::test]
async fn survives_a_server_restart() {
    let Some(mut server) = PrivateServer::start(&[]) else { return };
    let bus = connect(&server.url("")).await;
    let subject = unique("restart");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let mut member = bus.queue_subscribe(&subject, "workers").await.unwrap();
    round_trip(&bus, &subject, &mut sub).await;
    assert_eq!(member.recv().await.unwrap().payload, "hello");
    assert!(bus.is_connected());

    server.kill();
    fails_fast_while_down(&bus, &subject).await;
    assert!(!bus.is_connected());

    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let restarted = Instant::now();
    let (_, attempts) = publish_until_heard(&bus, &subject, &mut sub, restarted).await;
    assert!(bus.is_connected());
    // The queue subscription came back too.
    let got = tokio::time::timeout(Duration::from_secs(2), member.recv()).await.expect("queue member").unwrap();
    assert!(got.payload.starts_with(b"again"), "{got:?}");
    println!("delivered again {:?} after the restart ({attempts} publishes)", restarted.elapsed());
}

/// A NATS server with a certificate from a private CA: untrusted (a configuration error) until
/// `?cacertfile=` names the CA, and with it TLS is required even on a `nats://` URL.
#[tokio::test]
async fn tls_with_a_private_ca() {
    const OPENSSL: &str = "/usr/bin/openssl";
    if !Path::new(OPENSSL).exists() {
        println!("skipped: {OPENSSL} is not installed");
        return;
    }
    let dir = tempfile_dir("smith-nats-tls");
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let extensions = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
    smith_bus::conformance::make_certificates(OPENSSL, &dir, "ec -pkeyopt ec_paramgen_curve:P-256", extensions).await;
    let (cert, key) = (file("leaf.pem"), file("leaf.key"));
    let Some(server) = PrivateServer::start(&["--tlscert", &cert, "--tlskey", &key]) else { return };
    let tls_url = format!("tls://127.0.0.1:{}", server.port);

    // the system does not trust the private CA
    let err = NatsBus::connect(&tls_url).await.expect_err("an untrusted certificate was accepted");
    assert!(matches!(err, Error::Config(_)), "{err:?}");

    // a CA file that is missing, or holds no certificate: said before connecting
    for (ca, words) in [("missing.pem", "cannot be read"), ("leaf.key", "holds no PEM certificate")] {
        let url = format!("{tls_url}?cacertfile={}", file(ca));
        let err = NatsBus::connect(&url).await.expect_err("a bad cacertfile was accepted");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains(words), "{err}");
    }

    // with the CA: connected, over TLS, on tls:// and on nats://
    for scheme in ["tls", "nats"] {
        let url = format!("{scheme}://127.0.0.1:{}?cacertfile={}", server.port, file("ca.pem"));
        let bus = connect(&url).await;
        let subject = unique("tls");
        let mut sub = bus.subscribe(&subject).await.unwrap();
        round_trip(&bus, &subject, &mut sub).await;
    }

    // a server without TLS is refused when a CA is given, never spoken to in plain text
    let Some(plain) = PrivateServer::start(&[]) else { return };
    let url = format!("{}?cacertfile={}", plain.url(""), file("ca.pem"));
    let err = NatsBus::connect(&url).await.expect_err("TLS was required");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("does not speak TLS"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
