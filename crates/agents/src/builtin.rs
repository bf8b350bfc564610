//! The built-in agents for tests and benchmarks: `echo`, `sleep`, `fail` and `stream`.

use crate::{input_text, Executor, Failure, RunContext, RunResult, Success};
use async_trait::async_trait;
use serde_json::{json, Value};
use smith_core::Usage;
use std::time::Duration;

pub struct Echo;

#[async_trait]
impl Executor for Echo {
    async fn run(&self, ctx: RunContext) -> RunResult {
        ctx.events.output(ctx.task.input.clone()).await;
        Ok(Success { result: ctx.task.input, usage: Usage::default() })
    }
}

pub struct Sleep;

fn sleep_ms(input: &Value) -> Option<u64> {
    match input {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[async_trait]
impl Executor for Sleep {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let Some(ms) = sleep_ms(&ctx.task.input) else {
            return Err(Failure::new("invalid_input", "sleep takes a number of milliseconds", false));
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = ctx.cancel.cancelled() => return Err(Failure::new("cancelled", "stopped", false)),
        }
        Ok(Success { result: json!(ms), usage: Usage::default() })
    }
}

pub struct Fail;

#[async_trait]
impl Executor for Fail {
    async fn run(&self, ctx: RunContext) -> RunResult {
        Err(Failure::new("agent_failed", input_text(&ctx.task.input), true))
    }
}

pub struct Stream;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamSpec {
    events: u64,
    #[serde(default)]
    bytes: usize,
    #[serde(default)]
    interval_ms: u64,
}

/// Largest single event the `stream` agent makes.
const MAX_STREAM_EVENT: usize = 1 << 20;

#[async_trait]
impl Executor for Stream {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let spec: StreamSpec = match serde_json::from_value(ctx.task.input.clone()) {
            Ok(s) => s,
            Err(e) => {
                return Err(Failure::new(
                    "invalid_input",
                    format!("stream takes {{\"events\":N,\"bytes\":M,\"interval_ms\":K}}: {e}"),
                    false,
                ))
            }
        };
        if spec.bytes > MAX_STREAM_EVENT {
            return Err(Failure::new("invalid_input", format!("bytes must be at most {MAX_STREAM_EVENT}"), false));
        }
        let body: String = (0..spec.bytes).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        for i in 0..spec.events {
            if ctx.cancel.is_cancelled() || !ctx.events.output(json!({"i": i, "text": body})).await {
                return Err(Failure::new("cancelled", "stopped", false));
            }
            if spec.interval_ms > 0 && i + 1 < spec.events {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(spec.interval_ms)) => {}
                    _ = ctx.cancel.cancelled() => return Err(Failure::new("cancelled", "stopped", false)),
                }
            }
        }
        Ok(Success {
            result: json!({"events": spec.events, "bytes": spec.bytes as u64 * spec.events}),
            usage: Usage::default(),
        })
    }
}
