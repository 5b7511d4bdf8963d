//! End-to-end tests of the `myelin` binary: real processes, real HTTP, real
//! databases (SQLite and PostgreSQL), and real Matrix clients (matrix-nio,
//! matrix-js-sdk, hydrogen-view-sdk in headless Chromium, and a mautrix-python
//! bridge).

mod cs;
mod harness;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{Backend, Server, json_request};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// `user` of `joiner` joins `room_id` through the resident server
/// `resident`; the join's answer.
async fn join_through(joiner: &Server, user: &str, room_id: &str, resident: &Server) -> Value {
    let via = format!("/_matrix/client/v3/join/{room_id}?via={}", resident.server_name());
    let (status, body) = joiner.post(user, &via, json!({})).await;
    assert_eq!(status, StatusCode::OK, "join over federation: {body}\n{}\n{}", joiner.log_tail(), resident.log_tail());
    body
}

#[tokio::test]
async fn run_without_config_serves_the_client_api_from_a_fresh_directory() {
    let server = Server::start_without_config().await;
    let versions: Value = reqwest::get(server.url("/_matrix/client/versions")).await.unwrap().json().await.unwrap();
    assert!(versions["versions"].as_array().unwrap().iter().any(|v| v == "v1.1"), "{versions}");
    for file in ["myelin.db", "signing.key", "tls.crt", "tls.key"] {
        assert!(server.data_dir().join(file).exists(), "{file} was not created");
    }
}

#[tokio::test]
async fn matrix_nio_receives_100_messages_in_order_on_sqlite() {
    nio_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn matrix_nio_receives_100_messages_in_order_on_postgres() {
    nio_flow(Backend::Postgres).await;
}

async fn nio_flow(backend: Backend) {
    let server = Server::start(backend).await;
    let script = harness::repo_path("tests/clients/nio_flow.py");
    let base_url = server.base_url();
    let args = [script.as_os_str(), OsStr::new(&base_url), OsStr::new(harness::SHARED_SECRET), OsStr::new("100")];
    harness::run_client(&server, harness::python(), &args, "received 100 messages in order").await;
}

/// Issue acceptance: matrix-nio with its e2e extra, two users on two
/// devices each, messages encrypted and decrypted on every other device.
#[tokio::test]
async fn matrix_nio_exchanges_encrypted_messages_between_four_devices() {
    let server = Server::start(Backend::Sqlite).await;
    let script = harness::repo_path("tests/clients/nio_e2e.py");
    let base_url = server.base_url();
    let args = [script.as_os_str(), OsStr::new(&base_url), OsStr::new(harness::SHARED_SECRET)];
    harness::run_client(&server, harness::python(), &args, "every device decrypted both messages").await;
}

/// Issue acceptance: schemathesis over the spec's client-server and
/// server-server definitions finds no server error and no response that
/// breaks the schema (beyond the explained baseline beside the script).
/// Its reports stay in `target/schemathesis` for `CONFORMANCE.md`.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let server = Server::start(Backend::Sqlite).await;
    let spec_dir = std::env::var_os("MYELIN_SPEC_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| harness::repo_path("../shared/spec"));
    assert!(spec_dir.join("client-server.json").exists(), "no spec at {}; set MYELIN_SPEC_DIR", spec_dir.display());
    let out = harness::repo_path("target/schemathesis");
    let _ = std::fs::remove_dir_all(&out);
    let script = harness::repo_path("tests/conformance/schemathesis_run.py");
    let (base_url, federation_url) = (server.base_url(), server.federation_url());
    let args = [
        script.as_os_str(),
        OsStr::new(&base_url),
        OsStr::new(&federation_url),
        OsStr::new(harness::SHARED_SECRET),
        spec_dir.as_os_str(),
        out.as_os_str(),
    ];
    // The script fails on any failure; the summary lines say what ran.
    let stdout = harness::run_client(&server, harness::python(), &args, "schemathesis server-server:").await;
    for definition in ["client-server", "server-server"] {
        let line = stdout.lines().find(|l| l.starts_with(&format!("schemathesis {definition}:"))).unwrap_or_default();
        assert!(line.contains(" 0 failing, 0 errors"), "{definition}: {line}\n{stdout}");
    }
}

/// Issue acceptance: matrix-js-sdk drives a full session between two users
/// (profile and avatar, alias, invite, join, message, reaction, thread,
/// typing, receipt, edit, redaction, search, leave), each step checked in
/// the other user's synced client state.
#[tokio::test]
async fn matrix_js_sdk_drives_a_full_session_between_two_users() {
    let server = Server::start(Backend::Sqlite).await;
    let script = harness::repo_path("tests/clients/js/session.mjs");
    let base_url = server.base_url();
    let args = [script.as_os_str(), OsStr::new(&base_url), OsStr::new(harness::SHARED_SECRET)];
    harness::run_client(&server, harness::node(), &args, "js-sdk session complete").await;
}

/// Issue acceptance: matrix-js-sdk's `SlidingSync` (simplified sliding
/// sync, MSC4186) shows a room list with the other user's messages, one of
/// them arriving during a long poll, and an invite, then the invited room
/// once joined.
#[tokio::test]
async fn matrix_js_sdk_sliding_sync_shows_rooms_messages_and_an_invite() {
    let server = Server::start(Backend::Postgres).await;
    let script = harness::repo_path("tests/clients/js/sliding_sync.mjs");
    let base_url = server.base_url();
    let args = [script.as_os_str(), OsStr::new(&base_url), OsStr::new(harness::SHARED_SECRET)];
    harness::run_client(&server, harness::node(), &args, "js-sdk sliding sync complete").await;
}

/// The same session as the matrix-js-sdk one, driven by matrix-nio, on PostgreSQL.
#[tokio::test]
async fn matrix_nio_drives_a_full_session_between_two_users() {
    let server = Server::start(Backend::Postgres).await;
    let script = harness::repo_path("tests/clients/nio_session.py");
    let base_url = server.base_url();
    let args = [script.as_os_str(), OsStr::new(&base_url), OsStr::new(harness::SHARED_SECRET)];
    harness::run_client(&server, harness::python(), &args, "nio session complete").await;
}

/// A bridge written with mautrix-python (the mautrix bridges' framework),
/// registered as an application service: it pings itself, registers a
/// bridged user, joins, and sends as it (with timestamp massaging), and
/// receives a human's reply in a transaction.
#[tokio::test]
async fn mautrix_python_bridge_acts_as_its_users() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("mautrix.yaml");
    let yaml = format!(
        "id: mautrix\nurl: http://127.0.0.1:{port}\nas_token: mautrix-as-token\nhs_token: mautrix-hs-token\n\
         sender_localpart: _mx_bot\nnamespaces:\n  users: [{{exclusive: true, regex: '@_mx_.*'}}]\n"
    );
    std::fs::write(&registration, yaml).unwrap();
    let files = registration.display().to_string();
    let server = Server::start_with_env(Backend::Sqlite, &[("MYELIN_GLOBAL__APP_SERVICE_CONFIG_FILES", &files)]).await;
    let human = server.register("alice").await;
    let script = harness::repo_path("tests/clients/mautrix_bridge.py");
    let (base_url, server_name, port) = (server.base_url(), server.server_name(), port.to_string());
    let args =
        [script.as_os_str(), OsStr::new(&base_url), OsStr::new(&server_name), OsStr::new(&human), OsStr::new(&port)];
    harness::run_client(&server, harness::python(), &args, "mautrix bridge complete").await;
}

/// Issue acceptance: hydrogen-view-sdk in headless Chromium logs in as the
/// viewer and renders the messages another user sent; the screenshot goes
/// to the target directory's test output.
#[tokio::test]
async fn hydrogen_renders_a_timeline_of_messages_another_user_sent() {
    let server = Server::start(Backend::Sqlite).await;
    let sender = server.register("sender").await;
    let viewer = server.register("viewer").await;
    let viewer_id = format!("@viewer:{}", server.server_name());
    let room_id = server.create_room(&sender, json!({"name": "Gallery", "invite": [viewer_id]})).await;
    let (status, joined) = server.post(&viewer, &format!("/_matrix/client/v3/join/{room_id}"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let texts = ["First light over the harbour", "Gulls on the breakwater", "Rain by noon"];
    for (n, text) in texts.iter().enumerate() {
        server.send_message(&sender, &room_id, &format!("gallery-{n}"), text).await;
    }

    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hydrogen-timeline");
    let screenshot = out_dir.join("timeline.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = harness::repo_path("tests/clients/js/hydrogen.mjs");
    let base_url = server.base_url();
    let mut args = vec![
        script.as_os_str(),
        OsStr::new(&base_url),
        OsStr::new("viewer"),
        OsStr::new(harness::PASSWORD),
        OsStr::new(&room_id),
        out_dir.as_os_str(),
    ];
    args.extend(texts.iter().map(OsStr::new));
    harness::run_client(&server, harness::node(), &args, "screenshot:").await;
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
}

#[tokio::test]
async fn rooms_messages_and_tokens_survive_a_restart_and_txn_ids_stay_idempotent() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut server = Server::start(backend).await;
        let alice = server.register("alice").await;
        let room_id = server.create_room(&alice, json!({"name": "durable"})).await;
        let first = server.send_message(&alice, &room_id, "txn-1", "before restart").await;

        server.restart().await;

        let whoami = server.get(&alice, "/_matrix/client/v3/account/whoami").await;
        assert_eq!(whoami.0, StatusCode::OK, "{backend:?}: token survives: {}", whoami.1);
        let again = server.send_message(&alice, &room_id, "txn-1", "before restart").await;
        assert_eq!(again, first, "{backend:?}: a retried PUT /send returns the original event id");
        let (status, name) =
            server.get(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.name/")).await;
        assert_eq!((status, name["name"].as_str()), (StatusCode::OK, Some("durable")), "{backend:?}");
        let (status, joined) = server.get(&alice, "/_matrix/client/v3/joined_rooms").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(joined["joined_rooms"], json!([room_id]), "{backend:?}");
        let (status, messages) =
            server.get(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=50")).await;
        assert_eq!(status, StatusCode::OK, "{messages}");
        let bodies: Vec<&str> = messages["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, ["before restart"], "{backend:?}: exactly one message, the original");
    }
}

#[tokio::test]
async fn bad_requests_get_the_spec_errors() {
    let server = Server::start(Backend::Sqlite).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server.create_room(&alice, json!({"preset": "private_chat"})).await;

    let (status, body) = server.get("not-a-token", "/_matrix/client/v3/account/whoami").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")));

    let (status, body) =
        json_request(reqwest::Method::POST, &server.url("/_matrix/client/v3/createRoom"), Some(&alice), "{not json")
            .await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::BAD_REQUEST, Some("M_NOT_JSON")), "{body}");

    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1");
    let (status, body) = server.put(&bob, &path, json!({"msgtype": "m.text", "body": "let me in"})).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");

    let huge = "x".repeat(70_000);
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t2");
    let (status, body) = server.put(&alice, &path, json!({"msgtype": "m.text", "body": huge})).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE")), "{body}");

    let (status, body) = json_request(
        reqwest::Method::POST,
        &server.url("/_matrix/client/v3/register"),
        None,
        &json!({"username": "mallory", "password": "pw", "auth": {"type": "m.login.dummy"}}).to_string(),
    )
    .await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");

    let (status, body) = server.get(&alice, "/_matrix/client/v3/no/such/endpoint").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED")), "{body}");

    // A room whose only server cannot be reached is not found; no 5xx.
    let path = "/_matrix/client/v3/join/%21nowhere%3Aunreachable.invalid?via=unreachable.invalid";
    let (status, body) = server.post(&alice, path, json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{body}");
}

#[tokio::test]
async fn metrics_and_health_are_served() {
    let server = Server::start(Backend::Sqlite).await;
    let alice = server.register("alice").await;
    server.create_room(&alice, json!({})).await;
    let health = reqwest::get(server.url("/health")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("myelin_http_request_duration_seconds"), "per-route latency histogram");
    assert!(metrics.contains("process_resident_memory_bytes"), "process metrics");
    assert!(metrics.contains("myelin_bus_records_produced_total"), "bus metrics");
    assert!(!metrics.contains(&alice), "no access token in metrics");
    assert!(!server.log_tail().contains(&alice), "no access token in logs");
}

#[tokio::test]
async fn sync_long_poll_wakes_on_a_new_message() {
    let server = Server::start(Backend::Sqlite).await;
    let alice = server.register("alice").await;
    let room_id = server.create_room(&alice, json!({})).await;
    let (_, initial) = server.get(&alice, "/_matrix/client/v3/sync").await;
    let since = initial["next_batch"].as_str().unwrap().to_owned();

    // createRoom's last events may still be on their way to the sync API,
    // so a poll can return early with them: keep polling until the message.
    let poll = {
        let url = server.url("/_matrix/client/v3/sync?timeout=30000&since=");
        let token = alice.clone();
        let room_id = room_id.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut since = since;
            loop {
                let body: Value = reqwest::Client::new()
                    .get(format!("{url}{since}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let timeline = &body["rooms"]["join"][&room_id]["timeline"]["events"];
                if timeline.as_array().is_some_and(|events| events.iter().any(|e| e["content"]["body"] == "wake up")) {
                    return (started.elapsed(), body);
                }
                since = body["next_batch"].as_str().unwrap().to_owned();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.send_message(&alice, &room_id, "wake", "wake up").await;
    let (elapsed, body) = poll.await.unwrap();
    // A poll that slept through the event would return only after 30 s.
    assert!(elapsed < Duration::from_secs(10), "long poll returned after {elapsed:?}, not on the event");
    let events = body["rooms"]["join"][&room_id]["timeline"]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["content"]["body"] == "wake up"), "{body}");
}

#[tokio::test]
async fn two_servers_federate_a_room_both_ways_on_sqlite() {
    federate_a_room_both_ways(Backend::Sqlite).await;
}

#[tokio::test]
async fn two_servers_federate_a_room_both_ways_on_postgres() {
    federate_a_room_both_ways(Backend::Postgres).await;
}

/// Two servers federating on loopback: users of B join A's public room by
/// room id through `via` and by A's alias, each side sends 20 messages, and
/// both see all 40 in the same order through `/sync`; what A's room said
/// before B joined reaches B's `/messages` by backfill.
async fn federate_a_room_both_ways(backend: Backend) {
    let (a, b, _ca) = Server::start_federated_pair(backend).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room_id =
        a.create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby"})).await;
    let history: Vec<String> = (0..5).map(|i| format!("before B {i}")).collect();
    for (i, body) in history.iter().enumerate() {
        a.send_message(&alice, &room_id, &format!("h{i}"), body).await;
    }

    let joined = join_through(&b, &bob, &room_id, &a).await;
    assert_eq!(joined["room_id"], room_id.as_str());

    // Joining again is an ordinary local join now that B has the room.
    let (status, again) = b.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/join"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    // A's alias, resolved by A over federation; A's answer says where to join.
    let carol = b.register("carol").await;
    let alias = urlencode(&format!("#lobby:{}", a.server_name()));
    let (status, joined) = b.post(&carol, &format!("/_matrix/client/v3/join/{alias}"), json!({})).await;
    assert_eq!((status, joined["room_id"].as_str()), (StatusCode::OK, Some(room_id.as_str())), "{joined}");
    let unknown = urlencode(&format!("#nothing:{}", a.server_name()));
    let (status, refused) = b.post(&carol, &format!("/_matrix/client/v3/join/{unknown}"), json!({})).await;
    assert_eq!((status, refused["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{refused}");

    let filter = r#"{"room":{"timeline":{"limit":100}}}"#;
    let bodies = |server: &Server, token: &str| {
        let url = server.url(&format!("/_matrix/client/v3/sync?filter={}", urlencode(filter)));
        let token = token.to_owned();
        let room_id = room_id.clone();
        async move {
            let (_, body) = json_request(reqwest::Method::GET, &url, Some(&token), "").await;
            body["rooms"]["join"][&room_id]["timeline"]["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .filter(|e| e["type"] == "m.room.message")
                        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    let wait_for = |server: &'static str, count: usize| format!("{server} to see {count} messages");

    for i in 0..20 {
        a.send_message(&alice, &room_id, &format!("a{i}"), &format!("from A {i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen = bodies(&b, &bob).await;
        if seen.len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.len(), 20, "{}: {seen:?}\n{}", wait_for("B", 20), a.log_tail());
    for i in 0..20 {
        b.send_message(&bob, &room_id, &format!("b{i}"), &format!("from B {i}")).await;
    }
    let expected: Vec<String> =
        (0..20).map(|i| format!("from A {i}")).chain((0..20).map(|i| format!("from B {i}"))).collect();
    let everything: Vec<String> = history.iter().cloned().chain(expected.iter().cloned()).collect();
    let mut on_a = Vec::new();
    for _ in 0..300 {
        on_a = bodies(&a, &alice).await;
        if on_a.len() >= 45 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(on_a, everything, "{}\n{}", wait_for("A", 45), b.log_tail());
    assert_eq!(bodies(&b, &bob).await, expected, "B sees the same order, from its join on");

    // Paging back past Bob's join: B backfills the rest from A.
    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100");
    let (status, page) = b.get(&bob, &path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut paged: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    paged.reverse();
    assert_eq!(paged, everything, "history before the join, in order\n{}\n{}", b.log_tail(), a.log_tail());

    // An invite across servers: B countersigns it, Bob sees it with the
    // room's stripped state and joins the invite-only room through A.
    let hideout = a.create_room(&alice, json!({"preset": "private_chat", "name": "Hideout"})).await;
    let invite = format!("/_matrix/client/v3/rooms/{hideout}/invite");
    let bob_id = format!("@bob:{}", b.server_name());
    let (status, body) = a.post(&alice, &invite, json!({"user_id": bob_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}\n{}", a.log_tail(), b.log_tail());
    let mut invited = Value::Null;
    for _ in 0..100 {
        let (_, body) = b.get(&bob, "/_matrix/client/v3/sync").await;
        invited = body["rooms"]["invite"][&hideout]["invite_state"]["events"].clone();
        if invited.is_array() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let invited = invited.as_array().unwrap_or_else(|| panic!("no invite on B\n{}", b.log_tail())).clone();
    assert!(invited.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Hideout"), "{invited:?}");
    assert!(invited.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id.as_str()));
    let via = format!("/_matrix/client/v3/join/{hideout}?via={}", a.server_name());
    let (status, joined) = b.post(&bob, &via, json!({})).await;
    assert_eq!(status, StatusCode::OK, "joining the invite-only room: {joined}\n{}", a.log_tail());
    let (status, member) =
        a.get(&alice, &format!("/_matrix/client/v3/rooms/{hideout}/state/m.room.member/{bob_id}")).await;
    assert_eq!((status, member["membership"].as_str()), (StatusCode::OK, Some("join")), "{member}");

    // Carol rejects an invite to a room B is not in: her leave goes through A.
    let closet = a.create_room(&alice, json!({"preset": "private_chat"})).await;
    let carol_id = format!("@carol:{}", b.server_name());
    let (status, body) =
        a.post(&alice, &format!("/_matrix/client/v3/rooms/{closet}/invite"), json!({"user_id": carol_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = b.post(&carol, &format!("/_matrix/client/v3/rooms/{closet}/leave"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "rejecting the invite: {body}\n{}\n{}", b.log_tail(), a.log_tail());
    let (status, member) =
        a.get(&alice, &format!("/_matrix/client/v3/rooms/{closet}/state/m.room.member/{carol_id}")).await;
    assert_eq!((status, member["membership"].as_str()), (StatusCode::OK, Some("leave")), "{member}");
    let (_, body) = b.get(&carol, "/_matrix/client/v3/sync").await;
    assert!(body["rooms"]["invite"].get(&closet).is_none(), "the invite is gone: {body}");
}

/// Typing notices, public read receipts and to-device messages cross
/// servers as EDUs; a private receipt never leaves its server.
#[tokio::test]
async fn typing_receipts_and_to_device_messages_reach_the_other_server() {
    let (a, b, _ca) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room_id = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&b, &bob, &room_id, &a).await;
    let alice_id = format!("@alice:{}", a.server_name());
    let bob_id = format!("@bob:{}", b.server_name());

    let typing_users = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["type"] == "m.typing")
            .flat_map(|e| e["content"]["user_ids"].as_array().cloned().unwrap_or_default())
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect()
    };
    let reader_of = |events: &[Value], event_id: &str, user: &str| {
        events.iter().any(|e| e["type"] == "m.receipt" && !e["content"][event_id]["m.read"][user].is_null())
    };

    let typing = json!({"typing": true, "timeout": 20000});
    let (status, _) = a.put(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/typing/{alice_id}"), typing).await;
    assert_eq!(status, StatusCode::OK);
    ephemeral_until(&b, &bob, &room_id, |events| typing_users(events).contains(&alice_id)).await;
    let typing = json!({"typing": true, "timeout": 20000});
    let (status, _) = b.put(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/typing/{bob_id}"), typing).await;
    assert_eq!(status, StatusCode::OK);
    ephemeral_until(&a, &alice, &room_id, |events| typing_users(events).contains(&bob_id)).await;
    let stop = json!({"typing": false});
    b.put(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/typing/{bob_id}"), stop).await;
    ephemeral_until(&a, &alice, &room_id, |events| !typing_users(events).contains(&bob_id)).await;

    // A private receipt, then a public one on a later event: only the public one arrives.
    let first = a.send_message(&alice, &room_id, "r1", "first").await;
    let second = a.send_message(&alice, &room_id, "r2", "second").await;
    let private = format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read.private/{first}");
    let mut status = StatusCode::NOT_FOUND;
    // B may not have received the event yet.
    for _ in 0..300 {
        (status, _) = b.post(&bob, &private, json!({})).await;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::OK);
    let mut public = StatusCode::NOT_FOUND;
    for _ in 0..300 {
        (public, _) =
            b.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{second}"), json!({})).await;
        if public == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(public, StatusCode::OK);
    let events = ephemeral_until(&a, &alice, &room_id, |events| reader_of(events, &second, &bob_id)).await;
    assert!(!reader_of(&events, &first, &bob_id), "a private receipt left its server: {events:?}");
    // And A's own receipt reaches B.
    a.post(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{second}"), json!({})).await;
    ephemeral_until(&b, &bob, &room_id, |events| reader_of(events, &second, &alice_id)).await;

    // To-device messages: to one named device, and to every device (`*`,
    // which only the recipient's server can expand).
    let (_, whoami) = b.get(&bob, "/_matrix/client/v3/account/whoami").await;
    let bob_device = whoami["device_id"].as_str().unwrap().to_owned();
    let named = json!({"messages": {bob_id.clone(): {bob_device.clone(): {"n": 1}}}});
    let (status, _) = a.put(&alice, "/_matrix/client/v3/sendToDevice/m.test/t1", named).await;
    assert_eq!(status, StatusCode::OK);
    let everywhere = json!({"messages": {bob_id.clone(): {"*": {"n": 2}}}});
    a.put(&alice, "/_matrix/client/v3/sendToDevice/m.test/t2", everywhere).await;
    let url = b.url("/_matrix/client/v3/sync?timeout=0");
    let mut received = Vec::new();
    for _ in 0..300 {
        let (_, body) = json_request(reqwest::Method::GET, &url, Some(&bob), "").await;
        received = body["to_device"]["events"].as_array().cloned().unwrap_or_default();
        if received.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: Vec<(Value, Value, Value)> =
        received.iter().map(|e| (e["sender"].clone(), e["type"].clone(), e["content"]["n"].clone())).collect();
    assert_eq!(seen, [(json!(alice_id), json!("m.test"), json!(1)), (json!(alice_id), json!("m.test"), json!(2))]);
}

/// End-to-end encryption across servers: B's user downloads A's user's
/// device keys and claims a one-time key over federation, sees A's user's
/// new device in `device_lists.changed` (and `/keys/changes`), and A's
/// user's presence; a server that cannot be reached is a failure.
#[tokio::test]
async fn keys_device_lists_and_presence_cross_servers() {
    let (a, b, _ca) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let alice_id = format!("@alice:{}", a.server_name());
    let (_, whoami) = a.get(&alice, "/_matrix/client/v3/account/whoami").await;
    let alice_device = whoami["device_id"].as_str().unwrap().to_owned();
    let device_keys = json!({
        "user_id": alice_id, "device_id": alice_device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{alice_device}"): "curve", format!("ed25519:{alice_device}"): "ed"},
        "signatures": {alice_id.clone(): {format!("ed25519:{alice_device}"): "sig"}},
    });
    let one_time_keys = json!({
        "signed_curve25519:AAAA": {"key": "one", "signatures": {}},
        "signed_curve25519:AAAB": {"key": "two", "signatures": {}},
    });
    let upload = json!({"device_keys": device_keys, "one_time_keys": one_time_keys});
    let (status, counts) = a.post(&alice, "/_matrix/client/v3/keys/upload", upload).await;
    assert_eq!((status, &counts["one_time_key_counts"]["signed_curve25519"]), (StatusCode::OK, &json!(2)));
    let room_id = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&b, &bob, &room_id, &a).await;

    // Keys: the device's own, as uploaded, and a server that does not answer.
    let query = json!({"device_keys": {alice_id.clone(): [], "@nobody:unreachable.invalid": []}, "timeout": 3000});
    let (status, keys) = b.post(&bob, "/_matrix/client/v3/keys/query", query).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let got = &keys["device_keys"][&alice_id][&alice_device];
    assert_eq!((&got["keys"], &got["user_id"]), (&device_keys["keys"], &json!(alice_id)), "{keys}");
    assert!(keys["failures"]["unreachable.invalid"].is_object(), "{keys}");
    assert!(keys["failures"].get(a.server_name()).is_none(), "{keys}");

    let claim = json!({"one_time_keys": {alice_id.clone(): {alice_device.clone(): "signed_curve25519"}}});
    let (status, claimed) = b.post(&bob, "/_matrix/client/v3/keys/claim", claim).await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    assert_eq!(claimed["one_time_keys"][&alice_id][&alice_device]["signed_curve25519:AAAA"]["key"], "one", "{claimed}");
    let (_, counts) = a.post(&alice, "/_matrix/client/v3/keys/upload", json!({})).await;
    assert_eq!(counts["one_time_key_counts"]["signed_curve25519"], 1, "the claim used a key up: {counts}");

    // A new device of Alice's reaches Bob's device list changes.
    let (_, first) = b.get(&bob, "/_matrix/client/v3/sync?timeout=0").await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": harness::PASSWORD, "device_id": "SECONDDEVICE"});
    let (status, second) =
        json_request(reqwest::Method::POST, &a.url("/_matrix/client/v3/login"), None, &login.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let mut changed = Value::Null;
    for _ in 0..300 {
        let (_, body) = b.get(&bob, &format!("/_matrix/client/v3/sync?timeout=0&since={since}")).await;
        changed = body["device_lists"]["changed"].clone();
        if changed.as_array().is_some_and(|users| users.contains(&json!(alice_id))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(changed.as_array().unwrap().contains(&json!(alice_id)), "{changed}\n{}", b.log_tail());
    let (_, now) = b.get(&bob, "/_matrix/client/v3/sync?timeout=0").await;
    let to = now["next_batch"].as_str().unwrap();
    let (status, changes) = b.get(&bob, &format!("/_matrix/client/v3/keys/changes?from={since}&to={to}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(changes["changed"].as_array().unwrap().contains(&json!(alice_id)), "{changes}");
    // Bob's next query shows the new device: nothing was cached.
    let query = json!({"device_keys": {alice_id.clone(): []}});
    let (_, keys) = b.post(&bob, "/_matrix/client/v3/keys/query", query).await;
    assert!(keys["device_keys"][&alice_id][&alice_device].is_object(), "{keys}");

    // Presence set on A shows on B, by the status endpoint and in /sync.
    let status_path = format!("/_matrix/client/v3/presence/{alice_id}/status");
    let (status, _) = a.put(&alice, &status_path, json!({"presence": "unavailable", "status_msg": "tea"})).await;
    assert_eq!(status, StatusCode::OK);
    let mut seen = Value::Null;
    for _ in 0..300 {
        (_, seen) = b.get(&bob, &status_path).await;
        if seen["status_msg"] == "tea" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((&seen["presence"], &seen["status_msg"]), (&json!("unavailable"), &json!("tea")), "{seen}");
    let (_, body) = b.get(&bob, &format!("/_matrix/client/v3/sync?timeout=0&since={since}")).await;
    let events = body["presence"]["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["sender"] == alice_id.as_str() && e["content"]["status_msg"] == "tea"),
        "{events:?}"
    );
}

/// The room's ephemeral events as `server` shows them to `token`, once `found` holds.
async fn ephemeral_until(server: &Server, token: &str, room_id: &str, found: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let url = server.url("/_matrix/client/v3/sync?timeout=0");
    let mut events = Vec::new();
    for _ in 0..300 {
        let (_, body) = json_request(reqwest::Method::GET, &url, Some(token), "").await;
        events = body["rooms"]["join"][room_id]["ephemeral"]["events"].as_array().cloned().unwrap_or_default();
        if found(&events) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never found in {events:?}\n{}", server.log_tail());
}

/// The sender's queue is a table: what A queued for B while B was down is
/// delivered once B is back, even though A was killed in between.
#[tokio::test]
async fn pdus_queued_for_a_server_that_is_down_survive_a_restart_and_arrive() {
    let (mut a, mut b, _ca) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room_id = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&b, &bob, &room_id, &a).await;

    b.stop().await;
    a.send_message(&alice, &room_id, "down", "sent while B was down").await;
    // Give the sender time to fail once and back off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.restart().await;
    b.run().await;

    let url = b.url(&format!("/_matrix/client/v3/sync?filter={}", urlencode(r#"{"room":{"timeline":{"limit":50}}}"#)));
    for _ in 0..300 {
        let (_, body) = json_request(reqwest::Method::GET, &url, Some(&bob), "").await;
        let timeline = &body["rooms"]["join"][&room_id]["timeline"]["events"];
        if timeline
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == "sent while B was down"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the queued message never reached B:\n{}\n{}", a.log_tail(), b.log_tail());
}

/// Issue acceptance (catch-up): B is down while A sends more than one
/// transaction's worth of messages (50 PDUs each); once B is back, B's
/// `/messages` shows every one of them, in the order A sent them.
#[tokio::test]
async fn a_server_back_from_downtime_catches_up_on_every_event_in_order() {
    const SENT_WHILE_DOWN: usize = 60;
    let (a, mut b, _ca) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let room_id = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    join_through(&b, &bob, &room_id, &a).await;

    b.stop().await;
    let sent: Vec<String> = (0..SENT_WHILE_DOWN).map(|n| format!("catch-up {n}")).collect();
    for (n, body) in sent.iter().enumerate() {
        a.send_message(&alice, &room_id, &format!("catch-up-{n}"), body).await;
    }
    b.run().await;

    let path = format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=200");
    let mut received = Vec::new();
    // The sender backs off while B is down: its next try may be seconds away.
    for _ in 0..900 {
        let (status, page) = b.get(&bob, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        received = catch_up_bodies(&page);
        if received.len() >= SENT_WHILE_DOWN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(received, sent, "what B shows of what A sent while B was down\n{}\n{}", a.log_tail(), b.log_tail());
}

/// The bodies of the catch-up messages of a backwards `/messages` page, oldest first.
fn catch_up_bodies(page: &Value) -> Vec<String> {
    let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
    let mut bodies: Vec<String> = chunk
        .iter()
        .filter_map(|event| event["content"]["body"].as_str())
        .filter(|body| body.starts_with("catch-up "))
        .map(str::to_owned)
        .collect();
    bodies.reverse();
    bodies
}

/// A push gateway that records the event id of every notification it
/// receives. It holds its first request: it tells the test, which kills the
/// server, and only then answers 200, so the server never learns that
/// notification arrived.
struct CrashingGateway {
    received: Mutex<Vec<String>>,
    first: Mutex<Option<oneshot::Sender<()>>>,
    killed: Notify,
}

async fn crash_on_first_push(
    axum::extract::State(gateway): axum::extract::State<Arc<CrashingGateway>>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let event_id = body["notification"]["event_id"].as_str().unwrap_or_default().to_owned();
    gateway.received.lock().unwrap().push(event_id);
    let first = gateway.first.lock().unwrap().take();
    if let Some(first) = first {
        let _ = first.send(());
        gateway.killed.notified().await;
    }
    axum::Json(json!({"rejected": []}))
}

impl CrashingGateway {
    /// Serve on loopback; the gateway, its notify URL and the signal of its first request.
    async fn start() -> (Arc<Self>, String, oneshot::Receiver<()>) {
        let (first, first_received) = oneshot::channel();
        let gateway =
            Arc::new(Self { received: Mutex::default(), first: Mutex::new(Some(first)), killed: Notify::new() });
        let router = axum::Router::new()
            .route("/_matrix/push/v1/notify", axum::routing::post(crash_on_first_push))
            .with_state(gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (gateway, url, first_received)
    }

    /// How many times each event id was pushed.
    fn pushes(&self) -> HashMap<String, usize> {
        let mut pushes = HashMap::new();
        for event_id in self.received.lock().unwrap().iter() {
            *pushes.entry(event_id.clone()).or_default() += 1;
        }
        pushes
    }
}

/// Issue acceptance: the server is killed after the gateway got a
/// notification but before the server recorded the gateway's 200. After a
/// restart every message is pushed, at least once and at most twice, and
/// only the interrupted one twice.
#[tokio::test]
async fn a_server_killed_mid_push_loses_no_push_and_repeats_at_most_one() {
    let (gateway, gateway_url, first_push) = CrashingGateway::start().await;
    // A short gateway timeout keeps the interrupted request's lease, and so
    // the wait after the restart, short.
    let overrides = [("MYELIN_PUSHER__ALLOW_PRIVATE_GATEWAYS", "true"), ("MYELIN_PUSHER__GATEWAY_TIMEOUT_SECS", "3")];
    let mut server = Server::start_with_env(Backend::Sqlite, &overrides).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room_id = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    let (status, joined) = server.post(&bob, &format!("/_matrix/client/v3/join/{room_id}"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    let pusher = json!({"kind": "http", "app_id": "org.example.app", "pushkey": "bob-phone",
        "app_display_name": "App", "device_display_name": "phone", "lang": "en", "data": {"url": gateway_url}});
    let (status, set) = server.post(&bob, "/_matrix/client/v3/pushers/set", pusher).await;
    assert_eq!(status, StatusCode::OK, "{set}");

    // Sent before the first push arrives: the later ones wait behind it in
    // bob's outbox, or on the bus, when the server dies.
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(server.send_message(&alice, &room_id, &format!("before-{i}"), &format!("before {i}")).await);
    }
    tokio::time::timeout(Duration::from_secs(15), first_push)
        .await
        .unwrap_or_else(|_| panic!("no push reached the gateway:\n{}", server.log_tail()))
        .unwrap();
    server.stop().await;
    gateway.killed.notify_one();
    server.run().await;
    for i in 0..3 {
        sent.push(server.send_message(&alice, &room_id, &format!("after-{i}"), &format!("after {i}")).await);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !sent.iter().all(|event_id| gateway.pushes().contains_key(event_id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every message was pushed: {:?} of {sent:?}\n{}",
            gateway.pushes(),
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pushes = gateway.pushes();
    // The interrupted notification went out again: the kill hit the window.
    let interrupted = gateway.received.lock().unwrap()[0].clone();
    assert_eq!(pushes[&interrupted], 2, "{interrupted} was not pushed again: {pushes:?}");
    for event_id in &sent {
        assert!(pushes[event_id] <= 2, "{event_id} pushed {} times: {pushes:?}", pushes[event_id]);
    }
    let repeated = sent.iter().filter(|event_id| pushes[*event_id] == 2).count();
    assert!(repeated <= 1, "{repeated} messages pushed twice: {pushes:?}");
    assert!(pushes.keys().all(|event_id| sent.contains(event_id)), "only messages notify bob: {pushes:?}");
}

/// Percent-encode a query value.
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The homeserver as separate processes over Kafka and PostgreSQL: two room
/// servers sharing the rooms, and the client API, sync API, pusher and
/// federation API each on their own. matrix-nio's flow runs through them
/// while the room server that owns the room is killed: the other takes the
/// room over, nothing is lost and the order holds.
#[cfg(feature = "kafka")]
#[tokio::test]
async fn distributed_processes_over_kafka_survive_losing_a_room_server() {
    use harness::distributed::Distributed;
    use myelin_testkit::KafkaBroker;

    const INPUT: &str = "roomserver.input";
    const MESSAGES: &str = "200";
    let broker = KafkaBroker::start().await;
    let mut homeserver = Distributed::start(
        &broker,
        &["roomserver", "roomserver", "clientapi", "syncapi", "pusher", "federationapi", "appservice"],
    )
    .await;
    let flow = tokio::process::Command::new(harness::python())
        .arg(harness::repo_path("tests/clients/nio_flow.py"))
        .arg(homeserver.base_url())
        .arg(harness::SHARED_SECRET)
        .arg(MESSAGES)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the matrix-nio flow");

    // Mid-stream: once the room's messages are flowing, the room server that
    // handled most input owns the room's partition.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (owner, survivor_before) = loop {
        let counts = [homeserver.processes[0].handled(INPUT).await, homeserver.processes[1].handled(INPUT).await];
        if counts[0] + counts[1] >= 60 {
            let owner = usize::from(counts[1] > counts[0]);
            break (owner, counts[1 - owner]);
        }
        assert!(tokio::time::Instant::now() < deadline, "no input reached the room servers:\n{}", homeserver.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    homeserver.processes[owner].kill().await;

    let output = tokio::time::timeout(Duration::from_secs(240), flow.wait_with_output())
        .await
        .expect("the nio flow finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nio flow failed:\n{stdout}\n{stderr}\n{}", homeserver.logs());
    assert!(stdout.contains(&format!("received {MESSAGES} messages in order")), "{stdout}");
    let survivor_after = homeserver.processes[1 - owner].handled(INPUT).await;
    assert!(
        survivor_after > survivor_before,
        "the surviving room server handled nothing after the kill ({survivor_before} → {survivor_after})"
    );
}

/// Both deployment shapes of `deploy/` are valid compose files.
#[test]
fn compose_files_are_valid() {
    let docker_compose_v2 =
        std::process::Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    for file in ["deploy/docker-compose.yml", "deploy/docker-compose.distributed.yml"] {
        let mut command = if docker_compose_v2 {
            let mut command = std::process::Command::new("docker");
            command.arg("compose");
            command
        } else {
            std::process::Command::new("docker-compose")
        };
        let output = command
            .arg("-f")
            .arg(harness::repo_path(file))
            .args(["config", "-q"])
            .output()
            .expect("docker compose or docker-compose (scripts/install-test-deps.sh installs it)");
        assert!(output.status.success(), "{file}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Poll `server`'s `/sync` for `token` until `found` holds of the body.
async fn sync_until(server: &Server, token: &str, what: &str, found: impl Fn(&Value) -> bool) -> Value {
    let url = server.url("/_matrix/client/v3/sync?timeout=0");
    let mut body = Value::Null;
    for _ in 0..300 {
        (_, body) = json_request(reqwest::Method::GET, &url, Some(token), "").await;
        if found(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never saw {what} in {body}\n{}", server.log_tail());
}

/// The membership of `user` in `room_id` as `server` shows it to `token`.
async fn membership(server: &Server, token: &str, room_id: &str, user: &str) -> Option<String> {
    let path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{user}");
    let (status, body) = server.get(token, &path).await;
    (status == StatusCode::OK).then(|| body["membership"].as_str().unwrap_or_default().to_owned())
}

/// Knocking on a room of this server and on one of another: the knocker
/// sees the room under `rooms.knock` with its stripped state, the room's
/// members see the knock, an invite answers it, a leave rescinds it; rooms
/// that do not take knocks refuse them.
#[tokio::test]
async fn knocks_on_local_and_remote_rooms_are_seen_answered_and_rescinded() {
    let (a, b, _ca) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let dan = a.register("dan").await;
    let bob = b.register("bob").await;
    let carol = b.register("carol").await;
    let (dan_id, bob_id, carol_id) = (
        format!("@dan:{}", a.server_name()),
        format!("@bob:{}", b.server_name()),
        format!("@carol:{}", b.server_name()),
    );
    let knock_rule = json!({"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}});
    let room_id = a
        .create_room(
            &alice,
            json!({"preset": "private_chat", "name": "Door", "room_alias_name": "door", "initial_state": [knock_rule]}),
        )
        .await;
    let knock = |server: &Server, token: &str, target: &str, query: &str| {
        let path = format!("/_matrix/client/v3/knock/{}{query}", urlencode(target));
        let (server, token) = (server.url(&path), token.to_owned());
        async move { json_request(reqwest::Method::POST, &server, Some(&token), r#"{"reason": "let me in"}"#).await }
    };
    let knocked = |room: String| move |body: &Value| body["rooms"]["knock"][&room]["knock_state"]["events"].is_array();
    let knock_state = |body: &Value, room: &str| body["rooms"]["knock"][room]["knock_state"]["events"].clone();

    // A local knock: Dan sees the room under `knock`, Alice sees his knock.
    let (status, body) = knock(&a, &dan, &room_id, "").await;
    assert_eq!((status, body["room_id"].as_str()), (StatusCode::OK, Some(room_id.as_str())), "{body}");
    let synced = sync_until(&a, &dan, "Dan's knock", knocked(room_id.clone())).await;
    let shown = knock_state(&synced, &room_id);
    let shown = shown.as_array().unwrap();
    assert!(shown.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Door"), "{shown:?}");
    assert!(shown.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "knock"), "{shown:?}");
    assert!(synced["rooms"]["join"].get(&room_id).is_none());
    let timeline_has = |user: String, membership: &'static str| {
        let room = room_id.clone();
        move |body: &Value| {
            body["rooms"]["join"][&room]["timeline"]["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| e["state_key"] == user.as_str() && e["content"]["membership"] == membership)
            })
        }
    };
    sync_until(&a, &alice, "Dan's knock on A", timeline_has(dan_id.clone(), "knock")).await;
    // Dan rescinds the knock by leaving.
    let (status, body) = a.post(&dan, &format!("/_matrix/client/v3/rooms/{room_id}/leave"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(membership(&a, &alice, &room_id, &dan_id).await.as_deref(), Some("leave"));
    sync_until(&a, &dan, "the rescinded knock", |body| body["rooms"]["knock"].get(&room_id).is_none()).await;

    // A remote knock by alias: B knocks through A and keeps A's stripped state.
    let (status, body) = knock(&b, &bob, &format!("#door:{}", a.server_name()), "").await;
    assert_eq!(
        (status, body["room_id"].as_str()),
        (StatusCode::OK, Some(room_id.as_str())),
        "{body}\n{}",
        a.log_tail()
    );
    let synced = sync_until(&b, &bob, "Bob's knock on B", knocked(room_id.clone())).await;
    let shown = knock_state(&synced, &room_id);
    let shown = shown.as_array().unwrap();
    assert!(shown.iter().any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock"));
    assert!(shown.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob_id.as_str()), "{shown:?}");
    sync_until(&a, &alice, "Bob's knock on A", timeline_has(bob_id.clone(), "knock")).await;
    assert_eq!(membership(&a, &alice, &room_id, &bob_id).await.as_deref(), Some("knock"));

    // Carol knocks by room id with `via`, then rescinds the knock: B is not
    // in the room, so her leave goes through A.
    let (status, body) = knock(&b, &carol, &room_id, &format!("?via={}", a.server_name())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    sync_until(&b, &carol, "Carol's knock", knocked(room_id.clone())).await;
    assert_eq!(membership(&a, &alice, &room_id, &carol_id).await.as_deref(), Some("knock"));
    let (status, body) = b.post(&carol, &format!("/_matrix/client/v3/rooms/{room_id}/leave"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", a.log_tail());
    assert_eq!(membership(&a, &alice, &room_id, &carol_id).await.as_deref(), Some("leave"));
    sync_until(&b, &carol, "Carol's rescinded knock", |body| body["rooms"]["knock"].get(&room_id).is_none()).await;

    // Alice answers with an invite; Bob joins through A.
    let (status, body) =
        a.post(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/invite"), json!({"user_id": bob_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", b.log_tail());
    sync_until(&b, &bob, "the invite", |body| body["rooms"]["invite"][&room_id].is_object()).await;
    join_through(&b, &bob, &room_id, &a).await;
    assert_eq!(membership(&a, &alice, &room_id, &bob_id).await.as_deref(), Some("join"));

    // Rooms that take no knocks, and a banned user.
    let forbidden = |(status, body): (StatusCode, Value), what: &str| {
        assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{what}: {body}");
    };
    let public = a.create_room(&alice, json!({"preset": "public_chat"})).await;
    forbidden(knock(&a, &dan, &public, "").await, "a public room");
    forbidden(knock(&b, &carol, &public, &format!("?via={}", a.server_name())).await, "a public room, remotely");
    let invite_only = a.create_room(&alice, json!({"preset": "private_chat"})).await;
    forbidden(knock(&a, &dan, &invite_only, "").await, "an invite-only room");
    let (status, body) =
        a.post(&alice, &format!("/_matrix/client/v3/rooms/{room_id}/ban"), json!({"user_id": carol_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // B is in the room through Bob: its own auth check refuses once the ban is there.
    sync_until(&b, &bob, "Carol's ban on B", timeline_has(carol_id.clone(), "ban")).await;
    forbidden(knock(&b, &carol, &room_id, &format!("?via={}", a.server_name())).await, "a banned user");
    let v6 = a
        .create_room(&alice, json!({"preset": "private_chat", "room_version": "6", "initial_state": [knock_rule]}))
        .await;
    forbidden(knock(&a, &dan, &v6, "").await, "a v6 room");
    let (status, body) = knock(&b, &carol, &v6, &format!("?via={}", a.server_name())).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INCOMPATIBLE_ROOM_VERSION")),
        "a v6 room, remotely: {body}"
    );
    let (status, body) = knock(&a, &dan, "!nowhere:elsewhere.invalid", "").await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{body}");
}

/// A user of A invites a user of B: the invite reaches B's long-polling
/// `/sync` with the room's stripped state, and Bob joins naming no server
/// (the invite's server is the one to ask); both servers show the join.
#[tokio::test]
async fn a_remote_invite_reaches_sync_and_is_joined_without_via() {
    let (a, b, _ca) = Server::start_federated_pair(Backend::Sqlite).await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let bob_id = format!("@bob:{}", b.server_name());
    let (_, body) = b.get(&bob, "/_matrix/client/v3/sync").await;
    let mut since = body["next_batch"].as_str().unwrap().to_owned();
    let room_id = a.create_room(&alice, json!({"preset": "private_chat", "name": "Den"})).await;
    let invite = format!("/_matrix/client/v3/rooms/{room_id}/invite");
    let (status, body) = a.post(&alice, &invite, json!({"user_id": bob_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}\n{}", a.log_tail(), b.log_tail());

    let started = std::time::Instant::now();
    let invite_state = loop {
        let path = format!("/_matrix/client/v3/sync?since={since}&timeout=10000");
        let (status, body) = b.get(&bob, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(events) = body["rooms"]["invite"][&room_id]["invite_state"]["events"].as_array() {
            break events.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no invite on B\n{}\n{}", b.log_tail(), a.log_tail());
        since = body["next_batch"].as_str().unwrap().to_owned();
    };
    assert!(
        invite_state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Den"),
        "{invite_state:?}"
    );
    assert!(
        invite_state.iter().any(|e| e["state_key"] == bob_id.as_str() && e["content"]["membership"] == "invite"),
        "{invite_state:?}"
    );

    let (status, body) = b.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/join"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "joining with no server named: {body}\n{}\n{}", b.log_tail(), a.log_tail());
    let joined = |room: String, user: String| {
        move |body: &Value| {
            body["rooms"]["join"][&room]["timeline"]["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| e["state_key"] == user.as_str() && e["content"]["membership"] == "join")
            })
        }
    };
    sync_until(&b, &bob, "Bob's join on B", joined(room_id.clone(), bob_id.clone())).await;
    sync_until(&a, &alice, "Bob's join on A", joined(room_id.clone(), bob_id.clone())).await;
    assert_eq!(membership(&a, &alice, &room_id, &bob_id).await.as_deref(), Some("join"));
}

/// Three servers in one room: a user of A creates it with an alias, a user
/// of B joins by the alias, one of C by the room id; messages from each
/// arrive on all three in the same order, and a kick, a ban and a change
/// of power levels made on A take effect on B and C.
#[tokio::test]
async fn three_servers_share_a_room_in_one_order_with_kicks_bans_and_power_levels() {
    let (mut servers, _ca) = Server::start_federated(Backend::Sqlite, 3).await;
    let c = servers.pop().unwrap();
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let brian = b.register("brian").await;
    let carol = c.register("carol").await;
    let (bob_id, brian_id, carol_id) = (
        format!("@bob:{}", b.server_name()),
        format!("@brian:{}", b.server_name()),
        format!("@carol:{}", c.server_name()),
    );
    let room_id = a.create_room(&alice, json!({"preset": "public_chat", "room_alias_name": "trio"})).await;
    let alias = urlencode(&format!("#trio:{}", a.server_name()));
    for (server, token) in [(&b, &bob), (&b, &brian)] {
        let (status, body) = server.post(token, &format!("/_matrix/client/v3/join/{alias}"), json!({})).await;
        assert_eq!((status, body["room_id"].as_str()), (StatusCode::OK, Some(room_id.as_str())), "{body}");
    }
    join_through(&c, &carol, &room_id, &a).await;

    let everyone = [(&a, &alice, "A"), (&b, &bob, "B"), (&c, &carol, "C")];
    let filter = urlencode(r#"{"room":{"timeline":{"limit":100}}}"#);
    let bodies = |server: &Server, token: &str| {
        let url = server.url(&format!("/_matrix/client/v3/sync?filter={filter}"));
        let (token, room_id) = (token.to_owned(), room_id.clone());
        async move {
            let (_, body) = json_request(reqwest::Method::GET, &url, Some(&token), "").await;
            body["rooms"]["join"][&room_id]["timeline"]["events"]
                .as_array()
                .map(|events| {
                    events
                        .iter()
                        .filter(|e| e["type"] == "m.room.message")
                        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    // Each server speaks in turn, C first (it knows the others only from
    // the joins A passed on), and waits until all three have its message.
    let mut expected = Vec::new();
    for round in 0..3 {
        for (server, token, name) in [(&c, &carol, "C"), (&b, &bob, "B"), (&a, &alice, "A")] {
            let body = format!("from {name} {round}");
            server.send_message(token, &room_id, &format!("m{round}"), &body).await;
            expected.push(body);
            for (reader, reader_token, reader_name) in everyone {
                let mut seen = Vec::new();
                for _ in 0..300 {
                    seen = bodies(reader, reader_token).await;
                    if seen.len() >= expected.len() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert_eq!(seen, expected, "on {reader_name}\n{}", reader.log_tail());
            }
        }
    }

    // A kicks Brian, makes Bob a moderator and bans Carol (last: a banned
    // user reads the state as it was at the ban).
    let kick = format!("/_matrix/client/v3/rooms/{room_id}/kick");
    let (status, body) = a.post(&alice, &kick, json!({"user_id": brian_id, "reason": "quiet"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let levels_path = format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.power_levels/");
    let (status, mut levels) = a.get(&alice, &levels_path).await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    levels["users"][&bob_id] = json!(50);
    let (status, body) = a.put(&alice, &levels_path, levels).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ban = format!("/_matrix/client/v3/rooms/{room_id}/ban");
    let (status, body) = a.post(&alice, &ban, json!({"user_id": carol_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for (server, token, name) in [(&b, &bob, "B"), (&c, &carol, "C")] {
        let mut seen = (None, None, Value::Null);
        for _ in 0..300 {
            let (_, levels) = server.get(token, &levels_path).await;
            seen = (
                membership(server, token, &room_id, &brian_id).await,
                membership(server, token, &room_id, &carol_id).await,
                levels["users"][&bob_id].clone(),
            );
            if seen == (Some("leave".to_owned()), Some("ban".to_owned()), json!(50)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            seen,
            (Some("leave".to_owned()), Some("ban".to_owned()), json!(50)),
            "on {name}\n{}",
            server.log_tail()
        );
    }
    // The ban and the kick hold on the users' own servers: neither can speak.
    for (server, token, who) in [(&c, &carol, "Carol"), (&b, &brian, "Brian")] {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/after");
        let (status, body) = server.put(token, &path, json!({"msgtype": "m.text", "body": "still here?"})).await;
        assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{who}: {body}");
    }
}
