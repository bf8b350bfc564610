//! `--scenario schedules`: --tasks schedules of `echo`, each firing every minute at its own
//! second (schedule i at second i mod 60: about --tasks/60 fires a second, evenly spread),
//! watched for --seconds; then fire accuracy (a fired task's `created_at` − its intended fire
//! time, from the task's `metadata.fire_time`), fires missing or repeated, and the server's
//! memory before, after creating them, and at the end. The schedules are deleted at the end.
//! The server must run on this host (its memory comes from /metrics).

use super::baseline::{Scrape, Target};
use super::{percentile, BenchArgs};
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use smith_core::Micros;
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rss(s: &Scrape) -> Result<f64> {
    s.sum(crate::procmetrics::RESIDENT_MEMORY, None)
        .ok_or_else(|| anyhow!("the server's /metrics has no {}", crate::procmetrics::RESIDENT_MEMORY))
}

fn mib(bytes: f64) -> f64 {
    bytes / 1048576.0
}

/// Every `echo` task a schedule fired, as (schedule id, fire time, created_at).
async fn fired(t: &Target) -> Result<Vec<(String, i64, i64)>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/tasks?agent=echo&limit=1000".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value =
            t.request(reqwest::Method::GET, &t.url(&path)).send().await?.error_for_status()?.json().await?;
        for task in page["items"].as_array().into_iter().flatten() {
            let m = &task["metadata"];
            let (Some(id), Some(fire), Some(created)) = (
                m["schedule_id"].as_str(),
                m["fire_time"].as_str().and_then(Micros::parse_rfc3339),
                task["created_at"].as_str().and_then(Micros::parse_rfc3339),
            ) else {
                continue;
            };
            out.push((id.to_string(), fire.0, created.0));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(out),
        }
    }
}

pub(super) async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let t = Arc::new(Target::new(&a, &opts)?);
    let n = a.tasks as usize;
    let rss_before = rss(&t.scrape().await?)?;

    // create them, a few at once
    let creating = Instant::now();
    let results: Vec<Result<String>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let t = t.clone();
            async move {
                let body = json!({"name": format!("bench {i}"), "agent": "echo", "input": i,
                                  "cron": format!("{} * * * * *", i % 60), "overlap": "enqueue"});
                let r = t.request(reqwest::Method::POST, &t.url("/v1/schedules")).json(&body).send().await?;
                if r.status().as_u16() != 201 {
                    bail!("creating a schedule answered {}: {}", r.status(), r.text().await.unwrap_or_default());
                }
                let v: Value = r.json().await?;
                v["id"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no id"))
            }
        })
        .buffer_unordered(a.concurrency.max(1))
        .collect()
        .await;
    let ids: Vec<String> = results.into_iter().collect::<Result<_>>()?;
    let created_s = creating.elapsed().as_secs_f64();
    let rss_created = rss(&t.scrape().await?)?;

    // the window: whole seconds from the next one on
    let start = (Micros::now().0 / 1_000_000 + 2) * 1_000_000;
    let end = start + (a.seconds.max(1.0) as i64) * 1_000_000;
    let mut peak = rss_created;
    while Micros::now().0 < end + 2_000_000 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak = peak.max(rss(&t.scrape().await?)?);
    }
    let rss_end = rss(&t.scrape().await?)?;

    // what fired in the window, against what should have
    let mine: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut delays_ms = Vec::new();
    let mut seen: HashMap<(String, i64), usize> = HashMap::new();
    for (id, fire, created) in fired(&t).await? {
        if !mine.contains(id.as_str()) || fire < start || fire >= end {
            continue;
        }
        delays_ms.push((created - fire) as f64 / 1e3);
        *seen.entry((id, fire)).or_default() += 1;
    }
    let seconds = (end - start) / 1_000_000;
    // schedule i fires at second i mod 60 of every minute: count those seconds in the window
    let mut expected = 0usize;
    for s in 0..seconds {
        let second = ((start / 1_000_000 + s) % 60) as usize;
        expected += (0..n).filter(|i| i % 60 == second).count();
    }
    let repeated = seen.values().filter(|c| **c > 1).count();
    delays_ms.sort_by(|x, y| x.total_cmp(y));

    // clean up
    futures_util::stream::iter(&ids)
        .for_each_concurrent(a.concurrency.max(1), |id| {
            let t = t.clone();
            async move {
                let _ = t.request(reqwest::Method::DELETE, &t.url(&format!("/v1/schedules/{id}"))).send().await;
            }
        })
        .await;

    println!(
        "schedules: {n} created in {created_s:.1} s ({:.0}/s); over {seconds} s: {} fires of {expected} expected, {} repeated",
        n as f64 / created_s,
        seen.len(),
        repeated
    );
    println!(
        "schedules: fire accuracy (task created_at − fire time): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&delays_ms, 0.5),
        percentile(&delays_ms, 0.99),
        delays_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "schedules: server RSS {:.1} MiB before, {:.1} MiB with {n} schedules ({:+.1} MiB), {:.1} MiB after {seconds} s of firing ({:+.1} MiB; peak {:.1} MiB)",
        mib(rss_before),
        mib(rss_created),
        mib(rss_created - rss_before),
        mib(rss_end),
        mib(rss_end - rss_created),
        mib(peak)
    );
    if let Some(path) = &a.out {
        let doc = json!({"at": Micros::now(), "server": opts.server, "scenario": "schedules", "schedules": n,
            "seconds": seconds, "fires": seen.len(), "expected": expected, "repeated": repeated,
            "delay_ms": {"p50": percentile(&delays_ms, 0.5), "p99": percentile(&delays_ms, 0.99)},
            "rss_before": rss_before, "rss_created": rss_created, "rss_end": rss_end, "rss_peak": peak});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
