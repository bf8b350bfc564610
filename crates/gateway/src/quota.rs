//! Per-tenant quotas, checked on every submission (the tasks API, session turns, an agent's
//! `spawn_task`): submissions per second (a token bucket per tenant in this gateway), queued
//! tasks, and daily token, cost and output-byte budgets (since 00:00 UTC). A refusal is a 429
//! with `Retry-After`, and changes nothing. The store-size guard refuses every submission with
//! 507 while the store (measured every few seconds) is over `[limits] store_max_bytes`. Running tasks (`max_running`) cannot be bounded at
//! submission: workers hand them to the store's claim as [`RunningCaps`], and a tenant's tasks
//! over its cap wait in the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;
use smith_core::{Code, Micros};
use smith_store::{RunningCaps, Store};

use crate::error::{ApiError, ApiResult};

/// One tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Sustained submissions per second.
    pub submissions_per_second: Option<f64>,
    /// Submissions allowed at once above the rate (default: one second's worth, at least 1).
    pub burst: Option<f64>,
    /// Tasks waiting to run.
    pub max_queued: Option<u64>,
    /// Tasks running at once over every worker; more wait in the queue (enforced by the claim).
    pub max_running: Option<u64>,
    /// Input plus output tokens of attempts finished since 00:00 UTC.
    pub daily_tokens: Option<u64>,
    /// USD of attempts finished since 00:00 UTC.
    pub daily_cost_usd: Option<f64>,
    /// Bytes of events and results the tenant's tasks hold that wrote since 00:00 UTC: over
    /// it, submissions are refused (tasks already running finish, within `[limits]
    /// task_output_bytes` each).
    pub daily_output_bytes: Option<u64>,
}

impl Limits {
    pub fn validate(&self, name: &str) -> Result<(), crate::ConfigError> {
        for (what, v) in [
            ("submissions_per_second", self.submissions_per_second),
            ("burst", self.burst),
            ("daily_cost_usd", self.daily_cost_usd),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v <= 0.0 {
                    return Err(format!("quota {name}.{what} must be a positive number, not {v}").into());
                }
            }
        }
        if self.daily_output_bytes == Some(0) {
            return Err(
                format!("quota {name}.daily_output_bytes must be at least 1 (0 would refuse every task)").into()
            );
        }
        if self.max_running == Some(0) {
            return Err(format!("quota {name}.max_running must be at least 1 (0 would never run a task)").into());
        }
        if self.burst.is_some() && self.submissions_per_second.is_none() {
            return Err(format!("quota {name}.burst needs {name}.submissions_per_second").into());
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// The quotas: defaults for every tenant, and overrides by tenant (a tenant's entry replaces
/// the defaults field by field).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    #[serde(flatten)]
    pub default: Limits,
    #[serde(default)]
    pub tenant: HashMap<String, Limits>,
}

impl Quotas {
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.default.validate("quotas")?;
        for (t, l) in &self.tenant {
            l.validate(&format!("quotas.tenant.{t}"))?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.tenant.values().all(Limits::is_empty)
    }

    /// The running caps the workers' claims enforce.
    pub fn running_caps(&self) -> RunningCaps {
        let tenants = self.tenant.iter().filter_map(|(t, l)| Some((t.clone(), l.max_running?))).collect();
        RunningCaps { default: self.default.max_running, tenants }
    }

    fn for_tenant(&self, tenant: &str) -> Limits {
        let d = &self.default;
        match self.tenant.get(tenant) {
            None => d.clone(),
            Some(t) => Limits {
                submissions_per_second: t.submissions_per_second.or(d.submissions_per_second),
                burst: t.burst.or(if t.submissions_per_second.is_some() { None } else { d.burst }),
                max_queued: t.max_queued.or(d.max_queued),
                max_running: t.max_running.or(d.max_running),
                daily_tokens: t.daily_tokens.or(d.daily_tokens),
                daily_cost_usd: t.daily_cost_usd.or(d.daily_cost_usd),
                daily_output_bytes: t.daily_output_bytes.or(d.daily_output_bytes),
            },
        }
    }
}

/// The quotas and each tenant's token bucket.
pub struct Enforcer {
    quotas: Quotas,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// `[limits] store_max_bytes`, and the store's size at its last measure.
    store_max: Option<u64>,
    store_size: AtomicU64,
    store_full: AtomicBool,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The first of `l`'s quotas that `load` has reached: why, and whether it resets at midnight
/// (a day's spend) rather than as the queue drains.
fn over_quota(tenant: &str, l: &Limits, load: &smith_store::TenantLoad) -> Option<(String, bool)> {
    let reached = |max: Option<u64>, used: u64| max.filter(|&m| used >= m);
    if let Some(max) = reached(l.max_queued, load.queued) {
        return Some((format!("tenant {tenant} has {} tasks queued, its quota is {max}", load.queued), false));
    }
    if let Some(max) = reached(l.daily_tokens, load.tokens) {
        return Some((format!("tenant {tenant} used {} tokens today, its daily quota is {max}", load.tokens), true));
    }
    if let Some(max) = reached(l.daily_output_bytes, load.output_bytes) {
        let used = load.output_bytes;
        let why = format!(
            "tenant {tenant}'s tasks wrote {used} bytes today, its daily quota is {max} bytes (daily_output_bytes)"
        );
        return Some((why, true));
    }
    let max = l.daily_cost_usd.filter(|&m| load.cost_usd >= m)?;
    Some((format!("tenant {tenant} spent ${:.4} today, its daily quota is ${max}", load.cost_usd), true))
}

fn limited(message: String, retry_after_s: u64) -> ApiError {
    ApiError::new(Code::RateLimited, message).retry_after(retry_after_s.max(1))
}

impl Enforcer {
    pub fn new(quotas: Quotas, store_max: Option<u64>) -> Enforcer {
        Enforcer {
            quotas,
            buckets: Mutex::new(HashMap::new()),
            store_max,
            store_size: AtomicU64::new(0),
            store_full: AtomicBool::new(false),
        }
    }

    /// Records the store's size; returns whether it is over the limit (new work refused).
    pub fn store_measured(&self, size: u64) -> bool {
        let full = self.store_max.is_some_and(|max| size > max);
        self.store_size.store(size, Ordering::Relaxed);
        if self.store_full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(size, max = self.store_max, "store over its size limit: refusing new submissions");
            } else {
                tracing::info!(size, max = self.store_max, "store back under its size limit: accepting submissions");
            }
        }
        full
    }

    /// Admits one submission of `tenant`, or says why not and when to retry.
    pub async fn admit(&self, store: &dyn Store, tenant: &str) -> ApiResult<()> {
        if self.store_full.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                Code::InsufficientStorage,
                format!(
                    "the store holds {} bytes, over its limit of {} ([limits] store_max_bytes): new work is refused until space is freed",
                    self.store_size.load(Ordering::Relaxed),
                    self.store_max.unwrap_or(0)
                ),
            ));
        }
        let l = self.quotas.for_tenant(tenant);
        if l.max_queued.is_some()
            || l.daily_tokens.is_some()
            || l.daily_cost_usd.is_some()
            || l.daily_output_bytes.is_some()
        {
            let now = Micros::now();
            let day = 86_400_000_000i64;
            let midnight = Micros(now.0 - now.0.rem_euclid(day));
            let load = store.tenant_load(tenant, midnight).await?;
            let to_midnight = ((midnight.0 + day - now.0) / 1_000_000) as u64 + 1;
            if let Some((why, daily)) = over_quota(tenant, &l, &load) {
                // a queue drains soon; a day's spend resets at midnight (UTC)
                return Err(limited(why, if daily { to_midnight } else { 1 }));
            }
        }
        if let Some(rate) = l.submissions_per_second {
            let burst = l.burst.unwrap_or(rate.max(1.0));
            let mut buckets = self.buckets.lock().expect("quota lock");
            let now = Instant::now();
            let b = buckets.entry(tenant.to_string()).or_insert(Bucket { tokens: burst, at: now });
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
            b.at = now;
            if b.tokens < 1.0 {
                let wait = ((1.0 - b.tokens) / rate).ceil() as u64;
                return Err(limited(format!("tenant {tenant} is over its {rate} submissions per second"), wait));
            }
            b.tokens -= 1.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_entry_overrides_field_by_field() {
        let q: Quotas = toml::from_str(
            "max_queued = 10\nsubmissions_per_second = 5.0\n[tenant.acme]\nmax_queued = 2\n[tenant.big]\nsubmissions_per_second = 100.0\n",
        )
        .unwrap();
        assert_eq!(q.for_tenant("acme").max_queued, Some(2));
        assert_eq!(q.for_tenant("acme").submissions_per_second, Some(5.0));
        assert_eq!(q.for_tenant("other").max_queued, Some(10));
        assert_eq!(q.for_tenant("big").submissions_per_second, Some(100.0));
        assert!(q.validate().is_ok());
        let bad: Quotas = toml::from_str("submissions_per_second = -1.0").unwrap();
        assert!(bad.validate().is_err());
        assert!(toml::from_str::<Quotas>("max_runing = 3").is_err(), "unknown keys are refused");
        let bytes: Quotas = toml::from_str("daily_output_bytes = 100\n[tenant.big]\ndaily_output_bytes = 900").unwrap();
        assert!(bytes.validate().is_ok());
        assert_eq!(bytes.for_tenant("big").daily_output_bytes, Some(900));
        assert_eq!(bytes.for_tenant("small").daily_output_bytes, Some(100));
        let zero: Quotas = toml::from_str("[tenant.x]\ndaily_output_bytes = 0").unwrap();
        assert!(zero.validate().unwrap_err().0.contains("quotas.tenant.x.daily_output_bytes"));
    }

    #[test]
    fn running_caps_are_the_default_and_each_tenant_s_own() {
        let q: Quotas = toml::from_str(
            "max_running = 2\n[tenant.big]\nmax_running = 10\n[tenant.fast]\nsubmissions_per_second = 9.0\n",
        )
        .unwrap();
        assert!(q.validate().is_ok());
        assert_eq!(q.for_tenant("fast").max_running, Some(2), "an entry without it keeps the default");
        let caps = q.running_caps();
        assert_eq!(caps.default, Some(2));
        assert_eq!(caps.tenants, HashMap::from([("big".to_string(), 10)]));
        assert_eq!((caps.cap("big"), caps.cap("fast"), caps.cap("any")), (Some(10), Some(2), Some(2)));
        assert!(Quotas::default().running_caps().is_unlimited());
        let zero: Quotas = toml::from_str("[tenant.x]\nmax_running = 0").unwrap();
        assert!(zero.validate().unwrap_err().0.contains("quotas.tenant.x.max_running"));
    }
}
