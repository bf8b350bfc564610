//! Sessions (SPEC §4): a multi-turn conversation with one agent. Each turn is a task carrying
//! the session id; the store runs a session's turns one at a time, in order, and the worker
//! hands each turn the finished ones (Claude Code resumes its own session, HTTP LLM agents
//! get the message history).

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody, PathText};
use crate::submit::submit_task;
use crate::trace::TraceParent;
use crate::AppState;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use smith_core::{Budget, Micros, NewTask};
use smith_store::{Session, TaskQuery};
use std::sync::Arc;

/// Most turns a session shows (and may have).
pub const MAX_TURNS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    agent: String,
    /// The first turn, when given.
    input: Option<Value>,
    metadata: Option<Value>,
    timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    budget: Option<Budget>,
    /// The first turn's output schema.
    output_schema: Option<Value>,
    /// Where the turns' terminal and request events go (later turns keep it unless they name
    /// another).
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    webhook: Option<smith_core::TaskWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TurnRequest {
    input: Value,
    timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    budget: Option<Budget>,
    idempotency_key: Option<String>,
    metadata: Option<Value>,
    output_schema: Option<Value>,
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    webhook: Option<smith_core::TaskWebhook>,
}

pub(crate) async fn start(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    TraceParent(traceparent): TraceParent,
    JsonBody(req): JsonBody<StartRequest>,
) -> ApiResult<Response> {
    smith_core::agent::validate_name(&req.agent)?;
    let metadata = req.metadata.unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err(ApiError::unprocessable("metadata must be a JSON object"));
    }
    let session = Session {
        id: uuid::Uuid::now_v7().to_string(),
        agent: req.agent,
        tenant: p.write_tenant(),
        metadata,
        created_at: Micros::now(),
    };
    // Validate the first turn before creating anything: bad input changes nothing.
    let mut secret = None;
    let first = match req.input {
        Some(input) => {
            let mut t = turn_task(&session, input, req.timeout_ms, req.budget, None, None);
            t.output_schema = req.output_schema;
            t.traceparent = traceparent;
            t.validate()?;
            (t.webhook, secret) = crate::webhooks::prepare_task_webhook(&s, req.webhook).await?;
            Some(t)
        }
        None if req.timeout_ms.is_some()
            || req.budget.is_some()
            || req.output_schema.is_some()
            || req.webhook.is_some() =>
        {
            return Err(ApiError::unprocessable(
                "timeout_ms, budget, output_schema and webhook apply to a turn: give input too",
            ))
        }
        None => None,
    };
    s.store.create_session(&session).await?;
    let mut turns = Vec::new();
    if let Some(t) = first {
        turns.push(crate::webhooks::reveal(json!(submit_task(&s, t, None).await?.task), secret));
    }
    let location = format!("/v1/sessions/{}", session.id);
    let body = json!({
        "id": session.id, "agent": session.agent, "tenant": session.tenant, "metadata": session.metadata,
        "created_at": session.created_at, "turns": turns,
    });
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(body)).into_response())
}

fn turn_task(
    session: &Session,
    input: Value,
    timeout_ms: Option<u64>,
    budget: Option<Budget>,
    key: Option<String>,
    metadata: Option<Value>,
) -> NewTask {
    let mut t = NewTask::new(session.agent.clone(), input);
    t.session_id = Some(session.id.clone());
    t.tenant = session.tenant.clone();
    t.timeout_ms = timeout_ms;
    t.budget = budget.unwrap_or_default();
    t.idempotency_key = key;
    t.metadata = metadata.unwrap_or_else(|| json!({}));
    t
}

async fn load(s: &AppState, p: &Principal, id: &str) -> ApiResult<Session> {
    match s.store.get_session(id).await? {
        Some(session) if p.sees(&session.tenant) => Ok(session),
        _ => Err(ApiError::not_found(format!("session {id:?} not found"))),
    }
}

pub(crate) async fn add_turn(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
    TraceParent(traceparent): TraceParent,
    JsonBody(req): JsonBody<TurnRequest>,
) -> ApiResult<Response> {
    let session = load(&s, &p, &id).await?;
    let mut task = turn_task(&session, req.input, req.timeout_ms, req.budget, req.idempotency_key, req.metadata);
    task.output_schema = req.output_schema;
    task.traceparent = traceparent;
    task.validate()?;
    let (webhook, secret) = match req.webhook {
        Some(w) => crate::webhooks::prepare_task_webhook(&s, Some(w)).await?,
        // the session's webhook: the one its latest turn was given
        None => (s.store.list_tasks(&query(&session.id, 1)).await?.items.pop().and_then(|t| t.webhook), None),
    };
    task.webhook = webhook;
    if s.store.count_session_tasks(&session.id, &session.tenant).await? >= MAX_TURNS as u64 {
        return Err(ApiError::new(smith_core::Code::Conflict, format!("session {id} has {MAX_TURNS} turns, the most")));
    }
    let submitted = submit_task(&s, task, None).await?;
    if submitted.task.session_id.as_deref() != Some(session.id.as_str()) {
        return Err(ApiError::new(
            smith_core::Code::Conflict,
            format!("idempotency_key already names task {}, which is not a turn of this session", submitted.task.id),
        ));
    }
    let status = if submitted.created { StatusCode::CREATED } else { StatusCode::OK };
    let location = format!("/v1/tasks/{}", submitted.task.id);
    let body = crate::webhooks::reveal(json!(submitted.task), secret.filter(|_| submitted.created));
    Ok((status, [(axum::http::header::LOCATION, location)], Json(body)).into_response())
}

fn query(id: &str, limit: usize) -> TaskQuery {
    TaskQuery { session_id: Some(id.to_string()), limit, ..Default::default() }
}

pub(crate) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let session = load(&s, &p, &id).await?;
    let mut turns = s.store.list_tasks(&query(&session.id, MAX_TURNS)).await?.items;
    turns.retain(|t| t.tenant == session.tenant);
    turns.reverse();
    let mut usage = smith_core::Usage::default();
    for t in &turns {
        usage.add(&t.usage);
    }
    Ok(Json(json!({
        "id": session.id, "agent": session.agent, "tenant": session.tenant, "metadata": session.metadata,
        "created_at": session.created_at, "usage": usage, "turns": turns,
    }))
    .into_response())
}
