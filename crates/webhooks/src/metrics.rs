//! The webhook dispatcher's metrics: names and recording helpers, described once. Labels are
//! bounded: tenant, outcome, code (a status class) — never a webhook, delivery or URL.

pub const DELIVERIES: &str = "smith_webhook_deliveries_total";
pub const ATTEMPT_DURATION: &str = "smith_webhook_attempt_duration_seconds";
pub const DELIVERY_LATENCY: &str = "smith_webhook_delivery_latency_seconds";
pub const PENDING: &str = "smith_webhook_pending";
pub const FEED_LAG: &str = "smith_webhook_feed_lag";
pub const RECORDED: &str = "smith_webhook_recorded_total";

pub fn describe() {
    metrics::describe_counter!(
        DELIVERIES,
        "Webhook delivery attempts by tenant and outcome (delivered, retrying, failed)"
    );
    metrics::describe_histogram!(
        ATTEMPT_DURATION,
        metrics::Unit::Seconds,
        "Webhook attempt time, request to answer, by code (2xx, 3xx, 4xx, 5xx, error, refused)"
    );
    metrics::describe_histogram!(
        DELIVERY_LATENCY,
        metrics::Unit::Seconds,
        "Time from an event's commit to its webhook delivery's 2xx answer"
    );
    metrics::describe_gauge!(PENDING, "Webhook deliveries waiting to be sent or sent again, by tenant");
    metrics::describe_gauge!(FEED_LAG, "Events of the feed the webhook dispatcher has not yet looked at");
    metrics::describe_counter!(RECORDED, "Webhook deliveries recorded from the feed, by tenant");
}

/// The `code` label of an attempt: its status class, or why there was none.
pub(crate) fn code(status: Option<u16>, refused: bool) -> &'static str {
    match status {
        _ if refused => "refused",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
        None => "error",
    }
}
