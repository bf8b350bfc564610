//! The distributed shape, black-box: separate `smith supervisor`, `smith worker` and `smith
//! gateway` processes on a real PostgreSQL database and a real NATS server, killed, frozen and
//! signalled while they work.
//!
//! Needs `SMITH_TEST_POSTGRES_URL` and `SMITH_TEST_NATS_URL` (CI: postgres://postgres@127.0.0.1:5432/test
//! and nats://127.0.0.1:4222); each test skips, saying so, when either is unset. Every test
//! gets a database and a bus namespace of its own, so they run in parallel. The fault test's
//! size is `SMITH_TEST_FAULT_TASKS` (default [`FAULT_TASKS`]).

use crate::common;
use crate::common::anthropic_mock;
use crate::common::cluster;

use cluster::{
    all_terminal, eventually, id_of, logs, nodes, now_micros, run_to_exit, running_on, semantic, with_database,
    Cluster, NatsServer, Role, Services, SystemLog,
};
use common::{assert_complete_log, counts, is_terminal, is_terminal_kind, kinds, micros, Api, Frame, Next};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS_10: Duration = Duration::from_secs(10);
const SECRET: &str = "hunter2";
/// Tasks in the fault test, unless `SMITH_TEST_FAULT_TASKS` says otherwise.
const FAULT_TASKS: usize = 5000;

macro_rules! services {
    () => {
        match Services::from_env() {
            Some(s) => s,
            None => return,
        }
    };
}

/// A `smith.toml`: a small connection pool per process (many processes share one server in
/// parallel tests), then `rest`.
/// A fresh cluster (database and bus namespace) with `$pool` store connections per process and
/// the rest of its config; skips the test, saying why, without the services.
macro_rules! cluster {
    ($pool:expr, $rest:expr) => {
        Cluster::new(&services!(), &config($pool, $rest)).await
    };
}

fn config(pool: u32, rest: &str) -> String {
    format!("[store]\npool_size = {pool}\n\n{rest}")
}

/// What a task of the mixed workload must end as.
#[derive(Clone, Debug)]
enum Expect {
    /// Succeeds with its input as the result.
    Echo(Value),
    Sleep,
    /// Succeeds after this many `output` events.
    Stream(usize),
    /// Fails with this message after its two attempts.
    Fail(String),
}

impl Expect {
    fn status(&self) -> &'static str {
        match self {
            Expect::Fail(_) => "failed",
            _ => "succeeded",
        }
    }
}

/// Task `i` of the mixed workload: echo, sleep 50–300 ms, stream, fail (max_attempts 2).
fn mixed(i: usize) -> (Value, Expect) {
    match i % 8 {
        0..=2 => {
            let input = json!({"n": i, "text": format!("hello {i}")});
            (json!({"agent": "echo", "input": input}), Expect::Echo(input))
        }
        3 | 4 => (json!({"agent": "sleep", "input": 50 + (i * 37) % 251}), Expect::Sleep),
        5 | 6 => {
            (json!({"agent": "stream", "input": {"events": 5, "bytes": 100, "interval_ms": 10}}), Expect::Stream(5))
        }
        _ => {
            let msg = format!("boom {i}");
            (json!({"agent": "fail", "input": msg, "max_attempts": 2}), Expect::Fail(msg))
        }
    }
}

/// Asserts a task ended as its workload entry said, with a log to match.
fn check_outcome(task: &Value, expect: &Expect, frames: &[Frame], faults: bool) {
    let id = id_of(task);
    assert_eq!(task["status"], expect.status(), "task {id} ({expect:?}): {task}\nevents: {:?}", kinds(frames));
    let terminal = frames.last().expect("frames").json();
    assert_eq!(terminal["kind"], format!("task.{}", expect.status()), "{id}: {terminal}");
    assert_eq!(
        terminal["attempt"], task["attempt"],
        "{id}: the terminal event is not from the last attempt: {terminal} vs {task}"
    );
    for r in frames.iter().filter(|f| f.event == "task.retrying") {
        let code = r.json()["data"]["error"]["code"].as_str().unwrap_or_default().to_string();
        let allowed = match expect {
            Expect::Fail(_) => code == "agent_failed" || (faults && (code == "worker_lost" || code == "lease_expired")),
            _ => faults && (code == "worker_lost" || code == "lease_expired"),
        };
        assert!(allowed, "{id}: unexpected retry {:?}: {:?}", r.json(), kinds(frames));
    }
    match expect {
        Expect::Echo(input) => {
            assert_eq!(&task["result"], input, "{id}: {task}");
            assert_eq!(&terminal["data"]["result"], input, "{id}: {terminal}");
        }
        Expect::Sleep => {}
        Expect::Stream(n) => {
            // the successful attempt emitted all its outputs
            let last_start = frames.iter().rposition(|f| f.event == "task.started").expect("started");
            let outputs = frames[last_start..].iter().filter(|f| f.event == "output").count();
            assert_eq!(outputs, *n, "{id}: {:?}", kinds(frames));
        }
        Expect::Fail(msg) => {
            assert_eq!(task["attempt"], 2, "{id}: {task}");
            let code = task["error"]["code"].as_str().unwrap_or_default();
            if !(faults && (code == "worker_lost" || code == "lease_expired")) {
                assert_eq!(
                    (code, task["error"]["message"].as_str()),
                    ("agent_failed", Some(msg.as_str())),
                    "{id}: {task}"
                );
            }
        }
    }
    if !faults {
        let want: Vec<&str> = match expect {
            Expect::Echo(_) => vec!["task.queued", "task.started", "output", "task.succeeded"],
            Expect::Sleep => vec!["task.queued", "task.started", "task.succeeded"],
            Expect::Stream(_) => {
                ["task.queued", "task.started"].into_iter().chain(["output"; 5]).chain(["task.succeeded"]).collect()
            }
            Expect::Fail(_) => vec!["task.queued", "task.started", "task.retrying", "task.started", "task.failed"],
        };
        assert_eq!(kinds(frames), want, "{id}");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Bad URLs and unreachable services

/// One way to misconfigure a role, and what its error must say.
struct BadStart {
    what: &'static str,
    store: String,
    bus: String,
    /// Each group: at least one of its words (case-insensitive) is in the `smith:` line.
    needles: Vec<Vec<&'static str>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unreachable_services_fail_fast() {
    let services = services!();
    let cluster = Cluster::new(&services, "").await;
    let (good_store, good_bus) = (cluster.store.clone(), cluster.bus.clone());
    // the configured server, with a password that must never be printed
    let mut pg = reqwest::Url::parse(&services.postgres).expect("postgres URL");
    if pg.password().is_none() {
        pg.set_password(Some(SECRET)).expect("set password");
    }
    let secret = pg.password().expect("password").to_string();
    let missing_db = cluster::unique("smith_t_missing_");
    let mut wrong_user = pg.clone();
    wrong_user.set_username("smith_no_such_role").expect("set user");
    let refused: Vec<&str> = vec!["refused", "unreachable", "timed out", "timeout", "could not connect"];
    let cases = vec![
        BadStart {
            what: "malformed store URL",
            store: format!("postgres://postgres:{SECRET}@127.0.0.1:notaport/test"),
            bus: good_bus.clone(),
            needles: vec![vec!["store"], vec!["invalid", "malformed", "port"]],
        },
        BadStart {
            what: "unsupported store scheme",
            store: format!("mysql://root:{SECRET}@127.0.0.1/test"),
            bus: good_bus.clone(),
            needles: vec![vec!["store"], vec!["mysql"]],
        },
        BadStart {
            what: "unreachable PostgreSQL",
            store: format!("postgres://postgres:{SECRET}@127.0.0.1:1/test"),
            bus: good_bus.clone(),
            needles: vec![vec!["store"], refused.clone()],
        },
        BadStart {
            what: "missing database",
            store: with_database(pg.as_str(), &missing_db),
            bus: good_bus.clone(),
            needles: vec![vec!["store"], vec!["does not exist"]],
        },
        BadStart {
            what: "wrong user",
            store: with_database(wrong_user.as_str(), &cluster.db.name),
            bus: good_bus.clone(),
            needles: vec![vec!["store"], vec!["role", "authentication", "password", "permission"]],
        },
        BadStart {
            what: "malformed bus URL",
            store: good_store.clone(),
            bus: format!("nats://smith:{SECRET}@127.0.0.1:notaport"),
            needles: vec![vec!["bus"], vec!["invalid", "malformed", "port"]],
        },
        BadStart {
            what: "unreachable NATS",
            store: good_store.clone(),
            bus: format!("nats://smith:{SECRET}@127.0.0.1:1"),
            needles: vec![vec!["bus"], refused.clone()],
        },
        BadStart {
            what: "in-process bus",
            store: good_store.clone(),
            bus: "memory://".into(),
            needles: vec![vec!["memory://"], vec!["one process", "shared", "nats://"]],
        },
    ];
    let mut set = tokio::task::JoinSet::new();
    for case in &cases {
        for role in Role::ALL {
            let dir = cluster.dir().join(format!("{}-{}", role.as_str(), case.what.replace(' ', "-")));
            std::fs::create_dir_all(&dir).expect("dir");
            let mut args: Vec<String> = vec![role.as_str().into(), "--store".into(), case.store.clone()];
            args.extend(["--bus".into(), case.bus.clone()]);
            match role {
                Role::Worker => args.extend(["--data-dir".into(), dir.join("data").display().to_string()]),
                Role::Gateway => args.extend(["--listen".into(), "127.0.0.1:0".into()]),
                Role::Supervisor => {}
            }
            let (what, needles) = (case.what, case.needles.clone());
            set.spawn(async move { (what, role, needles, run_to_exit(&args, &dir, Duration::from_secs(15)).await) });
        }
    }
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    while let Some(r) = set.join_next().await {
        let (what, role, needles, exit) = r.expect("case");
        let label = format!("{} with {what}", role.as_str());
        let Some(status) = exit.status else {
            failures.push(format!("{label}: still running after 15 s"));
            continue;
        };
        if status.success() || status.code().is_none() {
            failures.push(format!("{label}: exit {status:?}, want a non-zero exit code\n{}", exit.stderr));
            continue;
        }
        if exit.took > SECS_10 {
            failures.push(format!("{label}: took {:?} to give up (want < 10 s)", exit.took));
        }
        if exit.stderr.contains(&secret) || exit.stdout.contains(&secret) {
            failures.push(format!("{label}: the password is printed:\n{}", exit.stderr));
        }
        if exit.stderr.contains("panicked") {
            failures.push(format!("{label}: panicked:\n{}", exit.stderr));
        }
        let smith_lines: Vec<&str> = exit.stderr.lines().filter(|l| l.starts_with("smith:")).collect();
        let [line] = smith_lines[..] else {
            failures.push(format!("{label}: want one `smith:` line, got {}:\n{}", smith_lines.len(), exit.stderr));
            continue;
        };
        lines.push(format!("{label}: {line}"));
        let lower = line.to_lowercase();
        for group in &needles {
            if !group.iter().any(|w| lower.contains(&w.to_lowercase())) {
                failures.push(format!("{label}: {line:?} names none of {group:?}"));
            }
        }
    }
    lines.sort();
    eprintln!("{}", lines.join("\n"));
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len() * 3, failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 2. Tasks flow through separate processes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_flow_through_separate_processes() {
    const TASKS: usize = 300;
    let cluster = cluster!(4, "[agents.fail]\nretry_backoff = \"50ms\"\n");
    let sup = cluster.start(Role::Supervisor).await;
    let (w1, w2, ga, gb) = tokio::join!(
        cluster.start(Role::Worker),
        cluster.start(Role::Worker),
        cluster.start(Role::Gateway),
        cluster.start(Role::Gateway)
    );
    let (a, b) = (ga.api(), gb.api());
    assert_ne!(a.base, b.base);

    // A's feed of successes, from before the first submission
    let mut feed = a.sse("/v1/events?kind=task.succeeded", None).await;

    let mut set = tokio::task::JoinSet::new();
    for part in 0..10 {
        let apis = [a.clone(), b.clone()];
        set.spawn(async move {
            let mut out = Vec::new();
            for i in (part..TASKS).step_by(10) {
                let (body, expect) = mixed(i);
                let id = apis[i % 2].submit_id(body).await;
                out.push((i, id, expect));
            }
            out
        });
    }
    let mut submitted: Vec<(usize, String, Expect)> = Vec::new();
    while let Some(r) = set.join_next().await {
        submitted.extend(r.expect("submitter"));
    }
    submitted.sort_by_key(|s| s.0);
    let ids: Vec<String> = submitted.iter().map(|s| s.1.clone()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), TASKS);

    let tasks = all_terminal(&a, TASKS, Duration::from_secs(90)).await;
    let by_id: BTreeMap<String, &Value> = tasks.iter().map(|t| (id_of(t), t)).collect();

    // every log, replayed from either gateway, is whole and the same
    let from_a = logs(std::slice::from_ref(&a), &ids, 16).await;
    let from_b = logs(std::slice::from_ref(&b), &ids, 16).await;
    for (_, id, expect) in &submitted {
        assert_complete_log(id, &from_a[id]);
        assert_complete_log(id, &from_b[id]);
        assert_eq!(semantic(&from_a[id]), semantic(&from_b[id]), "{id}: the gateways replay different logs");
        check_outcome(by_id[id], expect, &from_a[id], false);
    }

    // gateway A heard every success, including those of tasks submitted through B
    let want: BTreeSet<String> =
        submitted.iter().filter(|s| s.2.status() == "succeeded").map(|s| s.1.clone()).collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < want.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match feed.next_within(left).await {
            Next::Frame(f) => {
                let v = f.json();
                assert_eq!(f.event, "task.succeeded", "{v}");
                let id = v["task_id"].as_str().expect("task_id").to_string();
                assert!(want.contains(&id), "a success the workload did not expect: {v}");
                assert!(seen.insert(id), "success delivered twice: {v}");
            }
            other => panic!("feed on A: {other:?} after {} of {} successes", seen.len(), want.len()),
        }
    }
    let via_b = submitted.iter().filter(|s| s.0 % 2 == 1 && s.2.status() == "succeeded").count();
    assert!(via_b > 100, "{via_b}");

    // the fleet: five nodes, alive, with their roles
    for api in [&a, &b] {
        let all = nodes(api).await;
        let alive: Vec<&Value> = all.iter().filter(|n| n["status"] == "alive").collect();
        let mut roles = BTreeMap::new();
        for n in &alive {
            *roles.entry(n["role"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
        }
        assert_eq!(alive.len(), 5, "{all:?}");
        assert_eq!(roles, BTreeMap::from([("gateway".into(), 2), ("supervisor".into(), 1), ("worker".into(), 2)]));
        let ids: BTreeSet<&str> = alive.iter().filter_map(|n| n["id"].as_str()).collect();
        assert!(ids.contains(w1.node_id().as_str()) && ids.contains(w2.node_id().as_str()), "{ids:?}");
    }
    // both workers took part
    let workers: BTreeSet<&str> = tasks.iter().filter_map(|t| t["worker"].as_str()).collect();
    assert_eq!(workers, BTreeSet::from([w1.node_id().as_str(), w2.node_id().as_str()]));
    drop((sup, w1, w2, ga, gb));
}

// ---------------------------------------------------------------------------------------------
// 3. Killing any process loses nothing

/// What one reader of one task saw.
struct Followed {
    i: usize,
    id: String,
    frames: Vec<Frame>,
    /// Times the stream was opened again (after a close, a failure or a stall).
    reconnects: usize,
    /// A resubmission with the same idempotency key returned the original task.
    replayed_submit: bool,
    ended: Instant,
}

/// Submits through `first` (the other gateway if it is down), with an idempotency key, so a
/// request cut by a dying gateway can be sent again without making a second task.
async fn submit_failover(
    apis: &[Api; 2],
    first: usize,
    body: &Value,
    deadline: Instant,
) -> Result<(String, bool), String> {
    let mut cur = first;
    let mut tries = 0;
    let mut cut = false;
    loop {
        match apis[cur].try_send(apis[cur].request(reqwest::Method::POST, "/v1/tasks").json(body)).await {
            Ok((status, task)) if status == 201 || status == 200 => {
                if status == 200 && !cut {
                    return Err(format!("first submission of {body} answered 200: {task}"));
                }
                return Ok((id_of(&task), status == 200));
            }
            Ok((status, task)) => return Err(format!("submit {body}: {status} {task}")),
            Err(e) => {
                cut = true;
                tries += 1;
                if Instant::now() > deadline {
                    return Err(format!("submit {body}: {tries} tries, last: {e}"));
                }
                cur ^= 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads a task's stream from its start to its terminal event, moving to the other gateway
/// (resuming with `Last-Event-ID`) whenever the stream breaks.
async fn follow(apis: &[Api; 2], first: usize, id: &str, deadline: Instant) -> Result<(Vec<Frame>, usize), String> {
    let path = format!("/v1/tasks/{id}/events");
    let mut cur = first;
    let mut frames: Vec<Frame> = Vec::new();
    let mut reconnects = 0;
    loop {
        if Instant::now() > deadline {
            return Err(format!("{id}: not terminal by the deadline; saw {:?}", kinds(&frames)));
        }
        let last = frames.last().map(|f| f.id.clone());
        let mut s = match apis[cur].try_sse(&path, last.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                if e.contains(": status ") {
                    return Err(format!("{id}: {e}"));
                }
                reconnects += 1;
                cur ^= 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(30));
            match s.next_within(left).await {
                Next::Frame(f) => {
                    let terminal = is_terminal_kind(&f.event);
                    frames.push(f);
                    if terminal {
                        return Ok((frames, reconnects));
                    }
                }
                Next::Closed | Next::Timeout => {
                    reconnects += 1;
                    cur ^= 1;
                    break;
                }
            }
        }
    }
}

/// Task `i` of the fault test: the mixed workload, plus a 2 s sleep every 50th task so that
/// every worker is likely running something when it is killed.
fn fault_mix(i: usize) -> (Value, Expect) {
    if i % 50 == 49 {
        return (json!({"agent": "sleep", "input": 2000}), Expect::Sleep);
    }
    mixed(i)
}

fn fault_tasks() -> usize {
    std::env::var("SMITH_TEST_FAULT_TASKS").ok().and_then(|v| v.parse().ok()).unwrap_or(FAULT_TASKS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_any_process_loses_nothing() {
    /// Submissions are spread over this long, so that every fault lands mid-run.
    const SPAN: Duration = Duration::from_secs(30);
    /// Tasks submitted and not yet read to their end, at most.
    const IN_FLIGHT: usize = 400;
    let n = fault_tasks();
    let cluster = cluster!(6, "[agents.fail]\nretry_backoff = \"50ms\"\n");
    let mut sups = vec![cluster.start(Role::Supervisor).await, cluster.start(Role::Supervisor).await];
    let (w0, w1, w2, ga, gb) = tokio::join!(
        cluster.start(Role::Worker),
        cluster.start(Role::Worker),
        cluster.start(Role::Worker),
        cluster.start(Role::Gateway),
        cluster.start(Role::Gateway)
    );
    let mut workers = vec![w0, w1, w2];
    let mut gateways = vec![ga, gb];
    let apis = [gateways[0].api(), gateways[1].api()];
    let stop = tokio_util::sync::CancellationToken::new();
    let (system, system_task) = SystemLog::follow(apis.to_vec(), stop.clone());
    let first_leader = system
        .wait_for(Duration::from_secs(15), |_| system.elections().first().map(|e| e.0.clone()))
        .await
        .expect("no leader.elected within 15 s of the supervisors starting");

    let started = Instant::now();
    let deadline = started + SPAN + Duration::from_secs(45);
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let submitted = Arc::new(AtomicUsize::new(0));
    let load = {
        let (apis, permits, submitted) = (apis.clone(), permits.clone(), submitted.clone());
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                tokio::time::sleep_until((started + SPAN.mul_f64(i as f64 / n as f64)).into()).await;
                let permit = permits.clone().acquire_owned().await.expect("permit");
                let (apis, submitted) = (apis.clone(), submitted.clone());
                set.spawn(async move {
                    let (mut body, _) = fault_mix(i);
                    body["idempotency_key"] = json!(format!("fault-{i}"));
                    let (id, replayed_submit) = submit_failover(&apis, i % 2, &body, deadline).await?;
                    submitted.fetch_add(1, Ordering::Relaxed);
                    let (frames, reconnects) = follow(&apis, (i / 2) % 2, &id, deadline).await?;
                    drop(permit);
                    Ok::<_, String>(Followed { i, id, frames, reconnects, replayed_submit, ended: Instant::now() })
                });
            }
            let mut out = Vec::new();
            let mut errors = Vec::new();
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(f)) => out.push(f),
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(format!("reader panicked: {e}")),
                }
            }
            (out, errors)
        })
    };

    // the faults, while tasks flow: the leader, then a worker (whose tasks the new leader must
    // requeue), then a gateway with its readers
    tokio::time::sleep_until((started + Duration::from_secs(6)).into()).await;
    let leader = system.elections().last().map(|e| e.0.clone()).unwrap_or(first_leader);
    let li =
        sups.iter().position(|s| s.logged_node(&leader)).unwrap_or_else(|| panic!("no supervisor logged {leader}"));
    sups[li].kill9().await;
    let leader_killed_at = now_micros();
    let leader_killed = Instant::now();
    eprintln!("killed leader {leader} at {:?}, {} submitted", started.elapsed(), submitted.load(Ordering::Relaxed));

    tokio::time::sleep_until((started + Duration::from_secs(8)).into()).await;
    // a random worker among those running something, so that the kill interrupts work
    let running_before = apis[0].list_all("status=running").await;
    let holding: Vec<usize> = (0..workers.len())
        .filter(|&i| running_before.iter().any(|t| t["worker"] == workers[i].node_id().as_str()))
        .collect();
    let wi =
        if holding.is_empty() { fastrand::usize(..workers.len()) } else { holding[fastrand::usize(..holding.len())] };
    let victim = workers[wi].node_id();
    let held = running_before.iter().filter(|t| t["worker"] == victim.as_str()).count();
    workers[wi].kill9().await;
    eprintln!("killed {} ({victim}, {held} running) at {:?}", workers[wi].name, started.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    workers[wi].restart().await;

    let takeover = system
        .wait_for(Duration::from_secs(15), |_| {
            system.elections().into_iter().find(|(node, at)| node != &leader && micros(at) > leader_killed_at)
        })
        .await;
    eprintln!("takeover {:?} after {:?}", takeover, leader_killed.elapsed());
    // the killed supervisor comes back as a standby
    sups[li].restart().await;

    tokio::time::sleep_until((started + Duration::from_secs(18)).into()).await;
    let gi = fastrand::usize(..gateways.len());
    gateways[gi].kill9().await;
    eprintln!(
        "killed {} at {:?}, {} submitted",
        gateways[gi].name,
        started.elapsed(),
        submitted.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateways[gi].restart().await;

    let (followed, errors) = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()) + SECS_10, load)
        .await
        .expect("the load did not finish by its deadline")
        .expect("load task");
    let took = started.elapsed();
    let last_end = followed.iter().map(|f| f.ended).max().map(|t| t - started);
    eprintln!(
        "{} tasks read to their end, the last after {last_end:?}; {} reader errors",
        followed.len(),
        errors.len()
    );
    if !errors.is_empty() {
        // say where the unfinished tasks are stuck, and whether their worker still lives
        let alive: Vec<Value> = nodes(&apis[0]).await;
        let mut report = Vec::new();
        for e in errors.iter().take(10) {
            let id = e.split(':').next().unwrap_or_default();
            let t = match apis[0].try_send(apis[0].request(reqwest::Method::GET, &format!("/v1/tasks/{id}"))).await {
                Ok((_, t)) => t,
                Err(e) => json!(e),
            };
            let node = alive.iter().find(|n| n["id"] == t["worker"]).map(|n| n["status"].clone());
            report.push(format!(
                "{e}\n    now: status {} attempt {} on {} (node {node:?}), started_at {}",
                t["status"], t["attempt"], t["worker"], t["started_at"]
            ));
        }
        panic!("{} of {n} readers failed, e.g.:\n{}", errors.len(), report.join("\n"));
    }
    assert_eq!(followed.len(), n);

    // a new leader within 10 s of the old one's death
    let (new_leader, at) =
        takeover.unwrap_or_else(|| panic!("no other supervisor became leader within 15 s: {:?}", system.elections()));
    let after = Duration::from_micros((micros(&at) - leader_killed_at).max(0) as u64);
    assert!(after <= SECS_10, "{new_leader} took over {after:?} after the leader's death");
    assert!(sups[1 - li].logged_node(&new_leader), "{new_leader} is not the standby supervisor");

    // every task exactly once, terminal, as expected
    let tasks = all_terminal(&apis[0], n, SECS_10).await;
    let by_id: BTreeMap<String, &Value> = tasks.iter().map(|t| (id_of(t), t)).collect();
    let ids: BTreeSet<String> = followed.iter().map(|f| f.id.clone()).collect();
    assert_eq!(ids.len(), n, "two idempotency keys gave one task");
    assert_eq!(ids, by_id.keys().cloned().collect::<BTreeSet<_>>(), "listed tasks differ from those accepted");

    // what each reader saw, across reconnects, is the whole log once and in order
    let replay = Instant::now();
    let stored = logs(&apis, &ids.iter().cloned().collect::<Vec<_>>(), 32).await;
    eprintln!("replayed {} logs in {:?}", stored.len(), replay.elapsed());
    let mut retried_lost = 0;
    for f in &followed {
        assert_complete_log(&f.id, &f.frames);
        assert_eq!(
            semantic(&f.frames),
            semantic(&stored[&f.id]),
            "{}: the reader's frames differ from the stored log",
            f.id
        );
        let (_, expect) = fault_mix(f.i);
        check_outcome(by_id[&f.id], &expect, &f.frames, true);
        // an attempt the killed worker started, then a retry for its loss
        let mut on_victim = false;
        for fr in &f.frames {
            let v = fr.json();
            if fr.event == "task.started" {
                on_victim = v["data"]["worker"] == victim.as_str();
            } else if fr.event == "task.retrying" && on_victim && v["data"]["error"]["code"] != "agent_failed" {
                retried_lost += 1;
            }
        }
    }
    let reconnected = followed.iter().filter(|f| f.reconnects > 0).count();
    let resubmitted = followed.iter().filter(|f| f.replayed_submit).count();
    eprintln!(
        "n={n} in {took:?}: {retried_lost} attempts of the killed worker retried ({held} were running on it just before), \
         {reconnected} readers reconnected, {resubmitted} submissions answered by idempotency key, status {:?}",
        counts(&tasks)
    );
    assert!(held == 0 || retried_lost > 0, "the killed worker held {held} tasks and none of its attempts was retried");
    assert!(reconnected > 0, "no reader had to reconnect: the gateway kill hit nobody");
    stop.cancel();
    let _ = system_task.await;
    drop((sups, workers, gateways));
}

// ---------------------------------------------------------------------------------------------
// 4. A frozen worker cannot overwrite a later attempt

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_worker_cannot_overwrite_a_later_attempt() {
    let cluster = cluster!(3, "[worker]\nlease = \"3s\"\nheartbeat = \"1s\"\n");
    let sup = cluster.start(Role::Supervisor).await;
    let (gw, mut w1) = tokio::join!(cluster.start(Role::Gateway), cluster.start(Role::Worker));
    let api = gw.api();
    // `a` ends before the frozen worker thaws; `b` is still running its second attempt then,
    // and its first attempt's sleep is over: the thawed worker would complete it at once
    let a = api.submit_id(json!({"agent": "sleep", "input": 8000})).await;
    let b = api.submit_id(json!({"agent": "sleep", "input": 16000})).await;
    let first = w1.node_id();
    for id in [&a, &b] {
        running_on(&api, id, &first, SECS_10).await;
    }
    w1.signal(Signal::SIGSTOP);
    let w2 = cluster.start(Role::Worker).await;
    let second = w2.node_id();
    for id in [&a, &b] {
        eventually("requeued and running on the second worker", Duration::from_secs(20), || async {
            let t = api.get_task(id).await;
            if t["worker"] == second.as_str() && t["attempt"].as_u64() >= Some(2) {
                Ok(())
            } else {
                Err(t.to_string())
            }
        })
        .await;
    }
    let done_a = api.wait_terminal(&a, Duration::from_secs(20)).await;
    let t = api.get_task(&b).await;
    assert_eq!(t["status"], "running", "b should still run its second attempt: {t}");
    w1.signal(Signal::SIGCONT);
    let thawed = Instant::now();
    let thawed_at = now_micros();
    let done_b = api.wait_terminal(&b, Duration::from_secs(25)).await;
    // time for the thawed worker to try everything it would
    tokio::time::sleep_until((thawed + Duration::from_secs(10)).into()).await;
    assert!(w1.exited().is_none(), "the thawed worker exited");
    // it did wake up: it heartbeats again (so it had every chance to write)
    let node = nodes(&api).await.into_iter().find(|n| n["id"] == first.as_str()).expect("the first worker's node");
    assert!(micros(&node["heartbeat_at"]) > thawed_at, "the thawed worker never heartbeat again: {node}");
    let noticed: Vec<String> = w1
        .run_stderr()
        .lines()
        .filter(|l| l.contains(a.as_str()) || l.contains(b.as_str()))
        .map(|l| l.to_string())
        .collect();
    eprintln!("the thawed worker on its old attempts:\n{}", noticed.join("\n"));

    for (id, done, ms) in [(&a, &done_a, 8000), (&b, &done_b, 16000)] {
        let t = api.get_task(id).await;
        assert_eq!(&t, done, "{id} changed after it ended");
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["worker"], second.as_str(), "{t}");
        assert_eq!(t["result"], json!(ms), "{t}");
        let attempt = t["attempt"].as_u64().unwrap();
        assert!(attempt >= 2, "{t}");
        let frames = api.events(id, SECS_10).await;
        assert_complete_log(id, &frames);
        let evs: Vec<Value> = frames.iter().map(Frame::json).collect();
        let terminal = evs.last().unwrap();
        assert_eq!(terminal["attempt"], attempt, "{id}: the terminal event is not from the last attempt: {terminal}");
        let second_start = evs
            .iter()
            .find(|e| e["kind"] == "task.started" && e["attempt"] == 2)
            .unwrap_or_else(|| panic!("{id}: no second attempt: {:?}", kinds(&frames)))["seq"]
            .as_u64()
            .unwrap();
        for e in evs.iter().filter(|e| e["attempt"] == 1) {
            assert!(e["seq"].as_u64().unwrap() < second_start, "{id}: attempt 1 wrote after attempt 2 started: {e}");
        }
        let retry = evs.iter().find(|e| e["kind"] == "task.retrying").expect("a retry");
        let code = retry["data"]["error"]["code"].as_str().unwrap_or_default();
        assert!(code == "lease_expired" || code == "worker_lost", "{id}: {retry}");
    }
    drop((sup, gw, w2));
}

// ---------------------------------------------------------------------------------------------
// 5. SIGTERM lets running tasks finish

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_tasks_finish() {
    const SLEEP_MS: u64 = 20_000;
    let cluster = cluster!(3, "");
    let sup = cluster.start(Role::Supervisor).await;
    let (gw, mut w1) = tokio::join!(cluster.start(Role::Gateway), cluster.start(Role::Worker));
    let api = gw.api();
    let draining = w1.node_id();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(api.submit_id(json!({"agent": "sleep", "input": SLEEP_MS})).await);
    }
    for id in &ids {
        api.wait_status(id, "running", SECS_10).await;
    }
    w1.signal(Signal::SIGTERM);
    let signalled = now_micros();
    eventually("the worker listed as draining", SECS_10, || async {
        let all = nodes(&api).await;
        match all.iter().find(|n| n["id"] == draining.as_str()) {
            Some(n) if n["status"] == "draining" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let late = api.submit_id(json!({"agent": "echo", "input": "late"})).await;
    // the draining worker never takes it, however long it drains
    let status = loop {
        let t = api.get_task(&late).await;
        assert_eq!(t["status"], "queued", "the draining worker took new work: {t}");
        for id in &ids {
            // running until the drain ends; the last may finish just before the process exits
            let t = api.get_task(id).await;
            let state = (t["status"].as_str(), t["attempt"].as_u64());
            assert!(matches!(state, (Some("running" | "succeeded"), Some(1))), "{t}");
        }
        if let Some(status) = w1.wait_exit(Duration::from_millis(500)).await {
            break status;
        }
        assert!(now_micros() - signalled < 60_000_000, "still draining 60 s after SIGTERM");
    };
    let exited = now_micros();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{}", cluster::tail(&w1.run_stderr(), 20));
    let last_finish = futures_util::future::join_all(ids.iter().map(|id| api.get_task(id))).await;
    let last_finish = last_finish.iter().map(|t| micros(&t["finished_at"])).max().unwrap_or(0);
    eprintln!("the drained worker exited {} ms after its last task finished", (exited - last_finish) / 1000);
    for id in &ids {
        let t = api.get_task(id).await;
        assert_eq!((t["status"].as_str(), t["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{t}");
        assert_eq!(t["worker"], draining.as_str(), "{t}");
        assert!(micros(&t["finished_at"]) < exited, "finished after the worker exited: {t}");
        assert!(micros(&t["finished_at"]) > signalled, "finished before the signal: {t}");
        let frames = api.events(id, SECS_10).await;
        assert_complete_log(id, &frames);
        assert_eq!(kinds(&frames), ["task.queued", "task.started", "task.succeeded"], "{id}");
    }
    assert_eq!(api.get_task(&late).await["status"], "queued");
    let node = nodes(&api).await.into_iter().find(|n| n["id"] == draining.as_str()).expect("the drained worker");
    assert_eq!(node["status"], "stopped", "{node}");

    // another worker takes what was left
    let w2 = cluster.start(Role::Worker).await;
    let t = api.wait_terminal(&late, SECS_10).await;
    assert_eq!((t["status"].as_str(), t["worker"].as_str()), (Some("succeeded"), Some(w2.node_id().as_str())), "{t}");

    // nothing was requeued: no reap happened
    let mut feed = api.sse("/v1/events?kind=system&after=0", None).await;
    let mut system = Vec::new();
    while let Next::Frame(f) = feed.next_within(Duration::from_secs(1)).await {
        system.push(f.json());
    }
    let reaped: Vec<&Value> = system.iter().filter(|e| e["data"]["type"] == "tasks.reaped").collect();
    assert!(reaped.is_empty(), "tasks were reaped during a drain: {reaped:?}");
    drop((sup, gw, w2));
}

// ---------------------------------------------------------------------------------------------
// 6. A NATS restart is survived

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_is_survived() {
    let services = services!();
    let mut nats = NatsServer::start().await;
    let cluster = Cluster::with_bus(&services, &nats.url(), &config(3, "")).await;
    let mut sup = cluster.start(Role::Supervisor).await;
    let (mut w, mut gw) = tokio::join!(cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let api = gw.api();
    let batch = |from: usize| {
        let api = api.clone();
        async move {
            let mut ids = Vec::new();
            for i in from..from + 20 {
                let body = match i % 3 {
                    0 => json!({"agent": "echo", "input": i}),
                    1 => json!({"agent": "sleep", "input": 100}),
                    _ => json!({"agent": "stream", "input": {"events": 3, "bytes": 10, "interval_ms": 10}}),
                };
                let (status, task) = api.post("/v1/tasks", &body).await;
                assert_eq!(status, 201, "submit {body}: {task}");
                ids.push(id_of(&task));
            }
            ids
        }
    };
    let all_done = |ids: Vec<String>, within: Duration| {
        let api = api.clone();
        async move {
            for id in &ids {
                let t = api.wait_terminal(id, within).await;
                assert_eq!(t["status"], "succeeded", "{t}");
            }
        }
    };
    let before = batch(0).await;
    all_done(before.clone(), Duration::from_secs(20)).await;

    nats.kill9().await;
    let down = Instant::now();
    // the store is the truth: the gateway accepts work while the bus is gone
    let during = batch(100).await;
    tokio::time::sleep_until((down + Duration::from_secs(2)).into()).await;
    let mut done_while_down = 0;
    for id in &during {
        done_while_down += is_terminal(&api.get_task(id).await) as usize;
    }
    nats.restart().await;
    let after = batch(200).await;
    // a live stream after the restart reaches its end
    let followed =
        api.submit_id(json!({"agent": "stream", "input": {"events": 10, "bytes": 10, "interval_ms": 50}})).await;
    let frames = api.events(&followed, Duration::from_secs(20)).await;
    assert_complete_log(&followed, &frames);
    all_done([before, during, after].concat(), Duration::from_secs(30)).await;
    eprintln!("{done_while_down} of 20 tasks submitted during the outage finished before NATS was back");

    for p in [&mut sup, &mut w, &mut gw] {
        assert!(p.exited().is_none(), "{} exited", p.name);
    }
    let alive: Vec<Value> = nodes(&api).await.into_iter().filter(|n| n["status"] == "alive").collect();
    assert_eq!(alive.len(), 3, "{alive:?}");
}

/// LLM agents on the distributed shape: a worker gives its agents the gateway's MCP endpoint
/// (`[worker] mcp_url`); sub-tasks, discoveries and sessions go through PostgreSQL and NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_agents_collaborate_across_processes() {
    let services = services!();
    let mock = anthropic_mock::Mock::start().await;
    let cluster = Cluster::new(&services, &config(4, "")).await;
    let gw = cluster.start(Role::Gateway).await;
    let api = gw.api();
    let agents = format!(
        "[worker]\nmcp_url = \"{}/mcp\"\n\n[agents.boss]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\n\
         base_url = \"{}\"\napi_key = \"k\"\n",
        api.base, mock.url
    );
    std::fs::write(cluster.config_path(), config(4, &agents)).unwrap();
    let _sup = cluster.start(Role::Supervisor).await;
    let _worker = cluster.start(Role::Worker).await;
    let mut discoveries = api.sse("/v1/events?kind=discovery", None).await;

    // An orchestrator fans a task out to another agent and collects it.
    let boss = api.submit_id(json!({"agent": "boss", "input": "SPAWN one helper"})).await;
    let t = api.wait_terminal(&boss, Duration::from_secs(60)).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert!(t["result"]["text"].as_str().unwrap().contains("from the parent"), "{t:#}");
    let (_, children) = api.get(&format!("/v1/tasks?parent_id={boss}")).await;
    assert_eq!(children["items"][0]["status"], "succeeded", "{children:#}");

    // A discovery shared through the worker's MCP access reaches the gateway's feed.
    let sharer = api.submit_id(json!({"agent": "boss", "input": "SHARE workers share"})).await;
    let t = api.wait_terminal(&sharer, Duration::from_secs(60)).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let d = discoveries.next(SECS_10).await.expect("a discovery").json();
    assert_eq!(d["data"]["content"], "workers share");
    assert_eq!(d["data"]["task_id"], sharer.as_str());

    // A session's turns run in order with their history.
    let (status, session) = api.post("/v1/sessions", &json!({"agent": "boss", "input": "REMEMBER gamma"})).await;
    assert_eq!(status, 201, "{session:#}");
    let sid = session["id"].as_str().unwrap();
    let (_, turn) = api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "RECALL"})).await;
    let t2 = api.wait_terminal(turn["id"].as_str().unwrap(), Duration::from_secs(60)).await;
    assert_eq!(t2["result"]["text"], "you said gamma", "{t2:#}");
}

/// The stack the generated AWS deployment runs: PostgreSQL and RabbitMQ (`amqp://`, Amazon MQ's
/// protocol) between separate processes. Mixed tasks finish with whole logs, a live stream
/// reaches its reader, a cancel stops a running task, and the gateway's bus counters show the
/// events arrived over AMQP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_flow_over_the_amqp_bus() {
    const TASKS: usize = 60;
    let services = services!();
    let Some(amqp) = std::env::var("SMITH_TEST_AMQP_URL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("skipped: SMITH_TEST_AMQP_URL not set");
        return;
    };
    let services = Services { nats: amqp, ..services };
    let cluster = Cluster::new(&services, &config(4, "[agents.fail]\nretry_backoff = \"50ms\"\n")).await;
    assert!(cluster.bus.starts_with("amqp"), "{}", cluster.bus);
    let sup = cluster.start(Role::Supervisor).await;
    let (w, gw) = tokio::join!(cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let api = gw.api();

    let mut submitted = Vec::new();
    for i in 0..TASKS {
        let (body, expect) = mixed(i);
        submitted.push((api.submit_id(body).await, expect));
    }
    // a live stream, read as it is written
    let followed =
        api.submit_id(json!({"agent": "stream", "input": {"events": 20, "bytes": 10, "interval_ms": 25}})).await;
    let frames = api.events(&followed, Duration::from_secs(30)).await;
    assert_complete_log(&followed, &frames);
    // a cancel reaches a running task
    let long = api.submit_id(json!({"agent": "sleep", "input": 60_000})).await;
    eventually("the long task runs", SECS_10, || async {
        let t = api.get_task(&long).await;
        if t["status"] == "running" {
            Ok(())
        } else {
            Err(format!("{}", t["status"]))
        }
    })
    .await;
    let (status, body) = api.cancel(&long).await;
    assert!(status.is_success(), "cancel: {status} {body}");
    let t = api.wait_terminal(&long, SECS_10).await;
    assert_eq!(t["status"], "cancelled", "{t}");

    let ids: Vec<String> = submitted.iter().map(|s| s.0.clone()).collect();
    for (id, _) in &submitted {
        api.wait_terminal(id, Duration::from_secs(60)).await;
    }
    let from = logs(std::slice::from_ref(&api), &ids, 8).await;
    for (id, expect) in &submitted {
        assert_complete_log(id, &from[id]);
        check_outcome(&api.get_task(id).await, expect, &from[id], false);
    }

    // the events reached the gateway through the broker
    let resp = reqwest::get(format!("{}/metrics", api.base)).await.expect("scrape the gateway");
    let text = resp.text().await.expect("metrics text");
    let received: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("smith_bus_messages_total{")
                && l.contains("direction=\"in\"")
                && l.contains("kind=\"events\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(received >= TASKS as f64, "the gateway received {received} event messages over AMQP:\n{text}");
    drop((sup, w, gw));
}
