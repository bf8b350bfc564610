//! `smith up`: supervisor, worker and gateway in one process, on SQLite and the in-process bus,
//! as children of one supervision tree.

use crate::config::{self, FileConfig};
use anyhow::{anyhow, bail, Context, Result};
use smith_core::Micros;
use smith_supervisor::tree::{self, Backoff, ChildSpec, Intensity, Restart, Strategy, SupervisorSpec};
use smith_supervisor::{Supervisor, SupervisorOptions};
use smith_worker::{Worker, WorkerOptions};
use smith_gateway::{Gateway, GatewayOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Address to serve the API on; a non-loopback address requires --token.
    #[arg(long, env = "SMITH_LISTEN")]
    listen: Option<String>,
    /// Where the SQLite store lives.
    #[arg(long, env = "SMITH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file (default: ./smith.toml if present).
    #[arg(long, env = "SMITH_CONFIG")]
    config: Option<PathBuf>,
    /// Agents running at once in the worker, over all definitions.
    #[arg(long, env = "SMITH_MAX_AGENTS")]
    max_agents: Option<usize>,
    /// On SIGTERM, how long running tasks may take to finish before they are handed back.
    #[arg(long, env = "SMITH_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    drain_timeout: Option<Duration>,
    /// Do not fsync each commit: survives a process crash, not a power loss. Faster.
    #[arg(long, env = "SMITH_NO_FSYNC")]
    no_fsync: bool,
}

/// The settings `smith up` runs with, after all layers.
struct Settings {
    listen: String,
    data_dir: PathBuf,
    token: Option<String>,
    fsync: bool,
    agents: Vec<smith_core::AgentDef>,
    worker: WorkerOptions,
    drain_timeout: Duration,
    dead_after: Duration,
    file: FileConfig,
}

fn settings(args: UpArgs, token: Option<String>) -> Result<Settings> {
    let file = FileConfig::load(args.config.as_deref())?;
    let agents = config::agents(&file)?;
    let listen = args.listen.or(file.server.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let data_dir = args.data_dir.or(file.data_dir.clone()).unwrap_or_else(crate::default_data_dir);
    let token = token.or(file.server.token.clone()).filter(|t| !t.is_empty());
    let fsync = if args.no_fsync { false } else { file.store.fsync.unwrap_or(true) };
    if file.store.url.as_deref().is_some_and(|u| !u.starts_with("sqlite:")) {
        bail!("smith up runs on SQLite; [store] url must be sqlite://PATH (distributed stores are for smith supervisor|worker|gateway)");
    }
    let mut worker = WorkerOptions::new("", agents.clone());
    let w = &file.worker;
    if let Some(v) = args.max_agents.or(w.max_agents) {
        if v == 0 {
            bail!("max_agents must be at least 1");
        }
        worker.max_agents = v;
    }
    if let Some(v) = w.lease {
        worker.lease = v;
    }
    if let Some(v) = w.heartbeat {
        worker.heartbeat = v;
    }
    if let Some(v) = w.poll {
        worker.poll = v;
    }
    if worker.heartbeat * 3 > worker.lease {
        bail!("worker.heartbeat ({:?}) must be at most a third of worker.lease ({:?})", worker.heartbeat, worker.lease);
    }
    let drain_timeout = args.drain_timeout.or(w.drain_timeout).unwrap_or(Duration::from_secs(110));
    let dead_after = file.supervisor.dead_after.unwrap_or(Duration::from_secs(5));
    if dead_after < worker.heartbeat * 2 {
        bail!("supervisor.dead_after must be at least two worker heartbeats");
    }
    Ok(Settings { listen, data_dir, token, fsync, agents, worker, drain_timeout, dead_after, file })
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Holds an exclusive lock on the data directory for the life of the process: one `smith up` per store.
fn lock_data_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let path = dir.join("smith.lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, e)) => Err(anyhow!("data dir {} is in use by another smith process ({e})", dir.display())),
    }
}

pub async fn run(args: UpArgs, token: Option<String>) -> Result<ExitCode> {
    // errors before logging is up go to stderr by the caller
    let s = settings(args, token)?;
    crate::init_logging();
    let addr: SocketAddr = tokio::net::lookup_host(&s.listen)
        .await
        .with_context(|| format!("cannot resolve listen address {:?}", s.listen))?
        .next()
        .ok_or_else(|| anyhow!("listen address {:?} resolves to nothing", s.listen))?;
    if !is_loopback(&addr) && s.token.is_none() {
        bail!("refusing to listen on {addr} without authentication: set --token or SMITH_TOKEN (or listen on 127.0.0.1)");
    }
    let _lock = lock_data_dir(&s.data_dir)?;
    if let Err(e) = smith_agents::process::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphaned agent processes may outlive their tasks");
    }
    match smith_agents::process::adopt_run_dir(&s.data_dir.join("run")) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(groups = n, "killed agent processes a previous run left behind"),
        Err(e) => tracing::warn!(error = %e, "cannot record agent process groups; a crash may leave agents running"),
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow!("cannot install the metrics recorder: {e}"))?;
    smith_worker::metrics::describe();
    smith_gateway::metrics::describe();

    let db = s.data_dir.join("smith.db");
    let store_url = s.file.store.url.clone().unwrap_or_else(|| format!("sqlite://{}", db.display()));
    let store = smith_store::open(&store_url, &smith_store::OpenOptions { fsync: s.fsync, readers: 4 })
        .await
        .with_context(|| format!("cannot open store {store_url}"))?;
    let bus = smith_bus::open("memory://").await?;
    store.put_agents(&s.agents).await.context("cannot record agent definitions")?;
    // We hold the data dir's lock, so every node recorded as alive is a previous incarnation
    // of this process: mark them dead now so their tasks are requeued at once.
    let stale = store.mark_dead_nodes(Micros(i64::MAX)).await?;
    if !stale.is_empty() {
        tracing::info!(count = stale.len(), "previous nodes marked dead; their tasks will be requeued");
    }

    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;

    let instance = format!("{}-{}", hostname(), &uuid::Uuid::now_v7().simple().to_string()[24..]);
    let mut wopts = s.worker.clone();
    wopts.node_id = format!("worker-{instance}");
    wopts.address = Some(bound.to_string());
    let worker = Worker::new(wopts, store.clone(), bus.clone());
    worker.register().await.context("cannot register the worker")?;
    let mut sopts = SupervisorOptions::new(format!("supervisor-{instance}"));
    sopts.address = Some(bound.to_string());
    sopts.dead_after = s.dead_after;
    sopts.heartbeat = s.worker.heartbeat;
    let supervisor = Supervisor::new(sopts, store.clone(), bus.clone());
    let mut gopts = GatewayOptions::new(format!("gateway-{instance}"));
    gopts.token = s.token.clone();
    gopts.heartbeat = s.worker.heartbeat;
    if let Some(v) = s.file.server.max_body_bytes {
        gopts.max_body_bytes = v;
    }
    if let Some(v) = s.file.server.keepalive {
        gopts.keepalive = v;
    }
    if let Some(v) = s.file.server.slow_reader_timeout {
        gopts.slow_reader_timeout = v;
    }
    let render = metrics.clone();
    gopts.metrics = Some(Arc::new(move || render.render()));
    let gateway = Gateway::new(gopts, store.clone(), bus.clone());

    let spec = node_tree(&supervisor, &worker, &gateway, listener);
    let root = CancellationToken::new();
    let mut tree_task = tokio::spawn(tree::run(spec, root.clone(), supervisor.observer()));
    println!("smith listening on http://{bound}");
    tracing::info!(addr = %bound, data_dir = %s.data_dir.display(), agents = s.agents.len(), "smith up");

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
    tracing::info!(timeout_s = s.drain_timeout.as_secs_f64(), "shutting down: draining the worker (signal again to exit at once)");
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("smith: second signal, exiting now");
        std::process::exit(130);
    });
    let handed_back = worker.drain(s.drain_timeout).await;
    tracing::info!(handed_back, "drained");
    root.cancel();
    // components stop promptly; give the tree a bounded time
    if tokio::time::timeout(Duration::from_secs(10), tree_task).await.is_err() {
        tracing::warn!("components did not stop within 10 s");
    }
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

type Component<T> = fn(T, CancellationToken) -> futures_util::future::BoxFuture<'static, Result<(), String>>;

fn child<T: Clone + Send + Sync + 'static>(name: &str, it: &T, f: Component<T>) -> ChildSpec {
    let it = it.clone();
    ChildSpec::worker(name, Restart::Permanent, move |stop| {
        let it = it.clone();
        let fut = f(it, stop);
        Box::pin(async move { fut.await.map_err(tree::ChildError::from) })
    })
}

/// The node's supervision tree: each role is a subtree with its own strategy and intensity;
/// a role that keeps failing escalates to the root, which restarts it as a whole.
fn node_tree(sup: &Supervisor, worker: &Worker, gateway: &Gateway, listener: std::net::TcpListener) -> SupervisorSpec {
    let intensity = Intensity { max_restarts: 5, period: Duration::from_secs(10) };
    let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(5) };
    let supervisor_tree = SupervisorSpec::new("supervisor", Strategy::OneForOne)
        .intensity(intensity)
        .backoff(backoff)
        .child(child("system-events", sup, |s, t| Box::pin(s.system_event_loop(t))))
        .child(child("reaper", sup, |s, t| Box::pin(s.reaper_loop(t))))
        .child(child("supervisor-heartbeat", sup, |s, t| Box::pin(s.heartbeat_loop(t))));
    let worker_tree = SupervisorSpec::new("worker", Strategy::OneForOne)
        .intensity(intensity)
        .backoff(backoff)
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
                    tokio::task::spawn_blocking(smith_agents::process::reap_orphans).await.map_err(|e| tree::ChildError(e.to_string()))?;
                }
            })
        }));
    let listener = Arc::new(listener);
    let gw = gateway.clone();
    // the hub feeds the streams the server serves: if it restarts, so does the server (rest_for_one)
    let gateway_tree = SupervisorSpec::new("gateway", Strategy::RestForOne)
        .intensity(intensity)
        .backoff(backoff)
        .child(child("hub", gateway, |g, t| Box::pin(g.hub_loop(t))))
        .child(ChildSpec::worker("http", Restart::Permanent, move |stop| {
            let gw = gw.clone();
            let l = listener.clone();
            Box::pin(async move {
                let std_listener = l.try_clone().map_err(|e| tree::ChildError(format!("listener: {e}")))?;
                let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| tree::ChildError(format!("listener: {e}")))?;
                gw.serve(listener, stop).await.map_err(tree::ChildError::from)
            })
        }))
        .child(child("gateway-heartbeat", gateway, |g, t| Box::pin(g.heartbeat_loop(t))));
    SupervisorSpec::new("node", Strategy::OneForOne)
        .intensity(Intensity { max_restarts: 3, period: Duration::from_secs(60) })
        .backoff(Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(10) })
        .child(ChildSpec::supervisor(supervisor_tree, Restart::Permanent))
        .child(ChildSpec::supervisor(worker_tree, Restart::Permanent))
        .child(ChildSpec::supervisor(gateway_tree, Restart::Permanent))
}
