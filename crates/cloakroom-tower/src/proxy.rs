//! The client's address: the peer's, or, when the peer is one of the application's reverse
//! proxies, the one that proxy recorded in `X-Forwarded-For` or `Forwarded`.

use std::fmt;
use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName};

/// Which header the application's reverse proxies record the client's address in.
///
/// Only the header the proxies write may be read: a proxy that appends to
/// `X-Forwarded-For` passes a client's own `Forwarded` header through untouched, so reading
/// that one would let any client name its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers). The
    /// default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    Forwarded,
}

/// One trusted address or network (`192.0.2.7`, `10.0.0.0/8`, `fd00::/8`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Net {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("trusted proxy {text:?} is not an IP address or network (192.0.2.7, 10.0.0.0/8, fd00::/8)")
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(bad()),
            },
        };
        Ok(Self {
            addr: canonical(addr),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:192.0.2.7`, what a dual-stack socket reports)
/// as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The application's reverse proxies and the header they write.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<Net>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Parses the application's list.
    ///
    /// # Errors
    /// The message naming the entry that is not an address or network.
    pub(crate) fn parse(list: &[String], header: ForwardedHeader) -> Result<Self, String> {
        let nets = list
            .iter()
            .map(|s| Net::parse(s))
            .collect::<Result<_, _>>()?;
        Ok(Self { nets, header })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the
    /// right-most address in the forwarding header that is not a trusted proxy (addresses
    /// to its left were written by the client and prove nothing). `None` without a peer
    /// (no `ConnectInfo`), or when the proxies' header holds something that is not an
    /// address where the client's should be.
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?);
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => list(headers, &X_FORWARDED_FOR, Some),
            ForwardedHeader::Forwarded => list(headers, &header::FORWARDED, forwarded_for),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let ip = parse_node((*hop)?)?;
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The comma-separated items of every `name` header, in order, each mapped by `pick`
/// (`None` for an item `pick` cannot read).
fn list<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    pick: impl Fn(&'h str) -> Option<&'h str>,
) -> Vec<Option<&'h str>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(v) => v.split(',').map(|item| pick(item.trim())).collect(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The `for=` parameter of one `Forwarded` element (`for=192.0.2.7;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
    })
}

/// One node: `192.0.2.7`, `192.0.2.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, quoted or
/// not. `unknown` and obfuscated names (`_hidden`) are not addresses.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        let (v6, _port) = rest.split_once(']')?;
        return v6.parse().ok().map(canonical);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // IPv4 with a port.
    let (v4, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A header map with one line of `name` for each of `values` (for the crate's tests).
#[cfg(test)]
pub(crate) fn headers(name: &str, values: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str], header: ForwardedHeader) -> TrustedProxies {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        TrustedProxies::parse(&list, header).unwrap()
    }

    /// The client address `p` finds in a request from 10.0.0.1 with the header lines
    /// `values` of `name`.
    fn from_10_0_0_1(p: &TrustedProxies, name: &str, values: &[&str]) -> Option<IpAddr> {
        p.client_ip(Some(ip("10.0.0.1")), &headers(name, values))
    }

    #[test]
    fn networks_parse_and_match() {
        let p = proxies(
            &["10.0.0.0/8", "192.0.2.7", "fd00::/8"],
            ForwardedHeader::default(),
        );
        assert!(p.trusts(ip("10.1.2.3")));
        assert!(!p.trusts(ip("11.0.0.1")));
        assert!(p.trusts(ip("192.0.2.7")));
        assert!(!p.trusts(ip("192.0.2.8")));
        assert!(p.trusts(ip("fd12::1")));
        assert!(p.trusts(ip("::ffff:10.9.9.9")), "v4-mapped v6 is v4");
        assert!(!p.trusts(ip("2001:db8::1")));
        let all = proxies(&["0.0.0.0/0"], ForwardedHeader::default());
        assert!(all.trusts(ip("203.0.113.1")));
        for bad in ["10.0.0.0/33", "proxy.local", "", "10.0.0.0/x", "::/129"] {
            assert!(
                TrustedProxies::parse(&[bad.to_owned()], ForwardedHeader::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_peer() {
        let p = proxies(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["198.51.100.9, 203.0.113.5, 10.0.0.2"]);
        // From a trusted proxy: the right-most untrusted hop; the client's own claim on the
        // left is not believed.
        assert_eq!(
            p.client_ip(Some(ip("10.0.0.1")), &h),
            Some(ip("203.0.113.5"))
        );
        // From anyone else: the peer, whatever the header says.
        assert_eq!(
            p.client_ip(Some(ip("203.0.113.77")), &h),
            Some(ip("203.0.113.77"))
        );
        // No peer known: no address.
        assert_eq!(p.client_ip(None, &h), None);
        // A trusted peer without the header: the peer.
        assert_eq!(
            p.client_ip(Some(ip("10.0.0.1")), &HeaderMap::new()),
            Some(ip("10.0.0.1"))
        );
        // Several header lines are one list.
        let lines = ["198.51.100.9", "203.0.113.5:443"];
        let found = from_10_0_0_1(&p, "x-forwarded-for", &lines);
        assert_eq!(found, Some(ip("203.0.113.5")));
        // Garbage where the client's address should be: unknown.
        assert_eq!(from_10_0_0_1(&p, "x-forwarded-for", &["unknown"]), None);
        // The Forwarded header is not read when the proxies write X-Forwarded-For.
        let found = from_10_0_0_1(&p, "forwarded", &["for=198.51.100.9"]);
        assert_eq!(found, Some(ip("10.0.0.1")));
    }

    #[test]
    fn rfc7239_forwarded() {
        let p = proxies(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let line = r#"for=198.51.100.9, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.3"#;
        let found = from_10_0_0_1(&p, "forwarded", &[line]);
        assert_eq!(found, Some(ip("2001:db8:cafe::17")));
        let found = from_10_0_0_1(&p, "forwarded", &["for=_hidden;by=10.0.0.1"]);
        assert_eq!(found, None);
        let found = from_10_0_0_1(&p, "x-forwarded-for", &["198.51.100.9"]);
        assert_eq!(found, Some(ip("10.0.0.1")));
    }
}
