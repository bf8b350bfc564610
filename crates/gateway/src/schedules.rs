//! `/v1/schedules`: a tenant's cron schedules (docs/schedules.md) — create (every field checked,
//! a 422 naming the field), list, show with the next fire times, pause, resume, delete. The
//! leading supervisor fires them; another tenant's schedule is a 404 like a missing one.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody, PathText, QueryParams};
use crate::AppState;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use smith_core::schedule::{Overlap, Schedule};
use smith_core::Micros;
use std::sync::Arc;

/// Fire times `GET /v1/schedules/{id}` shows unless `upcoming` says otherwise, and at most.
const UPCOMING: usize = 5;
const MAX_UPCOMING: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSchedule {
    name: Option<String>,
    agent: String,
    input: Option<Value>,
    cron: String,
    timezone: Option<String>,
    overlap: Option<String>,
    /// A duration: `"10m"`, `"500ms"`, or milliseconds.
    catchup: Option<Value>,
    paused: Option<bool>,
    metadata: Option<Value>,
    priority: Option<u8>,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
}

fn catchup_of(v: Option<Value>) -> ApiResult<std::time::Duration> {
    let bad = || ApiError::unprocessable("catchup must be a duration such as \"30s\" or \"10m\", or milliseconds");
    match v {
        None | Some(Value::Null) => Ok(std::time::Duration::ZERO),
        Some(Value::Number(n)) => n.as_u64().map(std::time::Duration::from_millis).ok_or_else(bad),
        Some(Value::String(s)) => humantime::parse_duration(&s).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

pub(crate) async fn create(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CreateSchedule>,
) -> ApiResult<Response> {
    let overlap = match &req.overlap {
        None => Overlap::default(),
        Some(o) => o.parse::<Overlap>().map_err(|e| ApiError::unprocessable(format!("overlap: {}", e.message)))?,
    };
    let now = Micros::now();
    let paused = req.paused.unwrap_or(false);
    let mut schedule = Schedule {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: p.write_tenant(),
        name: req.name.unwrap_or_else(|| req.agent.clone()),
        agent: req.agent,
        input: req.input.unwrap_or_else(|| json!({})),
        metadata: req.metadata.unwrap_or_else(|| json!({})),
        priority: req.priority.unwrap_or(0),
        timeout_ms: req.timeout_ms,
        max_attempts: req.max_attempts,
        cron: req.cron,
        timezone: req.timezone.unwrap_or_else(|| "UTC".into()),
        overlap,
        catchup: catchup_of(req.catchup)?,
        paused,
        next_fire_at: None,
        last_fire_at: None,
        last_task_id: None,
        last_task_status: None,
        skipped: 0,
        last_skipped_at: None,
        missed: 0,
        created_at: now,
        updated_at: now,
    };
    let table = smith_core::schedule::check(&schedule)?;
    if !s.store.agents().await?.iter().any(|a| a.def.name == schedule.agent) {
        return Err(ApiError::unprocessable(format!(
            "agent: unknown agent {:?}",
            smith_core::task::truncate(&schedule.agent, 64)
        )));
    }
    let Some(first) = table.next_after(now) else {
        return Err(ApiError::unprocessable("cron: the expression never fires"));
    };
    schedule.next_fire_at = (!paused).then_some(first);
    s.store.create_schedule(&schedule).await?;
    let location = format!("/v1/schedules/{}", schedule.id);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(shown(&schedule, UPCOMING)))
        .into_response())
}

/// A schedule as served: with its next fire times (none while paused).
fn shown(s: &Schedule, n: usize) -> Value {
    let upcoming: Vec<String> = match (s.paused, s.timetable()) {
        (false, Ok(t)) => {
            let from = s.next_fire_at.map(|m| Micros(m.0 - 1)).unwrap_or_else(Micros::now);
            t.upcoming(from, n).into_iter().map(Micros::rfc3339).collect()
        }
        _ => Vec::new(),
    };
    let mut v = json!(s);
    v["upcoming"] = json!(upcoming);
    v
}

pub(crate) async fn list(State(s): State<Arc<AppState>>, Extension(p): Extension<Principal>) -> ApiResult<Response> {
    let items = s.store.schedules(p.filter().as_deref()).await?;
    Ok(Json(json!({"items": items})).into_response())
}

/// The schedule, when it exists and is the caller's tenant's.
async fn visible(s: &AppState, p: &Principal, id: &str) -> ApiResult<Schedule> {
    match s.store.get_schedule(id).await? {
        Some(sch) if p.sees(&sch.tenant) => Ok(sch),
        _ => Err(ApiError::not_found("schedule not found")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShowParams {
    /// How many next fire times to show.
    upcoming: Option<usize>,
}

pub(crate) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
    QueryParams(q): QueryParams<ShowParams>,
) -> ApiResult<Response> {
    let n = q.upcoming.unwrap_or(UPCOMING);
    if n > MAX_UPCOMING {
        return Err(ApiError::invalid(format!("upcoming must be 0..={MAX_UPCOMING}, got {n}")));
    }
    Ok(Json(shown(&visible(&s, &p, &id).await?, n)).into_response())
}

pub(crate) async fn pause(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let sch = visible(&s, &p, &id).await?;
    match s.store.set_schedule_paused(&sch.id, true, None).await? {
        Some(now) => Ok(Json(shown(&now, UPCOMING)).into_response()),
        None => Err(ApiError::not_found("schedule not found")),
    }
}

/// Resumes at the first fire after now: fires that fell while it was paused are not run.
pub(crate) async fn resume(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let sch = visible(&s, &p, &id).await?;
    if !sch.paused {
        // running already: its cursor (maybe a fire due now) stays as it is
        return Ok(Json(shown(&sch, UPCOMING)).into_response());
    }
    let next = sch.timetable()?.next_after(Micros::now());
    match s.store.set_schedule_paused(&sch.id, false, next).await? {
        Some(now) => Ok(Json(shown(&now, UPCOMING)).into_response()),
        None => Err(ApiError::not_found("schedule not found")),
    }
}

pub(crate) async fn delete(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let sch = visible(&s, &p, &id).await?;
    s.store.delete_schedule(&sch.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
