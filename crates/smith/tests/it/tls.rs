//! Transport security of a real `smith up`: HTTPS with a certificate from a throwaway CA,
//! what untrusting and plain-HTTP clients get, SIGHUP reloads (good and broken files), bad TLS
//! settings refused at start, slow clients cut off by the header and idle timeouts while SSE
//! streams are not, and TLS to PostgreSQL (`sslmode=`).
//!
//! Certificates are made at test time with the `openssl` CLI (present on the CI image; `.ci/run`
//! installs it when missing) rather than a Rust generator: no new crates in the tree, and the
//! files are exactly what an operator's own `openssl` produces.

use crate::common;

use common::{assert_complete_log, cli, Api, Opts, Smith};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const SECS_10: Duration = Duration::from_secs(10);

/// A throwaway certificate authority in a temp dir, and the server certificates it issues.
struct Pki {
    dir: tempfile::TempDir,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Issued {
    /// The leaf certificate's DER, as a TLS peer presents it.
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.cert).expect("leaf certificate PEM").as_ref().to_vec()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}); .ci/run installs it"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("smith-pki-").tempdir().expect("temp dir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=smith test CA"]);
        openssl(dir.path(), &args);
        Pki { dir }
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).expect("ca.pem")
    }

    /// A server certificate for `localhost` and 127.0.0.1 with common name `cn`, its own key
    /// and a random serial.
    fn issue(&self, cn: &str) -> Issued {
        let d = self.dir.path();
        let (key, csr, cert, ext) =
            (format!("{cn}.key"), format!("{cn}.csr"), format!("{cn}.pem"), format!("{cn}.ext"));
        std::fs::write(
            d.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        let subj = format!("/CN={cn}");
        openssl(
            d,
            &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key, "-out", &csr]
                .into_iter()
                .chain(["-subj", &subj])
                .collect::<Vec<_>>(),
        );
        let serial = format!("0x{:016x}", fastrand::u64(1..));
        let sign = format!("x509 -req -in {csr} -CA ca.pem -CAkey ca.key -set_serial {serial} -days 2 -extfile {ext}");
        openssl(d, &sign.split(' ').chain(["-out", &cert]).collect::<Vec<_>>());
        Issued { cert: d.join(cert), key: d.join(key) }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Copies `from` over `to` atomically (a reload never sees half a file).
fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy");
    std::fs::rename(&tmp, to).expect("rename");
}

/// An HTTPS client that trusts the test CA and nothing else.
fn trusting_client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).expect("CA PEM"))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem).expect("CA PEM")).expect("CA root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A raw TLS connection to `addr` as `localhost`, trusting the test CA.
async fn tls_connect(addr: &str, ca_pem: &[u8]) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(tls_config(ca_pem));
    tokio::time::timeout(SECS_10, connector.connect(ServerName::try_from("localhost").expect("name"), tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// The leaf certificate a new connection is shown.
async fn peer_leaf(addr: &str, ca_pem: &[u8]) -> Vec<u8> {
    let tls = tls_connect(addr, ca_pem).await.expect("TLS connection");
    tls.get_ref().1.peer_certificates().expect("peer certificates")[0].as_ref().to_vec()
}

/// `GET /healthz` on an open (TLS) connection; the response's status line.
async fn healthz_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(conn: &mut S) -> String {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(SECS_10, conn.read(&mut buf)).await.expect("response in time").expect("read");
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
}

fn host_port(s: &Smith) -> String {
    s.base.rsplit_once("://").expect("scheme").1.to_string()
}

/// Waits for the `count`th `needle` in the server's stderr.
async fn wait_log(s: &Smith, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + SECS_10;
    loop {
        let log = s.stderr();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(Instant::now() < deadline, "not {count} {needle:?} in the log within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sighup(s: &Smith) {
    let pid = nix::unistd::Pid::from_raw(s.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("send SIGHUP");
}

/// Key material must never reach a log line: no line of a key file's base64 body.
fn assert_no_key_material(log: &str, key: &Path) {
    let pem = std::fs::read_to_string(key).expect("key file");
    for line in pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 16) {
        assert!(!log.contains(line), "the log holds key material from {}", key.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_refuses_what_it_should() {
    let pki = Pki::new();
    let server = pki.issue("smith-a");
    let ca = pki.ca_pem();
    let s = Smith::start(
        Opts::new()
            .config("[server]\nheader_timeout = \"1s\"\n")
            .arg("--tls-cert")
            .arg(server.cert.to_str().unwrap())
            .arg("--tls-key")
            .arg(server.key.to_str().unwrap()),
    )
    .await;
    assert!(s.base.starts_with("https://127.0.0.1:"), "the listening line says https: {}", s.base);
    let addr = host_port(&s);
    let api = Api { base: s.base.clone(), token: None, http: trusting_client(&ca) };

    let (status, body) = api.get("/healthz").await;
    assert_eq!((status.as_u16(), &body["status"]), (200, &json!("ok")), "{body}");
    let (status, _) = api.get("/readyz").await;
    assert_eq!(status, 200);
    let id = api.submit_id(json!({"agent": "echo", "input": "over TLS"})).await;
    let frames = api.events(&id, SECS_10).await;
    assert_complete_log(&id, &frames);
    assert_eq!(frames.last().unwrap().json()["data"]["result"], "over TLS");

    // ALPN: HTTP/1.1 even when the client prefers h2
    let tls = tls_connect(&addr, &ca).await.expect("raw TLS");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(), server.der());

    // plain HTTP to the TLS port: a clear 400, promptly
    let plain = reqwest::Client::new();
    let r = tokio::time::timeout(SECS_10, plain.get(format!("http://{addr}/healthz")).send())
        .await
        .expect("a plain-HTTP client is answered, not left hanging")
        .expect("a plain-HTTP client gets a response");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("JSON error");
    assert!(body["error"]["message"].as_str().unwrap().contains("https://"), "{body}");

    // a client that does not trust the CA fails the handshake, promptly
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    let err = tokio::time::timeout(SECS_10, untrusting.get(format!("{}/healthz", s.base)).send())
        .await
        .expect("an untrusting client fails, not hangs")
        .expect_err("an untrusting client must not connect");
    let chain = format!("{err:?}");
    assert!(chain.contains("UnknownIssuer") || chain.to_lowercase().contains("certificate"), "{chain}");

    // a TCP client that never starts its handshake is closed after the header timeout
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(SECS_10, silent.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(800), "closed too early: {:?}", started.elapsed());

    // and the server still serves
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, 200);

    // the CLI trusts the private CA with --ca-cert, and without it refuses the server
    let ca_file = pki.dir.path().join("ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    let (code, out, err) = cli(&["agents", "--server", &s.base, "--ca-cert", ca_file], SECS_10).await;
    assert_eq!(code, 0, "smith agents --ca-cert: {out}{err}");
    assert!(out.contains("echo"), "{out}");
    let (code, out, err) = cli(&["agents", "--server", &s.base], SECS_10).await;
    assert_ne!(code, 0, "an untrusted server must be refused: {out}");
    assert!(err.contains("cannot reach") && err.to_lowercase().contains("certificate"), "{err}");
    let key = server.key.to_str().unwrap();
    for (bad, says) in [(key, "holds no PEM certificate"), ("/nonexistent/ca.pem", "cannot read --ca-cert")] {
        let (code, out, err) = cli(&["agents", "--server", &s.base, "--ca-cert", bad], SECS_10).await;
        assert_eq!(code, 1, "--ca-cert {bad}: {out}{err}");
        assert!(err.contains(says), "--ca-cert {bad}: {err}");
    }

    let log = s.stderr();
    assert!(log.contains("serving HTTPS"), "{log}");
    assert_no_key_material(&log, &server.key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_bad() {
    let pki = Pki::new();
    let (a, b, c) = (pki.issue("smith-a"), pki.issue("smith-b"), pki.issue("smith-c"));
    let ca = pki.ca_pem();
    // the files the server reads, named in smith.toml this time
    let live = Issued { cert: pki.path("live.pem"), key: pki.path("live.key") };
    replace(&a.cert, &live.cert);
    replace(&a.key, &live.key);
    let config = format!("[server]\ntls_cert = {:?}\ntls_key = {:?}\n", live.cert, live.key);
    let s = Smith::start(Opts::new().config(&config)).await;
    let addr = host_port(&s);
    assert_eq!(peer_leaf(&addr, &ca).await, a.der());
    // a connection opened before the reload, kept alive across it
    let mut before = tls_connect(&addr, &ca).await.unwrap();
    assert!(healthz_on(&mut before).await.contains("200"));

    replace(&b.cert, &live.cert);
    replace(&b.key, &live.key);
    sighup(&s);
    wait_log(&s, "TLS certificate reloaded", 1).await;
    assert_eq!(peer_leaf(&addr, &ca).await, b.der(), "new connections see the new certificate");
    assert!(healthz_on(&mut before).await.contains("200"), "an open connection carries on");
    assert_eq!(before.get_ref().1.peer_certificates().unwrap()[0].as_ref(), a.der());

    // broken replacements: each rejected with a reason, the certificate in use stays
    let cases: [(&str, &dyn Fn(), &str); 3] = [
        (
            "garbage certificate",
            &|| std::fs::write(&live.cert, "not a certificate\n").unwrap(),
            "holds no PEM certificate",
        ),
        (
            "a key of another certificate",
            &|| {
                replace(&c.cert, &live.cert);
                replace(&a.key, &live.key);
            },
            "does not match",
        ),
        ("a missing key", &|| std::fs::remove_file(&live.key).unwrap(), "cannot read the TLS key file"),
    ];
    for (n, (what, break_it, reason)) in cases.iter().enumerate() {
        break_it();
        sighup(&s);
        let log = wait_log(&s, "not reloaded", n + 1).await;
        assert_eq!(log.matches("not reloaded").count(), n + 1, "{what}: one failure logged per SIGHUP");
        let line = log.lines().rev().find(|l| l.contains("not reloaded")).unwrap().to_string();
        assert!(line.contains(reason), "{what}: {line}");
        assert_eq!(peer_leaf(&addr, &ca).await, b.der(), "{what}: the certificate in use stays");
    }
    let (status, _) = Api { base: s.base.clone(), token: None, http: trusting_client(&ca) }.get("/healthz").await;
    assert_eq!(status, 200, "the server keeps running");
    let log = s.stderr();
    for issued in [&a, &b, &c] {
        assert_no_key_material(&log, &issued.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_refuse_to_start_naming_the_file() {
    let pki = Pki::new();
    let good = pki.issue("smith-a");
    let other = pki.issue("smith-b");
    let missing = pki.path("missing.pem");
    let encrypted = pki.path("encrypted.key");
    openssl(
        pki.dir.path(),
        &["pkcs8", "-topk8", "-in", "smith-a.key", "-out", "encrypted.key", "-passout", "pass:secret", "-v2", "aes256"],
    );
    let bad_base64 = pki.path("bad.pem");
    std::fs::write(&bad_base64, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    // (what, --tls-cert, --tls-key, words the error must hold)
    type Case = (&'static str, Option<String>, Option<String>, Vec<String>);
    let cases: Vec<Case> = vec![
        ("a certificate without a key", Some(p(&good.cert)), None, vec!["tls_key is not".into(), "--tls-key".into()]),
        ("a key without a certificate", None, Some(p(&good.key)), vec!["tls_cert is not".into()]),
        ("a missing certificate file", Some(p(&missing)), Some(p(&good.key)), vec![p(&missing), "No such file".into()]),
        (
            "a key where the certificate goes",
            Some(p(&good.key)),
            Some(p(&good.key)),
            vec![p(&good.key), "holds no PEM certificate".into()],
        ),
        (
            "a certificate where the key goes",
            Some(p(&good.cert)),
            Some(p(&good.cert)),
            vec![p(&good.cert), "no unencrypted PEM private key".into()],
        ),
        ("an encrypted key", Some(p(&good.cert)), Some(p(&encrypted)), vec![p(&encrypted), "unencrypted".into()]),
        (
            "a key that does not match",
            Some(p(&good.cert)),
            Some(p(&other.key)),
            vec![p(&other.key), p(&good.cert), "does not match".into()],
        ),
        ("bad base64", Some(p(&bad_base64)), Some(p(&good.key)), vec![p(&bad_base64), "not valid base64".into()]),
    ];
    for (what, cert, key, words) in cases {
        let mut opts = Opts::new();
        if let Some(c) = &cert {
            opts = opts.arg("--tls-cert").arg(c);
        }
        if let Some(k) = &key {
            opts = opts.arg("--tls-key").arg(k);
        }
        let refused = Smith::start_refused(opts).await;
        assert!(!refused.status.success(), "{what}: {:?}", refused.status);
        let line = refused.stderr.lines().find(|l| l.starts_with("smith: ")).unwrap_or_else(|| {
            panic!("{what}: no `smith:` error line in\n{}", refused.stderr);
        });
        for w in &words {
            assert!(line.contains(w.as_str()), "{what}: {line:?} lacks {w:?}");
        }
        for k in [&good.key, &other.key] {
            assert_no_key_material(&refused.stderr, k);
        }
    }
}

/// Reads from `conn` until it closes; how long that took (panics after 10 s).
async fn until_closed(conn: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(SECS_10, conn.read(&mut buf)).await.expect("closed within 10 s") {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_streams_are_not() {
    let s = Smith::start(Opts::new().config("[server]\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"\n")).await;
    let addr = host_port(&s);
    let in_range = |d: Duration, lo: u64, hi: u64| d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi);

    // half a request line, then nothing
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /heal").await.unwrap();
    let took = until_closed(&mut half).await;
    assert!(in_range(took, 800, 4000), "half a request line: closed after {took:?}");

    // headers dribbled a byte at a time: still cut off at the header timeout
    let mut dribble = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut cut = None;
    for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: yes\r\n".iter().cycle().take(200) {
        if dribble.write_all(&[*byte]).await.is_err() {
            cut = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = cut.expect("a dribbling client is disconnected");
    assert!(in_range(took, 800, 5000), "dribbling headers: cut after {took:?}");

    // a kept-alive connection with nothing to do is closed after the idle timeout
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    assert!(healthz_on(&mut idle).await.contains("200"));
    let took = until_closed(&mut idle).await;
    assert!(in_range(took, 1800, 6000), "idle keep-alive: closed after {took:?}");

    // an SSE stream is busy, not idle: a task that outlives both timeouts streams to its end
    let id = s.submit_id(json!({"agent": "sleep", "input": 3500})).await;
    let frames = s.events(&id, SECS_10).await;
    assert_complete_log(&id, &frames);
    assert_eq!(frames.last().unwrap().event, "task.succeeded");
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200, "the server keeps serving");
}

/// `postgres://…?sslmode=` reaches sqlx's rustls: `require` connects over TLS when the server
/// has it and fails naming TLS when it does not; `verify-full` with a CA that did not sign
/// the server's certificate fails naming the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_is_honoured() {
    use sqlx::Connection;
    let Some(admin) = std::env::var("SMITH_TEST_POSTGRES_URL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("skipped: SMITH_TEST_POSTGRES_URL not set");
        return;
    };
    let param = |url: &str, kv: &str| format!("{url}{}{kv}", if url.contains('?') { '&' } else { '?' });
    let mut conn = tokio::time::timeout(SECS_10, sqlx::PgConnection::connect(&admin))
        .await
        .expect("PostgreSQL answers")
        .expect("connect to SMITH_TEST_POSTGRES_URL");
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut conn).await.expect("SHOW ssl");
    let db = format!("smith_tls_{:016x}", fastrand::u64(..));
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&mut conn).await.expect("CREATE DATABASE");
    let mut url = reqwest::Url::parse(&admin).expect("URL");
    url.set_path(&format!("/{db}"));
    let url = url.to_string();

    let require = param(&url, "sslmode=require");
    let (code, out, err) = cli(&["migrate", "--store", &require], Duration::from_secs(60)).await;
    if ssl == "on" {
        assert_eq!(code, 0, "smith migrate with sslmode=require: {out}{err}");
        let mut tls = sqlx::PgConnection::connect(&require).await.expect("sslmode=require");
        let on: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut tls)
            .await
            .expect("pg_stat_ssl");
        assert!(on, "sslmode=require connected without TLS");
        let _ = tls.close().await;
        // a CA that did not sign the server's certificate (or, where the system trusts the
        // server's self-signed one, a host name it is not for: 127.0.0.1)
        let pki = Pki::new();
        let verify = param(&url, &format!("sslmode=verify-full&sslrootcert={}", pki.path("ca.pem").display()));
        let (code, _, err) = cli(&["migrate", "--store", &verify], Duration::from_secs(60)).await;
        assert_ne!(code, 0, "verify-full against a foreign CA must fail");
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(!err.contains("unavailable"), "a refused certificate is a configuration error, not an outage: {err}");
        let missing = param(&url, "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let (code, _, err) = cli(&["migrate", "--store", &missing], Duration::from_secs(60)).await;
        assert_ne!(code, 0, "a missing sslrootcert must fail");
        assert!(err.contains("cannot read sslrootcert /nonexistent/ca.pem"), "{err}");
    } else {
        eprintln!("note: this PostgreSQL has ssl = {ssl}; checking that sslmode=require fails clearly");
        assert_ne!(code, 0, "sslmode=require against a server without TLS must fail");
        assert!(err.contains("TLS"), "{err}");
    }
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut conn).await.expect("DROP");
    let _ = conn.close().await;
}
