//! Operations, black-box: the autoscaled agent pool of `smith up` (0 → 1,000 running agents
//! and back to 0, no task killed), and auto-healing across processes (a silent worker is
//! quarantined, its tasks finish elsewhere, the alert metric shows it, and it is readmitted
//! once it heartbeats steadily again).

use crate::common;
use crate::common::cluster;

use cluster::{eventually, node_becomes, nodes, running_on, Cluster, Role, Services, SystemLog};
use common::{Api, Opts, Smith};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

/// Threads that keep CPUs busy until dropped.
struct Busy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Busy {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        Busy { stop, threads }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The value of the sample `series` (name with its labels, exactly as rendered) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn metrics(api: &Api) -> String {
    let (status, body) = api.get("/metrics").await;
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.as_str().unwrap_or_default().to_string()
}

/// (busy, idle) agent slots of the pool.
async fn slots(api: &Api) -> (f64, f64) {
    let text = metrics(api).await;
    let busy = sample(&text, r#"smith_agent_slots{state="busy"}"#).unwrap_or(0.0);
    let idle = sample(&text, r#"smith_agent_slots{state="idle"}"#).unwrap_or(0.0);
    (busy, idle)
}

const BURST: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_the_pool_from_zero_to_a_thousand_running_agents_and_back() {
    let s = Smith::start(
        Opts::new()
            .arg("--min-agents")
            .arg("0")
            .arg("--max-agents")
            .arg(&BURST.to_string())
            .config("[scaling]\nscale_in_delay = \"2s\"\n"),
    )
    .await;
    let api = s.api();
    // idle: no slot at all, and the autoscaler says so
    eventually("the autoscaler's first figures", Duration::from_secs(10), || async {
        let (status, body) = api.get("/v1/scaling").await;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    let (status, idle) = api.get("/v1/scaling").await;
    assert_eq!(status, 200);
    assert_eq!(idle["desired_slots"], 0, "{idle}");
    assert_eq!(idle["min_agents"], 0, "{idle}");
    assert_eq!(idle["max_agents"], BURST, "{idle}");
    assert_eq!(slots(&api).await, (0.0, 0.0), "the pool starts empty");

    // the burst: every task sleeps long enough for all of them to run at once
    let mut submits = tokio::task::JoinSet::new();
    for chunk in 0..20 {
        let api = api.clone();
        submits.spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..BURST / 20 {
                ids.push(api.submit_id(json!({"agent": "sleep", "input": 20_000, "metadata": {"chunk": chunk}})).await);
            }
            ids
        });
    }
    // watch the pool while the burst arrives
    let watcher = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(40) {
                let (busy, _) = slots(&api).await;
                peak = peak.max(busy);
                if busy >= BURST as f64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let mut ids = Vec::new();
    while let Some(r) = submits.join_next().await {
        ids.extend(r.expect("submitter"));
    }
    assert_eq!(ids.len(), BURST);
    let peak = watcher.await.expect("watcher");
    assert_eq!(peak, BURST as f64, "the pool never ran all {BURST} tasks at once");
    // the autoscaler's figure reaches /v1/scaling with the supervisor's next heartbeat
    eventually("desired slots at the burst's size", Duration::from_secs(10), || async {
        let (_, scaling) = api.get("/v1/scaling").await;
        if scaling["desired_slots"] == BURST && scaling["running"] == BURST {
            Ok(())
        } else {
            Err(scaling.to_string())
        }
    })
    .await;

    // every task ran once, to success: scale-in killed none
    for id in &ids {
        let t = api.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1, "a task ran more than once: {t}");
    }
    // back to zero once the burst is done
    eventually("the pool back to zero slots", Duration::from_secs(60), || async {
        let (busy, idle) = slots(&api).await;
        let (_, scaling) = api.get("/v1/scaling").await;
        if busy == 0.0 && idle == 0.0 && scaling["desired_slots"] == 0 {
            Ok(())
        } else {
            Err(format!("busy {busy} idle {idle}; scaling {scaling}"))
        }
    })
    .await;
    let text = metrics(&api).await;
    let finished = |outcome: &str| {
        sample(&text, &format!(r#"smith_task_attempts_finished_total{{agent="sleep",outcome="{outcome}"}}"#))
    };
    assert_eq!(finished("succeeded"), Some(BURST as f64), "{text}");
    for outcome in ["lost", "released", "cancelled", "failed"] {
        assert_eq!(finished(outcome), None, "an attempt ended {outcome}");
    }
    // the worker's node reports the pool too, with its next heartbeat
    eventually("the worker's node reporting the empty pool", Duration::from_secs(10), || async {
        let worker = nodes(&api).await.into_iter().find(|n| n["role"] == "worker").expect("a worker node");
        if worker["load"]["slots"] == 0 && worker["load"]["finished"] == BURST {
            Ok(())
        } else {
            Err(worker.to_string())
        }
    })
    .await;

    // and from zero up again: new work gets slots at once
    let again: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(api.submit_id(json!({"agent": "sleep", "input": 100})).await);
        }
        v
    };
    for id in &again {
        let t = api.wait_terminal(id, Duration::from_secs(20)).await;
        assert_eq!(t["status"], "succeeded", "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_settings_are_validated() {
    for (args, config, why) in [
        (vec!["--min-agents", "5", "--max-agents", "2"], "", "min_agents (5) must not exceed max_agents (2)"),
        (vec![], "[scaling]\ntarget_utilization = 1.5\n", "target_utilization must be in (0, 1]"),
        (vec![], "[scaling]\nmax_agents = 10\n", "set --min-agents/--max-agents"),
        (vec![], "[scaling]\nbogus = 1\n", "bogus"),
    ] {
        let mut o = Opts::new().config(config);
        for a in &args {
            o = o.arg(a);
        }
        let r = Smith::start_refused(o).await;
        assert!(!r.status.success());
        assert!(r.stderr.contains(why), "{args:?} {config:?}: {}", r.stderr);
    }
}

/// Waits until the scrape at `url` shows `series` at `value`.
async fn gauge_becomes(what: &str, url: &str, series: &str, value: f64, within: Duration) {
    eventually(what, within, || async {
        let text = scrape(url).await?;
        match sample(&text, series) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{series} = {other:?}")),
        }
    })
    .await;
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn scrape(url: &str) -> Result<String, String> {
    let r = reqwest::get(url).await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()));
    }
    r.text().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_quarantined_its_tasks_finish_elsewhere_and_it_is_readmitted() {
    let Some(services) = Services::from_env() else { return };
    // The machine is kept busy throughout: a healthy worker must not be judged silent because
    // the CPU (or the store's batches of events) kept its heartbeats waiting. If one were,
    // its tasks would be requeued a second time and the asserts on `worker` and `attempt` fail.
    let _busy = Busy::start(2);
    let cluster =
        Cluster::new(&services, "[supervisor]\ndead_after = \"3s\"\nquarantine = \"3s\"\n[worker]\npoll = \"100ms\"\n")
            .await;
    let port = free_port();
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let _sup = cluster.start_with(Role::Supervisor, &["--metrics-listen", &format!("127.0.0.1:{port}")]).await;
    let gw = cluster.start(Role::Gateway).await;
    let api = gw.api();
    let stop = tokio_util::sync::CancellationToken::new();
    let (log, follower) = SystemLog::follow(vec![api.clone()], stop.clone());
    let w1 = cluster.start_with(Role::Worker, &["--metrics-listen", "off"]).await;
    let first = w1.node_id();

    let quarantined_gauge = r#"smith_nodes{role="worker",status="quarantined"}"#;
    let text = eventually("the supervisor's metrics", Duration::from_secs(15), || scrape(&metrics_url)).await;
    assert!(text.contains("# TYPE smith_nodes gauge"), "{text}");
    gauge_becomes("no worker quarantined yet", &metrics_url, quarantined_gauge, 0.0, Duration::from_secs(10)).await;

    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(api.submit_id(json!({"agent": "sleep", "input": 3000, "metadata": {"i": i}})).await);
        }
        v
    };
    for id in &ids {
        running_on(&api, id, &first, Duration::from_secs(20)).await;
    }
    // the worker goes silent: no heartbeat, no lease renewal
    w1.signal(Signal::SIGSTOP);
    let w2 = cluster.start_with(Role::Worker, &["--metrics-listen", "off"]).await;
    let second = w2.node_id();

    node_becomes(&api, &first, "quarantined", Duration::from_secs(20)).await;
    gauge_becomes(
        "the alert metric shows the quarantine",
        &metrics_url,
        quarantined_gauge,
        1.0,
        Duration::from_secs(10),
    )
    .await;
    for id in &ids {
        let t = api.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["worker"], second.as_str(), "finished elsewhere: {t}");
        assert_eq!(t["attempt"], 2, "requeued once: {t}");
    }
    let system = |kind: &'static str, node: String| {
        move |events: &[Value]| {
            events.iter().find(|e| e["data"]["type"] == kind && e["data"]["node"] == node.as_str()).cloned()
        }
    };
    let q = log.wait_for(Duration::from_secs(10), system("node.quarantined", first.clone())).await;
    let q = q.unwrap_or_else(|| panic!("no node.quarantined event for {first}: {:?}", log.events()));
    assert_eq!(q["data"]["role"], "worker", "{q}");
    let reaped =
        log.events().iter().any(|e| e["data"]["type"] == "tasks.reaped" && e["data"]["requeued"].as_u64() >= Some(1));
    assert!(reaped, "no tasks.reaped event: {:?}", log.events());

    // back from the freeze: it learns it is quarantined, claims nothing, and after steady
    // heartbeats for the quarantine period it is readmitted
    w1.signal(Signal::SIGCONT);
    let r = log.wait_for(Duration::from_secs(30), system("node.readmitted", first.clone())).await;
    r.unwrap_or_else(|| panic!("{first} not readmitted: {:?}", log.events()));
    node_becomes(&api, &first, "alive", Duration::from_secs(10)).await;
    gauge_becomes("the alert metric clear again", &metrics_url, quarantined_gauge, 0.0, Duration::from_secs(10)).await;
    assert!(w1.stderr().contains("quarantined by the supervisor"), "{}", w1.stderr());
    let text = scrape(&metrics_url).await.expect("metrics");
    assert_eq!(sample(&text, r#"smith_nodes_quarantined_total{role="worker"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"smith_nodes_readmitted_total{role="worker"}"#), Some(1.0), "{text}");

    // readmitted, it takes work again: with the second worker gone, a new task runs on it
    drop(w2);
    let t = api.submit_id(json!({"agent": "echo", "input": "back"})).await;
    let done = api.wait_terminal(&t, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["worker"], first.as_str(), "the readmitted worker did not run it: {done}");
    stop.cancel();
    let _ = follower.await;
}
