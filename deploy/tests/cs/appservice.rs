//! Application services acting through the whole server: a bridge's users,
//! registered and asserted with its `as_token`, join, send and sync like
//! any user, through the client API, the room server and the sync API; and
//! the server pushes a bridge the events of its users' rooms as
//! transactions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Server};

const AS_TOKEN: &str = "bridge-as-token";

const REGISTRATION: &str = r#"
id: bridge
url: null
as_token: bridge-as-token
hs_token: bridge-hs-token
sender_localpart: _bridge_bot
namespaces:
  users: [{exclusive: true, regex: "@_bridge_.*"}]
"#;

fn events_of<'a>(body: &'a Value, room_id: &str) -> Vec<&'a Value> {
    body["rooms"]["join"][room_id]["timeline"]["events"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

/// Poll `/sync` at `path` until an event in `room_id` has this body.
async fn sync_until_message(server: &Server, token: &str, path: &str, room_id: &str, text: &str) -> Value {
    for _ in 0..100 {
        let (status, body) = server.get(token, path).await;
        assert_eq!(status, StatusCode::OK, "sync: {body}");
        if let Some(event) = events_of(&body, room_id).into_iter().find(|e| e["content"]["body"] == text) {
            return event.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{text:?} never reached {path}");
}

#[tokio::test]
async fn a_bridged_user_joins_sends_and_syncs_through_the_application_service_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, REGISTRATION).unwrap();
    let files = path.display().to_string();
    let server = Server::start_with_env(Backend::Sqlite, &[("MYELIN_GLOBAL__APP_SERVICE_CONFIG_FILES", &files)]).await;
    let alice = server.register("alice").await;
    let name = server.server_name();
    let ghost = format!("@_bridge_carol:{name}");
    let as_ghost = |path: &str| {
        format!("{path}{}user_id={}", if path.contains('?') { '&' } else { '?' }, crate::urlencode(&ghost))
    };

    let body = json!({"type": "m.login.application_service", "username": "_bridge_carol", "inhibit_login": true});
    let (status, reply) = server.post(AS_TOKEN, "/_matrix/client/v3/register", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");

    let room_id = server.create_room(&alice, json!({"preset": "private_chat", "invite": [ghost]})).await;
    let (status, reply) =
        server.post(AS_TOKEN, &as_ghost(&format!("/_matrix/client/v3/join/{room_id}")), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let send = as_ghost(&format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"));
    let (status, reply) = server.put(AS_TOKEN, &send, json!({"msgtype": "m.text", "body": "from the bridge"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // Timestamp massaging keeps the bridged network's time.
    let dated = format!("{}&ts=1500000000000", send.replace("/t1", "/t2"));
    let (status, reply) = server.put(AS_TOKEN, &dated, json!({"msgtype": "m.text", "body": "dated"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let too_late = format!("{}&ts=9007199254740992", send.replace("/t1", "/t3"));
    let (status, reply) = server.put(AS_TOKEN, &too_late, json!({"msgtype": "m.text", "body": "never"})).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")), "{reply}");
    server.send_message(&alice, &room_id, "a1", "to the bridge").await;

    // Alice sees the bridged user's message; the bridge, as that user, sees hers.
    let seen = sync_until_message(&server, &alice, "/_matrix/client/v3/sync", &room_id, "from the bridge").await;
    assert_eq!(seen["sender"], ghost);
    let dated = sync_until_message(&server, &alice, "/_matrix/client/v3/sync", &room_id, "dated").await;
    assert_eq!(dated["origin_server_ts"], 1_500_000_000_000_u64);
    let seen =
        sync_until_message(&server, AS_TOKEN, &as_ghost("/_matrix/client/v3/sync"), &room_id, "to the bridge").await;
    assert_eq!(seen["sender"], format!("@alice:{name}"));
    let messages = as_ghost(&format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b"));
    let (status, reply) = server.get(AS_TOKEN, &messages).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(reply["chunk"].as_array().unwrap().iter().any(|e| e["content"]["body"] == "from the bridge"), "{reply}");

    // The sync API refuses what the client API refuses: users outside the
    // namespace, and the bridge's sender (not in the room) sees no room.
    let outside = format!("/_matrix/client/v3/sync?user_id={}", crate::urlencode(&format!("@alice:{name}")));
    let (status, reply) = server.get(AS_TOKEN, &outside).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{reply}");
    let (status, reply) = server.get(AS_TOKEN, "/_matrix/client/v3/sync").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(events_of(&reply, &room_id).is_empty(), "{reply}");
}

/// A stand-in bridge: the events of every transaction, and the
/// `Authorization` header each came with.
#[derive(Default)]
struct Received(std::sync::Mutex<Vec<(Option<String>, Value)>>);

async fn transaction(
    axum::extract::State(received): axum::extract::State<std::sync::Arc<Received>>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    for event in body["events"].as_array().into_iter().flatten() {
        received.0.lock().unwrap().push((authorization.clone(), event.clone()));
    }
    axum::Json(json!({}))
}

#[tokio::test]
async fn a_bridge_receives_the_messages_sent_in_a_room_its_user_joined() {
    let received = std::sync::Arc::new(Received::default());
    let router = axum::Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", axum::routing::put(transaction))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, REGISTRATION.replace("url: null", &format!("url: \"{url}\""))).unwrap();
    let files = path.display().to_string();
    let server = Server::start_with_env(Backend::Sqlite, &[("MYELIN_GLOBAL__APP_SERVICE_CONFIG_FILES", &files)]).await;
    let alice = server.register("alice").await;
    let ghost = format!("@_bridge_dave:{}", server.server_name());

    let body = json!({"type": "m.login.application_service", "username": "_bridge_dave", "inhibit_login": true});
    let (status, reply) = server.post(AS_TOKEN, "/_matrix/client/v3/register", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let room_id = server.create_room(&alice, json!({"preset": "private_chat", "invite": [ghost]})).await;
    let join = format!("/_matrix/client/v3/join/{room_id}?user_id={}", crate::urlencode(&ghost));
    let (status, reply) = server.post(AS_TOKEN, &join, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let event_id = server.send_message(&alice, &room_id, "h1", "hello, bridge").await;

    for _ in 0..300 {
        let found = received.0.lock().unwrap().iter().find(|(_, e)| e["event_id"] == event_id).cloned();
        if let Some((authorization, event)) = found {
            assert_eq!(authorization.as_deref(), Some("Bearer bridge-hs-token"));
            assert_eq!(
                (event["room_id"].as_str(), event["content"]["body"].as_str()),
                (Some(room_id.as_str()), Some("hello, bridge"))
            );
            assert_eq!(event["sender"], format!("@alice:{}", server.server_name()));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the bridge never received {event_id}: {:?}\n{}", received.0.lock().unwrap(), server.log_tail());
}
