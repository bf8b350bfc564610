//! The smith crate's integration tests, built as one test binary so that CI compiles and links
//! them once. Each module drives the real `smith` binary (HTTP, SSE, the CLI) as its file's
//! header says; `common` is the harness they share. `tests/pg_restart.rs` stays a binary of its
//! own: it restarts the machine's PostgreSQL, which no other test may be using meanwhile.

mod common;

mod agent_access;
mod api;
mod approvals;
mod artifacts;
mod auth;
mod baseline;
mod claude;
mod collaboration;
mod console;
mod deploy;
mod distributed;
mod durability;
mod execution;
mod hardening;
mod healing;
mod image;
mod keys;
mod limits;
mod ops;
mod plan;
mod python_client;
mod ratelimits;
mod readme;
mod retention;
mod schedules;
mod schemathesis;
mod structured;
mod tenancy;
mod tenancy_live;
mod timers;
mod tls;
mod traces;
mod webhooks;
mod workspace;
