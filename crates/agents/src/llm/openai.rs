//! The `openai` executor: OpenAI Chat Completions (`POST /v1/chat/completions`, streamed),
//! or any server that speaks it.

use super::{excerpt, Api, Config, Reply, Round, Step, StreamError, Tokens, ToolCall, ToolOutcome, ToolSpec};
use serde::Serialize;
use serde_json::{json, Value};
use smith_core::sse::SseEvent;

http_executor! {
    /// Runs agents on an OpenAI-compatible Chat Completions API.
    OpenAi
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    stream: bool,
    stream_options: Value,
    messages: Vec<&'a Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    /// Structured output. Not `strict`: strict mode takes only a subset of JSON Schema, and the
    /// platform validates the answer against the whole schema anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

/// OpenAI's reasoning models refuse `max_tokens` and take `max_completion_tokens`; other
/// OpenAI-compatible servers know only `max_tokens`.
fn takes_max_completion_tokens(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"].iter().any(|p| model.starts_with(p))
}

impl Api for OpenAi {
    type Round = ChunkStream;
    const NAME: &'static str = "openai";
    const KEY_ENV: &'static str = "OPENAI_API_KEY";
    const BASE_ENV: &'static str = "OPENAI_BASE_URL";
    const DEFAULT_BASE: &'static str = "https://api.openai.com";
    const PATH: &'static str = "chat/completions";

    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn body(cfg: &Config, messages: &[Value], tools: &[ToolSpec]) -> Vec<u8> {
        let system = cfg.system.as_ref().map(|s| json!({"role": "system", "content": s}));
        let tools = tools
            .iter()
            .map(|t| {
                let mut function = json!({"name": t.name, "parameters": t.input_schema});
                if let Some(d) = &t.description {
                    function["description"] = json!(d);
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        let (max_tokens, max_completion_tokens) = if takes_max_completion_tokens(&cfg.model) {
            (None, Some(cfg.max_tokens))
        } else {
            (Some(cfg.max_tokens), None)
        };
        let body = Body {
            model: &cfg.model,
            max_tokens,
            max_completion_tokens,
            stream: true,
            stream_options: json!({"include_usage": true}),
            messages: system.iter().chain(messages).collect(),
            tools,
            response_format: cfg.output_schema.as_ref().map(
                |s| json!({"type": "json_schema", "json_schema": {"name": "output", "schema": s, "strict": false}}),
            ),
        };
        serde_json::to_vec(&body).expect("a request body serializes")
    }

    fn authorize(req: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        req.bearer_auth(key)
    }

    fn tool_results(results: &[(ToolCall, ToolOutcome)]) -> Vec<Value> {
        results
            .iter()
            .map(|(call, outcome)| {
                let content =
                    if outcome.is_error { format!("Error: {}", outcome.content) } else { outcome.content.clone() };
                json!({"role": "tool", "tool_call_id": call.id, "content": content})
            })
            .collect()
    }
}

/// A tool call as its deltas arrive.
#[derive(Debug, Default)]
struct PartialCall {
    index: u64,
    id: String,
    name: String,
    arguments: String,
}

/// The state of one streamed completion (choice 0 only; `n` is never set).
#[derive(Debug, Default)]
pub struct ChunkStream {
    text: String,
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    model: Option<String>,
    tokens: Tokens,
    done: bool,
}

impl ChunkStream {
    fn on_tool_call(&mut self, delta: &Value) {
        let index = delta.get("index").and_then(Value::as_u64).unwrap_or(self.calls.len().saturating_sub(1) as u64);
        let call = match self.calls.iter().position(|c| c.index == index) {
            Some(i) => &mut self.calls[i],
            None => {
                self.calls.push(PartialCall { index, ..Default::default() });
                self.calls.last_mut().expect("just pushed")
            }
        };
        if let Some(id) = delta.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
            call.id = id.to_string();
        }
        let function = delta.get("function");
        let piece = |k: &str| function.and_then(|f| f.get(k)).and_then(Value::as_str);
        // The name comes whole in the first delta; some servers repeat it in later ones.
        if let Some(name) = piece("name").filter(|_| call.name.is_empty()) {
            call.name = name.to_string();
        }
        if let Some(arguments) = piece("arguments") {
            call.arguments.push_str(arguments);
        }
    }
}

impl Round for ChunkStream {
    fn on_event(&mut self, event: &SseEvent) -> Result<Step, StreamError> {
        let mut step = Step::default();
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(step);
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|e| StreamError::Malformed(format!("malformed JSON ({e}): {}", excerpt(&event.data, 200))))?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), String::from);
            return Err(StreamError::Provider(excerpt(&message, 500)));
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str) {
            self.model = Some(model.to_string());
        }
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|choices| choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0));
        if let Some(choice) = choice {
            let delta = choice.get("delta");
            let field = |k: &str| delta.and_then(|d| d.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty());
            if let Some(text) = field("content").or_else(|| field("refusal")) {
                self.text.push_str(text);
                step.text = Some(text.to_string());
            }
            if let Some(calls) = delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array) {
                for call in calls {
                    self.on_tool_call(call);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
            self.tokens = Tokens { input: n("prompt_tokens"), output: n("completion_tokens") };
            step.usage = true;
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
        let wants_tools = self.finish_reason.as_deref() == Some("tool_calls") && !self.calls.is_empty();
        let mut tool_calls = Vec::new();
        let mut replayed = Vec::new();
        if wants_tools {
            for call in self.calls {
                let arguments = if call.arguments.trim().is_empty() { "{}".to_string() } else { call.arguments };
                let input = serde_json::from_str::<Value>(&arguments).map_err(|e| (arguments.clone(), e.to_string()));
                replayed.push(json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }));
                tool_calls.push(ToolCall { id: call.id, name: call.name, input });
            }
        }
        let assistant = if wants_tools {
            let content = if self.text.is_empty() { Value::Null } else { Value::String(self.text) };
            Some(json!({"role": "assistant", "content": content, "tool_calls": replayed}))
        } else {
            (!self.text.is_empty()).then(|| json!({"role": "assistant", "content": self.text}))
        };
        Reply { assistant, tool_calls, stop_reason: self.finish_reason, model: self.model }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> String {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
        .to_string()
    }

    #[test]
    fn a_streamed_completion_with_text_tool_calls_and_usage() {
        let mut round = ChunkStream::default();
        let datas = [
            chunk(json!({"role": "assistant", "content": "", "refusal": null}), None),
            chunk(json!({"content": "Checking"}), None),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": ""}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                "function": {"name": "time", "arguments": ""}}]}), None),
            chunk(json!({}), Some("tool_calls")),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18", "choices": [],
                "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}})
            .to_string(),
            "[DONE]".to_string(),
        ];
        let mut text = String::new();
        let mut usage = Vec::new();
        for data in datas {
            let step = round.on_event(&SseEvent::data(data)).unwrap();
            text.extend(step.text);
            if step.usage {
                usage.push(round.tokens());
            }
        }
        assert!(round.is_done());
        assert_eq!(text, "Checking");
        assert_eq!(usage, [Tokens { input: 30, output: 12 }]);
        let reply = round.into_reply();
        assert_eq!(reply.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(
            reply.tool_calls,
            [
                ToolCall { id: "call_1".into(), name: "weather".into(), input: Ok(json!({"city": "Paris"})) },
                ToolCall { id: "call_2".into(), name: "time".into(), input: Ok(json!({})) },
            ]
        );
        let assistant = reply.assistant.unwrap();
        assert_eq!(assistant["content"], "Checking");
        assert_eq!(assistant["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(assistant["tool_calls"][1]["function"]["arguments"], "{}");
    }

    #[test]
    fn errors_and_garbage_are_reported_not_panicked_on() {
        let mut round = ChunkStream::default();
        let ev = |data: &str| SseEvent::data(data);
        let error = r#"{"error": {"message": "The server had an error", "type": "server_error"}}"#;
        assert_eq!(round.on_event(&ev(error)), Err(StreamError::Provider("The server had an error".into())));
        assert!(matches!(round.on_event(&ev("{\"choices\": [")), Err(StreamError::Malformed(_))));
        assert_eq!(round.on_event(&ev(r#"{"choices": "x", "usage": 3}"#)), Ok(Step::default()));
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        assert!(takes_max_completion_tokens("o3-mini") && takes_max_completion_tokens("gpt-5-mini"));
        assert!(!takes_max_completion_tokens("gpt-4o") && !takes_max_completion_tokens("llama3"));
    }
}
