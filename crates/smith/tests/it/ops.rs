//! Operations files in `deploy/`: the Prometheus alert rules pass `promtool` and their unit
//! tests, and every metric the alert rules and the Grafana dashboards use is one a real
//! `smith up` emits, with no id among its label values.

use crate::common;
use crate::common::anthropic_mock;

use anthropic_mock::Mock;
use common::{Opts, Smith};
use serde_json::{json, Value};
// the seed's twelve alerts, group `smith` of `alerts.yml`
use smith_plan::emit::SEED_ALERTS;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECS_10: Duration = Duration::from_secs(10);
const DASHBOARDS: [&str; 3] = ["overview.json", "performance.json", "store-bus.json"];

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// promtool: `SMITH_TEST_PROMTOOL`, else `promtool` on `PATH`.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SMITH_TEST_PROMTOOL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("promtool")).find(|p| p.is_file())
}

/// Runs promtool with a timeout; panics with its output unless it succeeds.
async fn run_promtool(promtool: &Path, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(promtool);
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("promtool {args:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed ({}):\n{text}", out.status);
    text
}

/// One alerting rule of a rule file.
#[derive(Debug)]
struct Rule {
    group: String,
    alert: String,
    expr: String,
}

/// Leading spaces of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The alerting rules of a Prometheus rule file: enough YAML for `- name:`, `- alert:` and an
/// `expr:` that is inline, a block scalar (`|`, `>`) or a plain scalar continued on more
/// indented lines.
fn alert_rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules: Vec<Rule> = Vec::new();
    let mut group = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim();
        i += 1;
        if let Some(name) = t.strip_prefix("- name:") {
            group = unquote(name.trim());
        } else if let Some(alert) = t.strip_prefix("- alert:") {
            rules.push(Rule { group: group.clone(), alert: unquote(alert.trim()), expr: String::new() });
        } else if let Some(first) = t.strip_prefix("expr:") {
            let key = indent(line);
            let mut expr = vec![first.trim().to_string()];
            if matches!(expr[0].as_str(), "|" | "|-" | "|+" | ">" | ">-" | ">+") {
                expr.clear();
            }
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > key) {
                expr.push(lines[i].trim().to_string());
                i += 1;
            }
            let rule = rules.last_mut().unwrap_or_else(|| panic!("expr outside an alert rule: {line}"));
            rule.expr = unquote(expr.join(" ").trim());
        }
    }
    rules
}

fn unquote(s: &str) -> String {
    let quoted = s.len() >= 2 && (s.starts_with('"') && s.ends_with('"') || s.starts_with('\'') && s.ends_with('\''));
    if quoted {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// The metric names a PromQL expression uses: words `smith_…` and `process_…`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["smith_", "process_"].iter().any(|p| w.len() > p.len() && w.starts_with(p))
                && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_pass_promtool() {
    let rules_path = deploy("prometheus/alerts.yml");
    let rules = alert_rules(&read(&rules_path));
    let seed: Vec<&str> = rules.iter().filter(|r| r.group == "smith").map(|r| r.alert.as_str()).collect();
    assert_eq!(seed.len(), 12, "group `smith` must hold exactly the seed's twelve rules: {seed:?}");
    let want: BTreeSet<&str> = SEED_ALERTS.into_iter().collect();
    assert_eq!(seed.iter().copied().collect::<BTreeSet<_>>(), want, "group `smith`");
    for r in &rules {
        assert!(!metric_names(&r.expr).is_empty(), "rule {} uses no smith metric: {:?}", r.alert, r.expr);
    }

    let Some(promtool) = promtool() else {
        // CI sets the service URLs and installs promtool: there a missing one is a failure
        if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() {
            panic!("promtool not installed: set SMITH_TEST_PROMTOOL or put promtool on PATH (Debian: `prometheus`)");
        }
        println!("skipped: promtool not installed");
        return;
    };
    let tests_path = deploy("prometheus/alerts_test.yml");
    let check = run_promtool(&promtool, &["check", "rules", rules_path.to_str().unwrap()]).await;
    assert!(check.contains(&format!("SUCCESS: {} rules found", rules.len())), "{check}");
    let tested = run_promtool(&promtool, &["test", "rules", tests_path.to_str().unwrap()]).await;
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every PromQL query of a dashboard (panel targets and template variables), with where it is.
fn dashboard_queries(file: &str, doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = doc["panels"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().into_iter().flatten());
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{file}: a target of {} has no expr", p["title"]));
            out.push((format!("{file} panel {}", p["title"]), expr.to_string()));
        }
    }
    for v in doc["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        for q in [&v["definition"], &v["query"], &v["query"]["query"]] {
            if let Some(q) = q.as_str() {
                out.push((format!("{file} variable {}", v["name"]), q.to_string()));
            }
        }
    }
    out
}

/// Panels that show data (rows hold others), nested ones included.
fn data_panels(doc: &Value) -> usize {
    let mut n = 0;
    let mut panels: Vec<&Value> = doc["panels"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().into_iter().flatten());
        if p["type"] != "row" {
            n += 1;
        }
    }
    n
}

/// A Prometheus text exposition: declared types and every sample's name and labels.
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<(String, Vec<(String, String)>)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut f = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (f.next(), f.next()) {
                    types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..end].to_string();
            let labels = if line[end..].starts_with('{') {
                parse_labels(&line[end + 1..]).unwrap_or_else(|| panic!("bad sample line: {line}"))
            } else {
                Vec::new()
            };
            samples.push((name, labels));
        }
        Scrape { types, samples }
    }

    /// Whether PromQL can find `name`: a sample or a declared metric of that name, or the
    /// `_bucket`, `_sum` or `_count` series of a declared histogram. A histogram's bare name
    /// has no series.
    fn has(&self, name: &str) -> bool {
        if self.types.get(name).is_some_and(|t| t == "histogram") {
            return false;
        }
        if self.types.contains_key(name) || self.samples.iter().any(|(n, _)| n == name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| self.types.get(base).is_some_and(|t| t == "histogram"))
        })
    }
}

/// `k="v",k2="v2"} value` → the labels, unescaped.
fn parse_labels(mut s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if s.starts_with('}') {
            return Some(out);
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key, value));
        s = &s[close + 1..];
    }
}

/// Whether `s` holds a UUID (8-4-4-4-12 hex digits) anywhere.
fn has_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(35)).any(|start| {
        b[start..start + 36].iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    })
}

/// Metric names used by the alert rules and the dashboards, each with where it is used.
fn used_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let rules = alert_rules(&read(&deploy("prometheus/alerts.yml")));
    assert!(rules.len() >= 12, "alerts.yml: {rules:?}");
    for r in &rules {
        for name in metric_names(&r.expr) {
            used.entry(name).or_default().insert(format!("alerts.yml {}", r.alert));
        }
    }
    for file in DASHBOARDS {
        let text = read(&deploy(&format!("grafana/{file}")));
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        let panels = data_panels(&doc);
        assert!(panels >= 6, "{file}: {panels} panels, want at least 6");
        let vars: Vec<&Value> = doc["templating"]["list"].as_array().into_iter().flatten().collect();
        assert!(
            vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
            "{file}: no Prometheus `datasource` variable"
        );
        let queries = dashboard_queries(file, &doc);
        assert!(queries.len() >= panels, "{file}: {} queries for {panels} panels", queries.len());
        for (place, q) in queries {
            let names = metric_names(&q);
            assert!(!names.is_empty() || q.contains("time()"), "{place}: no metric in {q:?}");
            for name in names {
                used.entry(name).or_default().insert(place.clone());
            }
        }
    }
    used
}

fn config(mock: &Mock) -> String {
    format!(
        r#"
[worker]
poll = "50ms"

[agents.fail]
retry_backoff = "50ms"

[agents.proc]
executor = "process"
command = "sh"
args = ["-c", "echo started; exec sleep 60"]
input = "none"
kill_grace = "1s"

[agents.writer]
executor = "anthropic"
model = "claude-sonnet-4-5"
base_url = "{}"
api_key = "sk-test-secret"
stall_timeout = "20s"
"#,
        mock.url
    )
}

/// Names used by the deploy files that the scrape lacks, each with where it is used.
fn missing(used: &BTreeMap<String, BTreeSet<String>>, scrape: &Scrape) -> Vec<String> {
    used.iter()
        .filter(|(name, _)| !scrape.has(name))
        .map(|(name, places)| {
            let kind = scrape.types.get(name.as_str()).map(|t| format!(" (declared {t})")).unwrap_or_default();
            format!("{name}{kind}, used by {}", places.iter().cloned().collect::<Vec<_>>().join("; "))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_use_only_emitted_metrics() {
    let used = used_metrics();

    let mock = Mock::start().await;
    let s = Smith::start(Opts::new().config(&config(&mock))).await;
    // labelled series come from work: every built-in outcome, a process agent running now,
    // an LLM agent that spends tokens and shares a discovery through MCP, a live stream
    let mut done = Vec::new();
    for body in [
        json!({"agent": "echo", "input": "one"}),
        json!({"agent": "echo", "input": "two"}),
        json!({"agent": "sleep", "input": 200}),
        json!({"agent": "sleep", "input": 300}),
        json!({"agent": "sleep", "input": 5000, "timeout_ms": 200, "max_attempts": 1}),
        json!({"agent": "fail", "input": "boom", "max_attempts": 2}),
        json!({"agent": "fail", "input": "bang", "max_attempts": 1}),
        json!({"agent": "writer", "input": "SHARE metrics stay bounded"}),
    ] {
        done.push(s.submit_id(body).await);
    }
    let running = s.submit_id(json!({"agent": "proc", "input": ""})).await;
    for id in &done {
        s.wait_terminal(id, Duration::from_secs(60)).await;
    }
    s.wait_status(&running, "running", SECS_10).await;
    let frames = s.events(&done[0], SECS_10).await;
    assert!(!frames.is_empty(), "no events for {}", done[0]);
    let _feed = s.sse("/v1/events", None).await;

    // the supervisor's gauges refresh every few seconds
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (text, scrape) = loop {
        let (status, body) = s.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        let text = body.as_str().unwrap_or_else(|| panic!("/metrics is not text: {body}")).to_string();
        let scrape = Scrape::parse(&text);
        if missing(&used, &scrape).is_empty() || Instant::now() > deadline {
            break (text, scrape);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (status, body) = s.cancel(&running).await;
    assert_eq!(status, 202, "cancel {running}: {body}");
    s.wait_terminal(&running, SECS_10).await;

    let missing = missing(&used, &scrape);
    let with_ids: Vec<String> = scrape
        .samples
        .iter()
        .filter(|(_, labels)| labels.iter().any(|(_, v)| has_uuid(v)))
        .map(|(name, labels)| format!("{name}{labels:?}"))
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of the {} metrics the alert rules and dashboards use are not emitted by `smith up`:\n  {}",
            missing.len(),
            used.len(),
            missing.join("\n  ")
        ));
    }
    if !with_ids.is_empty() {
        problems
            .push(format!("series with an id as a label value (unbounded cardinality):\n  {}", with_ids.join("\n  ")));
    }
    assert!(problems.is_empty(), "{}\n--- /metrics ---\n{text}", problems.join("\n"));
}

#[test]
fn the_parsers_read_what_they_are_given() {
    let rules = alert_rules(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: smith_a > 1\n        for: 1m\n      \
         - alert: B\n        expr: |\n          sum(rate(smith_b_bucket[5m]))\n          and process_c\n        \
         labels: {}\n      - alert: C\n        expr: \"smith_c\"\n",
    );
    let got: Vec<(&str, &str, &str)> =
        rules.iter().map(|r| (r.group.as_str(), r.alert.as_str(), r.expr.as_str())).collect();
    assert_eq!(
        got,
        [("g", "A", "smith_a > 1"), ("g", "B", "sum(rate(smith_b_bucket[5m])) and process_c"), ("g", "C", "smith_c")]
    );
    let names = metric_names(r#"rate(smith_x_total{route="/v1/tasks"}[$__rate_interval]) / smith_Y + process_z"#);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["process_z", "smith_x_total"]);

    let scrape = Scrape::parse(
        "# TYPE smith_h histogram\nsmith_h_bucket{le=\"0.5\"} 1\nsmith_h_sum 0.2\nsmith_h_count 1\n\
         # TYPE smith_g gauge\nsmith_g{a=\"x\\\"y\",b=\"0193f1d2-7a1b-7c3d-8e4f-0123456789ab\"} 3\nsmith_c 4\n",
    );
    for present in ["smith_h_bucket", "smith_h_sum", "smith_h_count", "smith_g", "smith_c"] {
        assert!(scrape.has(present), "{present}");
    }
    for absent in ["smith_h", "smith_g_bucket", "smith_c_total"] {
        assert!(!scrape.has(absent), "{absent}");
    }
    let labels = &scrape.samples.iter().find(|(n, _)| n == "smith_g").unwrap().1;
    assert_eq!(labels[0], ("a".to_string(), "x\"y".to_string()));
    assert!(has_uuid(&labels[1].1) && !has_uuid(&labels[0].1) && !has_uuid("/v1/tasks/{id}"));
}
