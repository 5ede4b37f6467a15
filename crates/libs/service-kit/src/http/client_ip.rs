//! The client's address, for rate limits, throttling and audit.
//!
//! `X-Forwarded-For` is trivially forged, and rate limiters that trust it blindly have been
//! bypassed in real projects. So it is honoured only when the TCP peer is a configured trusted
//! proxy, and then read from the right: the first address that is not itself a trusted proxy is
//! the client.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Networks whose `X-Forwarded-For` we believe. Shared, not copied, when a service's state is
/// cloned for a request.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request that arrived from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let forwarded = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.contains(ip) => continue,
                Ok(ip) => return ip,
                // Garbage in the chain: stop trusting it and use the last trusted hop.
                Err(_) => break,
            }
        }
        peer
    }
}

impl FromStr for TrustedProxies {
    type Err = String;
    /// A comma-separated list of addresses or CIDR networks.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an IP address or CIDR network"))
            })
            .collect::<Result<Arc<[_]>, _>>()
            .map(Self)
    }
}

/// The resolved client address of a request; handlers take it as an argument. Needs the
/// `TrustedProxies` in the request extensions (added by the service) and the connect info the
/// [`crate::Server`] provides.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([127, 0, 0, 1]), |ConnectInfo(addr)| addr.ip());
        let trusted = parts
            .extensions
            .get::<TrustedProxies>()
            .cloned()
            .unwrap_or_default();
        Ok(Self(trusted.client_ip(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_str(xff).expect("valid header"),
        );
        headers
    }

    #[test]
    fn forwarding_headers_from_strangers_are_ignored() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(trusted.client_ip(peer, &headers("1.2.3.4")), peer);
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8, 127.0.0.1".parse().expect("valid");
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        // The client forged the left-most entry; the proxies appended the real one.
        let ip = trusted.client_ip(peer, &headers("6.6.6.6, 198.51.100.7, 10.1.2.3"));
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn bad_entries_are_rejected_at_config_time() {
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("localhost".parse::<TrustedProxies>().is_err());
    }
}
