//! `/timestamp_to_event` for clients and other servers, and OpenID's
//! `/openid/userinfo` on the federation listener.

use std::sync::Arc;

use myelin_federationapi::client::FederationRequest;
use myelin_federationapi::client::{AddressPolicy, ClientError, ClientSettings, FederationClient, HickoryDns};
use myelin_types::signing::ServerSigningKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, Server};

/// A federation client that signs as `server`, trusting the pair's CA.
pub(super) fn client_of(server: &Server, ca_dir: &tempfile::TempDir) -> FederationClient {
    myelin_federationapi::install_crypto_provider();
    let key = ServerSigningKey::load(&server.config_dir().join("signing.key")).unwrap();
    FederationClient::new(ClientSettings {
        server_name: server.server_name(),
        signing_key: Arc::new(key),
        clock: Arc::new(myelin_types::SystemClock),
        dns: Arc::new(HickoryDns::from_system().unwrap()),
        policy: AddressPolicy { allow_loopback: true, allow_private: false },
        ca_file: Some(ca_dir.path().join("ca.pem")),
        well_known_port: 443,
    })
    .unwrap()
}

pub(super) fn status_of(result: Result<Value, ClientError>) -> (u16, Value) {
    match result {
        Ok(body) => (200, body),
        Err(ClientError::Status { status, body, .. }) => (status, body),
        Err(other) => panic!("federation request failed: {other}"),
    }
}

/// Clients and other servers find the nearest event they may see by
/// history visibility; 404 `M_NOT_FOUND` when none lies that way.
#[tokio::test]
async fn timestamp_to_event_finds_the_nearest_visible_event() {
    let (a, b, ca_dir) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    let visibility = |v: &str| json!({"initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": v}}]});
    let open = a.create_room(&alice, visibility("world_readable")).await;
    let closed = a.create_room(&alice, visibility("joined")).await;
    let first = a.send_message(&alice, &open, "o1", "first").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let last = a.send_message(&alice, &open, "o2", "last").await;
    a.send_message(&alice, &closed, "c1", "secret").await;

    let (status, reply) = a.get(&alice, &format!("/_matrix/client/v3/rooms/{open}/event/{first}")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let first_ts = reply["origin_server_ts"].as_i64().unwrap();
    let far_future = first_ts + 86_400_000;
    let path = |room: &str, ts: i64, dir: &str| {
        format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir={dir}")
    };

    // Forward from the first message's time is that message; backward from the future, the last.
    let (status, reply) = a.get(&alice, &path(&open, first_ts, "f")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["event_id"], first.as_str());
    assert_eq!(reply["origin_server_ts"], first_ts);
    let (status, reply) = a.get(&bob, &path(&open, far_future, "b")).await;
    assert_eq!(status, StatusCode::OK, "world-readable: {reply}");
    assert_eq!(reply["event_id"], last.as_str());
    // Nothing after the future; the closed room's history is hidden from bob.
    let (status, reply) = a.get(&alice, &path(&open, far_future, "f")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
    let (status, reply) = a.get(&alice, &path(&closed, far_future, "b")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = a.get(&bob, &path(&closed, far_future, "b")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
    // Bad parameters, unknown room.
    let (status, reply) = a.get(&alice, &path(&open, first_ts, "sideways")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_INVALID_PARAM");
    let (status, reply) = a.get(&alice, &format!("/_matrix/client/v1/rooms/{open}/timestamp_to_event?dir=f")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let unknown = format!("!unknown:{}", a.server_name());
    let (status, reply) = a.get(&alice, &path(&unknown, first_ts, "f")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");

    // Server B, which has no user in either room, sees only the world-readable one.
    let client = client_of(&b, &ca_dir);
    let fed = |room: &str, ts: i64, dir: &str| {
        FederationRequest::get(
            &a.server_name(),
            format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={ts}&dir={dir}"),
        )
    };
    let (status, reply) = status_of(client.send(fed(&open, far_future, "b")).await);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["event_id"], last.as_str());
    let (status, reply) = status_of(client.send(fed(&closed, far_future, "b")).await);
    assert_eq!(status, 404, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
    let (status, reply) = status_of(
        client
            .send(FederationRequest::get(
                &a.server_name(),
                format!("/_matrix/federation/v1/timestamp_to_event/{open}?ts=1"),
            ))
            .await,
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["errcode"], "M_MISSING_PARAM");
    let (status, reply) = status_of(client.send(fed(&open, far_future, "b").unsigned()).await);
    assert_eq!(status, 401, "unsigned: {reply}");

    // OpenID: a token alice asks for names her at `/openid/userinfo`, which needs no signature.
    let (status, reply) = a
        .post(&alice, &format!("/_matrix/client/v3/user/@alice:{}/openid/request_token", a.server_name()), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let token = reply["access_token"].as_str().unwrap();
    let userinfo = |token: &str| {
        FederationRequest::get(&a.server_name(), format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"))
            .unsigned()
    };
    let (status, reply) = status_of(client.send(userinfo(token)).await);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"sub": format!("@alice:{}", a.server_name())}));
    let (status, reply) = status_of(client.send(userinfo("forged")).await);
    assert_eq!(status, 401, "{reply}");
    assert_eq!(reply["errcode"], "M_UNKNOWN_TOKEN");
    let (status, reply) = status_of(client.send(userinfo(&alice)).await);
    assert_eq!(status, 401, "an access token is no OpenID token: {reply}");
    assert_eq!(reply["errcode"], "M_UNKNOWN_TOKEN");
}
