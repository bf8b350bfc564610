//! Property tests of the Claude Code stream-json parser ([`StreamJson`]): arbitrary bytes,
//! truncated JSON, and random JSON objects whose `type` is one the parser knows (`system`,
//! `assistant`, `user`, `result`) or not (`stream_event`, anything), with random nested content
//! and numbers up to `u64::MAX`, fed line by line as the CLI would write them.
//!
//! Whatever the lines, the parser never panics; every line it cannot read, and every object of
//! a type it does not know, is kept raw in one `output` event; each line gives the events its
//! type promises; the outcome's usage is the last usage reported; and the outcome follows from
//! the lines: a malformed line fails `bad_stream` naming it, no `result` line fails as a cut
//! stream, and a `result` line decides success or the failure's code.
//!
//! Each property runs a fixed number of cases: a few seconds in all, no nightly.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use smith_agents::claude::StreamJson;
use smith_agents::{Emitter, RunContext, RunResult};
use smith_core::{AgentDef, EventDraft, EventKind, ExecutorKind, Task, Usage};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Cases per property.
const CASES: u32 = 1024;
/// Lines per case at most.
const MAX_LINES: usize = 12;

fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    // no regression files written into the tree: a failure prints its minimal case
    let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}

/// What parsing a stream gave: the events of each line, and the outcome.
struct Parsed {
    per_line: Vec<Vec<EventDraft>>,
    outcome: RunResult,
}

/// Feeds `lines` to a parser, collecting the events each line emits, then takes the outcome.
fn parse(lines: &[Vec<u8>], exited_ok: bool) -> Parsed {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // room for every event of a case: the parser never waits for a reader
        let (tx, mut rx) = mpsc::channel(4096);
        let def = AgentDef::new("cc", ExecutorKind::ClaudeCode);
        let task = Task::first_attempt("cc", json!("prompt"));
        let ctx = RunContext::new(task, Arc::new(def), Emitter::new(tx), CancellationToken::new());
        let mut stream = StreamJson::new(&ctx);
        let mut per_line = Vec::new();
        for line in lines {
            stream.handle(line).await;
            let mut events = Vec::new();
            while let Ok(e) = rx.try_recv() {
                events.push(e);
            }
            per_line.push(events);
        }
        let outcome = stream.outcome("exited", exited_ok, "");
        Parsed { per_line, outcome }
    })
}

// ---- strategies ----

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A token count as a CLI might report it, sane or not.
fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..100_000).prop_map(Value::from),
        2 => prop::sample::select(vec![u64::MAX, u64::MAX - 1, u64::MAX / 2, 1 << 63]).prop_map(Value::from),
        1 => prop::sample::select(vec![json!(-5), json!(1.5), json!("12"), json!(null)]),
    ]
}

fn usage() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (count(), count(), prop::option::of(count()), prop::option::of(count())).prop_map(|(i, o, cc, cr)| {
            let mut u = json!({"input_tokens": i, "output_tokens": o});
            if let Some(c) = cc {
                u["cache_creation_input_tokens"] = c;
            }
            if let Some(c) = cr {
                u["cache_read_input_tokens"] = c;
            }
            u
        }),
        1 => json_value(),
    ]
}

fn block() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "\\PC{0,24}".prop_map(|t| json!({"type": "text", "text": t})),
        2 => ("[a-z0-9]{1,6}", "[A-Za-z]{1,8}", json_value())
            .prop_map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input})),
        1 => json_value().prop_map(|t| json!({"type": "thinking", "thinking": t})),
        1 => json_value(),
    ]
}

fn assistant() -> impl Strategy<Value = Value> {
    let id = prop_oneof![4 => prop::sample::select(vec!["m1", "m2", "m3"]).prop_map(Value::from), 1 => json_value()];
    let content = prop_oneof![4 => prop::collection::vec(block(), 0..6).prop_map(Value::Array), 1 => json_value()];
    (id, content, prop::option::of(usage())).prop_map(|(id, content, usage)| {
        let mut message = json!({"id": id, "content": content});
        if let Some(u) = usage {
            message["usage"] = u;
        }
        json!({"type": "assistant", "message": message})
    })
}

fn user() -> impl Strategy<Value = Value> {
    let tool_result = ("[a-z0-9]{1,6}", json_value(), prop::option::of(json_value())).prop_map(|(id, content, err)| {
        let mut b = json!({"type": "tool_result", "tool_use_id": id, "content": content});
        if let Some(e) = err {
            b["is_error"] = e;
        }
        b
    });
    let blocks = prop_oneof![3 => tool_result, 1 => json_value()];
    let content = prop_oneof![4 => prop::collection::vec(blocks, 0..5).prop_map(Value::Array), 1 => json_value()];
    content.prop_map(|c| json!({"type": "user", "message": {"role": "user", "content": c}}))
}

fn system() -> impl Strategy<Value = Value> {
    let model = prop_oneof![
        prop::sample::select(vec!["claude-sonnet-4-5", "claude-opus-4", "claude-haiku-4-5", "other"])
            .prop_map(Value::from),
        json_value(),
    ];
    let subtype = prop_oneof![Just(json!("init")), json_value()];
    (subtype, prop::option::of("[a-z0-9-]{1,12}"), model).prop_map(|(subtype, session, model)| {
        json!({"type": "system", "subtype": subtype, "session_id": session, "model": model, "tools": [], "cwd": "/x"})
    })
}

fn result() -> impl Strategy<Value = Value> {
    let is_error = prop_oneof![3 => any::<bool>().prop_map(Value::from), 1 => json_value()];
    let subtype = prop::sample::select(vec!["success", "error_max_turns", "error_during_execution", "other"]);
    let text = prop_oneof![
        3 => "\\PC{0,24}".prop_map(Value::from),
        1 => Just(json!("No conversation found with session ID: x")),
        1 => json_value(),
    ];
    let status = prop::option::of(prop_oneof![
        prop::sample::select(vec![429u64, 408, 500, 503, 599, 400, 401, 200]).prop_map(Value::from),
        json_value(),
    ]);
    let errors =
        prop::option::of(prop_oneof![prop::collection::vec("\\PC{0,8}", 0..3).prop_map(Value::from), json_value()]);
    let cost = prop_oneof![(0.0f64..100.0).prop_map(Value::from), json_value()];
    (
        is_error,
        subtype,
        prop::option::of(text),
        status,
        errors,
        cost,
        prop::option::of(usage()),
        prop::option::of("[a-z0-9-]{1,12}"),
    )
        .prop_map(|(is_error, subtype, text, status, errors, cost, usage, session)| {
            let mut r = json!({"type": "result", "subtype": subtype, "is_error": is_error, "total_cost_usd": cost,
                "num_turns": 1, "session_id": session});
            if let Some(t) = text {
                r["result"] = t;
            }
            if let Some(s) = status {
                r["api_error_status"] = s;
            }
            if let Some(e) = errors {
                r["errors"] = e;
            }
            if let Some(u) = usage {
                r["usage"] = u;
            }
            r
        })
}

/// An object of a type the parser does not know (newer CLI lines).
fn unknown() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just(json!("stream_event")),
        Just(json!("rate_limit_event")),
        "[a-z_]{0,12}".prop_filter("not a known type", |t| !KNOWN.contains(&t.as_str())).prop_map(Value::from),
        json_value().prop_filter("not a known type", |t| !t.as_str().is_some_and(|t| KNOWN.contains(&t))),
    ];
    (kind, json_value()).prop_map(|(kind, event)| json!({"type": kind, "event": event}))
}

const KNOWN: [&str; 4] = ["system", "assistant", "user", "result"];

/// A line: a JSON object of any type (printed, sometimes with surrounding blanks), a blank
/// line, a truncated object, or bytes of any kind.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let object = prop_oneof![2 => assistant(), 1 => user(), 1 => system(), 1 => result(), 1 => unknown()];
    prop_oneof![
        8 => object.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => (object, any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let text = v.to_string().into_bytes();
            text[..at.index(text.len())].to_vec()
        }),
        1 => prop::sample::select(vec!["", "   ", "\t", "\r"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

// ---- what a line is, as the parser must see it ----

enum Seen {
    Blank,
    /// Not a JSON object: kept raw as text, and the stream is broken.
    Malformed(String),
    Object(Value),
}

fn seen(raw: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(raw).into_owned();
    if text.trim().is_empty() {
        return Seen::Blank;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Seen::Object(v),
        _ => Seen::Malformed(text),
    }
}

fn kinds(events: &[EventDraft]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// The events one line must give (besides a `usage` event, which any `assistant` or `result`
/// line may add).
fn check_line(raw: &[u8], events: &[EventDraft]) -> Result<(), TestCaseError> {
    let content: Vec<&EventDraft> = events.iter().filter(|e| e.kind != EventKind::Usage).collect();
    let usage = events.len() - content.len();
    match seen(raw) {
        Seen::Blank => prop_assert!(events.is_empty(), "a blank line gave {:?}", kinds(events)),
        Seen::Malformed(text) => {
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(events[0].kind, EventKind::Output);
            prop_assert_eq!(&events[0].data, &json!({"type": "raw", "line": text}), "kept raw, as text");
        }
        Seen::Object(v) => match v["type"].as_str().filter(|t| KNOWN.contains(t)) {
            None => {
                prop_assert_eq!(events.len(), 1);
                prop_assert_eq!(&events[0].data, &json!({"type": "raw", "line": v}), "an unknown type is kept raw");
            }
            Some("system") => {
                prop_assert_eq!(kinds(events), vec![EventKind::Output]);
                prop_assert_eq!(&events[0].data["type"], "system");
            }
            Some("assistant") => {
                // one event per content block, in order: text, tool use, thinking, or the block raw
                let blocks = v["message"]["content"].as_array().cloned().unwrap_or_default();
                prop_assert_eq!(content.len(), blocks.len(), "{:?}", kinds(events));
                for (b, e) in blocks.iter().zip(&content) {
                    match b["type"].as_str() {
                        Some("text") => {
                            prop_assert_eq!(&e.data, &json!(b["text"].as_str().unwrap_or("")));
                        }
                        Some("tool_use") => {
                            prop_assert_eq!(e.kind, EventKind::ToolUse);
                            prop_assert_eq!(&e.data["name"], &b["name"]);
                        }
                        Some("thinking") => prop_assert_eq!(&e.data["type"], "thinking"),
                        _ => prop_assert_eq!(&e.data, &json!({"type": "raw", "block": b})),
                    }
                }
                prop_assert!(usage <= 1);
            }
            Some("user") => {
                let blocks = v["message"]["content"].as_array().cloned().unwrap_or_default();
                let results = blocks.iter().filter(|b| b["type"] == "tool_result").count();
                prop_assert_eq!(events.len(), results);
                prop_assert!(events.iter().all(|e| e.kind == EventKind::ToolResult));
            }
            _ => prop_assert!(content.is_empty() && usage <= 1, "a result line gave {:?}", kinds(events)),
        },
    }
    Ok(())
}

fn usage_of(r: &RunResult) -> Usage {
    match r {
        Ok(s) => s.usage,
        Err(f) => f.usage,
    }
}

// ---- properties ----

#[test]
fn any_lines_give_the_events_their_types_promise_and_never_panic() {
    check((prop::collection::vec(line(), 0..MAX_LINES), any::<bool>()), |(lines, exited_ok)| {
        let parsed = parse(&lines, exited_ok);
        for (raw, events) in lines.iter().zip(&parsed.per_line) {
            check_line(raw, events)?;
        }
        // the outcome's usage is the last usage reported (what the worker budgets against)
        let last = parsed.per_line.iter().flatten().rfind(|e| e.kind == EventKind::Usage);
        let reported: Usage = last.map(|e| serde_json::from_value(e.data.clone()).unwrap()).unwrap_or_default();
        prop_assert_eq!(usage_of(&parsed.outcome), reported);
        Ok(())
    });
}

#[test]
fn the_outcome_follows_from_the_lines() {
    check((prop::collection::vec(line(), 0..MAX_LINES), any::<bool>()), |(lines, exited_ok)| {
        let parsed = parse(&lines, exited_ok);
        let malformed = lines.iter().position(|l| matches!(seen(l), Seen::Malformed(_)));
        let objects: Vec<Value> = lines
            .iter()
            .filter_map(|l| match seen(l) {
                Seen::Object(v) => Some(v),
                _ => None,
            })
            .collect();
        let at = objects.iter().rposition(|v| v["type"] == "result");
        let last_result = at.map(|i| objects[i].clone());
        // lines after the result may still change the usage (assistant) or the session (system)
        let result_is_last =
            at.is_some_and(|i| objects[i + 1..].iter().all(|v| v["type"] != "assistant" && v["type"] != "system"));
        match (malformed, last_result) {
            (Some(n), _) => {
                let f = parsed.outcome.as_ref().expect_err("a malformed line fails the attempt");
                prop_assert_eq!(&f.error.code, "bad_stream");
                prop_assert!(f.error.message.contains(&format!("(line {})", n + 1)), "{}", f.error.message);
            }
            (None, None) => {
                let f = parsed.outcome.as_ref().expect_err("no result line fails the attempt");
                let want = if exited_ok || !lines.is_empty() { "truncated_stream" } else { "exit_status" };
                prop_assert_eq!(&f.error.code, want);
                prop_assert!(f.retryable);
            }
            (None, Some(r)) => {
                let failed = r["is_error"].as_bool().unwrap_or(false) || !exited_ok;
                match &parsed.outcome {
                    Ok(s) => {
                        prop_assert!(!failed, "{r}");
                        if let Some(t) = r["result"].as_str() {
                            prop_assert_eq!(&s.result["text"], t);
                        }
                        if let Some(id) = r["session_id"].as_str().filter(|_| result_is_last) {
                            prop_assert_eq!(&s.result["session_id"], id);
                        }
                    }
                    Err(f) => {
                        prop_assert!(failed, "{r}: {:?}", f.error);
                        let status = r["api_error_status"].as_u64();
                        let want = match (status, r["subtype"].as_str().unwrap_or("")) {
                            (Some(429 | 408 | 500..=599), _) => "provider_unavailable",
                            (Some(_), _) => "provider_error",
                            (None, "error_max_turns") => "max_turns",
                            (None, "error_during_execution") if f.error.message.contains("No conversation found") => {
                                "session_not_found"
                            }
                            (None, _) => "agent_error",
                        };
                        prop_assert_eq!(&f.error.code, want);
                    }
                }
                // the result's totals count, never below what streamed before it
                if let Some(input) = r["usage"]["input_tokens"].as_u64().filter(|_| result_is_last) {
                    prop_assert!(usage_of(&parsed.outcome).input_tokens >= input);
                }
            }
        }
        Ok(())
    });
}

/// Every line cut short at every byte: never a panic, and the cut line (if it is not JSON any
/// more) fails the stream.
#[test]
fn truncated_lines_fail_the_stream_without_panicking() {
    let object = prop_oneof![assistant(), user(), system(), result(), unknown()];
    check((object, any::<prop::sample::Index>()), |(v, at)| {
        let text = v.to_string().into_bytes();
        let cut = text[..at.index(text.len())].to_vec();
        let complete = serde_json::from_slice::<Value>(&cut).is_ok_and(|v| v.is_object());
        let parsed = parse(std::slice::from_ref(&cut), true);
        check_line(&cut, &parsed.per_line[0])?;
        if !complete && !String::from_utf8_lossy(&cut).trim().is_empty() {
            prop_assert_eq!(&parsed.outcome.as_ref().expect_err("cut short").error.code, "bad_stream");
        }
        Ok(())
    });
}
