//! Who is calling: the access token's hash is looked up with the client API
//! over the bus (`clientapi.query`), and positive answers are cached until
//! the client API announces the token revoked on `clientapi.devices`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::request::Parts;
use myelin_bus::Bus;
use myelin_clientapi::api::{Identity, QUERY_TOPIC, QueryReply, QueryRequest, REQUEST_TIMEOUT};
use myelin_types::MatrixError;
use myelin_types::random::token_hash;

use crate::SyncApiError;

/// Beyond this many cached tokens the cache starts over.
const MAX_CACHED: usize = 100_000;

pub struct Authenticator {
    bus: Bus,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    identities: HashMap<String, Identity>,
    /// Bumped on every revocation, so that a lookup that raced with one is not cached.
    generation: u64,
}

impl Authenticator {
    pub fn new(bus: Bus) -> Self {
        Self { bus, cache: Mutex::default() }
    }

    pub async fn authenticate(&self, parts: &Parts) -> Result<Identity, SyncApiError> {
        let token = myelin_types::auth::access_token(parts).ok_or_else(MatrixError::missing_token)?;
        let hash = token_hash(&token);
        let generation = {
            let cache = self.cache.lock().expect("auth cache lock");
            if let Some(identity) = cache.identities.get(&hash) {
                return Ok(identity.clone());
            }
            cache.generation
        };
        let reply: QueryReply = self
            .bus
            .request_json(QUERY_TOPIC, &hash, &QueryRequest::Whoami { token_hash: hash.clone() }, REQUEST_TIMEOUT)
            .await?;
        let identity = reply.ok_or_else(MatrixError::unknown_token)?;
        let mut cache = self.cache.lock().expect("auth cache lock");
        if cache.generation == generation {
            if cache.identities.len() >= MAX_CACHED {
                cache.identities.clear();
            }
            cache.identities.insert(hash, identity.clone());
        }
        Ok(identity)
    }

    /// Forget these tokens: they stop working now.
    pub fn revoke(&self, token_hashes: &[String]) {
        let mut cache = self.cache.lock().expect("auth cache lock");
        cache.generation += 1;
        for hash in token_hashes {
            cache.identities.remove(hash);
        }
    }
}
