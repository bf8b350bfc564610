//! The `claude-code` executor against stand-ins for the CLI (shell scripts that print what a
//! broken or misbehaving CLI would): every way the stream can go wrong ends the attempt with a
//! clear error, never a panic. The real CLI is tested end to end in `crates/smith/tests/it/claude.rs`.

mod common;

use serde_json::{json, Value};
use smith_agents::{executor_for, Emitter, RunContext, RunResult, SessionContext, Turn};
use smith_core::{AgentDef, EventDraft, EventKind, ExecutorKind, Task};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A stand-in CLI: `body` is the shell script's body; it records its arguments and stdin.
fn fake(dir: &std::path::Path, body: &str) -> AgentDef {
    let path = dir.join("claude");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{args}'\ncat > '{stdin}'\n{body}\n",
        args = dir.join("args").display(),
        stdin = dir.join("stdin").display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = AgentDef::new("cc", ExecutorKind::ClaudeCode);
    d.command = Some(path.display().to_string());
    d.kill_grace = Duration::from_millis(500);
    d
}

fn task(input: Value) -> Task {
    Task::first_attempt("cc", input)
}

async fn run_with(d: AgentDef, session: Option<SessionContext>) -> (RunResult, Vec<EventDraft>) {
    let (tx, collector) = common::collect_events(64);
    let exec = executor_for(&d);
    let mut ctx = RunContext::new(task(json!("do the thing")), Arc::new(d), Emitter::new(tx), CancellationToken::new());
    ctx.session = session;
    let result = tokio::time::timeout(Duration::from_secs(20), exec.run(ctx)).await.expect("attempt finished");
    (result, collector.await.unwrap())
}

async fn run(d: AgentDef) -> (RunResult, Vec<EventDraft>) {
    run_with(d, None).await
}

const INIT: &str =
    r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5","cwd":"/x","tools":[]}"#;
const TEXT: &str = r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":100,"output_tokens":7}}}"#;
const RESULT: &str = r#"{"type":"result","subtype":"success","is_error":false,"result":"hi","session_id":"s-1","total_cost_usd":0.25,"num_turns":1,"usage":{"input_tokens":100,"output_tokens":9}}"#;

fn echo_lines(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("printf '%s\\n' '{l}'")).collect::<Vec<_>>().join("\n")
}

fn error_of(r: &RunResult) -> (String, String, bool) {
    let f = r.as_ref().expect_err("the attempt should fail");
    (f.error.code.clone(), f.error.message.clone(), f.retryable)
}

#[tokio::test]
async fn a_good_stream_becomes_typed_events_and_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let tool = r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}],"usage":{"input_tokens":120,"output_tokens":3}}}"#;
    let tool_result = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a b"}]}}"#;
    let novel = r#"{"type":"rate_limit_event","info":{"x":1}}"#;
    let mut d = fake(dir.path(), &echo_lines(&[INIT, TEXT, tool, tool_result, novel, RESULT]));
    d.model = Some("claude-sonnet-4-5".into());
    d.allowed_tools = vec!["Read".into()];
    d.max_turns = Some(3);
    let (r, events) = run(d).await;
    let ok = r.expect("succeeds");
    assert_eq!(ok.result["text"], "hi");
    assert_eq!(ok.result["session_id"], "s-1");
    assert_eq!(ok.usage.cost_usd, 0.25, "the CLI's own cost wins at the end");
    assert_eq!((ok.usage.input_tokens, ok.usage.output_tokens), (220, 10));
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::ToolUse) && kinds.contains(&EventKind::ToolResult), "{kinds:?}");
    assert!(events.iter().any(|e| e.kind == EventKind::Output && e.data == "hi"));
    assert!(
        events.iter().any(|e| e.data["type"] == "raw" && e.data["line"]["type"] == "rate_limit_event"),
        "unknown lines kept raw"
    );
    assert!(events.iter().any(|e| e.kind == EventKind::Usage), "usage streamed for budgets");
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    for want in ["-p", "stream-json", "--verbose", "claude-sonnet-4-5", "--allowedTools", "Read", "--max-turns", "3"] {
        assert!(args.lines().any(|l| l == want), "{want} missing from {args}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("stdin")).unwrap(), "do the thing", "prompt on stdin");
}

#[tokio::test]
async fn a_later_session_turn_resumes_the_cli_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = fake(dir.path(), &echo_lines(&[INIT, RESULT]));
    let session = SessionContext {
        id: "sess".into(),
        turns: vec![Turn { input: json!("first"), result: json!({"text": "one", "session_id": "cli-42"}) }],
    };
    run_with(d, Some(session)).await.0.expect("succeeds");
    let args: Vec<String> =
        std::fs::read_to_string(dir.path().join("args")).unwrap().lines().map(String::from).collect();
    let at = args.iter().position(|a| a == "--resume").expect("--resume passed");
    assert_eq!(args[at + 1], "cli-42");
}

#[tokio::test]
async fn a_malformed_line_fails_with_bad_stream_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (r, events) =
        run(fake(dir.path(), &echo_lines(&[INIT, "{\"type\":\"assistant\",\"message\":{", RESULT]))).await;
    let (code, message, retryable) = error_of(&r);
    assert_eq!(code, "bad_stream");
    assert!(message.contains("line 2") && message.contains("{\"type\":\"assistant\""), "{message}");
    assert!(retryable);
    assert!(events.iter().any(|e| e.data["type"] == "raw"), "the bad line is kept as a raw event");
}

#[tokio::test]
async fn a_truncated_stream_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = run(fake(dir.path(), &echo_lines(&[INIT, TEXT]))).await;
    let (code, message, retryable) = error_of(&r);
    assert_eq!(code, "truncated_stream");
    assert!(message.contains("before its result line") && message.contains("exit code 0"), "{message}");
    assert!(retryable);
}

#[tokio::test]
async fn a_nonzero_exit_without_output_reports_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (r, events) = run(fake(dir.path(), "echo 'Error: invalid API key' >&2\nexit 3")).await;
    let (code, message, _) = error_of(&r);
    assert_eq!(code, "exit_status");
    assert!(message.contains("exit code 3") && message.contains("without writing anything"), "{message}");
    assert!(message.contains("invalid API key"), "stderr goes into the error: {message}");
    assert!(events.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (r, _) = run(fake(dir.path(), "exit 1")).await;
    let (_, message, _) = error_of(&r);
    assert!(message.contains("exit code 1"), "{message}");
}

#[tokio::test]
async fn an_api_error_result_maps_to_provider_codes() {
    for (status, code, retryable) in [(529, "provider_unavailable", true), (400, "provider_error", false)] {
        let dir = tempfile::tempdir().unwrap();
        let line = format!(
            r#"{{"type":"result","subtype":"success","is_error":true,"api_error_status":{status},"result":"API Error: {status} nope","session_id":"s"}}"#
        );
        let (r, _) = run(fake(dir.path(), &format!("{}\nexit 1", echo_lines(&[INIT, &line])))).await;
        let (got, message, again) = error_of(&r);
        assert_eq!((got.as_str(), again), (code, retryable), "{status}: {message}");
        assert!(message.contains("nope"), "{message}");
    }
}

#[tokio::test]
async fn a_silent_cli_is_killed_as_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = fake(dir.path(), &format!("{}\nsleep 300", echo_lines(&[INIT])));
    d.stall_timeout = Some(Duration::from_millis(700));
    let started = std::time::Instant::now();
    let (r, _) = run(d).await;
    let (code, message, _) = error_of(&r);
    assert_eq!(code, "stalled", "{message}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// A turn whose CLI session lives on another machine (`--resume` finds nothing here) is run
/// again in a new CLI session that is told the conversation so far.
#[tokio::test]
async fn a_session_unknown_here_is_replayed_from_its_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let missing = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["No conversation found with session ID: cli-42"],"session_id":"x"}"#;
    let body = format!(
        "case \"$*\" in *--resume*) {}; exit 1;; esac\n{}",
        echo_lines(&[missing]),
        echo_lines(&[INIT, TEXT, RESULT])
    );
    let session = SessionContext {
        id: "sess".into(),
        turns: vec![Turn { input: json!("remember alpha"), result: json!({"text": "noted", "session_id": "cli-42"}) }],
    };
    let (r, events) = run_with(fake(dir.path(), &body), Some(session)).await;
    let ok = r.expect("the replayed turn succeeds");
    assert_eq!(ok.result["session_id"], "s-1", "a new CLI session");
    assert!(events.iter().any(|e| e.data["type"] == "resume_fallback"), "the fallback is visible");
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert!(!args.contains("--resume"), "the second run starts fresh: {args}");
    let prompt = std::fs::read_to_string(dir.path().join("stdin")).unwrap();
    assert!(prompt.contains("User: remember alpha") && prompt.contains("Assistant: noted"), "{prompt}");
    assert!(prompt.ends_with("do the thing"), "{prompt}");
}
