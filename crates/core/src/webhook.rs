//! Webhooks: a tenant's subscriptions to its events, a task's own webhook, their deliveries,
//! the event kinds a subscription names, and the Standard Webhooks secret (`whsec_<base64>`).

use crate::{Error, Micros, Result, TaskId};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The prefix of a Standard Webhooks secret; the rest is its key, base64.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a generated secret's key (Standard Webhooks: 24 to 64).
const GENERATED_KEY_BYTES: usize = 32;
/// The longest URL a webhook may name.
pub const MAX_URL_LEN: usize = 2048;
/// Kinds a subscription may name at most.
pub const MAX_KINDS: usize = 32;

/// The kinds a task's (or session turn's) own webhook is sent: its end, and a person asked.
pub fn task_webhook_wants(kind: &str) -> bool {
    matches!(
        kind,
        "task.succeeded"
            | "task.failed"
            | "task.cancelled"
            | "task.timed_out"
            | "approval.requested"
            | "input.requested"
    )
}

/// A subscription of a tenant to its events of some kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// Event kinds (`task.succeeded`), prefixes (`task.*`) or `*`.
    pub kinds: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The signing secret (`whsec_…`): never serialized, so never served or logged.
    #[serde(skip)]
    pub secret: String,
    pub created_at: Micros,
}

impl Webhook {
    /// Whether an event of `kind` in `tenant`, committed at `at`, goes to this subscription: its
    /// tenant's, of a kind it names, and not older than the subscription.
    pub fn wants(&self, kind: &str, tenant: Option<&str>, at: Micros) -> bool {
        tenant == Some(self.tenant.as_str()) && at >= self.created_at && kinds_match(&self.kinds, kind)
    }
}

/// Whether `kind` is one of `patterns` (a name, `prefix.*` or `*`).
pub fn kinds_match(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => kind.starts_with(prefix),
        None => p == kind,
    })
}

/// Checks what a subscription names: 1..=[`MAX_KINDS`] patterns, each `*`, `<prefix>.*` or an
/// event kind that exists.
pub fn check_kinds(kinds: &[String]) -> Result<()> {
    if kinds.is_empty() || kinds.len() > MAX_KINDS {
        return Err(Error::unprocessable(format!("kinds must name 1..={MAX_KINDS} event kinds or patterns")));
    }
    for k in kinds {
        let ok = match k.strip_suffix(".*") {
            _ if k == "*" => true,
            Some(prefix) => !prefix.is_empty() && known_kinds().any(|n| n.starts_with(&format!("{prefix}."))),
            None => known_kinds().any(|n| n == k),
        };
        if !ok {
            let names: Vec<&str> = known_kinds().collect();
            return Err(Error::unprocessable(format!(
                "kinds: {:?} is not an event kind, `prefix.*` or `*` (kinds: {})",
                crate::task::truncate(k, 64),
                names.join(", ")
            )));
        }
    }
    Ok(())
}

fn known_kinds() -> impl Iterator<Item = &'static str> {
    crate::EventKind::ALL.iter().map(|k| k.as_str())
}

/// A webhook URL's form: `http` or `https`, a host, no credentials, at most [`MAX_URL_LEN`]
/// bytes. Where it points is the SSRF guard's business (the `smith-webhooks` crate).
pub fn check_url(url: &str) -> Result<()> {
    let bad = |why: &str| Error::unprocessable(format!("url: {why}"));
    if url.len() > MAX_URL_LEN {
        return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("must be an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    Ok(())
}

/// A secret's key bytes: `whsec_` and base64 of 16..=64 bytes.
pub fn secret_key(secret: &str) -> Result<Vec<u8>> {
    let bad = || Error::unprocessable(format!("secret must be {SECRET_PREFIX} followed by base64 of 16 to 64 bytes"));
    let b64 = secret.strip_prefix(SECRET_PREFIX).ok_or_else(bad)?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
    if !(16..=64).contains(&key.len()) {
        return Err(bad());
    }
    Ok(key)
}

/// A new random secret, `whsec_` and base64 of 32 bytes.
pub fn generate_secret() -> String {
    use ring::rand::SecureRandom as _;
    let mut key = [0u8; GENERATED_KEY_BYTES];
    ring::rand::SystemRandom::new().fill(&mut key).expect("the system's random source works");
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// A task's own webhook (`webhook` on `POST /v1/tasks` or a session turn): its terminal and
/// request events go to `url`. The secret signs them and is never serialized once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskWebhook {
    pub url: String,
    /// Serialized only where the stores keep it (see [`StoredTaskWebhook`]); served as absent.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
}

/// A task's webhook as the task's `options` column holds it, secret included.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredTaskWebhook {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&TaskWebhook> for StoredTaskWebhook {
    fn from(w: &TaskWebhook) -> Self {
        StoredTaskWebhook { url: w.url.clone(), secret: w.secret.clone() }
    }
}

impl From<StoredTaskWebhook> for TaskWebhook {
    fn from(w: StoredTaskWebhook) -> Self {
        TaskWebhook { url: w.url, secret: w.secret }
    }
}

impl TaskWebhook {
    pub fn validate(&self) -> Result<()> {
        check_url(&self.url).map_err(|e| Error::unprocessable(format!("webhook.{}", e.message)))?;
        if let Some(s) = &self.secret {
            secret_key(s).map_err(|e| Error::unprocessable(format!("webhook.{}", e.message)))?;
        }
        Ok(())
    }
}

/// Where a delivery stands: `pending` (to be sent, or sent again at `next_at`), `delivered`
/// (a 2xx answer) or `failed` (retried for the configured time, or refused for good).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 3] = [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

crate::named_enum!(DeliveryState, "delivery state");

/// One event to be sent to one URL, as the dispatcher records it from the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    /// The subscription; `None` for a task's own webhook.
    pub webhook_id: Option<String>,
    pub tenant: String,
    pub task_id: Option<TaskId>,
    pub event_pos: u64,
    pub event_type: String,
    pub url: String,
    pub secret: Option<String>,
    /// The body sent, fixed once: `{type, timestamp, data}`.
    pub payload: Value,
    pub created_at: Micros,
}

impl NewDelivery {
    /// A fresh `webhook-id`: `msg_` and a time-ordered UUID.
    pub fn new_id() -> String {
        format!("msg_{}", uuid::Uuid::now_v7().simple())
    }
}

/// A delivery as stored: what was sent and how it went. The URL, secret and payload are for
/// the sender only and are never serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: Option<String>,
    pub tenant: String,
    pub task_id: Option<TaskId>,
    pub event_pos: u64,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// When it is sent next (`pending` only).
    pub next_at: Option<Micros>,
    pub created_at: Micros,
    pub updated_at: Micros,
    #[serde(skip)]
    pub url: String,
    #[serde(skip)]
    pub secret: Option<String>,
    #[serde(skip)]
    pub payload: Value,
}

/// How one attempt ended, as the sender records it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    /// `Delivered`, `Failed`, or `Pending` with the time of the next attempt in `next_at`.
    pub state: DeliveryState,
    pub next_at: Option<Micros>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: Micros,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_match_names_prefixes_and_everything() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(kinds_match(&k(&["*"]), "output"));
        assert!(kinds_match(&k(&["task.*"]), "task.failed"));
        assert!(!kinds_match(&k(&["task.*"]), "output"));
        assert!(kinds_match(&k(&["task.succeeded", "approval.requested"]), "approval.requested"));
        assert!(!kinds_match(&k(&["task.succeeded"]), "task.failed"));
        for good in [&["*"][..], &["task.*"], &["task.succeeded", "approval.requested"], &["workspace.*"]] {
            check_kinds(&k(good)).unwrap();
        }
        for bad in [&[][..], &["task.done"], &["nope.*"], &[".*"], &["task"]] {
            assert!(check_kinds(&k(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_and_secrets_are_checked() {
        check_url("https://example.com/hook?x=1").unwrap();
        check_url("http://127.0.0.1:9/x").unwrap();
        for bad in ["ftp://x", "https://", "https://u:p@x.com/", "https://x .com", "example.com"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let s = generate_secret();
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert!(secret_key("whsec_").is_err() && secret_key("abc").is_err() && secret_key("whsec_!!").is_err());
    }

    #[test]
    fn secrets_are_never_serialized() {
        let w = Webhook {
            id: "w".into(),
            tenant: "acme".into(),
            url: "https://x".into(),
            kinds: vec!["*".into()],
            description: None,
            secret: "whsec_c2VjcmV0c2VjcmV0c2VjcmV0".into(),
            created_at: Micros(1),
        };
        let t = TaskWebhook { url: "https://x".into(), secret: Some("whsec_c2VjcmV0c2VjcmV0c2VjcmV0".into()) };
        for text in [serde_json::to_string(&w).unwrap(), serde_json::to_string(&t).unwrap()] {
            assert!(!text.contains("whsec_"), "{text}");
        }
        assert!(serde_json::to_string(&StoredTaskWebhook::from(&t)).unwrap().contains("whsec_"));
    }
}
