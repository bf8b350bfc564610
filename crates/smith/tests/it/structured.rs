//! Structured output (docs/structured-output.md), through the real binary: an `output_schema`
//! on the agent or the task; output validated for every executor, asked of the provider where
//! it can (the Messages API's `output_config`, the Claude Code CLI's `--json-schema`), one
//! corrective turn for agents that converse, `invalid_output` otherwise, and the parsed object
//! as the task's result and in its parent's `await_task`.

use crate::common::anthropic_mock::{Mock, SHAPE_GOOD};
use crate::common::{self, Opts, Smith};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The schema of the tests: `title` a string (required), `count` an integer.
const SCHEMA_TOML: &str = "{ type = \"object\", properties = { title = { type = \"string\" }, \
                           count = { type = \"integer\" } }, required = [\"title\"] }";

fn schema() -> Value {
    json!({"type": "object", "properties": {"title": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["title"]})
}

/// A `process` agent that prints `out` (after a line of progress when `chatty`).
fn printer(name: &str, out: &str, extra: &str) -> String {
    format!(
        "[agents.{name}]\nexecutor = \"process\"\ncommand = \"sh\"\nargs = [\"-c\", '''echo working; printf '%s\\n' '{out}' ''']\n\
         max_attempts = 3\nretry_backoff = \"10ms\"\n{extra}\n"
    )
}

fn llm(name: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "[agents.{name}]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
         api_key = \"sk-test-secret\"\nstall_timeout = \"20s\"\nmax_attempts = 3\n{extra}\n",
        mock.url
    )
}

fn failure(t: &Value) -> (&str, &str) {
    (t["error"]["code"].as_str().unwrap_or(""), t["error"]["message"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_output_is_validated_and_its_result_is_the_parsed_object() {
    let config = [
        printer("shaped", SHAPE_GOOD, &format!("output_schema = {SCHEMA_TOML}")),
        printer("misshaped", r#"{"title": 5, "count": "three"}"#, &format!("output_schema = {SCHEMA_TOML}")),
        printer("prose", "all done, no JSON here", &format!("output_schema = {SCHEMA_TOML}")),
        printer("plain", r#"{"n": 1}"#, ""),
    ]
    .join("\n");
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();

    // conforming output (after a line of progress): the result is the parsed object
    let (_, t) = api.run(json!({"agent": "shaped", "input": ""}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert_eq!(t["result"], serde_json::from_str::<Value>(SHAPE_GOOD).unwrap());

    // output that breaks the schema fails invalid_output, naming the paths, and is not retried
    let (_, t) = api.run(json!({"agent": "misshaped", "input": ""}), WAIT).await;
    assert_eq!(t["status"], "failed", "{t:#}");
    let (code, message) = failure(&t);
    assert_eq!(code, "invalid_output", "{t:#}");
    assert!(message.contains("at /title") && message.contains("at /count"), "{message}");
    assert_eq!(t["attempt"], 1, "the same agent would answer the same way: {t:#}");
    let (_, t) = api.run(json!({"agent": "prose", "input": ""}), WAIT).await;
    let (code, message) = failure(&t);
    assert_eq!(code, "invalid_output", "{t:#}");
    assert!(message.contains("not JSON") && message.contains("all done"), "{message}");

    // a task's own schema: over an agent without one, and over an agent's
    let (_, t) = api
        .run(
            json!({"agent": "plain", "input": "", "output_schema": {"type": "object",
        "properties": {"n": {"type": "string"}}}}),
            WAIT,
        )
        .await;
    assert_eq!(failure(&t).0, "invalid_output", "{t:#}");
    assert!(failure(&t).1.contains("at /n"), "{t:#}");
    let own = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let (_, t) = api.run(json!({"agent": "plain", "input": "", "output_schema": own}), WAIT).await;
    assert_eq!((t["status"].as_str(), &t["result"]), (Some("succeeded"), &json!({"n": 1})), "{t:#}");
    assert_eq!(t["output_schema"], own, "the task shows its schema");
    let loose = json!({"type": "object", "required": ["count"]});
    let (_, t) = api.run(json!({"agent": "shaped", "input": "", "output_schema": loose}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "the task's schema replaces the agent's: {t:#}");
    let (_, t) = api.run(json!({"agent": "plain", "input": ""}), WAIT).await;
    assert_eq!(
        (&t["result"], &t["output_schema"]),
        (&json!("working\n{\"n\": 1}"), &Value::Null),
        "no schema: as ever"
    );

    // a session's turns take one too: the first through the start, a later one of its own
    let (status, session) =
        api.post("/v1/sessions", &json!({"agent": "plain", "input": "", "output_schema": own})).await;
    assert_eq!(status, 201, "{session}");
    let first = api.wait_terminal(session["turns"][0]["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(first["result"], json!({"n": 1}), "{first:#}");
    let sid = session["id"].as_str().unwrap();
    let wrong = json!({"type": "object", "properties": {"n": {"type": "string"}}});
    let (status, turn) =
        api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "", "output_schema": wrong})).await;
    assert_eq!(status, 201, "{turn}");
    let second = api.wait_terminal(turn["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(failure(&second).0, "invalid_output", "{second:#}");
    for (path, body) in [
        ("/v1/sessions".to_string(), json!({"agent": "plain", "output_schema": own})),
        (format!("/v1/sessions/{sid}/turns"), json!({"input": "", "output_schema": {"type": 5}})),
    ] {
        let (status, answer) = api.post(&path, &body).await;
        assert_eq!(status, 422, "{path} {body}: {answer}");
        assert!(answer.to_string().contains("output_schema"), "{answer}");
    }

    // unusable schemas and overrides are refused at the door, and create nothing
    let (_, before) = api.get("/v1/tasks?limit=500").await;
    for (body, why) in [
        (json!({"agent": "plain", "input": "", "output_schema": {"type": "nonsense"}}), "output_schema"),
        (json!({"agent": "plain", "input": "", "output_schema": "a string"}), "output_schema"),
        (
            json!({"agent": "plain", "input": "", "output_schema": {"$ref": "http://169.254.169.254/x"}}),
            "output_schema",
        ),
        (json!({"agent": "plain", "input": "", "workspace": {"base": "main"}}), "has no workspace"),
        (json!({"agent": "plain", "input": "", "workspace": {"base": "a..b"}}), "workspace.base"),
        (json!({"agent": "plain", "input": "", "workspace": {"base": "main", "x": 1}}), "x"),
    ] {
        let (status, answer) = api.post("/v1/tasks", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer.to_string().contains(why), "{body}: {answer}");
    }
    let (_, after) = api.get("/v1/tasks?limit=500").await;
    assert_eq!(before["items"].as_array().unwrap().len(), after["items"].as_array().unwrap().len());

    // the agent shows its schema
    let (_, agents) = api.get("/v1/agents").await;
    let list = agents["items"].as_array().cloned().unwrap_or_default();
    let shaped = list.iter().find(|a| a["name"] == "shaped").expect("agent shaped listed");
    assert_eq!(shaped["output_schema"], schema(), "{shaped:#}");
    let plain = list.iter().find(|a| a["name"] == "plain").unwrap();
    assert_eq!(plain["output_schema"], Value::Null, "{plain:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_an_unusable_schema_is_refused_at_start() {
    let refused = Smith::start_refused(Opts::new().config(&printer(
        "bad",
        "{}",
        "output_schema = { type = \"object\", properties = { a = { type = 7 } } }",
    )))
    .await;
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("output_schema"), "{}", refused.stderr);
    let missing =
        Smith::start_refused(Opts::new().config(&printer("bad", "{}", "output_schema = \"/no/such/schema.json\"")))
            .await;
    assert!(missing.stderr.contains("/no/such/schema.json"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_agents_ask_the_provider_and_get_one_corrective_turn() {
    let mock = Mock::start().await;
    let config = [
        llm("shaper", &mock, &format!("output_schema = {SCHEMA_TOML}")),
        llm("boss", &mock, ""),
        printer("shaped", r#"{"title": "child", "count": 1}"#, ""),
    ]
    .join("\n");
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();

    // asked natively, answered in shape
    let (_, t) = api.run(json!({"agent": "shaper", "input": "SHAPE good"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    assert_eq!(t["result"], serde_json::from_str::<Value>(SHAPE_GOOD).unwrap());
    let asked = mock.requests().last().cloned().unwrap();
    assert_eq!(asked["output_config"]["format"], json!({"type": "json_schema", "schema": schema()}), "{asked:#}");

    // wrong, then corrected in the same conversation: one more request, usage of both
    let n = mock.requests().len();
    let (id, t) = api.run(json!({"agent": "shaper", "input": "SHAPE fix"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert_eq!(t["result"], serde_json::from_str::<Value>(SHAPE_GOOD).unwrap());
    let requests = mock.requests();
    assert_eq!(requests.len(), n + 2, "one corrective turn");
    let correction = &requests[n + 1]["messages"];
    let roles: Vec<&str> = correction.as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "the conversation continued: {correction:#}");
    assert!(correction[2]["content"].as_str().unwrap().contains("at /title"), "{correction:#}");
    let frames = api.events(&id, WAIT).await;
    let notes: Vec<Value> = frames
        .iter()
        .filter(|f| f.event == "output")
        .map(|f| f.json()["data"].clone())
        .filter(|d| d["type"] == "output_invalid")
        .collect();
    assert_eq!(notes.len(), 1, "{frames:?}");
    assert!(t["usage"]["input_tokens"].as_u64().unwrap() >= 50, "both runs count: {t:#}");

    // still wrong after the correction: invalid_output, not retried
    let n = mock.requests().len();
    let (_, t) = api.run(json!({"agent": "shaper", "input": "SHAPE bad"}), WAIT).await;
    assert_eq!(failure(&t).0, "invalid_output", "{t:#}");
    assert!(failure(&t).1.contains("at /title"), "{t:#}");
    assert_eq!((t["attempt"].as_u64(), mock.requests().len()), (Some(1), n + 2), "{t:#}");

    // a parent spawns a child with a schema: await_task hands it the parsed object
    let (id, t) = api.run(json!({"agent": "boss", "input": "SPAWNSHAPE please"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let (_, children) = api.get(&format!("/v1/tasks?parent_id={id}")).await;
    let child = &children["items"][0];
    assert_eq!(child["result"], json!({"title": "child", "count": 1}), "{children:#}");
    assert!(child["output_schema"].is_object(), "{child:#}");
    let said = t["result"]["text"].as_str().unwrap();
    assert!(said.contains("child said") && said.contains("title"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_answers_through_its_json_schema() {
    let Some(claude) = common::claude_cli() else { return };
    let mock = Mock::start().await;
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "[agents.cc]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmax_attempts = 1\nkill_grace = \"2s\"\n\
         stall_timeout = \"60s\"\noutput_schema = {SCHEMA_TOML}\n\
         env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"test-key\", HOME = \"{}\", \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\" }}\n",
        mock.url,
        home.path().display()
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();

    // the CLI offers the model its StructuredOutput tool; the result is what the tool took
    let (_, t) = api.run(json!({"agent": "cc", "input": "SHAPE good"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    assert_eq!(t["result"], serde_json::from_str::<Value>(SHAPE_GOOD).unwrap());
    let offered: Vec<Value> = mock
        .requests()
        .iter()
        .flat_map(|r| r["tools"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["name"] == "StructuredOutput")
        .collect();
    assert!(!offered.is_empty(), "--json-schema reached the model");
    assert_eq!(offered[0]["input_schema"], schema());

    // prose first: the platform resumes the CLI's session with the correction
    let (id, t) = api.run(json!({"agent": "cc", "input": "SHAPE fix"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
    assert_eq!(t["result"], serde_json::from_str::<Value>(SHAPE_GOOD).unwrap());
    let frames = api.events(&id, WAIT).await;
    assert!(frames.iter().any(|f| f.json()["data"]["type"] == "output_invalid"), "{frames:?}");
    let (_, t) = api.run(json!({"agent": "cc", "input": "SHAPE bad"}), WAIT).await;
    assert_eq!(failure(&t).0, "invalid_output", "{t:#}");
}
