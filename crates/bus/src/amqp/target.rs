//! What an `amqp://` URL says (broker, credentials, virtual host, bus options), and how NATS
//! subjects, patterns and queue groups are named on the broker.

use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};

use crate::error::{Error, Result};
use crate::memory::DEFAULT_CAPACITY;
use crate::remote::{capacity_option, percent_decode, query_options, redact};

/// The exchange every subject is published to unless the URL names another.
pub const DEFAULT_EXCHANGE: &str = "smith";

/// Seconds between heartbeats unless the URL says otherwise: a dead peer is noticed after
/// about two missed ones.
pub const DEFAULT_HEARTBEAT: u16 = 10;

/// AMQP routing and binding keys are short strings: at most 255 bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A queue group's queue goes away this long after its last member left, even if the
/// auto-delete that should have removed it at once never happened (a member died between
/// declaring and consuming).
pub const GROUP_QUEUE_EXPIRY: Duration = Duration::from_secs(60);

/// A parsed bus URL, credentials kept apart from what may be shown.
pub(crate) struct Target {
    /// What lapin connects to, credentials included.
    pub uri: AMQPUri,
    /// `scheme://host:port/vhost` without credentials, for messages and logs.
    pub display: String,
    pub exchange: String,
    pub capacity: usize,
    /// A PEM file of extra certificate authorities to trust for `amqps` (`?cacertfile=`).
    pub ca_file: Option<String>,
}

impl Target {
    /// Parses `amqp[s]://[user[:password]@]host[:port][/vhost][?option=value&…]`.
    ///
    /// The port defaults to 5672 (`amqp`) or 5671 (`amqps`); no path or an empty one is the
    /// default virtual host `/`, which is spelled `%2f` in a path. Options: `capacity`
    /// (per-subscriber buffer), `exchange` (the topic exchange, default `smith`),
    /// `heartbeat` (seconds, 0 for none) and, for `amqps`, `cacertfile` (a PEM file of
    /// certificate authorities to trust besides the system's, as in RabbitMQ's URI spec).
    pub fn parse(url: &str, connect_timeout: Duration) -> Result<Target> {
        let shown = redact(url);
        let bad = |why: String| Error::Config(format!("bus URL `{shown}`: {why}"));
        let (scheme, rest) = match url.split_once("://") {
            Some(("amqp", rest)) => (AMQPScheme::AMQP, rest),
            Some(("amqps", rest)) => (AMQPScheme::AMQPS, rest),
            _ => return Err(bad("the AMQP backend takes amqp:// or amqps:// URLs".into())),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        if rest.contains('#') {
            return Err(bad("an AMQP URL has no fragment".into()));
        }
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };

        let (host, port) = split_host_port(host_port).map_err(&bad)?;
        let port = match port {
            None => scheme.default_port(),
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad(format!("invalid port `{text}`"))),
            },
        };
        if host.is_empty() {
            return Err(bad("no host".into()));
        }

        // As in lapin and the RabbitMQ clients: no credentials means guest/guest.
        let userinfo = match userinfo {
            None => AMQPUserInfo::default(),
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                AMQPUserInfo {
                    username: percent_decode(user).ok_or_else(|| bad("user is not valid UTF-8".into()))?,
                    password: percent_decode(password).ok_or_else(|| bad("password is not valid UTF-8".into()))?,
                }
            }
        };
        if path.contains('/') {
            return Err(bad("a virtual host is one path segment; write a `/` in its name as %2f".into()));
        }
        let vhost = match percent_decode(path) {
            Some(vhost) if vhost.is_empty() => "/".to_owned(),
            Some(vhost) => vhost,
            None => return Err(bad("virtual host is not valid UTF-8".into())),
        };

        let mut exchange = DEFAULT_EXCHANGE.to_owned();
        let mut capacity = DEFAULT_CAPACITY;
        let mut heartbeat = DEFAULT_HEARTBEAT;
        let mut ca_file = None;
        for (key, value) in query_options(query) {
            match key {
                "capacity" => capacity = capacity_option(value).map_err(&bad)?,
                "exchange" => {
                    exchange = percent_decode(value).unwrap_or_default();
                    validate_exchange(&exchange).map_err(&bad)?;
                }
                "heartbeat" => match value.parse::<u16>() {
                    Ok(seconds) => heartbeat = seconds,
                    _ => return Err(bad(format!("heartbeat must be a number of seconds, got `{value}`"))),
                },
                "cacertfile" if scheme == AMQPScheme::AMQPS => {
                    ca_file = Some(percent_decode(value).ok_or_else(|| bad("cacertfile is not valid UTF-8".into()))?);
                }
                "cacertfile" => return Err(bad("cacertfile needs an amqps:// URL".into())),
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}`; supported: capacity, exchange, heartbeat, cacertfile"
                    )))
                }
            }
        }

        let scheme_name = if scheme == AMQPScheme::AMQPS { "amqps" } else { "amqp" };
        let shown_host = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let display = format!("{scheme_name}://{shown_host}:{port}/{path}");
        let uri = AMQPUri {
            scheme,
            authority: AMQPAuthority { userinfo, host: host.to_owned(), port },
            vhost,
            query: AMQPQueryString {
                heartbeat: Some(heartbeat),
                connection_timeout: Some(u64::try_from(connect_timeout.as_millis()).unwrap_or(u64::MAX)),
                ..AMQPQueryString::default()
            },
        };
        Ok(Target { uri, display, exchange, capacity, ca_file })
    }
}

/// `host[:port]` or `[v6]:port` into host and port text.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = text.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("unclosed `[` in the host".into());
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected `{after}` after the host")),
            },
        };
    }
    Ok(match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    })
}

/// Exchange names as AMQP allows them, minus the `amq.` ones the broker reserves.
fn validate_exchange(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if name.is_empty() || name.len() > MAX_KEY_LEN || !name.chars().all(allowed) {
        return Err(format!("exchange `{name}` must be 1 to 255 of A-Z a-z 0-9 - _ . :"));
    }
    if name.starts_with("amq.") {
        return Err(format!("exchange `{name}`: names starting with `amq.` are reserved by the broker"));
    }
    Ok(())
}

/// Fails for a subject or binding key longer than AMQP can carry.
pub(crate) fn check_key_len(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidSubject(format!(
            "subject or pattern of {} bytes exceeds the {MAX_KEY_LEN}-byte limit of AMQP routing keys",
            key.len()
        )));
    }
    Ok(())
}

/// The topic-exchange binding key for a NATS pattern: `*` means one word in both, NATS `>`
/// becomes `#`. `#` also matches zero words, so a `>` pattern needs the client-side check
/// ([`needs_filter`]) to keep NATS semantics.
pub(crate) fn binding_key(pattern: &str) -> String {
    pattern.split('.').map(|token| if token == ">" { "#" } else { token }).collect::<Vec<_>>().join(".")
}

/// Whether the broker may deliver messages the NATS pattern does not match: `#` (from `>`)
/// matches zero words, and a literal `#` token in a NATS pattern is a wildcard to AMQP.
pub(crate) fn needs_filter(pattern: &str) -> bool {
    pattern.split('.').any(|token| token == ">" || token == "#")
}

/// The shared queue of queue group `group` on `pattern`: readable where it fits, and
/// distinct per (exchange, group, pattern) by a hash, since groups and patterns may both
/// contain the separator.
pub(crate) fn group_queue(exchange: &str, group: &str, pattern: &str) -> String {
    let hash = fnv1a64(&[exchange, group, pattern]);
    let mut readable = format!("smith-group:{group}:{pattern}");
    let room = MAX_KEY_LEN - 17; // ":" and 16 hex digits
    if readable.len() > room {
        let mut cut = room;
        while !readable.is_char_boundary(cut) {
            cut -= 1;
        }
        readable.truncate(cut);
    }
    format!("{readable}:{hash:016x}")
}

/// FNV-1a over the parts, each followed by a newline (which no part contains): stable
/// across builds and processes, unlike `std`'s hasher.
fn fnv1a64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(b"\n") {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn urls() {
        let t = Target::parse("amqp://127.0.0.1", TIMEOUT).unwrap();
        assert_eq!(t.display, "amqp://127.0.0.1:5672/");
        assert_eq!(t.uri.authority.host, "127.0.0.1", "an IP address stays the host");
        assert_eq!(t.uri.authority.port, 5672);
        assert_eq!(t.uri.authority.userinfo, AMQPUserInfo::default());
        assert_eq!(t.uri.vhost, "/");
        assert_eq!(t.uri.query.heartbeat, Some(DEFAULT_HEARTBEAT));
        assert_eq!(t.uri.query.connection_timeout, Some(5000));
        assert_eq!((t.exchange.as_str(), t.capacity), (DEFAULT_EXCHANGE, DEFAULT_CAPACITY));

        let t =
            Target::parse("amqps://al%40ice:p%3Ass@mq.example:5999/prod?capacity=8&exchange=ev.x&heartbeat=0", TIMEOUT)
                .unwrap();
        assert_eq!(t.display, "amqps://mq.example:5999/prod");
        assert_eq!(t.uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(
            (t.uri.authority.userinfo.username.as_str(), t.uri.authority.userinfo.password.as_str()),
            ("al@ice", "p:ss")
        );
        assert_eq!(t.uri.vhost, "prod");
        assert_eq!((t.exchange.as_str(), t.capacity, t.uri.query.heartbeat), ("ev.x", 8, Some(0)));
        assert_eq!(t.ca_file, None);
        let t = Target::parse("amqps://h?cacertfile=/etc/ssl/my%20ca.pem", TIMEOUT).unwrap();
        assert_eq!(t.ca_file.as_deref(), Some("/etc/ssl/my ca.pem"));

        let t = Target::parse("amqps://u:p@[::1]/%2f", TIMEOUT).unwrap();
        assert_eq!(t.display, "amqps://[::1]:5671/%2f");
        assert_eq!((t.uri.authority.host.as_str(), t.uri.vhost.as_str()), ("::1", "/"));
        assert_eq!(Target::parse("amqp://h/", TIMEOUT).unwrap().uri.vhost, "/");
    }

    #[test]
    fn bad_urls() {
        // (url, words the message must contain)
        let cases: &[(&str, &[&str])] = &[
            ("amqp://host:port", &["invalid port `port`"]),
            ("amqp://host:99999", &["invalid port"]),
            ("amqp://host:0", &["invalid port"]),
            ("amqp://", &["no host"]),
            ("amqp://:5672", &["no host"]),
            ("amqp://[::1", &["unclosed"]),
            ("amqp://host/a/b", &["%2f"]),
            ("amqp://host/#x", &["fragment"]),
            ("amqp://host?capacity=0", &["capacity"]),
            ("amqp://host?heartbeat=soon", &["heartbeat"]),
            ("amqp://host?exchange=", &["exchange"]),
            ("amqp://host?exchange=amq.topic", &["reserved"]),
            ("amqp://host?exchange=a%20b", &["exchange"]),
            ("amqp://host?size=3", &["`size`"]),
            ("amqp://host?cacertfile=/ca.pem", &["amqps://"]),
            ("http://host", &["amqp://", "amqps://"]),
            ("amqp://user:s3cret@host:port", &["***@host:port"]),
        ];
        for &(url, words) in cases {
            crate::conformance::assert_config_error(url, Target::parse(url, TIMEOUT), words);
        }
    }

    #[test]
    fn subjects_map_to_topic_keys() {
        // (NATS pattern, binding key, must the client re-check what arrives)
        let cases = [
            ("a.b", "a.b", false),
            ("a.*", "a.*", false),
            ("*.b.*", "*.b.*", false),
            ("a.>", "a.#", true),
            (">", "#", true),
            ("a.*.>", "a.*.#", true),
            ("a.#", "a.#", true),
        ];
        for (pattern, key, filter) in cases {
            assert_eq!(binding_key(pattern), key, "{pattern}");
            assert_eq!(needs_filter(pattern), filter, "{pattern}");
        }
        assert!(check_key_len(&"a".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(check_key_len(&"a".repeat(MAX_KEY_LEN + 1)), Err(Error::InvalidSubject(_))));
    }

    #[test]
    fn group_queue_names() {
        let name = group_queue("smith", "workers", "smith.wake.*");
        assert!(name.starts_with("smith-group:workers:smith.wake.*:"), "{name}");
        assert_eq!(name, group_queue("smith", "workers", "smith.wake.*"), "stable");
        // Separators inside names do not make two groups share a queue.
        assert_ne!(group_queue("smith", "a:b", "c"), group_queue("smith", "a", "b:c"));
        assert_ne!(name, group_queue("other", "workers", "smith.wake.*"), "the exchange counts");
        let long = group_queue("smith", &"g".repeat(300), &"é".repeat(200));
        assert!(long.len() <= MAX_KEY_LEN, "{}", long.len());
        assert_ne!(long, group_queue("smith", &"g".repeat(301), &"é".repeat(200)));
    }
}
