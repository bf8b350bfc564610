//! The store's metrics: names, their descriptions, and the pool gauges.
//!
//! Operation latency and errors are recorded by [`crate::Instrumented`]; the pool gauges by
//! [`record_pool_stats`], which a process calls on its scrape or on a timer.

use crate::Store;

/// Histogram, seconds, label `op` (the [`Store`] method: `submit`, `claim`, …).
pub const OPERATION_DURATION: &str = "smith_store_operation_duration_seconds";
/// Counter, labels `op` and `code` (the error's stable code: `unavailable` and `internal` are
/// the store failing; `fenced`, `not_found`, `unprocessable`, … are answers to the caller).
pub const ERRORS: &str = "smith_store_errors_total";
/// Gauge, label `state` (`busy`, `idle`).
pub const POOL_CONNECTIONS: &str = "smith_store_pool_connections";
/// Gauge: the pool's size limit.
pub const POOL_MAX: &str = "smith_store_pool_max";

/// Describes the store's metrics to the installed recorder; call once after installing it.
pub fn describe_metrics() {
    metrics::describe_histogram!(OPERATION_DURATION, metrics::Unit::Seconds, "Store operation latency, by op");
    metrics::describe_counter!(ERRORS, "Store operations that returned an error, by op and error code");
    metrics::describe_gauge!(POOL_CONNECTIONS, "Store pool connections, by state (busy, idle)");
    metrics::describe_gauge!(POOL_MAX, "Store pool size limit");
    // The store being unreachable is the error that matters: start it at 0 for the hot
    // operations, so that increase() sees the first one.
    for op in ["submit", "claim", "append", "complete", "renew", "heartbeat"] {
        metrics::counter!(ERRORS, "op" => op, "code" => smith_core::Code::Unavailable.as_str()).absolute(0);
    }
}

/// Sets the pool gauges from [`Store::pool_stats`] (cheap: no I/O).
pub fn record_pool_stats(store: &dyn Store) {
    let stats = store.pool_stats();
    metrics::gauge!(POOL_CONNECTIONS, "state" => "busy").set(f64::from(stats.busy));
    metrics::gauge!(POOL_CONNECTIONS, "state" => "idle").set(f64::from(stats.idle));
    metrics::gauge!(POOL_MAX).set(f64::from(stats.max));
}
