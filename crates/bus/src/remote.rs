//! Pieces the networked backends (NATS, AMQP) share: their connect timeout and reconnect
//! backoff, hiding credentials in URLs, decoding percent-escapes in user names and passwords.

use std::time::Duration;

/// Longest wait for a connection: TCP (and TLS) connect, login, and the first exchange with
/// the server (NATS: its first PONG; AMQP: declaring the exchange and reply queue).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound of the backoff between reconnect attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// The connection name a server shows in its management UI or monitoring endpoints.
pub(crate) const CLIENT_NAME: &str = "smith";

/// `url` with anything between `://` and the last `@` of the authority hidden.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes as URLs carry them in user names, passwords and paths; `None` when
/// the result is not UTF-8. A `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Backoff before reconnect attempt `attempt` (1 for the first after a loss): none, then
/// 100 ms doubling up to `max`, with up to 20% jitter so that many processes do not hit a
/// restarted broker in lockstep.
pub(crate) fn reconnect_delay(attempt: usize, max: Duration) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(16);
    let base = Duration::from_millis(100).saturating_mul(1 << doublings).min(max);
    let jitter = base.mul_f64(fastrand::f64() * 0.2);
    (base + jitter).min(max)
}

/// A URL query's `key=value` options in order (a bare `key` has an empty value).
pub(crate) fn query_options(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The `capacity` option: messages a subscription buffers.
pub(crate) fn capacity_option(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("capacity must be a positive integer, got `{value}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(redact("nats://u:p@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://tok@h:1/x?y=a@b"), "nats://***@h:1/x?y=a@b");
        assert_eq!(redact("nats://h:1?y=a@b"), "nats://h:1?y=a@b");
        assert_eq!(redact("nats://a@b@h"), "nats://***@h");
        assert_eq!(redact("amqps://u:p%40ss@h/%2f"), "amqps://***@h/%2f");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2f").as_deref(), Some("a b/"));
        assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        const MAX: Duration = Duration::from_secs(5);
        assert_eq!(reconnect_delay(0, MAX), Duration::ZERO);
        assert_eq!(reconnect_delay(1, MAX), Duration::ZERO);
        for attempt in 2..8 {
            let floor = (Duration::from_millis(100) * (1 << (attempt - 2))).min(MAX);
            let delay = reconnect_delay(attempt, MAX);
            let ceiling = floor.mul_f64(1.2).min(MAX);
            assert!(delay >= floor && delay <= ceiling, "attempt {attempt}: {delay:?}");
        }
        for attempt in [8, 20, 64, usize::MAX] {
            assert_eq!(reconnect_delay(attempt, MAX), MAX, "{attempt}");
        }
    }
}
