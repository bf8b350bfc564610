//! `--scenario fanout`: one gateway's Server-Sent-Event fan-out at scale. `--clients` SSE
//! streams, each following its own task, receive `--rate` events/s each for `--seconds` after
//! a warm-up: delivery latency (publish → arrival at the reader; same host, same clock), what
//! arrived of what was published, the gateway's memory per connection (idle and streaming) and
//! its CPU.
//!
//! The events are published on the bus by this process, standing in for the workers of
//! `--clients` running agents: the gateway receives them as it receives any worker's committed
//! events (its one bus subscription, its hub, one SSE stream per reader). They are not written
//! to the store: 10,000 tasks at 10 events/s is 100,000 durable events/s, a store load this
//! scenario does not measure (the `events` scenario measures the durable path end to end). The
//! tasks themselves are real — submitted through the API for `--agent`, which no worker may
//! serve, so they stay queued — and are cancelled at the end. So the gateway must run as its
//! own role (`smith gateway`) on a bus this process can reach (`--bus`).

use super::baseline::{size, Reading, Target};
use super::BenchArgs;
use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use smith_core::{Event, EventKind, Micros, TaskId};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Let the gateway's memory settle before a reading.
const SETTLE: Duration = Duration::from_millis(2500);
/// The producer's tick: every task due in a tick gets its event then.
const TICK: Duration = Duration::from_millis(10);
/// After the last event, time for the stragglers to arrive.
const DRAIN: Duration = Duration::from_secs(3);

/// What the readers share: each task's last replayed seq (the producer goes on from it), how
/// many readers have read their replay, and the measurement window (Unix µs).
struct Shared {
    base: Vec<AtomicU64>,
    ready: AtomicUsize,
    from: AtomicI64,
    until: AtomicI64,
}

/// One reader's figures over the window.
#[derive(Debug, Default)]
struct Reader {
    /// Output events published in the window that it received.
    received: u64,
    /// Their latencies, µs.
    latencies: Vec<u32>,
    /// Events it never got: jumps in `seq` after its replay.
    missing: u64,
    /// The gateway closed its stream before the end.
    closed: bool,
}

pub(super) async fn run(a: BenchArgs, opts: ClientOpts) -> Result<ExitCode> {
    let n = a.clients;
    if n == 0 {
        bail!("--clients must be at least 1");
    }
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 100.0) {
        bail!("--rate must be above 0 and at most 100 events/s per client (the producer ticks every 10 ms)");
    }
    if !(a.seconds.is_finite() && a.seconds > 0.0 && a.warmup_seconds.is_finite() && a.warmup_seconds >= 0.0) {
        bail!("--seconds must be positive and --warmup-seconds not negative");
    }
    let Some(bus_url) = a.bus.clone() else {
        bail!("--scenario fanout publishes its events on the gateway's bus: give it --bus URL (NATS or AMQP)");
    };
    let agent = a.agent.clone().unwrap_or_default();
    let t = Target::new(&a, &opts)?;
    let bus = smith_bus::open(&bus_url).await.context("cannot connect to --bus")?;
    let concurrency = a.concurrency.max(1);
    let fresh = t.reading(None).await?;

    // the tasks: real, queued, for an agent nobody serves
    let started = Instant::now();
    let input = json!("fanout bench: no worker serves this agent");
    let submitted: Vec<Result<String>> =
        stream::iter(0..n).map(|_| t.submit(&agent, &input)).buffer_unordered(concurrency).collect().await;
    let mut ids = Vec::with_capacity(n);
    let mut failure = None;
    for r in submitted {
        match r {
            Ok(id) => ids.push(id),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        t.cancel_all(&ids, concurrency).await;
        return Err(e.context("submitting the fan-out tasks"));
    }
    println!("fanout: {n} {agent} tasks submitted in {:.1} s", started.elapsed().as_secs_f64());

    let result = measure(&agent, &t, &ids, bus, FanoutParams::from(&a), fresh).await;
    let closing = Instant::now();
    t.cancel_all(&ids, concurrency).await;
    println!("fanout: tasks cancelled in {:.1} s", closing.elapsed().as_secs_f64());
    let doc = result?;
    if let Some(path) = &a.out {
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
struct FanoutParams {
    rate: f64,
    seconds: f64,
    warmup: f64,
    bytes: usize,
    concurrency: usize,
}

impl From<&BenchArgs> for FanoutParams {
    fn from(a: &BenchArgs) -> Self {
        FanoutParams {
            rate: a.rate,
            seconds: a.seconds,
            warmup: a.warmup_seconds,
            bytes: a.event_bytes,
            concurrency: a.concurrency.max(1),
        }
    }
}

/// Opens one SSE stream per task (its own connection, `concurrency` at a time) and waits until
/// every reader has read its task's replay; returns the readers and how long that took.
async fn open_streams(
    t: &Target,
    ids: &[String],
    concurrency: usize,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> Result<(tokio::task::JoinSet<Result<Reader>>, f64)> {
    // one connection per stream (no pooling), opened --concurrency at a time
    let sse = crate::client::http_builder(&t.opts)?.pool_max_idle_per_host(0).tcp_nodelay(true).build()?;
    let opening = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut readers = tokio::task::JoinSet::new();
    let opened_at = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let url = t.url(&format!("/v1/tasks/{id}/events"));
        let mut req = sse.get(url).header("accept", "text/event-stream");
        if let Some(tok) = &t.opts.token {
            req = req.bearer_auth(tok);
        }
        let permit = opening.clone().acquire_owned().await.expect("semaphore open");
        let (shared, stop) = (Arc::clone(shared), stop.clone());
        readers.spawn(async move { follow(req, i, &shared, permit, stop).await });
    }
    let n = ids.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Acquire) < n {
        if Instant::now() > deadline || readers.try_join_next().is_some() {
            let ready = shared.ready.load(Ordering::Acquire);
            stop.cancel();
            let mut first_error = None;
            while let Some(r) = readers.join_next().await {
                if let Ok(Err(e)) = r {
                    first_error.get_or_insert(e);
                }
            }
            let why = first_error.map(|e| format!(": {e:#}")).unwrap_or_default();
            bail!("only {ready} of {n} SSE streams opened and read their replay{why}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((readers, opened_at.elapsed().as_secs_f64()))
}

async fn measure(
    agent: &str,
    t: &Target,
    ids: &[String],
    bus: Arc<dyn smith_bus::Bus>,
    p: FanoutParams,
    fresh: Reading,
) -> Result<Value> {
    let n = ids.len();
    let shared = Arc::new(Shared {
        base: (0..n).map(|_| AtomicU64::new(0)).collect(),
        ready: AtomicUsize::new(0),
        from: AtomicI64::new(i64::MAX),
        until: AtomicI64::new(i64::MAX),
    });
    tokio::time::sleep(SETTLE).await;
    let before = t.reading(None).await?;

    let stop = CancellationToken::new();
    let (mut readers, open_seconds) = open_streams(t, ids, p.concurrency, &shared, &stop).await?;
    tokio::time::sleep(SETTLE).await;
    let connected = t.reading(None).await?;
    if connected.sse_task < n as f64 {
        eprintln!("smith bench: the gateway counts {} task streams open, not {n}", connected.sse_task);
    }
    println!(
        "fanout: {n} SSE streams open in {open_seconds:.1} s; gateway RSS {} → {} = {} per idle connection",
        size(before.rss),
        size(connected.rss),
        size((connected.rss - before.rss) / n as f64)
    );

    // the producer: every task gets an event every `period` ticks, the tasks spread evenly over
    // the ticks of a period
    let period = ((1.0 / p.rate) / TICK.as_secs_f64()).round().max(1.0) as usize;
    let rate = 1.0 / (period as f64 * TICK.as_secs_f64());
    let subjects: Vec<(TaskId, String)> = ids
        .iter()
        .map(|id| {
            let task: TaskId = id.parse().map_err(|e| anyhow!("the gateway answered a bad task id {id}: {e}"))?;
            Ok((task, smith_bus::subjects::task_events(agent, id)))
        })
        .collect::<Result<_>>()?;
    let seqs: Vec<u64> = shared.base.iter().map(|b| b.load(Ordering::Acquire)).collect();
    // published as a worker would: with the tasks' tenant, which readers on a tenant's key check
    let tenant = task_tenant(t, &ids[0]).await?;
    let filler = "x".repeat(p.bytes);
    let start = Micros::now();
    let from = start.plus(Duration::from_secs_f64(p.warmup));
    let until = from.plus(Duration::from_secs_f64(p.seconds));
    shared.from.store(from.0, Ordering::Release);
    shared.until.store(until.0, Ordering::Release);
    let producer =
        tokio::spawn(produce(bus, subjects, seqs, period, filler, (agent.to_string(), tenant), (from, until)));

    let own_cpu = || crate::procmetrics::Snapshot::read().cpu_seconds.unwrap_or(f64::NAN);
    sleep_until(from).await;
    let (w0, own0) = (t.reading(None).await?, own_cpu());
    let t0 = Instant::now();
    sleep_until(until).await;
    let (w1, own1) = (t.reading(None).await?, own_cpu());
    let window = t0.elapsed().as_secs_f64();
    let (published, behind) = producer.await.context("the producer panicked")??;
    tokio::time::sleep(DRAIN).await;
    stop.cancel();

    let mut latencies: Vec<u32> = Vec::with_capacity((published as usize).min(50_000_000));
    let (mut received, mut missing, mut closed) = (0u64, 0u64, 0usize);
    while let Some(r) = readers.join_next().await {
        let r = r.context("a reader panicked")??;
        received += r.received;
        missing += r.missing;
        closed += usize::from(r.closed);
        latencies.extend_from_slice(&r.latencies);
    }
    latencies.sort_unstable();
    let pct = |q: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[i.min(latencies.len() - 1)] as f64 / 1000.0
    };
    let (p50, p90, p99, p999) = (pct(0.5), pct(0.9), pct(0.99), pct(0.999));
    let max = latencies.last().map_or(f64::NAN, |v| *v as f64 / 1000.0);
    let idle_per_conn = (connected.rss - before.rss) / n as f64;
    let streaming_per_conn = (w1.rss.max(w0.rss) - before.rss) / n as f64;
    let gateway_cpu = (w1.cpu - w0.cpu) / window;
    let bench_cpu = (own1 - own0) / window;
    let delivered = received as f64 / published.max(1) as f64;
    println!(
        "fanout: {n} clients × {rate:.1} events/s of {} B for {:.0} s: published {published} ({:.0}/s), received {received} ({:.3}%), \
         {missing} missing, {closed} streams closed early; latency p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, p99.9 {p999:.1} ms, max {max:.1} ms",
        p.bytes,
        p.seconds,
        published as f64 / p.seconds,
        delivered * 100.0,
    );
    println!(
        "fanout: gateway {} per connection idle, {} streaming (RSS {} fresh, {} before the streams, {} streaming); gateway {gateway_cpu:.2} vCPU, this bench {bench_cpu:.2} vCPU{}",
        size(idle_per_conn),
        size(streaming_per_conn),
        size(fresh.rss),
        size(before.rss),
        size(w1.rss.max(w0.rss)),
        if behind > 0 { format!("; the producer fell behind its ticks {behind} times") } else { String::new() },
    );
    Ok(json!({
        "at": Micros::now(),
        "server": t.opts.server,
        "scenario": "fanout",
        "clients": n,
        "events_per_s_per_client": rate,
        "event_bytes": p.bytes,
        "seconds": p.seconds,
        "warmup_seconds": p.warmup,
        "published": published,
        "received": received,
        "missing": missing,
        "closed_early": closed,
        "latency_ms": {"p50": p50, "p90": p90, "p99": p99, "p999": p999, "max": max},
        "gateway_rss_bytes": {"fresh": fresh.rss, "before": before.rss, "idle": connected.rss, "streaming": w1.rss.max(w0.rss)},
        "gateway_bytes_per_connection": {"idle": idle_per_conn, "streaming": streaming_per_conn},
        "gateway_vcpu": gateway_cpu,
        "bench_vcpu": bench_cpu,
        "producer_late_ticks": behind,
        "open_seconds": open_seconds,
    }))
}

async fn sleep_until(at: Micros) {
    let left = at.0.saturating_sub(Micros::now().0);
    if left > 0 {
        tokio::time::sleep(Duration::from_micros(left as u64)).await;
    }
}

/// The tenant the gateway put a task in (the bench's credential's).
async fn task_tenant(t: &Target, id: &str) -> Result<String> {
    let resp = t.request(reqwest::Method::GET, &t.url(&format!("/v1/tasks/{id}"))).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 200 {
        bail!("reading task {id} answered {status}: {body}");
    }
    body["tenant"].as_str().map(str::to_string).ok_or_else(|| anyhow!("no tenant in {body}"))
}

/// Publishes every task's events until the window ends; returns the events published inside
/// it and how many ticks started late.
async fn produce(
    bus: Arc<dyn smith_bus::Bus>,
    tasks: Vec<(TaskId, String)>,
    mut seqs: Vec<u64>,
    period: usize,
    filler: String,
    (agent, tenant): (String, String),
    (from, until): (Micros, Micros),
) -> Result<(u64, u64)> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut published = 0u64;
    let mut behind = 0u64;
    let data = json!({"text": filler});
    let mut k = 0usize;
    loop {
        let due = tick.tick().await;
        if due.elapsed() > TICK {
            behind += 1;
        }
        let now = Micros::now();
        if now >= until {
            return Ok((published, behind));
        }
        for i in (k % period..tasks.len()).step_by(period) {
            let (task, subject) = &tasks[i];
            seqs[i] += 1;
            let ev = Event {
                task_id: Some(*task),
                seq: seqs[i],
                kind: EventKind::Output,
                at: Micros::now(),
                data: data.clone(),
                agent: Some(agent.clone()),
                tenant: Some(tenant.clone()),
                attempt: 1,
                pos: 0,
            };
            // counted when inside the window, as the readers count
            if ev.at.0 >= from.0 && ev.at.0 < until.0 {
                published += 1;
            }
            let payload = bytes::Bytes::from(serde_json::to_vec(&ev)?);
            bus.publish(subject, payload).await.context("publishing on --bus")?;
        }
        k += 1;
    }
}

/// Follows one task's stream: reads its replay (then it is ready, holding no opening permit),
/// then times every output event published inside the window until `stop`.
async fn follow(
    req: reqwest::RequestBuilder,
    i: usize,
    shared: &Shared,
    permit: tokio::sync::OwnedSemaphorePermit,
    stop: CancellationToken,
) -> Result<Reader> {
    let resp = req.send().await?;
    if !resp.status().is_success() {
        bail!("a task stream answered {}", resp.status());
    }
    let mut body = resp.bytes_stream();
    let mut parser = crate::client::sse_parser();
    let mut r = Reader::default();
    let mut permit = Some(permit);
    let mut last = 0u64;
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => return Ok(r),
            c = body.next() => c,
        };
        let Some(chunk) = chunk else {
            r.closed = true;
            return Ok(r);
        };
        let chunk = chunk?;
        let now = Micros::now().0;
        let (from, until) = (shared.from.load(Ordering::Acquire), shared.until.load(Ordering::Acquire));
        for f in parser.feed(&chunk)?.iter().map(Frame::of) {
            let Some(seq) = f.seq else { continue };
            if permit.is_some() {
                // the replay: a queued task's `task.submitted`
                last = seq;
                shared.base[i].store(seq, Ordering::Release);
                shared.ready.fetch_add(1, Ordering::AcqRel);
                permit = None;
                continue;
            }
            if seq > last + 1 {
                r.missing += seq - last - 1;
            }
            last = last.max(seq);
            if !f.output {
                continue;
            }
            if let Some(at) = f.at.filter(|at| at.0 >= from && at.0 < until) {
                r.received += 1;
                r.latencies.push((now - at.0).clamp(0, u32::MAX as i64) as u32);
            }
        }
    }
}

/// What the readers need of one SSE frame.
#[derive(Debug, Default, PartialEq)]
struct Frame {
    seq: Option<u64>,
    output: bool,
    at: Option<Micros>,
}

impl Frame {
    /// Of an event its `id`, whether it is output, and its data's `"at"` (found without parsing
    /// the JSON: the readers are many and the client shares the machine with the server).
    fn of(e: &crate::client::SseFrame) -> Frame {
        const AT: &str = "\"at\":\"";
        let at = e.data.find(AT).map(|k| &e.data[k + AT.len()..]).and_then(|rest| rest.split('"').next());
        Frame {
            seq: e.id.trim().parse().ok(),
            output: e.event == EventKind::Output.as_str(),
            at: at.and_then(Micros::parse_rfc3339),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks() {
        let text = b": keep-alive\n\nid: 7\nevent: output\ndata: {\"task_id\":\"x\",\"at\":\"2026-11-27T23:00:00.000001Z\",\"data\":{}}\n\nid: 8\nevent: task.cancelled\ndata: {}\n\n";
        for cut in 0..text.len() {
            let mut parser = crate::client::sse_parser();
            let mut got = Vec::new();
            got.extend(parser.feed(&text[..cut]).unwrap().iter().map(Frame::of));
            got.extend(parser.feed(&text[cut..]).unwrap().iter().map(Frame::of));
            let at = Micros::parse_rfc3339("2026-11-27T23:00:00.000001Z");
            assert_eq!(
                got,
                vec![Frame { seq: Some(7), output: true, at }, Frame { seq: Some(8), output: false, at: None }],
                "cut at {cut}"
            );
        }
    }
}
