//! The `process` executor against real processes: events, input modes, outcomes, and that
//! nothing it starts outlives its task.

mod common;

use serde_json::{json, Value};
use smith_agents::process::{group_members, MAX_LINE};
use smith_agents::rss::{agent_memory, sample_agent_memory};
use smith_agents::{executor_for, Emitter, RunContext, RunResult};
use smith_core::{AgentDef, EventDraft, ExecutorKind, InputMode, Task};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn def(args: &[&str], input: InputMode) -> AgentDef {
    let mut d = AgentDef::new("proc", ExecutorKind::Process);
    d.command = Some("sh".into());
    d.args = args.iter().map(|s| s.to_string()).collect();
    d.input = input;
    d.kill_grace = Duration::from_millis(500);
    d
}

fn task(input: Value) -> Task {
    Task::first_attempt("proc", input)
}

/// Runs an attempt; returns its result and every event it emitted.
async fn run(d: AgentDef, input: Value, cancel: CancellationToken) -> (RunResult, Vec<EventDraft>) {
    let (tx, collector) = common::collect_events(16);
    let exec = executor_for(&d);
    let ctx = RunContext::new(task(input), Arc::new(d), Emitter::new(tx), cancel);
    let result = tokio::time::timeout(Duration::from_secs(20), exec.run(ctx)).await.expect("attempt finished");
    (result, collector.await.unwrap())
}

fn texts(events: &[EventDraft]) -> Vec<String> {
    events.iter().map(|e| e.data.as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn stdout_lines_become_events_and_the_result() {
    let (r, events) =
        run(def(&["-c", "echo one; echo two; printf three"], InputMode::None), json!(null), CancellationToken::new())
            .await;
    assert_eq!(texts(&events), ["one", "two", "three"]);
    assert_eq!(r.unwrap().result, json!("one\ntwo\nthree"));
}

#[tokio::test]
async fn input_reaches_stdin_args_and_templates() {
    let cases = [
        (def(&["-c", "cat"], InputMode::Stdin), "from stdin"),
        (def(&["-c", "echo \"$0\""], InputMode::Arg), "as arg"),
        (def(&["-c", "echo {input}-$SMITH_ATTEMPT"], InputMode::None), "tmpl"),
    ];
    let want = ["from stdin", "as arg", "tmpl-1"];
    for ((d, input), want) in cases.into_iter().zip(want) {
        let (r, _) = run(d, json!(input), CancellationToken::new()).await;
        assert_eq!(r.unwrap().result, json!(want));
    }
}

#[tokio::test]
async fn nonzero_exit_fails_with_the_stderr_tail() {
    let (r, _) =
        run(def(&["-c", "echo oops >&2; exit 3"], InputMode::None), json!(null), CancellationToken::new()).await;
    let f = r.unwrap_err();
    assert_eq!(f.error.code, "exit_status");
    assert!(f.error.message.contains("exit code 3") && f.error.message.contains("oops"), "{}", f.error.message);
    assert!(f.retryable);
}

#[tokio::test]
async fn a_missing_command_is_not_retried() {
    let mut d = def(&[], InputMode::None);
    d.command = Some("/nonexistent/smith-test-binary".into());
    let (r, _) = run(d, json!(null), CancellationToken::new()).await;
    let f = r.unwrap_err();
    assert_eq!(f.error.code, "spawn_failed");
    assert!(!f.retryable);
}

#[tokio::test]
async fn cancel_kills_the_whole_tree() {
    let d = def(&["-c", "echo $$; sleep 300 & sleep 300 & (sleep 300 &); wait"], InputMode::None);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let exec = executor_for(&d);
    let ctx = RunContext::new(task(json!(null)), Arc::new(d), Emitter::new(tx), cancel.clone());
    let handle = tokio::spawn(async move { exec.run(ctx).await });
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let pgid: i32 = first.data.as_str().unwrap().trim().parse().unwrap();
    // Wait for the settled tree — sh and its three sleeps, the subshell gone — seen on two
    // scans in a row: a /proc scan is not atomic while processes fork and exit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut settled = 0;
    let mut seen = Vec::new();
    while settled < 2 && Instant::now() < deadline {
        seen = group_members(pgid);
        settled = if seen.len() >= 4 { settled + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled >= 2, "the tree started: {seen:?}");
    let t0 = Instant::now();
    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), handle).await.unwrap().unwrap();
    assert_eq!(r.unwrap_err().error.code, "cancelled");
    assert!(t0.elapsed() < Duration::from_secs(3), "stopped promptly: {:?}", t0.elapsed());
    assert_eq!(group_members(pgid), Vec::<i32>::new(), "nothing left in the group");
}

#[tokio::test]
async fn background_children_do_not_outlive_a_finished_task() {
    let (r, events) =
        run(def(&["-c", "echo $$; sleep 300 & echo done"], InputMode::None), json!(null), CancellationToken::new())
            .await;
    assert!(r.is_ok());
    let pgid: i32 = texts(&events)[0].parse().unwrap();
    assert_eq!(group_members(pgid), Vec::<i32>::new());
}

#[tokio::test]
async fn long_lines_are_cut_into_bounded_chunks() {
    let n = MAX_LINE * 2 + 10;
    let script = format!("head -c {n} /dev/zero | tr '\\0' x");
    let mut d = def(&["-c", &script], InputMode::None);
    d.max_result_bytes = 1000;
    let (r, events) = run(d, json!(null), CancellationToken::new()).await;
    let sizes: Vec<usize> = texts(&events).iter().map(String::len).collect();
    assert_eq!(sizes, [MAX_LINE, MAX_LINE, 10]);
    let result = r.unwrap().result;
    assert_eq!(result["truncated"], json!(true));
    assert_eq!(result["stdout"].as_str().unwrap().len(), 1000);
}

/// A child that moved to a session of its own (as Claude Code's Bash tool starts commands) is
/// outside the agent's process group, but still ends with the task.
#[tokio::test]
async fn children_in_their_own_session_do_not_outlive_the_task() {
    let tag = format!("300.{}", std::process::id());
    let script = format!("setsid sleep {tag} </dev/null >/dev/null 2>&1 & echo $!; sleep 0.3");
    let (result, events) = run(def(&["-c", &script], InputMode::None), json!(null), CancellationToken::new()).await;
    assert!(result.is_ok(), "{result:?}");
    let pid: i32 = texts(&events)[0].parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let alive = String::from_utf8_lossy(&cmdline).contains(&tag)
        && smith_agents::process::ProcStat::read(pid).is_some_and(|s| s.state != 'Z');
    if alive {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(!alive, "the setsid child {pid} outlived its task");
}

/// A running process agent's memory is the sum over its process group, under its agent's
/// name, and the agent is gone from the sample once its run ends.
#[tokio::test]
async fn agent_memory_sums_the_group_while_it_runs() {
    if std::process::Command::new("python3").arg("-c").arg("pass").status().map_or(true, |s| !s.success()) {
        eprintln!("skipped: no python3 to allocate memory with");
        return;
    }
    let agent = "memory-hog";
    // a group of two: a sleep beside a python that holds 60 MB of written (resident) pages
    let script = "sleep 30 & exec python3 -c \
        'import sys, time; x = bytearray(b\"\\x01\") * 60_000_000; print(\"ready\", flush=True); time.sleep(30)'";
    let d = def(&["-c", script], InputMode::None);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let exec = executor_for(&d);
    let ctx = RunContext::new(Task::first_attempt(agent, json!(null)), Arc::new(d), Emitter::new(tx), cancel.clone());
    let handle = tokio::spawn(async move { exec.run(ctx).await });
    let ready = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
    assert_eq!(ready.data, json!("ready"));

    let sample = tokio::task::spawn_blocking(agent_memory).await.unwrap();
    let mine = sample.iter().find(|m| m.agent == agent).unwrap_or_else(|| panic!("{agent} sampled: {sample:?}"));
    assert!(mine.bytes >= 50_000_000, "{mine:?}");
    assert!(mine.processes >= 2, "python and sleep: {mine:?}");
    // no recorder is installed here: setting the gauges must still work
    tokio::task::spawn_blocking(sample_agent_memory).await.unwrap();

    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), handle).await.unwrap().unwrap();
    assert_eq!(r.unwrap_err().error.code, "cancelled");
    let after = tokio::task::spawn_blocking(agent_memory).await.unwrap();
    assert!(after.iter().all(|m| m.agent != agent), "{agent} gone after its run: {after:?}");
}
