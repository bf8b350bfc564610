//! Client commands: talk to a gateway over HTTP and follow SSE streams, resuming with
//! `Last-Event-ID` after any disconnect.

use crate::ClientOpts;
use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Subcommand, Debug)]
pub enum TaskCommand {
    /// Submit a task; with --follow, stream it and exit with its outcome.
    Submit(SubmitArgs),
    /// Show a task.
    Get { id: String },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Ask a task to stop.
    Cancel { id: String },
    /// Print what a task changed in its git workspace, as a patch (`git apply` takes it).
    Patch { id: String },
    /// List the files a task's agent left in `$SMITH_ARTIFACTS`; with --out, download them.
    Artifacts {
        id: String,
        /// Download every artifact into this directory, subdirectories as the names say (a
        /// name that would leave it is refused; each file's SHA-256 is checked).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Follow a task's events until it ends; exit with its outcome.
    Watch {
        id: String,
        /// Resume after this event number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The agent to run.
    pub agent: String,
    /// Input: parsed as JSON when it is valid JSON, else taken as a string.
    #[arg(long, default_value = "")]
    pub input: String,
    /// Take --input as a string even when it parses as JSON.
    #[arg(long)]
    pub raw: bool,
    #[arg(long)]
    pub priority: Option<u8>,
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// The key the agent's `max_per_key` caps this task under (docs/concurrency.md).
    #[arg(long)]
    pub concurrency_key: Option<String>,
    /// Metadata as a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Start no earlier than this long from now ("30s", "2h"): `scheduled` until then.
    #[arg(long, conflicts_with = "run_at")]
    pub delay: Option<String>,
    /// Start no earlier than this time (RFC 3339).
    #[arg(long)]
    pub run_at: Option<String>,
    /// Expire the task if it has not started this long after it may ("10m").
    #[arg(long)]
    pub ttl: Option<String>,
    /// Stream the task's events and exit with its outcome.
    #[arg(long)]
    pub follow: bool,
}

/// Exit codes of `--follow` and `watch`, by terminal status.
pub fn exit_code_for(status: &str) -> ExitCode {
    match status {
        "succeeded" => ExitCode::SUCCESS,
        "failed" => ExitCode::from(1),
        "cancelled" => ExitCode::from(3),
        "timed_out" => ExitCode::from(4),
        "expired" => ExitCode::from(5),
        _ => ExitCode::from(1),
    }
}

/// An HTTP client builder that trusts `--ca-cert` (a gateway's private CA) besides the
/// built-in roots.
pub fn http_builder(opts: &ClientOpts) -> Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder();
    if let Some(path) = &opts.ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-cert {} is not a PEM certificate bundle", path.display()))?;
        if certs.is_empty() {
            bail!("--ca-cert {} holds no PEM certificate", path.display());
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(opts: &ClientOpts) -> Result<Self> {
        let http = http_builder(opts)?.connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Client { http, base: opts.server.trim_end_matches('/').to_string(), token: opts.token.clone() })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends; an API error becomes a message with its code.
    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = r.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("error");
            let msg = body["error"]["message"].as_str().unwrap_or("");
            bail!("{} ({code}): {msg}", status.as_u16());
        }
        Ok(resp)
    }

    /// Sends and decodes the JSON answer.
    pub async fn call(&self, r: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Value)> {
        let resp = self.send(r).await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        Ok(self.call(self.req(reqwest::Method::GET, path)).await?.1)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.call(self.req(reqwest::Method::POST, path).json(body)).await?.1)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.req(reqwest::Method::DELETE, path)).await?;
        Ok(())
    }

    /// Follows a task's stream from `after`, calling `on_event` for each event; reconnects
    /// with Last-Event-ID; returns the terminal status.
    pub async fn follow(&self, id: &str, mut after: u64, mut on_event: impl FnMut(&str, &Value)) -> Result<String> {
        let mut failures = 0u32;
        loop {
            let r = self
                .req(reqwest::Method::GET, &format!("/v1/tasks/{id}/events"))
                .header("accept", "text/event-stream")
                .header("last-event-id", after.to_string());
            let resp = match r.send().await {
                Ok(resp) if resp.status().is_success() => resp,
                Ok(resp) if resp.status().is_client_error() => {
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    bail!("{}: {}", status.as_u16(), body["error"]["message"].as_str().unwrap_or(""));
                }
                Ok(resp) => {
                    failures += 1;
                    tracing_retry(failures, &format!("status {}", resp.status()))?;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    tracing_retry(failures, &e.to_string())?;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            let mut parser = sse_parser();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                let frames = parser.feed(&chunk).context("the event stream is malformed")?;
                for ev in frames {
                    failures = 0;
                    let Ok(seq) = ev.id.parse::<u64>() else { continue };
                    if seq <= after {
                        continue;
                    }
                    after = seq;
                    let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                    on_event(&ev.event, &data);
                    if let Some(status) = ev
                        .event
                        .strip_prefix("task.")
                        .filter(|s| matches!(*s, "succeeded" | "failed" | "cancelled" | "timed_out"))
                    {
                        return Ok(status.to_string());
                    }
                }
            }
            // the stream ended without a terminal event: resume after the last one seen
            failures += 1;
            tracing_retry(failures, "stream closed")?;
            tokio::time::sleep(backoff(failures)).await;
        }
    }
}

impl Client {
    /// Downloads one artifact into `dir` (its name's subdirectories made), through a temp file
    /// renamed into place once its SHA-256 is checked; returns where it is. A name that could
    /// leave `dir`, or a path through a symbolic link inside it, is refused.
    async fn download_artifact(&self, id: &str, name: &str, sha256: &str, dir: &Path) -> Result<PathBuf> {
        smith_core::artifact::check_name(name).map_err(|e| anyhow!("refusing artifact {name:?}: {e}"))?;
        let dest = dir.join(name);
        let parent = dest.parent().unwrap_or(dir).to_path_buf();
        tokio::fs::create_dir_all(&parent).await.with_context(|| format!("cannot create {}", parent.display()))?;
        // every directory the name passes through is a real one, not a link out of `dir`
        let mut at = dir.to_path_buf();
        for part in name.split('/').collect::<Vec<_>>().split_last().map(|(_, dirs)| dirs).unwrap_or_default() {
            at.push(part);
            if tokio::fs::symlink_metadata(&at).await.is_ok_and(|m| m.file_type().is_symlink()) {
                bail!("refusing artifact {name:?}: {} is a symbolic link", at.display());
            }
        }
        let escaped: Vec<String> = name.split('/').map(urlencode).collect();
        let path = format!("/v1/tasks/{id}/artifacts/{}", escaped.join("/"));
        let resp = self.send(self.req(reqwest::Method::GET, &path)).await?;
        let tmp = parent.join(format!(".smith-download-{:016x}", fastrand::u64(..)));
        let written = write_stream(resp, &tmp).await;
        let checked = match written {
            Ok(()) => {
                let t = tmp.clone();
                tokio::task::spawn_blocking(move || smith_artifacts::sha256_file(&t))
                    .await?
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok((_, got)) if sha256.is_empty() || got == sha256 => {}
            Ok((_, got)) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                bail!("artifact {name:?}: downloaded bytes have SHA-256 {got}, not {sha256}");
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.context(format!("downloading artifact {name:?}")));
            }
        }
        tokio::fs::rename(&tmp, &dest).await.with_context(|| format!("cannot write {}", dest.display()))?;
        Ok(dest)
    }
}

/// Writes a response body to a new file, chunk by chunk.
async fn write_stream(resp: reqwest::Response, to: &Path) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create_new(to).await.with_context(|| format!("cannot create {}", to.display()))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.context("reading the download")?).await?;
    }
    file.flush().await?;
    Ok(())
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(5)).min(3000))
}

/// Gives up after about a minute of consecutive failures.
fn tracing_retry(failures: u32, why: &str) -> Result<()> {
    if failures > 25 {
        bail!("lost the stream and could not resume: {why}");
    }
    eprintln!("smith: stream interrupted ({why}); resuming");
    Ok(())
}

/// The platform's SSE parser; a frame is one event of a stream.
pub use smith_core::sse::{SseEvent as SseFrame, SseParser};

/// The longest event the CLI and the benchmarks take from a server: the server bounds its
/// events by its output caps; this only stops a runaway peer.
pub const MAX_SSE_EVENT: usize = 1 << 30;

/// A parser for one of the platform's event streams.
pub fn sse_parser() -> SseParser {
    SseParser::new(MAX_SSE_EVENT)
}

pub fn print_value(json_out: bool, v: &Value) {
    if json_out {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
}

fn print_event(json_out: bool, kind: &str, data: &Value) {
    if json_out {
        println!("{data}");
        return;
    }
    let payload = &data["data"];
    let text = match payload {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    println!("{:>4} {kind:<15} {text}", data["seq"].as_u64().unwrap_or(0));
}

pub async fn task(cmd: TaskCommand, opts: ClientOpts) -> Result<ExitCode> {
    let c = Client::new(&opts)?;
    match cmd {
        TaskCommand::Submit(a) => {
            let input: Value = if a.raw || a.input.is_empty() {
                Value::String(a.input.clone())
            } else {
                serde_json::from_str(&a.input).unwrap_or_else(|_| Value::String(a.input.clone()))
            };
            let mut body = json!({"agent": a.agent, "input": input});
            if let Some(p) = a.priority {
                body["priority"] = json!(p);
            }
            if let Some(t) = a.timeout_ms {
                body["timeout_ms"] = json!(t);
            }
            if let Some(m) = a.max_attempts {
                body["max_attempts"] = json!(m);
            }
            if let Some(k) = &a.idempotency_key {
                body["idempotency_key"] = json!(k);
            }
            if let Some(k) = &a.concurrency_key {
                body["concurrency_key"] = json!(k);
            }
            if let Some(m) = &a.metadata {
                body["metadata"] = serde_json::from_str(m).map_err(|e| anyhow!("--metadata is not JSON: {e}"))?;
            }
            // checked by the gateway, which names what is wrong
            for (key, v) in [("delay", &a.delay), ("run_at", &a.run_at), ("ttl", &a.ttl)] {
                if let Some(v) = v {
                    body[key] = json!(v);
                }
            }
            let task = c.post("/v1/tasks", &body).await?;
            let id = task["id"].as_str().ok_or_else(|| anyhow!("no id in the answer"))?.to_string();
            if !a.follow {
                if opts.json {
                    print_value(true, &task);
                } else {
                    println!("{id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !opts.json {
                eprintln!("task {id}");
            }
            let status = c.follow(&id, 0, |k, d| print_event(opts.json, k, d)).await?;
            Ok(exit_code_for(&status))
        }
        TaskCommand::Patch { id } => {
            let resp = c.send(c.req(reqwest::Method::GET, &format!("/v1/tasks/{id}/patch"))).await?;
            let patch = resp.bytes().await.context("reading the patch")?;
            use std::io::Write;
            std::io::stdout().write_all(&patch).context("writing the patch")?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Artifacts { id, out } => {
            let list = c.get(&format!("/v1/tasks/{id}/artifacts")).await?;
            let items = list["artifacts"].as_array().cloned().unwrap_or_default();
            let Some(dir) = out else {
                if opts.json {
                    print_value(true, &list);
                }
                for a in items.iter().filter(|_| !opts.json) {
                    let (size, sha) = (a["size"].as_u64().unwrap_or(0), a["sha256"].as_str().unwrap_or(""));
                    println!("{size:>12}  {sha}  {}", a["name"].as_str().unwrap_or(""));
                }
                return Ok(ExitCode::SUCCESS);
            };
            for a in &items {
                let name = a["name"].as_str().ok_or_else(|| anyhow!("an artifact without a name: {a}"))?;
                let path = c.download_artifact(&id, name, a["sha256"].as_str().unwrap_or(""), &dir).await?;
                if !opts.json {
                    println!("{}", path.display());
                }
            }
            if opts.json {
                print_value(true, &list);
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Get { id } => {
            print_value(opts.json, &c.get(&format!("/v1/tasks/{id}")).await?);
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::List { status, agent, limit, cursor } => {
            let mut q = vec![("limit".to_string(), limit.to_string())];
            if let Some(s) = status {
                q.push(("status".into(), s));
            }
            if let Some(a) = agent {
                q.push(("agent".into(), a));
            }
            if let Some(cur) = cursor {
                q.push(("cursor".into(), cur));
            }
            let qs = serde_urlencoded_pairs(&q);
            let page = c.get(&format!("/v1/tasks?{qs}")).await?;
            if opts.json {
                print_value(true, &page);
            } else {
                for t in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<10} {:<12} attempt {} {}",
                        t["id"].as_str().unwrap_or(""),
                        t["status"].as_str().unwrap_or(""),
                        t["agent"].as_str().unwrap_or(""),
                        t["attempt"],
                        t["created_at"].as_str().unwrap_or("")
                    );
                }
                if let Some(n) = page["next_cursor"].as_str() {
                    println!("next: --cursor {n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Cancel { id } => {
            let t = c.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await?;
            if opts.json {
                print_value(true, &t);
            } else {
                println!("{} {}", t["id"].as_str().unwrap_or(""), t["status"].as_str().unwrap_or(""));
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Watch { id, after } => {
            let status = c.follow(&id, after, |k, d| print_event(opts.json, k, d)).await?;
            Ok(exit_code_for(&status))
        }
    }
}

fn serde_urlencoded_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&")
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(clap::Subcommand)]
pub enum SessionCommand {
    /// Start a session with an agent; with --input, its first turn too (followed unless --no-follow).
    Start {
        agent: String,
        #[arg(long)]
        input: Option<String>,
        /// Do not follow the first turn's events.
        #[arg(long)]
        no_follow: bool,
    },
    /// Add a turn to a session and follow it to its end (exit code as `task submit --follow`).
    Say {
        session: String,
        input: String,
        #[arg(long)]
        no_follow: bool,
    },
    /// Show a session and its turns.
    Show { session: String },
}

/// Text as the JSON it spells, or as a string when it is not JSON.
fn input_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

pub async fn session(cmd: SessionCommand, opts: ClientOpts) -> Result<ExitCode> {
    let c = Client::new(&opts)?;
    let follow_turn = |turn: Value| {
        let c = &c;
        async move {
            let id = turn["id"].as_str().ok_or_else(|| anyhow!("no turn id in the answer"))?.to_string();
            if !opts.json {
                eprintln!("turn {id}");
            }
            let status = c.follow(&id, 0, |k, d| print_event(opts.json, k, d)).await?;
            Ok::<_, anyhow::Error>(exit_code_for(&status))
        }
    };
    match cmd {
        SessionCommand::Start { agent, input, no_follow } => {
            let mut body = json!({"agent": agent});
            if let Some(i) = &input {
                body["input"] = input_value(i);
            }
            let session = c.post("/v1/sessions", &body).await?;
            let id = session["id"].as_str().unwrap_or("").to_string();
            if opts.json {
                print_value(true, &session);
            } else {
                println!("{id}");
            }
            match session["turns"].as_array().and_then(|t| t.first()).cloned() {
                Some(turn) if !no_follow => follow_turn(turn).await,
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        SessionCommand::Say { session, input, no_follow } => {
            let turn = c
                .post(&format!("/v1/sessions/{}/turns", urlencode(&session)), &json!({"input": input_value(&input)}))
                .await?;
            if no_follow {
                if opts.json {
                    print_value(true, &turn);
                } else {
                    println!("{}", turn["id"].as_str().unwrap_or(""));
                }
                return Ok(ExitCode::SUCCESS);
            }
            follow_turn(turn).await
        }
        SessionCommand::Show { session } => {
            let s = c.get(&format!("/v1/sessions/{}", urlencode(&session))).await?;
            if opts.json {
                print_value(true, &s);
                return Ok(ExitCode::SUCCESS);
            }
            println!("session {} with {}", s["id"].as_str().unwrap_or(""), s["agent"].as_str().unwrap_or(""));
            for (i, t) in s["turns"].as_array().into_iter().flatten().enumerate() {
                let input = match &t["input"] {
                    Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                let answer = match &t["result"] {
                    Value::Object(o) => o
                        .get("text")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| t["result"].to_string()),
                    Value::String(x) => x.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                println!("[{}] {} ({})", i + 1, t["id"].as_str().unwrap_or(""), t["status"].as_str().unwrap_or(""));
                println!("  > {input}");
                if !answer.is_empty() {
                    println!("  < {answer}");
                }
                if let Some(e) = t["error"]["message"].as_str() {
                    println!("  ! {e}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn agents(opts: ClientOpts) -> Result<ExitCode> {
    let header = format!("{:<20} {:<10} {:>11} {:>8} {:>8}", "AGENT", "EXECUTOR", "CONCURRENCY", "QUEUED", "RUNNING");
    list(&opts, "/v1/agents", &header, |a| {
        println!(
            "{:<20} {:<10} {:>11} {:>8} {:>8}",
            a["name"].as_str().unwrap_or(""),
            a["executor"].as_str().unwrap_or(""),
            a["concurrency"].to_string(),
            a["queued"].to_string(),
            a["running"].to_string()
        )
    })
    .await
}

/// `smith nodes`: one row per node with its load as columns (`--json`: the raw answer, the
/// whole `load` object included).
pub async fn nodes(opts: ClientOpts) -> Result<ExitCode> {
    let header = format!(
        "{:<40} {:<10} {:<11} {:>9} {:>9} {:>6} {:>7} {:>5}  {}",
        "NODE", "ROLE", "STATUS", "HEARTBEAT", "RUNNING", "LEADER", "QUEUED", "SSE", "NOTES"
    );
    let now = smith_core::Micros::now();
    list(&opts, "/v1/nodes", &header, |n| println!("{}", node_row(n, now))).await
}

/// One node's row of `smith nodes`: a worker's running tasks of its slots, whether a
/// supervisor leads (the leader also shows the fleet's queue), a gateway's SSE readers, and
/// what needs a look (open breakers). `-` where a figure is not the role's.
fn node_row(n: &Value, now: smith_core::Micros) -> String {
    let load = &n["load"];
    let dash = || "-".to_string();
    let num = |v: &Value| v.as_u64().map(|x| x.to_string());
    let role = n["role"].as_str().unwrap_or("");
    let age = n["heartbeat_at"]
        .as_str()
        .and_then(smith_core::Micros::parse_rfc3339)
        .map(|at| {
            let secs = (now.0 - at.0).max(0) as f64 / 1e6;
            if secs < 100.0 {
                format!("{secs:.1}s ago")
            } else {
                format!("{}m ago", (secs / 60.0).round())
            }
        })
        .unwrap_or_else(dash);
    let running = match (num(&load["running"]), num(&load["slots"])) {
        (Some(r), Some(s)) if role == "worker" => format!("{r}/{s}"),
        _ => dash(),
    };
    let leader = match load["leader"].as_bool() {
        Some(true) => "yes".to_string(),
        Some(false) => "no".to_string(),
        None => dash(),
    };
    let queued = num(&load["scaling"]["queued"]).filter(|_| load["leader"] == true).unwrap_or_else(dash);
    let sse = num(&load["sse_connections"]).unwrap_or_else(dash);
    let notes = match load["breakers"].as_object() {
        Some(b) if !b.is_empty() => {
            let open: Vec<String> =
                b.iter().map(|(agent, state)| format!("{agent} {}", state.as_str().unwrap_or("?"))).collect();
            format!("breaker: {}", open.join(", "))
        }
        _ => String::new(),
    };
    format!(
        "{:<40} {:<10} {:<11} {:>9} {:>9} {:>6} {:>7} {:>5}  {}",
        n["id"].as_str().unwrap_or(""),
        role,
        n["status"].as_str().unwrap_or(""),
        age,
        running,
        leader,
        queued,
        sse,
        notes
    )
    .trim_end()
    .to_string()
}

/// `GET path`: the JSON as it came with `--json`, else `header` and `row` of each item.
async fn list(opts: &ClientOpts, path: &str, header: &str, row: impl Fn(&Value)) -> Result<ExitCode> {
    let v = Client::new(opts)?.get(path).await?;
    if opts.json {
        print_value(true, &v);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{header}");
    v["items"].as_array().into_iter().flatten().for_each(row);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_row_shows_each_roles_load_as_columns() {
        let now = smith_core::Micros::parse_rfc3339("2026-12-07T10:00:02Z").unwrap();
        let worker = serde_json::json!({"id": "worker-1", "role": "worker", "status": "alive",
            "heartbeat_at": "2026-12-07T10:00:00.500Z",
            "load": {"running": 3, "slots": 8, "capacity": 64, "breakers": {"writer": "open"}}});
        let row = node_row(&worker, now);
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[..8], ["worker-1", "worker", "alive", "1.5s", "ago", "3/8", "-", "-"], "{row}");
        assert!(row.ends_with("breaker: writer open"), "{row}");
        let leader = serde_json::json!({"id": "supervisor-1", "role": "supervisor", "status": "alive",
            "heartbeat_at": "2026-12-07T09:50:00Z", "load": {"leader": true, "scaling": {"queued": 12}}});
        let cols: Vec<String> = node_row(&leader, now).split_whitespace().map(String::from).collect();
        assert_eq!(cols, ["supervisor-1", "supervisor", "alive", "10m", "ago", "-", "yes", "12", "-"]);
        let follower = serde_json::json!({"id": "supervisor-2", "role": "supervisor", "status": "alive",
            "heartbeat_at": "2026-12-07T10:00:01Z", "load": {"leader": false, "scaling": {"queued": 12}}});
        let cols: Vec<String> = node_row(&follower, now).split_whitespace().map(String::from).collect();
        assert_eq!(cols[5..], ["-", "no", "-", "-"], "only the leader's queue is the fleet's");
        let gateway = serde_json::json!({"id": "gateway-1", "role": "gateway", "status": "dead",
            "heartbeat_at": "bad", "load": {"sse_connections": 4}});
        let cols: Vec<String> = node_row(&gateway, now).split_whitespace().map(String::from).collect();
        assert_eq!(cols, ["gateway-1", "gateway", "dead", "-", "-", "-", "-", "4"]);
    }

    #[test]
    fn sse_parser_handles_split_frames_comments_and_multiline_data() {
        let mut p = sse_parser();
        assert!(p.feed(b": keep-alive\n\nid: 3\nevent: out").unwrap().is_empty());
        let frames = p.feed(b"put\ndata: {\"a\":\ndata: 1}\n\n").unwrap();
        assert_eq!(frames, vec![SseFrame { id: "3".into(), event: "output".into(), data: "{\"a\":\n1}".into() }]);
        let frames = p.feed(b"id:4\r\ndata:x\r\n\r\n").unwrap();
        assert_eq!(frames[0].id, "4");
        assert_eq!(frames[0].data, "x");
    }
}
