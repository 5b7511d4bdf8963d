//! A room's members at a point of its history. Served here rather than by
//! the client API because `at` is one of this component's pagination
//! tokens, and only its state log can place one.

use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_types::MatrixError;
use serde_json::{Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, parse_token, query_params, room_access};
use crate::SyncApiError;

const MEMBERSHIPS: [&str; 5] = ["join", "invite", "knock", "leave", "ban"];

/// GET /_matrix/client/v3/rooms/{roomId}/members
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidmembers>
///
/// The member events of the room state at `at` (now when absent), or at
/// the latest point before it that the requester may see: someone who
/// left gets the members as of their leave. Only those who have been
/// joined may ask, unless the room is world-readable. With both
/// `membership` and `not_membership`, an event must pass both, as in
/// Synapse and Dendrite (the spec's text says "or", which would make
/// `membership` pointless).
pub async fn members(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate_guest_ok(&parts).await?;
    let params = query_params(&parts);
    let membership = membership_param(params.get("membership"), "membership")?;
    let not_membership = membership_param(params.get("not_membership"), "not_membership")?;
    let at = parse_token(params.get("at"))?;

    let current = state.notifier.current().events;
    let access = room_access(&state, &identity, &room_id, current).await?;
    // An invite alone shows the room's stripped state, not its members.
    if !access.world_readable && !access.memberships.iter().any(|change| change.membership == "join") {
        return Err(MatrixError::forbidden("You are not and have not been a member of this room").into());
    }
    let wanted = at.map_or(current, |token| token.0.min(current));
    let pos = latest_readable(&access.ranges, wanted)
        .ok_or_else(|| MatrixError::forbidden("You may not see the room at that point"))?;
    let mut rows = state.storage.members_at(&room_id, pos).await?;
    rows.retain(|row| {
        let of_row = row.pdu.pointer("/content/membership").and_then(Value::as_str);
        membership.is_none_or(|m| of_row == Some(m)) && not_membership.is_none_or(|m| of_row != Some(m))
    });
    let viewer = Viewer { identity: &identity, room_id: &room_id, ranges: &access.ranges, with_room_id: true };
    Ok(Json(json!({ "chunk": client_events(&state, &viewer, &rows).await? })))
}

/// A `membership` or `not_membership` parameter: one of the spec's values.
fn membership_param<'a>(value: Option<&'a String>, name: &str) -> Result<Option<&'a str>, MatrixError> {
    match value.map(String::as_str) {
        Some(value) if !MEMBERSHIPS.contains(&value) => {
            Err(MatrixError::invalid_param(format!("{name} must be one of {}", MEMBERSHIPS.join(", "))))
        }
        value => Ok(value),
    }
}

/// The latest stream position no later than `pos` inside one of `ranges`
/// (each `(after, upto]`, in order).
fn latest_readable(ranges: &[(i64, i64)], pos: i64) -> Option<i64> {
    ranges.iter().rev().find(|&&(after, _)| after < pos).map(|&(_, upto)| upto.min(pos))
}

#[cfg(test)]
mod tests {
    use super::latest_readable;

    #[test]
    fn latest_readable_caps_at_the_end_of_what_is_visible() {
        let ranges = [(i64::MIN, 10), (20, i64::MAX)];
        assert_eq!(latest_readable(&ranges, 5), Some(5));
        assert_eq!(latest_readable(&ranges, 15), Some(10));
        assert_eq!(latest_readable(&ranges, 30), Some(30));
        assert_eq!(latest_readable(&[(4, 9)], 4), None);
        assert_eq!(latest_readable(&[], 4), None);
    }
}
