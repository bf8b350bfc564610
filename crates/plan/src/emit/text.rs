//! Deterministic JSON and YAML text from `serde_json::Value`: keys sorted, fixed indentation,
//! so the same plan always gives byte-identical files whatever order a map was built in.

use serde_json::Value;

/// Pretty JSON: two-space indent, keys sorted, a final newline.
pub fn json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v, 0);
    out.push('\n');
    out
}

/// Compact JSON with sorted keys (a JSON document inside a string property).
pub fn json_compact(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let items: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", quote(k), json_compact(&map[k.as_str()]))).collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(json_compact).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn write_json(out: &mut String, v: &Value, depth: usize) {
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&quote(k));
                out.push_str(": ");
                write_json(out, &map[k.as_str()], depth + 1);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                write_json(out, item, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(depth));
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// One YAML document (no `---`): block style, keys sorted, strings plain only where YAML 1.1
/// and 1.2 both read them back as the same string, multi-line strings as literal blocks.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, v, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, v, 0),
        scalar => {
            out.push_str(&scalar_text(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, v: &Value, indent: usize) {
    let Value::Object(map) = v else { unreachable!("write_map takes an object") };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for k in keys {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(k));
        out.push(':');
        write_value(out, &map[k.as_str()], indent);
    }
}

fn write_seq(out: &mut String, v: &Value, indent: usize) {
    let Value::Array(items) = v else { unreachable!("write_seq takes an array") };
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // the first key goes on the dash's line, the rest line up under it
                let mut first = String::new();
                write_map(&mut first, item, indent + 2);
                out.push(' ');
                out.push_str(&first[indent + 2..]);
            }
            other => write_value(out, other, indent),
        }
    }
}

/// A value after a key's `:` or an item's `-`: a nested map or sequence on the lines below,
/// a scalar on the same line.
fn write_value(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, v, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, v, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn key_text(k: &str) -> String {
    if plain_ok(k) {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A scalar; `indent` is where a literal block's lines start.
fn scalar_text(v: &Value, indent: usize) -> String {
    match v {
        Value::String(s) => string_text(s, indent),
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
        other => other.to_string(),
    }
}

fn string_text(s: &str, indent: usize) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    if let Some(block) = literal_block(s, indent) {
        return block;
    }
    quote(s)
}

/// `|` (one final newline), `|-` (none) or `|+` (more) with every line indented; `None` when a
/// literal block cannot hold the string exactly (leading space on the first line, control
/// characters, trailing spaces).
fn literal_block(s: &str, indent: usize) -> Option<String> {
    if !s.contains('\n') {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    if body.is_empty()
        || body.starts_with(' ')
        || body.chars().any(|c| c.is_control() && c != '\n')
        || body.lines().any(|l| l.ends_with(' '))
    {
        return None;
    }
    let chomp = match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    };
    let pad = " ".repeat(indent);
    let mut out = chomp.to_string();
    for line in s[..body.len()].split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    Some(out)
}

/// Whether a string can be written without quotes and still read back as that string under
/// YAML 1.1 and 1.2 (no booleans like `on`, no numbers, no sexagesimals, no indicators).
fn plain_ok(s: &str) -> bool {
    const RESERVED: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return false };
    // a leading `-` is a flag (`--max-agents`), never a number, when a letter or `-` follows
    let flag = first == '-' && chars.next().is_some_and(|c| c == '-' || c.is_ascii_alphabetic());
    if !(first.is_ascii_alphabetic() || first == '/' || flag) {
        return false;
    }
    if s.ends_with(':') || RESERVED.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':' | '@' | '='))
        && !s.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_sorts_keys_and_indents() {
        let v = json!({"b": [1, {"d": true, "c": null}], "a": {}, "e": []});
        assert_eq!(json(&v), "{\n  \"a\": {},\n  \"b\": [\n    1,\n    {\n      \"c\": null,\n      \"d\": true\n    }\n  ],\n  \"e\": []\n}\n");
        assert_eq!(json_compact(&v), r#"{"a":{},"b":[1,{"c":null,"d":true}],"e":[]}"#);
    }

    #[test]
    fn yaml_quotes_what_would_change_meaning() {
        for (s, want) in [
            ("smith", "smith"),
            ("ghcr.io/mistersmith/smith:0.1.0", "ghcr.io/mistersmith/smith:0.1.0"),
            ("/healthz", "/healthz"),
            ("on", "\"on\""),
            ("No", "\"No\""),
            ("1", "\"1\""),
            ("500m", "\"500m\""),
            ("12:30", "\"12:30\""),
            ("", "\"\""),
            ("a: b", "\"a: b\""),
            ("http://gw/v1/scaling", "\"http://gw/v1/scaling\""),
            ("0.0.0.0:9465", "\"0.0.0.0:9465\""),
            ("key:", "\"key:\""),
            ("100%", "\"100%\""),
            ("--max-agents", "--max-agents"),
            ("-1", "\"-1\""),
            ("-", "\"-\""),
        ] {
            assert_eq!(yaml(&json!({ "k": s })), format!("k: {want}\n"), "{s:?}");
        }
    }

    #[test]
    fn yaml_nests_maps_sequences_and_blocks() {
        let v = json!({
            "metadata": {"name": "w", "labels": {"app.kubernetes.io/name": "smith"}},
            "args": ["worker", "--max-agents", "4"],
            "containers": [{"name": "smith", "ports": [{"containerPort": 9465}]}],
            "toml": "[store]\npool_size = 10\n",
            "empty": {},
            "num": 0.5,
        });
        let want = "\
args:
  - worker
  - --max-agents
  - \"4\"
containers:
  - name: smith
    ports:
      - containerPort: 9465
empty: {}
metadata:
  labels:
    app.kubernetes.io/name: smith
  name: w
num: 0.5
toml: |
  [store]
  pool_size = 10
";
        assert_eq!(yaml(&v), want);
    }

    #[test]
    fn literal_blocks_keep_trailing_newlines_exactly() {
        assert_eq!(yaml(&json!({"k": "a\nb"})), "k: |-\n  a\n  b\n");
        assert_eq!(yaml(&json!({"k": "a\n\nb\n\n"})), "k: |+\n  a\n\n  b\n\n");
        assert_eq!(yaml(&json!({"k": " a\nb"})), "k: \" a\\nb\"\n");
    }
}
