//! The SSRF guard: webhook targets must be public addresses unless the config allows more.
//!
//! Refused: private (10/8, 172.16/12, 192.168/16), loopback, link-local, unique-local (fc00::/7),
//! CGNAT (100.64/10), multicast, broadcast, unspecified, documentation and other reserved
//! ranges — IPv4, IPv6 and IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4). Checked when a
//! webhook is created (the host as given and every address it resolves to) and again at every
//! connection, by the HTTP client's own resolver ([`Guard::resolver`]), so a name that resolves
//! elsewhere later (DNS rebinding) still reaches only a checked address.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// A network a config allows (`[webhooks] allow = ["10.0.0.0/8", "hooks.internal"]`): an
/// address range or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Net(IpAddr, u8),
    Host(String),
}

impl std::str::FromStr for Allowed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or(format!("{s:?}: a bad prefix length"))?,
            };
            return Ok(Allowed::Net(ip, bits));
        }
        let host = s.trim_end_matches('.').to_ascii_lowercase();
        if bits.is_some() || host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) {
            return Err(format!("{s:?} is neither an address range (CIDR) nor a host name"));
        }
        Ok(Allowed::Host(host))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Why a target is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{0} is a {1} address; webhooks go to public addresses only (see [webhooks] allow_private and allow)")]
    Address(IpAddr, &'static str),
    #[error("host {0:?} does not resolve: {1}")]
    Unresolved(String, String),
    #[error("url: {0}")]
    Url(String),
}

/// What kind of non-public address `ip` is, if it is one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let kind = match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        (100, 64..=127, _) => "CGNAT (shared)",
        (0, _, _) => "this-network",
        (192, 0, 0) | (198, 18..=19, _) => "reserved",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (240..=255, _, _) => "reserved",
        _ => return None,
    };
    Some(kind)
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // IPv4 carried in IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96)
    let embedded = |hi: [u16; 6]| (s[..6] == hi).then(|| Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    if let Some(v4) = embedded([0, 0, 0, 0, 0, 0xffff]).or_else(|| embedded([0x64, 0xff9b, 0, 0, 0, 0])) {
        return non_public_v4(v4);
    }
    if s[0] == 0x2002 {
        // 6to4 carries an IPv4 address in its second and third segments
        return non_public_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    let kind = match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_multicast() => "multicast",
        x if x & 0xfe00 == 0xfc00 => "unique-local",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        x if x & 0xffc0 == 0xfec0 => "site-local",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0 if s[..6] == [0; 6] => "IPv4-compatible",
        _ => return None,
    };
    Some(kind)
}

/// What the config allows beyond public addresses.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Every address: loopback and private ones too (tests, development).
    pub allow_private: bool,
    pub allow: Vec<Allowed>,
}

impl Guard {
    /// Whether an address that `host` resolved to may be reached.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private || self.host_allowed(host) {
            return Ok(());
        }
        let allowed = self.allow.iter().any(|a| matches!(a, Allowed::Net(n, bits) if in_net(ip, *n, *bits)));
        match non_public(ip) {
            Some(kind) if !allowed => Err(Refused::Address(ip, kind)),
            _ => Ok(()),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|a| matches!(a, Allowed::Host(h) if *h == host))
    }

    /// Checks a URL's host: an address as given, or every address a name resolves to.
    pub async fn check_url(&self, url: &str) -> Result<(), Refused> {
        match self.check_literal(url)? {
            Some(name) => self.resolve_checked(&name).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is an address (which no resolver sees); returns the host when
    /// it is a name instead, for the caller to resolve.
    pub fn check_literal(&self, url: &str) -> Result<Option<String>, Refused> {
        let parsed = reqwest::Url::parse(url).map_err(|e| Refused::Url(e.to_string()))?;
        let host = parsed.host_str().ok_or_else(|| Refused::Url("has no host".into()))?;
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check_ip("", ip).map(|()| None),
            Err(_) => Ok(Some(host.to_string())),
        }
    }

    /// Every address of `host`, each checked; an error if any is refused.
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<SocketAddr>, Refused> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| Refused::Unresolved(host.to_string(), e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(Refused::Unresolved(host.to_string(), "no addresses".into()));
        }
        for a in &addrs {
            self.check_ip(host, a.ip())?;
        }
        Ok(addrs)
    }

    /// The HTTP client's resolver: it answers only with checked addresses, so the connection
    /// goes to an address this guard let through, whatever the name resolves to later.
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(self.clone()))
    }
}

pub struct GuardedResolver(Arc<Guard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let addrs = guard.resolve_checked(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_of_every_kind_are_refused() {
        let guard = Guard::default();
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
        ];
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(guard.check_ip("h", ip).is_err(), "{ip} passed");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(guard.check_ip("h", ip), Ok(()), "{ip} refused");
        }
    }

    #[test]
    fn the_config_allows_private_addresses_ranges_or_hosts() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(Guard { allow_private: true, allow: vec![] }.check_ip("h", lo).is_ok());
        let ranges = Guard { allow_private: false, allow: vec!["10.0.0.0/8".parse().unwrap()] };
        assert!(ranges.check_ip("h", "10.9.9.9".parse().unwrap()).is_ok());
        assert!(ranges.check_ip("h", "11.0.0.1".parse::<IpAddr>().unwrap()).is_ok(), "public anyway");
        assert!(ranges.check_ip("h", "192.168.0.1".parse().unwrap()).is_err());
        let host = Guard { allow_private: false, allow: vec!["Hooks.Internal".parse().unwrap()] };
        assert!(host.check_ip("hooks.internal.", lo).is_ok() && host.check_ip("other", lo).is_err());
        for bad in ["10.0.0.0/33", "a b", "x/8", ""] {
            assert!(bad.parse::<Allowed>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_by_their_literal_or_resolved_addresses() {
        let guard = Guard::default();
        for url in ["http://127.0.0.1:9/x", "http://[::1]/", "http://localhost:1/", "http://[::ffff:7f00:1]/"] {
            assert!(guard.check_url(url).await.is_err(), "{url}");
        }
        let open = Guard { allow_private: true, allow: vec![] };
        assert!(open.check_url("http://localhost:1/").await.is_ok());
    }
}
