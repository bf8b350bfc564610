//! `smith bench`: measures a running gateway end to end — tasks per second through the whole
//! system (submit over HTTP → claim → run → terminal event seen on SSE) and dispatch latency
//! (submit → `task.started`, from the server's own timestamps) at a fixed fraction of that rate.

use crate::client::{SseFrame, SseParser};
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
    /// Concurrent submitters in the throughput run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The agent to run (its input is "x").
    #[arg(long, default_value = "echo")]
    agent: String,
    /// Seconds of the latency run, paced at --latency-fraction of the measured rate.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    #[arg(long, default_value_t = 0.5)]
    latency_fraction: f64,
    /// Write the figures as JSON here (a baseline for `smith plan --model measured`).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
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
        let mut p = SseParser::default();
        let mut body = resp.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            for f in p.push(&chunk) {
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

async fn submit(http: &reqwest::Client, opts: &ClientOpts, agent: &str) -> Result<(String, Micros)> {
    let mut r = http.post(format!("{}/v1/tasks", opts.server.trim_end_matches('/'))).json(&json!({"agent": agent, "input": "x"}));
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

pub async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency * 2).build()?;

    // Throughput: N tasks as fast as C submitters go; done when N terminal events were seen.
    let mut done_rx = feed(&http, &opts, &format!("agent={}&kind=task.succeeded,task.failed", a.agent)).await?;
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for _ in 0..a.concurrency {
        let (http, opts, agent, next, errors) = (http.clone(), opts.clone(), a.agent.clone(), next.clone(), errors.clone());
        let n = a.tasks;
        submitters.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if submit(&http, &opts, &agent).await.is_err() {
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
    println!("throughput: {expect} {} tasks end to end in {:.2} s = {tps:.0} tasks/s (submits {submit_rate:.0}/s, {errs} submit errors, {failed} failed)", a.agent, total.as_secs_f64());

    // Latency: paced submits at a fraction of that rate; submit → task.started from server timestamps.
    let rate = (tps * a.latency_fraction).max(1.0);
    let mut started_rx = feed(&http, &opts, &format!("agent={}&kind=task.started", a.agent)).await?;
    let created: Arc<Mutex<HashMap<String, Micros>>> = Arc::default();
    let total_tasks = (rate * a.latency_seconds as f64) as u64;
    let t0 = Instant::now();
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..total_tasks {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (http, opts, agent, created) = (http.clone(), opts.clone(), a.agent.clone(), created.clone());
        inflight.spawn(async move {
            if let Ok((id, at)) = submit(&http, &opts, &agent).await {
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
                let (Some(id), Some(at)) = (v["task_id"].as_str(), v["at"].as_str().and_then(Micros::parse_rfc3339)) else { continue };
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
    let (p50, p99, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or(f64::NAN));
    println!(
        "dispatch latency at {rate:.0} tasks/s ({} tasks): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        latencies.len()
    );
    if let Some(path) = &a.out {
        let doc = json!({
            "at": Micros::now(),
            "server": opts.server,
            "agent": a.agent,
            "throughput": {"tasks": expect, "seconds": total.as_secs_f64(), "tasks_per_s": tps, "submits_per_s": submit_rate, "concurrency": a.concurrency},
            "dispatch_latency_ms": {"rate": rate, "samples": latencies.len(), "p50": p50, "p99": p99, "max": max},
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
