//! The README as a new user reads it: every `curl` line of its shell blocks runs as written
//! (curl itself, through `sh`) against a `smith up` configured with the README's own agent
//! block, with only the host and the placeholders filled in; the quick start's `smith task …`,
//! `smith agents` and `smith nodes` lines run as written too (`smith` on `PATH`, the server in
//! `SMITH_SERVER`); and `smith nodes` shows load as columns, `--json` the raw answer.

use crate::common::{self, Opts, Smith};
use serde_json::Value;
use std::time::Duration;

const README: &str = include_str!("../../../../README.md");

/// The lines of the README's ```sh blocks, a `\`-continued command joined into one.
fn shell_commands() -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in README.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending).trim().to_string());
            }
        }
    }
    out
}

/// The README's TOML block that defines `agent`.
fn toml_block_defining(agent: &str) -> String {
    let header = format!("[agents.{agent}]");
    let blocks: Vec<&str> = README.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    let block =
        blocks.iter().find(|b| b.contains(&header)).unwrap_or_else(|| panic!("no README block defines {agent}"));
    block.to_string()
}

/// Runs a README line through `sh` as written, with `localhost:8080` this server and the
/// placeholders filled; `~/.curlrc` adds only `--include` (the status line and headers, to
/// check) and a time limit for the streams, which never end by themselves.
async fn run_as_written(line: &str, base: &str, task: &str, home: &std::path::Path) -> (String, String) {
    let host = base.trim_start_matches("http://");
    let cmd = line.replace("localhost:8080", host).replace("<ID>", task);
    let mut sh = tokio::process::Command::new("sh");
    sh.arg("-c").arg(&cmd).env("HOME", home).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), sh.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd} did not finish"))
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // 28: the time limit stopped a stream, as it must
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || (code == 28 && line.contains("curl -N")), "{cmd}: exit {code}\n{stdout}");
    (cmd, stdout)
}

#[tokio::test]
async fn every_readme_curl_line_works_as_written() {
    let lines: Vec<String> = shell_commands().into_iter().filter(|l| l.starts_with("curl ")).collect();
    assert!(lines.len() >= 6, "the README's curl lines: {lines:#?}");
    // the README's LLM agents, as its own block defines them (the writer's provider is never
    // reached: a submission only queues)
    let config = toml_block_defining("writer");
    let smith = Smith::start(Opts::new().config(&config)).await;
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".curlrc"), "--include\n--max-time 2\n").unwrap();
    let mut task = String::new();
    for line in &lines {
        let (cmd, out) = run_as_written(line, &smith.base, &task, home.path()).await;
        let status = out.lines().next().unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.1 201"), "{cmd}: {status}\n{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        if line.contains("curl -N") {
            assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{cmd}: {head}");
            if line.contains("<ID>") {
                // the task's log replays: its events, numbered
                assert!(body.contains("event: task.queued") && body.contains("id: 1"), "{cmd}: {body}");
            }
            continue;
        }
        let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{cmd}: {e}: {body}"));
        if task.is_empty() && json["id"].is_string() {
            task = json["id"].as_str().unwrap().to_string();
        }
    }
    assert!(!task.is_empty(), "a README line submits a task");
    let done = smith.wait_terminal(&task, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

/// The README's block that starts with `first`, its commands as written (comments kept: `sh`
/// drops them).
fn block_starting(first: &str) -> Vec<String> {
    let all = shell_commands();
    let at = all.iter().position(|l| l.starts_with(first)).unwrap_or_else(|| panic!("no README line {first:?}"));
    all[at..].iter().take_while(|l| l.starts_with("smith ")).cloned().collect()
}

#[tokio::test]
async fn the_quick_starts_smith_lines_work_as_written() {
    let lines = block_starting("smith task submit echo");
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let smith = Smith::start(Opts::new()).await;
    // `smith` on PATH is this build's
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(common::BIN, bin.path().join("smith")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut id = String::new();
    for line in &lines {
        let cmd = line.replace("<ID>", &id);
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PATH", &path)
            .env("SMITH_SERVER", &smith.base)
            .env_remove("SMITH_TOKEN")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("finished").expect("ran");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let code = out.status.code().unwrap_or(-1);
        // the watch of the task cancelled on the line before: its outcome, cancelled, is exit 3
        let want = if line.starts_with("smith task watch") { 3 } else { 0 };
        assert_eq!(code, want, "{cmd}\n{stdout}\n{stderr}");
        if line.starts_with("smith task submit sleep") {
            id = stdout.trim().to_string();
            assert_eq!(id.len(), 36, "the task id: {stdout}");
        }
        if line.starts_with("smith task submit echo") {
            assert!(stdout.contains("task.succeeded"), "the stream: {stdout}");
        }
        if line.starts_with("smith task list") {
            assert!(stdout.contains(&id), "the running sleep task is listed: {stdout}");
        }
        if line.starts_with("smith agents") {
            assert!(stdout.lines().any(|l| l.starts_with("echo ")), "{stdout}");
        }
    }
}

#[tokio::test]
async fn smith_nodes_shows_load_as_columns_and_json_as_it_came() {
    let smith = Smith::start(Opts::new()).await;
    // once its supervisor has won the election and said so in a heartbeat
    let out = common::cluster::eventually("a leading supervisor in smith nodes", Duration::from_secs(20), || async {
        let (code, out, err) = common::cli(&["--server", &smith.base, "nodes"], Duration::from_secs(20)).await;
        assert_eq!(code, 0, "{err}");
        let leads = out.lines().any(|l| l.split_whitespace().nth(1) == Some("supervisor") && l.contains(" yes "));
        if leads {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NODE", "ROLE", "STATUS", "HEARTBEAT", "RUNNING", "LEADER", "QUEUED", "SSE", "NOTES"]);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let row = |role: &str| rows.iter().find(|r| r[1] == role).unwrap_or_else(|| panic!("no {role} row: {out}")).clone();
    let worker = row("worker");
    assert_eq!(worker[2], "alive");
    assert!(worker[3].ends_with('s') && worker[4] == "ago", "{worker:?}");
    let (running, slots) = worker[5].split_once('/').unwrap_or_else(|| panic!("running/slots: {worker:?}"));
    assert!(running.parse::<u64>().is_ok() && slots.parse::<u64>().is_ok(), "{worker:?}");
    assert_eq!(worker[6..], ["-", "-", "-"]);
    let supervisor = row("supervisor");
    assert_eq!(supervisor[6], "yes", "smith up's supervisor leads: {supervisor:?}");
    assert!(supervisor[7].parse::<u64>().is_ok(), "the leader shows the queue: {supervisor:?}");
    let gateway = row("gateway");
    assert!(gateway[8].parse::<u64>().is_ok(), "a gateway's SSE readers: {gateway:?}");
    assert!(!out.contains('{'), "no raw JSON in the table: {out}");

    let (code, out, err) = common::cli(&["--server", &smith.base, "--json", "nodes"], Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let items = v["items"].as_array().expect("items");
    assert!(items.iter().any(|n| n["role"] == "worker" && n["load"]["slots"].is_u64()), "{v}");
}
