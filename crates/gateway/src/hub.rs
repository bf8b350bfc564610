//! The gateway's fan-out hub: one bus subscription per gateway, delivered in-process to the
//! SSE streams that follow a task or the whole feed.
//!
//! Each stream gets a channel bounded in events and in bytes. A stream that falls behind is
//! unhooked (never buffered without bound) and told so by its channel closing with `lagged`
//! set; it then reads what it missed from the store, which is the truth, and hooks in again.

use bytes::Bytes;
use smith_core::{EventHeader, TaskId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// An event as it travels: its routing header, and its JSON (the SSE `data`) as published,
/// so a 14 KB payload is neither decoded nor re-encoded on the way to readers.
#[derive(Debug)]
pub struct LiveEvent {
    pub event: EventHeader,
    pub json: Bytes,
}

struct Hook {
    id: u64,
    tx: mpsc::Sender<Arc<LiveEvent>>,
    lagged: Arc<AtomicBool>,
    /// Bytes of JSON sent to the tap and not yet received.
    queued: Arc<AtomicU64>,
}

/// A tap's receiving end: counts the bytes it takes off the queue.
pub struct Receiver {
    rx: mpsc::Receiver<Arc<LiveEvent>>,
    queued: Arc<AtomicU64>,
}

impl Receiver {
    /// The next event; `None` once the hub unhooked the tap. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Arc<LiveEvent>> {
        let ev = self.rx.recv().await?;
        self.queued.fetch_sub(ev.json.len() as u64, Ordering::AcqRel);
        Some(ev)
    }
}

#[derive(Default)]
pub struct Hub {
    tasks: Mutex<HashMap<TaskId, Vec<Hook>>>,
    all: Mutex<Vec<Hook>>,
    next: AtomicU64,
    buffer: usize,
    /// Most bytes queued per tap; one event larger than this still goes to an empty queue.
    buffer_bytes: u64,
    /// Bumped when the hub may have missed messages: every stream then reads the store.
    missed: tokio::sync::watch::Sender<u64>,
}

/// A stream's hook into the hub; unhooks on drop.
pub struct Tap {
    pub rx: Receiver,
    /// Changes when the hub may have missed messages: see [`suspect`].
    pub missed: tokio::sync::watch::Receiver<u64>,
    lagged: Arc<AtomicBool>,
    id: u64,
    task: Option<TaskId>,
    hub: Arc<Hub>,
}

impl Tap {
    /// True when the hub unhooked this tap because it fell behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

/// Resolves when the hub may have missed messages since the tap was made or last told
/// (cancel-safe): the stream should read the store.
pub async fn suspect(missed: &mut tokio::sync::watch::Receiver<u64>) {
    if missed.changed().await.is_err() {
        // the hub is gone with the gateway: nothing more will come this way
        std::future::pending::<()>().await;
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        match self.task {
            Some(t) => {
                let mut tasks = self.hub.tasks.lock().expect("hub lock");
                if let Some(hooks) = tasks.get_mut(&t) {
                    hooks.retain(|h| h.id != self.id);
                    if hooks.is_empty() {
                        tasks.remove(&t);
                    }
                }
            }
            None => self.hub.all.lock().expect("hub lock").retain(|h| h.id != self.id),
        }
    }
}

impl Hub {
    pub fn new(buffer: usize, buffer_bytes: usize) -> Arc<Self> {
        Arc::new(Hub { buffer: buffer.max(1), buffer_bytes: buffer_bytes.max(1) as u64, ..Default::default() })
    }

    /// The bus subscription dropped messages (or may have): every stream reads the store.
    pub fn missed(&self) {
        self.missed.send_modify(|n| *n += 1);
    }

    fn hook(&self) -> (Hook, Receiver, Arc<AtomicBool>, u64) {
        let (tx, rx) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(AtomicU64::new(0));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        (Hook { id, tx, lagged: lagged.clone(), queued: queued.clone() }, Receiver { rx, queued }, lagged, id)
    }

    pub fn tap_task(self: &Arc<Self>, task: TaskId) -> Tap {
        let (hook, rx, lagged, id) = self.hook();
        self.tasks.lock().expect("hub lock").entry(task).or_default().push(hook);
        Tap { rx, missed: self.missed.subscribe(), lagged, id, task: Some(task), hub: self.clone() }
    }

    pub fn tap_all(self: &Arc<Self>) -> Tap {
        let (hook, rx, lagged, id) = self.hook();
        self.all.lock().expect("hub lock").push(hook);
        Tap { rx, missed: self.missed.subscribe(), lagged, id, task: None, hub: self.clone() }
    }

    /// Delivers one event to its task's taps and to every feed tap.
    pub fn deliver(&self, ev: Arc<LiveEvent>) {
        if let Some(task) = ev.event.task_id {
            let mut tasks = self.tasks.lock().expect("hub lock");
            if let Some(hooks) = tasks.get_mut(&task) {
                offer(hooks, &ev, self.buffer_bytes);
                if hooks.is_empty() {
                    tasks.remove(&task);
                }
            }
        }
        let mut all = self.all.lock().expect("hub lock");
        if !all.is_empty() {
            offer(&mut all, &ev, self.buffer_bytes);
        }
    }

    pub fn connections(&self) -> usize {
        let tasks: usize = self.tasks.lock().expect("hub lock").values().map(Vec::len).sum();
        tasks + self.all.lock().expect("hub lock").len()
    }
}

/// Queues the event on every hook; a hook whose queue is full, in events or in bytes, is
/// unhooked as lagged.
fn offer(hooks: &mut Vec<Hook>, ev: &Arc<LiveEvent>, max_bytes: u64) {
    let len = ev.json.len() as u64;
    let lag = |h: &Hook| {
        h.lagged.store(true, Ordering::Release);
        crate::metrics::lagged();
        false
    };
    hooks.retain(|h| {
        let queued = h.queued.load(Ordering::Acquire);
        if queued > 0 && queued + len > max_bytes {
            return lag(h);
        }
        // counted before the send: the receiver may take it off at once
        h.queued.fetch_add(len, Ordering::AcqRel);
        match h.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => lag(h),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(task: TaskId, bytes: usize) -> Arc<LiveEvent> {
        let header = serde_json::json!({"task_id": task, "seq": 1, "kind": "output", "agent": null, "pos": 1});
        let event: EventHeader = serde_json::from_value(header).expect("a header");
        Arc::new(LiveEvent { event, json: Bytes::from(vec![b'x'; bytes]) })
    }

    #[tokio::test]
    async fn a_tap_over_its_bytes_is_unhooked_as_lagged() {
        let hub = Hub::new(1024, 1000);
        let task = TaskId::new();
        let mut tap = hub.tap_task(task);
        // one event larger than the limit still reaches an empty queue
        hub.deliver(event(task, 5000));
        assert_eq!(tap.rx.recv().await.unwrap().json.len(), 5000);
        for _ in 0..3 {
            hub.deliver(event(task, 300));
        }
        assert!(!tap.lagged(), "900 bytes queued of 1000");
        hub.deliver(event(task, 300));
        assert!(tap.lagged(), "1200 bytes would be queued: unhooked though only 4 events wait");
        for _ in 0..3 {
            assert!(tap.rx.recv().await.is_some());
        }
        assert!(tap.rx.recv().await.is_none(), "the channel closed after what was queued");
        // a tap that reads keeps up however many bytes pass through it
        let mut tap = hub.tap_task(task);
        for _ in 0..20 {
            hub.deliver(event(task, 600));
            assert!(tap.rx.recv().await.is_some());
        }
        assert!(!tap.lagged());
    }
}
