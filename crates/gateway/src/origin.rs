//! Browser safety: a request body must be declared JSON, and a request that names a foreign
//! `Origin` or `Host` is refused, so that a web page can neither drive a gateway from another
//! site (a `no-cors` POST of a text body) nor reach a loopback one through a name it controls
//! (DNS rebinding). Clients that send no `Origin` (the CLI, SDKs, curl) are unaffected.

use std::net::{IpAddr, SocketAddr};

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN, TRANSFER_ENCODING};
use axum::http::HeaderMap;
use smith_core::Code;

use crate::error::{is_json, unsupported, ApiError};

/// The sites a gateway answers to, besides its own address: `[server] public_url` and
/// `allowed_origins`, normalized as `scheme://host[:port]` (default ports dropped).
#[derive(Debug, Clone, Default)]
pub struct Sites {
    public: Option<Site>,
    allowed: Vec<Site>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    scheme: String,
    host: String,
    port: u16,
}

impl Site {
    /// `scheme://host[:port][/]` (a path is allowed only for `public_url`, where it is ignored).
    fn parse(text: &str, path_ok: bool) -> Result<Site, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| format!("{text:?} is not a URL (scheme://host)"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("{text:?}: the scheme must be http or https")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !(path_ok || tail.is_empty() || tail == "/") {
            return Err(format!("{text:?}: an origin is scheme://host[:port], without a path"));
        }
        if authority.contains('@') {
            return Err(format!("{text:?}: no user part"));
        }
        let (host, port) = split_host(authority).ok_or_else(|| format!("{text:?}: malformed host or port"))?;
        Ok(Site { scheme, host, port: port.unwrap_or(default) })
    }
}

/// `host[:port]` / `[v6][:port]` as a lowercase host and the port, if given.
fn split_host(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    if authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// An IP literal: no DNS name is involved, so no rebinding either.
fn is_ip(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok()
}

impl Sites {
    /// From `[server] public_url` and `allowed_origins`; a malformed entry is an error naming it.
    pub fn new(public_url: Option<&str>, allowed_origins: &[String]) -> Result<Sites, crate::ConfigError> {
        let public = public_url.map(|u| Site::parse(u, true)).transpose().map_err(|e| format!("public_url: {e}"))?;
        let mut allowed = Vec::new();
        for o in allowed_origins {
            allowed.push(Site::parse(o, false).map_err(|e| format!("allowed_origins: {e}"))?);
        }
        Ok(Sites { public, allowed })
    }

    /// `Host` is checked when the gateway knows every name it answers to: on a loopback
    /// listener (where no credential may be needed) and once `public_url` is set. A gateway on
    /// another address without `public_url` (say, behind a load balancer's internal names)
    /// takes any `Host`: it requires a credential, which no browser sends on a page's behalf.
    fn checks_host(&self, listener: Option<SocketAddr>) -> bool {
        self.public.is_some() || listener.is_none_or(|a| a.ip().is_loopback())
    }

    /// 403 for a foreign `Host` or `Origin`; the reason is a metric label (`host`, `origin`).
    pub fn check(&self, headers: &HeaderMap, listener: Option<SocketAddr>) -> Result<(), (&'static str, ApiError)> {
        let forbidden = |m: String| ApiError::new(Code::PermissionDenied, m);
        let host = match headers.get(HOST) {
            None => None,
            Some(v) => {
                let text = v.to_str().unwrap_or("");
                match split_host(text) {
                    Some(h) => Some(h),
                    None => return Err(("host", forbidden(format!("malformed Host header {text:?}")))),
                }
            }
        };
        if let Some((name, _)) = &host {
            if self.checks_host(listener) && !self.names_us(name) {
                return Err((
                    "host",
                    forbidden(format!("Host {name:?} is not a name of this server: set [server] public_url")),
                ));
            }
        }
        let Some(origin) = headers.get(ORIGIN) else { return Ok(()) };
        let text = origin.to_str().unwrap_or("");
        let ok = match Site::parse(text, false) {
            Err(_) => false,
            Ok(site) => {
                self.allowed.contains(&site)
                    || self
                        .public
                        .as_ref()
                        .is_some_and(|p| p.scheme == site.scheme && p.host == site.host && p.port == site.port)
                    || same_origin(&site, host.as_ref())
                    || listener.is_some_and(|a| is_listener(&site, a))
            }
        };
        if ok {
            Ok(())
        } else {
            Err((
                "origin",
                forbidden(format!("requests from origin {text:?} are not allowed: see [server] allowed_origins")),
            ))
        }
    }

    fn names_us(&self, host: &str) -> bool {
        is_ip(host)
            || host == "localhost"
            || self.public.as_ref().is_some_and(|p| p.host == host)
            || self.allowed.iter().any(|a| a.host == host)
    }
}

/// The page came from the host the request names (already checked), on the same port.
fn same_origin(site: &Site, host: Option<&(String, Option<u16>)>) -> bool {
    let Some((name, port)) = host else { return false };
    let default = if site.scheme == "https" { 443 } else { 80 };
    site.host == *name && site.port == port.unwrap_or(default)
}

fn is_listener(site: &Site, addr: SocketAddr) -> bool {
    let ip = site.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
    site.port == addr.port() && ip.is_ok_and(|ip| ip == addr.ip())
}

/// Whether the request carries a body (a length above 0, or a chunked one).
pub fn has_body(headers: &HeaderMap) -> bool {
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(TRANSFER_ENCODING)
}

/// 415 unless a request with a body declares it JSON.
pub fn check_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let ct = headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
    if has_body(headers) && !is_json(ct) {
        return Err(unsupported(ct));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json(Some(ok)), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
            "application/json; charset=latin1",
            "application/ld+json",
        ] {
            assert!(!is_json(Some(bad)), "{bad}");
        }
        assert!(!is_json(None));
    }

    #[test]
    fn hosts_and_origins() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let open = Sites::default();
        let check =
            |s: &Sites, h: &[(&'static str, &str)], at: SocketAddr| s.check(&headers(h), Some(at)).map_err(|e| e.0);
        assert_eq!(check(&open, &[], loopback), Ok(()));
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST", "10.1.2.3:9000"] {
            assert_eq!(check(&open, &[("host", host)], loopback), Ok(()), "{host}");
        }
        assert_eq!(check(&open, &[("host", "evil.example:8080")], loopback), Err("host"));
        assert_eq!(check(&open, &[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")], loopback), Ok(()));
        assert_eq!(check(&open, &[("host", "localhost:8080"), ("origin", "http://localhost:8080")], loopback), Ok(()));
        for origin in ["http://evil.example", "http://localhost:3000", "null", "http://127.0.0.1:8081"] {
            assert_eq!(
                check(&open, &[("host", "127.0.0.1:8080"), ("origin", origin)], loopback),
                Err("origin"),
                "{origin}"
            );
        }
        let sites = Sites::new(Some("https://smith.example.com/api"), &["https://console.example.com".into()]).unwrap();
        let public: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert_eq!(check(&sites, &[("host", "smith.example.com")], public), Ok(()));
        assert_eq!(check(&sites, &[("host", "other.example.com")], public), Err("host"));
        let from = |o| check(&sites, &[("host", "smith.example.com"), ("origin", o)], public);
        assert_eq!(from("https://console.example.com"), Ok(()));
        assert_eq!(from("https://smith.example.com"), Ok(()));
        assert_eq!(from("https://smith.example.com:443"), Ok(()));
        assert_eq!(from("http://console.example.com"), Err("origin"));
        // no public_url on a non-loopback listener: any name, but still no foreign origin
        assert_eq!(check(&open, &[("host", "smith.internal:8080")], public), Ok(()));
        assert_eq!(
            check(&open, &[("host", "smith.internal:8080"), ("origin", "http://evil.example")], public),
            Err("origin")
        );
        assert!(Sites::new(None, &["https://x.example/path".into()]).is_err());
        assert!(Sites::new(Some("ftp://x"), &[]).is_err());
    }
}
