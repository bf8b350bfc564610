//! The worker's metrics: names and recording helpers, described once.

use std::time::Duration;

pub const TASKS_DISPATCHED: &str = "smith_tasks_dispatched_total";
pub const DISPATCH_LATENCY: &str = "smith_dispatch_latency_seconds";
pub const TASKS_FINISHED: &str = "smith_task_attempts_finished_total";
pub const TASK_DURATION: &str = "smith_task_duration_seconds";
pub const LEASES_LOST: &str = "smith_leases_lost_total";
pub const TOKENS: &str = "smith_tokens_total";
pub const COST: &str = "smith_llm_cost_usd";
pub const BREAKER_OPEN: &str = "smith_breaker_open";
pub const TENANT_TOKENS: &str = "smith_tenant_tokens_total";
pub const TENANT_COST: &str = "smith_tenant_llm_cost_usd";
pub const DEAD_LETTERED: &str = "smith_tasks_dead_lettered_total";
pub const SLOTS: &str = "smith_agent_slots";
pub const SLOTS_TARGET: &str = "smith_agent_slots_target";
pub const SLOTS_MAX: &str = "smith_agent_slots_max";
pub const UTILIZATION: &str = "smith_agent_utilization";
pub const WRITE_RETRIES: &str = "smith_attempt_write_retries_total";
pub const RATE_TAKEN: &str = "smith_rate_limit_taken_total";
pub const RATE_WAITS: &str = "smith_rate_limit_waits_total";
pub const RATE_WAIT_SECONDS: &str = "smith_rate_limit_wait_seconds";
pub const RATE_FORFEITED: &str = "smith_rate_limit_forfeited_total";

pub fn describe() {
    metrics::describe_counter!(TASKS_DISPATCHED, "Tasks claimed and started, by agent");
    metrics::describe_histogram!(DISPATCH_LATENCY, metrics::Unit::Seconds, "Time from submit to task.started");
    metrics::describe_counter!(TASKS_FINISHED, "Attempts finished, by agent and outcome");
    metrics::describe_histogram!(TASK_DURATION, metrics::Unit::Seconds, "Attempt run time, by agent and outcome");
    metrics::describe_counter!(LEASES_LOST, "Attempts stopped because their lease was lost or fenced");
    metrics::describe_counter!(TOKENS, "LLM tokens used by finished attempts, by agent and direction (input, output)");
    metrics::describe_gauge!(COST, "LLM cost in USD of finished attempts since start, by agent (only grows)");
    metrics::describe_counter!(TENANT_TOKENS, "LLM tokens used by finished attempts, by tenant");
    metrics::describe_gauge!(TENANT_COST, "LLM cost in USD of finished attempts since start, by tenant (only grows)");
    metrics::describe_counter!(DEAD_LETTERED, "Tasks failed for good after their last attempt, by agent");
    metrics::describe_gauge!(SLOTS, "Agent slots in this worker's pool, by state (busy, idle)");
    metrics::describe_gauge!(SLOTS_TARGET, "Agent slots the pool is asked to hold");
    metrics::describe_gauge!(SLOTS_MAX, "The most agent slots the pool may hold (--max-agents)");
    metrics::describe_gauge!(UTILIZATION, "Busy agent slots / agent slots (0 with no slots)");
    metrics::counter!(LEASES_LOST).absolute(0);
    metrics::describe_counter!(
        WRITE_RETRIES,
        "Writes of an attempt's events or outcome retried after a transient store error, by op (append, complete)"
    );
    metrics::describe_counter!(
        RATE_TAKEN,
        "Units taken from the fleet's rate-limit buckets by this worker, by account and kind (requests, tokens)"
    );
    metrics::describe_counter!(
        RATE_WAITS,
        "Requests (or claims of Claude Code tasks) that waited for their account's rate limit, by account and kind"
    );
    metrics::describe_gauge!(
        RATE_WAIT_SECONDS,
        "Seconds spent waiting for rate limits since start, by account and kind (only grows)"
    );
    metrics::describe_counter!(
        RATE_FORFEITED,
        "Request units of leased shares that ended unspent (capacity lost, never an overrun), by account and kind"
    );
    metrics::describe_gauge!(BREAKER_OPEN, "1 while an agent's circuit breaker is open (0.5 half-open), by agent");
}

pub(crate) fn usage(agent: &str, tenant: &str, u: &smith_core::Usage) {
    if u.is_zero() {
        return;
    }
    metrics::counter!(TENANT_TOKENS, "tenant" => tenant.to_string()).increment(u.input_tokens + u.output_tokens);
    metrics::gauge!(TENANT_COST, "tenant" => tenant.to_string()).increment(u.cost_usd);
    metrics::counter!(TOKENS, "agent" => agent.to_string(), "direction" => "input").increment(u.input_tokens);
    metrics::counter!(TOKENS, "agent" => agent.to_string(), "direction" => "output").increment(u.output_tokens);
    // a Prometheus counter of a float: the metrics crate's counters are integers, so a gauge that only grows
    metrics::gauge!(COST, "agent" => agent.to_string()).increment(u.cost_usd);
}

pub(crate) fn breaker(agent: &str, state: smith_core::BreakerState) {
    let v = match state {
        smith_core::BreakerState::Closed => 0.0,
        smith_core::BreakerState::HalfOpen => 0.5,
        smith_core::BreakerState::Open => 1.0,
    };
    metrics::gauge!(BREAKER_OPEN, "agent" => agent.to_string()).set(v);
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

/// A task that ended failed or timed out on its last allowed attempt: it is dead-lettered.
pub fn dead_letter(task: &smith_core::Task) {
    use smith_core::TaskStatus;
    if matches!(task.status, TaskStatus::Failed | TaskStatus::TimedOut) && task.attempt >= task.max_attempts {
        metrics::counter!(DEAD_LETTERED, "agent" => task.agent.clone()).increment(1);
    }
}

/// The pool's figures; `busy` counts attempts running or handed to a slot.
pub(crate) fn pool(busy: usize, slots: usize, target: usize, max: usize) {
    let busy_slots = busy.min(slots);
    metrics::gauge!(SLOTS, "state" => "busy").set(busy_slots as f64);
    metrics::gauge!(SLOTS, "state" => "idle").set(slots.saturating_sub(busy_slots) as f64);
    metrics::gauge!(SLOTS_TARGET).set(target as f64);
    metrics::gauge!(SLOTS_MAX).set(max as f64);
    metrics::gauge!(UTILIZATION).set(if slots == 0 { 0.0 } else { busy_slots as f64 / slots as f64 });
}

pub(crate) fn write_retried(op: &'static str) {
    metrics::counter!(WRITE_RETRIES, "op" => op).increment(1);
}

pub(crate) fn rate_taken(account: &str, kind: &'static str, n: u64) {
    metrics::counter!(RATE_TAKEN, "account" => account.to_string(), "kind" => kind).increment(n);
}

pub(crate) fn rate_forfeited(account: &str, kind: &'static str, n: u64) {
    metrics::counter!(RATE_FORFEITED, "account" => account.to_string(), "kind" => kind).increment(n);
}

pub(crate) fn rate_waited(account: &str, kind: &'static str, took: Duration) {
    metrics::counter!(RATE_WAITS, "account" => account.to_string(), "kind" => kind).increment(1);
    // a float that only grows: a gauge, as the crate's counters are integers
    metrics::gauge!(RATE_WAIT_SECONDS, "account" => account.to_string(), "kind" => kind).increment(took.as_secs_f64());
}
