//! The `smith` binary: parses flags, loads config, starts telemetry, and runs a role or a
//! client command.

mod approvals;
mod bench;
mod client;
mod config;
mod keys;
mod node;
mod plan;
mod procmetrics;
mod roles;
mod schedules;
mod telemetry;
mod up;
mod webhooks;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "smith", version, about = "MisterSmith: supervised, durable AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientOpts,
}

/// How client commands reach the gateway.
#[derive(Args, Clone, Debug)]
pub struct ClientOpts {
    /// The gateway's base URL.
    #[arg(long, global = true, env = "SMITH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token: required by the API (`up`), sent to it (client commands).
    #[arg(long, global = true, env = "SMITH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM file of CA certificates to trust for an HTTPS gateway, besides the built-in roots
    /// (a private CA).
    #[arg(long, global = true, env = "SMITH_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run supervisor, worker and gateway in one process on SQLite and an in-process bus.
    Up(up::UpArgs),
    /// Run a supervisor: heartbeats, leader election, dead-worker detection, lease reaping.
    Supervisor(roles::SupervisorArgs),
    /// Run a worker: claims tasks and runs their agents.
    Worker(roles::WorkerArgs),
    /// Run a gateway: the HTTP API and SSE streams.
    Gateway(roles::GatewayArgs),
    /// Apply pending store migrations and exit.
    Migrate(roles::MigrateArgs),
    /// Submit, inspect, cancel and follow tasks.
    Task {
        #[command(subcommand)]
        command: client::TaskCommand,
    },
    /// Start, continue and show multi-turn sessions with an agent.
    Session {
        #[command(subcommand)]
        command: client::SessionCommand,
    },
    /// List and answer the requests agents make of people (approvals and questions).
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// List agent definitions with live counts.
    Agents,
    /// List nodes and their health.
    Nodes,
    /// Measure a running `smith up`: tasks/s and dispatch latency, events, bursts, or the
    /// per-agent baseline `smith plan --model measured` reads.
    Bench(bench::BenchArgs),
    /// Create, list and revoke API keys (admin scope).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Read the audit log: one record per mutating request (admin scope).
    Audit(keys::AuditArgs),
    /// Subscribe URLs to your tenant's events; list, show and delete them; read and replay
    /// their deliveries.
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
    /// Cron schedules: create, list, get (with the next fire times), pause, resume, delete.
    Schedule {
        #[command(subcommand)]
        command: schedules::ScheduleCommand,
    },
    /// Capacity and monthly AWS cost for N agents; `--emit` writes the deployment.
    Plan(plan::PlanArgs),
}

/// Raises the open-files soft limit to the hard limit: every agent stream, SSE client and
/// agent process pipe is a descriptor, and the default soft limit (often 1,024) is far too low.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smith: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let client = cli.client;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args, client.token).await,
            Command::Supervisor(args) => roles::supervisor(args).await,
            Command::Worker(args) => roles::worker(args).await,
            Command::Gateway(args) => roles::gateway(args, client.token).await,
            Command::Migrate(args) => roles::migrate(args).await,
            Command::Task { command } => client::task(command, client).await,
            Command::Session { command } => client::session(command, client).await,
            Command::Approvals { command } => approvals::approvals(command, client).await,
            Command::Agents => client::agents(client).await,
            Command::Nodes => client::nodes(client).await,
            Command::Bench(args) => bench::run(args, client).await,
            Command::Plan(args) => plan::run(args),
            Command::Keys { command } => keys::keys(command, client).await,
            Command::Audit(args) => keys::audit(args, client).await,
            Command::Webhooks { command } => webhooks::webhooks(command, client).await,
            Command::Schedule { command } => schedules::schedule(command, client).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smith: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Installs the log subscriber (stderr; `SMITH_LOG` or `RUST_LOG` filter, default info).
pub fn init_logging() {
    let filter =
        std::env::var("SMITH_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("smith-data")
}
