//! Erlang/OTP-style supervision tree that keeps the service's long-lived async components
//! (HTTP server, claim loop, heartbeat, reaper, ...) alive: failed children are restarted per
//! strategy with bounded intensity and exponential backoff, and persistent failure escalates.
//!
//! Specs are plain data so the tree's shape can be built and inspected without a runtime;
//! [`run`] is the only place where tasks are spawned.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{self, BoxFuture, FutureExt};
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long a cancelled child may take to finish before its task is aborted, so one stuck
/// child cannot hold a restart or a shutdown hostage.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub type ChildFuture = BoxFuture<'static, Result<(), ChildError>>;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ChildError(pub String);

impl From<String> for ChildError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ChildError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

impl Strategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Restarted after any exit, because the service is broken without it.
    Permanent,
    /// Restarted only after a failure (error or panic); a clean exit means its job is done.
    Transient,
    /// Never restarted.
    Temporary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self { max_restarts: 3, period: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// Delay before the `n`-th restart (1-based) of the current intensity window.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

type StartFn = Arc<dyn Fn(CancellationToken) -> ChildFuture + Send + Sync>;

#[derive(Clone)]
enum ChildKind {
    Worker(StartFn),
    // Kept as a spec, not a running value, because every restart builds a fresh subtree.
    Supervisor(Arc<SupervisorSpec>),
}

#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    restart: Restart,
    kind: ChildKind,
}

impl ChildSpec {
    /// A worker child: `start` is called for each (re)start with a fresh child CancellationToken;
    /// the future must return when the token is cancelled.
    pub fn worker(
        name: impl Into<String>,
        restart: Restart,
        start: impl Fn(CancellationToken) -> ChildFuture + Send + Sync + 'static,
    ) -> Self {
        Self { name: name.into(), restart, kind: ChildKind::Worker(Arc::new(start)) }
    }

    /// A nested supervisor as a child; its escalation is this child's failure.
    pub fn supervisor(spec: SupervisorSpec, restart: Restart) -> Self {
        Self { name: spec.name.clone(), restart, kind: ChildKind::Supervisor(Arc::new(spec)) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn restart(&self) -> Restart {
        self.restart
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ChildSpec");
        d.field("name", &self.name).field("restart", &self.restart);
        match &self.kind {
            ChildKind::Worker(_) => d.field("kind", &"worker"),
            ChildKind::Supervisor(spec) => d.field("supervisor", spec),
        };
        d.finish()
    }
}

#[derive(Debug, Clone)]
pub struct SupervisorSpec {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub backoff: Backoff,
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        Self {
            name: name.into(),
            strategy,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            children: Vec::new(),
        }
    }

    pub fn child(mut self, c: ChildSpec) -> Self {
        self.children.push(c);
        self
    }

    pub fn intensity(mut self, i: Intensity) -> Self {
        self.intensity = i;
        self
    }

    pub fn backoff(mut self, b: Backoff) -> Self {
        self.backoff = b;
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SupervisionEvent {
    ChildFailed { supervisor: String, child: String, reason: String },
    Restarted { supervisor: String, strategy: Strategy, child: String, restarts_in_window: u32, delay: Duration },
    Escalated { supervisor: String, strategy: Strategy, reason: String },
}

pub type Observer = Arc<dyn Fn(SupervisionEvent) + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
#[error("supervisor {supervisor} escalated: {reason}")]
pub struct Escalation {
    pub supervisor: String,
    pub reason: String,
}

/// Runs the tree until `cancel` fires (then stops children in reverse start order and returns
/// Ok) or the root escalates (returns Err).
pub async fn run(spec: SupervisorSpec, cancel: CancellationToken, observer: Observer) -> Result<(), Escalation> {
    supervise(Arc::new(spec), cancel, observer).await
}

// Boxed so that nested supervisors (spawned from inside `Supervisor::run`) do not make the
// future type infinitely recursive.
fn supervise(
    spec: Arc<SupervisorSpec>,
    cancel: CancellationToken,
    observer: Observer,
) -> BoxFuture<'static, Result<(), Escalation>> {
    let slots = spec.children.iter().map(|_| Slot::Idle).collect();
    Supervisor { spec, cancel, observer, slots, restarts: VecDeque::new() }.run().boxed()
}

type ChildHandle = AbortOnDropHandle<Result<(), ChildError>>;

enum Slot {
    Running {
        token: CancellationToken,
        // Abort-on-drop so that aborting a nested supervisor also tears down its subtree
        // instead of detaching the grandchildren.
        handle: ChildHandle,
    },
    /// Not running but still part of the tree (stopped, or waiting out its backoff).
    Idle,
    /// Finished for good; no strategy brings it back.
    Removed,
}

enum Exit {
    Normal,
    Failed(String),
}

struct Supervisor {
    spec: Arc<SupervisorSpec>,
    cancel: CancellationToken,
    observer: Observer,
    slots: Vec<Slot>,
    restarts: VecDeque<Instant>,
}

impl Supervisor {
    async fn run(mut self) -> Result<(), Escalation> {
        for idx in 0..self.slots.len() {
            self.start(idx);
        }
        loop {
            let cancel = self.cancel.clone();
            let (idx, result) = tokio::select! {
                // Cancel wins over a simultaneous child exit so nothing restarts after it.
                biased;
                () = cancel.cancelled() => {
                    self.stop_all().await;
                    return Ok(());
                }
                exit = next_exit(&mut self.slots) => exit,
            };
            self.slots[idx] = Slot::Idle;
            if let Some(done) = self.handle_exit(idx, classify(result)).await {
                return done;
            }
        }
    }

    fn start(&mut self, idx: usize) {
        let token = self.cancel.child_token();
        let fut: ChildFuture = match &self.spec.children[idx].kind {
            ChildKind::Worker(start) => {
                let (start, token) = (Arc::clone(start), token.clone());
                // Calling `start` inside the task means a panic while building the future is
                // caught like any other child panic instead of taking the supervisor down.
                async move { start(token).await }.boxed()
            }
            ChildKind::Supervisor(spec) => supervise(Arc::clone(spec), token.clone(), Arc::clone(&self.observer))
                .map(|r| r.map_err(|e| ChildError(e.to_string())))
                .boxed(),
        };
        let handle = AbortOnDropHandle::new(tokio::spawn(fut));
        self.slots[idx] = Slot::Running { token, handle };
    }

    /// Returns `Some` when the supervisor is done (escalated, or cancelled during backoff).
    async fn handle_exit(&mut self, idx: usize, exit: Exit) -> Option<Result<(), Escalation>> {
        let spec = Arc::clone(&self.spec);
        let child = &spec.children[idx];
        let sup = spec.name.as_str();
        if let Exit::Failed(reason) = &exit {
            tracing::warn!(supervisor = sup, child = %child.name, %reason, "child failed");
            self.emit(SupervisionEvent::ChildFailed {
                supervisor: sup.to_owned(),
                child: child.name.clone(),
                reason: reason.clone(),
            });
        }
        let why = match (child.restart, exit) {
            (Restart::Permanent, Exit::Normal) => "exited".to_owned(),
            (Restart::Permanent | Restart::Transient, Exit::Failed(reason)) => {
                format!("failed: {reason}")
            }
            _ => {
                tracing::debug!(supervisor = sup, child = %child.name, "child removed");
                self.slots[idx] = Slot::Removed;
                return None;
            }
        };

        let now = Instant::now();
        let Intensity { max_restarts, period } = spec.intensity;
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) >= period) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= max_restarts as usize {
            let reason = format!(
                "restart intensity exceeded (more than {max_restarts} restarts in {period:?}); \
                 last: {} {why}",
                child.name
            );
            tracing::error!(supervisor = sup, %reason, "supervisor escalating");
            self.emit(SupervisionEvent::Escalated {
                supervisor: sup.to_owned(),
                strategy: spec.strategy,
                reason: reason.clone(),
            });
            self.stop_all().await;
            return Some(Err(Escalation { supervisor: sup.to_owned(), reason }));
        }
        self.restarts.push_back(now);
        let restarts_in_window = u32::try_from(self.restarts.len()).unwrap_or(u32::MAX);
        let delay = spec.backoff.delay(restarts_in_window);

        let affected = match spec.strategy {
            Strategy::OneForOne => idx..idx + 1,
            Strategy::OneForAll => 0..self.slots.len(),
            Strategy::RestForOne => idx..self.slots.len(),
        };
        // Later children may depend on earlier ones, so they go down first.
        for j in affected.clone().rev() {
            self.stop(j).await;
        }
        let group: Vec<usize> = affected
            .filter(|&j| match self.slots[j] {
                Slot::Removed => false,
                _ if spec.children[j].restart == Restart::Temporary => {
                    self.slots[j] = Slot::Removed;
                    false
                }
                _ => true,
            })
            .collect();

        if !delay.is_zero() {
            tokio::select! {
                () = self.cancel.cancelled() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
        if self.cancel.is_cancelled() {
            self.stop_all().await;
            return Some(Ok(()));
        }
        for j in group {
            let name = &spec.children[j].name;
            tracing::info!(
                supervisor = sup,
                strategy = spec.strategy.as_str(),
                child = %name,
                restarts_in_window,
                ?delay,
                "restarting child"
            );
            self.emit(SupervisionEvent::Restarted {
                supervisor: sup.to_owned(),
                strategy: spec.strategy,
                child: name.clone(),
                restarts_in_window,
                delay,
            });
            self.start(j);
        }
        None
    }

    async fn stop(&mut self, idx: usize) {
        let Slot::Running { token, mut handle } = std::mem::replace(&mut self.slots[idx], Slot::Idle) else {
            return;
        };
        token.cancel();
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut handle).await.is_err() {
            tracing::warn!(
                supervisor = %self.spec.name,
                child = %self.spec.children[idx].name,
                grace = ?SHUTDOWN_GRACE,
                "child ignored cancellation; aborting"
            );
            handle.abort();
            // The outcome of a child we are tearing down is of no interest.
            let _ = handle.await;
        }
    }

    async fn stop_all(&mut self) {
        for idx in (0..self.slots.len()).rev() {
            self.stop(idx).await;
        }
    }

    fn emit(&self, event: SupervisionEvent) {
        (self.observer)(event);
    }
}

/// Waits for the first running child to finish; never resolves when none is running, so the
/// supervisor then just waits for cancellation.
async fn next_exit(slots: &mut [Slot]) -> (usize, Result<Result<(), ChildError>, JoinError>) {
    let (indices, handles): (Vec<usize>, Vec<&mut ChildHandle>) = slots
        .iter_mut()
        .enumerate()
        .filter_map(|(i, slot)| match slot {
            Slot::Running { handle, .. } => Some((i, handle)),
            _ => None,
        })
        .unzip();
    if handles.is_empty() {
        return future::pending().await;
    }
    let (result, pos, _) = future::select_all(handles).await;
    (indices[pos], result)
}

fn classify(result: Result<Result<(), ChildError>, JoinError>) -> Exit {
    match result {
        Ok(Ok(())) => Exit::Normal,
        Ok(Err(e)) => Exit::Failed(e.0),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&'static str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned());
            Exit::Failed(msg.unwrap_or_else(|| "panicked".to_owned()))
        }
        Err(e) => Exit::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use Restart::{Permanent, Temporary, Transient};
    use Step::*;
    use Strategy::{OneForAll, OneForOne, RestForOne};

    /// What a test worker does on its n-th start; once the script runs out it just runs.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Run,
        Fail(u64),
        Exit(u64),
        Panic(u64),
        PanicFormatted(u64),
        PanicAny(u64),
        Hang,
    }

    type Child<'a> = (&'a str, Restart, &'a [Step]);

    /// Logs "+name@ms" on each start and "-name@ms" when a child stops because it was
    /// cancelled, and renders events with every field, so cases can be compared as strings.
    #[derive(Clone)]
    struct Harness {
        t0: Instant,
        log: Arc<Mutex<Vec<String>>>,
        events: Arc<Mutex<Vec<String>>>,
    }

    struct Outcome {
        log: String,
        events: Vec<String>,
        result: Result<(), Escalation>,
        returned_before_cancel: bool,
        ended_ms: u128,
    }

    fn render(event: SupervisionEvent) -> String {
        match event {
            SupervisionEvent::ChildFailed { supervisor, child, reason } => {
                format!("failed {supervisor}/{child}: {reason}")
            }
            SupervisionEvent::Restarted { supervisor, strategy, child, restarts_in_window: n, delay } => {
                format!("restarted {supervisor}/{child} {strategy} #{n} +{delay:?}")
            }
            SupervisionEvent::Escalated { supervisor, reason, .. } => {
                format!("escalated {supervisor}: {reason}")
            }
        }
    }

    impl Harness {
        fn new() -> Self {
            Self { t0: Instant::now(), log: Arc::default(), events: Arc::default() }
        }

        fn note(&self, what: String) {
            let ms = self.t0.elapsed().as_millis();
            self.log.lock().unwrap().push(format!("{what}@{ms}"));
        }

        fn take_log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }

        fn worker(&self, name: &str, restart: Restart, steps: &[Step]) -> ChildSpec {
            let (h, steps, label) = (self.clone(), steps.to_vec(), name.to_owned());
            let starts = AtomicUsize::new(0);
            ChildSpec::worker(name, restart, move |token| {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                let step = steps.get(n).copied().unwrap_or(Run);
                let (h, name) = (h.clone(), label.clone());
                async move {
                    h.note(format!("+{name}"));
                    let ms = match step {
                        Run => u64::MAX / 4,
                        Hang => return future::pending().await,
                        Fail(ms) | Exit(ms) | Panic(ms) | PanicFormatted(ms) | PanicAny(ms) => ms,
                    };
                    tokio::select! {
                        () = token.cancelled() => {
                            h.note(format!("-{name}"));
                            return Ok(());
                        }
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    }
                    match step {
                        Fail(_) => Err("boom".into()),
                        Panic(_) => panic!("kaboom"),
                        PanicFormatted(_) => panic!("kaboom {}", 7),
                        PanicAny(_) => std::panic::panic_any(42u8),
                        _ => Ok(()),
                    }
                }
                .boxed()
            })
        }

        fn spec(&self, name: &str, strategy: Strategy, children: &[Child]) -> SupervisorSpec {
            children
                .iter()
                .fold(SupervisorSpec::new(name, strategy), |spec, (n, r, steps)| spec.child(self.worker(n, *r, steps)))
        }

        /// Runs `spec` for `run_ms` of paused time, then cancels. `log` only covers the time
        /// before cancel; `take_log` afterwards yields what happened during shutdown.
        async fn scenario(&self, spec: SupervisorSpec, run_ms: u64) -> Outcome {
            let cancel = CancellationToken::new();
            let events = Arc::clone(&self.events);
            let observer: Observer = Arc::new(move |e| events.lock().unwrap().push(render(e)));
            let task = tokio::spawn(run(spec, cancel.clone(), observer));
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            let returned_before_cancel = task.is_finished();
            let log = self.take_log().join(" ");
            cancel.cancel();
            let result = task.await.expect("supervisor task panicked");
            Outcome {
                log,
                events: self.events.lock().unwrap().clone(),
                result,
                returned_before_cancel,
                ended_ms: self.t0.elapsed().as_millis(),
            }
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn strategies_restart_the_right_children_in_order() {
        // b fails once after 10ms; (strategy, c's restart type, log, children restarted)
        let cases = [
            (OneForOne, Permanent, "+a@0 +b@0 +c@0 +b@110", "b"),
            (OneForAll, Transient, "+a@0 +b@0 +c@0 -c@10 -a@10 +a@110 +b@110 +c@110", "a b c"),
            (RestForOne, Permanent, "+a@0 +b@0 +c@0 -c@10 +b@110 +c@110", "b c"),
            // Temporary siblings go down with the group but never come back.
            (OneForAll, Temporary, "+a@0 +b@0 +c@0 -c@10 -a@10 +a@110 +b@110", "a b"),
        ];
        for (strategy, c_restart, log, again) in cases {
            let h = Harness::new();
            let children: [Child; 3] = [("a", Permanent, &[]), ("b", Permanent, &[Fail(10)]), ("c", c_restart, &[])];
            let out = h.scenario(h.spec("root", strategy, &children), 1_000).await;
            assert_eq!(out.log, log, "{strategy}");
            let mut events = strings(&["failed root/b: boom"]);
            events.extend(again.split(' ').map(|c| format!("restarted root/{c} {strategy} #1 +100ms")));
            assert_eq!(out.events, events, "{strategy}");
            assert!(out.result.is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn intensity_escalates_only_on_bursts() {
        let reason = "restart intensity exceeded (more than 3 restarts in 5s); last: w failed: boom";

        // The fourth failure within 5s would need a fourth restart inside the window; the
        // siblings are then stopped in reverse order.
        let h = Harness::new();
        let children: [Child; 3] = [("p1", Permanent, &[]), ("p2", Permanent, &[]), ("w", Permanent, &[Fail(10); 4])];
        let out = h.scenario(h.spec("root", OneForOne, &children), 10_000).await;
        assert_eq!(out.log, "+p1@0 +p2@0 +w@0 +w@110 +w@320 +w@730 -p2@740 -p1@740");
        let events = strings(&[
            "failed root/w: boom",
            "restarted root/w one_for_one #1 +100ms",
            "failed root/w: boom",
            "restarted root/w one_for_one #2 +200ms",
            "failed root/w: boom",
            "restarted root/w one_for_one #3 +400ms",
            "failed root/w: boom",
            &format!("escalated root: {reason}"),
        ]);
        assert_eq!(out.events, events);
        assert!(out.returned_before_cancel);
        let err = out.result.unwrap_err();
        assert_eq!((err.supervisor.as_str(), err.reason.as_str()), ("root", reason));

        // Failures 6s apart: each restart is alone in its window, however many there are.
        let h = Harness::new();
        let children: [Child; 1] = [("w", Permanent, &[Fail(6_000); 5])];
        let out = h.scenario(h.spec("root", OneForOne, &children), 40_000).await;
        assert_eq!(out.log, "+w@0 +w@6100 +w@12200 +w@18300 +w@24400 +w@30500");
        let once = ["failed root/w: boom", "restarted root/w one_for_one #1 +100ms"];
        assert_eq!(out.events, strings(&once.repeat(5)));
        assert!(!out.returned_before_cancel);
        assert!(out.result.is_ok());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(1_000) };
        for (n, ms) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1_000), (40, 1_000)] {
            assert_eq!(b.delay(n), Duration::from_millis(ms), "n={n}");
        }
        assert_eq!(Backoff::default().delay(u32::MAX), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_delays_restarts_exponentially_up_to_the_cap() {
        // (initial ms, max ms, expected delay of each restart)
        let cases: [(u64, u64, &[u64]); 2] = [(100, 300, &[100, 200, 300, 300, 300]), (0, 300, &[0, 0, 0, 0, 0])];
        for (initial, max, delays) in cases {
            let h = Harness::new();
            let children: [Child; 1] = [("w", Permanent, &[Fail(0); 5])];
            let spec = h
                .spec("root", OneForOne, &children)
                .intensity(Intensity { max_restarts: 10, period: Duration::from_secs(60) })
                .backoff(Backoff { initial: Duration::from_millis(initial), max: Duration::from_millis(max) });
            let out = h.scenario(spec, 5_000).await;

            let (mut at, mut log, mut events) = (0, vec!["+w@0".to_owned()], Vec::new());
            for (n, &d) in (1..).zip(delays) {
                at += d;
                log.push(format!("+w@{at}"));
                events.push("failed root/w: boom".to_owned());
                let delay = Duration::from_millis(d);
                events.push(format!("restarted root/w one_for_one #{n} +{delay:?}"));
            }
            assert_eq!(out.log, log.join(" "), "initial={initial}");
            assert_eq!(out.events, events, "initial={initial}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nested_escalation_restarts_the_nested_supervisor() {
        let h = Harness::new();
        let inner: [Child; 2] = [("peer", Permanent, &[]), ("leaf", Permanent, &[Fail(10)])];
        let inner =
            h.spec("inner", OneForOne, &inner).intensity(Intensity { max_restarts: 0, period: Duration::from_secs(5) });
        let spec = h.spec("root", OneForOne, &[("x", Permanent, &[])]).child(ChildSpec::supervisor(inner, Permanent));
        let out = h.scenario(spec, 1_000).await;

        assert_eq!(out.log, "+x@0 +peer@0 +leaf@0 -peer@10 +peer@110 +leaf@110");
        let reason = "restart intensity exceeded (more than 0 restarts in 5s); last: leaf failed: boom";
        let events = [
            "failed inner/leaf: boom".to_owned(),
            format!("escalated inner: {reason}"),
            format!("failed root/inner: supervisor inner escalated: {reason}"),
            "restarted root/inner one_for_one #1 +100ms".to_owned(),
        ];
        assert_eq!(out.events, events);
        assert!(out.result.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_child_is_a_failure() {
        let cases = [(Panic(10), "kaboom"), (PanicFormatted(10), "kaboom 7"), (PanicAny(10), "panicked")];
        for (step, reason) in cases {
            let h = Harness::new();
            let out = h.scenario(h.spec("root", OneForOne, &[("w", Transient, &[step])]), 1_000).await;
            assert_eq!(out.log, "+w@0 +w@110", "{step:?}");
            let events = [format!("failed root/w: {reason}"), "restarted root/w one_for_one #1 +100ms".to_owned()];
            assert_eq!(out.events, events, "{step:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn restart_type_decides_what_comes_back() {
        const F: &str = "failed root/w: boom";
        const R: &str = "restarted root/w one_for_one #1 +100ms";
        let cases: [(Restart, Step, &str, &[&str]); 6] = [
            (Permanent, Exit(10), "+w@0 +w@110", &[R]),
            (Permanent, Fail(10), "+w@0 +w@110", &[F, R]),
            (Transient, Exit(10), "+w@0", &[]),
            (Transient, Fail(10), "+w@0 +w@110", &[F, R]),
            (Temporary, Exit(10), "+w@0", &[]),
            (Temporary, Fail(10), "+w@0", &[F]),
        ];
        for (restart, step, log, events) in cases {
            let h = Harness::new();
            let out = h.scenario(h.spec("root", OneForOne, &[("w", restart, &[step])]), 1_000).await;
            assert_eq!(out.log, log, "{restart:?} {step:?}");
            assert_eq!(out.events, strings(events), "{restart:?} {step:?}");
            // With no children left the supervisor still only returns on cancel.
            assert!(!out.returned_before_cancel, "{restart:?} {step:?}");
            assert!(out.result.is_ok(), "{restart:?} {step:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_every_child_and_returns_ok() {
        // (children, stops seen after cancel at 1000ms, end of run): a child ignoring cancel
        // costs the grace period, and a pending 60s backoff is not waited out.
        let cases: [(&[Child], &[&str], u128); 3] = [
            (&[("a", Permanent, &[]), ("b", Permanent, &[])], &["-a@1000", "-b@1000"], 1_000),
            (
                &[("a", Permanent, &[]), ("h", Permanent, &[Hang]), ("b", Permanent, &[])],
                &["-a@1000", "-b@1000"],
                6_000,
            ),
            (&[("a", Permanent, &[]), ("b", Permanent, &[Fail(10)])], &[], 1_000),
        ];
        for (children, stops, ended_ms) in cases {
            let h = Harness::new();
            let spec = h
                .spec("root", OneForAll, children)
                .backoff(Backoff { initial: Duration::from_secs(60), max: Duration::from_secs(60) });
            let out = h.scenario(spec, 1_000).await;
            assert!(out.result.is_ok(), "{children:?}");
            assert!(!out.returned_before_cancel, "{children:?}");
            assert_eq!(out.ended_ms, ended_ms, "{children:?}");
            // Every child sees the shared parent token at once, so only the set is fixed.
            let mut seen = h.take_log();
            seen.sort();
            assert_eq!(seen, stops, "{children:?}");
        }
    }
}
