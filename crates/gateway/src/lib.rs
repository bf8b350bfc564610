//! The gateway: the HTTP API and SSE streams of SPEC §4, over the store and the bus.
//!
//! It validates, writes through the store, publishes wake-ups and cancels on the bus, and
//! fans live events out to SSE readers through its [`hub::Hub`]. It never runs agents.

mod approvals;
mod audit;
pub mod auth;
mod console;
mod error;
mod hub;
mod keys;
mod mcp;
pub mod metrics;
pub mod origin;
pub mod quota;
mod routes;
mod schedules;
mod server;
mod sessions;
mod stream;
mod submit;
pub mod tls;
mod trace;
mod webhooks;

pub use error::{status_of, ApiError, ConfigError};
pub use server::{ServeError, ServeOptions};

use axum::extract::{MatchedPath, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use smith_bus::Bus;
use smith_core::{EventHeader, Micros, Node, NodeRole, NodeStatus};
use smith_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Renders the process's metrics as Prometheus text.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
pub struct GatewayOptions {
    pub node_id: String,
    /// The platform token (every tenant, every scope); with no `token` and no `jwt`, callers
    /// without credentials act as the platform (zero-config loopback `smith up`). API keys are
    /// honoured either way.
    pub token: Option<String>,
    /// JWT bearer tokens: tenant and scopes from their claims.
    pub jwt: Option<auth::JwtOptions>,
    /// Verifies the capabilities workers mint for their agents' MCP access (the workers hold
    /// the same key). `None`: capabilities are refused.
    pub capability_key: Option<smith_core::CapabilityKey>,
    /// Per-tenant submission quotas.
    pub quotas: quota::Quotas,
    pub max_body_bytes: usize,
    pub keepalive: Duration,
    /// Frames buffered per SSE stream.
    pub sse_buffer: usize,
    /// Events buffered per stream in the hub before the stream is unhooked and re-reads the store.
    pub hub_buffer: usize,
    /// Bytes of event JSON buffered per stream in the hub, likewise.
    pub hub_buffer_bytes: usize,
    /// The sites requests may come from besides the listener's own address (`[server]
    /// public_url` and `allowed_origins`): a foreign `Origin` or `Host` is refused.
    pub sites: origin::Sites,
    pub slow_reader_timeout: Duration,
    pub heartbeat: Duration,
    pub metrics: Option<MetricsRender>,
    /// The store-size guard (`[limits] store_max_bytes`): submissions are refused with 507
    /// while the store is larger.
    pub store_max_bytes: Option<u64>,
    /// How often the store's size is measured.
    pub store_sample: Duration,
    /// Where the workers store agents' artifacts (`[artifacts] url`), read for downloads.
    /// `None`: listings still answer from the store, downloads are 503.
    pub artifacts: Option<Arc<dyn smith_artifacts::Storage>>,
    /// Where webhooks may point (`[webhooks] allow_private`, `allow`): checked when a
    /// subscription or a task's webhook is given.
    pub webhook_guard: Arc<smith_webhooks::Guard>,
}

impl GatewayOptions {
    pub fn new(node_id: impl Into<String>) -> Self {
        GatewayOptions {
            node_id: node_id.into(),
            token: None,
            jwt: None,
            capability_key: None,
            quotas: Default::default(),
            max_body_bytes: 4 << 20,
            keepalive: Duration::from_secs(15),
            sse_buffer: 64,
            hub_buffer: 1024,
            hub_buffer_bytes: 8 << 20,
            sites: Default::default(),
            slow_reader_timeout: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            metrics: None,
            store_max_bytes: None,
            store_sample: Duration::from_secs(5),
            artifacts: None,
            webhook_guard: Default::default(),
        }
    }
}

pub(crate) struct AppState {
    pub opts: GatewayOptions,
    pub auth: auth::AuthOptions,
    pub quotas: quota::Enforcer,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub hub: Arc<hub::Hub>,
    pub started_at: Micros,
    pub address: std::sync::Mutex<Option<String>>,
    /// The bound listener (for the `Origin` and `Host` checks); unset until served.
    pub listener: std::sync::Mutex<Option<std::net::SocketAddr>>,
    pub refusals: audit::Refusals,
    /// Cancelled when the server stops, so open SSE streams end and connections can close.
    pub closing: std::sync::Mutex<CancellationToken>,
    /// Agent definitions as the store had them lately (`approvals::definition`).
    pub definitions: approvals::Definitions,
}

impl AppState {
    pub fn closing(&self) -> CancellationToken {
        self.closing.lock().expect("closing lock").clone()
    }

    /// The task, when it exists and is the caller's tenant's: another tenant's task is a 404
    /// exactly like a missing one.
    pub(crate) async fn visible_task(
        &self,
        p: &auth::Principal,
        id: smith_core::TaskId,
    ) -> error::ApiResult<smith_core::Task> {
        match self.store.get_task(id).await? {
            Some(t) if p.sees(&t.tenant) => Ok(t),
            _ => Err(error::ApiError::not_found(format!("task {id} not found"))),
        }
    }
}

/// A gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    pub fn new(opts: GatewayOptions, store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> Self {
        let hub = hub::Hub::new(opts.hub_buffer, opts.hub_buffer_bytes);
        let auth = auth::AuthOptions {
            token: opts.token.clone(),
            jwt: opts.jwt.clone(),
            capability: opts.capability_key.clone(),
            anonymous: opts.token.is_none() && opts.jwt.is_none(),
        };
        Gateway {
            state: Arc::new(AppState {
                auth,
                quotas: quota::Enforcer::new(opts.quotas.clone(), opts.store_max_bytes),
                opts,
                store,
                bus,
                hub,
                started_at: Micros::now(),
                address: Default::default(),
                listener: Default::default(),
                refusals: Default::default(),
                closing: Default::default(),
                definitions: Default::default(),
            }),
        }
    }

    /// Whether tenant `tenant` may submit another task now: its quotas and the store-size guard,
    /// as this gateway applies them to submissions (`Err`: why not). For the tasks the leader
    /// submits on a tenant's behalf in the same process (`smith up`'s schedule fires).
    pub async fn admit(&self, tenant: &str) -> Result<(), String> {
        self.state.quotas.admit(self.state.store.as_ref(), tenant).await.map_err(|e| e.message)
    }

    pub fn router(&self) -> axum::Router {
        let state = self.state.clone();
        let mut api = routes::router(state.clone());
        if smith_core::trace::enabled() {
            api = api.layer(axum::middleware::from_fn(trace::layer));
        }
        let api = api
            .layer(axum::middleware::from_fn_with_state(state, guard))
            .layer(axum::Extension(error::BodyLimit(self.state.opts.max_body_bytes)));
        // the console's static files hold no data (it reads the API with the operator's
        // token), so they are served outside the guard, to anyone
        console::router().merge(api)
    }

    /// Serves plain HTTP with the default timeouts; see [`Gateway::serve_with`].
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) -> Result<(), ServeError> {
        self.serve_with(listener, &ServeOptions::default(), stop).await
    }

    /// Serves HTTP, or HTTPS with `opts.tls`, on an already-bound listener until `stop`;
    /// in-flight requests finish, SSE streams are closed (their readers resume elsewhere by id).
    pub async fn serve_with(
        self,
        listener: TcpListener,
        opts: &ServeOptions,
        stop: CancellationToken,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr()?;
        *self.state.address.lock().expect("address lock") = Some(addr.to_string());
        *self.state.listener.lock().expect("listener lock") = Some(addr);
        tracing::info!(%addr, tls = opts.tls.is_some(), "gateway listening");
        // cancelled with `stop`: open SSE streams end, so their connections can close
        *self.state.closing.lock().expect("closing lock") = stop.child_token();
        server::run(listener, self.router(), opts, stop).await
    }

    /// Feeds the hub from the bus: every committed event, published by any process.
    pub async fn hub_loop(self, stop: CancellationToken) -> Result<(), smith_bus::Error> {
        let bus = &self.state.bus;
        let mut events = bus.subscribe(smith_bus::subjects::ALL_EVENTS).await?;
        let mut system = bus.subscribe(smith_bus::subjects::SYSTEM).await?;
        let mut dropped = 0;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                m = events.recv() => m.ok_or(smith_bus::Error::Closed)?,
                m = system.recv() => m.ok_or(smith_bus::Error::Closed)?,
            };
            let now_dropped = events.dropped() + system.dropped();
            if now_dropped > dropped {
                // a line when the total passes a power of two, not one per drop
                if dropped == 0 || now_dropped.ilog2() > dropped.ilog2() {
                    tracing::warn!(
                        dropped = now_dropped,
                        "the hub's bus subscription dropped events; streams re-read the store"
                    );
                }
                dropped = now_dropped;
                self.state.hub.missed();
            }
            match serde_json::from_slice::<EventHeader>(&msg.payload) {
                Ok(event) => {
                    if let Some(at) = event.at {
                        metrics::delivered(Micros::now().since(at));
                    }
                    self.state.hub.deliver(Arc::new(hub::LiveEvent { event, json: msg.payload }))
                }
                Err(e) => tracing::warn!(subject = %msg.subject, error = %e, "undecodable event on the bus"),
            }
        }
    }

    /// Registers the gateway as a node and heartbeats with its load.
    pub async fn heartbeat_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let mut tick = tokio::time::interval(self.state.opts.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = self.state.store.set_node_status(&self.state.opts.node_id, NodeStatus::Stopped).await;
                    return Ok(());
                }
                _ = tick.tick() => {}
            }
            let s = &self.state;
            let node = Node {
                id: s.opts.node_id.clone(),
                role: NodeRole::Gateway,
                version: env!("CARGO_PKG_VERSION").to_string(),
                address: s.address.lock().expect("address lock").clone(),
                status: NodeStatus::Alive,
                started_at: s.started_at,
                heartbeat_at: Micros::now(),
                load: serde_json::json!({"sse_connections": s.hub.connections()}),
            };
            if let Err(e) = s.store.heartbeat(&node).await.map(drop) {
                tracing::warn!(error = %e, "gateway heartbeat failed");
            }
        }
    }
}

impl Gateway {
    /// Measures the store's size now and then (never per request): exports it, and arms the
    /// store-size guard that refuses submissions while the store is over its limit.
    pub async fn store_size_loop(self, stop: CancellationToken) -> Result<(), std::convert::Infallible> {
        let s = &self.state;
        let max = s.opts.store_max_bytes;
        ::metrics::gauge!(crate::metrics::STORE_MAX).set(max.unwrap_or(0) as f64);
        let mut tick = tokio::time::interval(s.opts.store_sample);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            match s.store.size_bytes().await {
                Ok(Some(size)) => {
                    let full = s.quotas.store_measured(size);
                    ::metrics::gauge!(crate::metrics::STORE_SIZE).set(size as f64);
                    ::metrics::gauge!(crate::metrics::STORE_FULL).set(if full { 1.0 } else { 0.0 });
                }
                Ok(None) => {}
                // the last measure stands: a store that cannot answer refuses writes by itself
                Err(e) => tracing::warn!(error = %e, "cannot measure the store's size"),
            }
        }
    }
}

/// Serves `/metrics` (and `/healthz`) alone, for processes without the API: `smith
/// supervisor` and `smith worker`. The figures are not secret, but nothing else is served.
pub async fn serve_metrics(
    listener: TcpListener,
    render: MetricsRender,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = render();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }));
    server::run(listener, app, &ServeOptions::default(), stop).await
}

/// Browser safety, authentication, scopes, the audit log and request metrics for every route.
async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let open = matches!(req.uri().path(), "/healthz" | "/readyz");
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let audit = mutating.then(|| audit::Pending::new(&req, &route));
    let resp = if open {
        next.run(req).await
    } else {
        let listener = *state.listener.lock().expect("listener lock");
        let refused = match state.opts.sites.check(req.headers(), listener) {
            Err((reason, e)) => Err((reason, e)),
            Ok(()) => {
                // owned: the request (its body is not Sync) must not be borrowed across the await
                let header = req.headers().get(AUTHORIZATION).map(|v| v.to_str().unwrap_or("?").to_string());
                let resolved = match auth::capability(&state.auth, header.as_deref()) {
                    Some(cap) => cap.map(|c| (auth::Principal::agent(&c), Some(c))),
                    None => auth::authenticate(&state.auth, state.store.as_ref(), header.as_deref())
                        .await
                        .map(|p| (p, None)),
                };
                resolved.map_err(|e| (failure_reason(header.as_deref(), &e), e))
            }
        };
        match refused {
            Err((reason, e)) => {
                metrics::auth_failed(reason);
                let resp = e.into_response();
                if let Some(a) = audit {
                    a.refused(&state, resp.status().as_u16()).await;
                }
                metrics::request(&route, resp.status().as_u16(), started.elapsed().as_secs_f64());
                return resp;
            }
            Ok((principal, cap)) => {
                let allowed = principal
                    .require(scope_of(req.method(), &route))
                    .and_then(|()| {
                        // an agent's capability opens its tools and nothing else of the API
                        if cap.is_some() && route != auth::CAPABILITY_ROUTE {
                            let only = format!("an agent's capability is valid on {} only", auth::CAPABILITY_ROUTE);
                            return Err(ApiError::new(smith_core::Code::PermissionDenied, only));
                        }
                        Ok(())
                    })
                    .and_then(|()| origin::check_body(req.headers()));
                let resp = match allowed {
                    Err(e) => e.into_response(),
                    Ok(()) => {
                        req.extensions_mut().insert(principal.clone());
                        if let Some(c) = cap {
                            req.extensions_mut().insert(c);
                        }
                        if let Some(a) = audit.as_ref().filter(|_| route == audit::SELF_AUDITED) {
                            req.extensions_mut().insert(a.clone());
                        }
                        next.run(req).await
                    }
                };
                if let Some(a) = audit.filter(|_| resp.extensions().get::<audit::Written>().is_none()) {
                    a.record(&state, Some(&principal), &resp).await;
                }
                resp
            }
        }
    };
    metrics::request(&route, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// The bounded `reason` label of a failed authentication.
fn failure_reason(header: Option<&str>, e: &ApiError) -> &'static str {
    match header {
        _ if e.code != smith_core::Code::Unauthenticated => "error",
        None => "missing",
        Some(h) if !h.starts_with("Bearer ") => "malformed",
        Some(_) => "invalid",
    }
}

/// The scope a route needs: reading is `tasks:read`, changing is `tasks:write`, keys and the
/// audit log are `admin`.
fn scope_of(method: &Method, route: &str) -> smith_core::Scope {
    use smith_core::Scope;
    if route.starts_with("/v1/keys") || route.starts_with("/v1/audit") {
        Scope::Admin
    } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Scope::TasksRead
    } else {
        Scope::TasksWrite
    }
}
