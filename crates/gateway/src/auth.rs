//! Who is calling, and what they may do: the configured platform token, API keys (stored
//! hashed; `smk_<id>_<secret>`), and JWT bearer tokens (HMAC secret or a JWKS file), each
//! resolved to a [`Principal`] — an actor, a tenant and scopes — and the per-attempt
//! capabilities (`smc_…`) agents present to the MCP endpoint.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use smith_core::{Capability, CapabilityKey, Code, NewApiKey, Scope, ALL_TENANTS, DEFAULT_TENANT};
use smith_store::Store;

use crate::error::{ApiError, ApiResult};

/// The prefix of every API key.
pub const KEY_PREFIX: &str = "smk_";

/// A resolved caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `key:<id>`, `token`, `jwt:<sub>`, `task:<id>` (an agent's capability) or `anonymous`.
    pub actor: String,
    /// Its tenant; [`ALL_TENANTS`] for a platform admin.
    pub tenant: String,
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    /// Loopback without any authentication configured, or the platform token: every tenant,
    /// every scope.
    pub fn platform(actor: &str) -> Principal {
        Principal {
            actor: actor.to_string(),
            tenant: ALL_TENANTS.to_string(),
            scopes: Scope::ALL.into_iter().collect(),
        }
    }

    pub fn all_tenants(&self) -> bool {
        self.tenant == ALL_TENANTS
    }

    /// `admin` implies the other scopes within its tenant.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// 403 unless the principal holds `scope`.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::new(Code::PermissionDenied, format!("this credential lacks the `{}` scope", scope.as_str())))
        }
    }

    /// Whether an object of `tenant` is visible: another tenant's objects do not exist for it.
    pub fn sees(&self, tenant: &str) -> bool {
        self.all_tenants() || self.tenant == tenant
    }

    /// The tenant new objects are created in.
    pub fn write_tenant(&self) -> String {
        if self.all_tenants() {
            DEFAULT_TENANT.to_string()
        } else {
            self.tenant.clone()
        }
    }

    /// A tenant filter for listings: `None` for a platform admin.
    pub fn filter(&self) -> Option<String> {
        (!self.all_tenants()).then(|| self.tenant.clone())
    }
}

/// How JWT bearer tokens are verified.
#[derive(Clone)]
pub struct JwtOptions {
    keys: JwtKeys,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// The claim naming the tenant (default `tenant`).
    pub tenant_claim: String,
}

#[derive(Clone)]
enum JwtKeys {
    Hmac(Arc<jsonwebtoken::DecodingKey>),
    Jwks(Arc<jsonwebtoken::jwk::JwkSet>),
}

impl std::fmt::Debug for JwtOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            JwtKeys::Hmac(_) => "hmac <redacted>".to_string(),
            JwtKeys::Jwks(set) => format!("jwks ({} keys)", set.keys.len()),
        };
        f.debug_struct("JwtOptions")
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("tenant_claim", &self.tenant_claim)
            .finish()
    }
}

impl JwtOptions {
    /// HS256/384/512 tokens signed with `secret`.
    pub fn hmac(secret: &[u8]) -> Result<JwtOptions, crate::ConfigError> {
        if secret.len() < 32 {
            return Err("the JWT HMAC secret must be at least 32 bytes".into());
        }
        Ok(JwtOptions::with(JwtKeys::Hmac(Arc::new(jsonwebtoken::DecodingKey::from_secret(secret)))))
    }

    /// RS*/PS*/ES* tokens verified against the keys of a JWKS document (`{"keys": [...]}`),
    /// chosen by the token's `kid`.
    pub fn jwks(document: &str) -> Result<JwtOptions, crate::ConfigError> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(document).map_err(|e| format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
        if set.keys.is_empty() {
            return Err("the JWKS document has no keys".into());
        }
        for k in &set.keys {
            jsonwebtoken::DecodingKey::from_jwk(k)
                .map_err(|e| format!("JWKS key {:?} is unusable: {e}", k.common.key_id))?;
        }
        Ok(JwtOptions::with(JwtKeys::Jwks(Arc::new(set))))
    }

    fn with(keys: JwtKeys) -> JwtOptions {
        JwtOptions { keys, issuer: None, audience: None, tenant_claim: "tenant".to_string() }
    }

    fn verify(&self, token: &str) -> Result<Principal, String> {
        use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let (key, algorithms): (jsonwebtoken::DecodingKey, Vec<Algorithm>) = match &self.keys {
            JwtKeys::Hmac(k) => ((**k).clone(), vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
            JwtKeys::Jwks(set) => {
                let kid = header.kid.as_deref().ok_or("the token names no key (`kid`)")?;
                let jwk = set.find(kid).ok_or_else(|| format!("no key `{kid}` in the JWKS"))?;
                let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("key `{kid}`: {e}"))?;
                let algorithms = match jwk.common.key_algorithm {
                    Some(a) => vec![<Algorithm as std::str::FromStr>::from_str(&format!("{a:?}"))
                        .map_err(|_| format!("key `{kid}` has an algorithm ({a:?}) tokens cannot be signed with"))?],
                    None => vec![
                        Algorithm::RS256,
                        Algorithm::RS384,
                        Algorithm::RS512,
                        Algorithm::PS256,
                        Algorithm::PS384,
                        Algorithm::PS512,
                        Algorithm::ES256,
                        Algorithm::ES384,
                    ],
                };
                (key, algorithms)
            }
        };
        if !algorithms.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted for this key", header.alg));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = algorithms;
        v.leeway = 30;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        let data = decode::<Value>(token, &key, &v).map_err(|e| format!("token rejected: {e}"))?;
        let claims = data.claims;
        let sub = claims["sub"].as_str().ok_or("`sub` must be a string")?;
        let tenant = claims[&self.tenant_claim]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("the token has no `{}` claim naming its tenant", self.tenant_claim))?;
        // OAuth style `scope: "a b"`, or `scopes: ["a", "b"]`; unknown scopes are ignored
        // (other services' scopes share the token), but at least one must be ours.
        let mut names: Vec<String> = Vec::new();
        if let Some(s) = claims["scope"].as_str() {
            names.extend(s.split_whitespace().map(str::to_string));
        }
        if let Some(list) = claims["scopes"].as_array() {
            names.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
        let scopes: BTreeSet<Scope> = names.iter().filter_map(|n| Scope::parse(n)).collect();
        if scopes.is_empty() {
            return Err("the token grants none of this API's scopes (tasks:write, tasks:read, admin)".into());
        }
        Ok(Principal { actor: format!("jwt:{sub}"), tenant: tenant.to_string(), scopes })
    }
}

/// What the gateway accepts.
#[derive(Clone, Debug, Default)]
pub struct AuthOptions {
    /// The platform token: every tenant, every scope.
    pub token: Option<String>,
    pub jwt: Option<JwtOptions>,
    /// Verifies the per-attempt capabilities workers give their agents (see [`capability`]).
    pub capability: Option<CapabilityKey>,
    /// No credential configured and bound to loopback: callers without one act as the
    /// platform (zero-config `smith up`). API keys are still honoured.
    pub anonymous: bool,
}

/// The route a capability may call: the agent-facing MCP tools, nothing else.
pub const CAPABILITY_ROUTE: &str = "/mcp";

/// The attempt's capability the `Authorization` header carries, verified (MAC and expiry;
/// whether its attempt still runs is checked by the MCP endpoint); `None` when the header
/// holds another kind of credential.
pub fn capability(opts: &AuthOptions, header: Option<&str>) -> Option<ApiResult<Capability>> {
    let given = header?.strip_prefix("Bearer ")?.trim();
    if !given.starts_with(smith_core::capability::PREFIX) {
        return None;
    }
    let unauthenticated = |m: &str| ApiError::new(Code::Unauthenticated, m.to_string());
    Some(match &opts.capability {
        Some(key) => key.verify(given, smith_core::Micros::now()).map_err(unauthenticated),
        None => Err(unauthenticated("this gateway accepts no agent capabilities")),
    })
}

impl Principal {
    /// The agent of a capability's attempt: its task's tenant, reading and writing through the
    /// MCP tools only ([`CAPABILITY_ROUTE`]; the guard refuses every other route).
    pub fn agent(cap: &Capability) -> Principal {
        Principal {
            actor: format!("task:{}", cap.task),
            tenant: cap.tenant.clone(),
            scopes: [Scope::TasksRead, Scope::TasksWrite].into(),
        }
    }
}

/// Resolves the `Authorization` header to a principal, or a 401 that says why.
pub async fn authenticate(opts: &AuthOptions, store: &dyn Store, header: Option<&str>) -> ApiResult<Principal> {
    let unauthenticated = |m: String| ApiError::new(Code::Unauthenticated, m);
    let Some(header) = header else {
        return if opts.anonymous {
            Ok(Principal::platform("anonymous"))
        } else {
            Err(unauthenticated("missing bearer token".into()))
        };
    };
    let Some(given) = header.strip_prefix("Bearer ").map(str::trim) else {
        return Err(unauthenticated("the Authorization header must be `Bearer <token>`".into()));
    };
    if let Some(token) = &opts.token {
        if subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into() {
            return Ok(Principal::platform("token"));
        }
    }
    if let Some(rest) = given.strip_prefix(KEY_PREFIX) {
        return api_key(store, rest).await;
    }
    if given.split('.').count() == 3 {
        return match &opts.jwt {
            Some(jwt) => jwt.verify(given).map_err(unauthenticated),
            None => Err(unauthenticated("JWT bearer tokens are not configured on this gateway".into())),
        };
    }
    Err(unauthenticated("invalid bearer token".into()))
}

async fn api_key(store: &dyn Store, rest: &str) -> ApiResult<Principal> {
    let invalid = || ApiError::new(Code::Unauthenticated, "invalid API key");
    let (id, secret) = rest.split_once('_').ok_or_else(invalid)?;
    if id.is_empty() || id.len() > 64 || secret.is_empty() || secret.len() > 128 {
        return Err(invalid());
    }
    let Some((key, hash)) = store.api_key(id).await? else {
        return Err(invalid());
    };
    let given = sha256_hex(secret.as_bytes());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), hash.as_bytes())) {
        return Err(invalid());
    }
    if key.revoked_at.is_some() {
        return Err(ApiError::new(Code::Unauthenticated, "this API key has been revoked"));
    }
    Ok(Principal { actor: format!("key:{}", key.id), tenant: key.tenant, scopes: key.scopes.into_iter().collect() })
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key: its stored form and the full secret to show once.
pub fn mint_key(tenant: &str, scopes: Vec<Scope>, name: Option<String>) -> (NewApiKey, String) {
    let id = random_token(12);
    let secret = random_token(40);
    let full = format!("{KEY_PREFIX}{id}_{secret}");
    (NewApiKey { id, tenant: tenant.to_string(), scopes, name, secret_sha256: sha256_hex(secret.as_bytes()) }, full)
}

/// A random secret for a process's own use (`smith up` derives its agents' capability key
/// from it), never shown or written anywhere.
pub fn internal_token() -> String {
    format!("internal-{}", random_token(40))
}

/// `n` characters of [a-z0-9] from the operating system's random source.
fn random_token(n: usize) -> String {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        rng.fill(&mut buf).expect("the system random source works");
        // 252 = 7 × 36: reject the rest so every character is equally likely
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[(*b % 36) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, full_a) = mint_key("t1", vec![Scope::TasksRead], None);
        let (b, _) = mint_key("t1", vec![Scope::TasksRead], None);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 12);
        let secret = full_a.strip_prefix(&format!("{KEY_PREFIX}{}_", a.id)).unwrap();
        assert_eq!(secret.len(), 40);
        assert_eq!(a.secret_sha256, sha256_hex(secret.as_bytes()));
        assert!(!a.secret_sha256.contains(secret));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn admin_implies_the_other_scopes_and_tenants_are_walls() {
        let p = Principal { actor: "key:x".into(), tenant: "acme".into(), scopes: [Scope::Admin].into() };
        assert!(p.has(Scope::TasksWrite) && p.has(Scope::TasksRead));
        assert!(p.sees("acme") && !p.sees("other") && !p.sees(DEFAULT_TENANT));
        assert_eq!(p.filter().as_deref(), Some("acme"));
        let r = Principal { actor: "key:y".into(), tenant: "acme".into(), scopes: [Scope::TasksRead].into() };
        assert!(r.require(Scope::TasksWrite).is_err());
        let root = Principal::platform("token");
        assert!(root.sees("anyone") && root.filter().is_none());
        assert_eq!(root.write_tenant(), DEFAULT_TENANT);
    }

    #[test]
    fn hmac_secrets_must_be_long() {
        assert!(JwtOptions::hmac(b"short").is_err());
        assert!(JwtOptions::hmac(&[7u8; 32]).is_ok());
        assert!(JwtOptions::jwks("{}").is_err());
        assert!(JwtOptions::jwks(r#"{"keys": []}"#).is_err());
    }
}
