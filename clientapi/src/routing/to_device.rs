//! Send-to-device messaging: checked and expanded here, published on
//! `edu.todevice`, queued per device by the sync API.

use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::ToDeviceMessage;
use crate::auth::GuestOk;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::producers;
use crate::service::AppState;
use crate::storage;

/// Every device of the recipient.
const ALL_DEVICES: &str = "*";

#[derive(Deserialize)]
pub struct SendToDeviceBody {
    messages: Map<String, Value>,
}

/// `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid>
///
/// A retry with the same transaction id yields the same message ids, which
/// the sync API stores once. Messages for other servers' users go on the
/// same topic, for the federation API to send.
pub async fn send_to_device(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((event_type, txn_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<SendToDeviceBody>,
) -> Result<Json<Value>> {
    let mut outgoing = Vec::new();
    for (recipient, by_device) in &body.messages {
        let recipient = OwnedUserId::try_from(recipient.as_str())
            .map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {recipient}")))?;
        let by_device = by_device
            .as_object()
            .ok_or_else(|| MatrixError::bad_json(format!("messages for {recipient} must be an object")))?;
        for (device_id, content) in by_device {
            if !content.is_object() {
                return Err(
                    MatrixError::bad_json(format!("message for {recipient} {device_id} must be an object")).into()
                );
            }
            outgoing.push((recipient.clone(), device_id, content));
        }
    }
    for (recipient, device_id, content) in outgoing {
        // Another server's devices are its to expand: `*` goes as it is.
        let remote = recipient.server_name() != state.server_name();
        let devices = if remote {
            vec![device_id.clone()]
        } else if device_id == ALL_DEVICES {
            storage::devices::list(&state.db, recipient.as_str()).await?.into_iter().map(|d| d.device_id).collect()
        } else {
            vec![device_id.clone()]
        };
        for device_id in devices {
            let message_id = json!([user.user_id, user.device_id, txn_id, recipient, device_id]).to_string();
            let message = ToDeviceMessage {
                sender: user.user_id.clone(),
                event_type: event_type.clone(),
                user_id: recipient.clone(),
                device_id,
                content: content.clone(),
                message_id,
            };
            producers::edu::to_device(&state.bus, &message).await?;
        }
    }
    Ok(Json(json!({})))
}
