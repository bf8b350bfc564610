//! The bus's metrics: names and descriptions. [`crate::Instrumented`] records them.
//!
//! Every label is bounded: `kind` is one of [`crate::subjects::KINDS`], `direction` is `in`
//! or `out`.

/// Counter, labels `kind` and `direction`: messages published (`out`: publish, request,
/// respond) and handed to this process's subscribers or requesters (`in`).
pub const MESSAGES: &str = "smith_bus_messages_total";
/// Counter, labels `kind` and `direction`: payload bytes of those messages (subjects and
/// protocol overhead not included).
pub const BYTES: &str = "smith_bus_bytes_total";
/// Histogram, seconds, label `kind`: how long a publish (or a respond) took to hand the
/// message to the bus (for NATS: to the client's outgoing buffer, not to the server).
pub const PUBLISH_DURATION: &str = "smith_bus_publish_duration_seconds";
/// Counter, label `kind`: publishes, responds and requests that failed to go out (a request's
/// timeout or lack of responders is an answer, not counted).
pub const ERRORS: &str = "smith_bus_errors_total";

/// Describes the bus's metrics to the installed recorder; call once after installing it.
pub fn describe_metrics() {
    metrics::describe_counter!(MESSAGES, "Bus messages, by kind and direction (in, out)");
    metrics::describe_counter!(BYTES, metrics::Unit::Bytes, "Bus payload bytes, by kind and direction (in, out)");
    metrics::describe_histogram!(PUBLISH_DURATION, metrics::Unit::Seconds, "Bus publish latency, by kind");
    metrics::describe_counter!(ERRORS, "Bus publishes that failed, by kind");
    // failures are rare: start each kind at 0, so that increase() sees the first one
    for kind in crate::subjects::KINDS {
        metrics::counter!(ERRORS, "kind" => kind).absolute(0);
    }
}
