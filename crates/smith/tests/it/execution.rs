//! Running agents in a real `smith up`: cancelling a process tree, timeouts, process failures
//! with their stderr, and retries with exponential backoff.

use crate::common;

use common::{assert_complete_log, kinds, micros, Opts, Smith};
use serde_json::json;
use std::time::{Duration, Instant};

const SECS_10: Duration = Duration::from_secs(10);

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug)]
struct Proc {
    pid: i32,
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` may contain spaces and parentheses: the fields start after the last `)`
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some(Proc { pid, state, ppid, pgrp })
}

/// Every process (zombies included) in process group `pgid`.
fn group(pgid: i32) -> Vec<Proc> {
    let members = common::pids(|pid| read_proc(pid).is_some_and(|p| p.pgrp == pgid));
    members.into_iter().filter_map(read_proc).collect()
}

/// Kills a process group when the test ends, so a failing test leaves no `sleep 300` behind.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !group(self.0).is_empty() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The pid the `tree` agent prints first in an attempt ≥ `attempt` (its shell: the group leader).
async fn first_pid(stream: &mut common::SseStream, attempt: u64) -> i32 {
    loop {
        let f = stream.next(SECS_10).await.expect("stream closed before any output");
        if f.event == "output" && f.json()["attempt"].as_u64().unwrap_or(0) >= attempt {
            let text = f.json()["data"].as_str().unwrap_or_default().trim().to_string();
            return text.parse::<i32>().unwrap_or_else(|_| panic!("first output is not a pid: {f:?}"));
        }
        assert!(!common::is_terminal_kind(&f.event), "task ended early: {f:?}");
    }
}

/// Live (non-zombie) members of a group.
fn live(pgid: i32) -> Vec<Proc> {
    group(pgid).into_iter().filter(|p| p.state != 'Z').collect()
}

const TREE_CONFIG: &str = r#"
[agents.tree]
executor = "process"
command = "sh"
args = ["-c", "echo $$; sleep 300 & sleep 300 & (sleep 300 &); wait"]
input = "none"
kill_grace = "1s"

[agents.noisy]
executor = "process"
command = "sh"
args = ["-c", "echo line one; echo line two; echo 'it broke: {task_id}' >&2; exit 3"]
input = "none"
max_attempts = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_whole_process_tree() {
    let s = Smith::start(Opts::new().config(TREE_CONFIG)).await;
    let task = s.submit(json!({"agent": "tree", "input": ""})).await;
    let id = task["id"].as_str().unwrap();
    let mut stream = s.sse(&format!("/v1/tasks/{id}/events"), None).await;
    let pgid = first_pid(&mut stream, 1).await;
    let _guard = GroupGuard(pgid);
    assert!(pgid > 1);

    // sh and its three sleeps share the group (the executor made sh a group leader)
    let deadline = Instant::now() + SECS_10;
    loop {
        let members = live(pgid);
        // the `(sleep 300 &)` one was orphaned: its parent is no longer sh
        let orphan = members.iter().any(|p| p.pid != pgid && p.ppid != pgid);
        if members.len() >= 4 && orphan {
            assert!(members.iter().any(|p| p.pid == pgid), "the group leader is not sh: {members:?}");
            break;
        }
        assert!(Instant::now() < deadline, "group {pgid} never had sh and three sleeps: {members:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.get_task(id).await["status"], "running");

    let (status, body) = s.cancel(id).await;
    assert_eq!(status, 202, "{body}");
    let t = s.wait_terminal(id, Duration::from_secs(5)).await;
    assert_eq!(t["status"], "cancelled", "{t}");
    let (status, again) = s.cancel(id).await;
    assert_eq!(status, 202, "cancel is idempotent: {again}");
    assert_eq!(again["status"], "cancelled", "{again}");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = group(pgid);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes of group {pgid} outlived the cancel by 5 s: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let frames = s.events(id, SECS_10).await;
    assert_complete_log(id, &frames);
    assert_eq!(frames.last().unwrap().event, "task.cancelled");
}

/// After a crash the task runs again: the crashed attempt's process tree must not keep
/// running beside the new attempt (double execution, and processes nobody will ever stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_leaves_no_agent_process_behind() {
    let mut s = Smith::start(Opts::new().config(TREE_CONFIG)).await;
    let id = s.submit_id(json!({"agent": "tree", "input": ""})).await;
    let path = format!("/v1/tasks/{id}/events");
    let mut stream = s.sse(&path, None).await;
    let old = first_pid(&mut stream, 1).await;
    let _old_guard = GroupGuard(old);
    let deadline = Instant::now() + SECS_10;
    while live(old).len() < 4 {
        assert!(Instant::now() < deadline, "group {old} never had sh and three sleeps: {:?}", live(old));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);

    s.kill9().await;
    s.restart().await;
    // the task runs again under the new process
    let mut stream = s.sse(&path, None).await;
    let new = first_pid(&mut stream, 2).await;
    let _new_guard = GroupGuard(new);
    assert_ne!(new, old);
    let t = s.get_task(&id).await;
    assert!(t["attempt"].as_u64().unwrap() >= 2, "{t}");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = live(old);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "5 s after the restart, the crashed attempt's processes (group {old}) still run beside attempt {}: {left:?}",
            t["attempt"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = s.cancel(&id).await;
    assert_eq!(status, 202, "{body}");
    s.wait_terminal(&id, SECS_10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_process_failures() {
    let s = Smith::start(Opts::new().config(TREE_CONFIG)).await;

    let slow = s.submit(json!({"agent": "sleep", "input": 5000, "timeout_ms": 300})).await;
    let slow_id = slow["id"].as_str().unwrap().to_string();
    let noisy = s.submit(json!({"agent": "noisy", "input": "", "max_attempts": 1})).await;
    let noisy_id = noisy["id"].as_str().unwrap().to_string();

    let started = Instant::now();
    let t = s.wait_terminal(&slow_id, Duration::from_secs(4)).await;
    assert!(started.elapsed() < Duration::from_secs(4), "timeout took {:?}", started.elapsed());
    assert_eq!(t["status"], "timed_out", "{t}");
    assert_eq!(t["error"]["code"], "timed_out", "{t}");
    assert_eq!(t["attempt"], 1, "a timeout is not retried: {t}");
    let run = micros(&t["finished_at"]) - micros(&t["started_at"]);
    assert!((300_000..3_000_000).contains(&run), "ran {run} µs for a 300 ms timeout: {t}");
    let frames = s.events(&slow_id, SECS_10).await;
    assert_complete_log(&slow_id, &frames);
    assert_eq!(frames.last().unwrap().event, "task.timed_out");

    let t = s.wait_terminal(&noisy_id, SECS_10).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempt"], 1, "{t}");
    let msg = t["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("it broke: {noisy_id}")), "stderr not in error.message: {t}");
    let frames = s.events(&noisy_id, SECS_10).await;
    assert_complete_log(&noisy_id, &frames);
    assert_eq!(kinds(&frames), ["task.queued", "task.started", "output", "output", "task.failed"]);
    assert_eq!(frames[2].json()["data"], "line one");
    assert_eq!(frames[3].json()["data"], "line two");
    assert_eq!(frames[4].json()["data"]["error"]["message"], json!(msg), "{:?}", frames[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_exponentially_then_fail() {
    let config = "[agents.fail]\nretry_backoff = \"200ms\"\n\n[worker]\npoll = \"50ms\"\n";
    let s = Smith::start(Opts::new().config(config)).await;
    let task = s.submit(json!({"agent": "fail", "input": "boom", "max_attempts": 3})).await;
    let id = task["id"].as_str().unwrap();
    let t = s.wait_terminal(id, SECS_10).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["attempt"], 3, "{t}");
    assert_eq!(t["error"]["message"], "boom", "{t}");

    let frames = s.events(id, SECS_10).await;
    assert_complete_log(id, &frames);
    assert_eq!(
        kinds(&frames),
        [
            "task.queued",
            "task.started",
            "task.retrying",
            "task.started",
            "task.retrying",
            "task.started",
            "task.failed"
        ]
    );
    let started: Vec<_> = frames.iter().filter(|f| f.event == "task.started").map(|f| f.json()).collect();
    let attempts: Vec<_> = started.iter().map(|e| e["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let retrying: Vec<_> = frames.iter().filter(|f| f.event == "task.retrying").map(|f| f.json()).collect();
    let delays: Vec<u64> = retrying.iter().map(|e| e["data"]["delay_ms"].as_u64().expect("delay_ms")).collect();
    // base × 2^(n-1), with at most 10% jitter
    assert!((200..=220).contains(&delays[0]) && (400..=440).contains(&delays[1]), "delays {delays:?}");
    for r in &retrying {
        assert_eq!(r["data"]["error"]["message"], "boom", "{r}");
    }
    let at: Vec<i64> = started.iter().map(|e| micros(&e["at"])).collect();
    let gaps = [at[1] - at[0], at[2] - at[1]];
    assert!(gaps[0] >= delays[0] as i64 * 1000, "gap {gaps:?} shorter than delay {delays:?}");
    assert!(gaps[1] >= delays[1] as i64 * 1000, "gap {gaps:?} shorter than delay {delays:?}");
    assert!(gaps[1] > gaps[0], "gaps do not grow: {gaps:?}");
    assert_eq!(frames.last().unwrap().json()["data"]["error"]["message"], "boom");
}

/// A retry with no backoff is claimed again by the same worker while the previous attempt is
/// still winding down: the old attempt's bookkeeping must not unregister the new one (which
/// would leave it unrun until the worker handed it back as "not running on its worker").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_retry_on_the_same_worker_runs() {
    let config = "[agents.fail]\nretry_backoff = \"0s\"\n\n[worker]\npoll = \"20ms\"\n";
    let s = Smith::start(Opts::new().config(config)).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(s.submit_id(json!({"agent": "fail", "input": format!("boom {i}"), "max_attempts": 3})).await);
    }
    for id in &ids {
        let t = s.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(t["status"], "failed", "{t}");
        assert_eq!(t["attempt"], 3, "{t}");
        let frames = s.events(id, SECS_10).await;
        for r in frames.iter().filter(|f| f.event == "task.retrying").map(|f| f.json()) {
            assert_eq!(r["data"]["error"]["code"], "agent_failed", "{id}: a retry for another reason: {r}");
        }
    }
}
