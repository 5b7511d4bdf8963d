//! Read receipts and read markers. Receipts go out on `edu.receipt`; the
//! fully-read marker is the room account data entry `m.fully_read`.

use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ReceiptUpdate;
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, OptionalJson};
use crate::producers;
use crate::routing::{account_data, parse_room_id, require_joined};
use crate::service::AppState;

const FULLY_READ: &str = "m.fully_read";
const RECEIPT_TYPES: &[&str] = &["m.read", "m.read.private"];

fn parse_event_id(event_id: &str) -> Result<OwnedEventId, MatrixError> {
    OwnedEventId::try_from(event_id).map_err(|_| MatrixError::invalid_param(format!("Invalid event id: {event_id}")))
}

async fn send_receipt(
    state: &AppState,
    user: &AuthedUser,
    room_id: &OwnedRoomId,
    receipt_type: &str,
    event_id: OwnedEventId,
    thread_id: Option<String>,
) -> Result<()> {
    let update = ReceiptUpdate {
        room_id: room_id.clone(),
        user_id: user.user_id.clone(),
        receipt_type: receipt_type.to_owned(),
        event_id,
        thread_id,
        ts: state.bus.clock().now_ms(),
    };
    producers::edu::receipt(&state.bus, &update).await?;
    Ok(())
}

async fn set_fully_read(
    state: &AppState,
    user: &AuthedUser,
    room_id: &OwnedRoomId,
    event_id: OwnedEventId,
) -> Result<()> {
    account_data::set(state, user, Some(room_id.clone()), FULLY_READ, json!({ "event_id": event_id })).await
}

#[derive(Deserialize, Default)]
pub struct ReceiptBody {
    thread_id: Option<String>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid>
pub async fn receipt(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, receipt_type, event_id)): MatrixPath<(String, String, String)>,
    OptionalJson(body): OptionalJson<ReceiptBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    if receipt_type != FULLY_READ && !RECEIPT_TYPES.contains(&receipt_type.as_str()) {
        return Err(MatrixError::invalid_param(format!("Unknown receipt type {receipt_type}")).into());
    }
    if body.thread_id.as_deref() == Some("") || (receipt_type == FULLY_READ && body.thread_id.is_some()) {
        return Err(MatrixError::invalid_param("Invalid thread_id").into());
    }
    require_joined(&state, &room_id, &user.user_id).await?;
    if receipt_type == FULLY_READ {
        set_fully_read(&state, &user, &room_id, event_id).await?;
    } else {
        send_receipt(&state, &user, &room_id, &receipt_type, event_id, body.thread_id).await?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidread_markers>
pub async fn read_markers(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<ReadMarkersBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let fully_read = body.fully_read.as_deref().map(parse_event_id).transpose()?;
    let read = body.read.as_deref().map(parse_event_id).transpose()?;
    let read_private = body.read_private.as_deref().map(parse_event_id).transpose()?;
    require_joined(&state, &room_id, &user.user_id).await?;
    if let Some(event_id) = fully_read {
        set_fully_read(&state, &user, &room_id, event_id).await?;
    }
    for (receipt_type, event_id) in [("m.read", read), ("m.read.private", read_private)] {
        if let Some(event_id) = event_id {
            send_receipt(&state, &user, &room_id, receipt_type, event_id, None).await?;
        }
    }
    Ok(Json(json!({})))
}
