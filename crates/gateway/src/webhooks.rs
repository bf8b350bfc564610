//! `/v1/webhooks`: a tenant's subscriptions to its events and their delivery logs, and the
//! checks a task's own `webhook` passes. A secret is shown once, in the answer that generated
//! it, and never again; another tenant's subscription is a 404 like a missing one.

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, JsonBody, PathText, QueryParams};
use crate::AppState;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use smith_core::webhook::{check_kinds, check_url, generate_secret, secret_key};
use smith_core::{Code, Micros, TaskWebhook, Webhook};
use std::sync::Arc;

/// Subscriptions a tenant may hold at most.
const MAX_PER_TENANT: usize = 100;
/// Deliveries a page lists at most.
const MAX_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    url: String,
    kinds: Vec<String>,
    secret: Option<String>,
    description: Option<String>,
}

/// Refuses a target the SSRF guard does not allow (an address as given, or any address its
/// name resolves to), as a 422 that says why.
async fn check_target(s: &AppState, field: &str, url: &str) -> ApiResult<()> {
    check_url(url).map_err(|e| ApiError::unprocessable(format!("{field}{}", e.message.trim_start_matches("url"))))?;
    s.opts.webhook_guard.check_url(url).await.map_err(|e| ApiError::unprocessable(format!("{field}: {e}")))
}

pub(crate) async fn create(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CreateWebhook>,
) -> ApiResult<Response> {
    check_kinds(&req.kinds)?;
    if let Some(d) = &req.description {
        if d.len() > 500 || d.chars().any(char::is_control) {
            return Err(ApiError::unprocessable("description must be at most 500 bytes without control characters"));
        }
    }
    if let Some(secret) = &req.secret {
        secret_key(secret)?;
    }
    check_target(&s, "url", &req.url).await?;
    let tenant = p.write_tenant();
    if s.store.webhooks(Some(&tenant)).await?.len() >= MAX_PER_TENANT {
        return Err(ApiError::new(Code::Conflict, format!("a tenant holds at most {MAX_PER_TENANT} webhooks")));
    }
    let generated = req.secret.is_none();
    let hook = Webhook {
        id: uuid::Uuid::now_v7().to_string(),
        tenant,
        url: req.url,
        kinds: req.kinds,
        description: req.description,
        secret: req.secret.unwrap_or_else(generate_secret),
        created_at: Micros::now(),
    };
    s.store.create_webhook(&hook).await?;
    let mut body = json!(hook);
    if generated {
        // the one time it is shown
        body["secret"] = json!(hook.secret);
    }
    let location = format!("/v1/webhooks/{}", hook.id);
    Ok((StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(body)).into_response())
}

pub(crate) async fn list(State(s): State<Arc<AppState>>, Extension(p): Extension<Principal>) -> ApiResult<Response> {
    let items = s.store.webhooks(p.filter().as_deref()).await?;
    Ok(Json(json!({"items": items})).into_response())
}

/// The subscription, when it exists and is the caller's tenant's.
async fn visible(s: &AppState, p: &Principal, id: &str) -> ApiResult<Webhook> {
    match s.store.get_webhook(id).await? {
        Some(h) if p.sees(&h.tenant) => Ok(h),
        _ => Err(ApiError::not_found("webhook not found")),
    }
}

pub(crate) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    Ok(Json(visible(&s, &p, &id).await?).into_response())
}

pub(crate) async fn delete(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
) -> ApiResult<Response> {
    let hook = visible(&s, &p, &id).await?;
    s.store.delete_webhook(&hook.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryParams {
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

pub(crate) async fn deliveries(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    PathText(id): PathText,
    QueryParams(q): QueryParams<DeliveryParams>,
) -> ApiResult<Response> {
    let hook = visible(&s, &p, &id).await?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1..={MAX_PAGE}, got {limit}")));
    }
    let items = s.store.deliveries(&hook.id, q.cursor.as_deref(), limit).await?;
    let next = (items.len() == limit).then(|| items.last().map(|d| d.id.clone())).flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})).into_response())
}

pub(crate) async fn replay(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    let Path((id, delivery)) = path.map_err(|e| ApiError::invalid(format!("malformed path: {e}")))?;
    let hook = visible(&s, &p, &id).await?;
    match s.store.replay_delivery(&hook.id, &delivery, Micros::now()).await? {
        Some(d) => Ok((StatusCode::ACCEPTED, Json(d)).into_response()),
        None => Err(ApiError::not_found(format!("no such delivery of webhook {}", hook.id))),
    }
}

/// A task's own webhook, ready to store: its URL checked like a subscription's, and a secret
/// generated when none was given (returned so the answer can show it, once).
pub(crate) async fn prepare_task_webhook(
    s: &AppState,
    hook: Option<TaskWebhook>,
) -> ApiResult<(Option<TaskWebhook>, Option<String>)> {
    let Some(mut hook) = hook else { return Ok((None, None)) };
    hook.validate()?;
    check_target(s, "webhook.url", &hook.url).await?;
    let generated = match hook.secret {
        Some(_) => None,
        None => {
            let secret = generate_secret();
            hook.secret = Some(secret.clone());
            Some(secret)
        }
    };
    Ok((Some(hook), generated))
}

/// Shows a generated secret in the answer that created the task (its only showing).
pub(crate) fn reveal(mut body: serde_json::Value, secret: Option<String>) -> serde_json::Value {
    if let (Some(secret), Some(hook)) = (secret, body.get_mut("webhook")) {
        hook["secret"] = json!(secret);
    }
    body
}
