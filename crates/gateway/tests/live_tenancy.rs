//! The live feed's tenant check against what arrives on the bus, on an in-process gateway: an
//! event that does not say whose it is (a publisher from before events carried their tenant)
//! is never shown to a tenant from the bus — the reader gets the store's copy when it is its
//! own, nothing when it is another tenant's — while fleet events and a tenant's own events
//! still arrive live.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use serde_json::{json, Value};
use smith_core::{AgentDef, Event, ExecutorKind, NewTask};
use smith_gateway::{Gateway, GatewayOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token-for-live-tenancy";

struct Rig {
    gw: Gateway,
    store: Arc<dyn smith_store::Store>,
    bus: Arc<dyn smith_bus::Bus>,
    stop: CancellationToken,
    dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn rig() -> Rig {
    let dir = std::env::temp_dir().join(format!("smith-live-tenancy-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = smith_store::OpenOptions { fsync: false, ..Default::default() };
    let store = smith_store::open(&format!("sqlite://{}", dir.join("smith.db").display()), &opts).await.unwrap();
    store.put_agents(&[AgentDef::new("echo", ExecutorKind::Echo)]).await.unwrap();
    let bus = smith_bus::open("memory://").await.unwrap();
    let mut gopts = GatewayOptions::new("gw-live-tenancy");
    gopts.token = Some(TOKEN.into());
    let gw = Gateway::new(gopts, store.clone(), bus.clone());
    let stop = CancellationToken::new();
    tokio::spawn(gw.clone().hub_loop(stop.clone()));
    // the hub subscribes as its loop starts
    tokio::time::sleep(Duration::from_millis(200)).await;
    Rig { gw, store, bus, stop, dir }
}

impl Rig {
    async fn key(&self, tenant: &str) -> String {
        let req = Request::post("/v1/keys")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Body::from(json!({"tenant": tenant, "scopes": ["tasks:read"]}).to_string()))
            .unwrap();
        let resp = self.gw.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: Value =
            serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
        body["secret"].as_str().unwrap().to_string()
    }

    /// Opens `/v1/events` from now; the stream of its body's bytes.
    async fn feed(&self, secret: &str) -> axum::body::BodyDataStream {
        let req =
            Request::get("/v1/events").header("authorization", format!("Bearer {secret}")).body(Body::empty()).unwrap();
        let resp = self.gw.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().into_data_stream()
    }

    /// A task of `tenant`, written to the store only (nothing published).
    async fn task(&self, tenant: &str, input: &str) -> Event {
        let mut t = NewTask::new("echo", json!(input));
        t.tenant = tenant.into();
        self.store.submit(t).await.unwrap().events.remove(0)
    }

    async fn publish(&self, subject: &str, json: Value) {
        self.bus.publish(subject, bytes::Bytes::from(json.to_string())).await.unwrap();
    }
}

fn subject(ev: &Event) -> String {
    smith_bus::subjects::task_events(ev.agent.as_deref().unwrap(), &ev.task_id.unwrap().to_string())
}

/// The event JSON a publisher from before tenants sent: no `tenant`.
fn untenanted(ev: &Event) -> Value {
    let mut v = serde_json::to_value(ev).unwrap();
    v.as_object_mut().unwrap().remove("tenant");
    v
}

/// The `data` of every SSE frame read until one holds `until`, then for 500 ms more.
async fn frames(body: &mut axum::body::BodyDataStream, until: &str) -> Vec<Value> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen_at = None;
    loop {
        let now = tokio::time::Instant::now();
        let stop = match seen_at {
            Some(t) => t + Duration::from_millis(500),
            None => deadline,
        };
        if now >= stop {
            break;
        }
        match tokio::time::timeout(stop - now, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(_) => break,
            Err(_) => break,
        }
        if seen_at.is_none() && text.contains(until) {
            seen_at = Some(tokio::time::Instant::now());
        }
    }
    assert!(seen_at.is_some(), "no frame held {until:?} within 10 s: {text}");
    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_event_that_does_not_say_its_tenant_is_never_shown_from_the_bus() {
    let r = rig().await;
    let (acme, globex) = (r.key("acme").await, r.key("globex").await);
    let mut acme_feed = r.feed(&acme).await;
    let mut globex_feed = r.feed(&globex).await;
    // each stream hooks into the hub from its own task, just after its response is made
    tokio::time::sleep(Duration::from_millis(300)).await;

    // acme's task.queued arrives live without its tenant, as an old publisher sends it
    let a = r.task("acme", "acme-secret-42").await;
    r.publish(&subject(&a), untenanted(&a)).await;
    // a fleet event (no tenant, rightly), then globex's own event, told in full
    let sys = r.store.append_system(json!({"type": "node.dead", "node": "w9"})).await.unwrap();
    r.publish(smith_bus::subjects::SYSTEM, serde_json::to_value(&sys).unwrap()).await;
    let g = r.task("globex", "globex-own").await;
    r.publish(&subject(&g), serde_json::to_value(&g).unwrap()).await;

    let gid = g.task_id.unwrap().to_string();
    let seen = frames(&mut globex_feed, &gid).await;
    let id = a.task_id.unwrap().to_string();
    for v in &seen {
        assert!(!v.to_string().contains(&id) && !v.to_string().contains("acme"), "globex was shown {v}");
    }
    assert!(seen.iter().any(|v| v["kind"] == "system" && v["tenant"].is_null()), "fleet events are live: {seen:?}");
    assert!(seen.iter().any(|v| v["task_id"] == gid.as_str() && v["tenant"] == "globex"), "{seen:?}");

    // acme gets its own event — the store's copy, which says whose it is — and nothing of globex's
    let seen = frames(&mut acme_feed, "node.dead").await;
    let own: Vec<&Value> = seen.iter().filter(|v| v["task_id"] == id.as_str()).collect();
    assert_eq!(own.len(), 1, "{seen:?}");
    assert_eq!((own[0]["tenant"].as_str(), own[0]["pos"].as_u64()), (Some("acme"), Some(a.pos)), "{seen:?}");
    assert!(seen.iter().all(|v| v["tenant"] != "globex"), "{seen:?}");
}
