//! Building and running a node: the supervision trees of each role, signal handling with a
//! draining shutdown, and the pieces every role shares (listener, metrics, node ids).

use anyhow::{anyhow, bail, Context, Result};
use smith_gateway::tls::ServerCert;
use smith_gateway::{Gateway, ServeOptions};
use smith_supervisor::retention::Retention;
use smith_supervisor::tree::{self, Backoff, ChildSpec, Intensity, Restart, Strategy, SupervisorSpec};
use smith_supervisor::Supervisor;
use smith_worker::Worker;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// `<host>-<random>`: unique per process start, readable in `smith nodes`.
pub fn instance_id() -> String {
    format!("{}-{}", hostname(), &uuid::Uuid::now_v7().simple().to_string()[24..])
}

pub async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Resolves and binds the API listener; a non-loopback address requires authentication (the
/// platform token or a JWT issuer).
pub async fn bind(listen: &str, authenticated: bool) -> Result<std::net::TcpListener> {
    let addr: SocketAddr = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("cannot resolve listen address {listen:?}"))?
        .next()
        .ok_or_else(|| anyhow!("listen address {listen:?} resolves to nothing"))?;
    if !addr.ip().is_loopback() && !authenticated {
        bail!(
            "refusing to listen on {addr} without authentication: set --token or SMITH_TOKEN, or configure [auth] JWT verification (or listen on 127.0.0.1)"
        );
    }
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Makes this process able to kill and reap everything its process agents start, and kills
/// what a crashed previous run left in `run_dir`.
pub fn prepare_process_agents(run_dir: &std::path::Path) {
    if let Err(e) = smith_agents::process::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphaned agent processes may outlive their tasks");
    }
    match smith_agents::process::adopt_run_dir(run_dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(groups = n, "killed agent processes a previous run left behind"),
        Err(e) => tracing::warn!(error = %e, "cannot record agent process groups; a crash may leave agents running"),
    }
}

/// A URL fit for logs and errors: any password replaced, in the user part or in a query
/// parameter (`?password=`, which libpq and sqlx accept, and the like).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            // a bare user part is a secret token in NATS URLs
            let token_scheme = matches!(scheme, "nats" | "tls");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else if token_scheme {
                "***".to_string()
            } else {
                user.to_string()
            };
            format!("{masked}@{host}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", pairs.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Query parameters whose values are secrets.
const SECRET_PARAMS: &[&str] = &["password", "passwd", "pass", "sslpassword", "token", "auth_token", "secret"];

/// The installed Prometheus recorder: `render` for `/metrics`, and the upkeep that
/// [`sampler_tree`] runs on a timer.
#[derive(Clone)]
pub struct Metrics {
    pub render: smith_gateway::MetricsRender,
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

impl Metrics {
    /// Folds the samples histograms have buffered since the last upkeep into their buckets.
    /// Without it, every sample (dozens per task) is kept until something renders `/metrics`:
    /// a process nobody scrapes grows without bound (metrics-rs/metrics#467).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// How often [`sampler_tree`] runs the recorder's upkeep (and samples the pool).
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The recorder with this project's histogram buckets, not installed.
fn recorder() -> Result<metrics_exporter_prometheus::PrometheusRecorder> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    // Histograms, not summaries: quantiles must aggregate across processes (histogram_quantile).
    const LATENCY: &[f64] =
        &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    const TASK: &[f64] =
        &[0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];
    Ok(PrometheusBuilder::new()
        .set_buckets(LATENCY)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(smith_worker::metrics::TASK_DURATION.into()), TASK))
        .map_err(|e| anyhow!("metrics buckets: {e}"))?
        .build_recorder())
}

/// Installs the Prometheus recorder and describes every crate's metrics. The caller must run
/// [`sampler_tree`] with the result, which keeps the recorder's memory bounded.
pub fn install_metrics() -> Result<Metrics> {
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow!("cannot install the metrics recorder: {e}"))?;
    smith_worker::metrics::describe();
    smith_gateway::metrics::describe();
    smith_supervisor::describe_metrics();
    smith_supervisor::schedules::describe_metrics();
    smith_agents::rss::describe_agent_metrics();
    smith_store::describe_metrics();
    smith_bus::describe_metrics();
    smith_webhooks::metrics::describe();
    let h = handle.clone();
    let render: smith_gateway::MetricsRender = Arc::new(move || {
        let mut text = h.render();
        text.push_str(&crate::procmetrics::render());
        text
    });
    Ok(Metrics { render, handle })
}

/// The metrics listener of a role without the API: the flag, else `[metrics] listen`, else
/// `default` — which, being nobody's explicit choice, is skipped with a warning when taken
/// (several workers on one host). `off` serves none.
pub async fn metrics_listener(
    flag: Option<&str>,
    file: &crate::config::FileConfig,
    default: &str,
) -> Result<Option<std::net::TcpListener>> {
    let (addr, explicit) = match flag.or(file.metrics.listen.as_deref()) {
        Some(a) => (a, true),
        None => (default, false),
    };
    if addr == "off" {
        return Ok(None);
    }
    match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            l.set_nonblocking(true)?;
            tracing::info!(addr = %l.local_addr()?, "serving /metrics");
            Ok(Some(l))
        }
        Err(e) if !explicit => {
            tracing::warn!(addr, error = %e, "cannot serve /metrics on the default address; set --metrics-listen");
            Ok(None)
        }
        Err(e) => Err(anyhow!("cannot serve metrics on {addr}: {e}")),
    }
}

/// A tokio listener on a clone of the shared socket, for one run of a serving child (a
/// restarted child serves on the same socket).
fn tokio_listener(l: &std::net::TcpListener) -> Result<tokio::net::TcpListener, tree::ChildError> {
    let l = l.try_clone().map_err(|e| tree::ChildError(format!("listener: {e}")))?;
    tokio::net::TcpListener::from_std(l).map_err(|e| tree::ChildError(format!("listener: {e}")))
}

/// The metrics server as a supervised subtree, when there is a listener.
pub fn metrics_tree(
    listener: Option<std::net::TcpListener>,
    render: smith_gateway::MetricsRender,
) -> Option<SupervisorSpec> {
    let listener = Arc::new(listener?);
    Some(role("metrics", Strategy::OneForOne).child(ChildSpec::worker(
        "metrics-http",
        Restart::Permanent,
        move |stop| {
            let l = listener.clone();
            let render = render.clone();
            Box::pin(async move {
                let listener = tokio_listener(&l)?;
                smith_gateway::serve_metrics(listener, render, stop).await.map_err(|e| tree::ChildError(e.to_string()))
            })
        },
    )))
}

/// Every [`SAMPLE_EVERY`]: the recorder's upkeep, whether or not anyone scrapes `/metrics`,
/// and the figures not recorded as they happen (the store's connection pool).
pub fn sampler_tree(store: Arc<dyn smith_store::Store>, metrics: &Metrics) -> SupervisorSpec {
    let metrics = metrics.clone();
    role("sampler", Strategy::OneForOne).child(ChildSpec::worker("metrics-sampler", Restart::Permanent, move |stop| {
        let store = store.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            loop {
                smith_store::record_pool_stats(store.as_ref());
                metrics.upkeep();
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                }
            }
        })
    }))
}

type Component<T, E> = fn(T, CancellationToken) -> futures_util::future::BoxFuture<'static, Result<(), E>>;

/// A component's loop as a permanent child: its error, whatever its type, is why it restarts.
fn child<T, E>(name: &str, it: &T, f: Component<T, E>) -> ChildSpec
where
    T: Clone + Send + Sync + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let it = it.clone();
    ChildSpec::worker(name, Restart::Permanent, move |stop| {
        let it = it.clone();
        let fut = f(it, stop);
        Box::pin(async move { fut.await.map_err(|e| tree::ChildError(e.to_string())) })
    })
}

const INTENSITY: Intensity = Intensity { max_restarts: 5, period: Duration::from_secs(10) };
const BACKOFF: Backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) };

/// A role's subtree: its children restarted at most [`INTENSITY`], after [`BACKOFF`].
fn role(name: &str, strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new(name, strategy).intensity(INTENSITY).backoff(BACKOFF)
}

/// The supervisor role's loops; `retention` (docs/retention.md) when `[retention]` deletes anything.
pub fn supervisor_tree(sup: &Supervisor, retention: Option<&Retention>) -> SupervisorSpec {
    let spec = role("supervisor", Strategy::OneForOne)
        .child(child("system-events", sup, |s, t| Box::pin(s.system_event_loop(t))))
        .child(child("reaper", sup, |s, t| Box::pin(s.reaper_loop(t))))
        .child(child("timers", sup, |s, t| Box::pin(s.timer_loop(t))))
        .child(child("supervisor-heartbeat", sup, |s, t| Box::pin(s.heartbeat_loop(t))))
        .child(child("autoscaler", sup, |s, t| Box::pin(s.scaling_loop(t))))
        .child(child("schedules", sup, |s, t| Box::pin(s.schedule_loop(t))));
    match retention {
        Some(r) => spec.child(child("retention", r, |r, t| Box::pin(r.run_loop(t)))),
        None => spec,
    }
}

/// The webhook dispatcher: it works only where it holds its lease, so every supervisor runs one.
pub fn webhooks_tree(hooks: &smith_webhooks::Dispatcher) -> SupervisorSpec {
    role("webhooks", Strategy::OneForOne).child(child("webhook-dispatcher", hooks, |h, t| Box::pin(h.run(t))))
}

pub fn worker_tree(worker: &Worker) -> SupervisorSpec {
    role("worker", Strategy::OneForOne)
        .child(child("lease-keeper", worker, |w, t| Box::pin(w.lease_keeper(t))))
        .child(child("cancel-listener", worker, |w, t| Box::pin(w.cancel_listener(t))))
        .child(child("claim-loop", worker, |w, t| Box::pin(w.claim_loop(t))))
        .child(ChildSpec::worker("orphan-reaper", Restart::Permanent, |stop| {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                    tokio::task::spawn_blocking(|| {
                        smith_agents::process::reap_orphans();
                        smith_agents::rss::sample_agent_memory();
                    })
                    .await
                    .map_err(|e| tree::ChildError(e.to_string()))?;
                }
            })
        }))
}

/// How the API listener serves: loads and checks the TLS certificate and key when there are
/// any, and from then on SIGHUP no longer ends the process (it reloads them, see
/// [`gateway_tree`]).
pub async fn serve_options(l: &crate::config::Listener) -> Result<ServeOptions> {
    let mut opts = ServeOptions { tls: None, header_timeout: l.header_timeout, idle_timeout: l.idle_timeout };
    if let Some((cert, key)) = &l.tls {
        let loaded = ServerCert::load(cert, key).await.context("cannot serve HTTPS")?;
        // replaces SIGHUP's default action (exit) for the life of the process, before anyone
        // learns the address and might signal
        drop(signal(SignalKind::hangup()).context("cannot handle SIGHUP")?);
        tracing::info!(cert = %cert.display(), fingerprint = %loaded.fingerprint(), "serving HTTPS");
        opts.tls = Some(loaded);
    }
    Ok(opts)
}

/// `https` or `http`: the scheme of the API's URL.
pub fn scheme(opts: &ServeOptions) -> &'static str {
    if opts.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The hub feeds the streams the server serves: if it restarts, so does the server (rest_for_one).
/// With TLS, a last child reloads the certificate on SIGHUP.
pub fn gateway_tree(gateway: &Gateway, listener: std::net::TcpListener, serve: ServeOptions) -> SupervisorSpec {
    let listener = Arc::new(listener);
    let gw = gateway.clone();
    let cert = serve.tls.clone();
    let serve = Arc::new(serve);
    let spec = role("gateway", Strategy::RestForOne)
        .child(child("hub", gateway, |g, t| Box::pin(g.hub_loop(t))))
        .child(ChildSpec::worker("http", Restart::Permanent, move |stop| {
            let gw = gw.clone();
            let l = listener.clone();
            let serve = serve.clone();
            Box::pin(async move {
                let listener = tokio_listener(&l)?;
                gw.serve_with(listener, &serve, stop).await.map_err(|e| tree::ChildError(e.to_string()))
            })
        }))
        .child(child("gateway-heartbeat", gateway, |g, t| Box::pin(g.heartbeat_loop(t))))
        .child(child("store-size", gateway, |g, t| Box::pin(g.store_size_loop(t))));
    match cert {
        Some(cert) => spec.child(ChildSpec::worker("tls-reload", Restart::Permanent, move |stop| {
            Box::pin(reload_on_sighup(cert.clone(), stop))
        })),
        None => spec,
    }
}

/// Re-reads the certificate and key at each SIGHUP. A bad pair is logged and ignored: the
/// certificate in use stays, and open connections are never touched either way.
async fn reload_on_sighup(cert: Arc<ServerCert>, stop: CancellationToken) -> Result<(), tree::ChildError> {
    let mut hangups = signal(SignalKind::hangup()).map_err(|e| tree::ChildError(format!("SIGHUP handler: {e}")))?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = hangups.recv() => {}
        }
        match cert.reload().await {
            Ok(fingerprint) => {
                tracing::info!(cert = %cert.cert_path().display(), %fingerprint, "SIGHUP: TLS certificate reloaded")
            }
            Err(e) => tracing::error!(
                error = %e,
                fingerprint = %cert.fingerprint(),
                "SIGHUP: TLS certificate not reloaded; still serving the one in use"
            ),
        }
    }
}

/// The node's root: each role is a subtree with its own strategy and intensity; a role that
/// keeps failing escalates here and is restarted as a whole, and if that keeps happening the
/// process exits non-zero for its orchestrator to replace it.
pub fn root(roles: Vec<SupervisorSpec>) -> SupervisorSpec {
    let mut spec = SupervisorSpec::new("node", Strategy::OneForOne)
        .intensity(Intensity { max_restarts: 3, period: Duration::from_secs(60) })
        .backoff(Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(10) });
    for r in roles {
        spec = spec.child(ChildSpec::supervisor(r, Restart::Permanent));
    }
    spec
}

/// Runs the tree until it gives up or a signal arrives; on a signal, drains the worker (if
/// any) for up to `drain`, then stops every component. A second signal exits at once.
pub async fn run(
    spec: SupervisorSpec,
    observer: tree::Observer,
    worker: Option<Worker>,
    drain: Duration,
) -> Result<ExitCode> {
    let root = CancellationToken::new();
    let mut tree_task = tokio::spawn(tree::run(spec, root.clone(), observer));
    let outcome = tokio::select! {
        r = &mut tree_task => Some(r),
        _ = shutdown_signal() => None,
    };
    if let Some(r) = outcome {
        return match r {
            Ok(Ok(())) => Ok(ExitCode::SUCCESS),
            Ok(Err(esc)) => {
                tracing::error!(error = %esc, "the node's supervision tree gave up");
                Ok(ExitCode::from(70))
            }
            Err(e) => Err(anyhow!("supervision tree panicked: {e}")),
        };
    }
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("smith: second signal, exiting now");
        std::process::exit(130);
    });
    if let Some(worker) = worker {
        tracing::info!(
            timeout_s = drain.as_secs_f64(),
            "shutting down: draining the worker (signal again to exit at once)"
        );
        let handed_back = worker.drain(drain).await;
        tracing::info!(handed_back, "drained");
    } else {
        tracing::info!("shutting down");
    }
    root.cancel();
    // components stop promptly; give the tree a bounded time
    if tokio::time::timeout(Duration::from_secs(10), tree_task).await.is_err() {
        tracing::warn!("components did not stop within 10 s");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// This process's resident memory, in bytes.
    fn rss() -> i64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).unwrap().unwrap()
    }

    /// How much the process grew while `rounds` × 1,000,000 samples were recorded into the
    /// histograms a task touches, `between` being called after each round.
    fn growth_while_sampling(rounds: usize, between: impl Fn(&super::Metrics)) -> i64 {
        let recorder = super::recorder().unwrap();
        let m = super::Metrics { render: std::sync::Arc::new(String::new), handle: recorder.handle() };
        metrics::with_local_recorder(&recorder, || {
            let names = [smith_worker::metrics::TASK_DURATION, "smith_dispatch_latency_seconds", "smith_x_seconds"];
            let hs: Vec<_> = names.iter().map(|n| metrics::histogram!(*n, "agent" => "echo")).collect();
            let record = || {
                for i in 0..1_000_000 {
                    hs[i % hs.len()].record(i as f64 * 1e-6);
                }
            };
            // one round first: what the recorder keeps for itself is not growth
            record();
            between(&m);
            let before = rss();
            for _ in 0..rounds {
                record();
                between(&m);
            }
            rss() - before
        })
    }

    /// The cause of unbounded growth under load (issue 16): histogram samples buffered until
    /// something renders `/metrics`. The sampler's upkeep keeps them bounded with nobody
    /// scraping. The control without upkeep (run second, so that it cannot reuse memory the
    /// first one kept) shows that the measurement sees the growth: ~8 bytes a sample.
    #[test]
    fn upkeep_bounds_what_unscraped_histograms_hold() {
        let with = growth_while_sampling(8, super::Metrics::upkeep);
        let without = growth_while_sampling(8, |_| {});
        assert!(without > 32 << 20, "the control should grow by ~64 MB (8M samples), grew {without} bytes");
        assert!(with < 8 << 20, "with upkeep the recorder still grew {with} bytes (without: {without})");
    }

    #[test]
    fn redact_hides_passwords_only() {
        for (url, want) in [
            ("postgres://u:secret@db:5432/x", "postgres://u:***@db:5432/x"),
            ("nats://tok@host:4222", "nats://***@host:4222"),
            ("postgres://db/x", "postgres://db/x"),
            ("amqp://guest:guest@h/%2f", "amqp://guest:***@h/%2f"),
            ("sqlite://./d/smith.db", "sqlite://./d/smith.db"),
            ("nats://tok@h:4222?capacity=8&x=a@b", "nats://***@h:4222?capacity=8&x=a@b"),
            ("nats://h?x=a@b", "nats://h?x=a@b"),
            (
                "postgres://u@db/x?sslmode=require&password=secret&sslrootcert=/ca.pem",
                "postgres://u@db/x?sslmode=require&password=***&sslrootcert=/ca.pem",
            ),
            ("postgres://db?PassWord=secret#frag", "postgres://db?PassWord=***#frag"),
        ] {
            assert_eq!(super::redact(url), want);
        }
    }
}
