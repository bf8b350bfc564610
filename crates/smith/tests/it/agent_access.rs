//! What an agent gets from the platform, through the real binary: `process` agents start from
//! a cleared environment (an allowlist of the server's variables, their own `env`, the task's
//! `SMITH_*` metadata) so no server secret and no other agent's secret reaches them, on `smith
//! up` and on a distributed worker; and an agent's processes die with their server when it is
//! SIGKILLed (parent-death signal). The Claude Code side (capabilities, the MCP config file) is
//! in `claude.rs`.

use crate::common;
use crate::common::anthropic_mock;
use crate::common::cluster;

use common::{Api, Opts, Smith, BIN, SMITH_ENV};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TOKEN: &str = "platform-token-5c1e7d2a9b";
const STORE_PASSWORD: &str = "db-pass-8a1f33";
const SERVER_SECRET: &str = "server-aws-secret-3f0c";
const OWN_SECRET: &str = "dump-own-secret-41";
const OTHER_SECRET: &str = "other-agent-secret-77";

/// Two agents with secrets of their own: `dump` prints its environment and its command line.
fn config() -> String {
    format!(
        r#"
[agents.dump]
executor = "process"
command = "sh"
args = ["-c", 'env; printf "ARGV:"; tr "\0" " " < /proc/self/cmdline; echo']
input = "none"
[agents.dump.env]
DUMP_SECRET = "{OWN_SECRET}"

[agents.other]
executor = "process"
command = "sh"
args = ["-c", "true"]
[agents.other.env]
OTHER_SECRET = "{OTHER_SECRET}"

[agents.sleeper]
executor = "process"
command = "sleep"
args = ["300"]
input = "none"
"#
    )
}

/// The server's own secrets, as an operator would set them in its environment.
fn server_env() -> Vec<(&'static str, String)> {
    vec![
        ("SMITH_TOKEN", TOKEN.to_string()),
        ("SMITH_STORE", format!("postgres://smith:{STORE_PASSWORD}@db.internal:5432/smith")),
        ("AWS_SECRET_ACCESS_KEY", SERVER_SECRET.to_string()),
        ("TZ", "UTC".to_string()),
    ]
}

/// Runs `dump` and checks what it saw: its own `env` and its task's identity, the allowlisted
/// `TZ`, and nothing of the server's secrets or the other agent's.
async fn check_dump(api: &Api, stderr: impl Fn() -> String) -> String {
    let id = api.submit_id(json!({"agent": "dump", "input": "x"})).await;
    let task = api.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", stderr());
    let out = task["result"].as_str().expect("stdout as the result").to_string();
    for want in [
        format!("DUMP_SECRET={OWN_SECRET}"),
        format!("SMITH_TASK_ID={id}"),
        "SMITH_AGENT=dump".to_string(),
        "SMITH_ATTEMPT=1".to_string(),
        "SMITH_RUN=".to_string(),
        "TZ=UTC".to_string(),
        "ARGV:sh -c".to_string(),
    ] {
        assert!(out.contains(&want), "the agent should see {want:?}:\n{out}");
    }
    for secret in [TOKEN, STORE_PASSWORD, SERVER_SECRET, OTHER_SECRET, "SMITH_TOKEN", "SMITH_STORE", "AWS_SECRET"] {
        assert!(!out.contains(secret), "the agent saw {secret:?}:\n{out}");
    }
    // every variable is the agent's own, its task's, allowlisted, or the shell's own
    // the agent API's URL and this attempt's capability (never the platform token, checked above)
    let own = [
        "DUMP_SECRET",
        "SMITH_TASK_ID",
        "SMITH_AGENT",
        "SMITH_ATTEMPT",
        "SMITH_RUN",
        "SMITH_ARTIFACTS",
        "SMITH_MCP_URL",
        "SMITH_MCP_TOKEN",
    ];
    if let Some(cap) = out.lines().find_map(|l| l.strip_prefix("SMITH_MCP_TOKEN=")) {
        assert!(cap.starts_with("smc_"), "SMITH_MCP_TOKEN is not an attempt's capability: {cap}");
    }
    let allowed = ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "COLORTERM"];
    let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
    for line in out.lines().take_while(|l| !l.starts_with("ARGV:")) {
        let Some((name, _)) = line.split_once('=') else { continue };
        let ok = own.contains(&name) || allowed.contains(&name) || shell.contains(&name) || name.starts_with("LC_");
        assert!(ok, "the agent inherited {name}:\n{out}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_agents_get_their_own_env_and_none_of_the_servers_secrets() {
    let mut opts = Opts::new().config(&config());
    for (k, v) in server_env() {
        opts = opts.env(k, &v);
    }
    let smith = Smith::start(opts).await;
    let api = Api::new(&smith.base, Some(TOKEN.to_string()));
    check_dump(&api, || smith.stderr()).await;
}

/// A distributed `smith worker` given its store URL (with the database password) and the
/// platform token in its environment, as a deployment does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_worker_hands_its_agents_neither_its_store_url_nor_its_token() {
    let Some(services) = cluster::Services::from_env() else { return };
    let cluster = cluster::Cluster::new(&services, &config()).await;
    let gateway = cluster.start_with(cluster::Role::Gateway, &["--token", TOKEN]).await;
    let (_worker, stderr_path) = own_worker(&cluster).await;
    let api = Api::new(&gateway.api().base, Some(TOKEN.to_string()));
    let out = check_dump(&api, || std::fs::read_to_string(&stderr_path).unwrap_or_default()).await;
    for secret in [cluster.store.as_str(), cluster.bus.as_str(), "SMITH_BUS", "postgres://"] {
        assert!(!out.contains(secret), "the agent saw {secret:?}:\n{out}");
    }
}

/// A `smith worker` of `cluster` given its store URL (with the database password), its bus
/// and the platform token in its environment, as a deployment does; started once it runs.
async fn own_worker(cluster: &cluster::Cluster) -> (tokio::process::Child, std::path::PathBuf) {
    let dir = cluster.dir().join("own-worker");
    std::fs::create_dir_all(&dir).unwrap();
    let stderr_path = dir.join("stderr.log");
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("worker").arg("--config").arg(cluster.config_path()).arg("--data-dir").arg(dir.join("data"));
    for k in SMITH_ENV {
        cmd.env_remove(k);
    }
    cmd.env("SMITH_STORE", &cluster.store)
        .env("SMITH_BUS", &cluster.bus)
        .env("SMITH_TOKEN", TOKEN)
        .env("AWS_SECRET_ACCESS_KEY", SERVER_SECRET)
        .env("TZ", "UTC")
        .env("SMITH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true);
    let worker = cmd.spawn().expect("spawn smith worker");
    // it records its agents' definitions before it says it runs
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&stderr_path).unwrap_or_default().contains("smith worker running") {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        assert!(Instant::now() < deadline, "the worker did not start:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (worker, stderr_path)
}

/// A capability minted by a distributed worker (its key derived from the platform token) is
/// verified by a gateway in another process: an `anthropic` agent shares a discovery through
/// `/mcp` with it, and never holds the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_workers_capability_is_honoured_by_the_gateway() {
    let Some(services) = cluster::Services::from_env() else { return };
    let mock = anthropic_mock::Mock::start().await;
    let cluster = cluster::Cluster::new(&services, &config()).await;
    let gateway = cluster.start_with(cluster::Role::Gateway, &["--token", TOKEN]).await;
    let base = gateway.api().base;
    let agents = format!(
        "[worker]\nmcp_url = \"{base}/mcp\"\n\n[agents.boss]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\n\
         base_url = \"{}\"\napi_key = \"k\"\n",
        mock.url
    );
    std::fs::write(cluster.config_path(), format!("{}\n{agents}", config())).unwrap();
    let (_worker, stderr_path) = own_worker(&cluster).await;
    let api = Api::new(&base, Some(TOKEN.to_string()));
    let mut discoveries = api.sse("/v1/events?kind=discovery", None).await;
    let id = api.submit_id(json!({"agent": "boss", "input": "SHARE capabilities travel"})).await;
    let task = api.wait_terminal(&id, Duration::from_secs(60)).await;
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert_eq!(task["status"], "succeeded", "{task:#}\n{}", log());
    let d = discoveries.next(Duration::from_secs(10)).await.expect("a discovery on the feed").json();
    assert_eq!(d["data"]["content"], "capabilities travel", "{d:#}");
    assert_eq!(d["data"]["task_id"], id.as_str());
    // the model saw nothing of the token either
    let sent = serde_json::to_string(&mock.requests()).unwrap();
    assert!(!sent.contains(TOKEN) && !sent.contains("smc_"), "{sent}");
}

/// Live processes whose environment carries `SMITH_TASK_ID=<id>`.
fn task_processes(id: &str) -> Vec<i32> {
    let needle = format!("SMITH_TASK_ID={id}\0");
    common::pids(|pid| {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        !zombie && env.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

/// Kills whatever of a task is still running when the test ends, so a failure leaves no
/// `sleep 300` behind.
struct KillTask(String);

impl Drop for KillTask {
    fn drop(&mut self) {
        for pid in task_processes(&self.0) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_dies_with_its_sigkilled_server() {
    let mut smith = Smith::start(Opts::new().config(&config())).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "sleeper", "input": "x"})).await;
    let _cleanup = KillTask(id.clone());
    api.wait_status(&id, "running", Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let agent = loop {
        if let Some(pid) = task_processes(&id).first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "the agent's process never appeared\n{}", smith.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    smith.kill9().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Path::new(&format!("/proc/{agent}")).exists() && !task_processes(&id).is_empty() {
        assert!(Instant::now() < deadline, "agent process {agent} outlived its SIGKILLed server by 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
