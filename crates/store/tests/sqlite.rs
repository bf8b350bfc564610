//! The store conformance suite against the embedded SQLite backend (bare and instrumented), plus
//! what only SQLite promises: durability across reopening the file.

use serde_json::json;
use smith_core::NewTask;
use smith_store::conformance::reopening_keeps_everything;
use smith_store::{OpenOptions, Store, TaskQuery};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const OPTIONS: OpenOptions = OpenOptions { fsync: false, readers: 2, pool_size: 1 };

async fn open_at(path: &Path) -> Arc<dyn Store> {
    smith_store::open(path.to_str().expect("utf-8 path"), &OPTIONS).await.expect("open sqlite store")
}

/// A store in its own directory under the target dir. The directory is kept, not deleted: the
/// store's writer thread and readers outlive the test function that could own it. Those left by
/// runs more than an hour ago are swept instead.
async fn fresh_store() -> Arc<dyn Store> {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("smith-store-sqlite");
    SWEEP.call_once(|| sweep_older_than(&root, Duration::from_secs(3600)));
    std::fs::create_dir_all(&root).expect("test store root");
    let dir = tempfile::Builder::new().prefix("store-").tempdir_in(&root).expect("temp dir").keep();
    open_at(&dir.join("smith.db")).await
}

fn sweep_older_than(root: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let modified = entry.metadata().and_then(|m| m.modified());
        if modified.ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > age) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

mod conformance {
    smith_store::store_conformance!(super::fresh_store());
}

/// The same contract through the metrics wrapper.
mod instrumented {
    smith_store::store_conformance!(async { smith_store::instrument(super::fresh_store().await) });
}

#[tokio::test]
async fn reopening_keeps_tasks_events_idempotency_agents_and_nodes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("smith.db");
    let r = reopening_keeps_everything(open_at(&path).await, json!({"q": 1}), || open_at(&path)).await;
    let sys = r.store.append_system(json!({"what": "again"})).await.unwrap();
    assert!(sys.pos > r.appended_pos);
}

#[tokio::test]
async fn list_tasks_last_full_page_has_no_cursor() {
    let store = fresh_store().await;
    for i in 0..4 {
        store.submit(NewTask::new("echo", json!(i))).await.unwrap();
    }
    let mut q = TaskQuery { limit: 2, ..Default::default() };
    let first = store.list_tasks(&q).await.unwrap();
    assert_eq!(first.items.len(), 2);
    q.cursor = first.next_cursor.clone();
    assert!(q.cursor.is_some());
    let second = store.list_tasks(&q).await.unwrap();
    assert_eq!(second.items.len(), 2);
    assert_eq!(second.next_cursor, None, "an exactly full last page must not promise another");
}

#[tokio::test]
async fn open_rejects_unsupported_schemes() {
    let err = smith_store::open("mysql://localhost/smith", &OPTIONS).await.err().expect("unsupported scheme");
    let msg = err.to_string();
    assert!(msg.contains("mysql") && msg.contains("sqlite://"), "names the scheme and what is supported: {msg}");
}
