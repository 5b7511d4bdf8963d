//! One HTTPS exchange with a resolved destination: the address policy
//! (DESIGN.md invariant 10) checked on each resolved address just before
//! connecting, TLS with the server name as SNI and certificate name, and an
//! HTTP/1.1 request whose response body is read up to a cap.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Per-address TCP connect limit, so a dead address fails over quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("refusing to connect to {0}: loopback and private addresses are not federation peers")]
    Refused(IpAddr),
    #[error("no address to connect to")]
    NoAddress,
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("TLS with {name} failed: {reason}")]
    Tls { name: String, reason: String },
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// Which peer addresses outbound federation may reach.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_private: bool,
}

impl AddressPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        match classify(ip) {
            Class::Public => true,
            Class::Loopback => self.allow_loopback,
            Class::Private => self.allow_private,
            Class::Never => false,
        }
    }
}

enum Class {
    Public,
    Loopback,
    Private,
    /// Unspecified, multicast, broadcast, reserved: never a peer.
    Never,
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Class::Loopback
            } else if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || a == 0 || a >= 240 {
                Class::Never
            } else if v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
            {
                Class::Private
            } else {
                Class::Public
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Class::Loopback
            } else if v6.is_unspecified() || v6.is_multicast() {
                Class::Never
            } else if (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0xdb8
            {
                Class::Private
            } else {
                Class::Public
            }
        }
    }
}

/// Where one request goes once discovery is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Tried in order until one connects.
    pub addrs: Vec<SocketAddr>,
    /// SNI and the name the certificate must carry.
    pub tls_name: String,
    /// The `Host` header.
    pub host: String,
}

/// A received response, body already read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Connector {
    tls: TlsConnector,
    policy: AddressPolicy,
}

impl Connector {
    /// Certificates are checked against the system roots plus `ca_file`.
    pub fn new(policy: AddressPolicy, ca_file: Option<&Path>) -> Result<Self, ConnectError> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "some system root certificates could not be loaded");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let ca_error = |reason: String| ConnectError::CaFile { path: path.display().to_string(), reason };
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))?;
            for cert in certs {
                roots.add(cert.map_err(|e| ca_error(e.to_string()))?).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        // HTTP/1.1 only: the request is written by hand with its Host header.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { tls: TlsConnector::from(Arc::new(config)), policy })
    }

    /// Send `request` (its URI already origin-form, its headers set except
    /// `Host`) to the first address of `target` that accepts a connection.
    pub async fn exchange(
        &self,
        target: &Target,
        mut request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Reply, ConnectError> {
        let host = http::HeaderValue::from_str(&target.host).map_err(|e| ConnectError::Http(e.to_string()))?;
        request.headers_mut().insert(http::header::HOST, host);
        let stream = self.connect(target).await?;
        let name = ServerName::try_from(target.tls_name.clone())
            .map_err(|e| ConnectError::Tls { name: target.tls_name.clone(), reason: e.to_string() })?;
        let tls = self
            .tls
            .connect(name, stream)
            .await
            .map_err(|e| ConnectError::Tls { name: target.tls_name.clone(), reason: e.to_string() })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ConnectError::Http(e.to_string()))?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "federation connection ended");
            }
        });
        let response = sender.send_request(request).await.map_err(|e| ConnectError::Http(e.to_string()));
        let reply = match response {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                match Limited::new(body, max_body).collect().await {
                    Ok(collected) => {
                        Ok(Reply { status: parts.status, headers: parts.headers, body: collected.to_bytes() })
                    }
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ConnectError::TooLarge(max_body)),
                    Err(e) => Err(ConnectError::Http(e.to_string())),
                }
            }
            Err(e) => Err(e),
        };
        // One request per connection for now: dropping the sender closes it.
        drop(sender);
        driver.abort();
        reply
    }

    async fn connect(&self, target: &Target) -> Result<TcpStream, ConnectError> {
        let mut last = ConnectError::NoAddress;
        for &addr in &target.addrs {
            if !self.policy.permits(addr.ip()) {
                last = ConnectError::Refused(addr.ip());
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = ConnectError::Connect { addr, reason: e.to_string() },
                Err(_) => last = ConnectError::Connect { addr, reason: "timed out".to_owned() },
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_private_ranges_need_permission() {
        let closed = AddressPolicy::default();
        let loopback = AddressPolicy { allow_loopback: true, allow_private: false };
        let private = AddressPolicy { allow_loopback: false, allow_private: true };
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!closed.permits(ip) && loopback.permits(ip) && !private.permits(ip), "{ip}");
        }
        for ip in ["10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1", "100.64.0.1", "fd00::1", "fe80::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!closed.permits(ip) && !loopback.permits(ip) && private.permits(ip), "{ip}");
        }
        for ip in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let open = AddressPolicy { allow_loopback: true, allow_private: true };
            assert!(!open.permits(ip), "{ip} is never a peer");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(closed.permits(ip.parse().unwrap()), "{ip}");
        }
    }
}
