//! `smith bench --scenario webhooks`: webhook delivery throughput and latency. This process runs
//! a receiver on 127.0.0.1 (a minimal HTTP/1.1 server answering 200), subscribes it to every
//! event kind (`*`), and submits `echo` tasks paced so that the feed grows by `--rate` events/s
//! (four events a task: queued, started, output, succeeded) for `--seconds`. Latency is from an
//! event's commit time (`at`, the server's clock; same host) to its arrival at the receiver.
//! The server must allow loopback targets: `[webhooks] allow_private = true`.

use super::{percentile, BenchArgs};
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use smith_core::Micros;
use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Events each `echo` task adds to the feed: task.queued, task.started, output, task.succeeded.
const EVENTS_PER_TASK: f64 = 4.0;

#[derive(Default)]
struct Received {
    ids: HashSet<String>,
    duplicates: u64,
    latencies_ms: Vec<f64>,
    last: Option<Instant>,
}

/// Serves one keep-alive connection: each request's body is an event; always 200.
async fn serve(stream: tokio::net::TcpStream, got: Arc<Mutex<Received>>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut length = 0usize;
        let mut id = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse()?,
                    "webhook-id" => id = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await?;
        let now = Micros::now();
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let at = v["data"]["at"].as_str().and_then(Micros::parse_rfc3339);
        {
            let mut g = got.lock().expect("receiver lock");
            if g.ids.insert(id) {
                if let Some(at) = at {
                    g.latencies_ms.push(now.since(at) as f64 / 1000.0);
                }
            } else {
                g.duplicates += 1;
            }
            g.last = Some(Instant::now());
        }
        write.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await?;
    }
}

pub async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let got = Arc::new(Mutex::new(Received::default()));
    let accept = {
        let got = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, got.clone()));
            }
        })
    };
    let http = crate::client::http_builder(&opts)?.pool_max_idle_per_host(a.concurrency).build()?;
    let base = opts.server.trim_end_matches('/').to_string();
    let authed = |r: reqwest::RequestBuilder| match &opts.token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let resp = authed(http.post(format!("{base}/v1/webhooks")).json(&json!({"url": url, "kinds": ["*"]})))
        .send()
        .await
        .context("cannot reach the server")?;
    let status = resp.status();
    let hook: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 201 {
        bail!("subscribing {url} answered {status}: {hook} (run the server with [webhooks] allow_private = true)");
    }
    let hook_id = hook["id"].as_str().ok_or_else(|| anyhow!("no webhook id"))?.to_string();

    // paced submissions: `rate` events/s of the feed, from `concurrency` submitters
    let tasks_per_s = a.rate / EVENTS_PER_TASK;
    let total = (tasks_per_s * a.seconds).round() as u64;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut submitters = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency.max(1) {
        let (http, base, next, opts, agent) = (http.clone(), base.clone(), next.clone(), opts.clone(), a.agent.clone());
        submitters.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let due = started + Duration::from_secs_f64(i as f64 / tasks_per_s);
                tokio::time::sleep_until(due.into()).await;
                let mut r = http.post(format!("{base}/v1/tasks")).json(&json!({"agent": agent, "input": "x"}));
                if let Some(t) = &opts.token {
                    r = r.bearer_auth(t);
                }
                let resp = r.send().await?;
                if resp.status().as_u16() != 201 {
                    bail!("submit answered {}", resp.status());
                }
            }
        });
    }
    while let Some(r) = submitters.join_next().await {
        r??;
    }
    let submitted_in = started.elapsed().as_secs_f64();
    // every event delivered: wait until the receiver is quiet
    let expected = (total as f64 * EVENTS_PER_TASK) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, quiet) = {
            let g = got.lock().expect("receiver lock");
            (g.ids.len(), g.last.is_some_and(|l| l.elapsed() > Duration::from_secs(20)))
        };
        if n >= expected || (quiet && n > 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = authed(http.delete(format!("{base}/v1/webhooks/{hook_id}"))).send().await;
    accept.abort();
    let g = got.lock().expect("receiver lock");
    let delivered = g.ids.len();
    let span = g.last.map(|l| l.duration_since(started).as_secs_f64()).unwrap_or(f64::NAN);
    let mut l = g.latencies_ms.clone();
    l.sort_by(|x, y| x.total_cmp(y));
    let (p50, p99, max) = (percentile(&l, 0.5), percentile(&l, 0.99), l.last().copied().unwrap_or(f64::NAN));
    let rate = delivered as f64 / span;
    println!(
        "webhooks: {total} tasks submitted in {submitted_in:.1} s ({:.0} events/s offered); {delivered} of {expected} events delivered ({} duplicates) in {span:.1} s = {rate:.0} deliveries/s; latency commit → receiver p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        total as f64 * EVENTS_PER_TASK / submitted_in,
        g.duplicates
    );
    if let Some(path) = &a.out {
        let doc = json!({"at": Micros::now(), "server": opts.server, "scenario": "webhooks", "tasks": total,
            "offered_events_per_s": total as f64 * EVENTS_PER_TASK / submitted_in, "expected": expected,
            "delivered": delivered, "duplicates": g.duplicates, "seconds": span, "deliveries_per_s": rate,
            "latency_ms": {"p50": p50, "p99": p99, "max": max}});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if delivered < expected {
        eprintln!("webhooks: {} events were not delivered within the wait", expected - delivered);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
