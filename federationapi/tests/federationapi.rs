//! The federation listener over real TLS: version, signed key response,
//! errors for unknown paths, and shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use myelin_bus::{Shutdown, ShutdownTrigger};
use myelin_config::Config;
use myelin_types::ManualClock;
use myelin_types::ruma::serde::Base64;
use myelin_types::ruma::signatures::{PublicKeyMap, verify_json};
use myelin_types::ruma::{CanonicalJsonObject, CanonicalJsonValue};
use myelin_types::signing::ServerSigningKey;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

const SERVER_NAME: &str = "localhost:8448";
const NOW_MS: u64 = 1_700_000_000_000;

struct Fixture {
    _dir: TempDir,
    addr: SocketAddr,
    key: Arc<ServerSigningKey>,
    client: reqwest::Client,
    trigger: ShutdownTrigger,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        write(dir.path(), "tls.crt", &cert.cert.pem());
        write(dir.path(), "tls.key", &cert.signing_key.serialize_pem());

        let mut config = Config::in_dir(dir.path().to_owned());
        config.global.server_name = SERVER_NAME.to_owned();
        config.federation_api.listen = "127.0.0.1:0".parse().unwrap();
        let key = Arc::new(ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap());
        let (trigger, shutdown) = Shutdown::new();
        let clock = Arc::new(ManualClock::new(NOW_MS));
        let started = myelin_federationapi::start(Arc::new(config), key.clone(), clock, shutdown)
            .await
            .expect("start federation");
        assert_ne!(started.local_addr.port(), 0, "the bound port is exposed");

        // Trust exactly the generated certificate, and reach it by its name.
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
            .resolve("localhost", started.local_addr)
            .build()
            .unwrap();
        Self { _dir: dir, addr: started.local_addr, key, client, trigger, tasks: started.tasks }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("TLS request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn public_keys(&self) -> PublicKeyMap {
        let set = [(self.key.key_id(), Base64::parse(self.key.public_key_base64()).unwrap())].into();
        [(SERVER_NAME.to_owned(), set)].into()
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}

fn canonical(value: Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value).unwrap() {
        CanonicalJsonValue::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

#[tokio::test]
async fn version_names_the_server() {
    let fixture = Fixture::start().await;
    let (status, body) = fixture.get("/_matrix/federation/v1/version").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["server"]["name"], "Myelin");
    assert_eq!(body["server"]["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn key_response_is_signed_by_the_key_it_publishes() {
    let fixture = Fixture::start().await;
    let (status, body) = fixture.get("/_matrix/key/v2/server").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key_id = fixture.key.key_id();
    assert_eq!(body["server_name"], SERVER_NAME);
    assert_eq!(body["verify_keys"][&key_id]["key"], fixture.key.public_key_base64());
    assert_eq!(body["old_verify_keys"], serde_json::json!({}));
    assert_eq!(body["valid_until_ts"], NOW_MS + 7 * 24 * 3600 * 1000, "dated by the injected clock");
    assert!(body["signatures"][SERVER_NAME][&key_id].is_string(), "{body}");

    verify_json(&fixture.public_keys(), &canonical(body.clone())).expect("signature verifies");

    // The deprecated form with a key id answers the same keys.
    let (status, again) = fixture.get(&format!("/_matrix/key/v2/server/{key_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["verify_keys"], body["verify_keys"]);
}

#[tokio::test]
async fn a_tampered_key_response_fails_verification() {
    let fixture = Fixture::start().await;
    let (_, mut body) = fixture.get("/_matrix/key/v2/server").await;
    body["valid_until_ts"] = Value::from(NOW_MS + 365 * 24 * 3600 * 1000);
    assert!(verify_json(&fixture.public_keys(), &canonical(body)).is_err(), "a changed field breaks the signature");

    // A different key (same key id) must not verify the genuine response either.
    let (_, body) = fixture.get("/_matrix/key/v2/server").await;
    let impostor = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
    let set = [(fixture.key.key_id(), Base64::parse(impostor.public_key_base64()).unwrap())].into();
    let keys: PublicKeyMap = [(SERVER_NAME.to_owned(), set)].into();
    assert!(verify_json(&keys, &canonical(body)).is_err());
}

#[tokio::test]
async fn unknown_paths_and_methods_are_unrecognized() {
    let fixture = Fixture::start().await;
    let (status, body) = fixture.get("/_matrix/federation/v1/nonsense").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");

    let response = fixture.client.post(fixture.url("/_matrix/federation/v1/version")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn plain_http_is_not_served() {
    let fixture = Fixture::start().await;
    let plain = reqwest::get(format!("http://127.0.0.1:{}/_matrix/federation/v1/version", fixture.addr.port())).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "federation is TLS only");
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let mut fixture = Fixture::start().await;
    fixture.trigger.trigger();
    for task in std::mem::take(&mut fixture.tasks) {
        tokio::time::timeout(Duration::from_secs(15), task).await.expect("listener stops").unwrap();
    }
    let after = fixture.client.get(fixture.url("/_matrix/federation/v1/version")).send().await;
    assert!(after.is_err(), "no longer accepting connections");
}

#[tokio::test]
async fn a_missing_certificate_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(dir.path().to_owned());
    config.federation_api.listen = "127.0.0.1:0".parse().unwrap();
    let key = Arc::new(ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap());
    let (_trigger, shutdown) = Shutdown::new();
    let error =
        myelin_federationapi::start(Arc::new(config), key, Arc::new(ManualClock::new(0)), shutdown).await.unwrap_err();
    assert!(matches!(error, myelin_federationapi::FederationError::Tls { .. }), "{error}");
}
