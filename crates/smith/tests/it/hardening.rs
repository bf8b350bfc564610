//! The gateway's own doors, through the real binary over HTTP: agent definitions served
//! without their secrets and with the caller's tenant's counts only; request bodies that must
//! be declared JSON; foreign `Origin` and `Host` refused; unauthenticated floods counted, not
//! stored row by row; session ids validated and owned by a tenant; an agent that never runs
//! outside its work dir; task lists bounded in bytes.

use crate::common;

use common::{Api, Opts, Smith};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const ROOT: &str = "root-token-for-tests-0123456789";
const SECRET: &str = "sk-ant-test-secret-4242";

/// Creates a key as the platform and returns a client using it.
async fn key(root: &Api, tenant: &str, scopes: &[&str]) -> Api {
    let (status, body) = root.post("/v1/keys", &json!({"tenant": tenant, "scopes": scopes, "name": "test"})).await;
    assert_eq!(status, 201, "create key: {body}");
    Api::new(&root.base, Some(body["secret"].as_str().expect("the secret").to_string()))
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The agent's `(queued + running)` as `api` sees it.
async fn in_flight(api: &Api, agent: &str) -> (u64, String) {
    let (status, body) = api.get("/v1/agents").await;
    assert_eq!(status, 200, "{body}");
    let a = items(&body).into_iter().find(|a| a["name"] == agent).unwrap_or_else(|| panic!("{agent} in {body}"));
    (a["queued"].as_u64().unwrap() + a["running"].as_u64().unwrap(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_served_without_secrets_and_with_the_callers_counts_only() {
    let config = format!(
        "[agents.envy]\nexecutor = \"process\"\ncommand = \"true\"\n\
         [agents.envy.env]\nANTHROPIC_API_KEY = \"{SECRET}\"\nPLAIN = \"also-not-shown\"\n"
    );
    let s = Smith::start(Opts::new().token(ROOT).config(&config)).await;
    let root = s.api();
    let acme = key(&root, "acme", &["tasks:write", "tasks:read"]).await;
    let globex = key(&root, "globex", &["tasks:write", "tasks:read"]).await;
    let acme_read = key(&root, "acme", &["tasks:read"]).await;
    for _ in 0..2 {
        acme.submit_id(json!({"agent": "sleep", "input": 30_000})).await;
    }
    globex.submit_id(json!({"agent": "sleep", "input": 30_000})).await;

    for (who, api, want) in
        [("acme", &acme, 2), ("acme read-only", &acme_read, 2), ("globex", &globex, 1), ("platform", &root, 3)]
    {
        let (n, body) = in_flight(api, "sleep").await;
        assert_eq!(n, want, "{who} sees its own tenant's sleep tasks only: {body}");
        assert!(!body.contains(SECRET) && !body.contains("also-not-shown"), "{who} was served a secret: {body}");
        let (_, list) = api.get("/v1/agents").await;
        let envy = items(&list).into_iter().find(|a| a["name"] == "envy").expect("envy");
        assert_eq!(envy["env"], json!({"ANTHROPIC_API_KEY": "<redacted>", "PLAIN": "<redacted>"}), "{who}: names kept");
    }
    // the real values still reach the agent's process: the redaction is only in what is served
    assert!(!s.stderr().contains(SECRET), "a secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_must_be_declared_json() {
    let s = Smith::start(Opts::new()).await;
    let body = r#"{"agent":"echo","input":"x"}"#;
    for ct in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/ld+json")] {
        for path in ["/v1/tasks", "/v1/sessions", "/mcp"] {
            let mut r = s.request(Method::POST, path).body(body);
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            let (status, answer) = s.send(r).await;
            assert_eq!(status, 415, "{path} with {ct:?}: {answer}");
            assert_eq!(answer["error"]["code"], "unsupported_media_type", "{answer}");
        }
    }
    assert!(s.list_all("").await.is_empty(), "nothing was created");
    let r = s.request(Method::POST, "/v1/tasks").header("content-type", "application/json; charset=utf-8").body(body);
    let (status, task) = s.send(r).await;
    assert_eq!(status, 201, "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_and_hosts_are_refused() {
    let config = "[server]\npublic_url = \"https://smith.example.com\"\n\
                  allowed_origins = [\"https://console.example.com\"]\n";
    let s = Smith::start(Opts::new().config(config)).await;
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let submit = |headers: Vec<(&'static str, String)>| {
        let mut r = s.request(Method::POST, "/v1/tasks").json(&json!({"agent": "echo", "input": "x"}));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        s.send(r)
    };
    // a page on another site, and DNS rebinding: a name that is not this server's
    for (what, headers) in [
        ("foreign origin", vec![("origin", "http://evil.example".to_string())]),
        ("another local port", vec![("origin", "http://localhost:3000".to_string())]),
        ("opaque origin", vec![("origin", "null".to_string())]),
        ("foreign host", vec![("host", format!("evil.example:{port}"))]),
        (
            "rebound host and its origin",
            vec![("host", format!("evil.example:{port}")), ("origin", format!("http://evil.example:{port}"))],
        ),
    ] {
        let (status, body) = submit(headers).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["error"]["code"], "permission_denied", "{body}");
    }
    let (status, _) = s.send(s.request(Method::GET, "/v1/tasks").header("host", format!("evil.example:{port}"))).await;
    assert_eq!(status, 403, "reads through a rebound name too");
    assert!(s.list_all("").await.is_empty(), "nothing was created");

    for (what, headers) in [
        ("no origin (curl, SDKs)", vec![]),
        ("same origin", vec![("origin", format!("http://127.0.0.1:{port}"))]),
        ("localhost", vec![("host", format!("localhost:{port}")), ("origin", format!("http://localhost:{port}"))]),
        ("allowed origin", vec![("origin", "https://console.example.com".to_string())]),
        ("public_url's host", vec![("host", "smith.example.com".to_string())]),
        (
            "public_url's origin",
            vec![("host", "smith.example.com".to_string()), ("origin", "https://smith.example.com".to_string())],
        ),
    ] {
        let (status, body) = submit(headers).await;
        assert_eq!(status, 201, "{what}: {body}");
    }
}

/// The `smith_gateway_auth_failures_total` samples, summed.
async fn auth_failures(root: &Api) -> u64 {
    let resp = root.request(Method::GET, "/metrics").send().await.expect("metrics");
    let text = resp.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("smith_gateway_auth_failures_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_is_counted_not_stored_row_by_row() {
    let s = Smith::start(Opts::new().token(ROOT)).await;
    let root = s.api();
    let reader = key(&root, "acme", &["tasks:read"]).await;
    let before = auth_failures(&root).await;
    const N: u64 = 60;
    let task = json!({"agent": "echo", "input": 1});
    for i in 0..N {
        let r = root.http.post(root.url("/v1/tasks")).json(&task);
        let r = match i % 4 {
            0 => r,
            1 => r.bearer_auth("nope"),
            2 => r.bearer_auth("smk_nosuchkey_secret"),
            _ => r.header("authorization", "Basic YTpi"),
        };
        let (status, body) = root.send(r).await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(auth_failures(&root).await - before, N, "every refusal is counted");
    // an authenticated request refused by scope keeps its own record
    let (status, _) = reader.post("/v1/tasks", &task).await;
    assert_eq!(status, 403);

    let (status, log) = root.get("/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{log}");
    let records = items(&log);
    let anonymous: Vec<&Value> = records.iter().filter(|r| r["actor"] == "unauthenticated").collect();
    assert_eq!(anonymous.len(), 1, "one summary, not {N} rows: {log:#}");
    assert_eq!(anonymous[0]["action"], "auth.refused", "{log:#}");
    assert_eq!(anonymous[0]["status"], 401);
    let scoped: Vec<&Value> = records.iter().filter(|r| r["status"] == 403).collect();
    assert_eq!(scoped.len(), 1, "{log:#}");
    assert_eq!((scoped[0]["tenant"].as_str(), scoped[0]["action"].as_str()), (Some("acme"), Some("task.submit")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_are_validated_and_owned_by_a_tenant() {
    let s = Smith::start(Opts::new().token(ROOT)).await;
    let root = s.api();
    let acme = key(&root, "acme", &["tasks:write", "tasks:read"]).await;
    let globex = key(&root, "globex", &["tasks:write", "tasks:read"]).await;

    let long = "s".repeat(256);
    for bad in [long.as_str(), &"s".repeat(129), "../x", "a/b", ".", "..", "a b", "tab\there", ""] {
        let (status, body) = acme.post("/v1/tasks", &json!({"agent": "echo", "input": 1, "session_id": bad})).await;
        assert_eq!(status, 422, "{bad:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("session_id"), "{body}");
    }
    assert!(acme.list_all("").await.is_empty(), "nothing was created");
    let ok = "s".repeat(128);
    let (status, body) = acme.post("/v1/tasks", &json!({"agent": "echo", "input": 1, "session_id": ok})).await;
    assert_eq!(status, 201, "{body}");

    // a started session, and one a task named first, are acme's: globex cannot join either
    let (status, session) = acme.post("/v1/sessions", &json!({"agent": "echo", "input": "hello"})).await;
    assert_eq!(status, 201, "{session}");
    let started = session["id"].as_str().unwrap().to_string();
    let (status, body) =
        acme.post("/v1/tasks", &json!({"agent": "echo", "input": 1, "session_id": "acme-chat.1"})).await;
    assert_eq!(status, 201, "{body}");
    for sid in [started.as_str(), "acme-chat.1"] {
        let (status, body) = globex.post("/v1/tasks", &json!({"agent": "echo", "input": "x", "session_id": sid})).await;
        assert_eq!(status, 422, "{sid}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("names no session"), "{body}");
    }
    assert!(globex.list_all("").await.is_empty(), "globex created nothing");
    let (status, body) =
        acme.post("/v1/tasks", &json!({"agent": "echo", "input": 2, "session_id": "acme-chat.1"})).await;
    assert_eq!(status, 201, "the owner keeps adding turns: {body}");
    let (status, shown) = acme.get("/v1/sessions/acme-chat.1").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["tenant"], "acme");
    assert_eq!(shown["turns"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(globex.get("/v1/sessions/acme-chat.1").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_never_runs_outside_its_work_dir() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // sessions' dirs cannot be made: a file is in the way
    std::fs::write(work.join("sessions"), "not a directory").unwrap();
    let marker = dir.path().join("ran-in");
    let script = dir.path().join("fake-claude");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\npwd >> '{}'\ncat > /dev/null\n\
             echo '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\",\"session_id\":\"c\"}}'\n",
            marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "[worker]\nwork_dir = \"{}\"\n[agents.coder]\nexecutor = \"claude-code\"\ncommand = \"{}\"\nmax_attempts = 3\ncollaborate = false\n",
        work.display(),
        script.display()
    );
    let s = Smith::start(Opts::new().config(&config)).await;

    let alone = s.submit_id(json!({"agent": "coder", "input": "hi"})).await;
    let t = s.wait_terminal(&alone, Duration::from_secs(30)).await;
    assert_eq!(t["status"], "succeeded", "a task without a session gets its own dir: {t}");
    let ran = std::fs::read_to_string(&marker).unwrap();
    assert!(ran.trim().starts_with(work.join("tasks").to_str().unwrap()), "{ran}");

    let turn = s.submit_id(json!({"agent": "coder", "input": "hi", "session_id": "chat-1"})).await;
    let t = s.wait_terminal(&turn, Duration::from_secs(30)).await;
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["error"]["code"], "workdir_unavailable", "{t}");
    assert_eq!(t["attempt"], 1, "a permanent cause is not retried: {t}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), ran, "the agent did not run anywhere else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_lists_leave_out_large_values_and_stay_bounded() {
    let s = Smith::start(Opts::new()).await;
    let big = "x".repeat(100_000);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(s.submit_id(json!({"agent": "echo", "input": big})).await);
    }
    let small = s.submit_id(json!({"agent": "echo", "input": "small"})).await;
    for id in ids.iter().chain([&small]) {
        s.wait_terminal(id, Duration::from_secs(20)).await;
    }

    let resp = s.request(Method::GET, "/v1/tasks?limit=1000").send().await.unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.len() < 20_000, "a list of 4 tasks holding 600 KB is {} bytes", text.len());
    let page: Value = serde_json::from_str(&text).unwrap();
    for item in items(&page) {
        if item["id"] == small.as_str() {
            assert_eq!(
                (item["input"].as_str(), item["input_omitted"].as_bool()),
                (Some("small"), Some(false)),
                "{item}"
            );
            assert_eq!((item["input_bytes"].as_u64(), item["result_omitted"].as_bool()), (None, Some(false)));
            assert_eq!(item["result"], "small");
        } else {
            assert_eq!(item["input"], Value::Null, "{item}");
            assert_eq!((item["input_omitted"].as_bool(), item["input_bytes"].as_u64()), (Some(true), Some(100_002)));
            assert_eq!((item["result_omitted"].as_bool(), item["result_bytes"].as_u64()), (Some(true), Some(100_002)));
        }
    }
    let (_, full) = s.get("/v1/tasks?limit=1000&full=true").await;
    assert_eq!(items(&full).len(), 4);
    assert!(items(&full).iter().all(|t| t["input_omitted"] == false && t["input"].is_string()), "full=true");
    assert_eq!(s.get_task(&ids[0]).await["input"].as_str().map(str::len), Some(100_000), "one task is always whole");

    // the page is bounded in bytes even in full: 3 MiB inputs and results, 6 MiB a task
    let huge = "y".repeat(3 << 20);
    for _ in 0..2 {
        let id = s.submit_id(json!({"agent": "echo", "input": huge})).await;
        s.wait_terminal(&id, Duration::from_secs(30)).await;
    }
    let (_, first) = s.get("/v1/tasks?limit=1000&full=true").await;
    assert_eq!(items(&first).len(), 1, "8 MiB hold one such task");
    let cursor = first["next_cursor"].as_str().expect("a next page").to_string();
    let (_, second) = s.get(&format!("/v1/tasks?limit=1000&full=true&cursor={cursor}")).await;
    // the other 6 MiB task and the four before it (600 KB) fit in one page
    assert_eq!(items(&second).len(), 5, "{}", second["next_cursor"]);
    assert!(second["next_cursor"].is_null());
}
