//! `--scenario approvals`: --tasks `sleep` tasks, each parked for a person's answer as soon as
//! it starts — this process asks for it through the platform's MCP endpoint (`ask_human`, as
//! the task) — until all of them wait at once; then the server's memory and its busy agent slots
//! (a waiting task holds none), and how fast people's answers are taken. The tasks are
//! cancelled at the end. The server must run on this host (its figures come from /metrics).

use super::baseline::{Scrape, Target};
use super::{feed, percentile, BenchArgs};
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use smith_core::Micros;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long the whole run may take before it gives up.
const DEADLINE: Duration = Duration::from_secs(900);

fn rss(s: &Scrape) -> Result<f64> {
    s.sum(crate::procmetrics::RESIDENT_MEMORY, None)
        .ok_or_else(|| anyhow!("the server's /metrics has no {}", crate::procmetrics::RESIDENT_MEMORY))
}

fn busy(s: &Scrape) -> f64 {
    s.sum("smith_agent_slots", Some(("state", "busy"))).unwrap_or(0.0)
}

/// Asks a person as running task `id`; the request's id.
async fn park(t: &Target, id: &str) -> Result<String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "ask_human", "arguments": {"question": "May the bench go on?"}}});
    let resp = t.request(reqwest::Method::POST, &t.url("/mcp")).header("x-smith-task", id).json(&body).send().await?;
    let v: Value = resp.error_for_status()?.json().await?;
    let got = &v["result"]["structuredContent"];
    got["approval_id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("task {id} did not park: {v}"))
}

pub(super) async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let t = Arc::new(Target::new(&a, &opts)?);
    let n = a.tasks as usize;
    let rss_before = rss(&t.scrape().await?)?;
    let mut started = feed(&t.http, &opts, "agent=sleep&kind=task.started").await?;
    let begun = Instant::now();
    let deadline = tokio::time::Instant::now() + DEADLINE;

    // submit every task (sleeping far longer than the run), a few submitters at once
    let mut submitters = tokio::task::JoinSet::new();
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    for _ in 0..n {
        let (t, gate) = (t.clone(), gate.clone());
        let permit = gate.acquire_owned().await?;
        submitters.spawn(async move {
            let _permit = permit;
            let body = json!({"agent": "sleep", "input": 3_600_000});
            let r = t.request(reqwest::Method::POST, &t.url("/v1/tasks")).json(&body).send().await?;
            if r.status().as_u16() != 201 {
                bail!("submit answered {}", r.status());
            }
            Ok::<_, anyhow::Error>(())
        });
        while let Some(done) = submitters.try_join_next() {
            done??;
        }
    }
    while let Some(done) = submitters.join_next().await {
        done??;
    }
    let submitted = begun.elapsed().as_secs_f64();

    // park each task as it starts; its slot goes to the next
    let mut parkers = tokio::task::JoinSet::new();
    let mut parked: Vec<(String, String)> = Vec::with_capacity(n);
    let mut park_ms: Vec<f64> = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    while parked.len() < n {
        tokio::select! {
            frame = started.recv() => {
                let frame = frame.ok_or_else(|| anyhow!("the event feed ended"))?;
                let v: Value = serde_json::from_str(&frame.data).context("a feed frame")?;
                let Some(id) = v["task_id"].as_str().map(str::to_string) else { continue };
                if !seen.insert(id.clone()) {
                    continue;
                }
                let (t, gate) = (t.clone(), gate.clone());
                let permit = gate.acquire_owned().await?;
                parkers.spawn(async move {
                    let _permit = permit;
                    let at = Instant::now();
                    let aid = park(&t, &id).await?;
                    Ok::<_, anyhow::Error>((id, aid, at.elapsed().as_secs_f64() * 1e3))
                });
            }
            Some(done) = parkers.join_next() => {
                let (id, aid, ms) = done??;
                parked.push((id, aid));
                park_ms.push(ms);
            }
            _ = tokio::time::sleep_until(deadline) => bail!("only {} of {n} tasks parked in {DEADLINE:?}", parked.len()),
        }
    }
    let all_waiting = begun.elapsed().as_secs_f64();
    drop(started);
    // the slot gauges are sampled every few seconds
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiting = t.scrape().await?;
    let (rss_waiting, busy_waiting) = (rss(&waiting)?, busy(&waiting));

    // answer every request, a few people at once
    let answering = Instant::now();
    let mut answers = tokio::task::JoinSet::new();
    let mut answer_ms = Vec::with_capacity(n);
    for (id, aid) in &parked {
        let (t, gate) = (t.clone(), gate.clone());
        let permit = gate.acquire_owned().await?;
        let path = format!("/v1/tasks/{id}/approvals/{aid}");
        answers.spawn(async move {
            let _permit = permit;
            let at = Instant::now();
            let r = t.request(reqwest::Method::POST, &t.url(&path)).json(&json!({"answer": "go on"})).send().await?;
            if !r.status().is_success() {
                bail!("answering {path} answered {}", r.status());
            }
            Ok::<_, anyhow::Error>(at.elapsed().as_secs_f64() * 1e3)
        });
    }
    while let Some(done) = answers.join_next().await {
        answer_ms.push(done??);
    }
    let answer_secs = answering.elapsed().as_secs_f64();

    // clean up: the resumed tasks would sleep an hour
    let mut cancels = tokio::task::JoinSet::new();
    for (id, _) in &parked {
        let (t, gate) = (t.clone(), gate.clone());
        let permit = gate.acquire_owned().await?;
        let path = format!("/v1/tasks/{id}/cancel");
        cancels.spawn(async move {
            let _permit = permit;
            t.request(reqwest::Method::POST, &t.url(&path)).send().await.map(|_| ())
        });
    }
    while cancels.join_next().await.is_some() {}

    park_ms.sort_by(|x, y| x.total_cmp(y));
    answer_ms.sort_by(|x, y| x.total_cmp(y));
    let per_task = (rss_waiting - rss_before) / n as f64;
    println!(
        "approvals: {n} sleep tasks submitted in {submitted:.1} s, all waiting for a person after {all_waiting:.1} s; \
         asking took p50 {:.1} ms, p99 {:.1} ms",
        percentile(&park_ms, 0.5),
        percentile(&park_ms, 0.99)
    );
    println!(
        "approvals: while {n} wait: server RSS {:.1} MiB ({:+.1} MiB since before the run, {:.1} KiB per waiting task), \
         busy agent slots {busy_waiting}",
        rss_waiting / 1048576.0,
        (rss_waiting - rss_before) / 1048576.0,
        per_task / 1024.0
    );
    println!(
        "approvals: {n} answers in {answer_secs:.1} s = {:.0} answers/s; p50 {:.1} ms, p99 {:.1} ms",
        n as f64 / answer_secs,
        percentile(&answer_ms, 0.5),
        percentile(&answer_ms, 0.99)
    );
    if let Some(path) = &a.out {
        let doc = json!({"at": Micros::now(), "server": opts.server, "scenario": "approvals", "tasks": n,
            "all_waiting_s": all_waiting, "rss_before": rss_before, "rss_waiting": rss_waiting,
            "busy_slots_waiting": busy_waiting, "answers_per_s": n as f64 / answer_secs,
            "ask_ms": {"p50": percentile(&park_ms, 0.5), "p99": percentile(&park_ms, 0.99)},
            "answer_ms": {"p50": percentile(&answer_ms, 0.5), "p99": percentile(&answer_ms, 0.99)}});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if busy_waiting > 0.0 {
        bail!("{busy_waiting} agent slots were busy while every task waited");
    }
    Ok(ExitCode::SUCCESS)
}
