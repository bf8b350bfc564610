//! What the gateway's test binaries share.

/// The fields of a task submission (`POST /v1/tasks`), as the API documents and decodes them.
pub const SUBMIT_FIELDS: [&str; 17] = [
    "agent",
    "input",
    "priority",
    "timeout_ms",
    "max_attempts",
    "idempotency_key",
    "session_id",
    "parent_id",
    "budget",
    "metadata",
    "workspace",
    "output_schema",
    "webhook",
    "concurrency_key",
    "run_at",
    "delay",
    "ttl",
];
