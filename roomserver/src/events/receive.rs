//! The checks on receipt of a PDU that need no room state: format for the
//! room version, canonical JSON, sizes, room id, event id, signatures (with
//! key validity from room version 5 on) and the content hash. They run
//! before the room's transaction, because verifying signatures asks the
//! federation API for keys over the bus.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu>

use std::collections::{BTreeMap, HashMap, HashSet};

use myelin_bus::Bus;
use myelin_types::MatrixError;
use ruma::canonical_json::redact;
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, Verified, reference_hash, verify_event};
use ruma::state_res::check_pdu_format;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId, ServerName};
use serde_json::Value;

use super::Signer;
use super::build::{MAX_KEY_BYTES, MAX_PDU_BYTES};
use super::pdu::Pdu;
use crate::api::{FEDERATION_QUERY_TOPIC, FederationQuery, FederationQueryOk, FederationQueryReply, VerifyKey};

/// How long to wait for the federation API's answer about keys or events.
pub const FEDERATION_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A PDU that passed the state-free checks, redacted if its content hash
/// did not match.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: OwnedEventId,
    /// Canonical JSON of the PDU as stored.
    pub json: String,
    pub pdu: Pdu,
    pub depth: i64,
}

/// Why a PDU was dropped before any auth check. Such PDUs are not
/// remembered: a forged signature says nothing about the real event with
/// the same id.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Dropped {
    pub event_id: Option<OwnedEventId>,
    pub reason: String,
}

impl Dropped {
    fn new(event_id: Option<&OwnedEventId>, reason: impl Into<String>) -> Self {
        Self { event_id: event_id.cloned(), reason: reason.into() }
    }
}

/// A PDU in canonical form with its id, before signatures are checked.
pub struct Parsed {
    pub event_id: OwnedEventId,
    object: CanonicalJsonObject,
}

/// A PDU as canonical JSON within the size limits: an object without
/// floats or integers outside ±(2^53−1), at most [`MAX_PDU_BYTES`], with
/// `type` and `state_key` of at most [`MAX_KEY_BYTES`].
pub fn canonical(value: Value) -> Result<CanonicalJsonObject, Dropped> {
    let object = match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        Ok(_) => return Err(Dropped::new(None, "PDU is not a JSON object")),
        Err(error) => return Err(Dropped::new(None, format!("PDU is not canonical JSON: {error}"))),
    };
    let size = serde_json::to_string(&object).map_err(|e| Dropped::new(None, e.to_string()))?.len();
    if size > MAX_PDU_BYTES {
        return Err(Dropped::new(None, format!("PDU is larger than {MAX_PDU_BYTES} bytes")));
    }
    for field in ["type", "state_key"] {
        if let Some(CanonicalJsonValue::String(value)) = object.get(field)
            && value.len() > MAX_KEY_BYTES
        {
            return Err(Dropped::new(None, format!("{field} is longer than {MAX_KEY_BYTES} bytes")));
        }
    }
    Ok(object)
}

/// Format, canonical JSON, sizes, room id and event id.
pub fn parse(value: Value, room_id: &RoomId, rules: &RoomVersionRules) -> Result<Parsed, Dropped> {
    let object = canonical(value)?;
    check_pdu_format(&object, &rules.event_format).map_err(|reason| Dropped::new(None, reason))?;
    let event_id = if rules.event_format.require_event_id {
        // Room versions 1 and 2 carry their id; its server signs it too.
        let Some(CanonicalJsonValue::String(id)) = object.get("event_id") else {
            return Err(Dropped::new(None, "PDU has no event_id"));
        };
        EventId::parse(id).map_err(|e| Dropped::new(None, format!("invalid event_id: {e}")))?
    } else {
        let hash = reference_hash(&object, rules).map_err(|e| Dropped::new(None, format!("reference hash: {e}")))?;
        EventId::parse(format!("${hash}")).map_err(|e| Dropped::new(None, e.to_string()))?
    };
    let is_create = matches!(object.get("type"), Some(CanonicalJsonValue::String(t)) if t == "m.room.create");
    match object.get("room_id") {
        Some(CanonicalJsonValue::String(id)) if id == room_id.as_str() => {}
        // A v12 create event has no room id: the room id is its own reference hash.
        None if is_create && !rules.event_format.require_room_create_room_id => {
            if room_id.as_str().get(1..) != event_id.as_str().get(1..) {
                return Err(Dropped::new(Some(&event_id), "create event does not match the room id"));
            }
        }
        _ => return Err(Dropped::new(Some(&event_id), format!("PDU is not in room {room_id}"))),
    }
    Ok(Parsed { event_id, object })
}

impl Parsed {
    /// The servers whose signatures the room version requires, with the key
    /// ids each signed with.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#validating-hashes-and-signatures-on-received-events>
    pub fn signers(&self, rules: &RoomVersionRules) -> Vec<(OwnedServerName, Vec<String>)> {
        let mut servers: Vec<OwnedServerName> = Vec::new();
        let server_of_user = |value: Option<&CanonicalJsonValue>| match value {
            Some(CanonicalJsonValue::String(user)) => {
                ruma::UserId::parse(user).ok().map(|user| user.server_name().to_owned())
            }
            _ => None,
        };
        servers.extend(server_of_user(self.object.get("sender")));
        if rules.signatures.check_event_id_server
            && let Some(server) = self.event_id.server_name()
        {
            servers.push(server.to_owned());
        }
        if rules.signatures.check_join_authorised_via_users_server
            && let Some(CanonicalJsonValue::Object(content)) = self.object.get("content")
            && matches!(content.get("membership"), Some(CanonicalJsonValue::String(m)) if m == "join")
        {
            servers.extend(server_of_user(content.get("join_authorised_via_users_server")));
        }
        servers.sort();
        servers.dedup();
        let signatures = match self.object.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => Some(signatures),
            _ => None,
        };
        servers
            .into_iter()
            .map(|server| {
                let key_ids = match signatures.and_then(|s| s.get(server.as_str())) {
                    Some(CanonicalJsonValue::Object(keys)) => keys.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                (server, key_ids)
            })
            .collect()
    }

    fn origin_server_ts(&self) -> u64 {
        match self.object.get("origin_server_ts") {
            Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
            _ => 0,
        }
    }

    /// Check the signatures with `keys` and the content hash; a PDU whose
    /// hash does not match is redacted and kept.
    pub fn verify(self, keys: &KeyRing, rules: &RoomVersionRules) -> Result<Received, Dropped> {
        let ts = self.origin_server_ts();
        let mut map = PublicKeyMap::new();
        for (server, _) in self.signers(rules) {
            let usable: BTreeMap<String, Base64> = keys
                .known(&server)
                .iter()
                .filter(|key| !rules.enforce_key_validity || valid_at(key, ts))
                .filter_map(|key| Some((key.key_id.clone(), Base64::parse(&key.public_key).ok()?)))
                .collect();
            map.insert(server.to_string(), usable);
        }
        let verified = verify_event(&map, &self.object, rules)
            .map_err(|e| Dropped::new(Some(&self.event_id), format!("signature check failed: {e}")))?;
        let object = match verified {
            Verified::All => self.object,
            Verified::Signatures => redact(self.object, &rules.redaction, None)
                .map_err(|e| Dropped::new(Some(&self.event_id), format!("redaction failed: {e}")))?,
        };
        let json = serde_json::to_string(&object).map_err(|e| Dropped::new(Some(&self.event_id), e.to_string()))?;
        let pdu = Pdu::parse(self.event_id.clone(), &json)
            .map_err(|e| Dropped::new(Some(&self.event_id), format!("malformed PDU: {e}")))?;
        let depth = match object.get("depth") {
            Some(CanonicalJsonValue::Integer(depth)) => i64::from(*depth),
            _ => 0,
        };
        Ok(Received { event_id: self.event_id, json, pdu, depth })
    }
}

/// Whether `key` may verify a signature made at `ts` (room version 5 on).
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v5/#signing-key-validity-period>
fn valid_at(key: &VerifyKey, ts: u64) -> bool {
    match (key.valid_until_ts, key.expired_ts) {
        (_, Some(expired)) => ts < expired,
        (Some(until), None) => ts <= until,
        (None, None) => false,
    }
}

/// Verify keys asked of the federation API, kept for one request.
pub struct KeyRing {
    keys: HashMap<OwnedServerName, Vec<VerifyKey>>,
    /// Servers whose keys could not be had: not asked again in this request.
    unavailable: HashSet<OwnedServerName>,
}

impl KeyRing {
    /// A ring that already knows this server's own key.
    pub fn new(signer: &Signer) -> Self {
        let own = VerifyKey {
            key_id: signer.key.key_id(),
            public_key: signer.key.public_key_base64(),
            // Our own current key signs whatever we build.
            valid_until_ts: Some(u64::MAX),
            expired_ts: None,
        };
        Self { keys: HashMap::from([(signer.server_name.clone(), vec![own])]), unavailable: HashSet::new() }
    }

    fn known(&self, server: &ServerName) -> &[VerifyKey] {
        self.keys.get(server).map_or(&[], Vec::as_slice)
    }

    /// Ask for the keys of `server` that are not known yet. A failed
    /// question leaves them unknown: the PDUs they sign are dropped, not the
    /// batch.
    pub async fn fetch(&mut self, bus: &Bus, server: &ServerName, key_ids: &[String]) {
        let known = self.known(server);
        let missing: Vec<String> =
            key_ids.iter().filter(|id| !known.iter().any(|key| &key.key_id == *id)).cloned().collect();
        if missing.is_empty() || self.unavailable.contains(server) {
            return;
        }
        let query = FederationQuery::ServerKeys { server_name: server.to_owned(), key_ids: missing };
        let reply: Result<FederationQueryReply, _> =
            bus.request_json(FEDERATION_QUERY_TOPIC, server.as_str(), &query, FEDERATION_QUERY_TIMEOUT).await;
        let entry = self.keys.entry(server.to_owned()).or_default();
        match reply {
            Ok(Ok(FederationQueryOk::ServerKeys { keys })) => {
                for key in keys {
                    entry.retain(|known| known.key_id != key.key_id);
                    entry.push(key);
                }
            }
            Ok(Ok(other)) => {
                tracing::warn!(%server, ?other, "unexpected answer to a key query");
                self.unavailable.insert(server.to_owned());
            }
            Ok(Err(MatrixError { errcode, error, .. })) => {
                tracing::info!(%server, ?errcode, %error, "keys unavailable");
                self.unavailable.insert(server.to_owned());
            }
            Err(error) => {
                tracing::warn!(%server, %error, "key query failed");
                self.unavailable.insert(server.to_owned());
            }
        }
    }
}

/// Ask the federation API for events; `None` when it could not get them.
pub async fn fetch_pdus(bus: &Bus, key: &str, query: &FederationQuery) -> Option<Vec<Value>> {
    let reply: Result<FederationQueryReply, _> =
        bus.request_json(FEDERATION_QUERY_TOPIC, key, query, FEDERATION_QUERY_TIMEOUT).await;
    match reply {
        Ok(Ok(FederationQueryOk::Pdus { pdus })) => Some(pdus),
        Ok(other) => {
            tracing::info!(?other, "events unavailable");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "event query failed");
            None
        }
    }
}
