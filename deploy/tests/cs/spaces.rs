//! Spaces and public room directories across two servers: B's users walk
//! a space whose rooms live on A (`/hierarchy` over federation) and list
//! A's public rooms (`/publicRooms?server=`), which only A's operator
//! switch allows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Server};
use crate::urlencode;

/// A lists its directory to other servers; B does not.
async fn start_pair() -> (Server, Server, tempfile::TempDir) {
    let allow = vec![("MYELIN_FEDERATION_API__ALLOW_PUBLIC_ROOMS_OVER_FEDERATION", "true")];
    let (mut servers, ca) = Server::start_federated_with_env(Backend::Sqlite, &[allow, Vec::new()]).await;
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    (a, b, ca)
}

fn room_ids(body: &Value, list: &str) -> Vec<String> {
    let rooms = body[list].as_array().map(Vec::as_slice).unwrap_or_default();
    rooms.iter().filter_map(|room| room["room_id"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn a_space_on_another_server_is_walked_and_its_directory_listed_when_allowed() {
    let (a, b, _ca) = start_pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let space = a
        .create_room(
            &alice,
            json!({"preset": "public_chat", "visibility": "public", "name": "Space of A",
                   "creation_content": {"type": "m.space"}}),
        )
        .await;
    let lobby = a.create_room(&alice, json!({"preset": "public_chat", "name": "Lobby"})).await;
    let secret = a.create_room(&alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    for (child, order) in [(&lobby, "a"), (&secret, "b")] {
        let path = format!("/_matrix/client/v3/rooms/{space}/state/m.space.child/{child}");
        let (status, reply) = a.put(&alice, &path, json!({"via": [a.server_name()], "order": order})).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    // B's own space has A's space as its child.
    let home = b.create_room(&bob, json!({"preset": "public_chat", "creation_content": {"type": "m.space"}})).await;
    let path = format!("/_matrix/client/v3/rooms/{home}/state/m.space.child/{space}");
    let (status, reply) = b.put(&bob, &path, json!({"via": [a.server_name()]})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    // B asks A about the rooms it does not have; A's secret room stays hidden.
    let (status, walked) = b.get(&bob, &format!("/_matrix/client/v1/rooms/{home}/hierarchy")).await;
    assert_eq!(status, StatusCode::OK, "{walked}\n{}\n{}", b.log_tail(), a.log_tail());
    assert_eq!(room_ids(&walked, "rooms"), [home.as_str(), space.as_str(), lobby.as_str()], "{walked}");
    assert_eq!(walked["rooms"][1]["name"], "Space of A");
    assert_eq!(walked["rooms"][1]["children_state"].as_array().map(Vec::len), Some(2), "{walked}");
    let (status, walked) = b.get(&bob, &format!("/_matrix/client/v1/rooms/{home}/hierarchy?max_depth=1")).await;
    assert_eq!((status, room_ids(&walked, "rooms")), (StatusCode::OK, vec![home.clone(), space.clone()]));

    // A's directory, through B's client API.
    let listed = format!("/_matrix/client/v3/publicRooms?server={}", urlencode(&a.server_name()));
    let mut found = Value::Null;
    for _ in 0..100 {
        let (status, body) = b.get(&bob, &listed).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        found = body;
        if room_ids(&found, "chunk").contains(&space) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(room_ids(&found, "chunk"), [space.as_str()], "{found}");
    assert_eq!(found["chunk"][0]["room_type"], "m.space");
    let (status, searched) =
        b.post(&bob, &listed, json!({"filter": {"generic_search_term": "space of"}, "limit": 5})).await;
    assert_eq!((status, room_ids(&searched, "chunk")), (StatusCode::OK, vec![space.clone()]), "{searched}");
    let (status, searched) = b.post(&bob, &listed, json!({"filter": {"generic_search_term": "nothing"}})).await;
    assert_eq!((status, room_ids(&searched, "chunk")), (StatusCode::OK, Vec::<String>::new()), "{searched}");

    // B's operator has not allowed it: A's users are refused.
    let refused = format!("/_matrix/client/v3/publicRooms?server={}", urlencode(&b.server_name()));
    let (status, reply) = a.get(&alice, &refused).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{reply}");
    let (status, reply) = a.post(&alice, &refused, json!({"filter": {}})).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{reply}");
}
