//! The `process` executor: any command as an agent, in its own process group.
//!
//! Input goes on stdin or as the last argument; stdout lines become `output` events (a line is
//! cut into chunks past [`MAX_LINE`], so no output can grow memory without bound); the tail of
//! stderr is kept for the error; the exit code decides the outcome. On cancel or timeout the
//! whole group gets SIGTERM, then SIGKILL after the agent's `kill_grace`; after every run the
//! group is torn down and reaped, so no descendant outlives its task. The agent starts from a
//! cleared environment (see [`agent_env`]) and is killed by the kernel if its worker dies.

use crate::{input_text, Executor, Failure, RunContext, RunResult, Success};
use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde_json::Value;
use smith_core::{InputMode, Usage};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// Longest stdout line sent as one event; longer lines are sent in chunks of this size.
pub const MAX_LINE: usize = 1 << 20;
/// How much of stderr's tail is kept for the error message.
const STDERR_TAIL: usize = 16 * 1024;

/// Main pids of running process agents; tokio reaps those, [`reap_orphans`] the rest.
static MAIN_PIDS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Makes this process the reaper of its agents' orphaned descendants, so a double-forked
/// child is still ours to kill and reap. Call once at start-up.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}

/// Where running agents' process groups are recorded (see [`adopt_run_dir`]).
static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Records every running agent's process group in `dir`, so that a node restarted after a
/// crash kills what its previous incarnation left running (a retry must not run beside the
/// attempt it replaces). Kills such leftovers now; returns how many groups it killed.
pub fn adopt_run_dir(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let boot = boot_id();
    let mut killed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let pgid = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<i32>().ok());
        let record = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = record.split_whitespace();
        let (rec_boot, rec_start) = (fields.next().unwrap_or(""), fields.next().and_then(|s| s.parse::<u64>().ok()));
        if let (Some(pgid), Some(start)) = (pgid, rec_start) {
            if pgid > 1 && rec_boot == boot && group_is_ours(pgid, start) {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                tracing::warn!(pgid, "killed an agent process group left by a previous run");
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let _ = RUN_DIR.set(dir.to_path_buf());
    Ok(killed)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

/// The group is the one recorded: its leader still has the recorded start time, or the leader
/// is gone and every member started after it (a recycled pgid would have younger members only
/// if it were recycled, which cannot happen while the group still has members).
fn group_is_ours(pgid: i32, start: u64) -> bool {
    if let Some(leader) = ProcStat::read(pgid) {
        return leader.pgid == pgid && leader.start == start;
    }
    let members = group_members(pgid);
    !members.is_empty() && members.iter().all(|p| ProcStat::read(*p).is_some_and(|s| s.start >= start))
}

/// Spawns `cmd` and records its pid as ours to wait for, both under the registry's lock: the
/// reaper, which checks a zombie against the registry under that lock, never sees the child
/// unrecorded.
fn spawn_recorded(cmd: &mut Command) -> std::io::Result<(tokio::process::Child, i32)> {
    let mut pids = MAIN_PIDS.lock().expect("pid registry");
    let child = cmd.spawn()?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    pids.get_or_insert_with(HashSet::new).insert(pid);
    Ok((child, pid))
}

/// Records a spawned agent's group in the run dir, for the next start to clean up after a crash.
fn register(pid: i32) {
    if let (Some(dir), Some(stat)) = (RUN_DIR.get(), ProcStat::read(pid)) {
        let _ = std::fs::write(dir.join(pid.to_string()), format!("{} {}\n", boot_id(), stat.start));
    }
}

fn unregister(pid: i32) {
    if let Some(set) = MAIN_PIDS.lock().expect("pid registry").as_mut() {
        set.remove(&pid);
    }
    if let Some(dir) = RUN_DIR.get() {
        let _ = std::fs::remove_file(dir.join(pid.to_string()));
    }
}

/// Runs `cmd` to its end and collects its output, as `Command::output` does, with the child kept
/// from [`reap_orphans`]: it is ours to wait for (a short helper such as `git`, not an agent).
pub async fn output(mut cmd: Command) -> std::io::Result<std::process::Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let (child, pid) = spawn_recorded(&mut cmd)?;
    /// Forgets the child on every way out, a dropped (abandoned) wait included.
    struct Forget(i32);
    impl Drop for Forget {
        fn drop(&mut self) {
            if let Some(set) = MAIN_PIDS.lock().expect("pid registry").as_mut() {
                set.remove(&self.0);
            }
        }
    }
    let _forget = Forget(pid);
    child.wait_with_output().await
}

/// Reaps zombie children that are not the main process of a running agent (orphans
/// re-parented to us as subreaper). Returns how many were reaped.
pub fn reap_orphans() -> usize {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut reaped = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Some(stat) = ProcStat::read(pid) else { continue };
        if stat.ppid != me || stat.state != 'Z' {
            continue;
        }
        let managed = MAIN_PIDS.lock().expect("pid registry").as_ref().is_some_and(|s| s.contains(&pid));
        if managed {
            continue;
        }
        if waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// The fields of `/proc/PID/stat` we need.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    /// Start time in clock ticks since boot.
    pub start: u64,
}

impl ProcStat {
    pub fn read(pid: i32) -> Option<ProcStat> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // the command name is in parentheses and may contain spaces: parse after the last ')'
        let rest = &s[s.rfind(')')? + 2..];
        let mut f = rest.split_ascii_whitespace();
        let state = f.next()?.chars().next()?;
        let ppid = f.next()?.parse().ok()?;
        let pgid = f.next()?.parse().ok()?;
        // fields 6..=21 of stat, then the start time (field 22)
        let start = f.nth(16)?.parse().ok()?;
        Some(ProcStat { state, ppid, pgid, start })
    }
}

/// Pids of live (non-zombie) processes in a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| ProcStat::read(*pid).is_some_and(|s| s.pgid == pgid && s.state != 'Z'))
        .collect()
}

/// Kills the group when dropped, so an attempt abandoned mid-run still leaves nothing behind.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
            unregister(self.pgid);
        }
    }
}

pub struct Process;

/// Replaces `{input}`, `{task_id}`, `{attempt}` and `{agent}` in an argument.
fn expand(arg: &str, input: &str, ctx: &RunContext) -> String {
    arg.replace("{input}", input)
        .replace("{task_id}", &ctx.task.id.to_string())
        .replace("{attempt}", &ctx.task.attempt.to_string())
        .replace("{agent}", &ctx.task.agent)
}

/// The variables of the server's own environment an agent inherits (and every `LC_*`): what a
/// program needs to find its tools, its home, its locale and a scratch directory. Nothing else
/// of the server's reaches an agent — not its token, its store URL or another agent's secrets;
/// an agent needs anything more in its definition's `env`.
pub const INHERITED_ENV: [&str; 11] =
    ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "COLORTERM"];

/// Whether the server's variable `name` is passed on to agents (see [`INHERITED_ENV`]).
pub fn inherited(name: &str) -> bool {
    INHERITED_ENV.contains(&name) || name.starts_with("LC_")
}

/// The agent's environment and working directory, from a cleared environment: the allowlisted
/// variables of the server's ([`INHERITED_ENV`]), then its definition's `env`, then the task's
/// identity (`SMITH_TASK_ID`, `SMITH_ATTEMPT`, `SMITH_AGENT`; [`run_group`] adds `SMITH_RUN`),
/// the attempt's artifact directory (`SMITH_ARTIFACTS`, when it has one) and its trace context
/// (`TRACEPARENT`, when the task has one); and its `cwd` or the worker's work dir.
pub fn agent_env(cmd: &mut Command, ctx: &RunContext) {
    if let Some(dir) = ctx.def.cwd.as_ref().map(PathBuf::from).or_else(|| ctx.workdir.clone()) {
        cmd.current_dir(dir);
    }
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(inherited) {
            cmd.env(name, value);
        }
    }
    cmd.envs(&ctx.def.env)
        .env("SMITH_TASK_ID", ctx.task.id.to_string())
        .env("SMITH_ATTEMPT", ctx.task.attempt.to_string())
        .env("SMITH_AGENT", &ctx.task.agent);
    if let Some(dir) = &ctx.artifacts {
        cmd.env(ARTIFACTS_ENV, dir);
    }
    if let Some(tp) = &ctx.traceparent {
        cmd.env(TRACEPARENT_ENV, tp);
    }
}

/// The trace context an agent's own spans join (W3C `traceparent`; OpenTelemetry SDKs and
/// Claude Code's telemetry read it from the environment).
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";

/// The platform's MCP endpoint, for a `process` agent that collaborates.
pub const MCP_URL_ENV: &str = "SMITH_MCP_URL";
/// The attempt's capability for that endpoint (a bearer token), when the gateway needs one.
pub const MCP_TOKEN_ENV: &str = "SMITH_MCP_TOKEN";

/// The variable naming the directory whose files are kept as the attempt's artifacts.
pub const ARTIFACTS_ENV: &str = "SMITH_ARTIFACTS";

/// Receives a process's stdout, one line (or [`MAX_LINE`] chunk) at a time, without its newline.
#[async_trait]
pub trait LineSink: Send {
    /// Returns false to stop reading (nobody listens any more: the attempt lost its lease).
    async fn line(&mut self, line: &[u8]) -> bool;
}

/// Why a group run ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The cancel token fired (cancel, timeout, budget, drain: the worker knows which).
    Cancelled,
    /// Nothing on stdout for the stall timeout: the process was presumed hung and killed.
    Stalled,
}

/// How a process group's run ended.
#[derive(Debug)]
pub struct GroupExit {
    pub status: std::io::Result<std::process::ExitStatus>,
    pub stopped: Option<Stopped>,
    /// The last [`STDERR_TAIL`] bytes of stderr.
    pub stderr_tail: String,
}

impl GroupExit {
    /// "exit code 3" / "killed by signal 9".
    pub fn how(&self) -> String {
        match &self.status {
            Ok(status) => match (status.code(), std::os::unix::process::ExitStatusExt::signal(status)) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended abnormally".to_string(),
            },
            Err(e) => format!("could not be waited for: {e}"),
        }
    }

    pub fn success(&self) -> bool {
        self.status.as_ref().is_ok_and(|s| s.success())
    }
}

/// Runs `cmd` as the leader of a new process group: feeds `stdin`, hands stdout to `sink`
/// line by line, keeps stderr's tail, and stops on cancel or when stdout stays silent for
/// `stall`. The group is torn down and reaped before this returns, whatever happened. While
/// it runs, the group's memory counts toward `agent`'s (see [`crate::rss`]).
pub async fn run_group(
    agent: &str,
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    cancel: &tokio_util::sync::CancellationToken,
    kill_grace: Duration,
    stall: Option<Duration>,
    sink: &mut dyn LineSink,
) -> std::io::Result<GroupExit> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let marker = new_marker();
    cmd.env(RUN_MARKER, &marker);
    die_with_parent(&mut cmd);
    let (mut child, pid) = spawn_recorded(&mut cmd)?;
    register(pid);
    let mut guard = GroupGuard { pgid: pid, armed: true };
    // unregistered on every way out, a dropped (abandoned) run included
    let _memory = crate::rss::register(pid, agent);

    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        // a child that never reads stdin must not block us: write in the background
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        });
    }
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = child.stderr.take().expect("stderr piped");
    let stderr_task = tokio::spawn(read_tail(stderr));
    let started = tokio::time::Instant::now();
    // milliseconds since `started` of the last stdout read: the stall clock
    let activity = AtomicU64::new(0);

    let (status, stopped) = {
        let reading = read_lines(stdout, sink, &activity, started);
        tokio::pin!(reading);
        let mut read_done = false;
        let mut stopped = None;
        let far = started + Duration::from_secs(365 * 24 * 3600);
        let status = loop {
            let stall_at =
                stall.map(|d| started + Duration::from_millis(activity.load(Ordering::Relaxed)) + d).unwrap_or(far);
            tokio::select! {
                status = child.wait() => break status,
                () = &mut reading, if !read_done => read_done = true,
                () = cancel.cancelled() => {
                    stopped = Some(Stopped::Cancelled);
                    break terminate(pid, &mut child, kill_grace).await;
                }
                _ = tokio::time::sleep_until(stall_at), if stall.is_some() && !read_done => {
                    let quiet = started.elapsed().saturating_sub(Duration::from_millis(activity.load(Ordering::Relaxed)));
                    if stall.is_some_and(|d| quiet >= d) {
                        tracing::warn!(pid, quiet_ms = quiet.as_millis() as u64, "agent process stalled; killing its group");
                        stopped = Some(Stopped::Stalled);
                        break terminate(pid, &mut child, kill_grace).await;
                    }
                }
            }
        };
        // The main process is gone; whatever it left in its group goes too. Only then can
        // stdout reach its end, since a background child may still hold it open.
        teardown_group(pid, &marker, kill_grace).await;
        if !read_done && stopped.is_none() {
            reading.await;
        }
        (status, stopped)
    };
    unregister(pid);
    guard.armed = false;
    reap_orphans();
    let stderr_tail = stderr_task.await.unwrap_or_default();
    Ok(GroupExit { status, stopped, stderr_tail })
}

/// Has the kernel SIGKILL the child when this process dies (a SIGKILLed worker runs no
/// teardown), and refuses to start it if this process is already gone.
///
/// The signal fires when the *thread* that forked exits: `spawn` runs on the executor's task,
/// on one of the runtime's worker threads, which live as long as the process (nothing here
/// uses `block_in_place`, which could hand such a thread to the blocking pool). The rest of
/// the group is killed by [`adopt_run_dir`]'s sweep when the node restarts.
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls
    // (prctl, getppid) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // the parent may have died before the prctl: then no signal would ever come
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// stdout as `output` events, and the first `max_result` bytes as the result.
struct OutputSink<'a> {
    ctx: &'a RunContext,
    max_result: usize,
    result: Vec<u8>,
    truncated: bool,
}

#[async_trait]
impl LineSink for OutputSink<'_> {
    async fn line(&mut self, line: &[u8]) -> bool {
        let room = self.max_result.saturating_sub(self.result.len());
        // the result keeps the newlines between lines
        let sep = usize::from(!self.result.is_empty());
        if line.len() + sep > room {
            self.truncated = true;
        }
        if sep == 1 && room > 0 {
            self.result.push(b'\n');
        }
        let n = room.saturating_sub(sep).min(line.len());
        self.result.extend_from_slice(&line[..n]);
        self.ctx.events.output(String::from_utf8_lossy(line).into_owned()).await
    }
}

#[async_trait]
impl Executor for Process {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let def = ctx.def.clone();
        let Some(program) = def.command.clone() else {
            return Err(Failure::new("misconfigured", "process agent has no command", false));
        };
        let input = input_text(&ctx.task.input);
        let mut cmd = Command::new(&program);
        for a in &def.args {
            cmd.arg(expand(a, &input, &ctx));
        }
        if def.input == InputMode::Arg {
            cmd.arg(&input);
        }
        agent_env(&mut cmd, &ctx);
        if let Some(access) = &ctx.mcp {
            // the platform's agent API over plain HTTP (`POST $SMITH_MCP_URL`, JSON-RPC), as this
            // attempt only: its capability, never the platform's token
            cmd.env(MCP_URL_ENV, &access.url);
            if let Some((_, v)) = access.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                cmd.env(MCP_TOKEN_ENV, v.strip_prefix("Bearer ").unwrap_or(v));
            }
        }
        let stdin = (def.input == InputMode::Stdin).then(|| input.clone().into_bytes());
        let mut sink = OutputSink { ctx: &ctx, max_result: def.max_result_bytes, result: Vec::new(), truncated: false };
        let run = run_group(&ctx.task.agent, cmd, stdin, &ctx.cancel, def.kill_grace, def.stall_timeout, &mut sink);
        let exit = match run.await {
            Ok(exit) => exit,
            Err(e) => return Err(Failure::new("spawn_failed", format!("cannot start {program:?}: {e}"), false)),
        };
        match exit.stopped {
            Some(Stopped::Cancelled) => return Err(Failure::new("cancelled", "stopped", false)),
            Some(Stopped::Stalled) => {
                let quiet = def.stall_timeout.unwrap_or_default();
                return Err(Failure::new(
                    crate::STALLED,
                    format!("{program} wrote nothing for {quiet:?}; killed"),
                    true,
                ));
            }
            None => {}
        }
        if let Err(e) = &exit.status {
            return Err(Failure::new("wait_failed", format!("waiting for {program:?}: {e}"), true));
        }
        if exit.success() {
            let text = Value::String(String::from_utf8_lossy(&sink.result).into_owned());
            let result = if sink.truncated { serde_json::json!({"stdout": text, "truncated": true}) } else { text };
            return Ok(Success { result, usage: Usage::default() });
        }
        let how = exit.how();
        let message = if exit.stderr_tail.trim().is_empty() {
            format!("{program} failed with {how}")
        } else {
            format!("{program} failed with {how}: {}", exit.stderr_tail.trim_end())
        };
        Err(Failure::new("exit_status", message, true))
    }
}

/// SIGTERM the group, wait up to `grace` for the main process, then SIGKILL the group.
async fn terminate(
    pgid: i32,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            child.wait().await
        }
    }
}

/// The environment variable that marks every process of one run, whatever group or session
/// it moved to (Claude Code's Bash tool starts commands in sessions of their own).
pub const RUN_MARKER: &str = "SMITH_RUN";

/// A marker value unique to one run in this boot.
fn new_marker() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Live processes carrying `SMITH_RUN=<marker>` in their environment.
pub fn marked_processes(marker: &str) -> Vec<i32> {
    let needle = format!("{RUN_MARKER}={marker}\0");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
                && ProcStat::read(*pid).is_some_and(|s| s.state != 'Z')
        })
        .collect()
}

/// Everything left of a run: its group, and any process that left the group but carries its marker.
fn leftovers(pgid: i32, marker: &str) -> Vec<i32> {
    let mut pids = group_members(pgid);
    for p in marked_processes(marker) {
        if !pids.contains(&p) {
            pids.push(p);
        }
    }
    pids
}

fn signal_all(pgid: i32, pids: &[i32], sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid), sig);
    for p in pids {
        let _ = nix::sys::signal::kill(Pid::from_raw(*p), sig);
    }
}

/// Ends every process left of the run: SIGTERM, a grace period, SIGKILL; then reaps.
async fn teardown_group(pgid: i32, marker: &str, grace: Duration) {
    let left = leftovers(pgid, marker);
    if left.is_empty() {
        return;
    }
    signal_all(pgid, &left, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        reap_orphans();
        if leftovers(pgid, marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..100 {
        reap_orphans();
        let left = leftovers(pgid, marker);
        if left.is_empty() {
            return;
        }
        signal_all(pgid, &left, Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_tail(stderr: impl AsyncRead + Unpin) -> String {
    let mut reader = BufReader::new(stderr);
    let mut tail: VecDeque<u8> = VecDeque::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        tail.extend(buf.iter().copied());
        let n = buf.len();
        reader.consume(n);
        while tail.len() > STDERR_TAIL {
            tail.pop_front();
        }
    }
    String::from_utf8_lossy(tail.make_contiguous()).into_owned()
}

/// Reads stdout line by line (lines past [`MAX_LINE`] in chunks) into `sink`, marking activity.
async fn read_lines<R: AsyncRead + Unpin + Send>(
    stdout: R,
    sink: &mut dyn LineSink,
    activity: &AtomicU64,
    started: tokio::time::Instant,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) if !b.is_empty() => b,
            _ => break,
        };
        activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let room = MAX_LINE - line.len();
        let (take, complete) = match memchr(&buf[..buf.len().min(room)]) {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if complete || line.len() >= MAX_LINE {
            if !sink.line(trim_newline(&line)).await {
                return;
            }
            line.clear();
        }
    }
    if !line.is_empty() {
        sink.line(trim_newline(&line)).await;
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n')
}
