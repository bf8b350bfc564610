//! Git workspaces: what an agent definition's `workspace` says about the checkout each of its
//! tasks runs in. The worker makes and removes the checkouts (`smith_agents::workspace`); this
//! is the definition, its validation, and the rules for the names it uses.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `workspace = { repo = "…", base = "main", mode = "worktree" }` of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceDef {
    /// A local repository (an absolute path) or a URL the worker can fetch (`https://`,
    /// `ssh://`, `git@host:path`, `file://`). Credentials come from the agent's `env` (a
    /// credential helper or `GIT_ASKPASS` there); a password in the URL is never served.
    pub repo: String,
    /// The branch, tag or commit each task starts from (default: the repository's `HEAD`).
    #[serde(default = "head")]
    pub base: String,
    #[serde(default)]
    pub mode: WorkspaceMode,
    /// Commands run with `sh -c` in the checkout before the agent, in order; their output is
    /// the task's `output` events (`"stream": "setup"`), and a failing one fails the task.
    #[serde(default)]
    pub setup: Vec<String>,
    /// When the checkout is kept after the task, for inspection.
    #[serde(default)]
    pub keep: Keep,
    /// Push the task's branch to the repository's `origin` when the attempt ends.
    #[serde(default)]
    pub push: bool,
    /// `Name <email>` of the commit the platform makes of what the agent left uncommitted
    /// (default: `MisterSmith <smith@localhost>`).
    #[serde(default)]
    pub author: Option<String>,
}

fn head() -> String {
    "HEAD".to_string()
}

/// How a task's checkout is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMode {
    /// A `git worktree` of one shared repository: fast, objects shared, its own index,
    /// working tree and branch.
    #[default]
    Worktree,
    /// A full clone of its own (for tools that do not work in a worktree).
    Clone,
}

/// When a task's checkout outlives the task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    #[default]
    Never,
    OnFailure,
    Always,
}

/// The author when the definition names none.
pub const DEFAULT_AUTHOR: (&str, &str) = ("MisterSmith", "smith@localhost");

impl WorkspaceDef {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::unprocessable(format!("workspace: {m}")));
        let repo = self.repo.trim();
        if repo.is_empty() {
            return bad("`repo` is required: a local path or a URL".into());
        }
        if !(repo.starts_with('/') || is_url(repo)) {
            return bad(format!(
                "`repo` {:?} must be an absolute path or a URL (https://, ssh://, git@host:path, file://)",
                crate::redact::redact_url(repo)
            ));
        }
        if repo.starts_with('-') || repo.contains(char::is_control) {
            return bad("`repo` must not start with '-' or hold control characters".into());
        }
        if let Err(e) = check_ref(&self.base) {
            return bad(format!("`base`: {e}"));
        }
        if let Some(i) = self.setup.iter().position(|c| c.trim().is_empty()) {
            return bad(format!("setup[{i}] is empty"));
        }
        if let Some(a) = self.author.as_deref().filter(|a| parse_author(a).is_none()) {
            return bad(format!("`author` {a:?} must read `Name <email>`"));
        }
        Ok(())
    }

    /// The author's name and email.
    pub fn author(&self) -> (String, String) {
        self.author.as_deref().and_then(parse_author).unwrap_or_else(|| {
            let (n, e) = DEFAULT_AUTHOR;
            (n.to_string(), e.to_string())
        })
    }
}

fn is_url(repo: &str) -> bool {
    ["https://", "http://", "ssh://", "git://", "file://"].iter().any(|p| repo.starts_with(p))
        || (repo.starts_with("git@") && repo.contains(':'))
}

/// `Name <email>` → (name, email).
fn parse_author(a: &str) -> Option<(String, String)> {
    let (name, rest) = a.split_once('<')?;
    let email = rest.strip_suffix('>')?;
    let (name, email) = (name.trim(), email.trim());
    let ok = |s: &str| !s.is_empty() && !s.contains(['<', '>', '\n', '\0']);
    (ok(name) && ok(email)).then(|| (name.to_string(), email.to_string()))
}

/// Whether `r` may name a branch, tag or commit to start from: git's rules for ref names
/// (`git check-ref-format`), plus no leading `-` (it would read as an option) and at most 200
/// bytes. It says nothing of whether the ref exists: the checkout does.
pub fn check_ref(r: &str) -> std::result::Result<(), String> {
    let why = if r.is_empty() {
        "empty"
    } else if r.len() > 200 {
        "longer than 200 bytes"
    } else if r.starts_with('-') {
        "starts with '-'"
    } else if r.bytes().any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b)) {
        "holds a space, a control character or one of ~^:?*[\\"
    } else if r.contains("..") || r.contains("@{") || r.contains("//") {
        "holds '..', '@{' or '//'"
    } else if r.starts_with('/') || r.ends_with('/') || r.ends_with('.') || r.ends_with(".lock") || r == "@" {
        "starts or ends with '/', ends with '.' or '.lock', or is '@'"
    } else if r.split('/').any(|c| c.starts_with('.')) {
        "has a component starting with '.'"
    } else {
        return Ok(());
    };
    Err(format!("{r:?} is not a valid branch, tag or commit name: it {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(repo: &str) -> WorkspaceDef {
        WorkspaceDef {
            repo: repo.into(),
            base: head(),
            mode: WorkspaceMode::Worktree,
            setup: vec![],
            keep: Keep::Never,
            push: false,
            author: None,
        }
    }

    #[test]
    fn refs_follow_gits_rules() {
        for ok in ["main", "HEAD", "feature/x-1", "v1.2.3", "0123abcd", "release/2026.12"] {
            assert_eq!(check_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-x", "a b", "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "/a", "a/", "a.", "a.lock", "@",
            "a@{1}", "a//b", ".hidden", "x/.y", "tab\t",
        ] {
            assert!(check_ref(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_ref(&"a".repeat(201)).is_err());
    }

    #[test]
    fn repos_are_paths_or_urls() {
        for ok in ["/srv/repos/shop.git", "https://h/x.git", "ssh://git@h/x", "git@github.com:o/r.git", "file:///r"] {
            assert!(def(ok).validate().is_ok(), "{ok}");
        }
        for bad in ["", "relative/path", "-upload-pack=x", "ftp://h/x"] {
            assert!(def(bad).validate().is_err(), "{bad:?} accepted");
        }
        let e = def("repo").validate().unwrap_err().message;
        assert!(e.contains("absolute path or a URL"), "{e}");
    }

    #[test]
    fn authors_read_name_and_email() {
        let mut d = def("/r");
        assert_eq!(d.author(), ("MisterSmith".to_string(), "smith@localhost".to_string()));
        d.author = Some("Ada Lovelace <ada@example.com>".into());
        assert!(d.validate().is_ok());
        assert_eq!(d.author(), ("Ada Lovelace".to_string(), "ada@example.com".to_string()));
        for bad in ["Ada", "<ada@x>", "Ada <>", "Ada <a<b>"] {
            d.author = Some(bad.into());
            assert!(d.validate().is_err(), "{bad:?} accepted");
        }
        d.author = None;
        d.setup = vec!["npm ci".into(), " ".into()];
        assert!(d.validate().unwrap_err().message.contains("setup[1]"));
    }

    #[test]
    fn the_definition_reads_from_toml_with_defaults() {
        let d: WorkspaceDef = serde_json::from_value(serde_json::json!({"repo": "/r"})).unwrap();
        assert_eq!((d.base.as_str(), d.mode, d.keep, d.push), ("HEAD", WorkspaceMode::Worktree, Keep::Never, false));
        let d: WorkspaceDef =
            serde_json::from_value(serde_json::json!({"repo": "/r", "mode": "clone", "keep": "on_failure"})).unwrap();
        assert_eq!((d.mode, d.keep), (WorkspaceMode::Clone, Keep::OnFailure));
        assert!(serde_json::from_value::<WorkspaceDef>(serde_json::json!({"repo": "/r", "nope": 1})).is_err());
    }
}
