//! `--scenario delayed`: --tasks tasks of --agent submitted with a `run_at` each, spread evenly
//! over --seconds that begin once every task can have been submitted; all of them wait
//! `scheduled` at once. Measured: the server's memory with every task scheduled, and how close
//! to its `run_at` each task was queued (its `task.queued` event's commit time) and started.
//! The server must run on this host (its memory comes from /metrics).

use super::baseline::{Scrape, Target};
use super::{feed, percentile, BenchArgs};
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use smith_core::Micros;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Submissions per second this scenario plans for when it picks the first `run_at`.
const PLANNED_RATE: f64 = 500.0;

fn rss(s: &Scrape) -> Result<f64> {
    s.sum(crate::procmetrics::RESIDENT_MEMORY, None)
        .ok_or_else(|| anyhow!("the server's /metrics has no {}", crate::procmetrics::RESIDENT_MEMORY))
}

pub(super) async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let t = Arc::new(Target::new(&a, &opts)?);
    let agent = a.agent.clone().unwrap_or_else(|| "echo".into());
    let n = a.tasks as usize;
    let window = Duration::from_secs_f64(a.seconds.max(1.0));
    let rss_before = rss(&t.scrape().await?)?;
    let mut feed = feed(&t.http, &opts, &format!("agent={agent}&kind=task.queued,task.started")).await?;
    // the first run_at leaves room to submit them all at the planned rate
    let first = Micros::now().plus(Duration::from_secs_f64(10.0 + n as f64 / PLANNED_RATE));
    let step = window.as_micros() as i64 / n.max(1) as i64;
    let run_at = move |i: usize| Micros(first.0 + step * i as i64);

    let begun = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut due: HashMap<String, Micros> = HashMap::with_capacity(n);
    let mut collect = |done: Result<Result<(String, Micros)>, tokio::task::JoinError>| -> Result<()> {
        let (id, at) = done??;
        due.insert(id, at);
        Ok(())
    };
    for i in 0..n {
        let (t, gate, agent) = (t.clone(), gate.clone(), agent.clone());
        let permit = gate.acquire_owned().await?;
        submitters.spawn(async move {
            let _permit = permit;
            let at = run_at(i);
            let body = json!({"agent": agent, "input": i, "run_at": at});
            let r = t.request(reqwest::Method::POST, &t.url("/v1/tasks")).json(&body).send().await?;
            if r.status().as_u16() != 201 {
                bail!("submit answered {}", r.status());
            }
            let task: Value = r.json().await?;
            let id = task["id"].as_str().ok_or_else(|| anyhow!("no id in {task}"))?.to_string();
            Ok::<_, anyhow::Error>((id, at))
        });
        while let Some(done) = submitters.try_join_next() {
            collect(done)?;
        }
    }
    while let Some(done) = submitters.join_next().await {
        collect(done)?;
    }
    let submitted = begun.elapsed().as_secs_f64();
    if Micros::now() >= first {
        bail!("submitting took {submitted:.1} s, past the first run_at: use fewer --tasks");
    }
    // every task is scheduled now: the server's memory holding them (gauges sampled every few s)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scheduled = t.scrape().await?;
    let rss_scheduled = rss(&scheduled)?;
    let gauge = scheduled.sum("smith_tasks_scheduled", None).unwrap_or(f64::NAN);

    let (mut queued_late, mut started_late) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let deadline = tokio::time::Instant::now()
        + Duration::from_micros(first.since(Micros::now()) as u64)
        + window
        + Duration::from_secs(120);
    while started_late.len() < n {
        let frame = tokio::select! {
            f = feed.recv() => f.ok_or_else(|| anyhow!("the event feed ended"))?,
            _ = tokio::time::sleep_until(deadline) => bail!("only {} of {n} tasks started in time", started_late.len()),
        };
        let v: Value = serde_json::from_str(&frame.data).context("a feed frame")?;
        let Some(at) = v["task_id"].as_str().and_then(|id| due.get(id)) else { continue };
        let when = v["at"].as_str().and_then(Micros::parse_rfc3339).ok_or_else(|| anyhow!("no time in {v}"))?;
        let late_ms = (when.0 - at.0) as f64 / 1e3;
        match v["kind"].as_str() {
            Some("task.queued") => queued_late.push(late_ms),
            Some("task.started") => started_late.push(late_ms),
            _ => {}
        }
    }
    let rss_after = rss(&t.scrape().await?)?;
    let sort = |v: &mut Vec<f64>| v.sort_by(|a, b| a.total_cmp(b));
    sort(&mut queued_late);
    sort(&mut started_late);
    let early = started_late.first().copied().unwrap_or(0.0);
    println!(
        "delayed: {n} tasks submitted in {submitted:.1} s ({:.0}/s), all scheduled at once (gauge {gauge}); \
         server RSS {:.1} MiB ({:+.1} MiB, {:.2} KiB per scheduled task)",
        n as f64 / submitted,
        rss_scheduled / 1048576.0,
        (rss_scheduled - rss_before) / 1048576.0,
        (rss_scheduled - rss_before) / 1024.0 / n as f64,
    );
    println!(
        "delayed: queued after run_at p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; started after run_at p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms (earliest {early:.1} ms); fires spread over {:.0} s ({:.0}/s); RSS after {:.1} MiB",
        percentile(&queued_late, 0.5),
        percentile(&queued_late, 0.99),
        queued_late.last().copied().unwrap_or(f64::NAN),
        percentile(&started_late, 0.5),
        percentile(&started_late, 0.99),
        started_late.last().copied().unwrap_or(f64::NAN),
        window.as_secs_f64(),
        n as f64 / window.as_secs_f64(),
        rss_after / 1048576.0,
    );
    if early < 0.0 {
        bail!("a task started {:.1} ms before its run_at", -early);
    }
    if let Some(path) = &a.out {
        let doc = json!({"at": Micros::now(), "server": opts.server, "scenario": "delayed", "tasks": n,
            "window_s": window.as_secs_f64(), "submitted_s": submitted, "rss_before": rss_before,
            "rss_scheduled": rss_scheduled, "rss_after": rss_after,
            "queued_late_ms": {"p50": percentile(&queued_late, 0.5), "p99": percentile(&queued_late, 0.99)},
            "started_late_ms": {"p50": percentile(&started_late, 0.5), "p99": percentile(&started_late, 0.99)}});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
