use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::{SendEvent, TxnRef};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedEventId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::appservice::TimestampQuery;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, MatrixQuery};
use crate::producers::roomserver;
use crate::routing::parse_room_id;
use crate::service::AppState;

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid>
///
/// The room server keeps the transaction ids: a retry gets the first event
/// id. An application service may set the timestamp (`ts`).
pub async fn send_message(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((room_id, event_type, txn_id)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<TimestampQuery>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let origin_server_ts = query.for_caller(&user)?;
    let request = SendEvent {
        room_id: parse_room_id(&room_id)?,
        sender: user.user_id,
        event_type,
        state_key: None,
        content: Value::Object(content),
        txn: Some(TxnRef { device_id: user.device_id, txn_id }),
        sender_is_guest: user.is_guest,
        origin_server_ts,
    };
    let event_id = roomserver::send_event(&state.bus, request).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid>
///
/// `redacts` goes in the content; the room server moves it to the top level
/// for room versions before 11. Whether it takes effect on the event is
/// decided where redactions are applied (the power to redact others).
pub async fn redact(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, event_id, txn_id)): MatrixPath<(String, String, String)>,
    MatrixJson(body): MatrixJson<RedactBody>,
) -> Result<Json<Value>> {
    let redacts = OwnedEventId::try_from(event_id.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid event id: {event_id}")))?;
    let mut content = json!({ "redacts": redacts });
    if let Some(reason) = body.reason {
        content["reason"] = Value::String(reason);
    }
    let request = SendEvent {
        room_id: parse_room_id(&room_id)?,
        sender: user.user_id,
        event_type: "m.room.redaction".to_owned(),
        state_key: None,
        content,
        txn: Some(TxnRef { device_id: user.device_id, txn_id }),
        sender_is_guest: false,
        origin_server_ts: None,
    };
    let event_id = roomserver::send_event(&state.bus, request).await?;
    Ok(Json(json!({ "event_id": event_id })))
}
