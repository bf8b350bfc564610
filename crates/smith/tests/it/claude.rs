//! The real Claude Code CLI as a MisterSmith agent, against a mock Anthropic Messages API
//! served by this test: a plain turn, a tool-use turn through the platform's MCP tools, a
//! two-turn session that resumes, a stalled API (stall detection kills the process group),
//! a cancel mid-stream, and what the CLI holds: no platform token or server secret in its
//! environment or command line, an MCP config file only its user reads, and a capability
//! good on `/mcp` for its own task while its attempt runs and refused everywhere else.
//!
//! Needs the CLI: `SMITH_TEST_CLAUDE` names its binary (`.ci/run` installs the pinned npm
//! package and sets it). Without it, each test prints that it is skipped.

use crate::common;
use crate::common::anthropic_mock;

use anthropic_mock::Mock;
use common::{Opts, Smith};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const TURN: Duration = Duration::from_secs(90);

fn claude() -> Option<String> {
    common::claude_cli()
}

// ---------------------------------------------------------------------------------------------
// The platform under test.

fn config(claude: &str, mock: &Mock, home: &Path) -> String {
    let env = format!(
        "[agents.{{name}}.env]\nANTHROPIC_BASE_URL = \"{}\"\nANTHROPIC_API_KEY = \"test-key\"\n\
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\nDISABLE_AUTOUPDATER = \"1\"\nHOME = \"{}\"\n",
        mock.url,
        home.display()
    );
    let agent = |name: &str, extra: &str| {
        format!(
            "[agents.{name}]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmax_attempts = 1\nkill_grace = \"2s\"\n{extra}\n{}\n",
            env.replace("{name}", name)
        )
    };
    [
        agent("researcher", "model = \"claude-sonnet-4-5\"\nstall_timeout = \"60s\""),
        agent("reviewer", "model = \"claude-sonnet-4-5\"\nstall_timeout = \"60s\""),
        agent("hung", "stall_timeout = \"3s\""),
    ]
    .join("\n")
}

struct Rig {
    smith: Smith,
    mock: Mock,
    claude: PathBuf,
    _home: tempfile::TempDir,
}

async fn rig() -> Option<Rig> {
    let claude = claude()?;
    let mock = Mock::start().await;
    let home = tempfile::tempdir().unwrap();
    let smith = Smith::start(Opts::new().config(&config(&claude, &mock, home.path()))).await;
    Some(Rig { smith, mock, claude: std::fs::canonicalize(&claude).unwrap(), _home: home })
}

/// Processes running the CLI binary whose working directory is under `dir`.
fn claude_processes(claude: &Path, dir: &Path) -> Vec<i32> {
    common::pids(|pid| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        exe.as_deref() == Some(claude) && cwd.is_some_and(|c| c.starts_with(dir))
    })
}

async fn assert_no_claude_left(rig: &Rig) {
    let dir = std::fs::canonicalize(rig.smith.data_dir()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = claude_processes(&rig.claude, &dir);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "claude processes left running: {left:?}\n{}", rig.smith.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn events_of(frames: &[common::Frame], kind: &str) -> Vec<Value> {
    frames.iter().filter(|f| f.event == kind).map(|f| f.json()["data"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_turn_streams_typed_events_and_succeeds() {
    let Some(rig) = rig().await else { return };
    let api = rig.smith.api();
    let (id, task) = api.run(json!({"agent": "researcher", "input": "PLAIN say hello"}), TURN).await;
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", rig.smith.stderr());
    assert_eq!(task["result"]["text"], "Hello from the mock.");
    assert!(task["result"]["session_id"].as_str().is_some_and(|s| !s.is_empty()), "{task:#}");
    assert!(task["usage"]["input_tokens"].as_u64().unwrap() >= 25, "{task:#}");
    assert!(task["usage"]["cost_usd"].as_f64().unwrap() > 0.0, "the CLI's cost is recorded: {task:#}");

    let frames = api.events(&id, Duration::from_secs(10)).await;
    let outputs = events_of(&frames, "output");
    assert!(outputs.iter().any(|o| o["subtype"] == "init" && o["session_id"].is_string()), "{outputs:#?}");
    assert!(outputs.iter().any(|o| o == "Hello from the mock."), "{outputs:#?}");
    assert!(!events_of(&frames, "usage").is_empty(), "usage events streamed");

    // The CLI was started with the agent's model and reached the mock with it.
    let reqs = rig.mock.requests();
    assert!(
        reqs.iter().any(|r| r["model"] == "claude-sonnet-4-5"),
        "{:#?}",
        reqs.iter().map(|r| &r["model"]).collect::<Vec<_>>()
    );
    assert_no_claude_left(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shares_a_discovery_over_mcp_and_another_agent_lists_it() {
    let Some(rig) = rig().await else { return };
    let api = rig.smith.api();
    let mut feed = api.sse("/v1/events?kind=discovery", None).await;

    let (id, task) = api.run(json!({"agent": "researcher", "input": "SHARE the cache hides a race"}), TURN).await;
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", rig.smith.stderr());
    let frames = api.events(&id, Duration::from_secs(10)).await;
    let uses = events_of(&frames, "tool_use");
    assert_eq!(uses.len(), 1, "{uses:#?}");
    assert_eq!(uses[0]["name"], "mcp__smith__share_discovery");
    let results = events_of(&frames, "tool_result");
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_ne!(results[0]["is_error"], true, "the platform accepted the discovery: {results:#?}");
    assert!(task["result"]["text"].as_str().unwrap().contains("shared"), "{task:#}");

    // Everyone watching sees it, attributed to the agent and task.
    let d = feed.next(Duration::from_secs(10)).await.expect("a discovery on the feed").json();
    assert_eq!(d["kind"], "discovery");
    assert_eq!(d["data"]["content"], "the cache hides a race");
    assert_eq!(d["data"]["type"], "insight");
    assert_eq!(d["data"]["agent"], "researcher");
    assert_eq!(d["data"]["task_id"], id.as_str());

    // A second agent finds it through its own MCP tool.
    let (_, task) = api.run(json!({"agent": "reviewer", "input": "LIST what others found"}), TURN).await;
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", rig.smith.stderr());
    let text = task["result"]["text"].as_str().unwrap();
    assert!(text.contains("the cache hides a race"), "list_discoveries returned it: {text}");
    assert_no_claude_left(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_turn_session_resumes_the_first_turn() {
    let Some(rig) = rig().await else { return };
    let api = rig.smith.api();
    let (status, session) = api.post("/v1/sessions", &json!({"agent": "researcher", "input": "REMEMBER alpha"})).await;
    assert_eq!(status, 201, "{session:#}");
    let sid = session["id"].as_str().unwrap().to_string();
    let first = session["turns"][0]["id"].as_str().unwrap().to_string();
    // The second turn is queued at once; it must wait for the first.
    let (status, second) =
        api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "RECALL what I said"})).await;
    assert_eq!(status, 201, "{second:#}");
    let second = second["id"].as_str().unwrap().to_string();

    let t1 = api.wait_terminal(&first, TURN).await;
    assert_eq!(t1["status"], "succeeded", "{t1:#}\n{}", rig.smith.stderr());
    let t2 = api.wait_terminal(&second, TURN).await;
    assert_eq!(t2["status"], "succeeded", "{t2:#}\n{}", rig.smith.stderr());
    assert!(micros(&t2["started_at"]) >= micros(&t1["finished_at"]), "turns never overlap: {t1:#} {t2:#}");
    assert_eq!(t2["result"]["text"], "you said alpha", "the resumed CLI sent the first turn's history");
    assert_eq!(t2["result"]["session_id"], t1["result"]["session_id"], "--resume continued the same CLI session");

    let (_, shown) = api.get(&format!("/v1/sessions/{sid}")).await;
    let ids: Vec<&str> = shown["turns"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "{shown:#}");
    assert_no_claude_left(&rig).await;
}

fn micros(v: &Value) -> i64 {
    common::micros(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_api_is_detected_and_the_process_group_killed() {
    let Some(rig) = rig().await else { return };
    let api = rig.smith.api();
    let started = Instant::now();
    let (_, task) = api.run(json!({"agent": "hung", "input": "STALL please"}), TURN).await;
    assert_eq!(task["status"], "failed", "{task:#}\n{}", rig.smith.stderr());
    assert_eq!(task["error"]["code"], "stalled", "{task:#}");
    assert!(task["error"]["message"].as_str().unwrap().contains("presumed hung"), "{task:#}");
    assert!(started.elapsed() < Duration::from_secs(60), "stall found in {:?}", started.elapsed());
    assert!(!rig.mock.requests().is_empty(), "the CLI reached the mock before it stalled");
    assert_no_claude_left(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_stream_stops_the_cli_and_closes_its_stream() {
    let Some(rig) = rig().await else { return };
    let api = rig.smith.api();
    let id = api.submit_id(json!({"agent": "researcher", "input": "SLOW count for me"})).await;
    let deadline = Instant::now() + TURN;
    while !rig.mock.state.streaming.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the stream never started\n{}", rig.smith.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = api.cancel(&id).await;
    assert_eq!(status, 202);
    let task = api.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(task["status"], "cancelled", "{task:#}");
    assert_no_claude_left(&rig).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.mock.state.disconnected.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the API stream was never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The platform token as the server's environment holds it, in the test below.
const CLAUDE_TOKEN: &str = "platform-token-for-claude-9d1e";

/// One JSON-RPC call of `list_discoveries` on the platform's MCP endpoint, as an agent makes it.
async fn mcp_call(url: &str, bearer: &str, task_header: Option<&str>) -> (reqwest::StatusCode, Value) {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("authorization", bearer)
        .header("content-type", "application/json")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "list_discoveries", "arguments": {}}}));
    if let Some(t) = task_header {
        r = r.header("x-smith-task", t);
    }
    let resp = r.timeout(Duration::from_secs(15)).send().await.expect("the MCP endpoint answers");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_a_per_attempt_capability_in_a_private_file_and_never_the_platform_token() {
    use std::os::unix::fs::PermissionsExt;
    let Some(claude) = claude() else { return };
    let mock = Mock::start().await;
    let home = tempfile::tempdir().unwrap();
    let server_secret = "server-secret-c4a0";
    let opts = Opts::new()
        .config(&config(&claude, &mock, home.path()))
        .env("SMITH_TOKEN", CLAUDE_TOKEN)
        .env("AWS_SECRET_ACCESS_KEY", server_secret);
    let smith = Smith::start(opts).await;
    let api = common::Api::new(&smith.base, Some(CLAUDE_TOKEN.to_string()));
    let claude = std::fs::canonicalize(&claude).unwrap();

    // another tenant's task, for the capability to be aimed at
    let (status, key) =
        api.post("/v1/keys", &json!({"tenant": "globex", "scopes": ["tasks:read", "tasks:write"]})).await;
    assert_eq!(status, 201, "{key:#}");
    let globex = common::Api::new(&smith.base, Some(key["secret"].as_str().unwrap().to_string()));
    let foreign = globex.submit_id(json!({"agent": "echo", "input": "globex data"})).await;

    let id = api.submit_id(json!({"agent": "researcher", "input": "SLOW count for me"})).await;
    let deadline = Instant::now() + TURN;
    while !mock.state.streaming.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the stream never started\n{}", smith.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What the running CLI holds: its environment, its command line, the MCP config file.
    let data = std::fs::canonicalize(smith.data_dir()).unwrap();
    let pids = claude_processes(&claude, &data);
    assert!(!pids.is_empty(), "the CLI is running\n{}", smith.stderr());
    let mut config_path = None;
    for pid in &pids {
        let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned();
        let argv: Vec<String> = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
            .split('\0')
            .map(str::to_string)
            .collect();
        let cmdline = argv.join(" ");
        for secret in [CLAUDE_TOKEN, server_secret, "SMITH_TOKEN", "AWS_SECRET"] {
            assert!(!environ.contains(secret), "the CLI's environment holds {secret:?}: {environ}");
            assert!(!cmdline.contains(secret), "the CLI's command line holds {secret:?}: {cmdline}");
        }
        assert!(
            !cmdline.contains("smc_") && !cmdline.contains("Bearer"),
            "a credential on the command line: {cmdline}"
        );
        assert!(environ.contains(&format!("SMITH_TASK_ID={id}")), "{environ}");
        if let Some(i) = argv.iter().position(|a| a == "--mcp-config") {
            config_path = Some(PathBuf::from(&argv[i + 1]));
        }
    }
    let path = config_path.expect("the CLI was given --mcp-config");
    let mode = std::fs::metadata(&path).expect("the config file exists while the CLI runs").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "{}", path.display());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(CLAUDE_TOKEN), "{text}");
    let cfg: Value = serde_json::from_str(&text).unwrap();
    let server = &cfg["mcpServers"]["smith"];
    let url = server["url"].as_str().expect("the platform's MCP server").to_string();
    let bearer = server["headers"]["authorization"].as_str().expect("a capability").to_string();
    assert!(bearer.starts_with("Bearer smc_"), "{bearer}");
    assert_eq!(server["headers"]["x-smith-task"], id.as_str());

    // It works on /mcp, as this task, while the attempt runs ...
    let (status, body) = mcp_call(&url, &bearer, Some(&id)).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["result"]["isError"], false, "{body:#}");
    let (status, _) = mcp_call(&url, &bearer, None).await;
    assert_eq!(status, 200);
    // ... as no other task (another tenant's), and on no other route.
    let (status, body) = mcp_call(&url, &bearer, Some(&foreign)).await;
    assert_eq!(status, 403, "{body:#}");
    let cap = common::Api::new(&smith.base, Some(bearer.trim_start_matches("Bearer ").to_string()));
    for path in
        ["/v1/tasks".to_string(), format!("/v1/tasks/{id}"), format!("/v1/tasks/{foreign}"), "/v1/agents".into()]
    {
        let (status, body) = cap.get(&path).await;
        assert_eq!(status, 403, "{path}: {body:#}");
    }
    let (status, body) = cap.post("/v1/tasks", &json!({"agent": "echo", "input": "x"})).await;
    assert_eq!(status, 403, "{body:#}");

    // Once the attempt has ended it is refused, and its file is gone.
    let (status, _) = api.cancel(&id).await;
    assert_eq!(status, 202);
    let task = api.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(task["status"], "cancelled", "{task:#}");
    let (status, body) = mcp_call(&url, &bearer, None).await;
    assert_eq!(status, 401, "{body:#}");
    assert_no_claude_left_in(&claude, &data, &smith).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while path.parent().unwrap().exists() {
        assert!(Instant::now() < deadline, "{} outlived its run", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_no_claude_left_in(claude: &Path, dir: &Path, smith: &Smith) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = claude_processes(claude, dir);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "claude processes left running: {left:?}\n{}", smith.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
