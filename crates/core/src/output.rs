//! Structured output: the JSON Schema an agent definition or a task gives its result.
//!
//! A schema is checked when it is given (a config file, a submission): it must be a JSON
//! Schema a validator can build, with no reference outside itself (nothing is fetched), and
//! at most [`MAX_SCHEMA_BYTES`]. When an attempt ends, [`candidate`] finds the output in its
//! result (what the provider returned as structured output, else the JSON of its text) and
//! [`Schema::check`] validates it; a violation names the path in the output that broke it.

use crate::error::{Error, Result};
use serde_json::Value;

/// The largest schema accepted, in bytes of its JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Error code of a task whose output did not match its schema (after the corrective turn,
/// where its executor has one).
pub const INVALID_OUTPUT: &str = "invalid_output";

/// How many of a violation's errors its message lists.
const ERRORS_SHOWN: usize = 3;
/// The longest single error quoted in a message.
const ERROR_CHARS: usize = 300;

/// A compiled output schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Builds the validator of `schema`; `field` names it in the error (`output_schema`, …).
    pub fn compile(schema: &Value, field: &str) -> Result<Schema> {
        if !schema.is_object() {
            return Err(Error::unprocessable(format!("{field} must be a JSON Schema: an object")));
        }
        let size = serde_json::to_vec(schema).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_SCHEMA_BYTES {
            return Err(Error::unprocessable(format!(
                "{field} is {size} bytes of JSON; the most is {MAX_SCHEMA_BYTES}"
            )));
        }
        match jsonschema::validator_for(schema) {
            Ok(validator) => Ok(Schema { validator }),
            Err(e) => Err(Error::unprocessable(format!(
                "{field} is not a usable JSON Schema: {}",
                cut(&described(&e), ERROR_CHARS)
            ))),
        }
    }

    /// `Ok` when `output` conforms; else what broke, each error with its path in the output.
    pub fn check(&self, output: &Value) -> std::result::Result<(), String> {
        let errors: Vec<String> =
            self.validator.iter_errors(output).map(|e| cut(&described(&e), ERROR_CHARS)).collect();
        if errors.is_empty() {
            return Ok(());
        }
        let more = errors.len().saturating_sub(ERRORS_SHOWN);
        let mut message = errors.into_iter().take(ERRORS_SHOWN).collect::<Vec<_>>().join("; ");
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        Err(message)
    }
}

/// One validation error as `at /path: what` (the root is `/`).
fn described(e: &jsonschema::ValidationError<'_>) -> String {
    let path = e.instance_path().to_string();
    let path = if path.is_empty() { "/".to_string() } else { path };
    format!("at {path}: {e}")
}

/// At most `max` characters of `s`, with `…` where it was cut.
fn cut(s: &str, max: usize) -> String {
    let kept = crate::task::truncate(s, max);
    if kept.len() < s.len() {
        format!("{kept}…")
    } else {
        s.to_string()
    }
}

/// The output an attempt's result holds: its `structured_output` when the executor asked the
/// provider for one; else the JSON of its `text` (LLM and Claude Code agents) or of the result
/// itself when it is text (a process's stdout); else the result as it is. Text is JSON when
/// all of it is (a Markdown code fence around it is allowed), or else when its last line is.
pub fn candidate(result: &Value) -> std::result::Result<Value, String> {
    if let Some(v) = result.get("structured_output").filter(|v| !v.is_null()) {
        return Ok(v.clone());
    }
    if result.get("truncated").and_then(Value::as_bool) == Some(true) {
        return Err("the output was cut at the agent's max_result_bytes, so it cannot be parsed".into());
    }
    match result {
        Value::String(text) => json_in(text),
        Value::Object(m) => match m.get("text") {
            Some(Value::String(text)) => json_in(text),
            _ => Ok(result.clone()),
        },
        other => Ok(other.clone()),
    }
}

/// The JSON value `text` holds (see [`candidate`]).
fn json_in(text: &str) -> std::result::Result<Value, String> {
    let trimmed = text.trim();
    let unfenced = unfence(trimmed).unwrap_or(trimmed);
    let whole = serde_json::from_str::<Value>(unfenced);
    if let Ok(v) = whole {
        return Ok(v);
    }
    if let Some(last) = trimmed.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        if last.len() < trimmed.len() {
            if let Ok(v) = serde_json::from_str::<Value>(last) {
                return Ok(v);
            }
        }
    }
    let why = whole.err().map(|e| e.to_string()).unwrap_or_default();
    if trimmed.is_empty() {
        return Err("the output is empty, not JSON".into());
    }
    Err(format!("the output is not JSON ({why}); it begins {:?}", cut(trimmed, 80)))
}

/// The text inside a Markdown code fence (```` ```json … ``` ````), when `text` is one.
fn unfence(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?.strip_suffix("```")?;
    let newline = rest.find('\n')?;
    Some(rest[newline + 1..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        let s = json!({"type": "object", "properties": {"title": {"type": "string"}, "n": {"type": "integer"}},
            "required": ["title"]});
        Schema::compile(&s, "output_schema").unwrap()
    }

    #[test]
    fn conforming_output_passes_and_a_violation_names_its_path() {
        let s = schema();
        assert_eq!(s.check(&json!({"title": "x", "n": 2})), Ok(()));
        let e = s.check(&json!({"title": 5, "n": "two"})).unwrap_err();
        assert!(e.contains("at /title") && e.contains("at /n"), "{e}");
        let e = s.check(&json!({})).unwrap_err();
        assert!(e.starts_with("at /: ") && e.contains("title"), "{e}");
        let many = Schema::compile(&json!({"type": "array", "items": {"type": "string"}}), "s").unwrap();
        let e = many.check(&json!([1, 2, 3, 4, 5])).unwrap_err();
        assert!(e.ends_with("and 2 more"), "{e}");
    }

    #[test]
    fn bad_schemas_are_refused_with_the_field_named() {
        for (bad, why) in [
            (json!("string"), "must be a JSON Schema"),
            (json!({"type": "no-such-type"}), "not a usable JSON Schema"),
            (json!({"$ref": "https://example.com/schema.json"}), "not a usable JSON Schema"),
            (json!({"description": "x".repeat(MAX_SCHEMA_BYTES)}), "bytes of JSON"),
        ] {
            let e = Schema::compile(&bad, "output_schema").unwrap_err().to_string();
            assert!(e.contains("output_schema") && e.contains(why), "{bad:.60}: {e}");
        }
        assert!(Schema::compile(&json!(true), "s").is_err(), "an object, as the API documents");
        assert!(Schema::compile(&json!({}), "s").is_ok());
    }

    #[test]
    fn the_candidate_comes_from_structured_output_then_text() {
        let obj = json!({"title": "x"});
        assert_eq!(candidate(&json!({"text": "ignored", "structured_output": obj})), Ok(obj.clone()));
        assert_eq!(candidate(&json!({"text": "{\"title\": \"x\"}"})), Ok(obj.clone()));
        assert_eq!(candidate(&json!("```json\n{\"title\": \"x\"}\n```")), Ok(obj.clone()));
        assert_eq!(candidate(&json!("working...\ndone\n{\"title\": \"x\"}\n")), Ok(obj.clone()));
        assert_eq!(candidate(&json!({"title": "x"})), Ok(obj.clone()));
        assert_eq!(candidate(&json!(7)), Ok(json!(7)));
        let e = candidate(&json!("hello there")).unwrap_err();
        assert!(e.contains("not JSON") && e.contains("hello there"), "{e}");
        assert!(candidate(&json!({"stdout": "{", "truncated": true})).unwrap_err().contains("max_result_bytes"));
        assert!(candidate(&json!("  ")).unwrap_err().contains("empty"));
    }
}
