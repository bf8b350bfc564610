//! PostgreSQL restarted under load: separate `smith supervisor`, two `smith worker`s and a
//! `smith gateway` keep serving while the machine's PostgreSQL is stopped and started again
//! under them, with tasks submitted all along.
//!
//! What it proves: every submission is answered, `201` or a clear `503 unavailable` (never a
//! 500, a cut connection or a hang); every task accepted with a `201` — before, during or after
//! the outage — succeeds once PostgreSQL is back, with exactly one terminal event; a `503`
//! submission retried with its idempotency key makes at most one task; no process exits, all are
//! listed alive again; new submissions work.
//!
//! It restarts the machine's cluster (`pg_ctlcluster`, as root, as in CI), so it lives alone in
//! its test binary, apart from the other integration tests (`tests/it/`): cargo runs test
//! binaries one after another, so no other test uses PostgreSQL meanwhile. Needs `SMITH_TEST_POSTGRES_URL` (a server on this machine) and
//! `SMITH_TEST_NATS_URL`; skips, saying why, when either is unset or the cluster cannot be
//! restarted from here. PostgreSQL is started again when the test ends, even when it fails.

#[path = "it/common/mod.rs"]
mod common;

use common::cluster;

use cluster::{eventually, id_of, Cluster, Proc, Role, Services, POSTGRES_VAR};
use common::{assert_complete_log, counts, is_terminal, kinds, Api, Frame};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long tasks are submitted for, and how often (50 a second).
const LOAD: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(20);
/// When, into the load, PostgreSQL is stopped, and how long it stays down before it is started.
const STOP_AFTER: Duration = Duration::from_secs(6);
const DOWN_FOR: Duration = Duration::from_secs(3);
/// Longest a submission may take to be answered, outage or not.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long after PostgreSQL is back (and the load is over) every accepted task has to succeed.
const SETTLE: Duration = Duration::from_secs(25);
/// Submissions after the restart, each of which must be accepted.
const AFTER_TASKS: usize = 20;

/// The machine's PostgreSQL cluster (`ls /etc/postgresql | head -n1`, `main`), driven with
/// `pg_ctlcluster`. Dropping it starts the cluster again if it is down, so a failing test never
/// leaves the server stopped.
struct LocalPg {
    version: String,
    admin: String,
}

/// Runs `pg_ctlcluster --skip-systemctl-redirect VERSION main ACTION`, blocking; its output, or
/// why it failed.
fn ctl_blocking(version: &str, action: &str) -> Result<String, String> {
    let out = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", version, "main", action])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pg_ctlcluster: {e}"))?;
    ctl_result(action, out)
}

fn ctl_result(action: &str, out: std::process::Output) -> Result<String, String> {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("pg_ctlcluster {action}: {}: {}", out.status, text.trim()))
    }
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

impl LocalPg {
    /// The running cluster serving `admin`, or why it cannot be restarted from here.
    fn find(admin: &str) -> Result<LocalPg, String> {
        let url = reqwest::Url::parse(admin).map_err(|e| format!("{POSTGRES_VAR} is not a URL: {e}"))?;
        let host = url.host_str().unwrap_or_default();
        if !matches!(host, "127.0.0.1" | "localhost" | "::1" | "[::1]") {
            return Err(format!("{POSTGRES_VAR} names host {host:?}, not this machine's server"));
        }
        if !in_path("pg_ctlcluster") {
            return Err("pg_ctlcluster is not installed".into());
        }
        let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        if !root.unwrap_or(false) {
            return Err("not running as root: cannot restart the cluster with pg_ctlcluster".into());
        }
        let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .map_err(|e| format!("/etc/postgresql: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        versions.sort();
        let version = versions.into_iter().next().ok_or("no cluster in /etc/postgresql")?;
        // checked before the guard exists: a cluster that was down is none of this test's doing
        ctl_blocking(&version, "status").map_err(|e| format!("cluster {version}/main is not running: {e}"))?;
        Ok(LocalPg { version, admin: admin.to_string() })
    }

    async fn ctl(&self, action: &str) -> Result<String, String> {
        let run = tokio::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .map_err(|_| format!("pg_ctlcluster {action}: no exit within 60 s"))?
            .map_err(|e| format!("cannot run pg_ctlcluster: {e}"))?;
        ctl_result(action, out)
    }

    /// Stops the cluster, keeps it down for `down_for`, starts it and waits until it accepts
    /// connections.
    async fn outage(&self, down_for: Duration) -> Outage {
        let stop_begun = Instant::now();
        self.ctl("stop").await.unwrap_or_else(|e| panic!("{e}"));
        let down = Instant::now();
        assert!(self.ctl("status").await.is_err(), "PostgreSQL still runs after pg_ctlcluster stop");
        tokio::time::sleep(down_for).await;
        let start_begun = Instant::now();
        self.ctl("start").await.unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            use sqlx::Connection;
            let conn = tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&self.admin)).await;
            if let Ok(Ok(c)) = conn {
                let _ = c.close().await;
                break;
            }
            assert!(Instant::now() < deadline, "PostgreSQL does not accept connections 30 s after its start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Outage { stop_begun, down, start_begun, back: Instant::now() }
    }
}

impl Drop for LocalPg {
    fn drop(&mut self) {
        if ctl_blocking(&self.version, "status").is_ok() {
            return;
        }
        match ctl_blocking(&self.version, "start") {
            Ok(_) => eprintln!("PostgreSQL {}/main was down at the end of the test: started it again", self.version),
            Err(e) => eprintln!("PostgreSQL {}/main is down and could not be started again: {e}", self.version),
        }
    }
}

/// When PostgreSQL went away and came back.
#[derive(Clone, Copy, Debug)]
struct Outage {
    stop_begun: Instant,
    /// `pg_ctlcluster stop` returned: the server is gone.
    down: Instant,
    start_begun: Instant,
    /// It accepts connections again.
    back: Instant,
}

impl Outage {
    fn phase(&self, at: Instant) -> &'static str {
        if at < self.stop_begun {
            "before"
        } else if at < self.back {
            "during"
        } else {
            "after"
        }
    }
}

/// How the gateway answered a submission.
#[derive(Clone, Debug)]
enum Answer {
    /// 201, with the task's id.
    Created(String),
    /// 200: the idempotency key named an existing task.
    Existing(String),
    /// 503 `{"error":{"code":"unavailable",…}}` with `retry-after`; the message.
    Unavailable(String),
    /// Anything else: another status, a malformed body, no answer within the timeout.
    Wrong(String),
}

impl Answer {
    fn label(&self) -> &'static str {
        match self {
            Answer::Created(_) => "201",
            Answer::Existing(_) => "200",
            Answer::Unavailable(_) => "503",
            Answer::Wrong(_) => "WRONG",
        }
    }
}

async fn submit_once(api: &Api, body: &Value) -> Answer {
    let req = api.request(reqwest::Method::POST, "/v1/tasks").json(body).timeout(SUBMIT_TIMEOUT);
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Answer::Wrong(format!("no answer within {SUBMIT_TIMEOUT:?}: {e}")),
        Err(e) => return Answer::Wrong(format!("no answer: {e}")),
    };
    let status = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => return Answer::Wrong(format!("{status}, body cut: {e}")),
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let id = v["id"].as_str().map(str::to_string);
    let message = v["error"]["message"].as_str().filter(|m| !m.is_empty());
    match (status, id, message) {
        (201, Some(id), _) => Answer::Created(id),
        (200, Some(id), _) => Answer::Existing(id),
        (503, _, Some(m)) if v["error"]["code"] == "unavailable" && retry_after => Answer::Unavailable(m.to_string()),
        _ => Answer::Wrong(format!("{status} (retry-after: {retry_after}) {v}")),
    }
}

/// One submission of the load.
struct Sent {
    i: usize,
    body: Value,
    at: Instant,
    took: Duration,
    answer: Answer,
}

/// Submission `i`: an echo (its input comes back as the result) or a 200–500 ms sleep, each
/// with an idempotency key of its own so that a `503` can be retried safely.
fn workload(run: &str, i: usize) -> Value {
    let key = format!("{run}-{i}");
    if i % 2 == 0 {
        json!({"agent": "echo", "input": {"n": i}, "idempotency_key": key})
    } else {
        json!({"agent": "sleep", "input": 200 + (i * 37) % 301, "idempotency_key": key})
    }
}

/// What reads answered besides `200`: `503`s are allowed (a pooled connection the restart
/// killed), anything else is a finding.
#[derive(Default)]
struct Reads {
    unavailable: usize,
    wrong: Vec<String>,
}

async fn get_json(api: &Api, path: &str, reads: &Mutex<Reads>) -> Option<Value> {
    let answer = api.try_send(api.request(reqwest::Method::GET, path)).await;
    let mut r = reads.lock().expect("reads");
    match answer {
        Ok((s, v)) if s == 200 => return Some(v),
        Ok((s, v)) if s == 503 && v["error"]["code"] == "unavailable" => r.unavailable += 1,
        Ok((s, v)) => r.wrong.push(format!("GET {path}: {s} {v}")),
        Err(e) => r.wrong.push(format!("GET {path}: {e}")),
    }
    None
}

/// Every task, following cursors; `None` when a page could not be read.
async fn list_tasks(api: &Api, reads: &Mutex<Reads>) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/tasks?limit=1000".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = get_json(api, &path, reads).await?;
        out.extend(page["items"].as_array()?.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Some(out),
        }
    }
}

/// Polls until every task of `ids` has succeeded; panics (with `context`) when one ends
/// otherwise, is not listed at all, or is still unfinished at `deadline`.
async fn await_succeeded(api: &Api, ids: &BTreeSet<String>, deadline: Instant, reads: &Mutex<Reads>, context: &str) {
    loop {
        if let Some(tasks) = list_tasks(api, reads).await {
            let by_id: BTreeMap<String, &Value> = tasks.iter().map(|t| (id_of(t), t)).collect();
            let lost: Vec<&String> = ids.iter().filter(|id| !by_id.contains_key(*id)).collect();
            assert!(lost.is_empty(), "{} accepted tasks are not listed, e.g. {:?}\n{context}", lost.len(), &lost[..1]);
            let ended_badly: Vec<&&Value> =
                ids.iter().map(|id| &by_id[id]).filter(|t| is_terminal(t) && t["status"] != "succeeded").collect();
            assert!(
                ended_badly.is_empty(),
                "{} accepted tasks did not succeed: {ended_badly:?}\n{context}",
                ended_badly.len()
            );
            let pending: Vec<&&Value> = ids.iter().map(|id| &by_id[id]).filter(|t| !is_terminal(t)).collect();
            if pending.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let all: Vec<Value> = pending.iter().map(|t| (**t).clone()).collect();
                panic!(
                    "{} accepted tasks unfinished at the deadline ({:?}), e.g. {}\n{context}",
                    pending.len(),
                    counts(&all),
                    all[0]
                );
            }
        } else {
            assert!(Instant::now() < deadline, "cannot list the tasks at the deadline\n{context}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A task's whole log over SSE; a `503` on opening the stream is retried.
async fn task_log(api: &Api, id: &str) -> Result<Vec<Frame>, String> {
    let path = format!("/v1/tasks/{id}/events");
    let mut last = String::new();
    for _ in 0..20 {
        match api.try_sse(&path, None).await {
            Ok(mut s) => {
                let frames = s.rest(Duration::from_secs(10)).await;
                match &s.error {
                    None => return Ok(frames),
                    Some(e) => last = format!("stream broke: {e}"),
                }
            }
            Err(e) if e.contains(": status 503") => last = e,
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{id}: {last}"))
}

/// Every task's log, 16 readers at a time.
async fn task_logs(api: &Api, ids: &[String]) -> BTreeMap<String, Vec<Frame>> {
    let logs = common::by_id(ids, 16, |id| {
        let api = api.clone();
        async move { task_log(&api, &id).await }
    })
    .await;
    logs.into_iter().map(|(id, log)| (id, log.unwrap_or_else(|e| panic!("cannot read a task's log: {e}")))).collect()
}

fn findings(failures: &[String]) -> String {
    format!("findings so far: {failures:#?}")
}

/// Lines of a process's stderr that say something about the outage, counted by marker.
fn log_markers(p: &Proc) -> BTreeMap<&'static str, usize> {
    const MARKERS: [&str; 9] = [
        "store batch failed",
        "store writer connection failed",
        "cannot start a transaction",
        "cannot record the outcome",
        "append failed",
        "handing back tasks",
        "component failed",
        "request failed",
        "marked dead",
    ];
    let text = p.stderr();
    MARKERS.iter().map(|m| (*m, text.lines().filter(|l| l.contains(m)).count())).filter(|(_, n)| *n > 0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_no_accepted_task() {
    let Some(services) = Services::from_env() else { return };
    let pg_check = LocalPg::find(&services.postgres);
    if let Err(why) = &pg_check {
        eprintln!("skipped: {why}");
        return;
    }
    let test_start = Instant::now();
    let cluster = Cluster::new(&services, "[store]\npool_size = 3\n").await;
    // declared after the cluster, so dropped before it: PostgreSQL runs again before the
    // cluster's database is dropped, and before that the processes are killed
    let pg = pg_check.expect("checked");
    let mut sup = cluster.start(Role::Supervisor).await;
    let (mut w1, mut w2, mut gw) =
        tokio::join!(cluster.start(Role::Worker), cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let api = gw.api();
    let warm = api.submit_id(json!({"agent": "echo", "input": "warm-up"})).await;
    assert_eq!(api.wait_terminal(&warm, Duration::from_secs(15)).await["status"], "succeeded");
    let run = cluster::unique("k");

    // ---- the load, with PostgreSQL stopped and started again in its middle
    let t0 = Instant::now();
    let load = {
        let (api, run) = (api.clone(), run.clone());
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0;
            while t0.elapsed() < LOAD {
                tick.tick().await;
                let (api, body) = (api.clone(), workload(&run, i));
                set.spawn(async move {
                    let at = Instant::now();
                    let answer = submit_once(&api, &body).await;
                    Sent { i, body, at, took: at.elapsed(), answer }
                });
                i += 1;
            }
            let mut sent = Vec::new();
            while let Some(r) = set.join_next().await {
                sent.push(r.expect("submitter"));
            }
            sent.sort_by_key(|s| s.i);
            sent
        })
    };
    tokio::time::sleep_until((t0 + STOP_AFTER).into()).await;
    let outage = pg.outage(DOWN_FOR).await;
    let sent = load.await.expect("load");
    let load_took = t0.elapsed();
    let secs = |a: Instant| format!("{:.1}s", a.saturating_duration_since(t0).as_secs_f64());
    eprintln!(
        "PostgreSQL: stop at {} (down at {}), start at {}, accepting again at {}; load of {} submissions over {:.1}s",
        secs(outage.stop_begun),
        secs(outage.down),
        secs(outage.start_begun),
        secs(outage.back),
        sent.len(),
        load_took.as_secs_f64()
    );

    // ---- every submission was answered, 201 or a clear 503, within the bound
    let mut failures: Vec<String> = Vec::new();
    let mut table: BTreeMap<(&str, &str), (usize, Duration)> = BTreeMap::new();
    for s in &sent {
        let e = table.entry((outage.phase(s.at), s.answer.label())).or_default();
        e.0 += 1;
        e.1 = e.1.max(s.took);
    }
    for ((phase, label), (n, max)) in &table {
        eprintln!("  submitted {phase:>6} the outage: {n:4} answered {label} (slowest {:.2}s)", max.as_secs_f64());
    }
    let mut messages: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sent {
        match &s.answer {
            Answer::Wrong(w) => failures.push(format!("submission {} ({}): {w}", s.i, s.body)),
            Answer::Existing(id) => failures.push(format!("first submission {} answered 200 ({id})", s.i)),
            Answer::Unavailable(m) => *messages.entry(m.chars().take(160).collect()).or_default() += 1,
            Answer::Created(_) => {}
        }
    }
    for (m, n) in &messages {
        eprintln!("  503 x{n}: {m}");
    }
    assert!(
        sent.iter().any(|s| outage.phase(s.at) == "during"),
        "no submission was sent while PostgreSQL was down: the load stalled"
    );
    for p in [&mut sup, &mut w1, &mut w2, &mut gw] {
        if let Some(status) = p.exited() {
            failures.push(format!("{} exited during the outage: {status}", p.name));
        }
    }

    // ---- every task accepted before, during and after the outage succeeds
    let reads = Mutex::new(Reads::default());
    let created: BTreeSet<String> = sent
        .iter()
        .filter_map(|s| match &s.answer {
            Answer::Created(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let settle_from = Instant::now().max(outage.back);
    await_succeeded(&api, &created, settle_from + SETTLE, &reads, &findings(&failures)).await;
    let settled_after = outage.back.elapsed();
    eprintln!(
        "all {} accepted tasks succeeded {:.1}s after PostgreSQL was back (the load ended {:.1}s after it)",
        created.len(),
        settled_after.as_secs_f64(),
        (t0 + load_took).saturating_duration_since(outage.back).as_secs_f64()
    );

    // ---- a 503 retried with its idempotency key makes one task; new submissions are accepted
    let mut retried: BTreeMap<&str, usize> = BTreeMap::new();
    let mut retried_ids = BTreeSet::new();
    for s in sent.iter().filter(|s| matches!(s.answer, Answer::Unavailable(_))) {
        let answer = submit_once(&api, &s.body).await;
        *retried.entry(answer.label()).or_default() += 1;
        match answer {
            Answer::Created(id) | Answer::Existing(id) => {
                retried_ids.insert(id);
            }
            other => failures.push(format!("submission {} retried after the restart: {other:?}", s.i)),
        }
    }
    let mut after_ids = BTreeSet::new();
    for i in 0..AFTER_TASKS {
        let body = workload(&run, sent.len() + i);
        match submit_once(&api, &body).await {
            Answer::Created(id) => {
                after_ids.insert(id);
            }
            other => failures.push(format!("new submission {body} after the restart: {other:?}")),
        }
    }
    let later: BTreeSet<String> = retried_ids.union(&after_ids).cloned().collect();
    await_succeeded(&api, &later, Instant::now() + Duration::from_secs(15), &reads, &findings(&failures)).await;
    eprintln!("503s retried with their idempotency keys: {retried:?}; {} new submissions accepted", after_ids.len());

    // ---- one task per key, all succeeded, echoes returned their input
    let tasks = list_tasks(&api, &reads).await.expect("list every task");
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for t in &tasks {
        let key = t["idempotency_key"].as_str().unwrap_or("<none>").to_string();
        by_key.entry(key).or_default().push(t);
    }
    let inputs: BTreeMap<String, &Value> =
        sent.iter().map(|s| &s.body).map(|b| (b["idempotency_key"].as_str().expect("key").to_string(), b)).collect();
    for (key, ts) in &by_key {
        if ts.len() > 1 {
            failures.push(format!("{} tasks for idempotency key {key}: {ts:?}", ts.len()));
        }
        let t = ts[0];
        if t["status"] != "succeeded" {
            failures.push(format!("task {} ended {}: {t}", id_of(t), t["status"]));
        }
        if let Some(body) = inputs.get(key) {
            if body["agent"] == "echo" && t["result"] != body["input"] {
                failures.push(format!("echo {key} returned {} for {}", t["result"], body["input"]));
            }
        }
    }
    let keys_sent = sent.len() + AFTER_TASKS;
    let keyed = by_key.keys().filter(|k| k.starts_with(&run)).count();
    if keyed != keys_sent {
        failures.push(format!("{keyed} keys have a task, {keys_sent} were submitted (every 503 was retried)"));
    }
    eprintln!("{} tasks listed: {:?}", tasks.len(), counts(&tasks));

    // ---- every log whole, with exactly one terminal event
    let ids: Vec<String> = tasks.iter().map(id_of).collect();
    let logs = task_logs(&api, &ids).await;
    let mut retries: BTreeMap<String, usize> = BTreeMap::new();
    for (id, frames) in &logs {
        assert_complete_log(id, frames);
        for f in frames.iter().filter(|f| f.event == "task.retrying") {
            let d = f.json()["data"].clone();
            let why = d["error"]["code"].as_str().or(d["reason"].as_str()).unwrap_or("?").to_string();
            *retries.entry(why).or_default() += 1;
        }
    }
    let rerun = logs.values().filter(|f| kinds(f).iter().filter(|k| *k == "task.started").count() > 1).count();
    eprintln!("{rerun} tasks ran more than once; retries by reason: {retries:?}");

    // ---- every process alive, and listed alive
    for p in [&mut sup, &mut w1, &mut w2, &mut gw] {
        if let Some(status) = p.exited() {
            failures.push(format!("{} exited: {status}", p.name));
        }
        if p.stderr().contains("panicked") {
            failures.push(format!("{} panicked:\n{}", p.name, cluster::tail(&p.stderr(), 40)));
        }
        eprintln!("  {} log: {:?}", p.name, log_markers(p));
    }
    let want_workers: BTreeSet<String> = [w1.node_id(), w2.node_id()].into();
    let listed = eventually("every process listed alive", Duration::from_secs(15), || async {
        let Some(body) = get_json(&api, "/v1/nodes", &reads).await else {
            return Err("GET /v1/nodes failed".to_string());
        };
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let alive: Vec<&Value> = items.iter().filter(|n| n["status"] == "alive").collect();
        let mut roles: BTreeMap<String, usize> = BTreeMap::new();
        for n in &alive {
            *roles.entry(n["role"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        let workers: BTreeSet<String> =
            alive.iter().filter(|n| n["role"] == "worker").filter_map(|n| n["id"].as_str()).map(String::from).collect();
        let want_roles = BTreeMap::from([("gateway".into(), 1), ("supervisor".into(), 1), ("worker".into(), 2)]);
        if roles == want_roles && workers == want_workers {
            Ok(items)
        } else {
            Err(format!("{items:?}"))
        }
    })
    .await;
    eprintln!(
        "nodes: {}",
        listed.iter().map(|n| format!("{} {}", n["role"], n["status"])).collect::<Vec<_>>().join(", ")
    );

    // the fleet's own record of the outage (reported, not judged)
    if let Ok(mut feed) = api.try_sse("/v1/events?kind=system&after=0", None).await {
        let mut types: BTreeMap<String, usize> = BTreeMap::new();
        let mut dead = Vec::new();
        while let common::Next::Frame(f) = feed.next_within(Duration::from_secs(1)).await {
            let d = f.json()["data"].clone();
            *types.entry(d["type"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            if d["type"] == "node.dead" {
                dead.push(format!("{} {} (last heartbeat {})", d["role"], d["node"], d["last_heartbeat"]));
            }
        }
        eprintln!("system events: {types:?}; marked dead: {dead:?}");
    }

    let reads = reads.into_inner().expect("reads");
    eprintln!("reads answered 503 after the outage: {}", reads.unavailable);
    failures.extend(reads.wrong);
    assert!(failures.is_empty(), "{} findings:\n{}", failures.len(), failures.join("\n"));
    eprintln!("wall time {:.1}s", test_start.elapsed().as_secs_f64());
    drop((sup, w1, w2, gw, pg));
}
