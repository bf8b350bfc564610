//! One attempt of one task: runs the executor, batches its events into the store, enforces
//! the timeout, the budget and the output caps, and records the outcome — all writes fenced by
//! the attempt number, and retried through transient store errors until the lease is over.

use crate::breaker::Transition;
use crate::{metrics, OutputLimits, Running, Shared, StopReason};
use smith_agents::{Emitter, RunContext, RunResult, SessionContext, Turn};
use smith_core::{
    AgentDef, BreakerState, EventDraft, EventKind, ExecutorKind, Micros, Outcome, Task, TaskError, TaskId, TaskStatus,
    Usage,
};
use smith_store::{Claimed, Error as StoreError, TaskQuery};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events buffered per attempt before the executor waits.
const EVENT_BUFFER: usize = 1024;
/// Most events written in one append.
const MAX_APPEND: usize = 256;
/// After a stop, how long an executor gets beyond its kill grace before it is abandoned.
const STOP_SLACK: Duration = Duration::from_secs(5);
/// The first and the longest wait between two tries of a write the store failed transiently.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a capability outlives its attempt's timeout (the kill grace and clock skew between
/// nodes fit in it); the gateway refuses it anyway once the attempt is no longer running.
const CAPABILITY_SLACK: Duration = Duration::from_secs(60);

/// The capability an attempt's agent gets for the platform's MCP tools: this task at this
/// attempt in its tenant, expiring a little after the attempt's timeout (the longest timeout a
/// task may have when it has none).
fn capability(task: &Task, def: &AgentDef) -> smith_core::Capability {
    let lifetime = Duration::from_millis(task.timeout_ms.unwrap_or(smith_core::task::MAX_TIMEOUT_MS))
        + def.kill_grace
        + CAPABILITY_SLACK;
    smith_core::Capability {
        task: task.id,
        attempt: task.attempt,
        tenant: task.tenant.clone(),
        expires: Micros(Micros::now().0.saturating_add(lifetime.as_micros() as i64)),
    }
}

/// Records a claimed attempt as running (so the lease keeper renews it from now on).
pub(crate) fn register(shared: &Shared, claimed: &Claimed) {
    let task = &claimed.task;
    shared.running.lock().expect("running lock").insert(
        task.id,
        Running {
            attempt: task.attempt,
            agent: task.agent.clone(),
            cancel: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
        },
    );
    metrics::dispatched(&task.agent, claimed.event.at.since(task.created_at));
}

/// Runs a registered attempt to its end, in the slot that took it.
pub(crate) async fn run_claimed(s: &Arc<Shared>, claimed: Claimed) {
    let task = claimed.task;
    let (id, attempt) = (task.id, task.attempt);
    let handles = s
        .running
        .lock()
        .expect("running lock")
        .get(&id)
        .filter(|r| r.attempt == attempt)
        .map(|r| (r.cancel.clone(), r.reason.clone()));
    let Some((cancel, reason)) = handles else { return };
    let _done = Forget(s, id, attempt);
    smith_bus::publish_events(s.bus.as_ref(), std::slice::from_ref(&claimed.event)).await;
    let started = tokio::time::Instant::now();
    run(s, task, cancel, reason).await;
    s.record_finished(started.elapsed());
}

/// Drops an attempt's running record and wakes whoever waits for capacity. Only this
/// attempt's: the task may already be claimed again (a retry) and registered for its next one.
pub(crate) fn forget(s: &Shared, id: TaskId, attempt: u32) {
    {
        let mut running = s.running.lock().expect("running lock");
        if running.get(&id).is_some_and(|r| r.attempt == attempt) {
            running.remove(&id);
        }
    }
    s.freed.notify_waiters();
    s.wake.notify_one();
}

/// Forgets the attempt however its run ends.
struct Forget<'a>(&'a Shared, TaskId, u32);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        forget(self.0, self.1, self.2);
    }
}

async fn run(
    s: &Arc<Shared>,
    task: smith_core::Task,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
) {
    let id = task.id;
    let attempt = task.attempt;
    let agent = task.agent.clone();
    let tenant = task.tenant.clone();
    let (Some(def), Some(executor)) = (s.defs.get(&agent).cloned(), s.executors.get(&agent).cloned()) else {
        // claimed only for agents we run, so this is a bug: hand it back rather than lose it
        tracing::error!(task_id = %id, agent, "claimed a task for an agent this worker does not run");
        let _ = s.store.release(&s.opts.node_id, &[(id, attempt)], "agent not run by this worker").await;
        return;
    };
    let timeout = task.timeout_ms.map(Duration::from_millis);
    let started = tokio::time::Instant::now();
    tracing::debug!(task_id = %id, attempt, agent, "attempt started");
    let budget = task.budget.tighter(def.budget);

    let (tx, mut rx) = mpsc::channel::<EventDraft>(EVENT_BUFFER);
    let mut ctx = RunContext::new(task, def.clone(), Emitter::new(tx), cancel.clone());
    if ctx.task.session_id.is_some() {
        ctx.session = session_context(s, &ctx.task).await;
    }
    if def.executor.is_llm() && def.collaborate {
        ctx.mcp = s.opts.mcp_url.as_ref().map(|url| {
            let mut headers = vec![(smith_agents::TASK_HEADER.to_string(), id.to_string())];
            if let Some(key) = &s.opts.capability_key {
                let cap = capability(&ctx.task, &def);
                headers.push(("authorization".to_string(), format!("Bearer {}", key.mint(&cap))));
            }
            smith_agents::McpAccess { url: url.clone(), headers }
        });
    }
    // an agent never runs outside its own work dir: without it the attempt fails instead
    let (task_dir, unavailable) = match work_dir(s, &def, &ctx.task) {
        Ok(dir) => (dir, None),
        Err(f) => (None, Some(f)),
    };
    ctx.workdir = task_dir.as_ref().map(|(dir, _)| dir.clone());
    let mut exec = tokio::spawn(async move {
        match unavailable {
            Some(f) => Err(f),
            None => executor.run(ctx).await,
        }
    });

    let stop = |r: StopReason| {
        let mut g = reason.lock().expect("reason lock");
        if g.is_none() {
            *g = Some(r);
        }
        drop(g);
        cancel.cancel();
    };
    let deadline = timeout.map(|t| started + t);
    let mut buf: Vec<EventDraft> = Vec::new();
    let mut linger: Option<tokio::time::Instant> = None;
    let mut abandon_at: Option<tokio::time::Instant> = None;
    let mut timed_out = false;
    let mut closed = false;
    // the latest cumulative usage the executor reported, checked against the budget
    let mut reported = Usage::default();
    let mut over_budget: Option<String> = None;
    let mut output = Output::new(s.opts.output);
    let writes = Writes { s, id, attempt, reason: &reason, started };
    let result: Option<RunResult> = loop {
        let far = started + Duration::from_secs(365 * 24 * 3600);
        tokio::select! {
            biased;
            joined = &mut exec => {
                break match joined {
                    Ok(r) => Some(r),
                    Err(e) if e.is_panic() => Some(Err(smith_agents::Failure::new("executor_panicked", format!("the executor panicked: {e}"), true))),
                    Err(_) => None,
                };
            }
            n = rx.recv_many(&mut buf, MAX_APPEND), if !closed && buf.len() < MAX_APPEND => {
                closed = n == 0;
                if n > 0 {
                    for ev in buf[buf.len() - n..].iter().filter(|e| e.kind == EventKind::Usage) {
                        if let Ok(u) = serde_json::from_value::<Usage>(ev.data.clone()) {
                            reported = u;
                        }
                    }
                    if over_budget.is_none() {
                        if let Some(why) = budget.exceeded_by(&reported) {
                            tracing::info!(task_id = %id, attempt, %why, "attempt over budget");
                            over_budget = Some(why);
                            stop(StopReason::BudgetExceeded);
                        }
                    }
                    let from = buf.len() - n;
                    if output.admit(&mut buf, from) {
                        tracing::info!(task_id = %id, attempt, why = output.over.as_deref().unwrap_or(""), "attempt over its output cap");
                        stop(StopReason::OutputLimit);
                    }
                }
                if n > 0 && linger.is_none() {
                    linger = Some(tokio::time::Instant::now() + s.opts.linger);
                }
                if buf.len() >= MAX_APPEND && !flush(&writes, &mut buf, &stop).await {
                    linger = None;
                }
                if buf.is_empty() { linger = None; }
            }
            _ = tokio::time::sleep_until(linger.unwrap_or(far)), if linger.is_some() => {
                linger = None;
                flush(&writes, &mut buf, &stop).await;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !timed_out && abandon_at.is_none() => {
                // once: the stop below is seen by the cancel branch, which this biased select
                // would otherwise never reach while the deadline stays past
                timed_out = true;
                tracing::info!(task_id = %id, attempt, "attempt timed out");
                stop(StopReason::TimedOut);
            }
            _ = cancel.cancelled(), if abandon_at.is_none() => {
                abandon_at = Some(tokio::time::Instant::now() + def.kill_grace + STOP_SLACK);
            }
            _ = tokio::time::sleep_until(abandon_at.unwrap_or(far)), if abandon_at.is_some() => {
                tracing::error!(task_id = %id, attempt, "executor ignored its stop; abandoning it");
                exec.abort();
                break None;
            }
        }
    };
    // Everything the executor emitted before returning is in the channel now.
    let from = buf.len();
    while let Ok(ev) = rx.try_recv() {
        buf.push(ev);
    }
    let mut over_output = output.admit(&mut buf, from);
    for ev in buf.iter().filter(|e| e.kind == EventKind::Usage) {
        if let Ok(u) = serde_json::from_value::<Usage>(ev.data.clone()) {
            reported = u;
        }
    }
    let returned = match &result {
        Some(Ok(s)) => s.usage,
        Some(Err(f)) => f.usage,
        None => Usage::default(),
    };
    // An executor that finished before its last usage report was checked is still held to its budget.
    if over_budget.is_none() && reason.lock().expect("reason lock").is_none() {
        if let Some(why) = budget.exceeded_by(&reported).or_else(|| budget.exceeded_by(&returned)) {
            over_budget = Some(why);
            stop(StopReason::BudgetExceeded);
        }
    }
    if let Some(Ok(success)) = &result {
        over_output |= output.admit_result(&success.result);
    }
    if over_output && reason.lock().expect("reason lock").is_none() {
        tracing::info!(task_id = %id, attempt, why = output.over.as_deref().unwrap_or(""), "attempt over its output cap");
        stop(StopReason::OutputLimit);
    }
    let why = *reason.lock().expect("reason lock");
    // a stopped executor may return before it could total its usage: keep what it reported
    let usage = if returned.is_zero() { reported } else { returned };
    metrics::usage(&agent, &tenant, &usage);
    let outage = matches!(&result, Some(Err(f)) if f.is_provider_outage()) && why.is_none();
    let breaker_open = record_breaker(s, &agent, outage, why).await;
    let release = |why: &'static str| async move {
        match s.store.release(&s.opts.node_id, &[(id, attempt)], why).await {
            Ok(changes) => {
                for c in changes {
                    smith_bus::publish_events(s.bus.as_ref(), &c.events).await;
                }
            }
            Err(e) => tracing::warn!(task_id = %id, error = %e, "release failed; the lease will expire"),
        }
    };
    let outcome = match (why, result) {
        (Some(StopReason::Lost), _) => {
            metrics::finished(&agent, "lost", started.elapsed());
            return;
        }
        (Some(StopReason::Released), _) => {
            if !buf.is_empty() {
                flush(&writes, &mut buf, &|_| {}).await;
            }
            release("worker draining").await;
            metrics::finished(&agent, "released", started.elapsed());
            return;
        }
        (None, Some(Err(f))) if outage && breaker_open => {
            // The provider is down: the task waits queued for it instead of spending an attempt.
            if !buf.is_empty() {
                flush(&writes, &mut buf, &|_| {}).await;
            }
            tracing::info!(task_id = %id, agent, error = %f.error.message, "provider down; task handed back to the queue");
            release("circuit breaker open: the provider keeps failing").await;
            metrics::finished(&agent, "released", started.elapsed());
            return;
        }
        (Some(StopReason::BudgetExceeded), _) => Outcome::Failed {
            error: TaskError::new("budget_exceeded", over_budget.unwrap_or_else(|| "over budget".into())),
            retryable: false,
            usage,
        },
        (Some(StopReason::OutputLimit), _) => Outcome::Failed {
            error: TaskError::new(
                OUTPUT_LIMIT_EXCEEDED,
                output.over.take().unwrap_or_else(|| "over the task's output cap".into()),
            ),
            retryable: false,
            usage,
        },
        (Some(StopReason::Cancelled), _) => Outcome::Cancelled { usage },
        (Some(StopReason::TimedOut), _) => Outcome::TimedOut { usage },
        (None, Some(Ok(success))) => Outcome::Succeeded { result: success.result, usage },
        (None, Some(Err(f))) => Outcome::Failed { error: f.error, retryable: f.retryable, usage },
        (None, None) => Outcome::Failed {
            error: TaskError::new("executor_lost", "the executor stopped without a result"),
            retryable: true,
            usage,
        },
    };
    let label = outcome.label();
    // A successful outcome dropped on a transient error would have the task run again (its
    // side effects and spend repeated): the completion is retried until the lease is over.
    let completed = writes.retry("complete", || s.store.complete(id, attempt, buf.clone(), outcome.clone())).await;
    match completed {
        Ok(change) => {
            smith_bus::publish_events(s.bus.as_ref(), &change.events).await;
            metrics::finished(&agent, label, started.elapsed());
            metrics::dead_letter(&change.task);
            if let Some((dir, true)) = &task_dir {
                if change.task.status.is_terminal() {
                    let _ = tokio::fs::remove_dir_all(dir).await;
                }
            }
            tracing::debug!(task_id = %id, attempt, outcome = label, status = %change.task.status, "attempt finished");
        }
        Err(StoreError::Fenced(_)) => {
            metrics::lease_lost();
            tracing::warn!(task_id = %id, attempt, "completion fenced: a newer attempt owns the task");
        }
        Err(e) => {
            // the lease is over (or the error is not one a retry mends): the reaper requeues
            // the task; never guess an outcome
            tracing::error!(task_id = %id, attempt, error = %e, "cannot record the outcome");
        }
    }
}

/// The finished turns of the task's session before this one, oldest first.
async fn session_context(s: &Shared, task: &Task) -> Option<SessionContext> {
    let session = task.session_id.clone()?;
    let query = TaskQuery { session_id: Some(session.clone()), limit: 1000, ..Default::default() };
    let page = match s.store.list_tasks(&query).await {
        Ok(p) => p,
        Err(e) => {
            // without its history the turn would answer out of context: better to run it later
            tracing::warn!(task_id = %task.id, error = %e, "cannot read the session's turns");
            return Some(SessionContext { id: session, turns: Vec::new() });
        }
    };
    let mut turns: Vec<Turn> = page
        .items
        .into_iter()
        .filter(|t| t.id < task.id && t.tenant == task.tenant && t.status == TaskStatus::Succeeded)
        .filter_map(|t| Some(Turn { input: t.input, result: t.result? }))
        .collect();
    turns.reverse();
    Some(SessionContext { id: session, turns })
}

/// Where a Claude Code agent without a `cwd` works, and whether the dir is the task's own
/// (removed when the task ends) rather than its session's (kept for the next turn). A dir
/// that cannot be made fails the attempt (`workdir_unavailable`; retryable unless the cause
/// is permanent): the agent must not run in the server's own working directory instead.
fn work_dir(s: &Shared, def: &AgentDef, task: &Task) -> Result<Option<(PathBuf, bool)>, smith_agents::Failure> {
    if def.cwd.is_some() || def.executor != ExecutorKind::ClaudeCode {
        return Ok(None);
    }
    let Some(root) = s.opts.work_dir.as_ref() else { return Ok(None) };
    let (dir, own) = match &task.session_id {
        // one path component whatever the id (ids from before validation may hold anything)
        Some(sid) => (root.join("sessions").join(safe_name(sid)), false),
        None => (root.join("tasks").join(task.id.to_string()), true),
    };
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Ok(Some((dir, own))),
        Err(e) => {
            tracing::warn!(task_id = %task.id, dir = %dir.display(), error = %e, "cannot create the agent's work dir");
            /// Linux's ENAMETOOLONG (`ErrorKind::InvalidFilename` is newer than our rust-version).
            const NAME_TOO_LONG: i32 = 36;
            use std::io::ErrorKind as K;
            let permanent = matches!(
                e.kind(),
                K::PermissionDenied | K::NotADirectory | K::ReadOnlyFilesystem | K::AlreadyExists | K::InvalidInput
            ) || e.raw_os_error() == Some(NAME_TOO_LONG);
            let message = format!("cannot create the agent's work dir {}: {e}", dir.display());
            Err(smith_agents::Failure::new("workdir_unavailable", message, !permanent))
        }
    }
}

/// A session id as one path component: safe bytes kept (a `.` but the first), everything
/// else hex-escaped; a valid id (at most 128 bytes) fits a file name.
fn safe_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Feeds the attempt's outcome to its agent's breaker; returns whether the breaker is open
/// now. An opening or closing is a fleet event.
async fn record_breaker(s: &Shared, agent: &str, outage: bool, why: Option<StopReason>) -> bool {
    let (transition, state) = {
        let mut breakers = s.breakers.lock().expect("breakers lock");
        let Some(b) = breakers.get_mut(agent) else { return false };
        let t = match why {
            // stopped from outside: says nothing about the provider
            Some(StopReason::Lost | StopReason::Released | StopReason::Cancelled) => {
                b.abandon_trial();
                Transition::None
            }
            _ => b.record(outage, tokio::time::Instant::now()),
        };
        (t, b.state())
    };
    metrics::breaker(agent, state);
    let what = match transition {
        Transition::None => return state == BreakerState::Open,
        Transition::Opened => "breaker.opened",
        Transition::Closed => "breaker.closed",
    };
    tracing::warn!(agent, what, "circuit breaker changed");
    let data = serde_json::json!({"type": what, "agent": agent, "worker": s.opts.node_id, "state": state.as_str()});
    match s.store.append_system(data).await {
        Ok(ev) => smith_bus::publish_events(s.bus.as_ref(), std::slice::from_ref(&ev)).await,
        Err(e) => tracing::warn!(error = %e, "cannot record the breaker change"),
    }
    state == BreakerState::Open
}

/// Writes buffered events, retrying transient store errors; on a fence or once the lease is
/// over, stops the attempt (its lease is gone).
async fn flush(w: &Writes<'_>, buf: &mut Vec<EventDraft>, stop: &(dyn Fn(StopReason) + Sync)) -> bool {
    if buf.is_empty() {
        return true;
    }
    let batch = std::mem::take(buf);
    let (s, id, attempt) = (w.s, w.id, w.attempt);
    match w.retry("append", || s.store.append(id, attempt, batch.clone())).await {
        Ok(events) => {
            smith_bus::publish_events(s.bus.as_ref(), &events).await;
            true
        }
        Err(StoreError::Fenced(_)) => {
            tracing::warn!(task_id = %id, attempt, "append fenced: stopping the attempt");
            stop(StopReason::Lost);
            false
        }
        Err(e) => {
            tracing::warn!(task_id = %id, attempt, error = %e, "append failed; stopping the attempt");
            stop(StopReason::Lost);
            false
        }
    }
}

/// The error code of an attempt stopped by its output caps.
pub(crate) const OUTPUT_LIMIT_EXCEEDED: &str = "output_limit_exceeded";

/// What an attempt has written so far, against its caps.
struct Output {
    limits: OutputLimits,
    bytes: u64,
    events: u64,
    /// Which cap was crossed, with the numbers; set once.
    over: Option<String>,
}

impl Output {
    fn new(limits: OutputLimits) -> Self {
        Output { limits, bytes: 0, events: 0, over: None }
    }

    /// Counts the events at `buf[from..]`; the first that does not fit and every later one
    /// are dropped. Returns whether this call crossed a cap.
    fn admit(&mut self, buf: &mut Vec<EventDraft>, from: usize) -> bool {
        if self.over.is_some() {
            buf.truncate(from);
            return false;
        }
        let mut cut = None;
        for (i, ev) in buf.iter().enumerate().skip(from) {
            let size = smith_store::json_len(&ev.data);
            if self.events + 1 > self.limits.events {
                self.over = Some(format!(
                    "the task emitted more than {} events, its cap ([limits] task_events)",
                    self.limits.events
                ));
            } else if self.bytes + size > self.limits.bytes {
                self.over = Some(format!(
                    "the task wrote {} bytes and its next event has {size}: over its cap of {} bytes ([limits] task_output_bytes)",
                    self.bytes, self.limits.bytes
                ));
            }
            if self.over.is_some() {
                cut = Some(i);
                break;
            }
            self.events += 1;
            self.bytes += size;
        }
        let Some(i) = cut else { return false };
        buf.truncate(i);
        true
    }

    /// Counts a successful result; returns whether it crossed the bytes cap.
    fn admit_result(&mut self, result: &serde_json::Value) -> bool {
        if self.over.is_some() {
            return false;
        }
        let size = smith_store::json_len(result);
        if self.bytes + size <= self.limits.bytes {
            self.bytes += size;
            return false;
        }
        self.over = Some(format!(
            "the task wrote {} bytes and its result has {size}: over its cap of {} bytes ([limits] task_output_bytes)",
            self.bytes, self.limits.bytes
        ));
        true
    }
}

/// The writes of one attempt: each is retried through transient store errors (with jittered,
/// capped backoff) until it succeeds, is fenced, or the attempt's lease is over.
struct Writes<'a> {
    s: &'a Shared,
    id: TaskId,
    attempt: u32,
    reason: &'a Mutex<Option<StopReason>>,
    started: tokio::time::Instant,
}

impl Writes<'_> {
    async fn retry<T, F, Fut>(&self, op: &'static str, mut write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut wait = RETRY_FIRST;
        let mut first_failure = None;
        loop {
            let e = match write().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // an error that keeps coming back while the lease is renewed is given one lease
            // period, then the task is handed back like an orphan
            let since = *first_failure.get_or_insert_with(tokio::time::Instant::now);
            if !matches!(e, StoreError::Unavailable(_) | StoreError::Backend(_)) {
                return Err(e);
            }
            if *self.reason.lock().expect("reason lock") == Some(StopReason::Lost) {
                return Err(e);
            }
            // Every lease ends `lease` after the later of its claim and its last renewal; past
            // that the reaper may have handed the task to another attempt.
            let renewed = *self.s.renewed_at.lock().expect("renewed lock");
            let lease_end = (renewed.max(self.started) + self.s.opts.lease).min(since + self.s.opts.lease);
            let jittered = wait.mul_f64(0.5 + fastrand::f64() / 2.0);
            if tokio::time::Instant::now() + jittered >= lease_end {
                return Err(e);
            }
            metrics::write_retried(op);
            tracing::warn!(task_id = %self.id, attempt = self.attempt, op, error = %e, "store write failed; retrying");
            tokio::time::sleep(jittered).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}
