//! Harness for the distributed roles: a fresh PostgreSQL database and a NATS namespace per
//! test, and real `smith supervisor|worker|gateway` processes that a test starts, kills,
//! freezes, signals and restarts. HTTP and SSE go through [`crate::common::Api`].
//!
//! Each process keeps its stdout and stderr (all runs) in its own folder of the cluster's temp
//! dir; when a test fails, the tail of every process's stderr is printed.

#![allow(dead_code)]

use crate::common::{await_ready, spawn_logged, Api, Frame, Next, BIN, SMITH_ENV};
use serde_json::Value;
use sqlx::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

pub const POSTGRES_VAR: &str = "SMITH_TEST_POSTGRES_URL";
pub const NATS_VAR: &str = "SMITH_TEST_NATS_URL";
/// A debug build on a busy 2-core machine can take a while to open its pools and subscribe.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The shared servers the environment names.
#[derive(Clone, Debug)]
pub struct Services {
    pub postgres: String,
    pub nats: String,
}

impl Services {
    /// Both URLs, or `None` after saying why the test is skipped.
    pub fn from_env() -> Option<Services> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (get(POSTGRES_VAR), get(NATS_VAR)) {
            (Some(postgres), Some(nats)) => Some(Services { postgres, nats }),
            _ => {
                eprintln!("skipped: {POSTGRES_VAR} / {NATS_VAR} not set");
                None
            }
        }
    }
}

/// `prefix` followed by 16 random hex digits: a name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", fastrand::u64(..))
}

/// `url` naming database `db` instead of its own.
pub fn with_database(url: &str, db: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{POSTGRES_VAR} is not a URL ({e}): {url}"));
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// `url` with `?namespace=NAME`, so tests sharing one NATS server do not hear each other.
pub fn with_namespace(url: &str, namespace: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}namespace={namespace}")
}

/// A database of its own on the server of `SMITH_TEST_POSTGRES_URL`, dropped (with any
/// connection still open to it) when this value is.
pub struct Database {
    pub name: String,
    pub url: String,
    admin: String,
}

impl Database {
    pub async fn create(admin: &str) -> Database {
        let name = unique("smith_t_");
        let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(admin))
            .await
            .unwrap_or_else(|_| panic!("{POSTGRES_VAR}: no connection within 10 s"))
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_VAR}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        Database { url: with_database(admin, &name), name, admin: admin.to_string() }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop cannot await; a thread with its own runtime works inside and outside a runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(15), async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                    let r =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                    let _ = conn.close().await;
                    r.ok()
                })
                .await
                .ok()
                .flatten()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Supervisor,
    Worker,
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
            Role::Gateway => "gateway",
        }
    }
    pub const ALL: [Role; 3] = [Role::Supervisor, Role::Worker, Role::Gateway];
}

/// One test's deployment: its database, its bus and a `smith.toml` its processes share.
pub struct Cluster {
    pub store: String,
    pub bus: String,
    dir: tempfile::TempDir,
    count: std::sync::atomic::AtomicUsize,
    // dropped last: the processes' connections are gone by then or closed by FORCE
    pub db: Database,
}

impl Cluster {
    /// A fresh database and bus namespace; `config` is the text of the processes' `smith.toml`.
    pub async fn new(services: &Services, config: &str) -> Cluster {
        let db = Database::create(&services.postgres).await;
        let bus = with_namespace(&services.nats, &unique("t"));
        Cluster::on(db, bus, config)
    }

    /// A fresh database with the given bus URL (e.g. a private NATS server).
    pub async fn with_bus(services: &Services, bus: &str, config: &str) -> Cluster {
        let db = Database::create(&services.postgres).await;
        Cluster::on(db, bus.to_string(), config)
    }

    fn on(db: Database, bus: String, config: &str) -> Cluster {
        let dir = tempfile::Builder::new().prefix("smith-cluster-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("smith.toml"), config).expect("write smith.toml");
        Cluster { store: db.url.clone(), bus, dir, count: Default::default(), db }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("smith.toml")
    }

    /// Starts a process of `role` and waits until it is serving.
    pub async fn start(&self, role: Role) -> Proc {
        self.start_with(role, &[]).await
    }

    /// Like [`Cluster::start`], with extra flags.
    pub async fn start_with(&self, role: Role, extra: &[&str]) -> Proc {
        let n = self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-{n}", role.as_str());
        let dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&dir).expect("process dir");
        let mut args: Vec<String> = vec![role.as_str().into(), "--store".into(), self.store.clone()];
        args.extend(["--bus".into(), self.bus.clone(), "--config".into(), self.config_path().display().to_string()]);
        match role {
            Role::Worker => args.extend(["--data-dir".into(), dir.join("data").display().to_string()]),
            Role::Gateway => args.extend(["--listen".into(), "127.0.0.1:0".into()]),
            Role::Supervisor => {}
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = Proc { role, name, dir, args, child: None, runs: 0, api: None, node_id: None, run_offset: 0 };
        if let Err(e) = p.launch().await {
            panic!("{} did not start: {e}\n--- stderr ---\n{}", p.name, tail(&p.stderr(), 60));
        }
        p
    }
}

/// One `smith` role process; killed when dropped.
pub struct Proc {
    pub role: Role,
    pub name: String,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    runs: u32,
    api: Option<Api>,
    /// The node id the process logged (workers, and a supervisor once it has led).
    node_id: Option<String>,
    /// Where this run's stderr begins in `stderr.log`.
    run_offset: usize,
}

impl Proc {
    fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    /// Everything the process (all its runs) wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// What the current (or last) run wrote to stderr.
    pub fn run_stderr(&self) -> String {
        let all = self.stderr();
        all.get(self.run_offset..).unwrap_or("").to_string()
    }

    /// The gateway's API (panics for other roles).
    pub fn api(&self) -> Api {
        self.api.clone().unwrap_or_else(|| panic!("{} serves no API", self.name))
    }

    /// The worker's node id, as it logged it.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| panic!("{} logged no node id", self.name))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    async fn launch(&mut self) -> Result<(), String> {
        let n = self.runs;
        self.runs += 1;
        let stdout_path = self.dir.join(format!("stdout-{n}.log"));
        let banner = format!("===== smith {}, run {n} =====", self.role.as_str());
        // this run's stderr starts after the banner line
        self.run_offset = self.stderr().len() + banner.len() + 1;
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args);
        for k in SMITH_ENV {
            cmd.env_remove(k);
        }
        cmd.env_remove("RUST_LOG").current_dir(&self.dir);
        let mut child = spawn_logged(&mut cmd, &stdout_path, &self.stderr_path(), &banner)?;
        let started =
            await_ready(&mut child, &self.name.clone(), START_TIMEOUT, || self.ready(&stdout_path).then_some(())).await;
        self.child = Some(child);
        started
    }

    /// True once this run says it serves; records its address or node id.
    fn ready(&mut self, stdout_path: &Path) -> bool {
        match self.role {
            Role::Gateway => {
                let text = std::fs::read_to_string(stdout_path).unwrap_or_default();
                let Some(line) = text.lines().find(|l| l.starts_with("smith listening on ")) else { return false };
                if !text.contains('\n') {
                    return false;
                }
                let url = line.trim_start_matches("smith listening on ").trim().to_string();
                // a restart serves on the same address, so clients and readers keep their URL
                let addr = url.trim_start_matches("http://").to_string();
                if let Some(i) = self.args.iter().position(|a| a == "--listen") {
                    self.args[i + 1] = addr;
                }
                self.api = Some(Api::new(&url, None));
                true
            }
            Role::Worker => {
                let text = self.run_stderr();
                let Some(line) = text.lines().find(|l| l.contains("smith worker running")) else { return false };
                self.node_id = field(line, "node");
                true
            }
            Role::Supervisor => self.run_stderr().contains("smith supervisor running"),
        }
    }

    /// True when the process logged `id` as its node id in any run (a supervisor logs it
    /// when its leadership changes).
    pub fn logged_node(&self, id: &str) -> bool {
        self.stderr().lines().any(|l| field(l, "node").as_deref() == Some(id))
    }

    /// `kill -9` and reap.
    pub async fn kill9(&mut self) {
        crate::common::kill9(self.child.take(), &self.name).await;
    }

    /// Starts again with the same flags (a gateway on the same address); kills a live run first.
    pub async fn restart(&mut self) {
        self.kill9().await;
        let mut last = String::new();
        // the address a killed gateway held may take a moment to be free again
        for _ in 0..5 {
            match self.launch().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            if let Some(mut c) = self.child.take() {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("{} did not restart: {last}\n--- stderr ---\n{}", self.name, tail(&self.stderr(), 60));
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("{}: send {sig}: {e}", self.name));
    }

    /// Waits for the process to exit; `None` when it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().unwrap_or_else(|| panic!("{} is not running", self.name));
        let status = tokio::time::timeout(timeout, child.wait()).await.ok()?.expect("wait");
        self.child = None;
        Some(status)
    }

    /// `Some(status)` when the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // a frozen process must be thawed to die promptly
            if let Some(pid) = child.id() {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGCONT);
            }
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr ({}) -----\n{}",
                self.name,
                self.stderr_path().display(),
                tail(&self.stderr(), 80)
            );
        }
    }
}

/// `key=value` from a log line (value up to the next space).
fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!(" {key}=");
    let i = line.find(&pat)? + pat.len();
    let v = line[i..].split_whitespace().next()?.trim_matches('"');
    Some(v.to_string())
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How a process that should refuse to start ended.
#[derive(Debug)]
pub struct Exit {
    /// `None`: still running at the deadline (then killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `smith ARGS` in `cwd` until it exits or `timeout` passes.
pub async fn run_to_exit(args: &[String], cwd: &Path, timeout: Duration) -> Exit {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for k in SMITH_ENV {
        cmd.env_remove(k);
    }
    cmd.env("SMITH_LOG", "info").env_remove("RUST_LOG").kill_on_drop(true);
    let started = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.expect("wait");
            Exit {
                status: Some(out.status),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                took: started.elapsed(),
            }
        }
        Err(_) => {
            // kill_on_drop has killed it with the dropped future; make sure
            if let Some(pid) = pid {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
            Exit { status: None, stdout: String::new(), stderr: String::new(), took: started.elapsed() }
        }
    }
}

/// A private `nats-server` on a port of its own, for tests that stop the broker.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let dir = tempfile::Builder::new().prefix("smith-nats-").tempdir().expect("temp dir");
        let mut s = NatsServer { port: free_port(), child: None, dir };
        s.launch().await;
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let bin = std::env::var("NATS_SERVER")
            .ok()
            .or_else(|| Path::new("/usr/sbin/nats-server").exists().then(|| "/usr/sbin/nats-server".to_string()))
            .unwrap_or_else(|| "nats-server".to_string());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("nats log");
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {} within 10 s", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Starts again on the same port.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.launch().await;
    }
}

/// Follows the `system` feed (`/v1/events?kind=system`) from the start, across gateways: when
/// one dies, it resumes by position on another.
#[derive(Clone, Default)]
pub struct SystemLog {
    events: Arc<Mutex<Vec<Value>>>,
}

impl SystemLog {
    /// Starts following; the task ends when `stop` is cancelled.
    pub fn follow(
        gateways: Vec<Api>,
        stop: tokio_util::sync::CancellationToken,
    ) -> (SystemLog, tokio::task::JoinHandle<()>) {
        let log = SystemLog::default();
        let events = log.events.clone();
        let task = tokio::spawn(async move {
            let mut cursor = "0".to_string();
            let mut i = 0;
            while !stop.is_cancelled() {
                let api = &gateways[i % gateways.len()];
                i += 1;
                let Ok(mut s) = api.try_sse("/v1/events?kind=system", Some(&cursor)).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                loop {
                    let next = tokio::select! {
                        n = s.next_within(Duration::from_secs(30)) => n,
                        _ = stop.cancelled() => return,
                    };
                    match next {
                        Next::Frame(f) => {
                            cursor = f.id.clone();
                            events.lock().expect("system log").push(f.json());
                        }
                        Next::Closed | Next::Timeout => break,
                    }
                }
            }
        });
        (log, task)
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("system log").clone()
    }

    /// `(node, at)` of every `leader.elected`, in feed order.
    pub fn elections(&self) -> Vec<(String, Value)> {
        self.events()
            .into_iter()
            .filter(|e| e["data"]["type"] == "leader.elected")
            .map(|e| (e["data"]["node"].as_str().unwrap_or_default().to_string(), e["at"].clone()))
            .collect()
    }

    /// Polls until `pred` holds over the events; `None` after `timeout`.
    pub async fn wait_for<T>(&self, timeout: Duration, pred: impl Fn(&[Value]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = pred(&self.events()) {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers the distributed tests share

pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Polls `f` until it gives `Some`; panics with `what` and the last value after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(t) => return t,
            Err(last) if Instant::now() > deadline => panic!("{what}: not within {timeout:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn id_of(task: &Value) -> String {
    task["id"].as_str().unwrap_or_else(|| panic!("no id: {task}")).to_string()
}

/// Frames as (id, kind, parsed data), to compare what two readers saw.
pub fn semantic(frames: &[Frame]) -> Vec<(String, String, Value)> {
    frames.iter().map(|f| (f.id.clone(), f.event.clone(), f.json())).collect()
}

/// Reads many tasks' whole logs, `readers` at a time, spreading them over `apis`.
pub async fn logs(apis: &[Api], ids: &[String], readers: usize) -> BTreeMap<String, Vec<Frame>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    crate::common::by_id(ids, readers, |id| {
        let api = apis[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % apis.len()].clone();
        async move { api.events(&id, Duration::from_secs(30)).await }
    })
    .await
}

/// The nodes a gateway lists.
pub async fn nodes(api: &Api) -> Vec<Value> {
    let (status, body) = api.get("/v1/nodes").await;
    assert_eq!(status, 200, "GET /v1/nodes: {body}");
    body["items"].as_array().unwrap_or_else(|| panic!("no items: {body}")).clone()
}

/// Waits until `GET /v1/nodes` lists node `id` as `status`.
pub async fn node_becomes(api: &Api, id: &str, status: &str, within: Duration) {
    eventually(&format!("node {id} {status}"), within, || async {
        let n = nodes(api).await.into_iter().find(|n| n["id"] == id).ok_or(format!("{id} not listed"))?;
        if n["status"] == status {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await
}

/// Waits until `api` lists `n` tasks, every one terminal, and returns them.
pub async fn all_terminal(api: &Api, n: usize, within: Duration) -> Vec<Value> {
    eventually(&format!("{n} tasks listed, all terminal"), within, || async {
        let tasks = api.list_all("").await;
        if tasks.len() == n && tasks.iter().all(crate::common::is_terminal) {
            Ok(tasks)
        } else {
            Err(format!("{} listed, {:?}", tasks.len(), crate::common::counts(&tasks)))
        }
    })
    .await
}

/// Waits until task `id` is running on worker `node`.
pub async fn running_on(api: &Api, id: &str, node: &str, within: Duration) {
    eventually(&format!("{id} running on {node}"), within, || async {
        let t = api.get_task(id).await;
        if t["status"] == "running" && t["worker"] == node {
            Ok(())
        } else {
            Err(t.to_string())
        }
    })
    .await
}
