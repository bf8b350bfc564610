//! `smith bench`: measures a running gateway end to end — tasks per second through the whole
//! system (submit over HTTP → claim → run → terminal event seen on SSE) and dispatch latency
//! (submit → `task.started`, from the server's own timestamps) at a fixed fraction of that rate;
//! and the other scenarios of `--scenario`, among them `baseline` (the per-unit costs
//! `smith plan --model measured` sizes from).

mod approvals;
mod baseline;
mod delayed;
mod fanout;
mod schedules;
mod webhooks;

use crate::client::{sse_parser, SseFrame};
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use smith_core::Micros;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Tasks in the throughput run.
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// Concurrent submitters in the throughput run (baseline: submitters, event-log readers and
    /// SSE connections being opened at once).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The agent to run (its input is "x"; default echo). fanout: the agent its queued tasks
    /// name, which no worker may serve (default stream: run the gateway with no worker).
    #[arg(long)]
    agent: Option<String>,
    /// tasks scenario: give the tasks concurrency keys `k0` … `k<N-1>` in turn (the agent
    /// needs `max_per_key`: docs/concurrency.md); 0: no keys.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// Seconds of the latency run, paced at --latency-fraction of the measured rate.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    #[arg(long, default_value_t = 0.5)]
    latency_fraction: f64,
    /// Pace the latency run at exactly this many tasks/s instead (e.g. 3375, the seed's peak).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Write the figures as JSON here (`--scenario baseline`: the file `smith plan --model
    /// measured --baseline FILE` reads).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// `tasks`: end-to-end tasks/s and dispatch latency. `events`: `stream` tasks whose output
    /// events are made durable and delivered to one SSE reader per task. `burst`: --tasks
    /// `sleep` tasks of --sleep-ms submitted at once; the time until all of them run (the
    /// autoscaled pool's 0 → N). `baseline`: for each --measure agent, memory and CPU per
    /// running agent with --agents running, events and run time per task; then memory per idle
    /// SSE connection (--sse-connections). The server must run on this host: its figures are
    /// read from its /metrics. `fanout`: --clients SSE streams, each following its own task,
    /// get --rate events/s each, published on --bus by this process in place of workers: one
    /// gateway's delivery latency, memory per connection and CPU (docs in bench/fanout.rs).
    /// `approvals`: --tasks `sleep` tasks all parked at once for a person's answer (each asks
    /// through /mcp as it starts): memory and busy slots while they wait, answers/s.
    /// `webhooks`: a receiver in this process subscribed to every event, `echo` tasks paced to
    /// add --rate events/s to the feed for --seconds: deliveries/s and commit → receiver latency
    /// (the server needs `[webhooks] allow_private = true`; docs in bench/webhooks.rs).
    /// `delayed`: --tasks tasks submitted with a `run_at` each, spread over --seconds once all
    /// are submitted: memory while all are scheduled, and how late after its `run_at` each was
    /// queued and started.
    /// `schedules`: --tasks schedules of `echo`, each every minute at its own second, watched for
    /// --seconds: fire accuracy (task created − fire time) p50/p99, missing or repeated fires,
    /// and the server's memory (docs in bench/schedules.rs).
    #[arg(long, default_value = "tasks")]
    scenario: String,
    /// events scenario: output events per task.
    #[arg(long, default_value_t = 1000)]
    events: u64,
    /// events scenario: bytes per output event.
    #[arg(long, default_value_t = 14 * 1024)]
    bytes: u64,
    /// events scenario: milliseconds between a task's events (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// burst scenario: how long each `sleep` task sleeps (long enough for all to run at once).
    #[arg(long, default_value_t = 60_000)]
    sleep_ms: u64,
    /// baseline scenario: an agent to measure, AGENT or AGENT=INPUT_JSON (repeatable; measured
    /// in turn; default `sleep`). AGENT is an agent the server defines (its name is the
    /// executor's name in --out) and INPUT each task's input. Its tasks must run from their
    /// start through the hold window: `sleep` without an input sleeps that long (the startup
    /// wait, the hold, 5.5 s and 1 ms per agent); any other agent without one gets `null`. A
    /// Claude Code agent (`executor = "claude-code"` on the server, its `ANTHROPIC_BASE_URL`
    /// set to bench/mock_llm.py, `allowed_tools = ["Bash(echo:*)"]`) is measured working on a
    /// multi-turn task with `claude-code='"work mock:deltas=25,interval=1,tools=3"'`: four
    /// 25 s turns, the first three ending in a Bash tool call (bench/baseline.sh runs it all).
    #[arg(long, value_name = "AGENT[=INPUT_JSON]")]
    measure: Vec<String>,
    /// baseline scenario: tasks of each measured agent running at once (its concurrency and the
    /// worker's --max-agents must allow them); 0 measures no agent.
    #[arg(long, default_value_t = 200)]
    agents: usize,
    /// baseline scenario: seconds over which CPU is measured once all --agents run (also the
    /// idle server's CPU window).
    #[arg(long, default_value_t = 10.0)]
    hold_seconds: f64,
    /// baseline scenario: seconds to wait once every task of a measured agent has started
    /// (been claimed) before the measurement window: the time its processes take to be up and
    /// working. Claude Code CLIs take ~1.6 CPU-seconds each to start, so N of them need about
    /// N × 0.8 s on 2 cores.
    #[arg(long, default_value_t = 0.0)]
    startup_seconds: f64,
    /// baseline scenario: idle SSE connections opened to measure memory per connection (0: none).
    #[arg(long, default_value_t = 1000)]
    sse_connections: usize,
    /// baseline scenario: a /metrics endpoint of the server's processes (repeatable; default
    /// SERVER/metrics). With the roles in separate processes on this host, give the gateway's
    /// and each worker's (`--metrics-listen`): their figures are summed.
    #[arg(long, value_name = "URL")]
    metrics: Vec<String>,
    /// baseline scenario: keep what the existing --out file holds and replace only what this
    /// run measures (executors by name, the SSE figure). RSS deltas are exact only on a server
    /// that has not freed memory it could reuse: measure each executor and the SSE connections
    /// against a fresh server and gather them with --merge.
    #[arg(long)]
    merge: bool,
    /// fanout scenario: SSE clients, each following its own task.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// fanout scenario: events per second to each client (at most 100). webhooks: events per
    /// second added to the feed.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// fanout and webhooks scenarios: seconds measured (fanout: after the warm-up). delayed: the
    /// window the tasks' `run_at`s spread over.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// fanout scenario: seconds of events before the measurement.
    #[arg(long, default_value_t = 5.0)]
    warmup_seconds: f64,
    /// fanout scenario: bytes of text in each event.
    #[arg(long, default_value_t = 200)]
    event_bytes: usize,
    /// fanout scenario: the gateway's bus, which this process publishes the events on.
    #[arg(long, value_name = "URL")]
    bus: Option<String>,
}

/// Follows `/v1/events` with a filter and hands each frame to a channel.
async fn feed(http: &reqwest::Client, opts: &ClientOpts, query: &str) -> Result<mpsc::UnboundedReceiver<SseFrame>> {
    let mut r = http.get(format!("{}/v1/events?{query}", opts.server.trim_end_matches('/')));
    if let Some(t) = &opts.token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.context("cannot open the event feed")?;
    if !resp.status().is_success() {
        bail!("event feed answered {}", resp.status());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut p = sse_parser();
        let mut body = resp.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            let Ok(frames) = p.feed(&chunk) else { return };
            for f in frames {
                if tx.send(f).is_err() {
                    return;
                }
            }
        }
    });
    // let the gateway hook the stream in before the first submit
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(rx)
}

/// The concurrency key of the `i`th task under `--keys n`.
fn key_of(i: u64, keys: u64) -> Option<String> {
    (keys > 0).then(|| format!("k{}", i % keys))
}

async fn submit(
    http: &reqwest::Client,
    opts: &ClientOpts,
    agent: &str,
    key: Option<String>,
) -> Result<(String, Micros)> {
    let mut body = json!({"agent": agent, "input": "x"});
    if let Some(k) = key {
        body["concurrency_key"] = json!(k);
    }
    let mut r = http.post(format!("{}/v1/tasks", opts.server.trim_end_matches('/'))).json(&body);
    if let Some(t) = &opts.token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await?;
    if resp.status().as_u16() != 201 {
        bail!("submit answered {}", resp.status());
    }
    let v: Value = resp.json().await?;
    let id = v["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_string();
    let created = v["created_at"].as_str().and_then(Micros::parse_rfc3339).ok_or_else(|| anyhow!("no created_at"))?;
    Ok((id, created))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(mut a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let default_agent = if a.scenario == "fanout" { "stream" } else { "echo" };
    a.agent.get_or_insert_with(|| default_agent.to_string());
    match a.scenario.as_str() {
        "tasks" => tasks(a, opts).await,
        "events" => events(a, opts).await,
        "burst" => burst(a, opts).await,
        "baseline" => baseline::run(a, opts).await,
        "fanout" => fanout::run(a, opts).await,
        "approvals" => approvals::run(a, opts).await,
        "webhooks" => webhooks::run(a, opts).await,
        "delayed" => delayed::run(a, opts).await,
        "schedules" => schedules::run(a, opts).await,
        other => {
            bail!(
                "unknown --scenario {other:?}: use tasks, events, burst, baseline, fanout, approvals, webhooks, delayed \
                 or schedules"
            )
        }
    }
}

/// `--tasks` `stream` tasks of `--events` events of `--bytes` each, every task followed by its
/// own SSE reader from the start: delivered output events/s, and delivery latency (the event's
/// commit-time `at` to its arrival at the reader; same machine, same clock).
async fn events(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let http = crate::client::http_builder(&opts)?.pool_max_idle_per_host(a.tasks as usize * 2).build()?;
    let input = json!({"events": a.events, "bytes": a.bytes, "interval_ms": a.interval_ms});
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..a.tasks {
        let mut r = http
            .post(format!("{}/v1/tasks", opts.server.trim_end_matches('/')))
            .json(&json!({"agent": "stream", "input": input}));
        if let Some(t) = &opts.token {
            r = r.bearer_auth(t);
        }
        let v: Value = r.send().await?.error_for_status()?.json().await?;
        let id = v["id"].as_str().ok_or_else(|| anyhow!("no id"))?.to_string();
        let (http, opts) = (http.clone(), opts.clone());
        readers.spawn(async move { read_stream(&http, &opts, &id).await });
    }
    let mut latencies: Vec<f64> = Vec::new();
    let mut delivered = 0u64;
    while let Some(r) = readers.join_next().await {
        let (n, mut l) = r??;
        delivered += n;
        latencies.append(&mut l);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(|x, y| x.total_cmp(y));
    let rate = delivered as f64 / secs;
    let (p50, p99, max) =
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or(f64::NAN));
    println!(
        "events: {delivered} output events of {} B from {} tasks delivered to {} SSE readers in {secs:.2} s = {rate:.0} events/s ({:.1} MB/s); delivery latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        a.bytes, a.tasks, a.tasks, rate * a.bytes as f64 / 1e6
    );
    if let Some(path) = &a.out {
        let doc = json!({"at": Micros::now(), "server": opts.server, "scenario": "events", "tasks": a.tasks, "events_per_task": a.events,
            "bytes": a.bytes, "delivered": delivered, "seconds": secs, "events_per_s": rate, "latency_ms": {"p50": p50, "p99": p99, "max": max}});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A burst of `sleep` tasks: from the first submission to the moment the last of them started
/// (the server's `task.started` time; same machine, same clock), and how long after the last
/// submission was acknowledged that was.
async fn burst(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let http = crate::client::http_builder(&opts)?.pool_max_idle_per_host(a.concurrency).build()?;
    let mut started_rx = feed(&http, &opts, "agent=sleep&kind=task.started").await?;
    let input = json!(a.sleep_ms);
    let first = Micros::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (http, opts, next, input) = (http.clone(), opts.clone(), next.clone(), input.clone());
        let n = a.tasks;
        submitters.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let mut r = http
                    .post(format!("{}/v1/tasks", opts.server.trim_end_matches('/')))
                    .json(&json!({"agent": "sleep", "input": input}));
                if let Some(t) = &opts.token {
                    r = r.bearer_auth(t);
                }
                let resp = r.send().await?;
                if resp.status().as_u16() != 201 {
                    bail!("submit answered {}", resp.status());
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(r) = submitters.join_next().await {
        r??;
    }
    let acked = Micros::now();
    let mut seen = 0u64;
    let mut last_start = first;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < a.tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(f)) = tokio::time::timeout(left, started_rx.recv()).await else {
            bail!("only {seen} of {} tasks started within 600 s", a.tasks);
        };
        let at = f.data.find("\"at\":\"").and_then(|i| Micros::parse_rfc3339(&f.data[i + 6..i + 6 + 27]));
        if let Some(at) = at {
            last_start = last_start.max(at);
        }
        seen += 1;
    }
    let secs = |from: Micros, to: Micros| to.since(from) as f64 / 1e6;
    let (submit_s, to_running_s, lag_s) = (secs(first, acked), secs(first, last_start), secs(acked, last_start));
    println!(
        "burst: {} sleep tasks submitted in {submit_s:.3} s; all {} running {to_running_s:.3} s after the first submission ({lag_s:.3} s after the last was acknowledged)",
        a.tasks, a.tasks
    );
    if let Some(path) = &a.out {
        let doc = json!({"at": Micros::now(), "server": opts.server, "scenario": "burst", "tasks": a.tasks,
            "submit_seconds": submit_s, "to_running_seconds": to_running_s, "after_last_ack_seconds": lag_s});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows one task to its end; returns its output events and their delivery latencies (ms).
async fn read_stream(http: &reqwest::Client, opts: &ClientOpts, id: &str) -> Result<(u64, Vec<f64>)> {
    let mut r = http.get(format!("{}/v1/tasks/{id}/events", opts.server.trim_end_matches('/')));
    if let Some(t) = &opts.token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await?.error_for_status()?;
    let mut p = sse_parser();
    let mut body = resp.bytes_stream();
    let mut lat = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let now = Micros::now();
        for f in p.feed(&chunk)? {
            if f.event == "output" {
                let at = f.data.find("\"at\":\"").and_then(|i| Micros::parse_rfc3339(&f.data[i + 6..i + 6 + 27]));
                if let Some(at) = at {
                    lat.push(now.since(at) as f64 / 1000.0);
                }
            } else if f.event.starts_with("task.")
                && f.event != "task.queued"
                && f.event != "task.started"
                && f.event != "task.retrying"
            {
                return Ok((lat.len() as u64, lat));
            }
        }
    }
    bail!("stream of {id} ended before its terminal event")
}

async fn tasks(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let http = crate::client::http_builder(&opts)?.pool_max_idle_per_host(a.concurrency * 2).build()?;

    // Throughput: N tasks as fast as C submitters go; done when N terminal events were seen.
    let mut done_rx = feed(
        &http,
        &opts,
        &format!("agent={}&kind=task.succeeded,task.failed", a.agent.as_deref().unwrap_or_default()),
    )
    .await?;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for _ in 0..a.concurrency {
        let (http, opts, agent, next, errors) =
            (http.clone(), opts.clone(), a.agent.clone().unwrap_or_default(), next.clone(), errors.clone());
        let (n, keys) = (a.tasks, a.keys);
        submitters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if submit(&http, &opts, &agent, key_of(i, keys)).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for s in submitters {
        s.await?;
    }
    let submitted_in = started.elapsed();
    let errs = errors.load(Ordering::Relaxed);
    let expect = a.tasks - errs;
    let mut seen = 0u64;
    let mut failed = 0u64;
    while seen < expect {
        match tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await {
            Ok(Some(f)) => {
                seen += 1;
                if f.event == "task.failed" {
                    failed += 1;
                }
            }
            _ => bail!("only {seen} of {expect} tasks finished within 30 s of the last event"),
        }
    }
    let total = started.elapsed();
    let tps = expect as f64 / total.as_secs_f64();
    let submit_rate = a.tasks as f64 / submitted_in.as_secs_f64();
    drop(done_rx);
    println!("throughput: {expect} {} tasks end to end in {:.2} s = {tps:.0} tasks/s (submits {submit_rate:.0}/s, {errs} submit errors, {failed} failed)", a.agent.as_deref().unwrap_or_default(), total.as_secs_f64());

    // Latency: paced submits at a fraction of that rate; submit → task.started from server timestamps.
    let rate = a.latency_rate.unwrap_or(tps * a.latency_fraction).max(1.0);
    let mut started_rx =
        feed(&http, &opts, &format!("agent={}&kind=task.started", a.agent.as_deref().unwrap_or_default())).await?;
    let created: Arc<Mutex<HashMap<String, Micros>>> = Arc::default();
    let total_tasks = (rate * a.latency_seconds as f64) as u64;
    let t0 = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..total_tasks {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (http, opts, agent, created, keys) =
            (http.clone(), opts.clone(), a.agent.clone().unwrap_or_default(), created.clone(), a.keys);
        inflight.spawn(async move {
            if let Ok((id, at)) = submit(&http, &opts, &agent, key_of(i, keys)).await {
                created.lock().expect("lock").insert(id, at);
            }
        });
    }
    while inflight.join_next().await.is_some() {}
    let want = created.lock().expect("lock").len();
    let mut latencies = Vec::with_capacity(want);
    let mut starts: HashMap<String, Micros> = HashMap::new();
    while starts.len() < want {
        match tokio::time::timeout(Duration::from_secs(30), started_rx.recv()).await {
            Ok(Some(f)) => {
                let v: Value = serde_json::from_str(&f.data).unwrap_or(Value::Null);
                let (Some(id), Some(at)) = (v["task_id"].as_str(), v["at"].as_str().and_then(Micros::parse_rfc3339))
                else {
                    continue;
                };
                starts.entry(id.to_string()).or_insert(at);
            }
            _ => break,
        }
    }
    for (id, c) in created.lock().expect("lock").iter() {
        if let Some(s) = starts.get(id) {
            latencies.push(s.since(*c) as f64 / 1000.0);
        }
    }
    latencies.sort_by(|x, y| x.total_cmp(y));
    let (p50, p99, max) =
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or(f64::NAN));
    println!(
        "dispatch latency at {rate:.0} tasks/s ({} tasks): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        latencies.len()
    );
    if let Some(path) = &a.out {
        let doc = json!({
            "at": Micros::now(),
            "server": opts.server,
            "agent": a.agent.as_deref().unwrap_or_default(),
            "throughput": {"tasks": expect, "seconds": total.as_secs_f64(), "tasks_per_s": tps, "submits_per_s": submit_rate, "concurrency": a.concurrency},
            "dispatch_latency_ms": {"rate": rate, "samples": latencies.len(), "p50": p50, "p99": p99, "max": max},
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
