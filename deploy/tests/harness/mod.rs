//! Runs the real `myelin` binary for end-to-end tests.

#[cfg(feature = "kafka")]
pub mod distributed;

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};

pub const SHARED_SECRET: &str = "end-to-end-shared-secret";
/// The password [`Server::register`] gives every account.
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// The interpreter with the test clients installed (see scripts/install-test-deps.sh).
pub fn python() -> PathBuf {
    std::env::var_os("MYELIN_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_path(".venv/bin/python"))
}

/// Node.js, which runs the JavaScript clients under `tests/clients/js`.
pub fn node() -> PathBuf {
    std::env::var_os("MYELIN_TEST_NODE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("node"))
}

/// Runs one client script to its end; panics with its output and the
/// server's log unless it exits with success and prints `done`.
pub async fn run_client(server: &Server, program: PathBuf, args: &[&OsStr], done: &str) -> String {
    let output = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|error| panic!("run {}: {error}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(done),
        "{} {args:?} failed ({}):\n{stdout}\n{stderr}\n{}",
        program.display(),
        output.status,
        server.log_tail()
    );
    stdout.into_owned()
}

/// A client and a federation port, distinct: both are held while the
/// second is picked, as a port just released can be handed out again.
fn free_ports() -> (u16, u16) {
    let client = TcpListener::bind("127.0.0.1:0").unwrap();
    let federation = TcpListener::bind("127.0.0.1:0").unwrap();
    (client.local_addr().unwrap().port(), federation.local_addr().unwrap().port())
}

pub struct Server {
    dir: TempDir,
    config: Option<PathBuf>,
    client_port: u16,
    federation_port: u16,
    /// Environment overrides beyond the ports.
    env: Vec<(&'static str, String)>,
    child: Option<Child>,
    _db: Option<myelin_testkit::TestDb>,
}

impl Server {
    /// A server from `myelin generate-config` on a fresh database.
    pub async fn start(backend: Backend) -> Self {
        let mut server = Self::generate(backend).await;
        server.spawn().await;
        server
    }

    /// A server like [`Server::start`] with configuration overrides
    /// (`MYELIN_<SECTION>__<KEY>` variables) that also hold across restarts.
    pub async fn start_with_env(backend: Backend, env: &[(&'static str, &str)]) -> Self {
        let mut server = Self::generate(backend).await;
        server.env.extend(env.iter().map(|(key, value)| (*key, (*value).to_owned())));
        server.spawn().await;
        server
    }

    /// Two servers on loopback that federate: their federation
    /// certificates come from one test CA that both trust.
    pub async fn start_federated_pair(backend: Backend) -> (Self, Self, TempDir) {
        let (mut servers, ca_dir) = Self::start_federated(backend, 2).await;
        let b = servers.pop().unwrap();
        let a = servers.pop().unwrap();
        (a, b, ca_dir)
    }

    /// `count` servers on loopback that federate, like [`Server::start_federated_pair`].
    pub async fn start_federated(backend: Backend, count: usize) -> (Vec<Self>, TempDir) {
        Self::start_federated_with_env(backend, &vec![Vec::new(); count]).await
    }

    /// Servers that federate, like [`Server::start_federated`], one for each
    /// list of configuration overrides.
    pub async fn start_federated_with_env(
        backend: Backend,
        envs: &[Vec<(&'static str, &str)>],
    ) -> (Vec<Self>, TempDir) {
        let ca_dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Myelin end-to-end CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let ca_file = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut servers = Vec::new();
        for env in envs {
            let mut server = Self::generate(backend).await;
            server.env.extend(env.iter().map(|(key, value)| (*key, (*value).to_owned())));
            let leaf_key = rcgen::KeyPair::generate().unwrap();
            let leaf =
                rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
            std::fs::write(server.dir.path().join("tls.crt"), leaf.pem()).unwrap();
            std::fs::write(server.dir.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
            server.env.push(("MYELIN_FEDERATION_API__CA_FILE", ca_file.display().to_string()));
            server.env.push(("MYELIN_FEDERATION_API__ALLOW_LOOPBACK_PEERS", "true".to_owned()));
            server.spawn().await;
            servers.push(server);
        }
        (servers, ca_dir)
    }

    pub fn server_name(&self) -> String {
        format!("localhost:{}", self.federation_port)
    }

    async fn generate(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(myelin_testkit::TestDb::postgres().await),
        };
        let (client_port, federation_port) = free_ports();
        let mut generate = std::process::Command::new(env!("CARGO_BIN_EXE_myelin"));
        generate
            .args(["generate-config", "--server-name", &format!("localhost:{federation_port}"), "--dir"])
            .arg(dir.path());
        if let Some(db) = &db {
            generate.args(["--database-url", &db.url]);
        }
        let status = generate.status().expect("run generate-config");
        assert!(status.success(), "generate-config failed");
        let config = Some(dir.path().join("myelin.yaml"));
        Self { dir, config, client_port, federation_port, env: Vec::new(), child: None, _db: db }
    }

    /// `myelin run` with no configuration, in an empty working directory.
    pub async fn start_without_config() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client_port, federation_port) = free_ports();
        let mut server =
            Self { dir, config: None, client_port, federation_port, env: Vec::new(), child: None, _db: None };
        server.spawn().await;
        server
    }

    /// Where `generate-config` wrote the configuration and `signing.key`.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("myelin-data")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_myelin"));
        command.arg("run");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .current_dir(self.dir.path())
            // Ports are the only override: everything else comes from the config.
            .env("MYELIN_CLIENT_API__LISTEN", format!("127.0.0.1:{}", self.client_port))
            .env("MYELIN_FEDERATION_API__LISTEN", format!("127.0.0.1:{}", self.federation_port))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        if self.config.is_some() {
            command.env("MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET", SHARED_SECRET);
        }
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        self.child = Some(command.spawn().expect("start myelin"));
        self.wait_until_ready().await;
    }

    async fn wait_until_ready(&mut self) {
        let url = self.url("/_matrix/client/versions");
        for _ in 0..600 {
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("myelin exited with {status}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("myelin did not serve /versions within 60 s:\n{}", self.log_tail());
    }

    /// Stop the process (SIGKILL: nothing gets a chance to flush) and start it again.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Restart with more configuration overrides (`MYELIN_<SECTION>__<KEY>`).
    pub async fn restart_with_env(&mut self, env: &[(&'static str, &str)]) {
        self.env.extend(env.iter().map(|(key, value)| (*key, (*value).to_owned())));
        self.restart().await;
    }

    /// Kill the process (SIGKILL), keeping its data for [`Server::run`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Start the stopped process again.
    pub async fn run(&mut self) {
        self.spawn().await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("myelin.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let start = log.len().saturating_sub(8_000);
        log[log.floor_char_boundary(start)..].to_owned()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The federation listener (TLS, with the server's own certificate).
    pub fn federation_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.federation_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Registers `localpart` through the shared-secret admin API; returns its access token.
    pub async fn register(&self, localpart: &str) -> String {
        self.register_as(localpart, false).await
    }

    /// Like [`Server::register`], as a server admin when `admin`.
    pub async fn register_as(&self, localpart: &str, admin: bool) -> String {
        let endpoint = self.url("/_synapse/admin/v1/register");
        let nonce: Value = reqwest::get(&endpoint).await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap();
        let password = PASSWORD;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).unwrap();
        let role = if admin { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{localpart}\0{password}\0{role}").as_bytes());
        let body = json!({
            "nonce": nonce, "username": localpart, "password": password, "admin": admin,
            "mac": hex::encode(mac.finalize().into_bytes()),
        });
        let (status, reply) = json_request(Method::POST, &endpoint, None, &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {reply}");
        reply["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let (status, reply) =
            json_request(Method::POST, &self.url("/_matrix/client/v3/createRoom"), Some(token), &body.to_string())
                .await;
        assert_eq!(status, StatusCode::OK, "createRoom: {reply}");
        reply["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn send_message(&self, token: &str, room_id: &str, txn_id: &str, body: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn_id}");
        let (status, reply) = self.put(token, &path, json!({"msgtype": "m.text", "body": body})).await;
        assert_eq!(status, StatusCode::OK, "send: {reply}");
        reply["event_id"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        json_request(Method::POST, &self.url(path), Some(token), &body.to_string()).await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        json_request(Method::GET, &self.url(path), Some(token), "").await
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        json_request(Method::PUT, &self.url(path), Some(token), &body.to_string()).await
    }
}

/// One request with a raw body; the reply parsed as JSON (`null` if it is not).
pub async fn json_request(method: Method, url: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method.clone(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if method != Method::GET {
        request = request.header("content-type", "application/json").body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
