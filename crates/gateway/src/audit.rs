//! The audit log: one durable record per authenticated mutating request — who, tenant,
//! action, target, source address, outcome, time — written before the response leaves, served
//! to admins at `GET /v1/audit`. Append-only: no route changes or deletes a record. Requests
//! refused before authentication are counted (`smith_gateway_auth_failures_total`) and
//! summarized, at most one `auth.refused` record a minute, so a flood cannot grow the log.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use smith_core::{Micros, NewAuditRecord};

use crate::auth::Principal;
use crate::AppState;

/// What the guard notes about a mutating request before running it. A handler that writes the
/// request's record itself, in the same write as its effect (a task submission), finds it in
/// the request's extensions and marks its response [`Written`].
#[derive(Clone)]
pub(crate) struct Pending {
    at: Micros,
    action: String,
    target: Option<String>,
    source: String,
}

impl Pending {
    pub fn new(req: &Request, route: &str) -> Pending {
        let source = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "unknown".to_string());
        Pending {
            at: Micros::now(),
            action: action(req.method().as_str(), route),
            target: path_param(route, req.uri().path()),
            source,
        }
    }

    /// The record of this request by `who`, for a handler to write with its effect; the store
    /// fills in the target and the status.
    pub fn for_handler(&self, who: &Principal) -> NewAuditRecord {
        NewAuditRecord {
            at: self.at,
            actor: who.actor.clone(),
            tenant: who.tenant.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            source: self.source.clone(),
            status: 0,
        }
    }

    /// Appends the record; a failure is logged and counted (the request's effect stands).
    pub fn record<'a>(
        self,
        state: &'a AppState,
        who: Option<&'a Principal>,
        resp: &Response,
    ) -> impl std::future::Future<Output = ()> + Send + 'a {
        // a created object is the target: its id ends the Location header
        let target = self.target.clone().or_else(|| {
            resp.headers()
                .get(axum::http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.rsplit('/').next())
                .map(str::to_string)
        });
        // the platform acting on one tenant's objects is filed under that tenant, where its
        // admins read it (the platform reads every tenant's)
        let affected = resp.extensions().get::<Affected>().map(|a| a.0.clone());
        let tenant = match (who, affected) {
            (Some(p), Some(t)) if p.all_tenants() => Some(t),
            _ => None,
        };
        // (the response, whose body is not Sync, is not held across the write)
        self.write(state, who, target, resp.status().as_u16(), tenant)
    }

    /// A mutating request refused before authentication: no record of its own; a summary of
    /// the refusals since the last one, when [`Refusals`] says one is due.
    pub async fn refused(self, state: &AppState, status: u16) {
        let Some(count) = state.refusals.note() else { return };
        let target = Some(count.to_string());
        Pending { action: "auth.refused".to_string(), ..self }.write(state, None, target, status, None).await
    }

    async fn write(
        self,
        state: &AppState,
        who: Option<&Principal>,
        target: Option<String>,
        status: u16,
        tenant: Option<String>,
    ) {
        let record = NewAuditRecord {
            at: self.at,
            actor: who.map_or_else(|| "unauthenticated".to_string(), |p| p.actor.clone()),
            tenant: tenant.unwrap_or_else(|| who.map_or_else(|| "-".to_string(), |p| p.tenant.clone())),
            action: self.action,
            target,
            source: self.source,
            status,
        };
        if let Err(e) = state.store.append_audit(record).await {
            tracing::error!(error = %e, "cannot write an audit record");
            crate::metrics::audit_failed();
        }
    }
}

/// The one tenant whose objects a request changed (a key the platform made or revoked for it):
/// a platform actor's record of it is filed under that tenant.
#[derive(Clone)]
pub(crate) struct Affected(pub String);

/// Marks a response whose request's audit record its handler already wrote.
#[derive(Clone, Copy)]
pub(crate) struct Written;

/// The route whose handler writes its own record, with the task it submits.
pub(crate) const SELF_AUDITED: &str = "/v1/tasks";

/// The most often an `auth.refused` summary is written.
pub(crate) const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Mutating requests refused before authentication, summarized: the first after a quiet
/// [`SUMMARY_EVERY`] writes a record whose target is how many were refused since the last
/// record (itself included); the rest only count.
#[derive(Default)]
pub(crate) struct Refusals(std::sync::Mutex<(Option<std::time::Instant>, u64)>);

impl Refusals {
    /// Counts one refusal; `Some(count)` when a summary record is due now.
    pub fn note(&self) -> Option<u64> {
        let mut g = self.0.lock().expect("refusals lock");
        g.1 += 1;
        let due = g.0.is_none_or(|last| last.elapsed() >= SUMMARY_EVERY);
        if !due {
            return None;
        }
        let count = std::mem::take(&mut g.1);
        g.0 = Some(std::time::Instant::now());
        Some(count)
    }
}

/// `task.submit`, `task.cancel`, … from the method and the route template.
fn action(method: &str, route: &str) -> String {
    match (method, route) {
        ("POST", "/v1/tasks") => "task.submit",
        ("POST", "/v1/tasks/{id}/cancel") => "task.cancel",
        ("POST", "/v1/sessions") => "session.start",
        ("POST", "/v1/sessions/{id}/turns") => "session.turn",
        ("POST", "/mcp") => "mcp.call",
        ("POST", "/v1/keys") => "key.create",
        ("POST", "/v1/keys/{id}/revoke") => "key.revoke",
        ("POST", "/v1/schedules") => "schedule.create",
        ("POST", "/v1/schedules/{id}/pause") => "schedule.pause",
        ("POST", "/v1/schedules/{id}/resume") => "schedule.resume",
        ("DELETE", "/v1/schedules/{id}") => "schedule.delete",
        _ => return format!("{} {route}", method.to_ascii_lowercase()),
    }
    .to_string()
}

/// The `{id}` of a route template, read from the request path.
fn path_param(route: &str, path: &str) -> Option<String> {
    let at = route.split('/').position(|seg| seg == "{id}")?;
    path.split('/').nth(at).filter(|s| !s.is_empty()).map(|s| s.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_targets() {
        assert_eq!(action("POST", "/v1/tasks"), "task.submit");
        assert_eq!(action("DELETE", "/v1/things/{id}"), "delete /v1/things/{id}");
        assert_eq!(path_param("/v1/tasks/{id}/cancel", "/v1/tasks/abc/cancel").as_deref(), Some("abc"));
        assert_eq!(path_param("/v1/tasks", "/v1/tasks"), None);
    }

    #[test]
    fn refusals_are_summarized_once_a_minute() {
        let r = Refusals::default();
        assert_eq!(r.note(), Some(1), "the first refusal is recorded");
        for _ in 0..99 {
            assert_eq!(r.note(), None);
        }
        // a minute later the next one reports every refusal since the last record
        r.0.lock().unwrap().0 = Some(std::time::Instant::now() - SUMMARY_EVERY);
        assert_eq!(r.note(), Some(100));
        assert_eq!(r.note(), None);
    }
}
