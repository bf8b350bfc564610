//! `smith up`: supervisor, worker and gateway in one process, on SQLite and the in-process bus,
//! as children of one supervision tree.

use crate::config::{self, FileConfig};
use crate::node;
use anyhow::{anyhow, bail, Context, Result};
use smith_core::NodeStatus;

use smith_gateway::Gateway;
use smith_supervisor::{Supervisor, SupervisorOptions};
use smith_worker::{Worker, WorkerOptions};
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

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
    /// Most agents running at once, over all definitions: the agent pool's ceiling.
    #[arg(long, env = "SMITH_MAX_AGENTS")]
    max_agents: Option<usize>,
    /// Agent slots kept even when idle; the pool follows the autoscaler between this and
    /// --max-agents (default 0: scale to zero when there is no work).
    #[arg(long, env = "SMITH_MIN_AGENTS")]
    min_agents: Option<usize>,
    /// On SIGTERM, how long running tasks may take to finish before they are handed back.
    #[arg(long, env = "SMITH_DRAIN_TIMEOUT", value_parser = humantime::parse_duration)]
    drain_timeout: Option<Duration>,
    /// Do not fsync each commit: survives a process crash, not a power loss. Faster.
    #[arg(long, env = "SMITH_NO_FSYNC")]
    no_fsync: bool,
    #[command(flatten)]
    tls: config::TlsArgs,
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
    quarantine: Duration,
    scaling: smith_supervisor::scaling::ScalingOptions,
    listener: config::Listener,
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
    let worker = config::worker_options(&file, agents.clone(), args.max_agents, args.min_agents)?;
    if file.scaling.min_agents.is_some() || file.scaling.max_agents.is_some() {
        bail!("smith up scales its own worker's pool: set --min-agents/--max-agents (or [worker] min_agents/max_agents), not [scaling] min_agents/max_agents");
    }
    let scaling = config::scaling_options(&file, worker.min_agents, worker.max_agents)?;
    let w = &file.worker;
    let drain_timeout = args.drain_timeout.or(w.drain_timeout).unwrap_or(Duration::from_secs(110));
    let dead_after = file.supervisor.dead_after.unwrap_or(Duration::from_secs(5));
    if dead_after < worker.heartbeat * 2 {
        bail!("supervisor.dead_after must be at least two worker heartbeats");
    }
    let quarantine = file.supervisor.quarantine.unwrap_or(Duration::from_secs(10));
    let listener = config::listener(&file, &args.tls)?;
    Ok(Settings {
        listen,
        data_dir,
        token,
        fsync,
        agents,
        worker,
        drain_timeout,
        dead_after,
        quarantine,
        scaling,
        listener,
        file,
    })
}

/// Holds an exclusive lock on the data directory for the life of the process: one `smith up` per store.
fn lock_data_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let path = dir.join("smith.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, e)) => Err(anyhow!("data dir {} is in use by another smith process ({e})", dir.display())),
    }
}

/// Where `smith up` records the node ids of its current incarnation, one a line.
const NODES_FILE: &str = "nodes";

/// Marks dead the nodes of this data directory's previous incarnations — the ids its last run
/// recorded in `<data dir>/nodes` (we hold the directory's lock, so their process is gone) —
/// so their tasks are requeued at once; then records `ours` for the next run. Nodes it cannot
/// prove its own (another process on the same store) are left to the supervisor's heartbeat
/// check, never marked dead here.
async fn mark_previous_dead(store: &dyn smith_store::Store, data_dir: &std::path::Path, ours: &[String]) -> Result<()> {
    let path = data_dir.join(NODES_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    let mut marked = 0;
    for n in store.nodes().await? {
        let live = matches!(n.status, NodeStatus::Alive | NodeStatus::Draining | NodeStatus::Quarantined);
        if live && previous.contains(&n.id) {
            // not a worker that may come back (quarantine): its process is gone for good
            store.set_node_status(&n.id, NodeStatus::Dead).await?;
            marked += 1;
        }
    }
    if marked > 0 {
        tracing::info!(count = marked, "previous nodes marked dead; their tasks will be requeued");
    }
    // recorded before the nodes register, so a crash right after still leaves them provably ours
    let tmp = data_dir.join(format!("{NODES_FILE}.tmp"));
    std::fs::write(&tmp, ours.join("\n") + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub async fn run(args: UpArgs, token: Option<String>) -> Result<ExitCode> {
    // errors before logging is up go to stderr by the caller
    let s = settings(args, token)?;
    crate::init_logging();
    let telemetry = crate::telemetry::install(&s.file.telemetry, "up")?;
    let serve = node::serve_options(&s.listener).await?;
    let scheme = node::scheme(&serve);
    let _lock = lock_data_dir(&s.data_dir)?;
    let jwt = s.file.auth.jwt()?.is_some();
    let listener = node::bind(&s.listen, s.token.is_some() || jwt).await?;
    // This process's worker signs its agents' capabilities, and its gateway verifies them, with
    // a key derived from a secret no other process knows: whatever the platform's credentials,
    // a capability is good on this process only and dies with it.
    let capability_key = smith_core::CapabilityKey::derive(smith_gateway::auth::internal_token().as_bytes());
    node::prepare_process_agents(&s.data_dir.join("run"));
    let metrics = node::install_metrics()?;

    let db = s.data_dir.join("smith.db");
    let store_url = s.file.store.url.clone().unwrap_or_else(|| format!("sqlite://{}", db.display()));
    let store = smith_store::open(&store_url, &smith_store::OpenOptions { fsync: s.fsync, ..Default::default() })
        .await
        .with_context(|| format!("cannot open store {}", node::redact(&store_url)))?;
    let store = smith_store::instrument(store);
    let bus = smith_bus::instrument(smith_bus::open("memory://").await?);
    store.put_agents(&s.agents).await.context("cannot record agent definitions")?;
    let instance = node::instance_id();
    let ours = [format!("worker-{instance}"), format!("supervisor-{instance}"), format!("gateway-{instance}")];
    mark_previous_dead(store.as_ref(), &s.data_dir, &ours).await?;

    let bound = listener.local_addr()?;

    let mut wopts = s.worker.clone();
    wopts.node_id = format!("worker-{instance}");
    wopts.address = Some(bound.to_string());
    // LLM agents reach the platform's tools through this process's own gateway
    wopts.mcp_url = wopts.mcp_url.or_else(|| Some(format!("{scheme}://{bound}/mcp")));
    wopts.capability_key = Some(capability_key.clone());
    wopts.work_dir = wopts.work_dir.or_else(|| Some(s.data_dir.join("work")));
    // artifacts: `[artifacts] url`, else a folder of the data dir, so `smith up` needs no setting
    let artifacts = s.file.artifacts.open(Some(&s.data_dir.join("artifacts"))).await?;
    let caps = s.file.artifacts.caps()?;
    wopts.artifacts = artifacts.clone().map(|storage| smith_worker::ArtifactOptions { storage, caps });
    let worker = Worker::new(wopts, store.clone(), bus.clone());
    worker.register().await.context("cannot register the worker")?;
    let mut sopts = SupervisorOptions::new(format!("supervisor-{instance}"));
    sopts.address = Some(bound.to_string());
    sopts.dead_after = s.dead_after;
    sopts.heartbeat = s.worker.heartbeat;
    sopts.quarantine = s.quarantine;
    sopts.scaling = s.scaling.clone();
    let hooks = smith_webhooks::Dispatcher::new(s.file.webhooks.options(sopts.node_id.clone())?, store.clone())?;
    let supervisor = Supervisor::new(sopts, store.clone(), bus.clone());
    let retention = s.file.retention.options(artifacts.clone())?.map(|o| supervisor.retention(o));
    // the worker's agent pool follows the autoscaler
    worker.set_target(s.worker.min_agents);
    let follower = worker.clone();
    supervisor.follow(std::sync::Arc::new(move |desired| follower.set_target(desired)));
    let mut gopts = crate::roles::gateway_options(
        format!("gateway-{instance}"),
        s.token.clone(),
        &s.file,
        metrics.render.clone(),
        s.worker.heartbeat,
    )?;
    gopts.capability_key = Some(capability_key);
    gopts.artifacts = artifacts;
    let gateway = Gateway::new(gopts, store.clone(), bus.clone());
    // schedule fires are submissions: the gateway's quotas admit them
    let admitting = gateway.clone();
    supervisor.admit_fires(std::sync::Arc::new(move |tenant: String| {
        let g = admitting.clone();
        Box::pin(async move { g.admit(&tenant).await })
    }));

    let spec = node::root(vec![
        node::supervisor_tree(&supervisor, retention.as_ref()),
        node::webhooks_tree(&hooks),
        node::worker_tree(&worker),
        node::gateway_tree(&gateway, listener, serve),
        node::sampler_tree(store.clone(), &metrics),
    ]);
    println!("smith listening on {scheme}://{bound}");
    tracing::info!(addr = %bound, data_dir = %s.data_dir.display(), agents = s.agents.len(), "smith up");
    let code = node::run(spec, supervisor.observer(), Some(worker), s.drain_timeout).await;
    crate::telemetry::shutdown(telemetry).await;
    code
}
