//! End-to-end encryption keys of this server's users: device keys (upload,
//! query, claim), cross-signing keys and the signatures users make over
//! keys. Each change is published on `clientapi.keychange`, from which the
//! sync API reports key counts and device list changes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::api::RemoteKeysRequest;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::MatrixJson;
use crate::keys;
use crate::producers;
use crate::service::AppState;
use crate::storage::keys::{self as store, NewKey, Signature, Stored};
use crate::uia::{self, AuthData};

/// Cross-signing keys: the request field and the stored (and `usage`) name.
const CROSS_SIGNING: [(&str, &str); 3] =
    [("master_key", "master"), ("self_signing_key", "self_signing"), ("user_signing_key", "user_signing")];

#[derive(Deserialize)]
pub struct UploadBody {
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: Map<String, Value>,
    #[serde(default)]
    fallback_keys: Map<String, Value>,
}

/// `algorithm:key_id` names of one-time and fallback keys, split.
fn parse_keys(keys: &Map<String, Value>) -> Result<Vec<NewKey<'_>>, MatrixError> {
    keys.iter()
        .map(|(name, json)| {
            let (algorithm, key_id) = name
                .split_once(':')
                .filter(|(algorithm, key_id)| !algorithm.is_empty() && !key_id.is_empty())
                .ok_or_else(|| MatrixError::invalid_param(format!("Key name {name:?} is not algorithm:key_id")))?;
            Ok(NewKey { algorithm, key_id, json })
        })
        .collect()
}

/// Device keys must be the caller's own device's, with the fields clients rely on.
fn check_device_keys(keys: &Value, user: &AuthedUser) -> Result<(), MatrixError> {
    if keys["user_id"] != user.user_id.as_str() || keys["device_id"] != user.device_id.as_str() {
        return Err(MatrixError::invalid_param("device_keys must be for the device making the request"));
    }
    if !keys["algorithms"].is_array() || !keys["keys"].is_object() || !keys["signatures"].is_object() {
        return Err(MatrixError::bad_json("device_keys needs algorithms, keys and signatures"));
    }
    Ok(())
}

/// `POST /_matrix/client/v3/keys/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysupload>
pub async fn upload(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixJson(body): MatrixJson<UploadBody>,
) -> Result<Json<Value>> {
    user.require_device()?;
    if let Some(device_keys) = &body.device_keys {
        check_device_keys(device_keys, &user)?;
    }
    let one_time_keys = parse_keys(&body.one_time_keys)?;
    let fallback_keys = parse_keys(&body.fallback_keys)?;
    let stored = store::upload(
        &state.db,
        user.user_id.as_str(),
        &user.device_id,
        body.device_keys.as_ref(),
        &one_time_keys,
        &fallback_keys,
    )
    .await?;
    if let Stored::ConflictingOneTimeKey(name) = stored {
        return Err(MatrixError::invalid_param(format!("One-time key {name} already exists with other content")).into());
    }
    let change =
        keys::publish(&state.db, &state.bus, &user.user_id, &user.device_id, body.device_keys.is_some()).await?;
    Ok(Json(json!({ "one_time_key_counts": change.one_time_key_counts })))
}

/// How long `/keys/query` and `/keys/claim` wait for other servers when
/// the client does not say.
const DEFAULT_REMOTE_TIMEOUT_MS: u64 = 10_000;
/// The longest a client may make them wait.
const MAX_REMOTE_TIMEOUT_MS: u64 = 60_000;

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
    timeout: Option<u64>,
}

fn parse_user(user_id: &str) -> Result<OwnedUserId, MatrixError> {
    OwnedUserId::try_from(user_id).map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))
}

/// The request's map with its user ids checked.
fn parse_users<T: Clone>(users: &BTreeMap<String, T>) -> Result<BTreeMap<OwnedUserId, T>, MatrixError> {
    users.iter().map(|(user_id, wanted)| Ok((parse_user(user_id)?, wanted.clone()))).collect()
}

fn remote_timeout(timeout: Option<u64>) -> Duration {
    Duration::from_millis(timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT_MS).min(MAX_REMOTE_TIMEOUT_MS))
}

/// One server's users as asked, and its answer or why there is none.
type Asked<T> = (String, BTreeMap<OwnedUserId, T>, std::result::Result<Value, String>);

/// Ask every server in `servers` at once (`ask` builds each request from
/// the server name and the users asked) and collect the answers.
async fn ask_servers<T>(
    state: &AppState,
    servers: BTreeMap<String, BTreeMap<OwnedUserId, T>>,
    timeout: Duration,
    ask: impl Fn(String, Value, u64) -> RemoteKeysRequest,
) -> Result<Vec<Asked<T>>>
where
    T: Serialize + Send + 'static,
{
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let mut asks = tokio::task::JoinSet::new();
    for (server_name, users) in servers {
        let body = serde_json::to_value(&users).expect("user maps serialize");
        let request = ask(server_name.clone(), body, timeout_ms);
        let bus = state.bus.clone();
        asks.spawn(async move {
            let answer = producers::federation::remote_keys(&bus, &request, &server_name, timeout).await;
            (server_name, users, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = asks.join_next().await {
        answers.push(joined?);
    }
    Ok(answers)
}

/// How a server that did not answer shows in `failures`.
fn failure(why: &str) -> Value {
    json!({ "status": 503, "message": why })
}

/// `POST /_matrix/client/v3/keys/query`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysquery>
///
/// An empty device list asks for every device of the user. Other servers'
/// users are asked of their servers, all at once, within `timeout`;
/// nothing they answer is cached, since nothing here would know when it
/// goes stale.
pub async fn query(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixJson(body): MatrixJson<QueryBody>,
) -> Result<Json<Value>> {
    let users = parse_users(&body.device_keys)?;
    let ours = state.server_name().to_owned();
    let local = keys::local_only(&users, &ours);
    let mut answer = keys::query_local(&state.db, &local, Some(&*user.user_id)).await?;
    let mut failures = Map::new();
    let servers = keys::by_remote_server(&users, &ours);
    let asked = ask_servers(&state, servers, remote_timeout(body.timeout), |server_name, body, timeout_ms| {
        RemoteKeysRequest::Query { server_name, body: json!({ "device_keys": body }), timeout_ms }
    })
    .await?;
    for (server_name, users, reply) in asked {
        match reply {
            Ok(remote) => {
                for (field, values) in keys::checked_query_answer(&users, &remote) {
                    if let (Some(Value::Object(into)), Value::Object(values)) = (answer.get_mut(&field), values) {
                        into.extend(values);
                    }
                }
            }
            Err(why) => {
                failures.insert(server_name, failure(&why));
            }
        }
    }
    answer.insert("failures".to_owned(), Value::Object(failures));
    Ok(Json(Value::Object(answer)))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    timeout: Option<u64>,
}

/// `POST /_matrix/client/v3/keys/claim`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysclaim>
///
/// Other servers' users' keys are claimed from their servers, all at once,
/// within `timeout`.
pub async fn claim(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixJson(body): MatrixJson<ClaimBody>,
) -> Result<Json<Value>> {
    let users = parse_users(&body.one_time_keys)?;
    let ours = state.server_name().to_owned();
    let local = keys::local_only(&users, &ours);
    let mut claimed = keys::claim_local(&state.db, &state.bus, &local).await?;
    let mut failures = Map::new();
    let servers = keys::by_remote_server(&users, &ours);
    let asked = ask_servers(&state, servers, remote_timeout(body.timeout), |server_name, body, timeout_ms| {
        RemoteKeysRequest::Claim { server_name, body: json!({ "one_time_keys": body }), timeout_ms }
    })
    .await?;
    for (server_name, users, reply) in asked {
        match reply {
            Ok(remote) => claimed.extend(keys::checked_claim_answer(&users, &remote)),
            Err(why) => {
                failures.insert(server_name, failure(&why));
            }
        }
    }
    Ok(Json(json!({ "one_time_keys": claimed, "failures": failures })))
}

/// A cross-signing key must be the caller's, for `usage`, with one ed25519 key.
fn check_cross_signing_key(key: &Value, user: &AuthedUser, usage: &str) -> Result<(), MatrixError> {
    let invalid = |why: &str| MatrixError::invalid_param(format!("Invalid {usage} key: {why}"));
    if key["user_id"] != user.user_id.as_str() {
        return Err(invalid("user_id must be the uploader"));
    }
    if !key["usage"].as_array().is_some_and(|usages| usages.iter().any(|u| u == usage)) {
        return Err(invalid("usage must include it"));
    }
    match key["keys"].as_object() {
        Some(keys) if keys.len() == 1 && keys.iter().all(|(id, k)| id.starts_with("ed25519:") && k.is_string()) => {
            Ok(())
        }
        _ => Err(invalid("keys must hold exactly one ed25519 key")),
    }
}

#[derive(Deserialize)]
pub struct DeviceSigningBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<AuthData>,
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysdevice_signingupload>
///
/// The first upload needs no password (as clients set up cross-signing
/// right after registering); replacing keys the user already has does.
/// Signatures inside the keys are stored as uploaded, not verified.
pub async fn upload_cross_signing(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<DeviceSigningBody>,
) -> Result<Response> {
    let given = [&body.master_key, &body.self_signing_key, &body.user_signing_key];
    let mut uploads = Vec::new();
    for (key, (_, key_type)) in given.into_iter().zip(CROSS_SIGNING) {
        if let Some(key) = key {
            check_cross_signing_key(key, &user, key_type)?;
            uploads.push((key_type, key));
        }
    }
    let mut replaces = false;
    for (key_type, key) in &uploads {
        let stored = store::cross_signing_key(&state.db, user.user_id.as_str(), key_type).await?;
        replaces |= stored.is_some_and(|stored| stored != **key);
    }
    if replaces && let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    store::put_cross_signing_keys(&state.db, user.user_id.as_str(), &uploads).await?;
    keys::publish_user_change(&state.bus, &user.user_id).await?;
    Ok(Json(json!({})).into_response())
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keyssignaturesupload>
///
/// Each entry is a key (a device's, by device id, or a cross-signing key,
/// by its public key) carrying the caller's signatures; those are stored
/// and appear in `/keys/query`. An entry without them is reported in
/// `failures`. Signatures are stored as uploaded, not verified.
pub async fn upload_signatures(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let mut signatures: Vec<Signature> = Vec::new();
    let mut failures = Map::new();
    let mut targets = Vec::new();
    for (target_user, signed_keys) in &body {
        let target = parse_user(target_user)?;
        let signed_keys =
            signed_keys.as_object().ok_or_else(|| MatrixError::bad_json(format!("{target_user} must map keys")))?;
        for (target_key, signed) in signed_keys {
            let mine = signed["signatures"][user.user_id.as_str()].as_object().filter(|s| !s.is_empty());
            let Some(mine) = mine else {
                let failure = json!({ "errcode": "M_INVALID_SIGNATURE", "error": "No signature by the uploader" });
                failures.entry(target_user.clone()).or_insert_with(|| json!({}))[target_key] = failure;
                continue;
            };
            for (key_id, signature) in mine {
                let signature =
                    signature.as_str().ok_or_else(|| MatrixError::bad_json("signatures must be strings"))?;
                signatures.push((
                    target_user.clone(),
                    target_key.clone(),
                    user.user_id.to_string(),
                    key_id.clone(),
                    signature.to_owned(),
                ));
            }
            targets.push(target.clone());
        }
    }
    store::put_signatures(&state.db, &signatures).await?;
    targets.dedup();
    for target in targets.iter().filter(|t| t.server_name() == state.server_name()) {
        keys::publish_user_change(&state.bus, target).await?;
    }
    Ok(Json(json!({ "failures": failures })))
}
