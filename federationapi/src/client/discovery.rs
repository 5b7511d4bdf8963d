//! Resolving server names to the address, port, TLS name and `Host` header
//! of a federation request.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#resolving-server-names>

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use myelin_types::clock::SharedClock;

use super::connect::{ConnectError, Connector, Target};
use super::dns::{Dns, DnsError, order_srv};

/// The federation port when nothing else names one.
pub const DEFAULT_PORT: u16 = 8448;
/// `.well-known` bodies are a few dozen bytes; anything large is not one.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;
const WELL_KNOWN_REDIRECTS: usize = 5;
/// Cache lifetimes the spec suggests: 24 h by default, at most 48 h, and
/// failures (including absence) for an hour, so discovery falls back fast
/// and does not ask again on every request.
const WELL_KNOWN_DEFAULT_MS: u64 = 24 * 3600 * 1000;
const WELL_KNOWN_MAX_MS: u64 = 48 * 3600 * 1000;
const WELL_KNOWN_FAILURE_MS: u64 = 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0:?} is not a valid server name")]
    InvalidName(String),
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// A server name split as the spec's grammar does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNameParts {
    /// A DNS name, or an IP literal without brackets.
    pub host: String,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

pub fn split_server_name(name: &str) -> Result<ServerNameParts, DiscoveryError> {
    myelin_config::check_server_name(name).map_err(|_| DiscoveryError::InvalidName(name.to_owned()))?;
    let invalid = || DiscoveryError::InvalidName(name.to_owned());
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or_else(invalid)?;
        (ip, after.strip_prefix(':'))
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (name, None),
        }
    };
    let port = port.map(|p| p.parse::<u16>().map_err(|_| invalid())).transpose()?;
    Ok(ServerNameParts { host: host.to_owned(), ip: host.parse().ok(), port })
}

struct CachedWellKnown {
    delegated: Option<String>,
    expires_ms: u64,
}

/// Discovery with its `.well-known` cache. One lookup per name at a time:
/// concurrent requests to the same server wait for the first fetch instead
/// of fetching again; other names are not held up.
pub struct Discovery {
    dns: Arc<dyn Dns>,
    clock: SharedClock,
    well_known_port: u16,
    cache: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<CachedWellKnown>>>>>,
}

impl Discovery {
    /// `well_known_port` is 443 as the spec says; tests, which cannot bind
    /// it, serve `.well-known` elsewhere.
    pub fn new(dns: Arc<dyn Dns>, clock: SharedClock, well_known_port: u16) -> Self {
        Self { dns, clock, well_known_port, cache: Mutex::default() }
    }

    /// Where requests for `server_name` go.
    pub async fn resolve(&self, connector: &Connector, server_name: &str) -> Result<Target, DiscoveryError> {
        let parts = split_server_name(server_name)?;
        // 1. An IP literal, with its port or the default.
        if let Some(ip) = parts.ip {
            return Ok(literal(ip, parts.port, server_name));
        }
        // 2. A hostname with an explicit port: its addresses, no delegation.
        if let Some(port) = parts.port {
            return self.addresses(&parts.host, port, &parts.host, server_name).await;
        }
        // 3. `.well-known` delegation, resolved like a server name but
        //    without a second round of delegation.
        if let Some(delegated) = self.well_known(connector, &parts.host).await {
            let inner = split_server_name(&delegated)?;
            if let Some(ip) = inner.ip {
                return Ok(literal(ip, inner.port, &delegated));
            }
            if let Some(port) = inner.port {
                return self.addresses(&inner.host, port, &inner.host, &delegated).await;
            }
            return self.srv_or_default(&inner.host).await;
        }
        // 4–6. SRV records of the name itself, then port 8448.
        self.srv_or_default(&parts.host).await
    }

    /// `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then the
    /// name's own addresses on 8448. TLS and `Host` keep `host` (never the SRV target).
    async fn srv_or_default(&self, host: &str) -> Result<Target, DiscoveryError> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let records = match self.dns.lookup_srv(&format!("{service}.{host}")).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::debug!(%error, "SRV lookup failed; trying the next step");
                    continue;
                }
            };
            let records = order_srv(records, |total| rand::random_range(0..=total));
            let mut addrs = Vec::new();
            for record in records {
                match self.dns.lookup_ip(&record.target).await {
                    Ok(ips) => addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, record.port))),
                    Err(error) => tracing::debug!(%error, "SRV target does not resolve"),
                }
            }
            if !addrs.is_empty() {
                return Ok(Target { addrs, tls_name: host.to_owned(), host: host.to_owned() });
            }
        }
        self.addresses(host, DEFAULT_PORT, host, host).await
    }

    async fn addresses(&self, lookup: &str, port: u16, tls_name: &str, host: &str) -> Result<Target, DiscoveryError> {
        let ips = self.dns.lookup_ip(lookup).await?;
        if ips.is_empty() {
            return Err(DiscoveryError::NoAddress(lookup.to_owned()));
        }
        let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
        Ok(Target { addrs, tls_name: tls_name.to_owned(), host: host.to_owned() })
    }

    /// The delegated server name from `https://<host>/.well-known/matrix/server`,
    /// from the cache while it is fresh.
    pub async fn well_known(&self, connector: &Connector, host: &str) -> Option<String> {
        let slot = self.cache.lock().expect("well-known cache lock").entry(host.to_owned()).or_default().clone();
        let mut entry = slot.lock().await;
        let now = self.clock.now_ms();
        if let Some(cached) = entry.as_ref().filter(|c| c.expires_ms > now) {
            return cached.delegated.clone();
        }
        let (delegated, lifetime) = match self.fetch_well_known(connector, host).await {
            Ok((delegated, lifetime)) => (Some(delegated), lifetime),
            Err(reason) => {
                tracing::debug!(host, %reason, "no usable .well-known; falling back to SRV and port 8448");
                (None, WELL_KNOWN_FAILURE_MS)
            }
        };
        *entry = Some(CachedWellKnown { delegated: delegated.clone(), expires_ms: now + lifetime });
        delegated
    }

    async fn fetch_well_known(&self, connector: &Connector, host: &str) -> Result<(String, u64), String> {
        let mut url =
            url::Url::parse(&format!("https://{host}/.well-known/matrix/server")).map_err(|e| e.to_string())?;
        for _ in 0..=WELL_KNOWN_REDIRECTS {
            let name = url.host_str().ok_or("redirect without a host")?.trim_matches(['[', ']']).to_owned();
            let port = url.port().unwrap_or(self.well_known_port);
            let ips = match name.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => self.dns.lookup_ip(&name).await.map_err(|e| e.to_string())?,
            };
            let target = Target {
                addrs: ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                tls_name: name.clone(),
                host: match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or(&name)),
                    None => url.host_str().unwrap_or(&name).to_owned(),
                },
            };
            let path = match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            };
            let request = Request::get(path).body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
            let reply = connector
                .exchange(&target, request, WELL_KNOWN_MAX_BYTES)
                .await
                .map_err(|e: ConnectError| e.to_string())?;
            if reply.status.is_redirection() {
                let location = reply
                    .headers
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or("redirect without a location")?;
                url = url.join(location).map_err(|e| e.to_string())?;
                if url.scheme() != "https" {
                    return Err("redirect away from https".to_owned());
                }
                continue;
            }
            if reply.status != StatusCode::OK {
                return Err(format!("status {}", reply.status));
            }
            let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
            let delegated = body.get("m.server").and_then(|v| v.as_str()).ok_or("no m.server")?;
            split_server_name(delegated).map_err(|e| e.to_string())?;
            return Ok((delegated.to_owned(), cache_lifetime(&reply.headers)));
        }
        Err("too many redirects".to_owned())
    }
}

fn literal(ip: IpAddr, port: Option<u16>, host: &str) -> Target {
    Target {
        addrs: vec![SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT))],
        tls_name: ip.to_string(),
        host: host.to_owned(),
    }
}

/// `Cache-Control: max-age` if given (`no-store`/`no-cache` mean none),
/// else the default, never beyond the cap.
fn cache_lifetime(headers: &http::HeaderMap) -> u64 {
    let Some(control) = headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
        return WELL_KNOWN_DEFAULT_MS;
    };
    let mut lifetime = WELL_KNOWN_DEFAULT_MS;
    for directive in control.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache") {
            return 0;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=").and_then(|s| s.parse::<u64>().ok()) {
            lifetime = seconds.saturating_mul(1000);
        }
    }
    lifetime.min(WELL_KNOWN_MAX_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_split_into_host_and_port() {
        let parts = split_server_name("example.org:8449").unwrap();
        assert_eq!((parts.host.as_str(), parts.ip, parts.port), ("example.org", None, Some(8449)));
        let parts = split_server_name("[::1]:9000").unwrap();
        assert_eq!((parts.host.as_str(), parts.ip, parts.port), ("::1", Some("::1".parse().unwrap()), Some(9000)));
        let parts = split_server_name("1.2.3.4").unwrap();
        assert_eq!((parts.ip, parts.port), (Some("1.2.3.4".parse().unwrap()), None));
        assert!(matches!(split_server_name("bad name"), Err(DiscoveryError::InvalidName(_))));
    }

    #[test]
    fn ip_literals_use_their_port_or_8448() {
        let target = literal("1.2.3.4".parse().unwrap(), None, "1.2.3.4");
        assert_eq!(target.addrs, ["1.2.3.4:8448".parse().unwrap()]);
        assert_eq!((target.tls_name.as_str(), target.host.as_str()), ("1.2.3.4", "1.2.3.4"));
        let target = literal("::1".parse().unwrap(), Some(9), "[::1]:9");
        assert_eq!(target.addrs, ["[::1]:9".parse().unwrap()]);
        assert_eq!((target.tls_name.as_str(), target.host.as_str()), ("::1", "[::1]:9"));
    }

    #[test]
    fn well_known_lifetimes_are_capped() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(cache_lifetime(&headers), WELL_KNOWN_DEFAULT_MS);
        headers.insert(http::header::CACHE_CONTROL, "public, max-age=60".parse().unwrap());
        assert_eq!(cache_lifetime(&headers), 60_000);
        headers.insert(http::header::CACHE_CONTROL, "max-age=999999999".parse().unwrap());
        assert_eq!(cache_lifetime(&headers), WELL_KNOWN_MAX_MS);
        headers.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(cache_lifetime(&headers), 0);
    }
}
