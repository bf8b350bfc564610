//! An attempt's artifacts: the empty directory its agent gets as `$SMITH_ARTIFACTS`, and, when
//! the attempt ends completed or failed (never when it was stopped), what it left there — held
//! to the caps, then its bytes stored, then its records written (fenced by the attempt), then
//! the `artifacts.stored` event for the outcome's write. Over a cap nothing is stored and the
//! attempt fails `artifacts_too_large`; the directory goes in every case.

use crate::writes::Writes;
use crate::Shared;
use serde_json::{json, Value};
use smith_agents::Failure;
use smith_artifacts::{Caps, Collected, Storage, TOO_LARGE, UNAVAILABLE};
use smith_core::{AgentDef, Artifact, EventDraft, EventKind, Micros, Outcome, TaskId};
use smith_store::Error as StoreError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a worker's attempts keep artifacts, and the caps (`[artifacts]`).
#[derive(Clone)]
pub struct ArtifactOptions {
    pub storage: Arc<dyn Storage>,
    pub caps: Caps,
}

impl std::fmt::Debug for ArtifactOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactOptions").field("storage", &self.storage.describe()).field("caps", &self.caps).finish()
    }
}

/// One attempt's artifact directory; removed when dropped (an abandoned attempt's too).
pub(crate) struct Dir {
    path: PathBuf,
}

impl Dir {
    /// A fresh, empty directory for the attempt — for agents that run a process, when the
    /// worker keeps artifacts; `Err` when it cannot be made (the attempt must not run without
    /// the directory it was promised).
    pub(crate) async fn create(s: &Shared, def: &AgentDef, id: TaskId, attempt: u32) -> Result<Option<Dir>, Failure> {
        if s.opts.artifacts.is_none() || !def.executor.runs_command() {
            return Ok(None);
        }
        let path = s.work_root.join("artifacts").join(format!("{id}-{attempt}"));
        // a crashed incarnation's leftovers of the same attempt are not this attempt's files
        let _ = tokio::fs::remove_dir_all(&path).await;
        match tokio::fs::create_dir_all(&path).await {
            Ok(()) => Ok(Some(Dir { path })),
            Err(e) => {
                tracing::warn!(task_id = %id, dir = %path.display(), error = %e, "cannot create the artifact dir");
                let message = format!("cannot create the artifact directory {}: {e}", path.display());
                Err(Failure::new(UNAVAILABLE, message, true))
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) async fn remove(self) {
        let _ = tokio::fs::remove_dir_all(&self.path).await;
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // after `remove` this finds nothing; otherwise the attempt was dropped mid-way, and
        // nothing may be awaited here
        if self.path.exists() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The outcome with an artifact failure in place of what the executor said.
pub(crate) fn failed(outcome: &Outcome, f: Failure) -> Outcome {
    Outcome::Failed { error: f.error, retryable: f.retryable, usage: outcome.usage() }
}

/// Stores what the attempt left in `dir`: `Ok(None)` when it left nothing, else the
/// `artifacts.stored` event to write with the outcome; `Err` with the failure the attempt ends
/// with instead (over a cap, or the storage failed).
pub(crate) async fn store(
    w: &Writes<'_>,
    opts: &ArtifactOptions,
    tenant: &str,
    dir: &Path,
) -> Result<Option<EventDraft>, Failure> {
    let (s, id, attempt) = (w.s, w.id, w.attempt);
    let caps = opts.caps;
    let unavailable = |m: String| Failure::new(UNAVAILABLE, m, true);
    let path = dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || smith_artifacts::collect(&path, caps.task_files))
        .await
        .map_err(|e| unavailable(format!("the artifact walk stopped: {e}")))?
        .map_err(|e| unavailable(format!("cannot read the artifact directory: {e}")))?;
    if found.files.is_empty() && found.skipped.is_empty() && found.over.is_none() {
        return Ok(None);
    }
    for skip in &found.skipped {
        tracing::info!(task_id = %id, attempt, name = %skip.name, why = %skip.why, "artifact skipped");
    }
    if let Some(why) = &found.over {
        return Err(too_large(format!(
            "$SMITH_ARTIFACTS holds {why}: over the task's cap ([artifacts] max_task_files {})",
            caps.task_files
        )));
    }
    let earlier = w.retry("artifacts", || s.store.artifacts(id)).await.map_err(|e| unavailable(e.to_string()))?;
    let tenant_bytes = w
        .retry("tenant_artifact_bytes", || s.store.tenant_artifact_bytes(tenant))
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    check_caps(&found, &earlier, tenant_bytes, caps)?;

    // hashed before anything is stored: the hash is the metadata and S3's payload check
    let files = found.files.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        files.iter().map(|f| smith_artifacts::sha256_file(&f.path)).collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| unavailable(format!("hashing the artifacts stopped: {e}")))?
    .map_err(|e| unavailable(format!("cannot read an artifact: {e}")))?;
    let at = Micros::now();
    let mut records = Vec::with_capacity(found.files.len());
    let known: HashMap<&str, u64> = earlier.iter().map(|a| (a.name.as_str(), a.size)).collect();
    for (f, (size, sha256)) in found.files.iter().zip(hashed) {
        let key = smith_artifacts::key(tenant, id, &f.name);
        if let Err(e) = opts.storage.put(&key, &f.path, size, &sha256).await {
            // what this attempt stored under new names goes; a replaced name keeps its record
            // (the next attempt stores it again)
            for r in records.iter().filter(|r: &&Artifact| !known.contains_key(r.name.as_str())) {
                let _ = opts.storage.delete(&smith_artifacts::key(tenant, id, &r.name)).await;
            }
            tracing::warn!(task_id = %id, attempt, name = %f.name, error = %e, "cannot store an artifact");
            return Err(unavailable(format!("cannot store the artifact {:?}: {e}", f.name)));
        }
        records.push(Artifact { name: f.name.clone(), size, sha256, created_at: at });
    }
    match w.retry("put_artifacts", || s.store.put_artifacts(id, attempt, records.clone())).await {
        Ok(()) => {}
        // the attempt lost its task: its completion is fenced too, and writes nothing
        Err(StoreError::Fenced(_)) => return Ok(None),
        Err(e) => return Err(unavailable(format!("cannot record the artifacts: {e}"))),
    }
    let bytes: u64 = records.iter().map(|r| r.size).sum();
    tracing::debug!(task_id = %id, attempt, count = records.len(), bytes, "artifacts stored");
    Ok(Some(EventDraft::new(EventKind::ArtifactsStored, event_data(&records, &found))))
}

fn too_large(message: String) -> Failure {
    Failure::new(TOO_LARGE, message, false)
}

/// Holds what the attempt left to the caps: the task's artifacts after this attempt's replace
/// earlier ones by name, and the tenant's with this task's replaced ones taken out.
fn check_caps(found: &Collected, earlier: &[Artifact], tenant_bytes: u64, caps: Caps) -> Result<(), Failure> {
    let new: HashMap<&str, u64> = found.files.iter().map(|f| (f.name.as_str(), f.size)).collect();
    let replaced: u64 = earlier.iter().filter(|a| new.contains_key(a.name.as_str())).map(|a| a.size).sum();
    let kept: Vec<&Artifact> = earlier.iter().filter(|a| !new.contains_key(a.name.as_str())).collect();
    let task_files = (kept.len() + new.len()) as u64;
    let task_bytes = kept.iter().map(|a| a.size).sum::<u64>() + found.bytes();
    if task_files > caps.task_files {
        return Err(too_large(format!(
            "the task's artifacts would be {task_files} files, over its cap of {} ([artifacts] max_task_files)",
            caps.task_files
        )));
    }
    if task_bytes > caps.task_bytes {
        return Err(too_large(format!(
            "the task's artifacts would be {task_bytes} bytes, over its cap of {} ([artifacts] max_task_bytes)",
            caps.task_bytes
        )));
    }
    let tenant_after = tenant_bytes.saturating_sub(replaced) + found.bytes();
    if tenant_after > caps.tenant_bytes {
        return Err(too_large(format!(
            "the tenant's artifacts would be {tenant_after} bytes, over its cap of {} ([artifacts] max_tenant_bytes)",
            caps.tenant_bytes
        )));
    }
    Ok(())
}

/// `artifacts.stored`: what was stored, and what was skipped and why.
fn event_data(records: &[Artifact], found: &Collected) -> Value {
    let list: Vec<Value> =
        records.iter().map(|r| json!({"name": r.name, "size": r.size, "sha256": r.sha256})).collect();
    let mut data = json!({
        "count": records.len(),
        "bytes": records.iter().map(|r| r.size).sum::<u64>(),
        "artifacts": list,
    });
    if !found.skipped.is_empty() {
        data["skipped"] = found.skipped.iter().map(|s| json!({"name": s.name, "why": s.why})).collect();
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use smith_artifacts::Found;

    fn found(files: &[(&str, u64)]) -> Collected {
        let files = files.iter().map(|(n, size)| Found { name: n.to_string(), path: PathBuf::new(), size: *size });
        Collected { files: files.collect(), ..Collected::default() }
    }

    fn earlier(files: &[(&str, u64)]) -> Vec<Artifact> {
        let a = |(n, size): &(&str, u64)| Artifact {
            name: n.to_string(),
            size: *size,
            sha256: "0".repeat(64),
            created_at: Micros(0),
        };
        files.iter().map(a).collect()
    }

    #[test]
    fn caps_count_the_task_after_replacement_and_the_tenant_without_what_is_replaced() {
        let caps = Caps { task_bytes: 10, task_files: 3, tenant_bytes: 20 };
        let check = |f: &[(&str, u64)], e: &[(&str, u64)], tenant: u64| {
            check_caps(&found(f), &earlier(e), tenant, caps).map_err(|f| f.error.message)
        };
        assert!(check(&[("a", 10)], &[], 10).is_ok(), "at a cap is within it");
        assert!(check(&[("a", 11)], &[], 0).unwrap_err().contains("11 bytes, over its cap of 10"));
        assert!(check(&[("a", 1), ("b", 1), ("c", 1), ("d", 1)], &[], 0).unwrap_err().contains("4 files"));
        // a retry's file of the same name replaces the earlier one
        assert!(check(&[("a", 8)], &[("a", 9)], 9).is_ok());
        assert!(check(&[("a", 8)], &[("b", 3)], 3).unwrap_err().contains("11 bytes"));
        assert!(check(&[("a", 1)], &[("b", 1), ("c", 1), ("d", 1)], 3).unwrap_err().contains("4 files"));
        // the tenant: its other tasks' bytes count, this task's replaced ones do not
        assert!(check(&[("a", 5)], &[("a", 5)], 20).is_ok());
        let e = check(&[("a", 5)], &[], 16).unwrap_err();
        assert!(e.contains("tenant's artifacts would be 21 bytes") && e.contains("max_tenant_bytes"), "{e}");
        for (f, e, t) in [(&[("a", 11)][..], &[][..], 0), (&[("a", 5)], &[], 16)] {
            let failure = check_caps(&found(f), &earlier(e), t, caps).unwrap_err();
            assert_eq!((failure.error.code.as_str(), failure.retryable), (TOO_LARGE, false));
        }
    }

    #[test]
    fn the_event_lists_what_was_stored_and_what_was_skipped() {
        let mut f = found(&[]);
        f.skipped.push(smith_artifacts::Skipped { name: "link".into(), why: "a symbolic link".into() });
        let records = earlier(&[("a", 2), ("b/c", 3)]);
        let data = event_data(&records, &f);
        assert_eq!(data["count"], 2);
        assert_eq!(data["bytes"], 5);
        assert_eq!(data["artifacts"][1], json!({"name": "b/c", "size": 3, "sha256": "0".repeat(64)}));
        assert_eq!(data["skipped"], json!([{"name": "link", "why": "a symbolic link"}]));
        assert!(event_data(&records, &found(&[])).get("skipped").is_none());
    }
}
