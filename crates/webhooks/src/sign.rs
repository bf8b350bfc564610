//! Standard Webhooks signatures: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`
//! under the secret's key bytes (ring's HMAC, no other crypto crate).

use base64::Engine as _;
use ring::hmac;

/// The `webhook-signature` header's value for one delivery attempt.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref()))
}

/// Whether a `webhook-signature` header (space-separated `v1,<base64>` entries) holds a valid
/// signature of the delivery: what a receiver checks, in constant time.
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let mut msg = Vec::with_capacity(body.len() + id.len() + 24);
    msg.extend_from_slice(format!("{id}.{timestamp}.").as_bytes());
    msg.extend_from_slice(body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    header.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|b64| {
        base64::engine::general_purpose::STANDARD.decode(b64).is_ok_and(|tag| hmac::verify(&key, &msg, &tag).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_like_the_reference() {
        let key = smith_core::webhook::secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &format!("v1,bm9wZQ== {sig}")));
        assert!(!verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body, &sig));
        assert!(!verify(&key, "msg_other", 1614265330, body, &sig));
    }
}
