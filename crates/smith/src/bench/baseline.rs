//! `smith bench --scenario baseline`: the per-unit costs `smith plan --model measured` sizes
//! from, measured against a running server on this host — memory and CPU per running agent of
//! each executor, events and run time per task, memory per idle SSE connection — written as a
//! JSON document whose field names are the planner's contract.
//!
//! Every figure comes from the server's own `/metrics`: `process_resident_memory_bytes` and
//! `process_cpu_seconds_total` of its process (summed over `--metrics` endpoints when the roles
//! run as separate processes), and `smith_agent_memory_bytes{agent}` and
//! `smith_agent_cpu_seconds_total{agent}` for the agents' own processes (`process` and
//! `claude-code` executors). The worker samples the agent figures every 2 s: a reading waits
//! [`SETTLE`] after the last change it must see, and the agents' CPU rate is taken between the
//! two samples the window's readings saw (`smith_agent_sample_timestamp_seconds`), not between
//! the readings themselves.
//!
//! Besides the window's rate, each executor's CPU is taken over its tasks' whole lives (from
//! before the first submission to after the last end, start-up and teardown included) per
//! minute of agent run time: `cpu_seconds_per_agent_minute`, what an agent costs in CPU whether
//! it is starting, working or idle. A Claude Code CLI spends most of its CPU starting.

use super::{feed, BenchArgs};
use crate::client::{sse_parser, SseFrame};
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{stream, StreamExt};
use serde_json::{json, Map, Value};
use smith_core::Micros;
use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The document's format; the planner checks it.
const VERSION: u64 = 1;
/// How long to wait after the last change a reading must see: the worker samples its agents'
/// processes every 2 s, and a reading is only as fresh as the last sample.
const SETTLE: Duration = Duration::from_millis(2500);
/// Giving up on tasks that should start (or end) when none has for this long.
const STALL: Duration = Duration::from_secs(60);
/// Giving up on reading a task's events until its end after this long.
const TASK_END: Duration = Duration::from_secs(900);

/// One executor to measure: the agent and the input of each of its tasks.
#[derive(Debug, Clone, PartialEq)]
struct Measure {
    agent: String,
    input: Value,
}

/// `AGENT` or `AGENT=INPUT_JSON`. Without an input, `sleep` sleeps `sleep_ms` and any other
/// agent gets `null`.
fn parse_measure(spec: &str, sleep_ms: u64) -> Result<Measure> {
    let (agent, input) = match spec.split_once('=') {
        Some((agent, json)) => {
            let input = serde_json::from_str(json)
                .with_context(|| format!("--measure {spec}: what follows '=' must be JSON (a string is \"quoted\")"))?;
            (agent, input)
        }
        None if spec == "sleep" => (spec, json!(sleep_ms)),
        None => (spec, Value::Null),
    };
    if agent.is_empty() {
        bail!("--measure {spec}: no agent name");
    }
    Ok(Measure { agent: agent.to_string(), input })
}

/// A scrape of Prometheus text: every sample's name, labels (as written) and value.
#[derive(Debug, Default)]
pub(super) struct Scrape(Vec<(String, String, f64)>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut out = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            // labels may hold spaces and braces (route="/v1/tasks/{id}"): the value follows the last '}'
            let (series, value) = match (line.find('{'), line.rfind('}')) {
                (Some(open), Some(close)) if close > open => {
                    ((&line[..open], &line[open + 1..close]), line[close + 1..].trim())
                }
                _ => match line.split_once(char::is_whitespace) {
                    Some((name, value)) => ((name, ""), value.trim()),
                    None => continue,
                },
            };
            // a sample may carry a timestamp after its value
            let Some(Ok(v)) = value.split_ascii_whitespace().next().map(str::parse::<f64>) else { continue };
            out.push((series.0.to_string(), series.1.to_string(), v));
        }
        Scrape(out)
    }

    /// The sum of the series named `name` (with `label="value"` among their labels, if given);
    /// `None` when there is none.
    pub(super) fn sum(&self, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        let want = label.map(|(k, v)| format!("{k}=\"{v}\""));
        let mut total = None;
        for (n, labels, v) in &self.0 {
            if n != name {
                continue;
            }
            if let Some(w) = &want {
                if !labels.split(',').any(|l| l.trim() == w) {
                    continue;
                }
            }
            *total.get_or_insert(0.0) += v;
        }
        total
    }

    fn max(&self, name: &str) -> Option<f64> {
        self.0.iter().filter(|(n, _, _)| n == name).map(|(_, _, v)| *v).reduce(f64::max)
    }
}

/// What the server's processes and one agent's processes hold and have used, at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reading {
    /// Resident memory of the server's processes.
    pub(super) rss: f64,
    /// CPU seconds the server's processes have used.
    pub(super) cpu: f64,
    /// Resident memory of the agent's processes (0 for an in-process executor).
    agent_memory: f64,
    agent_processes: f64,
    /// CPU seconds the agent's processes have used, as of `agent_sampled_at`.
    agent_cpu: f64,
    /// When the worker sampled the agent figures (Unix seconds).
    agent_sampled_at: Option<f64>,
    /// Open SSE streams following a task.
    pub(super) sse_task: f64,
}

/// The server under measurement: its API and its metrics endpoints.
pub(super) struct Target {
    pub(super) http: reqwest::Client,
    pub(super) opts: ClientOpts,
    pub(super) metrics: Vec<String>,
}

impl Target {
    /// The server `opts` names, read through `--metrics` (default SERVER/metrics), with a
    /// client pooling `--concurrency` connections; warns when the server is not on this host.
    pub(super) fn new(a: &BenchArgs, opts: &ClientOpts) -> Result<Target> {
        warn_if_remote(&opts.server);
        let metrics = if a.metrics.is_empty() {
            vec![format!("{}/metrics", opts.server.trim_end_matches('/'))]
        } else {
            a.metrics.clone()
        };
        let http = crate::client::http_builder(opts)?.pool_max_idle_per_host(a.concurrency.max(1)).build()?;
        Ok(Target { http, opts: opts.clone(), metrics })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.opts.server.trim_end_matches('/'))
    }

    pub(super) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.opts.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(super) async fn scrape(&self) -> Result<Scrape> {
        let mut text = String::new();
        for url in &self.metrics {
            let resp =
                self.request(reqwest::Method::GET, url).send().await.with_context(|| format!("cannot read {url}"))?;
            if !resp.status().is_success() {
                bail!("{url} answered {}", resp.status());
            }
            text.push_str(&resp.text().await.with_context(|| format!("cannot read {url}"))?);
            text.push('\n');
        }
        Ok(Scrape::parse(&text))
    }

    pub(super) async fn reading(&self, agent: Option<&str>) -> Result<Reading> {
        let s = self.scrape().await?;
        let Some(rss) = s.sum(crate::procmetrics::RESIDENT_MEMORY, None) else {
            bail!(
                "{} has no {}: the server must run on Linux, on this host",
                self.metrics.join(", "),
                crate::procmetrics::RESIDENT_MEMORY
            );
        };
        let of_agent = |name| agent.and_then(|a| s.sum(name, Some(("agent", a)))).unwrap_or(0.0);
        Ok(Reading {
            rss,
            cpu: s.sum(crate::procmetrics::CPU_SECONDS, None).unwrap_or(0.0),
            agent_memory: of_agent(smith_agents::rss::AGENT_MEMORY),
            agent_processes: of_agent(smith_agents::rss::AGENT_PROCESSES),
            agent_cpu: of_agent(smith_agents::rss::AGENT_CPU),
            agent_sampled_at: s.max(smith_agents::rss::AGENT_SAMPLE_TIME),
            sse_task: s.sum("smith_sse_connections", Some(("kind", "task"))).unwrap_or(0.0),
        })
    }

    pub(super) async fn submit(&self, agent: &str, input: &Value) -> Result<String> {
        let resp = self
            .request(reqwest::Method::POST, &self.url("/v1/tasks"))
            .json(&json!({"agent": agent, "input": input}))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 201 {
            bail!("submitting a {agent} task answered {status}: {body}");
        }
        body["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no id in {body}"))
    }

    /// Cancels every task of `ids` that has not ended (best effort: the run is failing anyway).
    pub(super) async fn cancel_all(&self, ids: &[String], concurrency: usize) {
        stream::iter(ids)
            .for_each_concurrent(concurrency.max(1), |id| async move {
                let url = self.url(&format!("/v1/tasks/{id}/cancel"));
                let _ = self.request(reqwest::Method::POST, &url).json(&json!({})).send().await;
            })
            .await;
    }

    /// `n` tasks of `m`, from `concurrency` submitters; their ids. A failed submission cancels
    /// the ones already made.
    async fn submit_all(&self, m: &Measure, n: usize, concurrency: usize) -> Result<Vec<String>> {
        let ids = Mutex::new(Vec::with_capacity(n));
        let next = AtomicUsize::new(0);
        let (ids_ref, next) = (&ids, &next);
        let submitter = || async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let id = self.submit(&m.agent, &m.input).await?;
                ids_ref.lock().expect("ids").push(id);
            }
            Ok::<(), anyhow::Error>(())
        };
        let results = futures_util::future::join_all((0..concurrency.clamp(1, n)).map(|_| submitter())).await;
        let ids = ids.into_inner().expect("ids");
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            self.cancel_all(&ids, concurrency).await;
            return Err(e);
        }
        Ok(ids)
    }

    /// A task's whole event log, read from its event stream, which the server closes after the
    /// terminal event.
    async fn task_log(&self, id: &str) -> Result<Vec<SseFrame>> {
        let url = self.url(&format!("/v1/tasks/{id}/events"));
        let resp = self.request(reqwest::Method::GET, &url).send().await?.error_for_status()?;
        let mut parser = sse_parser();
        let mut body = resp.bytes_stream();
        let mut frames = Vec::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                frames.extend(parser.feed(&chunk?)?);
            }
            Ok::<(), anyhow::Error>(())
        };
        match tokio::time::timeout(TASK_END, read).await {
            Ok(r) => r?,
            Err(_) => bail!("task {id} had not ended {} s after the measurement", TASK_END.as_secs()),
        }
        Ok(frames)
    }
}

/// One task's log, as the figures need it.
#[derive(Debug, Clone, PartialEq)]
struct TaskRun {
    events: usize,
    /// Its first `task.started`.
    started: Option<Micros>,
    /// Its terminal event: kind and time.
    end: Option<(String, Micros)>,
}

fn event_at(f: &SseFrame) -> Option<Micros> {
    let v: Value = serde_json::from_str(&f.data).ok()?;
    Micros::parse_rfc3339(v["at"].as_str()?)
}

fn task_run(frames: &[SseFrame]) -> TaskRun {
    let started = frames.iter().find(|f| f.event == "task.started").and_then(event_at);
    let end = frames
        .iter()
        .rev()
        .find(|f| matches!(f.event.as_str(), "task.succeeded" | "task.failed" | "task.cancelled" | "task.timed_out"))
        .and_then(|f| Some((f.event.clone(), event_at(f)?)));
    TaskRun { events: frames.len(), started, end }
}

/// The figures of one executor.
#[derive(Debug, Clone)]
struct Figures {
    agents: usize,
    idle: Reading,
    running: Reading,
    /// When the two readings were taken.
    window: (Micros, Micros),
    window_seconds: f64,
    server_cpu_seconds: f64,
    agent_cpu_seconds: f64,
    events_per_task: f64,
    task_seconds: f64,
    outcomes: BTreeMap<String, usize>,
    /// CPU seconds of the server's and the agent's processes from before the submissions to
    /// after the last task ended.
    lifetime_cpu_seconds: f64,
}

impl Figures {
    fn memory_per_agent(&self) -> f64 {
        let running = self.running.rss + self.running.agent_memory;
        let idle = self.idle.rss + self.idle.agent_memory;
        (running - idle) / self.agents as f64
    }

    fn cpu(&self) -> f64 {
        (self.server_cpu_seconds + self.agent_cpu_seconds) / self.window_seconds
    }

    /// Minutes the agents ran, summed over their tasks.
    fn agent_minutes(&self) -> f64 {
        self.task_seconds * self.agents as f64 / 60.0
    }

    /// CPU seconds per minute of agent run time, over the tasks' whole lives.
    fn cpu_per_agent_minute(&self) -> f64 {
        self.lifetime_cpu_seconds / self.agent_minutes()
    }

    fn to_json(&self, m: &Measure, idle_cpu: f64) -> Value {
        let n = self.agents as f64;
        json!({
            "agents": self.agents,
            "memory_bytes_per_agent": self.memory_per_agent(),
            "cpu_per_agent": self.cpu() / n,
            "cpu_seconds_per_agent_minute": self.cpu_per_agent_minute(),
            "events_per_task": self.events_per_task,
            "task_seconds": self.task_seconds,
            "agent_minutes": self.agent_minutes(),
            "lifetime_cpu_seconds": self.lifetime_cpu_seconds,
            "input": m.input,
            "idle_rss_bytes": self.idle.rss as u64,
            "running_rss_bytes": self.running.rss as u64,
            "agent_process_memory_bytes": self.running.agent_memory as u64,
            "agent_processes": self.running.agent_processes,
            "window": [self.window.0, self.window.1],
            "window_seconds": self.window_seconds,
            "server_cpu_seconds": self.server_cpu_seconds,
            "agent_cpu_seconds": self.agent_cpu_seconds,
            "cpu_per_agent_over_idle": (self.cpu() - idle_cpu) / n,
            "outcomes": self.outcomes,
            "at": self.window.1,
        })
    }
}

fn mean(a: Reading, b: Reading) -> Reading {
    let m = |x: f64, y: f64| (x + y) / 2.0;
    Reading {
        rss: m(a.rss, b.rss),
        cpu: m(a.cpu, b.cpu),
        agent_memory: m(a.agent_memory, b.agent_memory),
        agent_processes: m(a.agent_processes, b.agent_processes),
        agent_cpu: m(a.agent_cpu, b.agent_cpu),
        agent_sampled_at: b.agent_sampled_at.or(a.agent_sampled_at),
        sse_task: m(a.sse_task, b.sse_task),
    }
}

/// Bytes as KiB/MiB/GiB, for the summary lines.
pub(super) fn size(bytes: f64) -> String {
    let (v, unit) = match bytes.abs() {
        b if b >= 1024.0 * 1024.0 * 1024.0 => (bytes / (1024.0 * 1024.0 * 1024.0), "GiB"),
        b if b >= 1024.0 * 1024.0 => (bytes / (1024.0 * 1024.0), "MiB"),
        b if b >= 1024.0 => (bytes / 1024.0, "KiB"),
        _ => return format!("{bytes:.0} B"),
    };
    format!("{v:.1} {unit}")
}

/// A server this command can measure is on this host; say so when its address is not a
/// loopback one (it may still be this host's own address).
fn warn_if_remote(server: &str) {
    let host = reqwest::Url::parse(server).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let local = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified());
    if !local {
        eprintln!(
            "smith bench: {server} must run on this host: the figures are its processes' and set against this host's size"
        );
    }
}

/// Says so when the server's RSS before a measurement is well above what it was when this run
/// began: memory freed since (by the tasks of an earlier measurement) is reused by the next one
/// instead of growing RSS, so its figure comes out low.
fn warn_if_grown(what: &str, first: f64, now: f64) {
    if now - first > (1024.0 * 1024.0_f64).max(first * 0.05) {
        eprintln!(
            "smith bench: the server's RSS grew from {} to {} before measuring {what}; memory freed since is reused, so {what}'s figure is low: measure it against a fresh server (--merge gathers such runs in one file)",
            size(first),
            size(now)
        );
    }
}

/// The document `--merge` starts from: the existing `--out` file, or an empty one.
fn previous(path: &std::path::Path) -> Result<Map<String, Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match doc {
        Value::Object(m)
            if m.get("scenario") == Some(&json!("baseline")) && m.get("version") == Some(&json!(VERSION)) =>
        {
            Ok(m)
        }
        _ => bail!("{} is not a baseline of version {VERSION}: --merge keeps what it holds", path.display()),
    }
}

pub async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    if !(a.hold_seconds.is_finite() && a.hold_seconds > 0.0) {
        bail!("--hold-seconds must be positive");
    }
    if a.merge && a.out.is_none() {
        bail!("--merge needs --out: the file to merge into");
    }
    let mut doc = match (&a.out, a.merge) {
        (Some(path), true) => previous(path)?,
        _ => Map::new(),
    };
    if !(a.startup_seconds.is_finite() && a.startup_seconds >= 0.0) {
        bail!("--startup-seconds must be 0 or more");
    }
    let hold = Duration::from_secs_f64(a.hold_seconds);
    let startup = Duration::from_secs_f64(a.startup_seconds);
    // sleep long enough to be running from its start through the start-up wait, the settling
    // and the window, with room for the last of them to start (~1 ms per task on a small machine)
    let sleep_ms = (startup + SETTLE + hold).as_millis() as u64 + 3000 + a.agents as u64;
    let specs = if a.measure.is_empty() { vec!["sleep".to_string()] } else { a.measure.clone() };
    let mut measures: Vec<Measure> = Vec::new();
    for spec in specs.iter().filter(|_| a.agents > 0) {
        let m = parse_measure(spec, sleep_ms)?;
        if measures.iter().any(|x| x.agent == m.agent) {
            bail!("--measure {}: measured twice", m.agent);
        }
        measures.push(m);
    }
    let concurrency = a.concurrency.max(1);
    let t = Target::new(&a, &opts)?;

    // the server at rest: its memory, and the CPU it uses doing nothing, over one window
    let first = t.reading(None).await?;
    let scrape = t.scrape().await?;
    let t0 = Instant::now();
    tokio::time::sleep(hold).await;
    let rest = t.reading(None).await?;
    let idle_cpu = (rest.cpu - first.cpu) / t0.elapsed().as_secs_f64();
    println!("baseline idle: RSS {}, {idle_cpu:.4} vCPU", size(first.rss));

    let executors = doc.entry("executors").or_insert_with(|| json!({}));
    let Some(executors) = executors.as_object_mut() else { bail!("--merge: \"executors\" is not an object") };
    for m in &measures {
        let f = measure(&t, m, a.agents, Window { startup, hold }, concurrency).await?;
        warn_if_grown(&m.agent, first.rss, f.idle.rss);
        let outcomes: Vec<String> = f.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "baseline {}: {} agents: {} per agent (RSS {} idle → {} running, agents' processes {}), {:.5} vCPU per agent ({:.3} vCPU over {:.1} s), {:.3} CPU-s per agent-minute over their lives, {:.1} events per task, {:.2} s per task ({})",
            m.agent,
            f.agents,
            size(f.memory_per_agent()),
            size(f.idle.rss),
            size(f.running.rss),
            size(f.running.agent_memory),
            f.cpu() / f.agents as f64,
            f.cpu(),
            f.window_seconds,
            f.cpu_per_agent_minute(),
            f.events_per_task,
            f.task_seconds,
            outcomes.join(", ")
        );
        executors.insert(m.agent.clone(), f.to_json(m, idle_cpu));
    }

    if a.sse_connections > 0 {
        let (k, before, after) = measure_sse(&t, a.sse_connections, concurrency).await?;
        warn_if_grown("sse", first.rss, before.rss);
        let per_connection = (after.rss - before.rss) / k as f64;
        println!(
            "baseline sse: {k} idle connections following a task: {} per connection (RSS {} → {})",
            size(per_connection),
            size(before.rss),
            size(after.rss)
        );
        doc.insert(
            "sse".into(),
            json!({
                "connections": k,
                "memory_bytes_per_connection": per_connection,
                "follows": "task",
                "idle_rss_bytes": before.rss as u64,
                "rss_bytes": after.rss as u64,
                "at": Micros::now(),
            }),
        );
    }

    let here = crate::procmetrics::Snapshot::read();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fields = json!({
        "scenario": "baseline",
        "version": VERSION,
        "at": Micros::now(),
        "server": opts.server,
        "host": {
            "cpus": cpus,
            "memory_bytes": here.memory_limit_bytes.unwrap_or(0),
            "server_cpu_limit": scrape.max(crate::procmetrics::CPU_LIMIT),
            "server_memory_limit_bytes": scrape.max(crate::procmetrics::MEMORY_LIMIT).map(|b| b as u64),
        },
        "idle_rss_bytes": first.rss as u64,
        "idle_cpu": idle_cpu,
        "hold_seconds": a.hold_seconds,
        "startup_seconds": a.startup_seconds,
        "metrics": t.metrics,
    });
    if let Value::Object(fields) = fields {
        doc.extend(fields);
    }
    if !doc.contains_key("sse") || doc["executors"].as_object().is_none_or(Map::is_empty) {
        eprintln!("smith bench: the baseline has no executor or no sse figures yet: `smith plan` needs both (--merge adds them)");
    }
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(doc))? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// When an executor's readings are taken once all its tasks have started.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Waited first: the agents' processes starting up.
    startup: Duration,
    /// Between the two readings (after [`SETTLE`]).
    hold: Duration,
}

/// `n` tasks of one executor: memory and CPU while all of them run, then their event logs and
/// the CPU they used over their lives. Whatever goes wrong after they were submitted, they are
/// cancelled, so the server is left idle.
async fn measure(t: &Target, m: &Measure, n: usize, w: Window, concurrency: usize) -> Result<Figures> {
    let hold = w.hold;
    let mut started_rx = feed(&t.http, &t.opts, &format!("agent={}&kind=task.started", m.agent)).await?;
    let idle = t.reading(Some(&m.agent)).await?;
    let ids = t.submit_all(m, n, concurrency).await?;
    let run = async {
        let want: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut started: HashSet<String> = HashSet::with_capacity(n);
        while started.len() < n {
            let f = match tokio::time::timeout(STALL, started_rx.recv()).await {
                Ok(Some(f)) => f,
                Ok(None) => bail!("the event feed closed"),
                Err(_) => bail!(
                    "only {} of {n} {} tasks started, none in the last {} s: are the agent's concurrency and the worker's --max-agents at least --agents?",
                    started.len(),
                    m.agent,
                    STALL.as_secs()
                ),
            };
            let v: Value = serde_json::from_str(&f.data).unwrap_or(Value::Null);
            if let Some(id) = v["task_id"].as_str().filter(|id| want.contains(id)) {
                started.insert(id.to_string());
            }
        }
        drop(started_rx);
        tokio::time::sleep(w.startup + SETTLE).await;
        let (r0, t0, window_start) = (t.reading(Some(&m.agent)).await?, Instant::now(), Micros::now());
        tokio::time::sleep(hold).await;
        let (r1, t1) = (t.reading(Some(&m.agent)).await?, Instant::now());
        let window_end = Micros::now();
        let window_seconds = (t1 - t0).as_secs_f64();
        // the agents' CPU between the samples the two readings saw, over the window
        let agent_cpu = r1.agent_cpu - r0.agent_cpu;
        let agent_cpu_seconds = match (r0.agent_sampled_at, r1.agent_sampled_at) {
            (Some(a), Some(b)) if b - a > 0.5 => agent_cpu / (b - a) * window_seconds,
            _ => agent_cpu,
        };

        let logs: Vec<Result<Vec<SseFrame>>> =
            stream::iter(&ids).map(|id| t.task_log(id)).buffer_unordered(concurrency).collect().await;
        let mut runs = Vec::with_capacity(n);
        for log in logs {
            runs.push(task_run(&log?));
        }
        let early = runs.iter().filter(|r| r.end.as_ref().is_some_and(|(_, at)| *at < window_end)).count();
        if early > 0 {
            bail!(
                "{early} of {n} {} tasks ended before the measurement window closed: give them an input that keeps them running longer than {:.0} s after the last one starts",
                m.agent,
                (w.startup + SETTLE + hold).as_secs_f64() + 1.0
            );
        }
        // the agents' last CPU is sampled up to one period after they exit
        tokio::time::sleep(SETTLE).await;
        let end = t.reading(Some(&m.agent)).await?;
        let mut outcomes = BTreeMap::new();
        let mut secs = Vec::with_capacity(n);
        for r in &runs {
            if let Some((kind, end)) = &r.end {
                *outcomes.entry(kind.trim_start_matches("task.").to_string()).or_insert(0) += 1;
                if let Some(start) = r.started {
                    secs.push(end.since(start) as f64 / 1e6);
                }
            }
        }
        Ok(Figures {
            agents: n,
            idle,
            running: mean(r0, r1),
            window: (window_start, window_end),
            window_seconds,
            server_cpu_seconds: r1.cpu - r0.cpu,
            agent_cpu_seconds,
            events_per_task: runs.iter().map(|r| r.events as f64).sum::<f64>() / n as f64,
            task_seconds: secs.iter().sum::<f64>() / secs.len().max(1) as f64,
            outcomes,
            lifetime_cpu_seconds: (end.cpu - idle.cpu) + (end.agent_cpu - idle.agent_cpu),
        })
    };
    let figures = run.await;
    if figures.is_err() {
        t.cancel_all(&ids, concurrency).await;
    }
    figures
}

/// `k` SSE connections following one running `sleep` task's events, idle once its replay is
/// read: server RSS before they open and once they are open. The task is cancelled at the end,
/// which closes them all.
async fn measure_sse(t: &Target, k: usize, concurrency: usize) -> Result<(usize, Reading, Reading)> {
    let anchor = t.submit("sleep", &json!(3_600_000)).await?;
    let anchors = [anchor.clone()];
    let run = async {
        let deadline = Instant::now() + STALL;
        loop {
            let url = t.url(&format!("/v1/tasks/{anchor}"));
            let task: Value = t.request(reqwest::Method::GET, &url).send().await?.error_for_status()?.json().await?;
            match task["status"].as_str() {
                Some("running") => break,
                Some("queued") if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                other => bail!("the sse connections' sleep task is {other:?}, not running"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = t.reading(None).await?;
        // a client of its own, so that every stream is a connection of its own
        let sse = crate::client::http_builder(&t.opts)?.pool_max_idle_per_host(0).build()?;
        let url = t.url(&format!("/v1/tasks/{anchor}/events"));
        let open = |_| {
            let r = match &t.opts.token {
                Some(tok) => sse.get(&url).bearer_auth(tok),
                None => sse.get(&url),
            };
            async move {
                let resp = r.header("accept", "text/event-stream").send().await?.error_for_status()?;
                let mut body = resp.bytes_stream();
                let mut parser = sse_parser();
                // the replay read to `task.started`: from here the stream is idle
                loop {
                    let Some(chunk) = body.next().await else { bail!("an sse stream closed during its replay") };
                    if parser.feed(&chunk?)?.iter().any(|f| f.event == "task.started") {
                        return Ok::<_, anyhow::Error>(body);
                    }
                }
            }
        };
        let streams: Vec<Result<_>> = stream::iter(0..k).map(open).buffer_unordered(concurrency).collect().await;
        let streams: Vec<_> = streams.into_iter().collect::<Result<_>>()?;
        tokio::time::sleep(SETTLE).await;
        let after = t.reading(None).await?;
        if after.sse_task < k as f64 {
            eprintln!("smith bench: the server counts {} task streams open, not {k}", after.sse_task);
        }
        drop(streams);
        Ok((k, before, after))
    };
    let r = run.await;
    t.cancel_all(&anchors, 1).await;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_parse() {
        let m = |agent: &str, input: Value| Some(Measure { agent: agent.into(), input });
        let cases = [
            ("sleep", m("sleep", json!(12_000))),
            ("sleep=500", m("sleep", json!(500))),
            ("stream={\"events\":3}", m("stream", json!({"events": 3}))),
            ("worker", m("worker", Value::Null)),
            ("worker=\"30\"", m("worker", json!("30"))),
            ("worker=30 s", None),
            ("=1", None),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_measure(spec, 12_000).ok(), want, "{spec}");
        }
    }

    #[test]
    fn scrapes_sum_series_by_name_and_label() {
        let text = "# HELP process_resident_memory_bytes x\n# TYPE process_resident_memory_bytes gauge\n\
            process_resident_memory_bytes 1000\n\nprocess_resident_memory_bytes 24\n\
            smith_http_requests_total{route=\"/v1/tasks/{id}\",status=\"200\"} 5\n\
            smith_agent_memory_bytes{agent=\"claude\"} 3.5e6\nsmith_agent_memory_bytes{agent=\"claude-2\"} 7\n\
            smith_agent_cpu_seconds_total{agent=\"claude\"} 1.25 1700000000000\nbroken\n";
        let s = Scrape::parse(text);
        assert_eq!(s.sum("process_resident_memory_bytes", None), Some(1024.0));
        assert_eq!(s.sum("smith_http_requests_total", Some(("status", "200"))), Some(5.0));
        assert_eq!(s.sum("smith_http_requests_total", Some(("route", "/v1/tasks/{id}"))), Some(5.0));
        assert_eq!(s.sum("smith_agent_memory_bytes", Some(("agent", "claude"))), Some(3.5e6));
        assert_eq!(s.sum("smith_agent_cpu_seconds_total", Some(("agent", "claude"))), Some(1.25));
        assert_eq!(s.sum("smith_agent_memory_bytes", Some(("agent", "sleep"))), None);
        assert_eq!(s.sum("broken", None), None);
        assert_eq!(s.max("process_resident_memory_bytes"), Some(1000.0));
    }

    #[test]
    fn a_task_run_is_its_first_start_to_its_end() {
        let f = |event: &str, at: &str| SseFrame {
            id: String::new(),
            event: event.into(),
            data: json!({"kind": event, "at": at}).to_string(),
        };
        let frames = [
            f("task.queued", "2026-11-27T10:00:00.000000Z"),
            f("task.started", "2026-11-27T10:00:01.000000Z"),
            f("task.retrying", "2026-11-27T10:00:02.000000Z"),
            f("task.started", "2026-11-27T10:00:03.000000Z"),
            f("output", "2026-11-27T10:00:03.500000Z"),
            f("task.succeeded", "2026-11-27T10:00:04.250000Z"),
        ];
        let r = task_run(&frames);
        assert_eq!(r.events, 6);
        let (kind, end) = r.end.expect("ended");
        assert_eq!(kind, "task.succeeded");
        assert_eq!(end.since(r.started.expect("started")), 3_250_000);
        assert_eq!(task_run(&frames[..2]).end, None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(512.0), "512 B");
        assert_eq!(size(13_824.0), "13.5 KiB");
        assert_eq!(size(-2048.0), "-2.0 KiB");
        assert_eq!(size(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
    }
}
