//! `POST /rooms/{roomId}/forget`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::sync_until;
use crate::harness::{Backend, Server};

const WITH_LEAVE: &str = r#"{"room":{"include_leave":true}}"#;

fn room_in<'a>(body: &'a Value, section: &str, room_id: &str) -> Option<&'a Value> {
    body["rooms"][section].get(room_id)
}

/// Forgetting needs a left room (400 `M_UNKNOWN` while joined or
/// invited); a forgotten room leaves `/sync`, even a full-state sync with
/// `include_leave`, and its history stops being served, until a rejoin.
#[tokio::test]
async fn a_forgotten_room_leaves_sync_and_its_history_until_a_rejoin() {
    let server = Server::start(Backend::Sqlite).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room_id = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let forget = format!("/_matrix/client/v3/rooms/{room_id}/forget");

    // Joined: refused.
    let (status, reply) = server.post(&alice, &forget, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_UNKNOWN");

    // Invited: refused.
    let carol_id = format!("@carol:{}", server.server_name());
    let invite = format!("/_matrix/client/v3/rooms/{room_id}/invite");
    let (status, reply) = server.post(&alice, &invite, json!({"user_id": carol_id})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = server.post(&carol, &forget, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_UNKNOWN");

    // Bad room id, and no token.
    let (status, reply) = server.post(&bob, "/_matrix/client/v3/rooms/not-a-room/forget", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_INVALID_PARAM");
    let (status, reply) = crate::harness::json_request(reqwest::Method::POST, &server.url(&forget), None, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{reply}");
    assert_eq!(reply["errcode"], "M_MISSING_TOKEN");

    // Bob joins, reads a message, leaves: the room is in `leave`.
    let (status, reply) = server.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/join"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let message = server.send_message(&alice, &room_id, "m1", "before bob forgets").await;
    let (status, reply) = server.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/leave"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let body = sync_until(&server, &bob, WITH_LEAVE, |b| room_in(b, "leave", &room_id).is_some()).await;
    let timeline = &room_in(&body, "leave", &room_id).unwrap()["timeline"]["events"];
    assert!(timeline.as_array().unwrap().iter().any(|e| e["event_id"] == message), "{body}");
    let messages = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b");
    let (status, reply) = server.get(&bob, &messages).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // Forgotten: gone from sync (full state too) and from history.
    let (status, reply) = server.post(&bob, &forget, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!({}));
    sync_until(&server, &bob, WITH_LEAVE, |b| room_in(b, "leave", &room_id).is_none()).await;
    let (status, full) = server
        .get(&bob, &format!("/_matrix/client/v3/sync?full_state=true&filter={}", crate::urlencode(WITH_LEAVE)))
        .await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert!(room_in(&full, "leave", &room_id).is_none() && room_in(&full, "join", &room_id).is_none(), "{full}");
    let (status, reply) = server.get(&bob, &messages).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    assert_eq!(reply["errcode"], "M_FORBIDDEN");
    let (status, reply) = server.get(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/event/{message}")).await;
    assert!(status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND, "{status} {reply}");
    // Forgetting again (or a room never joined) changes nothing.
    let (status, reply) = server.post(&bob, &forget, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = server
        .post(&bob, &format!("/_matrix/client/v3/rooms/!unknown:{}/forget", server.server_name()), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // Alice still sees it all; bob sees the room again once he rejoins.
    let (status, reply) = server.get(&alice, &messages).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = server.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/join"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    sync_until(&server, &bob, WITH_LEAVE, |b| room_in(b, "join", &room_id).is_some()).await;
}
