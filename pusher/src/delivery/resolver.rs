//! The address policy for push gateways (DESIGN.md invariant 10): gateway
//! URLs come from users, so unless the operator allows it, requests never
//! reach loopback, private or otherwise non-public addresses. Names are
//! checked on the addresses they resolve to, at connect time (a resolver
//! that drops refused addresses), and IP literals before the request.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let [first, second, ..] = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && second == 0xdb8))
        }
    }
}

/// Resolves with the system resolver, keeping only permitted addresses.
#[derive(Debug, Clone, Copy)]
pub struct GatewayResolver {
    pub allow_private: bool,
}

impl GatewayResolver {
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

impl Resolve for GatewayResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let permitted: Vec<SocketAddr> = found.filter(|addr| policy.permits(addr.ip())).collect();
            if permitted.is_empty() {
                return Err(format!("{host} resolves to no address push gateways may use").into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1", "0.0.0.0"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::", "2001:db8::1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(GatewayResolver { allow_private: true }.permits("127.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn loopback_names_resolve_to_nothing_unless_allowed() {
        let refused = GatewayResolver { allow_private: false }.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());
        let allowed = GatewayResolver { allow_private: true }.resolve("localhost".parse().unwrap()).await;
        assert!(allowed.unwrap().next().is_some());
    }
}
