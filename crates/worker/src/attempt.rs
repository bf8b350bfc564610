//! One attempt of one task: runs the executor, batches its events into the store, enforces
//! the timeout, and records the outcome — all writes fenced by the attempt number.

use crate::{metrics, Running, Shared, StopReason};
use smith_agents::{Emitter, RunContext, RunResult};
use smith_core::{EventDraft, Outcome, TaskError, TaskId, Usage};
use smith_store::{Claimed, Error as StoreError};
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

pub(crate) fn spawn(shared: Arc<Shared>, claimed: Claimed) {
    let task = claimed.task;
    let cancel = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    shared.running.lock().expect("running lock").insert(
        task.id,
        Running { attempt: task.attempt, agent: task.agent.clone(), cancel: cancel.clone(), reason: reason.clone() },
    );
    metrics::dispatched(&task.agent, claimed.event.at.since(task.created_at));
    let id = task.id;
    let s = shared.clone();
    tokio::spawn(async move {
        smith_bus::publish_events(s.bus.as_ref(), std::slice::from_ref(&claimed.event)).await;
        run(&s, task, cancel, reason).await;
        s.running.lock().expect("running lock").remove(&id);
        s.freed.notify_waiters();
        s.wake.notify_one();
    });
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
    let (Some(def), Some(executor)) = (s.defs.get(&agent).cloned(), s.executors.get(&agent).cloned()) else {
        // claimed only for agents we run, so this is a bug: hand it back rather than lose it
        tracing::error!(task_id = %id, agent, "claimed a task for an agent this worker does not run");
        let _ = s.store.release(&s.opts.node_id, &[(id, attempt)], "agent not run by this worker").await;
        return;
    };
    let timeout = task.timeout_ms.map(Duration::from_millis);
    let started = tokio::time::Instant::now();
    tracing::debug!(task_id = %id, attempt, agent, "attempt started");

    let (tx, mut rx) = mpsc::channel::<EventDraft>(EVENT_BUFFER);
    let ctx = RunContext::new(task, def.clone(), Emitter::new(tx), cancel.clone());
    let mut exec = tokio::spawn(async move { executor.run(ctx).await });

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
    let mut closed = false;
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
                if n > 0 && linger.is_none() {
                    linger = Some(tokio::time::Instant::now() + s.opts.linger);
                }
                if buf.len() >= MAX_APPEND && !flush(s, id, attempt, &mut buf, &stop).await {
                    linger = None;
                }
                if buf.is_empty() { linger = None; }
            }
            _ = tokio::time::sleep_until(linger.unwrap_or(far)), if linger.is_some() => {
                linger = None;
                flush(s, id, attempt, &mut buf, &stop).await;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && abandon_at.is_none() => {
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
    while let Ok(ev) = rx.try_recv() {
        buf.push(ev);
    }
    let why = *reason.lock().expect("reason lock");
    let usage = match &result {
        Some(Ok(s)) => s.usage,
        Some(Err(f)) => f.usage,
        None => Usage::default(),
    };
    let outcome = match (why, result) {
        (Some(StopReason::Lost), _) => {
            metrics::finished(&agent, "lost", started.elapsed());
            return;
        }
        (Some(StopReason::Released), _) => {
            if !buf.is_empty() {
                flush(s, id, attempt, &mut buf, &|_| {}).await;
            }
            match s.store.release(&s.opts.node_id, &[(id, attempt)], "worker draining").await {
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
    match s.store.complete(id, attempt, buf, outcome).await {
        Ok(change) => {
            smith_bus::publish_events(s.bus.as_ref(), &change.events).await;
            metrics::finished(&agent, label, started.elapsed());
            tracing::debug!(task_id = %id, attempt, outcome = label, status = %change.task.status, "attempt finished");
        }
        Err(StoreError::Fenced(_)) => {
            metrics::lease_lost();
            tracing::warn!(task_id = %id, attempt, "completion fenced: a newer attempt owns the task");
        }
        Err(e) => {
            // the lease will expire and the reaper requeues it; never guess an outcome
            tracing::error!(task_id = %id, attempt, error = %e, "cannot record the outcome");
        }
    }
}

/// Writes buffered events; on a fence, stops the attempt (its lease is gone).
async fn flush(
    s: &Shared,
    id: TaskId,
    attempt: u32,
    buf: &mut Vec<EventDraft>,
    stop: &(dyn Fn(StopReason) + Sync),
) -> bool {
    if buf.is_empty() {
        return true;
    }
    let batch = std::mem::take(buf);
    match s.store.append(id, attempt, batch).await {
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
