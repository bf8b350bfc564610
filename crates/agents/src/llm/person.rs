//! A person in the loop for the LLM executors: which of the model's tool calls wait for a
//! person (those the agent's `approve` patterns name, and the platform's `ask_human` and
//! `request_approval`), the conversation parked with the request, and the answer applied to
//! the call when the task resumes — exactly where it stopped, without asking the model again.

use super::{ToolCall, ToolOutcome};
use crate::{Failure, RunContext};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smith_core::approval::{Answer, Decision};
use std::time::Duration;

/// How long a parked attempt waits to be stopped by its worker before it gives up on its own.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// Why a call waits for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// An `approve` pattern names it.
    Pattern,
    /// The model called `ask_human`.
    Question,
    /// The model called `request_approval`.
    Approval,
}

/// Whether `call` waits for a person, and why.
pub(super) fn asks(ctx: &RunContext, call: &ToolCall) -> Option<Ask> {
    let Ok(input) = &call.input else { return None };
    match call.name.as_str() {
        "ask_human" => Some(Ask::Question),
        "request_approval" => Some(Ask::Approval),
        name => {
            let patterns = smith_core::approval::parse_patterns(&ctx.def.approve).ok()?;
            smith_core::approval::first_match(&patterns, name, input).map(|_| Ask::Pattern)
        }
    }
}

/// A tool call as the parked state keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredCall {
    id: String,
    name: String,
    input: Option<Value>,
    /// The model's text when it was not JSON, and why.
    raw: Option<(String, String)>,
}

/// What the attempt had when it asked: enough to carry on exactly there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Parked {
    pub messages: Vec<Value>,
    pub text: String,
    calls: Vec<StoredCall>,
    /// Outcomes of the calls before the one asked about, in order: `(content, is_error)`.
    done: Vec<(String, bool)>,
}

impl Parked {
    pub(super) fn new(messages: &[Value], text: &str, calls: &[ToolCall], done: &[(ToolCall, ToolOutcome)]) -> Self {
        let calls = calls
            .iter()
            .map(|c| StoredCall {
                id: c.id.clone(),
                name: c.name.clone(),
                input: c.input.as_ref().ok().cloned(),
                raw: c.input.as_ref().err().cloned(),
            })
            .collect();
        let done = done.iter().map(|(_, o)| (o.content.clone(), o.is_error)).collect();
        Parked { messages: messages.to_vec(), text: text.to_string(), calls, done }
    }

    /// The round's tool calls, and the outcomes of those before the one asked about.
    pub(super) fn round(&self) -> (Vec<ToolCall>, Vec<(ToolCall, ToolOutcome)>) {
        let calls: Vec<ToolCall> = self
            .calls
            .iter()
            .map(|c| ToolCall {
                id: c.id.clone(),
                name: c.name.clone(),
                input: match (&c.input, &c.raw) {
                    (Some(v), _) => Ok(v.clone()),
                    (None, Some(raw)) => Err(raw.clone()),
                    (None, None) => Ok(Value::Null),
                },
            })
            .collect();
        let done = calls
            .iter()
            .zip(&self.done)
            .map(|(c, (content, is_error))| (c.clone(), ToolOutcome { content: content.clone(), is_error: *is_error }))
            .collect();
        (calls, done)
    }
}

/// The platform tool that asks about `call`, and its arguments (the parked state with them).
pub(super) fn request(kind: Ask, call: &ToolCall, state: &Parked) -> (String, Value) {
    let input = call.input.clone().unwrap_or(Value::Null);
    let state = serde_json::to_value(state).expect("a parked conversation serializes");
    match kind {
        Ask::Pattern => ("permission_prompt".into(), json!({"tool_name": call.name, "input": input, "state": state})),
        Ask::Question | Ask::Approval => {
            let mut args = input.as_object().cloned().unwrap_or_default();
            args.insert("state".into(), state);
            (call.name.clone(), Value::Object(args))
        }
    }
}

/// What becomes of a call a person was asked about.
#[derive(Debug, PartialEq)]
pub(super) enum Then {
    /// Run the tool, with these arguments.
    Run(Value),
    /// This is the call's outcome.
    Outcome(ToolOutcome),
    /// The task waits for the person: the attempt ends.
    Wait,
}

/// The platform's reply to the asking call: an answer given already, or a wait.
pub(super) fn reply(kind: Ask, call: &ToolCall, out: ToolOutcome) -> Then {
    if out.is_error {
        return Then::Outcome(out);
    }
    let v: Value = serde_json::from_str(&out.content).unwrap_or(Value::Null);
    if v["interrupt"] == true || v["status"] == "waiting_input" {
        return Then::Wait;
    }
    match (kind, v["behavior"].as_str()) {
        (Ask::Pattern, Some("allow")) => {
            Then::Run(v.get("updatedInput").cloned().unwrap_or_else(|| call.input.clone().unwrap_or(Value::Null)))
        }
        (Ask::Pattern, _) => Then::Outcome(ToolOutcome::error(v["message"].as_str().unwrap_or("denied").to_string())),
        _ => Then::Outcome(out),
    }
}

/// The answer a person gave to the call this attempt resumes at.
pub(super) fn answered(kind: Ask, call: &ToolCall, a: &Answer) -> Then {
    let content = match (kind, a.decision) {
        (Ask::Pattern, Decision::Allow) => {
            return Then::Run(a.input.clone().unwrap_or_else(|| call.input.clone().unwrap_or(Value::Null)))
        }
        (Ask::Pattern, Decision::Deny) => return Then::Outcome(ToolOutcome::error(a.denial())),
        (Ask::Question, Decision::Allow) => json!({"answer": a.answer, "by": a.by}),
        (Ask::Question, Decision::Deny) => json!({"answer": null, "declined": true, "message": a.message, "by": a.by}),
        (Ask::Approval, _) => json!({"decision": a.decision, "message": a.message, "input": a.input, "by": a.by}),
    };
    Then::Outcome(ToolOutcome { content: content.to_string(), is_error: false })
}

/// The parked conversation this attempt resumes, and the answer, when its previous attempt
/// asked a person.
pub(super) fn resumed(ctx: &RunContext) -> Option<(Parked, Answer)> {
    let r = ctx.resume.as_ref()?;
    r.answers.iter().rev().find_map(|a| {
        let parked: Parked = serde_json::from_value(a.state.clone()?).ok()?;
        Some((parked, a.answer.clone()?))
    })
}

/// The attempt asked and its task waits: the worker stops it (told by the gateway); this only
/// waits for that, and gives up on its own after a while (its outcome is fenced then anyway).
pub(super) async fn wait_for_stop(ctx: &RunContext) -> Failure {
    let _ = tokio::time::timeout(STOP_WAIT, ctx.cancel.cancelled()).await;
    Failure::new("waiting_input", "the task waits for a person's answer; it resumes in a new attempt", true)
}
