//! The task lifecycle: every state a task moves through and every transition between them, in
//! one place. A transition is a pure function from (row, command, now) to the row's new state and
//! the events it appends — or a typed [`Refusal`] that leaves the row exactly as it was.
//!
//! ```text
//!            submit           claim               complete: succeeded
//!   (new) ──────────▶ queued ───────▶ running ─────────────────────────▶ succeeded
//!                      │  ▲            │ │ │    complete: failed, no attempt left ▶ failed
//!               cancel │  │ retrying   │ │ │    complete: timed out ──────────────▶ timed_out
//!                      ▼  └────────────┘ │ └─── cancel ▶ running, cancel requested: the attempt's
//!                 cancelled   failed with  │     next complete / release / reap ends it cancelled
//!                             attempts left│
//!                             (backoff), a ┘ release (at once, the attempt not spent),
//!                             reap (lease expired, worker lost)
//!
//!   running ──wait (an approval or a question)──▶ waiting_input ──answer──▶ queued
//!                                                       └──cancel──▶ cancelled
//!
//!   (new) ──submit with a later run_at──▶ scheduled ──due (its run_at passed)──▶ queued
//!   running ──park (the provider's usage limit)──▶ parked ──due (the limit reset)──▶ queued
//!   scheduled, parked ──cancel──▶ cancelled
//!   scheduled, queued never started ──expire (its time to live ran out)──▶ expired
//! ```
//!
//! Both stores load the rows a write touches, apply the transition here and write the row and
//! its events back: SQLite one task at a time in its writer's transaction, PostgreSQL a batch at a
//! time with set-based statements for the fields decided here. Claims and lease renewals run as
//! set-based SQL in both stores (they pick rows by queue order and tenant room, which no single
//! row can decide); they set exactly the fields [`claim`] and [`renew`] set, and the conformance
//! suite holds both stores to this module.
//!
//! Invariants, checked by the property test below for any sequence of commands:
//! - A task has exactly one terminal event, its last; a terminal task never changes again.
//! - The attempt number only grows, by one, and only by a claim.
//! - A write made for an attempt (append, complete, renew, release) is refused unless the task is
//!   running at that attempt, and a refused command changes nothing.
//! - A task's events are numbered 1, 2, 3… without gaps; `last_seq` is the last one's number.
//! - A queued task has no worker and no lease; a finished one no lease.
//!
//! Adding a status means: its transitions here (and their refusals), a migration per backend
//! where the status needs a column, and the tests here and in the conformance suite.

use serde_json::{json, Value};
use smith_core::task::retry_backoff_ms;
use smith_core::{AgentDef, EventDraft, EventKind, Micros, NewTask, Outcome, Task, TaskError, TaskStatus};
use std::time::Duration;

/// A task as the stores keep it: what the API shows, and the bookkeeping it does not.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub task: Task,
    /// Attempts handed back by [`release`]: they do not count against `max_attempts`.
    pub released: u32,
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// The sequence number of the task's last event.
    pub last_seq: u64,
    pub lease_until: Option<Micros>,
    /// When a queued task may be claimed (a retry waits out its backoff).
    pub run_at: Micros,
    /// When the usage last grew (tenant quotas read usage by it).
    pub spent_at: Option<Micros>,
}

/// An event a transition appends to its task, numbered; the store gives it its feed position.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub seq: u64,
    pub kind: EventKind,
    pub attempt: u32,
    pub data: Value,
    /// What the event adds to its tenant's stored output (`tenant_output`).
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Nothing: the platform's own bookkeeping.
    None,
    /// The event's data as stored: an executor wrote it.
    Data,
    /// These bytes (a success's result, which its event carries).
    Bytes(u64),
}

/// Why a transition does not apply. A refused command changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the task has finished ({0})")]
    Terminal(TaskStatus),
    #[error("the task is {0}, not running")]
    NotRunning(TaskStatus),
    #[error("attempt {attempt} is stale: the task is at attempt {current}")]
    StaleAttempt { attempt: u32, current: u32 },
    #[error("the task is held by another worker")]
    OtherWorker,
    #[error("the task is not queued ({0})")]
    NotQueued(TaskStatus),
    #[error("the task is not due before {0:?}")]
    NotDue(Micros),
    #[error("the task's lease is live and its worker alive")]
    StillHeld,
    #[error("the task is {0}, not waiting for input")]
    NotWaiting(TaskStatus),
    #[error("the task is {0}, neither scheduled nor parked")]
    NotDeferred(TaskStatus),
    #[error("the task has started or has no time to live")]
    NotExpiring,
}

/// The task and row a submission creates, and its first event: `queued`, or `scheduled` when
/// it asks to start later. Its time to live counts from when it may start.
pub fn submit(t: &NewTask, def: &AgentDef, now: Micros) -> (Row, Step) {
    let timeout_ms = t.timeout_ms.or(def.timeout.map(|d| d.as_millis() as u64));
    let mut task = Task::queued(t, timeout_ms, t.max_attempts.unwrap_or(def.max_attempts), now);
    // `NewTask::validate_for` refused a task whose key does not resolve
    task.concurrency_key = smith_core::concurrency::resolve(t, def).unwrap_or_default();
    let later = t.run_at.filter(|at| *at > now);
    task.expires_at = t.ttl.map(|ttl| later.unwrap_or(now).plus(ttl));
    let (kind, data) = match later {
        Some(at) => {
            task.status = TaskStatus::Scheduled;
            task.run_at = Some(at);
            (EventKind::Scheduled, json!({"priority": t.priority, "run_at": at}))
        }
        None => (EventKind::Queued, json!({"priority": t.priority})),
    };
    let step = Step { seq: 1, kind, attempt: 0, data, output: Output::None };
    let row = Row {
        task,
        released: 0,
        backoff_ms: def.retry_backoff.as_millis() as u64,
        backoff_max_ms: def.retry_backoff_max.as_millis() as u64,
        last_seq: 1,
        lease_until: None,
        run_at: later.unwrap_or(now),
        spent_at: None,
    };
    (row, step)
}

/// A scheduled task whose `run_at` came, or a parked one whose limit reset: queued, with a
/// `queued` event saying what it waited for.
pub fn due(row: &mut Row, now: Micros) -> Result<Step, Refusal> {
    let was = row.task.status;
    match was {
        TaskStatus::Scheduled | TaskStatus::Parked if row.run_at <= now => {}
        TaskStatus::Scheduled | TaskStatus::Parked => return Err(Refusal::NotDue(row.run_at)),
        s if s.is_terminal() => return Err(Refusal::Terminal(s)),
        s => return Err(Refusal::NotDeferred(s)),
    }
    row.task.status = TaskStatus::Queued;
    row.task.run_at = None;
    row.last_seq += 1;
    let data = json!({"priority": row.task.priority, "after": was.as_str()});
    Ok(Step { seq: row.last_seq, kind: EventKind::Queued, attempt: row.task.attempt, data, output: Output::None })
}

/// A task that has not started by its `expires_at` ends `expired`, never run. Only a task
/// that never started expires: a retry waiting in the queue has started once.
pub fn expire(row: &mut Row, now: Micros) -> Result<Step, Refusal> {
    match row.task.status {
        TaskStatus::Scheduled | TaskStatus::Queued if row.task.attempt == 0 => {}
        s if s.is_terminal() => return Err(Refusal::Terminal(s)),
        TaskStatus::Scheduled | TaskStatus::Queued => return Err(Refusal::NotExpiring),
        s => return Err(Refusal::NotQueued(s)),
    }
    let Some(at) = row.task.expires_at else { return Err(Refusal::NotExpiring) };
    if at > now {
        return Err(Refusal::NotDue(at));
    }
    let message = format!("the task did not start before it expired at {}", at.rfc3339());
    row.task.error = Some(TaskError::new("expired", message));
    row.task.cancel_requested = false;
    Ok(finish(row, TaskStatus::Expired, EventKind::Expired, json!({"expires_at": at}), now))
}

/// What a task shows as its `run_at`: when a scheduled or parked task is queued again.
pub fn deferred_until(status: TaskStatus, run_at: Micros) -> Option<Micros> {
    matches!(status, TaskStatus::Scheduled | TaskStatus::Parked).then_some(run_at)
}

/// Whether a claim at `now` may start the task: a task past its time to live never starts,
/// even before the leader has marked it expired (the stores' claims test the same).
pub fn startable(row: &Row, now: Micros) -> bool {
    row.task.attempt > 0 || row.task.expires_at.is_none_or(|at| at > now)
}

/// `worker` takes a queued, due task for its next attempt, leased until `lease_until`.
pub fn claim(row: &mut Row, worker: &str, lease_until: Micros, now: Micros) -> Result<Step, Refusal> {
    match row.task.status {
        TaskStatus::Queued if !startable(row, now) => return Err(Refusal::NotExpiring),
        TaskStatus::Queued if row.run_at <= now => {}
        TaskStatus::Queued => return Err(Refusal::NotDue(row.run_at)),
        status => return Err(Refusal::NotQueued(status)),
    }
    let t = &mut row.task;
    t.status = TaskStatus::Running;
    t.attempt += 1;
    t.worker = Some(worker.to_string());
    t.started_at = Some(now);
    row.lease_until = Some(lease_until);
    row.last_seq += 1;
    Ok(started(row))
}

/// The `started` event of a claim: the stores' claim statements set the row as [`claim`] does,
/// then take their event from here.
pub fn started(row: &Row) -> Step {
    let data = json!({"worker": row.task.worker, "attempt": row.task.attempt});
    Step { seq: row.last_seq, kind: EventKind::Started, attempt: row.task.attempt, data, output: Output::None }
}

/// Checks that a write made for `attempt` may touch the task: it is running at that attempt.
pub fn held(row: &Row, attempt: u32) -> Result<(), Refusal> {
    let t = &row.task;
    if t.status.is_terminal() {
        return Err(Refusal::Terminal(t.status));
    }
    if t.status != TaskStatus::Running {
        return Err(Refusal::NotRunning(t.status));
    }
    if t.attempt != attempt {
        return Err(Refusal::StaleAttempt { attempt, current: t.attempt });
    }
    Ok(())
}

/// `worker` extends its lease on a task it runs. The stores renew every task of a worker in one
/// statement (`status = 'running' AND worker = $1`), which is this check row by row.
pub fn renew(row: &mut Row, worker: &str, until: Micros) -> Result<(), Refusal> {
    held(row, row.task.attempt)?;
    if row.task.worker.as_deref() != Some(worker) {
        return Err(Refusal::OtherWorker);
    }
    row.lease_until = Some(until);
    Ok(())
}

/// An attempt's events, appended after the task's last.
pub fn append(row: &mut Row, attempt: u32, drafts: &[EventDraft]) -> Result<Vec<Step>, Refusal> {
    held(row, attempt)?;
    Ok(push_drafts(row, drafts))
}

fn push_drafts(row: &mut Row, drafts: &[EventDraft]) -> Vec<Step> {
    let attempt = row.task.attempt;
    drafts
        .iter()
        .map(|d| {
            row.last_seq += 1;
            Step { seq: row.last_seq, kind: d.kind, attempt, data: d.data.clone(), output: Output::Data }
        })
        .collect()
}

/// An attempt's outcome, after its last events: the task finishes, or goes back to the queue
/// after a backoff when a retryable failure leaves attempts.
pub fn complete(
    row: &mut Row,
    attempt: u32,
    drafts: &[EventDraft],
    outcome: &Outcome,
    now: Micros,
) -> Result<Vec<Step>, Refusal> {
    held(row, attempt)?;
    let mut steps = push_drafts(row, drafts);
    row.task.usage.add(&outcome.usage());
    if !outcome.usage().is_zero() {
        row.spent_at = Some(now);
    }
    let step = match outcome {
        Outcome::Succeeded { result, .. } => {
            row.task.result = Some(result.clone());
            row.task.error = None;
            let data = json!({"result": result, "usage": row.task.usage});
            let mut step = finish(row, TaskStatus::Succeeded, EventKind::Succeeded, data, now);
            step.output = Output::Bytes(crate::json_len(result));
            step
        }
        Outcome::Failed { error, retryable, .. } => fail_or_retry(row, error.clone(), *retryable, now),
        Outcome::Cancelled { .. } => cancelled(row, "cancel requested", now),
        Outcome::TimedOut { .. } => {
            let ms = row.task.timeout_ms;
            let message = format!("attempt {attempt} ran past its timeout of {} ms", ms.unwrap_or(0));
            row.task.error = Some(TaskError::new("timed_out", message));
            finish(row, TaskStatus::TimedOut, EventKind::TimedOut, json!({"timeout_ms": ms}), now)
        }
    };
    steps.push(step);
    Ok(steps)
}

/// `worker` hands its attempt back for an immediate requeue that does not spend an attempt
/// (draining, shutting down); a task whose cancel was requested ends cancelled instead.
pub fn release(row: &mut Row, worker: &str, attempt: u32, reason: &str, now: Micros) -> Result<Step, Refusal> {
    held(row, attempt)?;
    if row.task.worker.as_deref() != Some(worker) {
        return Err(Refusal::OtherWorker);
    }
    if row.task.cancel_requested {
        return Ok(cancelled(row, "cancel requested", now));
    }
    row.released += 1;
    let data = json!({"attempt": attempt, "delay_ms": 0, "reason": reason});
    Ok(requeue(row, now, data))
}

/// Ends a running attempt whose lease expired before `now` or whose worker is not alive, as a
/// retryable failure; refused while the lease is live and the worker alive.
pub fn reap(row: &mut Row, attempt: u32, worker_alive: bool, now: Micros) -> Result<Step, Refusal> {
    held(row, attempt)?;
    let expired = row.lease_until.is_some_and(|until| until < now);
    let lost = row.task.worker.is_none() || !worker_alive;
    if !expired && !lost {
        return Err(Refusal::StillHeld);
    }
    let worker = row.task.worker.as_deref().unwrap_or("?");
    let error = if expired {
        TaskError::new("lease_expired", format!("attempt {attempt}: the lease of worker {worker:?} expired"))
    } else {
        TaskError::new("worker_lost", format!("attempt {attempt}: worker {worker:?} is gone"))
    };
    Ok(fail_or_retry(row, error, true, now))
}

/// A queued or waiting task is cancelled at once, a running one flagged for its worker (the attempt's end
/// makes it cancelled), a finished one left as it is. Never refused.
pub fn cancel(row: &mut Row, now: Micros) -> Option<Step> {
    match row.task.status {
        TaskStatus::Queued => {
            row.task.cancel_requested = true;
            Some(cancelled(row, "cancelled while queued", now))
        }
        TaskStatus::WaitingInput => {
            row.task.cancel_requested = true;
            Some(cancelled(row, "cancelled while waiting for input", now))
        }
        TaskStatus::Scheduled => {
            row.task.cancel_requested = true;
            row.task.run_at = None;
            Some(cancelled(row, "cancelled while scheduled", now))
        }
        TaskStatus::Parked => {
            row.task.cancel_requested = true;
            row.task.run_at = None;
            Some(cancelled(row, "cancelled while parked", now))
        }
        TaskStatus::Running => {
            row.task.cancel_requested = true;
            None
        }
        _ => None,
    }
}

/// An attempt asks a person (an approval or a question): the task parks `waiting_input` with
/// the request's event — no worker, no lease, and the attempt not spent (its answer resumes the
/// work in a new one). A task whose cancel was requested ends cancelled instead.
pub fn wait(row: &mut Row, attempt: u32, kind: EventKind, data: Value, now: Micros) -> Result<Step, Refusal> {
    held(row, attempt)?;
    if row.task.cancel_requested {
        return Ok(cancelled(row, "cancel requested", now));
    }
    row.released += 1;
    row.last_seq += 1;
    row.lease_until = None;
    row.task.status = TaskStatus::WaitingInput;
    row.task.worker = None;
    Ok(Step { seq: row.last_seq, kind, attempt, data, output: Output::None })
}

/// An attempt stopped at its provider's usage limit: its last events, then the task parks until
/// `until` — no worker, no lease, the attempt not spent — with a `parked` event; the leader
/// queues it again then ([`due`]). A task whose cancel was requested ends cancelled instead.
pub fn park(
    row: &mut Row,
    attempt: u32,
    drafts: &[EventDraft],
    park: &Park,
    now: Micros,
) -> Result<Vec<Step>, Refusal> {
    held(row, attempt)?;
    let mut steps = push_drafts(row, drafts);
    if row.task.cancel_requested {
        steps.push(cancelled(row, "cancel requested", now));
        return Ok(steps);
    }
    let until = park.until.max(now).plus(park.spread);
    row.released += 1;
    row.last_seq += 1;
    row.lease_until = None;
    row.run_at = until;
    row.task.status = TaskStatus::Parked;
    row.task.run_at = Some(until);
    row.task.worker = None;
    let data = json!({"until": until, "resets_at": park.until, "account": park.account, "reason": park.reason});
    steps.push(Step { seq: row.last_seq, kind: EventKind::Parked, attempt, data, output: Output::None });
    Ok(steps)
}

/// Why and until when an attempt parks: its provider account's usage limit and its reset.
#[derive(Debug, Clone, PartialEq)]
pub struct Park {
    /// When the account's limit resets: the account is held until then.
    pub until: Micros,
    /// How much later than the reset this task resumes, so that an account's parked tasks do
    /// not all start in the same instant.
    pub spread: Duration,
    pub account: String,
    pub reason: String,
}

/// A waiting task's request was answered (by a person or its timeout): back to the queue at
/// once with the decision's event, to resume in its next attempt.
pub fn answer(row: &mut Row, data: Value, now: Micros) -> Result<Step, Refusal> {
    match row.task.status {
        TaskStatus::WaitingInput => {}
        s if s.is_terminal() => return Err(Refusal::Terminal(s)),
        s => return Err(Refusal::NotWaiting(s)),
    }
    row.last_seq += 1;
    row.run_at = now;
    row.task.status = TaskStatus::Queued;
    let step = Step {
        seq: row.last_seq,
        kind: EventKind::ApprovalDecided,
        attempt: row.task.attempt,
        data,
        output: Output::None,
    };
    Ok(step)
}

/// A failed attempt: back to the queue after a backoff while attempts are left, else `failed`.
fn fail_or_retry(row: &mut Row, error: TaskError, retryable: bool, now: Micros) -> Step {
    if row.task.cancel_requested {
        return cancelled(row, "cancel requested", now);
    }
    let spent = row.task.attempt.saturating_sub(row.released);
    if retryable && spent < row.task.max_attempts {
        let delay = retry_backoff_ms(row.backoff_ms, spent, row.backoff_max_ms);
        let data = json!({"attempt": row.task.attempt, "delay_ms": delay, "error": error, "reason": "failed"});
        row.task.error = Some(error);
        return requeue(row, now.plus(Duration::from_millis(delay)), data);
    }
    let data = json!({"error": error});
    row.task.error = Some(error);
    finish(row, TaskStatus::Failed, EventKind::Failed, data, now)
}

/// Back to the queue, claimable from `run_at`, with a `retrying` event.
fn requeue(row: &mut Row, run_at: Micros, data: Value) -> Step {
    row.last_seq += 1;
    row.run_at = run_at;
    row.lease_until = None;
    row.task.status = TaskStatus::Queued;
    row.task.worker = None;
    Step { seq: row.last_seq, kind: EventKind::Retrying, attempt: row.task.attempt, data, output: Output::None }
}

fn cancelled(row: &mut Row, reason: &str, now: Micros) -> Step {
    finish(row, TaskStatus::Cancelled, EventKind::Cancelled, json!({"reason": reason}), now)
}

/// A terminal state and its event.
fn finish(row: &mut Row, status: TaskStatus, kind: EventKind, data: Value, now: Micros) -> Step {
    row.last_seq += 1;
    row.task.status = status;
    row.task.finished_at = Some(now);
    row.lease_until = None;
    Step { seq: row.last_seq, kind, attempt: row.task.attempt, data, output: Output::None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smith_core::Usage;

    fn def() -> AgentDef {
        let mut def = AgentDef::new("echo", smith_core::ExecutorKind::Echo);
        def.retry_backoff = Duration::from_millis(100);
        def.retry_backoff_max = Duration::from_millis(250);
        def
    }

    fn queued(max_attempts: u32) -> Row {
        let mut t = NewTask::new("echo", json!(1));
        t.max_attempts = Some(max_attempts);
        t.timeout_ms = Some(50);
        submit(&t, &def(), Micros(1_000_000)).0
    }

    fn running(attempt: u32, max_attempts: u32) -> Row {
        let mut row = queued(max_attempts);
        row.task.attempt = attempt - 1;
        claim(&mut row, "w1", Micros(2_000_000), Micros(1_000_000)).unwrap();
        row
    }

    fn failed(retryable: bool) -> Outcome {
        Outcome::Failed { error: TaskError::new("boom", "it broke"), retryable, usage: Usage::default() }
    }

    /// Each case: the attempt, attempts allowed, attempts released, and the status and event
    /// kind a retryable failure leads to (with its backoff, when it retries).
    #[test]
    fn retryable_failures_back_off_exponentially_until_attempts_are_spent() {
        let cases = [
            (1, 3, 0, TaskStatus::Queued, Some(100)),
            (2, 3, 0, TaskStatus::Queued, Some(200)),
            (3, 3, 0, TaskStatus::Failed, None),
            (4, 3, 0, TaskStatus::Failed, None),
            (3, 3, 1, TaskStatus::Queued, Some(200)),
            (9, 10, 0, TaskStatus::Queued, Some(250)),
        ];
        for (attempt, max, released, status, delay) in cases {
            let mut row = running(attempt, max);
            row.released = released;
            let now = Micros(5_000_000);
            let steps = complete(&mut row, attempt, &[], &failed(true), now).unwrap();
            assert_eq!(row.task.status, status, "attempt {attempt} of {max}");
            assert_eq!((row.last_seq, steps.len(), steps[0].seq), (3, 1, 3));
            match delay {
                Some(ms) => {
                    assert_eq!(steps[0].kind, EventKind::Retrying);
                    assert_eq!(steps[0].data["delay_ms"], json!(ms));
                    assert_eq!(row.run_at, now.plus(Duration::from_millis(ms)));
                    assert_eq!((row.task.worker.as_deref(), row.lease_until), (None, None));
                }
                None => {
                    assert_eq!(steps[0].kind, EventKind::Failed);
                    assert_eq!(row.task.finished_at, Some(now));
                }
            }
        }
    }

    #[test]
    fn completion_is_fenced_and_numbers_drafts_before_the_terminal_event() {
        let mut row = running(2, 3);
        let now = Micros(7);
        let ok = Outcome::Succeeded {
            result: json!("r"),
            usage: Usage { input_tokens: 1, output_tokens: 2, cost_usd: 0.5 },
        };
        let before = row.clone();
        assert_eq!(complete(&mut row, 1, &[], &ok, now), Err(Refusal::StaleAttempt { attempt: 1, current: 2 }));
        assert_eq!(row, before, "a refused completion changed the row");

        let drafts = [EventDraft::output("a"), EventDraft::output("b")];
        let steps = complete(&mut row, 2, &drafts, &ok, now).unwrap();
        assert_eq!(row.spent_at, Some(now), "usage is dated by the attempt that spent it");
        let seqs: Vec<(u64, Output)> = steps.iter().map(|s| (s.seq, s.output)).collect();
        assert_eq!(seqs, [(3, Output::Data), (4, Output::Data), (5, Output::Bytes(3))]);
        assert_eq!(row.task.usage.output_tokens, 2);
        assert_eq!(row.task.result, Some(json!("r")));
        assert_eq!(complete(&mut row, 2, &[], &ok, now), Err(Refusal::Terminal(TaskStatus::Succeeded)));
        assert_eq!(append(&mut row, 2, &drafts), Err(Refusal::Terminal(TaskStatus::Succeeded)));
    }

    #[test]
    fn release_requeues_at_once_and_reap_needs_an_expired_lease_or_a_lost_worker() {
        let now = Micros(1_500_000);
        let mut row = running(1, 1);
        assert_eq!(release(&mut row, "w2", 1, "drain", now), Err(Refusal::OtherWorker));
        assert_eq!(release(&mut row, "w1", 2, "drain", now), Err(Refusal::StaleAttempt { attempt: 2, current: 1 }));
        release(&mut row, "w1", 1, "drain", now).unwrap();
        assert_eq!((row.task.status, row.released, row.run_at), (TaskStatus::Queued, 1, now));

        // (lease ends after now?, worker alive?, the reaper's error code)
        let cases = [(true, true, None), (false, true, Some("lease_expired")), (true, false, Some("worker_lost"))];
        for (live_lease, alive, code) in cases {
            let mut row = running(1, 3);
            row.lease_until = Some(if live_lease { Micros(now.0 + 1) } else { Micros(now.0 - 1) });
            let got = reap(&mut row, 1, alive, now).ok().and(row.task.error).map(|e| e.code);
            assert_eq!(got, code.map(String::from));
        }
        let mut cancelled = running(1, 3);
        cancelled.task.cancel_requested = true;
        cancelled.lease_until = Some(Micros(0));
        assert_eq!(reap(&mut cancelled, 1, true, now).unwrap().kind, EventKind::Cancelled);
    }

    #[test]
    fn a_claim_takes_only_a_due_queued_task() {
        let mut row = queued(3);
        row.run_at = Micros(5);
        assert_eq!(claim(&mut row, "w1", Micros(10), Micros(4)), Err(Refusal::NotDue(Micros(5))));
        let step = claim(&mut row, "w1", Micros(10), Micros(5)).unwrap();
        assert_eq!((step.seq, step.kind, step.attempt), (2, EventKind::Started, 1));
        assert_eq!(step.data, json!({"worker": "w1", "attempt": 1}));
        assert_eq!(claim(&mut row, "w2", Micros(10), Micros(5)), Err(Refusal::NotQueued(TaskStatus::Running)));
    }

    /// A command as a worker, the reaper or a client could send it, possibly late.
    #[derive(Debug, Clone)]
    enum Command {
        Claim { worker: u8 },
        Renew { worker: u8 },
        Append { attempt_back: u32, n: usize },
        Complete { attempt_back: u32, outcome: u8, retryable: bool },
        Release { worker: u8, attempt_back: u32 },
        Reap { attempt_back: u32, alive: bool },
        Cancel,
        Wait { ms: u64 },
        Ask { attempt_back: u32 },
        Answer,
        Park { attempt_back: u32, ms: u64 },
        Due,
        Expire,
    }

    fn command() -> impl Strategy<Value = Command> {
        let back = prop_oneof![3 => Just(0u32), 1 => 1u32..3];
        prop_oneof![
            (0u8..2).prop_map(|worker| Command::Claim { worker }),
            (0u8..2).prop_map(|worker| Command::Renew { worker }),
            (back.clone(), 0usize..3).prop_map(|(attempt_back, n)| Command::Append { attempt_back, n }),
            (back.clone(), 0u8..4, any::<bool>()).prop_map(|(attempt_back, outcome, retryable)| Command::Complete {
                attempt_back,
                outcome,
                retryable
            }),
            (0u8..2, back.clone()).prop_map(|(worker, attempt_back)| Command::Release { worker, attempt_back }),
            (back.clone(), any::<bool>()).prop_map(|(attempt_back, alive)| Command::Reap { attempt_back, alive }),
            Just(Command::Cancel),
            (0u64..400).prop_map(|ms| Command::Wait { ms }),
            back.clone().prop_map(|attempt_back| Command::Ask { attempt_back }),
            Just(Command::Answer),
            (back.clone(), 0u64..400).prop_map(|(attempt_back, ms)| Command::Park { attempt_back, ms }),
            Just(Command::Due),
            Just(Command::Expire),
        ]
    }

    fn outcome(n: u8, retryable: bool) -> Outcome {
        let usage = Usage { input_tokens: 1, output_tokens: 1, cost_usd: 0.0 };
        match n {
            0 => Outcome::Succeeded { result: json!({"ok": true}), usage },
            1 => Outcome::Failed { error: TaskError::new("boom", "it broke"), retryable, usage },
            2 => Outcome::Cancelled { usage },
            _ => Outcome::TimedOut { usage },
        }
    }

    /// Applies one command; the events it appended, or its refusal.
    fn apply(row: &mut Row, c: &Command, now: &mut Micros) -> Result<Vec<Step>, Refusal> {
        let current = row.task.attempt;
        let worker = |w: u8| format!("w{w}");
        match c {
            Command::Claim { worker: w } => {
                claim(row, &worker(*w), now.plus(Duration::from_millis(300)), *now).map(|s| vec![s])
            }
            Command::Renew { worker: w } => {
                renew(row, &worker(*w), now.plus(Duration::from_millis(300))).map(|_| vec![])
            }
            Command::Append { attempt_back, n } => {
                let drafts: Vec<EventDraft> = (0..*n).map(|i| EventDraft::output(i.to_string())).collect();
                append(row, current.saturating_sub(*attempt_back), &drafts)
            }
            Command::Complete { attempt_back, outcome: o, retryable } => {
                let drafts = [EventDraft::output("last")];
                complete(row, current.saturating_sub(*attempt_back), &drafts, &outcome(*o, *retryable), *now)
            }
            Command::Release { worker: w, attempt_back } => {
                release(row, &worker(*w), current.saturating_sub(*attempt_back), "drain", *now).map(|s| vec![s])
            }
            Command::Reap { attempt_back, alive } => {
                reap(row, current.saturating_sub(*attempt_back), *alive, *now).map(|s| vec![s])
            }
            Command::Cancel => Ok(cancel(row, *now).into_iter().collect()),
            Command::Wait { ms } => {
                *now = now.plus(Duration::from_millis(*ms));
                Ok(vec![])
            }
            Command::Ask { attempt_back } => {
                let at = current.saturating_sub(*attempt_back);
                wait(row, at, EventKind::ApprovalRequested, json!({}), *now).map(|s| vec![s])
            }
            Command::Answer => answer(row, json!({"decision": "allow"}), *now).map(|s| vec![s]),
            Command::Park { attempt_back, ms } => {
                let p = Park {
                    until: now.plus(Duration::from_millis(*ms)),
                    spread: Duration::from_millis(*ms / 4),
                    account: "a".into(),
                    reason: "limit".into(),
                };
                park(row, current.saturating_sub(*attempt_back), &[EventDraft::output("last")], &p, *now)
            }
            Command::Due => due(row, *now).map(|s| vec![s]),
            Command::Expire => expire(row, *now).map(|s| vec![s]),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn any_command_sequence_keeps_the_lifecycle_invariants(
            max_attempts in 1u32..4,
            delay_ms in prop_oneof![Just(0u64), 1u64..500],
            ttl_ms in prop::option::of(1u64..800),
            commands in prop::collection::vec(command(), 1..60),
        ) {
            let mut t = NewTask::new("echo", json!(1));
            t.max_attempts = Some(max_attempts);
            t.run_at = Some(Micros(1_000_000).plus(Duration::from_millis(delay_ms)));
            t.ttl = ttl_ms.map(Duration::from_millis);
            let mut row = submit(&t, &def(), Micros(1_000_000)).0;
            let mut now = Micros(1_000_000);
            let mut terminal_events = 0;
            for c in &commands {
                let before = row.clone();
                match apply(&mut row, c, &mut now) {
                    Err(refusal) => {
                        prop_assert_eq!(&row, &before, "{:?} was refused ({}) but changed the row", c, refusal);
                        let current = before.task.attempt;
                        if let Command::Append { attempt_back, .. }
                        | Command::Complete { attempt_back, .. }
                        | Command::Ask { attempt_back }
                        | Command::Park { attempt_back, .. } = c
                        {
                            let fenced = before.task.status != TaskStatus::Running || current.saturating_sub(*attempt_back) != current;
                            prop_assert!(fenced, "{:?} refused though attempt {} holds the task", c, current);
                        }
                    }
                    Ok(steps) => {
                        if before.task.status.is_terminal() {
                            prop_assert_eq!(&row, &before, "{:?} changed a finished task", c);
                        }
                        if let Command::Append { attempt_back, .. } | Command::Complete { attempt_back, .. } = c {
                            prop_assert_eq!(*attempt_back == 0 || before.task.attempt == 0, true, "a stale {:?} was applied", c);
                        }
                        let mut seq = before.last_seq;
                        for s in &steps {
                            seq += 1;
                            prop_assert_eq!(s.seq, seq, "events are numbered without gaps");
                            prop_assert!(s.attempt == row.task.attempt);
                            if s.kind.is_terminal() {
                                terminal_events += 1;
                                prop_assert!(row.task.status.is_terminal());
                                prop_assert_eq!(s.seq, row.last_seq, "a terminal event is the task's last");
                            }
                        }
                        prop_assert_eq!(seq, row.last_seq);
                    }
                }
                prop_assert!(row.task.attempt == before.task.attempt
                    || (row.task.attempt == before.task.attempt + 1 && matches!(c, Command::Claim { .. })),
                    "attempt went {} -> {} on {:?}", before.task.attempt, row.task.attempt, c);
                match row.task.status {
                    TaskStatus::Queued => prop_assert!(row.task.worker.is_none() && row.lease_until.is_none()),
                    TaskStatus::Running => prop_assert!(row.task.worker.is_some() && row.lease_until.is_some()),
                    TaskStatus::WaitingInput => prop_assert!(row.task.worker.is_none() && row.lease_until.is_none()),
                    TaskStatus::Scheduled | TaskStatus::Parked => {
                        prop_assert!(row.task.worker.is_none() && row.lease_until.is_none());
                        prop_assert_eq!(row.task.run_at, Some(row.run_at), "a deferred task shows when it is due");
                    }
                    TaskStatus::Expired => {
                        prop_assert!(row.task.started_at.is_none() && row.task.attempt == 0, "an expired task never started");
                        prop_assert!(row.task.expires_at.is_some_and(|at| at <= now));
                    }
                    _ => prop_assert!(row.lease_until.is_none() && row.task.finished_at.is_some()),
                }
                if row.task.status == TaskStatus::Running && before.task.status != TaskStatus::Running {
                    prop_assert!(before.task.attempt > 0 || before.task.expires_at.is_none_or(|at| at > now),
                        "a task past its time to live started");
                }
            }
            prop_assert_eq!(terminal_events, u32::from(row.task.status.is_terminal()));
        }
    }
}
