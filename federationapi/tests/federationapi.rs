//! The federation API over real TLS on loopback: federation API instances
//! named `localhost:<port>` with certificates from one test CA, each with
//! its own bus and database, fetching each other's keys, authenticating
//! each other's requests, answering as notaries, and discovering each other.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, MemoryBackend, Record, Responder, Shutdown, ShutdownTrigger};
use myelin_clientapi::api::{
    KEY_CHANGE_TOPIC, LOCAL_KEYS_TOPIC, LocalDevices, LocalKeysReply, LocalKeysRequest, PRESENCE_TOPIC,
    PROFILE_QUERY_TOPIC, ProfileQuery, ProfileReply, PublicProfile, RECEIPT_TOPIC, REMOTE_TO_DEVICE_TOPIC,
    TYPING_TOPIC,
};
use myelin_config::Config;
use myelin_federationapi::client::{
    AddressPolicy, ClientError, ClientSettings, ConnectError, Dns, DnsError, FederationClient, FederationRequest,
    HickoryDns, SrvRecord,
};
use myelin_federationapi::xmatrix::{XMatrix, signed_message};
use myelin_roomserver::api::{
    CreateRoom, FEDERATION_PERFORM_TOPIC, FEDERATION_QUERY_TOPIC, FederationPerform, FederationPerformOk,
    FederationPerformReply, FederationQuery, FederationQueryOk, FederationQueryReply, INPUT_TOPIC, InputOk, InputReply,
    InputRequest, PduOutcome, PduResult, QUERY_TOPIC, QueryOk, QueryReply, QueryRequest, SendEvent, VerifyKey,
};
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::ManualClock;
use myelin_types::clock::SharedClock;
use myelin_types::ruma::signatures::{
    SigningKeyAlgorithm, hash_and_sign_event, reference_hash, to_canonical_json_string_for_signing,
    verify_canonical_json_bytes,
};
use myelin_types::ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use myelin_types::signing::ServerSigningKey;
use myelin_types::{ErrorCode, MatrixError};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

const NOW_MS: u64 = 1_700_000_000_000;
const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

/// A CA and a leaf certificate for `localhost` and 127.0.0.1 that it signed.
struct TestPki {
    dir: TempDir,
    ca_pem: String,
}

impl TestPki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Myelin test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        write(dir.path(), "ca.pem", &ca.pem());
        write(dir.path(), "tls.crt", &leaf.pem());
        write(dir.path(), "tls.key", &leaf_key.serialize_pem());
        Self { ca_pem: ca.pem(), dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .build()
            .unwrap()
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

/// A loopback port that was free a moment ago: the server name must carry
/// the port before the listener exists.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Default)]
struct Options {
    trusted: Vec<String>,
    denylist: Vec<String>,
    /// Run the real room server on the instance's bus and database.
    room_server: bool,
    /// Name the instance `127.0.0.1:<port>` (an IP literal) rather than `localhost:<port>`.
    ip_literal: bool,
}

struct Instance {
    name: String,
    addr: SocketAddr,
    key: Arc<ServerSigningKey>,
    bus: Bus,
    client: Arc<FederationClient>,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    _db: TestDb,
    _key_dir: TempDir,
}

impl Instance {
    async fn start(pki: &TestPki, db: TestDb, clock: &ManualClock, options: Options) -> Self {
        let port = free_port();
        let name = format!("{}:{port}", if options.ip_literal { "127.0.0.1" } else { "localhost" });
        let mut config = Config::in_dir(pki.dir.path().to_owned());
        config.global.server_name = name.clone();
        config.federation_api.listen = SocketAddr::from(([127, 0, 0, 1], port));
        config.federation_api.ca_file = Some(pki.ca_file());
        config.federation_api.allow_loopback_peers = true;
        config.federation_api.trusted_key_servers = options.trusted;
        config.federation_api.key_denylist = options.denylist;
        let key_file = ServerSigningKey::generate_file_contents();
        let key = Arc::new(ServerSigningKey::parse(&key_file).unwrap());
        let key_dir = tempfile::tempdir().unwrap();
        write(key_dir.path(), "signing.key", &key_file);
        config.global.signing_key_path = key_dir.path().join("signing.key");
        let config = Arc::new(config);
        let shared: SharedClock = Arc::new(clock.clone());
        let bus = Bus::new(Arc::new(MemoryBackend::new(4)), shared.clone());
        let database = Db::connect(&db.url).await.unwrap();
        let (trigger, shutdown) = Shutdown::new();
        let mut tasks = Vec::new();
        if options.room_server {
            let room_server =
                myelin_roomserver::service::start(config.clone(), database.clone(), bus.clone(), shutdown.clone())
                    .await
                    .expect("start room server");
            tasks.extend(room_server.tasks.into_iter().map(|task| {
                tokio::spawn(async move { task.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string()) })
            }));
        }
        let started = myelin_federationapi::start(config, database, bus.clone(), key.clone(), shared, shutdown)
            .await
            .expect("start federation API");
        assert_eq!(started.local_addr.port(), port);
        tasks.extend(started.tasks);
        Self {
            name,
            addr: started.local_addr,
            key,
            bus,
            client: started.client,
            trigger,
            tasks,
            _db: db,
            _key_dir: key_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn stop(&mut self) {
        self.trigger.trigger();
        for task in std::mem::take(&mut self.tasks) {
            tokio::time::timeout(Duration::from_secs(15), task).await.expect("task stops").unwrap().unwrap();
        }
    }

    /// Ask this instance's `federationapi.query` what the room server would ask.
    async fn server_keys(&self, server: &str, key_ids: &[&str]) -> Vec<VerifyKey> {
        let query = FederationQuery::ServerKeys {
            server_name: server.try_into().unwrap(),
            key_ids: key_ids.iter().map(|id| (*id).to_owned()).collect(),
        };
        let reply: FederationQueryReply =
            self.bus.request_json(FEDERATION_QUERY_TOPIC, server, &query, Duration::from_secs(60)).await.unwrap();
        match reply.unwrap() {
            FederationQueryOk::ServerKeys { keys } => keys,
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

fn canonical(value: Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value).unwrap() {
        CanonicalJsonValue::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

/// Whether `entity` signed `object` with `key`.
fn signed_by(object: &Value, entity: &str, key: &ServerSigningKey) -> bool {
    let Some(signature) = object["signatures"][entity][key.key_id()].as_str() else { return false };
    let message = to_canonical_json_string_for_signing(&canonical(object.clone())).unwrap();
    let public = myelin_federationapi::xmatrix::decode(&key.public_key_base64()).unwrap();
    let signature = myelin_federationapi::xmatrix::decode(signature).unwrap();
    verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &public, &signature, message.as_bytes()).is_ok()
}

fn x_matrix(key: &ServerSigningKey, key_id: &str, origin: &str, destination: &str, uri: &str, body: &Value) -> String {
    let content = CanonicalJsonValue::try_from(body.clone()).unwrap();
    let message = signed_message("PUT", uri, origin, destination, Some(&content)).unwrap();
    let header = XMatrix {
        origin: origin.to_owned(),
        destination: Some(destination.to_owned()),
        key_id: key_id.to_owned(),
        signature: key.sign(message.as_bytes()),
    };
    header.to_header()
}

/// Stands in for the room server on an instance's bus: accepts PDUs, rejects
/// those whose body is "bad", and answers an error for one whole room.
struct FakeRoomServer {
    calls: AtomicUsize,
}

#[async_trait]
impl Responder for FakeRoomServer {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let InputRequest::InputPdus(input) = record.json().unwrap() else { panic!("only PDUs are sent") };
        let reply: InputReply = if input.room_id.as_str().starts_with("!broken") {
            Err(MatrixError::forbidden("room is broken"))
        } else {
            let results = input
                .pdus
                .iter()
                .map(|pdu| PduResult {
                    event_id: Some(pdu["event_id"].as_str().unwrap().try_into().unwrap()),
                    outcome: if pdu["content"]["body"] == "bad" {
                        PduOutcome::Rejected { reason: "bad body".to_owned() }
                    } else {
                        PduOutcome::Accepted
                    },
                })
                .collect();
            Ok(InputOk::PdusProcessed { results })
        };
        Ok(serde_json::to_vec(&reply).unwrap())
    }
}

/// Stands in for the room server's server ACL answers: every room admits
/// every server but `!denied:x`, which admits none.
struct FakeAcl;

#[async_trait]
impl Responder for FakeAcl {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let QueryRequest::ServerAllowed { room_id, .. } = record.json().unwrap() else { panic!("only ACLs are asked") };
        let reply: QueryReply = Ok(QueryOk::ServerAllowed { allowed: room_id.as_str() != "!denied:x" });
        Ok(serde_json::to_vec(&reply).unwrap())
    }
}

#[tokio::test]
async fn version_and_own_key_response() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let instance = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let http = pki.http_client();

    let body: Value =
        http.get(instance.url("/_matrix/federation/v1/version")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["server"]["name"], "Myelin");

    let response = http.get(instance.url("/_matrix/key/v2/server")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["server_name"], instance.name);
    assert_eq!(body["verify_keys"][instance.key.key_id()]["key"], instance.key.public_key_base64());
    assert_eq!(body["valid_until_ts"], NOW_MS + WEEK_MS, "dated by the injected clock");
    assert!(signed_by(&body, &instance.name, &instance.key));
    let mut tampered = body.clone();
    tampered["valid_until_ts"] = json!(NOW_MS + 100 * WEEK_MS);
    assert!(!signed_by(&tampered, &instance.name, &instance.key), "a changed field breaks the signature");

    let response = http.get(instance.url("/_matrix/federation/v1/nonsense")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn plain_http_is_not_served() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let instance = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let plain = reqwest::get(format!("http://127.0.0.1:{}/_matrix/federation/v1/version", instance.addr.port())).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "federation is TLS only");
}

#[tokio::test]
async fn a_missing_certificate_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(dir.path().to_owned());
    config.federation_api.listen = "127.0.0.1:0".parse().unwrap();
    let key = Arc::new(ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap());
    let clock: SharedClock = Arc::new(ManualClock::new(0));
    let bus = Bus::new(Arc::new(MemoryBackend::new(1)), clock.clone());
    let db = TestDb::sqlite();
    let database = Db::connect(&db.url).await.unwrap();
    let (_trigger, shutdown) = Shutdown::new();
    let error = myelin_federationapi::start(Arc::new(config), database, bus, key, clock, shutdown).await.err().unwrap();
    assert!(matches!(error, myelin_federationapi::FederationError::Tls { .. }), "{error}");
}

#[tokio::test]
async fn instances_fetch_each_others_keys_and_keep_them() {
    for (db_a, db_b) in [(TestDb::sqlite(), TestDb::sqlite()), (TestDb::postgres().await, TestDb::postgres().await)] {
        let pki = TestPki::new();
        let clock = ManualClock::new(NOW_MS);
        let a = Instance::start(&pki, db_a, &clock, Options::default()).await;
        let mut b = Instance::start(&pki, db_b, &clock, Options::default()).await;
        let b_key_id = b.key.key_id();

        let keys = a.server_keys(&b.name, &[&b_key_id]).await;
        let expected = VerifyKey {
            key_id: b_key_id.clone(),
            public_key: b.key.public_key_base64(),
            valid_until_ts: Some(NOW_MS + WEEK_MS),
            expired_ts: None,
        };
        assert_eq!(keys, std::slice::from_ref(&expected));

        // Stored: answered with B gone, and for a key B never had nothing is invented.
        b.stop().await;
        assert_eq!(a.server_keys(&b.name, &[&b_key_id]).await, std::slice::from_ref(&expected));
        assert_eq!(a.server_keys(&b.name, &["ed25519:unknown"]).await, [expected]);

        // The answer never trusts a key beyond 7 days after it was fetched.
        clock.advance_ms(WEEK_MS + 1);
        let keys = a.server_keys(&b.name, &[&b_key_id]).await;
        assert_eq!(keys[0].valid_until_ts, Some(NOW_MS + WEEK_MS), "capped, and B cannot be refetched");
        // Our own keys are answered without any fetch.
        let own = a.server_keys(&a.name, &[]).await;
        assert_eq!(own[0].public_key, a.key.public_key_base64());
    }
}

#[tokio::test]
async fn signed_requests_are_accepted_and_each_bad_variant_refused() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let (_stop, shutdown) = Shutdown::new();
    let _room_server =
        b.bus.serve("roomserver", INPUT_TOPIC, Arc::new(FakeRoomServer { calls: AtomicUsize::new(0) }), shutdown);

    // Through A's client: signed, and B fetches A's key to check it.
    let body = json!({"origin": a.name, "origin_server_ts": NOW_MS, "pdus": []});
    let answer = a.client.send(FederationRequest::put(&b.name, "/_matrix/federation/v1/send/t1", body)).await.unwrap();
    assert_eq!(answer, json!({"pdus": {}}));

    let http = pki.http_client();
    let uri = "/_matrix/federation/v1/send/t2";
    let body = json!({"origin": a.name, "origin_server_ts": NOW_MS, "pdus": []});
    let send = |auth: Option<String>, body: Value| {
        let mut request = http.put(b.url(uri)).json(&body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let good = x_matrix(&a.key, &a.key.key_id(), &a.name, &b.name, uri, &body);
    let (status, answer) = send(Some(good.clone()), body.clone()).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"pdus": {}})));

    let impostor = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
    let mut altered = body.clone();
    altered["origin_server_ts"] = json!(NOW_MS + 1);
    let cases = [
        ("missing header", None, body.clone()),
        ("not X-Matrix", Some("Bearer abc".to_owned()), body.clone()),
        ("body changed after signing", Some(good.clone()), altered),
        (
            "wrong destination",
            Some(x_matrix(&a.key, &a.key.key_id(), &a.name, "other.example", uri, &body)),
            body.clone(),
        ),
        ("unknown key", Some(x_matrix(&a.key, "ed25519:unknown", &a.name, &b.name, uri, &body)), body.clone()),
        (
            "signed by another key",
            Some(x_matrix(&impostor, &a.key.key_id(), &a.name, &b.name, uri, &body)),
            body.clone(),
        ),
        (
            "origin that is not a server name",
            Some(x_matrix(&a.key, &a.key.key_id(), "bad name", &b.name, uri, &body)),
            body.clone(),
        ),
    ];
    for (case, auth, body) in cases {
        let (status, answer) = send(auth, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {answer}");
        assert_eq!(answer["errcode"], "M_UNAUTHORIZED", "{case}");
    }

    // Correctly signed by A, but the transaction claims another origin.
    let forged = json!({"origin": "evil.example", "origin_server_ts": NOW_MS, "pdus": []});
    let auth = x_matrix(&a.key, &a.key.key_id(), &a.name, &b.name, uri, &forged);
    let (status, answer) = send(Some(auth), forged).await;
    assert_eq!((status, answer["errcode"].clone()), (StatusCode::FORBIDDEN, json!("M_FORBIDDEN")));

    // Too many PDUs.
    let crowded = json!({"origin": a.name, "origin_server_ts": NOW_MS, "pdus": vec![json!({}); 51]});
    let auth = x_matrix(&a.key, &a.key.key_id(), &a.name, &b.name, uri, &crowded);
    let (status, answer) = send(Some(auth), crowded).await;
    assert_eq!((status, answer["errcode"].clone()), (StatusCode::BAD_REQUEST, json!("M_TOO_LARGE")));
}

#[tokio::test]
async fn send_gives_each_pdu_its_result_and_repeats_the_stored_answer() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let room_server = Arc::new(FakeRoomServer { calls: AtomicUsize::new(0) });
    let (_stop, shutdown) = Shutdown::new();
    let _serving = b.bus.serve("roomserver", INPUT_TOPIC, room_server.clone(), shutdown.clone());
    let _acl = b.bus.serve("roomserver.query", QUERY_TOPIC, Arc::new(FakeAcl), shutdown);

    let pdu = |id: &str, room: Value, body: &str| json!({"event_id": id, "room_id": room, "type": "m.room.message", "content": {"body": body}});
    let body = json!({
        "origin": a.name,
        "origin_server_ts": NOW_MS,
        "pdus": [
            pdu("$good:x", json!("!room:x"), "hello"),
            pdu("$bad:x", json!("!room:x"), "bad"),
            pdu("$other:x", json!("!other:x"), "hi"),
            pdu("$broken:x", json!("!broken:x"), "hi"),
            pdu("$noroom:x", Value::Null, "hi"),
            pdu("$badroom:x", json!("not a room id"), "hi"),
            pdu("$denied:x", json!("!denied:x"), "hi"),
        ],
        "edus": [{"edu_type": "m.typing", "content": {}}],
    });
    let request = FederationRequest::put(&b.name, "/_matrix/federation/v1/send/txn1", body.clone());
    let answer = a.client.send(request.clone()).await.unwrap();
    let pdus = &answer["pdus"];
    assert_eq!(pdus["$good:x"], json!({}));
    assert_eq!(pdus["$other:x"], json!({}));
    assert_eq!(pdus["$bad:x"], json!({"error": "bad body"}));
    assert_eq!(pdus["$broken:x"], json!({"error": "room is broken"}));
    assert!(pdus["$noroom:x"]["error"].is_string(), "{answer}");
    assert!(pdus["$badroom:x"]["error"].is_string(), "{answer}");
    assert!(pdus["$denied:x"]["error"].as_str().is_some_and(|e| e.contains("server ACL")), "{answer}");
    assert_eq!(pdus.as_object().unwrap().len(), 7);
    assert_eq!(room_server.calls.load(Ordering::SeqCst), 3, "one request per valid room the ACL admits");

    // The same transaction again: the stored answer, nothing reprocessed.
    assert_eq!(a.client.send(request).await.unwrap(), answer);
    assert_eq!(room_server.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_notary_answers_for_another_server() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let notary = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let mut b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let http = pki.http_client();

    let query = json!({"server_keys": {b.name.clone(): {}}});
    let response = http.post(notary.url("/_matrix/key/v2/query")).json(&query).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    let keys = &answer["server_keys"][0];
    assert_eq!(keys["server_name"], b.name);
    assert!(signed_by(keys, &b.name, &b.key), "still signed by B: {keys}");
    assert!(signed_by(keys, &notary.name, &notary.key), "countersigned by the notary: {keys}");

    let path = format!("/_matrix/key/v2/query/{}", b.name);
    let answer: Value = http.get(notary.url(&path)).send().await.unwrap().json().await.unwrap();
    assert!(signed_by(&answer["server_keys"][0], &notary.name, &notary.key));
    // The deprecated form with a key id answers the same.
    let with_key_id = format!("{path}/{}", b.key.key_id());
    let answer: Value = http.get(notary.url(&with_key_id)).send().await.unwrap().json().await.unwrap();
    assert_eq!(answer["server_keys"][0]["server_name"], b.name);
    let response = http.get(notary.url(&format!("{path}?minimum_valid_until_ts=soon"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["errcode"], "M_INVALID_PARAM");

    // B goes away; a server that trusts the notary still learns B's key,
    // and one that bans that key does not.
    b.stop().await;
    let trusting = Options { trusted: vec![notary.name.clone()], ..Options::default() };
    let c = Instance::start(&pki, TestDb::sqlite(), &clock, trusting).await;
    let keys = c.server_keys(&b.name, &[&b.key.key_id()]).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].public_key, b.key.public_key_base64());

    let banning =
        Options { trusted: vec![notary.name.clone()], denylist: vec![b.key.public_key_base64()], ..Options::default() };
    let d = Instance::start(&pki, TestDb::sqlite(), &clock, banning).await;
    assert!(d.server_keys(&b.name, &[&b.key.key_id()]).await.is_empty(), "a denylisted key is never trusted");
    // Without a notary nothing is known of a server that is gone.
    let alone = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    assert!(alone.server_keys(&b.name, &[&b.key.key_id()]).await.is_empty());
}

/// Names for discovery tests without a DNS server.
struct StaticDns {
    addresses: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<SrvRecord>>,
}

#[async_trait]
impl Dns for StaticDns {
    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.addresses.get(host).cloned().ok_or_else(|| DnsError { name: host.to_owned(), reason: "unknown".into() })
    }

    async fn lookup_srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        Ok(self.srv.get(name).cloned().unwrap_or_default())
    }
}

fn client_with(pki: &TestPki, dns: Arc<dyn Dns>, well_known_port: u16, allow_loopback: bool) -> FederationClient {
    FederationClient::new(ClientSettings {
        server_name: "client.test".to_owned(),
        signing_key: Arc::new(ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap()),
        clock: Arc::new(ManualClock::new(NOW_MS)),
        dns,
        policy: AddressPolicy { allow_loopback, allow_private: false },
        ca_file: Some(pki.ca_file()),
        well_known_port,
    })
    .unwrap()
}

#[tokio::test]
async fn discovery_follows_explicit_ports_well_known_and_srv() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;

    // A `.well-known` server for `localhost`, delegating to B.
    let hits = Arc::new(AtomicUsize::new(0));
    let delegated = b.name.clone();
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/.well-known/matrix/server",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let delegated = delegated.clone();
            async move { axum::Json(json!({"m.server": delegated})) }
        }),
    );
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
        pki.dir.path().join("tls.crt"),
        pki.dir.path().join("tls.key"),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let well_known_port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    tokio::spawn(axum_server::from_tcp_rustls(listener, tls).serve(app.into_make_service()));

    let client = client_with(&pki, Arc::new(HickoryDns::from_system().unwrap()), well_known_port, true);

    // An explicit port: the name's addresses, no delegation.
    let target = client.resolve("localhost:1234").await.unwrap();
    assert!(target.addrs.contains(&"127.0.0.1:1234".parse().unwrap()), "{target:?}");
    assert_eq!((target.tls_name.as_str(), target.host.as_str()), ("localhost", "localhost:1234"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // No port: `.well-known` delegates to B, fetched once and cached.
    let target = client.resolve("localhost").await.unwrap();
    assert!(target.addrs.contains(&b.addr), "{target:?}");
    assert_eq!((target.tls_name.as_str(), target.host.as_str()), ("localhost", b.name.as_str()));
    let answer = client.send(FederationRequest::get("localhost", "/_matrix/key/v2/server").unsigned()).await.unwrap();
    assert_eq!(answer["server_name"], b.name, "the request reached B through the delegation");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "cached after the first fetch");

    // A key response must name the server asked about: B's, reached
    // through `localhost`'s delegation, names B and is refused for `localhost`.
    let store_db = TestDb::sqlite();
    let db = Db::connect(&store_db.url).await.unwrap();
    db.migrate(myelin_federationapi::storage::COMPONENT, myelin_federationapi::storage::MIGRATIONS).await.unwrap();
    let mut config = Config::in_dir(pki.dir.path().to_owned());
    config.global.server_name = "client.test".to_owned();
    let signing_key = Arc::new(ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap());
    let keys =
        myelin_federationapi::keys::KeyStore::new(&config, db, Arc::new(client), signing_key, Arc::new(clock.clone()));
    assert!(keys.server_keys("localhost", &[b.key.key_id()]).await.unwrap().is_empty(), "server_name mismatch");
    let fetched = keys.server_keys(&b.name, &[b.key.key_id()]).await.unwrap();
    assert_eq!(fetched.len(), 1, "the same response is accepted for the name it carries");

    // Without permission, loopback peers are refused at connect time.
    let closed = client_with(&pki, Arc::new(HickoryDns::from_system().unwrap()), well_known_port, false);
    let error = closed.send(FederationRequest::get(&b.name, "/_matrix/key/v2/server").unsigned()).await.unwrap_err();
    assert!(matches!(error, ClientError::Connect { source: ConnectError::Refused(_), .. }), "{error}");

    // No `.well-known` (nothing listens): SRV, then the name on 8448.
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let dns = StaticDns {
        addresses: HashMap::from([
            ("plain.test".to_owned(), vec![loopback]),
            ("srv.test".to_owned(), vec![loopback]),
            ("target.test".to_owned(), vec![loopback]),
        ]),
        srv: HashMap::from([(
            "_matrix-fed._tcp.srv.test".to_owned(),
            vec![SrvRecord { priority: 0, weight: 0, port: b.addr.port(), target: "target.test".to_owned() }],
        )]),
    };
    let client = client_with(&pki, Arc::new(dns), free_port(), true);
    let target = client.resolve("plain.test").await.unwrap();
    assert_eq!(target.addrs, ["127.0.0.1:8448".parse().unwrap()]);
    assert_eq!((target.tls_name.as_str(), target.host.as_str()), ("plain.test", "plain.test"));
    let target = client.resolve("srv.test").await.unwrap();
    assert_eq!(target.addrs, [b.addr], "the SRV target and port");
    assert_eq!((target.tls_name.as_str(), target.host.as_str()), ("srv.test", "srv.test"), "never the SRV target");
    let error = client.resolve("bad name").await.unwrap_err();
    assert!(matches!(error, ClientError::Discovery { .. }), "{error}");
}

// Joins over federation: two instances, each with the real room server.

async fn create_public_room(server: &Instance, creator: &str) -> String {
    create_room(server, creator, "public_chat").await
}

async fn create_room(server: &Instance, creator: &str, preset: &str) -> String {
    create_room_of_version(server, creator, preset, None).await
}

async fn create_room_of_version(server: &Instance, creator: &str, preset: &str, version: Option<&str>) -> String {
    let request = InputRequest::CreateRoom(CreateRoom {
        creator: creator.try_into().unwrap(),
        creator_profile: Default::default(),
        room_version: version.map(str::to_owned),
        preset: Some(preset.to_owned()),
        visibility: None,
        name: None,
        topic: None,
        invite: Vec::new(),
        is_direct: false,
        initial_state: Vec::new(),
        creation_content: None,
        power_level_content_override: None,
    });
    let reply: InputReply =
        server.bus.request_json(INPUT_TOPIC, creator, &request, Duration::from_secs(60)).await.unwrap();
    match reply.unwrap() {
        InputOk::RoomCreated { room_id } => room_id.to_string(),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn send_state(
    server: &Instance,
    room_id: &str,
    sender: &str,
    event_type: &str,
    key: &str,
    content: Value,
) -> String {
    let request = InputRequest::SendEvent(SendEvent {
        room_id: room_id.try_into().unwrap(),
        sender: sender.try_into().unwrap(),
        event_type: event_type.to_owned(),
        state_key: Some(key.to_owned()),
        content,
        txn: None,
        sender_is_guest: false,
        origin_server_ts: None,
    });
    let reply: InputReply =
        server.bus.request_json(INPUT_TOPIC, room_id, &request, Duration::from_secs(60)).await.unwrap();
    match reply.unwrap() {
        InputOk::EventSent { event_id } => event_id.to_string(),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// The state event at `(event_type, state_key)` as `requester` sees it on `server`.
async fn state_event(server: &Instance, room_id: &str, requester: &str, event_type: &str, key: &str) -> Option<Value> {
    let request = QueryRequest::RoomState {
        room_id: room_id.try_into().unwrap(),
        requester: requester.try_into().unwrap(),
        event_type: Some(event_type.to_owned()),
        state_key: Some(key.to_owned()),
    };
    let reply: QueryReply =
        server.bus.request_json(QUERY_TOPIC, room_id, &request, Duration::from_secs(60)).await.unwrap();
    match reply {
        Ok(QueryOk::State { events }) => events.into_iter().next().map(|event| event.pdu),
        _ => None,
    }
}

/// Poll until `check` holds (federation delivery is asynchronous).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn join_through(joiner: &Instance, room_id: &str, user: &str, servers: &[&str]) -> FederationPerformReply {
    let request = FederationPerform::JoinRoom {
        room_id: room_id.try_into().unwrap(),
        user_id: user.try_into().unwrap(),
        servers: servers.iter().map(|s| (*s).try_into().unwrap()).collect(),
        content: json!({"membership": "join", "displayname": "Bob"}),
    };
    joiner.bus.request_json(FEDERATION_PERFORM_TOPIC, room_id, &request, Duration::from_secs(120)).await.unwrap()
}

#[tokio::test]
async fn a_remote_user_joins_and_both_servers_send_each_other_events() {
    for (db_a, db_b) in [(TestDb::sqlite(), TestDb::sqlite()), (TestDb::postgres().await, TestDb::postgres().await)] {
        let pki = TestPki::new();
        let clock = ManualClock::new(NOW_MS);
        let with_room_server = || Options { room_server: true, ..Options::default() };
        let a = Instance::start(&pki, db_a, &clock, with_room_server()).await;
        let b = Instance::start(&pki, db_b, &clock, with_room_server()).await;
        let alice = format!("@alice:{}", a.name);
        let bob = format!("@bob:{}", b.name);
        let room_id = create_public_room(&a, &alice).await;

        // B has nobody to ask: the room id of a v12 room names no server.
        let refused = join_through(&b, &room_id, &bob, &[]).await.unwrap_err();
        assert_eq!(refused.errcode, ErrorCode::NotFound, "{refused:?}");

        let joined = join_through(&b, &room_id, &bob, &["127.0.0.1:1", &a.name]).await.unwrap();
        let FederationPerformOk::Joined { room_id: joined_room, event_id } = joined else {
            panic!("unexpected answer {joined:?}")
        };
        assert_eq!(joined_room.as_str(), room_id);
        let on_b = state_event(&b, &room_id, &bob, "m.room.member", &bob).await.expect("B has the join");
        assert_eq!(on_b["content"], json!({"membership": "join", "displayname": "Bob"}));
        let on_a = state_event(&a, &room_id, &alice, "m.room.member", &bob).await.expect("A accepted the join");
        assert_eq!(on_a, on_b, "the same event on both servers ({event_id})");
        assert!(state_event(&b, &room_id, &bob, "m.room.member", &alice).await.is_some(), "B has the room state");

        // A's sender delivers Alice's events to B, B's sender Bob's to A.
        send_state(&a, &room_id, &alice, "m.room.topic", "", json!({"topic": "federated"})).await;
        eventually("the topic on B", || async {
            state_event(&b, &room_id, &bob, "m.room.topic", "")
                .await
                .is_some_and(|e| e["content"]["topic"] == "federated")
        })
        .await;
        send_state(&b, &room_id, &bob, "m.room.member", &bob, json!({"membership": "join", "displayname": "Robert"}))
            .await;
        eventually("Bob's new name on A", || async {
            state_event(&a, &room_id, &alice, "m.room.member", &bob)
                .await
                .is_some_and(|e| e["content"]["displayname"] == "Robert")
        })
        .await;
    }
}

/// Typing notices and receipts in `/send` reach the bus only for the
/// origin's own users who are joined to the room; to-device messages only
/// from the origin's users to ours.
#[tokio::test]
async fn inbound_edus_are_published_only_for_the_origins_joined_users() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let with_room_server = || Options { room_server: true, ..Options::default() };
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let alice = format!("@alice:{}", a.name);
    let bob = format!("@bob:{}", b.name);
    let room_id = create_public_room(&b, &bob).await;
    join_through(&a, &room_id, &alice, &[&b.name]).await.unwrap();

    let typing =
        |user: &str| json!({"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": user, "typing": true}});
    let receipt = |user: &str| json!({"edu_type": "m.receipt", "content": {room_id.clone(): {"m.read": {user: {"event_ids": ["$read"], "data": {"ts": 7}}}}}});
    let carol = format!("@carol:{}", a.name);
    let mut typing_records = b.bus.backend().consumer("test.typing", TYPING_TOPIC).await.unwrap();
    let mut receipt_records = b.bus.backend().consumer("test.receipts", RECEIPT_TOPIC).await.unwrap();
    let send = |txn: String, edus: Value| {
        let body = json!({"origin": a.name, "origin_server_ts": NOW_MS, "pdus": [], "edus": edus});
        let request = FederationRequest::put(&b.name, format!("/_matrix/federation/v1/send/{txn}"), body);
        let client = &a.client;
        async move { assert_eq!(client.send(request).await.unwrap(), json!({"pdus": {}})) }
    };
    // Another server's user, a user not in the room, a malformed notice;
    // then Alice's, until her join has reached B's membership table.
    let refused = json!([
        typing("@mallory:evil.example"), receipt("@mallory:evil.example"), typing(&carol), receipt(&carol),
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": alice}},
    ]);
    send("refused".to_owned(), refused).await;
    let mut typed: Vec<Value> = Vec::new();
    for attempt in 0..100 {
        send(format!("alice-{attempt}"), json!([typing(&alice)])).await;
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), typing_records.next_batch(10)).await {
            typed.extend(batch.unwrap().iter().map(|r| r.json::<Value>().unwrap()));
        }
        if !typed.is_empty() {
            break;
        }
    }
    assert!(!typed.is_empty(), "Alice's typing never arrived");
    assert!(typed.iter().all(|t| t["user_id"] == alice.as_str() && t["typing"] == true), "{typed:?}");

    send("receipts".to_owned(), json!([receipt("@mallory:evil.example"), receipt(&carol), receipt(&alice)])).await;
    let batch = tokio::time::timeout(Duration::from_secs(10), receipt_records.next_batch(10)).await.unwrap().unwrap();
    let read: Vec<Value> = batch.iter().map(|r| r.json::<Value>().unwrap()).collect();
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0]["user_id"], alice.as_str());
    assert_eq!((read[0]["event_id"].as_str(), read[0]["ts"].as_u64()), (Some("$read"), Some(7)));

    // To-device messages: only from the origin's users, only to ours.
    let mut to_device_records = b.bus.backend().consumer("test.todevice", REMOTE_TO_DEVICE_TOPIC).await.unwrap();
    let direct = |sender: &str, recipient: &str, id: &str| {
        json!({"edu_type": "m.direct_to_device", "content": {"sender": sender, "type": "m.test", "message_id": id,
            "messages": {recipient: {"DEVICE": {"secret": id}}}}})
    };
    let edus = json!([
        direct("@mallory:evil.example", &bob, "forged"),
        direct(&alice, "@someone:evil.example", "elsewhere"),
        direct(&alice, &bob, "good"),
    ]);
    send("to-device".to_owned(), edus).await;
    let batch = tokio::time::timeout(Duration::from_secs(10), to_device_records.next_batch(10)).await.unwrap().unwrap();
    let messages: Vec<Value> = batch.iter().map(|r| r.json::<Value>().unwrap()).collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        (messages[0]["user_id"].as_str(), messages[0]["device_id"].as_str()),
        (Some(bob.as_str()), Some("DEVICE"))
    );
    assert_eq!(messages[0]["content"], json!({"secret": "good"}));
}

/// A join event for `user` from `answer` (a make_join answer), signed by `key` as `origin`.
fn sign_template(answer: &Value, user: &str, origin: &str, key: &ServerSigningKey) -> (CanonicalJsonObject, String) {
    let mut event = answer["event"].clone();
    event["sender"] = json!(user);
    event["state_key"] = json!(user);
    event["origin_server_ts"] = json!(NOW_MS);
    let mut object = canonical(event);
    let rules = RoomVersionId::try_from(answer["room_version"].as_str().unwrap()).unwrap().rules().unwrap();
    hash_and_sign_event(origin, &key.keypair, &mut object, &rules.redaction).unwrap();
    let event_id = format!("${}", reference_hash(&object, &rules).unwrap());
    (object, event_id)
}

fn status_of(result: Result<Value, ClientError>) -> (u16, Value) {
    match result {
        Ok(body) => (200, body),
        Err(ClientError::Status { status, body, .. }) => (status, body),
        Err(other) => panic!("no answer: {other}"),
    }
}

#[tokio::test]
async fn make_join_send_join_and_directory_refuse_what_the_spec_refuses() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let alice = format!("@alice:{}", a.name);
    let bob = format!("@bob:{}", b.name);
    let room_id = create_public_room(&a, &alice).await;
    let encode = |s: &str| s.replace('!', "%21").replace('@', "%40").replace(':', "%3A").replace('$', "%24");
    let make_join = |room: &str, user: &str, query: &str| {
        let path = format!("/_matrix/federation/v1/make_join/{}/{}{query}", encode(room), encode(user));
        b.client.send(FederationRequest::get(&a.name, path))
    };

    let (status, answer) = status_of(make_join(&room_id, &bob, "?ver=11&ver=12").await);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["room_version"], "12");
    let template = &answer["event"];
    assert_eq!(
        (template["type"].as_str(), template["state_key"].as_str()),
        (Some("m.room.member"), Some(bob.as_str()))
    );
    assert_eq!(template["content"], json!({"membership": "join"}));
    assert!(template.get("signatures").is_none() && template.get("hashes").is_none(), "a template is not signed");
    assert!(template["prev_events"].as_array().is_some_and(|p| !p.is_empty()), "{template}");

    let (status, body) = status_of(make_join(&room_id, &format!("@carol:{}", a.name), "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only for the origin's users");
    let (status, body) = status_of(make_join(&room_id, &bob, "?ver=10&ver=11").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")));
    let (status, body) = status_of(make_join(&room_id, &bob, "").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "no ver means v1");
    clock.advance_ms(1);
    let v1 = create_room_of_version(&a, &alice, "public_chat", Some("1")).await;
    let (status, body) = status_of(make_join(&v1, &bob, "").await);
    assert_eq!((status, body["room_version"].as_str()), (200, Some("1")), "no ver joins v1: {body}");
    let (status, body) = status_of(make_join("!unknown:elsewhere", &bob, "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    clock.advance_ms(1);
    let private = create_room(&a, &alice, "private_chat").await;
    let (status, body) = status_of(make_join(&private, &bob, "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "invite only: {body}");

    // The directory answers only for this server's aliases.
    let query = |query: &str| {
        b.client.send(FederationRequest::get(&a.name, format!("/_matrix/federation/v1/query/directory{query}")))
    };
    let (status, body) = status_of(query("?room_alias=%23lobby%3Aelsewhere.example").await);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = status_of(query("").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{body}");
    let (status, body) = status_of(query("?room_alias=lobby").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");

    let send_join = |room: &str, event_id: &str, event: &CanonicalJsonObject| {
        let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode(room), encode(event_id));
        b.client.send(FederationRequest::put(&a.name, path, Value::from(CanonicalJsonValue::Object(event.clone()))))
    };
    let (join, join_id) = sign_template(&answer, &bob, &b.name, &b.key);

    let (status, body) = status_of(send_join("!unknown:elsewhere", &join_id, &join).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "room id mismatch first: {body}");
    let (status, body) = status_of(send_join(&room_id, "$someotherevent", &join).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "event id mismatch: {body}");
    // A v12 room id is the create event's hash: another room needs another time.
    clock.advance_ms(1);
    let other_room = create_public_room(&a, &alice).await;
    let (status, body) = status_of(send_join(&other_room, &join_id, &join).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "room id mismatch: {body}");

    let mut leave_answer = answer.clone();
    leave_answer["event"]["content"]["membership"] = json!("leave");
    let (leave, leave_id) = sign_template(&leave_answer, &bob, &b.name, &b.key);
    let (status, body) = status_of(send_join(&room_id, &leave_id, &leave).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "not a join: {body}");

    let (foreign, foreign_id) = sign_template(&answer, &format!("@dave:{}", a.name), &b.name, &b.key);
    let (status, body) = status_of(send_join(&room_id, &foreign_id, &foreign).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "another server's user: {body}");

    let impostor = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
    let (forged, forged_id) = sign_template(&answer, &bob, &b.name, &impostor);
    let (status, body) = status_of(send_join(&room_id, &forged_id, &forged).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "bad signature: {body}");
    assert!(state_event(&a, &room_id, &alice, "m.room.member", &bob).await.is_none(), "nothing refused got in");

    // The real one, over v1: `[200, {state, auth_chain}]` with the state before the join.
    let path = format!("/_matrix/federation/v1/send_join/{}/{}", encode(&room_id), encode(&join_id));
    let (status, body) = status_of(
        b.client.send(FederationRequest::put(&a.name, path, Value::from(CanonicalJsonValue::Object(join)))).await,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0], 200);
    let state = body[1]["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{body}");
    assert!(state.iter().any(|e| e["state_key"] == alice.as_str()));
    assert!(!state.iter().any(|e| e["state_key"] == bob.as_str()), "the state before the join");
    assert!(!body[1]["auth_chain"].as_array().unwrap().is_empty());
    assert!(state_event(&a, &room_id, &alice, "m.room.member", &bob).await.is_some(), "joined");

    // Leaving: the same checks, then the leave is in.
    let make_leave = |user: &str| {
        let path = format!("/_matrix/federation/v1/make_leave/{}/{}", encode(&room_id), encode(user));
        b.client.send(FederationRequest::get(&a.name, path))
    };
    let (status, body) = status_of(make_leave(&alice).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only for the origin's users: {body}");
    let (status, body) = status_of(make_leave(&format!("@carol:{}", b.name)).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "not in the room: {body}");
    let (status, leave_answer) = status_of(make_leave(&bob).await);
    assert_eq!(status, 200, "{leave_answer}");
    assert_eq!(leave_answer["event"]["content"], json!({"membership": "leave"}));
    let send_leave = |version: &str, room: &str, event_id: &str, event: &CanonicalJsonObject| {
        let path = format!("/_matrix/federation/{version}/send_leave/{}/{}", encode(room), encode(event_id));
        b.client.send(FederationRequest::put(&a.name, path, Value::from(CanonicalJsonValue::Object(event.clone()))))
    };
    let (rejoin, rejoin_id) = sign_template(&answer, &bob, &b.name, &b.key);
    let (status, body) = status_of(send_leave("v2", &room_id, &rejoin_id, &rejoin).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "a join is no leave: {body}");
    let (leave, leave_id) = sign_template(&leave_answer, &bob, &b.name, &b.key);
    let (status, body) = status_of(send_leave("v1", &other_room, &leave_id, &leave).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "room id mismatch: {body}");
    let (forged, forged_id) = sign_template(&leave_answer, &bob, &b.name, &impostor);
    let (status, body) = status_of(send_leave("v2", &room_id, &forged_id, &forged).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "bad signature: {body}");
    let (status, body) = status_of(send_leave("v1", &room_id, &leave_id, &leave).await);
    assert_eq!((status, body), (200, json!([200, {}])));
    let member = state_event(&a, &room_id, &alice, "m.room.member", &bob).await.unwrap();
    assert_eq!(member["content"]["membership"], "leave");
}

/// The id of a stored v12 event: its reference hash.
fn id_of(pdu: &Value) -> String {
    let rules = RoomVersionId::V12.rules().unwrap();
    format!("${}", reference_hash(&canonical(pdu.clone()), &rules).unwrap())
}

#[tokio::test]
async fn read_endpoints_answer_only_what_the_origin_may_see() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let alice = format!("@alice:{}", a.name);
    let bob = format!("@bob:{}", b.name);
    let room_id = create_public_room(&a, &alice).await;
    let create = state_event(&a, &room_id, &alice, "m.room.create", "").await.unwrap();
    let create_id = id_of(&create);
    let encode = |s: &str| s.replace('!', "%21").replace('@', "%40").replace(':', "%3A").replace('$', "%24");
    let get = |path: String| b.client.send(FederationRequest::get(&a.name, path));
    let missing = |room: &str, body: Value| {
        let path = format!("/_matrix/federation/v1/get_missing_events/{}", encode(room));
        b.client.send(FederationRequest::post(&a.name, path, body))
    };
    let forbidden = |(status, body): (u16, Value)| {
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    };

    // Shared history, but nobody of B's in the room yet: nothing to read.
    forbidden(status_of(get(format!("/_matrix/federation/v1/event/{}", encode(&create_id))).await));
    let state_ids =
        |event: &str| format!("/_matrix/federation/v1/state_ids/{}?event_id={}", encode(&room_id), encode(event));
    forbidden(status_of(get(state_ids(&create_id)).await));
    forbidden(status_of(
        get(format!("/_matrix/federation/v1/state/{}?event_id={}", encode(&room_id), encode(&create_id))).await,
    ));
    forbidden(status_of(
        get(format!("/_matrix/federation/v1/event_auth/{}/{}", encode(&room_id), encode(&create_id))).await,
    ));
    let backfill = |from: &str, limit: u32| {
        format!("/_matrix/federation/v1/backfill/{}?v={}&limit={limit}", encode(&room_id), encode(from))
    };
    forbidden(status_of(get(backfill(&create_id, 10)).await));
    forbidden(status_of(missing(&room_id, json!({"earliest_events": [], "latest_events": [create_id]})).await));
    let (status, body) = status_of(get("/_matrix/federation/v1/event/%24unknown".to_owned()).await);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = status_of(get(format!("/_matrix/federation/v1/state_ids/{}", encode(&room_id))).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{body}");
    let (status, body) = status_of(get(format!("/_matrix/federation/v1/backfill/{}?limit=5", encode(&room_id))).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{body}");
    let (status, body) = status_of(missing(&room_id, json!({"latest_events": "nope"})).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");

    // A world-readable room is readable by anyone.
    clock.advance_ms(1);
    let open_room = create_public_room(&a, &alice).await;
    let topic_id = send_state(
        &a,
        &open_room,
        &alice,
        "m.room.history_visibility",
        "",
        json!({"history_visibility": "world_readable"}),
    )
    .await;
    let (status, body) = status_of(get(format!("/_matrix/federation/v1/event/{}", encode(&topic_id))).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(id_of(&body["pdus"][0]), topic_id);
    assert_eq!(body["origin"], a.name.as_str());

    // Bob joins; now B reads the room.
    let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", encode(&room_id), encode(&bob));
    let (status, answer) = status_of(get(path).await);
    assert_eq!(status, 200, "{answer}");
    let (join, join_id) = sign_template(&answer, &bob, &b.name, &b.key);
    let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode(&room_id), encode(&join_id));
    let (status, body) = status_of(
        b.client.send(FederationRequest::put(&a.name, path, Value::from(CanonicalJsonValue::Object(join)))).await,
    );
    assert_eq!(status, 200, "{body}");

    let (status, body) = status_of(get(format!("/_matrix/federation/v1/event/{}", encode(&create_id))).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"], json!([create]));

    let (status, body) = status_of(
        get(format!("/_matrix/federation/v1/state/{}?event_id={}", encode(&room_id), encode(&join_id))).await,
    );
    assert_eq!(status, 200, "{body}");
    let pdus = body["pdus"].as_array().unwrap();
    assert!(pdus.iter().any(|e| e["type"] == "m.room.create") && pdus.iter().any(|e| e["state_key"] == alice.as_str()));
    assert!(!pdus.iter().any(|e| e["state_key"] == bob.as_str()), "the state before the join");
    let (status, ids) = status_of(get(state_ids(&join_id)).await);
    assert_eq!(status, 200, "{ids}");
    let mut expected: Vec<String> = pdus.iter().map(id_of).collect();
    let mut got: Vec<String> = serde_json::from_value(ids["pdu_ids"].clone()).unwrap();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let chain: Vec<String> = body["auth_chain"].as_array().unwrap().iter().map(id_of).collect();
    let chain_ids: Vec<String> = serde_json::from_value(ids["auth_chain_ids"].clone()).unwrap();
    // v12: the create event is the room id, in no auth chain.
    let mut sorted = chain.clone();
    sorted.sort();
    let mut sorted_ids = chain_ids.clone();
    sorted_ids.sort();
    assert!(!chain.is_empty() && sorted == sorted_ids, "{ids}");
    let join_rules = pdus.iter().find(|e| e["type"] == "m.room.join_rules").map(id_of).unwrap();

    // The join's auth chain; the path's room must be the event's.
    let (status, body) =
        status_of(get(format!("/_matrix/federation/v1/event_auth/{}/{}", encode(&room_id), encode(&join_id))).await);
    assert_eq!(status, 200, "{body}");
    assert!(body["auth_chain"].as_array().unwrap().iter().any(|e| id_of(e) == join_rules), "{body}");
    let (status, body) = status_of(
        get(format!("/_matrix/federation/v1/state_ids/{}?event_id={}", encode(&open_room), encode(&join_id))).await,
    );
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "another room's event: {body}");

    // Backfill: the join and what precedes it, newest first, up to the limit.
    let (status, body) = status_of(get(backfill(&join_id, 3)).await);
    assert_eq!(status, 200, "{body}");
    let pdus = body["pdus"].as_array().unwrap();
    assert_eq!(pdus.len(), 3, "{body}");
    assert_eq!(id_of(&pdus[0]), join_id);
    let depths: Vec<i64> = pdus.iter().map(|e| e["depth"].as_i64().unwrap()).collect();
    assert!(depths.windows(2).all(|w| w[0] > w[1]), "{depths:?}");
    let (status, body) = status_of(get(backfill(&join_id, 1000)).await);
    assert_eq!(status, 200, "{body}");
    let all = body["pdus"].as_array().unwrap();
    assert_eq!(id_of(all.last().unwrap()), create_id, "back to the create event");

    // Missing events: between the create event and the join, oldest first.
    let (status, body) = status_of(
        missing(&room_id, json!({"earliest_events": [create_id], "latest_events": [join_id], "limit": 2})).await,
    );
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{body}");
    let ids: Vec<String> = events.iter().map(id_of).collect();
    assert!(!ids.contains(&create_id) && !ids.contains(&join_id), "{ids:?}");
    assert!(events[0]["depth"].as_i64() < events[1]["depth"].as_i64(), "{body}");

    // History closed to members only from here: what follows Bob's view is
    // still his while he is joined, but a server that never joined sees nothing.
    clock.advance_ms(1);
    let private = create_room(&a, &alice, "private_chat").await;
    let hidden =
        send_state(&a, &private, &alice, "m.room.history_visibility", "", json!({"history_visibility": "joined"}))
            .await;
    forbidden(status_of(get(format!("/_matrix/federation/v1/event/{}", encode(&hidden))).await));
    forbidden(status_of(get(backfill(&hidden, 5).replace(&encode(&room_id), &encode(&private))).await));
}

/// Stands in for the client API's profile lookups: only Alice has an account.
struct FakeProfiles;

#[async_trait]
impl Responder for FakeProfiles {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let query: ProfileQuery = record.json().unwrap();
        let reply: ProfileReply = (query.user_id.localpart() == "alice").then(|| PublicProfile {
            displayname: Some("Alice".to_owned()),
            avatar_url: None,
            fields: json!({"m.tz": "Europe/Paris"}).as_object().unwrap().clone(),
        });
        Ok(serde_json::to_vec(&reply).unwrap())
    }
}

#[tokio::test]
async fn query_profile_answers_for_local_users_only() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let (_stop, shutdown) = Shutdown::new();
    let _profiles = a.bus.serve("clientapi.profiles", PROFILE_QUERY_TOPIC, Arc::new(FakeProfiles), shutdown);
    let query = |query: String| {
        b.client.send(FederationRequest::get(&a.name, format!("/_matrix/federation/v1/query/profile{query}")))
    };
    let user = |localpart: &str| format!("%40{localpart}%3A{}", a.name.replace(':', "%3A"));

    let (status, body) = status_of(query(format!("?user_id={}", user("alice"))).await);
    assert_eq!((status, body), (200, json!({"displayname": "Alice", "m.tz": "Europe/Paris"})));
    let (status, body) = status_of(query(format!("?user_id={}&field=displayname", user("alice"))).await);
    assert_eq!((status, body), (200, json!({"displayname": "Alice"})));
    let (status, body) = status_of(query(format!("?user_id={}&field=m.tz", user("alice"))).await);
    assert_eq!((status, body), (200, json!({"m.tz": "Europe/Paris"})));
    let (status, body) = status_of(query(format!("?user_id={}&field=avatar_url", user("alice"))).await);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "no such field: {body}");
    let (status, body) = status_of(query(format!("?user_id={}", user("nobody"))).await);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = status_of(query("?user_id=%40alice%3Aelsewhere.example".to_owned()).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "not ours: {body}");
    let (status, body) = status_of(query(String::new()).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "{body}");
}

/// An invite of `invitee` by `sender` into a v11 room, hashed and signed by `key` as `origin`.
fn invite_event(
    room: &str,
    sender: &str,
    invitee: &str,
    membership: &str,
    origin: &str,
    key: &ServerSigningKey,
) -> (CanonicalJsonObject, String) {
    let event = json!({
        "room_id": room,
        "sender": sender,
        "type": "m.room.member",
        "state_key": invitee,
        "content": {"membership": membership},
        "origin_server_ts": NOW_MS,
        "depth": 5,
        "prev_events": ["$prevevent"],
        "auth_events": ["$authevent"],
    });
    let mut object = canonical(event);
    let rules = RoomVersionId::V11.rules().unwrap();
    hash_and_sign_event(origin, &key.keypair, &mut object, &rules.redaction).unwrap();
    let event_id = format!("${}", reference_hash(&object, &rules).unwrap());
    (object, event_id)
}

#[tokio::test]
async fn only_a_well_formed_invite_of_a_local_user_is_countersigned() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let room = format!("!invite:{}", b.name);
    let bob = format!("@bob:{}", b.name);
    let alice = format!("@alice:{}", a.name);
    let encode = |s: &str| s.replace('!', "%21").replace('@', "%40").replace(':', "%3A").replace('$', "%24");
    let invite = |room_in_path: &str, event_id: &str, version: &str, event: &CanonicalJsonObject| {
        let path = format!("/_matrix/federation/v2/invite/{}/{}", encode(room_in_path), encode(event_id));
        let body = json!({
            "room_version": version,
            "event": Value::from(CanonicalJsonValue::Object(event.clone())),
            "invite_room_state": [{"type": "m.room.name", "state_key": "", "sender": bob, "content": {"name": "Hideout"}}],
        });
        b.client.send(FederationRequest::put(&a.name, path, body))
    };
    let refused = |(status, body): (u16, Value), expected: (u16, &str), why: &str| {
        assert_eq!((status, body["errcode"].as_str()), (expected.0, Some(expected.1)), "{why}: {body}");
        assert!(body.get("event").is_none(), "{why}: nothing signed");
    };

    let (good, good_id) = invite_event(&room, &bob, &alice, "invite", &b.name, &b.key);
    refused(status_of(invite("!elsewhere:b.example", &good_id, "11", &good).await), (400, "M_BAD_JSON"), "room id");
    refused(status_of(invite(&room, "$someotherevent", "11", &good).await), (400, "M_BAD_JSON"), "event id");
    refused(status_of(invite(&room, &good_id, "99", &good).await), (400, "M_INCOMPATIBLE_ROOM_VERSION"), "version");
    let (join, join_id) = invite_event(&room, &bob, &alice, "join", &b.name, &b.key);
    refused(status_of(invite(&room, &join_id, "11", &join).await), (400, "M_BAD_JSON"), "not an invite");
    let carol = format!("@carol:{}", b.name);
    let (remote, remote_id) = invite_event(&room, &bob, &carol, "invite", &b.name, &b.key);
    refused(status_of(invite(&room, &remote_id, "11", &remote).await), (403, "M_FORBIDDEN"), "not our user");
    let (spoofed, spoofed_id) = invite_event(&room, "@mallory:elsewhere.example", &alice, "invite", &b.name, &b.key);
    refused(
        status_of(invite(&room, &spoofed_id, "11", &spoofed).await),
        (403, "M_FORBIDDEN"),
        "sender of another server",
    );
    let impostor = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
    let (forged, forged_id) = invite_event(&room, &bob, &alice, "invite", &b.name, &impostor);
    refused(status_of(invite(&room, &forged_id, "11", &forged).await), (403, "M_FORBIDDEN"), "bad signature");
    // Content the hash does not cover: the id and signature still match the redacted form.
    let mut tampered = good.clone();
    tampered.insert(
        "content".to_owned(),
        CanonicalJsonValue::Object(canonical(json!({"membership": "invite", "reason": "trust me"}))),
    );
    refused(status_of(invite(&room, &good_id, "11", &tampered).await), (403, "M_FORBIDDEN"), "content hash");

    let (status, body) = status_of(invite(&room, &good_id, "11", &good).await);
    assert_eq!(status, 200, "{body}");
    let event = &body["event"];
    assert!(signed_by(event, &a.name, &a.key) && signed_by(event, &b.name, &b.key), "countersigned: {body}");
    let mut unsigned = event.clone();
    unsigned["signatures"].as_object_mut().unwrap().remove(&a.name);
    assert_eq!(unsigned, Value::from(CanonicalJsonValue::Object(good.clone())), "nothing else changed");
    let (status, again) = status_of(invite(&room, &good_id, "11", &good).await);
    assert_eq!((status, &again), (200, &body), "a repeat is answered the same");

    // v1 is for rooms whose events carry their id.
    let path = format!("/_matrix/federation/v1/invite/{}/{}", encode(&room), encode(&good_id));
    let (status, body) = status_of(
        b.client.send(FederationRequest::put(&a.name, path, Value::from(CanonicalJsonValue::Object(good)))).await,
    );
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
}

/// The room's server ACL refuses a denied origin on every room-scoped
/// endpoint, in `/send` (an error for each of its PDUs, its EDUs dropped),
/// and lets others in; a new ACL takes effect at once. A and B are both
/// `localhost` (the port is no part of the match), C is the IP literal
/// `127.0.0.1`.
#[tokio::test]
async fn a_server_acl_refuses_a_denied_origin_everywhere_and_changes_take_effect() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let with_room_server = || Options { room_server: true, ..Options::default() };
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let c = Instance::start(&pki, TestDb::sqlite(), &clock, Options { ip_literal: true, ..Options::default() }).await;
    let alice = format!("@alice:{}", a.name);
    let bob = format!("@bob:{}", b.name);
    let carol = format!("@carol:{}", c.name);
    let room_id = create_public_room(&a, &alice).await;
    join_through(&b, &room_id, &bob, &[&a.name]).await.unwrap();
    let create_id = id_of(&state_event(&a, &room_id, &alice, "m.room.create", "").await.unwrap());
    let join_id = id_of(&state_event(&a, &room_id, &alice, "m.room.member", &bob).await.unwrap());
    let encode = |s: &str| s.replace('!', "%21").replace('@', "%40").replace(':', "%3A").replace('$', "%24");
    let (room, create, join) = (encode(&room_id), encode(&create_id), encode(&join_id));

    // Until the ACL: B's typing notices reach A's bus (once A knows Bob
    // joined). Later ones stop typing, so they tell apart from these.
    let mut typing_records = a.bus.backend().consumer("test.typing", TYPING_TOPIC).await.unwrap();
    let send = |txn: String, pdus: Value, typing: bool| {
        let edus = json!([{"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": bob, "typing": typing}}]);
        let body = json!({"origin": b.name, "origin_server_ts": NOW_MS, "pdus": pdus, "edus": edus});
        b.client.send(FederationRequest::put(&a.name, format!("/_matrix/federation/v1/send/{txn}"), body))
    };
    let mut typed = false;
    for attempt in 0..100 {
        send(format!("before-{attempt}"), json!([]), true).await.unwrap();
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), typing_records.next_batch(10)).await {
            typed |= !batch.unwrap().is_empty();
        }
        if typed {
            break;
        }
    }
    assert!(typed, "Bob's typing never arrived before the ACL");
    let stopped = |records: &[Record]| records.iter().any(|r| r.json::<Value>().unwrap()["typing"] == false);

    send_state(&a, &room_id, &alice, "m.room.server_acl", "", json!({"allow": ["*"], "deny": ["localhost"]})).await;
    let event = json!({"room_id": room_id, "type": "m.room.message", "sender": bob, "event_id": "$denied",
        "content": {"body": "hello"}});
    let answer = send("denied".to_owned(), json!([event]), false).await.unwrap();
    let error = answer["pdus"]["$denied"]["error"].as_str().unwrap_or_else(|| panic!("no error: {answer}"));
    assert!(error.contains("server ACL"), "{answer}");
    while let Ok(batch) = tokio::time::timeout(Duration::from_secs(1), typing_records.next_batch(10)).await {
        assert!(!stopped(&batch.unwrap()), "a denied server's typing is dropped");
    }

    let some_event = json!({"type": "m.room.member", "room_id": room_id, "sender": bob, "state_key": bob,
        "content": {"membership": "join"}});
    let mut requests = vec![
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/make_join/{room}/{}?ver=12", encode(&bob))),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/make_leave/{room}/{}", encode(&bob))),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/event/{create}")),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/state/{room}?event_id={join}")),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/state_ids/{room}?event_id={join}")),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/event_auth/{room}/{join}")),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/backfill/{room}?v={join}&limit=5")),
        FederationRequest::get(&a.name, format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={NOW_MS}&dir=b")),
        FederationRequest::post(
            &a.name,
            format!("/_matrix/federation/v1/get_missing_events/{room}"),
            json!({"earliest_events": [create_id], "latest_events": [join_id]}),
        ),
        FederationRequest::put(
            &a.name,
            format!("/_matrix/federation/v2/invite/{room}/%24invite"),
            json!({"room_version": "12", "event": some_event, "invite_room_state": []}),
        ),
        FederationRequest::put(&a.name, format!("/_matrix/federation/v1/invite/{room}/%24invite"), some_event.clone()),
    ];
    let make_knock = format!("/_matrix/federation/v1/make_knock/{room}/{}?ver=12", encode(&bob));
    requests.push(FederationRequest::get(&a.name, make_knock));
    let send_knock = format!("/_matrix/federation/v1/send_knock/{room}/%24event");
    requests.push(FederationRequest::put(&a.name, send_knock, some_event.clone()));
    for version in ["v1", "v2"] {
        for endpoint in ["send_join", "send_leave"] {
            let path = format!("/_matrix/federation/{version}/{endpoint}/{room}/%24event");
            requests.push(FederationRequest::put(&a.name, path, some_event.clone()));
        }
    }
    for request in requests {
        let what = format!("{request:?}");
        let (status, body) = status_of(b.client.send(request).await);
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{what}: {body}");
        assert!(body["error"].as_str().unwrap().contains("server ACL"), "{what}: {body}");
    }
    // C is allowed: an IP literal, which the ACL does not exclude.
    let make_join_c = || {
        let path = format!("/_matrix/federation/v1/make_join/{room}/{}?ver=12", encode(&carol));
        c.client.send(FederationRequest::get(&a.name, path))
    };
    let (status, body) = status_of(make_join_c().await);
    assert_eq!(status, 200, "{body}");

    // The ACL changes: IP literals out, everyone else in.
    send_state(&a, &room_id, &alice, "m.room.server_acl", "", json!({"allow": ["*"], "allow_ip_literals": false}))
        .await;
    let (status, body) = status_of(make_join_c().await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let path = format!("/_matrix/federation/v1/state_ids/{room}?event_id={join}");
    let (status, body) = status_of(b.client.send(FederationRequest::get(&a.name, path)).await);
    assert_eq!(status, 200, "B reads again: {body}");
    let answer = send("allowed".to_owned(), json!([]), false).await.unwrap();
    assert_eq!(answer, json!({"pdus": {}}));
    let batch = tokio::time::timeout(Duration::from_secs(10), typing_records.next_batch(10)).await.unwrap().unwrap();
    assert!(stopped(&batch), "B's typing arrives again");
}

/// `/make_knock` and `/send_knock`: only for the origin's own users, only
/// in rooms whose join rule is `knock` and whose version knows knocking
/// (7 and later), never for a banned user; the answer carries the room's
/// stripped state and the knock is in the room.
#[tokio::test]
async fn make_knock_and_send_knock_refuse_what_the_spec_refuses() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let alice = format!("@alice:{}", a.name);
    let bob = format!("@bob:{}", b.name);
    let encode = |s: &str| s.replace('!', "%21").replace('@', "%40").replace(':', "%3A").replace('$', "%24");
    let make_knock = |room: &str, user: &str, query: &str| {
        let path = format!("/_matrix/federation/v1/make_knock/{}/{}{query}", encode(room), encode(user));
        b.client.send(FederationRequest::get(&a.name, path))
    };
    let knock_rule = json!({"join_rule": "knock"});
    let room_id = create_room(&a, &alice, "private_chat").await;
    send_state(&a, &room_id, &alice, "m.room.join_rules", "", knock_rule.clone()).await;
    send_state(&a, &room_id, &alice, "m.room.name", "", json!({"name": "Knock here"})).await;

    let (status, answer) = status_of(make_knock(&room_id, &bob, "?ver=11&ver=12").await);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["room_version"], "12");
    assert_eq!(answer["event"]["content"], json!({"membership": "knock"}));
    assert_eq!(answer["event"]["state_key"], bob.as_str());

    let (status, body) = status_of(make_knock(&room_id, &format!("@carol:{}", a.name), "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "only for the origin's users: {body}");
    let (status, body) = status_of(make_knock(&room_id, &bob, "?ver=10&ver=11").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "{body}");
    let (status, body) = status_of(make_knock(&room_id, &bob, "").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "no ver: {body}");
    let (status, body) = status_of(make_knock(&room_id, &bob, "?version=12").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_MISSING_PARAM")), "no ver: {body}");
    let (status, body) = status_of(make_knock("!unknown:elsewhere", &bob, "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    clock.advance_ms(1);
    let public = create_public_room(&a, &alice).await;
    let (status, body) = status_of(make_knock(&public, &bob, "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "a public room: {body}");
    clock.advance_ms(1);
    let invite_only = create_room(&a, &alice, "private_chat").await;
    let (status, body) = status_of(make_knock(&invite_only, &bob, "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "an invite-only room: {body}");
    let v6 = create_room_of_version(&a, &alice, "private_chat", Some("6")).await;
    send_state(&a, &v6, &alice, "m.room.join_rules", "", knock_rule.clone()).await;
    let (status, body) = status_of(make_knock(&v6, &bob, "?ver=6&ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "v6: {body}");
    let dave = format!("@dave:{}", b.name);
    send_state(&a, &room_id, &alice, "m.room.member", &dave, json!({"membership": "ban"})).await;
    let (status, body) = status_of(make_knock(&room_id, &dave, "?ver=12").await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "banned: {body}");

    let send_knock = |event_id: &str, event: &CanonicalJsonObject| {
        let path = format!("/_matrix/federation/v1/send_knock/{}/{}", encode(&room_id), encode(event_id));
        b.client.send(FederationRequest::put(&a.name, path, Value::from(CanonicalJsonValue::Object(event.clone()))))
    };
    let mut join_answer = answer.clone();
    join_answer["event"]["content"]["membership"] = json!("join");
    let (join, join_id) = sign_template(&join_answer, &bob, &b.name, &b.key);
    let (status, body) = status_of(send_knock(&join_id, &join).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "a join is no knock: {body}");
    let (knock, knock_id) = sign_template(&answer, &bob, &b.name, &b.key);
    let (status, body) = status_of(send_knock("$someotherevent", &knock).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "event id mismatch: {body}");
    assert!(state_event(&a, &room_id, &alice, "m.room.member", &bob).await.is_none(), "nothing refused got in");

    let (status, body) = status_of(send_knock(&knock_id, &knock).await);
    assert_eq!(status, 200, "{body}");
    let shown = body["knock_room_state"].as_array().unwrap();
    assert!(shown.iter().any(|e| e["type"] == "m.room.join_rules" && e["content"] == knock_rule), "{body}");
    assert!(shown.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock here"), "{body}");
    assert!(shown.iter().all(|e| e.get("signatures").is_none() && e.get("event_id").is_none()), "stripped: {body}");
    let member = state_event(&a, &room_id, &alice, "m.room.member", &bob).await.expect("the knock is in");
    assert_eq!(member["content"]["membership"], "knock");
    assert_eq!(id_of(&member), knock_id);
}

/// Stands in for the client API's `clientapi.keys` on an instance's bus:
/// Alice has a device with keys, one without, and a master key.
struct FakeKeys;

#[async_trait]
impl Responder for FakeKeys {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let reply: LocalKeysReply = match record.json::<LocalKeysRequest>().unwrap() {
            LocalKeysRequest::Devices { user_id } => serde_json::to_value(LocalDevices {
                devices: vec![
                    json!({"device_id": "KEYED", "keys": {"user_id": user_id, "device_id": "KEYED"},
                        "device_display_name": "Phone"}),
                    json!({"device_id": "BARE"}),
                ],
                master_key: Some(json!({"user_id": user_id, "usage": ["master"]})),
                self_signing_key: None,
            })
            .unwrap(),
            LocalKeysRequest::Query { device_keys } => json!({"device_keys": device_keys, "master_keys": {}}),
            LocalKeysRequest::Claim { one_time_keys } => json!({"one_time_keys": one_time_keys}),
        };
        Ok(serde_json::to_vec(&reply).unwrap())
    }
}

#[tokio::test]
async fn user_keys_endpoints_answer_for_local_users_only() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let (_stop, shutdown) = Shutdown::new();
    let _keys = a.bus.serve("clientapi.keys", LOCAL_KEYS_TOPIC, Arc::new(FakeKeys), shutdown);
    let alice = format!("@alice:{}", a.name);
    let encoded = |user: &str| user.replace('@', "%40").replace(':', "%3A");
    let devices = |user: String| {
        b.client.send(FederationRequest::get(&a.name, format!("/_matrix/federation/v1/user/devices/{user}")))
    };
    let post = |path: &str, body: Value| {
        b.client.send(FederationRequest::post(&a.name, format!("/_matrix/federation/v1/user/keys/{path}"), body))
    };
    let errcode = |result: (u16, Value)| (result.0, result.1["errcode"].as_str().map(str::to_owned));
    let invalid = (400, Some("M_INVALID_PARAM".to_owned()));
    let bad_json = (400, Some("M_BAD_JSON".to_owned()));

    // Only devices with keys are listed (`keys` is required); no update was sent yet.
    let (status, body) = status_of(devices(encoded(&alice)).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"user_id": alice, "stream_id": 0, "devices": [{"device_id": "KEYED", "device_display_name": "Phone",
            "keys": {"user_id": alice, "device_id": "KEYED"}}],
            "master_key": {"user_id": alice, "usage": ["master"]}})
    );
    assert_eq!(errcode(status_of(devices(encoded("@alice:elsewhere.example")).await)), invalid);
    assert_eq!(errcode(status_of(devices("not-a-user".to_owned()).await)), invalid);

    let (status, body) = status_of(post("query", json!({"device_keys": {alice.clone(): ["KEYED"]}})).await);
    assert_eq!((status, body), (200, json!({"device_keys": {alice.clone(): ["KEYED"]}, "master_keys": {}})));
    let foreign = json!({"device_keys": {alice.clone(): [], "@mallory:evil.example": []}});
    assert_eq!(errcode(status_of(post("query", foreign).await)), invalid, "another server's user");
    assert_eq!(errcode(status_of(post("query", json!({"device_keys": "all"})).await)), bad_json);
    assert_eq!(errcode(status_of(post("query", json!({})).await)), bad_json);
    assert_eq!(errcode(status_of(post("query", json!({"device_keys": {"not-a-user": []}})).await)), bad_json);

    let claim = json!({"one_time_keys": {alice.clone(): {"KEYED": "signed_curve25519"}}});
    let (status, body) = status_of(post("claim", claim.clone()).await);
    assert_eq!((status, body), (200, claim));
    let foreign = json!({"one_time_keys": {"@mallory:evil.example": {"D": "signed_curve25519"}}});
    assert_eq!(errcode(status_of(post("claim", foreign).await)), invalid, "another server's user");
    assert_eq!(errcode(status_of(post("claim", json!({"one_time_keys": {alice.clone(): ["D"]}})).await)), bad_json);

    // Not JSON at all: refused before anything else is looked at.
    let response =
        pki.http_client().post(a.url("/_matrix/federation/v1/user/keys/query")).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.json::<Value>().await.unwrap()["errcode"], "M_NOT_JSON");
}

#[tokio::test]
async fn inbound_key_and_presence_edus_count_only_for_the_origins_users_in_a_room() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let with_room_server = || Options { room_server: true, ..Options::default() };
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let alice = format!("@alice:{}", a.name);
    let carol = format!("@carol:{}", a.name);
    let bob = format!("@bob:{}", b.name);
    let room_id = create_public_room(&b, &bob).await;
    join_through(&a, &room_id, &alice, &[&b.name]).await.unwrap();

    let mut key_changes = b.bus.backend().consumer("test.keychange", KEY_CHANGE_TOPIC).await.unwrap();
    let mut presence = b.bus.backend().consumer("test.presence", PRESENCE_TOPIC).await.unwrap();
    let send = |txn: String, edus: Value| {
        let body = json!({"origin": a.name, "origin_server_ts": NOW_MS, "pdus": [], "edus": edus});
        let request = FederationRequest::put(&b.name, format!("/_matrix/federation/v1/send/{txn}"), body);
        let client = &a.client;
        async move { assert_eq!(client.send(request).await.unwrap(), json!({"pdus": {}})) }
    };
    let device_list = |user: &str| {
        json!({"edu_type": "m.device_list_update", "content": {"user_id": user, "device_id": "D", "stream_id": 1,
            "prev_id": [], "deleted": false}})
    };
    let signing = |user: &str| json!({"edu_type": "m.signing_key_update", "content": {"user_id": user}});
    let present = |user: &str, state: &str| {
        json!({"edu_type": "m.presence", "content": {"push": [{"user_id": user, "presence": state,
            "status_msg": "tea", "last_active_ago": 5000, "currently_active": false}]}})
    };
    // Another server's user, a user of A in no room here, malformed ones.
    let refused = json!([
        device_list("@mallory:evil.example"), signing("@mallory:evil.example"), device_list(&carol), signing(&carol),
        {"edu_type": "m.device_list_update", "content": {"device_id": "D"}},
        present("@mallory:evil.example", "online"), present(&carol, "online"), present(&alice, "asleep"),
        {"edu_type": "m.presence", "content": {"push": "everyone"}},
    ]);
    send("refused".to_owned(), refused).await;
    // Alice's, until her join has reached B's membership table.
    let mut changed: Vec<Value> = Vec::new();
    for attempt in 0..100 {
        send(format!("alice-{attempt}"), json!([device_list(&alice)])).await;
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), key_changes.next_batch(10)).await {
            changed.extend(batch.unwrap().iter().map(|r| r.json::<Value>().unwrap()));
        }
        if !changed.is_empty() {
            break;
        }
    }
    assert!(!changed.is_empty(), "Alice's device list update never arrived");
    for change in &changed {
        assert_eq!((change["user_id"].as_str(), change["device_id"].as_str()), (Some(alice.as_str()), Some("")));
        assert_eq!(change["device_keys_changed"], true);
    }

    send("presence".to_owned(), json!([present(&carol, "online"), present(&alice, "unavailable")])).await;
    let batch = tokio::time::timeout(Duration::from_secs(10), presence.next_batch(10)).await.unwrap().unwrap();
    let updates: Vec<Value> = batch.iter().map(|r| r.json::<Value>().unwrap()).collect();
    assert_eq!(
        updates,
        [json!({"user_id": alice, "presence": "unavailable", "status_msg": "tea", "last_active_ts": NOW_MS - 5000})]
    );
}

// PDUs of another server over real HTTP `/send` into the real room server:
// the remote instance has no room server; the test builds and signs its
// events with its key.

fn encode_path(s: &str) -> String {
    s.replace('!', "%21").replace('@', "%40").replace(':', "%3A").replace('$', "%24")
}

/// `event` as `origin` sends it in a v12 room, hashed and signed by `key`, and its id.
fn signed_pdu(event: Value, origin: &str, key: &ServerSigningKey) -> (Value, String) {
    let mut object = canonical(event);
    let rules = RoomVersionId::V12.rules().unwrap();
    hash_and_sign_event(origin, &key.keypair, &mut object, &rules.redaction).unwrap();
    let event_id = format!("${}", reference_hash(&object, &rules).unwrap());
    (Value::from(CanonicalJsonValue::Object(object)), event_id)
}

/// Another key under the id of `key`: its signatures name that key but do not verify.
fn impostor_of(key: &ServerSigningKey) -> ServerSigningKey {
    let version = key.key_id().trim_start_matches("ed25519:").to_owned();
    let fresh = ServerSigningKey::generate_file_contents();
    let seed = fresh.split_whitespace().nth(2).unwrap().to_owned();
    ServerSigningKey::parse(&format!("ed25519 {version} {seed}")).unwrap()
}

/// A user of `remote` in a room of `resident`, building its own events.
#[derive(Clone)]
struct RemoteMember {
    room_id: String,
    user: String,
    /// The room's power levels and the user's join: a message's auth events.
    auth_events: Vec<String>,
    /// The latest event built on and its depth.
    tip: (String, i64),
}

impl RemoteMember {
    /// `user` of `remote` joins `room_id` on `resident` by `/make_join` and `/send_join`.
    async fn join(remote: &Instance, resident: &Instance, room_id: &str, user: &str) -> Self {
        let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", encode_path(room_id), encode_path(user));
        let answer = remote.client.send(FederationRequest::get(&resident.name, path)).await.unwrap();
        let (join, join_id) = sign_template(&answer, user, &remote.name, &remote.key);
        let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode_path(room_id), encode_path(&join_id));
        let body = Value::from(CanonicalJsonValue::Object(join));
        remote.client.send(FederationRequest::put(&resident.name, path, body)).await.unwrap();
        let creator = format!("@alice:{}", resident.name);
        let levels = state_event(resident, room_id, &creator, "m.room.power_levels", "").await.unwrap();
        let depth = answer["event"]["depth"].as_i64().unwrap();
        Self {
            room_id: room_id.to_owned(),
            user: user.to_owned(),
            auth_events: vec![id_of(&levels), join_id.clone()],
            tip: (join_id, depth),
        }
    }

    /// An event of the user's after the tip, at `ts`, signed by `key` as `origin`.
    fn event(&self, kind: &str, state_key: Option<&str>, content: Value, ts: u64) -> Value {
        let mut event = json!({"room_id": self.room_id, "type": kind, "sender": self.user, "content": content,
            "prev_events": [self.tip.0], "auth_events": self.auth_events, "depth": self.tip.1 + 1,
            "origin_server_ts": ts});
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }

    /// A message built on the tip, which it becomes.
    fn message(&mut self, body: &str, ts: u64, origin: &str, key: &ServerSigningKey) -> (Value, String) {
        let (pdu, event_id) = signed_pdu(self.event("m.room.message", None, json!({"body": body}), ts), origin, key);
        self.tip = (event_id.clone(), self.tip.1 + 1);
        (pdu, event_id)
    }
}

/// `PUT /send` of `pdus` from `from` to `to`.
async fn send_pdus(from: &Instance, to: &Instance, txn: &str, pdus: Vec<Value>) -> Value {
    let body = json!({"origin": from.name, "origin_server_ts": NOW_MS, "pdus": pdus});
    from.client
        .send(FederationRequest::put(&to.name, format!("/_matrix/federation/v1/send/{txn}"), body))
        .await
        .unwrap()
}

/// Event `event_id` of `room_id` as local user `user` reads it from `server`'s room server.
async fn user_event(server: &Instance, room_id: &str, user: &str, event_id: &str) -> QueryReply {
    let request = QueryRequest::UserEvent {
        user_id: user.try_into().unwrap(),
        room_id: room_id.try_into().unwrap(),
        event_id: event_id.try_into().unwrap(),
    };
    server.bus.request_json(QUERY_TOPIC, room_id, &request, Duration::from_secs(60)).await.unwrap()
}

/// Issue acceptance: one PDU that fails auth in a full 50-PDU transaction
/// fails alone; the other 49 are in the room. A PDU whose signature does
/// not verify gets its error and is not stored.
#[tokio::test]
async fn a_poison_pdu_fails_alone_in_a_full_transaction_over_http() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let alice = format!("@alice:{}", b.name);
    let room_id = create_public_room(&b, &alice).await;
    let mut bob = RemoteMember::join(&a, &b, &room_id, &format!("@bob:{}", a.name)).await;
    let levels_before = state_event(&b, &room_id, &alice, "m.room.power_levels", "").await.unwrap();

    // Bob gives himself power he does not have: auth refuses it. Nothing builds on it.
    let grab = bob.event("m.room.power_levels", Some(""), json!({"users": {bob.user.clone(): 100}}), NOW_MS);
    let (grab, grab_id) = signed_pdu(grab, &a.name, &a.key);
    let mut pdus = Vec::new();
    let mut good = Vec::new();
    for n in 0..49 {
        if n == 24 {
            pdus.push(grab.clone());
        }
        let (pdu, event_id) = bob.message(&format!("message {n}"), NOW_MS + n, &a.name, &a.key);
        pdus.push(pdu);
        good.push(event_id);
    }
    assert_eq!(pdus.len(), 50);
    let answer = send_pdus(&a, &b, "full", pdus).await;
    let results = answer["pdus"].as_object().unwrap();
    assert_eq!(results.len(), 50, "{answer}");
    for event_id in &good {
        assert_eq!(results[event_id], json!({}), "{event_id}: {answer}");
    }
    assert!(results[&grab_id]["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    for event_id in &good {
        let reply = user_event(&b, &room_id, &alice, event_id).await;
        assert!(matches!(reply, Ok(QueryOk::ServerEvents { .. })), "{event_id} is not in the room: {reply:?}");
    }
    let levels = state_event(&b, &room_id, &alice, "m.room.power_levels", "").await.unwrap();
    assert_eq!(levels, levels_before, "the refused power levels changed nothing");

    // A signature by Bob's server's key id that its key does not verify.
    let (forged, forged_id) = bob.clone().message("forged", NOW_MS + 100, &a.name, &impostor_of(&a.key));
    let (fine, fine_id) = bob.message("fine", NOW_MS + 100, &a.name, &a.key);
    let answer = send_pdus(&a, &b, "forged", vec![forged, fine]).await;
    assert!(answer["pdus"][&forged_id]["error"].as_str().is_some_and(|e| e.contains("signature")), "{answer}");
    assert_eq!(answer["pdus"][&fine_id], json!({}), "{answer}");
    let reply = user_event(&b, &room_id, &alice, &forged_id).await;
    assert_eq!(reply.unwrap_err().errcode, ErrorCode::NotFound, "the forged PDU is not stored");
    assert!(matches!(user_event(&b, &room_id, &alice, &fine_id).await, Ok(QueryOk::ServerEvents { .. })));
}

/// Issue acceptance: in a v5+ room a key counts at most 7 days past the
/// time it was fetched, whatever `valid_until_ts` it claims. A's clock is
/// 100 weeks ahead, so its key response claims validity that far out.
#[tokio::test]
async fn a_key_counts_at_most_seven_days_past_its_fetch_whatever_it_claims() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let ahead = ManualClock::new(NOW_MS + 100 * WEEK_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &ahead, Options::default()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let alice = format!("@alice:{}", b.name);
    let room_id = create_public_room(&b, &alice).await;
    let mut bob = RemoteMember::join(&a, &b, &room_id, &format!("@bob:{}", a.name)).await;

    let claimed: Value = pki
        .http_client()
        .get(format!("https://localhost:{}/_matrix/key/v2/server", a.addr.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claimed["valid_until_ts"], NOW_MS + 101 * WEEK_MS, "A claims validity far ahead");
    let keys = b.server_keys(&a.name, &[&a.key.key_id()]).await;
    assert_eq!(keys[0].valid_until_ts, Some(NOW_MS + WEEK_MS), "B trusts it a week past its fetch: {keys:?}");

    let day = WEEK_MS / 7;
    let (within, within_id) = bob.message("six days on", NOW_MS + 6 * day, &a.name, &a.key);
    let (beyond, beyond_id) = bob.message("eight days on", NOW_MS + 8 * day, &a.name, &a.key);
    let answer = send_pdus(&a, &b, "ahead", vec![within, beyond]).await;
    assert_eq!(answer["pdus"][&within_id], json!({}), "{answer}");
    assert!(answer["pdus"][&beyond_id]["error"].as_str().is_some_and(|e| e.contains("signature")), "{answer}");
    assert!(matches!(user_event(&b, &room_id, &alice, &within_id).await, Ok(QueryOk::ServerEvents { .. })));
    let reply = user_event(&b, &room_id, &alice, &beyond_id).await;
    assert_eq!(reply.unwrap_err().errcode, ErrorCode::NotFound, "the late PDU is not stored");
}

/// A private room on `server` whose join rules let in the members of `allowed`.
async fn create_restricted_room(server: &Instance, creator: &str, allowed: &str) -> String {
    let room_id = create_room(server, creator, "private_chat").await;
    let rules = json!({"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed}]});
    send_state(server, &room_id, creator, "m.room.join_rules", "", rules).await;
    room_id
}

/// Issue acceptance: B's user who is in a room on A that a restricted room
/// on A allows joins it through A, which names its user as the authoriser
/// in the template and countersigns the join; a user of B outside the
/// allowed room is refused, and each other refusal has the spec's error.
#[tokio::test]
async fn restricted_rooms_let_in_members_of_an_allowed_room_across_servers() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let with_room_server = || Options { room_server: true, ..Options::default() };
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, with_room_server()).await;
    let alice = format!("@alice:{}", a.name);
    let (bob, carol) = (format!("@bob:{}", b.name), format!("@carol:{}", b.name));
    let lobby = create_public_room(&a, &alice).await;
    join_through(&b, &lobby, &bob, &[&a.name]).await.unwrap();
    clock.advance_ms(1);
    let inner = create_restricted_room(&a, &alice, &lobby).await;

    let make_join = |room: &str, user: &str| {
        let path = format!("/_matrix/federation/v1/make_join/{}/{}?ver=12", encode_path(room), encode_path(user));
        b.client.send(FederationRequest::get(&a.name, path))
    };
    let (status, template) = status_of(make_join(&inner, &bob).await);
    assert_eq!(status, 200, "{template}");
    assert_eq!(template["event"]["content"]["join_authorised_via_users_server"], alice.as_str(), "{template}");
    let (status, body) = status_of(make_join(&inner, &carol).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "not in the lobby: {body}");

    // Carol's join on Bob's template: A does not countersign it.
    let (forged, forged_id) = sign_template(&template, &carol, &b.name, &b.key);
    let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode_path(&inner), encode_path(&forged_id));
    let body = Value::from(CanonicalJsonValue::Object(forged));
    let (status, body) = status_of(b.client.send(FederationRequest::put(&a.name, path, body)).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    // Bob's join with content its hash does not cover: A does not sign it.
    let (mut tampered, tampered_id) = sign_template(&template, &bob, &b.name, &b.key);
    if let Some(CanonicalJsonValue::Object(content)) = tampered.get_mut("content") {
        content.insert("displayname".to_owned(), CanonicalJsonValue::String("Mallory".to_owned()));
    }
    let path = format!("/_matrix/federation/v2/send_join/{}/{}", encode_path(&inner), encode_path(&tampered_id));
    let body = Value::from(CanonicalJsonValue::Object(tampered));
    let (status, body) = status_of(b.client.send(FederationRequest::put(&a.name, path, body)).await);
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("content hash")), "{body}");

    let joined = join_through(&b, &inner, &bob, &[&a.name]).await.unwrap();
    assert!(matches!(joined, FederationPerformOk::Joined { .. }), "{joined:?}");
    let on_a = state_event(&a, &inner, &alice, "m.room.member", &bob).await.expect("A accepted the join");
    assert_eq!(on_a["content"]["join_authorised_via_users_server"], alice.as_str(), "{on_a}");
    assert!(signed_by(&redacted_member(&on_a), &a.name, &a.key), "A countersigned: {on_a}");
    let on_b = state_event(&b, &inner, &bob, "m.room.member", &bob).await.expect("B has the join");
    assert_eq!(on_b, on_a, "B keeps the countersigned join");
    let refused = join_through(&b, &inner, &carol, &[&a.name]).await.unwrap_err();
    assert_eq!((refused.errcode, refused.status), (ErrorCode::Forbidden, 403), "{refused:?}");

    // Allowed rooms A does not know: it cannot judge.
    clock.advance_ms(1);
    let unknown = create_restricted_room(&a, &alice, "!gone:elsewhere.example").await;
    let (status, body) = status_of(make_join(&unknown, &bob).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNABLE_TO_AUTHORISE_JOIN")), "{body}");
    // Nobody of A is left to authorise the join.
    clock.advance_ms(1);
    let deserted = create_restricted_room(&a, &alice, &lobby).await;
    send_state(&a, &deserted, &alice, "m.room.member", &alice, json!({"membership": "leave"})).await;
    let (status, body) = status_of(make_join(&deserted, &bob).await);
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNABLE_TO_GRANT_JOIN")), "{body}");
    let refused = join_through(&b, &deserted, &bob, &[&a.name]).await.unwrap_err();
    assert_eq!((refused.errcode, refused.status), (ErrorCode::UnableToGrantJoin, 400), "{refused:?}");
}

/// A member event as its signatures cover it: redacted (v12 keeps
/// `membership` and `join_authorised_via_users_server`), without `unsigned`.
fn redacted_member(event: &Value) -> Value {
    let mut redacted = event.clone();
    let content = &event["content"];
    redacted["content"] = json!({"membership": content["membership"],
        "join_authorised_via_users_server": content["join_authorised_via_users_server"]});
    redacted.as_object_mut().unwrap().remove("unsigned");
    redacted
}

/// `/hierarchy` shows the origin a space and the children it may see,
/// names the others as inaccessible, and hides a room it may not see;
/// `/publicRooms` is refused while the operator has not allowed it; both
/// need a signed request.
#[tokio::test]
async fn hierarchy_and_public_rooms_answer_only_signed_requests_for_what_the_origin_may_see() {
    let pki = TestPki::new();
    let clock = ManualClock::new(NOW_MS);
    let a = Instance::start(&pki, TestDb::sqlite(), &clock, Options { room_server: true, ..Options::default() }).await;
    let b = Instance::start(&pki, TestDb::sqlite(), &clock, Options::default()).await;
    let alice = format!("@alice:{}", a.name);
    let space = create_public_room(&a, &alice).await;
    let lobby = create_public_room(&a, &alice).await;
    let secret = create_room(&a, &alice, "private_chat").await;
    for (child, suggested) in [(&lobby, true), (&secret, false)] {
        send_state(&a, &space, &alice, "m.space.child", child, json!({"via": [a.name], "suggested": suggested})).await;
    }
    let encode = |s: &str| s.replace('!', "%21").replace(':', "%3A");
    let hierarchy = |room: &str, query: &str| format!("/_matrix/federation/v1/hierarchy/{}{query}", encode(room));
    let get = |path: String| b.client.send(FederationRequest::get(&a.name, path));

    let (status, body) = status_of(get(hierarchy(&space, "")).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["room_id"], space.as_str());
    assert_eq!(body["room"]["join_rule"], "public");
    assert_eq!(body["room"]["children_state"].as_array().map(Vec::len), Some(2), "{body}");
    let children: Vec<&str> =
        body["children"].as_array().unwrap().iter().filter_map(|c| c["room_id"].as_str()).collect();
    assert_eq!(children, [lobby.as_str()], "{body}");
    assert_eq!(body["inaccessible_children"], json!([secret]), "{body}");
    let (status, body) = status_of(get(hierarchy(&space, "?suggested_only=true")).await);
    assert_eq!((status, &body["inaccessible_children"]), (200, &json!([])), "{body}");

    // Refusals: a room the origin may not see, one unknown, bad parameters.
    let errcode = |(status, body): (u16, Value)| (status, body["errcode"].as_str().map(str::to_owned));
    let not_found = (404, Some("M_NOT_FOUND".to_owned()));
    assert_eq!(errcode(status_of(get(hierarchy(&secret, "")).await)), not_found);
    assert_eq!(errcode(status_of(get(hierarchy(&format!("!unknown:{}", a.name), "")).await)), not_found);
    let invalid = (400, Some("M_INVALID_PARAM".to_owned()));
    assert_eq!(errcode(status_of(get(hierarchy(&space, "?suggested_only=maybe")).await)), invalid);
    assert_eq!(errcode(status_of(get(hierarchy("not-a-room", "")).await)), invalid);

    // The directory: not allowed by default, on either method.
    let forbidden = (403, Some("M_FORBIDDEN".to_owned()));
    assert_eq!(errcode(status_of(get("/_matrix/federation/v1/publicRooms".to_owned()).await)), forbidden);
    let post = FederationRequest::post(&a.name, "/_matrix/federation/v1/publicRooms", json!({"limit": 1}));
    assert_eq!(errcode(status_of(b.client.send(post).await)), forbidden);

    // Unsigned requests.
    let http = pki.http_client();
    for (method, path) in [
        (reqwest::Method::GET, hierarchy(&space, "")),
        (reqwest::Method::GET, "/_matrix/federation/v1/publicRooms".to_owned()),
        (reqwest::Method::POST, "/_matrix/federation/v1/publicRooms".to_owned()),
    ] {
        let response = http.request(method.clone(), a.url(&path)).json(&json!({})).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("M_UNAUTHORIZED")),
            "{method} {path}"
        );
    }
}
