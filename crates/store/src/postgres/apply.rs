//! The state changes of existing tasks, in memory. The writer loads every row a batch touches
//! (locked, in one statement), applies each job's change through the lifecycle in arrival order,
//! and writes the rows that changed back in one statement. This is the glue: the rules are the
//! lifecycle's ([`crate::lifecycle`]), the events go to the batch's buffer.

use super::rows::{EventBuf, TaskRow};
use crate::lifecycle::{self, Output, Step};
use crate::{Change, Error, Result};
use smith_core::{Event, EventDraft, Micros, Outcome, TaskId};

/// Queues a transition's events in the batch's buffer, with what they add to `tenant_output`.
pub(super) fn emit(row: &TaskRow, steps: Vec<Step>, now: Micros, ev: &mut EventBuf) -> Vec<Event> {
    steps
        .into_iter()
        .map(|s| {
            let output = s.output;
            let event = ev.push(&row.task, s, now);
            match output {
                Output::None => {}
                Output::Data => ev.count_output(ev.last_data_len()),
                Output::Bytes(n) => ev.count_output(n),
            }
            event
        })
        .collect()
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
    let row = row.ok_or(Error::Fenced(id))?;
    let steps = lifecycle::append(row, attempt, drafts).map_err(|_| Error::Fenced(id))?;
    Ok(emit(row, steps, now, ev))
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
    let row = row.ok_or(Error::NotFound(id))?;
    let steps = lifecycle::complete(row, attempt, drafts, outcome, now).map_err(|_| Error::Fenced(id))?;
    let events = emit(row, steps, now, ev);
    Ok(Change { task: row.task.clone(), events })
}

/// Hands a task back for immediate requeue; `None` when `worker` does not hold it at `attempt`.
pub(super) fn release(
    row: &mut TaskRow,
    worker: &str,
    attempt: u32,
    reason: &str,
    now: Micros,
    ev: &mut EventBuf,
) -> Option<Change> {
    let step = lifecycle::release(row, worker, attempt, reason, now).ok()?;
    let events = emit(row, vec![step], now, ev);
    Some(Change { task: row.task.clone(), events })
}

/// Requeues (or fails) a running attempt whose lease ended or whose worker is not alive;
/// `None` when neither holds any more (renewed, finished, worker back).
pub(super) fn reap(
    row: &mut TaskRow,
    attempt: u32,
    worker_alive: bool,
    now: Micros,
    ev: &mut EventBuf,
) -> Option<Change> {
    let step = lifecycle::reap(row, attempt, worker_alive, now).ok()?;
    let events = emit(row, vec![step], now, ev);
    Some(Change { task: row.task.clone(), events })
}

/// The timer pass on one task: its expiry, else its move to the queue; `None` when neither is
/// due any more.
pub(super) fn advance(row: &mut TaskRow, now: Micros, ev: &mut EventBuf) -> Option<Change> {
    let step = lifecycle::expire(row, now).or_else(|_| lifecycle::due(row, now)).ok()?;
    let events = emit(row, vec![step], now, ev);
    Some(Change { task: row.task.clone(), events })
}

/// An attempt parking at its provider's limit: see [`lifecycle::park`].
pub(super) fn park(
    row: Option<&mut TaskRow>,
    id: TaskId,
    attempt: u32,
    drafts: &[EventDraft],
    park: &lifecycle::Park,
    now: Micros,
    ev: &mut EventBuf,
) -> Result<Change> {
    let row = row.ok_or(Error::Fenced(id))?;
    let steps = lifecycle::park(row, attempt, drafts, park, now).map_err(|_| Error::Fenced(id))?;
    let events = emit(row, steps, now, ev);
    Ok(Change { task: row.task.clone(), events })
}

/// A cancel request: see [`lifecycle::cancel`].
pub(super) fn request_cancel(row: Option<&mut TaskRow>, id: TaskId, now: Micros, ev: &mut EventBuf) -> Result<Change> {
    let row = row.ok_or(Error::NotFound(id))?;
    let steps = lifecycle::cancel(row, now).into_iter().collect();
    let events = emit(row, steps, now, ev);
    Ok(Change { task: row.task.clone(), events })
}

/// A request of an attempt: see [`crate::approvals::wait`].
pub(super) fn wait(
    row: Option<&mut TaskRow>,
    id: TaskId,
    attempt: u32,
    request: &smith_core::approval::NewRequest,
    now: Micros,
    ev: &mut EventBuf,
) -> Result<crate::Asked> {
    let row = row.ok_or(Error::Fenced(id))?;
    let (approval, step) = crate::approvals::wait(row, attempt, request, now)?;
    let events = emit(row, vec![step], now, ev);
    Ok(crate::Asked { approval, change: Change { task: row.task.clone(), events } })
}

/// An answer to a locked record: see [`crate::approvals::answer`].
pub(super) fn answer(
    row: Option<&mut TaskRow>,
    record: Option<&mut smith_core::Approval>,
    job: &super::jobs::AnswerJob,
    now: Micros,
    ev: &mut EventBuf,
) -> Result<crate::Asked> {
    let not_found = || Error::Domain(smith_core::Error::not_found(format!("request {} not found", job.approval)));
    let record = record.ok_or_else(not_found)?;
    let row = row.ok_or(Error::NotFound(job.id))?;
    let step = crate::approvals::answer(row, record, job.answer.clone(), now)?;
    let events = emit(row, vec![step], now, ev);
    Ok(crate::Asked { approval: record.clone(), change: Change { task: row.task.clone(), events } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use smith_core::{AgentDef, ExecutorKind, NewTask, Usage};

    fn running() -> TaskRow {
        let now = Micros(1_000_000);
        let (mut row, _) =
            lifecycle::submit(&NewTask::new("echo", json!(1)), &AgentDef::new("echo", ExecutorKind::Echo), now);
        lifecycle::claim(&mut row, "w1", Micros(2_000_000), now).unwrap();
        row
    }

    #[test]
    fn a_completion_queues_its_events_in_order_and_counts_the_output_it_stores() {
        let mut row = running();
        let id = row.task.id;
        let mut ev = EventBuf::default();
        let ok = Outcome::Succeeded { result: json!("r"), usage: Usage::default() };
        assert!(matches!(complete(Some(&mut row), id, 2, &[], &ok, Micros(7), &mut ev), Err(Error::Fenced(_))));
        assert!(matches!(complete(None, id, 1, &[], &ok, Micros(7), &mut ev), Err(Error::NotFound(_))));
        assert!(matches!(append(None, id, 1, &[], Micros(7), &mut ev), Err(Error::Fenced(_))));
        assert!(ev.is_empty(), "a fenced completion queued events");

        let drafts = [EventDraft::output("a"), EventDraft::output("bb")];
        let change = complete(Some(&mut row), id, 1, &drafts, &ok, Micros(7), &mut ev).unwrap();
        let seqs: Vec<(u64, u64)> = change.events.iter().map(|e| (e.seq, e.pos)).collect();
        assert_eq!(seqs, [(3, 0), (4, 1), (5, 2)]);
        // each draft's data as stored ("\"a\"", "\"bb\""), and the result ("\"r\"") on the success
        assert_eq!(ev.output, [3, 4, 3]);
        assert_eq!(change.task, row.task);
    }
}
