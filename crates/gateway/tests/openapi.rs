//! Checks the OpenAPI document served at `GET /v1/openapi.json`: every route is described,
//! every reference resolves, every operation is complete, and the component schemas match what
//! the domain types really serialize to.

use serde_json::{json, Map, Value};
use smith_core::{
    AgentDef, AgentSummary, Event, EventKind, ExecutorKind, Micros, Node, NodeRole, NodeStatus, Task, TaskError,
    TaskId, TaskStatus, Usage,
};
use std::collections::BTreeSet;

const DOC: &str = include_str!("../src/openapi.json");

/// Every route of the router: (method, path, takes input, needs the bearer token when one is set).
const ROUTES: &[(&str, &str, bool, bool)] = &[
    ("post", "/v1/tasks", true, true),
    ("get", "/v1/tasks", true, true),
    ("get", "/v1/tasks/{id}", true, true),
    ("post", "/v1/tasks/{id}/cancel", true, true),
    ("get", "/v1/tasks/{id}/events", true, true),
    ("get", "/v1/events", true, true),
    ("get", "/v1/agents", false, true),
    ("get", "/v1/nodes", false, true),
    ("get", "/healthz", false, false),
    ("get", "/readyz", false, false),
    ("get", "/metrics", false, true),
    ("get", "/v1/openapi.json", false, true),
];

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
        assert!(responses.keys().any(|c| c.starts_with('2')), "{at}: no success response");
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
    assert_eq!(codes("post", "/v1/tasks"), set(&["200", "201", "400", "401", "413", "422", "500", "503"]));
    assert_eq!(codes("get", "/v1/tasks"), set(&["200", "400", "401", "500", "503"]));
    assert_eq!(codes("get", "/v1/tasks/{id}"), set(&["200", "400", "401", "404", "500", "503"]));
    assert_eq!(codes("post", "/v1/tasks/{id}/cancel"), set(&["202", "400", "401", "404", "500", "503"]));
    assert_eq!(codes("get", "/v1/tasks/{id}/events"), set(&["200", "400", "401", "404", "500", "503"]));
    assert_eq!(codes("get", "/v1/events"), set(&["200", "400", "401", "422", "500", "503"]));
    assert_eq!(codes("get", "/healthz"), set(&["200"]));
    assert_eq!(codes("get", "/readyz"), set(&["200", "503"]));
    assert_eq!(codes("get", "/metrics"), set(&["200", "401"]));

    let ok = |method: &str, path: &str, status: &str| -> Vec<String> {
        let r = deref(&doc, &doc["paths"][path][method]["responses"][status]);
        r["content"].as_object().expect("content").keys().cloned().collect()
    };
    assert_eq!(ok("get", "/v1/tasks/{id}/events", "200"), ["text/event-stream"]);
    assert_eq!(ok("get", "/v1/events", "200"), ["text/event-stream"]);
    assert_eq!(ok("get", "/metrics", "200"), ["text/plain"]);
    assert_eq!(ok("get", "/v1/openapi.json", "200"), ["application/json"]);

    let params = |path: &str| -> BTreeSet<(String, String)> {
        let item = &doc["paths"][path];
        let mut all = Vec::new();
        for p in [&item["parameters"], &item["get"]["parameters"]] {
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
        pset(&[("query", "status"), ("query", "agent"), ("query", "limit"), ("query", "cursor")])
    );
}

#[test]
fn submit_request_is_strict_and_bounded() {
    let doc = doc();
    let s = schema(&doc, "SubmitRequest");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["required"], json!(["agent", "input"]));
    let p = &s["properties"];
    let fields: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> =
        ["agent", "input", "priority", "timeout_ms", "max_attempts", "idempotency_key", "session_id", "metadata"]
            .into();
    assert_eq!(fields, want);
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
    schema(doc, name)["enum"].as_array().expect("enum").iter().map(|v| v.as_str().unwrap().to_string()).collect()
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
    };
    assert_shape(&doc, "Task", &serde_json::to_value(&task).unwrap());
    task.status = TaskStatus::Failed;
    task.timeout_ms = Some(1000);
    task.idempotency_key = Some("k".into());
    task.session_id = Some("s".into());
    task.result = Some(json!("r"));
    task.error = Some(TaskError::new("boom", "it broke"));
    task.usage = Usage { input_tokens: 1, output_tokens: 2, cost_usd: 0.5 };
    task.started_at = Some(t);
    task.finished_at = Some(t);
    task.worker = Some("w1".into());
    let v = serde_json::to_value(&task).unwrap();
    assert_shape(&doc, "Task", &v);
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
        attempt: 1,
        pos: 9,
    };
    let line = serde_json::to_string(&event).unwrap();
    assert!(!line.contains('\n'), "{line}");
    // (the document's own key order is not kept by serde_json::Value, hence the list)
    let fields = ["task_id", "seq", "kind", "at", "data", "agent", "attempt", "pos"];
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
    for path in ["/v1/tasks/{id}/events", "/v1/events"] {
        let r = &doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"]["$ref"];
        assert_eq!(r, "#/components/schemas/EventFrame", "{path}");
    }

    let mut def = AgentDef::new("proc", ExecutorKind::Process);
    def.timeout = Some(std::time::Duration::from_secs(90));
    def.command = Some("cat".into());
    def.cwd = Some("/tmp".into());
    def.env.insert("K".into(), "V".into());
    for def in [AgentDef::new("echo", ExecutorKind::Echo), def] {
        assert_shape(&doc, "AgentDef", &serde_json::to_value(&def).unwrap());
        let summary = AgentSummary {
            def,
            queued: 2,
            running: 1,
            usage: Default::default(),
            breaker: smith_core::BreakerState::Closed,
        };
        assert_shape(&doc, "AgentSummary", &serde_json::to_value(&summary).unwrap());
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

    let statuses: Vec<String> = TaskStatus::ALL.iter().map(|s| s.as_str().to_string()).collect();
    assert_eq!(enum_of(&doc, "TaskStatus"), statuses);
    let kinds: Vec<String> = EventKind::ALL.iter().map(|k| k.as_str().to_string()).collect();
    assert_eq!(enum_of(&doc, "EventKind"), kinds);
    let ser = |v: Value| v.as_str().unwrap().to_string();
    let roles: Vec<String> = [NodeRole::Supervisor, NodeRole::Worker, NodeRole::Gateway]
        .into_iter()
        .map(|r| ser(serde_json::to_value(r).unwrap()))
        .collect();
    assert_eq!(enum_of(&doc, "NodeRole"), roles);
    let node_statuses: Vec<String> = [NodeStatus::Alive, NodeStatus::Draining, NodeStatus::Stopped, NodeStatus::Dead]
        .into_iter()
        .map(|s| ser(serde_json::to_value(s).unwrap()))
        .collect();
    assert_eq!(enum_of(&doc, "NodeStatus"), node_statuses);
    for code in [
        smith_core::Code::InvalidArgument,
        smith_core::Code::Unprocessable,
        smith_core::Code::Unauthenticated,
        smith_core::Code::NotFound,
        smith_core::Code::TooLarge,
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
}
