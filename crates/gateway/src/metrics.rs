//! The gateway's metrics: names and recording helpers, described once.

pub const HTTP_REQUESTS: &str = "smith_http_requests_total";
pub const HTTP_LATENCY: &str = "smith_http_request_duration_seconds";
pub const TASKS_SUBMITTED: &str = "smith_tasks_submitted_total";
pub const SSE_CONNECTIONS: &str = "smith_sse_connections";
pub const SSE_SLOW_READERS: &str = "smith_sse_slow_readers_cut_total";
pub const SSE_LAGGED: &str = "smith_sse_lagged_total";
pub const SSE_RETENTION: &str = "smith_sse_retention_events_total";
pub const MCP_TOOL_CALLS: &str = "smith_mcp_tool_calls_total";
pub const DISCOVERIES: &str = "smith_discoveries_total";
pub const EVENT_DELIVERY: &str = "smith_event_delivery_seconds";
pub const AUDIT_FAILURES: &str = "smith_audit_write_failures_total";
pub const STORE_SIZE: &str = "smith_store_size_bytes";
pub const STORE_MAX: &str = "smith_store_max_bytes";
pub const STORE_FULL: &str = "smith_store_full";
pub const AUTH_FAILURES: &str = "smith_gateway_auth_failures_total";
pub const APPROVALS_REQUESTED: &str = "smith_approvals_requested_total";
pub const APPROVALS_ANSWERED: &str = "smith_approvals_answered_total";

/// Why a request was refused before it was authenticated: [`AUTH_FAILURES`]'s `reason`.
pub const AUTH_FAILURE_REASONS: [&str; 6] = ["missing", "malformed", "invalid", "error", "origin", "host"];

pub fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests, by route and status");
    metrics::describe_histogram!(HTTP_LATENCY, metrics::Unit::Seconds, "HTTP request latency, by route");
    metrics::describe_counter!(TASKS_SUBMITTED, "Tasks accepted, by agent");
    metrics::describe_gauge!(SSE_CONNECTIONS, "Open SSE streams, by kind");
    metrics::describe_counter!(SSE_SLOW_READERS, "SSE readers cut off for not reading");
    metrics::describe_counter!(SSE_LAGGED, "SSE streams that fell behind the live feed and re-read the store");
    metrics::describe_counter!(
        SSE_RETENTION,
        "Feed readers told (a `retention` event) that their cursor was below the retention horizon"
    );
    metrics::describe_counter!(MCP_TOOL_CALLS, "Platform MCP tool calls, by tool and outcome");
    metrics::describe_counter!(DISCOVERIES, "Discoveries shared by agents, by agent");
    // rare events start at 0, so that rate() and increase() see their first occurrence
    metrics::counter!(SSE_SLOW_READERS).absolute(0);
    metrics::counter!(SSE_LAGGED).absolute(0);
    metrics::counter!(SSE_RETENTION).absolute(0);
    metrics::describe_counter!(AUDIT_FAILURES, "Audit records that could not be written (the request's effect stands)");
    metrics::counter!(AUDIT_FAILURES).absolute(0);
    metrics::describe_gauge!(
        STORE_SIZE,
        metrics::Unit::Bytes,
        "Bytes the store occupies, measured by the gateway every few seconds"
    );
    metrics::describe_gauge!(
        STORE_MAX,
        metrics::Unit::Bytes,
        "The store-size guard's limit ([limits] store_max_bytes; 0 when unset)"
    );
    metrics::describe_gauge!(
        STORE_FULL,
        "1 while the store is over [limits] store_max_bytes and submissions are refused (507)"
    );
    metrics::describe_counter!(
        AUTH_FAILURES,
        "Requests refused before authentication (no, malformed or invalid credential; foreign Origin or Host), by reason"
    );
    for reason in AUTH_FAILURE_REASONS {
        metrics::counter!(AUTH_FAILURES, "reason" => reason).absolute(0);
    }
    metrics::describe_counter!(
        APPROVALS_REQUESTED,
        "Requests for a person that parked a task, by kind (approval, input)"
    );
    metrics::describe_counter!(
        APPROVALS_ANSWERED,
        "Requests answered, by decision (allow, deny) and by whom (person, timeout)"
    );
    for kind in ["approval", "input"] {
        metrics::counter!(APPROVALS_REQUESTED, "kind" => kind).absolute(0);
    }
    metrics::describe_histogram!(
        EVENT_DELIVERY,
        metrics::Unit::Seconds,
        "Time from an event's write to its arrival at this gateway's hub for fan-out"
    );
}

pub(crate) fn tool_call(tool: &str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(MCP_TOOL_CALLS, "tool" => tool.to_string(), "outcome" => outcome).increment(1);
}

pub(crate) fn approval_requested(kind: &'static str) {
    metrics::counter!(APPROVALS_REQUESTED, "kind" => kind).increment(1);
}

pub(crate) fn approval_answered(decision: &'static str) {
    metrics::counter!(APPROVALS_ANSWERED, "decision" => decision, "by" => "person").increment(1);
}

pub(crate) fn auth_failed(reason: &'static str) {
    metrics::counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

pub(crate) fn audit_failed() {
    metrics::counter!(AUDIT_FAILURES).increment(1);
}

pub(crate) fn discovery(agent: &str) {
    metrics::counter!(DISCOVERIES, "agent" => agent.to_string()).increment(1);
}

pub(crate) fn submitted(agent: &str) {
    metrics::counter!(TASKS_SUBMITTED, "agent" => agent.to_string()).increment(1);
}

pub(crate) fn slow_reader_cut() {
    metrics::counter!(SSE_SLOW_READERS).increment(1);
}

pub(crate) fn retention_told() {
    metrics::counter!(SSE_RETENTION).increment(1);
}

pub(crate) fn lagged() {
    metrics::counter!(SSE_LAGGED).increment(1);
}

pub(crate) fn request(route: &str, status: u16, secs: f64) {
    metrics::counter!(HTTP_REQUESTS, "route" => route.to_string(), "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_LATENCY, "route" => route.to_string()).record(secs);
}

/// Counts an open SSE stream for as long as it lives.
pub(crate) struct SseConnection(&'static str);

impl SseConnection {
    pub fn open(kind: &'static str) -> Self {
        metrics::gauge!(SSE_CONNECTIONS, "kind" => kind).increment(1.0);
        SseConnection(kind)
    }
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        metrics::gauge!(SSE_CONNECTIONS, "kind" => self.0).decrement(1.0);
    }
}

pub(crate) fn delivered(micros: i64) {
    metrics::histogram!(EVENT_DELIVERY).record(micros.max(0) as f64 / 1e6);
}
