//! Authentication, tenants and the audit log, through the real binary over HTTP: API keys
//! (created, used, revoked), scopes, one tenant's objects invisible to another on every
//! endpoint, bad credentials, and one audit record per mutating call.

use crate::common;

use common::{Api, Opts, Smith};
use serde_json::{json, Value};
use std::time::Duration;

const ROOT: &str = "root-token-for-tests-0123456789";

/// Creates a key as `admin` and returns an API client using it, and the key's id.
async fn key(admin: &Api, tenant: &str, scopes: &[&str]) -> (Api, String) {
    let (status, body) = admin.post("/v1/keys", &json!({"tenant": tenant, "scopes": scopes, "name": "test"})).await;
    assert_eq!(status, 201, "create key: {body}");
    let secret = body["secret"].as_str().expect("the secret, once").to_string();
    let id = body["key"]["id"].as_str().expect("id").to_string();
    assert!(secret.starts_with(&format!("smk_{id}_")), "{secret}");
    assert!(body["key"].get("secret_sha256").is_none(), "the hash never leaves the server: {body}");
    (Api::new(&admin.base, Some(secret)), id)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_walls_on_every_endpoint() {
    let s = Smith::start(Opts::new().token(ROOT)).await;
    let root = s.api();
    let (a, _) = key(&root, "acme", &["tasks:write", "tasks:read"]).await;
    let (b, b_id) = key(&root, "globex", &["tasks:write", "tasks:read"]).await;
    let (a_read, _) = key(&root, "acme", &["tasks:read"]).await;
    let (a_admin, _) = key(&root, "acme", &["admin"]).await;

    // acme's objects
    let ta = a.submit(json!({"agent": "echo", "input": "acme's"})).await;
    assert_eq!(ta["tenant"], "acme", "{ta}");
    let ta = ta["id"].as_str().unwrap().to_string();
    a.wait_terminal(&ta, Duration::from_secs(10)).await;
    let long = a.submit_id(json!({"agent": "sleep", "input": 30_000})).await;
    let (status, session) = a.post("/v1/sessions", &json!({"agent": "echo", "input": "hello"})).await;
    assert_eq!(status, 201, "{session}");
    let sa = session["id"].as_str().unwrap().to_string();
    let tb = b.submit_id(json!({"agent": "echo", "input": "globex's"})).await;
    b.wait_terminal(&tb, Duration::from_secs(10)).await;

    // globex sees none of them: 404 exactly as for a missing object
    let not_found = |(status, body): (reqwest::StatusCode, Value), what: &str| {
        assert_eq!(status, 404, "{what}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{what}: {body}");
    };
    not_found(b.get(&format!("/v1/tasks/{ta}")).await, "get");
    not_found(b.cancel(&long).await, "cancel");
    let (status, _) = b.send(b.request(reqwest::Method::GET, &format!("/v1/tasks/{ta}/events"))).await;
    assert_eq!(status, 404, "events");
    not_found(b.get(&format!("/v1/sessions/{sa}")).await, "session");
    not_found(b.post(&format!("/v1/sessions/{sa}/turns"), &json!({"input": "x"})).await, "turn");
    let (status, body) = b.post("/v1/tasks", &json!({"agent": "echo", "input": 1, "parent_id": ta})).await;
    assert_eq!(status, 422, "a parent in another tenant names no task: {body}");
    let mcp = b
        .send(
            b.request(reqwest::Method::POST, "/mcp")
                .header("x-smith-task", &ta)
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
        )
        .await;
    not_found(mcp, "mcp as another tenant's task");
    // the long task is still running: globex's cancel changed nothing
    assert_eq!(a.get_task(&long).await["status"], "running");

    // listings are the caller's tenant's
    let listed = b.list_all("").await;
    assert!(
        listed.iter().all(|t| t["tenant"] == "globex") && listed.iter().any(|t| t["id"] == tb.as_str()),
        "{listed:?}"
    );
    let listed = a.list_all("").await;
    assert!(listed.iter().all(|t| t["tenant"] == "acme") && listed.len() == 3, "{listed:?}");
    let everything = root.list_all("").await;
    assert_eq!(everything.len(), 4, "the platform token sees every tenant");
    let (_, usage) = b.get("/v1/usage?by=tenant").await;
    assert!(items(&usage).iter().all(|u| u["key"] == "globex"), "{usage}");
    let (status, _) = b.get("/v1/usage?by=agent").await;
    assert_eq!(status, 403, "usage by agent spans tenants");

    // the feed: globex's stream from the start carries globex's events and fleet events only
    let mut feed = b.sse("/v1/events?after=0", None).await;
    let mut frames = Vec::new();
    while let common::Next::Frame(f) = feed.next_within(Duration::from_millis(1500)).await {
        frames.push(f);
    }
    assert!(frames.iter().any(|f| f.json()["task_id"] == tb.as_str()), "globex's own events are there");
    for f in &frames {
        let v = f.json();
        assert!(v["task_id"].is_null() || v["task_id"] == tb.as_str(), "globex saw {v}");
    }

    // scopes
    let (status, body) = a_read.post("/v1/tasks", &json!({"agent": "echo", "input": 1})).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (403, Some("permission_denied")), "{body}");
    assert_eq!(a_read.get(&format!("/v1/tasks/{ta}")).await.0, 200);
    assert_eq!(a.get("/v1/keys").await.0, 403, "keys need admin");
    assert_eq!(a.get("/v1/audit").await.0, 403, "the audit log needs admin");
    // admin implies the rest, within its tenant
    assert_eq!(a_admin.get(&format!("/v1/tasks/{ta}")).await.0, 200);
    not_found(a_admin.get(&format!("/v1/tasks/{tb}")).await, "acme's admin on globex's task");
    let (_, keys) = a_admin.get("/v1/keys").await;
    assert!(items(&keys).iter().all(|k| k["tenant"] == "acme") && items(&keys).len() == 3, "{keys}");
    not_found(a_admin.post(&format!("/v1/keys/{b_id}/revoke"), &json!({})).await, "revoke another tenant's key");
    let (status, _) = a_admin.post("/v1/keys", &json!({"tenant": "globex", "scopes": ["admin"]})).await;
    assert_eq!(status, 403, "a tenant's admin makes keys for its own tenant only");
    let (status, _) = a_admin.post("/v1/keys", &json!({"tenant": "*", "scopes": ["admin"]})).await;
    assert_eq!(status, 403, "nor for every tenant");
    let (_, audit) = a_admin.get("/v1/audit").await;
    assert!(items(&audit).iter().all(|r| r["tenant"] == "acme") && !items(&audit).is_empty(), "{audit}");
    // the platform's keys for acme are in acme's log (by the platform), globex's are not
    let made: Vec<Value> =
        items(&audit).into_iter().filter(|r| r["action"] == "key.create" && r["actor"] == "token").collect();
    assert_eq!(made.len(), 3, "the platform made three keys for acme: {audit}");
    assert!(made.iter().all(|r| r["status"] == 201), "{made:?}");
    let (status, _) = root.post(&format!("/v1/keys/{b_id}/revoke"), &json!({})).await;
    assert_eq!(status, 200);
    let (_, audit) = a_admin.get("/v1/audit?action=key.revoke&actor=token").await;
    assert!(items(&audit).is_empty(), "globex's revocation is not acme's to read: {audit}");
    let (_, audit) = root.get("/v1/audit?action=key.revoke&actor=token&tenant=globex").await;
    assert_eq!(items(&audit).len(), 1, "filed under globex: {audit}");
    // b's key was revoked by the platform just above
    assert_eq!(b.get(&format!("/v1/tasks/{tb}")).await.0, 401);
    assert_eq!(a.cancel(&long).await.0, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_get_401() {
    let s = Smith::start(Opts::new().token(ROOT)).await;
    let root = s.api();
    let (a, a_id) = key(&root, "acme", &["tasks:read"]).await;
    let secret = a.token.clone().unwrap();
    let with = |t: Option<&str>| Api::new(&root.base, t.map(str::to_string));
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing bearer token"),
        (Some("wrong".into()), "invalid bearer token"),
        (Some(format!("{}x", &secret)), "invalid API key"),
        (Some(format!("smk_{a_id}_")), "invalid API key"),
        (Some("smk_nosuchkey_abcdef".into()), "invalid API key"),
        (Some("smk_".into()), "invalid API key"),
        (Some("a.b.c".into()), "not configured"),
        (Some(secret.replace("smk_", "smk_x")), "invalid API key"),
    ];
    for (token, words) in &cases {
        let (status, body) = with(token.as_deref()).get("/v1/tasks").await;
        assert_eq!(status, 401, "{token:?}: {body}");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(words), "{token:?}: {body}");
        assert!(!msg.contains(&secret), "the error repeats the secret: {body}");
    }
    // not a bearer header at all
    let r = with(None).request(reqwest::Method::GET, "/v1/tasks").header("authorization", "Basic YWxhZGRpbjpvcGVu");
    let resp = r.send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));

    // revoked: at once
    assert_eq!(a.get("/v1/tasks").await.0, 200);
    let (status, revoked) = root.post(&format!("/v1/keys/{a_id}/revoke"), &json!({})).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, body) = a.get("/v1/tasks").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("revoked"), "{body}");
    // and again: the first revocation time stays
    let (_, again) = root.post(&format!("/v1/keys/{a_id}/revoke"), &json!({})).await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);

    // bad key requests change nothing
    for (body, status) in [
        (json!({"scopes": []}), 422),
        (json!({"scopes": ["root"]}), 422),
        (json!({"scopes": ["admin"], "tenant": ""}), 422),
        (json!({"scopes": ["admin"], "tenant": "a b"}), 422),
        (json!({"scopes": ["admin"], "extra": 1}), 422),
        (json!({"scopes": "admin"}), 422),
    ] {
        let (got, answer) = root.post("/v1/keys", &body).await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (_, keys) = root.get("/v1/keys").await;
    assert_eq!(items(&keys).len(), 1, "{keys}");
    assert_eq!(root.post("/v1/keys/nosuch/revoke", &json!({})).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_one_record_per_mutating_call() {
    let s = Smith::start(Opts::new().token(ROOT)).await;
    let root = s.api();
    let (a, a_id) = key(&root, "acme", &["tasks:write", "tasks:read"]).await;
    let actor = format!("key:{a_id}");
    let t1 = a.submit_id(json!({"agent": "sleep", "input": 30_000})).await;
    assert_eq!(a.cancel(&t1).await.0, 202);
    let (status, _) = a.post("/v1/tasks", &json!({"agent": "echo"})).await;
    assert_eq!(status, 422, "a refused submission is audited too");
    let (_, session) = a.post("/v1/sessions", &json!({"agent": "echo"})).await;
    let sid = session["id"].as_str().unwrap().to_string();
    let (status, _) = a.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "hi"})).await;
    assert_eq!(status, 201);
    let (status, _) =
        Api::new(&root.base, Some("nope".into())).post("/v1/tasks", &json!({"agent": "echo", "input": 1})).await;
    assert_eq!(status, 401);
    // reads are not audited
    a.get(&format!("/v1/tasks/{t1}")).await;
    a.list_all("").await;

    let (status, log) = root.get("/v1/audit").await;
    assert_eq!(status, 200, "{log}");
    let records = items(&log);
    let got: Vec<(String, String, String, Option<String>, u64)> = records
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_string(),
                r["tenant"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["target"].as_str().map(str::to_string),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = vec![
        // the platform's key for acme is filed under acme
        ("token".into(), "acme".into(), "key.create".into(), Some(a_id.clone()), 201),
        (actor.clone(), "acme".into(), "task.submit".into(), Some(t1.clone()), 201),
        (actor.clone(), "acme".into(), "task.cancel".into(), Some(t1.clone()), 202),
        (actor.clone(), "acme".into(), "task.submit".into(), None, 422),
        (actor.clone(), "acme".into(), "session.start".into(), Some(sid.clone()), 201),
        (actor.clone(), "acme".into(), "session.turn".into(), Some(sid.clone()), 201),
        // refused before authentication: counted, and summarized (this is the first refusal)
        ("unauthenticated".into(), "-".into(), "auth.refused".into(), Some("1".into()), 401),
    ];
    assert_eq!(got, want, "{log:#}");
    for r in &records {
        assert!(r["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{r}");
        assert!(r["at"].is_string() && r["id"].as_u64().is_some(), "{r}");
    }
    let ids: Vec<u64> = records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // filters and paging
    let (_, only) = root.get("/v1/audit?action=task.submit").await;
    assert_eq!(items(&only).len(), 2, "{only}");
    let (_, page) = root.get("/v1/audit?limit=2").await;
    assert_eq!(items(&page).len(), 2);
    let after = page["next_after"].as_u64().expect("a next page");
    let (_, rest) = root.get(&format!("/v1/audit?after={after}&actor={actor}")).await;
    assert_eq!(items(&rest).len(), 4, "{rest}");
    let (status, _) = root.get("/v1/audit?since=yesterday").await;
    assert_eq!(status, 400);

    // append-only: no route changes or deletes a record
    for method in [reqwest::Method::DELETE, reqwest::Method::PUT, reqwest::Method::POST, reqwest::Method::PATCH] {
        let (status, _) = root.send(root.request(method.clone(), "/v1/audit").json(&json!({}))).await;
        assert_eq!(status, 405, "{method}");
    }
    let (_, after_all) = root.get("/v1/audit?limit=1000").await;
    // the four refused attempts above are themselves recorded, and nothing before them changed
    assert_eq!(items(&after_all)[..records.len()], records[..]);
    assert_eq!(items(&after_all).len(), records.len() + 4);
}

const HMAC: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn hs256(claims: Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_tokens_carry_tenant_and_scopes() {
    let s = Smith::start(
        Opts::new().config(&format!("[auth]\njwt_hmac_secret = \"{HMAC}\"\njwt_issuer = \"https://idp.test\"\n")),
    )
    .await;
    let base = s.api().base;
    let api = |t: String| Api::new(&base, Some(t));
    let claims = |sub: &str, tenant: Option<&str>, scope: &str, exp: i64| {
        let mut c = json!({"sub": sub, "scope": scope, "exp": exp, "iss": "https://idp.test"});
        if let Some(t) = tenant {
            c["tenant"] = json!(t);
        }
        c
    };
    let hour = now_s() + 3600;
    let writer = api(hs256(claims("alice", Some("acme"), "tasks:write tasks:read openid", hour), HMAC));
    let task = writer.submit(json!({"agent": "echo", "input": 1})).await;
    assert_eq!(task["tenant"], "acme", "{task}");
    let reader = api(hs256(claims("bob", Some("acme"), "tasks:read", hour), HMAC));
    assert_eq!(reader.get(&format!("/v1/tasks/{}", task["id"].as_str().unwrap())).await.0, 200);
    assert_eq!(reader.post("/v1/tasks", &json!({"agent": "echo", "input": 1})).await.0, 403);
    let other = api(hs256(claims("carol", Some("globex"), "tasks:read", hour), HMAC));
    assert_eq!(other.get(&format!("/v1/tasks/{}", task["id"].as_str().unwrap())).await.0, 404);

    let mut wrong_iss = claims("dave", Some("acme"), "tasks:read", hour);
    wrong_iss["iss"] = json!("https://evil.test");
    let cases: Vec<(String, &str)> = vec![
        (hs256(claims("alice", Some("acme"), "tasks:read", now_s() - 120), HMAC), "ExpiredSignature"),
        (
            hs256(claims("alice", Some("acme"), "tasks:read", hour), "a-different-secret-also-32-bytes-long"),
            "InvalidSignature",
        ),
        (hs256(claims("alice", None, "tasks:read", hour), HMAC), "tenant"),
        (hs256(claims("alice", Some("acme"), "openid profile", hour), HMAC), "none of this API's scopes"),
        (hs256(wrong_iss, HMAC), "InvalidIssuer"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_string(), "malformed"),
        ("not.a.jwt".to_string(), "malformed"),
    ];
    for (token, words) in cases {
        let (status, body) = api(token.clone()).get("/v1/tasks").await;
        assert_eq!(status, 401, "{words}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(words), "{words}: {body}");
    }
    // with a JWT issuer configured, no credential is no access, even on loopback
    assert_eq!(Api::new(&base, None).get("/v1/tasks").await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_verify_rs256_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&pem)
        .status()
        .expect("openssl runs (.ci/run installs it)");
    assert!(ok.success());
    let out =
        std::process::Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&pem).output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("Modulus=").to_string();
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let n = base64url(&bytes);
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}]}).to_string(),
    )
    .unwrap();
    let s = Smith::start(Opts::new().config(&format!("[auth]\njwks_file = \"{}\"\n", jwks.display()))).await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap();
    let sign = |kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.to_string());
        let c = json!({"sub": "svc", "tenant": "acme", "scopes": ["tasks:write", "tasks:read"], "exp": now_s() + 600});
        jsonwebtoken::encode(&h, &c, &key).unwrap()
    };
    let good = Api::new(&s.api().base, Some(sign("k1")));
    assert_eq!(good.submit(json!({"agent": "echo", "input": 1})).await["tenant"], "acme");
    let (status, body) = Api::new(&s.api().base, Some(sign("k2"))).get("/v1/tasks").await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no key `k2`"), "{body}");
    // an HMAC token signed with the public modulus as secret (the classic confusion) is refused
    let forged = hs256(json!({"sub": "x", "tenant": "acme", "scope": "admin", "exp": now_s() + 600}), &n);
    assert_eq!(Api::new(&s.api().base, Some(forged)).get("/v1/tasks").await.0, 401);
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_answer_429_with_retry_after_and_recover() {
    let config =
        "[quotas.tenant.fast]\nsubmissions_per_second = 2.0\nburst = 2.0\n\n[quotas.tenant.small]\nmax_queued = 2\n";
    let s = Smith::start(Opts::new().token(ROOT).config(config).arg("--max-agents").arg("1")).await;
    let root = s.api();
    let (fast, _) = key(&root, "fast", &["tasks:write", "tasks:read"]).await;
    let (small, _) = key(&root, "small", &["tasks:write", "tasks:read"]).await;

    // the token bucket: a burst of 2, then 429 with Retry-After, then room again
    for _ in 0..2 {
        fast.submit(json!({"agent": "echo", "input": 1})).await;
    }
    let resp = fast
        .request(reqwest::Method::POST, "/v1/tasks")
        .json(&json!({"agent": "echo", "input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(fast.list_all("").await.len(), 2, "a refused submission changes nothing");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    fast.submit(json!({"agent": "echo", "input": 1})).await;

    // queued: one sleep runs (one agent slot), two wait, the next is refused until one leaves
    let first = small.submit_id(json!({"agent": "sleep", "input": 60_000})).await;
    small.wait_status(&first, "running", Duration::from_secs(10)).await;
    let queued: Vec<String> = vec![
        small.submit_id(json!({"agent": "sleep", "input": 60_000})).await,
        small.submit_id(json!({"agent": "sleep", "input": 60_000})).await,
    ];
    let (status, body) = small.post("/v1/tasks", &json!({"agent": "echo", "input": 1})).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("2 tasks queued"), "{body}");
    // other tenants are not held back by small's quota
    fast.submit(json!({"agent": "echo", "input": 2})).await;
    assert_eq!(small.cancel(&queued[0]).await.0, 202);
    small.wait_status(&queued[0], "cancelled", Duration::from_secs(10)).await;
    small.submit(json!({"agent": "echo", "input": 3})).await;
    for id in [&first, &queued[1]] {
        small.cancel(id).await;
    }
}

/// The most intervals `[start, end)` open at one instant (an end at the instant a start happens
/// is already closed).
fn most_at_once(intervals: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_running_holds_a_tenant_to_its_cap_without_holding_back_others() {
    let config = "[quotas]\nmax_running = 2\n";
    let s = Smith::start(Opts::new().token(ROOT).config(config)).await;
    let root = s.api();
    let (acme, _) = key(&root, "acme", &["tasks:write", "tasks:read"]).await;
    let (globex, _) = key(&root, "globex", &["tasks:write", "tasks:read"]).await;

    // acme's six are older than globex's two: globex must not wait behind acme's backlog
    let mut a = Vec::new();
    for _ in 0..6 {
        a.push(acme.submit_id(json!({"agent": "sleep", "input": 1200})).await);
    }
    let mut g = Vec::new();
    for _ in 0..2 {
        g.push(globex.submit_id(json!({"agent": "sleep", "input": 1200})).await);
    }
    // watch while they run: acme never has more than two running, and globex runs beside it
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut most_acme, mut side_by_side) = (0, false);
    loop {
        let running = root.list_all("status=running").await;
        let of = |t: &str| running.iter().filter(|r| r["tenant"] == t).count();
        most_acme = most_acme.max(of("acme"));
        side_by_side |= of("acme") == 2 && of("globex") == 2;
        let done = acme.list_all("").await.iter().chain(&globex.list_all("").await).all(common::is_terminal);
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "tasks still unfinished after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most_acme, 2, "acme's running tasks seen at once");
    assert!(side_by_side, "globex's tasks ran while acme was at its cap");

    // the record agrees: every task succeeded, never more than two of acme's at once, and
    // globex's both started before acme's third did
    let span = |t: &Value| (common::micros(&t["started_at"]), common::micros(&t["finished_at"]));
    let mut acme_spans = Vec::new();
    for id in &a {
        let t = acme.get_task(id).await;
        assert_eq!((t["status"].as_str(), t["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{t}");
        acme_spans.push(span(&t));
    }
    assert_eq!(most_at_once(&acme_spans), 2, "{acme_spans:?}");
    let mut starts: Vec<i64> = acme_spans.iter().map(|s| s.0).collect();
    starts.sort();
    for id in &g {
        let t = globex.get_task(id).await;
        assert_eq!(t["status"], "succeeded", "{t}");
        assert!(span(&t).0 < starts[2], "globex's task waited for acme's: {t}");
    }
}
