//! Per-attempt capabilities: the credential an agent gets for the platform's MCP endpoint.
//!
//! A worker mints one when an attempt starts: `smc_<base64url(payload)>.<base64url(mac)>`, the
//! payload naming the task, its attempt, its tenant and an expiry, the MAC an HMAC-SHA256 under
//! a key derived from a secret the worker and the gateway share. Any gateway verifies it without
//! a store write; the gateway also refuses it once the task is no longer running at that attempt.

use crate::{Micros, TaskId};
use serde::{Deserialize, Serialize};

/// The prefix of every capability.
pub const PREFIX: &str = "smc_";
/// The label the MAC key is derived under, so the shared secret is never used directly.
const KEY_LABEL: &[u8] = b"mistersmith mcp capability v1";
/// Longest accepted capability, so a huge bearer costs nothing to refuse.
const MAX_LEN: usize = 2048;

/// What a capability grants: the agent-facing tools, as the task `task` at `attempt` of `tenant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub task: TaskId,
    pub attempt: u32,
    pub tenant: String,
    /// Refused from this time on (microseconds since the epoch).
    pub expires: Micros,
}

/// A capability's payload as signed: short names, the expiry in plain microseconds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    t: TaskId,
    a: u32,
    n: String,
    e: i64,
}

/// The MAC key derived from a shared secret.
#[derive(Clone)]
pub struct CapabilityKey(ring::hmac::Key);

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey(<redacted>)")
    }
}

impl CapabilityKey {
    /// HMAC-SHA256(secret, label) as the key: the secret itself never signs anything.
    pub fn derive(secret: &[u8]) -> CapabilityKey {
        let outer = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let derived = ring::hmac::sign(&outer, KEY_LABEL);
        CapabilityKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The bearer string for `cap`.
    pub fn mint(&self, cap: &Capability) -> String {
        let wire = Wire { t: cap.task, a: cap.attempt, n: cap.tenant.clone(), e: cap.expires.0 };
        let payload = encode(&serde_json::to_vec(&wire).expect("a capability serializes"));
        let mac = ring::hmac::sign(&self.0, payload.as_bytes());
        format!("{PREFIX}{payload}.{}", encode(mac.as_ref()))
    }

    /// The capability `bearer` carries, when its MAC is ours and it has not expired at `now`.
    pub fn verify(&self, bearer: &str, now: Micros) -> Result<Capability, &'static str> {
        if bearer.len() > MAX_LEN {
            return Err("malformed capability");
        }
        let rest = bearer.strip_prefix(PREFIX).ok_or("malformed capability")?;
        let (payload, mac) = rest.split_once('.').ok_or("malformed capability")?;
        let mac = decode(mac).ok_or("malformed capability")?;
        ring::hmac::verify(&self.0, payload.as_bytes(), &mac).map_err(|_| "invalid capability")?;
        let bytes = decode(payload).ok_or("malformed capability")?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| "malformed capability")?;
        let cap = Capability { task: wire.t, attempt: wire.a, tenant: wire.n, expires: Micros(wire.e) };
        if now >= cap.expires {
            return Err("this capability has expired");
        }
        Ok(cap)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// base64url without padding; `None` for anything else.
fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // the unused low bits of a short final chunk must be zero (one spelling per value)
        let used = 8 * (chunk.len() - 1);
        if chunk.len() < 4 && n & ((1 << (24 - used)) - 1) != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(expires: i64) -> Capability {
        Capability { task: TaskId::new(), attempt: 2, tenant: "acme".into(), expires: Micros(expires) }
    }

    #[test]
    fn base64url_round_trips_and_refuses_other_spellings() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
            assert_eq!(decode(&text).as_deref(), Some(&bytes[..]), "{len}");
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8");
        assert_eq!(decode("Zm9"), None, "nonzero unused bits");
        assert_eq!(decode("Z"), None);
        assert_eq!(decode("Zm+v"), None);
    }

    #[test]
    fn a_minted_capability_verifies_until_it_expires() {
        let key = CapabilityKey::derive(b"shared secret");
        let c = cap(2_000);
        let bearer = key.mint(&c);
        assert!(bearer.starts_with(PREFIX));
        assert_eq!(key.verify(&bearer, Micros(1_999)), Ok(c));
        assert_eq!(key.verify(&bearer, Micros(2_000)), Err("this capability has expired"));
    }

    #[test]
    fn another_key_or_a_changed_payload_is_refused() {
        let key = CapabilityKey::derive(b"shared secret");
        let bearer = key.mint(&cap(i64::MAX));
        assert_eq!(CapabilityKey::derive(b"other secret").verify(&bearer, Micros(0)), Err("invalid capability"));
        // the same payload with another tenant, signed by nobody
        let (payload, mac) = bearer.strip_prefix(PREFIX).unwrap().split_once('.').unwrap();
        let text = String::from_utf8(decode(payload).unwrap()).unwrap().replace("acme", "evil");
        let forged = format!("{PREFIX}{}.{mac}", encode(text.as_bytes()));
        assert_eq!(key.verify(&forged, Micros(0)), Err("invalid capability"));
        assert_eq!(key.verify("smc_nodot", Micros(0)), Err("malformed capability"));
        assert_eq!(key.verify(&"x".repeat(5000), Micros(0)), Err("malformed capability"));
        // the secret is not the key: a MAC under the raw secret is refused
        let raw = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"shared secret");
        let mac = encode(ring::hmac::sign(&raw, payload.as_bytes()).as_ref());
        assert_eq!(key.verify(&format!("{PREFIX}{payload}.{mac}"), Micros(0)), Err("invalid capability"));
        assert!(!format!("{key:?}").contains("secret"));
    }
}
