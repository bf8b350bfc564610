//! The one way a task enters the platform through the gateway: the tasks API, session turns and
//! an agent's `spawn_task` all submit here (routes, sessions and MCP depend on this module, never
//! on each other for it).

use crate::error::ApiResult;
use crate::AppState;
use smith_core::trace::{Kind, Span};
use smith_core::NewTask;

/// Generations of sub-tasks: how deep an agent's `spawn_task` may nest, and how far a cancel
/// reaches down (an agent spawns children, which spawn theirs).
pub(crate) const MAX_DEPTH: usize = 8;

/// Validates and submits a task, announces it and wakes the workers: every way in (the tasks
/// API, session turns, an agent's `spawn_task`) goes through here. With `audit`, the request's
/// record is written in the submission's own write.
pub(crate) async fn submit_task(
    s: &AppState,
    task: NewTask,
    audit: Option<smith_core::NewAuditRecord>,
) -> ApiResult<smith_store::Submitted> {
    task.validate()?;
    s.quotas.admit(s.store.as_ref(), &task.tenant).await?;
    let mut span = Span::start("store.submit", Kind::Client, task.traceparent.as_deref());
    if span.is_some() {
        span.attr("smith.task.id", task.id.to_string());
    }
    let submitted = match audit {
        Some(record) => s.store.submit_audited(task, record).await,
        None => s.store.submit(task).await,
    };
    if let Err(e) = &submitted {
        span.fail(e.to_string());
    }
    drop(span);
    let submitted = submitted?;
    if submitted.created {
        let t = &submitted.task;
        crate::metrics::submitted(&t.agent);
        let span = Span::start("bus.publish", Kind::Producer, t.traceparent.as_deref());
        smith_bus::publish_events(s.bus.as_ref(), &submitted.events).await;
        drop(span);
        // wake-ups are a fast path only: workers also poll, so a lost one strands nothing
        let _ = s.bus.publish(&smith_bus::subjects::wake(&t.agent), bytes::Bytes::new()).await;
    }
    Ok(submitted)
}
