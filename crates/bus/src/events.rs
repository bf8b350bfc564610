//! Publishing committed events for live readers: one message per event, on its task's subject.

use crate::{subjects, Bus};
use smith_core::Event;

/// Publishes events after their commit. Failures are logged, never returned: readers fill
/// any gap from the store, so a lost publish delays nothing but a wake-up.
pub async fn publish_events(bus: &dyn Bus, events: &[Event]) {
    for ev in events {
        let subject = match (&ev.task_id, &ev.agent) {
            (Some(id), Some(agent)) => subjects::task_events(agent, &id.to_string()),
            _ => subjects::SYSTEM.to_string(),
        };
        let payload = match serde_json::to_vec(ev) {
            Ok(p) => bytes::Bytes::from(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode event");
                continue;
            }
        };
        if let Err(e) = bus.publish(&subject, payload).await {
            tracing::debug!(error = %e, subject, "event publish failed; readers will read the store");
        }
    }
}
