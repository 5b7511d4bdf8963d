//! URL previews: fetching what a user links to and reading its OpenGraph
//! properties. The server fetches URLs that users choose, so requests go
//! only to public addresses unless the operator allow-listed a range
//! (DESIGN.md invariant 10): every hop's host is checked before the request
//! (an IP literal directly, a name on every address it resolves to), and the
//! client connects only to the addresses its own resolver lets through, so
//! a name that resolves elsewhere between the check and the connection
//! still cannot reach a refused address. Answers are cached in memory, per
//! URL, for an hour ([`CACHE_ENTRIES`] at most).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use html5gum::{DefaultEmitter, StartTag, Token, Tokenizer};
use ipnet::IpNet;
use myelin_types::{ErrorCode, MatrixError};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Map, Value};

/// The most any preview fetch reads; a larger page or image is refused.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Redirects followed before giving up; each hop is checked like the first.
const MAX_REDIRECTS: usize = 5;
/// One fetch, redirects and body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CACHE_MS: i64 = 60 * 60 * 1000;
const CACHE_ENTRIES: usize = 1000;
/// Bounds on what a page can put in a preview.
const MAX_PROPERTIES: usize = 64;
const MAX_VALUE_CHARS: usize = 1000;
const USER_AGENT: &str = concat!("Myelin/", env!("CARGO_PKG_VERSION"), " (URL preview)");

/// Ranges that are not public unicast addresses: unspecified, "this
/// network", private, shared (CGNAT), loopback, link-local, IETF protocol
/// assignments, documentation, benchmarking, 6to4 relay anycast, multicast,
/// reserved and broadcast; for IPv6 also IPv4-compatible, discard-only,
/// local-use NAT64, Teredo and other IETF assignments, unique local and
/// site-local. IPv6 addresses that carry an IPv4 address are judged by it
/// ([`embedded_ipv4`]).
const NOT_PUBLIC: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/96",
    "100::/64",
    "64:ff9b:1::/48",
    "2001::/23",
    "2001:db8::/32",
    "3fff::/20",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

static NOT_PUBLIC_NETS: LazyLock<Vec<IpNet>> =
    LazyLock::new(|| NOT_PUBLIC.iter().filter_map(|net| net.parse().ok()).collect());

/// The IPv4 address an IPv6 address delivers to: IPv4-mapped
/// (`::ffff:0:0/96`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let [s0, s1, s2, s3, s4, s5, ..] = ip.segments();
    let o = ip.octets();
    match (s0, s1) {
        (0x64, 0xff9b) if [s2, s3, s4, s5] == [0; 4] => Some(Ipv4Addr::new(o[12], o[13], o[14], o[15])),
        (0x2002, _) => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_ipv4(v6)
    {
        return is_public(IpAddr::V4(v4));
    }
    !NOT_PUBLIC_NETS.iter().any(|net| net.contains(&ip))
}

/// Public addresses, and those in the operator's allow-list.
#[derive(Debug, Clone)]
struct AddressPolicy {
    allowed: Arc<[IpNet]>,
}

impl AddressPolicy {
    fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allowed.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// The client's resolver: the system's answers, less refused addresses.
impl Resolve for AddressPolicy {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let permitted: Vec<SocketAddr> = found.filter(|addr| policy.permits(addr.ip())).collect();
            if permitted.is_empty() {
                return Err(format!("{host} resolves to no address URL previews may reach").into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("Not a URL: {0}")]
    BadUrl(String),
    #[error("Only http and https URLs can be previewed")]
    Scheme,
    #[error("URL previews may not reach {0}")]
    Refused(String),
    #[error("Cannot fetch the URL: {0}")]
    Fetch(String),
    #[error("The URL answered {0}")]
    Status(u16),
    #[error("The URL redirects more than {MAX_REDIRECTS} times")]
    Redirects,
    #[error("The content is larger than {0} bytes")]
    TooLarge(usize),
}

impl From<PreviewError> for MatrixError {
    fn from(error: PreviewError) -> Self {
        let message = error.to_string();
        match error {
            PreviewError::BadUrl(_) | PreviewError::Scheme => MatrixError::invalid_param(message),
            PreviewError::Refused(_) => MatrixError::forbidden(message),
            PreviewError::TooLarge(_) => MatrixError::too_large(message).with_status(StatusCode::BAD_GATEWAY),
            PreviewError::Fetch(_) | PreviewError::Status(_) | PreviewError::Redirects => {
                MatrixError::new(ErrorCode::Unknown, message).with_status(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

/// The URL to preview, if it is an http or https URL.
pub fn parse_url(raw: &str) -> Result<Url, PreviewError> {
    let url = Url::parse(raw).map_err(|e| PreviewError::BadUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PreviewError::Scheme);
    }
    Ok(url)
}

/// A fetched page or image.
pub struct Fetched {
    /// Where it was found, after redirects.
    pub url: Url,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Fetched {
    fn essence(&self) -> String {
        self.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
    }

    pub fn is_image(&self) -> bool {
        self.essence().starts_with("image/")
    }

    pub fn is_html(&self) -> bool {
        matches!(self.essence().as_str(), "text/html" | "application/xhtml+xml")
    }
}

struct Cached {
    preview: Map<String, Value>,
    stored_ms: i64,
}

/// The fetching client and the cache of answers.
pub struct UrlPreviews {
    http: reqwest::Client,
    policy: AddressPolicy,
    cache: Mutex<HashMap<String, Cached>>,
}

impl UrlPreviews {
    pub fn new(allowlist: &[IpNet]) -> Result<Self, reqwest::Error> {
        let policy = AddressPolicy { allowed: allowlist.into() };
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(policy.clone()))
            // Followed by hand, so that every hop is checked.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self { http, policy, cache: Mutex::new(HashMap::new()) })
    }

    pub fn cached(&self, url: &Url, now_ms: i64) -> Option<Map<String, Value>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(url.as_str()).filter(|c| now_ms - c.stored_ms < CACHE_MS).map(|c| c.preview.clone())
    }

    /// Keep `preview`; when the cache is full, expired answers go first,
    /// then the oldest.
    pub fn remember(&self, url: &Url, preview: Map<String, Value>, now_ms: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, c| now_ms - c.stored_ms < CACHE_MS);
        }
        if cache.len() >= CACHE_ENTRIES
            && let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.stored_ms).map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(url.as_str().to_owned(), Cached { preview, stored_ms: now_ms });
    }

    /// GET `url`, following redirects, reading at most `max_bytes`.
    pub async fn fetch(&self, url: Url, max_bytes: usize) -> Result<Fetched, PreviewError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.follow(url, max_bytes))
            .await
            .map_err(|_| PreviewError::Fetch("timed out".to_owned()))?
    }

    async fn follow(&self, mut url: Url, max_bytes: usize) -> Result<Fetched, PreviewError> {
        for _ in 0..=MAX_REDIRECTS {
            self.check_url(&url).await?;
            let mut response = self.http.get(url.clone()).send().await.map_err(fetch_error)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or(PreviewError::Status(status.as_u16()))?;
                url = url.join(location).map_err(|e| PreviewError::Fetch(format!("bad redirect: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(PreviewError::Status(status.as_u16()));
            }
            if response.content_length().is_some_and(|length| length > max_bytes as u64) {
                return Err(PreviewError::TooLarge(max_bytes));
            }
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|t| t.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let mut bytes = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
                if bytes.len() + chunk.len() > max_bytes {
                    return Err(PreviewError::TooLarge(max_bytes));
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Fetched { url, content_type, bytes });
        }
        Err(PreviewError::Redirects)
    }

    /// Refuse anything but http and https (a redirect or an image may name
    /// any URL), and a host none of whose addresses the policy permits (IP
    /// literals never reach the resolver, so this is their only check).
    async fn check_url(&self, url: &Url) -> Result<(), PreviewError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PreviewError::Fetch(format!("{}: URLs are not fetched", url.scheme())));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses: Vec<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![ip.into()],
            Some(url::Host::Ipv6(ip)) => vec![ip.into()],
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| PreviewError::Fetch(format!("cannot resolve {name}")))?
                .map(|addr| addr.ip())
                .collect(),
            None => return Err(PreviewError::BadUrl("no host".to_owned())),
        };
        if !addresses.into_iter().any(|ip| self.policy.permits(ip)) {
            return Err(PreviewError::Refused(url.host_str().unwrap_or_default().to_owned()));
        }
        Ok(())
    }
}

/// reqwest's errors name the URL; the client knows it already.
fn fetch_error(error: reqwest::Error) -> PreviewError {
    PreviewError::Fetch(error.without_url().to_string())
}

/// The page's OpenGraph properties (`og:*`, from `<meta property>` or, as
/// some pages write them, `<meta name>`; the first of each wins), with
/// `og:title` from `<title>` and `og:description` from
/// `<meta name="description">` where the page has none. Only the head is
/// read.
pub fn opengraph(html: &[u8]) -> Map<String, Value> {
    let text = String::from_utf8_lossy(html);
    let mut emitter = DefaultEmitter::default();
    // What `<title>`, `<script>` and `<style>` hold is text, not tags.
    emitter.naively_switch_states(true);
    let mut properties = Map::new();
    let mut description = None;
    let mut title: Option<String> = None;
    let mut in_title = false;
    for token in Tokenizer::new_with_emitter(text.as_ref(), emitter).flatten() {
        match token {
            Token::StartTag(tag) if tag.name == b"meta" => {
                let Some(content) = attribute(&tag, b"content") else { continue };
                let key = attribute(&tag, b"property").or_else(|| attribute(&tag, b"name")).unwrap_or_default();
                let key = key.to_ascii_lowercase();
                if key.starts_with("og:") && properties.len() < MAX_PROPERTIES && !properties.contains_key(&key) {
                    properties.insert(key, Value::String(bounded(&content)));
                } else if key == "description" && description.is_none() {
                    description = Some(bounded(&content));
                }
            }
            Token::StartTag(tag) if tag.name == b"title" && title.is_none() => {
                in_title = true;
                title = Some(String::new());
            }
            Token::String(chunk) if in_title => {
                if let Some(title) = &mut title {
                    title.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
            Token::EndTag(tag) if tag.name == b"title" => in_title = false,
            Token::StartTag(tag) if tag.name == b"body" => break,
            Token::EndTag(tag) if tag.name == b"head" => break,
            _ => {}
        }
    }
    let title = title.map(|t| bounded(&t)).filter(|t| !t.is_empty());
    for (key, fallback) in [("og:title", title), ("og:description", description)] {
        if let Some(value) = fallback
            && !properties.contains_key(key)
        {
            properties.insert(key.to_owned(), Value::String(value));
        }
    }
    properties
}

/// An image's width and height, from its header alone (no decoding).
pub fn image_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
}

fn attribute(tag: &StartTag<()>, name: &[u8]) -> Option<String> {
    tag.attributes.get(name).map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Whitespace collapsed, at most [`MAX_VALUE_CHARS`] characters.
fn bounded(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(MAX_VALUE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001:db8::1",
            "2001::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(NOT_PUBLIC_NETS.len(), NOT_PUBLIC.len(), "every range parses");
    }

    #[test]
    fn the_allowlist_admits_ranges_also_as_mapped_addresses() {
        let policy = AddressPolicy { allowed: vec!["127.0.0.1/32".parse().unwrap()].into() };
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("127.0.0.2".parse().unwrap()));
        assert!(!policy.permits("::1".parse().unwrap()));
        assert!(policy.permits("8.8.8.8".parse().unwrap()));
    }

    #[tokio::test]
    async fn loopback_names_resolve_to_nothing_unless_allowed() {
        let refused = AddressPolicy { allowed: Arc::new([]) }.resolve("localhost".parse().unwrap()).await;
        assert!(refused.is_err());
        let allowed =
            AddressPolicy { allowed: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()].into() };
        assert!(allowed.resolve("localhost".parse().unwrap()).await.unwrap().next().is_some());
    }

    #[test]
    fn only_http_urls_are_previewed() {
        assert!(parse_url("https://example.org/a?b#c").is_ok());
        for bad in ["ftp://example.org/", "file:///etc/passwd", "javascript:alert(1)", "example.org", ""] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn opengraph_properties_fall_back_to_title_and_description() {
        let page = br#"<!doctype html><html><head>
            <title>  The
              title </title>
            <meta name="description" content="Plain description">
            <META PROPERTY="og:Image" content="/i.png">
            <meta property="og:image" content="/second.png">
            <script>document.write('<meta property="og:title" content="injected">')</script>
            </head><body><meta property="og:site_name" content="too late"></body></html>"#;
        let og = opengraph(page);
        assert_eq!(og["og:title"], "The title");
        assert_eq!(og["og:description"], "Plain description");
        assert_eq!(og["og:image"], "/i.png");
        assert!(!og.contains_key("og:site_name"));

        let page = br#"<head><title>Ignored</title><meta property="og:title" content="OG &amp; title"></head>"#;
        assert_eq!(opengraph(page)["og:title"], "OG & title");
        assert!(opengraph(b"not html at all").is_empty());
    }
}
