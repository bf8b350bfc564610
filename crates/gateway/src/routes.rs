//! The HTTP routes of SPEC §4 (sessions come later) and their request and response shapes.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};
use crate::stream::{self, SseBody};
use crate::submit::{submit_task, MAX_DEPTH};
use crate::AppState;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use smith_core::{BreakerState, Budget, Code, EventKind, Micros, NewTask, NodeRole, NodeStatus, TaskId, TaskStatus};
use smith_store::{FeedFilter, TaskQuery, UsageBy};
use std::sync::Arc;

const OPENAPI: &str = include_str!("openapi.json");

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/tasks", post(submit).get(list))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/tasks/{id}/events", get(task_events))
        .route("/v1/tasks/{id}/patch", get(task_patch))
        .route("/v1/tasks/{id}/artifacts", get(task_artifacts))
        .route("/v1/tasks/{id}/artifacts/{*name}", get(task_artifact))
        .route("/v1/tasks/{id}/approvals", get(crate::approvals::of_task))
        .route("/v1/tasks/{id}/approvals/{aid}", post(crate::approvals::answer))
        .route("/v1/approvals", get(crate::approvals::list))
        .route("/v1/events", get(feed))
        .route("/v1/sessions", post(crate::sessions::start))
        .route("/v1/sessions/{id}", get(crate::sessions::show))
        .route("/v1/sessions/{id}/turns", post(crate::sessions::add_turn))
        .route("/v1/usage", get(usage))
        .route("/v1/keys", post(crate::keys::create).get(crate::keys::list))
        .route("/v1/keys/{id}/revoke", post(crate::keys::revoke))
        .route("/v1/audit", get(crate::keys::audit))
        .route("/v1/webhooks", post(crate::webhooks::create).get(crate::webhooks::list))
        .route("/v1/webhooks/{id}", get(crate::webhooks::show).delete(crate::webhooks::delete))
        .route("/v1/webhooks/{id}/deliveries", get(crate::webhooks::deliveries))
        .route("/v1/webhooks/{id}/deliveries/{delivery}/replay", post(crate::webhooks::replay))
        .route("/v1/schedules", post(crate::schedules::create).get(crate::schedules::list))
        .route("/v1/schedules/{id}", get(crate::schedules::show).delete(crate::schedules::delete))
        .route("/v1/schedules/{id}/pause", post(crate::schedules::pause))
        .route("/v1/schedules/{id}/resume", post(crate::schedules::resume))
        .route("/mcp", post(crate::mcp::post).get(crate::mcp::get))
        .route("/v1/agents", get(agents))
        .route("/v1/nodes", get(nodes))
        .route("/v1/scaling", get(scaling))
        .route("/v1/providers", get(providers))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> Response {
    let body = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this route"}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// A task id from the path; anything malformed (not a UUID, not even UTF-8) is a JSON 400.
struct PathId(TaskId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("malformed task id: {e}")))?;
        Ok(PathId(raw.parse::<TaskId>()?))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    agent: String,
    input: Value,
    priority: Option<u8>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    idempotency_key: Option<String>,
    session_id: Option<String>,
    parent_id: Option<String>,
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    budget: Option<Budget>,
    metadata: Option<Value>,
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    workspace: Option<smith_core::TaskWorkspace>,
    output_schema: Option<Value>,
    #[serde(default, deserialize_with = "crate::error::object_or_null")]
    webhook: Option<smith_core::TaskWebhook>,
    /// Start no earlier than this (RFC 3339).
    run_at: Option<Micros>,
    /// Start no earlier than this long after submission ("30s", "2h", or milliseconds).
    #[serde(default, with = "smith_core::time::duration::option")]
    delay: Option<std::time::Duration>,
    /// End `expired` if not started this long after it may start.
    #[serde(default, with = "smith_core::time::duration::option")]
    ttl: Option<std::time::Duration>,
    concurrency_key: Option<String>,
}

/// When a submission asks to start: `run_at`, or `delay` from now; never both.
pub(crate) fn start_time(run_at: Option<Micros>, delay: Option<std::time::Duration>) -> ApiResult<Option<Micros>> {
    match (run_at, delay) {
        (Some(_), Some(_)) => Err(ApiError::unprocessable("give run_at or delay, not both")),
        (Some(at), None) => Ok(Some(at)),
        (None, Some(d)) if d > smith_core::task::MAX_DELAY => Err(ApiError::unprocessable(format!(
            "delay must be at most {} days",
            smith_core::task::MAX_DELAY.as_secs() / 86_400
        ))),
        (None, Some(d)) => Ok(Some(Micros::now().plus(d))),
        (None, None) => Ok(None),
    }
}

async fn submit(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    audit: Option<Extension<crate::audit::Pending>>,
    crate::trace::TraceParent(traceparent): crate::trace::TraceParent,
    JsonBody(req): JsonBody<SubmitRequest>,
) -> ApiResult<Response> {
    let parent_id = req
        .parent_id
        .as_deref()
        .map(str::parse::<TaskId>)
        .transpose()
        .map_err(|e| ApiError::unprocessable(format!("parent_id: {}", e.message)))?;
    let tenant = p.write_tenant();
    if let Some(parent) = parent_id {
        match s.store.get_task(parent).await? {
            Some(t) if t.tenant == tenant => {}
            _ => return Err(ApiError::unprocessable(format!("parent_id {parent} names no task"))),
        }
    }
    let session_id = req.session_id;
    let run_at = start_time(req.run_at, req.delay)?;
    let (webhook, secret) = crate::webhooks::prepare_task_webhook(&s, req.webhook).await?;
    let task = NewTask {
        id: TaskId::new(),
        agent: req.agent,
        input: req.input,
        priority: req.priority.unwrap_or(0),
        timeout_ms: req.timeout_ms,
        max_attempts: req.max_attempts,
        idempotency_key: req.idempotency_key,
        session_id: session_id.clone(),
        parent_id,
        budget: req.budget.unwrap_or_default(),
        tenant,
        metadata: req.metadata.unwrap_or_else(|| json!({})),
        workspace: req.workspace,
        output_schema: req.output_schema,
        webhook,
        run_at,
        ttl: req.ttl,
        concurrency_key: req.concurrency_key,
        traceparent,
    };
    if let Some(sid) = &session_id {
        task.validate()?;
        own_session(&s, sid, &task).await?;
    }
    // the request's audit record goes in the submission's own write
    let record = audit.map(|Extension(a)| a.for_handler(&p));
    let audited = record.is_some();
    let submitted = submit_task(&s, task, record).await?;
    let status = if submitted.created { StatusCode::CREATED } else { StatusCode::OK };
    let location = format!("/v1/tasks/{}", submitted.task.id);
    // a generated webhook secret is shown once, to the submission that created the task
    let secret = secret.filter(|_| submitted.created);
    let body = crate::webhooks::reveal(json!(submitted.task), secret);
    let mut resp = (status, [(axum::http::header::LOCATION, location)], Json(body)).into_response();
    if audited {
        resp.extensions_mut().insert(crate::audit::Written);
    }
    Ok(resp)
}

/// A task naming a session joins it only in its own tenant: another tenant's session names no
/// session, exactly like a missing one would; a session id not yet used becomes this tenant's
/// session (with the task's agent), so no other tenant can join it later.
async fn own_session(s: &AppState, id: &str, task: &NewTask) -> ApiResult<()> {
    let unknown = || ApiError::unprocessable(format!("session_id {id:?} names no session"));
    if let Some(existing) = s.store.get_session(id).await? {
        return if existing.tenant == task.tenant { Ok(()) } else { Err(unknown()) };
    }
    let session = smith_store::Session {
        id: id.to_string(),
        agent: task.agent.clone(),
        tenant: task.tenant.clone(),
        metadata: json!({}),
        created_at: smith_core::Micros::now(),
    };
    match s.store.create_session(&session).await {
        Ok(()) => Ok(()),
        // another submission took the id first: it is this tenant's, or it names no session
        Err(e) if e.code() == Code::Conflict => match s.store.get_session(id).await? {
            Some(existing) if existing.tenant == task.tenant => Ok(()),
            _ => Err(unknown()),
        },
        Err(e) => Err(e.into()),
    }
}

async fn get_task(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    Ok(Json(s.visible_task(&p, id).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    agent: Option<String>,
    session_id: Option<String>,
    parent_id: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    /// Every input and result in full, however large.
    full: Option<bool>,
}

/// Inputs and results above this many bytes are left out of list items unless `full=true`.
pub(crate) const LIST_VALUE_BYTES: usize = 16 << 10;
/// A page of tasks ends early once its inputs and results add up to this many bytes.
pub(crate) const LIST_PAGE_BYTES: usize = 8 << 20;

async fn list(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    QueryParams(p): QueryParams<ListParams>,
) -> ApiResult<Response> {
    let status = p.status.as_deref().map(str::parse::<TaskStatus>).transpose()?;
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid(format!("limit must be 1..=1000, got {limit}")));
    }
    let parent_id = p.parent_id.as_deref().map(str::parse::<TaskId>).transpose()?;
    let q = TaskQuery {
        status,
        agent: p.agent,
        tenant: who.filter(),
        session_id: p.session_id,
        parent_id,
        limit,
        cursor: p.cursor,
        value_limit: (!p.full.unwrap_or(false)).then_some(LIST_VALUE_BYTES),
        max_bytes: Some(LIST_PAGE_BYTES),
    };
    let page = s.store.list_tasks(&q).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for (i, task) in page.items.into_iter().enumerate() {
        let mut item = serde_json::to_value(task).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
        let left_out = page.omitted.get(i).copied().unwrap_or_default();
        if left_out.input_bytes.is_some() {
            item["input"] = Value::Null;
        }
        if left_out.result_bytes.is_some() {
            item["result"] = Value::Null;
        }
        item["input_omitted"] = json!(left_out.input_bytes.is_some());
        item["input_bytes"] = json!(left_out.input_bytes);
        item["result_omitted"] = json!(left_out.result_bytes.is_some());
        item["result_bytes"] = json!(left_out.result_bytes);
        items.push(item);
    }
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
}

async fn cancel(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    s.visible_task(&p, id).await?;
    let task = cancel_one(&s, id).await?;
    cancel_descendants(&s, id).await;
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

async fn cancel_one(s: &AppState, id: TaskId) -> ApiResult<smith_core::Task> {
    let change = s.store.request_cancel(id).await?;
    smith_bus::publish_events(s.bus.as_ref(), &change.events).await;
    if change.task.status == TaskStatus::Running {
        // the flag is durable; the worker also sees it on its next lease renewal
        let _ = s.bus.publish(smith_bus::subjects::CANCEL, bytes::Bytes::from(id.to_string())).await;
    }
    Ok(change.task)
}

/// Cancelling an orchestrator cancels the work it fanned out: every unfinished descendant, down
/// to [`MAX_DEPTH`] generations. Best effort: a child that cannot be cancelled now is logged.
async fn cancel_descendants(s: &AppState, root: TaskId) {
    let mut generation = vec![root];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for parent in generation {
            // ids and statuses are all it needs: no input or result is read
            let q = TaskQuery { parent_id: Some(parent), limit: 1000, value_limit: Some(0), ..Default::default() };
            let children = match s.store.list_tasks(&q).await {
                Ok(page) => page.items,
                Err(e) => {
                    tracing::warn!(task_id = %parent, error = %e, "cannot list sub-tasks to cancel");
                    continue;
                }
            };
            for child in children {
                if !child.status.is_terminal() {
                    if let Err(e) = cancel_one(s, child.id).await {
                        tracing::warn!(task_id = %child.id, error = %e.message, "cannot cancel a sub-task");
                    }
                }
                next.push(child.id);
            }
        }
        if next.is_empty() {
            return;
        }
        generation = next;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    after: Option<String>,
}

/// `Last-Event-ID` wins over `?after=`; both are non-negative integers.
fn resume_point(headers: &HeaderMap, after: Option<&str>) -> ApiResult<Option<u64>> {
    let raw = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("?").to_string()).or(after.map(str::to_string));
    match raw {
        None => Ok(None),
        Some(r) if r.trim().is_empty() => Ok(None),
        Some(r) => r.trim().parse::<u64>().ok().filter(|v| *v <= i64::MAX as u64).map(Some).ok_or_else(|| {
            ApiError::invalid(format!("Last-Event-ID / after must be an integer in 0..=2^63-1, got {r:?}"))
        }),
    }
}

async fn task_events(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    PathId(id): PathId,
    headers: HeaderMap,
    QueryParams(p): QueryParams<StreamParams>,
) -> ApiResult<SseBody> {
    let after = resume_point(&headers, p.after.as_deref())?.unwrap_or(0);
    s.visible_task(&who, id).await?;
    stream::task_stream(s, who.filter(), id, after).await
}

/// What the task's last attempt changed in its git workspace, as `git diff --binary` of its
/// commit range (`text/x-diff`); `x-smith-branch`, `x-smith-from` and `x-smith-to` name it.
async fn task_patch(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let task = s.visible_task(&who, id).await?;
    let mut last = None;
    let mut after = 0;
    loop {
        let page = s.store.events(task.id, after, 1000).await?;
        let Some(end) = page.last().map(|e| e.seq) else { break };
        last = page.into_iter().rev().find(|e| e.kind == EventKind::WorkspaceDiff).map(|e| e.data).or(last);
        after = end;
    }
    let Some(diff) = last else {
        return Err(ApiError::new(
            Code::Conflict,
            format!("task {id} has recorded no workspace patch: its agent has no workspace, or no attempt has ended"),
        ));
    };
    let Some(patch) = diff["patch"].as_str() else {
        return Err(ApiError::new(
            Code::TooLarge,
            format!(
                "the patch of task {id} is {} bytes, more than a task keeps; fetch its branch {}",
                diff["patch_bytes"], diff["branch"]
            ),
        ));
    };
    let header = |k: &str| diff[k].as_str().unwrap_or("").to_string();
    let headers = [
        (axum::http::header::CONTENT_TYPE, "text/x-diff; charset=utf-8".to_string()),
        (axum::http::header::HeaderName::from_static("x-smith-branch"), header("branch")),
        (axum::http::header::HeaderName::from_static("x-smith-from"), header("from")),
        (axum::http::header::HeaderName::from_static("x-smith-to"), header("to")),
    ];
    Ok((headers, patch.to_string()).into_response())
}

/// The task's artifacts, by name: `{"artifacts": [{name, size, sha256, created_at}]}` (none
/// yet is an empty list).
async fn task_artifacts(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    PathId(id): PathId,
) -> ApiResult<Response> {
    let task = s.visible_task(&who, id).await?;
    let artifacts = s.store.artifacts(task.id).await?;
    Ok(Json(json!({"artifacts": artifacts})).into_response())
}

/// A task id and an artifact name (the rest of the path, `/` included) from the path.
struct ArtifactPath(TaskId, String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ArtifactPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((id, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("malformed artifact path: {e}")))?;
        Ok(ArtifactPath(id.parse::<TaskId>()?, name))
    }
}

/// One artifact's bytes, streamed from the artifact storage (`application/octet-stream`, its
/// length, a download name, its SHA-256 in `x-smith-sha256`). Another tenant's task, and a
/// name the task has not stored, are 404.
async fn task_artifact(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    ArtifactPath(id, name): ArtifactPath,
) -> ApiResult<Response> {
    let task = s.visible_task(&who, id).await?;
    if smith_core::artifact::check_name(&name).is_err() {
        return Err(ApiError::not_found(format!("task {id} has no such artifact")));
    }
    let missing = || ApiError::not_found(format!("task {id} has no artifact {name:?}"));
    let Some(artifact) = s.store.artifacts(task.id).await?.into_iter().find(|a| a.name == name) else {
        return Err(missing());
    };
    let Some(storage) = &s.opts.artifacts else {
        return Err(ApiError::new(Code::Unavailable, "this gateway has no artifact storage ([artifacts] url)"));
    };
    let key = smith_artifacts::key(&task.tenant, task.id, &name);
    let object = match storage.get(&key).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return Err(ApiError::new(
                Code::Internal,
                format!("the bytes of artifact {name:?} of task {id} are missing from {}", storage.describe()),
            ))
        }
        Err(e) => return Err(ApiError::new(Code::Unavailable, format!("cannot read artifact {name:?}: {e}"))),
    };
    use axum::http::header::{HeaderName, HeaderValue, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
    let mut resp = axum::body::Body::from_stream(object.body).into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(object.size));
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&name)) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&artifact.sha256) {
        h.insert(HeaderName::from_static("x-smith-sha256"), v);
    }
    Ok(resp)
}

/// `attachment` with the name's last component as the file name: ASCII in `filename` (anything
/// else, quotes and backslashes as `_`), exact in `filename*` (RFC 6266, percent-encoded UTF-8).
fn content_disposition(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let ascii: String = base
        .chars()
        .map(|c| if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' { c } else { '_' })
        .collect();
    let mut exact = String::new();
    for b in base.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            exact.push(b as char);
        } else {
            exact.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{exact}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedParams {
    agent: Option<String>,
    /// Comma-separated event kinds.
    kind: Option<String>,
    after: Option<String>,
}

async fn feed(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<FeedParams>,
) -> ApiResult<SseBody> {
    let cursor = resume_point(&headers, p.after.as_deref())?;
    let mut kinds = Vec::new();
    for k in p.kind.as_deref().unwrap_or("").split(',').map(str::trim).filter(|k| !k.is_empty()) {
        kinds.push(k.parse::<EventKind>()?);
    }
    if let Some(a) = &p.agent {
        smith_core::agent::validate_name(a).map_err(|e| ApiError::new(Code::InvalidArgument, e.message))?;
    }
    let filter = FeedFilter { agent: p.agent, kinds, tenant: who.filter() };
    stream::feed_stream(s, cursor, filter).await
}

/// The agents with their counts and usage — a tenant's credential sees its own tenant's only —
/// and never a secret of their definitions.
async fn agents(State(s): State<Arc<AppState>>, Extension(who): Extension<Principal>) -> ApiResult<Response> {
    let mut items = match who.filter() {
        None => s.store.agents().await?,
        Some(tenant) => s.store.tenant_agents(&tenant).await?,
    };
    for item in items.iter_mut() {
        item.def = smith_core::agent::redacted(&item.def);
    }
    // Breakers live in the workers, which report them with their heartbeats.
    let nodes = s.store.nodes().await?;
    for item in items.iter_mut() {
        for n in nodes.iter().filter(|n| n.role == NodeRole::Worker && n.status == NodeStatus::Alive) {
            let state = match n.load["breakers"][&item.def.name].as_str() {
                Some("open") => BreakerState::Open,
                Some("half_open") => BreakerState::HalfOpen,
                _ => continue,
            };
            if item.breaker != BreakerState::Open {
                item.breaker = state;
            }
        }
    }
    Ok(Json(json!({"items": items})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    by: Option<String>,
}

/// Token and cost totals by agent (default) or by tenant.
async fn usage(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Principal>,
    QueryParams(p): QueryParams<UsageParams>,
) -> ApiResult<Response> {
    let by = match p.by.as_deref() {
        None if !who.all_tenants() => UsageBy::Tenant,
        None | Some("agent") => UsageBy::Agent,
        Some("tenant") => UsageBy::Tenant,
        Some(other) => return Err(ApiError::invalid(format!("by must be agent or tenant, got {other:?}"))),
    };
    if by == UsageBy::Agent && !who.all_tenants() {
        return Err(ApiError::new(
            Code::PermissionDenied,
            "usage by agent sums every tenant's work; a tenant's credential reads its own total with by=tenant",
        ));
    }
    let mut totals = s.store.usage_totals(by).await?;
    if let Some(own) = who.filter() {
        totals.retain(|(tenant, _)| *tenant == own);
    }
    let items: Vec<Value> = totals
        .into_iter()
        .map(|(key, u)| json!({"key": key, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_usd": u.cost_usd}))
        .collect();
    let by = if by == UsageBy::Agent { "agent" } else { "tenant" };
    Ok(Json(json!({"by": by, "items": items})).into_response())
}

async fn nodes(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    let items = s.store.nodes().await?;
    Ok(Json(json!({"items": items})).into_response())
}

/// The autoscaler's latest decision, as the leading supervisor last reported it (in its
/// heartbeat): KEDA's metrics-api scaler reads `desired_slots`.
async fn scaling(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    let nodes = s.store.nodes().await?;
    let live = nodes.iter().filter(|n| {
        n.role == NodeRole::Supervisor
            && n.status == NodeStatus::Alive
            && n.load.get("scaling").is_some_and(|v| v.is_object())
    });
    // the leader's figure; else the freshest any supervisor has
    let best = live.max_by_key(|n| (n.load.get("leader").and_then(|v| v.as_bool()).unwrap_or(false), n.heartbeat_at));
    let Some(n) = best else {
        return Err(ApiError::new(Code::Unavailable, "no running supervisor has computed the scaling figures yet"));
    };
    let mut body = n.load["scaling"].clone();
    body["age_seconds"] = json!(smith_core::Micros::now().since(n.heartbeat_at).max(0) as f64 / 1e6);
    Ok(Json(body).into_response())
}

/// The provider accounts' fleet-wide rate limits and how full their buckets are now
/// (docs/rate-limits.md). Accounts are the operator's and their levels show every tenant's
/// traffic, so only the platform reads them; a tenant's credential gets 403.
async fn providers(State(s): State<Arc<AppState>>, Extension(who): Extension<Principal>) -> ApiResult<Response> {
    if !who.all_tenants() {
        return Err(ApiError::new(
            Code::PermissionDenied,
            "provider accounts and their rate limits are the operator's: read them with the platform credential",
        ));
    }
    let mut items: Vec<Value> = Vec::new();
    for b in s.store.rate_buckets().await? {
        if items.last().is_none_or(|i| i["account"] != b.account.as_str()) {
            items.push(json!({"account": b.account, "requests": null, "tokens": null}));
        }
        let bucket = json!({
            "per_minute": (b.per_second * 60.0).round(),
            "capacity": b.capacity,
            "level": b.level,
        });
        items.last_mut().expect("pushed above")[b.kind.as_str()] = bucket;
    }
    Ok(Json(json!({"items": items})).into_response())
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    s.store.ping().await.map_err(|e| ApiError::new(Code::Unavailable, format!("store not ready: {e}")))?;
    Ok(Json(json!({"status": "ready"})).into_response())
}

/// The process's metrics: they count every tenant's work (and name tenants in the quota and
/// spend series), so only the platform reads them; a tenant's credential gets 403.
async fn metrics(State(s): State<Arc<AppState>>, Extension(who): Extension<Principal>) -> ApiResult<Response> {
    if !who.all_tenants() {
        return Err(ApiError::new(
            Code::PermissionDenied,
            "metrics cover every tenant: read them with the platform credential (a tenant reads its own /v1/usage)",
        ));
    }
    let body = s.opts.metrics.as_ref().map(|r| r()).unwrap_or_default();
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn download_names_are_safe_header_values() {
        assert_eq!(
            content_disposition("out/report.txt"),
            "attachment; filename=\"report.txt\"; filename*=UTF-8''report.txt"
        );
        assert_eq!(
            content_disposition("a \"b\".ü"),
            "attachment; filename=\"a _b_._\"; filename*=UTF-8''a%20%22b%22.%C3%BC"
        );
        assert!(axum::http::HeaderValue::from_str(&content_disposition("x;y=\"z\"")).is_ok());
    }
}
