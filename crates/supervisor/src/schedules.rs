//! The schedule firing loop (docs/schedules.md): while this supervisor leads, it wakes at the
//! earliest next fire of any schedule (looking again at least every [`LOOK_EVERY`], so a new
//! schedule is seen soon), and takes every due schedule through its firing steps
//! ([`smith_core::schedule::plan`]). Each step is one store write that moves the schedule's
//! cursor by compare-and-set with the fire's task (idempotency key `schedule:{id}:{fire time}`),
//! so a fire is submitted once even when two supervisors briefly both believe they lead, and a
//! new leader carries on from the cursor: nothing fired twice, nothing skipped.

use crate::Supervisor;
use futures_util::StreamExt;
use smith_core::schedule::{plan, Action, Overlap, Schedule};
use smith_core::trace::{Kind, Span};
use smith_core::{Code, Micros, TaskStatus};
use smith_store::Fire;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest sleep between two looks at the schedules.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Due schedules read per pass; a full page is followed at once by the next.
const PAGE: usize = 512;
/// Schedules fired at once: their writes share the store's batches.
const CONCURRENT: usize = 64;

/// Counts fires by outcome (`smith_schedule_fires_total`).
fn count(outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("smith_schedule_fires_total", "outcome" => outcome).increment(n);
    }
}

impl Supervisor {
    /// Fires due schedules while this supervisor holds the leader lease.
    pub async fn schedule_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        loop {
            let wait = if self.leader.load(Ordering::Acquire) { self.fire_schedules().await } else { LOOK_EVERY };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One look: fires what is due, and says how long to wait before the next look.
    pub async fn fire_schedules(&self) -> Duration {
        let now = Micros::now();
        let next = match self.store.next_schedule_fire().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next schedule fire");
                return LOOK_EVERY;
            }
        };
        match next {
            None => return LOOK_EVERY,
            Some(at) if at > now => return Duration::from_micros(at.since(now) as u64).min(LOOK_EVERY),
            Some(_) => {}
        }
        let due = match self.store.due_schedules(now, PAGE).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due schedules");
                return LOOK_EVERY;
            }
        };
        let full = due.len() == PAGE;
        let troubled = std::sync::atomic::AtomicBool::new(false);
        futures_util::stream::iter(due)
            .for_each_concurrent(CONCURRENT, |s| async {
                if !self.fire_schedule(s, now).await {
                    troubled.store(true, Ordering::Relaxed);
                }
            })
            .await;
        if troubled.load(Ordering::Relaxed) {
            // a store error: the failed schedules are still due, so wait before trying again
            LOOK_EVERY
        } else if full {
            Duration::ZERO
        } else {
            // fires fall on whole seconds: look again at once only if one came due meanwhile
            Duration::from_millis(1)
        }
    }

    /// Takes one due schedule through its steps up to `now`: every fire within its catch-up
    /// window, each in its own write. False after a store error (the schedule is still due).
    async fn fire_schedule(&self, mut s: Schedule, now: Micros) -> bool {
        let table = match s.timetable() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(schedule = %s.id, error = %e, "stored schedule does not parse");
                return true;
            }
        };
        while let Some(step) = plan(&s, &table, now) {
            let Some(from) = s.next_fire_at else { return true };
            let mut fire = Fire {
                schedule: s.id.clone(),
                from,
                to: step.next,
                fire_at: step.fire_at,
                task: None,
                skipped: step.action == Action::Skip,
                missed: step.missed,
            };
            if step.action == Action::Fire {
                // the tenant's quotas first: a fire is a submission like any other
                let admit = self.admission.lock().expect("admission lock").clone();
                let refused = match admit {
                    Some(admit) => admit(s.tenant.clone()).await.err(),
                    None => None,
                };
                match refused {
                    Some(why) => {
                        tracing::warn!(schedule = %s.id, tenant = %s.tenant, fire_time = %step.fire_at.rfc3339(), reason = %why, "schedule fire refused by the tenant's quota");
                        count("refused", 1);
                        fire.missed += 1;
                    }
                    None => {
                        if s.overlap == Overlap::CancelPrevious && s.previous_unfinished() {
                            self.cancel_previous(&s).await;
                        }
                        let mut task = s.task_for(step.fire_at);
                        // the fired task's trace starts at its fire
                        let mut span = Span::start("schedule.fire", Kind::Producer, None);
                        if span.is_some() {
                            span.attr("smith.schedule.id", s.id.clone());
                            span.attr("smith.tenant", s.tenant.clone());
                            span.attr("smith.fire_time", step.fire_at.rfc3339());
                            task.traceparent = span.traceparent();
                        }
                        fire.task = Some(task);
                    }
                }
            }
            let result = match self.store.fire_schedule(fire.clone()).await {
                // the agent is gone or the task no longer valid: the fire cannot run, and is
                // counted as missed rather than tried for ever
                Err(e) if e.code() == Code::Unprocessable || e.code() == Code::InvalidArgument => {
                    tracing::warn!(schedule = %s.id, fire_time = %step.fire_at.rfc3339(), error = %e, "schedule fire cannot run");
                    count("failed", 1);
                    let passed = Fire { task: None, missed: fire.missed + 1, ..fire };
                    self.store.fire_schedule(passed).await.map(|_| None)
                }
                other => other,
            };
            match result {
                Ok(submitted) => {
                    count("missed", step.missed);
                    s.next_fire_at = step.next;
                    match (step.action, submitted) {
                        (Action::Skip, _) => count("skipped", 1),
                        (Action::Fire, Some(sub)) => {
                            count("fired", 1);
                            let delay = sub.task.created_at.since(step.fire_at) as f64 / 1e6;
                            metrics::histogram!("smith_schedule_fire_delay_seconds").record(delay);
                            s.last_task_id = Some(sub.task.id);
                            s.last_task_status = Some(sub.task.status);
                            smith_bus::publish_events(self.bus.as_ref(), &sub.events).await;
                            let wake = smith_bus::subjects::wake(&sub.task.agent);
                            let _ = self.bus.publish(&wake, bytes::Bytes::new()).await;
                        }
                        _ => {}
                    }
                }
                // another leader moved it, or it was paused or deleted: nothing more here
                Err(e) if e.code() == Code::Conflict => return true,
                Err(e) => {
                    tracing::warn!(schedule = %s.id, error = %e, "cannot fire schedule");
                    return false;
                }
            }
        }
        true
    }

    /// `cancel_previous`: the schedule's unfinished last run is cancelled before the next fire.
    async fn cancel_previous(&self, s: &Schedule) {
        let Some(id) = s.last_task_id else { return };
        match self.store.request_cancel(id).await {
            Ok(change) => {
                smith_bus::publish_events(self.bus.as_ref(), &change.events).await;
                if change.task.status == TaskStatus::Running {
                    let _ = self.bus.publish(smith_bus::subjects::CANCEL, bytes::Bytes::from(id.to_string())).await;
                }
            }
            Err(e) => {
                tracing::warn!(schedule = %s.id, task_id = %id, error = %e, "cannot cancel a schedule's previous run")
            }
        }
    }
}

/// Describes the firing loop's metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "smith_schedule_fires_total",
        "Schedule fires by outcome: fired (task submitted), skipped (previous run unfinished), missed (older than the catch-up window), failed (the task could not be submitted), refused (the tenant's quota)"
    );
    metrics::describe_histogram!(
        "smith_schedule_fire_delay_seconds",
        "From a schedule fire's intended time to its task's creation"
    );
    for outcome in ["fired", "skipped", "missed", "failed", "refused"] {
        metrics::counter!("smith_schedule_fires_total", "outcome" => outcome).absolute(0);
    }
}
