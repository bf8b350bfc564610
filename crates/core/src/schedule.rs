//! Schedules: a tenant's task submitted on a cron timetable (docs/schedules.md) — the record,
//! the checks a new one passes (each error names its field), and the firing plan: what the
//! leader does with a schedule whose next fire is due (fire it, pass it over for an unfinished
//! previous run, or count fires older than the catch-up window as missed).

use crate::cron::Timetable;
use crate::{Error, Micros, NewTask, Result, TaskId, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// The longest catch-up window: fires missed longer ago than this are never run.
pub const MAX_CATCHUP: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest schedule name.
pub const MAX_NAME_LEN: usize = 200;
/// How many missed fires one step counts at most before moving the cursor: a long outage of a
/// frequent schedule is passed over in bounded steps.
pub const MAX_MISSED_PER_STEP: u64 = 100_000;

/// What a fire does while the schedule's previous run is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The fire is passed over (counted in `skipped`): never two runs at once.
    #[default]
    Skip,
    /// The fire submits its task anyway; it queues behind the previous one's.
    Enqueue,
    /// The previous run is cancelled, then the fire submits its task.
    CancelPrevious,
}

impl Overlap {
    pub const ALL: [Overlap; 3] = [Overlap::Skip, Overlap::Enqueue, Overlap::CancelPrevious];

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Enqueue => "enqueue",
            Overlap::CancelPrevious => "cancel_previous",
        }
    }
}

crate::named_enum!(Overlap, "overlap policy");

/// A schedule as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub agent: String,
    pub input: Value,
    /// Copied into every fired task's metadata, with `schedule_id` and `fire_time` added.
    pub metadata: Value,
    pub priority: u8,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub cron: String,
    /// An IANA zone name: the cron expression is read in its local time.
    pub timezone: String,
    pub overlap: Overlap,
    /// Missed fires at most this old are still run after an outage; older ones are counted
    /// as missed. The latest missed fire always runs.
    #[serde(with = "crate::time::duration")]
    pub catchup: Duration,
    pub paused: bool,
    /// The next fire not yet handled (the firing cursor); `None` when paused or never again.
    pub next_fire_at: Option<Micros>,
    pub last_fire_at: Option<Micros>,
    pub last_task_id: Option<TaskId>,
    /// The last fired task's status, read with the schedule (not stored with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_status: Option<TaskStatus>,
    /// Fires passed over because the previous run was unfinished (`overlap = skip`).
    pub skipped: u64,
    pub last_skipped_at: Option<Micros>,
    /// Fires older than the catch-up window when they were reached, never run.
    pub missed: u64,
    pub created_at: Micros,
    pub updated_at: Micros,
}

impl Schedule {
    pub fn timetable(&self) -> Result<Timetable> {
        Timetable::new(&self.cron, &self.timezone)
    }

    /// The task a fire at `fire_at` submits: its idempotency key names the schedule and the
    /// fire time, so a fire repeated by a second leader finds the first one's task.
    pub fn task_for(&self, fire_at: Micros) -> NewTask {
        let fire_time = fire_at.rfc3339();
        let mut metadata = match &self.metadata {
            Value::Object(m) => m.clone(),
            _ => Default::default(),
        };
        metadata.insert("schedule_id".into(), json!(self.id));
        metadata.insert("fire_time".into(), json!(fire_time));
        let mut t = NewTask::new(self.agent.clone(), self.input.clone());
        t.tenant = self.tenant.clone();
        t.priority = self.priority;
        t.timeout_ms = self.timeout_ms;
        t.max_attempts = self.max_attempts;
        t.metadata = Value::Object(metadata);
        t.idempotency_key = Some(fire_key(&self.id, fire_at));
        t
    }

    /// Whether the previous fire's task has not finished (so `skip` passes this one over).
    pub fn previous_unfinished(&self) -> bool {
        self.last_task_status.is_some_and(|s| !s.is_terminal())
    }
}

/// The idempotency key of a schedule's fire: `schedule:{id}:{fire time, RFC 3339}`.
pub fn fire_key(schedule: &str, fire_at: Micros) -> String {
    format!("schedule:{schedule}:{}", fire_at.rfc3339())
}

/// Checks a schedule's own fields (the agent's existence is the caller's), each error naming
/// its field; returns its timetable.
pub fn check(s: &Schedule) -> Result<Timetable> {
    let field = |name: &str, e: Error| Error::unprocessable(format!("{name}: {}", e.message));
    if s.name.is_empty() || s.name.len() > MAX_NAME_LEN || s.name.chars().any(char::is_control) {
        return Err(Error::unprocessable(format!("name must be 1..={MAX_NAME_LEN} bytes without control characters")));
    }
    if s.agent.is_empty() || s.agent.len() > 128 {
        return Err(Error::unprocessable("agent must name an agent"));
    }
    let cron = crate::cron::Cron::parse(&s.cron).map_err(|e| field("cron", e))?;
    let zone = crate::cron::zone(&s.timezone).map_err(|e| field("timezone", e))?;
    if s.catchup > MAX_CATCHUP {
        return Err(Error::unprocessable(format!(
            "catchup must be at most {}",
            humantime::format_duration(MAX_CATCHUP)
        )));
    }
    if !s.metadata.is_object() {
        return Err(Error::unprocessable("metadata must be an object"));
    }
    if s.priority > crate::task::MAX_PRIORITY {
        return Err(Error::unprocessable(format!("priority must be 0..={}", crate::task::MAX_PRIORITY)));
    }
    // the fired tasks' own checks, on a task of a fire now
    s.task_for(Micros::now()).validate()?;
    Ok(Timetable { cron, zone })
}

/// What one firing step does with a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The fire acted on.
    pub fire_at: Micros,
    /// The cursor after the step: the fire after `fire_at`.
    pub next: Option<Micros>,
    pub action: Action,
    /// Fires before `fire_at` passed over as older than the catch-up window.
    pub missed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Submit the fire's task (after cancelling the previous run, for `cancel_previous`).
    Fire,
    /// Pass the fire over: the previous run is unfinished and the policy is `skip`.
    Skip,
    /// Only move the cursor past `missed` fires (a long outage, in bounded steps).
    Miss,
}

/// The next step for schedule `s` at `now`, or `None` when nothing is due.
///
/// Due fires are those at or before `now` from the cursor on. Each is run when it is within
/// `catchup` of `now`, or is the latest due fire (a late leader still runs the fire it was
/// late for); older ones are missed. A step handles one fire, so each fire's task is submitted
/// in its own write with the cursor moved past it.
pub fn plan(s: &Schedule, table: &Timetable, now: Micros) -> Option<Step> {
    let cursor = s.next_fire_at.filter(|c| *c <= now && !s.paused)?;
    let horizon = Micros(now.0.saturating_sub(s.catchup.as_micros() as i64));
    let mut fire_at = cursor;
    let mut next = table.next_after(fire_at);
    let mut missed = 0;
    while fire_at < horizon {
        match next {
            Some(n) if n <= now => {
                missed += 1;
                fire_at = n;
                next = table.next_after(n);
                if missed >= MAX_MISSED_PER_STEP {
                    return Some(Step { fire_at, next: Some(fire_at), action: Action::Miss, missed });
                }
            }
            // the latest due fire
            _ => break,
        }
    }
    let action = if s.overlap == Overlap::Skip && s.previous_unfinished() { Action::Skip } else { Action::Fire };
    Some(Step { fire_at, next, action, missed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Micros {
        Micros::parse_rfc3339(s).unwrap()
    }

    fn schedule(cron: &str, catchup_s: u64, next: &str) -> Schedule {
        Schedule {
            id: "s1".into(),
            tenant: "acme".into(),
            name: "nightly".into(),
            agent: "echo".into(),
            input: json!({"x": 1}),
            metadata: json!({"team": "a"}),
            priority: 0,
            timeout_ms: None,
            max_attempts: None,
            cron: cron.into(),
            timezone: "UTC".into(),
            overlap: Overlap::Skip,
            catchup: Duration::from_secs(catchup_s),
            paused: false,
            next_fire_at: Some(at(next)),
            last_fire_at: None,
            last_task_id: None,
            last_task_status: None,
            skipped: 0,
            last_skipped_at: None,
            missed: 0,
            created_at: Micros(0),
            updated_at: Micros(0),
        }
    }

    #[test]
    fn a_due_fire_fires_and_moves_the_cursor_to_the_next() {
        let s = schedule("*/2 * * * * *", 0, "2026-01-01T00:00:02Z");
        let t = s.timetable().unwrap();
        assert_eq!(plan(&s, &t, at("2026-01-01T00:00:01Z")), None, "not due yet");
        let step = plan(&s, &t, at("2026-01-01T00:00:02.010Z")).unwrap();
        assert_eq!(step.fire_at, at("2026-01-01T00:00:02Z"));
        assert_eq!(step.next, Some(at("2026-01-01T00:00:04Z")));
        assert_eq!((step.action, step.missed), (Action::Fire, 0));
    }

    #[test]
    fn after_an_outage_fires_within_catchup_run_and_older_ones_are_missed() {
        // down from 00:00:02 to 00:00:21: fires 2..20 are due
        let now = at("2026-01-01T00:00:21Z");
        let s = schedule("*/2 * * * * *", 5, "2026-01-01T00:00:02Z");
        let step = plan(&s, &s.timetable().unwrap(), now).unwrap();
        // 16, 18 and 20 are within 5 s; 2..14 (7 fires) are missed
        assert_eq!((step.fire_at, step.missed, step.action), (at("2026-01-01T00:00:16Z"), 7, Action::Fire));
        // no catch-up: only the latest due fire runs
        let s = schedule("*/2 * * * * *", 0, "2026-01-01T00:00:02Z");
        let step = plan(&s, &s.timetable().unwrap(), now).unwrap();
        assert_eq!((step.fire_at, step.missed), (at("2026-01-01T00:00:20Z"), 9));
        assert_eq!(step.next, Some(at("2026-01-01T00:00:22Z")));
    }

    #[test]
    fn skip_passes_a_fire_over_while_the_previous_run_is_unfinished() {
        let mut s = schedule("*/2 * * * * *", 0, "2026-01-01T00:00:02Z");
        s.last_task_status = Some(TaskStatus::Running);
        let t = s.timetable().unwrap();
        assert_eq!(plan(&s, &t, at("2026-01-01T00:00:02Z")).unwrap().action, Action::Skip);
        s.overlap = Overlap::Enqueue;
        assert_eq!(plan(&s, &t, at("2026-01-01T00:00:02Z")).unwrap().action, Action::Fire);
        s.overlap = Overlap::Skip;
        s.last_task_status = Some(TaskStatus::Succeeded);
        assert_eq!(plan(&s, &t, at("2026-01-01T00:00:02Z")).unwrap().action, Action::Fire);
        s.paused = true;
        assert_eq!(plan(&s, &t, at("2026-01-01T00:00:02Z")), None, "a paused schedule never fires");
    }

    #[test]
    fn a_fired_task_carries_the_schedule_and_its_fire_time() {
        let s = schedule("0 * * * *", 0, "2026-01-01T01:00:00Z");
        let t = s.task_for(at("2026-01-01T01:00:00Z"));
        assert_eq!(t.idempotency_key.as_deref(), Some("schedule:s1:2026-01-01T01:00:00.000000Z"));
        assert_eq!(t.metadata, json!({"team": "a", "schedule_id": "s1", "fire_time": "2026-01-01T01:00:00.000000Z"}));
        assert_eq!((t.tenant.as_str(), t.agent.as_str()), ("acme", "echo"));
    }

    #[test]
    fn checks_name_the_field() {
        for (edit, field) in [
            (Box::new(|s: &mut Schedule| s.cron = "* *".into()) as Box<dyn Fn(&mut Schedule)>, "cron:"),
            (Box::new(|s: &mut Schedule| s.timezone = "Nowhere/City".into()), "timezone:"),
            (Box::new(|s: &mut Schedule| s.name = String::new()), "name"),
            (Box::new(|s: &mut Schedule| s.catchup = Duration::from_secs(30 * 86_400)), "catchup"),
            (Box::new(|s: &mut Schedule| s.metadata = json!([1])), "metadata"),
            (Box::new(|s: &mut Schedule| s.priority = 10), "priority"),
        ] {
            let mut s = schedule("* * * * *", 0, "2026-01-01T00:00:00Z");
            edit(&mut s);
            let e = check(&s).unwrap_err();
            assert!(e.message.starts_with(field), "{field}: {}", e.message);
        }
        "cancel_previous".parse::<Overlap>().unwrap();
        assert!("sometimes".parse::<Overlap>().unwrap_err().message.contains("overlap policy"));
    }
}
