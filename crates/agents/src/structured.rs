//! Structured output for every executor: when the task or its agent gives an `output_schema`,
//! the attempt's output must match it.
//!
//! The executors that can ask their provider for it do (Claude Code `--json-schema`, the
//! Messages API's and Chat Completions' JSON Schema formats); this wrapper validates what any
//! executor returns. Output that does not conform gets one corrective turn where the executor
//! holds a conversation (Claude Code, `anthropic`, `openai`): the same conversation continues
//! with the validator's message and the schema. Still wrong, or an executor without a
//! conversation (`process`, the built-ins), and the attempt fails [`INVALID_OUTPUT`], not
//! retried — the same agent would answer the same way. A conforming attempt's result is the
//! parsed output itself.

use crate::{Executor, Failure, RunContext, RunResult, SessionContext, Success, Turn};
use async_trait::async_trait;
use serde_json::{json, Value};
use smith_core::output::{candidate, Schema, INVALID_OUTPUT};
use smith_core::{AgentDef, EventKind, ExecutorKind};
use std::sync::Arc;

/// `inner` with its output checked against the schema in effect for each task.
pub fn wrap(inner: Arc<dyn Executor>, def: &AgentDef) -> Arc<dyn Executor> {
    let converses = matches!(def.executor, ExecutorKind::ClaudeCode | ExecutorKind::Anthropic | ExecutorKind::Openai);
    Arc::new(Structured { inner, converses })
}

struct Structured {
    inner: Arc<dyn Executor>,
    /// The executor continues a conversation from a session's turns: it can be corrected.
    converses: bool,
}

#[async_trait]
impl Executor for Structured {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let Some(raw) = ctx.output_schema().cloned() else { return self.inner.run(ctx).await };
        // checked when it was given; a definition stored by an older binary is checked here
        let schema =
            Schema::compile(&raw, "output_schema").map_err(|e| Failure::new("misconfigured", e.message, false))?;
        let again = self.converses.then(|| ctx.clone());
        let first = self.inner.run(ctx).await?;
        let why = match conforming(&schema, &first) {
            Ok(done) => return Ok(done),
            Err(why) => why,
        };
        let Some(ctx) = again else { return Err(invalid(&why).with_usage(first.usage)) };
        let note = json!({"type": "output_invalid", "error": why, "correcting": true});
        if !ctx.events.emit(EventKind::Output, note).await {
            return Err(invalid(&why).with_usage(first.usage));
        }
        let ctx = corrective(ctx, &first, &why, &raw);
        match self.inner.run(ctx).await {
            Ok(mut second) => {
                second.usage.add(&first.usage);
                conforming(&schema, &second).map_err(|why| invalid(&why).with_usage(second.usage))
            }
            Err(f) => Err(f.with_usage_added(first.usage)),
        }
    }
}

/// The success with its parsed output as the result, or why the output does not conform.
fn conforming(schema: &Schema, ok: &Success) -> Result<Success, String> {
    let output = candidate(&ok.result)?;
    schema.check(&output)?;
    Ok(Success { result: output, usage: ok.usage })
}

fn invalid(why: &str) -> Failure {
    Failure::new(INVALID_OUTPUT, format!("the output does not match the output_schema: {why}"), false)
}

/// The context of the corrective turn: the conversation so far (the session's turns, then this
/// attempt's input and answer) continued by the correction; usage reported on top of the first
/// run's.
fn corrective(mut ctx: RunContext, first: &Success, why: &str, schema: &Value) -> RunContext {
    let mut session = ctx
        .session
        .take()
        .unwrap_or_else(|| SessionContext { id: ctx.task.session_id.clone().unwrap_or_default(), turns: Vec::new() });
    session.turns.push(Turn { input: ctx.task.input.clone(), result: first.result.clone() });
    ctx.session = Some(session);
    ctx.task.input = Value::String(format!(
        "Your answer does not match the JSON Schema this task requires: {why}.\n\
         Answer again with only a JSON value that matches this schema, and nothing else:\n{schema}"
    ));
    ctx.events = ctx.events.after(first.usage);
    ctx
}
