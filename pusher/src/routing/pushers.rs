//! Pushers: <https://spec.matrix.org/v1.16/client-server-api/#push-notifications>.
//! `http` pushers receive notifications (`delivery/`); `email` pushers are
//! stored and listed only.

use axum::Json;
use axum::extract::State;
use myelin_types::{ErrorCode, MatrixError};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::AppState;
use super::extract::{Authed, MatrixJson};
use crate::PusherError;
use crate::storage::PusherRow;

/// Limits from the spec's description of `/pushers/set`.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
/// The only path a push gateway serves notifications on.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// GET /_matrix/client/v3/pushers
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushers>
pub async fn get_pushers(State(state): State<AppState>, Authed(caller): Authed) -> Result<Json<Value>, PusherError> {
    let pushers = state.storage.pushers(caller.identity.user_id.as_str()).await?;
    let pushers: Vec<Value> = pushers
        .into_iter()
        .map(|p| {
            let mut pusher = json!({
                "app_id": p.app_id, "pushkey": p.pushkey, "kind": p.kind, "app_display_name": p.app_display_name,
                "device_display_name": p.device_display_name, "lang": p.lang, "data": p.data,
            });
            if let Some(tag) = p.profile_tag {
                pusher["profile_tag"] = Value::String(tag);
            }
            pusher
        })
        .collect();
    Ok(Json(json!({ "pushers": pushers })))
}

/// `kind` must be present, but may be `null` (delete).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::deserialize(deserializer)
}

#[derive(Deserialize)]
pub struct SetPusher {
    #[serde(deserialize_with = "present")]
    kind: Option<String>,
    app_id: String,
    pushkey: String,
    app_display_name: Option<String>,
    device_display_name: Option<String>,
    profile_tag: Option<String>,
    lang: Option<String>,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    append: bool,
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, PusherError> {
    value.ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, format!("{name} is required")).into())
}

/// `data` of an `http` pusher: a `url` at a push gateway's notify path, and
/// `format` (if any) one the spec defines.
fn check_http_data(data: &Map<String, Value>) -> Result<(), PusherError> {
    let url = data
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| MatrixError::invalid_param("An http pusher needs data.url"))?;
    let parsed = url::Url::parse(url).map_err(|_| MatrixError::invalid_param("data.url is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.path() != NOTIFY_PATH {
        return Err(
            MatrixError::invalid_param(format!("data.url must be an http(s) URL with path {NOTIFY_PATH}")).into()
        );
    }
    match data.get("format") {
        None => Ok(()),
        Some(format) if format == "event_id_only" => Ok(()),
        Some(_) => Err(MatrixError::invalid_param("data.format must be \"event_id_only\" if present").into()),
    }
}

/// POST /_matrix/client/v3/pushers/set
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3pushersset>
pub async fn set_pusher(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixJson(body): MatrixJson<SetPusher>,
) -> Result<Json<Value>, PusherError> {
    if body.app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(MatrixError::invalid_param(format!("app_id is longer than {MAX_APP_ID_CHARS} characters")).into());
    }
    if body.pushkey.len() > MAX_PUSHKEY_BYTES {
        return Err(MatrixError::invalid_param(format!("pushkey is longer than {MAX_PUSHKEY_BYTES} bytes")).into());
    }
    let user_id = caller.identity.user_id.as_str();
    let Some(kind) = body.kind else {
        state.storage.delete_pusher(user_id, &body.app_id, &body.pushkey).await?;
        return Ok(Json(json!({})));
    };
    let data = required(body.data, "data")?;
    match kind.as_str() {
        "http" => check_http_data(&data)?,
        // Stored so clients see it listed; emails are not sent yet either.
        "email" => {}
        other => return Err(MatrixError::invalid_param(format!("Unknown pusher kind {other:?}")).into()),
    }
    let pusher = PusherRow {
        app_id: body.app_id,
        pushkey: body.pushkey,
        kind,
        app_display_name: required(body.app_display_name, "app_display_name")?,
        device_display_name: required(body.device_display_name, "device_display_name")?,
        profile_tag: body.profile_tag,
        lang: required(body.lang, "lang")?,
        data: Value::Object(data),
    };
    state.storage.put_pusher(user_id, &pusher, &caller.token_hash, body.append).await?;
    Ok(Json(json!({})))
}
