//! What both stores share about requests a person answers: the query, the write's output, and
//! the pure parts of a request and an answer (the record and the event's data).

use crate::{Change, Error};
use serde_json::{json, Value};
use smith_core::approval::{Answer, ApprovalStatus, Decision, NewRequest, RequestKind};
use smith_core::{Approval, Code, EventKind, Micros, Task, TaskId, TaskStatus};

/// Most requests one listing returns.
pub const APPROVAL_LIMIT: usize = 500;

/// A listing of requests: newest first, `before` an id for the next page.
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    pub tenant: Option<String>,
    pub task: Option<TaskId>,
    pub status: Option<ApprovalStatus>,
    pub before: Option<String>,
    pub limit: usize,
}

impl ApprovalQuery {
    pub fn limit(&self) -> usize {
        self.limit.clamp(1, APPROVAL_LIMIT)
    }
}

/// What a request or an answer wrote: the request's record and its task's change.
#[derive(Debug, Clone)]
pub struct Asked {
    pub approval: Approval,
    pub change: Change,
}

/// The record of a request `task` makes now, pending.
pub(crate) fn record(task: &Task, attempt: u32, r: &NewRequest, now: Micros) -> Approval {
    Approval {
        id: smith_core::approval::new_id(),
        task_id: task.id,
        tenant: task.tenant.clone(),
        agent: task.agent.clone(),
        attempt,
        kind: r.kind,
        status: ApprovalStatus::Pending,
        tool: r.tool.clone(),
        text: r.text.clone(),
        created_at: now,
        expires_at: r.expires_at,
        on_timeout: r.on_timeout,
        answer: None,
        used: false,
        state: r.state.clone(),
    }
}

/// Applies a request to its task's row: the record (cancelled when the task ended instead of
/// waiting) and the step, or `Fenced` when `attempt` does not hold the task.
pub(crate) fn wait(
    row: &mut crate::lifecycle::Row,
    attempt: u32,
    r: &NewRequest,
    now: Micros,
) -> Result<(Approval, crate::lifecycle::Step), Error> {
    r.validate()?;
    let mut a = record(&row.task, attempt, r, now);
    let (kind, data) = requested(&a);
    let step = crate::lifecycle::wait(row, attempt, kind, data, now).map_err(|_| Error::Fenced(row.task.id))?;
    if row.task.status != TaskStatus::WaitingInput {
        a.status = ApprovalStatus::Cancelled;
    }
    Ok((a, step))
}

/// Applies an answer to a pending record and its waiting task's row.
pub(crate) fn answer(
    row: &mut crate::lifecycle::Row,
    a: &mut Approval,
    answer: Answer,
    now: Micros,
) -> Result<crate::lifecycle::Step, Error> {
    if a.task_id != row.task.id {
        return Err(Error::Domain(smith_core::Error::not_found(format!("request {} not found", a.id))));
    }
    let mut copy = a.clone();
    let data = answered(&mut copy, answer)?;
    let step = crate::lifecycle::answer(row, data, now).map_err(|_| not_waiting(row.task.id, row.task.status))?;
    *a = copy;
    Ok(step)
}

/// The event kind and data of a request.
pub(crate) fn requested(a: &Approval) -> (EventKind, Value) {
    let kind = match a.kind {
        RequestKind::Approval => EventKind::ApprovalRequested,
        RequestKind::Input => EventKind::InputRequested,
    };
    let data = json!({
        "approval_id": a.id, "kind": a.kind, "tool": a.tool, "text": a.text,
        "expires_at": a.expires_at, "on_timeout": a.on_timeout,
        // who may answer: a credential of the task's tenant with the write scope (or the platform)
        "answerable_by": {"tenant": a.tenant, "scope": "tasks:write"},
    });
    (kind, data)
}

/// The record answered: its new status, or `Conflict` when it was answered already.
pub(crate) fn answered(a: &mut Approval, answer: Answer) -> Result<Value, Error> {
    if a.status != ApprovalStatus::Pending {
        let m = format!("request {} is {} already", a.id, a.status);
        return Err(Error::Domain(smith_core::Error::new(Code::Conflict, m)));
    }
    a.status = match (a.kind, answer.decision) {
        (_, Decision::Deny) => ApprovalStatus::Denied,
        (RequestKind::Approval, Decision::Allow) => ApprovalStatus::Allowed,
        (RequestKind::Input, Decision::Allow) => ApprovalStatus::Answered,
    };
    let data = json!({
        "approval_id": a.id, "kind": a.kind, "status": a.status, "decision": answer.decision,
        "message": answer.message, "input": answer.input, "answer": answer.answer, "by": answer.by,
    });
    a.answer = Some(answer);
    Ok(data)
}

/// `Conflict` for an answer to a request whose task cannot take one.
pub(crate) fn not_waiting(id: TaskId, status: TaskStatus) -> Error {
    let m = format!("task {id} is {status}: it waits for no answer");
    Error::Domain(smith_core::Error::new(Code::Conflict, m))
}

/// A request's stored JSON columns, parsed.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>, Error> {
    text.map(|t| serde_json::from_str(&t)).transpose().map_err(Error::from)
}
