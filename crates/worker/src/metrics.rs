//! The worker's metrics: names and recording helpers, described once.

use std::time::Duration;

pub const TASKS_DISPATCHED: &str = "smith_tasks_dispatched_total";
pub const DISPATCH_LATENCY: &str = "smith_dispatch_latency_seconds";
pub const TASKS_FINISHED: &str = "smith_task_attempts_finished_total";
pub const TASK_DURATION: &str = "smith_task_duration_seconds";
pub const LEASES_LOST: &str = "smith_leases_lost_total";

pub fn describe() {
    metrics::describe_counter!(TASKS_DISPATCHED, "Tasks claimed and started, by agent");
    metrics::describe_histogram!(DISPATCH_LATENCY, metrics::Unit::Seconds, "Time from submit to task.started");
    metrics::describe_counter!(TASKS_FINISHED, "Attempts finished, by agent and outcome");
    metrics::describe_histogram!(TASK_DURATION, metrics::Unit::Seconds, "Attempt run time, by agent and outcome");
    metrics::describe_counter!(LEASES_LOST, "Attempts stopped because their lease was lost or fenced");
}

pub(crate) fn dispatched(agent: &str, latency_us: i64) {
    metrics::counter!(TASKS_DISPATCHED, "agent" => agent.to_string()).increment(1);
    metrics::histogram!(DISPATCH_LATENCY).record(latency_us as f64 / 1e6);
}

pub(crate) fn finished(agent: &str, outcome: &'static str, took: Duration) {
    metrics::counter!(TASKS_FINISHED, "agent" => agent.to_string(), "outcome" => outcome).increment(1);
    metrics::histogram!(TASK_DURATION, "agent" => agent.to_string(), "outcome" => outcome).record(took.as_secs_f64());
}

pub(crate) fn lease_lost() {
    metrics::counter!(LEASES_LOST).increment(1);
}
