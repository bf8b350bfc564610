//! Checks the OpenAPI document served at `GET /v1/openapi.json`: every route is described,
//! every reference resolves, every operation is complete, and the component schemas match what
//! the domain types really serialize to — and what a real gateway serves from its handlers.

mod common;

use serde_json::{json, Map, Value};
use smith_core::{
    AgentDef, AgentSummary, BreakerState, Budget, Event, EventKind, ExecutorKind, Micros, Node, NodeRole, NodeStatus,
    Outcome, Pricing, Secret, Task, TaskError, TaskId, TaskStatus, Usage,
};
use smith_gateway::{Gateway, GatewayOptions};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const DOC: &str = include_str!("../src/openapi.json");

/// Every route of the router: (method, path, takes input, needs the bearer token when one is set).
const ROUTES: &[(&str, &str, bool, bool)] = &[
    ("post", "/v1/tasks", true, true),
    ("get", "/v1/tasks", true, true),
    ("get", "/v1/tasks/{id}", true, true),
    ("post", "/v1/tasks/{id}/cancel", true, true),
    ("get", "/v1/tasks/{id}/events", true, true),
    ("get", "/v1/tasks/{id}/patch", true, true),
    ("get", "/v1/tasks/{id}/artifacts", true, true),
    ("get", "/v1/tasks/{id}/artifacts/{name}", true, true),
    ("get", "/v1/tasks/{id}/approvals", true, true),
    ("post", "/v1/tasks/{id}/approvals/{aid}", true, true),
    ("get", "/v1/approvals", true, true),
    ("get", "/v1/events", true, true),
    ("post", "/v1/sessions", true, true),
    ("get", "/v1/sessions/{id}", true, true),
    ("post", "/v1/sessions/{id}/turns", true, true),
    ("get", "/v1/usage", true, true),
    ("post", "/mcp", true, true),
    ("get", "/mcp", false, true),
    ("get", "/v1/agents", false, true),
    ("get", "/v1/nodes", false, true),
    ("get", "/v1/scaling", false, true),
    ("get", "/v1/providers", false, true),
    ("get", "/healthz", false, false),
    ("get", "/readyz", false, false),
    ("get", "/metrics", false, true),
    ("get", "/v1/openapi.json", false, true),
    ("post", "/v1/keys", true, true),
    ("get", "/v1/keys", true, true),
    ("post", "/v1/keys/{id}/revoke", true, true),
    ("get", "/v1/audit", true, true),
    ("post", "/v1/webhooks", true, true),
    ("get", "/v1/webhooks", false, true),
    ("get", "/v1/webhooks/{id}", true, true),
    ("delete", "/v1/webhooks/{id}", true, true),
    ("get", "/v1/webhooks/{id}/deliveries", true, true),
    ("post", "/v1/webhooks/{id}/deliveries/{delivery}/replay", true, true),
    ("post", "/v1/schedules", true, true),
    ("get", "/v1/schedules", false, true),
    ("get", "/v1/schedules/{id}", true, true),
    ("delete", "/v1/schedules/{id}", true, true),
    ("post", "/v1/schedules/{id}/pause", true, true),
    ("post", "/v1/schedules/{id}/resume", true, true),
];

/// Operations that never succeed: `GET /mcp` only says that the server offers no stream (405).
const NO_SUCCESS: &[(&str, &str)] = &[("get", "/mcp")];

/// Success answers without a body: (method, path, status).
const BODILESS: &[(&str, &str, &str)] =
    &[("post", "/mcp", "202"), ("delete", "/v1/webhooks/{id}", "204"), ("delete", "/v1/schedules/{id}", "204")];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is valid JSON")
}

/// Resolves a local reference (`#/a/b`) in the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.pointer(&format!("/components/schemas/{name}")).unwrap_or_else(|| panic!("schema {name} missing"))
}

/// Follows `$ref`s to the schema they name.
fn deref<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        s = resolve(doc, r).unwrap_or_else(|| panic!("unresolved {r}"));
    }
    s
}

fn operations(doc: &Value) -> Vec<(String, String, &Value, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), item, op));
            }
        }
    }
    out
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref") {
                out.push(r.as_str().expect("$ref is a string"));
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[test]
fn is_openapi_3() {
    let doc = doc();
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3."), "openapi = {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let doc = doc();
    let want: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p, _, _)| (m.to_string(), p.to_string())).collect();
    let got: BTreeSet<(String, String)> = operations(&doc).into_iter().map(|(m, p, _, _)| (m, p)).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(missing.is_empty(), "routes missing from the document: {missing:?}");
    assert!(extra.is_empty(), "operations the router does not serve: {extra:?}");
}

#[test]
fn every_ref_resolves_to_a_component() {
    let doc = doc();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(r.starts_with("#/components/"), "{r} is not a local component reference");
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
}

#[test]
fn every_operation_is_complete() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (method, path, item, op) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(ids.insert(id.to_string()), "{at}: operationId {id} is not unique");
        assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{at}: no summary");

        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{at}: no responses"));
        let never_succeeds = NO_SUCCESS.contains(&(method.as_str(), path.as_str()));
        assert_eq!(responses.keys().any(|c| c.starts_with('2')), !never_succeeds, "{at}: success response expected");
        if never_succeeds {
            assert!(responses.contains_key("405"), "{at}: an operation that never succeeds says why (405)");
        }
        let &(_, _, takes_input, secured) =
            ROUTES.iter().find(|(m, p, _, _)| *m == method && *p == path).expect("listed route");
        let non_empty = |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        let has_params = non_empty(item.get("parameters")) || non_empty(op.get("parameters"));
        let has_input = has_params || op.get("requestBody").is_some();
        assert_eq!(has_input, takes_input, "{at}: parameters or body expected = {takes_input}");
        if takes_input {
            assert!(responses.keys().any(|c| c.starts_with('4')), "{at}: takes input but has no 4xx response");
        }

        // auth: global bearer, opted out only by the open routes
        if secured {
            assert!(op.get("security").is_none(), "{at}: must keep the global bearer security");
            assert!(responses.contains_key("401"), "{at}: no 401");
        } else {
            assert_eq!(op.get("security"), Some(&json!([])), "{at}: must be open (security: [])");
            assert!(!responses.contains_key("401"), "{at}: open route documents a 401");
        }

        // every error answer is the Error body
        for (code, resp) in responses {
            let resp = deref(&doc, resp);
            assert!(resp["description"].is_string(), "{at} {code}: no description");
            if code.starts_with('4') || code.starts_with('5') {
                let s = &resp["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(s, "#/components/schemas/Error", "{at} {code}: not the Error body");
            } else if BODILESS.contains(&(method.as_str(), path.as_str(), code.as_str())) {
                assert!(resp.get("content").is_none(), "{at} {code}: has no body, yet documents content");
            } else {
                assert!(resp["content"].as_object().is_some_and(|c| !c.is_empty()), "{at} {code}: no content");
            }
        }
    }
    let doc_security = &doc["security"];
    assert_eq!(doc_security, &json!([{"bearerAuth": []}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
}

#[test]
fn statuses_match_the_handlers() {
    let doc = doc();
    let codes = |method: &str, path: &str| -> BTreeSet<String> {
        doc["paths"][path][method]["responses"].as_object().expect("responses").keys().cloned().collect()
    };
    let set = |c: &[&str]| -> BTreeSet<String> { c.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        codes("post", "/v1/tasks"),
        set(&["200", "201", "400", "401", "403", "413", "415", "422", "429", "500", "503", "507"])
    );
    assert_eq!(codes("get", "/v1/tasks"), set(&["200", "400", "401", "403", "500", "503"]));
    assert_eq!(codes("get", "/v1/tasks/{id}"), set(&["200", "400", "401", "403", "404", "500", "503"]));
    assert_eq!(codes("post", "/v1/tasks/{id}/cancel"), set(&["202", "400", "401", "403", "404", "500", "503"]));
    assert_eq!(codes("get", "/v1/tasks/{id}/events"), set(&["200", "400", "401", "403", "404", "500", "503"]));
    assert_eq!(codes("get", "/v1/events"), set(&["200", "400", "401", "403", "422", "500", "503"]));
    for path in ["/v1/tasks/{id}/artifacts", "/v1/tasks/{id}/artifacts/{name}"] {
        assert_eq!(codes("get", path), set(&["200", "400", "401", "403", "404", "500", "503"]), "{path}");
    }
    assert_eq!(codes("get", "/healthz"), set(&["200"]));
    assert_eq!(codes("get", "/readyz"), set(&["200", "503"]));
    assert_eq!(codes("get", "/metrics"), set(&["200", "401", "403"]));
    assert_eq!(codes("get", "/v1/agents"), set(&["200", "401", "403", "500", "503"]));
    assert_eq!(
        codes("post", "/v1/sessions"),
        set(&["201", "400", "401", "403", "413", "415", "422", "429", "500", "503", "507"])
    );
    assert_eq!(codes("get", "/v1/sessions/{id}"), set(&["200", "400", "401", "403", "404", "500", "503"]));
    assert_eq!(
        codes("post", "/v1/sessions/{id}/turns"),
        set(&["200", "201", "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503", "507"])
    );
    assert_eq!(codes("get", "/v1/usage"), set(&["200", "400", "401", "403", "500", "503"]));
    assert_eq!(codes("post", "/mcp"), set(&["200", "202", "400", "401", "403", "404", "413", "415", "500", "503"]));
    assert_eq!(codes("get", "/mcp"), set(&["401", "403", "405"]));
    assert_eq!(codes("post", "/v1/keys"), set(&["201", "400", "401", "403", "409", "413", "415", "422", "500", "503"]));
    assert_eq!(codes("get", "/v1/audit"), set(&["200", "400", "401", "403", "500", "503"]));

    let ok = |method: &str, path: &str, status: &str| -> Vec<String> {
        let r = deref(&doc, &doc["paths"][path][method]["responses"][status]);
        r["content"].as_object().expect("content").keys().cloned().collect()
    };
    assert_eq!(ok("get", "/v1/tasks/{id}/events", "200"), ["text/event-stream"]);
    assert_eq!(ok("get", "/v1/events", "200"), ["text/event-stream"]);
    assert_eq!(ok("get", "/v1/tasks/{id}/artifacts/{name}", "200"), ["application/octet-stream"]);
    assert_eq!(ok("get", "/metrics", "200"), ["text/plain"]);
    assert_eq!(ok("get", "/v1/openapi.json", "200"), ["application/json"]);
    assert_eq!(ok("post", "/mcp", "200"), ["application/json"]);
    let allow = &doc["paths"]["/mcp"]["get"]["responses"]["405"]["headers"]["Allow"];
    assert_eq!(allow["schema"]["enum"], json!(["POST"]));

    let params = |path: &str| -> BTreeSet<(String, String)> {
        let item = &doc["paths"][path];
        let mut all = Vec::new();
        for p in [&item["parameters"], &item["get"]["parameters"], &item["post"]["parameters"]] {
            all.extend(p.as_array().into_iter().flatten().map(|p| deref(&doc, p)));
        }
        all.iter().map(|p| (p["in"].as_str().unwrap().to_string(), p["name"].as_str().unwrap().to_string())).collect()
    };
    let pset = |c: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        c.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    assert_eq!(
        params("/v1/tasks/{id}/events"),
        pset(&[("path", "id"), ("header", "Last-Event-ID"), ("query", "after")])
    );
    assert_eq!(
        params("/v1/events"),
        pset(&[("query", "agent"), ("query", "kind"), ("query", "after"), ("header", "Last-Event-ID")])
    );
    assert_eq!(
        params("/v1/tasks"),
        pset(&[
            ("query", "status"),
            ("query", "agent"),
            ("query", "session_id"),
            ("query", "parent_id"),
            ("query", "limit"),
            ("query", "cursor"),
            ("query", "full"),
            ("header", "traceparent")
        ])
    );
    assert_eq!(params("/v1/usage"), pset(&[("query", "by")]));
    assert_eq!(params("/mcp"), pset(&[("header", "x-smith-task")]));
    assert_eq!(params("/v1/sessions/{id}"), pset(&[("path", "id")]));
    assert_eq!(params("/v1/sessions/{id}/turns"), pset(&[("path", "id"), ("header", "traceparent")]));
    assert_eq!(params("/v1/sessions"), pset(&[("header", "traceparent")]));
}

#[test]
fn submit_request_is_strict_and_bounded() {
    let doc = doc();
    let s = schema(&doc, "SubmitRequest");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["required"], json!(["agent", "input"]));
    let p = &s["properties"];
    let fields: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = common::SUBMIT_FIELDS.into();
    assert_eq!(fields, want);
    assert_eq!(p["parent_id"]["format"], "uuid");
    assert_eq!(p["budget"]["$ref"], "#/components/schemas/BudgetRequest");
    for (field, min, max) in [("priority", 0, 9), ("max_attempts", 1, 100), ("timeout_ms", 1, 604_800_000)] {
        assert_eq!(p[field]["minimum"], min, "{field}");
        assert_eq!(p[field]["maximum"], max, "{field}");
        assert_eq!(p[field]["nullable"], true, "{field}");
    }
    assert_eq!(
        doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SubmitRequest"
    );
}

#[test]
fn session_requests_are_strict_and_bounded() {
    let doc = doc();
    for (name, path, required, fields) in [
        (
            "SessionStartRequest",
            "/v1/sessions",
            json!(["agent"]),
            &["agent", "input", "metadata", "timeout_ms", "budget", "output_schema", "webhook"][..],
        ),
        (
            "TurnRequest",
            "/v1/sessions/{id}/turns",
            json!(["input"]),
            &["input", "timeout_ms", "budget", "idempotency_key", "metadata", "output_schema", "webhook"][..],
        ),
    ] {
        let s = schema(&doc, name);
        assert_eq!(s["additionalProperties"], false, "{name}");
        assert_eq!(s["required"], required, "{name}");
        let p = &s["properties"];
        let got: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(got, fields.iter().copied().collect(), "{name}");
        assert_eq!(p["timeout_ms"]["minimum"], 1, "{name}");
        assert_eq!(p["timeout_ms"]["maximum"], smith_core::task::MAX_TIMEOUT_MS, "{name}");
        assert_eq!(p["budget"]["$ref"], "#/components/schemas/BudgetRequest", "{name}");
        assert_eq!(p["metadata"]["nullable"], true, "{name}");
        let body = &doc["paths"][path]["post"]["requestBody"];
        assert_eq!(body["required"], true, "{path}");
        assert_eq!(body["content"]["application/json"]["schema"]["$ref"], format!("#/components/schemas/{name}"));
    }

    // A request's budget: every limit optional and nullable, bounded like the served Budget, and
    // the bounds are the ones `Budget::validate` enforces.
    let request = schema(&doc, "BudgetRequest");
    let served = schema(&doc, "Budget");
    assert_eq!(request["properties"], served["properties"]);
    assert!(request.get("required").is_none(), "every limit is optional");
    assert_eq!(request["additionalProperties"], false);
    assert_eq!(request["nullable"], true);
    let p = &served["properties"];
    assert_eq!(p["max_tokens"]["minimum"], 1);
    assert_eq!((&p["max_cost_usd"]["minimum"], &p["max_cost_usd"]["exclusiveMinimum"]), (&json!(0), &json!(true)));
    let ok = |max_tokens, max_cost_usd| Budget { max_tokens, max_cost_usd }.validate("budget").is_ok();
    assert!(ok(Some(1), Some(0.01)) && ok(None, None));
    assert!(!ok(Some(0), None) && !ok(None, Some(0.0)) && !ok(None, Some(-1.0)));
}

/// May this property schema be null?
fn allows_null(doc: &Value, prop: &Value) -> bool {
    let s = deref(doc, prop);
    s["nullable"] == true || (s.get("type").is_none() && s.get("allOf").is_none() && s.get("$ref").is_none())
}

/// The serialized value's fields are exactly the schema's properties, all required, and a null
/// only where the schema allows it.
fn assert_shape(doc: &Value, name: &str, value: &Value) {
    let s = schema(doc, name);
    let obj: &Map<String, Value> = value.as_object().unwrap_or_else(|| panic!("{name}: not an object"));
    let props = s["properties"].as_object().unwrap_or_else(|| panic!("{name}: no properties"));
    let got: BTreeSet<&String> = obj.keys().collect();
    let want: BTreeSet<&String> = props.keys().collect();
    assert_eq!(got, want, "{name}: serialized fields differ from the schema's properties");
    let required: BTreeSet<&str> = s["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, want.iter().map(|s| s.as_str()).collect(), "{name}: every field is always present");
    assert_eq!(s["additionalProperties"], false, "{name}");
    for (k, v) in obj {
        let prop = &props[k];
        if v.is_null() {
            assert!(allows_null(doc, prop), "{name}.{k} is null but the schema does not allow it");
        }
        let ty = deref(doc, prop).get("type").and_then(Value::as_str);
        let fits = match (ty, v) {
            (None, _) | (_, Value::Null) => true,
            (Some("string"), Value::String(_)) => true,
            (Some("integer"), Value::Number(n)) => n.is_u64() || n.is_i64(),
            (Some("number"), Value::Number(_)) => true,
            (Some("boolean"), Value::Bool(_)) => true,
            (Some("array"), Value::Array(_)) => true,
            (Some("object"), Value::Object(_)) => true,
            _ => false,
        };
        assert!(fits, "{name}.{k} = {v} does not fit type {ty:?}");
        if let Some(e) = deref(doc, prop).get("enum") {
            if !v.is_null() {
                assert!(e.as_array().unwrap().contains(v), "{name}.{k} = {v} not in {e}");
            }
        }
    }
}

fn enum_of(doc: &Value, name: &str) -> Vec<String> {
    strings(&schema(doc, name)["enum"])
}

/// The strings of a JSON array (an enum's `null` left out).
fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().filter_map(Value::as_str).map(str::to_string).collect()
}

/// Every executor kind. The match has no wildcard, so a new variant fails to compile here until
/// it is listed (and documented).
fn executor_kinds() -> Vec<ExecutorKind> {
    use ExecutorKind::*;
    let all = vec![Echo, Sleep, Fail, Stream, Process, ClaudeCode, Anthropic, Openai];
    for k in &all {
        match k {
            Echo | Sleep | Fail | Stream | Process | ClaudeCode | Anthropic | Openai => {}
        }
    }
    all
}

/// Every breaker state, guarded like [`executor_kinds`].
fn breaker_states() -> Vec<BreakerState> {
    let all = vec![BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen];
    for s in &all {
        match s {
            BreakerState::Closed | BreakerState::Open | BreakerState::HalfOpen => {}
        }
    }
    all
}

/// A serialized unit enum's name.
fn ser(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).unwrap().as_str().expect("serializes as a string").to_string()
}

#[test]
fn schemas_match_the_domain_types() {
    let doc = doc();
    let t = Micros(1_764_246_000_123_456);
    let mut task = Task {
        id: TaskId::new(),
        agent: "echo".into(),
        input: json!({"x": 1}),
        status: TaskStatus::Queued,
        priority: 0,
        timeout_ms: None,
        max_attempts: 3,
        attempt: 0,
        idempotency_key: None,
        session_id: None,
        parent_id: None,
        budget: Default::default(),
        tenant: "default".into(),
        metadata: json!({}),
        result: None,
        error: None,
        usage: Usage::default(),
        cancel_requested: false,
        created_at: t,
        started_at: None,
        finished_at: None,
        worker: None,
        workspace: None,
        output_schema: None,
        webhook: None,
        run_at: None,
        expires_at: None,
        concurrency_key: None,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    };
    let v = serde_json::to_value(&task).unwrap();
    assert_shape(&doc, "Task", &v);
    assert_shape(&doc, "Budget", &v["budget"]);
    task.status = TaskStatus::Failed;
    task.timeout_ms = Some(1000);
    task.idempotency_key = Some("k".into());
    task.session_id = Some("s".into());
    task.result = Some(json!("r"));
    task.error = Some(TaskError::new("boom", "it broke"));
    task.usage = Usage { input_tokens: 1, output_tokens: 2, cost_usd: 0.5 };
    task.workspace = Some(smith_core::TaskWorkspace { base: "main".into() });
    task.output_schema = Some(json!({"type": "object"}));
    task.concurrency_key = Some("user-1".into());
    task.started_at = Some(t);
    task.finished_at = Some(t);
    task.worker = Some("w1".into());
    task.parent_id = Some(TaskId::new());
    task.budget = Budget { max_tokens: Some(10_000), max_cost_usd: Some(0.25) };
    let v = serde_json::to_value(&task).unwrap();
    assert_shape(&doc, "Task", &v);
    assert_shape(&doc, "Budget", &v["budget"]);
    assert_eq!(v["parent_id"], json!(task.parent_id.unwrap().to_string()));
    assert_shape(&doc, "TaskError", &v["error"]);
    assert_shape(&doc, "Usage", &v["usage"]);
    assert_eq!(schema(&doc, "TaskError")["nullable"], true, "Task.error is null until a failure");
    assert_eq!(v["created_at"], "2025-11-27T12:20:00.123456Z");

    for event in [
        Event {
            task_id: Some(task.id),
            seq: 1,
            kind: EventKind::Queued,
            at: t,
            data: json!({"priority": 0}),
            agent: Some("echo".into()),
            tenant: Some("acme".into()),
            attempt: 0,
            pos: 7,
        },
        Event {
            task_id: None,
            seq: 0,
            kind: EventKind::System,
            at: t,
            data: json!(null),
            agent: None,
            tenant: None,
            attempt: 0,
            pos: 8,
        },
    ] {
        assert_shape(&doc, "Event", &serde_json::to_value(&event).unwrap());
    }

    // SSE `data` is the Event's JSON on one line, its fields in declaration order: the
    // EventFrame pattern depends on both.
    let event = Event {
        task_id: Some(task.id),
        seq: 3,
        kind: EventKind::Output,
        at: t,
        data: json!({"line": "a\nb"}),
        agent: Some("echo".into()),
        tenant: Some("acme \"corp\"".into()),
        attempt: 1,
        pos: 9,
    };
    let line = serde_json::to_string(&event).unwrap();
    assert!(!line.contains('\n'), "{line}");
    // (the document's own key order is not kept by serde_json::Value, hence the list)
    let fields = ["task_id", "seq", "kind", "at", "data", "agent", "tenant", "attempt", "pos"];
    let documented: BTreeSet<&str> =
        schema(&doc, "Event")["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(documented, fields.into_iter().collect());
    let order: Vec<usize> = fields
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing in {line}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "Event fields serialize out of the documented order: {line}");
    assert!(line.starts_with("{\"task_id\":\"") && line.ends_with(",\"pos\":9}"), "{line}");
    let frame = schema(&doc, "EventFrame");
    assert_eq!(frame["required"], json!(["id", "event", "data"]));
    assert_eq!(frame["properties"]["event"]["$ref"], "#/components/schemas/EventKind");
    // the data pattern's kinds are exactly the platform's
    let pattern = frame["properties"]["data"]["pattern"].as_str().unwrap();
    let (_, rest) = pattern.split_once("\"kind\":\"(").expect("a kind group in the data pattern");
    let (group, _) = rest.split_once(')').unwrap();
    let in_pattern: BTreeSet<String> = group.split('|').map(|k| k.replace("\\.", ".")).collect();
    let kinds: BTreeSet<String> = EventKind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    assert_eq!(in_pattern, kinds, "EventFrame's data pattern names every event kind");
    let stream =
        |path: &str| doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"].clone();
    assert_eq!(stream("/v1/tasks/{id}/events")["$ref"], "#/components/schemas/EventFrame");
    // the feed also sends a retention notice (docs/retention.md)
    assert_eq!(
        stream("/v1/events")["oneOf"],
        json!([{"$ref": "#/components/schemas/EventFrame"}, {"$ref": "#/components/schemas/RetentionFrame"}])
    );
    let retention = schema(&doc, "RetentionFrame");
    assert_eq!(retention["properties"]["event"]["enum"], json!(["retention"]));

    let mut def = AgentDef::new("proc", ExecutorKind::Process);
    def.timeout = Some(std::time::Duration::from_secs(90));
    def.command = Some("cat".into());
    def.cwd = Some("/tmp".into());
    def.env.insert("K".into(), "V".into());
    def.concurrency_key = Some("metadata.user".into());
    def.max_per_key = Some(2);
    let mut coder = AgentDef::new("coder", ExecutorKind::Process);
    coder.command = Some("sh".into());
    coder.workspace = Some(
        serde_json::from_value(json!({"repo": "/srv/repos/shop.git", "setup": ["npm ci"], "author": "A <a@b>"}))
            .unwrap(),
    );
    let mut defs: Vec<AgentDef> = executor_kinds().into_iter().map(|k| AgentDef::new(k.as_str(), k)).collect();
    defs.extend([def, coder, llm_agent()]);
    for (def, breaker) in defs.into_iter().zip(breaker_states().into_iter().cycle()) {
        let v = serde_json::to_value(&def).unwrap();
        assert_shape(&doc, "AgentDef", &v);
        assert_shape(&doc, "Budget", &v["budget"]);
        if !v["pricing"].is_null() {
            assert_shape(&doc, "Pricing", &v["pricing"]);
        }
        let usage = Usage { input_tokens: 10, output_tokens: 20, cost_usd: 0.01 };
        let summary = AgentSummary { def, queued: 2, running: 1, usage, breaker };
        let v = serde_json::to_value(&summary).unwrap();
        assert_shape(&doc, "AgentSummary", &v);
        assert_shape(&doc, "Usage", &v["usage"]);
    }
    llm_agent().validate().expect("a valid claude-code definition");
    // a secret is never served, and the document says what is served instead
    let v = serde_json::to_value(llm_agent()).unwrap();
    assert_eq!(v["api_key"], "<redacted>");
    assert!(!v.to_string().contains("sk-test"), "{v}");
    assert_eq!(schema(&doc, "AgentDef")["properties"]["api_key"]["enum"], json!(["<redacted>", null]));
    assert_eq!(schema(&doc, "Pricing")["nullable"], true, "AgentDef.pricing is null unless configured");
    for name in ["AgentDef", "AgentSummary"] {
        let modes = strings(&schema(&doc, name)["properties"]["permission_mode"]["enum"]);
        assert_eq!(modes, smith_core::agent::PERMISSION_MODES, "{name}.permission_mode");
    }
    // AgentSummary is AgentDef flattened, plus its own fields
    let def_props = schema(&doc, "AgentDef")["properties"].as_object().unwrap();
    let summary_props = schema(&doc, "AgentSummary")["properties"].as_object().unwrap();
    for (k, p) in def_props {
        assert_eq!(&summary_props[k], p, "AgentSummary.{k} differs from AgentDef.{k}");
    }

    for address in [None, Some("127.0.0.1:8080".to_string())] {
        let node = Node {
            id: "gw-1".into(),
            role: NodeRole::Gateway,
            version: "0.1.0".into(),
            address,
            status: NodeStatus::Alive,
            started_at: t,
            heartbeat_at: t,
            load: json!({"sse_connections": 0}),
        };
        assert_shape(&doc, "Node", &serde_json::to_value(&node).unwrap());
    }
    let artifact = smith_core::Artifact {
        name: "out/report.txt".into(),
        size: 12,
        sha256: "0".repeat(64),
        created_at: Micros::now(),
    };
    assert_shape(&doc, "Artifact", &serde_json::to_value(&artifact).unwrap());
    assert_shape(&doc, "ArtifactList", &json!({"artifacts": [artifact]}));

    let statuses: Vec<String> = TaskStatus::ALL.iter().map(|s| s.as_str().to_string()).collect();
    assert_eq!(enum_of(&doc, "TaskStatus"), statuses);
    let kinds: Vec<String> = EventKind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    assert_eq!(enum_of(&doc, "EventKind"), kinds);
    let roles: Vec<String> = [NodeRole::Supervisor, NodeRole::Worker, NodeRole::Gateway].into_iter().map(ser).collect();
    assert_eq!(enum_of(&doc, "NodeRole"), roles);
    let node_statuses: Vec<String> =
        [NodeStatus::Alive, NodeStatus::Draining, NodeStatus::Stopped, NodeStatus::Dead, NodeStatus::Quarantined]
            .into_iter()
            .map(ser)
            .collect();
    assert_eq!(enum_of(&doc, "NodeStatus"), node_statuses);
    let kinds: Vec<String> = executor_kinds().into_iter().map(ser).collect();
    let names: Vec<&str> = executor_kinds().into_iter().map(ExecutorKind::as_str).collect();
    assert_eq!(kinds, names, "ExecutorKind::as_str is its serialized name");
    assert_eq!(enum_of(&doc, "ExecutorKind"), kinds);
    let states: Vec<String> = breaker_states().into_iter().map(ser).collect();
    let names: Vec<&str> = breaker_states().into_iter().map(BreakerState::as_str).collect();
    assert_eq!(states, names, "BreakerState::as_str is its serialized name");
    assert_eq!(enum_of(&doc, "BreakerState"), states);
    for code in [
        smith_core::Code::InvalidArgument,
        smith_core::Code::Unprocessable,
        smith_core::Code::Unauthenticated,
        smith_core::Code::NotFound,
        smith_core::Code::Conflict,
        smith_core::Code::TooLarge,
        smith_core::Code::UnsupportedMediaType,
        smith_core::Code::Unavailable,
        smith_core::Code::Internal,
    ] {
        assert!(enum_of(&doc, "ErrorCode").contains(&code.as_str().to_string()), "{code}");
    }
}

#[test]
fn list_bodies_wrap_items() {
    let doc = doc();
    for (path, list, item) in [("/v1/agents", "AgentList", "AgentSummary"), ("/v1/nodes", "NodeList", "Node")] {
        let r = &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(r, &format!("#/components/schemas/{list}"), "{path}");
        let s = schema(&doc, list);
        assert_eq!(s["required"], json!(["items"]));
        assert_eq!(s["properties"]["items"]["items"]["$ref"], format!("#/components/schemas/{item}"));
    }
    let page = schema(&doc, "TaskPage");
    assert_eq!(page["required"], json!(["items", "next_cursor"]));
    assert_eq!(page["properties"]["next_cursor"]["nullable"], true);
    let totals = schema(&doc, "UsageTotals");
    assert_eq!(totals["required"], json!(["by", "items"]));
    assert_eq!(totals["properties"]["items"]["items"]["$ref"], "#/components/schemas/UsageTotal");
    for name in ["Session", "NewSession"] {
        assert_eq!(schema(&doc, name)["properties"]["turns"]["items"]["$ref"], "#/components/schemas/Task", "{name}");
    }
}

/// A Claude Code agent with every LLM setting used.
fn llm_agent() -> AgentDef {
    let mut def = AgentDef::new("coder", ExecutorKind::ClaudeCode);
    def.model = Some("claude-sonnet-4-5".into());
    def.system_prompt = Some("Be brief.".into());
    def.allowed_tools = vec!["Read".into(), "Bash(git:*)".into()];
    def.disallowed_tools = vec!["WebFetch".into()];
    def.permission_mode = Some("acceptEdits".into());
    def.max_turns = Some(20);
    def.mcp_config = Some(r#"{"mcpServers":{}}"#.into());
    def.base_url = Some("https://llm.example.com".into());
    def.api_key = Some(Secret("sk-test-not-a-key".into()));
    def.api_key_env = Some("CODER_KEY".into());
    def.budget = Budget { max_tokens: Some(100_000), max_cost_usd: Some(2.5) };
    def.pricing = Some(Pricing { input_per_mtok: 3.0, output_per_mtok: 15.0 });
    def
}

/// One HTTP exchange with the test gateway.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

/// A real gateway over a fresh SQLite store and an in-process bus, on 127.0.0.1:0.
struct TestGateway {
    addr: SocketAddr,
    store: std::sync::Arc<dyn smith_store::Store>,
    stop: CancellationToken,
    dir: std::path::PathBuf,
    doc: Value,
}

impl TestGateway {
    async fn start(agents: &[AgentDef]) -> Self {
        let dir = std::env::temp_dir().join(format!("smith-openapi-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = smith_store::OpenOptions { fsync: false, ..Default::default() };
        let store = smith_store::open(&format!("sqlite://{}", dir.join("smith.db").display()), &opts).await.unwrap();
        store.put_agents(agents).await.unwrap();
        let bus = smith_bus::open("memory://").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let gateway = Gateway::new(GatewayOptions::new("gw-openapi"), store.clone(), bus);
        tokio::spawn(gateway.serve(listener, stop.clone()));
        TestGateway { addr, store, stop, dir, doc: doc() }
    }

    /// Sends a request for the documented operation `method template` and checks that the
    /// status is one the document lists for it and that an error has the Error body.
    async fn call(
        &self,
        method: &str,
        template: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head =
            format!("{} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", method.to_uppercase(), self.addr);
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();

        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of the response head");
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let reply = Reply { status, headers, body: raw[end + 4..].to_vec() };
        assert_ne!(reply.header("transfer-encoding"), Some("chunked"), "this client reads only sized bodies");

        let at = format!("{} {target}", method.to_uppercase());
        let documented = &self.doc["paths"][template][method]["responses"][reply.status.to_string()];
        assert!(documented.is_object(), "{at} answered {}, which the document does not list", reply.status);
        if reply.status >= 400 {
            let v = reply.json();
            assert_shape(&self.doc, "Error", &v);
            assert!(enum_of(&self.doc, "ErrorCode").contains(&v["error"]["code"].as_str().unwrap().to_string()), "{v}");
        }
        reply
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A request body with every property the document lists for `name`: the server must take them all.
fn full_request(doc: &Value, name: &str, sample: impl Fn(&str) -> Value) -> Value {
    let props = schema(doc, name)["properties"].as_object().unwrap();
    Value::Object(props.keys().map(|k| (k.clone(), sample(k))).collect())
}

/// The bodies the handlers build themselves (sessions, usage, MCP) and those read back from the
/// store, checked against the document on a real gateway.
#[tokio::test]
async fn served_bodies_match_the_schemas() {
    let gw = TestGateway::start(&[llm_agent()]).await;
    let doc = &gw.doc;
    let sample = |field: &str| -> Value {
        match field {
            "agent" => json!("echo"),
            "input" => json!({"text": "hi"}),
            "metadata" => json!({"team": "a"}),
            "timeout_ms" => json!(60_000),
            "budget" => json!({"max_tokens": 1000, "max_cost_usd": 1.5}),
            "idempotency_key" => json!(uuid::Uuid::now_v7().to_string()),
            // `echo` has no workspace: null is the value it takes
            "workspace" => Value::Null,
            "output_schema" => json!({"type": "object", "required": ["text"]}),
            // `echo` has no max_per_key: null is the value it takes
            "concurrency_key" => Value::Null,
            // `run_at` and `delay` exclude each other: a zero delay starts the task at once
            "run_at" => Value::Null,
            "delay" => json!(0),
            "ttl" => json!("1h"),
            // a public address (nothing to resolve) and a given secret (not shown back)
            "webhook" => {
                json!({"url": "https://[100::1]/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
            }
            other => panic!("no sample value for the documented field {other:?}: add one"),
        }
    };

    // sessions: start with every documented field, add a turn, read it back
    let start = full_request(doc, "SessionStartRequest", sample);
    let r = gw.call("post", "/v1/sessions", "/v1/sessions", &[], Some(&start)).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let session = r.json();
    assert_shape(doc, "NewSession", &session);
    let id = session["id"].as_str().unwrap().to_string();
    assert_eq!(r.header("location"), Some(format!("/v1/sessions/{id}").as_str()));
    assert_eq!(session["turns"].as_array().unwrap().len(), 1);
    assert_shape(doc, "Task", &session["turns"][0]);
    let first: TaskId = session["turns"][0]["id"].as_str().unwrap().parse().unwrap();

    let turn = full_request(doc, "TurnRequest", sample);
    let turns = format!("/v1/sessions/{id}/turns");
    let r = gw.call("post", "/v1/sessions/{id}/turns", &turns, &[], Some(&turn)).await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_shape(doc, "Task", &r.json());
    assert_eq!(r.json()["session_id"], id.as_str());
    let again = gw.call("post", "/v1/sessions/{id}/turns", &turns, &[], Some(&turn)).await;
    assert_eq!((again.status, again.json()["id"].clone()), (200, r.json()["id"].clone()), "a repeated key");
    let mut unknown_field = turn.clone();
    unknown_field["priority"] = json!(1);
    assert_eq!(gw.call("post", "/v1/sessions/{id}/turns", &turns, &[], Some(&unknown_field)).await.status, 422);
    let nowhere = gw.call("post", "/v1/sessions/{id}/turns", "/v1/sessions/nope/turns", &[], Some(&turn)).await;
    assert_eq!(nowhere.status, 404);

    // the first turn runs and spends something, so usage totals have items to check
    let claim = smith_store::ClaimRequest {
        worker: "w-openapi".into(),
        lease: std::time::Duration::from_secs(60),
        wants: vec![("echo".into(), 10)],
        limit: None,
        caps: Default::default(),
        keys: Default::default(),
    };
    let claimed = gw.store.claim(&claim).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.task.id).collect::<Vec<_>>(), [first]);
    let usage = Usage { input_tokens: 7, output_tokens: 11, cost_usd: 0.003 };
    let outcome = Outcome::Succeeded { result: json!("done"), usage };
    gw.store.complete(first, claimed[0].task.attempt, Vec::new(), outcome).await.unwrap();

    let r = gw.call("get", "/v1/sessions/{id}", &format!("/v1/sessions/{id}"), &[], None).await;
    assert_eq!(r.status, 200);
    let shown = r.json();
    assert_shape(doc, "Session", &shown);
    assert_shape(doc, "Usage", &shown["usage"]);
    assert_eq!(shown["usage"], serde_json::to_value(usage).unwrap());
    let shown_turns = shown["turns"].as_array().unwrap();
    assert_eq!(shown_turns.len(), 2);
    assert_eq!(shown_turns[0]["id"], first.to_string(), "turns are oldest first");
    shown_turns.iter().for_each(|t| assert_shape(doc, "Task", t));
    assert_eq!(gw.call("get", "/v1/sessions/{id}", "/v1/sessions/nope", &[], None).await.status, 404);

    // a sub-task with every documented submission field, found by both new list filters
    let submit = full_request(doc, "SubmitRequest", |field| match field {
        "priority" => json!(3),
        "max_attempts" => json!(2),
        "session_id" => json!("side-session"),
        "parent_id" => json!(first.to_string()),
        other => sample(other),
    });
    let r = gw.call("post", "/v1/tasks", "/v1/tasks", &[], Some(&submit)).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let child = r.json();
    assert_shape(doc, "Task", &child);
    assert_shape(doc, "Budget", &child["budget"]);
    assert_eq!(child["parent_id"], first.to_string());
    let mut orphan = submit.clone();
    orphan["parent_id"] = json!(TaskId::new().to_string());
    orphan["idempotency_key"] = json!(null);
    assert_eq!(gw.call("post", "/v1/tasks", "/v1/tasks", &[], Some(&orphan)).await.status, 422);
    let list = format!("/v1/tasks?session_id=side-session&parent_id={first}");
    let r = gw.call("get", "/v1/tasks", &list, &[], None).await;
    assert_eq!(r.status, 200);
    let page = r.json();
    assert_shape(doc, "TaskPage", &page);
    assert_eq!(page["items"].as_array().map(|a| a.len()), Some(1), "{page}");
    assert_shape(doc, "TaskListItem", &page["items"][0]);
    assert_eq!(page["items"][0]["id"], child["id"]);

    // usage totals
    for (target, by) in [("/v1/usage", "agent"), ("/v1/usage?by=agent", "agent"), ("/v1/usage?by=tenant", "tenant")] {
        let r = gw.call("get", "/v1/usage", target, &[], None).await;
        assert_eq!(r.status, 200);
        let totals = r.json();
        assert_shape(doc, "UsageTotals", &totals);
        assert_eq!(totals["by"], by);
        let items = totals["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{totals}");
        items.iter().for_each(|i| assert_shape(doc, "UsageTotal", i));
        assert_eq!(items[0]["key"], if by == "agent" { "echo" } else { "default" });
    }
    assert_eq!(gw.call("get", "/v1/usage", "/v1/usage?by=node", &[], None).await.status, 400);

    // agents as the store keeps and serves them
    let r = gw.call("get", "/v1/agents", "/v1/agents", &[], None).await;
    assert_eq!(r.status, 200);
    let agents = r.json();
    assert_shape(doc, "AgentList", &agents);
    for a in agents["items"].as_array().unwrap() {
        assert_shape(doc, "AgentSummary", a);
        assert_shape(doc, "Usage", &a["usage"]);
        assert_shape(doc, "Budget", &a["budget"]);
    }
    let coder = agents["items"].as_array().unwrap().iter().find(|a| a["name"] == "coder").expect("coder served");
    assert_eq!(
        (&coder["executor"], &coder["api_key"], &coder["breaker"]),
        (&json!("claude-code"), &json!("<redacted>"), &json!("closed"))
    );
    assert_shape(doc, "Pricing", &coder["pricing"]);

    // MCP: the tools the server lists are the ones the document names
    let rpc = |id: u64, method: &str| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}});
    let r = gw.call("post", "/mcp", "/mcp", &[], Some(&rpc(1, "initialize"))).await;
    assert_eq!(r.status, 200);
    let answer = r.json();
    for k in strings(&schema(doc, "JsonRpcResponse")["required"]) {
        assert!(answer.get(&k).is_some(), "JSON-RPC answer lacks {k}: {answer}");
    }
    let r = gw.call("post", "/mcp", "/mcp", &[], Some(&json!([rpc(2, "tools/list"), rpc(3, "ping")]))).await;
    assert_eq!(r.status, 200);
    let batch = r.json();
    assert_eq!(batch.as_array().map(|a| a.len()), Some(2), "{batch}");
    let served: BTreeSet<String> = batch[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let description = doc["paths"]["/mcp"]["post"]["description"].as_str().unwrap();
    let named: BTreeSet<String> = description
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.contains('_') && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .map(str::to_string)
        .collect();
    assert_eq!(named, served, "the tools the /mcp description names");
    assert_eq!(served.len(), 9);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = gw.call("post", "/mcp", "/mcp", &[], Some(&note)).await;
    assert_eq!((r.status, r.body.len()), (202, 0));
    let caller = first.to_string();
    let r = gw.call("post", "/mcp", "/mcp", &[("x-smith-task", &caller)], Some(&rpc(4, "ping"))).await;
    assert_eq!(r.status, 200);
    let r = gw.call("post", "/mcp", "/mcp", &[("x-smith-task", "not-a-task")], Some(&rpc(5, "ping"))).await;
    assert_eq!(r.status, 400);
    let unknown = TaskId::new().to_string();
    let r = gw.call("post", "/mcp", "/mcp", &[("x-smith-task", &unknown)], Some(&rpc(6, "ping"))).await;
    assert_eq!(r.status, 404);
    let r = gw.call("get", "/mcp", "/mcp", &[], None).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}
