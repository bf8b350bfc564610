//! What every backend shares about API keys and the audit log: the checks made before a write,
//! the stored form of scopes, and the audit page limit.

use crate::{Error, Result};
use smith_core::{AuditQuery, NewApiKey, NewAuditRecord, Scope};

/// Audit records one query returns at most.
pub const AUDIT_LIMIT: usize = 1000;

/// The page size an audit query gets: its limit, capped; 0 means the cap.
pub(crate) fn audit_limit(q: &AuditQuery) -> usize {
    match q.limit {
        0 => AUDIT_LIMIT,
        n => n.min(AUDIT_LIMIT),
    }
}

/// Scopes as a column stores them: their names, comma-separated, in the order given.
pub(crate) fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// The inverse of [`scopes_text`]. A name this build does not know is an error, never dropped:
/// a key must not silently lose (or be read with fewer) permissions than it was stored with.
pub(crate) fn parse_scopes(text: &str) -> Result<Vec<Scope>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| Scope::parse(s).ok_or_else(|| Error::Backend(format!("unknown scope {s:?} stored on an API key"))))
        .collect()
}

/// A NUL character: SQLite would keep it, PostgreSQL refuses it; both backends refuse it first.
fn no_nul(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(smith_core::Error::unprocessable(format!("{field} contains a NUL character")).into());
    }
    Ok(())
}

pub(crate) fn check_new_key(key: &NewApiKey) -> Result<()> {
    if key.id.is_empty() {
        return Err(smith_core::Error::invalid("an API key needs an id").into());
    }
    if key.tenant.is_empty() {
        return Err(smith_core::Error::invalid("an API key needs a tenant").into());
    }
    let hex =
        key.secret_sha256.len() == 64 && key.secret_sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex {
        // a plaintext secret passed by mistake must never be stored
        return Err(smith_core::Error::invalid("secret_sha256 must be 64 lowercase hex digits").into());
    }
    no_nul("id", &key.id)?;
    no_nul("tenant", &key.tenant)?;
    no_nul("name", key.name.as_deref().unwrap_or_default())
}

pub(crate) fn check_audit(r: &NewAuditRecord) -> Result<()> {
    no_nul("actor", &r.actor)?;
    no_nul("tenant", &r.tenant)?;
    no_nul("action", &r.action)?;
    no_nul("target", r.target.as_deref().unwrap_or_default())?;
    no_nul("source", &r.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_errors() {
        for scopes in [vec![], vec![Scope::Admin], vec![Scope::TasksRead, Scope::TasksWrite, Scope::Admin]] {
            assert_eq!(parse_scopes(&scopes_text(&scopes)).unwrap(), scopes);
        }
        assert!(parse_scopes("tasks:read,root").is_err());
        assert!(parse_scopes(",").is_err());
    }

    #[test]
    fn audit_limit_is_capped_and_zero_means_the_cap() {
        let q = |limit| AuditQuery { limit, ..Default::default() };
        assert_eq!([audit_limit(&q(0)), audit_limit(&q(5)), audit_limit(&q(5000))], [AUDIT_LIMIT, 5, AUDIT_LIMIT]);
    }
}
