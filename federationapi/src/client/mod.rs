//! The outbound federation client: discovery, TLS, and X-Matrix signing.

pub mod connect;
pub mod discovery;
pub mod dns;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use http_body_util::Full;
use hyper::body::Bytes;
use myelin_config::Config;
use myelin_types::clock::SharedClock;
use myelin_types::ruma::CanonicalJsonValue;
use myelin_types::signing::ServerSigningKey;
use serde_json::Value;

pub use connect::{AddressPolicy, ConnectError, Reply, Target};
pub use discovery::{DEFAULT_PORT, DiscoveryError};
pub use dns::{Dns, DnsError, HickoryDns, SrvRecord};

use crate::xmatrix::{XMatrix, signed_message};

/// The largest response body accepted from another server.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Whole-request limit: discovery, connect, TLS, and reading the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const WELL_KNOWN_PORT: u16 = 443;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("discovering {server}: {source}")]
    Discovery { server: String, source: DiscoveryError },
    #[error("{server}: {source}")]
    Connect { server: String, source: ConnectError },
    #[error("{server} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout { server: String },
    #[error("{server} answered {status}: {body}")]
    Status { server: String, status: u16, body: Value },
    #[error("{server} answered something that is not JSON")]
    NotJson { server: String },
    #[error("cannot build the request: {0}")]
    Request(String),
    #[error("cannot set up the client: {0}")]
    Setup(String),
}

/// What the client is made of; [`FederationClient::from_config`] fills it
/// from the configuration, tests fill it by hand.
pub struct ClientSettings {
    pub server_name: String,
    pub signing_key: Arc<ServerSigningKey>,
    pub clock: SharedClock,
    pub dns: Arc<dyn Dns>,
    pub policy: AddressPolicy,
    pub ca_file: Option<PathBuf>,
    /// Where `.well-known` is fetched: 443 except in tests.
    pub well_known_port: u16,
}

/// One outbound request.
#[derive(Debug, Clone)]
pub struct FederationRequest {
    pub method: Method,
    pub destination: String,
    /// Path and query, already percent-encoded, exactly as signed.
    pub path: String,
    pub body: Option<Value>,
    /// X-Matrix signing; the key endpoints are the only unsigned ones.
    pub signed: bool,
}

impl FederationRequest {
    pub fn get(destination: &str, path: impl Into<String>) -> Self {
        Self { method: Method::GET, destination: destination.to_owned(), path: path.into(), body: None, signed: true }
    }

    pub fn post(destination: &str, path: impl Into<String>, body: Value) -> Self {
        Self { method: Method::POST, body: Some(body), ..Self::get(destination, path) }
    }

    pub fn put(destination: &str, path: impl Into<String>, body: Value) -> Self {
        Self { method: Method::PUT, body: Some(body), ..Self::get(destination, path) }
    }

    pub fn unsigned(mut self) -> Self {
        self.signed = false;
        self
    }
}

pub struct FederationClient {
    server_name: String,
    signing_key: Arc<ServerSigningKey>,
    connector: connect::Connector,
    discovery: discovery::Discovery,
}

impl FederationClient {
    pub fn new(settings: ClientSettings) -> Result<Self, ClientError> {
        let connector = connect::Connector::new(settings.policy, settings.ca_file.as_deref())
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self {
            server_name: settings.server_name,
            signing_key: settings.signing_key,
            connector,
            discovery: discovery::Discovery::new(settings.dns, settings.clock, settings.well_known_port),
        })
    }

    /// The system resolver and the `federation_api` settings.
    pub fn from_config(
        config: &Config,
        signing_key: Arc<ServerSigningKey>,
        clock: SharedClock,
    ) -> Result<Self, ClientError> {
        let dns = HickoryDns::from_system().map_err(|e| ClientError::Setup(e.to_string()))?;
        let federation = &config.federation_api;
        Self::new(ClientSettings {
            server_name: config.global.server_name.clone(),
            signing_key,
            clock,
            dns: Arc::new(dns),
            policy: AddressPolicy {
                allow_loopback: federation.allow_loopback_peers,
                allow_private: federation.allow_private_peers,
            },
            ca_file: federation.ca_file.clone(),
            well_known_port: WELL_KNOWN_PORT,
        })
    }

    /// Where requests for `server_name` would go (discovery only).
    pub async fn resolve(&self, server_name: &str) -> Result<Target, ClientError> {
        self.discovery
            .resolve(&self.connector, server_name)
            .await
            .map_err(|source| ClientError::Discovery { server: server_name.to_owned(), source })
    }

    /// Send `request` and return the JSON body of a 2xx answer; any other
    /// status is [`ClientError::Status`] with the body the server sent.
    pub async fn send(&self, request: FederationRequest) -> Result<Value, ClientError> {
        let server = request.destination.clone();
        let reply = self.fetch(request, MAX_RESPONSE_BYTES).await?;
        serde_json::from_slice(&reply.body).map_err(|_| ClientError::NotJson { server })
    }

    /// Send `request` and return a 2xx answer whatever its body, read up to
    /// `max_body` bytes (more is [`ConnectError::TooLarge`]); any other
    /// status is [`ClientError::Status`] with the body the server sent.
    pub async fn fetch(&self, request: FederationRequest, max_body: usize) -> Result<Reply, ClientError> {
        let server = request.destination.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request, max_body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { server }),
        }
    }

    async fn exchange(&self, request: FederationRequest, max_body: usize) -> Result<Reply, ClientError> {
        let server = request.destination.clone();
        let target = self.resolve(&server).await?;
        let body = match &request.body {
            Some(body) => serde_json::to_vec(body).map_err(|e| ClientError::Request(e.to_string()))?,
            None => Vec::new(),
        };
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(&request.path)
            .header(http::header::USER_AGENT, concat!("Myelin/", env!("CARGO_PKG_VERSION")));
        if request.body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        if request.signed {
            builder = builder.header(http::header::AUTHORIZATION, self.authorization(&request)?);
        }
        let http_request =
            builder.body(Full::new(Bytes::from(body))).map_err(|e| ClientError::Request(e.to_string()))?;
        let reply = self
            .connector
            .exchange(&target, http_request, max_body)
            .await
            .map_err(|source| ClientError::Connect { server: server.clone(), source })?;
        if !reply.status.is_success() {
            let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            return Err(ClientError::Status { server, status: reply.status.as_u16(), body });
        }
        Ok(reply)
    }

    /// The `Authorization` header of `request`, signed with our key.
    pub fn authorization(&self, request: &FederationRequest) -> Result<String, ClientError> {
        let content = match &request.body {
            Some(body) => {
                Some(CanonicalJsonValue::try_from(body.clone()).map_err(|e| ClientError::Request(e.to_string()))?)
            }
            None => None,
        };
        let message = signed_message(
            request.method.as_str(),
            &request.path,
            &self.server_name,
            &request.destination,
            content.as_ref(),
        )
        .map_err(|e| ClientError::Request(e.to_string()))?;
        let header = XMatrix {
            origin: self.server_name.clone(),
            destination: Some(request.destination.clone()),
            key_id: self.signing_key.key_id(),
            signature: self.signing_key.sign(message.as_bytes()),
        };
        Ok(header.to_header())
    }
}
