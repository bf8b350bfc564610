//! Test harness: runs the real `smith up` binary on a temporary data dir and drives it over
//! HTTP and SSE, with timeouts everywhere so that no test can hang.
//!
//! The child's stderr is kept in `stderr.log` in the temp dir and printed when a test fails.

#![allow(dead_code)]

pub mod anthropic_mock;
pub mod cluster;

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_smith");
const START_TIMEOUT: Duration = Duration::from_secs(20);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Variables that would change how the binary under test behaves.
pub const SMITH_ENV: [&str; 14] = [
    "SMITH_LISTEN",
    "SMITH_CA_CERT",
    "SMITH_DATA_DIR",
    "SMITH_CONFIG",
    "SMITH_TOKEN",
    "SMITH_SERVER",
    "SMITH_MAX_AGENTS",
    "SMITH_DRAIN_TIMEOUT",
    "SMITH_NO_FSYNC",
    "SMITH_STORE",
    "SMITH_BUS",
    "SMITH_TLS_CERT",
    "SMITH_TLS_KEY",
    "SMITH_JWT_HMAC_SECRET",
];

/// How to run `smith up`.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    config: Option<String>,
    token: Option<String>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    args: Vec<String>,
    /// Variables set in the server's environment (after the `SMITH_*` ones are cleared).
    envs: Vec<(String, String)>,
}

impl Opts {
    pub fn new() -> Self {
        Opts::default()
    }
    fn with(mut self, set: impl FnOnce(&mut Opts)) -> Self {
        set(&mut self);
        self
    }
    /// Text of a `smith.toml`, written to the temp dir and passed with `--config`.
    pub fn config(self, text: &str) -> Self {
        self.with(|o| o.config = Some(text.to_string()))
    }
    pub fn token(self, t: &str) -> Self {
        self.with(|o| o.token = Some(t.to_string()))
    }
    pub fn listen(self, addr: &str) -> Self {
        self.with(|o| o.listen = Some(addr.to_string()))
    }
    /// Use this data dir instead of one in the temp dir.
    pub fn data_dir(self, dir: &Path) -> Self {
        self.with(|o| o.data_dir = Some(dir.to_path_buf()))
    }
    pub fn arg(self, a: &str) -> Self {
        self.with(|o| o.args.push(a.to_string()))
    }
    pub fn env(self, name: &str, value: &str) -> Self {
        self.with(|o| o.envs.push((name.to_string(), value.to_string())))
    }
}

/// A `smith up` that exited instead of serving.
#[derive(Debug)]
pub struct Refused {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A running `smith up`; kills it on drop.
pub struct Smith {
    pub opts: Opts,
    dir: tempfile::TempDir,
    child: Option<Child>,
    api: Api,
    runs: u32,
}

impl std::ops::Deref for Smith {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Spawns `cmd` (with `SMITH_LOG=info`, no stdin) for one run of a test's process: its stdout
/// to `stdout_path`, its stderr appended to `stderr_path` after the line `banner`, so that every
/// run of the process can be read back in one file.
pub fn spawn_logged(cmd: &mut Command, stdout_path: &Path, stderr_path: &Path, banner: &str) -> Result<Child, String> {
    let stdout = std::fs::File::create(stdout_path).map_err(|e| e.to_string())?;
    let mut stderr =
        std::fs::OpenOptions::new().create(true).append(true).open(stderr_path).map_err(|e| e.to_string())?;
    let _ = writeln!(stderr, "{banner}");
    cmd.env("SMITH_LOG", "info").stdin(Stdio::null()).stdout(stdout).stderr(stderr).kill_on_drop(true);
    cmd.spawn().map_err(|e| format!("cannot spawn {BIN}: {e}"))
}

/// Asks `ready` every 20 ms until it answers: an exit of `child` first, or no answer within
/// `timeout` (the child is then killed), is an error naming `what`. The child stays the caller's
/// either way.
pub async fn await_ready<T>(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(answer) = ready() {
            return Ok(answer);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status} before serving"));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(format!("{what} was not serving within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The URL of a whole "smith listening on URL" line in a run's stdout.
pub fn listening(stdout_path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(stdout_path).unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("smith listening on "))?;
    text.contains('\n').then(|| line.trim_start_matches("smith listening on ").trim().to_string())
}

/// The ids of this machine's processes (zombies included) that `keep` accepts.
pub fn pids(keep: impl Fn(i32) -> bool) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    let all = entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()));
    all.filter(|&pid| keep(pid)).collect()
}

/// Runs git in `dir` (a test's own identity, no prompt) and returns its trimmed stdout; panics
/// with git's stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A temporary git repository on branch `main` with one commit: `files` (name, text).
pub fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("smith-repo-").tempdir().expect("temp dir");
    git(dir.path(), &["init", "--quiet"]);
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a file");
    }
    git(dir.path(), &["add", "--all"]);
    git(dir.path(), &["commit", "--quiet", "-m", "initial"]);
    dir
}

/// How many tasks are in each status.
pub fn counts(tasks: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut c = std::collections::BTreeMap::new();
    for t in tasks {
        *c.entry(t["status"].as_str().unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    c
}

/// `f` of every id, `at_once` of them at a time, by id.
pub async fn by_id<T, F: std::future::Future<Output = T>>(
    ids: &[String],
    at_once: usize,
    f: impl Fn(String) -> F,
) -> std::collections::BTreeMap<String, T> {
    use futures_util::StreamExt;
    let each = ids.iter().map(|id| {
        let run = f(id.clone());
        async move { (id.clone(), run.await) }
    });
    futures_util::stream::iter(each).buffer_unordered(at_once).collect().await
}

/// `kill -9` and reap `child` (when there is one) within 10 s.
pub async fn kill9(child: Option<Child>, name: &str) {
    if let Some(mut child) = child {
        let _ = child.start_kill();
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} did not die on SIGKILL"))
            .expect("wait");
    }
}

impl Smith {
    /// A temp dir with the config written, nothing started yet.
    fn unstarted(opts: Opts) -> Smith {
        let dir = tempfile::Builder::new().prefix("smith-test-").tempdir().expect("temp dir");
        let api = Api::new("http://unstarted", opts.token.clone());
        let s = Smith { opts, dir, child: None, api, runs: 0 };
        if let Some(text) = &s.opts.config {
            std::fs::write(s.config_path(), text).expect("write smith.toml");
        }
        s
    }

    /// Starts `smith up` and waits for its "listening on" line.
    pub async fn start(opts: Opts) -> Smith {
        let mut s = Smith::unstarted(opts);
        match s.launch().await {
            Ok(()) => s,
            Err(e) => panic!("smith up did not start: {e}\n--- stderr ---\n{}", s.stderr()),
        }
    }

    /// Runs `smith up` that is expected to exit (bad flags or config, a locked data dir…).
    pub async fn start_refused(opts: Opts) -> Refused {
        let mut s = Smith::unstarted(opts);
        match s.launch().await {
            Ok(()) => panic!("smith up started at {} but was expected to refuse", s.base),
            Err(_) => {
                let mut child = s.child.take().expect("child");
                let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .expect("refused smith exits")
                    .expect("wait");
                Refused { status, stderr: s.stderr() }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.opts.data_dir.clone().unwrap_or_else(|| self.dir.path().join("data"))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("smith.toml")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Everything the child (all its runs) wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("smith is running")
    }

    async fn launch(&mut self) -> Result<(), String> {
        let n = self.runs;
        self.runs += 1;
        let stdout_path = self.dir.path().join(format!("stdout-{n}.log"));
        let listen = self.opts.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        let mut cmd = Command::new(BIN);
        cmd.arg("up").arg("--listen").arg(&listen).arg("--data-dir").arg(self.data_dir());
        if self.opts.config.is_some() {
            cmd.arg("--config").arg(self.config_path());
        }
        if let Some(t) = &self.opts.token {
            cmd.arg("--token").arg(t);
        }
        cmd.args(&self.opts.args);
        for k in SMITH_ENV {
            cmd.env_remove(k);
        }
        cmd.envs(self.opts.envs.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(self.dir.path());
        let banner = format!("===== smith up, run {n} =====");
        let mut child = spawn_logged(&mut cmd, &stdout_path, &self.stderr_path(), &banner)?;
        let started = await_ready(&mut child, "smith up", START_TIMEOUT, || listening(&stdout_path)).await;
        self.child = Some(child);
        let url = started?;
        self.api = Api::new(&url.replace("://0.0.0.0:", "://127.0.0.1:"), self.opts.token.clone());
        Ok(())
    }

    /// `kill -9` and reap.
    pub async fn kill9(&mut self) {
        kill9(self.child.take(), "smith up").await;
    }

    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Waits for the child to exit; `None` when it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("smith was started");
        let status = tokio::time::timeout(timeout, child.wait()).await.ok()?.expect("wait");
        self.child = None;
        Some(status)
    }

    /// Starts again on the same data dir and config (killing a still-running child first).
    pub async fn restart(&mut self) {
        self.kill9().await;
        if let Err(e) = self.launch().await {
            panic!("smith up did not restart: {e}\n--- stderr ---\n{}", self.stderr());
        }
    }
}

impl Drop for Smith {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!("----- smith stderr ({}) -----\n{}", self.stderr_path().display(), tail(&self.stderr(), 400));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An HTTP client for one server address.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

/// Parses a body as JSON, or keeps it as a string when it is not JSON.
fn body_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(32)
            .build()
            .expect("http client");
        Api { base: base.trim_end_matches('/').to_string(), token, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the token (if any) and no timeout (the caller sets one).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends with a timeout; returns the status and the body (JSON, or a JSON string).
    pub async fn send(&self, r: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
        self.try_send(r).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Api::send`], but a failed connection or body is an `Err` (for servers that may die).
    pub async fn try_send(&self, r: reqwest::RequestBuilder) -> Result<(reqwest::StatusCode, Value), String> {
        let resp =
            r.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| format!("request to {} failed: {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("reading a response body from {} failed: {e}", self.base))?;
        Ok((status, body_value(&text)))
    }

    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (reqwest::StatusCode, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// Submits a task and expects `201`.
    pub async fn submit(&self, body: Value) -> Value {
        let (status, task) = self.post("/v1/tasks", &body).await;
        assert_eq!(status, 201, "submit {body}: {task}");
        assert!(task["id"].is_string(), "no id: {task}");
        task
    }

    /// Submits a task and returns its id.
    pub async fn submit_id(&self, body: Value) -> String {
        self.submit(body).await["id"].as_str().expect("id").to_string()
    }

    pub async fn get_task(&self, id: &str) -> Value {
        let (status, task) = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(status, 200, "get task {id}: {task}");
        task
    }

    pub async fn cancel(&self, id: &str) -> (reqwest::StatusCode, Value) {
        self.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await
    }

    /// Polls until the task is terminal; panics with the task after `timeout`.
    /// Submits a task and waits for its end: its id and the task.
    pub async fn run(&self, body: Value, timeout: Duration) -> (String, Value) {
        let id = self.submit_id(body).await;
        let task = self.wait_terminal(&id, timeout).await;
        (id, task)
    }

    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.get_task(id).await;
            if is_terminal(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!("task {id} not terminal after {timeout:?}: {t}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until the task has `status`; panics with the task after `timeout`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.get_task(id).await;
            if t["status"] == status {
                return t;
            }
            if Instant::now() > deadline {
                panic!("task {id} not {status} after {timeout:?}: {t}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every task matching `query` (e.g. `agent=sleep`), following cursors.
    pub async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut path = format!("/v1/tasks?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "list {path}: {page}");
            out.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
        panic!("list {query}: more than 1000 pages");
    }

    /// Opens an SSE stream, optionally resuming with `Last-Event-ID`; expects `200`.
    pub async fn sse(&self, path: &str, last_event_id: Option<&str>) -> SseStream {
        self.try_sse(path, last_event_id).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Api::sse`], but any failure to open the stream is an `Err` (for servers that may die).
    pub async fn try_sse(&self, path: &str, last_event_id: Option<&str>) -> Result<SseStream, String> {
        let mut r = self.request(reqwest::Method::GET, path).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            r = r.header("last-event-id", id);
        }
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, r.send())
            .await
            .map_err(|_| format!("SSE {path}: no response headers within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("SSE {path}: {e}"))?;
        let status = resp.status();
        if status != 200 {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("SSE {path}: status {status}: {text}"));
        }
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if !ct.starts_with("text/event-stream") {
            return Err(format!("SSE {path}: content-type {ct:?}"));
        }
        Ok(SseStream { resp, parser: SseParser::default(), pending: VecDeque::new(), closed: false, error: None })
    }

    /// A task's whole event log, read over SSE from the start until the stream closes.
    pub async fn events(&self, id: &str, timeout: Duration) -> Vec<Frame> {
        self.sse(&format!("/v1/tasks/{id}/events"), None).await.rest(timeout).await
    }
}

pub fn is_terminal(task: &Value) -> bool {
    matches!(task["status"].as_str(), Some("succeeded" | "failed" | "cancelled" | "timed_out" | "expired"))
}

pub fn is_terminal_kind(kind: &str) -> bool {
    matches!(kind, "task.succeeded" | "task.failed" | "task.cancelled" | "task.timed_out" | "task.expired")
}

/// One SSE frame.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Frame {
    pub id: String,
    pub event: String,
    pub data: String,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {self:?}"))
    }
    /// The frame's `id` as a number (task seq, or feed position).
    pub fn num(&self) -> u64 {
        self.id.parse().unwrap_or_else(|_| panic!("frame id is not a number: {self:?}"))
    }
}

impl From<smith_core::sse::SseEvent> for Frame {
    fn from(e: smith_core::sse::SseEvent) -> Self {
        Frame { id: e.id, event: e.event, data: e.data }
    }
}

/// The platform's SSE parser (`smith_core::sse`) as the tests read streams: frames, and the
/// keep-alive comments counted. A malformed stream fails the test.
pub struct SseParser(smith_core::sse::SseParser);

impl Default for SseParser {
    fn default() -> Self {
        SseParser(smith_core::sse::SseParser::new(1 << 30))
    }
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let events = self.0.feed(chunk).unwrap_or_else(|e| panic!("malformed event stream: {e}"));
        events.into_iter().map(Frame::from).collect()
    }

    pub fn comments(&self) -> usize {
        self.0.comments()
    }
}

/// What reading an SSE stream gave.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The server ended the stream (or the connection broke; see [`SseStream::error`]).
    Closed,
    Timeout,
}

/// An open SSE response, read frame by frame.
pub struct SseStream {
    resp: reqwest::Response,
    parser: SseParser,
    pending: VecDeque<Frame>,
    closed: bool,
    pub error: Option<String>,
}

impl SseStream {
    /// The next frame, or `Closed`, or `Timeout` after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Next::Frame(f);
            }
            if self.closed {
                return Next::Closed;
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(Some(chunk))) => self.pending.extend(self.parser.push(&chunk)),
                Ok(Ok(None)) => self.closed = true,
                Ok(Err(e)) => {
                    self.error = Some(e.to_string());
                    self.closed = true;
                }
            }
        }
    }

    /// The next frame, `None` when the stream closed; panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        match self.next_within(within).await {
            Next::Frame(f) => Some(f),
            Next::Closed => None,
            Next::Timeout => panic!("no SSE frame within {within:?}"),
        }
    }

    /// Up to `k` frames (fewer if the stream closes), each within `each`.
    pub async fn take(&mut self, k: usize, each: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while out.len() < k {
            match self.next(each).await {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    /// Every frame until the stream closes; panics if it is still open after `timeout`.
    pub async fn rest(&mut self, timeout: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Next::Frame(f) => out.push(f),
                Next::Closed => return out,
                Next::Timeout => {
                    panic!("SSE stream still open after {timeout:?}; got {} frames: {:?}", out.len(), out.last())
                }
            }
        }
    }

    pub fn comments(&self) -> usize {
        self.parser.comments()
    }
}

/// Asserts a task's frames are its whole log: seq 1..n without gap or duplicate, ids equal to
/// the data's seq, exactly one terminal event and it is the last.
pub fn assert_complete_log(id: &str, frames: &[Frame]) {
    assert!(!frames.is_empty(), "task {id}: no events");
    for (i, f) in frames.iter().enumerate() {
        let v = f.json();
        assert_eq!(f.num(), i as u64 + 1, "task {id}: frame {i} has id {} (kinds {:?})", f.id, kinds(frames));
        assert_eq!(v["seq"], json!(i as u64 + 1), "task {id}: data seq differs from id: {v}");
        assert_eq!(v["kind"], json!(f.event), "task {id}: data kind differs from event: {v}");
        assert_eq!(v["task_id"], json!(id), "task {id}: foreign event {v}");
    }
    let terminals = frames.iter().filter(|f| is_terminal_kind(&f.event)).count();
    assert_eq!(terminals, 1, "task {id}: {terminals} terminal events: {:?}", kinds(frames));
    assert!(
        is_terminal_kind(&frames.last().expect("frames").event),
        "task {id}: last event not terminal: {:?}",
        kinds(frames)
    );
}

pub fn kinds(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.event.clone()).collect()
}

/// Runs the `smith` CLI with a timeout; returns (exit code, stdout, stderr).
pub async fn cli(args: &[&str], timeout: Duration) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    for k in SMITH_ENV {
        cmd.env_remove(k);
    }
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("smith {args:?} did not finish within {timeout:?}"))
        .expect("run smith");
    let code = out.status.code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Parses an RFC 3339 timestamp as served (`at`, `created_at`…) into microseconds since the epoch.
pub fn micros(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let t = humantime::parse_rfc3339_weak(s).unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH).expect("after the epoch").as_micros() as i64
}

/// Asserts an API error: status, `error.code`, and a message containing `needle`.
pub fn assert_error(
    what: &str,
    status: reqwest::StatusCode,
    body: &Value,
    want_status: u16,
    want_code: &str,
    needle: &str,
) {
    assert_eq!(status.as_u16(), want_status, "{what}: status {status}, body {body}");
    assert_eq!(body["error"]["code"], json!(want_code), "{what}: body {body}");
    let msg = body["error"]["message"].as_str().unwrap_or_else(|| panic!("{what}: no error.message in {body}"));
    assert!(!msg.is_empty(), "{what}: empty error.message");
    assert!(msg.contains(needle), "{what}: message {msg:?} does not mention {needle:?}");
}

/// The Claude Code CLI: `SMITH_TEST_CLAUDE`. Required when the service URLs are set (CI).
pub fn claude_cli() -> Option<String> {
    match std::env::var("SMITH_TEST_CLAUDE") {
        Ok(p) if !p.is_empty() => {
            assert!(
                std::path::Path::new(&p).is_file(),
                "SMITH_TEST_CLAUDE={p} is not a file (.ci/run installs the CLI)"
            );
            Some(p)
        }
        _ if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() => {
            panic!(
                "SMITH_TEST_CLAUDE not set: the path to the Claude Code CLI binary (.ci/run installs it and sets it)"
            )
        }
        _ => {
            println!("skipped: SMITH_TEST_CLAUDE not set (path to the Claude Code CLI binary)");
            None
        }
    }
}

/// A path in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A file's text; panics naming the file.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A test tool: the path `var` names, else `name` on PATH, else in the virtualenv `venv` of
/// .ci/tools (where .ci/run installs it). CI sets the service URLs and installs the tools:
/// there a missing one fails; elsewhere the test says it is skipped.
pub fn tool(var: &str, name: &str, venv: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
        })
        .or_else(|| Some(repo(&format!(".ci/tools/{venv}/bin")).join(name)).filter(|p| p.is_file()));
    if found.is_none() {
        if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() {
            panic!("{name} not installed: set {var} or run .ci/run's install step (.ci/tools/{venv})");
        }
        println!("skipped: {name} not installed ({var} unset)");
    }
    found
}
