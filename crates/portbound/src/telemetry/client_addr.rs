//! The client's address and scheme, believing forwarding headers only from
//! proxies we trust.
//!
//! actix's `realip_remote_addr()` takes the left-most `X-Forwarded-For` from
//! anyone, so any client can pick the address it appears under. Here the
//! headers count only when the peer is a trusted proxy, and then the client
//! is the right-most address that is not itself trusted: the one the last
//! trusted proxy saw connect.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{FORWARDED, HeaderMap, HeaderName};

// Looked up by prepared name: a `&str` would be parsed and checked on every
// request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
use ipnet::IpNet;

/// `http` or `https`, as the client used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS (a trusted proxy terminated it).
    Https,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What we believe about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (IPv4-mapped IPv6 shown as IPv4).
    pub ip: Option<IpAddr>,
    /// The scheme the client used, when a trusted proxy said it.
    pub forwarded_scheme: Option<Scheme>,
    /// The peer is a trusted proxy.
    pub via_trusted_proxy: bool,
}

impl ClientInfo {
    /// The scheme the client used: the trusted proxy's word, else ours.
    pub fn scheme(&self) -> Scheme {
        self.forwarded_scheme.unwrap_or(Scheme::Http)
    }
}

/// `::ffff:1.2.3.4` (what a dual-stack socket reports for IPv4 peers) as
/// `1.2.3.4`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Up to this many request headers, [`resolve`] looks for the forwarding
/// headers in one pass rather than by hashed lookups.
const SCAN_UP_TO: usize = 8;

/// Works out the client from the peer address and the headers.
pub fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> ClientInfo {
    let peer_ip = peer.map(|p| canonical(p.ip()));
    let untrusted = ClientInfo {
        ip: peer_ip,
        forwarded_scheme: None,
        via_trusted_proxy: false,
    };
    // No peer address: a unix socket, which only local processes allowed by
    // its file permissions can reach (nginx in front): a trusted proxy.
    if let Some(ip) = peer_ip
        && !is_trusted(ip, trusted)
    {
        return untrusted;
    }

    // A trusted peer that sent no forwarding header is the client: with a
    // short header list, one pass says so for less than hashing four names.
    if headers.len_keys() <= SCAN_UP_TO
        && !headers
            .keys()
            .any(|n| [&FORWARDED, &X_FORWARDED_FOR, &X_REAL_IP, &X_FORWARDED_PROTO].contains(&n))
    {
        return ClientInfo {
            via_trusted_proxy: true,
            ..untrusted
        };
    }

    let (hops, forwarded_proto) = if headers.contains_key(FORWARDED) {
        forwarded(headers)
    } else {
        let mut hops = list(headers, &X_FORWARDED_FOR);
        if hops.is_empty()
            && let Some(real) = headers.get(X_REAL_IP).and_then(|v| v.to_str().ok())
        {
            hops.push(real.trim().to_owned());
        }
        let proto = list(headers, &X_FORWARDED_PROTO).pop();
        (hops, proto)
    };

    // Right to left: skip our own proxies; the first other address is the
    // client. A hop that does not parse ends the walk: nothing left of it can
    // be believed.
    let mut client = peer_ip;
    for hop in hops.iter().rev() {
        match parse_node(hop) {
            Some(ip) => {
                client = Some(ip);
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            None => break,
        }
    }
    ClientInfo {
        ip: client,
        forwarded_scheme: forwarded_proto.and_then(|p| match p.to_ascii_lowercase().as_str() {
            "https" => Some(Scheme::Https),
            "http" => Some(Scheme::Http),
            _ => None,
        }),
        via_trusted_proxy: true,
    }
}

/// Every comma-separated value of every `name` header, in order.
fn list(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// RFC 7239 `Forwarded`: the `for=` of each element, and the right-most
/// element's `proto=`.
fn forwarded(headers: &HeaderMap) -> (Vec<String>, Option<String>) {
    let mut hops = Vec::new();
    let mut proto = None;
    for element in list(headers, &FORWARDED) {
        let mut element_proto = None;
        for pair in element.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim().to_ascii_lowercase().as_str() {
                "for" => hops.push(value),
                "proto" => element_proto = Some(value),
                _ => {}
            }
        }
        proto = element_proto.or(proto);
    }
    (hops, proto)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]`, `[::1]:5678`. `unknown` and obfuscated names are not addresses.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    fn nets(s: &str) -> Vec<IpNet> {
        crate::platform::parse_cidrs(s).unwrap()
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof() {
        let headers = h(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6;proto=https"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = resolve(peer("203.0.113.9:5555"), &headers, &nets("127.0.0.0/8"));
        assert_eq!(c.ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.scheme(), Scheme::Http);
        assert!(!c.via_trusted_proxy);
    }

    #[test]
    fn a_trusted_proxy_is_believed_right_to_left() {
        let trusted = nets("127.0.0.0/8, 10.0.0.0/8");
        // the client forged 6.6.6.6; the proxy appended the real 198.51.100.7
        let headers = h(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = resolve(peer("127.0.0.1:1"), &headers, &trusted);
        assert_eq!(c.ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(c.scheme(), Scheme::Https);
        assert!(c.via_trusted_proxy);
    }

    #[test]
    fn forwarded_wins_and_understands_ports_and_ipv6() {
        let trusted = nets("127.0.0.0/8");
        let headers = h(&[
            (
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#,
            ),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        let c = resolve(peer("127.0.0.1:1"), &headers, &trusted);
        assert_eq!(c.ip, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(c.forwarded_scheme, Some(Scheme::Https));
    }

    #[test]
    fn x_real_ip_counts_only_without_x_forwarded_for() {
        let trusted = nets("127.0.0.0/8");
        let c = resolve(
            peer("127.0.0.1:1"),
            &h(&[("x-real-ip", "192.0.2.5")]),
            &trusted,
        );
        assert_eq!(c.ip, Some("192.0.2.5".parse().unwrap()));
    }

    #[test]
    fn mapped_ipv6_peers_are_shown_as_ipv4() {
        let c = resolve(
            peer("[::ffff:192.0.2.1]:80"),
            &HeaderMap::new(),
            &nets("::1/128"),
        );
        assert_eq!(c.ip, Some("192.0.2.1".parse().unwrap()));
        // and a mapped loopback peer is trusted by the IPv4 loopback range
        let c = resolve(
            peer("[::ffff:127.0.0.1]:80"),
            &h(&[("x-forwarded-for", "192.0.2.9")]),
            &nets("127.0.0.0/8"),
        );
        assert_eq!(c.ip, Some("192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn garbage_hops_stop_the_walk() {
        let trusted = nets("127.0.0.0/8");
        let headers = h(&[("x-forwarded-for", "192.0.2.1, unknown")]);
        let c = resolve(peer("127.0.0.1:1"), &headers, &trusted);
        assert_eq!(c.ip, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn all_hops_trusted_gives_the_left_most() {
        let trusted = nets("10.0.0.0/8, 127.0.0.0/8");
        let headers = h(&[("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        let c = resolve(peer("127.0.0.1:1"), &headers, &trusted);
        assert_eq!(c.ip, Some("10.0.0.1".parse().unwrap()));
    }
}
