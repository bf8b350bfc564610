//! The sizing model: from N agents, a profile and per-unit assumptions to services, database,
//! messaging, costs, corrections of the seed and warnings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::baseline::{Baseline, ExecutorCost};
use crate::prices::{Prices, BROKER_TYPES};
use crate::{Error, Result};

/// Hours in a billing month (AWS's own convention) and days in a month of messages.
pub const HOURS_PER_MONTH: f64 = 730.0;
pub const DAYS_PER_MONTH: f64 = 30.0;
/// The most agents a plan is made for (the seed's range is 1–1,000; 100× that is a sanity cap).
pub const MAX_AGENTS: i64 = 100_000;
/// Autoscaling aims to keep agent slots this busy (the autoscaler's `[scaling] target`).
pub const TARGET_UTILIZATION: f64 = 0.7;
/// The messages per second (about 5 KB each) one node of each of [`BROKER_TYPES`] is planned
/// to carry, in the same order.
const BROKER_CAPACITY: &[f64] = &[1_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0];
/// ECS's quota of tasks per service.
const ECS_TASKS_PER_SERVICE: u64 = 5_000;
/// Aurora Serverless v2's largest capacity.
const MAX_ACU: f64 = 256.0;

/// Deployment profile: how much redundancy and database headroom the plan buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Dev, Profile::Staging, Profile::Prod];

    /// The seed's expected loads: dev 1–10 agents, staging 10–100, production 100–1,000.
    pub fn for_agents(agents: u64) -> Profile {
        match agents {
            0..=10 => Profile::Dev,
            11..=100 => Profile::Staging,
            _ => Profile::Prod,
        }
    }

    pub fn parse(s: &str) -> Result<Profile> {
        match s {
            "dev" => Ok(Profile::Dev),
            "staging" => Ok(Profile::Staging),
            "prod" => Ok(Profile::Prod),
            other => Err(Error::Invalid(format!("unknown profile `{other}`: expected dev, staging or prod"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        }
    }

    /// The seed's Aurora Serverless v2 settings for this profile.
    fn aurora(self) -> AuroraProfile {
        match self {
            Profile::Dev => AuroraProfile { min_acu: 0.5, max_acu: 2.0, avg_acu: 1.0, storage_gb: 10.0 },
            Profile::Staging => AuroraProfile { min_acu: 1.0, max_acu: 8.0, avg_acu: 3.0, storage_gb: 50.0 },
            Profile::Prod => AuroraProfile { min_acu: 2.0, max_acu: 32.0, avg_acu: 12.0, storage_gb: 500.0 },
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Seed,
    Measured,
}

impl Model {
    pub fn parse(s: &str) -> Result<Model> {
        match s {
            "seed" => Ok(Model::Seed),
            "measured" => Ok(Model::Measured),
            other => Err(Error::Invalid(format!("unknown model `{other}`: expected seed or measured"))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct AuroraProfile {
    min_acu: f64,
    max_acu: f64,
    avg_acu: f64,
    storage_gb: f64,
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct Request {
    /// As typed: checked here so a negative or zero count gets a clear error.
    pub agents: i64,
    /// `None`: chosen from the number of agents ([`Profile::for_agents`]).
    pub profile: Option<Profile>,
    pub model: Model,
    /// Required by the measured model.
    pub baseline: Option<Baseline>,
    /// Which measured executor the agents are (default: the costliest in memory).
    pub executor: Option<String>,
    pub prices: Prices,
}

/// The plan: every figure the renderers print and the emitters deploy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub agents: u64,
    pub profile: Profile,
    pub model: Model,
    /// The measured executor the agents were sized as (measured model).
    pub executor: Option<String>,
    pub region: String,
    pub prices_date: String,
    pub services: Vec<Service>,
    pub totals: Totals,
    pub database: Database,
    pub messaging: Messaging,
    pub costs: Costs,
    pub autoscaling: Autoscaling,
    /// Seed figures that do not follow from the seed's own inputs, with the right figure.
    pub corrections: Vec<Correction>,
    pub warnings: Vec<String>,
    pub assumptions: Vec<Assumption>,
}

/// One ECS service (a Deployment on Kubernetes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Service {
    /// `supervisor`, `worker` or `gateway`.
    pub name: String,
    /// Per task (pod).
    pub vcpu: f64,
    pub memory_gb: f64,
    /// Tasks running with all N agents busy.
    pub tasks: u64,
    /// The autoscaling floor and ceiling.
    pub min_tasks: u64,
    pub max_tasks: u64,
    /// Worker only: agent slots per task.
    pub agents_per_task: Option<u64>,
    /// Store connections each task's pool may open.
    pub pool_size: u64,
    pub vcpu_total: f64,
    pub memory_gb_total: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub tasks: u64,
    pub vcpu: f64,
    pub memory_gb: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Database {
    pub engine: String,
    pub min_acu: f64,
    pub max_acu: f64,
    pub avg_acu: f64,
    pub connections_per_acu: f64,
    /// What the cluster accepts at max ACU.
    pub max_connections: f64,
    pub pools: Vec<Pool>,
    /// What all pools may open together.
    pub connections_needed: u64,
    /// Whether the plan puts RDS Proxy in front (faster failover; prepared statements pin its
    /// sessions, so it does not multiplex the pools).
    pub proxy: bool,
    pub iops: Iops,
    pub storage_gb: f64,
    pub storage_growth_gb_month: f64,
    pub storage_after_12_months_gb: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    pub service: String,
    pub per_task: u64,
    pub tasks: u64,
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Iops {
    pub writes: f64,
    pub reads: f64,
    pub average: f64,
    pub peak: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Messaging {
    pub kinds: Vec<KindRate>,
    pub per_agent_minute: f64,
    pub peak_factor: f64,
    pub normal_per_s: f64,
    pub peak_per_s: f64,
    pub normal_mb_s: f64,
    pub peak_mb_s: f64,
    pub per_day: f64,
    pub per_month: f64,
    pub broker: Broker,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KindRate {
    pub kind: String,
    pub per_agent_minute: f64,
    pub size_kb: f64,
    pub normal_per_s: f64,
    pub peak_per_s: f64,
    pub normal_kb_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Broker {
    pub engine: String,
    pub instance_type: String,
    /// `SINGLE_INSTANCE` or `CLUSTER_MULTI_AZ` (Amazon MQ's names).
    pub deployment_mode: String,
    pub nodes: u64,
    /// Messages per second the broker is planned to carry.
    pub capacity_per_s: f64,
    pub storage_gb_per_node: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Costs {
    /// The monthly on-demand bill, line by line.
    pub lines: Vec<CostLine>,
    pub on_demand_total: f64,
    /// Savings from the on-demand total (negative amounts).
    pub optimizations: Vec<CostLine>,
    pub optimized_total: f64,
    /// Priced instead of a line above, not added to any total.
    pub alternatives: Vec<CostLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CostLine {
    /// Stable, e.g. `fargate.worker`, `aurora.compute`.
    pub key: String,
    pub item: String,
    pub monthly: f64,
    /// How it was computed.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Autoscaling {
    /// What the worker service scales on: `GET /v1/scaling`'s `desired_slots`.
    pub metric: String,
    pub target_utilization: f64,
    pub worker_min_tasks: u64,
    pub worker_max_tasks: u64,
    pub agents_per_task: u64,
    pub scale_in_cooldown_s: u64,
    pub scale_out_cooldown_s: u64,
    /// Share of the worker tasks above the on-demand floor that run on Fargate Spot (the
    /// `optimize.spot` line; the emitters' capacity provider weights).
    pub spot_share: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Correction {
    pub figure: String,
    pub seed: String,
    pub planner: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Assumption {
    pub name: String,
    pub value: String,
    pub source: String,
}

/// A message kind: rate per agent-minute and size.
struct Kind {
    name: &'static str,
    per_agent_minute: f64,
    size_kb: f64,
}

/// The seed's message mix: 40.5 messages per agent-minute.
const SEED_KINDS: [Kind; 5] = [
    Kind { name: "coordination", per_agent_minute: 5.0, size_kb: 5.0 },
    Kind { name: "discovery", per_agent_minute: 2.5, size_kb: 10.0 },
    Kind { name: "task", per_agent_minute: 25.0, size_kb: 20.0 },
    Kind { name: "health", per_agent_minute: 2.0, size_kb: 0.5 },
    Kind { name: "metrics", per_agent_minute: 6.0, size_kb: 1.5 },
];

/// Everything the sizing depends on, from the seed or from a measured baseline.
struct Inputs {
    supervisor: Shape,
    gateway: Shape,
    worker: WorkerShape,
    /// SSE clients one gateway task carries.
    sse_per_gateway: u64,
    /// SSE clients per agent (someone watching each agent's stream).
    sse_per_agent: f64,
    kinds: Vec<Kind>,
    peak_factor: f64,
    connections_per_acu: f64,
    aurora: AuroraProfile,
    iops_writes_per_agent_s: f64,
    iops_reads_per_agent_s: f64,
    storage_base_gb: f64,
    storage_growth_gb_per_agent_month: f64,
    spot_share: f64,
    off_hours_share: f64,
    off_hours_reduction: f64,
    cloudwatch: CloudWatchUse,
    /// Seed figures taken as given where the seed states an amount, not a rate.
    seed_flat: Option<SeedFlat>,
    assumptions: Vec<Assumption>,
}

#[derive(Clone, Copy)]
struct Shape {
    vcpu: f64,
    memory_gb: f64,
    count: u64,
    pool: u64,
}

#[derive(Clone, Copy)]
struct WorkerShape {
    vcpu: f64,
    memory_gb: f64,
    agents_per_task: u64,
    pool: u64,
}

struct CloudWatchUse {
    metrics: f64,
    dashboards: f64,
    alarms: f64,
    log_gb_per_agent_month: f64,
}

/// Monthly amounts the seed states for this profile.
struct SeedFlat {
    /// RDS Proxy and database transfer (production only in the seed).
    proxy: Option<f64>,
    db_transfer: Option<f64>,
    /// The seed's Amazon MQ broker, transfer and storage.
    broker: f64,
    broker_transfer: f64,
    broker_storage: f64,
    broker_type: &'static str,
    cloudwatch: f64,
}

fn assumption(name: &str, value: impl Into<String>, source: &str) -> Assumption {
    Assumption { name: name.to_string(), value: value.into(), source: source.to_string() }
}

fn seed_inputs(profile: Profile) -> Inputs {
    const SEED: &str = "seed";
    let aurora = profile.aurora();
    // Only production has RDS Proxy, database transfer and the broker's transfer and storage.
    let small = |broker: f64, broker_type: &'static str| SeedFlat {
        proxy: None,
        db_transfer: None,
        broker,
        broker_transfer: 0.0,
        broker_storage: 0.0,
        broker_type,
        cloudwatch: 200.0,
    };
    let flat = match profile {
        Profile::Dev => small(13.50, "mq.t3.micro"),
        Profile::Staging => small(540.0, "mq.m5.large"),
        Profile::Prod => SeedFlat {
            proxy: Some(50.0),
            db_transfer: Some(100.0),
            broker_transfer: 100.0,
            broker_storage: 100.0,
            ..small(2_160.0, "mq.m5.2xlarge")
        },
    };
    let assumptions = vec![
        assumption("worker", "0.5 vCPU / 1 GB per agent, one agent per task", SEED),
        assumption("supervisor", "2 vCPU / 4 GB, one task", SEED),
        assumption("gateway", "2 vCPU / 4 GB per 1,000 SSE clients, one client per agent", SEED),
        assumption(
            "messages",
            "40.5 per agent-minute: coordination 5 × 5 KB, discovery 2.5 × 10 KB, task 25 × 20 KB, health 2 × 0.5 KB, metrics 6 × 1.5 KB",
            SEED,
        ),
        assumption("peak", "5 × normal", SEED),
        assumption("month", "730 hours, 30 days", SEED),
        assumption("connections", "30 per ACU; a pool of 30 per service task", SEED),
        assumption(
            "aurora",
            format!(
                "{} profile: {}–{} ACU, {} ACU average, {} GB",
                profile, aurora.min_acu, aurora.max_acu, aurora.avg_acu, aurora.storage_gb
            ),
            SEED,
        ),
        assumption("iops", "0.5 writes + 2.0 reads per agent-second", SEED),
        assumption("storage growth", "0.4074 GB per agent-month over a 10 GB base", SEED),
        assumption(
            "flat monthly amounts",
            format!(
                "RDS Proxy {}, database transfer {}, Amazon MQ broker ${:.2} ({}) + transfer ${:.2} + storage ${:.2}, CloudWatch ${:.2}",
                flat.proxy.map_or("none".to_string(), |v| format!("${v:.2}")),
                flat.db_transfer.map_or("none".to_string(), |v| format!("${v:.2}")),
                flat.broker,
                flat.broker_type,
                flat.broker_transfer,
                flat.broker_storage,
                flat.cloudwatch
            ),
            "seed (stated amounts, not derived from prices)",
        ),
        assumption("optimization", "70% of worker tasks on Spot, 1-year commitment on the rest, half the hours off-hours at half capacity", SEED),
    ];
    Inputs {
        supervisor: Shape { vcpu: 2.0, memory_gb: 4.0, count: 1, pool: 30 },
        gateway: Shape { vcpu: 2.0, memory_gb: 4.0, count: 1, pool: 30 },
        worker: WorkerShape { vcpu: 0.5, memory_gb: 1.0, agents_per_task: 1, pool: 30 },
        sse_per_gateway: 1_000,
        sse_per_agent: 1.0,
        kinds: SEED_KINDS.iter().map(|k| Kind { ..*k }).collect(),
        peak_factor: 5.0,
        connections_per_acu: 30.0,
        aurora,
        iops_writes_per_agent_s: 0.5,
        iops_reads_per_agent_s: 2.0,
        storage_base_gb: 10.0,
        storage_growth_gb_per_agent_month: 0.0432 + 0.0432 + 0.105 + 0.216,
        spot_share: 0.7,
        off_hours_share: 0.5,
        off_hours_reduction: 0.5,
        cloudwatch: CloudWatchUse { metrics: 15.0, dashboards: 3.0, alarms: 12.0, log_gb_per_agent_month: 0.0 },
        seed_flat: Some(flat),
        assumptions,
    }
}

/// Fargate's valid task sizes: (vCPU, memory choices in GB).
fn fargate_sizes() -> Vec<(f64, f64)> {
    let mut v = vec![(0.25, 0.5), (0.25, 1.0), (0.25, 2.0)];
    v.extend((1..=4).map(|m| (0.5, m as f64)));
    v.extend((2..=8).map(|m| (1.0, m as f64)));
    v.extend((4..=16).map(|m| (2.0, m as f64)));
    v.extend((8..=30).map(|m| (4.0, m as f64)));
    v.extend((4..=15).map(|m| (8.0, 4.0 * m as f64)));
    v.extend((4..=15).map(|m| (16.0, 8.0 * m as f64)));
    v
}

/// Agents one worker task holds at the target utilization; at most this many per task so one
/// lost task (a Spot reclaim) loses little.
const MAX_AGENTS_PER_TASK: u64 = 100;

fn measured_inputs(
    profile: Profile,
    agents: u64,
    b: &Baseline,
    executor: &str,
    e: &ExecutorCost,
    p: &Prices,
) -> Result<Inputs> {
    const MEASURED: &str = "measured (baseline)";
    const SEED: &str = "seed";
    let gb = |bytes: f64| bytes / 1e9;
    let idle_gb = gb(b.idle_rss_bytes);
    let agent_gb = gb(e.memory_bytes_per_agent);
    // The cheapest valid Fargate size for all N agents, at the target utilization.
    let mut best: Option<(f64, WorkerShape)> = None;
    for (vcpu, mem) in fargate_sizes() {
        let by_cpu =
            if e.cpu_per_agent > 0.0 { (vcpu * TARGET_UTILIZATION / e.cpu_per_agent).floor() } else { f64::MAX };
        let by_mem = ((mem * TARGET_UTILIZATION - idle_gb) / agent_gb).floor();
        let fit = by_cpu.min(by_mem).min(MAX_AGENTS_PER_TASK as f64);
        if fit < 1.0 {
            continue;
        }
        let fit = fit as u64;
        let tasks = agents.div_ceil(fit);
        let cost = tasks as f64 * (vcpu * p.fargate.vcpu_hour + mem * p.fargate.gb_hour);
        if best.as_ref().is_none_or(|(c, _)| cost < *c - 1e-9) {
            best = Some((cost, WorkerShape { vcpu, memory_gb: mem, agents_per_task: fit, pool: 10 }));
        }
    }
    let Some((_, worker)) = best else {
        return Err(Error::Invalid(format!(
            "one `{executor}` agent needs {:.2} vCPU and {:.2} GB, more than the largest Fargate task holds at {:.0}% utilization",
            e.cpu_per_agent,
            agent_gb,
            TARGET_UTILIZATION * 100.0
        )));
    };
    let gateway_mem = 4.0;
    let per_conn_gb = gb(b.sse.memory_bytes_per_connection);
    let sse_by_mem = ((gateway_mem * TARGET_UTILIZATION - idle_gb) / per_conn_gb).floor().max(1.0) as u64;
    let sse_per_gateway = sse_by_mem.min(1_000);
    let task_per_minute = e.events_per_task * 60.0 / e.task_seconds;
    let mut kinds: Vec<Kind> = SEED_KINDS.iter().map(|k| Kind { ..*k }).collect();
    kinds[2].per_agent_minute = task_per_minute;
    let redundant = if profile == Profile::Prod { 2 } else { 1 };
    let assumptions = vec![
        assumption(
            "agent",
            format!(
                "`{executor}`: {:.1} MB and {:.4} vCPU per running agent, {:.1} events per task of {:.1} s (measured with {} agents)",
                e.memory_bytes_per_agent / 1e6,
                e.cpu_per_agent,
                e.events_per_task,
                e.task_seconds,
                e.agents
            ),
            MEASURED,
        ),
        assumption("process base", format!("{:.1} MB resident before any agent runs", b.idle_rss_bytes / 1e6), MEASURED),
        assumption(
            "worker",
            format!(
                "the cheapest Fargate size for the fleet at {:.0}% utilization: {} vCPU / {} GB holding {} agents (at most {MAX_AGENTS_PER_TASK} per task)",
                TARGET_UTILIZATION * 100.0,
                worker.vcpu,
                worker.memory_gb,
                worker.agents_per_task
            ),
            "planner",
        ),
        assumption(
            "gateway",
            format!(
                "2 vCPU / 4 GB; {:.1} KB per SSE connection (measured with {}) → {} clients per task (capped at the seed's 1,000 per 2 vCPU: fan-out CPU is not in the baseline)",
                b.sse.memory_bytes_per_connection / 1e3,
                b.sse.connections,
                sse_per_gateway
            ),
            MEASURED,
        ),
        assumption("supervisor", format!("1 vCPU / 2 GB, {redundant} task(s) (a standby in prod)"), "planner"),
        assumption("task messages", format!("{task_per_minute:.2} per agent-minute (events per task × 60 / task seconds)"), MEASURED),
        assumption("other messages", "coordination, discovery, health and metrics at the seed's rates and sizes", SEED),
        assumption("pools", "supervisor 10, gateway 20, worker 10 connections per task", "planner"),
        assumption("aurora, iops, storage growth, peak, month", "as the seed", SEED),
        assumption("cloudwatch", "15 custom metrics, 3 dashboards, 12 alarms, 0.25 GB of logs per agent-month", "planner"),
    ];
    // What the baseline measures replaces the seed's guess; the rest stays the seed's.
    Ok(Inputs {
        supervisor: Shape { vcpu: 1.0, memory_gb: 2.0, count: redundant, pool: 10 },
        gateway: Shape { vcpu: 2.0, memory_gb: gateway_mem, count: redundant, pool: 20 },
        worker,
        sse_per_gateway,
        kinds,
        cloudwatch: CloudWatchUse { metrics: 15.0, dashboards: 3.0, alarms: 12.0, log_gb_per_agent_month: 0.25 },
        seed_flat: None,
        assumptions,
        ..seed_inputs(profile)
    })
}

/// Rounds money to cents and other figures to a stable precision, so output and tests agree.
pub(crate) fn cents(v: f64) -> f64 {
    // Half a cent rounds away from zero as on paper, not as its binary neighbour happens to fall.
    (v * 100.0 + v.signum() * 1e-6).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn money(v: f64) -> String {
    let c = (cents(v).abs() * 100.0).round() as i64;
    let sign = if v < 0.0 && c > 0 { "-" } else { "" };
    format!("{sign}${}.{:02}", group(c / 100), c % 100)
}

fn group(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn line(key: &str, item: impl Into<String>, monthly: f64, detail: impl Into<String>) -> CostLine {
    CostLine { key: key.to_string(), item: item.into(), monthly: cents(monthly), detail: detail.into() }
}

/// Makes the plan.
pub fn plan(req: &Request) -> Result<Plan> {
    if req.agents < 1 {
        return Err(Error::Invalid(format!(
            "--agents must be at least 1, not {}: a plan sizes a fleet of agents (the platform itself scales to zero between bursts; plan for the most agents you expect at once)",
            req.agents
        )));
    }
    if req.agents > MAX_AGENTS {
        return Err(Error::Invalid(format!("--agents {} is more than this planner sizes ({MAX_AGENTS})", req.agents)));
    }
    let n = req.agents as u64;
    let profile = req.profile.unwrap_or_else(|| Profile::for_agents(n));
    let p = &req.prices;
    let (inputs, executor) = match req.model {
        Model::Seed => {
            if req.baseline.is_some() {
                return Err(Error::Invalid(
                    "--baseline is read by --model measured; the seed model takes no baseline".into(),
                ));
            }
            if req.executor.is_some() {
                return Err(Error::Invalid("--executor picks a measured executor; it needs --model measured".into()));
            }
            (seed_inputs(profile), None)
        }
        Model::Measured => {
            let checked_in;
            let b = match &req.baseline {
                Some(b) => b,
                None => {
                    checked_in = Baseline::checked_in();
                    &checked_in
                }
            };
            let name = match &req.executor {
                Some(name) => name.clone(),
                None if b.executors.contains_key(crate::baseline::DEFAULT_EXECUTOR) => {
                    crate::baseline::DEFAULT_EXECUTOR.to_string()
                }
                None => b
                    .executors
                    .iter()
                    .max_by(|a, z| a.1.memory_bytes_per_agent.total_cmp(&z.1.memory_bytes_per_agent))
                    .map(|(k, _)| k.clone())
                    .expect("a parsed baseline has an executor"),
            };
            let Some(e) = b.executors.get(&name) else {
                let known: Vec<&str> = b.executors.keys().map(String::as_str).collect();
                return Err(Error::Invalid(format!(
                    "the baseline measured no executor `{name}`; it has: {}",
                    known.join(", ")
                )));
            };
            let mut zero = Vec::new();
            if e.memory_bytes_per_agent == 0.0 {
                zero.push(format!("memory per `{name}` agent ({} agents)", e.agents));
            }
            if e.cpu_per_agent == 0.0 {
                zero.push(format!("CPU per `{name}` agent ({} agents)", e.agents));
            }
            if b.sse.memory_bytes_per_connection == 0.0 {
                zero.push(format!("memory per SSE connection ({} connections)", b.sse.connections));
            }
            let inputs = measured_inputs(profile, n, b, &name, e, p)?;
            let mut plan = build(n, profile, req.model, Some(name.clone()), &inputs, p);
            let per_minute = e.cpu_seconds_per_agent_minute.map_or(String::new(), |c| {
                format!("; {c:.2} CPU-s per agent-minute over a task's life, start-up included")
            });
            let source = if req.baseline.is_some() { "--baseline" } else { "built in" };
            plan.assumptions.insert(
                0,
                assumption(
                    "baseline",
                    format!("{}, measured {}: agents sized as `{name}`{per_minute}", b.origin, b.at),
                    source,
                ),
            );
            if !zero.is_empty() {
                plan.warnings.push(format!(
                    "the baseline measured 0 for {}: too few to see against the process's own memory and CPU, so the plan counts them free (capped by the per-task limits); measure more on a fresh server",
                    zero.join(", ")
                ));
            }
            return Ok(plan);
        }
    };
    Ok(build(n, profile, req.model, executor, &inputs, p))
}

/// What every part of [`build`] reads: the fleet's size and profile, the model's inputs and
/// the prices.
struct Ctx<'a> {
    n: u64,
    profile: Profile,
    model: Model,
    i: &'a Inputs,
    p: &'a Prices,
}

impl Ctx<'_> {
    /// SSE clients: someone watching each agent's stream.
    fn sse_clients(&self) -> u64 {
        (self.n as f64 * self.i.sse_per_agent).ceil() as u64
    }

    /// Database writes and reads per second, unrounded.
    fn iops(&self) -> (f64, f64) {
        (self.i.iops_writes_per_agent_s * self.n as f64, self.i.iops_reads_per_agent_s * self.n as f64)
    }
}

/// The on-demand Fargate bill per service and what the workers would cost on Spot: the
/// optimizations and the seed's corrections start from these.
struct Fargate {
    supervisor: f64,
    worker: f64,
    gateway: f64,
    worker_spot: f64,
}

fn build(n: u64, profile: Profile, model: Model, executor: Option<String>, i: &Inputs, p: &Prices) -> Plan {
    let c = Ctx { n, profile, model, i, p };
    let mut warnings = Vec::new();
    let services = services(&c);
    let totals = totals(&services);
    let rates = Rates::of(&c);
    let messaging = messaging(&c, &rates, &mut warnings);
    let database = database(&c, &services, &mut warnings);
    let (costs, fargate) = costs(&c, &services, &rates, &messaging.broker, database.proxy);
    fleet_warnings(&c, &services, &totals, &mut warnings);
    let corrections = if model == Model::Seed && n == 1_000 && profile == Profile::Prod {
        seed_corrections(
            &totals,
            &messaging,
            p,
            costs.on_demand_total,
            costs.optimized_total,
            fargate.supervisor + fargate.worker + fargate.gateway,
            fargate.worker_spot,
        )
    } else {
        Vec::new()
    };
    Plan {
        agents: n,
        profile,
        model,
        executor,
        region: p.region.clone(),
        prices_date: p.date.clone(),
        autoscaling: autoscaling(&c, &services[1]),
        services,
        totals,
        database,
        messaging,
        costs,
        corrections,
        warnings,
        assumptions: i.assumptions.clone(),
    }
}

/// The supervisor, worker and gateway services, in that order.
fn services(c: &Ctx) -> Vec<Service> {
    let i = c.i;
    let worker_tasks = c.n.div_ceil(i.worker.agents_per_task);
    let gateways = c.sse_clients().div_ceil(i.sse_per_gateway).max(i.gateway.count);
    let service = |name: &str, vcpu: f64, mem: f64, tasks: u64, min: u64, agents: Option<u64>, pool: u64| Service {
        name: name.to_string(),
        vcpu,
        memory_gb: mem,
        tasks,
        min_tasks: min,
        max_tasks: tasks,
        agents_per_task: agents,
        pool_size: pool,
        vcpu_total: round4(vcpu * tasks as f64),
        memory_gb_total: round4(mem * tasks as f64),
    };
    let (sup, gw, w) = (&i.supervisor, &i.gateway, &i.worker);
    let worker_min = if c.profile == Profile::Prod { 1 } else { 0 };
    vec![
        service("supervisor", sup.vcpu, sup.memory_gb, sup.count, sup.count, None, sup.pool),
        service("worker", w.vcpu, w.memory_gb, worker_tasks, worker_min, Some(w.agents_per_task), w.pool),
        service("gateway", gw.vcpu, gw.memory_gb, gateways, gw.count, None, gw.pool),
    ]
}

fn totals(services: &[Service]) -> Totals {
    Totals {
        tasks: services.iter().map(|s| s.tasks).sum(),
        vcpu: round4(services.iter().map(|s| s.vcpu_total).sum()),
        memory_gb: round4(services.iter().map(|s| s.memory_gb_total).sum()),
    }
}

/// The fleet's message rates, unrounded (the plan prints them rounded; prices use these).
struct Rates {
    per_agent_minute: f64,
    normal_per_s: f64,
    normal_kb_s: f64,
    peak_per_s: f64,
    per_day: f64,
    per_month: f64,
}

impl Rates {
    fn of(c: &Ctx) -> Rates {
        let n = c.n as f64;
        let per_agent_minute: f64 = c.i.kinds.iter().map(|k| k.per_agent_minute).sum();
        let normal_per_s = per_agent_minute * n / 60.0;
        let normal_kb_s: f64 = c.i.kinds.iter().map(|k| k.per_agent_minute * k.size_kb).sum::<f64>() * n / 60.0;
        let per_day = normal_per_s * 86_400.0;
        Rates {
            per_agent_minute,
            normal_per_s,
            normal_kb_s,
            peak_per_s: normal_per_s * c.i.peak_factor,
            per_day,
            per_month: per_day * DAYS_PER_MONTH,
        }
    }
}

/// Message rates by kind and the broker that carries them.
fn messaging(c: &Ctx, r: &Rates, warnings: &mut Vec<String>) -> Messaging {
    let i = c.i;
    let kinds: Vec<KindRate> = i
        .kinds
        .iter()
        .map(|k| {
            let per_s = k.per_agent_minute * c.n as f64 / 60.0;
            KindRate {
                kind: k.name.to_string(),
                per_agent_minute: round4(k.per_agent_minute),
                size_kb: k.size_kb,
                normal_per_s: round4(per_s),
                peak_per_s: round4(per_s * i.peak_factor),
                normal_kb_s: round4(per_s * k.size_kb),
            }
        })
        .collect();
    let broker = broker(c, r.peak_per_s);
    if broker.capacity_per_s < r.peak_per_s {
        warnings.push(format!(
            "peak traffic ({} msg/s) is more than the planned broker carries ({} × {}, about {} msg/s): use NATS, or split the fleet across brokers",
            group(r.peak_per_s.round() as i64),
            broker.nodes,
            broker.instance_type,
            group(broker.capacity_per_s as i64)
        ));
    }
    Messaging {
        kinds,
        per_agent_minute: round4(r.per_agent_minute),
        peak_factor: i.peak_factor,
        normal_per_s: round4(r.normal_per_s),
        peak_per_s: round4(r.peak_per_s),
        normal_mb_s: round4(r.normal_kb_s / 1_000.0),
        peak_mb_s: round4(r.normal_kb_s * i.peak_factor / 1_000.0),
        per_day: r.per_day.round(),
        per_month: r.per_month.round(),
        broker,
    }
}

/// The seed's broker type, or the smallest whose planned capacity at the target utilization
/// covers the peak.
fn broker(c: &Ctx, peak_per_s: f64) -> Broker {
    let idx = match &c.i.seed_flat {
        Some(flat) => BROKER_TYPES.iter().position(|t| *t == flat.broker_type).expect("seed broker type is listed"),
        None => {
            let start = if c.profile == Profile::Dev { 0 } else { 1 };
            (start..BROKER_TYPES.len())
                .find(|&idx| BROKER_CAPACITY[idx] * TARGET_UTILIZATION >= peak_per_s)
                .unwrap_or(BROKER_TYPES.len() - 1)
        }
    };
    broker_of(c.profile, idx)
}

/// The database: pools and connections, RDS Proxy, IOPS and storage growth.
fn database(c: &Ctx, services: &[Service], warnings: &mut Vec<String>) -> Database {
    let (i, a) = (c.i, c.i.aurora);
    let pools: Vec<Pool> = services
        .iter()
        .map(|s| Pool {
            service: s.name.clone(),
            per_task: s.pool_size,
            tasks: s.tasks,
            connections: s.pool_size * s.tasks,
        })
        .collect();
    let connections_needed: u64 = pools.iter().map(|p| p.connections).sum();
    let max_connections = |acu: f64| acu * i.connections_per_acu;
    // The seed puts RDS Proxy in front in production only; the measured model wherever the
    // pools could open more connections than the cluster accepts. It speeds up failover and
    // keeps credentials in Secrets Manager; it does not multiplex this store's sessions.
    let proxy = match &i.seed_flat {
        Some(flat) => flat.proxy.is_some(),
        None => c.profile == Profile::Prod || connections_needed as f64 > max_connections(a.max_acu),
    };
    let mut max_acu = a.max_acu;
    if connections_needed as f64 > max_connections(a.max_acu) {
        let acu_for_all = (connections_needed as f64 / i.connections_per_acu).ceil();
        warnings.push(too_many_connections(c, services, connections_needed, acu_for_all));
        if c.model == Model::Measured {
            max_acu = acu_for_all.clamp(a.max_acu, MAX_ACU);
        }
    }
    let (writes, reads) = c.iops();
    let growth = i.storage_growth_gb_per_agent_month * c.n as f64;
    let after_12 = i.storage_base_gb + 12.0 * growth;
    if after_12 > a.storage_gb && growth > 0.0 {
        let months = ((a.storage_gb - i.storage_base_gb) / growth).max(0.0);
        warnings.push(format!(
            "storage grows {} GB a month at the seed's rates and passes the {} profile's {} GB in {:.1} months ({} GB after 12): keep retention short (finished tasks, events) or budget for it",
            if growth >= 1_000.0 { group(growth.round() as i64) } else { format!("{growth:.1}") }, c.profile, a.storage_gb, months, group(after_12.round() as i64)
        ));
    }
    Database {
        engine: "aurora-postgresql (Serverless v2)".to_string(),
        min_acu: a.min_acu,
        max_acu,
        avg_acu: a.avg_acu,
        connections_per_acu: i.connections_per_acu,
        max_connections: max_connections(max_acu),
        pools,
        connections_needed,
        proxy,
        iops: Iops {
            writes: round4(writes),
            reads: round4(reads),
            average: round4(writes + reads),
            peak: round4((writes + reads) * i.peak_factor),
        },
        storage_gb: a.storage_gb,
        storage_growth_gb_month: round4(growth),
        storage_after_12_months_gb: round4(after_12),
    }
}

/// The warning for pools that may open more connections than the profile's max ACU accepts,
/// with the ways out.
fn too_many_connections(c: &Ctx, services: &[Service], needed: u64, acu_for_all: f64) -> String {
    let (i, a) = (c.i, c.i.aurora);
    let max_connections = |acu: f64| acu * i.connections_per_acu;
    let (worker_tasks, gateways) = (services[1].tasks, services[2].tasks);
    let worker_pool_fit = ((max_connections(a.max_acu) * 0.8
        - (i.supervisor.pool * i.supervisor.count + i.gateway.pool * gateways) as f64)
        / worker_tasks as f64)
        .floor();
    let mut fixes = Vec::new();
    if worker_pool_fit >= 2.0 {
        fixes.push(format!("set the workers' `[store] pool_size` to {worker_pool_fit} or less"));
    }
    fixes.push("pack more agents into each worker task".to_string());
    if acu_for_all <= MAX_ACU {
        fixes.push(format!("raise max ACU to {acu_for_all}"));
    } else {
        fixes.push(format!(
            "spread the fleet over several databases (even {MAX_ACU} ACU accepts only {})",
            group(max_connections(MAX_ACU) as i64)
        ));
    }
    format!(
        "the store pools may open {} connections, more than {} ACU accepts ({:.0}); RDS Proxy does not help here, since the store's prepared statements pin every proxy session to a database connection: {}",
        group(needed as i64),
        a.max_acu,
        max_connections(a.max_acu),
        fixes.join(", ")
    )
}

/// The monthly bill: its lines, the optimizations and the alternatives.
fn costs(c: &Ctx, services: &[Service], r: &Rates, broker: &Broker, proxy: bool) -> (Costs, Fargate) {
    let mut lines = Vec::new();
    let on_demand: Vec<f64> = services.iter().map(|s| fargate_line(c, s, &mut lines)).collect();
    lines.push(alb_line(c));
    aurora_lines(c, proxy, &mut lines);
    broker_lines(c, broker, &mut lines);
    lines.push(cloudwatch_line(c));
    let on_demand_total = cents(lines.iter().map(|l| l.monthly).sum());
    let w = &services[1];
    let spot = (w.vcpu * c.p.fargate.spot_vcpu_hour + w.memory_gb * c.p.fargate.spot_gb_hour) * HOURS_PER_MONTH;
    let fargate = Fargate {
        supervisor: on_demand[0],
        worker: on_demand[1],
        gateway: on_demand[2],
        worker_spot: spot * w.tasks as f64,
    };
    let optimizations = optimizations(c, &fargate);
    let optimized_total = cents(on_demand_total + optimizations.iter().map(|l| l.monthly).sum::<f64>());
    let alternatives = alternatives(c, r, w, fargate.worker_spot);
    (Costs { lines, on_demand_total, optimizations, optimized_total, alternatives }, fargate)
}

/// One service's on-demand Fargate line; returns its monthly amount, unrounded.
fn fargate_line(c: &Ctx, s: &Service, lines: &mut Vec<CostLine>) -> f64 {
    let (p, hours) = (c.p, HOURS_PER_MONTH);
    let monthly = (s.vcpu * p.fargate.vcpu_hour + s.memory_gb * p.fargate.gb_hour) * hours * s.tasks as f64;
    lines.push(line(
        &format!("fargate.{}", s.name),
        format!("Fargate on-demand: {} ({} × {} vCPU / {} GB)", s.name, group(s.tasks as i64), s.vcpu, s.memory_gb),
        monthly,
        format!(
            "{} task(s) × ({} vCPU × ${} + {} GB × ${}) per hour × {hours} h",
            group(s.tasks as i64),
            s.vcpu,
            p.fargate.vcpu_hour,
            s.memory_gb,
            p.fargate.gb_hour
        ),
    ));
    monthly
}

/// The gateway's load balancer: LCUs from active SSE connections (3,000 per LCU) and processed
/// bytes (1 GB/h per LCU).
fn alb_line(c: &Ctx) -> CostLine {
    let (p, hours, sse_clients) = (c.p, HOURS_PER_MONTH, c.sse_clients());
    let task_mb_s =
        c.i.kinds
            .iter()
            .find(|k| k.name == "task")
            .map_or(0.0, |k| k.per_agent_minute * k.size_kb * c.n as f64 / 60_000.0);
    let lcu = (sse_clients as f64 / 3_000.0).max(task_mb_s * 3.6).max(1.0);
    line(
        "alb",
        "Application Load Balancer (gateway)",
        (p.alb.hour + lcu * p.alb.lcu_hour) * hours,
        format!("(${} + {lcu:.2} LCU × ${}) per hour × {hours} h; LCUs from {sse_clients} SSE clients and {task_mb_s:.2} MB/s of task events", p.alb.hour, p.alb.lcu_hour),
    )
}

/// Aurora compute, storage, backup, and RDS Proxy and transfer where the plan has them.
fn aurora_lines(c: &Ctx, proxy: bool, lines: &mut Vec<CostLine>) {
    let (a, p, hours) = (c.i.aurora, c.p, HOURS_PER_MONTH);
    lines.push(line(
        "aurora.compute",
        format!("Aurora Serverless v2 compute ({} ACU average)", a.avg_acu),
        a.avg_acu * p.aurora.acu_hour * hours,
        format!("{} ACU × ${} × {hours} h", a.avg_acu, p.aurora.acu_hour),
    ));
    for (key, name, price) in [
        ("aurora.storage", "storage", p.aurora.storage_gb_month),
        ("aurora.backup", "backup", p.aurora.backup_gb_month),
    ] {
        lines.push(line(
            key,
            format!("Aurora {name} ({} GB)", a.storage_gb),
            a.storage_gb * price,
            format!("{} GB × ${price} per GB-month", a.storage_gb),
        ));
    }
    match &c.i.seed_flat {
        Some(flat) => {
            if let Some(v) = flat.proxy {
                lines.push(seed_line("aurora.proxy", "RDS Proxy", v));
            }
            if let Some(v) = flat.db_transfer {
                lines.push(seed_line("aurora.transfer", "Database data transfer", v));
            }
        }
        None if proxy => {
            let acu = a.avg_acu.max(p.aurora.proxy_min_acu);
            lines.push(line(
                "aurora.proxy",
                "RDS Proxy",
                acu * p.aurora.proxy_acu_hour * hours,
                format!("{acu} ACU (at least {}) × ${} × {hours} h", p.aurora.proxy_min_acu, p.aurora.proxy_acu_hour),
            ));
        }
        None => {}
    }
}

/// How a cost line the seed states as an amount, not a rate, says so (its `detail` begins so).
pub(crate) const SEED_AMOUNT: &str = "the seed's monthly amount";

/// A monthly amount the seed states.
fn seed_line(key: &str, item: &str, monthly: f64) -> CostLine {
    line(key, item, monthly, SEED_AMOUNT)
}

/// The Amazon MQ broker, its transfer and its storage.
fn broker_lines(c: &Ctx, broker: &Broker, lines: &mut Vec<CostLine>) {
    let (p, hours) = (c.p, HOURS_PER_MONTH);
    let item =
        format!("Amazon MQ for RabbitMQ ({} × {}, {})", broker.nodes, broker.instance_type, broker.deployment_mode);
    let Some(flat) = &c.i.seed_flat else {
        let hour = p.mq.instance_hour[&broker.instance_type];
        lines.push(line(
            "mq.broker",
            item,
            broker.nodes as f64 * hour * hours,
            format!("{} node(s) × ${hour} × {hours} h", broker.nodes),
        ));
        lines.push(line(
            "mq.storage",
            "Amazon MQ storage",
            broker.nodes as f64 * broker.storage_gb_per_node * p.mq.storage_gb_month,
            format!("{} × {} GB × ${} per GB-month", broker.nodes, broker.storage_gb_per_node, p.mq.storage_gb_month),
        ));
        return;
    };
    lines.push(line(
        "mq.broker",
        item,
        flat.broker,
        format!(
            "{SEED_AMOUNT} (it priced ActiveMQ; RabbitMQ on Amazon MQ is one instance or a 3-node Multi-AZ cluster)"
        ),
    ));
    if flat.broker_transfer > 0.0 {
        lines.push(seed_line("mq.transfer", "Amazon MQ data transfer", flat.broker_transfer));
    }
    if flat.broker_storage > 0.0 {
        lines.push(seed_line("mq.storage", "Amazon MQ storage", flat.broker_storage));
    }
}

/// CloudWatch: the seed's amount, or metrics, dashboards, alarms and logs at list prices.
fn cloudwatch_line(c: &Ctx) -> CostLine {
    const ITEM: &str = "CloudWatch (metrics, dashboards, alarms, logs)";
    if let Some(flat) = &c.i.seed_flat {
        return seed_line("cloudwatch", ITEM, flat.cloudwatch);
    }
    let (cw, p) = (&c.i.cloudwatch, &c.p.cloudwatch);
    let logs_gb = cw.log_gb_per_agent_month * c.n as f64;
    line(
        "cloudwatch",
        ITEM,
        cw.metrics * p.metric_month
            + cw.dashboards * p.dashboard_month
            + cw.alarms * p.alarm_month
            + logs_gb * (p.logs_ingest_gb + p.logs_store_gb_month),
        format!(
            "{} metrics × ${} + {} dashboards × ${} + {} alarms × ${} + {logs_gb:.1} GB logs × (${} + ${})",
            cw.metrics,
            p.metric_month,
            cw.dashboards,
            p.dashboard_month,
            cw.alarms,
            p.alarm_month,
            p.logs_ingest_gb,
            p.logs_store_gb_month
        ),
    )
}

/// Savings: Spot for a share of the workers, a 1-year commitment on the always-on rest, and an
/// off-hours schedule for the workers.
fn optimizations(c: &Ctx, f: &Fargate) -> Vec<CostLine> {
    let i = c.i;
    let commit = c.p.discounts.commitment_1yr;
    let spot_saving = -(f.worker - f.worker_spot) * i.spot_share;
    let committed_base = f.supervisor + f.gateway + f.worker * (1.0 - i.spot_share);
    let worker_after = f.worker_spot * i.spot_share + f.worker * (1.0 - i.spot_share) * (1.0 - commit);
    let off_saving = -worker_after * i.off_hours_share * i.off_hours_reduction;
    vec![
        line(
            "optimize.spot",
            format!("Fargate Spot for {:.0}% of worker tasks", i.spot_share * 100.0),
            spot_saving,
            format!("{:.0}% × (on-demand {} − Spot {})", i.spot_share * 100.0, money(f.worker), money(f.worker_spot)),
        ),
        line(
            "optimize.commitment",
            format!("1-year Compute Savings Plan ({:.0}%) on always-on Fargate", commit * 100.0),
            -committed_base * commit,
            format!("{:.0}% × {} (supervisor, gateway, on-demand workers)", commit * 100.0, money(committed_base)),
        ),
        line(
            "optimize.off_hours",
            format!(
                "Off-hours schedule: workers at {:.0}% capacity for {:.0}% of hours",
                (1.0 - i.off_hours_reduction) * 100.0,
                i.off_hours_share * 100.0
            ),
            off_saving,
            format!(
                "{:.0}% × {:.0}% × {}",
                i.off_hours_share * 100.0,
                i.off_hours_reduction * 100.0,
                money(worker_after)
            ),
        ),
    ]
}

/// Priced instead of a line of the bill: EventBridge for the broker, all workers on Spot.
fn alternatives(c: &Ctx, r: &Rates, worker: &Service, worker_spot: f64) -> Vec<CostLine> {
    let per_million = c.p.eventbridge.events_per_million;
    vec![
        line(
            "alt.eventbridge",
            "EventBridge instead of the Amazon MQ broker",
            r.per_month / 1e6 * per_million,
            format!(
                "{:.1} million events × ${} per million (every message ≤ 64 KB is one event); adds 100–500 ms of latency and no request/reply",
                r.per_month / 1e6,
                per_million
            ),
        ),
        line(
            "alt.fargate_spot",
            "All worker tasks on Fargate Spot",
            worker_spot,
            format!(
                "{} tasks at Spot prices; a reclaim requeues the running tasks (2-minute notice)",
                group(worker.tasks as i64)
            ),
        ),
    ]
}

/// What the operator should know about the fleet as planned: I/O charges, the tasks' packing,
/// quotas, and redundancy in production.
fn fleet_warnings(c: &Ctx, services: &[Service], totals: &Totals, warnings: &mut Vec<String>) {
    let (n, profile, i) = (c.n, c.profile, c.i);
    let (worker_tasks, gateways) = (services[1].tasks, services[2].tasks);
    let (writes, reads) = c.iops();
    let io_month = (writes + reads) * 3_600.0 * HOURS_PER_MONTH / 1e6 * c.p.aurora.io_per_million;
    if io_month >= 1.0 {
        warnings.push(format!(
            "Aurora Standard also bills I/O, left out of the lines above: at {} IOPS that is up to {} a month (reads served from the buffer cache cost nothing); above about a quarter of the Aurora bill, Aurora I/O-Optimized is cheaper",
            group((writes + reads).round() as i64),
            money(io_month)
        ));
    }
    if i.worker.agents_per_task == 1 && n > 100 {
        warnings.push(format!(
            "one Fargate task per agent means {} worker processes, each with its own store pool and bus connection: workers run many agents each (`--max-agents`), so pack agents into larger tasks (the measured model does)",
            group(worker_tasks as i64)
        ));
    }
    if worker_tasks > ECS_TASKS_PER_SERVICE {
        warnings.push(format!(
            "{} worker tasks are more than one ECS service runs ({}): pack more agents into each task or split the workers into several services",
            group(worker_tasks as i64),
            group(ECS_TASKS_PER_SERVICE as i64)
        ));
    }
    warnings.push(format!(
        "the fleet needs {} vCPU of Fargate quota at peak (On-Demand and Spot together) in {}: check Service Quotas for Fargate vCPU before the first burst",
        group(totals.vcpu.ceil() as i64),
        c.p.region
    ));
    if profile != Profile::Prod && n > 100 {
        warnings
            .push(format!("{n} agents on the {profile} profile: the database and broker are sized for at most 100"));
    }
    if profile == Profile::Prod && i.supervisor.count < 2 {
        warnings.push("one supervisor: a standby (another task) takes over leadership within seconds of a failure; add one for production".into());
    }
    if profile == Profile::Prod && gateways < 2 {
        warnings.push(format!(
            "one gateway carries all {} SSE clients: when it restarts every client reconnects at once (resuming from Last-Event-ID); run two behind the load balancer for production",
            group(c.sse_clients() as i64)
        ));
    }
}

/// The workers' autoscaling bounds and policy.
fn autoscaling(c: &Ctx, worker: &Service) -> Autoscaling {
    Autoscaling {
        metric: "desired_slots".to_string(),
        target_utilization: TARGET_UTILIZATION,
        worker_min_tasks: worker.min_tasks,
        worker_max_tasks: worker.max_tasks,
        agents_per_task: c.i.worker.agents_per_task,
        scale_in_cooldown_s: 300,
        scale_out_cooldown_s: 30,
        spot_share: c.i.spot_share,
    }
}

fn broker_of(profile: Profile, idx: usize) -> Broker {
    let (mode, nodes) = match profile {
        Profile::Dev => ("SINGLE_INSTANCE", 1),
        Profile::Staging | Profile::Prod => ("CLUSTER_MULTI_AZ", 3),
    };
    let instance_type = BROKER_TYPES[idx].to_string();
    let storage = if instance_type == "mq.t3.micro" { 20.0 } else { 200.0 };
    // A cluster replicates every message to its 3 nodes: it carries about what one node does.
    Broker {
        engine: "RabbitMQ".to_string(),
        instance_type,
        deployment_mode: mode.to_string(),
        nodes,
        capacity_per_s: BROKER_CAPACITY[idx],
        storage_gb_per_node: storage,
    }
}

/// The seed's 1,000-agent figures that its own inputs do not give.
fn seed_corrections(
    totals: &Totals,
    m: &Messaging,
    p: &Prices,
    on_demand_total: f64,
    optimized_total: f64,
    fargate_od: f64,
    worker_spot: f64,
) -> Vec<Correction> {
    let hours = HOURS_PER_MONTH;
    let seed_own = (502.0 * p.fargate.vcpu_hour + 1_004.0 * p.fargate.gb_hour) * hours;
    vec![
        Correction {
            figure: "total peak capacity".into(),
            seed: "502 vCPU, 1,004 GB".into(),
            planner: format!("{} vCPU, {} GB", totals.vcpu, group(totals.memory_gb as i64)),
            why: "1,000 workers × 0.5 vCPU / 1 GB plus the supervisor and the gateway at 2 vCPU / 4 GB each; the seed counted only one of the two 2-vCPU services".into(),
        },
        Correction {
            figure: "ECS (Fargate) monthly cost".into(),
            seed: "$3,200 (peak capacity)".into(),
            planner: format!("{} on demand", money(fargate_od)),
            why: format!(
                "{} vCPU × ${} + {} GB × ${} per hour × {hours} h at us-east-1 list prices; even the seed's own 502 vCPU / 1,004 GB is {} on demand, and all 1,000 workers on Spot alone are {}",
                totals.vcpu,
                p.fargate.vcpu_hour,
                group(totals.memory_gb as i64),
                p.fargate.gb_hour,
                money(seed_own),
                money(worker_spot)
            ),
        },
        Correction {
            figure: "normal data rate".into(),
            seed: "9.4 MB/s".into(),
            planner: format!("{:.2} MB/s", m.normal_mb_s),
            why: "Σ rate × size = 25 + 25 + 500 + 1 + 9 = 560 KB per agent-minute; × 1,000 agents / 60 s = 9,333 KB/s (peak × 5 = 46.67 MB/s, which the seed rounds to 47)".into(),
        },
        Correction {
            figure: "monthly total".into(),
            seed: "$7,022 (optimized $3,500–4,500)".into(),
            planner: format!("{} on demand, {} optimized", money(on_demand_total), money(optimized_total)),
            why: "the Fargate line above, plus the load balancer the seed leaves out; the seed's optimized range starts from its $3,200 Fargate figure".into(),
        },
    ]
}

/// Formats dollars with thousands separators (used by the renderers).
pub fn format_money(v: f64) -> String {
    money(v)
}

/// Formats a count with thousands separators.
pub fn format_count(v: f64) -> String {
    group(v.round() as i64)
}

/// A figure for reading: thousands grouped, at most two decimals (four below 0.01).
pub fn format_figure(v: f64) -> String {
    let decimals = if v != 0.0 && v.abs() < 0.01 { 4 } else { 2 };
    let s = format!("{:.*}", decimals, v.abs());
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    let frac = frac.trim_end_matches('0');
    let sign = if v < 0.0 && s.chars().any(|c| ('1'..='9').contains(&c)) { "-" } else { "" };
    let whole = group(whole.parse::<i64>().unwrap_or(0));
    if frac.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{frac}")
    }
}

/// A request for the seed model's plan for `n` agents at default prices (unit tests).
#[cfg(test)]
pub(crate) fn seed_request(n: i64) -> Request {
    Request { agents: n, profile: None, model: Model::Seed, baseline: None, executor: None, prices: Prices::default() }
}

/// The seed model's plan for `n` agents at default prices (unit tests).
#[cfg(test)]
pub(crate) fn seed_plan(n: i64) -> Plan {
    plan(&seed_request(n)).expect("a seed plan")
}

#[cfg(test)]
mod tests {
    use super::seed_plan as seed;
    use super::*;

    #[test]
    fn money_and_counts_are_grouped() {
        assert_eq!(money(1_261.7), "$1,261.70");
        assert_eq!(money(18_164.214_9), "$18,164.21");
        assert_eq!(money(0.5), "$0.50");
        assert_eq!(group(1_749_600_000), "1,749,600,000");
        assert_eq!(group(-1_000), "-1,000");
    }

    #[test]
    fn profile_follows_the_seed_loads() {
        assert_eq!(seed(10).profile, Profile::Dev);
        assert_eq!(seed(11).profile, Profile::Staging);
        assert_eq!(seed(100).profile, Profile::Staging);
        assert_eq!(seed(101).profile, Profile::Prod);
    }

    #[test]
    fn bad_counts_are_refused() {
        for n in [-1, 0, MAX_AGENTS + 1] {
            let r = plan(&seed_request(n));
            assert!(matches!(r, Err(Error::Invalid(_))), "{n}");
        }
    }

    #[test]
    fn fargate_sizes_are_the_valid_combinations() {
        let sizes = fargate_sizes();
        assert!(sizes.contains(&(0.5, 1.0)) && sizes.contains(&(4.0, 30.0)) && sizes.contains(&(16.0, 120.0)));
        assert!(!sizes.contains(&(0.5, 5.0)) && !sizes.contains(&(4.0, 31.0)));
    }
}
