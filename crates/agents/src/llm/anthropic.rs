//! The `anthropic` executor: the Anthropic Messages API (`POST /v1/messages`, streamed).

use super::{excerpt, Api, Config, Reply, Round, Step, StreamError, Tokens, ToolCall, ToolOutcome, ToolSpec};
use serde::Serialize;
use serde_json::{json, Value};
use smith_core::sse::SseEvent;

http_executor! {
    /// Runs agents on the Anthropic Messages API.
    Anthropic
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: &'a [Value],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    /// Structured output: `{"format": {"type": "json_schema", "schema": …}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
}

#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
}

impl Api for Anthropic {
    type Round = MessageStream;
    const NAME: &'static str = "anthropic";
    const KEY_ENV: &'static str = "ANTHROPIC_API_KEY";
    const BASE_ENV: &'static str = "ANTHROPIC_BASE_URL";
    const DEFAULT_BASE: &'static str = "https://api.anthropic.com";
    const PATH: &'static str = "messages";

    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn body(cfg: &Config, messages: &[Value], tools: &[ToolSpec]) -> Vec<u8> {
        let tools = tools
            .iter()
            .map(|t| Tool { name: &t.name, description: t.description.as_deref(), input_schema: &t.input_schema })
            .collect();
        let body = Body {
            model: &cfg.model,
            max_tokens: cfg.max_tokens,
            stream: true,
            system: cfg.system.as_deref(),
            messages,
            tools,
            output_config: cfg.output_schema.as_ref().map(|s| json!({"format": {"type": "json_schema", "schema": s}})),
        };
        serde_json::to_vec(&body).expect("a request body serializes")
    }

    fn authorize(req: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        let req = req.header("anthropic-version", "2023-06-01");
        match reqwest::header::HeaderValue::from_str(key) {
            Ok(mut value) => {
                value.set_sensitive(true);
                req.header("x-api-key", value)
            }
            // Checked when the config was resolved; the builder would report it anyway.
            Err(_) => req.header("x-api-key", key),
        }
    }

    fn tool_results(results: &[(ToolCall, ToolOutcome)]) -> Vec<Value> {
        let content: Vec<Value> = results
            .iter()
            .map(|(call, outcome)| {
                let mut result = json!({"type": "tool_result", "tool_use_id": call.id, "is_error": outcome.is_error});
                // An empty result is sent without content, which the API accepts.
                if !outcome.content.is_empty() {
                    result["content"] = json!(outcome.content);
                }
                result
            })
            .collect();
        vec![json!({"role": "user", "content": content})]
    }
}

/// A content block of the streamed message, by its index.
#[derive(Debug)]
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
    },
    /// Blocks this executor does not use (thinking, server tools): not replayed.
    Other,
}

/// The state of one streamed message.
#[derive(Debug, Default)]
pub struct MessageStream {
    blocks: Vec<(u64, Block)>,
    stop_reason: Option<String>,
    model: Option<String>,
    tokens: Tokens,
    done: bool,
}

impl MessageStream {
    fn block(&mut self, index: u64) -> Option<&mut Block> {
        self.blocks.iter_mut().rev().find(|(i, _)| *i == index).map(|(_, b)| b)
    }

    /// Reads a `usage` object: input counts every input token (cached or not), output is
    /// cumulative. Returns whether anything was there.
    fn read_usage(&mut self, usage: Option<&Value>) -> bool {
        let Some(usage) = usage else { return false };
        let n = |key: &str| usage.get(key).and_then(Value::as_u64);
        let input = ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"].map(n);
        if input.iter().any(Option::is_some) {
            self.tokens.input = input.iter().map(|t| t.unwrap_or(0)).sum();
        }
        if let Some(output) = n("output_tokens") {
            self.tokens.output = output;
        }
        true
    }
}

impl Round for MessageStream {
    fn on_event(&mut self, event: &SseEvent) -> Result<Step, StreamError> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| StreamError::Malformed(format!("malformed JSON ({e}): {}", excerpt(&event.data, 200))))?;
        let kind = data.get("type").and_then(Value::as_str).unwrap_or(event.event.as_str());
        let index = data.get("index").and_then(Value::as_u64);
        let mut step = Step::default();
        match kind {
            "message_start" => {
                let message = data.get("message");
                self.model = message.and_then(|m| m.get("model")).and_then(Value::as_str).map(String::from);
                step.usage = self.read_usage(message.and_then(|m| m.get("usage")));
            }
            "content_block_start" => {
                let (Some(index), Some(block)) = (index, data.get("content_block")) else {
                    return Err(malformed(kind, &event.data));
                };
                let field = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                let block = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = field("text");
                        if !text.is_empty() {
                            step.text = Some(text.clone());
                        }
                        Block::Text(text)
                    }
                    Some("tool_use") => Block::ToolUse { id: field("id"), name: field("name"), json: String::new() },
                    _ => Block::Other,
                };
                self.blocks.push((index, block));
            }
            "content_block_delta" => {
                let (Some(index), Some(delta)) = (index, data.get("delta")) else {
                    return Err(malformed(kind, &event.data));
                };
                let piece = |k: &str| delta.get(k).and_then(Value::as_str);
                match (delta.get("type").and_then(Value::as_str), self.block(index)) {
                    (Some("text_delta"), Some(Block::Text(text))) => {
                        let delta = piece("text").ok_or_else(|| malformed(kind, &event.data))?;
                        text.push_str(delta);
                        if !delta.is_empty() {
                            step.text = Some(delta.to_string());
                        }
                    }
                    (Some("input_json_delta"), Some(Block::ToolUse { json, .. })) => {
                        json.push_str(piece("partial_json").ok_or_else(|| malformed(kind, &event.data))?);
                    }
                    (Some("text_delta" | "input_json_delta"), _) => {
                        return Err(StreamError::Malformed(format!(
                            "a delta for a block it did not start: {}",
                            excerpt(&event.data, 200)
                        )))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.get("delta").and_then(|d| d.get("stop_reason")).and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                step.usage = self.read_usage(data.get("usage"));
            }
            "message_stop" => self.done = true,
            "error" => {
                let error = data.get("error");
                let field = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str);
                let message = match (field("type"), field("message")) {
                    (Some(t), Some(m)) => format!("{t}: {m}"),
                    (None, Some(m)) => m.to_string(),
                    _ => excerpt(&event.data, 200),
                };
                return Err(StreamError::Provider(message));
            }
            // ping, content_block_stop and event types added later.
            _ => {}
        }
        Ok(step)
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn tokens(&self) -> Tokens {
        self.tokens
    }

    fn into_reply(self) -> Reply {
        let wants_tools = self.stop_reason.as_deref() == Some("tool_use");
        let mut content = Vec::new();
        let mut tool_calls = Vec::new();
        for (_, block) in self.blocks {
            match block {
                Block::Text(text) if !text.is_empty() => content.push(json!({"type": "text", "text": text})),
                Block::ToolUse { id, name, json } if wants_tools => {
                    let input = if json.trim().is_empty() {
                        Ok(json!({}))
                    } else {
                        serde_json::from_str::<Value>(&json).map_err(|e| (json.clone(), e.to_string()))
                    };
                    let replayed = input.as_ref().ok().filter(|v| v.is_object()).cloned().unwrap_or_else(|| json!({}));
                    content.push(json!({"type": "tool_use", "id": id, "name": name, "input": replayed}));
                    tool_calls.push(ToolCall { id, name, input });
                }
                _ => {}
            }
        }
        let assistant = (!content.is_empty()).then(|| json!({"role": "assistant", "content": content}));
        Reply { assistant, tool_calls, stop_reason: self.stop_reason, model: self.model }
    }
}

fn malformed(kind: &str, data: &str) -> StreamError {
    StreamError::Malformed(format!("a {kind} event without its fields: {}", excerpt(data, 200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds each event's data under its name, which is the data's `type` (as Anthropic sends them).
    fn feed(events: &[Value]) -> (MessageStream, String, Vec<Tokens>) {
        let mut round = MessageStream::default();
        let mut text = String::new();
        let mut usage = Vec::new();
        for data in events {
            let name = data["type"].as_str().expect("an event type");
            let step = round.on_event(&SseEvent::named(name, data.to_string())).unwrap();
            text.extend(step.text);
            if step.usage {
                usage.push(round.tokens());
            }
        }
        (round, text, usage)
    }

    #[test]
    fn a_streamed_message_with_text_and_a_tool_call() {
        let (round, text, usage) = feed(&[
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
            json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ]);
        assert!(round.is_done());
        assert_eq!(text, "Let me check.");
        assert_eq!(usage, [Tokens { input: 25, output: 1 }, Tokens { input: 25, output: 42 }]);
        let reply = round.into_reply();
        assert_eq!(reply.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(reply.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            reply.tool_calls,
            [ToolCall { id: "toolu_1".into(), name: "weather".into(), input: Ok(json!({"city": "Paris"})) }]
        );
        assert_eq!(
            reply.assistant.unwrap(),
            json!({"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            ]})
        );
    }

    #[test]
    fn errors_and_garbage_are_reported_not_panicked_on() {
        let mut round = MessageStream::default();
        let ev = |data: &str| SseEvent::data(data);
        let overloaded = r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        assert_eq!(round.on_event(&ev(overloaded)), Err(StreamError::Provider("overloaded_error: Overloaded".into())));
        for bad in ["{not json", r#"{"type":"content_block_delta","index":0}"#, r#"{"type":"content_block_start"}"#] {
            assert!(matches!(round.on_event(&ev(bad)), Err(StreamError::Malformed(_))), "{bad}");
        }
        let orphan = r#"{"type":"content_block_delta","index":9,"delta":{"type":"text_delta","text":"x"}}"#;
        assert!(matches!(round.on_event(&ev(orphan)), Err(StreamError::Malformed(_))));
        assert_eq!(round.on_event(&ev("[1, 2]")), Ok(Step::default()), "unknown shapes are skipped");
    }
}
