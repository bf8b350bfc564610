//! What the executor tests share.

use smith_core::EventDraft;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An attempt's event channel, bounded at `capacity`, and a task that collects every event
/// sent on it until the last sender is dropped.
pub fn collect_events(capacity: usize) -> (mpsc::Sender<EventDraft>, JoinHandle<Vec<EventDraft>>) {
    let (tx, mut rx) = mpsc::channel(capacity);
    let collector = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e);
        }
        out
    });
    (tx, collector)
}
