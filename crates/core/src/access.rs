//! API keys, scopes and the audit log: who may do what, and what they did.

use serde::{Deserialize, Serialize};

use crate::time::Micros;

/// What a credential may do. Scopes are checked per route; `admin` implies the others within
/// its tenant, and a platform admin (the configured token, or `admin` on tenant `*`) acts on
/// every tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Submit and cancel tasks, start and continue sessions, share discoveries and messages.
    #[serde(rename = "tasks:write")]
    TasksWrite,
    /// Read tasks, events, sessions, usage, agents, nodes, scaling.
    #[serde(rename = "tasks:read")]
    TasksRead,
    /// Manage keys and read the audit log.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::TasksWrite, Scope::TasksRead, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::TasksWrite => "tasks:write",
            Scope::TasksRead => "tasks:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The tenant that names every tenant: a key or token on it acts across tenants (platform admin).
pub const ALL_TENANTS: &str = "*";

/// A stored API key, without its secret. The secret is shown once, at creation; the store keeps
/// only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public, unique: the part of the key before the secret (`smk_<id>_<secret>`).
    pub id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// A label for people (`ci`, `alice's laptop`).
    pub name: Option<String>,
    pub created_at: Micros,
    pub revoked_at: Option<Micros>,
}

/// What the store needs to create a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    pub name: Option<String>,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_sha256: String,
}

impl NewApiKey {
    /// The key as stored at `now`: live, without its secret.
    pub fn created(&self, now: crate::Micros) -> ApiKey {
        ApiKey {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.clone(),
            name: self.name.clone(),
            created_at: now,
            revoked_at: None,
        }
    }

    /// The refusal of a key whose id is taken.
    pub fn conflict(&self) -> crate::Error {
        crate::Error::new(crate::Code::Conflict, format!("API key {} already exists", self.id))
    }
}

/// One mutating request, as the audit log keeps it: the record with the number the store gave
/// it. Append-only. Its fields read through to the record (`r.actor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing, assigned by the store.
    pub id: u64,
    #[serde(flatten)]
    pub entry: NewAuditRecord,
}

impl std::ops::Deref for AuditRecord {
    type Target = NewAuditRecord;
    fn deref(&self) -> &NewAuditRecord {
        &self.entry
    }
}

/// An audit record before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditRecord {
    pub at: Micros,
    /// Who: `key:<id>`, `token` (the configured bearer token), `jwt:<sub>`, or `anonymous`
    /// (loopback without authentication).
    pub actor: String,
    pub tenant: String,
    /// What, e.g. `task.submit`, `task.cancel`, `session.start`, `key.create`.
    pub action: String,
    /// The object acted on (a task id, a key id), when there is one.
    pub target: Option<String>,
    /// The client's address.
    pub source: String,
    /// The HTTP status answered.
    pub status: u16,
}

impl NewAuditRecord {
    /// The record as the store keeps it, numbered `id`.
    pub fn numbered(&self, id: u64) -> AuditRecord {
        AuditRecord { id, entry: self.clone() }
    }
}

/// Which audit records to list: every field narrows; newest last, `id > after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
    pub after: u64,
    pub limit: usize,
}
