//! The key store: our own key response, remote servers' keys fetched
//! directly or through notaries and kept with their validity, and the
//! notary answers we give for others.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#retrieving-server-keys>

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use myelin_config::{Config, OldVerifyKey};
use myelin_roomserver::api::VerifyKey;
use myelin_storage::{Db, sqlx};
use myelin_types::clock::SharedClock;
use myelin_types::ruma::canonical_json::to_canonical_value;
use myelin_types::ruma::signatures::{
    SigningKeyAlgorithm, sign_json, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};
use myelin_types::ruma::{CanonicalJsonObject, CanonicalJsonValue};
use myelin_types::signing::ServerSigningKey;
use serde_json::{Value, json};

use crate::client::{ClientError, FederationClient, FederationRequest};
use crate::storage::keys::{self as store, KeyResponse, StoredKey};
use crate::xmatrix::decode;

/// How long our own key response may be cached by others, and the most
/// we trust anyone else's `valid_until_ts` beyond the time we fetched it
/// (the spec's 7-day cap for room versions 5 and later).
pub const VALIDITY_CAP_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key storage: {0}")]
    Storage(#[from] sqlx::Error),
    #[error(transparent)]
    Fetch(#[from] ClientError),
    #[error("key response of {server}: {reason}")]
    Invalid { server: String, reason: String },
    #[error("signing our key response: {0}")]
    Sign(String),
    #[error("no key source answered for {0}")]
    Unavailable(String),
}

pub struct KeyStore {
    db: Db,
    client: Arc<FederationClient>,
    clock: SharedClock,
    server_name: String,
    signing_key: Arc<ServerSigningKey>,
    old_keys: BTreeMap<String, OldVerifyKey>,
    trusted: Vec<String>,
    denylist: HashSet<String>,
    /// One fetch per server at a time; others wait for its result.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyStore {
    pub fn new(
        config: &Config,
        db: Db,
        client: Arc<FederationClient>,
        signing_key: Arc<ServerSigningKey>,
        clock: SharedClock,
    ) -> Self {
        let federation = &config.federation_api;
        Self {
            db,
            client,
            clock,
            server_name: config.global.server_name.clone(),
            signing_key,
            old_keys: federation.old_verify_keys.clone(),
            trusted: federation.trusted_key_servers.clone(),
            denylist: federation.key_denylist.iter().cloned().collect(),
            fetching: Mutex::default(),
        }
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Our key response (`GET /_matrix/key/v2/server`), signed by the key it
    /// publishes, with `old_verify_keys` from the configuration.
    pub fn own_response(&self) -> Result<CanonicalJsonObject, KeyError> {
        let key = &self.signing_key;
        let old: serde_json::Map<String, Value> = self
            .old_keys
            .iter()
            .map(|(id, old)| (id.clone(), json!({"key": old.key, "expired_ts": old.expired_ts})))
            .collect();
        let response = json!({
            "server_name": self.server_name,
            "verify_keys": { key.key_id(): { "key": key.public_key_base64() } },
            "old_verify_keys": old,
            "valid_until_ts": self.clock.now_ms() + VALIDITY_CAP_MS,
        });
        let mut object = canonical_object(response).map_err(KeyError::Sign)?;
        sign_json(&self.server_name, &key.keypair, &mut object).map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok(object)
    }

    /// The keys of `server` with their validity, fetched first when one of
    /// `key_ids` is unknown or no longer valid. A failed fetch is logged and
    /// the stored keys are returned: the caller decides what is missing.
    pub async fn server_keys(&self, server: &str, key_ids: &[String]) -> Result<Vec<VerifyKey>, KeyError> {
        if server == self.server_name {
            return Ok(self.own_keys());
        }
        let now = self.clock.now_ms();
        let stored = store::keys(&self.db, server).await?;
        let usable = |stored: &[StoredKey], id: &String| {
            stored.iter().any(|k| &k.key_id == id && (k.expired_ts.is_some() || capped(k) >= now))
        };
        if key_ids.iter().all(|id| usable(&stored, id)) {
            return Ok(self.verify_keys(stored));
        }
        if let Err(error) = self.refresh(server, key_ids).await {
            tracing::warn!(server, %error, "cannot fetch server keys");
        }
        Ok(self.verify_keys(store::keys(&self.db, server).await?))
    }

    /// The public key that signs `server`'s requests under `key_id` now, if any.
    pub async fn request_key(&self, server: &str, key_id: &str) -> Result<Option<String>, KeyError> {
        let now = self.clock.now_ms();
        let keys = self.server_keys(server, &[key_id.to_owned()]).await?;
        Ok(keys
            .into_iter()
            .find(|k| k.key_id == key_id && k.valid_until_ts.is_some_and(|until| until >= now))
            .map(|k| k.public_key))
    }

    /// A notary answer for `server`: its latest response meeting
    /// `minimum_valid_until_ts` (fetched when the stored one does not),
    /// countersigned by us. `None` when we have nothing for it.
    pub async fn notary_response(
        &self,
        server: &str,
        minimum_valid_until_ts: Option<u64>,
    ) -> Result<Option<CanonicalJsonObject>, KeyError> {
        if server == self.server_name {
            return self.own_response().map(Some);
        }
        let wanted = minimum_valid_until_ts.unwrap_or_else(|| self.clock.now_ms());
        let mut stored = store::response(&self.db, server).await?;
        if stored.as_ref().is_none_or(|(_, until)| *until < wanted) {
            match self.fetch_direct(server).await {
                Ok(fresh) => {
                    store::store(&self.db, &fresh, self.clock.now_ms()).await?;
                    stored = store::response(&self.db, server).await?;
                }
                // The most recent response we have is still worth serving.
                Err(error) => tracing::info!(server, %error, "notary: cannot refresh keys"),
            }
        }
        let Some((text, _)) = stored else { return Ok(None) };
        let value: Value = serde_json::from_str(&text).map_err(|e| invalid(server, e))?;
        let mut object = canonical_object(value).map_err(|e| invalid(server, e))?;
        sign_json(&self.server_name, &self.signing_key.keypair, &mut object)
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok(Some(object))
    }

    fn own_keys(&self) -> Vec<VerifyKey> {
        let key = &self.signing_key;
        let mut keys = vec![VerifyKey {
            key_id: key.key_id(),
            public_key: key.public_key_base64(),
            valid_until_ts: Some(self.clock.now_ms() + VALIDITY_CAP_MS),
            expired_ts: None,
        }];
        keys.extend(self.old_keys.iter().map(|(id, old)| VerifyKey {
            key_id: id.clone(),
            public_key: old.key.clone(),
            valid_until_ts: None,
            expired_ts: Some(old.expired_ts),
        }));
        keys
    }

    fn verify_keys(&self, stored: Vec<StoredKey>) -> Vec<VerifyKey> {
        stored
            .into_iter()
            .filter(|k| !self.denylist.contains(&k.public_key))
            .map(|k| VerifyKey {
                valid_until_ts: k.valid_until_ts.map(|_| capped(&k)),
                key_id: k.key_id,
                public_key: k.public_key,
                expired_ts: k.expired_ts,
            })
            .collect()
    }

    /// Fetch `server`'s keys: from the server itself, then from each trusted
    /// notary in turn. Only one fetch per server runs at a time.
    async fn refresh(&self, server: &str, key_ids: &[String]) -> Result<(), KeyError> {
        let gate = self.fetching.lock().expect("fetch gate lock").entry(server.to_owned()).or_default().clone();
        let _turn = gate.lock().await;
        let mut last = match self.fetch_direct(server).await {
            Ok(keys) => return Ok(store::store(&self.db, &keys, self.clock.now_ms()).await?),
            Err(error) => {
                tracing::debug!(server, %error, "direct key fetch failed");
                error
            }
        };
        for notary in self.trusted.iter().filter(|n| n.as_str() != server && **n != self.server_name) {
            match self.fetch_from_notary(notary, server, key_ids).await {
                Ok(responses) => {
                    for keys in &responses {
                        store::store(&self.db, keys, self.clock.now_ms()).await?;
                    }
                    return Ok(());
                }
                Err(error) => {
                    tracing::debug!(server, notary, %error, "notary key fetch failed");
                    last = error;
                }
            }
        }
        Err(last)
    }

    /// `GET /_matrix/key/v2/server` of `server` itself.
    async fn fetch_direct(&self, server: &str) -> Result<KeyResponse, KeyError> {
        let request = FederationRequest::get(server, "/_matrix/key/v2/server").unsigned();
        let body = self.client.send(request).await?;
        self.check_response(server, body).map(|(keys, _)| keys)
    }

    /// `POST /_matrix/key/v2/query` of a notary: each response must be
    /// self-signed by `server` and signed by the notary.
    async fn fetch_from_notary(
        &self,
        notary: &str,
        server: &str,
        key_ids: &[String],
    ) -> Result<Vec<KeyResponse>, KeyError> {
        let criteria: serde_json::Map<String, Value> = key_ids.iter().map(|id| (id.clone(), json!({}))).collect();
        let body = json!({ "server_keys": { server: criteria } });
        let request = FederationRequest::post(notary, "/_matrix/key/v2/query", body).unsigned();
        let answer = self.client.send(request).await?;
        let responses = answer.get("server_keys").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut verified = Vec::new();
        for response in responses {
            let (keys, object) = self.check_response(server, response)?;
            self.check_notary_signature(notary, &object).await?;
            verified.push(keys);
        }
        if verified.is_empty() {
            return Err(KeyError::Unavailable(server.to_owned()));
        }
        Ok(verified)
    }

    /// At least one of `notary`'s signatures on `object` must verify with
    /// a key fetched from the notary itself (never through another notary).
    async fn check_notary_signature(&self, notary: &str, object: &CanonicalJsonObject) -> Result<(), KeyError> {
        let signatures = signatures_of(object, notary);
        if signatures.is_empty() {
            return Err(invalid(notary, "the notary did not sign the response"));
        }
        let now = self.clock.now_ms();
        let mut stored = store::keys(&self.db, notary).await?;
        let known = |stored: &[StoredKey]| {
            signatures.iter().any(|(id, _)| stored.iter().any(|k| &k.key_id == id && capped(k) >= now))
        };
        if !known(&stored) {
            let keys = self.fetch_direct(notary).await?;
            store::store(&self.db, &keys, now).await?;
            stored = store::keys(&self.db, notary).await?;
        }
        let message = to_canonical_json_string_for_signing(object).map_err(|e| invalid(notary, e))?;
        for (key_id, signature) in &signatures {
            let Some(key) = stored.iter().find(|k| &k.key_id == key_id && capped(k) >= now) else { continue };
            if self.denylist.contains(&key.public_key) {
                continue;
            }
            if verify(&key.public_key, signature, &message) {
                return Ok(());
            }
        }
        Err(invalid(notary, "no valid notary signature"))
    }

    /// Parse and verify a key response of `server`: the name matches, and
    /// the response is signed by a key it lists in `verify_keys` (every such
    /// signature present must verify). Denylisted keys are dropped.
    fn check_response(&self, server: &str, value: Value) -> Result<(KeyResponse, CanonicalJsonObject), KeyError> {
        let object = canonical_object(value).map_err(|e| invalid(server, e))?;
        if object.get("server_name").and_then(as_str) != Some(server) {
            return Err(invalid(server, "server_name does not match"));
        }
        let valid_until_ts = match object.get("valid_until_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).map_err(|e| invalid(server, e))?,
            _ => return Err(invalid(server, "valid_until_ts is missing")),
        };
        let mut current = Vec::new();
        for (key_id, entry) in object_field(&object, "verify_keys") {
            let key = entry.get("key").and_then(as_str).ok_or_else(|| invalid(server, "a verify key has no key"))?;
            current.push((key_id.clone(), key.to_owned()));
        }
        let mut old = Vec::new();
        for (key_id, entry) in object_field(&object, "old_verify_keys") {
            let key = entry.get("key").and_then(as_str).ok_or_else(|| invalid(server, "an old key has no key"))?;
            let expired = match entry.get("expired_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
                _ => return Err(invalid(server, "an old key has no expired_ts")),
            };
            old.push((key_id.clone(), key.to_owned(), expired));
        }
        let message = to_canonical_json_string_for_signing(&object).map_err(|e| invalid(server, e))?;
        let mut verified = false;
        for (key_id, signature) in signatures_of(&object, server) {
            let Some((_, key)) = current.iter().find(|(id, _)| *id == key_id) else { continue };
            if !verify(key, &signature, &message) {
                return Err(invalid(server, format!("signature by {key_id} does not verify")));
            }
            verified |= !self.denylist.contains(key);
        }
        if !verified {
            return Err(invalid(server, "not signed by a key it lists"));
        }
        current.retain(|(_, key)| !self.denylist.contains(key));
        old.retain(|(_, key, _)| !self.denylist.contains(key));
        let response = serde_json::to_string(&object).map_err(|e| invalid(server, e))?;
        Ok((KeyResponse { server_name: server.to_owned(), response, valid_until_ts, current, old }, object))
    }
}

/// A current key's validity as we trust it: its own `valid_until_ts`, but
/// at most 7 days after we fetched it.
fn capped(key: &StoredKey) -> u64 {
    key.valid_until_ts.unwrap_or(0).min(key.fetched_ts + VALIDITY_CAP_MS)
}

fn verify(public_key: &str, signature: &str, message: &str) -> bool {
    let (Ok(key), Ok(signature)) = (decode(public_key), decode(signature)) else { return false };
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &key, &signature, message.as_bytes()).is_ok()
}

fn canonical_object(value: Value) -> Result<CanonicalJsonObject, String> {
    match to_canonical_value(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err("not a JSON object".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn as_str(value: &CanonicalJsonValue) -> Option<&str> {
    match value {
        CanonicalJsonValue::String(s) => Some(s),
        _ => None,
    }
}

/// The entries of an object-valued field whose values are objects.
fn object_field<'a>(object: &'a CanonicalJsonObject, field: &str) -> Vec<(&'a String, &'a CanonicalJsonObject)> {
    match object.get(field) {
        Some(CanonicalJsonValue::Object(entries)) => entries
            .iter()
            .filter_map(|(id, entry)| match entry {
                CanonicalJsonValue::Object(entry) => Some((id, entry)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `(key id, signature)` pairs of `entity` in `object.signatures`.
fn signatures_of(object: &CanonicalJsonObject, entity: &str) -> Vec<(String, String)> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => match all.get(entity) {
            Some(CanonicalJsonValue::Object(signatures)) => {
                signatures.iter().filter_map(|(id, sig)| as_str(sig).map(|sig| (id.clone(), sig.to_owned()))).collect()
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn invalid(server: &str, reason: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid { server: server.to_owned(), reason: reason.to_string() }
}
