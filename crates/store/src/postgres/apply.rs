//! The state changes of existing tasks, in memory. The writer loads every row a batch touches
//! (locked, in one statement), applies each job's change here in arrival order, and writes the
//! rows that changed back in one statement. Pure code, so the rules are unit-tested directly;
//! they are the embedded store's rules (`sqlite/ops.rs`), row for row.

use super::rows::{EventBuf, TaskRow};
use crate::{Change, Error, Result};
use serde_json::{json, Value};
use smith_core::task::retry_backoff_ms;
use smith_core::{Event, EventDraft, EventKind, Micros, Outcome, TaskError, TaskId, TaskStatus};
use std::time::Duration;

fn held_by(row: &TaskRow, attempt: u32) -> bool {
    row.task.status == TaskStatus::Running && row.task.attempt == attempt
}

/// Appends drafts after the task's last event.
fn push_drafts(row: &mut TaskRow, drafts: &[EventDraft], now: Micros, ev: &mut EventBuf) -> Vec<Event> {
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        row.last_seq += 1;
        out.push(ev.push(Some(&row.task), row.last_seq, d.kind, row.task.attempt, now, d.data.clone()));
        ev.count_output(ev.last_data_len());
    }
    out
}

/// Appends events to a running task, fenced by status and attempt.
pub(super) fn append(
    row: Option<&mut TaskRow>,
    id: TaskId,
    attempt: u32,
    drafts: &[EventDraft],
    now: Micros,
    ev: &mut EventBuf,
) -> Result<Vec<Event>> {
    match row {
        Some(row) if held_by(row, attempt) => Ok(push_drafts(row, drafts, now, ev)),
        _ => Err(Error::Fenced(id)),
    }
}

/// A terminal state and its event.
fn finish(
    row: &mut TaskRow,
    status: TaskStatus,
    kind: EventKind,
    data: Value,
    now: Micros,
    ev: &mut EventBuf,
) -> Change {
    row.last_seq += 1;
    row.task.status = status;
    row.task.finished_at = Some(now);
    row.lease_until = None;
    let event = ev.push(Some(&row.task), row.last_seq, kind, row.task.attempt, now, data);
    Change { task: row.task.clone(), events: vec![event] }
}

/// A failed attempt: back to the queue after a backoff while attempts are left, else `failed`.
fn fail_or_retry(row: &mut TaskRow, error: TaskError, retryable: bool, now: Micros, ev: &mut EventBuf) -> Change {
    if row.task.cancel_requested {
        return finish(
            row,
            TaskStatus::Cancelled,
            EventKind::Cancelled,
            json!({"reason": "cancel requested"}),
            now,
            ev,
        );
    }
    let spent = row.task.attempt.saturating_sub(row.released);
    if retryable && spent < row.task.max_attempts {
        let delay = retry_backoff_ms(row.backoff_ms, spent, row.backoff_max_ms);
        row.last_seq += 1;
        row.run_at = now.plus(Duration::from_millis(delay));
        row.lease_until = None;
        row.task.status = TaskStatus::Queued;
        row.task.worker = None;
        row.task.error = Some(error.clone());
        let data = json!({"attempt": row.task.attempt, "delay_ms": delay, "error": error, "reason": "failed"});
        let event = ev.push(Some(&row.task), row.last_seq, EventKind::Retrying, row.task.attempt, now, data);
        return Change { task: row.task.clone(), events: vec![event] };
    }
    row.task.error = Some(error.clone());
    finish(row, TaskStatus::Failed, EventKind::Failed, json!({"error": error}), now, ev)
}

/// Records an attempt's outcome after its last events, fenced by status and attempt.
pub(super) fn complete(
    row: Option<&mut TaskRow>,
    id: TaskId,
    attempt: u32,
    drafts: &[EventDraft],
    outcome: &Outcome,
    now: Micros,
    ev: &mut EventBuf,
) -> Result<Change> {
    let Some(row) = row else { return Err(Error::NotFound(id)) };
    if !held_by(row, attempt) {
        return Err(Error::Fenced(id));
    }
    let mut events = push_drafts(row, drafts, now, ev);
    row.task.usage.add(&outcome.usage());
    if !outcome.usage().is_zero() {
        row.spent_at = Some(now);
    }
    let usage = row.task.usage;
    let change = match outcome {
        Outcome::Succeeded { result, .. } => {
            let bytes = crate::json_len(result);
            row.task.result = Some(result.clone());
            row.task.error = None;
            let data = json!({"result": result, "usage": usage});
            let change = finish(row, TaskStatus::Succeeded, EventKind::Succeeded, data, now, ev);
            // the terminal event just queued is this task's: its result counts as stored output
            ev.count_output(bytes);
            change
        }
        Outcome::Failed { error, retryable, .. } => fail_or_retry(row, error.clone(), *retryable, now, ev),
        Outcome::Cancelled { .. } => {
            finish(row, TaskStatus::Cancelled, EventKind::Cancelled, json!({"reason": "cancel requested"}), now, ev)
        }
        Outcome::TimedOut { .. } => {
            let ms = row.task.timeout_ms;
            let message = format!("attempt {attempt} ran past its timeout of {} ms", ms.unwrap_or(0));
            row.task.error = Some(TaskError::new("timed_out", message));
            finish(row, TaskStatus::TimedOut, EventKind::TimedOut, json!({"timeout_ms": ms}), now, ev)
        }
    };
    events.extend(change.events);
    Ok(Change { task: change.task, events })
}

/// Hands a task back for immediate requeue without spending an attempt; `None` when `worker`
/// does not hold it at `attempt`.
pub(super) fn release(
    row: &mut TaskRow,
    worker: &str,
    attempt: u32,
    reason: &str,
    now: Micros,
    ev: &mut EventBuf,
) -> Option<Change> {
    if !held_by(row, attempt) || row.task.worker.as_deref() != Some(worker) {
        return None;
    }
    if row.task.cancel_requested {
        let data = json!({"reason": "cancel requested"});
        return Some(finish(row, TaskStatus::Cancelled, EventKind::Cancelled, data, now, ev));
    }
    row.last_seq += 1;
    row.run_at = now;
    row.lease_until = None;
    row.released += 1;
    row.task.status = TaskStatus::Queued;
    row.task.worker = None;
    let data = json!({"attempt": attempt, "delay_ms": 0, "reason": reason});
    let event = ev.push(Some(&row.task), row.last_seq, EventKind::Retrying, attempt, now, data);
    Some(Change { task: row.task.clone(), events: vec![event] })
}

/// Requeues (or fails) a running attempt whose lease ended before `now` or whose worker is not
/// alive; `None` when neither holds any more (renewed, finished, worker back).
pub(super) fn reap(
    row: &mut TaskRow,
    attempt: u32,
    worker_alive: bool,
    now: Micros,
    ev: &mut EventBuf,
) -> Option<Change> {
    if !held_by(row, attempt) {
        return None;
    }
    let expired = row.lease_until.is_some_and(|until| until < now);
    let lost = row.task.worker.is_none() || !worker_alive;
    if !expired && !lost {
        return None;
    }
    let worker = row.task.worker.clone().unwrap_or_else(|| "?".into());
    let error = if expired {
        TaskError::new("lease_expired", format!("attempt {attempt}: the lease of worker {worker:?} expired"))
    } else {
        TaskError::new("worker_lost", format!("attempt {attempt}: worker {worker:?} is gone"))
    };
    Some(fail_or_retry(row, error, true, now, ev))
}

/// A queued task is cancelled at once, a running one flagged for its worker, a terminal one
/// left as it is.
pub(super) fn request_cancel(row: Option<&mut TaskRow>, id: TaskId, now: Micros, ev: &mut EventBuf) -> Result<Change> {
    let Some(row) = row else { return Err(Error::NotFound(id)) };
    match row.task.status {
        TaskStatus::Queued => {
            row.task.cancel_requested = true;
            let data = json!({"reason": "cancelled while queued"});
            Ok(finish(row, TaskStatus::Cancelled, EventKind::Cancelled, data, now, ev))
        }
        TaskStatus::Running => {
            row.task.cancel_requested = true;
            Ok(Change { task: row.task.clone(), events: Vec::new() })
        }
        _ => Ok(Change { task: row.task.clone(), events: Vec::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_core::{Task, Usage};

    fn running(attempt: u32, max_attempts: u32) -> TaskRow {
        let now = Micros(1_000_000);
        TaskRow {
            task: Task {
                id: TaskId::new(),
                agent: "echo".into(),
                input: json!(1),
                status: TaskStatus::Running,
                priority: 0,
                timeout_ms: Some(50),
                max_attempts,
                attempt,
                idempotency_key: None,
                session_id: None,
                parent_id: None,
                budget: Default::default(),
                tenant: "default".into(),
                metadata: json!({}),
                result: None,
                error: None,
                usage: Usage::default(),
                cancel_requested: false,
                created_at: now,
                started_at: Some(now),
                finished_at: None,
                worker: Some("w1".into()),
            },
            seq: 1,
            released: 0,
            backoff_ms: 100,
            backoff_max_ms: 250,
            last_seq: 2,
            lease_until: Some(Micros(now.0 + 1_000_000)),
            run_at: now,
            spent_at: None,
        }
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
            let mut ev = EventBuf::default();
            let now = Micros(5_000_000);
            let id = row.task.id;
            let change = complete(Some(&mut row), id, attempt, &[], &failed(true), now, &mut ev).unwrap();
            assert_eq!(change.task.status, status, "attempt {attempt} of {max}");
            assert_eq!(row.task, change.task);
            assert_eq!(row.last_seq, 3);
            let event = &change.events[0];
            assert_eq!((event.seq, event.pos), (3, 0));
            match delay {
                Some(ms) => {
                    assert_eq!(event.kind, EventKind::Retrying);
                    assert_eq!(event.data["delay_ms"], json!(ms));
                    assert_eq!(row.run_at, now.plus(Duration::from_millis(ms)));
                    assert_eq!((row.task.worker.as_deref(), row.lease_until), (None, None));
                }
                None => {
                    assert_eq!(event.kind, EventKind::Failed);
                    assert_eq!(row.task.finished_at, Some(now));
                }
            }
        }
    }

    #[test]
    fn completion_is_fenced_and_counts_drafts_before_the_terminal_event() {
        let mut row = running(2, 3);
        let id = row.task.id;
        let mut ev = EventBuf::default();
        let now = Micros(7);
        let ok = Outcome::Succeeded {
            result: json!("r"),
            usage: Usage { input_tokens: 1, output_tokens: 2, cost_usd: 0.5 },
        };
        assert!(matches!(complete(Some(&mut row), id, 1, &[], &ok, now, &mut ev), Err(Error::Fenced(_))));
        assert!(matches!(complete(None, id, 2, &[], &ok, now, &mut ev), Err(Error::NotFound(_))));
        assert!(ev.is_empty(), "a fenced completion queued events");

        let drafts = [EventDraft::output("a"), EventDraft::output("b")];
        let change = complete(Some(&mut row), id, 2, &drafts, &ok, now, &mut ev).unwrap();
        assert_eq!(row.spent_at, Some(now), "usage is dated by the attempt that spent it");
        let seqs: Vec<(u64, u64)> = change.events.iter().map(|e| (e.seq, e.pos)).collect();
        assert_eq!(seqs, [(3, 0), (4, 1), (5, 2)]);
        assert_eq!(change.task.usage.output_tokens, 2);
        assert_eq!(change.task.result, Some(json!("r")));
        assert!(matches!(complete(Some(&mut row), id, 2, &[], &ok, now, &mut ev), Err(Error::Fenced(_))));
        assert!(matches!(append(Some(&mut row), id, 2, &drafts, now, &mut ev), Err(Error::Fenced(_))));
        assert_eq!(ev.len(), 3);
    }

    #[test]
    fn release_requeues_at_once_and_reap_needs_an_expired_lease_or_a_lost_worker() {
        let now = Micros(1_500_000);
        let mut row = running(1, 1);
        let mut ev = EventBuf::default();
        assert!(release(&mut row, "w2", 1, "drain", now, &mut ev).is_none(), "another worker's task");
        assert!(release(&mut row, "w1", 2, "drain", now, &mut ev).is_none(), "another attempt");
        let change = release(&mut row, "w1", 1, "drain", now, &mut ev).unwrap();
        assert_eq!((change.task.status, row.released, row.run_at), (TaskStatus::Queued, 1, now));

        // (lease ends after now?, worker alive?, the reaper's error code)
        let cases = [(true, true, None), (false, true, Some("lease_expired")), (true, false, Some("worker_lost"))];
        for (live_lease, alive, code) in cases {
            let mut row = running(1, 3);
            row.lease_until = Some(if live_lease { Micros(now.0 + 1) } else { Micros(now.0 - 1) });
            let got = reap(&mut row, 1, alive, now, &mut ev);
            assert_eq!(got.and_then(|c| c.task.error).map(|e| e.code), code.map(String::from));
        }
        let mut cancelled = running(1, 3);
        cancelled.task.cancel_requested = true;
        cancelled.lease_until = Some(Micros(0));
        assert_eq!(reap(&mut cancelled, 1, true, now, &mut ev).unwrap().task.status, TaskStatus::Cancelled);
    }
}
