//! `smith bench --scenario baseline` through the real binary against a real `smith up`: the
//! JSON it writes has every field of the contract `smith plan --model measured` reads, with
//! plausible values; `--merge` adds to it; and the server is left idle. A Claude Code agent
//! (the real CLI against the mock Anthropic API, on a two-turn task with a Bash tool call) is
//! measured as the `claude-code` executor: it needs `SMITH_TEST_CLAUDE` (`.ci/run` sets it);
//! without it the test is skipped, unless the service URLs are set, as CI sets them: then it fails.

use crate::common;
use crate::common::anthropic_mock;

use anthropic_mock::Mock;
use common::{cli, micros, Opts, Smith};
use serde_json::Value;
use std::time::{Duration, Instant};

const MB: f64 = 1024.0 * 1024.0;
const AGENTS: u64 = 20;
const SSE: u64 = 50;
/// 40 output events 200 ms apart: 7.8 s, running through the settling and the 2 s window.
const STREAM_INPUT: &str = r#"{"events":40,"bytes":100,"interval_ms":200}"#;

fn num(doc: &Value, path: &[&str]) -> f64 {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or_else(|| panic!("{} is not a number in {doc:#}", path.join(".")))
}

fn int(doc: &Value, path: &[&str]) -> u64 {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or_else(|| panic!("{} is not an integer in {doc:#}", path.join(".")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_writes_the_planners_contract_and_leaves_the_server_idle() {
    let s = Smith::start(Opts::new()).await;
    let out = s.dir().join("baseline.json");
    let stream = format!("stream={STREAM_INPUT}");
    let (agents, sse) = (AGENTS.to_string(), SSE.to_string());
    let args = [
        "--server",
        &s.base,
        "bench",
        "--scenario",
        "baseline",
        "--measure",
        "sleep",
        "--measure",
        &stream,
        "--agents",
        &agents,
        "--hold-seconds",
        "2",
        "--sse-connections",
        &sse,
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    let started = Instant::now();
    let (code, stdout, stderr) = cli(&args, Duration::from_secs(90)).await;
    assert_eq!(code, 0, "smith bench failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}{stderr}(in {:.1} s)", started.elapsed().as_secs_f64());
    for line in ["baseline idle:", "baseline sleep: 20 agents:", "baseline stream: 20 agents:", "baseline sse: 50 "] {
        assert!(stdout.contains(line), "no {line:?} line in:\n{stdout}");
    }

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("the --out file")).expect("JSON");
    assert_eq!(doc["scenario"], "baseline", "{doc:#}");
    assert_eq!(doc["version"], 1, "{doc:#}");
    assert_eq!(doc["server"], s.base.as_str(), "{doc:#}");
    let at = micros(&doc["at"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros() as i64;
    assert!(at <= now && at > now - 120_000_000, "at {:?}", doc["at"]);
    assert!(int(&doc, &["host", "cpus"]) >= 1);
    assert!(int(&doc, &["host", "memory_bytes"]) as f64 > 100.0 * MB, "{doc:#}");
    let idle = int(&doc, &["idle_rss_bytes"]) as f64;
    assert!(idle > MB && idle < 1024.0 * MB, "idle RSS {idle}");

    let executors = doc["executors"].as_object().expect("executors");
    assert_eq!(executors.len(), 2, "{doc:#}");
    let sleep_ms = num(&doc, &["executors", "sleep", "input"]);
    let cases = [
        // agent, events per task (queued, started, outputs, succeeded), seconds per task
        ("sleep", 3.0, sleep_ms / 1000.0),
        ("stream", 43.0, 7.8),
    ];
    for (agent, events, seconds) in cases {
        let e = |field: &str| num(&doc, &["executors", agent, field]);
        assert_eq!(int(&doc, &["executors", agent, "agents"]), AGENTS, "{agent}");
        let memory = e("memory_bytes_per_agent");
        // 20 agents may fit in memory the server already has (it reads 0 then): bounded, not exact
        assert!((0.0..50.0 * MB).contains(&memory), "{agent}: {memory} bytes per agent\n{doc:#}");
        let cpu = e("cpu_per_agent");
        // CPU times tick in 10 ms: a quiet 2 s window may read 0
        assert!((0.0..2.0 / AGENTS as f64).contains(&cpu), "{agent}: {cpu} vCPU per agent\n{doc:#}");
        assert_eq!(e("events_per_task"), events, "{agent}\n{doc:#}");
        let took = e("task_seconds");
        assert!(took >= seconds && took < seconds + 1.5, "{agent}: {took} s per task, asked for {seconds}\n{doc:#}");
        assert_eq!(int(&doc, &["executors", agent, "outcomes", "succeeded"]), AGENTS, "{agent}\n{doc:#}");
    }
    // sleep was given the hold window plus the settling and a margin
    assert!(sleep_ms >= 7000.0, "{doc:#}");

    assert_eq!(int(&doc, &["sse", "connections"]), SSE, "{doc:#}");
    let per_connection = num(&doc, &["sse", "memory_bytes_per_connection"]);
    assert!((0.0..MB).contains(&per_connection), "{per_connection} bytes per SSE connection\n{doc:#}");

    // --merge: another run measuring only SSE connections keeps the executors measured before
    let (code, stdout, stderr) = cli(
        &[
            "--server",
            &s.base,
            "bench",
            "--scenario",
            "baseline",
            "--agents",
            "0",
            "--hold-seconds",
            "1",
            "--sse-connections",
            "10",
            "--merge",
            "--out",
            out.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 0, "smith bench --merge failed:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("baseline sleep"), "{stdout}");
    let merged: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("the --out file")).expect("JSON");
    assert_eq!(merged["executors"], doc["executors"], "{merged:#}");
    assert_eq!(int(&merged, &["sse", "connections"]), 10, "{merged:#}");
    assert_eq!(merged["hold_seconds"], 1.0, "{merged:#}");

    // left idle: every task measured has ended, and the SSE connections' tasks were cancelled
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let busy = [s.list_all("status=running").await, s.list_all("status=queued").await].concat();
        if busy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "tasks left behind: {busy:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cancelled = s.list_all("agent=sleep&status=cancelled").await;
    assert_eq!(cancelled.len(), 2, "{cancelled:?}");

    // What the bench wrote is what the planner sizes from: `smith plan --model measured`.
    let out = out.to_str().expect("utf-8 path");
    for executor in ["sleep", "stream"] {
        let (code, stdout, stderr) = cli(
            &[
                "plan",
                "--agents",
                "500",
                "--model",
                "measured",
                "--baseline",
                out,
                "--executor",
                executor,
                "--format",
                "json",
            ],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(code, 0, "smith plan --model measured failed:\n{stdout}\n{stderr}");
        let plan: Value = serde_json::from_str(&stdout).expect("plan JSON");
        assert_eq!(plan["model"], "measured");
        assert_eq!(plan["executor"], executor);
        let worker = &plan["services"][1];
        let per_task = worker["agents_per_task"].as_u64().expect("agents per task");
        assert!(per_task >= 1 && worker["tasks"].as_u64().unwrap() * per_task >= 500, "{worker}");
    }
}

/// The agent `smith bench` measures as `claude-code`, as bench/baseline.sh defines it: the CLI
/// against the mock, allowed to run `echo` through its Bash tool.
fn claude_code_agent(claude: &str, mock: &Mock, home: &std::path::Path) -> String {
    format!(
        "[agents.claude-code]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmodel = \"claude-sonnet-4-5\"\n\
         concurrency = 4\nmax_attempts = 1\nkill_grace = \"2s\"\nstall_timeout = \"60s\"\n\
         allowed_tools = [\"Bash(echo:*)\"]\n[agents.claude-code.env]\nANTHROPIC_BASE_URL = \"{}\"\n\
         ANTHROPIC_API_KEY = \"test-key\"\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\n\
         DISABLE_AUTOUPDATER = \"1\"\nHOME = \"{}\"\n",
        mock.url,
        home.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_agent_on_a_tool_using_task_is_measured_as_the_claude_code_executor() {
    let Some(claude) = common::claude_cli() else { return };
    let mock = Mock::start().await;
    let home = tempfile::tempdir().unwrap();
    let s = Smith::start(Opts::new().config(&claude_code_agent(&claude, &mock, home.path()))).await;
    let out = s.dir().join("baseline.json");
    // BASH: two turns of 5 s each, the first ending in a Bash call; the CLIs get 3 s to start
    let mut args =
        vec!["--server", &s.base, "bench", "--scenario", "baseline", "--measure", r#"claude-code="BASH work""#];
    args.extend(["--agents", "2", "--startup-seconds", "3", "--hold-seconds", "2", "--sse-connections", "10"]);
    args.extend(["--out", out.to_str().expect("utf-8 path")]);
    let (code, stdout, stderr) = cli(&args, Duration::from_secs(120)).await;
    assert_eq!(code, 0, "smith bench failed:\n{stdout}\n{stderr}\n{}", s.stderr());
    eprintln!("{stdout}{stderr}");
    assert!(stdout.contains("baseline claude-code: 2 agents:"), "{stdout}");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("the --out file")).expect("JSON");
    assert_eq!(doc["startup_seconds"], 3.0, "{doc:#}");
    let e = |field: &str| num(&doc, &["executors", "claude-code", field]);
    assert_eq!(int(&doc, &["executors", "claude-code", "agents"]), 2, "{doc:#}");
    assert_eq!(int(&doc, &["executors", "claude-code", "outcomes", "succeeded"]), 2, "{doc:#}");
    // A running CLI holds ~170 MB resident: far above anything the server's own noise reads.
    assert!(e("memory_bytes_per_agent") > 20.0 * MB, "{doc:#}");
    assert!(e("agent_process_memory_bytes") > 40.0 * MB, "{doc:#}");
    assert!(e("agent_processes") >= 2.0, "{doc:#}");
    assert!(e("cpu_per_agent") > 0.0, "a streaming CLI uses CPU\n{doc:#}");
    // ~1.6 CPU-s to start a CLI, over a task of ~15 s: far above 0.1 CPU-s a minute
    assert!(e("cpu_seconds_per_agent_minute") > 0.1, "{doc:#}");
    assert!(e("lifetime_cpu_seconds") > 0.5, "{doc:#}");
    // queued, started, the CLI's init, text, tool_use, tool_result, text, result, usage, succeeded
    assert!(e("events_per_task") >= 8.0, "{doc:#}");
    assert!(e("task_seconds") >= 10.0, "two 5 s turns\n{doc:#}");

    // The CLIs ran the tool: Bash echoed, and each sent its result back to the mock.
    let tasks = s.list_all("agent=claude-code").await;
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for t in &tasks {
        let id = t["id"].as_str().expect("id");
        let frames = s.api().events(id, Duration::from_secs(10)).await;
        let of = |kind: &str| -> Vec<Value> {
            frames.iter().filter(|f| f.event == kind).map(|f| f.json()["data"].clone()).collect()
        };
        let uses = of("tool_use");
        assert!(uses.len() == 1 && uses[0]["name"] == "Bash", "{uses:#?}");
        let results = of("tool_result");
        assert!(results.len() == 1 && results[0]["is_error"] != true, "{results:#?}");
    }
    let echoed = mock.requests().iter().filter(|r| r.to_string().contains("from the mock")).count();
    assert!(echoed >= 2, "the tool results reached the mock: {echoed}");

    // The planner sizes agents as `claude-code` when the baseline has it, and says from which file.
    let (code, stdout, stderr) = cli(
        &["plan", "--agents", "100", "--model", "measured", "--baseline", out.to_str().unwrap(), "--format", "json"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(code, 0, "smith plan failed:\n{stdout}\n{stderr}");
    let plan: Value = serde_json::from_str(&stdout).expect("plan JSON");
    assert_eq!(plan["executor"], "claude-code", "{plan:#}");
    let baseline = &plan["assumptions"][0];
    assert_eq!(baseline["name"], "baseline", "{plan:#}");
    assert!(baseline["value"].as_str().unwrap().contains("baseline.json"), "{baseline}");
}
