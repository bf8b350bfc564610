//! The tenant matrix, driven by the OpenAPI document: every operation the running server
//! describes at `GET /v1/openapi.json` has a tenant rule in [`RULES`], and tenant B's
//! credentials (a `tasks:read`+`tasks:write` key and an admin key) run each one against tenant
//! A's objects — A's ids in the path, query and body, B's live streams open before A acts and
//! B's replays from the start — and must get 404 / an empty answer / 403 and never a byte of
//! A's data. The same operations run with A's credential and the platform token must show A's
//! objects, so no check passes because nothing is there.
//!
//! An operation in the document without a rule fails the test by name: a route added later
//! (crates/gateway/tests/openapi.rs makes every route appear in the document) cannot skip the
//! tenant question. Each deployment collects every violated (operation, rule) and reports them
//! all at once: `smith up` (SQLite, in-process bus) always; PostgreSQL + NATS and PostgreSQL +
//! RabbitMQ when `SMITH_TEST_POSTGRES_URL` with `SMITH_TEST_NATS_URL` / `SMITH_TEST_AMQP_URL`
//! name them (skipped, saying so, otherwise).

use crate::common;
use crate::common::anthropic_mock;
use crate::common::cluster;

use anthropic_mock::Mock;
use cluster::{unique, Cluster, Role, Services};
use common::{Api, Frame, Next, Opts, Smith};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ROOT: &str = "root-token-for-the-tenant-matrix-0123";
/// A's webhook target: an address the SSRF guard allows (so no deployment needs `[webhooks]
/// allow_private`) in IPv6's discard-only prefix (100::/64), so no delivery leaves the machine.
const WEBHOOK_URL: &str = "https://[100::1]/hook";
const WAIT: Duration = Duration::from_secs(20);
/// How long streams keep reading after A's last write: long enough for every live event.
const SETTLE: Duration = Duration::from_secs(2);

/// What tenant B may get from an operation on tenant A's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// One of A's objects named in the path: B gets 404 exactly as for a missing one, and a
    /// write changes nothing.
    OwnObject,
    /// A listing or total: B's answer holds none of A's objects, whatever A's ids B passes as
    /// filters.
    TenantList,
    /// Creates an object: it is B's, and A's objects B names in the body (parent, session,
    /// idempotency key) are refused or not reached.
    Create,
    /// An SSE feed: B's live stream (open before A acts) and replay (`after=0`) carry none of A's
    /// events; A-only kinds (discoveries, messages) too.
    Stream,
    /// Agent definitions shared by every tenant: secret values never served to anyone, counts
    /// of B's tenant only.
    Catalog,
    /// Keys and the audit log: B's non-admin key gets 403, B's admin key sees and changes only
    /// B's tenant.
    Admin,
    /// Fleet figures (nodes, scaling, metrics): no tenant's objects, ids or tenant name.
    Fleet,
    /// The same answer for everyone (health, the API document): no tenant data.
    Public,
    /// The agents' MCP endpoint: B naming A's task is refused; A's discoveries and messages are
    /// invisible to B; A's tasks cannot be awaited or messaged.
    AgentFacing,
}

/// Every operation of the API and its tenant rule. An operation the document lists that is not
/// here fails the test; so does a row the document no longer lists.
const RULES: &[(&str, &str, Rule)] = &[
    ("POST", "/v1/tasks", Rule::Create),
    ("GET", "/v1/tasks", Rule::TenantList),
    ("GET", "/v1/tasks/{id}", Rule::OwnObject),
    ("POST", "/v1/tasks/{id}/cancel", Rule::OwnObject),
    ("GET", "/v1/tasks/{id}/events", Rule::OwnObject),
    ("GET", "/v1/tasks/{id}/patch", Rule::OwnObject),
    ("GET", "/v1/tasks/{id}/artifacts", Rule::OwnObject),
    ("GET", "/v1/tasks/{id}/artifacts/{name}", Rule::OwnObject),
    // a real pending request of A's is probed by approvals::another_tenant_cannot_see_or_answer_a_request
    ("GET", "/v1/tasks/{id}/approvals", Rule::OwnObject),
    ("POST", "/v1/tasks/{id}/approvals/{aid}", Rule::OwnObject),
    ("GET", "/v1/approvals", Rule::TenantList),
    ("GET", "/v1/events", Rule::Stream),
    ("POST", "/v1/sessions", Rule::Create),
    ("GET", "/v1/sessions/{id}", Rule::OwnObject),
    ("POST", "/v1/sessions/{id}/turns", Rule::OwnObject),
    ("GET", "/v1/agents", Rule::Catalog),
    ("GET", "/v1/nodes", Rule::Fleet),
    ("GET", "/v1/scaling", Rule::Fleet),
    // accounts are operator config and their levels every tenant's traffic: the platform's alone
    ("GET", "/v1/providers", Rule::Fleet),
    ("GET", "/v1/usage", Rule::TenantList),
    ("POST", "/mcp", Rule::AgentFacing),
    ("GET", "/mcp", Rule::AgentFacing),
    ("GET", "/healthz", Rule::Public),
    ("GET", "/readyz", Rule::Public),
    // per-tenant series (smith_tenant_*) would name A's tenant and its spend: none for B
    ("GET", "/metrics", Rule::Fleet),
    ("GET", "/v1/openapi.json", Rule::Public),
    ("POST", "/v1/keys", Rule::Admin),
    ("GET", "/v1/keys", Rule::Admin),
    ("POST", "/v1/keys/{id}/revoke", Rule::Admin),
    ("GET", "/v1/audit", Rule::Admin),
    ("POST", "/v1/webhooks", Rule::Create),
    ("GET", "/v1/webhooks", Rule::TenantList),
    ("GET", "/v1/webhooks/{id}", Rule::OwnObject),
    ("DELETE", "/v1/webhooks/{id}", Rule::OwnObject),
    ("GET", "/v1/webhooks/{id}/deliveries", Rule::OwnObject),
    ("POST", "/v1/webhooks/{id}/deliveries/{delivery}/replay", Rule::OwnObject),
    ("POST", "/v1/schedules", Rule::Create),
    ("GET", "/v1/schedules", Rule::TenantList),
    ("GET", "/v1/schedules/{id}", Rule::OwnObject),
    ("DELETE", "/v1/schedules/{id}", Rule::OwnObject),
    ("POST", "/v1/schedules/{id}/pause", Rule::OwnObject),
    ("POST", "/v1/schedules/{id}/resume", Rule::OwnObject),
];

/// `(METHOD, path)` of every operation in an OpenAPI document, by path.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for (method, _) in item.as_object().expect("a path item is an object") {
            if matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace") {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn rule_of(method: &str, path: &str) -> Option<Rule> {
    RULES.iter().find(|(m, p, _)| *m == method && *p == path).map(|r| r.2)
}

/// The table and a document agree: every operation has a rule, every rule an operation.
fn coverage(doc: &Value) -> Vec<String> {
    let ops = operations(doc);
    let mut out = Vec::new();
    for (m, p) in &ops {
        if rule_of(m, p).is_none() {
            out.push(format!(
                "{m} {p}: no tenant rule (add it to RULES in crates/smith/tests/it/tenancy.rs with a probe)"
            ));
        }
    }
    for (m, p, r) in RULES {
        if !ops.iter().any(|(om, op)| om == m && op == p) {
            out.push(format!("{m} {p} ({r:?}): in RULES but not in the OpenAPI document"));
        }
    }
    out
}

#[test]
fn every_operation_in_the_document_has_a_tenant_rule() {
    let doc: Value =
        serde_json::from_str(include_str!("../../../gateway/src/openapi.json")).expect("openapi.json is JSON");
    let gaps = coverage(&doc);
    assert!(gaps.is_empty(), "the tenant matrix does not cover the API:\n  {}", gaps.join("\n  "));
    // the check bites: an operation added to the document without a rule is named
    let mut more = doc.clone();
    more["paths"]["/v1/widgets/{id}"] = json!({"get": {"operationId": "getWidget"}});
    assert_eq!(
        coverage(&more),
        ["GET /v1/widgets/{id}: no tenant rule (add it to RULES in crates/smith/tests/it/tenancy.rs with a probe)"]
    );
}

// ---------------------------------------------------------------------------------------------
// The deployment under test and the two tenants' objects

/// The agents every deployment defines, with secrets of their own: `vault` holds one in its
/// `env` and runs long, one at a time per worker, so A's tasks sit running and queued while B
/// reads the agents' counts; `scribe` (an LLM agent on the mock Messages API) holds an API key
/// and spends tokens, which the metrics count by tenant.
struct Agents {
    env_secret: String,
    api_key: String,
    mock: Mock,
    /// The repository `scm`'s tasks check out (each its own worktree).
    repo: tempfile::TempDir,
    /// Where the distributed deployments' workers and gateways keep artifacts.
    artifacts: tempfile::TempDir,
}

impl Agents {
    async fn start() -> Agents {
        Agents {
            env_secret: unique("sk-secret-"),
            api_key: unique("sk-ant-secret-"),
            mock: Mock::start().await,
            repo: common::git_repo(&[("README", "a repository\n")]),
            artifacts: tempfile::tempdir().expect("artifact dir"),
        }
    }

    fn config(&self) -> String {
        format!(
            "[agents.vault]\nexecutor = \"process\"\ncommand = \"sleep\"\nargs = [\"30\"]\ninput = \"none\"\n\
             concurrency = 1\nenv = {{ API_KEY = \"{}\" }}\n\n\
             [agents.scribe]\nexecutor = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{}\"\n\
             api_key = \"{}\"\ncollaborate = false\n\n\
             [agents.scm]\nexecutor = \"process\"\ncommand = \"sh\"\n\
             args = [\"-c\", \"cat > note.txt && cp note.txt \\\"${{SMITH_ARTIFACTS:?}}/note.txt\\\"\"]\n\
             workspace = {{ repo = \"{}\" }}\n",
            self.env_secret,
            self.mock.url,
            self.api_key,
            self.repo.path().display()
        )
    }
}

/// What tenant B must never see, by name.
struct Secrets {
    /// In every text A writes: task input and output, session turn, discovery, message.
    marker: String,
    /// The agents' secrets (`vault`'s `env` value, `scribe`'s API key): no one is ever served them.
    agent_secrets: Vec<(&'static str, String)>,
    /// A's task, session and key ids, labelled.
    ids: Vec<(&'static str, String)>,
}

impl Secrets {
    /// The names of A's data found in `text` (with where the first one is), except what B
    /// itself named in the request.
    fn leaked(&self, text: &str, named: &[&str]) -> (Vec<String>, Option<usize>) {
        let mut needles: Vec<(String, String)> = vec![(format!("A's marker {}", self.marker), self.marker.clone())];
        for (label, secret) in &self.agent_secrets {
            needles.push((label.to_string(), secret.clone()));
        }
        if !named.contains(&"acme") {
            needles.push(("A's tenant name \"acme\"".into(), "\"acme\"".into()));
        }
        for (label, id) in &self.ids {
            if !named.contains(&id.as_str()) {
                needles.push((format!("{label} {id}"), id.clone()));
            }
        }
        let mut names = Vec::new();
        let mut first: Option<usize> = None;
        for (name, needle) in needles {
            if let Some(at) = text.find(&needle) {
                names.push(name);
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        (names, first)
    }
}

/// The violations found in one deployment, each naming its operation and rule.
struct Findings {
    deployment: &'static str,
    list: Vec<String>,
}

impl Findings {
    fn fail(&mut self, op: &str, rule: Rule, what: String) {
        self.list.push(format!("{op} [{rule:?}]: {what}"));
    }

    fn check(&mut self, ok: bool, op: &str, rule: Rule, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(op, rule, what());
        }
    }

    /// B's answer must hold no byte of A's data.
    fn clean(&mut self, op: &str, rule: Rule, who: &str, body: &str, s: &Secrets, named: &[&str]) {
        let (found, at) = s.leaked(body, named);
        if let Some(at) = at {
            self.fail(op, rule, format!("{who} was served {}: …{}…", found.join(", "), excerpt(body, at)));
        }
    }

    /// B's stream must carry no frame with A's data: names the frames' kinds and shows the first.
    fn clean_frames(&mut self, op: &str, rule: Rule, who: &str, frames: &[Frame], s: &Secrets) {
        let mut kinds = std::collections::BTreeSet::new();
        let mut found = std::collections::BTreeSet::new();
        let mut first = None;
        let mut n = 0;
        for f in frames {
            let (names, _) = s.leaked(&f.data, &[]);
            if names.is_empty() {
                continue;
            }
            n += 1;
            kinds.insert(f.event.clone());
            found.extend(names);
            first.get_or_insert_with(|| format!("id:{} event:{} data:{}", f.id, f.event, f.data));
        }
        if let Some(first) = first {
            let kinds: Vec<String> = kinds.into_iter().collect();
            let found: Vec<String> = found.into_iter().collect();
            self.fail(
                op,
                rule,
                format!(
                    "{who} carried {n} of A's events (kinds {}), with {}; the first: {}",
                    kinds.join(", "),
                    found.join(", "),
                    clip(&first)
                ),
            );
        }
    }
}

/// Up to 200 characters before `at` and 300 after.
fn excerpt(text: &str, at: usize) -> String {
    let mut start = at.saturating_sub(200);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (at + 300).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text[start..end].replace('\n', " ⏎ ")
}

fn clip(text: &str) -> String {
    if text.len() <= 600 {
        return text.to_string();
    }
    let mut end = 600;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// The credentials and objects of one run.
struct World {
    root: Api,
    a: Api,
    a_admin: Api,
    b: Api,
    b_admin: Api,
    secrets: Secrets,
    /// A's echo task, whose input and output hold the marker.
    a_task: String,
    a_session: String,
    a_turn: String,
    a_admin_id: String,
    /// A's `vault` tasks: one running, the other queued behind it.
    a_vault: Vec<String>,
    /// A's `scm` task, whose workspace patch and artifact `note.txt` hold the marker.
    a_patched: String,
    a_idempotency_key: String,
    /// A's webhook subscription (its description holds the marker) and one of its deliveries.
    a_webhook: String,
    a_delivery: String,
    /// A's schedule (paused; its name and input hold the marker).
    a_schedule: String,
    /// B's own echo task: B's streams and lists must show it (they work at all).
    b_task: String,
    b_marker: String,
    b_streams: Vec<(String, Reader)>,
    a_streams: Vec<(String, Reader)>,
}

impl World {
    /// Tenant B's credentials: every read runs with each.
    fn bs(&self) -> [(&'static str, &Api); 2] {
        [("B", &self.b), ("B's admin", &self.b_admin)]
    }
}

/// Creates a key with the platform token; returns a client using it and the key's id.
async fn key(root: &Api, tenant: &str, scopes: &[&str]) -> (Api, String) {
    let (status, body) = root.post("/v1/keys", &json!({"tenant": tenant, "scopes": scopes, "name": "matrix"})).await;
    assert_eq!(status, 201, "create a key for {tenant}: {body}");
    let secret = body["secret"].as_str().expect("the secret").to_string();
    let id = body["key"]["id"].as_str().expect("the key's id").to_string();
    (Api::new(&root.base, Some(secret)), id)
}

async fn mcp(api: &Api, task: Option<&str>, body: &Value) -> (reqwest::StatusCode, Value) {
    let mut r = api.request(Method::POST, "/mcp").json(body);
    if let Some(t) = task {
        r = r.header("x-smith-task", t);
    }
    api.send(r).await
}

/// As `task` of `api`'s tenant, shares the discovery `content` over MCP.
async fn share(api: &Api, task: &str, content: &str, confidence: f64) -> Value {
    let args = json!({"type": "insight", "content": content, "confidence": confidence});
    mcp(api, Some(task), &tool("share_discovery", args)).await.1
}

fn tool(name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}})
}

/// An SSE stream read in the background until stopped; keeps every frame.
#[derive(Clone)]
struct Reader {
    frames: Arc<Mutex<Vec<Frame>>>,
    error: Arc<Mutex<Option<String>>>,
}

impl Reader {
    async fn open(api: &Api, path: &str, stop: &CancellationToken) -> Reader {
        let mut stream = api.sse(path, None).await;
        let r = Reader { frames: Default::default(), error: Default::default() };
        let (frames, error, stop) = (r.frames.clone(), r.error.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = stream.next_within(Duration::from_secs(60)) => n,
                    _ = stop.cancelled() => return,
                };
                match next {
                    Next::Frame(f) => frames.lock().expect("frames").push(f),
                    Next::Timeout => {}
                    Next::Closed => {
                        *error.lock().expect("error") =
                            Some(stream.error.clone().unwrap_or_else(|| "closed by the server".into()));
                        return;
                    }
                }
            }
        });
        r
    }

    fn frames(&self) -> Vec<Frame> {
        self.frames.lock().expect("frames").clone()
    }

    fn closed(&self) -> Option<String> {
        self.error.lock().expect("error").clone()
    }
}

/// A replay read to its end: every frame until the stream is quiet for a while (each reader
/// has events of its own, so the first comes).
async fn replay(api: &Api, path: &str, last_event_id: Option<&str>) -> Vec<Frame> {
    let mut s = api.sse(path, last_event_id).await;
    let mut frames = Vec::new();
    let mut wait = WAIT;
    while let Next::Frame(f) = s.next_within(wait).await {
        frames.push(f);
        wait = Duration::from_millis(1500);
    }
    frames
}

/// The frames' data, one line each.
fn data(frames: &[Frame]) -> String {
    frames.iter().map(|f| format!("{}\n", f.data)).collect()
}

async fn eventually(what: &str, mut f: impl AsyncFnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: not within {WAIT:?}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Keys, B's streams (open before A acts), then A's objects.
async fn setup(root: Api, agents: &Agents, stop: &CancellationToken) -> World {
    let (a, _) = key(&root, "acme", &["tasks:read", "tasks:write"]).await;
    let (a_admin, a_admin_id) = key(&root, "acme", &["admin"]).await;
    let (b, _) = key(&root, "globex", &["tasks:read", "tasks:write"]).await;
    let (b_admin, _) = key(&root, "globex", &["admin"]).await;

    // the live streams, open before anything happens; A's own prove A's data flows live at all
    let paths = ["/v1/events", "/v1/events?after=0", "/v1/events?kind=discovery,message", "/v1/events?agent=echo"];
    let mut b_streams = Vec::new();
    let mut a_streams = Vec::new();
    for p in paths {
        b_streams.push((p.to_string(), Reader::open(&b, p, stop).await));
        a_streams.push((p.to_string(), Reader::open(&a, p, stop).await));
    }

    let marker = unique("acme-secret-");
    let b_marker = unique("globex-own-");
    let a_idempotency_key = unique("matrix-");
    // an allowed address (no name to resolve) where nothing answers: deliveries stay pending
    let hook = json!({"url": WEBHOOK_URL, "kinds": ["task.*"], "description": format!("{marker} hook")});
    let (status, body) = a.post("/v1/webhooks", &hook).await;
    assert_eq!(status, 201, "A subscribes a webhook: {body}");
    let a_webhook = body["id"].as_str().expect("webhook id").to_string();
    let schedule = json!({"name": format!("{marker} schedule"), "agent": "echo", "input": format!("{marker} scheduled"),
                          "cron": "0 0 1 1 *", "timezone": "Europe/Berlin", "paused": true});
    let (status, body) = a.post("/v1/schedules", &schedule).await;
    assert_eq!(status, 201, "A creates a schedule: {body}");
    let a_schedule = body["id"].as_str().expect("schedule id").to_string();
    let a_task = a
        .submit_id(json!({"agent": "echo", "input": format!("{marker} task"), "idempotency_key": a_idempotency_key}))
        .await;
    let (status, session) = a.post("/v1/sessions", &json!({"agent": "echo", "input": format!("{marker} turn")})).await;
    assert_eq!(status, 201, "A starts a session: {session}");
    let a_session = session["id"].as_str().expect("session id").to_string();
    let a_turn = session["turns"][0]["id"].as_str().expect("the first turn").to_string();
    let mut a_vault = Vec::new();
    for _ in 0..2 {
        a_vault.push(a.submit_id(json!({"agent": "vault", "input": format!("{marker} vault")})).await);
    }
    // tokens spent: the metrics' per-tenant series now name A's tenant
    let a_llm = a.submit_id(json!({"agent": "scribe", "input": format!("{marker} write a line")})).await;
    let a_patched = a.submit_id(json!({"agent": "scm", "input": format!("{marker} patch")})).await;
    let b_task = b.submit_id(json!({"agent": "echo", "input": b_marker})).await;
    for id in [&a_task, &a_turn, &a_llm, &a_patched] {
        let t = a.wait_terminal(id, WAIT).await;
        assert_eq!(t["status"], "succeeded", "A's task: {t}");
        assert!(t.to_string().contains(&marker), "A's task holds its marker: {t}");
    }
    b.wait_terminal(&b_task, WAIT).await;
    // B's own discovery: B's discovery streams are not empty for want of any
    let shared = share(&b, &b_task, &format!("{b_marker} discovery"), 0.5).await;
    assert_eq!(shared["result"]["isError"], false, "B shares a discovery: {shared}");
    let shared = share(&a, &a_task, &format!("{marker} discovery"), 0.9).await;
    assert_eq!(shared["result"]["isError"], false, "A shares a discovery: {shared}");
    let (_, sent) =
        mcp(&a, Some(&a_task), &tool("send_message", json!({"to_agent": "echo", "body": format!("{marker} message")})))
            .await;
    assert_eq!(sent["result"]["isError"], false, "A sends a message: {sent}");
    eventually("one of A's vault tasks runs", async || {
        let t = a.get_task(&a_vault[0]).await;
        if t["status"] == "running" {
            Ok(())
        } else {
            Err(t["status"].to_string())
        }
    })
    .await;
    // the live streams have everything A did
    tokio::time::sleep(SETTLE).await;
    let mut a_delivery = String::new();
    eventually("A's webhook has deliveries", async || {
        let (_, page) = a.get(&format!("/v1/webhooks/{a_webhook}/deliveries")).await;
        match page["items"][0]["id"].as_str() {
            Some(id) => {
                a_delivery = id.to_string();
                Ok(())
            }
            None => Err(page.to_string()),
        }
    })
    .await;

    let secrets = Secrets {
        marker,
        agent_secrets: vec![
            ("the vault agent's env secret value", agents.env_secret.clone()),
            ("the scribe agent's API key", agents.api_key.clone()),
        ],
        ids: vec![
            ("A's task", a_task.clone()),
            ("A's session", a_session.clone()),
            ("A's session turn", a_turn.clone()),
            ("A's LLM task", a_llm.clone()),
            ("A's vault task", a_vault[0].clone()),
            ("A's queued vault task", a_vault[1].clone()),
            ("A's admin key", a_admin_id.clone()),
            ("A's webhook", a_webhook.clone()),
            ("A's webhook delivery", a_delivery.clone()),
            ("A's schedule", a_schedule.clone()),
        ],
    };
    World {
        root,
        a,
        a_admin,
        b,
        b_admin,
        secrets,
        a_task,
        a_session,
        a_turn,
        a_admin_id,
        a_vault,
        a_patched,
        a_idempotency_key,
        a_webhook,
        a_delivery,
        a_schedule,
        b_task,
        b_marker,
        b_streams,
        a_streams,
    }
}

// ---------------------------------------------------------------------------------------------
// The probes: one per operation, applying its rule

/// Runs every operation of the served document under its rule; returns every violation.
async fn matrix(deployment: &'static str, root: Api, agents: &Agents) -> Findings {
    let stop = CancellationToken::new();
    let w = setup(root, agents, &stop).await;
    let mut f = Findings { deployment, list: Vec::new() };

    let (status, doc) = w.root.get("/v1/openapi.json").await;
    assert_eq!(status, 200, "the served OpenAPI document: {doc}");
    for gap in coverage(&doc) {
        f.list.push(gap);
    }
    // reads first: B's writes name A's ids on purpose, and B's later reads may echo them back
    let mut ops = operations(&doc);
    ops.sort_by_key(|(method, _)| method != "GET");
    for (method, path) in ops {
        let Some(rule) = rule_of(&method, &path) else { continue };
        let op = format!("{method} {path}");
        probe(&w, &mut f, &op, rule).await;
    }
    stop.cancel();
    // A's vault tasks end here: A may cancel its own
    for id in &w.a_vault {
        let (status, body) = w.a.cancel(id).await;
        f.check(status == 202, "POST /v1/tasks/{id}/cancel", Rule::OwnObject, || {
            format!("A cannot cancel its own task {id}: {status} {body}")
        });
    }
    f
}

/// A body as text: a JSON string (metrics, plain text) as itself, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn probe(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    let not_found = |f: &mut Findings, who: &str, (status, body): (reqwest::StatusCode, Value)| {
        f.check(status == 404 && body["error"]["code"] == "not_found", op, rule, || {
            format!("{who} got {status} (want 404 not_found, as for a missing object): {}", clip(&body.to_string()))
        });
    };
    match op {
        "GET /v1/tasks/{id}" => {
            for id in [&w.a_task, &w.a_turn, &w.a_vault[0]] {
                for (who, b) in w.bs() {
                    let r = b.get(&format!("/v1/tasks/{id}")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[id]);
                    not_found(f, who, r);
                }
            }
            for (who, api) in [("A", &w.a), ("the platform token", &w.root)] {
                let (status, body) = api.get(&format!("/v1/tasks/{}", w.a_task)).await;
                f.check(status == 200 && body.to_string().contains(&s.marker), op, rule, || {
                    format!("sanity: {who} cannot read A's task: {status} {}", clip(&body.to_string()))
                });
            }
        }
        "POST /v1/tasks/{id}/cancel" => {
            let id = &w.a_vault[0];
            let r = w.b.cancel(id).await;
            f.clean(op, rule, "B", &r.1.to_string(), s, &[id]);
            not_found(f, "B", r);
            let t = w.a.get_task(id).await;
            f.check(t["status"] == "running" && t["cancel_requested"] != true, op, rule, || {
                format!("B's cancel changed A's task: {t}")
            });
        }
        "GET /v1/tasks/{id}/events" => {
            for id in [&w.a_task, &w.a_vault[0]] {
                let path = format!("/v1/tasks/{id}/events");
                for (who, b) in w.bs() {
                    let r = b.send(b.request(Method::GET, &path).header("accept", "text/event-stream")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[id]);
                    not_found(f, who, r);
                    let r = b.send(b.request(Method::GET, &format!("{path}?after=0"))).await;
                    f.clean(op, rule, &format!("{who} (after=0)"), &r.1.to_string(), s, &[id]);
                    not_found(f, &format!("{who} (after=0)"), r);
                }
            }
            let frames = w.a.events(&w.a_task, WAIT).await;
            f.check(frames.iter().any(|fr| fr.data.contains(&s.marker)), op, rule, || {
                format!("sanity: A's own task stream lacks its marker: {frames:?}")
            });
        }
        "GET /v1/tasks/{id}/patch" => {
            for id in [&w.a_patched, &w.a_task] {
                for (who, b) in w.bs() {
                    let r = b.get(&format!("/v1/tasks/{id}/patch")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[id]);
                    not_found(f, who, r);
                }
            }
            let r = w.a.send(w.a.request(Method::GET, &format!("/v1/tasks/{}/patch", w.a_patched))).await;
            f.check(r.0 == 200 && r.1.to_string().contains(&s.marker), op, rule, || {
                format!("sanity: A cannot read its task's patch: {} {}", r.0, clip(&r.1.to_string()))
            });
        }
        "GET /v1/tasks/{id}/artifacts" => {
            for id in [&w.a_patched, &w.a_task] {
                for (who, b) in w.bs() {
                    let r = b.get(&format!("/v1/tasks/{id}/artifacts")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[id]);
                    not_found(f, who, r);
                }
            }
            let r = w.a.get(&format!("/v1/tasks/{}/artifacts", w.a_patched)).await;
            f.check(r.0 == 200 && r.1["artifacts"][0]["name"] == "note.txt", op, rule, || {
                format!("sanity: A cannot list its task's artifacts: {} {}", r.0, clip(&r.1.to_string()))
            });
        }
        "GET /v1/tasks/{id}/artifacts/{name}" => {
            for id in [&w.a_patched, &w.a_task] {
                for (who, b) in w.bs() {
                    let r = b.get(&format!("/v1/tasks/{id}/artifacts/note.txt")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[id]);
                    not_found(f, who, r);
                }
            }
            let r = w.a.get(&format!("/v1/tasks/{}/artifacts/note.txt", w.a_patched)).await;
            f.check(r.0 == 200 && r.1.to_string().contains(&s.marker), op, rule, || {
                format!("sanity: A cannot download its task's artifact: {} {}", r.0, clip(&r.1.to_string()))
            });
        }
        "GET /v1/sessions/{id}" => {
            for (who, b) in w.bs() {
                let r = b.get(&format!("/v1/sessions/{}", w.a_session)).await;
                f.clean(op, rule, who, &r.1.to_string(), s, &[&w.a_session]);
                not_found(f, who, r);
            }
            let (status, body) = w.a.get(&format!("/v1/sessions/{}", w.a_session)).await;
            f.check(status == 200 && body.to_string().contains(&s.marker), op, rule, || {
                format!("sanity: A cannot read its session: {status} {}", clip(&body.to_string()))
            });
        }
        "POST /v1/sessions/{id}/turns" => {
            let path = format!("/v1/sessions/{}/turns", w.a_session);
            let r = w.b.post(&path, &json!({"input": "globex was here"})).await;
            f.clean(op, rule, "B", &r.1.to_string(), s, &[&w.a_session]);
            not_found(f, "B", r);
            let (_, shown) = w.a.get(&format!("/v1/sessions/{}", w.a_session)).await;
            let turns = shown["turns"].as_array().map(Vec::len).unwrap_or(0);
            f.check(turns == 1, op, rule, || format!("B's turn changed A's session (turns {turns}): {shown}"));
        }
        "GET /v1/tasks/{id}/approvals" => {
            for id in [&w.a_task, &w.a_vault[0]] {
                for (who, b) in w.bs() {
                    let r = b.get(&format!("/v1/tasks/{id}/approvals")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[id]);
                    not_found(f, who, r);
                }
            }
            let r = w.a.get(&format!("/v1/tasks/{}/approvals", w.a_task)).await;
            f.check(r.0 == 200 && r.1["items"].is_array(), op, rule, || {
                format!("sanity: A cannot list its task's requests: {} {}", r.0, clip(&r.1.to_string()))
            });
        }
        "POST /v1/tasks/{id}/approvals/{aid}" => {
            let path = format!("/v1/tasks/{}/approvals/apr_0", w.a_vault[0]);
            let r = w.b.post(&path, &json!({"decision": "allow"})).await;
            f.clean(op, rule, "B", &r.1.to_string(), s, &[&w.a_vault[0]]);
            not_found(f, "B", r);
        }
        "GET /v1/approvals" => {
            for (who, b) in w.bs() {
                for q in [String::new(), format!("?task_id={}", w.a_task), "?status=pending".to_string()] {
                    let r = b.get(&format!("/v1/approvals{q}")).await;
                    f.clean(op, rule, who, &r.1.to_string(), s, &[&w.a_task]);
                    f.check(r.0 == 200 && items(&r.1).is_empty(), op, rule, || {
                        format!("{who} listed requests with {q:?}: {} {}", r.0, clip(&r.1.to_string()))
                    });
                }
            }
        }
        "GET /v1/tasks" => {
            let queries = [
                String::new(),
                format!("session_id={}", w.a_session),
                format!("parent_id={}", w.a_task),
                "agent=vault".to_string(),
                "status=running".to_string(),
            ];
            for q in &queries {
                for (who, b) in w.bs() {
                    let (status, body) = b.get(&format!("/v1/tasks?limit=1000&{q}")).await;
                    f.clean(op, rule, &format!("{who} (?{q})"), &body.to_string(), s, &[]);
                    f.check(status == 200, op, rule, || format!("{who}'s listing ?{q}: {status} {body}"));
                }
            }
            let (_, mine) = w.b.get("/v1/tasks?limit=1000").await;
            f.check(mine.to_string().contains(&w.b_task), op, rule, || {
                format!("sanity: B's list lacks B's task: {mine}")
            });
            for (who, api) in [("A", &w.a), ("the platform token", &w.root)] {
                let (_, all) = api.get("/v1/tasks?limit=1000").await;
                f.check(all.to_string().contains(&w.a_task), op, rule, || {
                    format!("sanity: {who}'s list lacks A's task: {}", clip(&all.to_string()))
                });
            }
            let (_, all) = w.root.get("/v1/tasks?limit=1000").await;
            f.check(all.to_string().contains(&w.b_task), op, rule, || {
                "sanity: the platform's list lacks B's task".into()
            });
        }
        "GET /v1/usage" => {
            for q in ["", "?by=tenant"] {
                for (who, b) in w.bs() {
                    let (status, body) = b.get(&format!("/v1/usage{q}")).await;
                    f.clean(op, rule, &format!("{who} ({q})"), &body.to_string(), s, &[]);
                    f.check(status == 200 && items(&body).iter().all(|u| u["key"] == "globex"), op, rule, || {
                        format!("{who}'s usage{q} is not B's alone: {status} {body}")
                    });
                }
            }
            let (_, body) = w.a.get("/v1/usage?by=tenant").await;
            f.check(
                items(&body).iter().any(|u| u["key"] == "acme" && u["input_tokens"].as_u64() > Some(0)),
                op,
                rule,
                || format!("sanity: A's usage lacks A's LLM task's tokens: {body}"),
            );
            let (status, body) = w.b.get("/v1/usage?by=agent").await;
            f.clean(op, rule, "B (?by=agent)", &body.to_string(), s, &[]);
            f.check(status == 403, op, rule, || format!("B's usage by agent (every tenant's sums): {status} {body}"));
            let (status, body) = w.root.get("/v1/usage?by=tenant").await;
            f.check(status == 200, op, rule, || format!("sanity: the platform's usage: {status} {body}"));
        }
        "POST /v1/tasks" => create_task(w, f, op, rule).await,
        "POST /v1/sessions" => {
            let (status, body) = w.b.post("/v1/sessions", &json!({"agent": "echo"})).await;
            f.clean(op, rule, "B", &body.to_string(), s, &[]);
            f.check(status == 201 && body["tenant"] == "globex", op, rule, || {
                format!("B's new session is not B's: {status} {body}")
            });
        }
        "GET /v1/events" => streams(w, f, op, rule).await,
        "GET /v1/agents" => catalog(w, f, op, rule).await,
        "GET /v1/nodes" | "GET /v1/scaling" | "GET /v1/providers" | "GET /metrics" => {
            let path = op.split_once(' ').expect("method and path").1;
            for (who, b) in w.bs() {
                let r = b.send(b.request(Method::GET, path)).await;
                f.clean(op, rule, who, &text(&r.1), s, &[]);
                f.check(matches!(r.0.as_u16(), 200 | 403 | 503), op, rule, || {
                    format!("{who}: {} {}", r.0, clip(&text(&r.1)))
                });
            }
            let (status, body) = w.root.send(w.root.request(Method::GET, path)).await;
            f.check(matches!(status.as_u16(), 200 | 503), op, rule, || {
                format!("sanity: the platform token: {status} {}", clip(&body.to_string()))
            });
        }
        "GET /healthz" | "GET /readyz" | "GET /v1/openapi.json" => {
            let path = op.split_once(' ').expect("method and path").1;
            let (status, body) = w.b.get(path).await;
            f.clean(op, rule, "B", &text(&body), s, &[]);
            f.check(status == 200, op, rule, || format!("B: {status} {}", clip(&text(&body))));
            if path == "/v1/openapi.json" {
                let (_, for_a) = w.a.get(path).await;
                f.check(for_a == body, op, rule, || "A and B are served different documents".into());
            }
        }
        "POST /v1/keys" | "GET /v1/keys" | "POST /v1/keys/{id}/revoke" | "GET /v1/audit" => admin(w, f, op, rule).await,
        "POST /mcp" | "GET /mcp" => agent_facing(w, f, op, rule).await,
        op if op.contains("/v1/webhooks") => webhooks(w, f, op, rule).await,
        op if op.contains("/v1/schedules") => schedules(w, f, op, rule).await,
        _ => f.fail(op, rule, "a rule but no probe in crates/smith/tests/it/tenancy.rs: write one".into()),
    }
}

async fn create_task(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    // a parent in A's tenant names no task
    let (status, body) = w.b.post("/v1/tasks", &json!({"agent": "echo", "input": 1, "parent_id": w.a_task})).await;
    f.clean(op, rule, "B (parent_id)", &body.to_string(), s, &[&w.a_task]);
    f.check(matches!(status.as_u16(), 404 | 422), op, rule, || {
        format!("B's task with A's task as parent_id: {status} (want 422/404) {body}")
    });
    // A's session is not B's to join (a shared session shares its turns' work directory)
    let (status, body) =
        w.b.post("/v1/tasks", &json!({"agent": "echo", "input": "globex in a session", "session_id": w.a_session}))
            .await;
    f.clean(op, rule, "B (session_id)", &body.to_string(), s, &[&w.a_session]);
    f.check(matches!(status.as_u16(), 404 | 422), op, rule, || {
        format!("B's task naming A's session {} was accepted into it: {status} (want 422/404) {body}", w.a_session)
    });
    if let Some(id) = body["id"].as_str() {
        // it ran in A's session: leave no trace of it running while the rest is probed
        let _ = w.b.cancel(id).await;
    }
    // an idempotency key is the tenant's: A's key makes B a new task of its own
    let (status, body) =
        w.b.post("/v1/tasks", &json!({"agent": "echo", "input": 2, "idempotency_key": w.a_idempotency_key})).await;
    f.clean(op, rule, "B (idempotency_key)", &body.to_string(), s, &[]);
    f.check(status == 201 && body["tenant"] == "globex" && body["id"] != w.a_task.as_str(), op, rule, || {
        format!("B's task with A's idempotency key: {status} {body}")
    });
    let (status, again) =
        w.a.post("/v1/tasks", &json!({"agent": "echo", "input": "x", "idempotency_key": w.a_idempotency_key})).await;
    f.check(status == 200 && again["id"] == w.a_task.as_str(), op, rule, || {
        format!("sanity: A's idempotency key no longer names A's task: {status} {again}")
    });
}

/// `GET /v1/events`: the streams opened before A acted, and replays from the start now.
async fn streams(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    for (path, reader) in &w.b_streams {
        let frames = reader.frames();
        f.clean_frames(op, rule, &format!("B's live {path}"), &frames, s);
        if let Some(e) = reader.closed() {
            f.fail(op, rule, format!("B's live {path} ended early: {e}"));
        }
        f.check(data(&frames).contains(&w.b_marker), op, rule, || {
            format!("sanity: B's live {path} lacks B's own events: {}", clip(&data(&frames)))
        });
    }
    for (path, reader) in &w.a_streams {
        let text = data(&reader.frames());
        let want = if path.contains("kind=") {
            vec![format!("{} discovery", s.marker), format!("{} message", s.marker)]
        } else {
            vec![format!("{} task", s.marker)]
        };
        for needle in want {
            f.check(text.contains(&needle), op, rule, || {
                format!("sanity: A's live {path} lacks A's {needle:?}: {}", clip(&text))
            });
        }
    }
    for path in ["/v1/events?after=0", "/v1/events?kind=discovery,message&after=0", "/v1/events?agent=echo&after=0"] {
        let frames = replay(&w.b, path, None).await;
        f.clean_frames(op, rule, &format!("B's replay {path}"), &frames, s);
        f.check(data(&frames).contains(&w.b_marker), op, rule, || format!("sanity: B's replay {path} lacks B's own"));
        let text = data(&replay(&w.a, path, None).await);
        f.check(text.contains(&s.marker), op, rule, || format!("sanity: A's replay {path} lacks A's data"));
    }
    // resuming by Last-Event-ID is the same replay
    let frames = replay(&w.b, "/v1/events", Some("0")).await;
    f.clean_frames(op, rule, "B's replay with Last-Event-ID: 0", &frames, s);
    f.check(data(&frames).contains(&w.b_marker), op, rule, || "sanity: B's Last-Event-ID replay lacks B's own".into());
}

/// `GET /v1/agents`: one catalog for every tenant, with no secret values and B's counts only.
async fn catalog(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    let vault = |body: &Value| items(body).into_iter().find(|a| a["name"] == "vault");
    let (_, body) = w.b_admin.get("/v1/agents").await;
    f.clean(op, rule, "B's admin", &body.to_string(), s, &[]);
    let (status, body) = w.b.get("/v1/agents").await;
    f.clean(op, rule, "B", &body.to_string(), s, &[]);
    match vault(&body) {
        None => f.fail(op, rule, format!("B does not see the vault agent: {status} {}", clip(&body.to_string()))),
        Some(v) => {
            f.check(v["queued"] == 0 && v["running"] == 0, op, rule, || {
                format!(
                    "B's counts for `vault` include A's tasks (B has none): queued {} running {}",
                    v["queued"], v["running"]
                )
            });
            f.check(v["env"].get("API_KEY").is_some(), op, rule, || {
                format!("the env variable's name may be shown, and is not: {}", v["env"])
            });
        }
    }
    for (who, api) in [("A", &w.a), ("the platform token", &w.root)] {
        let (_, body) = api.get("/v1/agents").await;
        f.check(s.agent_secrets.iter().all(|(_, v)| !body.to_string().contains(v.as_str())), op, rule, || {
            format!(
                "{who} was served the vault agent's env secret value: env = {}",
                vault(&body).unwrap_or_default()["env"]
            )
        });
        let v = vault(&body).unwrap_or_default();
        let n = v["queued"].as_u64().unwrap_or(0) + v["running"].as_u64().unwrap_or(0);
        f.check(n >= 1, op, rule, || format!("sanity: {who}'s counts for `vault` miss A's tasks: {v}"));
    }
}

async fn admin(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    let forbidden = |f: &mut Findings, who: &str, (status, body): (reqwest::StatusCode, Value)| {
        f.check(status == 403, op, rule, || format!("{who} got {status} (want 403): {}", clip(&body.to_string())));
    };
    match op {
        "POST /v1/keys" => {
            let r = w.b.post("/v1/keys", &json!({"scopes": ["tasks:read"]})).await;
            f.clean(op, rule, "B", &r.1.to_string(), s, &[]);
            forbidden(f, "B's non-admin key", r);
            let r = w.b_admin.post("/v1/keys", &json!({"tenant": "acme", "scopes": ["admin"]})).await;
            f.clean(op, rule, "B's admin (tenant acme)", &r.1.to_string(), s, &["acme"]);
            forbidden(f, "B's admin making a key for A's tenant", r);
            let (status, body) = w.b_admin.post("/v1/keys", &json!({"scopes": ["tasks:read"]})).await;
            f.clean(op, rule, "B's admin", &body.to_string(), s, &[]);
            f.check(status == 201 && body["key"]["tenant"] == "globex", op, rule, || {
                format!("B's admin's own key: {status} {body}")
            });
        }
        "GET /v1/keys" => {
            forbidden(f, "B's non-admin key", w.b.get("/v1/keys").await);
            for q in ["", "?tenant=acme"] {
                let (status, body) = w.b_admin.get(&format!("/v1/keys{q}")).await;
                f.clean(op, rule, &format!("B's admin ({q})"), &body.to_string(), s, &["acme"]);
                f.check(
                    matches!(status.as_u16(), 200 | 403) && items(&body).iter().all(|k| k["tenant"] == "globex"),
                    op,
                    rule,
                    || format!("B's admin ({q}): {status} {body}"),
                );
            }
            let (_, body) = w.a_admin.get("/v1/keys").await;
            f.check(body.to_string().contains(&w.a_admin_id), op, rule, || {
                format!("sanity: A's admin lacks A's key: {body}")
            });
        }
        "POST /v1/keys/{id}/revoke" => {
            let path = format!("/v1/keys/{}/revoke", w.a_admin_id);
            let r = w.b.post(&path, &json!({})).await;
            f.clean(op, rule, "B", &r.1.to_string(), s, &[&w.a_admin_id]);
            forbidden(f, "B's non-admin key", r);
            let (status, body) = w.b_admin.post(&path, &json!({})).await;
            f.clean(op, rule, "B's admin", &body.to_string(), s, &[&w.a_admin_id]);
            f.check(status == 404 && body["error"]["code"] == "not_found", op, rule, || {
                format!("B's admin revoking A's key: {status} (want 404) {body}")
            });
            let (status, _) = w.a_admin.get("/v1/keys").await;
            f.check(status == 200, op, rule, || format!("A's admin key stopped working after B's revoke: {status}"));
        }
        "GET /v1/audit" => {
            forbidden(f, "B's non-admin key", w.b.get("/v1/audit").await);
            let queries = ["".to_string(), "?tenant=acme".to_string(), format!("?actor=key:{}", w.a_admin_id)];
            for q in &queries {
                let (status, body) = w.b_admin.get(&format!("/v1/audit{q}")).await;
                f.clean(op, rule, &format!("B's admin ({q})"), &body.to_string(), s, &[&w.a_admin_id, "acme"]);
                f.check(
                    matches!(status.as_u16(), 200 | 403) && items(&body).iter().all(|r| r["tenant"] == "globex"),
                    op,
                    rule,
                    || format!("B's admin ({q}): {status} {}", clip(&body.to_string())),
                );
            }
            let (_, body) = w.a_admin.get("/v1/audit?limit=1000").await;
            f.check(body.to_string().contains(&w.a_task), op, rule, || {
                format!("sanity: A's audit lacks A's submission: {}", clip(&body.to_string()))
            });
        }
        _ => f.fail(op, rule, "a rule but no probe in crates/smith/tests/it/tenancy.rs: write one".into()),
    }
}

async fn agent_facing(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    if op == "GET /mcp" {
        let (status, body) = w.b.get("/mcp").await;
        f.clean(op, rule, "B", &body.to_string(), s, &[]);
        f.check(status.is_client_error(), op, rule, || format!("B: {status} {body}"));
        return;
    }
    // B naming A's task as the caller is refused
    let r = mcp(&w.b, Some(&w.a_task), &tool("list_discoveries", json!({}))).await;
    f.clean(op, rule, "B as A's task", &r.1.to_string(), s, &[&w.a_task]);
    f.check(matches!(r.0.as_u16(), 401 | 403 | 404), op, rule, || {
        format!("B calling as A's task: {} {}", r.0, clip(&r.1.to_string()))
    });
    let r = mcp(&w.b, Some(&w.a_task), &tool("read_messages", json!({}))).await;
    f.clean(op, rule, "B reading A's task's messages", &r.1.to_string(), s, &[&w.a_task]);
    f.check(matches!(r.0.as_u16(), 401 | 403 | 404), op, rule, || format!("B reading as A's task: {}", r.0));
    // B's own calls reach nothing of A's
    let calls = [
        (None, tool("list_discoveries", json!({}))),
        (None, tool("list_discoveries", json!({"task_id": w.a_task, "contains": "acme"}))),
        (Some(&w.b_task), tool("read_messages", json!({}))),
        (None, tool("await_task", json!({"id": w.a_task, "timeout_s": 0}))),
        (None, tool("send_message", json!({"to_task": w.a_task, "body": "globex was here"}))),
    ];
    for (caller, body) in &calls {
        let (status, answer) = mcp(&w.b, caller.map(String::as_str), body).await;
        let name = body["params"]["name"].as_str().unwrap_or("?");
        f.clean(op, rule, &format!("B's {name}"), &answer.to_string(), s, &[&w.a_task]);
        f.check(status == 200, op, rule, || format!("B's {name}: {status} {answer}"));
        if matches!(name, "await_task" | "send_message") {
            f.check(answer["result"]["isError"] == true, op, rule, || {
                format!("B's {name} on A's task was not refused: {answer}")
            });
        }
    }
    let (_, spawned) =
        mcp(&w.b, Some(&w.b_task), &tool("spawn_task", json!({"agent": "echo", "input": "globex child"}))).await;
    if let Some(id) = spawned["result"]["structuredContent"]["id"].as_str() {
        let t = w.b.get_task(id).await;
        f.check(t["tenant"] == "globex", op, rule, || format!("B's spawned task is not B's: {t}"));
    } else {
        f.fail(op, rule, format!("B cannot spawn a task of its own: {spawned}"));
    }
    // sanity: A reaches its own
    let (_, found) = mcp(&w.a, None, &tool("list_discoveries", json!({}))).await;
    f.check(found.to_string().contains(&s.marker), op, rule, || format!("sanity: A lacks its discovery: {found}"));
    let (_, inbox) = mcp(&w.a, Some(&w.a_turn), &tool("read_messages", json!({}))).await;
    f.check(inbox.to_string().contains(&s.marker), op, rule, || {
        format!("sanity: A's echo task lacks A's message: {inbox}")
    });
}

// ---------------------------------------------------------------------------------------------
// The deployments

fn report(f: Findings) {
    assert!(
        f.list.is_empty(),
        "tenant matrix on {}: {} violation(s):\n  {}",
        f.deployment,
        f.list.len(),
        f.list.join("\n  ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_matrix_on_smith_up() {
    let agents = Agents::start().await;
    let s = Smith::start(Opts::new().token(ROOT).config(&agents.config())).await;
    let started = Instant::now();
    let f = matrix("smith up (SQLite, in-process bus)", s.api(), &agents).await;
    eprintln!("tenant matrix on smith up: {:?}", started.elapsed());
    report(f);
}

/// Supervisor, worker and gateway processes on a fresh database and `bus`.
async fn distributed(deployment: &'static str, services: &Services, bus: &str) {
    let agents = Agents::start().await;
    let config = format!(
        "[server]\ntoken = \"{ROOT}\"\n\n[store]\npool_size = 4\n\n[artifacts]\nurl = \"file://{}\"\n\n{}",
        agents.artifacts.path().display(),
        agents.config()
    );
    let cluster = Cluster::with_bus(services, bus, &config).await;
    let sup = cluster.start(Role::Supervisor).await;
    let (worker, gw) = tokio::join!(cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let root = Api::new(&gw.api().base, Some(ROOT.to_string()));
    let started = Instant::now();
    let f = matrix(deployment, root, &agents).await;
    eprintln!("tenant matrix on {deployment}: {:?}", started.elapsed());
    drop((sup, worker, gw));
    report(f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_matrix_on_postgres_and_nats() {
    let Some(services) = Services::from_env() else { return };
    let bus = cluster::with_namespace(&services.nats, &unique("t"));
    distributed("PostgreSQL + NATS", &services, &bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_matrix_on_postgres_and_rabbitmq() {
    let Some(services) = Services::from_env() else { return };
    let Some(amqp) = std::env::var("SMITH_TEST_AMQP_URL").ok().filter(|v| !v.is_empty()) else {
        eprintln!("skipped: SMITH_TEST_AMQP_URL not set");
        return;
    };
    let bus = cluster::with_namespace(&amqp, &unique("t"));
    distributed("PostgreSQL + RabbitMQ", &services, &bus).await;
}

/// Webhooks: B never sees, changes or replays A's subscription or its deliveries; B's own
/// subscription is B's; A's and the platform's answers show A's (the checks bite).
async fn webhooks(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    let hook = format!("/v1/webhooks/{}", w.a_webhook);
    let not_found = |f: &mut Findings, who: &str, (status, body): (reqwest::StatusCode, Value)| {
        f.clean(op, rule, who, &body.to_string(), s, &[&w.a_webhook, &w.a_delivery]);
        f.check(status == 404 && body["error"]["code"] == "not_found", op, rule, || {
            format!("{who} got {status} (want 404 not_found, as for a missing object): {}", clip(&body.to_string()))
        });
    };
    match op {
        "POST /v1/webhooks" => {
            let body = json!({"url": WEBHOOK_URL, "kinds": ["task.succeeded"]});
            let (status, created) = w.b.post("/v1/webhooks", &body).await;
            f.clean(op, rule, "B", &created.to_string(), s, &[]);
            f.check(status == 201 && created["tenant"] == "globex", op, rule, || {
                format!("B's new webhook is not B's: {status} {created}")
            });
        }
        "GET /v1/webhooks" => {
            for (who, b) in w.bs() {
                let (status, body) = b.get("/v1/webhooks").await;
                f.clean(op, rule, who, &body.to_string(), s, &[]);
                f.check(status == 200, op, rule, || format!("{who}'s webhooks: {status} {body}"));
            }
            for (who, api) in [("A", &w.a), ("the platform token", &w.root)] {
                let (_, body) = api.get("/v1/webhooks").await;
                f.check(body.to_string().contains(&w.a_webhook), op, rule, || {
                    format!("sanity: {who}'s webhooks lack A's: {body}")
                });
            }
        }
        "GET /v1/webhooks/{id}" | "GET /v1/webhooks/{id}/deliveries" => {
            let path = if op.ends_with("deliveries") { format!("{hook}/deliveries") } else { hook.clone() };
            for (who, b) in w.bs() {
                not_found(f, who, b.get(&path).await);
            }
            let (status, body) = w.a.get(&path).await;
            f.check(status == 200 && body.to_string().contains(&w.a_webhook), op, rule, || {
                format!("sanity: A cannot read its webhook: {status} {}", clip(&body.to_string()))
            });
        }
        "DELETE /v1/webhooks/{id}" => {
            for (who, b) in w.bs() {
                not_found(f, who, b.send(b.request(Method::DELETE, &hook)).await);
            }
            let (status, _) = w.a.get(&hook).await;
            f.check(status == 200, op, rule, || format!("B's delete removed A's webhook: {status}"));
        }
        "POST /v1/webhooks/{id}/deliveries/{delivery}/replay" => {
            let path = format!("{hook}/deliveries/{}/replay", w.a_delivery);
            for (who, b) in w.bs() {
                not_found(f, who, b.post(&path, &json!({})).await);
            }
            let (status, body) = w.a.post(&path, &json!({})).await;
            f.check(status != 404, op, rule, || format!("sanity: A's replay finds nothing: {status} {body}"));
        }
        _ => f.fail(op, rule, "a webhook route without a probe: write one".into()),
    }
}

/// Schedules: B never sees, pauses, resumes or deletes A's schedule; B's own schedule is B's;
/// A's and the platform's answers show A's (the checks bite).
async fn schedules(w: &World, f: &mut Findings, op: &str, rule: Rule) {
    let s = &w.secrets;
    let path = format!("/v1/schedules/{}", w.a_schedule);
    let not_found = |f: &mut Findings, who: &str, (status, body): (reqwest::StatusCode, Value)| {
        f.clean(op, rule, who, &body.to_string(), s, &[&w.a_schedule]);
        f.check(status == 404 && body["error"]["code"] == "not_found", op, rule, || {
            format!("{who} got {status} (want 404 not_found, as for a missing object): {}", clip(&body.to_string()))
        });
    };
    // A's schedule as A sees it: still there, still paused
    let a_sees = async || {
        let (status, body) = w.a.get(&path).await;
        (status, body)
    };
    match op {
        "POST /v1/schedules" => {
            let body = json!({"agent": "echo", "input": "globex", "cron": "0 0 1 1 *", "paused": true});
            let (status, created) = w.b.post("/v1/schedules", &body).await;
            f.clean(op, rule, "B", &created.to_string(), s, &[]);
            f.check(status == 201 && created["tenant"] == "globex", op, rule, || {
                format!("B's new schedule is not B's: {status} {created}")
            });
        }
        "GET /v1/schedules" => {
            for (who, b) in w.bs() {
                let (status, body) = b.get("/v1/schedules").await;
                f.clean(op, rule, who, &body.to_string(), s, &[]);
                f.check(status == 200, op, rule, || format!("{who}'s schedules: {status} {body}"));
            }
            for (who, api) in [("A", &w.a), ("the platform token", &w.root)] {
                let (_, body) = api.get("/v1/schedules").await;
                f.check(body.to_string().contains(&w.a_schedule), op, rule, || {
                    format!("sanity: {who}'s schedules lack A's: {body}")
                });
            }
        }
        "GET /v1/schedules/{id}" => {
            for (who, b) in w.bs() {
                not_found(f, who, b.get(&path).await);
            }
            let (status, body) = a_sees().await;
            f.check(status == 200 && body.to_string().contains(&w.a_schedule), op, rule, || {
                format!("sanity: A cannot read its schedule: {status} {}", clip(&body.to_string()))
            });
        }
        "DELETE /v1/schedules/{id}" => {
            for (who, b) in w.bs() {
                not_found(f, who, b.send(b.request(Method::DELETE, &path)).await);
            }
            let (status, _) = a_sees().await;
            f.check(status == 200, op, rule, || format!("B's delete removed A's schedule: {status}"));
        }
        "POST /v1/schedules/{id}/pause" | "POST /v1/schedules/{id}/resume" => {
            let verb = if op.ends_with("pause") { "pause" } else { "resume" };
            for (who, b) in w.bs() {
                not_found(f, who, b.post(&format!("{path}/{verb}"), &json!({})).await);
            }
            let (status, body) = a_sees().await;
            f.check(status == 200 && body["paused"] == true, op, rule, || {
                format!("B's {verb} changed A's schedule: {status} {}", clip(&body.to_string()))
            });
        }
        _ => f.fail(op, rule, "a schedule route without a probe: write one".into()),
    }
}
