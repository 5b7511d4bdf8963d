//! End-to-end keys as both `/keys/query` and `/keys/claim` and the
//! federation API's `/user/keys/*` answer them for local users, the key
//! change records, and the checks on what another server answers about
//! its users.

use std::collections::BTreeMap;

use myelin_bus::Bus;
use myelin_storage::Db;
use myelin_types::ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::api::{KeyChange, LocalDevices};
use crate::error::Result;
use crate::producers;
use crate::storage::{devices, keys};

/// Cross-signing keys: the answer's field and the stored (and `usage`) name.
pub const CROSS_SIGNING: [(&str, &str); 3] =
    [("master_keys", "master"), ("self_signing_keys", "self_signing"), ("user_signing_keys", "user_signing")];

/// Publish the device's key state after a change (`device_keys_changed`:
/// those who share a room with the user must fetch its keys again).
pub async fn publish(
    db: &Db,
    bus: &Bus,
    user_id: &OwnedUserId,
    device_id: &str,
    device_keys_changed: bool,
) -> Result<KeyChange> {
    let change = KeyChange {
        user_id: user_id.clone(),
        device_id: device_id.to_owned(),
        one_time_key_counts: keys::one_time_key_counts(db, user_id.as_str(), device_id).await?,
        unused_fallback_key_types: keys::unused_fallback_key_types(db, user_id.as_str(), device_id).await?,
        device_keys_changed,
    };
    producers::edu::key_change(bus, &change).await?;
    Ok(change)
}

/// Tell those who share a room with `user_id` that the user's keys changed
/// (a cross-signing key, or a signature over one of their keys).
pub async fn publish_user_change(bus: &Bus, user_id: &OwnedUserId) -> Result<()> {
    let change = KeyChange {
        user_id: user_id.clone(),
        device_id: String::new(),
        one_time_key_counts: BTreeMap::new(),
        unused_fallback_key_types: Vec::new(),
        device_keys_changed: true,
    };
    producers::edu::key_change(bus, &change).await?;
    Ok(())
}

/// The public key of a cross-signing key (its one `keys` entry), which
/// names it in signature uploads.
pub fn public_key_of(key: &Value) -> Option<String> {
    key["keys"].as_object()?.values().next()?.as_str().map(str::to_owned)
}

/// A device's keys as `/keys/query` shows them: with its display name and
/// the signatures others uploaded over them.
async fn device_keys_of(db: &Db, user_id: &str, devices: &[String]) -> Result<Map<String, Value>> {
    let mut by_device = Map::new();
    for (device_id, mut device_keys, display_name) in keys::device_keys(db, user_id, devices).await? {
        if let Some(name) = display_name {
            device_keys["unsigned"]["device_display_name"] = Value::String(name);
        }
        keys::merge_signatures(db, user_id, &device_id, &mut device_keys).await?;
        by_device.insert(device_id, device_keys);
    }
    Ok(by_device)
}

/// A cross-signing key of the user with the signatures uploaded over it.
async fn cross_signing_key(db: &Db, user_id: &str, key_type: &str) -> Result<Option<Value>> {
    let Some(mut key) = keys::cross_signing_key(db, user_id, key_type).await? else { return Ok(None) };
    if let Some(public) = public_key_of(&key) {
        keys::merge_signatures(db, user_id, &public, &mut key).await?;
    }
    Ok(Some(key))
}

/// The `/keys/query` answer for local users (without `failures`). A user's
/// user-signing key is theirs alone to see: it is included only for
/// `requester` (never over federation, where there is none).
pub async fn query_local(
    db: &Db,
    users: &BTreeMap<OwnedUserId, Vec<String>>,
    requester: Option<&UserId>,
) -> Result<Map<String, Value>> {
    let mut device_keys = Map::new();
    let mut cross_signing: [Map<String, Value>; 3] = Default::default();
    for (user_id, devices) in users {
        device_keys.insert(user_id.to_string(), Value::Object(device_keys_of(db, user_id.as_str(), devices).await?));
        for (slot, (_, key_type)) in cross_signing.iter_mut().zip(CROSS_SIGNING) {
            if key_type == "user_signing" && requester != Some(&**user_id) {
                continue;
            }
            if let Some(key) = cross_signing_key(db, user_id.as_str(), key_type).await? {
                slot.insert(user_id.to_string(), key);
            }
        }
    }
    let mut answer = Map::new();
    answer.insert("device_keys".to_owned(), Value::Object(device_keys));
    for (slot, (field, key_type)) in cross_signing.into_iter().zip(CROSS_SIGNING) {
        if key_type != "user_signing" || requester.is_some() {
            answer.insert(field.to_owned(), Value::Object(slot));
        }
    }
    Ok(answer)
}

/// Claim one key per device for local users: `{user: {device: {"alg:id": key}}}`.
/// Each claim publishes the device's new counts.
pub async fn claim_local(
    db: &Db,
    bus: &Bus,
    users: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
) -> Result<Map<String, Value>> {
    let mut claimed = Map::new();
    for (user_id, devices) in users {
        let mut by_device = Map::new();
        for (device_id, algorithm) in devices {
            if let Some((name, key)) = keys::claim(db, user_id.as_str(), device_id, algorithm).await? {
                by_device.insert(device_id.clone(), json!({ name: key }));
                publish(db, bus, user_id, device_id, false).await?;
            }
        }
        if !by_device.is_empty() {
            claimed.insert(user_id.to_string(), Value::Object(by_device));
        }
    }
    Ok(claimed)
}

/// Every device of a local user (with its keys, when it uploaded some) and
/// the user's master and self-signing keys, for `/user/devices`.
pub async fn local_devices(db: &Db, user_id: &UserId) -> Result<LocalDevices> {
    let mut with_keys = device_keys_of(db, user_id.as_str(), &[]).await?;
    let mut devices = Vec::new();
    for device in devices::list(db, user_id.as_str()).await? {
        let mut entry = json!({ "device_id": device.device_id });
        if let Some(keys) = with_keys.remove(&device.device_id) {
            entry["keys"] = keys;
        }
        if let Some(name) = device.display_name {
            entry["device_display_name"] = Value::String(name);
        }
        devices.push(entry);
    }
    Ok(LocalDevices {
        devices,
        master_key: cross_signing_key(db, user_id.as_str(), "master").await?,
        self_signing_key: cross_signing_key(db, user_id.as_str(), "self_signing").await?,
    })
}

/// What another server answered to `/user/keys/query`, keeping only device
/// keys of the users and devices asked (an empty list: any device) whose
/// own `user_id` and `device_id` are the ones they are filed under, and
/// cross-signing keys of the users asked that name their user. A server
/// cannot make our users trust keys for someone else's device this way.
pub fn checked_query_answer(asked: &BTreeMap<OwnedUserId, Vec<String>>, answer: &Value) -> Map<String, Value> {
    let mut kept = Map::new();
    let mut device_keys = Map::new();
    for (user_id, devices) in answer["device_keys"].as_object().into_iter().flatten() {
        let Some(wanted) = asked.iter().find(|(asked, _)| asked.as_str() == user_id).map(|(_, d)| d) else {
            continue;
        };
        let mut by_device = Map::new();
        for (device_id, keys) in devices.as_object().into_iter().flatten() {
            let wanted_device = wanted.is_empty() || wanted.contains(device_id);
            if wanted_device && keys["user_id"] == user_id.as_str() && keys["device_id"] == device_id.as_str() {
                by_device.insert(device_id.clone(), keys.clone());
            } else {
                tracing::info!(%user_id, %device_id, "dropping device keys another server filed wrongly");
            }
        }
        device_keys.insert(user_id.clone(), Value::Object(by_device));
    }
    kept.insert("device_keys".to_owned(), Value::Object(device_keys));
    for (field, _) in CROSS_SIGNING.iter().filter(|(_, key_type)| *key_type != "user_signing") {
        let mut by_user = Map::new();
        for (user_id, key) in answer[*field].as_object().into_iter().flatten() {
            if asked.keys().any(|asked| asked.as_str() == user_id) && key["user_id"] == user_id.as_str() {
                by_user.insert(user_id.clone(), key.clone());
            }
        }
        kept.insert((*field).to_owned(), Value::Object(by_user));
    }
    kept
}

/// What another server answered to `/user/keys/claim`, keeping only keys
/// for the users and devices asked, one key object per device.
pub fn checked_claim_answer(
    asked: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    answer: &Value,
) -> Map<String, Value> {
    let mut kept = Map::new();
    for (user_id, devices) in answer["one_time_keys"].as_object().into_iter().flatten() {
        let Some(wanted) = asked.iter().find(|(asked, _)| asked.as_str() == user_id).map(|(_, d)| d) else {
            continue;
        };
        let by_device: Map<String, Value> = devices
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(device_id, keys)| {
                wanted.contains_key(*device_id) && keys.as_object().is_some_and(|keys| keys.len() == 1)
            })
            .map(|(device_id, keys)| (device_id.clone(), keys.clone()))
            .collect();
        if !by_device.is_empty() {
            kept.insert(user_id.clone(), Value::Object(by_device));
        }
    }
    kept
}

/// The servers of the users in `users` other than `ours`, each with its users.
pub fn by_remote_server<T: Clone>(
    users: &BTreeMap<OwnedUserId, T>,
    ours: &str,
) -> BTreeMap<String, BTreeMap<OwnedUserId, T>> {
    let mut servers: BTreeMap<String, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
    for (user_id, wanted) in users.iter().filter(|(user_id, _)| user_id.server_name().as_str() != ours) {
        servers.entry(user_id.server_name().to_string()).or_default().insert(user_id.clone(), wanted.clone());
    }
    servers
}

/// The local users of `users`.
pub fn local_only<T: Clone>(users: &BTreeMap<OwnedUserId, T>, ours: &str) -> BTreeMap<OwnedUserId, T> {
    users
        .iter()
        .filter(|(user_id, _)| user_id.server_name().as_str() == ours)
        .map(|(u, t)| (u.clone(), t.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> OwnedUserId {
        OwnedUserId::try_from(id).unwrap()
    }

    #[test]
    fn a_query_answer_keeps_only_keys_filed_under_their_own_user_and_device() {
        let asked = BTreeMap::from([(user("@a:b.example"), vec![]), (user("@c:b.example"), vec!["ONE".to_owned()])]);
        let answer = json!({
            "device_keys": {
                "@a:b.example": {
                    "GOOD": {"user_id": "@a:b.example", "device_id": "GOOD"},
                    "WRONGDEV": {"user_id": "@a:b.example", "device_id": "OTHER"},
                    "WRONGUSER": {"user_id": "@c:b.example", "device_id": "WRONGUSER"},
                },
                "@c:b.example": {
                    "ONE": {"user_id": "@c:b.example", "device_id": "ONE"},
                    "TWO": {"user_id": "@c:b.example", "device_id": "TWO"},
                },
                "@unasked:b.example": {"X": {"user_id": "@unasked:b.example", "device_id": "X"}},
            },
            "master_keys": {
                "@a:b.example": {"user_id": "@a:b.example", "usage": ["master"]},
                "@c:b.example": {"user_id": "@a:b.example", "usage": ["master"]},
            },
            "self_signing_keys": {"@unasked:b.example": {"user_id": "@unasked:b.example"}},
            "user_signing_keys": {"@a:b.example": {"user_id": "@a:b.example"}},
        });
        let kept = checked_query_answer(&asked, &answer);
        assert_eq!(
            Value::Object(kept),
            json!({
                "device_keys": {
                    "@a:b.example": {"GOOD": {"user_id": "@a:b.example", "device_id": "GOOD"}},
                    "@c:b.example": {"ONE": {"user_id": "@c:b.example", "device_id": "ONE"}},
                },
                "master_keys": {"@a:b.example": {"user_id": "@a:b.example", "usage": ["master"]}},
                "self_signing_keys": {},
            })
        );
    }

    #[test]
    fn a_claim_answer_keeps_only_one_key_for_each_device_asked() {
        let asked = BTreeMap::from([(
            user("@a:b.example"),
            BTreeMap::from([("D1".to_owned(), "signed_curve25519".to_owned()), ("D2".to_owned(), "x".to_owned())]),
        )]);
        let answer = json!({"one_time_keys": {
            "@a:b.example": {"D1": {"signed_curve25519:k": {"key": "k"}}, "D2": {"x:1": 1, "x:2": 2}, "D3": {"x:3": 3}},
            "@z:b.example": {"D1": {"signed_curve25519:k": {"key": "k"}}},
        }});
        assert_eq!(
            Value::Object(checked_claim_answer(&asked, &answer)),
            json!({"@a:b.example": {"D1": {"signed_curve25519:k": {"key": "k"}}}})
        );
    }
}
