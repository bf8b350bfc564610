//! What survives a crash or a restart of a real `smith up`: accepted tasks, event logs, SSE
//! readers resuming by id, and tasks handed back by a draining worker.

use crate::common;

use common::{assert_complete_log, counts, is_terminal, kinds, micros, Api, Frame, Opts, Smith};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECS_10: Duration = Duration::from_secs(10);
const TASKS: usize = 500;

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Reads many tasks' logs at once.
async fn all_events(api: &Api, ids: &[String]) -> BTreeMap<String, Vec<Frame>> {
    common::by_id(ids, 16, |id| {
        let api = api.clone();
        async move { api.events(&id, SECS_10).await }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_loses_no_task_and_no_event() {
    let mut s = Smith::start(Opts::new().config("[agents.sleep]\nconcurrency = 100\n")).await;
    // a deterministic spread of 200..=1500 ms, shuffled so short and long ones interleave
    let inputs: Vec<u64> =
        (0..TASKS as u64).map(|i| 200 + (i * 263 % TASKS as u64) * 1300 / (TASKS as u64 - 1)).collect();
    assert_eq!((inputs.iter().min(), inputs.iter().max()), (Some(&200), Some(&1500)));
    let mut set = tokio::task::JoinSet::new();
    for chunk in inputs.chunks(TASKS / 10) {
        let api = s.api();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            let mut ids = Vec::new();
            for ms in chunk {
                let t = api.submit(json!({"agent": "sleep", "input": ms})).await;
                ids.push((t["id"].as_str().unwrap().to_string(), ms));
            }
            ids
        });
    }
    let mut input_of = BTreeMap::new();
    while let Some(r) = set.join_next().await {
        input_of.extend(r.expect("submitter"));
    }
    let ids: Vec<String> = input_of.keys().cloned().collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), TASKS);

    // crash once some have succeeded while others are running and queued
    let deadline = Instant::now() + Duration::from_secs(30);
    let running_at_kill: BTreeSet<String> = loop {
        let tasks = s.list_all("agent=sleep").await;
        let c = counts(&tasks);
        let n = |k: &str| c.get(k).copied().unwrap_or(0);
        if n("succeeded") >= 20 && n("running") > 0 && n("queued") > 0 {
            break tasks
                .iter()
                .filter(|t| t["status"] == "running")
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect();
        }
        assert!(n("failed") + n("cancelled") + n("timed_out") == 0, "{c:?}");
        assert!(Instant::now() < deadline, "never reached a mixed state: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    s.kill9().await;
    let killed_at = now_micros();
    s.restart().await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks = loop {
        let tasks = s.list_all("agent=sleep").await;
        if tasks.len() == TASKS && tasks.iter().all(is_terminal) {
            break tasks;
        }
        assert!(Instant::now() < deadline, "not all terminal after 60 s: {:?}", counts(&tasks));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counts(&tasks), BTreeMap::from([("succeeded".to_string(), TASKS)]));
    let listed: BTreeSet<String> = tasks.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(listed, ids.iter().cloned().collect::<BTreeSet<_>>(), "list differs from what was accepted");
    let by_id: BTreeMap<String, &Value> = tasks.iter().map(|t| (t["id"].as_str().unwrap().to_string(), t)).collect();

    let logs = all_events(&s.api(), &ids).await;
    let mut retried = 0;
    for id in &ids {
        let frames = &logs[id];
        assert_complete_log(id, frames);
        let t = by_id[id];
        assert_eq!(t["result"], json!(input_of[id]), "{t}");
        assert_eq!(frames.last().unwrap().json()["data"]["result"], json!(input_of[id]), "{id}");
        let started: Vec<u64> = frames
            .iter()
            .filter(|f| f.event == "task.started")
            .map(|f| f.json()["attempt"].as_u64().unwrap())
            .collect();
        assert_eq!(started.last().copied(), t["attempt"].as_u64(), "{id}: {:?} vs {t}", kinds(frames));
        let retrying: Vec<Value> = frames.iter().filter(|f| f.event == "task.retrying").map(|f| f.json()).collect();
        for r in &retrying {
            let code = r["data"]["error"]["code"].as_str().unwrap_or_default();
            assert!(code == "worker_lost" || code == "lease_expired", "{id}: unexpected retry {r}");
        }
        let first_start = micros(&frames.iter().find(|f| f.event == "task.started").expect("started").json()["at"]);
        if retrying.is_empty() {
            assert_eq!(started, [1], "{id}: {:?}", kinds(frames));
            // not retried: it ran wholly before the kill or wholly after the restart
            if first_start < killed_at {
                assert!(micros(&t["finished_at"]) < killed_at, "{id} was running at the kill but not retried: {t}");
            }
            assert!(!running_at_kill.contains(id) || micros(&t["finished_at"]) < killed_at, "{id}: {t}");
        } else {
            retried += 1;
            assert_eq!(retrying.len(), 1, "{id}: {:?}", kinds(frames));
            assert!(first_start < killed_at, "{id}: retried but not running at the kill: {:?}", kinds(frames));
            assert!(micros(&retrying[0]["at"]) > killed_at, "{id}: retried before the kill: {}", retrying[0]);
            assert!(t["attempt"].as_u64().unwrap() >= 2, "{t}");
            let pos = frames.iter().position(|f| f.event == "task.retrying").unwrap();
            let next_start = frames[pos..].iter().find(|f| f.event == "task.started").expect("started after retrying");
            assert!(next_start.json()["attempt"].as_u64().unwrap() >= 2, "{id}: {:?}", kinds(frames));
        }
    }
    eprintln!("running at the kill: {}, retried: {retried}", running_at_kill.len());
    assert!(
        retried * 2 >= running_at_kill.len() && retried > 0,
        "only {retried} of {} running tasks retried",
        running_at_kill.len()
    );
}

/// Frames as (id, kind, parsed data), to compare what two readers saw.
fn semantic(frames: &[Frame]) -> Vec<(String, String, Value)> {
    frames.iter().map(|f| (f.id.clone(), f.event.clone(), f.json())).collect()
}

fn assert_contiguous(frames: &[Frame]) {
    let seqs: Vec<u64> = frames.iter().map(|f| f.num()).collect();
    let want: Vec<u64> = (1..=frames.len() as u64).collect();
    assert_eq!(seqs, want, "seqs not 1..=n: {:?}", kinds(frames));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_stream_resumes_across_cuts_and_a_server_crash() {
    let mut s = Smith::start(Opts::new()).await;
    let task = s.submit(json!({"agent": "stream", "input": {"events": 60, "bytes": 100, "interval_ms": 50}})).await;
    let id = task["id"].as_str().unwrap().to_string();
    let path = format!("/v1/tasks/{id}/events");
    let mut all: Vec<Frame> = Vec::new();

    let mut r = s.sse(&path, None).await;
    all.extend(r.take(10, SECS_10).await);
    drop(r);
    assert_eq!(all.len(), 10);
    let mut r = s.sse(&path, Some(&all.last().unwrap().id)).await;
    all.extend(r.take(10, SECS_10).await);
    drop(r);
    assert_eq!(all.len(), 20);
    assert_contiguous(&all);
    assert!(!common::is_terminal_kind(&all.last().unwrap().event), "the stream ended too early to crash mid-way");

    s.kill9().await;
    s.restart().await;
    let mut r = s.sse(&path, Some(&all.last().unwrap().id)).await;
    all.extend(r.rest(Duration::from_secs(30)).await);
    assert_contiguous(&all);
    assert_complete_log(&id, &all);
    assert_eq!(all.last().unwrap().event, "task.succeeded", "{:?}", kinds(&all));
    // the attempt the crash interrupted was retried
    let retry = all.iter().find(|f| f.event == "task.retrying").expect("a retry after the crash").json();
    let code = retry["data"]["error"]["code"].as_str().unwrap_or_default();
    assert!(code == "worker_lost" || code == "lease_expired", "{retry}");
    let t = s.get_task(&id).await;
    assert_eq!(t["status"], "succeeded");
    assert!(t["attempt"].as_u64().unwrap() >= 2, "{t}");

    // what the reader saw is exactly the stored log
    let replay = s.events(&id, SECS_10).await;
    assert_eq!(semantic(&replay), semantic(&all));

    // `?after=N` is the same as `Last-Event-ID: N`
    let by_query = s.sse(&format!("{path}?after=30"), None).await.rest(SECS_10).await;
    let by_header = s.sse(&path, Some("30")).await.rest(SECS_10).await;
    assert_eq!(by_query.first().map(|f| f.num()), Some(31));
    assert_eq!(semantic(&by_query), semantic(&by_header));
    assert_eq!(semantic(&by_query), semantic(&all[30..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_resumes_by_position_without_duplicates() {
    let s = Smith::start(Opts::new()).await;
    let mut feed = s.sse("/v1/events?agent=echo", None).await;
    let api = s.api();
    let submitter = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..30 {
            let t = api.submit(json!({"agent": "echo", "input": i})).await;
            ids.push(t["id"].as_str().unwrap().to_string());
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        ids
    });
    let mut frames = feed.take(40, SECS_10).await;
    assert_eq!(frames.len(), 40);
    drop(feed);
    let mut cuts = 1;
    while frames.len() < 120 {
        let mut feed = s.sse("/v1/events?agent=echo", Some(&frames.last().unwrap().id)).await;
        // cut again while events are still flowing, then read the rest
        let want = if cuts == 1 { 25 } else { 120 - frames.len() };
        frames.extend(feed.take(want, SECS_10).await);
        cuts += 1;
        assert!(cuts < 5, "feed closed repeatedly");
    }
    let ids = submitter.await.expect("submitter");
    let mut feed = s.sse("/v1/events?agent=echo", Some(&frames.last().unwrap().id)).await;
    if let common::Next::Frame(f) = feed.next_within(Duration::from_millis(500)).await {
        panic!("more than 120 events for 30 echo tasks: {f:?}");
    }

    let mut last = 0;
    let mut seen = BTreeSet::new();
    for f in &frames {
        let v = f.json();
        assert!(f.num() > last, "position {} after {last}", f.num());
        last = f.num();
        assert_eq!(v["pos"], json!(f.num()), "{v}");
        assert_eq!(v["agent"], "echo", "{v}");
        let key = (v["task_id"].as_str().unwrap().to_string(), v["seq"].as_u64().unwrap());
        assert!(seen.insert(key.clone()), "duplicate event {key:?}");
    }
    let want: BTreeSet<(String, u64)> = ids.iter().flat_map(|id| (1..=4).map(move |seq| (id.clone(), seq))).collect();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_hands_back_without_spending_attempts() {
    let opts = Opts::new().config("[agents.sleep]\nconcurrency = 4\n").arg("--drain-timeout").arg("1500ms");
    let mut s = Smith::start(opts).await;
    // two that finish within the drain, two that do not (one may run only once)
    let short = vec![
        s.submit_id(json!({"agent": "sleep", "input": 700})).await,
        s.submit_id(json!({"agent": "sleep", "input": 700})).await,
    ];
    let long = vec![
        s.submit_id(json!({"agent": "sleep", "input": 3000, "max_attempts": 1})).await,
        s.submit_id(json!({"agent": "sleep", "input": 3000})).await,
    ];
    let holding: Vec<&String> = short.iter().chain(&long).collect();
    let deadline = Instant::now() + SECS_10;
    loop {
        let running = s.list_all("status=running").await;
        let running: BTreeSet<&str> = running.iter().map(|t| t["id"].as_str().unwrap()).collect();
        if holding.iter().all(|id| running.contains(id.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "not all four running: {running:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // concurrency 4 is full: these wait in the queue
    let mut extra = Vec::new();
    for _ in 0..3 {
        extra.push(s.submit_id(json!({"agent": "sleep", "input": 100})).await);
    }

    let signalled = Instant::now();
    s.sigterm();
    // while draining, the API still answers: nothing new was taken, the long ones still run
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &extra {
        let t = s.get_task(id).await;
        assert_eq!(t["status"], "queued", "a draining worker took new work: {t}");
    }
    for id in &long {
        let t = s.get_task(id).await;
        assert_eq!(t["status"], "running", "{t}");
    }
    let status = s.wait_exit(Duration::from_secs(8)).await.expect("smith did not exit within 8 s of SIGTERM");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(took < Duration::from_secs(6), "drain took {took:?}");
    assert!(took >= Duration::from_millis(1400), "exited before the drain timeout: {took:?}");
    let stopped_at = now_micros();

    s.restart().await;
    for id in short.iter().chain(&long).chain(&extra) {
        s.wait_terminal(id, SECS_10).await;
    }
    for id in &short {
        let t = s.get_task(id).await;
        assert_eq!((t["status"].as_str(), t["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{t}");
        assert!(micros(&t["finished_at"]) < stopped_at, "short task did not finish during the drain: {t}");
        let frames = s.events(id, SECS_10).await;
        assert_complete_log(id, &frames);
        assert_eq!(kinds(&frames), ["task.queued", "task.started", "task.succeeded"]);
    }
    for id in &long {
        let t = s.get_task(id).await;
        assert_eq!(t["status"], "succeeded", "a handed-back task must run again: {t}");
        assert_eq!(t["attempt"], 2, "{t}");
        let frames = s.events(id, SECS_10).await;
        assert_complete_log(id, &frames);
        assert_eq!(kinds(&frames), ["task.queued", "task.started", "task.retrying", "task.started", "task.succeeded"]);
        let retry = frames[2].json();
        assert_eq!(retry["data"]["reason"], "worker draining", "{retry}");
        assert_eq!(retry["data"]["attempt"], 1, "{retry}");
        assert!(micros(&retry["at"]) < stopped_at, "{retry}");
        let second = frames[3].json();
        assert_eq!(second["attempt"], 2, "{second}");
        assert!(micros(&second["at"]) > stopped_at, "second attempt started before the restart: {second}");
    }
    // the released attempt was not spent: max_attempts 1 and still it ran again
    assert_eq!(s.get_task(&long[0]).await["max_attempts"], 1);
    for id in &extra {
        let t = s.get_task(id).await;
        assert_eq!((t["status"].as_str(), t["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{t}");
        assert!(micros(&t["started_at"]) > stopped_at, "a draining worker took new work: {t}");
    }
}
