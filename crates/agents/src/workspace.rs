//! Git workspaces: each task of an agent with a `workspace` runs in a checkout of its own — a
//! worktree of one shared repository, or a clone — on its own branch (`smith/<task-id>`, or
//! `smith/session/<id>` that every turn of a session continues), made before the agent starts
//! and removed after it (as `keep` says). When the attempt ends, what the agent left
//! uncommitted is committed, and the commit range, diff stat and patch are the attempt's
//! `workspace.diff` event; the branch is pushed when the definition says so.
//!
//! Layout under the worker's work dir: `repos/<hash>.git` (a bare copy of a repository given
//! by URL, fetched before each checkout), `tasks/<task-id>` and `sessions/<session>` (the
//! checkouts; a session's path is the same every turn, so that Claude Code resumes there).
//! Concurrent tasks on one repository share its objects and never each other's index,
//! working tree or branch: every checkout has its own, and git's ref locks keep their
//! branches apart.

use crate::process::{agent_env, run_group, LineSink};
use crate::{Emitter, Executor, Failure, RunContext, RunResult};
use async_trait::async_trait;
use serde_json::{json, Value};
use smith_core::workspace::{Keep, WorkspaceDef, WorkspaceMode};
use smith_core::{EventKind, TaskId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Error code of a repository that cannot be had (missing, unfetchable, not a repository).
pub const WORKSPACE_UNAVAILABLE: &str = "workspace_unavailable";
/// Error code of a `base` that names no commit of the repository.
pub const WORKSPACE_BASE_UNKNOWN: &str = "workspace_base_unknown";
/// Error code of a failed `setup` command.
pub const SETUP_FAILED: &str = "setup_failed";
/// Error code of a branch that could not be pushed.
pub const PUSH_FAILED: &str = "push_failed";
/// The largest patch a `workspace.diff` event carries; a larger one is left out (the stat and
/// the branch say what changed).
pub const MAX_PATCH_BYTES: usize = 4 << 20;

/// Runs `inner` in a workspace when the definition has one.
pub fn wrap(inner: Arc<dyn Executor>, def: &smith_core::AgentDef, root: &Path) -> Arc<dyn Executor> {
    if def.workspace.is_some() {
        Arc::new(Workspaced { inner, root: root.to_path_buf() })
    } else {
        inner
    }
}

struct Workspaced {
    inner: Arc<dyn Executor>,
    root: PathBuf,
}

#[async_trait]
impl Executor for Workspaced {
    async fn run(&self, mut ctx: RunContext) -> RunResult {
        let def = ctx.def.workspace.clone().expect("wrapped only with a workspace");
        let events = ctx.events.clone();
        let mut ws = Checkout::open(&self.root, &def, &ctx).await?;
        events.emit(EventKind::WorkspaceReady, ws.ready()).await;
        ctx.workdir = Some(ws.dir.clone());
        let kill_grace = ctx.def.kill_grace;
        if let Err(f) = setup(&def, &ctx, kill_grace).await {
            ws.close(false).await;
            return Err(f);
        }
        let cancel = ctx.cancel.clone();
        let mut result = self.inner.run(ctx).await;
        // a stopped attempt (cancel, timeout, lost lease) is not recorded: its git is stopped too
        let recorded =
            if cancel.is_cancelled() { Err("the attempt was stopped".to_string()) } else { ws.record().await };
        match recorded {
            Err(e) if cancel.is_cancelled() => {
                tracing::debug!(task_id = %ws.task, error = %e, "workspace not recorded")
            }
            Ok(diff) => {
                let push_error = diff.get("push_error").and_then(Value::as_str).map(str::to_string);
                events.emit(EventKind::WorkspaceDiff, diff).await;
                if let (Some(e), Ok(_)) = (push_error, &result) {
                    result = Err(Failure::new(PUSH_FAILED, e, false));
                }
            }
            Err(e) => {
                tracing::warn!(task_id = %ws.task, error = %e, "cannot record what the agent changed");
                if result.is_ok() {
                    result =
                        Err(Failure::new(WORKSPACE_UNAVAILABLE, format!("cannot record the workspace: {e}"), true));
                }
            }
        }
        ws.close(result.is_ok()).await;
        result
    }
}

/// Runs the definition's setup commands in the checkout, their output as `output` events.
async fn setup(def: &WorkspaceDef, ctx: &RunContext, kill_grace: std::time::Duration) -> Result<(), Failure> {
    for (i, command) in def.setup.iter().enumerate() {
        let mut cmd = Command::new("sh");
        agent_env(&mut cmd, ctx);
        cmd.arg("-c").arg(format!("exec 2>&1\n{command}"));
        let mut sink = SetupLines { events: ctx.events.clone(), step: i };
        let exit = run_group(&ctx.task.agent, cmd, None, &ctx.cancel, kill_grace, None, &mut sink)
            .await
            .map_err(|e| Failure::new(SETUP_FAILED, format!("setup[{i}] ({command}) could not start: {e}"), false))?;
        if !exit.success() {
            return Err(Failure::new(SETUP_FAILED, format!("setup[{i}] ({command}) failed: {}", exit.how()), false));
        }
    }
    Ok(())
}

struct SetupLines {
    events: Emitter,
    step: usize,
}

#[async_trait]
impl LineSink for SetupLines {
    async fn line(&mut self, line: &[u8]) -> bool {
        let text = String::from_utf8_lossy(line);
        self.events.output(json!({"stream": "setup", "step": self.step, "text": text})).await
    }
}

/// One attempt's checkout.
struct Checkout {
    task: TaskId,
    attempt: u32,
    /// The repository the checkout comes from: the definition's local path, or the bare copy
    /// of its URL.
    source: PathBuf,
    dir: PathBuf,
    branch: String,
    /// The commit the attempt started from.
    start: String,
    base: String,
    mode: WorkspaceMode,
    keep: Keep,
    push: bool,
    session: bool,
    author: (String, String),
    git: Git,
    /// Removes the checkout if the attempt is dropped before [`Checkout::close`].
    armed: bool,
}

impl Checkout {
    async fn open(root: &Path, def: &WorkspaceDef, ctx: &RunContext) -> Result<Checkout, Failure> {
        let git = Git::new(ctx, &def.repo);
        let task = &ctx.task;
        let source = source_repo(root, def, &git, &ctx.cancel).await?;
        let session = task.session_id.as_deref().map(ref_safe);
        let (dir, branch) = match &session {
            Some(s) => (root.join("sessions").join(s), format!("smith/session/{s}")),
            None => (root.join("tasks").join(task.id.to_string()), format!("smith/{}", task.id)),
        };
        // a session continues its branch; a task (a retried attempt too) starts from the base,
        // its own when it names one
        let continues = session.is_some() && git.ok(&source, &["rev-parse", "--verify", "--quiet", &branch]).await;
        let base = task.workspace.as_ref().map_or(&def.base, |w| &w.base);
        let from = if continues { branch.clone() } else { base.clone() };
        let start = git
            .out(&source, &["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{from}^{{commit}}")])
            .await
            .map_err(|_| {
                Failure::new(
                    WORKSPACE_BASE_UNKNOWN,
                    format!("the repository has no branch, tag or commit {from:?}"),
                    false,
                )
            })?;
        let mut ws = Checkout {
            task: task.id,
            attempt: task.attempt,
            source,
            dir,
            branch,
            start,
            base: from,
            mode: def.mode,
            keep: def.keep,
            push: def.push,
            session: session.is_some(),
            author: def.author(),
            git,
            armed: false,
        };
        ws.clear().await;
        if let Err(e) = ws.create(continues).await {
            ws.clear().await;
            return Err(Failure::new(WORKSPACE_UNAVAILABLE, format!("cannot make the checkout: {e}"), true));
        }
        ws.armed = true;
        Ok(ws)
    }

    async fn create(&self, continues: bool) -> Result<(), String> {
        let dir = path_arg(&self.dir);
        if let Some(parent) = self.dir.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let src = &self.source;
        match (self.mode, continues) {
            (WorkspaceMode::Worktree, true) => {
                self.git.out(src, &["worktree", "add", "--quiet", "--force", &dir, &self.branch]).await?;
            }
            (WorkspaceMode::Worktree, false) => {
                let args = ["worktree", "add", "--quiet", "--force", "-B", &self.branch, &dir, &self.start];
                self.git.out(src, &args).await?;
            }
            (WorkspaceMode::Clone, _) => {
                let from = path_arg(src);
                self.git.out(Path::new("/"), &["clone", "--quiet", "--no-checkout", "--", &from, &dir]).await?;
                self.git.out(&self.dir, &["checkout", "--quiet", "-B", &self.branch, &self.start]).await?;
            }
        }
        Ok(())
    }

    fn ready(&self) -> Value {
        json!({
            "branch": self.branch,
            "base": self.base,
            "commit": self.start,
            "mode": match self.mode { WorkspaceMode::Worktree => "worktree", WorkspaceMode::Clone => "clone" },
        })
    }

    /// Commits what the agent left, and says what the attempt changed: the `workspace.diff`
    /// event's data.
    async fn record(&self) -> Result<Value, String> {
        let (git, dir) = (&self.git, &self.dir);
        git.out(dir, &["add", "--all"]).await?;
        if !git.ok(dir, &["diff", "--cached", "--quiet"]).await {
            let (name, email) = &self.author;
            let message = format!("smith: task {} (attempt {})", self.task, self.attempt);
            let args = ["-c", &format!("user.name={name}"), "-c", &format!("user.email={email}")];
            let commit = ["commit", "--quiet", "--no-verify", "--allow-empty-message", "-m", &message];
            git.out(dir, &[&args[..], &commit[..]].concat()).await?;
        }
        let head = git.out(dir, &["rev-parse", "HEAD"]).await?;
        let range = format!("{}..{head}", self.start);
        let commits: u64 = git.out(dir, &["rev-list", "--count", &range]).await?.parse().unwrap_or(0);
        let files = numstat(&git.out(dir, &["diff", "--numstat", &self.start, &head]).await?);
        let patch = git.out_raw(dir, &["diff", "--binary", &self.start, &head]).await?;
        if self.mode == WorkspaceMode::Clone {
            // the branch outlives the clone in the repository it came from
            let from = path_arg(dir);
            let refspec = format!("+{}:{}", self.branch, self.branch);
            git.out(&self.source, &["fetch", "--quiet", "--", &from, &refspec]).await?;
        }
        let mut diff = json!({
            "branch": self.branch,
            "base": self.base,
            "from": self.start,
            "to": head,
            "commits": commits,
            "files": files,
            "insertions": files.iter().filter_map(|f| f["insertions"].as_u64()).sum::<u64>(),
            "deletions": files.iter().filter_map(|f| f["deletions"].as_u64()).sum::<u64>(),
            "patch_bytes": patch.len(),
        });
        if patch.len() <= MAX_PATCH_BYTES {
            diff["patch"] = Value::String(String::from_utf8_lossy(&patch).into_owned());
        } else {
            diff["patch_truncated"] = Value::Bool(true);
        }
        if self.push && commits > 0 {
            let refspec = format!("+{}:refs/heads/{}", self.branch, self.branch);
            match git.out(&self.source, &["push", "--quiet", "origin", &refspec]).await {
                Ok(_) => diff["pushed"] = Value::String(format!("origin/{}", self.branch)),
                Err(e) => diff["push_error"] = Value::String(format!("cannot push {}: {e}", self.branch)),
            }
        }
        Ok(diff)
    }

    /// Removes the checkout unless `keep` says otherwise; a task branch that holds nothing new
    /// goes too (the branch is the record of what a task did, and it did nothing).
    async fn close(&mut self, succeeded: bool) {
        self.armed = false;
        let keep = match self.keep {
            Keep::Never => false,
            Keep::OnFailure => !succeeded,
            Keep::Always => true,
        };
        if keep {
            return;
        }
        self.clear().await;
        if !self.session {
            let git = self.git.uncancelled();
            let tip = git.out(&self.source, &["rev-parse", "--verify", "--quiet", &self.branch]).await;
            if tip.as_deref() == Ok(self.start.as_str()) {
                let _ = git.out(&self.source, &["branch", "--quiet", "-D", &self.branch]).await;
            }
        }
    }

    /// Removes the checkout's directory and the repository's record of it — also after the
    /// attempt was stopped (cancel, timeout): clean-up is not cancelled with it.
    async fn clear(&self) {
        let git = self.git.uncancelled();
        if self.mode == WorkspaceMode::Worktree {
            let _ = git.out(&self.source, &["worktree", "remove", "--force", "--force", &path_arg(&self.dir)]).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        if self.mode == WorkspaceMode::Worktree {
            let _ = git.out(&self.source, &["worktree", "prune"]).await;
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // the attempt was dropped mid-way (its worker abandoned it): nothing may be awaited
        // here, so the directory goes now and the repository forgets it at its next prune
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The repository checkouts come from: the local path itself, or the bare copy of a URL,
/// cloned once and fetched before every checkout (one fetch at a time per copy).
async fn source_repo(
    root: &Path,
    def: &WorkspaceDef,
    git: &Git,
    cancel: &CancellationToken,
) -> Result<PathBuf, Failure> {
    let unavailable = |m: String| Failure::new(WORKSPACE_UNAVAILABLE, m, false);
    let shown = smith_core::agent::redact_url(&def.repo);
    if def.repo.starts_with('/') {
        let path = PathBuf::from(&def.repo);
        return match git.out(&path, &["rev-parse", "--git-dir"]).await {
            Ok(_) => Ok(path),
            Err(e) => Err(unavailable(format!("{shown} is not a git repository: {e}"))),
        };
    }
    let copy = root.join("repos").join(format!("{:016x}.git", fnv1a(def.repo.as_bytes())));
    let lock = copy_lock(&copy);
    let _held = lock.lock().await;
    if cancel.is_cancelled() {
        return Err(unavailable("the attempt was stopped".into()));
    }
    if !copy.join("HEAD").exists() {
        let tmp = copy.with_extension(format!("tmp{:x}", fastrand::u64(..)));
        let parent = copy.parent().expect("under the root");
        tokio::fs::create_dir_all(parent).await.map_err(|e| unavailable(format!("{}: {e}", parent.display())))?;
        let cloned = git.out(parent, &["clone", "--quiet", "--bare", "--", &def.repo, &path_arg(&tmp)]).await;
        if let Err(e) = cloned {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
            return Err(unavailable(format!("cannot clone {shown}: {e}")));
        }
        if tokio::fs::rename(&tmp, &copy).await.is_err() {
            // another process made the copy meanwhile: use it
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
    }
    let refspecs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];
    git.out(&copy, &[&["fetch", "--quiet", "--prune", "origin"][..], &refspecs[..]].concat())
        .await
        .map_err(|e| unavailable(format!("cannot fetch {shown}: {e}")))?;
    Ok(copy)
}

/// One lock per bare copy, so that two tasks never clone or fetch it at once.
fn copy_lock(copy: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().expect("copy locks");
    locks.entry(copy.to_path_buf()).or_default().clone()
}

/// FNV-1a: a name for a URL's copy that stays the same across builds.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A session id as one safe ref and path component.
fn ref_safe(id: &str) -> String {
    let s: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("s-{s}-{:08x}", fnv1a(id.as_bytes()) as u32)
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `git diff --numstat` lines → `[{path, insertions, deletions}]` (a binary file has no counts).
fn numstat(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let (add, del, path) = (f.next()?, f.next()?, f.next()?);
            Some(json!({"path": path, "insertions": add.parse::<u64>().ok(), "deletions": del.parse::<u64>().ok()}))
        })
        .collect()
}

/// Runs git with the agent's environment (its credentials), never a prompt, and the attempt's
/// cancel; errors carry git's own words with any URL password redacted.
struct Git {
    env: Vec<(String, String)>,
    cancel: CancellationToken,
    /// What to hide from errors: the repository's URL as written.
    secret: String,
}

impl Git {
    fn new(ctx: &RunContext, repo: &str) -> Git {
        let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| crate::process::inherited(k)).collect();
        env.extend(ctx.def.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
        Git { env, cancel: ctx.cancel.clone(), secret: repo.to_string() }
    }

    /// The same git, for work that must finish even when the attempt was stopped.
    fn uncancelled(&self) -> Git {
        Git { env: self.env.clone(), cancel: CancellationToken::new(), secret: self.secret.clone() }
    }

    async fn out_raw(&self, dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
        let mut cmd = Command::new("git");
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v))).current_dir(dir).args(args);
        let run = crate::process::output(cmd);
        let out = tokio::select! {
            out = run => out.map_err(|e| format!("cannot run git: {e}"))?,
            () = self.cancel.cancelled() => return Err("stopped".into()),
        };
        if out.status.success() {
            return Ok(out.stdout);
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim().replace(&self.secret, &smith_core::agent::redact_url(&self.secret));
        Err(if said.is_empty() { format!("git {} failed ({})", args[0], out.status) } else { said })
    }

    async fn out(&self, dir: &Path, args: &[&str]) -> Result<String, String> {
        self.out_raw(dir, args).await.map(|b| String::from_utf8_lossy(&b).trim().to_string())
    }

    async fn ok(&self, dir: &Path, args: &[&str]) -> bool {
        self.out_raw(dir, args).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_reads_counts_and_binaries() {
        let files = numstat("3\t1\tsrc/a.rs\n-\t-\timg.png\n");
        assert_eq!(files[0], json!({"path": "src/a.rs", "insertions": 3, "deletions": 1}));
        assert_eq!(files[1], json!({"path": "img.png", "insertions": null, "deletions": null}));
    }

    #[test]
    fn session_refs_are_safe_and_distinct() {
        let (a, b) = (ref_safe("chat/1"), ref_safe("chat_1"));
        assert_ne!(a, b, "ids that sanitize alike stay apart");
        for r in [&a, &b] {
            assert!(smith_core::workspace::check_ref(&format!("smith/session/{r}")).is_ok(), "{r}");
        }
    }
}
