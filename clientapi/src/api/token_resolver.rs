//! The client side of the token lookup on [`QUERY_TOPIC`], for components
//! that serve client requests without reading the client API's tables:
//! the access token's hash is asked over the bus, and positive answers are
//! cached until the client API announces the token revoked on
//! [`DEVICES_TOPIC`](super::DEVICES_TOPIC). Guests are refused
//! (`403 M_GUEST_ACCESS_FORBIDDEN`) except by
//! [`TokenResolver::authenticate_guest_ok`], for the endpoints the spec
//! opens to them (<https://spec.matrix.org/v1.16/client-server-api/#guest-access>).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::http::request::Parts;
use myelin_bus::{Bus, BusError, HandleError, Handler, Record};
use myelin_types::MatrixError;
use myelin_types::random::token_hash;

use crate::appservice::Assertion;

use super::{DeviceEvent, Identity, QUERY_TOPIC, QueryReply, QueryRequest, REQUEST_TIMEOUT};

/// Beyond this many cached tokens the cache starts over.
const MAX_CACHED: usize = 100_000;

/// Why a request could not be tied to a user.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `M_MISSING_TOKEN` or `M_UNKNOWN_TOKEN`, for the client as is.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// The client API did not answer.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: Identity,
    /// The hash of the access token the request carried (what
    /// [`DeviceEvent::TokensRevoked`] names).
    pub token_hash: String,
}

pub struct TokenResolver {
    bus: Bus,
    /// `client_api.allow_guest_access`: without it, guest tokens kept from
    /// before are refused everywhere.
    guests_allowed: bool,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Token hash → the request's assertion (which only an application
    /// service's token heeds) → identity.
    identities: HashMap<String, HashMap<Assertion, Identity>>,
    /// Bumped on every revocation, so that a lookup that raced with one is not cached.
    generation: u64,
}

impl TokenResolver {
    /// A resolver for a component that serves no endpoint to guests.
    pub fn new(bus: Bus) -> Self {
        Self { bus, guests_allowed: false, cache: Mutex::default() }
    }

    /// A resolver whose [`Self::authenticate_guest_ok`] lets guests through
    /// when `guests_allowed` (`client_api.allow_guest_access`).
    pub fn with_guests(bus: Bus, guests_allowed: bool) -> Self {
        Self { guests_allowed, ..Self::new(bus) }
    }

    /// Who sent this request: `401 M_MISSING_TOKEN` without a token,
    /// `401 M_UNKNOWN_TOKEN` for a token the client API does not know,
    /// `403 M_GUEST_ACCESS_FORBIDDEN` for a guest.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Identity, ResolveError> {
        Ok(self.caller(parts).await?.identity)
    }

    /// Like [`Self::authenticate`], for the endpoints the spec opens to
    /// guests: a guest passes while the server allows guests.
    pub async fn authenticate_guest_ok(&self, parts: &Parts) -> Result<Identity, ResolveError> {
        let identity = self.lookup(parts).await?.identity;
        if identity.is_guest && !self.guests_allowed {
            return Err(MatrixError::guest_access_forbidden().into());
        }
        Ok(identity)
    }

    /// Like [`Self::authenticate`], also giving the token's hash.
    pub async fn caller(&self, parts: &Parts) -> Result<Caller, ResolveError> {
        let caller = self.lookup(parts).await?;
        if caller.identity.is_guest {
            return Err(MatrixError::guest_access_forbidden().into());
        }
        Ok(caller)
    }

    /// The token's owner, guest or not; `M_UNKNOWN_TOKEN` with
    /// `soft_logout` once it expired, judged on the bus clock.
    async fn lookup(&self, parts: &Parts) -> Result<Caller, ResolveError> {
        let caller = self.lookup_cached(parts).await?;
        if caller.identity.expires_ms.is_some_and(|expires| expires <= self.bus.clock().now_ms()) {
            return Err(MatrixError::soft_logout().into());
        }
        Ok(caller)
    }

    async fn lookup_cached(&self, parts: &Parts) -> Result<Caller, ResolveError> {
        let token = myelin_types::auth::access_token(parts).ok_or_else(MatrixError::missing_token)?;
        let hash = token_hash(&token);
        let assertion = Assertion::of(parts);
        let generation = {
            let cache = self.cache.lock().expect("token cache lock");
            if let Some(identity) = cache.identities.get(&hash).and_then(|by_assertion| by_assertion.get(&assertion)) {
                return Ok(Caller { identity: identity.clone(), token_hash: hash });
            }
            cache.generation
        };
        let request = QueryRequest::Whoami {
            token_hash: hash.clone(),
            user_id: assertion.user_id.clone(),
            device_id: assertion.device_id.clone(),
        };
        let reply: QueryReply = self.bus.request_json(QUERY_TOPIC, &hash, &request, REQUEST_TIMEOUT).await?;
        let identity = reply?;
        let mut cache = self.cache.lock().expect("token cache lock");
        if cache.generation == generation {
            if cache.identities.len() >= MAX_CACHED {
                cache.identities.clear();
            }
            cache.identities.entry(hash.clone()).or_default().insert(assertion, identity.clone());
        }
        Ok(Caller { identity, token_hash: hash })
    }

    /// Forget these tokens: they stop working now.
    pub fn revoke(&self, token_hashes: &[String]) {
        let mut cache = self.cache.lock().expect("token cache lock");
        cache.generation += 1;
        for hash in token_hashes {
            cache.identities.remove(hash);
        }
    }
}

/// A consumer of [`DEVICES_TOPIC`](super::DEVICES_TOPIC) that evicts revoked
/// tokens from a resolver's cache, for components that need nothing else
/// from that topic.
pub struct EvictRevokedTokens(pub Arc<TokenResolver>);

#[async_trait]
impl Handler for EvictRevokedTokens {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event: DeviceEvent =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable device event: {e}")))?;
        if let DeviceEvent::TokensRevoked { token_hashes, .. } = event {
            self.0.revoke(&token_hashes);
        }
        Ok(())
    }
}
