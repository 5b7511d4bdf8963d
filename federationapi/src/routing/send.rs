use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use myelin_roomserver::api::{
    INPUT_TOPIC, InputOk, InputPdus, InputReply, InputRequest, PduKind, PduOutcome, REQUEST_TIMEOUT,
};
use myelin_types::MatrixError;
use myelin_types::ruma::room_version_rules::RoomVersionRules;
use myelin_types::ruma::{CanonicalJsonValue, OwnedRoomId, OwnedServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Signed;
use super::edus;
use super::{FederationState, server_allowed};
use crate::storage::transactions;

/// The spec's limits on one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

#[derive(Debug, Deserialize)]
pub(super) struct Transaction {
    origin: String,
    #[serde(default)]
    pdus: Vec<Value>,
    #[serde(default)]
    edus: Vec<Value>,
}

/// PUT /_matrix/federation/v1/send/{txnId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1sendtxnid>
///
/// PDUs go to the room server grouped by room, each group keyed by its
/// room id so rooms proceed in parallel and each PDU gets its own result
/// (DESIGN.md invariants 4 and 5). Then the EDUs (`edus.rs`): after the
/// PDUs, so a receipt can name an event of the same transaction.
pub(super) async fn put_send(
    State(state): State<FederationState>,
    Path(txn_id): Path<String>,
    Signed { origin, body }: Signed<Transaction>,
) -> Result<Json<Value>, MatrixError> {
    if body.origin != origin.as_str() {
        return Err(MatrixError::forbidden("The transaction's origin is not the server that signed the request"));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(MatrixError::too_large(format!(
            "A transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        ))
        .with_status(StatusCode::BAD_REQUEST));
    }
    // One transaction per origin at a time, so a retry waits for the first
    // attempt and then gets its stored answer.
    let gate = state.transaction_gate(origin.as_str());
    let _turn = gate.lock().await;
    let db_error = |e: myelin_storage::sqlx::Error| {
        tracing::error!(error = %e, "transaction storage failed");
        MatrixError::internal()
    };
    if let Some(stored) = transactions::response(&state.db, origin.as_str(), &txn_id).await.map_err(db_error)? {
        let stored: Value = serde_json::from_str(&stored).map_err(|e| {
            tracing::error!(error = %e, "stored transaction response is not JSON");
            MatrixError::internal()
        })?;
        return Ok(Json(stored));
    }
    let results = process_pdus(&state, &origin, body.pdus).await;
    edus::process_edus(&state, &origin, body.edus).await;
    let response = json!({ "pdus": results });
    transactions::store(&state.db, origin.as_str(), &txn_id, &response.to_string(), state.clock.now_ms())
        .await
        .map_err(db_error)?;
    Ok(Json(response))
}

/// Forward each room's PDUs to the room server; collect a result per PDU.
async fn process_pdus(state: &FederationState, origin: &OwnedServerName, pdus: Vec<Value>) -> BTreeMap<String, Value> {
    let mut results = BTreeMap::new();
    let mut rooms: BTreeMap<OwnedRoomId, Vec<Value>> = BTreeMap::new();
    for pdu in pdus {
        match pdu.get("room_id").and_then(Value::as_str).map(OwnedRoomId::try_from) {
            Some(Ok(room_id)) => rooms.entry(room_id).or_default().push(pdu),
            _ => record(&mut results, fallback_event_id(&pdu), Some("PDU has no valid room_id".to_owned())),
        }
    }
    let requests = rooms.into_iter().map(|(room_id, pdus)| async move {
        // A server the room's ACL denies gets an error for each of its PDUs there.
        match server_allowed(state, origin, &room_id).await {
            Ok(true) => {}
            Ok(false) => {
                return (
                    pdus,
                    Ok(Err(MatrixError::forbidden(format!("{origin} is denied by the server ACL of {room_id}")))),
                );
            }
            Err(error) => return (pdus, Ok(Err(error))),
        }
        let request = InputRequest::InputPdus(InputPdus {
            origin: origin.clone(),
            room_id: room_id.clone(),
            kind: PduKind::Timeline,
            pdus: pdus.clone(),
        });
        let reply: Result<InputReply, _> =
            state.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await;
        (pdus, reply)
    });
    for (pdus, reply) in futures::future::join_all(requests).await {
        match reply {
            Ok(Ok(InputOk::PdusProcessed { results: outcomes })) => {
                for (index, pdu) in pdus.iter().enumerate() {
                    let Some(outcome) = outcomes.get(index) else {
                        record(&mut results, fallback_event_id(pdu), Some("not processed".to_owned()));
                        continue;
                    };
                    let event_id =
                        outcome.event_id.as_ref().map(ToString::to_string).or_else(|| fallback_event_id(pdu));
                    let error = match &outcome.outcome {
                        PduOutcome::Rejected { reason } => Some(reason.clone()),
                        // Soft-failed events were accepted from the sender's point of view.
                        PduOutcome::Accepted | PduOutcome::SoftFailed { .. } | PduOutcome::AlreadyKnown => None,
                    };
                    record(&mut results, event_id, error);
                }
            }
            Ok(Ok(other)) => {
                tracing::error!(?other, "room server answered InputPdus with another kind");
                for pdu in &pdus {
                    record(&mut results, fallback_event_id(pdu), Some("internal error".to_owned()));
                }
            }
            Ok(Err(error)) => {
                for pdu in &pdus {
                    record(&mut results, fallback_event_id(pdu), Some(error.error.clone()));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "room server did not process received PDUs");
                for pdu in &pdus {
                    record(&mut results, fallback_event_id(pdu), Some("room server unavailable".to_owned()));
                }
            }
        }
    }
    results
}

fn record(results: &mut BTreeMap<String, Value>, event_id: Option<String>, error: Option<String>) {
    let Some(event_id) = event_id else {
        tracing::info!(?error, "dropping a result for a PDU without a computable event id");
        return;
    };
    let result = match error {
        Some(error) => json!({ "error": error }),
        None => json!({}),
    };
    results.insert(event_id, result);
}

/// The id a PDU is reported under when the room server gave none: its
/// `event_id` field (room versions 1 and 2), else its reference hash as
/// rooms of version 4 and later compute it. The room version is the room
/// server's to know, so this is a best effort for PDUs it never saw.
fn fallback_event_id(pdu: &Value) -> Option<String> {
    if let Some(id) = pdu.get("event_id").and_then(Value::as_str) {
        return Some(id.to_owned());
    }
    match CanonicalJsonValue::try_from(pdu.clone()) {
        Ok(CanonicalJsonValue::Object(object)) => {
            myelin_types::ruma::signatures::reference_hash(&object, &RoomVersionRules::V11)
                .ok()
                .map(|h| format!("${h}"))
        }
        _ => None,
    }
}
