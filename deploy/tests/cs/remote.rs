//! Other servers' media, aliases and profiles, asked through the local
//! server: a user of B reads what a user of A uploaded, aliased and named.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::timestamp::{client_of, status_of};
use crate::harness::{Backend, Server};
use myelin_federationapi::client::FederationRequest;

/// A 64×48 red PNG.
const PNG_HEX: &str = "89504e470d0a1a0a0000000d49484452000000400000003008020000002e29eb48000000434944415478daedcf410900000804b04b72fda318cb0a7e85c10a2cd3be160101010101010101010101010101010101010101010101010101010101010101010181ab05892730b5e89526850000000049454e44ae426082";

/// Upload `bytes` to `server` as `content_type`; the media id.
async fn upload(server: &Server, token: &str, content_type: &str, bytes: Vec<u8>) -> String {
    let response = reqwest::Client::new()
        .post(server.url("/_matrix/media/v3/upload?filename=red.png"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    let uri = reply["content_uri"].as_str().unwrap();
    uri.rsplit('/').next().unwrap().to_owned()
}

/// The status, content type and body of a media request.
async fn fetch(server: &Server, token: &str, path: &str) -> (StatusCode, String, Vec<u8>) {
    let response = reqwest::Client::new().get(server.url(path)).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.bytes().await.unwrap().to_vec())
}

fn error_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// Width and height from a PNG's header.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[tokio::test]
async fn remote_media_is_fetched_over_federation_and_cached() {
    let (mut a, mut b, ca_dir) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let png = hex::decode(PNG_HEX).unwrap();
    let media_id = upload(&a, &alice, "image/png", png.clone()).await;
    let a_name = a.server_name();

    // Bob downloads through B, authenticated and legacy: the same bytes and type.
    for path in [
        format!("/_matrix/client/v1/media/download/{a_name}/{media_id}"),
        format!("/_matrix/media/v3/download/{a_name}/{media_id}"),
    ] {
        let (status, content_type, bytes) = fetch(&b, &bob, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {:?}", error_of(&bytes));
        assert_eq!(content_type, "image/png");
        assert_eq!(bytes, png);
    }
    // Thumbnails are made by B from its copy.
    let path = format!("/_matrix/client/v1/media/thumbnail/{a_name}/{media_id}?width=32&height=32&method=scale");
    let (status, content_type, bytes) = fetch(&b, &bob, &path).await;
    assert_eq!(status, StatusCode::OK, "{:?}", error_of(&bytes));
    assert_eq!(content_type, "image/png");
    assert_eq!(png_size(&bytes), (32, 24));

    // A serves its upload to B over federation as multipart/mixed, only when signed.
    let client = client_of(&b, &ca_dir);
    let download = FederationRequest::get(&a_name, format!("/_matrix/federation/v1/media/download/{media_id}"));
    let reply = client.fetch(download.clone(), 1 << 20).await.unwrap();
    let content_type = reply.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("multipart/mixed; boundary="), "{content_type}");
    let part = myelin_federationapi::multipart::parse(content_type, &reply.body).unwrap();
    assert_eq!((part.content_type.as_deref(), part.bytes), (Some("image/png"), png.clone()));
    let thumbnail = FederationRequest::get(
        &a_name,
        format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=16&height=16&method=crop"),
    );
    let reply = client.fetch(thumbnail, 1 << 20).await.unwrap();
    let part = myelin_federationapi::multipart::parse(reply.headers["content-type"].to_str().unwrap(), &reply.body);
    assert_eq!(png_size(&part.unwrap().bytes), (16, 16));
    let (status, reply) = status_of(client.send(download.unsigned()).await);
    assert_eq!(status, 401, "unsigned: {reply}");
    assert_eq!(reply["errcode"], "M_UNAUTHORIZED");
    let unknown = FederationRequest::get(&a_name, "/_matrix/federation/v1/media/download/abcdefghijklmnopqrstuvwx");
    let (status, reply) = status_of(client.send(unknown).await);
    assert_eq!((status, reply["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{reply}");

    // Unknown remote media, a remote server that cannot be reached, a bad server name.
    let (status, _, body) =
        fetch(&b, &bob, &format!("/_matrix/client/v1/media/download/{a_name}/abcdefghijklmnopqrstuvwx")).await;
    assert_eq!((status, error_of(&body)["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));
    let (status, _, body) = fetch(&b, &bob, "/_matrix/client/v1/media/download/localhost:1/abcdef").await;
    assert_eq!((status, error_of(&body)["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));
    let (status, _, body) =
        fetch(&b, &bob, &format!("/_matrix/media/v3/download/{a_name}/{media_id}x?allow_remote=false")).await;
    assert_eq!((status, error_of(&body)["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));

    // A file larger than B accepts is refused.
    let big = upload(&a, &alice, "application/octet-stream", vec![7; 4096]).await;
    b.restart_with_env(&[("MYELIN_CLIENT_API__MAX_UPLOAD_SIZE", "1000")]).await;
    let (status, _, body) = fetch(&b, &bob, &format!("/_matrix/client/v1/media/download/{a_name}/{big}")).await;
    assert_eq!((status, error_of(&body)["errcode"].as_str()), (StatusCode::BAD_GATEWAY, Some("M_TOO_LARGE")));

    // With A gone, B still serves its copy.
    a.stop().await;
    let (status, _, bytes) = fetch(&b, &bob, &format!("/_matrix/client/v1/media/download/{a_name}/{media_id}")).await;
    assert_eq!(status, StatusCode::OK, "{:?}", error_of(&bytes));
    assert_eq!(bytes, png);
}

#[tokio::test]
async fn remote_aliases_and_profiles_are_asked_of_their_server() {
    let (a, b, _ca_dir) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let a_name = a.server_name();
    let room = a.create_room(&alice, json!({"room_alias_name": "lobby"})).await;

    let alias = crate::urlencode(&format!("#lobby:{a_name}"));
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/directory/room/{alias}")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["room_id"], room.as_str());
    assert_eq!(reply["servers"][0], a_name.as_str());
    let unknown = crate::urlencode(&format!("#nowhere:{a_name}"));
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/directory/room/{unknown}")).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{reply}");
    let unreachable = crate::urlencode("#lobby:localhost:1");
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/directory/room/{unreachable}")).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{reply}");

    let alice_id = format!("@alice:{a_name}");
    let (status, reply) = a
        .put(&alice, &format!("/_matrix/client/v3/profile/{alice_id}/displayname"), json!({"displayname": "Alice A"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let pronouns = format!("/_matrix/client/v3/profile/{alice_id}/org.example.pronouns");
    let (status, reply) = a.put(&alice, &pronouns, json!({"org.example.pronouns": {"en": "she/her"}})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/profile/{alice_id}")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!({"displayname": "Alice A", "org.example.pronouns": {"en": "she/her"}}));
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/profile/{alice_id}/displayname")).await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"displayname": "Alice A"})));
    let (status, reply) = b.get(&bob, &pronouns).await;
    assert_eq!((status, reply), (StatusCode::OK, json!({"org.example.pronouns": {"en": "she/her"}})));
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/profile/{alice_id}/avatar_url")).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{reply}");
    let (status, reply) = b.get(&bob, &format!("/_matrix/client/v3/profile/@nobody:{a_name}")).await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{reply}");
    let (status, reply) = b.get(&bob, "/_matrix/client/v3/profile/@alice:localhost:1").await;
    assert_eq!((status, reply["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{reply}");
}
