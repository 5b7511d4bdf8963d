//! `POST /rooms/{roomId}/upgrade`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::sync_until;
use crate::harness::{Backend, Server, json_request};

const TIMELINE: &str = r#"{"room":{"timeline":{"limit":50}}}"#;

/// The content of a state event as `token` reads it.
async fn state(server: &Server, token: &str, room_id: &str, event_type: &str, state_key: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}");
    let (status, content) = server.get(token, &path).await;
    assert_eq!(status, StatusCode::OK, "{event_type} in {room_id}: {content}");
    content
}

/// A room's events of `event_type` in a `/sync` body, timeline and state.
fn synced<'a>(body: &'a Value, room_id: &str, event_type: &str) -> Vec<&'a Value> {
    let room = &body["rooms"]["join"][room_id];
    ["timeline", "state"]
        .iter()
        .filter_map(|section| room[section]["events"].as_array())
        .flatten()
        .filter(|event| event["type"] == event_type)
        .collect()
}

async fn upgrade(server: &Server, token: &str, room_id: &str, body: Value) -> (StatusCode, Value) {
    server.post(token, &format!("/_matrix/client/v3/rooms/{room_id}/upgrade"), body).await
}

/// v10 → v11 and v11 → v12: the new room cites its predecessor (with the
/// old room's latest event before v12) and has the old room's name, topic,
/// join rules, history visibility, power levels (without the creators from
/// v12 on) and bans; the alias, the canonical alias and the directory entry
/// move; the old room is tombstoned and its members can no longer talk
/// there, but can join the new room; their `/sync` shows both.
#[tokio::test]
async fn upgrades_carry_the_room_over_and_tombstone_the_old_one_on_sqlite() {
    upgrades_carry_the_room_over(Backend::Sqlite).await;
}

#[tokio::test]
async fn upgrades_carry_the_room_over_and_tombstone_the_old_one_on_postgres() {
    upgrades_carry_the_room_over(Backend::Postgres).await;
}

async fn upgrades_carry_the_room_over(backend: Backend) {
    let server = Server::start(backend).await;
    let name = server.server_name();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let eve = server.register("eve").await;
    let (alice_id, carol_id, moderator, dave) =
        (format!("@alice:{name}"), format!("@carol:{name}"), format!("@mod:{name}"), format!("@dave:{name}"));

    // What a client sees of the versions stays the same.
    let (status, capabilities) = server.get(&alice, "/_matrix/client/v3/capabilities").await;
    assert_eq!(status, StatusCode::OK, "{capabilities}");
    let versions = &capabilities["capabilities"]["m.room_versions"]["available"];
    assert_eq!(versions, &json!({"10": "stable", "11": "stable", "12": "stable"}), "{capabilities}");

    for (from, to) in [("10", "11"), ("11", "12")] {
        let alias = format!("#tea{from}:{name}");
        let users = json!({ &alice_id: 100, &carol_id: 50, &moderator: 75 });
        let old = server
            .create_room(
                &alice,
                json!({
                    "preset": "public_chat", "visibility": "public", "room_version": from,
                    "name": "Tea", "topic": "Brewing", "room_alias_name": format!("tea{from}"),
                    "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
                    "power_level_content_override": {"users": users},
                }),
            )
            .await;
        for member in [&bob, &carol] {
            let (status, reply) = server.post(member, &format!("/_matrix/client/v3/join/{old}"), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
        }
        let (status, reply) = server
            .post(&alice, &format!("/_matrix/client/v3/rooms/{old}/ban"), json!({"user_id": dave, "reason": "spam"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let latest = server.send_message(&alice, &old, &format!("last-{from}"), "moving on").await;

        // Refused: too little power, not a member, a version this server does not have.
        let (status, reply) = upgrade(&server, &carol, &old, json!({"new_version": to})).await;
        assert_eq!((status, &reply["errcode"]), (StatusCode::FORBIDDEN, &json!("M_FORBIDDEN")), "{reply}");
        let (status, reply) = upgrade(&server, &eve, &old, json!({"new_version": to})).await;
        assert_eq!((status, &reply["errcode"]), (StatusCode::FORBIDDEN, &json!("M_FORBIDDEN")), "{reply}");
        let (status, reply) = upgrade(&server, &alice, &old, json!({"new_version": "999"})).await;
        assert_eq!((status, &reply["errcode"]), (StatusCode::BAD_REQUEST, &json!("M_UNSUPPORTED_ROOM_VERSION")));

        let body = if to == "12" {
            json!({"new_version": to, "additional_creators": [carol_id]})
        } else {
            json!({"new_version": to})
        };
        let (status, reply) = upgrade(&server, &alice, &old, body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let new = reply["replacement_room"].as_str().expect("replacement_room").to_owned();
        assert_ne!(new, old);

        // The new room: its create event, the copied state, the bans.
        let create = state(&server, &alice, &new, "m.room.create", "").await;
        assert_eq!(create["room_version"], to, "{create}");
        let predecessor =
            if to == "12" { json!({"room_id": old}) } else { json!({"room_id": old, "event_id": latest}) };
        assert_eq!(create["predecessor"], predecessor, "{create}");
        for event_type in ["m.room.name", "m.room.topic", "m.room.join_rules", "m.room.history_visibility"] {
            assert_eq!(
                state(&server, &alice, &new, event_type, "").await,
                state(&server, &alice, &old, event_type, "").await,
                "{event_type}"
            );
        }
        let levels = state(&server, &alice, &new, "m.room.power_levels", "").await;
        if to == "12" {
            assert_eq!(create["additional_creators"], json!([carol_id]), "{create}");
            assert_eq!(levels["users"], json!({ &moderator: 75 }), "creators are not listed: {levels}");
        } else {
            assert_eq!(levels["users"], users, "{levels}");
        }
        assert_eq!(levels["events_default"], 0, "{levels}");
        let ban = state(&server, &alice, &new, "m.room.member", &dave).await;
        assert_eq!((&ban["membership"], &ban["reason"]), (&json!("ban"), &json!("spam")), "{ban}");

        // The old room: tombstoned and restricted, so bob may not talk there any more.
        let tombstone = state(&server, &alice, &old, "m.room.tombstone", "").await;
        assert_eq!(tombstone["replacement_room"], new.as_str(), "{tombstone}");
        assert!(tombstone["body"].is_string(), "{tombstone}");
        let old_levels = state(&server, &alice, &old, "m.room.power_levels", "").await;
        assert_eq!((&old_levels["events_default"], &old_levels["invite"]), (&json!(50), &json!(50)), "{old_levels}");
        let path = format!("/_matrix/client/v3/rooms/{old}/send/m.room.message/late-{from}");
        let (status, reply) = server.put(&bob, &path, json!({"msgtype": "m.text", "body": "too late"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");

        // Aliases, the canonical alias and the directory entry moved.
        let (status, resolved) =
            server.get(&bob, &format!("/_matrix/client/v3/directory/room/{}", crate::urlencode(&alias))).await;
        assert_eq!((status, &resolved["room_id"]), (StatusCode::OK, &json!(new)), "{resolved}");
        assert_eq!(state(&server, &alice, &new, "m.room.canonical_alias", "").await["alias"], alias.as_str());
        assert!(state(&server, &alice, &old, "m.room.canonical_alias", "").await.get("alias").is_none());
        for (room, visibility) in [(&new, "public"), (&old, "private")] {
            let (status, reply) = server.get(&bob, &format!("/_matrix/client/v3/directory/list/room/{room}")).await;
            assert_eq!((status, &reply["visibility"]), (StatusCode::OK, &json!(visibility)), "{reply}");
        }

        // A member of the old room follows into the new one; sync shows the tombstone and the predecessor.
        let (status, reply) = server.post(&bob, &format!("/_matrix/client/v3/join/{new}"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let body = sync_until(&server, &bob, TIMELINE, |body| {
            !synced(body, &old, "m.room.tombstone").is_empty() && !synced(body, &new, "m.room.create").is_empty()
        })
        .await;
        assert_eq!(synced(&body, &old, "m.room.tombstone")[0]["content"]["replacement_room"], new.as_str());
        assert_eq!(synced(&body, &new, "m.room.create")[0]["content"]["predecessor"], predecessor);
    }
}

/// Bodies and rooms the endpoint refuses, with the spec's errors.
#[tokio::test]
async fn upgrade_refuses_bad_bodies_and_unknown_rooms() {
    let server = Server::start(Backend::Sqlite).await;
    let alice = server.register("alice").await;
    let room_id = server.create_room(&alice, json!({"room_version": "11"})).await;
    let url = server.url(&format!("/_matrix/client/v3/rooms/{room_id}/upgrade"));
    for (body, errcode) in [
        ("not json", "M_NOT_JSON"),
        ("{}", "M_BAD_JSON"),
        (r#"{"new_version": 12}"#, "M_BAD_JSON"),
        (r#"{"new_version": "12", "additional_creators": ["not a user"]}"#, "M_BAD_JSON"),
    ] {
        let (status, reply) = json_request(Method::POST, &url, Some(alice.as_str()), body).await;
        assert_eq!((status, &reply["errcode"]), (StatusCode::BAD_REQUEST, &json!(errcode)), "{body}: {reply}");
    }
    let (status, reply) = json_request(Method::POST, &url, None, r#"{"new_version": "12"}"#).await;
    assert_eq!((status, &reply["errcode"]), (StatusCode::UNAUTHORIZED, &json!("M_MISSING_TOKEN")), "{reply}");
    let unknown = format!("/_matrix/client/v3/rooms/!nowhere:{}/upgrade", server.server_name());
    let (status, reply) = server.post(&alice, &unknown, json!({"new_version": "12"})).await;
    assert_eq!((status, &reply["errcode"]), (StatusCode::NOT_FOUND, &json!("M_NOT_FOUND")), "{reply}");
    let (status, reply) =
        server.post(&alice, "/_matrix/client/v3/rooms/nowhere/upgrade", json!({"new_version": "12"})).await;
    assert_eq!((status, &reply["errcode"]), (StatusCode::BAD_REQUEST, &json!("M_INVALID_PARAM")), "{reply}");
    // Nothing was upgraded by any of these.
    let (status, reply) =
        server.get(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.tombstone/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
}
