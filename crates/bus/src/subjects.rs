//! Subject names the system publishes on, plus the subject grammar every backend enforces.
//!
//! Subjects are dot-separated tokens (`smith.wake.coder`). Subscription patterns may
//! use `*` for exactly one token and `>` as the last token for one or more trailing
//! tokens. Agent names are `[A-Za-z0-9_-]` and task ids are UUIDs, so both are safe
//! tokens and the builders below never need escaping.

use crate::error::{Error, Result};

/// Events appended to one task's log: `smith.events.<agent>.<task_id>`.
///
/// Payload: the event as JSON. A wake-up hint only — readers re-read the store.
pub fn task_events(agent: &str, task_id: &str) -> String {
    let subject = format!("smith.events.{agent}.{task_id}");
    debug_assert!(validate_subject(&subject).is_ok(), "{subject}");
    subject
}

/// Every task event of every agent.
pub const ALL_EVENTS: &str = "smith.events.>";

/// New work for one agent: `smith.wake.<agent>`. Workers of that agent wake up and claim
/// from the store; the payload carries nothing they must trust.
pub fn wake(agent: &str) -> String {
    let subject = format!("smith.wake.{agent}");
    debug_assert!(validate_subject(&subject).is_ok(), "{subject}");
    subject
}

/// Wake-ups for every agent.
pub const ALL_WAKES: &str = "smith.wake.*";

/// Cancellation requests; payload: the task id as UTF-8 text.
pub const CANCEL: &str = "smith.control.cancel";

/// A task parked for a person's answer (`waiting_input`): its worker stops the attempt now
/// (the lease renewal would tell it too); payload: the task id as UTF-8 text.
pub const PARK: &str = "smith.control.park";

/// Node-level announcements (startup, shutdown, configuration reloads).
pub const SYSTEM: &str = "smith.system";

/// Longest subject or pattern accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 512;

/// Checks a subject to publish on: non-empty tokens, no whitespace, no wildcards.
pub fn validate_subject(subject: &str) -> Result<()> {
    check(subject, false)
}

/// Checks a subscription pattern: like a subject, but `*` may stand for any token and
/// `>` may be the last token.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    check(pattern, true)
}

/// Checks a queue group name: non-empty, no whitespace, at most [`MAX_SUBJECT_LEN`] bytes.
pub fn validate_group(group: &str) -> Result<()> {
    check_text("queue group name", group)
}

/// What subjects, patterns and group names have in common: non-empty, at most
/// [`MAX_SUBJECT_LEN`] bytes, no whitespace. `what` names the text in the error.
fn check_text(what: &str, text: &str) -> Result<()> {
    if text.is_empty() {
        return Err(Error::InvalidSubject(format!("{what} is empty")));
    }
    if text.len() > MAX_SUBJECT_LEN {
        return Err(Error::InvalidSubject(format!(
            "{what} of {} bytes exceeds the {MAX_SUBJECT_LEN}-byte limit",
            text.len()
        )));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(Error::InvalidSubject(format!("{what} `{text}` contains whitespace")));
    }
    Ok(())
}

fn check(subject: &str, wildcards: bool) -> Result<()> {
    let invalid = |why: &str| Err(Error::InvalidSubject(format!("`{subject}` {why}")));
    check_text("subject", subject)?;
    let mut tokens = subject.split('.').peekable();
    while let Some(token) = tokens.next() {
        match token {
            "" => return invalid("has an empty token"),
            "*" | ">" if !wildcards => return invalid("contains a wildcard; only subscriptions may use `*` and `>`"),
            ">" if tokens.peek().is_some() => return invalid("has `>` before the last token"),
            "*" | ">" => {}
            // `a*` would be a literal to NATS but almost surely a mistake here.
            _ if token.contains(['*', '>']) => {
                return invalid("mixes a wildcard into a token; `*` and `>` must stand alone")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `subject` matches `pattern`. Both must already be valid (see
/// [`validate_subject`], [`validate_pattern`]).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        if p == ">" {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if p == "*" || p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Whether `pattern` contains a wildcard token, i.e. may match more than one subject.
pub fn has_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

/// The kinds of subject the system publishes on, as metrics label them.
pub const KINDS: [&str; 5] = ["events", "wake", "control", "system", "other"];

/// What a subject is for, from its `smith.<kind>` tokens: `events`, `wake`, `control` or
/// `system`, else `other` (request inboxes, tests), so a metric label takes few values. A
/// namespace's leading token (`NAME.smith.…`) is looked past, so the kind is the same whether
/// measured outside or inside [`crate::namespace::Namespaced`].
pub fn kind(subject: &str) -> &'static str {
    let mut tokens = subject.split('.');
    let (first, second) = (tokens.next(), tokens.next());
    let token = match (first, second) {
        (Some("smith"), t) => t,
        (_, Some("smith")) => tokens.next(),
        _ => None,
    };
    match token {
        Some("events") => "events",
        Some("wake") => "wake",
        Some("control") => "control",
        Some("system") => "system",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let cases = [
            (task_events("coder", "0190a0b1-0000-7000-8000-000000000000"), "events"),
            (wake("coder"), "wake"),
            (CANCEL.to_string(), "control"),
            (SYSTEM.to_string(), "system"),
            ("t1.smith.events.coder.x".to_string(), "events"),
            ("t1.smith.system".to_string(), "system"),
            ("_INBOX.abc.def".to_string(), "other"),
            ("smith".to_string(), "other"),
            ("smith.tasks.x".to_string(), "other"),
            ("a.b.smith.events".to_string(), "other"),
            ("events".to_string(), "other"),
            (String::new(), "other"),
        ];
        for (subject, want) in cases {
            assert_eq!(kind(&subject), want, "{subject}");
            assert!(KINDS.contains(&want));
        }
    }

    #[test]
    fn names() {
        assert_eq!(task_events("coder", "0190-ab"), "smith.events.coder.0190-ab");
        assert_eq!(wake("re_view-2"), "smith.wake.re_view-2");
        assert!(matches(ALL_EVENTS, &task_events("coder", "t1")));
        assert!(matches(ALL_WAKES, &wake("coder")));
        assert!(!matches(ALL_WAKES, &task_events("coder", "t1")));
        for s in [CANCEL, PARK, SYSTEM] {
            validate_subject(s).unwrap();
        }
        validate_pattern(ALL_EVENTS).unwrap();
        validate_pattern(ALL_WAKES).unwrap();
    }

    #[test]
    fn subject_grammar() {
        // (input, valid as subject, valid as pattern)
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        let max = "a".repeat(MAX_SUBJECT_LEN);
        let cases: &[(&str, bool, bool)] = &[
            ("a", true, true),
            ("a.b.c", true, true),
            ("_INBOX.0f3a", true, true),
            ("a-b_c.D9", true, true),
            (&max, true, true),
            ("", false, false),
            (&long, false, false),
            ("a..b", false, false),
            (".a", false, false),
            ("a.", false, false),
            ("a b", false, false),
            ("a\tb", false, false),
            ("a.b\n", false, false),
            ("*", false, true),
            (">", false, true),
            ("a.*.c", false, true),
            ("a.>", false, true),
            ("a.*.>", false, true),
            ("a.>.b", false, false),
            ("> ", false, false),
            ("a*", false, false),
            ("a.b>", false, false),
        ];
        for &(input, subject, pattern) in cases {
            assert_eq!(validate_subject(input).is_ok(), subject, "subject {input:?}");
            assert_eq!(validate_pattern(input).is_ok(), pattern, "pattern {input:?}");
        }
    }

    #[test]
    fn groups() {
        validate_group("workers").unwrap();
        validate_group("a.b").unwrap();
        assert!(validate_group("").is_err());
        assert!(validate_group("a b").is_err());
        assert!(validate_group(&"g".repeat(MAX_SUBJECT_LEN + 1)).is_err());
    }

    #[test]
    fn matching() {
        // (pattern, subject, matches)
        let cases = [
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a", false),
            ("a.*", "a.b.c", false),
            ("*.b", "a.b", true),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.x.d", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            ("a.>", "a", false),
            ("a.>", "ab.c", false),
            (">", "a", true),
            (">", "a.b", true),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.>", "a", false),
            ("*.>", "a.b", true),
        ];
        for (pattern, subject, expected) in cases {
            assert_eq!(matches(pattern, subject), expected, "{pattern} vs {subject}");
        }
        assert!(has_wildcard("a.*"));
        assert!(has_wildcard(">"));
        assert!(!has_wildcard("a.b"));
    }
}
