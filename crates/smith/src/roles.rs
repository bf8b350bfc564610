//! The distributed roles — `smith supervisor`, `smith worker`, `smith gateway` — and
//! `smith migrate`: each one process, sharing a store and a bus by URL.

use crate::config::{self, FileConfig};
use crate::node;
use anyhow::{anyhow, bail, Context, Result};
use smith_gateway::{Gateway, GatewayOptions, MetricsRender};
use smith_supervisor::{Supervisor, SupervisorOptions};
use smith_worker::Worker;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Where a role finds the shared store and bus.
#[derive(clap::Args, Debug)]
pub struct Shared {
    /// The store: `postgres://user@host/db` (or `sqlite://PATH` for a single machine); TLS with
    /// `?sslmode=require` (or `verify-full&sslrootcert=CA.pem`).
    #[arg(long, env = "SMITH_STORE", hide_env_values = true)]
    store: Option<String>,
    /// The bus: `nats://host:4222` or `amqp://user:pass@host:5672/%2f` (or `memory://` inside
    /// one process only); TLS with `tls://` or `amqps://`, a private CA with `?cacertfile=PATH`.
    #[arg(long, env = "SMITH_BUS", hide_env_values = true)]
    bus: Option<String>,
    /// Config file (default: ./smith.toml if present).
    #[arg(long, env = "SMITH_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    shared: Shared,
    /// Most agents running at once in this worker, over all definitions.
    #[arg(long, env = "SMITH_MAX_AGENTS")]
    max_agents: Option<usize>,
    /// Agent slots kept even when idle (default 0); above it, slots follow demand.
    #[arg(long, env = "SMITH_MIN_AGENTS")]
    min_agents: Option<usize>,
    /// Where to serve Prometheus `/metrics` (default 127.0.0.1:9465; `off` for none).
    #[arg(long, env = "SMITH_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// On SIGTERM, how long running tasks may take to finish before they are handed back
    /// (default 110 s: inside Fargate Spot's two-minute notice).
    #[arg(long, env = "SMITH_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    drain_timeout: Option<Duration>,
    /// Local state: the record of running agent processes, killed if this worker crashes and restarts.
    #[arg(long, env = "SMITH_DATA_DIR", default_value = "smith-worker")]
    data_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    #[command(flatten)]
    shared: Shared,
    /// Address to serve the API on; a non-loopback address requires --token.
    #[arg(long, env = "SMITH_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    tls: config::TlsArgs,
}

#[derive(clap::Args, Debug)]
pub struct SupervisorArgs {
    #[command(flatten)]
    shared: Shared,
    /// Where to serve Prometheus `/metrics` (default 127.0.0.1:9464; `off` for none).
    #[arg(long, env = "SMITH_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    shared: Shared,
}

/// A role's store and bus, opened, with the config they came with.
struct Backends {
    file: FileConfig,
    store: Arc<dyn smith_store::Store>,
    bus: Arc<dyn smith_bus::Bus>,
}

fn store_url(shared: &Shared, file: &FileConfig) -> Result<String> {
    shared
        .store
        .clone()
        .or(file.store.url.clone())
        .ok_or_else(|| anyhow!("no store: pass --store URL or set SMITH_STORE"))
}

async fn open_store(url: &str, file: &FileConfig) -> Result<Arc<dyn smith_store::Store>> {
    let mut opts = smith_store::OpenOptions::default();
    if let Some(n) = file.store.pool_size {
        if n == 0 {
            bail!("[store] pool_size must be at least 1");
        }
        opts.pool_size = n;
    }
    if let Some(f) = file.store.fsync {
        opts.fsync = f;
    }
    let store =
        smith_store::open(url, &opts).await.with_context(|| format!("cannot open store {}", node::redact(url)))?;
    Ok(smith_store::instrument(store))
}

async fn open(shared: &Shared) -> Result<Backends> {
    let file = FileConfig::load(shared.config.as_deref())?;
    let store_url = store_url(shared, &file)?;
    let bus_url = shared
        .bus
        .clone()
        .or(file.bus.url.clone())
        .ok_or_else(|| anyhow!("no bus: pass --bus URL or set SMITH_BUS"))?;
    if bus_url.starts_with("memory:") || bus_url.starts_with("inproc:") {
        bail!(
            "--bus {} only connects parts of one process; separate roles need a shared bus such as nats://host:4222 or amqp://host:5672",
            node::redact(&bus_url)
        );
    }
    let store = open_store(&store_url, &file).await?;
    let bus =
        smith_bus::open(&bus_url).await.with_context(|| format!("cannot connect to bus {}", node::redact(&bus_url)))?;
    let bus = smith_bus::instrument(bus);
    Ok(Backends { file, store, bus })
}

pub fn gateway_options(
    node_id: String,
    token: Option<String>,
    file: &FileConfig,
    metrics: MetricsRender,
    heartbeat: Duration,
) -> Result<GatewayOptions> {
    let mut g = GatewayOptions::new(node_id);
    // workers sign their agents' capabilities with a key derived from the platform token
    g.capability_key = token.as_deref().map(|t| smith_core::CapabilityKey::derive(t.as_bytes()));
    g.token = token;
    g.jwt = file.auth.jwt()?;
    file.quotas.validate().map_err(|e| anyhow!(e))?;
    g.quotas = file.quotas.clone();
    g.heartbeat = heartbeat;
    g.metrics = Some(metrics);
    if let Some(v) = file.server.max_body_bytes {
        g.max_body_bytes = v;
    }
    if let Some(v) = file.server.keepalive {
        g.keepalive = v;
    }
    if let Some(v) = file.server.slow_reader_timeout {
        g.slow_reader_timeout = v;
    }
    g.store_max_bytes = file.limits.store_max_bytes()?;
    g.sites = smith_gateway::origin::Sites::new(file.server.public_url.as_deref(), &file.server.allowed_origins)
        .map_err(|e| anyhow!("server.{e}"))?;
    g.webhook_guard = std::sync::Arc::new(file.webhooks.guard()?);
    Ok(g)
}

fn heartbeat(file: &FileConfig) -> Duration {
    file.worker.heartbeat.unwrap_or(Duration::from_secs(1))
}

pub async fn supervisor(args: SupervisorArgs) -> Result<ExitCode> {
    crate::init_logging();
    let b = open(&args.shared).await?;
    let telemetry = crate::telemetry::install(&b.file.telemetry, "supervisor")?;
    let metrics = node::install_metrics()?;
    let mut opts = SupervisorOptions::new(format!("supervisor-{}", node::instance_id()));
    opts.heartbeat = heartbeat(&b.file);
    if let Some(d) = b.file.supervisor.dead_after {
        opts.dead_after = d;
    }
    if let Some(d) = b.file.supervisor.quarantine {
        opts.quarantine = d;
    }
    let sc = &b.file.scaling;
    opts.scaling = config::scaling_options(&b.file, sc.min_agents.unwrap_or(0), sc.max_agents.unwrap_or(1000))?;
    let listener = node::metrics_listener(args.metrics_listen.as_deref(), &b.file, "127.0.0.1:9464").await?;
    let sampler = node::sampler_tree(b.store.clone(), &metrics);
    let hooks = smith_webhooks::Dispatcher::new(b.file.webhooks.options(opts.node_id.clone())?, b.store.clone())?;
    // retention deletes artifacts' objects from the storage the workers store them in
    let storage = if b.file.retention.options(None)?.is_some() { b.file.artifacts.open(None).await? } else { None };
    let retention_opts = b.file.retention.options(storage)?;
    // schedule fires are submissions: the tenants' quotas admit them, as the gateways do theirs
    b.file.quotas.validate()?;
    let quotas = std::sync::Arc::new(smith_gateway::quota::Enforcer::new(
        b.file.quotas.clone(),
        b.file.limits.store_max_bytes()?,
    ));
    let quota_store = b.store.clone();
    let sup = Supervisor::new(opts, b.store, b.bus);
    sup.admit_fires(std::sync::Arc::new(move |tenant: String| {
        let (quotas, store) = (quotas.clone(), quota_store.clone());
        Box::pin(async move { quotas.admit(store.as_ref(), &tenant).await.map_err(|e| e.message) })
    }));
    let retention = retention_opts.map(|o| sup.retention(o));
    tracing::info!("smith supervisor running");
    let mut roles = vec![node::supervisor_tree(&sup, retention.as_ref()), node::webhooks_tree(&hooks), sampler];
    roles.extend(node::metrics_tree(listener, metrics.render.clone()));
    let code = node::run(node::root(roles), sup.observer(), None, Duration::ZERO).await;
    crate::telemetry::shutdown(telemetry).await;
    code
}

pub async fn worker(args: WorkerArgs) -> Result<ExitCode> {
    let file = FileConfig::load(args.shared.config.as_deref())?;
    let agents = config::agents(&file)?;
    // validated before anything connects: a bad setting is one clear line, not a half-started node
    let mut w = config::worker_options(&file, agents.clone(), args.max_agents, args.min_agents)?;
    crate::init_logging();
    let telemetry = crate::telemetry::install(&file.telemetry, "worker")?;
    node::prepare_process_agents(&args.data_dir.join("run"));
    let b = open(&args.shared).await?;
    let metrics = node::install_metrics()?;
    let listener = node::metrics_listener(args.metrics_listen.as_deref(), &b.file, "127.0.0.1:9465").await?;
    let instance = node::instance_id();
    w.node_id = format!("worker-{instance}");
    // the capabilities this worker gives its agents are signed with a key derived from the
    // platform token, which the gateways share; the token itself never reaches an agent
    let token = std::env::var("SMITH_TOKEN").ok().or(file.server.token.clone()).filter(|t| !t.is_empty());
    w.capability_key = token.map(|t| smith_core::CapabilityKey::derive(t.as_bytes()));
    w.work_dir = w.work_dir.or_else(|| Some(args.data_dir.join("work")));
    let caps = file.artifacts.caps()?;
    w.artifacts = file.artifacts.open(None).await?.map(|storage| smith_worker::ArtifactOptions { storage, caps });
    b.store.put_agents(&agents).await.context("cannot record agent definitions")?;
    let worker = Worker::new(w, b.store.clone(), b.bus.clone());
    worker.register().await.context("cannot register the worker")?;
    // a worker records its own system events (component restarts) through a local supervisor handle
    let worker_store = b.store.clone();
    let sup = Supervisor::new(SupervisorOptions::new(worker.id().to_string()), b.store, b.bus);
    let drain = args.drain_timeout.or(file.worker.drain_timeout).unwrap_or(Duration::from_secs(110));
    tracing::info!(node = worker.id(), agents = agents.len(), "smith worker running");
    let mut roles =
        vec![node::worker_tree(&worker), system_events_only(&sup), node::sampler_tree(worker_store, &metrics)];
    roles.extend(node::metrics_tree(listener, metrics.render.clone()));
    let spec = node::root(roles);
    let code = node::run(spec, sup.observer(), Some(worker), drain).await;
    crate::telemetry::shutdown(telemetry).await;
    code
}

/// Just the system-event writer of a supervisor handle, for roles that are not supervisors.
fn system_events_only(sup: &Supervisor) -> smith_supervisor::tree::SupervisorSpec {
    let s = sup.clone();
    smith_supervisor::tree::SupervisorSpec::new("events", smith_supervisor::tree::Strategy::OneForOne).child(
        smith_supervisor::tree::ChildSpec::worker(
            "system-events",
            smith_supervisor::tree::Restart::Permanent,
            move |stop| {
                let s = s.clone();
                Box::pin(async move {
                    s.system_event_loop(stop).await.map_err(|e| smith_supervisor::tree::ChildError(e.to_string()))
                })
            },
        ),
    )
}

pub async fn gateway(args: GatewayArgs, token: Option<String>) -> Result<ExitCode> {
    // validated before anything connects
    let file = FileConfig::load(args.shared.config.as_deref())?;
    let settings = config::listener(&file, &args.tls)?;
    file.artifacts.url()?;
    crate::init_logging();
    let telemetry = crate::telemetry::install(&file.telemetry, "gateway")?;
    let serve = node::serve_options(&settings).await?;
    let b = open(&args.shared).await?;
    let token = token.or(b.file.server.token.clone()).filter(|t| !t.is_empty());
    let listen = args.listen.or(b.file.server.listen.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let jwt = b.file.auth.jwt()?.is_some();
    let listener = node::bind(&listen, token.is_some() || jwt).await?;
    let bound = listener.local_addr()?;
    let metrics = node::install_metrics()?;
    let id = format!("gateway-{}", node::instance_id());
    let mut gopts = gateway_options(id.clone(), token, &b.file, metrics.render.clone(), heartbeat(&b.file))?;
    gopts.artifacts = b.file.artifacts.open(None).await?;
    let gateway = Gateway::new(gopts, b.store.clone(), b.bus.clone());
    let b_store = b.store.clone();
    let sup = Supervisor::new(SupervisorOptions::new(id), b.store, b.bus);
    println!("smith listening on {}://{bound}", node::scheme(&serve));
    tracing::info!(addr = %bound, "smith gateway running");
    let gateway = node::gateway_tree(&gateway, listener, serve);
    let spec = node::root(vec![gateway, system_events_only(&sup), node::sampler_tree(b_store, &metrics)]);
    let code = node::run(spec, sup.observer(), None, Duration::ZERO).await;
    crate::telemetry::shutdown(telemetry).await;
    code
}

pub async fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    let file = FileConfig::load(args.shared.config.as_deref())?;
    let url = store_url(&args.shared, &file)?;
    let what =
        smith_store::migrate(&url).await.with_context(|| format!("cannot migrate store {}", node::redact(&url)))?;
    println!("{what}");
    Ok(ExitCode::SUCCESS)
}
