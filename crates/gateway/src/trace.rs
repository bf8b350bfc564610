//! The gateway's part of a task's trace (docs/telemetry.md): a server span per request, under
//! the caller's W3C `traceparent`, and the trace context a submitted task carries.
//!
//! The request span's layer is installed only when the process traces ([`smith_core::trace`]
//! installed): off, a request pays for nothing but the [`TraceParent`] extractor of the routes
//! that submit, which reads one header.

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use smith_core::trace::{self, Kind, Span};
use std::convert::Infallible;

/// The trace context of the request's span, for what the handler starts under it.
#[derive(Clone)]
struct RequestSpan(String);

/// The trace context a task submitted by this request carries: the request's span when the
/// gateway traces, else the caller's own valid `traceparent` (so the task's agent still joins
/// the caller's trace), else none.
pub(crate) struct TraceParent(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(RequestSpan(tp)) = parts.extensions.get::<RequestSpan>() {
            return Ok(TraceParent(Some(tp.clone())));
        }
        Ok(TraceParent(incoming(parts.headers.get("traceparent"))))
    }
}

fn incoming(header: Option<&axum::http::HeaderValue>) -> Option<String> {
    header.and_then(|v| v.to_str().ok()).and_then(trace::normalize_traceparent)
}

/// A server span around the request (`METHOD /route`), under the caller's `traceparent`.
pub(crate) async fn layer(mut req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let parent = incoming(req.headers().get("traceparent"));
    let name = format!("{method} {}", route.as_deref().unwrap_or("unmatched"));
    let mut span = Span::start(name, Kind::Server, parent.as_deref());
    span.attr("http.request.method", method);
    if let Some(route) = route {
        span.attr("http.route", route);
    }
    if let Some(tp) = span.traceparent() {
        req.extensions_mut().insert(RequestSpan(tp));
    }
    let resp = next.run(req).await;
    let status = resp.status();
    span.attr("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.fail(status.to_string());
    }
    resp
}
