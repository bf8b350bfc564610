//! Provider rate limits shared by the fleet (docs/rate-limits.md), through the real binary: a
//! mock Messages API that enforces its own requests-per-minute limit as a token bucket (and
//! answers 429 when a request finds it empty), hit by `anthropic` agents of one account on
//! three `smith worker` processes (PostgreSQL + NATS) and on `smith up`.
//!
//! The mock's bucket has the shape providers document and the fleet's limiter assumes: it
//! holds the per-minute figure (a full minute's burst) and refills continuously at a sixtieth
//! of it per second. A limiter that is right never meets a 429, and — with more tasks queued
//! than the limit lets through — the rate the mock sees sits at the limit once the first burst
//! is spent.

use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{Api, Opts, Smith};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Messages API that allows `per_minute` requests a minute, as a token bucket.
struct LimitedMock {
    url: String,
    state: Arc<Bucket>,
}

struct Bucket {
    capacity: f64,
    per_second: f64,
    /// (level, when it was that)
    level: Mutex<(f64, Instant)>,
    /// When each request it let through arrived.
    arrivals: Mutex<Vec<Instant>>,
    refused: AtomicUsize,
}

impl LimitedMock {
    async fn start(per_minute: u64) -> LimitedMock {
        let state = Arc::new(Bucket {
            capacity: per_minute as f64,
            per_second: per_minute as f64 / 60.0,
            level: Mutex::new((per_minute as f64, Instant::now())),
            arrivals: Mutex::new(Vec::new()),
            refused: AtomicUsize::new(0),
        });
        let app = Router::new().route("/v1/messages", post(messages)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        LimitedMock { url, state }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.state.arrivals.lock().unwrap().clone()
    }

    fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

async fn messages(State(b): State<Arc<Bucket>>) -> Response {
    let now = Instant::now();
    {
        let mut level = b.level.lock().unwrap();
        let refilled = (level.0 + now.duration_since(level.1).as_secs_f64() * b.per_second).min(b.capacity);
        if refilled < 1.0 {
            *level = (refilled, now);
            b.refused.fetch_add(1, Ordering::SeqCst);
            let err =
                json!({"type": "error", "error": {"type": "rate_limit_error", "message": "mock: over the limit"}});
            return (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], axum::Json(err))
                .into_response();
        }
        *level = (refilled - 1.0, now);
        b.arrivals.lock().unwrap().push(now);
    }
    let frame = |event: &str, data: Value| format!("event: {event}\ndata: {data}\n\n");
    let mut body = frame(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_rl", "type": "message", "role": "assistant",
            "model": "claude-mock", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 1}}}),
    );
    body += &frame(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    body += &frame(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "done"}}),
    );
    body += &frame("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    body += &frame(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 3}}),
    );
    body += &frame("message_stop", json!({"type": "message_stop"}));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// Two `anthropic` agents on one account limited to `per_minute` requests a minute.
fn config(mock: &LimitedMock, per_minute: u64) -> String {
    let agent = |name: &str| {
        format!(
            "[agents.{name}]\nexecutor = \"anthropic\"\nmodel = \"claude-mock\"\nbase_url = \"{}\"\n\
             api_key = \"sk-test\"\naccount = \"team\"\nmax_attempts = 1\ncollaborate = false\n",
            mock.url
        )
    };
    format!(
        "[providers.team]\nrate_limit = {{ requests_per_minute = {per_minute} }}\n\n{}\n{}",
        agent("writer"),
        agent("reviewer")
    )
}

/// Requests per second the mock let through over `window`, from `from`.
fn rate_in(arrivals: &[Instant], from: Instant, window: Duration) -> f64 {
    let n = arrivals.iter().filter(|a| **a >= from && **a < from + window).count();
    n as f64 / window.as_secs_f64()
}

/// Submits `n` tasks over both agents; returns their ids.
async fn submit(api: &Api, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let agent = if i % 2 == 0 { "writer" } else { "reviewer" };
        ids.push(api.submit_id(json!({"agent": agent, "input": format!("task {i}")})).await);
    }
    ids
}

/// Waits for the fleet's first burst (the bucket's capacity) to be spent, then for `window`
/// more after a second's settling; checks that the mock never refused a request, that the rate
/// over the window sat at the limit (±15 %), and what `GET /v1/providers` shows; cancels the rest.
async fn check_rate(mock: &LimitedMock, api: &Api, ids: &[String], per_minute: u64, window: Duration) {
    let (burst, _) = smith_worker::rate_shape(per_minute, smith_worker::IN_HAND);
    let burst = burst as usize;
    let started = Instant::now();
    while mock.arrivals().len() <= burst {
        assert!(started.elapsed() < Duration::from_secs(90), "the first burst never reached the mock");
        assert_eq!(mock.refused(), 0, "the mock answered 429 during the first burst");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from = mock.arrivals()[burst] + Duration::from_secs(1);
    tokio::time::sleep((from + window).saturating_duration_since(Instant::now())).await;
    let arrivals = mock.arrivals();
    let limit = per_minute as f64 / 60.0;
    let rate = rate_in(&arrivals, from, window);
    eprintln!("{rate:.3} requests/s over {window:?} after the first burst (limit {limit:.3}/s)");
    assert_eq!(mock.refused(), 0, "the mock answered 429: the fleet went over the limit");
    assert!(
        (rate - limit).abs() <= 0.15 * limit,
        "{rate:.2} requests/s over {window:?} after the first burst (limit {limit:.2}/s); {} in all",
        arrivals.len()
    );
    let (status, body) = api.get("/v1/providers").await;
    assert_eq!(status, 200, "{body}");
    let team = &body["items"][0];
    assert_eq!(team["account"], "team", "{body}");
    assert_eq!(team["requests"]["per_minute"], json!(per_minute as f64), "{body}");
    assert_eq!(team["requests"]["capacity"], json!(burst as f64), "{body}");
    assert!(team["requests"]["level"].as_f64().unwrap() < 2.0, "the bucket is being spent: {body}");
    assert_eq!(team["tokens"], Value::Null, "{body}");
    for id in ids {
        api.cancel(id).await;
    }
    assert_eq!(mock.refused(), 0, "the mock answered 429");
}

/// The case: 60 requests a minute, three workers on PostgreSQL + NATS, more tasks
/// than a minute allows; the rate measured over 30 s once the first burst is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_sixty_requests_a_minute_without_a_429() {
    let Some(services) = Services::from_env() else { return };
    let mock = LimitedMock::start(60).await;
    let cluster = Cluster::new(&services, &format!("[store]\npool_size = 4\n\n{}", config(&mock, 60))).await;
    let _supervisor = cluster.start(Role::Supervisor).await;
    let gateway = cluster.start(Role::Gateway).await;
    let _workers =
        [cluster.start(Role::Worker).await, cluster.start(Role::Worker).await, cluster.start(Role::Worker).await];
    let api = gateway.api();
    // the burst (59), then 1/s for the 31 s measured: more than that, so none runs dry
    let ids = submit(&api, 110).await;
    check_rate(&mock, &api, &ids, 60, Duration::from_secs(30)).await;
    // the three workers all ran tasks: they shared the account's bucket
    let done = api.list_all("status=succeeded").await;
    let workers: std::collections::BTreeSet<&str> = done.iter().filter_map(|t| t["worker"].as_str()).collect();
    assert_eq!(workers.len(), 3, "tasks ran on {workers:?}");
}

/// The same on `smith up` (one process, SQLite), at 300 requests a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smith_up_holds_its_account_to_the_limit() {
    let mock = LimitedMock::start(300).await;
    let smith = Smith::start(Opts::new().config(&config(&mock, 300))).await;
    let api = smith.api();
    // the burst (295), then 5/s for the 11 s measured
    let ids = submit(&api, 400).await;
    check_rate(&mock, &api, &ids, 300, Duration::from_secs(10)).await;
    let metrics = reqwest::get(format!("{}/metrics", api.base)).await.unwrap().text().await.unwrap();
    let taken = metrics
        .lines()
        .find(|l| l.starts_with("smith_rate_limit_taken_total") && l.contains("account=\"team\""))
        .unwrap_or_else(|| panic!("no taken count for the account:\n{metrics}"));
    assert!(taken.contains("kind=\"requests\""), "{taken}");
}
