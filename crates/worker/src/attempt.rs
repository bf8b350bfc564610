//! One attempt of one task: runs the executor, batches its events into the store, enforces
//! the timeout, the budget and the output caps, and records the outcome — all writes fenced by
//! the attempt number, and retried through transient store errors until the lease is over.

use crate::breaker::Transition;
use crate::writes::Writes;
use crate::{artifacts, metrics, OutputLimits, Running, Shared, StopReason};
use smith_agents::{Emitter, RunContext, RunResult, SessionContext, Turn};
use smith_core::trace::{Kind, Span};
use smith_core::{
    AgentDef, BreakerState, EventDraft, EventKind, ExecutorKind, Micros, Outcome, Task, TaskError, TaskId, TaskStatus,
    Usage,
};
use smith_store::{Claimed, Error as StoreError, TaskQuery};
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

/// Records a claimed attempt as running (so the lease keeper renews it from now on), and, when
/// this process traces (`claim_started`: when the claim was asked), the task's time queued and
/// its claim.
pub(crate) fn register(shared: &Shared, claimed: &Claimed, claim_started: Option<Micros>) {
    let task = &claimed.task;
    shared.running.lock().expect("running lock").insert(
        task.id,
        Running {
            attempt: task.attempt,
            agent: task.agent.clone(),
            cancel: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            settled: Arc::default(),
        },
    );
    metrics::dispatched(&task.agent, claimed.event.at.since(task.created_at));
    if let Some(asked) = claim_started {
        trace_claim(task, claimed.event.at, asked, &shared.opts.node_id);
    }
}

/// The spans of a claim, recorded once it returned: the task's time queued (a first attempt's,
/// from its submission; a scheduled task's includes its wait) and the claim's store call.
fn trace_claim(task: &Task, started: Micros, asked: Micros, worker: &str) {
    let parent = task.traceparent.as_deref();
    if task.attempt == 1 {
        let mut queued = Span::started_at("task.queued", Kind::Internal, parent, task.created_at);
        queued.attr("smith.task.id", task.id.to_string());
        queued.attr("smith.agent", task.agent.clone());
        queued.end_at(started);
    }
    let mut claim = Span::started_at("store.claim", Kind::Client, parent, asked);
    claim.attr("smith.task.id", task.id.to_string());
    claim.attr("smith.worker", worker.to_string());
    claim.end_at(Micros::now());
}

/// Runs a registered attempt to its end, in the slot that took it.
pub(crate) async fn run_claimed(s: &Arc<Shared>, claimed: Claimed) {
    let task = claimed.task;
    let (id, attempt) = (task.id, task.attempt);
    let handle = s.running.lock().expect("running lock").get(&id).filter(|r| r.attempt == attempt).cloned();
    let Some(running) = handle else { return };
    let _done = Forget(s, id, attempt);
    smith_bus::publish_events(s.bus.as_ref(), std::slice::from_ref(&claimed.event)).await;
    let started = tokio::time::Instant::now();
    run(s, task, running, claimed.event.seq).await;
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

/// How an attempt ends, decided by [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ending {
    /// The lease is gone (another attempt may own the task): write nothing.
    Abandon,
    /// Hand the task back to the queue without spending an attempt, after its last events.
    Release(&'static str),
    /// Record this outcome, after its last events.
    Complete(Outcome),
    /// The task waits for a person: write nothing, its next attempt resumes.
    Parked,
    /// The provider account's usage limit: park the task until it resets (reason, until),
    /// after its last events; its next attempt resumes.
    Limited(String, Micros),
}

/// What an attempt knows once its executor is done: why it was stopped (if it was), what the
/// executor returned (`None`: it was abandoned or its task vanished), the usage to record, which
/// caps it crossed, and whether the provider is down with the agent's breaker open.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    pub why: Option<StopReason>,
    pub result: Option<RunResult>,
    pub usage: Usage,
    pub over_budget: Option<String>,
    pub over_output: Option<String>,
    pub provider_down: bool,
}

/// The one place an attempt's end is decided: pure, so every combination is unit-tested.
pub(crate) fn decide(s: Settled) -> Ending {
    let usage = s.usage;
    let failed = |code: &str, why: Option<String>, default: &str| Outcome::Failed {
        error: TaskError::new(code, why.unwrap_or_else(|| default.into())),
        retryable: false,
        usage,
    };
    Ending::Complete(match (s.why, s.result) {
        (Some(StopReason::Lost), _) => return Ending::Abandon,
        (Some(StopReason::Parked), _) => return Ending::Parked,
        (Some(StopReason::Released), _) => return Ending::Release("worker draining"),
        (None, Some(Err(f))) if f.limited_until.is_some() => {
            return Ending::Limited(f.error.message, f.limited_until.unwrap_or_default())
        }
        (None, Some(Err(_))) if s.provider_down => {
            return Ending::Release("circuit breaker open: the provider keeps failing")
        }
        (Some(StopReason::BudgetExceeded), _) => failed("budget_exceeded", s.over_budget, "over budget"),
        (Some(StopReason::OutputLimit), _) => {
            failed(OUTPUT_LIMIT_EXCEEDED, s.over_output, "over the task's output cap")
        }
        (Some(StopReason::Cancelled), _) => Outcome::Cancelled { usage },
        (Some(StopReason::TimedOut), _) => Outcome::TimedOut { usage },
        (None, Some(Ok(success))) => Outcome::Succeeded { result: success.result, usage },
        (None, Some(Err(f))) => Outcome::Failed { error: f.error, retryable: f.retryable, usage },
        (None, None) => Outcome::Failed {
            error: TaskError::new("executor_lost", "the executor stopped without a result"),
            retryable: true,
            usage,
        },
    })
}

/// The usage to record: what the executor returned, or — when a stopped executor returned
/// before it could total its usage — the last it reported.
fn settled_usage(reported: Usage, result: &Option<RunResult>) -> Usage {
    let returned = returned_usage(result);
    if returned.is_zero() {
        reported
    } else {
        returned
    }
}

/// The usage the executor returned with its result (none when it returned none).
fn returned_usage(result: &Option<RunResult>) -> Usage {
    match result {
        Some(Ok(s)) => s.usage,
        Some(Err(f)) => f.usage,
        None => Usage::default(),
    }
}

/// The latest cumulative usage among `events`' usage reports.
fn last_usage(events: &[EventDraft]) -> Option<Usage> {
    events
        .iter()
        .rev()
        .filter(|e| e.kind == EventKind::Usage)
        .find_map(|e| serde_json::from_value::<Usage>(e.data.clone()).ok())
}

/// Sleeps until `at`; never wakes when there is no `at`.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One attempt while its executor runs: what it has gathered so far. The loop in
/// [`Attempt::gather`] only collects inputs (events, the deadline, stops); what they mean for
/// the attempt's end is [`decide`]'s.
struct Attempt<'a> {
    writes: Writes<'a>,
    budget: smith_core::Budget,
    output: Output,
    buf: Vec<EventDraft>,
    /// The latest cumulative usage the executor reported, checked against the budget.
    reported: Usage,
    over_budget: Option<String>,
}

impl Attempt<'_> {
    /// Takes events the executor emitted (`buf[from..]`): checks the budget and the caps.
    fn take_events(&mut self, from: usize) {
        let (id, attempt) = (self.writes.id, self.writes.attempt);
        if let Some(u) = last_usage(&self.buf[from..]) {
            self.reported = u;
        }
        if self.over_budget.is_none() {
            if let Some(why) = self.budget.exceeded_by(&self.reported) {
                tracing::info!(task_id = %id, attempt, %why, "attempt over budget");
                self.over_budget = Some(why);
                self.writes.running.stop(StopReason::BudgetExceeded);
            }
        }
        if self.output.admit(&mut self.buf, from) {
            tracing::info!(task_id = %id, attempt, why = self.output.over.as_deref().unwrap_or(""), "attempt over its output cap");
            self.writes.running.stop(StopReason::OutputLimit);
        }
    }

    /// Runs until the executor returns (or is abandoned after ignoring its stop), writing its
    /// events in batches as they come; returns what it returned.
    async fn gather(
        &mut self,
        exec: &mut tokio::task::JoinHandle<RunResult>,
        rx: &mut mpsc::Receiver<EventDraft>,
        deadline: Option<tokio::time::Instant>,
        kill_grace: Duration,
    ) -> Option<RunResult> {
        let (id, attempt) = (self.writes.id, self.writes.attempt);
        let linger_for = self.writes.s.opts.linger;
        let mut linger: Option<tokio::time::Instant> = None;
        let mut abandon_at: Option<tokio::time::Instant> = None;
        let mut timed_out = false;
        let mut closed = false;
        loop {
            tokio::select! {
                biased;
                joined = &mut *exec => {
                    return match joined {
                        Ok(r) => Some(r),
                        Err(e) if e.is_panic() => Some(Err(smith_agents::Failure::new("executor_panicked", format!("the executor panicked: {e}"), true))),
                        Err(_) => None,
                    };
                }
                n = rx.recv_many(&mut self.buf, MAX_APPEND), if !closed && self.buf.len() < MAX_APPEND => {
                    closed = n == 0;
                    if n > 0 {
                        let from = self.buf.len() - n;
                        self.take_events(from);
                        linger = linger.or(Some(tokio::time::Instant::now() + linger_for));
                    }
                    if self.buf.len() >= MAX_APPEND && !flush(&self.writes, &mut self.buf, self.writes.running).await {
                        linger = None;
                    }
                    if self.buf.is_empty() { linger = None; }
                }
                _ = until(linger), if linger.is_some() => {
                    linger = None;
                    flush(&self.writes, &mut self.buf, self.writes.running).await;
                }
                _ = until(deadline), if deadline.is_some() && !timed_out && abandon_at.is_none() => {
                    // once: the stop below is seen by the cancel branch, which this biased select
                    // would otherwise never reach while the deadline stays past
                    timed_out = true;
                    tracing::info!(task_id = %id, attempt, "attempt timed out");
                    self.writes.running.stop(StopReason::TimedOut);
                }
                _ = self.writes.running.cancel.cancelled(), if abandon_at.is_none() => {
                    abandon_at = Some(tokio::time::Instant::now() + kill_grace + STOP_SLACK);
                }
                _ = until(abandon_at), if abandon_at.is_some() => {
                    tracing::error!(task_id = %id, attempt, "executor ignored its stop; abandoning it");
                    exec.abort();
                    return None;
                }
            }
        }
    }

    /// After the executor returned: takes what it emitted last and holds it to its budget and
    /// caps (an executor that finished before its last report was checked is still held to them).
    fn settle(&mut self, rx: &mut mpsc::Receiver<EventDraft>, result: Option<RunResult>) -> Settled {
        let from = self.buf.len();
        while let Ok(ev) = rx.try_recv() {
            self.buf.push(ev);
        }
        let mut over_output = self.output.admit(&mut self.buf, from);
        if let Some(u) = last_usage(&self.buf) {
            self.reported = u;
        }
        let usage = settled_usage(self.reported, &result);
        if self.over_budget.is_none() && self.writes.running.reason().is_none() {
            let returned = returned_usage(&result);
            if let Some(why) = self.budget.exceeded_by(&self.reported).or_else(|| self.budget.exceeded_by(&returned)) {
                self.over_budget = Some(why);
                self.writes.running.stop(StopReason::BudgetExceeded);
            }
        }
        if let Some(Ok(success)) = &result {
            over_output |= self.output.admit_result(&success.result);
        }
        if over_output && self.writes.running.reason().is_none() {
            let (id, attempt) = (self.writes.id, self.writes.attempt);
            tracing::info!(task_id = %id, attempt, why = self.output.over.as_deref().unwrap_or(""), "attempt over its output cap");
            self.writes.running.stop(StopReason::OutputLimit);
        }
        Settled {
            why: self.writes.running.reason(),
            result,
            usage,
            over_budget: self.over_budget.take(),
            over_output: self.output.over.take(),
            provider_down: false,
        }
    }
}

/// Runs one attempt; `started_seq` is the number of its `task.started` event.
async fn run(s: &Arc<Shared>, task: smith_core::Task, running: Running, started_seq: u64) {
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
    let started = tokio::time::Instant::now();
    let deadline = task.timeout_ms.map(|ms| started + Duration::from_millis(ms));
    tracing::debug!(task_id = %id, attempt, agent, "attempt started");
    let mut span = Span::start("task.attempt", Kind::Consumer, task.traceparent.as_deref());
    if span.is_some() {
        span.attr("smith.task.id", id.to_string());
        span.attr("smith.attempt", i64::from(attempt));
        span.attr("smith.agent", agent.clone());
        span.attr("smith.tenant", tenant.clone());
        span.attr("smith.worker", s.opts.node_id.clone());
    }
    let mut exec_span = span.child("executor.run", Kind::Internal);
    if exec_span.is_some() {
        exec_span.attr("smith.executor", def.executor.as_str());
    }
    let budget = task.budget.tighter(def.budget);
    let (tx, mut rx) = mpsc::channel::<EventDraft>(EVENT_BUFFER);
    let emitter = Emitter::new(tx);
    let (mut ctx, task_dir, mut unavailable) =
        context(s, task, &def, emitter, running.cancel.clone(), started_seq).await;
    let artifact_dir = match artifacts::Dir::create(s, &def, id, attempt).await {
        Ok(dir) => dir,
        Err(f) => {
            unavailable = unavailable.or(Some(f));
            None
        }
    };
    ctx.artifacts = artifact_dir.as_ref().map(|d| d.path().to_path_buf());
    // the agent's own spans join the trace under its executor's span (or the client's context
    // when this process traces nothing)
    ctx.traceparent = exec_span.traceparent().or_else(|| ctx.task.traceparent.clone());
    let account = s.limits.get(def.account()).cloned();
    let claude = def.executor == ExecutorKind::ClaudeCode;
    if matches!(def.executor, ExecutorKind::Anthropic | ExecutorKind::Openai) {
        ctx.limiter = account.clone().map(|a| a as Arc<dyn smith_agents::limit::RateLimiter>);
    }
    let mut exec = tokio::spawn(async move {
        if let (Some(account), true, None) = (&account, claude, &unavailable) {
            // the CLI makes its own calls: an attempt takes one request as it starts
            if !account.acquire(0, &ctx.cancel).await {
                return Err(smith_agents::Failure::new("cancelled", "stopped", false));
            }
        }
        let result = match unavailable {
            Some(f) => Err(f),
            None => executor.run(ctx).await,
        };
        if let Err(f) = &result {
            exec_span.fail(format!("{}: {}", f.error.code, f.error.message));
        }
        result
    });

    let writes = Writes { s, id, attempt, running: &running, started };
    let mut at = Attempt {
        writes,
        budget,
        output: Output::new(s.opts.output),
        buf: Vec::new(),
        reported: Usage::default(),
        over_budget: None,
    };
    let result = at.gather(&mut exec, &mut rx, deadline, def.kill_grace).await;
    running.settled.store(true, std::sync::atomic::Ordering::Release);
    let mut settled = at.settle(&mut rx, result);
    metrics::usage(&agent, &tenant, &settled.usage);
    let outage = matches!(&settled.result, Some(Err(f)) if f.is_provider_outage()) && settled.why.is_none();
    settled.provider_down = record_breaker(s, &agent, outage, settled.why).await && outage;
    if let (true, Some(Err(f))) = (settled.provider_down, &settled.result) {
        tracing::info!(task_id = %id, agent, error = %f.error.message, "provider down; task handed back to the queue");
    }
    let mut buf = std::mem::take(&mut at.buf);
    // what an attempt that ran to its end left is stored; a stopped one's is not
    let ran_to_end = settled.why.is_none() && settled.result.is_some();
    let outcome = match decide(settled) {
        Ending::Abandon => {
            metrics::finished(&agent, "lost", started.elapsed());
            return;
        }
        Ending::Parked => {
            metrics::finished(&agent, "parked", started.elapsed());
            return;
        }
        Ending::Limited(reason, until) => {
            flush(&at.writes, &mut buf, &running).await;
            park(&at.writes, &def, buf, reason, until).await;
            metrics::finished(&agent, "limited", started.elapsed());
            return;
        }
        Ending::Release(why) => {
            flush(&at.writes, &mut buf, &running).await;
            match s.store.release(&s.opts.node_id, &[(id, attempt)], why).await {
                Ok(changes) => {
                    for c in changes {
                        smith_bus::publish_events(s.bus.as_ref(), &c.events).await;
                    }
                }
                Err(e) => tracing::warn!(task_id = %id, error = %e, "release failed; the lease will expire"),
            }
            metrics::finished(&agent, "released", started.elapsed());
            return;
        }
        Ending::Complete(outcome) => outcome,
    };
    let mut outcome = outcome;
    if let (Some(dir), Some(opts), true) = (&artifact_dir, &s.opts.artifacts, ran_to_end) {
        match artifacts::store(&at.writes, opts, &tenant, dir.path()).await {
            Ok(Some(event)) => buf.push(event),
            Ok(None) => {}
            Err(f) => {
                tracing::info!(task_id = %id, attempt, code = %f.error.code, error = %f.error.message, "artifacts not stored");
                outcome = artifacts::failed(&outcome, f);
            }
        }
    }
    if let Some(dir) = artifact_dir {
        dir.remove().await;
    }
    let label = outcome.label();
    span.attr("smith.outcome", label);
    // A successful outcome dropped on a transient error would have the task run again (its
    // side effects and spend repeated): the completion is retried until the lease is over.
    let mut write = span.child("store.complete", Kind::Client);
    let completed = at.writes.retry("complete", || s.store.complete(id, attempt, buf.clone(), outcome.clone())).await;
    if let Err(e) = &completed {
        write.fail(e.to_string());
        span.fail(e.to_string());
    }
    drop(write);
    match completed {
        Ok(change) => {
            let publish = span.child("bus.publish", Kind::Producer);
            smith_bus::publish_events(s.bus.as_ref(), &change.events).await;
            drop(publish);
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

/// Parks the attempt's task at its provider account's usage limit until `until` (the task a
/// little later, spread, so the account's parked tasks do not all start in the same instant),
/// and holds the account in this worker at once (the store holds it for the fleet).
async fn park(writes: &Writes<'_>, def: &AgentDef, buf: Vec<EventDraft>, reason: String, until: Micros) {
    let (s, id, attempt) = (writes.s, writes.id, writes.attempt);
    let account = def.account().to_string();
    let until = until.max(Micros::now());
    let park = smith_store::lifecycle::Park {
        until,
        spread: crate::holds::spread(),
        account: account.clone(),
        reason: smith_store::timers::bounded_reason(&reason),
    };
    s.holds.hold(&account, until);
    tracing::info!(task_id = %id, attempt, account, until = %until.rfc3339(), reason, "usage limit: task parked");
    match writes.retry("park", || s.store.park(id, attempt, buf.clone(), park.clone())).await {
        Ok(change) => smith_bus::publish_events(s.bus.as_ref(), &change.events).await,
        Err(StoreError::Fenced(_)) => metrics::lease_lost(),
        // the lease runs out and the reaper requeues the task: it runs again, unparked
        Err(e) => tracing::error!(task_id = %id, attempt, error = %e, "cannot park the task"),
    }
}

/// The executor's run context for `task`: its session's history, its MCP access, its work dir
/// (and whether the dir is the task's own), or why the dir cannot be had.
async fn context(
    s: &Shared,
    task: Task,
    def: &Arc<AgentDef>,
    emitter: Emitter,
    cancel: CancellationToken,
    started_seq: u64,
) -> (RunContext, Option<(PathBuf, bool)>, Option<smith_agents::Failure>) {
    let id = task.id;
    let mut ctx = RunContext::new(task, def.clone(), emitter, cancel);
    if ctx.task.session_id.is_some() {
        ctx.session = session_context(s, &ctx.task).await;
    }
    if ctx.task.attempt > 1 && def.executor.is_llm() {
        ctx.resume = resume_context(s, &ctx.task, def, started_seq).await;
    }
    if (def.executor.is_llm() || def.executor == ExecutorKind::Process) && def.collaborate {
        ctx.mcp = s.opts.mcp_url.as_ref().map(|url| {
            let mut headers = vec![(smith_agents::TASK_HEADER.to_string(), id.to_string())];
            if let Some(key) = &s.opts.capability_key {
                let cap = capability(&ctx.task, def);
                headers.push(("authorization".to_string(), format!("Bearer {}", key.mint(&cap))));
            }
            smith_agents::McpAccess { url: url.clone(), headers }
        });
    }
    // an agent never runs outside its own work dir: without it the attempt fails instead
    let (task_dir, unavailable) = match work_dir(s, def, &ctx.task) {
        Ok(dir) => (dir, None),
        Err(f) => (None, Some(f)),
    };
    ctx.workdir = task_dir.as_ref().map(|(dir, _)| dir.clone());
    (ctx, task_dir, unavailable)
}

/// What the previous attempt was told by a person, when it parked for one: the answers to its
/// requests; whether it parked at its provider's usage limit (its `task.parked` event comes
/// just before this attempt's `queued` and `started`, numbered `started_seq`); and (Claude Code)
/// the CLI session it ran, read from its `system` init event.
async fn resume_context(s: &Shared, task: &Task, def: &AgentDef, started_seq: u64) -> Option<smith_agents::Resume> {
    let previous = task.attempt - 1;
    let limited = match s.store.events(task.id, started_seq.saturating_sub(3), 2).await {
        Ok(tail) => tail.iter().any(|e| e.kind == EventKind::Parked && e.attempt == previous),
        Err(e) => {
            tracing::warn!(task_id = %task.id, error = %e, "cannot read how the previous attempt ended");
            false
        }
    };
    let query =
        smith_store::ApprovalQuery { task: Some(task.id), limit: smith_store::APPROVAL_LIMIT, ..Default::default() };
    let answers: Vec<_> = match s.store.list_approvals(&query).await {
        Ok(list) => list.into_iter().filter(|a| a.attempt == previous && a.answer.is_some()).rev().collect(),
        Err(e) => {
            // the agent still finds each answer when it asks again
            tracing::warn!(task_id = %task.id, error = %e, "cannot read the task's answered requests");
            return None;
        }
    };
    if answers.is_empty() && !limited {
        return None;
    }
    let mut claude_session = None;
    if def.executor == ExecutorKind::ClaudeCode {
        let mut after = 0;
        // bounded: the init line comes first in an attempt's events
        for _ in 0..20 {
            let Ok(page) = s.store.events(task.id, after, 500).await else { break };
            let Some(last) = page.last() else { break };
            after = last.seq;
            let init = page.iter().filter(|e| e.attempt == previous).find_map(|e| {
                (e.data["subtype"] == "init").then(|| e.data["session_id"].as_str().map(str::to_string)).flatten()
            });
            if init.is_some() {
                claude_session = init;
                break;
            }
        }
    }
    Some(smith_agents::Resume { answers, claude_session, limited })
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
    if def.cwd.is_some() || def.workspace.is_some() || def.executor != ExecutorKind::ClaudeCode {
        // a workspace is the agent's own dir (smith_agents::workspace)
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
            Some(StopReason::Lost | StopReason::Released | StopReason::Cancelled | StopReason::Parked) => {
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
async fn flush(w: &Writes<'_>, buf: &mut Vec<EventDraft>, running: &Running) -> bool {
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
            running.stop(StopReason::Lost);
            false
        }
        Err(e) => {
            tracing::warn!(task_id = %id, attempt, error = %e, "append failed; stopping the attempt");
            running.stop(StopReason::Lost);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use smith_agents::{Failure, Success};

    fn usage(n: u64) -> Usage {
        Usage { input_tokens: n, output_tokens: n, cost_usd: 0.0 }
    }

    fn ended(why: Option<StopReason>, result: Option<RunResult>) -> Ending {
        decide(Settled { why, result, usage: usage(1), ..Settled::default() })
    }

    fn ok() -> Option<RunResult> {
        Some(Ok(Success { result: json!("done"), usage: usage(1) }))
    }

    fn err(retryable: bool) -> Option<RunResult> {
        Some(Err(Failure::new("boom", "it broke", retryable)))
    }

    #[test]
    fn a_stop_reason_decides_over_whatever_the_executor_returned() {
        for result in [ok(), err(true), None] {
            assert_eq!(ended(Some(StopReason::Lost), result.clone()), Ending::Abandon);
            assert_eq!(ended(Some(StopReason::Released), result.clone()), Ending::Release("worker draining"));
            assert_eq!(
                ended(Some(StopReason::Cancelled), result.clone()),
                Ending::Complete(Outcome::Cancelled { usage: usage(1) })
            );
            assert_eq!(
                ended(Some(StopReason::TimedOut), result.clone()),
                Ending::Complete(Outcome::TimedOut { usage: usage(1) })
            );
            let Ending::Complete(Outcome::Failed { error, retryable: false, .. }) =
                ended(Some(StopReason::BudgetExceeded), result.clone())
            else {
                panic!("an attempt over budget must fail for good")
            };
            assert_eq!((error.code.as_str(), error.message.as_str()), ("budget_exceeded", "over budget"));
            let Ending::Complete(Outcome::Failed { error, retryable: false, .. }) =
                ended(Some(StopReason::OutputLimit), result)
            else {
                panic!("an attempt over its output cap must fail for good")
            };
            assert_eq!(error.code, OUTPUT_LIMIT_EXCEEDED);
        }
        let why = decide(Settled {
            why: Some(StopReason::BudgetExceeded),
            over_budget: Some("spent 9 tokens of 5".into()),
            ..Settled::default()
        });
        assert!(
            matches!(why, Ending::Complete(Outcome::Failed { error, .. }) if error.message == "spent 9 tokens of 5")
        );
    }

    #[test]
    fn without_a_stop_the_executor_result_is_the_outcome() {
        assert_eq!(ended(None, ok()), Ending::Complete(Outcome::Succeeded { result: json!("done"), usage: usage(1) }));
        for retryable in [true, false] {
            let Ending::Complete(Outcome::Failed { error, retryable: r, usage: u }) = ended(None, err(retryable))
            else {
                panic!("a failure must be recorded")
            };
            assert_eq!((error.code.as_str(), r, u), ("boom", retryable, usage(1)));
        }
        let Ending::Complete(Outcome::Failed { error, retryable: true, .. }) = ended(None, None) else {
            panic!("a vanished executor is a retryable failure")
        };
        assert_eq!(error.code, "executor_lost");
    }

    #[test]
    fn a_failure_while_the_provider_is_down_hands_the_task_back() {
        let down = |why, result| decide(Settled { why, result, provider_down: true, ..Settled::default() });
        assert_eq!(down(None, err(true)), Ending::Release("circuit breaker open: the provider keeps failing"));
        // a success, or an attempt stopped for its own reasons, is recorded as usual
        assert!(matches!(down(None, ok()), Ending::Complete(Outcome::Succeeded { .. })));
        assert!(matches!(down(Some(StopReason::Cancelled), err(true)), Ending::Complete(Outcome::Cancelled { .. })));
    }

    #[test]
    fn the_usage_recorded_is_the_returned_total_or_else_the_last_reported() {
        assert_eq!(settled_usage(usage(3), &ok()), usage(1));
        assert_eq!(settled_usage(usage(3), &err(true)), usage(3), "a failure without a total keeps the report");
        assert_eq!(settled_usage(usage(3), &None), usage(3));
        let events = [
            EventDraft::new(EventKind::Usage, json!(usage(1))),
            EventDraft::output("x"),
            EventDraft::new(EventKind::Usage, json!(usage(2))),
            EventDraft::new(EventKind::Usage, json!("not a usage")),
        ];
        assert_eq!(last_usage(&events), Some(usage(2)));
        assert_eq!(last_usage(&events[1..2]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_without_a_time_never_fires() {
        let start = tokio::time::Instant::now();
        let at = start + Duration::from_secs(30);
        tokio::select! {
            _ = until(None) => panic!("a timer without a time fired"),
            _ = until(Some(at)) => {}
        }
        assert_eq!(tokio::time::Instant::now(), at, "the timer fired at its time, not before or after");
    }
}
