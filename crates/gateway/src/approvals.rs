//! A person in the loop, on the gateway: the routes through which people see and answer the
//! requests agents make (`/v1/approvals`, `/v1/tasks/{id}/approvals[/{aid}]`), and the one way a
//! running attempt asks ([`ask`]), which the MCP tools (`permission_prompt` for Claude Code's
//! permission prompts, `request_approval`, `ask_human`) go through.
//!
//! A request parks the task (`waiting_input`) in the store and tells the worker to stop the
//! attempt (`smith.control.park`; the lease renewal tells it too): a wait holds no slot and no
//! lease however long it lasts. An answer queues the task again and wakes its agent's workers;
//! the next attempt finds the answer ([`known_answer`]) when it asks the same thing again.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};
use crate::AppState;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use smith_core::approval::{AnswerBody, ApprovalStatus, Decision, NewRequest, Pattern, RequestKind, ToolCall};
use smith_core::{AgentDef, Approval, Micros, Task, TaskId};
use smith_store::{ApprovalQuery, Asked};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    status: Option<String>,
    task_id: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

/// `GET /v1/approvals`: the caller's tenant's requests, newest first (`?status=pending`).
pub(crate) async fn list(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    QueryParams(q): QueryParams<ListParams>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=smith_store::APPROVAL_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1..={}", smith_store::APPROVAL_LIMIT)));
    }
    let status = q.status.as_deref().map(str::parse::<ApprovalStatus>).transpose()?;
    let task = q.task_id.as_deref().map(str::parse::<TaskId>).transpose()?;
    let query = ApprovalQuery { tenant: p.filter(), task, status, before: q.before, limit: q.limit.unwrap_or(100) };
    let items = s.store.list_approvals(&query).await?;
    let next = (items.len() == query.limit()).then(|| items.last().map(|a| a.id.clone())).flatten();
    Ok(Json(json!({"items": items, "next_before": next})).into_response())
}

/// `GET /v1/tasks/{id}/approvals`: a task's requests, newest first.
pub(crate) async fn of_task(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let task = s.visible_task(&p, id.parse::<TaskId>()?).await?;
    let query = ApprovalQuery { task: Some(task.id), limit: smith_store::APPROVAL_LIMIT, ..Default::default() };
    let items = s.store.list_approvals(&query).await?;
    Ok(Json(json!({"items": items})).into_response())
}

/// `POST /v1/tasks/{id}/approvals/{aid}`: answers a pending request, once. Another tenant's task
/// or a request of another task is 404; a second answer is 409.
pub(crate) async fn answer(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path((id, aid)): Path<(String, String)>,
    JsonBody(body): JsonBody<AnswerBody>,
) -> ApiResult<Response> {
    let task = s.visible_task(&p, id.parse::<TaskId>()?).await?;
    let missing = || ApiError::not_found(format!("task {} has no request {aid:?}", task.id));
    let approval = s.store.get_approval(&aid).await?.filter(|a| a.task_id == task.id).ok_or_else(missing)?;
    let answer = body.answer(approval.kind, &p.actor, Micros::now())?;
    let decision = answer.decision.as_str();
    let asked = s.store.answer_request(task.id, &approval.id, answer).await?;
    crate::metrics::approval_answered(decision);
    resumed(&s, &asked).await;
    Ok(Json(asked.approval).into_response())
}

/// Announces an answer and wakes the task's agent: its next attempt resumes with it.
pub(crate) async fn resumed(s: &AppState, asked: &Asked) {
    smith_bus::publish_events(s.bus.as_ref(), &asked.change.events).await;
    let agent = &asked.change.task.agent;
    let _ = s.bus.publish(&smith_bus::subjects::wake(agent), bytes::Bytes::new()).await;
}

/// How long agent definitions read from the store are reused: a burst of requests reads them
/// once, not once each (the listing counts every agent's tasks).
const DEFINITIONS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Agent definitions by name, as the store had them when last read.
#[derive(Default)]
pub(crate) struct Definitions(std::sync::Mutex<Option<(std::time::Instant, Arc<Vec<AgentDef>>)>>);

/// The agent definition of a running task, as the store has it (read at most every few
/// seconds).
pub(crate) async fn definition(s: &AppState, task: &Task) -> Result<AgentDef, ApiError> {
    let fresh = {
        let held = s.definitions.0.lock().expect("definitions lock");
        held.as_ref().filter(|(at, _)| at.elapsed() < DEFINITIONS_TTL).map(|(_, defs)| defs.clone())
    };
    let defs = match fresh {
        Some(defs) => defs,
        None => {
            let defs: Arc<Vec<AgentDef>> = Arc::new(s.store.agents().await?.into_iter().map(|a| a.def).collect());
            *s.definitions.0.lock().expect("definitions lock") = Some((std::time::Instant::now(), defs.clone()));
            defs
        }
    };
    let found = defs.iter().find(|d| d.name == task.agent).cloned();
    found.ok_or_else(|| ApiError::not_found(format!("agent {:?} is not defined", task.agent)))
}

/// An answer this task was given already for the same request (its attempt asks again after it
/// resumed): a deny every time, an allow or a question's answer once.
pub(crate) async fn known_answer(
    s: &AppState,
    task: &Task,
    kind: RequestKind,
    tool: Option<&ToolCall>,
    text: Option<&str>,
) -> Result<Option<Approval>, ApiError> {
    let query = ApprovalQuery { task: Some(task.id), limit: smith_store::APPROVAL_LIMIT, ..Default::default() };
    let found = s
        .store
        .list_approvals(&query)
        .await?
        .into_iter()
        .find(|a| a.same_request(kind, tool, text) && a.usable_answer().is_some());
    if let Some(a) = &found {
        if a.answer.as_ref().is_some_and(|x| x.decision == Decision::Allow) {
            s.store.use_answer(&a.id).await?;
        }
    }
    Ok(found)
}

/// A running attempt asks a person: the task parks and the worker is told to stop the attempt.
pub(crate) async fn ask(
    s: &AppState,
    task: &Task,
    def: &AgentDef,
    kind: RequestKind,
    tool: Option<ToolCall>,
    text: Option<String>,
    state: Option<Value>,
) -> Result<Approval, ApiError> {
    let expires_at = Micros::now().plus(def.approval_timeout);
    let on_timeout = def.on_approval_timeout;
    let request = NewRequest { kind, tool, text, expires_at: Some(expires_at), on_timeout, state };
    let asked = s.store.request_input(task.id, task.attempt, request).await?;
    smith_bus::publish_events(s.bus.as_ref(), &asked.change.events).await;
    // the lease renewal tells the worker too; this makes it stop the attempt now
    let _ = s.bus.publish(smith_bus::subjects::PARK, bytes::Bytes::from(task.id.to_string())).await;
    crate::metrics::approval_requested(kind.as_str());
    Ok(asked.approval)
}

/// The first of the agent's `approve` patterns a call matches.
pub(crate) fn needs_person(def: &AgentDef, tool: &str, input: &Value) -> Option<String> {
    let patterns: Vec<Pattern> = smith_core::approval::parse_patterns(&def.approve).unwrap_or_default();
    smith_core::approval::first_match(&patterns, tool, input).map(|p| p.as_str().to_string())
}
