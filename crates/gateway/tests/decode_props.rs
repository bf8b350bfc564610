//! Property tests of request decoding, through the gateway's real router in-process (a SQLite
//! store, the in-process bus, `tower::ServiceExt::oneshot`): arbitrary bytes, arbitrary JSON,
//! near-valid task submissions (the right shape with wrong types, huge numbers, deep nesting,
//! long and unicode strings, unknown and repeated fields), query strings and path ids.
//!
//! Whatever comes in, the answer is never a 5xx nor a panic, and every 4xx is the JSON error
//! body with the code of its status. A submission is acknowledged (`201`) exactly when it is a
//! valid task, with what was sent; the store then holds exactly the acknowledged tasks.
//!
//! Each property runs a fixed number of cases (no nightly, no fork): a few seconds in all.

mod common;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use smith_core::{AgentDef, Budget, ExecutorKind, Task, TaskId, TaskStatus};
use smith_gateway::{Gateway, GatewayOptions};
use smith_store::{Store, TaskQuery};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tower::ServiceExt;

/// Cases per property.
const CASES: u32 = 1024;
/// The gateway's body limit here: small, so that a 413 costs little.
const BODY_LIMIT: usize = 64 * 1024;
/// The fields of a task submission.
const FIELDS: [&str; 17] = common::SUBMIT_FIELDS;
const MAX_TIMEOUT_MS: u64 = smith_core::task::MAX_TIMEOUT_MS;

fn config() -> Config {
    // no regression files written into the tree: a failure prints its minimal case
    Config { cases: CASES, failure_persistence: None, ..Config::default() }
}

/// Runs `test` on `CASES` values of `strategy`; panics with the minimal failing case.
fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// One answer of the router; a stream's body is not read (it never ends).
struct Reply {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).chars().take(500).collect()
    }

    fn json(&self) -> Result<Value, TestCaseError> {
        serde_json::from_slice(&self.body).map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", self.text())))
    }
}

/// The status each error code is answered with.
fn status_of_code(code: &str) -> Option<u16> {
    Some(match code {
        "invalid_argument" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "not_found" => 404,
        "method_not_allowed" => 405,
        "conflict" | "fenced" => 409,
        "too_large" => 413,
        "unsupported_media_type" => 415,
        "unprocessable" => 422,
        "rate_limited" => 429,
        _ => return None,
    })
}

/// What holds for every answer: no 5xx, and a 4xx is `{"error":{"code","message"}}` whose code
/// is the one of its status.
fn check_answer(what: &str, r: &Reply) -> Result<(), TestCaseError> {
    prop_assert!(!r.status.is_server_error(), "{what}: {} {}", r.status, r.text());
    if r.status.is_client_error() {
        prop_assert!(r.content_type.starts_with("application/json"), "{what}: {} as {:?}", r.status, r.content_type);
        let v = r.json()?;
        let code = v["error"]["code"].as_str().unwrap_or_default();
        prop_assert!(v["error"]["message"].is_string() && v.as_object().is_some_and(|o| o.len() == 1), "{what}: {v}");
        prop_assert_eq!(status_of_code(code), Some(r.status.as_u16()), "{}: {}", what, v);
    }
    Ok(())
}

/// A real gateway over a fresh SQLite store with the `echo` agent, called in-process.
struct Harness {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    store: Arc<dyn Store>,
    dir: std::path::PathBuf,
    /// A task that exists (a valid `parent_id`).
    parent: TaskId,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = std::env::temp_dir().join(format!("smith-decode-props-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("smith.db").display());
        let (store, bus) = rt.block_on(async {
            let opts = smith_store::OpenOptions { fsync: false, ..Default::default() };
            let store = smith_store::open(&url, &opts).await.unwrap();
            store.put_agents(&[AgentDef::new("echo", ExecutorKind::Echo)]).await.unwrap();
            (store, smith_bus::open("memory://").await.unwrap())
        });
        let mut opts = GatewayOptions::new("gw-props");
        opts.max_body_bytes = BODY_LIMIT;
        let router = Gateway::new(opts, store.clone(), bus).router();
        let mut h = Harness { rt, router, store, dir, parent: TaskId::new() };
        let r = h.post_json("/v1/tasks", br#"{"agent":"echo","input":"parent"}"#.to_vec());
        assert_eq!(r.status, 201, "{}", r.text());
        h.parent = r.json().unwrap()["id"].as_str().unwrap().parse().unwrap();
        h
    }

    fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(Body::from(body)).expect("request");
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        self.rt.block_on(async {
            let resp = self.router.clone().oneshot(req).await.expect("the router is infallible");
            let head = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let content_type = head(header::CONTENT_TYPE).unwrap_or_default();
            let location = head(header::LOCATION);
            let status = resp.status();
            let body = if content_type.starts_with("text/event-stream") {
                Bytes::new()
            } else {
                axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body")
            };
            Reply { status, content_type, location, body }
        })
    }

    fn post_json(&self, uri: &str, body: Vec<u8>) -> Reply {
        self.send(Method::POST, uri, &[("content-type", "application/json")], body)
    }

    /// Every task in the store.
    fn all_tasks(&self) -> Vec<Task> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut cursor = None;
            loop {
                let q = TaskQuery { limit: 1000, cursor: cursor.take(), ..Default::default() };
                let page = self.store.list_tasks(&q).await.unwrap();
                out.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => return out,
                }
            }
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The submissions a run acknowledged: their ids, and the task each idempotency key names.
#[derive(Default)]
struct Acked {
    ids: HashSet<TaskId>,
    keys: HashMap<String, TaskId>,
}

/// Posts a submission and checks the answer against `valid` (the oracle: is it a valid task?)
/// and, when acknowledged, what the store holds against `sent`.
fn submit_and_check(
    h: &Harness,
    acked: &RefCell<Acked>,
    body: Vec<u8>,
    valid: Option<&Value>,
) -> Result<(), TestCaseError> {
    let too_large = body.len() > BODY_LIMIT;
    let r = h.post_json("/v1/tasks", body);
    check_answer("POST /v1/tasks", &r)?;
    if too_large {
        prop_assert_eq!(r.status.as_u16(), 413, "{}", r.text());
        return Ok(());
    }
    let Some(sent) = valid else {
        prop_assert!(matches!(r.status.as_u16(), 400 | 422), "an invalid submission got {}: {}", r.status, r.text());
        return Ok(());
    };
    let key = sent.get("idempotency_key").and_then(Value::as_str);
    let earlier = key.and_then(|k| acked.borrow().keys.get(k).copied());
    let want = if earlier.is_some() { 200 } else { 201 };
    prop_assert_eq!(r.status.as_u16(), want, "a valid submission: {}", r.text());
    let task: Task = serde_json::from_slice(&r.body).map_err(|e| TestCaseError::fail(format!("not a Task: {e}")))?;
    prop_assert_eq!(r.location.clone(), Some(format!("/v1/tasks/{}", task.id)));
    let mut stored = h.rt.block_on(h.store.get_task(task.id)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    // a webhook's secret is served only in the answer that generated it: a given one is kept
    // and never shown back, a generated one shown to the submission that created the task
    let hook = sent.get("webhook").filter(|v| !v.is_null());
    if let Some(w) = stored.as_mut().and_then(|t| t.webhook.as_mut()) {
        let given = hook.and_then(|h| h.get("secret")).and_then(Value::as_str);
        if earlier.is_none() {
            match given {
                Some(given) => prop_assert_eq!(w.secret.as_deref(), Some(given), "a given secret is kept"),
                None => prop_assert!(w.secret.as_deref().is_some_and(|s| s.starts_with("whsec_")), "one is generated"),
            }
        }
        if given.is_some() || earlier.is_some() {
            w.secret = None;
        }
    }
    prop_assert_eq!(stored.as_ref(), Some(&task), "the store holds what was acknowledged");
    if let Some(id) = earlier {
        prop_assert_eq!(task.id, id, "a repeated key names the earlier task");
        return Ok(());
    }
    // a new task is what was sent, defaults filled in
    let field = |k: &str| sent.get(k).filter(|v| !v.is_null());
    let int = |k: &str| field(k).and_then(Value::as_u64);
    let text = |k: &str| field(k).and_then(Value::as_str).map(str::to_string);
    prop_assert_eq!(&task.agent, "echo");
    prop_assert_eq!(&task.input, &sent["input"]);
    // a positive delay schedules the task; a past run_at or a zero delay queues it at once
    let later = field("delay").is_some_and(|d| *d != json!(0));
    prop_assert_eq!(task.status, if later { TaskStatus::Scheduled } else { TaskStatus::Queued });
    prop_assert_eq!(task.run_at.is_some(), later);
    prop_assert_eq!(task.expires_at.is_some(), field("ttl").is_some());
    prop_assert_eq!(u64::from(task.priority), int("priority").unwrap_or(0));
    prop_assert_eq!(task.timeout_ms, int("timeout_ms"));
    prop_assert_eq!(u64::from(task.max_attempts), int("max_attempts").unwrap_or(3));
    prop_assert_eq!(task.idempotency_key.clone(), text("idempotency_key"));
    prop_assert_eq!(task.session_id.clone(), text("session_id"));
    prop_assert_eq!(task.parent_id, text("parent_id").map(|p| p.parse().unwrap()));
    let budget: Budget = field("budget").map(|b| serde_json::from_value(b.clone()).unwrap()).unwrap_or_default();
    prop_assert_eq!(task.budget, budget);
    let metadata = field("metadata").cloned().unwrap_or_else(|| json!({}));
    prop_assert_eq!(&task.metadata, &metadata);
    let mut acked = acked.borrow_mut();
    acked.ids.insert(task.id);
    if let Some(k) = key {
        acked.keys.insert(k.to_string(), task.id);
    }
    Ok(())
}

/// Submits a JSON value as text and checks the answer against the oracle. A new task holds
/// exactly the value: every number reads back as it was printed (serde_json's `float_roundtrip`).
fn submit_value(h: &Harness, acked: &RefCell<Acked>, v: &Value) -> Result<(), TestCaseError> {
    let valid = is_valid_task(v, h.parent).then_some(v);
    submit_and_check(h, acked, v.to_string().into_bytes(), valid)
}

/// The store holds exactly the seed parent and the acknowledged tasks: nothing a refused
/// submission sent was kept.
fn assert_store_holds_only(h: &Harness, acked: &RefCell<Acked>) {
    let mut want = acked.borrow().ids.clone();
    want.insert(h.parent);
    let got: HashSet<TaskId> = h.all_tasks().into_iter().map(|t| t.id).collect();
    assert_eq!(got, want, "the store holds exactly the acknowledged tasks");
}

// ---- the oracle: is a JSON value a valid task submission? ----

fn opt_int(v: Option<&Value>, lo: u64, hi: u64) -> bool {
    v.is_none_or(|v| v.is_null() || v.as_u64().is_some_and(|n| (lo..=hi).contains(&n)))
}

fn opt_key(v: Option<&Value>) -> bool {
    v.is_none_or(|v| {
        v.is_null() || v.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control))
    })
}

fn opt_session(v: Option<&Value>) -> bool {
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    v.is_none_or(|v| v.is_null() || v.as_str().is_some_and(id_ok))
}

fn opt_budget(v: Option<&Value>) -> bool {
    let Some(v) = v.filter(|v| !v.is_null()) else { return true };
    let Some(o) = v.as_object() else { return false };
    o.keys().all(|k| k == "max_tokens" || k == "max_cost_usd")
        && opt_int(o.get("max_tokens"), 1, u64::MAX)
        && o.get("max_cost_usd").is_none_or(|c| c.is_null() || c.as_f64().is_some_and(|c| c.is_finite() && c > 0.0))
}

/// Whether the gateway must take this submission (given the one existing task, `parent`).
fn is_valid_task(v: &Value, parent: TaskId) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.keys().all(|k| FIELDS.contains(&k.as_str()))
        && o.get("agent") == Some(&json!("echo"))
        && o.contains_key("input")
        && opt_int(o.get("priority"), 0, 9)
        && opt_int(o.get("timeout_ms"), 1, MAX_TIMEOUT_MS)
        && opt_int(o.get("max_attempts"), 1, 100)
        && opt_key(o.get("idempotency_key"))
        && opt_session(o.get("session_id"))
        && o.get("parent_id").is_none_or(|p| p.is_null() || p.as_str().and_then(|p| p.parse().ok()) == Some(parent))
        && opt_budget(o.get("budget"))
        && o.get("metadata").is_none_or(|m| m.is_null() || m.is_object())
        // `echo` has no workspace: a task of it cannot set one
        && o.get("workspace").is_none_or(Value::is_null)
        && o.get("output_schema").is_none_or(|s| s.is_null() || smith_core::output::Schema::compile(s, "s").is_ok())
        && o.get("webhook").is_none_or(valid_webhook)
        // `echo` has no max_per_key: a task of it takes no concurrency key
        && o.get("concurrency_key").is_none_or(Value::is_null)
        && o.get("run_at").is_none_or(|v| v.is_null() || *v == json!(PAST))
        && o.get("delay").is_none_or(|v| v.is_null() || *v == json!("2s") || *v == json!(1500) || *v == json!(0))
        && o.get("ttl").is_none_or(|v| v.is_null() || *v == json!("10m") || *v == json!(1000))
        // a start time is `run_at` or `delay`, never both
        && !(o.get("run_at").is_some_and(|v| !v.is_null()) && o.get("delay").is_some_and(|v| !v.is_null()))
}

/// A `run_at` the gateway takes (a past one starts at once).
const PAST: &str = "2020-01-01T00:00:00Z";

/// A task's webhook the gateway takes: null, or `{url, secret?}` with a public address (no
/// name: nothing is resolved here) and a well-formed secret.
fn valid_webhook(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return v.is_null() };
    o.keys().all(|k| k == "url" || k == "secret")
        && o.get("url") == Some(&json!(PUBLIC_HOOK))
        && o.get("secret")
            .is_none_or(|s| s.is_null() || s.as_str().is_some_and(|s| smith_core::webhook::secret_key(s).is_ok()))
}

/// A webhook target the SSRF guard lets through without resolving anything.
const PUBLIC_HOOK: &str = "https://[100::1]/hook";

// ---- strategies ----

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for a field of the submission, often of the right type and near its limits.
fn field_value(field: &'static str, parent: TaskId) -> BoxedStrategy<Value> {
    let ints = |lo: u64, hi: u64| {
        prop_oneof![
            8 => (lo..=hi).prop_map(Value::from),
            1 => prop::sample::select(vec![lo, hi, hi.saturating_add(1), lo.saturating_sub(1), u64::MAX])
                .prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => prop::sample::select(vec![json!(1.0), json!(0.5), json!(1e300), json!(-1), json!("3"), json!(null)]),
        ]
        .boxed()
    };
    let keys = prop_oneof![
        8 => "\\PC{1,40}".prop_map(Value::from),
        1 => any::<String>().prop_map(Value::from),
        1 => (250usize..262).prop_map(|n| Value::from("k".repeat(n))),
        1 => (120usize..135).prop_map(|n| Value::from("é".repeat(n))),
        1 => prop::sample::select(vec![json!(""), json!(null), json!(7), json!(["k"]), json!("tab\there")]),
    ];
    match field {
        "agent" => prop_oneof![
            12 => Just(json!("echo")),
            1 => prop::sample::select(vec![json!("nope"), json!(""), json!("-x"), json!("e".repeat(65)), json!(null)]),
            1 => any::<String>().prop_map(Value::from),
        ]
        .boxed(),
        "input" => json_value().boxed(),
        "priority" => ints(0, 9),
        "timeout_ms" => ints(1, MAX_TIMEOUT_MS),
        "max_attempts" => ints(1, 100),
        "idempotency_key" => keys.boxed(),
        "session_id" => prop_oneof![
            4 => "[A-Za-z0-9._-]{1,40}".prop_map(Value::from),
            2 => keys,
            1 => (124usize..133).prop_map(|n| Value::from("s".repeat(n))),
            1 => prop::sample::select(vec![json!("."), json!(".."), json!("a/b"), json!("../x"), json!("a b")]),
        ]
        .boxed(),
        "parent_id" => prop_oneof![
            2 => Just(json!(parent.to_string())),
            1 => Just(json!(TaskId::new().to_string())),
            1 => prop::sample::select(vec![json!(null), json!("not-a-uuid"), json!(5), json!(parent.to_string().to_uppercase())]),
        ]
        .boxed(),
        "budget" => prop_oneof![
            2 => (
                prop::option::of(prop_oneof![(1u64..=u64::MAX).prop_map(Value::from), Just(json!(0)), Just(json!(-3)), Just(json!(null))]),
                prop::option::of(prop_oneof![
                    (1e-9f64..1e12).prop_map(Value::from),
                    Just(json!(0.0)),
                    Just(json!(-1.5)),
                    Just(json!(5)),
                    Just(json!("1")),
                ]),
            )
                .prop_map(|(t, c)| {
                    let mut m = serde_json::Map::new();
                    if let Some(t) = t {
                        m.insert("max_tokens".into(), t);
                    }
                    if let Some(c) = c {
                        m.insert("max_cost_usd".into(), c);
                    }
                    Value::Object(m)
                }),
            1 => prop::sample::select(vec![json!(null), json!({}), json!([]), json!([5, 1.5]), json!({"max_tokens": 5, "extra": 1})]),
        ]
        .boxed(),
        "metadata" => prop_oneof![
            6 => prop::collection::btree_map(any::<String>(), json_value(), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => json_value(),
        ]
        .boxed(),
        "workspace" => prop_oneof![
            1 => "[a-z/._-]{0,12}".prop_map(|b| json!({"base": b})),
            1 => json_value(),
        ]
        .boxed(),
        "output_schema" => prop_oneof![
            2 => prop::sample::select(vec![
                json!({"type": "object", "required": ["a"]}),
                json!({"type": "nonsense"}),
                json!({"$ref": "http://127.0.0.1:9/schema.json"}),
                json!({"properties": {"a": {"pattern": "("}}}),
                json!(true),
            ]),
            1 => json_value(),
        ]
        .boxed(),
        "webhook" => prop_oneof![
            2 => prop::sample::select(vec![
                json!({"url": PUBLIC_HOOK}),
                json!({"url": PUBLIC_HOOK, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
                json!({"url": PUBLIC_HOOK, "secret": "whsec_!"}),
                json!({"url": "http://127.0.0.1/hook"}),
                json!({"url": "http://[::ffff:10.0.0.1]/"}),
                json!({"url": "ftp://[100::1]/"}),
                json!({"url": PUBLIC_HOOK, "extra": 1}),
            ]),
            1 => json_value(),
        ]
        .boxed(),
        "concurrency_key" => prop_oneof![2 => keys, 1 => Just(json!(null))].boxed(),
        // valid: null, PAST; refused: centuries ahead, not a time, not a string
        "run_at" => prop::sample::select(vec![
            json!(null),
            json!(PAST),
            json!("2999-01-01T00:00:00Z"),
            json!("tomorrow"),
            json!(5),
        ])
        .boxed(),
        // valid: null, "2s", 1500, 0; refused: not a duration, negative, over a year, a float
        "delay" => prop::sample::select(vec![
            json!(null),
            json!("2s"),
            json!(1500),
            json!(0),
            json!("soon"),
            json!(-1),
            json!("400d"),
            json!(1.5),
        ])
        .boxed(),
        // valid: null, "10m", 1000; refused: zero, not a duration, over a year
        "ttl" => prop::sample::select(vec![
            json!(null),
            json!("10m"),
            json!(1000),
            json!(0),
            json!("0s"),
            json!("forever"),
            json!("400d"),
        ])
        .boxed(),
        other => unreachable!("no strategy for {other}"),
    }
}

/// A submission of the right shape: `agent` and `input` usually there, other fields sometimes,
/// each from [`field_value`], and now and then a field the API does not have.
fn near_valid(parent: TaskId) -> impl Strategy<Value = Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = FIELDS
        .iter()
        .map(|f| {
            let weight = if matches!(*f, "agent" | "input") { 12 } else { 1 };
            let present = field_value(f, parent).prop_map(move |v| Some((f.to_string(), v)));
            prop_oneof![1 => Just(None), weight => present].boxed()
        })
        .collect();
    let unknown = prop::option::weighted(0.05, ("[a-z_]{1,12}", json_value()));
    (fields, unknown).prop_map(|(fields, unknown)| {
        let mut m = serde_json::Map::new();
        for (k, v) in fields.into_iter().flatten().chain(unknown) {
            m.insert(k, v);
        }
        Value::Object(m)
    })
}

/// A JSON text nested `depth` arrays deep, around a leaf.
fn nested(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Percent-encodes everything but unreserved characters: the server decodes exactly `s`.
fn pct(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---- properties ----

#[test]
fn arbitrary_bytes_never_crash_a_body_route() {
    let h = Harness::new();
    let acked = RefCell::new(Acked::default());
    let content_types = prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/x+json"),
    ]);
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // JSON-looking: an object opened and cut short, or with garbage inside
        (prop::collection::vec(any::<u8>(), 0..64)).prop_map(|b| [br#"{"agent":"echo","input":"#.to_vec(), b].concat()),
    ];
    let routes = prop::sample::select(vec!["/v1/tasks", "/v1/sessions", "/mcp"]);
    check((routes, content_types, bytes), |(route, ct, body)| {
        let json_like = ct.is_some_and(|c| c.starts_with("application/json"));
        let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("content-type", *c)).collect();
        let r = h.send(Method::POST, route, &headers, body.clone());
        check_answer(route, &r)?;
        if route == "/v1/tasks" {
            if !json_like {
                prop_assert_eq!(r.status.as_u16(), 415, "a missing or non-JSON content type: {}", r.text());
            } else if r.status.is_success() {
                // random bytes that happen to be a valid task: it must be the stored one
                let sent: Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(is_valid_task(&sent, h.parent));
                acked.borrow_mut().ids.insert(r.json()?["id"].as_str().unwrap().parse().unwrap());
            }
        }
        Ok(())
    });
    assert_store_holds_only(&h, &acked);
}

#[test]
fn arbitrary_json_is_acknowledged_exactly_when_it_is_a_valid_task() {
    let h = Harness::new();
    let acked = RefCell::new(Acked::default());
    let values = prop_oneof![
        1 => json_value(),
        // every field name with a value of any type
        2 => prop::collection::btree_map(prop::sample::select(FIELDS.to_vec()), json_value(), 0..10).prop_map(|m| {
            let mut o: serde_json::Map<String, Value> = m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            o.insert("agent".into(), json!("echo"));
            o.entry("input").or_insert(json!("x"));
            Value::Object(o)
        }),
    ];
    check(values, |v| submit_value(&h, &acked, &v));
    assert_store_holds_only(&h, &acked);
}

#[test]
fn near_valid_submissions_are_acknowledged_exactly_when_valid() {
    let h = Harness::new();
    let acked = RefCell::new(Acked::default());
    check(near_valid(h.parent), |v| submit_value(&h, &acked, &v));
    assert_store_holds_only(&h, &acked);
}

/// Text-level cases a JSON value cannot hold: deep nesting, numbers beyond 64 bits, repeated
/// fields, trailing garbage, long strings around the body limit.
#[test]
fn malformed_and_extreme_texts_are_refused_or_kept_whole() {
    let h = Harness::new();
    let acked = RefCell::new(Acked::default());
    let input = prop_oneof![
        // (text, still valid): nesting the server takes, nesting past serde_json's limit
        (1usize..=100).prop_map(|d| (nested(d), true)),
        (160usize..=600).prop_map(|d| (nested(d), false)),
        prop::sample::select(vec!["18446744073709551616", "-9223372036854775809", "1e400", "-1e400", "1E5"])
            .prop_map(|n| (n.to_string(), n == "18446744073709551616" || n == "-9223372036854775809" || n == "1E5")),
        (1usize..=BODY_LIMIT + 4096).prop_map(|n| (format!("\"{}\"", "ü".repeat(n / 2)), true)),
        prop::sample::select(vec![r#""\ud800""#, r#""\u0000""#, "\"\u{10FFFF}\"", "tru", "[1,]", "{\"a\" 1}"])
            .prop_map(|t| (t.to_string(), t.starts_with('"') && t != r#""\ud800""#)),
    ];
    let extra = prop::sample::select(vec!["", r#","agent":"echo""#, r#","priority":1,"priority":2"#, "}", " x"]);
    check((input, extra), |((input, input_ok), extra)| {
        let body = format!(r#"{{"agent":"echo","input":{input}{extra}}}"#);
        let valid = if input_ok && extra.is_empty() { serde_json::from_str::<Value>(&body).ok() } else { None };
        if input_ok && extra.is_empty() {
            prop_assert!(valid.is_some(), "the oracle's valid body parses: {body:.200}");
        }
        submit_and_check(&h, &acked, body.into_bytes(), valid.as_ref())
    });
    // serde builds a struct from an array too, field by field: a body is an object or nothing
    let arrays = prop::sample::select(vec![
        r#"["echo","x",null,null,null,null,null,null,null,null]"#,
        r#"["echo","x",1,1000,2,"k","s",null,[5,1.5],{}]"#,
        r#"[]"#,
        r#"["echo"]"#,
    ]);
    check(arrays, |body| submit_and_check(&h, &acked, body.as_bytes().to_vec(), None));
    assert_store_holds_only(&h, &acked);
}

/// A query parameter: its name, and its value as the server decodes it.
type Params = Vec<(String, String)>;

fn params(names: &'static [&'static str], values: BoxedStrategy<String>) -> impl Strategy<Value = Params> {
    let name = prop_oneof![8 => prop::sample::select(names.to_vec()).prop_map(str::to_string), 1 => "[a-z]{1,8}"];
    prop::collection::vec((name, values), 0..5)
}

fn query(params: &Params) -> String {
    let pairs: Vec<String> =
        params.iter().map(|(k, v)| format!("{}={}", pct(k.as_bytes()), pct(v.as_bytes()))).collect();
    pairs.join("&")
}

/// Names appear once and are all known.
fn names_ok(params: &Params, known: &[&str]) -> bool {
    let names: HashSet<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    names.len() == params.len() && names.iter().all(|n| known.contains(n))
}

fn value(params: &Params, name: &str) -> Option<String> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn values() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "queued", "running", "succeeded", "Queued", "", "0", "1", "50", "1000", "1001", "+5", "-1", "9223372036854775807",
            "9223372036854775808", "18446744073709551616", "echo", "task.queued", "discovery,system", " output , usage ",
            "system,,", "bogus", "agent", "tenant", " 7 ", "01890a5d-ac96-774b-bcce-b302099a8057",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[0-9]{1,20}",
    ]
    .boxed()
}

/// `after` / `Last-Event-ID`: blank, or an integer in 0..=2^63-1.
fn resume_ok(v: &str) -> bool {
    v.trim().is_empty() || v.trim().parse::<u64>().is_ok_and(|n| n <= i64::MAX as u64)
}

fn agent_name_ok(a: &str) -> bool {
    smith_core::agent::validate_name(a).is_ok()
}

#[test]
fn list_queries_are_decoded_or_refused_with_400() {
    let h = Harness::new();
    const KNOWN: &[&str] = &["status", "agent", "session_id", "parent_id", "limit", "cursor", "full"];
    check(params(KNOWN, values()), |p| {
        let r = h.send(Method::GET, &format!("/v1/tasks?{}", query(&p)), &[], Vec::new());
        check_answer("GET /v1/tasks", &r)?;
        let ok = names_ok(&p, KNOWN)
            && value(&p, "status").is_none_or(|s| s.parse::<TaskStatus>().is_ok())
            && value(&p, "limit").is_none_or(|l| l.parse::<usize>().is_ok_and(|n| (1..=1000).contains(&n)))
            && value(&p, "parent_id").is_none_or(|id| id.parse::<TaskId>().is_ok())
            && value(&p, "cursor").is_none_or(|c| c.parse::<i64>().is_ok_and(|n| n > 0))
            && value(&p, "full").is_none_or(|f| f.parse::<bool>().is_ok());
        prop_assert_eq!(r.status.as_u16(), if ok { 200 } else { 400 }, "{:?}: {}", p, r.text());
        if ok {
            let page = r.json()?;
            prop_assert!(page["items"].is_array() && page.as_object().is_some_and(|o| o.len() == 2), "{page}");
        }
        Ok(())
    });
}

#[test]
fn feed_and_usage_queries_are_decoded_or_refused_with_400() {
    let h = Harness::new();
    const FEED: &[&str] = &["agent", "kind", "after"];
    let last_event_id = prop::option::weighted(0.3, "[ -~]{0,12}");
    check((params(FEED, values()), last_event_id), |(p, last)| {
        let headers: Vec<(&str, &str)> = last.iter().map(|l| ("last-event-id", l.as_str())).collect();
        let r = h.send(Method::GET, &format!("/v1/events?{}", query(&p)), &headers, Vec::new());
        check_answer("GET /v1/events", &r)?;
        let resume = last.clone().or_else(|| value(&p, "after"));
        let kinds_ok = |k: String| {
            k.split(',').map(str::trim).filter(|k| !k.is_empty()).all(|k| k.parse::<smith_core::EventKind>().is_ok())
        };
        let ok = names_ok(&p, FEED)
            && resume.is_none_or(|v| resume_ok(&v))
            && value(&p, "kind").is_none_or(kinds_ok)
            && value(&p, "agent").is_none_or(|a| agent_name_ok(&a));
        prop_assert_eq!(r.status.as_u16(), if ok { 200 } else { 400 }, "{:?} {:?}: {}", p, last, r.text());
        if ok {
            prop_assert!(r.content_type.starts_with("text/event-stream"), "{}", r.content_type);
        }
        Ok(())
    });
    const USAGE: &[&str] = &["by"];
    check(params(USAGE, values()), |p| {
        let r = h.send(Method::GET, &format!("/v1/usage?{}", query(&p)), &[], Vec::new());
        check_answer("GET /v1/usage", &r)?;
        let ok = names_ok(&p, USAGE) && value(&p, "by").is_none_or(|b| b == "agent" || b == "tenant");
        prop_assert_eq!(r.status.as_u16(), if ok { 200 } else { 400 }, "{:?}: {}", p, r.text());
        Ok(())
    });
}

#[test]
fn path_ids_and_raw_queries_are_decoded_or_refused() {
    let h = Harness::new();
    let session = h.post_json("/v1/sessions", br#"{"agent":"echo"}"#.to_vec());
    assert_eq!(session.status, 201, "{}", session.text());
    let session = session.json().unwrap()["id"].as_str().unwrap().to_string();
    let ids = prop_oneof![
        1 => Just(h.parent.to_string().into_bytes()),
        1 => Just(session.clone().into_bytes()),
        1 => Just(TaskId::new().to_string().into_bytes()),
        3 => prop::collection::vec(any::<u8>(), 1..48),
    ];
    let raw_query = prop::collection::vec(any::<u8>(), 0..48);
    let resume = prop::option::of(values());
    check((ids, raw_query, resume), |(id, raw, after)| {
        let seg = pct(&id);
        // the task routes: a malformed id is 400, an unknown one 404
        let known = id == h.parent.to_string().as_bytes();
        let uuid = std::str::from_utf8(&id).is_ok_and(|s| s.parse::<TaskId>().is_ok());
        let r = h.send(Method::GET, &format!("/v1/tasks/{seg}"), &[], Vec::new());
        check_answer("GET /v1/tasks/{id}", &r)?;
        prop_assert_eq!(
            r.status.as_u16(),
            if known {
                200
            } else if uuid {
                404
            } else {
                400
            },
            "{}",
            r.text()
        );

        let q = after.as_ref().map(|a| format!("?after={}", pct(a.as_bytes()))).unwrap_or_default();
        let r = h.send(Method::GET, &format!("/v1/tasks/{seg}/events{q}"), &[], Vec::new());
        check_answer("GET /v1/tasks/{id}/events", &r)?;
        let want = if !uuid || !after.as_deref().is_none_or(resume_ok) {
            400
        } else if known {
            200
        } else {
            404
        };
        prop_assert_eq!(r.status.as_u16(), want, "{:?}: {}", after, r.text());

        // the session routes: any text is looked up (only the real id is found); bytes that are
        // not UTF-8 are a 400
        let found = id == session.as_bytes();
        let text = std::str::from_utf8(&id).is_ok();
        let r = h.send(Method::GET, &format!("/v1/sessions/{seg}"), &[], Vec::new());
        check_answer("GET /v1/sessions/{id}", &r)?;
        let want = if found {
            200
        } else if text {
            404
        } else {
            400
        };
        prop_assert_eq!(r.status.as_u16(), want, "{}", r.text());
        let r = h.post_json(&format!("/v1/sessions/{seg}/turns"), br#"{"input":"hi"}"#.to_vec());
        check_answer("POST /v1/sessions/{id}/turns", &r)?;
        // a session takes 1000 turns, then 409
        let want: &[u16] = if found {
            &[201, 409]
        } else if text {
            &[404]
        } else {
            &[400]
        };
        prop_assert!(want.contains(&r.status.as_u16()), "{}", r.text());

        // a raw query of any bytes, on every route that reads one
        for route in ["/v1/tasks", "/v1/usage", "/v1/events"] {
            let r = h.send(
                Method::GET,
                &format!("{route}?{}", pct(&raw).replace("%26", "&").replace("%3D", "=")),
                &[],
                Vec::new(),
            );
            check_answer(route, &r)?;
        }
        Ok(())
    });
}

/// The other bodies: session starts and turns, and MCP messages (tool calls with arguments of
/// any type included): never a 5xx, a JSON error for a 4xx, JSON-RPC for a 200.
#[test]
fn arbitrary_json_to_sessions_and_mcp_never_crashes() {
    let h = Harness::new();
    let session = h.post_json("/v1/sessions", br#"{"agent":"echo"}"#.to_vec());
    let turns = format!("/v1/sessions/{}/turns", session.json().unwrap()["id"].as_str().unwrap());
    let tools = prop::sample::select(vec![
        "share_discovery",
        "list_discoveries",
        "send_message",
        "read_messages",
        "spawn_task",
        "await_task",
        "nope",
    ]);
    let arg_names = prop::sample::select(vec![
        "type",
        "content",
        "confidence",
        "related_to",
        "agent",
        "task_id",
        "contains",
        "min_confidence",
        "since",
        "limit",
        "to_agent",
        "to_task",
        "body",
        "input",
        "timeout_ms",
        "max_tokens",
        "max_cost_usd",
        "id",
        "x",
    ]);
    let args = prop::collection::btree_map(arg_names, json_value(), 0..6);
    let parent = h.parent.to_string();
    let calls = (tools, args, prop::option::of(Just(parent))).prop_map(|(tool, args, caller)| {
        let mut args: serde_json::Map<String, Value> = args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if tool == "await_task" {
            // never wait: a task that never finishes would hold the call for up to 120 s
            args.insert("timeout_s".into(), json!(0));
        }
        let msg =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        (msg, caller)
    });
    let bodies = prop_oneof![
        1 => json_value().prop_map(|v| ("/v1/sessions".to_string(), v, None)),
        1 => json_value().prop_map(|v| ("turns".to_string(), v, None)),
        1 => json_value().prop_map(|v| ("/mcp".to_string(), v, None)),
        3 => calls.prop_map(|(m, caller)| ("/mcp".to_string(), m, caller)),
    ];
    check(bodies, |(route, body, caller)| {
        let route = if route == "turns" { turns.clone() } else { route };
        let mut headers = vec![("content-type", "application/json")];
        if let Some(c) = &caller {
            headers.push(("x-smith-task", c.as_str()));
        }
        let r = h.send(Method::POST, &route, &headers, body.to_string().into_bytes());
        check_answer(&route, &r)?;
        if route == "/mcp" && r.status == 200 {
            let v = r.json()?;
            let answers = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
            for a in answers {
                prop_assert!(a["jsonrpc"] == "2.0" && (a.get("result").is_some() != a.get("error").is_some()), "{a}");
            }
        }
        Ok(())
    });
}
