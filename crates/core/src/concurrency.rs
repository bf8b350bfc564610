//! Keyed concurrency: a task's `concurrency_key` — given with the task, or computed from its
//! agent's `concurrency_key` expression — and the agent's `max_per_key`, the most tasks of one
//! key running at once over every worker (a key counts within its agent and tenant).
//!
//! A key is resolved once, when the task is submitted, and stored with it. An agent with
//! `max_per_key` keys every task it is given: a task that neither gives a key nor has what the
//! agent's expression reads is refused, never run uncapped. An agent without `max_per_key`
//! takes no keys, so a task naming one for it is refused too (it would cap nothing).

use crate::error::{Error, Result};
use crate::task::{NewTask, MAX_KEY_LEN};
use crate::AgentDef;
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// The largest `max_per_key`.
pub const MAX_PER_KEY_LIMIT: u32 = 1_000_000;

/// Path segments of a `metadata.` or `input.` expression, at most.
const MAX_SEGMENTS: usize = 8;

/// What an agent's `concurrency_key` reads of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyExpr {
    /// The task's tenant: at most `max_per_key` of a tenant's tasks of the agent run at once.
    Tenant,
    /// The task's session id (a task outside a session has no key).
    SessionId,
    /// A field of the task's metadata object, `metadata.user` or `metadata.org.team`.
    Metadata(Vec<String>),
    /// A field of the task's input, when the input is an object: `input.repo`.
    Input(Vec<String>),
}

impl FromStr for KeyExpr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::unprocessable(format!(
                "concurrency_key {:?} must be `tenant`, `session_id`, `metadata.<field>` or `input.<field>` \
                 (fields of letters, digits, '_' or '-', nested up to {MAX_SEGMENTS} deep with '.')",
                crate::task::truncate(s, 64)
            ))
        };
        let path = |rest: &str| -> Result<Vec<String>> {
            let segments: Vec<String> = rest.split('.').map(str::to_string).collect();
            let ok = segments.len() <= MAX_SEGMENTS
                && segments.iter().all(|p| {
                    !p.is_empty()
                        && p.len() <= 64
                        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
            if ok {
                Ok(segments)
            } else {
                Err(bad())
            }
        };
        match s {
            "tenant" => Ok(KeyExpr::Tenant),
            "session_id" => Ok(KeyExpr::SessionId),
            _ => match s.split_once('.') {
                Some(("metadata", rest)) => path(rest).map(KeyExpr::Metadata),
                Some(("input", rest)) => path(rest).map(KeyExpr::Input),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for KeyExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyExpr::Tenant => f.write_str("tenant"),
            KeyExpr::SessionId => f.write_str("session_id"),
            KeyExpr::Metadata(p) => write!(f, "metadata.{}", p.join(".")),
            KeyExpr::Input(p) => write!(f, "input.{}", p.join(".")),
        }
    }
}

impl KeyExpr {
    /// The key this expression gives `t`: `Ok(None)` when the task lacks what it reads (a field
    /// that is missing or null, no session); an error when the value cannot be a key.
    pub fn eval(&self, t: &NewTask) -> Result<Option<String>> {
        let value = match self {
            KeyExpr::Tenant => return Ok(Some(t.tenant.clone())),
            KeyExpr::SessionId => return Ok(t.session_id.clone()),
            KeyExpr::Metadata(path) => lookup(&t.metadata, path),
            KeyExpr::Input(path) => lookup(&t.input, path),
        };
        let key = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            Some(_) => {
                return Err(Error::unprocessable(format!(
                    "concurrency_key: {self} of the task is an object or an array, not a string, number or boolean"
                )))
            }
        };
        check_key(&key).map_err(|e| Error::unprocessable(format!("concurrency_key from {self}: {}", e.message)))?;
        Ok(Some(key))
    }
}

fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = root;
    for p in path {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// A key is 1..=256 bytes without control characters (like an idempotency key).
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(Error::unprocessable(format!(
            "concurrency_key must be 1..={MAX_KEY_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks an agent's keyed-concurrency settings: `max_per_key` in range, and an expression only
/// with a cap (a key alone limits nothing). The message names the setting.
pub fn validate_def(def: &AgentDef) -> Result<()> {
    let what = |m: String| Err(Error::unprocessable(format!("agent {:?}: {m}", def.name)));
    if let Some(n) = def.max_per_key {
        if n == 0 || n > MAX_PER_KEY_LIMIT {
            return what(format!("max_per_key must be 1..={MAX_PER_KEY_LIMIT}, got {n}"));
        }
    }
    if let Some(expr) = &def.concurrency_key {
        if let Err(e) = expr.parse::<KeyExpr>() {
            return what(e.message);
        }
        if def.max_per_key.is_none() {
            return what("concurrency_key needs max_per_key (the most tasks of one key running at once)".into());
        }
    }
    Ok(())
}

/// The key `t` runs under as a task of `def`: its own, else what the agent's expression gives;
/// `None` when the agent has no `max_per_key`. Refuses a key the agent would not cap, and a
/// task of a capped agent that ends up without one.
pub fn resolve(t: &NewTask, def: &AgentDef) -> Result<Option<String>> {
    let Some(_) = def.max_per_key else {
        return match &t.concurrency_key {
            Some(_) => Err(Error::unprocessable(format!(
                "concurrency_key: agent {:?} sets no max_per_key, so its tasks take no key",
                def.name
            ))),
            None => Ok(None),
        };
    };
    if let Some(k) = &t.concurrency_key {
        return Ok(Some(k.clone()));
    }
    let Some(expr) = &def.concurrency_key else {
        return Err(Error::unprocessable(format!(
            "concurrency_key: agent {:?} caps its tasks per key (max_per_key) and computes none: give the task one",
            def.name
        )));
    };
    let expr: KeyExpr = expr.parse()?;
    match expr.eval(t)? {
        Some(key) => Ok(Some(key)),
        None => Err(Error::unprocessable(format!(
            "concurrency_key: agent {:?} takes the key from {expr}, which this task does not have \
             (set it, or give the task a concurrency_key)",
            def.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExecutorKind;
    use serde_json::json;

    fn def(expr: Option<&str>, max: Option<u32>) -> AgentDef {
        let mut d = AgentDef::new("a", ExecutorKind::Echo);
        d.concurrency_key = expr.map(str::to_string);
        d.max_per_key = max;
        d
    }

    fn task(metadata: Value, input: Value) -> NewTask {
        let mut t = NewTask::new("a", input);
        t.metadata = metadata;
        t
    }

    #[test]
    fn expressions_parse_and_print_back() {
        for s in ["tenant", "session_id", "metadata.user", "metadata.org.team-1", "input.repo"] {
            assert_eq!(s.parse::<KeyExpr>().unwrap().to_string(), s);
        }
        for s in
            ["", "metadata", "metadata.", "metadata..x", "user", "input.a b", "metadata.a.b.c.d.e.f.g.h.i", "tenant.x"]
        {
            let e = s.parse::<KeyExpr>().unwrap_err();
            assert!(e.message.contains("concurrency_key"), "{s:?}: {e}");
        }
    }

    #[test]
    fn keys_resolve_from_the_task_or_the_agents_expression() {
        let keyed = def(Some("metadata.user"), Some(1));
        let t = task(json!({"user": "ann"}), json!(1));
        assert_eq!(resolve(&t, &keyed).unwrap().as_deref(), Some("ann"));
        let mut own = t.clone();
        own.concurrency_key = Some("bob".into());
        assert_eq!(resolve(&own, &keyed).unwrap().as_deref(), Some("bob"), "the task's own key wins");
        assert_eq!(resolve(&task(json!({"user": 7}), json!(1)), &keyed).unwrap().as_deref(), Some("7"));
        let deep = def(Some("input.repo.name"), Some(2));
        assert_eq!(resolve(&task(json!({}), json!({"repo": {"name": "x"}})), &deep).unwrap().as_deref(), Some("x"));
        assert_eq!(resolve(&t, &def(Some("tenant"), Some(1))).unwrap().as_deref(), Some("default"));
        assert_eq!(resolve(&t, &def(None, None)).unwrap(), None, "no cap, no key");
    }

    #[test]
    fn a_task_without_a_key_for_a_capped_agent_or_with_one_for_an_uncapped_agent_is_refused() {
        let keyed = def(Some("metadata.user"), Some(1));
        let cases: [(NewTask, AgentDef, &str); 5] = [
            (task(json!({}), json!(1)), keyed.clone(), "does not have"),
            (task(json!({"user": null}), json!(1)), keyed.clone(), "does not have"),
            (task(json!({"user": {"a": 1}}), json!(1)), keyed.clone(), "not a string"),
            (task(json!({"user": ""}), json!(1)), keyed.clone(), "1..=256 bytes"),
            (task(json!({}), json!(1)), def(None, Some(1)), "give the task one"),
        ];
        for (t, d, want) in cases {
            let e = resolve(&t, &d).unwrap_err();
            assert!(e.message.contains("concurrency_key") && e.message.contains(want), "{e}");
        }
        let mut own = task(json!({}), json!(1));
        own.concurrency_key = Some("k".into());
        let e = resolve(&own, &def(None, None)).unwrap_err();
        assert!(e.message.contains("sets no max_per_key"), "{e}");
    }

    #[test]
    fn agent_settings_are_checked_by_name() {
        assert!(validate_def(&def(Some("metadata.user"), Some(3))).is_ok());
        assert!(validate_def(&def(None, Some(3))).is_ok());
        let e = validate_def(&def(Some("metadata.user"), None)).unwrap_err();
        assert!(e.message.contains("needs max_per_key"), "{e}");
        let e = validate_def(&def(None, Some(0))).unwrap_err();
        assert!(e.message.contains("max_per_key must be"), "{e}");
        let e = validate_def(&def(Some("nope"), Some(1))).unwrap_err();
        assert!(e.message.contains("concurrency_key"), "{e}");
    }
}
