//! Auth chains of stored events, as `/send_join` and `/state` return them.

use std::collections::HashSet;

use ruma::OwnedEventId;
use serde_json::Value;

use super::pdu::Pdu;
use crate::error::RequestError;
use crate::storage::Tx;

/// The ids and PDUs of every event reachable from `roots` through
/// `auth_events` (the roots' own auth events included, the roots themselves not).
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#auth-chain>
pub async fn auth_chain(tx: &mut Tx, roots: &[Pdu]) -> Result<Vec<(OwnedEventId, Value)>, RequestError> {
    let mut stack: Vec<OwnedEventId> = roots.iter().flat_map(|pdu| pdu.auth_events.iter().cloned()).collect();
    let mut seen = HashSet::new();
    let mut chain = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        // An auth event this server never had (a partial chain it joined
        // with) cannot be served; the rest of the chain still can.
        let Some(json) = tx.event_pdu(id.as_str()).await? else { continue };
        let pdu = Pdu::parse(id.clone(), &json)?;
        stack.extend(pdu.auth_events.iter().cloned());
        chain.push((id, serde_json::from_str(&json)?));
    }
    Ok(chain)
}
