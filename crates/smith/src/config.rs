//! Configuration: defaults < `smith.toml` < `SMITH_*` environment < flags. Unknown keys are
//! errors that name the key; everything is validated once, after loading.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use smith_core::{AgentDef, Budget, ExecutorKind, InputMode, Pricing, Secret};
use smith_worker::WorkerOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `smith.toml` as written; every section and key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub bus: BusSection,
    #[serde(default)]
    pub worker: WorkerSection,
    #[serde(default)]
    pub supervisor: SupervisorSection,
    #[serde(default)]
    pub scaling: ScalingSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSection>,
    #[serde(default)]
    pub auth: AuthSection,
    /// Per-tenant quotas (docs/security.md): checked at submission by gateways, and
    /// `max_running` at every claim by workers.
    #[serde(default)]
    pub quotas: smith_gateway::quota::Quotas,
    /// Caps on what one task writes (enforced by workers) and on the store's size (checked
    /// by gateways at submission).
    #[serde(default)]
    pub limits: LimitsSection,
    /// Where the files agents leave in `$SMITH_ARTIFACTS` are stored, and their caps
    /// (docs/artifacts.md).
    #[serde(default)]
    pub artifacts: ArtifactsSection,
    /// Webhook deliveries: retries, timeouts, and where they may go (docs/webhooks.md).
    #[serde(default)]
    pub webhooks: WebhooksSection,
    /// Provider accounts agents name with `account`: their shared rate limits
    /// (docs/rate-limits.md).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSection>,
    /// How long finished tasks, artifacts and audit records are kept (docs/retention.md).
    #[serde(default)]
    pub retention: RetentionSection,
    /// Traces exported over OTLP (docs/telemetry.md); off unless an endpoint is configured.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySection,
}

/// `[providers.NAME]`: a provider account that agents share.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// `{ requests_per_minute, tokens_per_minute }`, enforced by every worker together.
    pub rate_limit: Option<smith_core::RateLimit>,
}

/// The rate limits by provider account: each `[providers.NAME]` limit, and each agent's own
/// `rate_limit` (for its own account). An agent naming an account no `[providers]` section
/// defines is refused, as is an agent's own limit on an account a section already limits.
pub fn rate_limits(file: &FileConfig, agents: &[AgentDef]) -> Result<BTreeMap<String, smith_core::RateLimit>> {
    let mut out = BTreeMap::new();
    for (name, p) in &file.providers {
        smith_core::agent::validate_name(name).map_err(|_| {
            anyhow!("providers.{name}: an account name is 1-64 letters, digits, '_' or '-', starting with a letter or digit")
        })?;
        if let Some(limit) = p.rate_limit {
            limit.validate(&format!("providers.{name}.rate_limit")).map_err(|e| anyhow!(e.message))?;
            out.insert(name.clone(), limit);
        }
    }
    for d in agents {
        if let Some(account) = &d.account {
            if !file.providers.contains_key(account) {
                bail!("agents.{}.account: no [providers.{account}] section defines account {account:?}", d.name);
            }
        }
        if let Some(limit) = d.rate_limit {
            if out.contains_key(&d.name) {
                bail!(
                    "agents.{0}.rate_limit: account {0:?} is limited by [providers.{0}] already; set one of them",
                    d.name
                );
            }
            out.insert(d.name.clone(), limit);
        }
    }
    Ok(out)
}

/// An age limit as written: a duration (`"30d"`, `"12h"`) or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Keep(Duration),
    Forever,
}

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Age, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "forever" {
            return Ok(Age::Forever);
        }
        humantime::parse_duration(s.trim()).map(Age::Keep).map_err(|e| {
            serde::de::Error::custom(format!("invalid age {s:?}: {e} (use e.g. \"30d\", \"12h\", or \"forever\")"))
        })
    }
}

/// The ages of one scope: `[retention]` itself, or `[retention.tenant.NAME]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionAges {
    /// Finished tasks, with their events, artifacts, approvals and webhook deliveries.
    pub tasks: Option<Age>,
    /// Artifacts of finished tasks (records and stored objects); the task stays.
    pub artifacts: Option<Age>,
    /// Audit records.
    pub audit: Option<Age>,
}

/// `[retention]`: every key optional; unset ages keep everything forever (the default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub tasks: Option<Age>,
    pub artifacts: Option<Age>,
    pub audit: Option<Age>,
    /// Rows one batch deletes at most (default 500, at most 5000).
    pub batch_size: Option<usize>,
    /// How often the leading supervisor looks for expired rows (default 10s).
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Ages of one tenant, each replacing the default's (`"forever"` keeps that tenant's).
    #[serde(default)]
    pub tenant: BTreeMap<String, RetentionAges>,
}

impl RetentionSection {
    /// The leader's retention options, validated; `None` when nothing is ever deleted.
    pub fn options(
        &self,
        storage: Option<std::sync::Arc<dyn smith_artifacts::Storage>>,
    ) -> Result<Option<smith_supervisor::retention::RetentionOptions>> {
        use smith_supervisor::retention::{Ages, RetentionOptions};
        let age = |key: String, a: Option<Age>, default: Option<Duration>| -> Result<Option<Duration>> {
            match a {
                None => Ok(default),
                Some(Age::Forever) => Ok(None),
                Some(Age::Keep(d)) if d.is_zero() => bail!("{key} must be more than 0 (or \"forever\")"),
                Some(Age::Keep(d)) => Ok(Some(d)),
            }
        };
        let default = Ages {
            tasks: age("retention.tasks".into(), self.tasks, None)?,
            artifacts: age("retention.artifacts".into(), self.artifacts, None)?,
            audit: age("retention.audit".into(), self.audit, None)?,
        };
        let mut tenants = BTreeMap::new();
        for (name, t) in &self.tenant {
            if name.is_empty() {
                bail!("retention.tenant: a tenant name must not be empty");
            }
            let key = |k: &str| format!("retention.tenant.{name}.{k}");
            let ages = Ages {
                tasks: age(key("tasks"), t.tasks, default.tasks)?,
                artifacts: age(key("artifacts"), t.artifacts, default.artifacts)?,
                audit: age(key("audit"), t.audit, default.audit)?,
            };
            tenants.insert(name.clone(), ages);
        }
        let batch = match self.batch_size {
            None => 500,
            Some(n) if n == 0 || n > smith_store::PURGE_LIMIT => {
                bail!("retention.batch_size must be between 1 and {}, got {n}", smith_store::PURGE_LIMIT)
            }
            Some(n) => n,
        };
        let every = match self.interval {
            None => Duration::from_secs(10),
            Some(d) if d.is_zero() => bail!("retention.interval must be more than 0"),
            Some(d) => d,
        };
        let opts = RetentionOptions { default, tenants, batch, every, storage };
        Ok((!opts.is_empty()).then_some(opts))
    }
}

/// `[webhooks]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSection {
    /// How long a delivery is retried before it is marked failed (default 24h).
    #[serde(default, with = "opt_duration")]
    pub retry_for: Option<Duration>,
    /// One attempt's deadline (default 10s).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// The wait before the first retry, doubled after each failure (default 1s).
    #[serde(default, with = "opt_duration")]
    pub backoff: Option<Duration>,
    /// The longest wait between two attempts (default 1h).
    #[serde(default, with = "opt_duration")]
    pub max_backoff: Option<Duration>,
    /// Attempts in flight at once (default 64).
    pub max_in_flight: Option<usize>,
    /// Loopback, private and other non-public targets too (tests, development).
    pub allow_private: Option<bool>,
    /// Non-public address ranges (CIDR) or host names webhooks may still reach.
    #[serde(default)]
    pub allow: Vec<String>,
}

impl WebhooksSection {
    /// Where webhooks may go.
    pub fn guard(&self) -> Result<smith_webhooks::Guard> {
        let mut allow = Vec::new();
        for a in &self.allow {
            allow.push(a.parse().map_err(|e| anyhow!("webhooks.allow: {e}"))?);
        }
        Ok(smith_webhooks::Guard { allow_private: self.allow_private.unwrap_or(false), allow })
    }

    /// The dispatcher's options for the node `node_id`.
    pub fn options(&self, node_id: String) -> Result<smith_webhooks::Options> {
        let mut o = smith_webhooks::Options::new(node_id);
        let positive = |key: &str, d: Option<Duration>| -> Result<Option<Duration>> {
            match d {
                Some(d) if d.is_zero() => bail!("webhooks.{key} must be more than 0"),
                d => Ok(d),
            }
        };
        if let Some(d) = positive("retry_for", self.retry_for)? {
            o.retry_for = d;
        }
        if let Some(d) = positive("timeout", self.timeout)? {
            o.timeout = d;
        }
        if let Some(d) = positive("backoff", self.backoff)? {
            o.backoff = d;
        }
        if let Some(d) = positive("max_backoff", self.max_backoff)? {
            o.max_backoff = d;
        }
        match self.max_in_flight {
            Some(0) => bail!("webhooks.max_in_flight must be at least 1"),
            Some(n) => o.max_in_flight = n,
            None => {}
        }
        o.guard = self.guard()?;
        Ok(o)
    }
}

/// `[artifacts]`: every key optional; a cap of 0 is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsSection {
    /// `file:///dir` or `s3://bucket/prefix?endpoint=http://host:port&region=…` (or
    /// `SMITH_ARTIFACTS_URL`). Default: `smith up` keeps them in `<data dir>/artifacts`; the
    /// distributed roles keep none (agents get no `$SMITH_ARTIFACTS`).
    pub url: Option<String>,
    /// Bytes of one task's artifacts (default 100 MiB).
    pub max_task_bytes: Option<u64>,
    /// Files of one task (default 1000).
    pub max_task_files: Option<u64>,
    /// Bytes of every artifact of one tenant (default 10 GiB).
    pub max_tenant_bytes: Option<u64>,
}

impl ArtifactsSection {
    /// The storage URL — `SMITH_ARTIFACTS_URL`, else `url` — checked; `None` when neither is set.
    pub fn url(&self) -> Result<Option<String>> {
        let env = std::env::var("SMITH_ARTIFACTS_URL").ok().filter(|v| !v.is_empty());
        let Some(url) = env.or(self.url.clone()) else { return Ok(None) };
        smith_artifacts::check_url(&url).map_err(|e| anyhow!("artifacts.url: {e}"))?;
        Ok(Some(url))
    }

    /// The caps, defaults filled in.
    pub fn caps(&self) -> Result<smith_artifacts::Caps> {
        let mut caps = smith_artifacts::Caps::default();
        for (key, value, cap) in [
            ("max_task_bytes", self.max_task_bytes, &mut caps.task_bytes),
            ("max_task_files", self.max_task_files, &mut caps.task_files),
            ("max_tenant_bytes", self.max_tenant_bytes, &mut caps.tenant_bytes),
        ] {
            match value {
                Some(0) => bail!("artifacts.{key} must be at least 1 (0 would fail every task that leaves a file)"),
                Some(v) => *cap = v,
                None => {}
            }
        }
        Ok(caps)
    }

    /// Opens the storage: the URL's, else `default_dir` (`smith up`'s), else none.
    pub async fn open(
        &self,
        default_dir: Option<&Path>,
    ) -> Result<Option<std::sync::Arc<dyn smith_artifacts::Storage>>> {
        if let Some(url) = self.url()? {
            let storage = smith_artifacts::open(&url).await.map_err(|e| anyhow!("artifacts.url: {e}"))?;
            return Ok(Some(storage));
        }
        let Some(dir) = default_dir else { return Ok(None) };
        let storage = smith_artifacts::FileStorage::open(dir).await.map_err(|e| anyhow!("{e}"))?;
        Ok(Some(std::sync::Arc::new(storage)))
    }
}

/// `[limits]`: every key optional; 0 is refused (it would fail every task or refuse every
/// submission).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Bytes of event data plus the result one task may write (default 64 MiB).
    pub task_output_bytes: Option<u64>,
    /// Events one task may emit (default 100,000).
    pub task_events: Option<u64>,
    /// Submissions are refused (507) while the store holds more than this many bytes.
    pub store_max_bytes: Option<u64>,
}

impl LimitsSection {
    /// The per-task output caps, defaults filled in.
    pub fn output(&self) -> Result<smith_worker::OutputLimits> {
        let mut o = smith_worker::OutputLimits::default();
        if let Some(v) = self.task_output_bytes {
            if v == 0 {
                bail!("limits.task_output_bytes must be at least 1 (0 would fail every task)");
            }
            o.bytes = v;
        }
        if let Some(v) = self.task_events {
            if v == 0 {
                bail!("limits.task_events must be at least 1 (0 would fail every task)");
            }
            o.events = v;
        }
        Ok(o)
    }

    /// The store-size guard, if set.
    pub fn store_max_bytes(&self) -> Result<Option<u64>> {
        if self.store_max_bytes == Some(0) {
            bail!("limits.store_max_bytes must be at least 1 (0 would refuse every submission)");
        }
        Ok(self.store_max_bytes)
    }
}

/// JWT bearer tokens (docs/security.md); the platform token is `[server] token`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// HS256/384/512 tokens signed with this (at least 32 bytes; or `SMITH_JWT_HMAC_SECRET`).
    pub jwt_hmac_secret: Option<Secret>,
    /// RS*/PS*/ES* tokens verified against this JWKS document's keys.
    pub jwks_file: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// The claim naming the tenant (default `tenant`).
    pub tenant_claim: Option<String>,
}

impl AuthSection {
    /// The JWT verifier this section configures, or `None`; a bad setting is an error naming it.
    pub fn jwt(&self) -> Result<Option<smith_gateway::auth::JwtOptions>> {
        // the secret may come from the environment rather than the file
        let env = std::env::var("SMITH_JWT_HMAC_SECRET").ok().filter(|v| !v.is_empty()).map(Secret);
        let mut jwt = match (env.as_ref().or(self.jwt_hmac_secret.as_ref()), &self.jwks_file) {
            (Some(_), Some(_)) => bail!("[auth] takes jwt_hmac_secret or jwks_file, not both"),
            (Some(secret), None) => smith_gateway::auth::JwtOptions::hmac(secret.0.as_bytes())
                .map_err(|e| anyhow!("[auth] jwt_hmac_secret: {e}"))?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("[auth] jwks_file: cannot read {}", path.display()))?;
                smith_gateway::auth::JwtOptions::jwks(&text)
                    .map_err(|e| anyhow!("[auth] jwks_file {}: {e}", path.display()))?
            }
            (None, None) => {
                if self.jwt_issuer.is_some() || self.jwt_audience.is_some() || self.tenant_claim.is_some() {
                    bail!("[auth] jwt_issuer, jwt_audience and tenant_claim need jwt_hmac_secret or jwks_file");
                }
                return Ok(None);
            }
        };
        jwt.issuer = self.jwt_issuer.clone();
        jwt.audience = self.jwt_audience.clone();
        if let Some(c) = &self.tenant_claim {
            if c.is_empty() {
                bail!("[auth] tenant_claim must not be empty");
            }
            jwt.tenant_claim = c.clone();
        }
        Ok(Some(jwt))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub max_body_bytes: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub keepalive: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub slow_reader_timeout: Option<Duration>,
    /// PEM certificate chain (leaf first) to serve HTTPS with; goes with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// From the moment a request is due to its last header line (slow clients are cut off).
    #[serde(default, with = "opt_duration")]
    pub header_timeout: Option<Duration>,
    /// How long a kept-alive connection may wait for its next request.
    #[serde(default, with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// The URL clients (and browsers) reach the gateway by, behind a proxy: its host is
    /// accepted in `Host` and its origin in `Origin`.
    pub public_url: Option<String>,
    /// Web origins (`https://console.example.com`) whose pages may call the API.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub url: Option<String>,
    /// Connections per process to a PostgreSQL store.
    pub pool_size: Option<u32>,
    /// fsync every commit (default true); false survives process crashes but not power loss.
    pub fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSection {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    pub max_agents: Option<usize>,
    /// Agent slots kept even when idle (default 0: the pool scales to zero).
    pub min_agents: Option<usize>,
    #[serde(default, with = "opt_duration")]
    pub lease: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub heartbeat: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub poll: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
    /// The platform MCP endpoint LLM agents are given (a gateway's `/mcp`); `smith up` uses its own.
    pub mcp_url: Option<String>,
    /// Where Claude Code agents without a `cwd` work (default: `<data dir>/work`, or a temp dir).
    pub work_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSection {
    #[serde(default, with = "opt_duration")]
    pub dead_after: Option<Duration>,
    /// How long a quarantined worker must heartbeat steadily before it is readmitted.
    #[serde(default, with = "opt_duration")]
    pub quarantine: Option<Duration>,
}

/// The autoscaler (`GET /v1/scaling`). `smith up` bounds it by the worker's min and max agents;
/// `smith supervisor` by `min_agents` / `max_agents` here (the fleet's slots).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSection {
    pub min_agents: Option<usize>,
    pub max_agents: Option<usize>,
    pub target_utilization: Option<f64>,
    #[serde(default, with = "opt_duration")]
    pub drain: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub scale_in_delay: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where `smith supervisor` and `smith worker` serve `/metrics` (the gateway serves it on its API port).
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub executor: Option<String>,
    /// For `executor = "builtin"`: which built-in (default: the agent's name).
    pub builtin: Option<String>,
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub input: Option<InputMode>,
    pub cwd: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub concurrency: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub retry_backoff: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub retry_backoff_max: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub kill_grace: Option<Duration>,
    pub max_result_bytes: Option<usize>,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub allowed_tools: Option<Vec<String>>,
    pub disallowed_tools: Option<Vec<String>>,
    pub permission_mode: Option<String>,
    pub max_turns: Option<u32>,
    pub mcp_config: Option<String>,
    pub collaborate: Option<bool>,
    #[serde(default, with = "opt_duration")]
    pub stall_timeout: Option<Duration>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub budget: Option<Budget>,
    pub pricing: Option<Pricing>,
    pub breaker_failures: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub breaker_cooldown: Option<Duration>,
    /// A git checkout of its own for each task (docs/workspaces.md).
    pub workspace: Option<smith_core::workspace::WorkspaceDef>,
    /// The JSON Schema of every task's output: a TOML table, JSON text, or the path of a JSON
    /// file (docs/structured-output.md).
    pub output_schema: Option<serde_json::Value>,
    /// Tool calls that wait for a person (docs/approvals.md): `["Bash(git push:*)"]`.
    pub approve: Option<Vec<String>>,
    #[serde(default, with = "opt_duration")]
    pub approval_timeout: Option<Duration>,
    /// `deny` (the default) or `allow`: what an unanswered request becomes at its timeout.
    pub on_approval_timeout: Option<smith_core::Decision>,
    /// Where a task's concurrency key comes from (docs/concurrency.md): `metadata.user`,
    /// `input.repo`, `tenant`, `session_id`. Needs `max_per_key`.
    pub concurrency_key: Option<String>,
    /// The most tasks of one concurrency key running at once over every worker.
    pub max_per_key: Option<u32>,
    /// The provider account (`[providers.NAME]`) whose limits this agent's calls count against,
    /// and whose usage limit it waits out with every other agent naming it (docs/rate-limits.md,
    /// docs/scheduling.md).
    pub account: Option<String>,
    /// The rate limit of the agent's own account, when it names none (docs/rate-limits.md).
    pub rate_limit: Option<smith_core::RateLimit>,
}

/// An agent's `output_schema` as the config gives it: inline (a table, or JSON text) or in a file.
fn output_schema(given: &serde_json::Value) -> Result<serde_json::Value> {
    let serde_json::Value::String(text) = given else { return Ok(given.clone()) };
    let (json, from) = if text.trim_start().starts_with('{') {
        (text.clone(), "its JSON text".to_string())
    } else {
        let json = std::fs::read_to_string(text).map_err(|e| anyhow!("output_schema: cannot read {text:?}: {e}"))?;
        (json, format!("{text:?}"))
    };
    serde_json::from_str(&json).map_err(|e| anyhow!("output_schema: {from} is not JSON: {e}"))
}

mod opt_duration {
    use serde::Deserializer;
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        smith_core::time::duration::deserialize(d).map(Some)
    }
}

impl FileConfig {
    /// Reads `path`; a missing file is an error only when it was asked for explicitly.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("smith.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(FileConfig::default()),
            Err(e) => return Err(anyhow!("cannot read config {}: {e}", path.display())),
        };
        toml::from_str(&text)
            .map_err(|e| {
                anyhow!("invalid config {}: {}", path.display(), e.message().trim_end()).context(e.to_string())
            })
            .map_err(|e| {
                anyhow!("{}", e.root_cause().to_string().trim_end())
                    .context(format!("invalid config {}", path.display()))
            })
    }
}

impl AgentSection {
    pub fn resolve(&self, name: &str) -> Result<AgentDef> {
        let executor = match self.executor.as_deref() {
            None | Some("builtin") => {
                let which = self.builtin.as_deref().unwrap_or(name);
                let Some(kind) = ExecutorKind::builtin(which) else {
                    if self.executor.is_none() {
                        bail!("agent {name:?}: `executor` is required (\"process\" or \"builtin\")");
                    }
                    bail!("agent {name:?}: unknown built-in {which:?} (echo, sleep, fail, stream)");
                };
                kind
            }
            Some("process") => {
                if self.builtin.is_some() {
                    bail!("agent {name:?}: `builtin` is only for executor \"builtin\"");
                }
                ExecutorKind::Process
            }
            Some("claude-code") => ExecutorKind::ClaudeCode,
            Some("anthropic") => ExecutorKind::Anthropic,
            Some("openai") => ExecutorKind::Openai,
            Some(other) => bail!(
                "agent {name:?}: unknown executor {other:?} (use builtin, process, claude-code, anthropic or openai)"
            ),
        };
        let mut d = AgentDef::new(name, executor);
        if let Some(v) = &self.command {
            d.command = Some(v.clone());
        }
        if let Some(v) = &self.args {
            d.args = v.clone();
        }
        if let Some(v) = self.input {
            d.input = v;
        }
        if let Some(v) = &self.cwd {
            d.cwd = Some(v.clone());
        }
        if let Some(v) = &self.env {
            d.env = v.clone();
        }
        if let Some(v) = self.concurrency {
            d.concurrency = v;
        }
        d.timeout = self.timeout.or(d.timeout);
        if let Some(v) = self.max_attempts {
            d.max_attempts = v;
        }
        if let Some(v) = self.retry_backoff {
            d.retry_backoff = v;
        }
        if let Some(v) = self.retry_backoff_max {
            d.retry_backoff_max = v;
        }
        if let Some(v) = self.kill_grace {
            d.kill_grace = v;
        }
        if let Some(v) = self.max_result_bytes {
            d.max_result_bytes = v;
        }
        d.model = self.model.clone().or(d.model);
        d.system_prompt = self.system_prompt.clone().or(d.system_prompt);
        if let Some(v) = &self.allowed_tools {
            d.allowed_tools = v.clone();
        }
        if let Some(v) = &self.disallowed_tools {
            d.disallowed_tools = v.clone();
        }
        d.permission_mode = self.permission_mode.clone().or(d.permission_mode);
        d.max_turns = self.max_turns.or(d.max_turns);
        d.mcp_config = self.mcp_config.clone().or(d.mcp_config);
        if let Some(v) = self.collaborate {
            d.collaborate = v;
        }
        d.stall_timeout = self.stall_timeout.or(d.stall_timeout);
        d.base_url = self.base_url.clone().or(d.base_url);
        d.api_key = self.api_key.clone().map(Secret).or(d.api_key);
        d.api_key_env = self.api_key_env.clone().or(d.api_key_env);
        if let Some(v) = self.max_output_tokens {
            d.max_output_tokens = v;
        }
        if let Some(v) = self.budget {
            d.budget = v;
        }
        d.pricing = self.pricing.or(d.pricing);
        if let Some(v) = self.breaker_failures {
            d.breaker_failures = v;
        }
        if let Some(v) = self.breaker_cooldown {
            d.breaker_cooldown = v;
        }
        d.workspace = self.workspace.clone();
        d.output_schema = self.output_schema.as_ref().map(output_schema).transpose()?;
        if let Some(v) = &self.approve {
            d.approve = v.clone();
        }
        if let Some(v) = self.approval_timeout {
            d.approval_timeout = v;
        }
        if let Some(v) = self.on_approval_timeout {
            d.on_approval_timeout = v;
        }
        d.concurrency_key = self.concurrency_key.clone().or(d.concurrency_key);
        d.max_per_key = self.max_per_key.or(d.max_per_key);
        d.account = self.account.clone();
        d.rate_limit = self.rate_limit;
        d.validate().map_err(|e| anyhow!(e.message))?;
        Ok(d)
    }
}

/// A worker's options from `[worker]` and the `--max-agents` flag, validated: one place for
/// `smith up` and `smith worker` alike.
pub fn worker_options(
    file: &FileConfig,
    agents: Vec<AgentDef>,
    max_agents: Option<usize>,
    min_agents: Option<usize>,
) -> Result<WorkerOptions> {
    let mut worker = WorkerOptions::new("", agents);
    let w = &file.worker;
    if let Some(v) = max_agents.or(w.max_agents) {
        if v == 0 {
            bail!("max_agents must be at least 1");
        }
        worker.max_agents = v;
    }
    if let Some(v) = min_agents.or(w.min_agents) {
        if v > worker.max_agents {
            bail!("min_agents ({v}) must not exceed max_agents ({})", worker.max_agents);
        }
        worker.min_agents = v;
    }
    if let Some(v) = w.lease {
        worker.lease = v;
    }
    if let Some(v) = w.heartbeat {
        worker.heartbeat = v;
    }
    if let Some(v) = w.poll {
        worker.poll = v;
    }
    if let Some(url) = &w.mcp_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("worker.mcp_url {url:?} must start with http:// or https://");
        }
        worker.mcp_url = Some(url.clone());
    }
    worker.work_dir = w.work_dir.clone();
    file.quotas.validate().map_err(|e| anyhow!(e))?;
    worker.running_caps = std::sync::Arc::new(file.quotas.running_caps());
    worker.output = file.limits.output()?;
    worker.rate_limits = rate_limits(file, &worker.agents)?;
    // checked here, opened by the role (it may need the network)
    file.artifacts.url()?;
    file.artifacts.caps()?;
    if worker.heartbeat * 3 > worker.lease {
        bail!("worker.heartbeat ({:?}) must be at most a third of worker.lease ({:?})", worker.heartbeat, worker.lease);
    }
    Ok(worker)
}

/// The flags of a role that serves the API over HTTPS (`smith up`, `smith gateway`).
#[derive(clap::Args, Debug, Default)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) to serve HTTPS with; needs --tls-key. SIGHUP reloads
    /// both files.
    #[arg(long, env = "SMITH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 RSA or SEC1 EC; unencrypted).
    #[arg(long, env = "SMITH_TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<PathBuf>,
}

/// How the API listener serves, after all layers: the TLS files (none for plain HTTP) and the
/// slow-client timeouts.
#[derive(Debug)]
pub struct Listener {
    pub tls: Option<(PathBuf, PathBuf)>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// `[server]` TLS files and timeouts, each TLS file overridden by its flag (or environment);
/// both files or neither.
pub fn listener(file: &FileConfig, args: &TlsArgs) -> Result<Listener> {
    let s = &file.server;
    let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let cert = given(&args.tls_cert).or_else(|| given(&s.tls_cert));
    let key = given(&args.tls_key).or_else(|| given(&s.tls_key));
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => bail!(
            "HTTPS needs a certificate and its key: tls_cert is set but tls_key is not \
             (--tls-key, SMITH_TLS_KEY or [server] tls_key)"
        ),
        (None, Some(_)) => bail!(
            "HTTPS needs a certificate and its key: tls_key is set but tls_cert is not \
             (--tls-cert, SMITH_TLS_CERT or [server] tls_cert)"
        ),
    };
    let defaults = smith_gateway::ServeOptions::default();
    let header_timeout = s.header_timeout.unwrap_or(defaults.header_timeout);
    let idle_timeout = s.idle_timeout.unwrap_or(defaults.idle_timeout);
    if header_timeout.is_zero() {
        bail!("server.header_timeout must be more than 0s");
    }
    if idle_timeout.is_zero() {
        bail!("server.idle_timeout must be more than 0s");
    }
    Ok(Listener { tls, header_timeout, idle_timeout })
}

/// The autoscaler's options: `[scaling]`, bounded by `min`/`max` agent slots.
pub fn scaling_options(file: &FileConfig, min: usize, max: usize) -> Result<smith_supervisor::scaling::ScalingOptions> {
    let mut o = smith_supervisor::scaling::ScalingOptions { min_agents: min, max_agents: max, ..Default::default() };
    let sc = &file.scaling;
    if let Some(t) = sc.target_utilization {
        if !(t > 0.0 && t <= 1.0) {
            bail!("scaling.target_utilization must be in (0, 1], got {t}");
        }
        o.target_utilization = t;
    }
    if let Some(d) = sc.drain {
        if d.is_zero() {
            bail!("scaling.drain must be more than 0s");
        }
        o.drain = d;
    }
    if let Some(d) = sc.scale_in_delay {
        o.scale_in_delay = d;
    }
    if o.min_agents > o.max_agents {
        bail!("scaling: min_agents ({}) must not exceed max_agents ({})", o.min_agents, o.max_agents);
    }
    Ok(o)
}

/// The agent definitions a node runs: the built-ins, overridden or joined by the config's.
pub fn agents(file: &FileConfig) -> Result<Vec<AgentDef>> {
    let mut out: BTreeMap<String, AgentDef> = AgentDef::builtins().into_iter().map(|d| (d.name.clone(), d)).collect();
    for (name, section) in &file.agents {
        let def = section.resolve(name).with_context(|| "in [agents]".to_string())?;
        out.insert(name.clone(), def);
    }
    let defs: Vec<AgentDef> = out.into_values().collect();
    // every role checks the accounts, not only the workers that enforce them
    rate_limits(file, &defs)?;
    Ok(defs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FileConfig> {
        toml::from_str(s).map_err(|e| anyhow!("{e}"))
    }

    #[test]
    fn unknown_keys_are_named() {
        for (text, key) in [
            ("colour = 1", "colour"),
            ("[server]\nlisten = \"x\"\nport = 3", "port"),
            ("[agents.a]\nexecutor = \"process\"\ncommand = \"true\"\nbudjet = 1", "budjet"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn retention_ages_merge_by_tenant_and_bad_values_name_their_key() {
        assert!(RetentionSection::default().options(None).unwrap().is_none(), "kept forever by default");
        let f = parse(
            "[retention]\ntasks = \"30d\"\naudit = \"1y\"\nbatch_size = 50\n\
             [retention.tenant.acme]\ntasks = \"2d\"\n[retention.tenant.legal]\ntasks = \"forever\"\n",
        )
        .unwrap();
        let o = f.retention.options(None).unwrap().expect("something is deleted");
        let day = Duration::from_secs(86_400);
        assert_eq!((o.default.tasks, o.default.artifacts), (Some(day * 30), None));
        assert_eq!((o.batch, o.every), (50, Duration::from_secs(10)));
        assert_eq!(o.tenants["acme"].tasks, Some(day * 2));
        assert_eq!(o.tenants["acme"].audit, o.default.audit, "a key left out takes the default's");
        assert_eq!(o.tenants["legal"].tasks, None, "forever");
        for (text, needle) in [
            ("[retention]\ntasks = \"0s\"", "retention.tasks"),
            ("[retention]\naudit = \"0s\"", "retention.audit"),
            ("[retention.tenant.acme]\nartifacts = \"0s\"", "retention.tenant.acme.artifacts"),
            ("[retention]\nbatch_size = 0", "retention.batch_size"),
            ("[retention]\nbatch_size = 5001", "retention.batch_size"),
            ("[retention]\ninterval = 0", "retention.interval"),
        ] {
            let err = parse(text).unwrap().retention.options(None).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        for (text, needle) in [
            ("[retention]\ntasks = \"soon\"", "soon"),
            ("[retention]\nevents = \"1d\"", "events"),
            ("[retention.tenant.acme]\nbatch_size = 3", "batch_size"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn limits_have_defaults_and_refuse_zero_and_unknown_keys() {
        let none = LimitsSection::default().output().unwrap();
        assert_eq!((none.bytes, none.events), (64 << 20, 100_000));
        let f = parse("[limits]\ntask_output_bytes = 1000\ntask_events = 7\nstore_max_bytes = 5").unwrap();
        let o = f.limits.output().unwrap();
        assert_eq!((o.bytes, o.events), (1000, 7));
        assert_eq!(f.limits.store_max_bytes().unwrap(), Some(5));
        for (text, needle) in [
            ("[limits]\ntask_output_bytes = 0", "limits.task_output_bytes"),
            ("[limits]\ntask_events = 0", "limits.task_events"),
            ("[limits]\nstore_max_bytes = 0", "limits.store_max_bytes"),
        ] {
            let f = parse(text).unwrap();
            let err = f.limits.output().and_then(|_| f.limits.store_max_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        for (text, needle) in [
            ("[limits]\ntask_bytes = 1", "task_bytes"),
            ("[limits]\ntask_events = -1", "task_events"),
            ("[limits]\ntask_events = \"many\"", "task_events"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle) || err.contains("invalid"), "{needle}: {err}");
        }
        let err = worker_options(&parse("[limits]\ntask_events = 0").unwrap(), vec![], None, None).unwrap_err();
        assert!(err.to_string().contains("task_events"), "{err}");
    }

    #[test]
    fn artifacts_take_a_checked_url_and_caps_above_zero() {
        let none = ArtifactsSection::default();
        assert_eq!(none.caps().unwrap(), smith_artifacts::Caps::default());
        let f =
            parse("[artifacts]\nurl = \"s3://bucket/p?endpoint=http://127.0.0.1:9000\"\nmax_task_files = 3").unwrap();
        assert_eq!(f.artifacts.caps().unwrap().task_files, 3);
        assert!(worker_options(&f, vec![], None, None).is_ok());
        for (text, needle) in [
            ("[artifacts]\nurl = \"ftp://x\"", "artifacts.url"),
            ("[artifacts]\nurl = \"file://relative\"", "absolute"),
            ("[artifacts]\nurl = \"s3://B\"", "bucket"),
            ("[artifacts]\nmax_task_bytes = 0", "artifacts.max_task_bytes"),
            ("[artifacts]\nmax_tenant_bytes = 0", "artifacts.max_tenant_bytes"),
        ] {
            let err = worker_options(&parse(text).unwrap(), vec![], None, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(parse("[artifacts]\nmax_bytes = 1").unwrap_err().to_string().contains("max_bytes"));
    }

    #[test]
    fn tls_files_come_in_pairs_and_flags_win() {
        let f = parse("[server]\ntls_cert = \"file.crt\"\ntls_key = \"file.key\"\nheader_timeout = \"2s\"").unwrap();
        let none = TlsArgs::default();
        let l = listener(&f, &none).unwrap();
        assert_eq!(l.tls, Some(("file.crt".into(), "file.key".into())));
        assert_eq!((l.header_timeout, l.idle_timeout), (Duration::from_secs(2), Duration::from_secs(60)));
        let flags = TlsArgs { tls_cert: Some("flag.crt".into()), tls_key: None };
        assert_eq!(listener(&f, &flags).unwrap().tls, Some(("flag.crt".into(), "file.key".into())));
        assert_eq!(listener(&FileConfig::default(), &none).unwrap().tls, None);

        let half = parse("[server]\ntls_cert = \"file.crt\"").unwrap();
        let err = listener(&half, &none).unwrap_err().to_string();
        assert!(err.contains("tls_key is not") && err.contains("--tls-key"), "{err}");
        let half = TlsArgs { tls_cert: None, tls_key: Some("k.pem".into()) };
        let err = listener(&FileConfig::default(), &half).unwrap_err().to_string();
        assert!(err.contains("tls_cert is not") && err.contains("--tls-cert"), "{err}");
        let zero = parse("[server]\nidle_timeout = \"0s\"").unwrap();
        assert!(listener(&zero, &none).unwrap_err().to_string().contains("idle_timeout"));
    }

    #[test]
    fn agents_resolve_with_defaults_and_overrides() {
        let f = parse(
            "[agents.sum]\nexecutor = \"process\"\ncommand = \"python3\"\nargs = [\"s.py\"]\ninput = \"arg\"\ntimeout = \"10m\"\n\
             [agents.sleep]\nconcurrency = 7\n",
        )
        .unwrap();
        let defs = agents(&f).unwrap();
        let sum = defs.iter().find(|d| d.name == "sum").unwrap();
        assert_eq!(sum.executor, ExecutorKind::Process);
        assert_eq!(sum.input, InputMode::Arg);
        assert_eq!(sum.timeout, Some(Duration::from_secs(600)));
        let sleep = defs.iter().find(|d| d.name == "sleep").unwrap();
        assert_eq!((sleep.executor, sleep.concurrency), (ExecutorKind::Sleep, 7));
        assert!(defs.iter().any(|d| d.name == "echo"));
    }

    #[test]
    fn rate_limits_come_from_providers_and_agents_and_name_the_key() {
        let f = parse(
            "[providers.team]\nrate_limit = { requests_per_minute = 60, tokens_per_minute = 100000 }\n\
             [agents.a]\nexecutor = \"anthropic\"\nmodel = \"m\"\naccount = \"team\"\n\
             [agents.b]\nexecutor = \"openai\"\nmodel = \"m\"\nrate_limit = { requests_per_minute = 5 }\n",
        )
        .unwrap();
        let defs = agents(&f).unwrap();
        let a = defs.iter().find(|d| d.name == "a").unwrap();
        assert_eq!(a.account(), "team");
        let limits = rate_limits(&f, &defs).unwrap();
        assert_eq!(limits["team"].requests_per_minute, Some(60));
        assert_eq!(limits["team"].tokens_per_minute, Some(100_000));
        assert_eq!(limits["b"].requests_per_minute, Some(5));
        assert_eq!(limits.len(), 2);
        assert_eq!(worker_options(&f, defs, None, None).unwrap().rate_limits, limits);
        for (text, needle) in [
            ("[agents.a]\nexecutor = \"anthropic\"\nmodel = \"m\"\naccount = \"nope\"", "agents.a.account"),
            ("[providers.p]\nrate_limit = { requests_per_minute = 0 }", "providers.p.rate_limit.requests_per_minute"),
            ("[providers.p]\nrate_limit = {}", "providers.p.rate_limit needs"),
            ("[providers.p]\n[agents.a]\nexecutor = \"anthropic\"\nmodel = \"m\"\naccount = \"p\"\nrate_limit = { requests_per_minute = 1 }", "exclude"),
            ("[providers.a]\nrate_limit = { requests_per_minute = 1 }\n[agents.a]\nexecutor = \"anthropic\"\nmodel = \"m\"\nrate_limit = { requests_per_minute = 2 }", "agents.a.rate_limit"),
            ("[agents.a]\nexecutor = \"anthropic\"\nmodel = \"m\"\nrate_limit = { tokens_per_minute = 0 }", "rate_limit.tokens_per_minute"),
        ] {
            let err = parse(text).and_then(|f| agents(&f)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
        for (text, key) in [
            ("[providers.p]\nrate_limits = 1", "rate_limits"),
            ("[providers.p]\nrate_limit = { requests_per_second = 1 }", "requests_per_second"),
        ] {
            assert!(parse(text).unwrap_err().to_string().contains(key), "{key}");
        }
    }

    #[test]
    fn bad_agents_are_rejected_with_reasons() {
        for (text, needle) in [
            ("[agents.x]\ncommand = \"true\"", "executor"),
            ("[agents.x]\nexecutor = \"process\"", "command"),
            ("[agents.x]\nexecutor = \"warp\"", "unknown executor"),
            ("[agents.x]\nexecutor = \"builtin\"\nbuiltin = \"nope\"", "unknown built-in"),
            ("[agents.x]\nexecutor = \"process\"\ncommand = \"true\"\nconcurrency = 0", "concurrency"),
            ("[agents.x]\nexecutor = \"process\"\ncommand = \"true\"\ntimeout = \"soon\"", "duration"),
            ("[agents.x]\nexecutor = \"builtin\"\nbuiltin = \"sleep\"\nmax_per_key = 0", "max_per_key must be"),
            (
                "[agents.x]\nexecutor = \"builtin\"\nbuiltin = \"sleep\"\nconcurrency_key = \"metadata.u\"",
                "needs max_per_key",
            ),
            (
                "[agents.x]\nexecutor = \"builtin\"\nbuiltin = \"sleep\"\nmax_per_key = 1\nconcurrency_key = \"user\"",
                "concurrency_key",
            ),
        ] {
            let err = parse(text).and_then(|f| agents(&f)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
    }
}
