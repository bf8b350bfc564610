//! `/v1/keys` (create, list, revoke API keys) and `/v1/audit`: the `admin` scope's routes.
//! A tenant's admin manages its own tenant's keys and reads its own tenant's records; the
//! platform (the configured token, or a key on tenant `*`) manages every tenant's.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use smith_core::{AuditQuery, Micros, Scope, ALL_TENANTS};

use crate::auth::{mint_key, Principal};
use crate::error::{ApiError, ApiResult, JsonBody, QueryParams};
use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// Default: the caller's tenant (`default` for the platform).
    tenant: Option<String>,
    scopes: Vec<String>,
    name: Option<String>,
}

fn check_tenant(t: &str) -> ApiResult<()> {
    if t.is_empty()
        || t.len() > 64
        || !t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
    {
        return Err(ApiError::unprocessable(format!(
            "tenant must be 1..=64 characters of letters, digits, `-`, `_` and `.`, got {t:?}"
        )));
    }
    if t.contains('*') && t != ALL_TENANTS {
        return Err(ApiError::unprocessable("tenant `*` (every tenant) stands alone"));
    }
    Ok(())
}

/// Creates a key; its secret is in this response and nowhere else, ever.
pub(crate) async fn create(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<CreateKey>,
) -> ApiResult<Response> {
    let tenant = req.tenant.unwrap_or_else(|| p.write_tenant());
    check_tenant(&tenant)?;
    if !p.all_tenants() && tenant != p.tenant {
        // another tenant does not exist for this caller
        return Err(ApiError::new(
            smith_core::Code::PermissionDenied,
            format!("keys of tenant {tenant:?} are not yours to create"),
        ));
    }
    if req.scopes.is_empty() {
        return Err(ApiError::unprocessable("scopes must name at least one of tasks:write, tasks:read, admin"));
    }
    let mut scopes = Vec::new();
    for name in &req.scopes {
        let scope = Scope::parse(name).ok_or_else(|| {
            ApiError::unprocessable(format!("unknown scope {name:?}: expected tasks:write, tasks:read or admin"))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort();
    if let Some(n) = &req.name {
        if n.is_empty() || n.len() > 200 || n.chars().any(char::is_control) {
            return Err(ApiError::unprocessable("name must be 1..=200 characters without control characters"));
        }
    }
    let (new, secret) = mint_key(&tenant, scopes, req.name);
    let key = s.store.create_api_key(new).await?;
    let location = format!("/v1/keys/{}", key.id);
    let mut resp =
        (StatusCode::CREATED, [(axum::http::header::LOCATION, location)], Json(json!({"key": key, "secret": secret})))
            .into_response();
    resp.extensions_mut().insert(crate::audit::Affected(key.tenant.clone()));
    Ok(resp)
}

/// The tenant filter of a listing: `Some(None)` is every tenant (the platform), `Some(Some(t))`
/// one tenant, `None` a tenant the caller cannot see (an empty listing, as for a missing one).
fn listing_tenant(p: &Principal, asked: Option<String>) -> Option<Option<String>> {
    match (p.filter(), asked) {
        (Some(own), Some(asked)) if asked != own => None,
        (Some(own), _) => Some(Some(own)),
        (None, asked) => Some(asked),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListKeys {
    tenant: Option<String>,
}

pub(crate) async fn list(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    QueryParams(q): QueryParams<ListKeys>,
) -> ApiResult<Response> {
    let Some(tenant) = listing_tenant(&p, q.tenant) else {
        return Ok(Json(json!({"items": []})).into_response());
    };
    let items = s.store.list_api_keys(tenant.as_deref()).await?;
    Ok(Json(json!({"items": items})).into_response())
}

pub(crate) async fn revoke(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_found(format!("API key {id} not found"));
    if id.is_empty() || id.len() > 64 {
        return Err(missing());
    }
    match s.store.api_key(&id).await? {
        Some((k, _)) if p.sees(&k.tenant) => {}
        _ => return Err(missing()),
    }
    let key = s.store.revoke_api_key(&id, Micros::now()).await?.ok_or_else(missing)?;
    let tenant = key.tenant.clone();
    let mut resp = Json(key).into_response();
    resp.extensions_mut().insert(crate::audit::Affected(tenant));
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    /// RFC 3339 times: `since <= at < until`.
    since: Option<String>,
    until: Option<String>,
    /// The last record id seen (records come oldest first).
    after: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn audit(
    State(s): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    QueryParams(q): QueryParams<AuditParams>,
) -> ApiResult<Response> {
    let time = |name: &str, v: Option<String>| -> ApiResult<Option<Micros>> {
        v.map(|t| {
            Micros::parse_rfc3339(&t)
                .ok_or_else(|| ApiError::invalid(format!("{name} must be an RFC 3339 time, got {t:?}")))
        })
        .transpose()
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid(format!("limit must be 1..=1000, got {limit}")));
    }
    let Some(tenant) = listing_tenant(&p, q.tenant) else {
        return Ok(Json(json!({"items": [], "next_after": null})).into_response());
    };
    let query = AuditQuery {
        tenant,
        actor: q.actor,
        action: q.action,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
        after: q.after.unwrap_or(0),
        limit,
    };
    let items = s.store.audit(&query).await?;
    let next = (items.len() == limit).then(|| items.last().map(|r| r.id)).flatten();
    Ok(Json(json!({"items": items, "next_after": next})).into_response())
}
