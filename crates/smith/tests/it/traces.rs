//! OpenTelemetry traces through the real binary: `smith up` exporting over OTLP/HTTP to a
//! receiver in this test (protobuf, decoded with the OpenTelemetry protocol's own messages).
//! A task submitted with a W3C `traceparent` is one trace under the caller's span — the
//! gateway's request, the store calls, its time queued, its claim, its attempt and executor —
//! and its agent gets `TRACEPARENT` naming its executor's span; an unsampled caller is
//! followed. With no exporter configured no span is built: the agent gets the caller's own
//! context, unchanged. On PostgreSQL + NATS the gateway and the worker are two processes and the
//! trace still joins up through the store. The real Claude Code CLI, its telemetry turned on by
//! its agent's `env`, exports its own spans into the task's trace under `executor.run`.

use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{Api, Opts, Smith};
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// An agent that answers with the `TRACEPARENT` it was given (empty when none).
const TRACER: &str = "[agents.tracer]\nexecutor = \"process\"\ncommand = \"sh\"\n\
     args = [\"-c\", 'printf %s \"$TRACEPARENT\"']\ninput = \"none\"\nmax_attempts = 1\n";

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    /// The process's `smith.role` (up, gateway, worker, supervisor).
    role: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
}

/// An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf) on a free local port.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    match &v.value {
        Some(V::StringValue(s)) => s.clone(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let sink = sink.clone();
                async move {
                    let protobuf =
                        headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/x-protobuf");
                    let Ok(req) = ExportTraceServiceRequest::decode(body).map_err(|_| ()).and_then(|r| {
                        if protobuf {
                            Ok(r)
                        } else {
                            Err(())
                        }
                    }) else {
                        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    let mut got = Vec::new();
                    for rs in req.resource_spans {
                        let resource = |key: &str| {
                            rs.resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == key)
                                .and_then(|kv| kv.value.as_ref())
                                .map(value_text)
                                .unwrap_or_default()
                        };
                        let (service, role) = (resource("service.name"), resource("smith.role"));
                        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                            let attrs = span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), kv.value.as_ref().map(value_text).unwrap_or_default()))
                                .collect();
                            got.push(Got {
                                service: service.clone(),
                                role: role.clone(),
                                trace: hex(&span.trace_id),
                                id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                name: span.name,
                                kind: span.kind,
                                attrs,
                            });
                        }
                    }
                    sink.lock().unwrap().extend(got);
                    (axum::http::StatusCode::OK, Vec::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver { url, spans, _stop: stop }
    }

    fn of_trace(&self, trace: &str) -> Vec<Got> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace == trace).cloned().collect()
    }

    /// The spans of `trace` once every name in `names` has arrived.
    async fn wait_for(&self, trace: &str, names: &[&str]) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let spans = self.of_trace(trace);
            let have: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
            if names.iter().all(|n| have.contains(n)) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "spans {names:?} of trace {trace} never all came: {spans:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A fresh caller's span context: (trace id, span id).
fn caller() -> (String, String) {
    let trace = format!("{:032x}", fastrand::u128(1..));
    let span = format!("{:016x}", fastrand::u64(1..));
    (trace, span)
}

/// Submits a `tracer` task with `traceparent`, waits for it, returns (task, what its agent got).
async fn traced_task(api: &Api, traceparent: &str) -> (Value, String) {
    let done = run_traced(api, json!({"agent": "tracer", "input": null}), traceparent, WAIT).await;
    let got = done["result"].as_str().unwrap_or_else(|| panic!("a text result: {done}")).to_string();
    (done, got)
}

/// Submits `body` with `traceparent` and returns the task once it succeeded.
async fn run_traced(api: &Api, body: Value, traceparent: &str, within: Duration) -> Value {
    let r = api.request(reqwest::Method::POST, "/v1/tasks").header("traceparent", traceparent).json(&body);
    let (status, task) = api.send(r).await;
    assert_eq!(status, 201, "{task}");
    let done = api.wait_terminal(&crate::common::cluster::id_of(&task), within).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    done
}

/// The spans one traced task must leave, from the request to the agent's executor.
const TASK_SPANS: [&str; 8] = [
    "POST /v1/tasks",
    "store.submit",
    "bus.publish",
    "task.queued",
    "store.claim",
    "task.attempt",
    "executor.run",
    "store.complete",
];

/// Asserts the task's trace: one trace under the caller's span through the gateway's request
/// span, every span's parent in the trace, the agent's context naming its executor span.
fn assert_one_trace(spans: &[Got], caller_span: &str, task_id: &str, agent_env: &str) {
    let by_id: BTreeMap<&str, &Got> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let request = spans.iter().find(|s| s.name == "POST /v1/tasks").unwrap();
    assert_eq!(request.parent, caller_span, "the gateway's span is the caller's child: {request:?}");
    assert_eq!(request.kind, 2, "a server span (SPAN_KIND_SERVER)");
    assert_eq!(request.attrs.get("http.route").map(String::as_str), Some("/v1/tasks"));
    assert_eq!(request.attrs.get("http.response.status_code").map(String::as_str), Some("201"));
    for s in spans {
        // every span reaches the gateway's request span through parents inside the trace
        let mut at = s;
        let mut hops = 0;
        while at.id != request.id {
            at = by_id.get(at.parent.as_str()).copied().unwrap_or_else(|| panic!("{s:?}: parent outside the trace"));
            hops += 1;
            assert!(hops < 10, "a parent loop at {s:?}");
        }
    }
    for name in ["task.queued", "store.claim", "task.attempt"] {
        let s = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.attrs.get("smith.task.id").map(String::as_str), Some(task_id), "{s:?}");
    }
    let attempt = spans.iter().find(|s| s.name == "task.attempt").unwrap();
    assert_eq!(attempt.attrs.get("smith.outcome").map(String::as_str), Some("succeeded"));
    let exec = spans.iter().find(|s| s.name == "executor.run").unwrap();
    assert_eq!(exec.parent, attempt.id, "the executor runs in the attempt");
    assert_eq!(exec.attrs.get("smith.executor").map(String::as_str), Some("process"));
    let complete = spans.iter().find(|s| s.name == "store.complete").unwrap();
    assert_eq!(complete.parent, attempt.id);
    assert_eq!(agent_env, format!("00-{}-{}-01", exec.trace, exec.id), "the agent joins under its executor's span");
}

#[tokio::test]
async fn a_task_is_one_trace_from_the_callers_span_to_its_agent() {
    let rx = Receiver::start().await;
    let smith = Smith::start(
        Opts::new()
            .config(TRACER)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &rx.url)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_SERVICE_NAME", "smith-under-test"),
    )
    .await;
    let api = smith.api();
    let (trace, span) = caller();
    let (task, agent_env) = traced_task(&api, &format!("00-{trace}-{span}-01")).await;
    let id = crate::common::cluster::id_of(&task);
    let spans = rx.wait_for(&trace, &TASK_SPANS).await;
    assert_one_trace(&spans, &span, &id, &agent_env);
    assert!(spans.iter().all(|s| s.service == "smith-under-test"), "OTEL_SERVICE_NAME is honoured");
    assert!(spans.iter().all(|s| s.role == "up"), "{spans:#?}");
    // the task serves the context its spans hang under: the gateway's request span
    let request = spans.iter().find(|s| s.name == "POST /v1/tasks").unwrap();
    assert_eq!(task["traceparent"], format!("00-{trace}-{}-01", request.id));
    // no span of the task went to another trace
    let elsewhere: Vec<Got> = rx
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace != trace && s.attrs.get("smith.task.id") == Some(&id))
        .cloned()
        .collect();
    assert!(elsewhere.is_empty(), "spans of the task in other traces: {elsewhere:#?}");

    // a caller that does not sample is followed: nothing exported, the context still handed on
    let (quiet, quiet_span) = caller();
    let (_, agent_env) = traced_task(&api, &format!("00-{quiet}-{quiet_span}-00")).await;
    assert!(agent_env.starts_with(&format!("00-{quiet}-")) && agent_env.ends_with("-00"), "{agent_env}");
    // a later sampled task's spans arrive after anything the unsampled one could have sent
    let (later, later_span) = caller();
    let (later_task, later_env) = traced_task(&api, &format!("00-{later}-{later_span}-01")).await;
    let spans = rx.wait_for(&later, &TASK_SPANS).await;
    assert_one_trace(&spans, &later_span, &crate::common::cluster::id_of(&later_task), &later_env);
    assert!(rx.of_trace(&quiet).is_empty(), "an unsampled trace exported {:#?}", rx.of_trace(&quiet));

    // no traceparent: the request starts a trace of its own, and the task still is one trace
    let (status, task) = api.post("/v1/tasks", &json!({"agent": "tracer", "input": null})).await;
    assert_eq!(status, 201, "{task}");
    let own = task["traceparent"].as_str().expect("a traceparent of the gateway's span").to_string();
    let done = api.wait_terminal(&crate::common::cluster::id_of(&task), WAIT).await;
    let own_trace = own.split('-').nth(1).unwrap().to_string();
    let spans = rx.wait_for(&own_trace, &TASK_SPANS).await;
    let request = spans.iter().find(|s| s.name == "POST /v1/tasks").unwrap();
    assert_eq!(request.parent, "", "a root span: {request:?}");
    assert_one_trace(&spans, "", &crate::common::cluster::id_of(&task), done["result"].as_str().unwrap());
}

#[tokio::test]
async fn with_no_exporter_no_span_is_built_and_the_agent_gets_the_callers_context() {
    let rx = Receiver::start().await;
    // no endpoint configured: the variables that only tune an exporter change nothing
    let smith = Smith::start(Opts::new().config(TRACER).env("OTEL_BSP_SCHEDULE_DELAY", "100")).await;
    let api = smith.api();
    let (trace, span) = caller();
    let sent = format!("00-{trace}-{span}-01");
    let (task, agent_env) = traced_task(&api, &sent).await;
    // no span of ours between the caller and the agent: it gets the caller's context unchanged
    assert_eq!(agent_env, sent);
    assert_eq!(task["traceparent"], sent.as_str());
    // a malformed traceparent is ignored (W3C: restart the trace), never a failed request
    for bad in ["00-zz-00f067aa0ba902b7-01", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"] {
        let (task, agent_env) = traced_task(&api, bad).await;
        assert_eq!(task["traceparent"], Value::Null, "{bad}: {task}");
        assert_eq!(agent_env, "", "{bad}: no TRACEPARENT for the agent");
    }
    // W3C allows lowercase hex only: an uppercase one is ignored too
    let (task, _) = traced_task(&api, &sent.to_uppercase()).await;
    assert_eq!(task["traceparent"], Value::Null);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.spans.lock().unwrap().is_empty(), "nothing is exported when no endpoint is set");
}

#[tokio::test]
async fn a_bad_telemetry_setting_is_refused_at_start() {
    for (config, env, says) in [
        ("[telemetry]\nendpoint = \"ftp://collector\"\n", None, "telemetry.endpoint"),
        ("[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 2.0\n", None, "sample_ratio"),
        ("[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\nsampler = \"on\"\n", None, "sampler"),
        ("", Some(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")), "http/protobuf"),
        ("", Some(("OTEL_TRACES_EXPORTER", "zipkin")), "OTEL_TRACES_EXPORTER"),
    ] {
        let mut opts = Opts::new().config(&format!("{TRACER}{config}"));
        if let Some((k, v)) = env {
            opts = opts.env(k, v).env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        }
        let refused = Smith::start_refused(opts).await;
        assert!(!refused.status.success());
        assert!(refused.stderr.contains(says), "{config:?} {env:?}: {}", refused.stderr);
    }
}

#[tokio::test]
async fn a_task_is_one_trace_across_the_gateway_and_worker_processes() {
    let Some(services) = Services::from_env() else {
        eprintln!("skipped: SMITH_TEST_POSTGRES_URL and SMITH_TEST_NATS_URL are not set");
        return;
    };
    let rx = Receiver::start().await;
    let config = format!("{TRACER}[telemetry]\nendpoint = \"{}\"\n", rx.url);
    let cluster = Cluster::new(&services, &config).await;
    let _sup = cluster.start(Role::Supervisor).await;
    let _worker = cluster.start(Role::Worker).await;
    let gateway = cluster.start(Role::Gateway).await;
    let api = gateway.api();
    let (trace, span) = caller();
    let (task, agent_env) = traced_task(&api, &format!("00-{trace}-{span}-01")).await;
    let spans = rx.wait_for(&trace, &TASK_SPANS).await;
    assert_one_trace(&spans, &span, &crate::common::cluster::id_of(&task), &agent_env);
    // each span from the process that did the work
    let role = |name: &str| spans.iter().find(|s| s.name == name).map(|s| s.role.as_str()).unwrap();
    for (name, by) in [
        ("POST /v1/tasks", "gateway"),
        ("store.submit", "gateway"),
        ("task.queued", "worker"),
        ("store.claim", "worker"),
        ("task.attempt", "worker"),
        ("executor.run", "worker"),
        ("store.complete", "worker"),
    ] {
        assert_eq!(role(name), by, "{name}");
    }
}

/// The real Claude Code CLI as the agent, its own telemetry turned on by its definition's `env`
/// (the worker's collector settings are never handed over): its spans land in the task's trace
/// under the `executor.run` span, through the `TRACEPARENT` the worker gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_agents_own_spans_join_the_tasks_trace() {
    let Some(claude) = crate::common::claude_cli() else { return };
    let mock = crate::common::anthropic_mock::Mock::start().await;
    let rx = Receiver::start().await;
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "[agents.coder]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmax_attempts = 1\n\
         model = \"claude-sonnet-4-5\"\n\
         [agents.coder.env]\nANTHROPIC_BASE_URL = \"{}\"\nANTHROPIC_API_KEY = \"test-key\"\n\
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\nDISABLE_AUTOUPDATER = \"1\"\nHOME = \"{}\"\n\
         CLAUDE_CODE_ENABLE_TELEMETRY = \"1\"\nCLAUDE_CODE_ENHANCED_TELEMETRY_BETA = \"1\"\n\
         OTEL_TRACES_EXPORTER = \"otlp\"\nOTEL_METRICS_EXPORTER = \"none\"\nOTEL_LOGS_EXPORTER = \"none\"\n\
         OTEL_EXPORTER_OTLP_PROTOCOL = \"http/protobuf\"\nOTEL_EXPORTER_OTLP_ENDPOINT = \"{}\"\n\
         OTEL_TRACES_EXPORT_INTERVAL = \"200\"\nOTEL_BSP_SCHEDULE_DELAY = \"200\"\n\
         [telemetry]\nendpoint = \"{}\"\n",
        mock.url,
        home.path().display(),
        rx.url,
        rx.url
    );
    let smith = Smith::start(Opts::new().config(&config).env("OTEL_BSP_SCHEDULE_DELAY", "100")).await;
    let api = smith.api();
    let (trace, span) = caller();
    let body = json!({"agent": "coder", "input": "PLAIN say hello"});
    run_traced(&api, body, &format!("00-{trace}-{span}-01"), Duration::from_secs(90)).await;
    let ours = rx.wait_for(&trace, &["task.attempt", "executor.run"]).await;
    let exec = ours.iter().find(|s| s.name == "executor.run").unwrap().id.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = rx.of_trace(&trace);
        let theirs: Vec<&Got> = spans.iter().filter(|s| s.service != "smith").collect();
        // e.g. `claude_code.llm_request` (gen_ai.provider.name = anthropic), a child of ours
        if theirs.iter().any(|s| s.parent == exec && s.service == "claude-code" && s.name.starts_with("claude_code.")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span of the CLI under executor.run {exec}: {spans:#?}\nall: {:#?}",
            rx.spans.lock().unwrap().iter().filter(|s| s.service != "smith").collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An `anthropic` agent against the mock Messages API: each request to the provider is a client
/// span under `executor.run`, named and attributed by OpenTelemetry's GenAI conventions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_agents_provider_requests_are_client_spans_under_its_executor() {
    let mock = crate::common::anthropic_mock::Mock::start().await;
    let rx = Receiver::start().await;
    let config = format!(
        "[agents.writer]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
         api_key = \"sk-test-secret\"\nmax_attempts = 1\n[telemetry]\nendpoint = \"{}\"\n",
        mock.url, rx.url
    );
    let smith = Smith::start(Opts::new().config(&config).env("OTEL_BSP_SCHEDULE_DELAY", "100")).await;
    let api = smith.api();
    let (trace, span) = caller();
    let body = json!({"agent": "writer", "input": "say hello"});
    let done = run_traced(&api, body, &format!("00-{trace}-{span}-01"), WAIT).await;
    let spans = rx.wait_for(&trace, &["executor.run", "chat claude-sonnet-4-5"]).await;
    let exec = spans.iter().find(|s| s.name == "executor.run").unwrap();
    let chat = spans.iter().find(|s| s.name == "chat claude-sonnet-4-5").unwrap();
    assert_eq!(chat.parent, exec.id, "the request is the executor's child");
    assert_eq!(chat.kind, 3, "a client span (SPAN_KIND_CLIENT)");
    let attr = |k: &str| chat.attrs.get(k).cloned().unwrap_or_default();
    assert_eq!(
        (attr("gen_ai.provider.name").as_str(), attr("gen_ai.request.model").as_str()),
        ("anthropic", "claude-sonnet-4-5")
    );
    let used = done["usage"]["input_tokens"].as_u64().unwrap();
    assert_eq!(attr("gen_ai.usage.input_tokens"), used.to_string(), "{chat:?} against {done}");
    // the key never leaves: not in any attribute
    assert!(spans.iter().all(|s| s.attrs.values().all(|v| !v.contains("sk-test-secret"))), "{spans:#?}");
}

/// A schedule's fire starts its task's trace: the task's spans hang under `schedule.fire`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_tasks_trace_starts_at_its_fire() {
    let rx = Receiver::start().await;
    let config = format!("{TRACER}[telemetry]\nendpoint = \"{}\"\n", rx.url);
    let smith = Smith::start(Opts::new().config(&config).env("OTEL_BSP_SCHEDULE_DELAY", "100")).await;
    let api = smith.api();
    let (status, created) =
        api.post("/v1/schedules", &json!({"agent": "tracer", "input": null, "cron": "* * * * * *"})).await;
    assert_eq!(status, 201, "{created}");
    let schedule = created["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    let task = loop {
        let (_, page) = api.get("/v1/tasks?agent=tracer&status=succeeded").await;
        if let Some(t) = page["items"].as_array().and_then(|i| i.first()).cloned() {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no fired task succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    api.post(&format!("/v1/schedules/{schedule}/pause"), &json!({})).await;
    let tp = task["traceparent"].as_str().unwrap_or_else(|| panic!("a fired task carries a trace: {task}"));
    let trace = tp.split('-').nth(1).unwrap().to_string();
    let spans = rx.wait_for(&trace, &["schedule.fire", "task.attempt", "executor.run"]).await;
    let fire = spans.iter().find(|s| s.name == "schedule.fire").unwrap();
    assert_eq!(fire.parent, "", "the fire is the trace's root: {fire:?}");
    assert_eq!(fire.attrs.get("smith.schedule.id"), Some(&schedule));
    assert_eq!(tp, format!("00-{}-{}-01", fire.trace, fire.id), "the task hangs under the fire");
    let attempt = spans.iter().find(|s| s.name == "task.attempt").unwrap();
    assert_eq!(attempt.parent, fire.id);
}
