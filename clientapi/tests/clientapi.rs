//! The client API over real HTTP, on an embedded bus over SQLite and
//! PostgreSQL. Room endpoints run against the real room server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use myelin_bus::{Bus, EmbeddedBackend, Shutdown, ShutdownTrigger};
use myelin_clientapi::api::{
    ACCOUNT_DATA_TOPIC, ALIAS_QUERY_TOPIC, AccountDataUpdate, AliasQuery, AliasReply, DEVICES_TOPIC, DeviceEvent,
    Identity, OPENID_QUERY_TOPIC, OpenIdQuery, OpenIdReply, QUERY_TOPIC, QueryReply, QueryRequest, RECEIPT_TOPIC,
    ReceiptUpdate, TYPING_TOPIC, TypingUpdate,
};
use myelin_config::Config;
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::clock::SharedClock;
use myelin_types::signing::ServerSigningKey;
use myelin_types::{ErrorCode, ManualClock, SystemClock};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha1::Sha1;

const SECRET: &str = "test-shared-secret";
const SERVER_NAME: &str = "test.local";
/// The upload limit the tests configure.
const MAX_UPLOAD: u64 = 64 * 1024;
const TURN_URI: &str = "turn:turn.test.local:3478?transport=udp";
const TURN_SECRET: &str = "turn shared secret";
const PUBLIC_BASE_URL: &str = "https://matrix.test.local";

struct Server {
    base: String,
    http: reqwest::Client,
    bus: Bus,
    backend: &'static str,
    _trigger: ShutdownTrigger,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

struct Options {
    secret: Option<&'static str>,
    open_registration: bool,
    registration_requires_token: bool,
    roomserver: bool,
    clock: Option<ManualClock>,
    open_directory: bool,
    guests: bool,
    /// TURN servers with a shared secret, and a public base URL.
    voip_and_discovery: bool,
    login_via_existing_session: bool,
    /// `client_api.url_preview_enabled`, and the ranges previews may reach.
    url_previews: bool,
    url_preview_allowlist: &'static [&'static str],
    /// Application service registrations (YAML), one file each.
    app_services: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            secret: Some(SECRET),
            open_registration: false,
            registration_requires_token: false,
            roomserver: false,
            clock: None,
            open_directory: false,
            guests: false,
            voip_and_discovery: false,
            login_via_existing_session: false,
            url_previews: false,
            url_preview_allowlist: &[],
            app_services: Vec::new(),
        }
    }
}

impl Server {
    async fn start(test_db: TestDb, options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::in_dir(dir.path().to_owned());
        config.global.server_name = SERVER_NAME.to_owned();
        config.client_api.registration_shared_secret = options.secret.map(str::to_owned);
        config.client_api.open_registration = options.open_registration;
        config.client_api.registration_requires_token = options.registration_requires_token;
        config.client_api.allow_guest_access = options.guests;
        config.client_api.public_room_directory_without_auth = options.open_directory;
        config.client_api.max_upload_size = MAX_UPLOAD;
        config.client_api.login_via_existing_session = options.login_via_existing_session;
        config.client_api.url_preview_enabled = options.url_previews;
        config.client_api.url_preview_ip_allowlist =
            options.url_preview_allowlist.iter().map(|net| net.parse().unwrap()).collect();
        if options.voip_and_discovery {
            config.client_api.turn_uris = vec![TURN_URI.to_owned()];
            config.client_api.turn_shared_secret = Some(TURN_SECRET.to_owned());
            config.client_api.turn_user_lifetime_secs = 3600;
            config.client_api.public_base_url = Some(PUBLIC_BASE_URL.to_owned());
        }
        for (i, registration) in options.app_services.iter().enumerate() {
            let path = dir.path().join(format!("appservice-{i}.yaml"));
            std::fs::write(&path, registration).unwrap();
            config.global.app_service_config_files.push(path);
        }
        std::fs::write(&config.global.signing_key_path, ServerSigningKey::generate_file_contents()).unwrap();
        let config = Arc::new(config);

        let db = Db::connect(&test_db.url).await.unwrap();
        let backend = EmbeddedBackend::open(db.clone(), 8).await.unwrap();
        let clock: SharedClock = match options.clock {
            Some(clock) => Arc::new(clock),
            None => Arc::new(SystemClock),
        };
        let bus = Bus::new(Arc::new(backend), clock);
        let (trigger, shutdown) = Shutdown::new();
        if options.roomserver {
            myelin_roomserver::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone())
                .await
                .expect("room server starts");
        }
        let started = myelin_clientapi::service::start(config, db, bus.clone(), shutdown).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = started.router.merge(started.media_router);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            bus,
            backend: test_db.name,
            _trigger: trigger,
            _dir: dir,
            _db: test_db,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("[{}] {path}: not JSON: {text}", self.backend));
        Reply { status, body, context: format!("[{}] {path}", self.backend) }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, token, Some(&body)).await
    }

    async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, token, Some(&body)).await
    }

    async fn delete(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(reqwest::Method::DELETE, path, token, Some(&body)).await
    }

    /// A request whose body is sent as is (for malformed JSON).
    async fn send_raw(&self, method: reqwest::Method, path: &str, token: &str, body: &'static str) -> Reply {
        let request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token).body(body);
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap();
        Reply { status, body, context: format!("[{}] {path}", self.backend) }
    }

    /// The next `n` records on `topic` (read by a fresh consumer group), each with its key.
    async fn records<T: serde::de::DeserializeOwned>(&self, group: &str, topic: &str, n: usize) -> Vec<(String, T)> {
        let mut consumer = self.bus.backend().consumer(group, topic).await.unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(100))
                .await
                .unwrap_or_else(|_| panic!("[{}] {n} records on {topic}", self.backend))
                .unwrap();
            for record in batch {
                out.push((record.key.clone(), record.json::<T>().unwrap()));
            }
        }
        out
    }

    async fn post_raw(&self, path: &str, body: &'static str) -> Reply {
        let response = self.http.post(format!("{}{path}", self.base)).body(body).send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap();
        Reply { status, body, context: format!("[{}] {path}", self.backend) }
    }

    async fn nonce(&self) -> String {
        let reply = self.get("/_synapse/admin/v1/register", None).await.ok();
        reply.body["nonce"].as_str().unwrap().to_owned()
    }

    /// Register through the shared-secret admin API.
    async fn admin_register(&self, username: &str, password: &str) -> Account {
        let nonce = self.nonce().await;
        let body = admin_body(&nonce, username, password, SECRET);
        let reply = self.post("/_synapse/admin/v1/register", None, body).await.ok();
        Account::from_reply(&reply.body)
    }

    /// Register a server admin through the shared-secret admin API.
    async fn admin_register_admin(&self, username: &str, password: &str) -> Account {
        let nonce = self.nonce().await;
        let body = json!({
            "nonce": nonce, "username": username, "password": password, "admin": true,
            "mac": mac(SECRET, &nonce, username, password, true),
        });
        let reply = self.post("/_synapse/admin/v1/register", None, body).await.ok();
        Account::from_reply(&reply.body)
    }

    async fn login(&self, user: &str, password: &str) -> Account {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
        let reply = self.post("/_matrix/client/v3/login", None, body).await.ok();
        Account::from_reply(&reply.body)
    }

    async fn whoami(&self, token: &str) -> Reply {
        self.get("/_matrix/client/v3/account/whoami", Some(token)).await
    }

    /// `POST /register?kind=guest`.
    async fn register_guest(&self) -> Account {
        let reply = self.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await.ok();
        Account::from_reply(&reply.body)
    }

    async fn bus_whoami(&self, token: &str) -> QueryReply {
        self.bus_whoami_as(token, None).await
    }

    /// The bus query with an application service's `user_id` assertion.
    async fn bus_whoami_as(&self, token: &str, user_id: Option<&str>) -> QueryReply {
        let request = QueryRequest::Whoami {
            token_hash: myelin_types::random::token_hash(token),
            user_id: user_id.map(str::to_owned),
            device_id: None,
        };
        self.bus.request_json(QUERY_TOPIC, "k", &request, Duration::from_secs(10)).await.unwrap()
    }
}

#[derive(Debug)]
struct Account {
    user_id: String,
    token: String,
    device_id: String,
}

impl Account {
    fn from_reply(body: &Value) -> Self {
        Self {
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: body["access_token"].as_str().unwrap().to_owned(),
            device_id: body["device_id"].as_str().unwrap().to_owned(),
        }
    }
}

struct Reply {
    status: StatusCode,
    body: Value,
    context: String,
}

impl Reply {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.status, StatusCode::OK, "{}: {}", self.context, self.body);
        self
    }

    #[track_caller]
    fn err(self, status: u16, errcode: &str) -> Self {
        assert_eq!(self.status.as_u16(), status, "{}: {}", self.context, self.body);
        assert_eq!(self.body["errcode"], errcode, "{}: {}", self.context, self.body);
        assert!(self.body["error"].is_string(), "{}: {}", self.context, self.body);
        self
    }
}

fn mac(secret: &str, nonce: &str, username: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    let role = if admin { "admin" } else { "notadmin" };
    mac.update(format!("{nonce}\0{username}\0{password}\0{role}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn admin_body(nonce: &str, username: &str, password: &str, secret: &str) -> Value {
    json!({
        "nonce": nonce, "username": username, "password": password, "admin": false,
        "mac": mac(secret, nonce, username, password, false),
    })
}

async fn each_backend(options: impl Fn() -> Options, test: impl AsyncFn(&Server)) {
    for db in TestDb::both().await {
        let server = Server::start(db, options()).await;
        test(&server).await;
    }
}

/// `/login/get_token` mints a one-time token behind the password stage; a
/// new device logs in with it once, before it expires. Off by default.
#[tokio::test]
async fn login_tokens_from_an_existing_session() {
    const GET_TOKEN: &str = "/_matrix/client/v1/login/get_token";
    const LOGIN: &str = "/_matrix/client/v3/login";
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        s.post(GET_TOKEN, Some(&alice.token), json!({})).await.err(404, "M_UNRECOGNIZED");
        let caps = s.get("/_matrix/client/v3/capabilities", Some(&alice.token)).await.ok();
        assert_eq!(caps.body["capabilities"]["m.get_login_token"]["enabled"], false);
        assert_eq!(s.get(LOGIN, None).await.ok().body["flows"], json!([{"type": "m.login.password"}]));
        s.post(LOGIN, None, json!({"type": "m.login.token", "token": "guessed"})).await.err(403, "M_FORBIDDEN");
    })
    .await;

    let clock = ManualClock::new(myelin_types::Clock::now_ms(&SystemClock));
    let options = || Options { login_via_existing_session: true, clock: Some(clock.clone()), ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let flows = s.get(LOGIN, None).await.ok().body["flows"].clone();
        assert!(flows.as_array().unwrap().contains(&json!({"type": "m.login.token", "get_login_token": true})));
        let caps = s.get("/_matrix/client/v3/capabilities", Some(&alice.token)).await.ok();
        assert_eq!(caps.body["capabilities"]["m.get_login_token"]["enabled"], true);

        let mint = async || {
            let challenge = s.post(GET_TOKEN, Some(&alice.token), json!({})).await;
            assert_eq!(challenge.status, StatusCode::UNAUTHORIZED, "{}", challenge.body);
            let auth = json!({"auth": {"type": "m.login.password", "session": challenge.body["session"],
                                       "identifier": {"type": "m.id.user", "user": alice.user_id},
                                       "password": "wonderland"}});
            let minted = s.post(GET_TOKEN, Some(&alice.token), auth).await.ok().body;
            assert_eq!(minted["expires_in_ms"], 120_000, "{minted}");
            minted["login_token"].as_str().unwrap().to_owned()
        };
        let token = mint().await;
        let login = json!({"type": "m.login.token", "token": token, "initial_device_display_name": "Phone"});
        let phone = Account::from_reply(&s.post(LOGIN, None, login.clone()).await.ok().body);
        assert_eq!(phone.user_id, alice.user_id);
        assert_ne!(phone.device_id, alice.device_id);
        assert_eq!(s.whoami(&phone.token).await.ok().body["user_id"], alice.user_id);
        // Once only.
        s.post(LOGIN, None, login).await.err(403, "M_FORBIDDEN");
        // Not after two minutes.
        let late = mint().await;
        clock.advance_ms(121_000);
        s.post(LOGIN, None, json!({"type": "m.login.token", "token": late})).await.err(403, "M_FORBIDDEN");
        s.post(LOGIN, None, json!({"type": "m.login.token"})).await.err(400, "M_MISSING_PARAM");
        s.post(GET_TOKEN, None, json!({})).await.err(401, "M_MISSING_TOKEN");
        let wrong = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
                                    "password": "looking glass"}});
        let refused = s.post(GET_TOKEN, Some(&alice.token), wrong).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
        assert_eq!(refused.body["errcode"], "M_FORBIDDEN", "{}", refused.body);
    })
    .await;
}

/// TURN credentials a TURN server with the shared secret accepts, and the
/// discovery document; both 404 on a server with neither configured.
#[tokio::test]
async fn turn_credentials_and_client_discovery() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        s.get("/_matrix/client/v3/voip/turnServer", Some(&alice.token)).await.err(404, "M_NOT_FOUND");
        s.get("/.well-known/matrix/client", None).await.err(404, "M_NOT_FOUND");
    })
    .await;
    let options = || Options { voip_and_discovery: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        s.get("/_matrix/client/v3/voip/turnServer", None).await.err(401, "M_MISSING_TOKEN");
        let turn = s.get("/_matrix/client/v3/voip/turnServer", Some(&alice.token)).await.ok().body;
        assert_eq!((&turn["uris"], &turn["ttl"]), (&json!([TURN_URI]), &json!(3600)), "{turn}");
        let username = turn["username"].as_str().unwrap();
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(user, alice.user_id);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let expiry: u64 = expiry.parse().unwrap();
        assert!((now + 3590..=now + 3610).contains(&expiry), "expiry {expiry}, now {now}");
        let mut mac = Hmac::<Sha1>::new_from_slice(TURN_SECRET.as_bytes()).unwrap();
        mac.update(username.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(turn["password"], expected);

        let discovery = s.get("/.well-known/matrix/client", None).await.ok().body;
        assert_eq!(discovery, json!({"m.homeserver": {"base_url": PUBLIC_BASE_URL}}));
    })
    .await;
}

#[tokio::test]
async fn versions_lists_r0_and_v1_releases() {
    each_backend(Options::default, async |s| {
        let reply = s.get("/_matrix/client/versions", None).await.ok();
        let versions: Vec<&str> =
            reply.body["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for wanted in ["r0.6.1", "v1.1", "v1.11", "v1.16"] {
            assert!(versions.contains(&wanted), "{versions:?}");
        }
        // Clients look here for simplified sliding sync (MSC4186).
        assert_eq!(reply.body["unstable_features"]["org.matrix.simplified_msc3575"], true, "{}", reply.body);
        // A known path with the wrong method.
        s.get("/_matrix/client/v3/logout", None).await.err(405, "M_UNRECOGNIZED");
        s.post("/_matrix/client/versions", None, json!({})).await.err(405, "M_UNRECOGNIZED");
    })
    .await;
}

#[tokio::test]
async fn shared_secret_registration_checks_mac_and_nonce() {
    each_backend(Options::default, async |s| {
        let path = "/_synapse/admin/v1/register";
        let alice = s.admin_register("alice", "wonderland").await;
        assert_eq!(alice.user_id, format!("@alice:{SERVER_NAME}"));
        s.whoami(&alice.token).await.ok();

        // Bad MAC: 403, and the nonce is spent.
        let nonce = s.nonce().await;
        s.post(path, None, admin_body(&nonce, "bob", "pw", "wrong-secret")).await.err(403, "M_FORBIDDEN");
        s.post(path, None, admin_body(&nonce, "bob", "pw", SECRET)).await.err(400, "M_UNKNOWN");

        // A nonce serves one registration only.
        let nonce = s.nonce().await;
        s.post(path, None, admin_body(&nonce, "bob", "pw", SECRET)).await.ok();
        s.post(path, None, admin_body(&nonce, "bob2", "pw", SECRET)).await.err(400, "M_UNKNOWN");

        // Unknown nonce.
        s.post(path, None, admin_body("made-up", "carol", "pw", SECRET)).await.err(400, "M_UNKNOWN");

        // Taken and invalid usernames.
        let nonce = s.nonce().await;
        s.post(path, None, admin_body(&nonce, "alice", "pw", SECRET)).await.err(400, "M_USER_IN_USE");
        let nonce = s.nonce().await;
        s.post(path, None, admin_body(&nonce, "al ice", "pw", SECRET)).await.err(400, "M_INVALID_USERNAME");

        // Shape errors.
        s.post(path, None, json!({"nonce": nonce})).await.err(400, "M_BAD_JSON");
        s.post_raw(path, "{not json").await.err(400, "M_NOT_JSON");
    })
    .await;
}

#[tokio::test]
async fn shared_secret_nonces_expire_after_a_minute() {
    let clock = ManualClock::new(myelin_types::Clock::now_ms(&SystemClock));
    let options = || Options { clock: Some(clock.clone()), ..Options::default() };
    each_backend(options, async |s| {
        let nonce = s.nonce().await;
        clock.advance_ms(61_000);
        s.post("/_synapse/admin/v1/register", None, admin_body(&nonce, "late", "pw", SECRET))
            .await
            .err(400, "M_UNKNOWN");
        let nonce = s.nonce().await;
        clock.advance_ms(30_000);
        s.post("/_synapse/admin/v1/register", None, admin_body(&nonce, "early", "pw", SECRET)).await.ok();
    })
    .await;
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    each_backend(
        || Options { secret: None, ..Options::default() },
        async |s| {
            s.get("/_synapse/admin/v1/register", None).await.err(400, "M_UNRECOGNIZED");
            s.post("/_synapse/admin/v1/register", None, admin_body("n", "eve", "pw", SECRET))
                .await
                .err(400, "M_UNRECOGNIZED");
        },
    )
    .await;
}

#[tokio::test]
async fn login_whoami_and_logout() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;

        let flows = s.get("/_matrix/client/v3/login", None).await.ok();
        assert_eq!(flows.body["flows"][0]["type"], "m.login.password");

        // Identifier with a localpart; legacy `user` with a full user id, on r0.
        let by_localpart = s.login("alice", "wonderland").await;
        let legacy = s
            .post(
                "/_matrix/client/r0/login",
                None,
                json!({"type": "m.login.password", "user": format!("@alice:{SERVER_NAME}"), "password": "wonderland"}),
            )
            .await
            .ok();
        let legacy = Account::from_reply(&legacy.body);
        let by_mxid = s.login(&format!("@alice:{SERVER_NAME}"), "wonderland").await;
        for account in [&by_localpart, &legacy, &by_mxid] {
            assert_eq!(account.user_id, alice.user_id);
            let me = s.whoami(&account.token).await.ok();
            assert_eq!(me.body, json!({"user_id": alice.user_id, "device_id": account.device_id, "is_guest": false}));
        }
        let me = s.get("/_matrix/client/r0/account/whoami", Some(&legacy.token)).await.ok();
        assert_eq!(me.body["user_id"], alice.user_id);
        assert_ne!(by_localpart.device_id, legacy.device_id);

        // Wrong password, unknown user, other server: all 403.
        for (user, password) in
            [("alice", "nope"), ("nobody", "wonderland"), ("@alice:elsewhere.example", "wonderland")]
        {
            s.post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
            )
            .await
            .err(403, "M_FORBIDDEN");
        }

        // A login naming an existing device replaces that device's token.
        let named = s
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                       "password": "wonderland", "device_id": "PHONE", "initial_device_display_name": "Phone"}),
            )
            .await
            .ok();
        let named = Account::from_reply(&named.body);
        assert_eq!(named.device_id, "PHONE");
        let again = s
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "user": "alice", "password": "wonderland", "device_id": "PHONE"}),
            )
            .await
            .ok();
        assert_eq!(again.body["device_id"], "PHONE");
        s.whoami(&named.token).await.err(401, "M_UNKNOWN_TOKEN");

        // Logout ends only this device.
        s.post("/_matrix/client/v3/logout", Some(&by_localpart.token), json!({})).await.ok();
        s.whoami(&by_localpart.token).await.err(401, "M_UNKNOWN_TOKEN");
        s.whoami(&legacy.token).await.ok();

        // Logout/all ends every device.
        s.post("/_matrix/client/v3/logout/all", Some(&legacy.token), json!({})).await.ok();
        for account in [&alice, &legacy, &by_mxid] {
            s.whoami(&account.token).await.err(401, "M_UNKNOWN_TOKEN");
        }
        // The password still works afterwards.
        s.login("alice", "wonderland").await;
    })
    .await;
}

#[tokio::test]
async fn login_rejects_bad_requests() {
    each_backend(Options::default, async |s| {
        s.post_raw("/_matrix/client/v3/login", "{\"type\": ").await.err(400, "M_NOT_JSON");
        s.post_raw("/_matrix/client/v3/login", "").await.err(400, "M_NOT_JSON");
        s.post("/_matrix/client/v3/login", None, json!({"type": 5})).await.err(400, "M_BAD_JSON");
        s.post("/_matrix/client/v3/login", None, json!(["type"])).await.err(400, "M_BAD_JSON");
        s.post("/_matrix/client/v3/login", None, json!({"type": "m.login.sso", "token": "x"}))
            .await
            .err(400, "M_UNKNOWN");
        s.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"}, "password": "x"}),
        )
        .await
        .err(400, "M_UNKNOWN");
    })
    .await;
}

#[tokio::test]
async fn access_tokens_are_required_and_checked() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        s.get("/_matrix/client/v3/account/whoami", None).await.err(401, "M_MISSING_TOKEN");
        s.post("/_matrix/client/v3/logout", None, json!({})).await.err(401, "M_MISSING_TOKEN");
        s.post("/_matrix/client/v3/createRoom", None, json!({})).await.err(401, "M_MISSING_TOKEN");
        s.whoami("myl_not_a_real_token").await.err(401, "M_UNKNOWN_TOKEN");
        s.post("/_matrix/client/v3/logout/all", Some("nope"), json!({})).await.err(401, "M_UNKNOWN_TOKEN");
        // The deprecated query parameter still works.
        let me = s.get(&format!("/_matrix/client/v3/account/whoami?access_token={}", alice.token), None).await.ok();
        assert_eq!(me.body["user_id"], alice.user_id);
    })
    .await;
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    each_backend(Options::default, async |s| {
        s.post("/_matrix/client/v3/register", None, json!({"username": "eve", "password": "pw"}))
            .await
            .err(403, "M_FORBIDDEN");
        s.post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "eve", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await
        .err(403, "M_FORBIDDEN");
        s.get("/_matrix/client/v3/register/available?username=eve", None).await.err(403, "M_FORBIDDEN");
    })
    .await;
}

#[tokio::test]
async fn open_registration_uses_the_dummy_stage() {
    let options = || Options { open_registration: true, ..Options::default() };
    each_backend(options, async |s| {
        let path = "/_matrix/client/v3/register";
        s.get("/_matrix/client/v3/register/available?username=dora", None).await.ok();

        let challenge = s.post(path, None, json!({"username": "dora", "password": "explorer"})).await;
        assert_eq!(challenge.status, StatusCode::UNAUTHORIZED, "{}", challenge.body);
        assert_eq!(challenge.body["flows"], json!([{"stages": ["m.login.dummy"]}]));
        assert_eq!(challenge.body["params"], json!({}));
        let session = challenge.body["session"].as_str().unwrap().to_owned();

        let done = s
            .post(
                path,
                None,
                json!({"username": "dora", "password": "explorer", "initial_device_display_name": "Laptop",
                       "auth": {"type": "m.login.dummy", "session": session}}),
            )
            .await
            .ok();
        let dora = Account::from_reply(&done.body);
        assert_eq!(dora.user_id, format!("@dora:{SERVER_NAME}"));
        s.whoami(&dora.token).await.ok();
        s.login("dora", "explorer").await;

        // Taken, invalid, guest.
        s.post(path, None, json!({"username": "dora", "password": "x"})).await.err(400, "M_USER_IN_USE");
        s.get("/_matrix/client/v3/register/available?username=dora", None).await.err(400, "M_USER_IN_USE");
        s.post(path, None, json!({"username": "d@ra", "password": "x"})).await.err(400, "M_INVALID_USERNAME");
        s.post(path, None, json!({"username": "_reserved", "password": "x"})).await.err(400, "M_INVALID_USERNAME");
        s.get("/_matrix/client/v3/register/available?username=d%20ra", None).await.err(400, "M_INVALID_USERNAME");
        s.post(&format!("{path}?kind=guest"), None, json!({})).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");

        // Dummy auth without a session; inhibit_login returns no token.
        let quiet = s
            .post(
                path,
                None,
                json!({"username": "quiet", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
            )
            .await
            .ok();
        assert_eq!(quiet.body["user_id"], format!("@quiet:{SERVER_NAME}"));
        assert!(quiet.body.get("access_token").is_none(), "{}", quiet.body);

        // Without a username, one is generated.
        let generated = s.post(path, None, json!({"auth": {"type": "m.login.dummy"}})).await.ok();
        assert!(generated.body["user_id"].as_str().unwrap().ends_with(&format!(":{SERVER_NAME}")));

        // Unknown session, malformed bodies.
        s.post(path, None, json!({"username": "x1", "auth": {"type": "m.login.dummy", "session": "nope"}}))
            .await
            .err(400, "M_UNKNOWN");
        s.post_raw(path, "nope").await.err(400, "M_NOT_JSON");
        s.post(path, None, json!({"username": 7})).await.err(400, "M_BAD_JSON");
    })
    .await;
}

#[tokio::test]
async fn whoami_bus_query_and_device_records() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let second = s.login("alice", "wonderland").await;
        assert_eq!(
            s.bus_whoami(&alice.token).await,
            Ok(Identity {
                user_id: alice.user_id.as_str().try_into().unwrap(),
                device_id: alice.device_id.clone(),
                is_guest: false,
                is_admin: false,
                expires_ms: None,
                app_service: None,
            })
        );
        let unknown = |reply: QueryReply| reply.is_err_and(|e| e.errcode == ErrorCode::UnknownToken);
        assert!(unknown(s.bus_whoami("unknown").await));

        s.post("/_matrix/client/v3/logout", Some(&alice.token), json!({})).await.ok();
        assert!(unknown(s.bus_whoami(&alice.token).await));
        assert!(s.bus_whoami(&second.token).await.is_ok());
        s.post("/_matrix/client/v3/logout/all", Some(&second.token), json!({})).await.ok();
        assert!(unknown(s.bus_whoami(&second.token).await));

        let mut consumer = s.bus.backend().consumer("test.devices", DEVICES_TOPIC).await.unwrap();
        let mut events = Vec::new();
        while events.len() < 4 {
            let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(100))
                .await
                .expect("device records arrive")
                .unwrap();
            for record in batch {
                assert_eq!(record.key, alice.user_id);
                events.push(record.json::<DeviceEvent>().unwrap());
            }
        }
        let user_id: myelin_types::ruma::OwnedUserId = alice.user_id.as_str().try_into().unwrap();
        assert_eq!(
            events,
            vec![
                DeviceEvent::LoggedIn { user_id: user_id.clone(), device_id: alice.device_id.clone() },
                DeviceEvent::LoggedIn { user_id: user_id.clone(), device_id: second.device_id.clone() },
                DeviceEvent::TokensRevoked {
                    user_id: user_id.clone(),
                    token_hashes: vec![myelin_types::random::token_hash(&alice.token)]
                },
                DeviceEvent::TokensRevoked {
                    user_id,
                    token_hashes: vec![myelin_types::random::token_hash(&second.token)]
                },
            ]
        );

        // An admin registered as one is known as one.
        let nonce = s.get("/_synapse/admin/v1/register", None).await.ok().body["nonce"].as_str().unwrap().to_owned();
        let body = json!({"nonce": nonce, "username": "root", "password": "toor", "admin": true,
                          "mac": mac(SECRET, &nonce, "root", "toor", true)});
        let root = s.post("/_synapse/admin/v1/register", None, body).await.ok();
        let root = Account::from_reply(&root.body);
        assert!(s.bus_whoami(&root.token).await.unwrap().is_admin);
    })
    .await;
}

#[tokio::test]
async fn rooms_through_the_room_server() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());

        let created = s
            .post(
                "/_matrix/client/v3/createRoom",
                a,
                json!({"preset": "private_chat", "name": "Tea party", "topic": "Hatters only"}),
            )
            .await
            .ok();
        let room_id = created.body["room_id"].as_str().unwrap().to_owned();
        let room = format!("/_matrix/client/v3/rooms/{}", urlencode(&room_id));

        let name = s.get(&format!("{room}/state/m.room.name/"), a).await.ok();
        assert_eq!(name.body, json!({"name": "Tea party"}));
        let name = s.get(&format!("{room}/state/m.room.name"), a).await.ok();
        assert_eq!(name.body, json!({"name": "Tea party"}));

        // Bob cannot see or join a private room uninvited.
        s.get(&format!("{room}/state"), b).await.err(403, "M_FORBIDDEN");
        s.post(&format!("{room}/join"), b, json!({})).await.err(403, "M_FORBIDDEN");

        s.post(&format!("{room}/invite"), a, json!({"user_id": bob.user_id})).await.ok();
        let joined = s.post(&format!("/_matrix/client/v3/join/{}", urlencode(&room_id)), b, json!({})).await.ok();
        assert_eq!(joined.body["room_id"], room_id);

        // Messages, with transaction idempotency.
        let first =
            s.put(&format!("{room}/send/m.room.message/t1"), a, json!({"msgtype": "m.text", "body": "hi"})).await.ok();
        let retry =
            s.put(&format!("{room}/send/m.room.message/t1"), a, json!({"msgtype": "m.text", "body": "hi"})).await.ok();
        assert!(first.body["event_id"].as_str().unwrap().starts_with('$'));
        assert_eq!(first.body["event_id"], retry.body["event_id"]);
        s.put(&format!("{room}/send/m.room.message/t1"), b, json!({"msgtype": "m.text", "body": "hello"})).await.ok();

        // State writes and reads.
        let topic = s.put(&format!("{room}/state/m.room.topic"), a, json!({"topic": "Unbirthdays"})).await.ok();
        let topic_id = topic.body["event_id"].as_str().unwrap().to_owned();
        let got = s.get(&format!("{room}/state/m.room.topic/"), b).await.ok();
        assert_eq!(got.body, json!({"topic": "Unbirthdays"}));
        let full = s.get(&format!("{room}/state/m.room.topic/?format=event"), b).await.ok();
        assert_eq!(full.body["event_id"], topic_id);
        assert_eq!(full.body["room_id"], room_id);
        s.put(&format!("{room}/state/org.example.custom/thing"), a, json!({"x": 1})).await.ok();
        let custom = s.get(&format!("{room}/state/org.example.custom/thing"), b).await.ok();
        assert_eq!(custom.body, json!({"x": 1}));
        s.get(&format!("{room}/state/org.example.custom/other"), b).await.err(404, "M_NOT_FOUND");

        let state = s.get(&format!("{room}/state"), b).await.ok();
        let types: Vec<&str> = state.body.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        for wanted in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member", "m.room.topic"] {
            assert!(types.contains(&wanted), "{types:?}");
        }
        assert!(state.body.as_array().unwrap().iter().all(|e| e.get("hashes").is_none() && e["event_id"].is_string()));

        // The members as alice sees them in the state (`/members` is the sync API's).
        let alice_view = s.get(&format!("{room}/state"), a).await.ok();
        let mut who: Vec<(String, String)> = alice_view
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| {
                (e["state_key"].as_str().unwrap().to_owned(), e["content"]["membership"].as_str().unwrap().to_owned())
            })
            .collect();
        who.sort();
        assert_eq!(who, vec![(alice.user_id.clone(), "join".to_owned()), (bob.user_id.clone(), "join".to_owned())]);

        let joined = s.get(&format!("{room}/joined_members"), b).await.ok();
        let mut joined_ids: Vec<&String> = joined.body["joined"].as_object().unwrap().keys().collect();
        joined_ids.sort();
        assert_eq!(joined_ids, [&alice.user_id, &bob.user_id]);
        assert!(joined.body["joined"][&alice.user_id].is_object());

        let rooms = s.get("/_matrix/client/v3/joined_rooms", b).await.ok();
        assert_eq!(rooms.body, json!({"joined_rooms": [room_id]}));

        // Leave; then bob's view stops at his leave and he cannot send.
        s.post(&format!("{room}/leave"), b, json!({})).await.ok();
        let rooms = s.get("/_matrix/client/v3/joined_rooms", b).await.ok();
        assert_eq!(rooms.body, json!({"joined_rooms": []}));
        s.put(&format!("{room}/send/m.room.message/t2"), b, json!({"body": "?"})).await.err(403, "M_FORBIDDEN");
        s.get(&format!("{room}/joined_members"), b).await.err(403, "M_FORBIDDEN");
        s.put(&format!("{room}/redact/not-an-event-id/r1"), a, json!({})).await.err(400, "M_INVALID_PARAM");

        // Malformed requests.
        s.post("/_matrix/client/v3/join/%23alias:test.local", b, json!({})).await.err(404, "M_NOT_FOUND");
        s.post("/_matrix/client/v3/join/not-a-room", b, json!({})).await.err(400, "M_INVALID_PARAM");
        s.post("/_matrix/client/v3/createRoom", a, json!({"preset": "party"})).await.err(400, "M_BAD_JSON");
        s.post("/_matrix/client/v3/createRoom", a, json!({"invite": ["bob"]})).await.err(400, "M_INVALID_PARAM");
        s.post("/_matrix/client/v3/createRoom", a, json!({"room_version": "999"}))
            .await
            .err(400, "M_UNSUPPORTED_ROOM_VERSION");
        s.put(&format!("{room}/send/m.room.message/t3"), a, json!("text")).await.err(400, "M_BAD_JSON");
        s.post(&format!("{room}/invite"), a, json!({})).await.err(400, "M_BAD_JSON");

        // Another room via r0, created with an invite, joined via /rooms/{id}/join.
        let second = s
            .post("/_matrix/client/r0/createRoom", a, json!({"preset": "public_chat", "invite": [bob.user_id]}))
            .await
            .ok();
        let second_id = second.body["room_id"].as_str().unwrap().to_owned();
        s.post(&format!("/_matrix/client/r0/rooms/{}/join", urlencode(&second_id)), b, json!({})).await.ok();
        let rooms = s.get("/_matrix/client/r0/joined_rooms", b).await.ok();
        assert_eq!(rooms.body, json!({"joined_rooms": [second_id]}));
    })
    .await;
}

#[tokio::test]
async fn account_data_and_tags() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        let room_id = "!tea:test.local";
        let global = format!("/_matrix/client/v3/user/{}/account_data", urlencode(&alice.user_id));
        let in_room = format!("/_matrix/client/v3/user/{}/rooms/{}", urlencode(&alice.user_id), urlencode(room_id));

        s.get(&format!("{global}/org.example.settings"), a).await.err(404, "M_NOT_FOUND");
        s.put(&format!("{global}/org.example.settings"), a, json!({"theme": "dark"})).await.ok();
        let got = s.get(&format!("{global}/org.example.settings"), a).await.ok();
        assert_eq!(got.body, json!({"theme": "dark"}));
        s.put(&format!("{global}/org.example.settings"), a, json!({"theme": "light"})).await.ok();
        let got = s
            .get(&format!("/_matrix/client/r0/user/{}/account_data/org.example.settings", alice.user_id), a)
            .await
            .ok();
        assert_eq!(got.body, json!({"theme": "light"}));

        s.put(&format!("{in_room}/account_data/org.example.draft"), a, json!({"text": "hi"})).await.ok();
        let got = s.get(&format!("{in_room}/account_data/org.example.draft"), a).await.ok();
        assert_eq!(got.body, json!({"text": "hi"}));
        // Room and global account data are separate.
        s.get(&format!("{global}/org.example.draft"), a).await.err(404, "M_NOT_FOUND");
        s.get(&format!("{in_room}/account_data/org.example.settings"), a).await.err(404, "M_NOT_FOUND");

        // Tags are the room account data entry `m.tag`.
        let tags = s.get(&format!("{in_room}/tags"), a).await.ok();
        assert_eq!(tags.body, json!({"tags": {}}));
        s.put(&format!("{in_room}/tags/u.work"), a, json!({"order": 0.5})).await.ok();
        s.put(&format!("{in_room}/tags/m.favourite"), a, json!({})).await.ok();
        let tags = s.get(&format!("{in_room}/tags"), a).await.ok();
        assert_eq!(tags.body, json!({"tags": {"u.work": {"order": 0.5}, "m.favourite": {}}}));
        s.send(reqwest::Method::DELETE, &format!("{in_room}/tags/m.favourite"), a, None).await.ok();
        let tag = s.get(&format!("{in_room}/account_data/m.tag"), a).await.ok();
        assert_eq!(tag.body, json!({"tags": {"u.work": {"order": 0.5}}}));

        // Refusals.
        s.get(&format!("{global}/org.example.settings"), b).await.err(403, "M_FORBIDDEN");
        s.put(&format!("{global}/org.example.settings"), b, json!({})).await.err(403, "M_FORBIDDEN");
        s.get(&format!("{in_room}/account_data/org.example.draft"), b).await.err(403, "M_FORBIDDEN");
        s.put(&format!("{in_room}/account_data/org.example.draft"), b, json!({})).await.err(403, "M_FORBIDDEN");
        s.get(&format!("{in_room}/tags"), b).await.err(403, "M_FORBIDDEN");
        s.put(&format!("{in_room}/tags/u.x"), b, json!({})).await.err(403, "M_FORBIDDEN");
        s.send(reqwest::Method::DELETE, &format!("{in_room}/tags/u.work"), b, None).await.err(403, "M_FORBIDDEN");
        s.put(&format!("{in_room}/account_data/m.fully_read"), a, json!({"event_id": "$x"}))
            .await
            .err(405, "M_BAD_JSON");
        s.put(&format!("{global}/m.push_rules"), a, json!({})).await.err(405, "M_BAD_JSON");
        s.put(&format!("{global}/org.example.settings"), a, json!(["not", "an", "object"]))
            .await
            .err(400, "M_BAD_JSON");
        s.send_raw(reqwest::Method::PUT, &format!("{global}/org.example.settings"), &alice.token, "{nope")
            .await
            .err(400, "M_NOT_JSON");
        s.put(&format!("{in_room}/tags/u.bad"), a, json!({"order": "first"})).await.err(400, "M_BAD_JSON");
        let bad_room = format!("/_matrix/client/v3/user/{}/rooms/tea/account_data/x", urlencode(&alice.user_id));
        s.put(&bad_room, a, json!({})).await.err(400, "M_INVALID_PARAM");
        s.get(&format!("{global}/org.example.settings"), None).await.err(401, "M_MISSING_TOKEN");

        // Every change went out on `clientapi.accountdata`, keyed by user, in order.
        let records: Vec<(String, AccountDataUpdate)> = s.records("test.accountdata", ACCOUNT_DATA_TOPIC, 6).await;
        assert!(records.iter().all(|(key, update)| *key == alice.user_id && update.user_id == alice.user_id));
        let seen: Vec<(Option<String>, &str, &Value)> = records
            .iter()
            .map(|(_, u)| (u.room_id.as_ref().map(|r| r.to_string()), u.data_type.as_str(), &u.content))
            .collect();
        let room = Some(room_id.to_owned());
        assert_eq!(
            seen,
            vec![
                (None, "org.example.settings", &json!({"theme": "dark"})),
                (None, "org.example.settings", &json!({"theme": "light"})),
                (room.clone(), "org.example.draft", &json!({"text": "hi"})),
                (room.clone(), "m.tag", &json!({"tags": {"u.work": {"order": 0.5}}})),
                (room.clone(), "m.tag", &json!({"tags": {"u.work": {"order": 0.5}, "m.favourite": {}}})),
                (room, "m.tag", &json!({"tags": {"u.work": {"order": 0.5}}})),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn profiles_and_member_events() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        let profile = |user: &str| format!("/_matrix/client/v3/profile/{}", urlencode(user));

        let empty = s.get(&profile(&alice.user_id), None).await.ok();
        assert_eq!(empty.body, json!({}));
        s.get(&format!("{}/displayname", profile(&alice.user_id)), None).await.err(404, "M_NOT_FOUND");
        s.get(&profile("@nobody:test.local"), None).await.err(404, "M_NOT_FOUND");
        s.get(&format!("{}/avatar_url", profile("@nobody:test.local")), None).await.err(404, "M_NOT_FOUND");
        s.get(&profile("alice"), None).await.err(400, "M_INVALID_PARAM");

        let room_id =
            s.post("/_matrix/client/v3/createRoom", a, json!({"preset": "public_chat"})).await.ok().body["room_id"]
                .as_str()
                .unwrap()
                .to_owned();
        let room = format!("/_matrix/client/v3/rooms/{}", urlencode(&room_id));

        // Bob's profile travels with his join.
        s.put(&format!("{}/displayname", profile(&bob.user_id)), b, json!({"displayname": "Bob"})).await.ok();
        s.put(&format!("{}/avatar_url", profile(&bob.user_id)), b, json!({"avatar_url": "mxc://test.local/bob"}))
            .await
            .ok();
        let got = s.get(&profile(&bob.user_id), None).await.ok();
        assert_eq!(got.body, json!({"displayname": "Bob", "avatar_url": "mxc://test.local/bob"}));
        let got = s.get(&format!("{}/displayname", profile(&bob.user_id)), None).await.ok();
        assert_eq!(got.body, json!({"displayname": "Bob"}));
        s.post(&format!("{room}/join"), b, json!({})).await.ok();
        let member = s.get(&format!("{room}/state/m.room.member/{}", urlencode(&bob.user_id)), a).await.ok();
        assert_eq!(
            member.body,
            json!({"membership": "join", "displayname": "Bob", "avatar_url": "mxc://test.local/bob"})
        );

        // A change reaches the member event of every joined room.
        s.put(&format!("{}/displayname", profile(&alice.user_id)), a, json!({"displayname": "Alice"})).await.ok();
        let member = s.get(&format!("{room}/state/m.room.member/{}", urlencode(&alice.user_id)), b).await.ok();
        assert_eq!(member.body["displayname"], "Alice");
        assert_eq!(member.body["membership"], "join");
        s.put(&format!("{}/displayname", profile(&bob.user_id)), b, json!({"displayname": null})).await.ok();
        let member = s.get(&format!("{room}/state/m.room.member/{}", urlencode(&bob.user_id)), a).await.ok();
        assert_eq!(member.body, json!({"membership": "join", "avatar_url": "mxc://test.local/bob"}));
        s.get(&format!("{}/displayname", profile(&bob.user_id)), None).await.err(404, "M_NOT_FOUND");

        // Refusals.
        s.put(&format!("{}/displayname", profile(&alice.user_id)), b, json!({"displayname": "Mallory"}))
            .await
            .err(403, "M_FORBIDDEN");
        s.put(&format!("{}/avatar_url", profile(&alice.user_id)), b, json!({"avatar_url": "mxc://x/y"}))
            .await
            .err(403, "M_FORBIDDEN");
        s.put(&format!("{}/displayname", profile(&alice.user_id)), a, json!({"displayname": 5}))
            .await
            .err(400, "M_BAD_JSON");
        s.put(&format!("{}/displayname", profile(&alice.user_id)), a, json!({})).await.err(400, "M_MISSING_PARAM");
        s.send_raw(reqwest::Method::PUT, &format!("{}/displayname", profile(&alice.user_id)), &alice.token, "x")
            .await
            .err(400, "M_NOT_JSON");
        s.put(&format!("{}/displayname", profile(&alice.user_id)), None, json!({"displayname": "A"}))
            .await
            .err(401, "M_MISSING_TOKEN");
    })
    .await;
}

/// Fields beyond the display name and avatar: `m.tz` and namespaced custom
/// fields holding any JSON, which stay out of member events.
#[tokio::test]
async fn extended_profile_fields() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let field = |user: &str, key: &str| format!("/_matrix/client/v3/profile/{}/{key}", urlencode(user));
        let room_id = s.post("/_matrix/client/v3/createRoom", a, json!({})).await.ok().body["room_id"]
            .as_str()
            .unwrap()
            .to_owned();

        s.put(&field(&alice.user_id, "displayname"), a, json!({"displayname": "Alice"})).await.ok();
        s.put(&field(&alice.user_id, "m.tz"), a, json!({"m.tz": "Europe/Paris"})).await.ok();
        let pronouns = json!({"org.example.pronouns": {"en": "she/her"}});
        s.put(&field(&alice.user_id, "org.example.pronouns"), a, pronouns.clone()).await.ok();
        s.put(&field(&alice.user_id, "org.example.empty"), a, json!({"org.example.empty": null})).await.ok();
        let whole = format!("/_matrix/client/v3/profile/{}", urlencode(&alice.user_id));
        let got = s.get(&whole, None).await.ok();
        assert_eq!(
            got.body,
            json!({"displayname": "Alice", "m.tz": "Europe/Paris", "org.example.pronouns": {"en": "she/her"},
                   "org.example.empty": null})
        );
        assert_eq!(s.get(&field(&alice.user_id, "org.example.pronouns"), None).await.ok().body, pronouns);
        let member_path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            urlencode(&room_id),
            urlencode(&alice.user_id)
        );
        let member = s.get(&member_path, a).await.ok();
        assert_eq!(member.body, json!({"membership": "join", "displayname": "Alice"}));

        // Deleting: a custom field goes; the display name goes from member events too.
        s.delete(&field(&alice.user_id, "org.example.pronouns"), a, json!({})).await.ok();
        s.get(&field(&alice.user_id, "org.example.pronouns"), None).await.err(404, "M_NOT_FOUND");
        s.delete(&field(&alice.user_id, "displayname"), a, json!({})).await.ok();
        assert_eq!(s.get(&member_path, a).await.ok().body, json!({"membership": "join"}));
        s.delete(&field(&alice.user_id, "org.example.never"), a, json!({})).await.ok();

        // Refusals.
        for key in ["pronouns", "Org.example", "org..example", "org.example.", "9org.example", "M.tz"] {
            let body = json!({ key: "x" });
            s.put(&field(&alice.user_id, key), a, body).await.err(400, "M_INVALID_PARAM");
            s.get(&field(&alice.user_id, key), None).await.err(400, "M_INVALID_PARAM");
        }
        let long = format!("org.{}", "a".repeat(252));
        s.put(&field(&alice.user_id, &long), a, json!({ long.clone(): 1 })).await.err(400, "M_KEY_TOO_LARGE");
        s.put(&field(&alice.user_id, "m.tz"), a, json!({"m.tz": 5})).await.err(400, "M_BAD_JSON");
        s.put(&field(&alice.user_id, "org.example.x"), a, json!({"other": 1})).await.err(400, "M_MISSING_PARAM");
        let b = Some(bob.token.as_str());
        s.put(&field(&alice.user_id, "org.example.x"), b, json!({"org.example.x": 1})).await.err(403, "M_FORBIDDEN");
        s.delete(&field(&alice.user_id, "m.tz"), b, json!({})).await.err(403, "M_FORBIDDEN");
        let big = "x".repeat(40_000);
        s.put(&field(&alice.user_id, "org.example.big"), a, json!({"org.example.big": big})).await.ok();
        s.put(&field(&alice.user_id, "org.example.bigger"), a, json!({"org.example.bigger": "y".repeat(30_000)}))
            .await
            .err(400, "M_PROFILE_TOO_LARGE");
        let got = s.get(&whole, None).await.ok();
        assert!(got.body.get("org.example.bigger").is_none(), "a refused field is not stored");
        assert_eq!(got.body["m.tz"], "Europe/Paris");
    })
    .await;
}

/// Clients set a profile before creating rooms: the creator's first member
/// event must carry it, as a join does (and nothing when the profile is empty).
#[tokio::test]
async fn a_new_room_starts_with_the_creators_profile() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        let profile = format!("/_matrix/client/v3/profile/{}", urlencode(&alice.user_id));
        s.put(&format!("{profile}/displayname"), a, json!({"displayname": "Alice"})).await.ok();
        s.put(&format!("{profile}/avatar_url"), a, json!({"avatar_url": "mxc://test.local/alice"})).await.ok();

        let create = |token| async move {
            let created = s.post("/_matrix/client/v3/createRoom", token, json!({"preset": "public_chat"})).await.ok();
            format!("/_matrix/client/v3/rooms/{}", urlencode(created.body["room_id"].as_str().unwrap()))
        };
        let room = create(a).await;
        let member = s.get(&format!("{room}/state/m.room.member/{}", urlencode(&alice.user_id)), a).await.ok();
        assert_eq!(
            member.body,
            json!({"membership": "join", "displayname": "Alice", "avatar_url": "mxc://test.local/alice"})
        );

        let room = create(b).await;
        let member = s.get(&format!("{room}/state/m.room.member/{}", urlencode(&bob.user_id)), b).await.ok();
        assert_eq!(member.body, json!({"membership": "join"}));
    })
    .await;
}

#[tokio::test]
async fn typing_receipts_and_read_markers() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        let room_id = s.post("/_matrix/client/v3/createRoom", a, json!({})).await.ok().body["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let room = format!("/_matrix/client/v3/rooms/{}", urlencode(&room_id));
        let event_id =
            s.put(&format!("{room}/send/m.room.message/t1"), a, json!({"body": "hi"})).await.ok().body["event_id"]
                .as_str()
                .unwrap()
                .to_owned();
        let typing = |user: &str| format!("{room}/typing/{}", urlencode(user));
        let receipt = |kind: &str| format!("{room}/receipt/{kind}/{}", urlencode(&event_id));

        s.put(&typing(&alice.user_id), a, json!({"typing": true, "timeout": 5000})).await.ok();
        s.put(&typing(&alice.user_id), a, json!({"typing": false})).await.ok();
        s.post(&receipt("m.read"), a, json!({})).await.ok();
        s.post(&receipt("m.read.private"), a, json!({"thread_id": "main"})).await.ok();
        s.post(&format!("{room}/read_markers"), a, json!({"m.fully_read": event_id, "m.read": event_id})).await.ok();
        s.post(&receipt("m.fully_read"), a, json!({})).await.ok();
        let marker = s
            .get(
                &format!(
                    "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                    urlencode(&alice.user_id),
                    urlencode(&room_id)
                ),
                a,
            )
            .await
            .ok();
        assert_eq!(marker.body, json!({"event_id": event_id}));

        // Refusals: someone else's typing, rooms the caller is not in, bad bodies.
        s.put(&typing(&alice.user_id), b, json!({"typing": true})).await.err(403, "M_FORBIDDEN");
        s.put(&typing(&bob.user_id), b, json!({"typing": true})).await.err(403, "M_FORBIDDEN");
        s.post(&receipt("m.read"), b, json!({})).await.err(403, "M_FORBIDDEN");
        s.post(&format!("{room}/read_markers"), b, json!({"m.read": event_id})).await.err(403, "M_FORBIDDEN");
        s.put(&typing(&alice.user_id), a, json!({"typing": "yes"})).await.err(400, "M_BAD_JSON");
        s.send_raw(reqwest::Method::PUT, &typing(&alice.user_id), &alice.token, "{").await.err(400, "M_NOT_JSON");
        s.post(&receipt("m.seen"), a, json!({})).await.err(400, "M_INVALID_PARAM");
        s.post(&receipt("m.read"), a, json!({"thread_id": ""})).await.err(400, "M_INVALID_PARAM");
        s.post(&receipt("m.fully_read"), a, json!({"thread_id": "main"})).await.err(400, "M_INVALID_PARAM");
        s.post(&format!("{room}/receipt/m.read/not-an-event"), a, json!({})).await.err(400, "M_INVALID_PARAM");
        s.post(&format!("{room}/read_markers"), a, json!({"m.read": 5})).await.err(400, "M_BAD_JSON");
        s.send_raw(reqwest::Method::POST, &format!("{room}/read_markers"), &alice.token, "[")
            .await
            .err(400, "M_NOT_JSON");

        let typing: Vec<(String, TypingUpdate)> = s.records("test.typing", TYPING_TOPIC, 2).await;
        assert!(typing.iter().all(|(key, u)| *key == room_id && u.user_id == alice.user_id));
        assert_eq!(typing.iter().map(|(_, u)| u.typing).collect::<Vec<_>>(), vec![true, false]);
        let receipts: Vec<(String, ReceiptUpdate)> = s.records("test.receipts", RECEIPT_TOPIC, 3).await;
        assert!(
            receipts.iter().all(|(key, r)| *key == room_id && r.user_id == alice.user_id && r.event_id == event_id)
        );
        let kinds: Vec<(&str, Option<&str>)> =
            receipts.iter().map(|(_, r)| (r.receipt_type.as_str(), r.thread_id.as_deref())).collect();
        assert_eq!(kinds, vec![("m.read", None), ("m.read.private", Some("main")), ("m.read", None)]);
    })
    .await;
}

fn urlencode(s: &str) -> String {
    s.replace('!', "%21").replace(':', "%3A").replace('#', "%23")
}

/// The `auth` object of a password stage for `user`.
fn password_auth(session: &Value, user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "session": session, "password": password,
           "identifier": {"type": "m.id.user", "user": user}})
}

/// Start a user-interactive authentication: the `401` must offer the password stage.
#[track_caller]
fn uia_session(reply: Reply) -> Value {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}: {}", reply.context, reply.body);
    assert_eq!(reply.body["flows"], json!([{"stages": ["m.login.password"]}]), "{}", reply.context);
    assert!(reply.body.get("errcode").is_none(), "{}: {}", reply.context, reply.body);
    reply.body["session"].clone()
}

#[tokio::test]
async fn devices_are_listed_renamed_and_deleted_behind_the_password() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let phone = s
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "user": "alice", "password": "wonderland",
                       "device_id": "PHONE", "initial_device_display_name": "Phone"}),
            )
            .await
            .ok();
        let phone = Account::from_reply(&phone.body);

        let list = s.get("/_matrix/client/v3/devices", a).await.ok();
        let ids: Vec<&str> = list.body["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 2, "{}", list.body);
        assert!(ids.contains(&"PHONE") && ids.contains(&alice.device_id.as_str()), "{ids:?}");
        // A device without a name has no `display_name` at all (never null).
        let unnamed = s.get(&format!("/_matrix/client/v3/devices/{}", alice.device_id), a).await.ok();
        assert_eq!(unnamed.body, json!({"device_id": alice.device_id}));
        let one = s.get("/_matrix/client/r0/devices/PHONE", a).await.ok();
        assert_eq!(one.body, json!({"device_id": "PHONE", "display_name": "Phone"}));
        s.put("/_matrix/client/v3/devices/PHONE", a, json!({"display_name": "Old phone"})).await.ok();
        let one = s.get("/_matrix/client/v3/devices/PHONE", a).await.ok();
        assert_eq!(one.body["display_name"], "Old phone");

        // Unknown devices, and other users' devices, are not found.
        s.get("/_matrix/client/v3/devices/NOPE", a).await.err(404, "M_NOT_FOUND");
        s.put("/_matrix/client/v3/devices/NOPE", a, json!({"display_name": "x"})).await.err(404, "M_NOT_FOUND");
        s.get("/_matrix/client/v3/devices/PHONE", Some(&bob.token)).await.err(404, "M_NOT_FOUND");
        s.put("/_matrix/client/v3/devices/PHONE", Some(&bob.token), json!({"display_name": "mine"}))
            .await
            .err(404, "M_NOT_FOUND");
        s.get("/_matrix/client/v3/devices", None).await.err(401, "M_MISSING_TOKEN");

        // Deleting asks for the password first.
        let path = "/_matrix/client/v3/devices/PHONE";
        let session = uia_session(s.delete(path, a, json!({})).await);
        let wrong = s.delete(path, a, json!({"auth": password_auth(&session, "alice", "nope")})).await;
        let wrong = wrong.err(401, "M_FORBIDDEN");
        assert_eq!(wrong.body["session"], session);
        assert_eq!(wrong.body["flows"], json!([{"stages": ["m.login.password"]}]));
        // Someone else's password does not prove alice's identity.
        s.delete(path, a, json!({"auth": password_auth(&session, "bob", "builder")})).await.err(401, "M_FORBIDDEN");
        s.delete(path, a, json!({"auth": password_auth(&json!("made-up"), "alice", "wonderland")}))
            .await
            .err(400, "M_UNKNOWN");
        s.whoami(&phone.token).await.ok();
        s.delete(path, a, json!({"auth": password_auth(&session, &alice.user_id, "wonderland")})).await.ok();
        s.whoami(&phone.token).await.err(401, "M_UNKNOWN_TOKEN");
        s.get(path, a).await.err(404, "M_NOT_FOUND");
        // The session was spent.
        s.delete(path, a, json!({"auth": password_auth(&session, "alice", "wonderland")})).await.err(400, "M_UNKNOWN");

        // Bob "deleting" alice's device (with his own password) removes nothing.
        let path = "/_matrix/client/v3/delete_devices";
        let b = Some(bob.token.as_str());
        let session = uia_session(s.post(path, b, json!({"devices": [alice.device_id]})).await);
        s.post(path, b, json!({"devices": [alice.device_id], "auth": password_auth(&session, "bob", "builder")}))
            .await
            .ok();
        s.whoami(&alice.token).await.ok();
        s.whoami(&bob.token).await.ok();

        // Alice deletes several at once, her current device included.
        let laptop = s.login("alice", "wonderland").await;
        let session = uia_session(s.post(path, a, json!({"devices": [laptop.device_id, alice.device_id]})).await);
        let body = json!({"devices": [laptop.device_id, alice.device_id], "auth": password_auth(&session, "alice", "wonderland")});
        s.post(path, a, body).await.ok();
        s.whoami(&laptop.token).await.err(401, "M_UNKNOWN_TOKEN");
        s.whoami(&alice.token).await.err(401, "M_UNKNOWN_TOKEN");
    })
    .await;
}

#[tokio::test]
async fn password_changes_log_out_the_other_devices_unless_asked_not_to() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let other = s.login("alice", "wonderland").await;
        let a = Some(alice.token.as_str());
        let path = "/_matrix/client/v3/account/password";

        s.post(path, a, json!({"new_password": ""})).await.err(400, "M_INVALID_PARAM");
        s.post(path, a, json!({})).await.err(400, "M_BAD_JSON");
        let session = uia_session(s.post(path, a, json!({"new_password": "looking-glass"})).await);
        s.post(path, a, json!({"new_password": "looking-glass", "auth": password_auth(&session, "alice", "nope")}))
            .await
            .err(401, "M_FORBIDDEN");
        s.post(
            path,
            a,
            json!({"new_password": "looking-glass", "auth": password_auth(&session, "alice", "wonderland")}),
        )
        .await
        .ok();
        s.whoami(&alice.token).await.ok();
        s.whoami(&other.token).await.err(401, "M_UNKNOWN_TOKEN");
        s.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": "wonderland"}),
        )
        .await
        .err(403, "M_FORBIDDEN");
        let kept = s.login("alice", "looking-glass").await;

        // logout_devices: false keeps the other sessions.
        let session = uia_session(s.post(path, a, json!({"new_password": "rabbit-hole"})).await);
        let body = json!({"new_password": "rabbit-hole", "logout_devices": false,
                          "auth": password_auth(&session, "alice", "looking-glass")});
        s.post("/_matrix/client/r0/account/password", a, body).await.ok();
        s.whoami(&kept.token).await.ok();
        s.login("alice", "rabbit-hole").await;

        // Logged-out devices are announced as revoked tokens (pushers and caches follow).
        let records: Vec<(String, DeviceEvent)> = s.records("test.password", DEVICES_TOPIC, 3).await;
        let revoked = records.iter().any(|(_, event)| {
            matches!(event, DeviceEvent::TokensRevoked { token_hashes, .. }
                if token_hashes.contains(&myelin_types::random::token_hash(&other.token)))
        });
        assert!(revoked, "{records:?}");
    })
    .await;
}

#[tokio::test]
async fn deactivated_accounts_leave_their_rooms_and_cannot_log_in() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        let created = s.post("/_matrix/client/v3/createRoom", a, json!({"preset": "public_chat"})).await.ok();
        let room_id = created.body["room_id"].as_str().unwrap().to_owned();
        let room = format!("/_matrix/client/v3/rooms/{}", urlencode(&room_id));
        s.post(&format!("{room}/join"), b, json!({})).await.ok();

        // An invite still pending when bob leaves is rejected.
        let invited = s.post("/_matrix/client/v3/createRoom", a, json!({"invite": [bob.user_id]})).await.ok();
        let invited = format!("/_matrix/client/v3/rooms/{}", urlencode(invited.body["room_id"].as_str().unwrap()));

        let path = "/_matrix/client/v3/account/deactivate";
        let session = uia_session(s.post(path, b, json!({})).await);
        s.post(path, b, json!({"auth": password_auth(&session, "bob", "nope")})).await.err(401, "M_FORBIDDEN");
        s.whoami(&bob.token).await.ok();
        let done = s.post(path, b, json!({"auth": password_auth(&session, "bob", "builder")})).await.ok();
        assert_eq!(done.body["id_server_unbind_result"], "no-support");

        s.whoami(&bob.token).await.err(401, "M_UNKNOWN_TOKEN");
        s.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "bob", "password": "builder"}),
        )
        .await
        .err(403, "M_USER_DEACTIVATED");
        let nonce = s.nonce().await;
        s.post("/_synapse/admin/v1/register", None, admin_body(&nonce, "bob", "pw", SECRET))
            .await
            .err(400, "M_USER_IN_USE");
        let member = s.get(&format!("{room}/state/m.room.member/{}", urlencode(&bob.user_id)), a).await.ok();
        assert_eq!(member.body["membership"], "leave");
        let invite = s.get(&format!("{invited}/state/m.room.member/{}", urlencode(&bob.user_id)), a).await.ok();
        assert_eq!(invite.body["membership"], "leave", "the pending invite is rejected");
        // Alice is untouched.
        s.whoami(&alice.token).await.ok();

        // With `erase`, the profile and account data go too.
        let carol = s.admin_register("carol", "sea").await;
        let c = Some(carol.token.as_str());
        let profile = format!("/_matrix/client/v3/profile/{}", urlencode(&carol.user_id));
        s.put(&format!("{profile}/displayname"), c, json!({"displayname": "Carol"})).await.ok();
        let data = format!("/_matrix/client/v3/user/{}/account_data/org.example.notes", urlencode(&carol.user_id));
        s.put(&data, c, json!({"secret": true})).await.ok();
        let session = uia_session(s.post(path, c, json!({})).await);
        s.post(path, c, json!({"auth": password_auth(&session, "carol", "sea"), "erase": true})).await.ok();
        let erased = s.get(&profile, a).await;
        assert!(erased.body.get("displayname").is_none(), "{}", erased.body);
        let kept = s.get(&format!("/_matrix/client/v3/profile/{}", urlencode(&alice.user_id)), a).await.ok();
        assert!(kept.body.is_object(), "{}", kept.body);
    })
    .await;
}

#[tokio::test]
async fn third_party_ids_are_unsupported_and_capabilities_say_so() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let a = Some(alice.token.as_str());
        let listed = s.get("/_matrix/client/v3/account/3pid", a).await.ok();
        assert_eq!(listed.body, json!({"threepids": []}));
        s.get("/_matrix/client/v3/account/3pid", None).await.err(401, "M_MISSING_TOKEN");
        for path in ["/account/3pid/add", "/account/3pid/bind", "/account/3pid"] {
            s.post(&format!("/_matrix/client/v3{path}"), a, json!({"sid": "x", "client_secret": "y"}))
                .await
                .err(403, "M_THREEPID_DENIED");
        }
        for path in [
            "/account/3pid/email/requestToken",
            "/account/3pid/msisdn/requestToken",
            "/account/password/email/requestToken",
            "/register/email/requestToken",
        ] {
            let body = json!({"client_secret": "s", "email": "a@example.org", "send_attempt": 1});
            s.post(&format!("/_matrix/client/v3{path}"), None, body).await.err(403, "M_THREEPID_DENIED");
        }
        let removed = s
            .post("/_matrix/client/v3/account/3pid/delete", a, json!({"medium": "email", "address": "a@example.org"}))
            .await
            .ok();
        assert_eq!(removed.body["id_server_unbind_result"], "no-support");

        s.get("/_matrix/client/v3/capabilities", None).await.err(401, "M_MISSING_TOKEN");
        let caps = s.get("/_matrix/client/r0/capabilities", a).await.ok();
        let caps = &caps.body["capabilities"];
        assert_eq!(caps["m.change_password"]["enabled"], true);
        assert_eq!(caps["m.set_displayname"]["enabled"], true);
        assert_eq!(caps["m.set_avatar_url"]["enabled"], true);
        assert_eq!(caps["m.profile_fields"]["enabled"], true);
        assert_eq!(caps["m.3pid_changes"]["enabled"], false);
        assert_eq!(caps["m.room_versions"]["default"], "12");
        assert_eq!(caps["m.room_versions"]["available"]["12"], "stable");
        assert_eq!(caps["m.room_versions"]["available"]["10"], "stable");
    })
    .await;
}

#[tokio::test]
async fn aliases_point_to_rooms_and_guard_the_canonical_alias() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        let tea = format!("#tea:{SERVER_NAME}");
        let garden = format!("#garden:{SERVER_NAME}");
        let dir = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", urlencode(alias));

        let created = s
            .post("/_matrix/client/v3/createRoom", a, json!({"preset": "public_chat", "room_alias_name": "tea"}))
            .await
            .ok();
        let room_id = created.body["room_id"].as_str().unwrap().to_owned();
        let room = format!("/_matrix/client/v3/rooms/{}", urlencode(&room_id));
        let found = s.get(&dir(&tea), None).await.ok();
        assert_eq!(found.body, json!({"room_id": room_id, "servers": [SERVER_NAME]}));
        let canonical = s.get(&format!("{room}/state/m.room.canonical_alias/"), a).await.ok();
        assert_eq!(canonical.body, json!({"alias": tea}));
        s.post("/_matrix/client/v3/createRoom", a, json!({"room_alias_name": "tea"})).await.err(400, "M_ROOM_IN_USE");

        s.put(&dir(&garden), a, json!({"room_id": room_id})).await.ok();
        s.put(&dir(&garden), a, json!({"room_id": room_id})).await.err(409, "M_ROOM_IN_USE");
        s.put(&dir("#x:elsewhere.example"), a, json!({"room_id": room_id})).await.err(400, "M_INVALID_PARAM");
        s.put(&dir("garden"), a, json!({"room_id": room_id})).await.err(400, "M_INVALID_PARAM");
        s.get(&dir(&format!("#nothing:{SERVER_NAME}")), None).await.err(404, "M_NOT_FOUND");
        s.put(&dir(&format!("#bobs:{SERVER_NAME}")), b, json!({"room_id": room_id})).await.err(403, "M_FORBIDDEN");
        s.put(&dir(&garden), None, json!({"room_id": room_id})).await.err(401, "M_MISSING_TOKEN");

        // Only members list a room's aliases.
        s.get(&format!("{room}/aliases"), b).await.err(403, "M_FORBIDDEN");
        let aliases = s.get(&format!("{room}/aliases"), a).await.ok();
        assert_eq!(aliases.body, json!({"aliases": [tea, garden]}));

        // Joining by alias; unknown aliases are not joined (remote ones are
        // resolved over federation, tested end to end).
        let joined = s.post(&format!("/_matrix/client/v3/join/{}", urlencode(&tea)), b, json!({})).await.ok();
        assert_eq!(joined.body["room_id"], room_id);
        s.get(&format!("/_matrix/client/r0/rooms/{}/aliases", urlencode(&room_id)), b).await.ok();
        s.post(&format!("/_matrix/client/v3/join/{}", urlencode(&format!("#no:{SERVER_NAME}"))), b, json!({}))
            .await
            .err(404, "M_NOT_FOUND");

        // Bob (power 0) may not delete alice's alias; she may.
        s.send(reqwest::Method::DELETE, &dir(&garden), b, None).await.err(403, "M_FORBIDDEN");
        s.send(reqwest::Method::DELETE, &dir(&garden), a, None).await.ok();
        s.get(&dir(&garden), None).await.err(404, "M_NOT_FOUND");
        s.send(reqwest::Method::DELETE, &dir(&garden), a, None).await.err(404, "M_NOT_FOUND");
        // Bob may delete the alias he created himself.
        let bobs = format!("#bobs:{SERVER_NAME}");
        s.put(&dir(&bobs), b, json!({"room_id": room_id})).await.ok();
        s.send(reqwest::Method::DELETE, &dir(&bobs), b, None).await.ok();

        // The canonical alias must point to the room.
        let path = format!("{room}/state/m.room.canonical_alias");
        s.put(&path, a, json!({"alias": format!("#nope:{SERVER_NAME}")})).await.err(400, "M_BAD_ALIAS");
        s.put(&path, a, json!({"alias": tea, "alt_aliases": [garden]})).await.err(400, "M_BAD_ALIAS");
        s.put(&path, a, json!({"alias": "tea"})).await.err(400, "M_INVALID_PARAM");
        s.put(&path, a, json!({"alias": tea, "alt_aliases": []})).await.ok();
        s.put(&path, a, json!({})).await.ok();
    })
    .await;
}

/// Poll `path` until `done` holds for its body, whatever the status until
/// then (the directory's summaries come from the room server's output, a
/// moment after the request).
async fn eventually(s: &Server, path: &str, token: Option<&str>, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let reply = s.get(path, token).await;
        if done(&reply.body) {
            return reply.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("[{}] {path} never got there", s.backend);
}

#[tokio::test]
async fn the_public_directory_lists_published_rooms_behind_authentication() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let b = Some(bob.token.as_str());
        for (name, topic) in [("Apple pie", "Baking"), ("Banana split", "Desserts"), ("Cherry tart", "Fruit")] {
            let body = json!({"visibility": "public", "preset": "public_chat", "name": name, "topic": topic});
            s.post("/_matrix/client/v3/createRoom", a, body).await.ok();
        }
        let private = s.post("/_matrix/client/v3/createRoom", a, json!({"name": "Secret"})).await.ok();
        let private = private.body["room_id"].as_str().unwrap().to_owned();

        s.get("/_matrix/client/v3/publicRooms", None).await.err(401, "M_MISSING_TOKEN");
        s.post("/_matrix/client/v3/publicRooms", None, json!({})).await.err(401, "M_MISSING_TOKEN");
        let all = eventually(s, "/_matrix/client/v3/publicRooms", b, |body| {
            body["chunk"].as_array().unwrap().iter().filter(|room| room["name"].is_string()).count() == 3
        })
        .await;
        assert_eq!(all["total_room_count_estimate"], 3);

        // Paging: two, then the last one, no room twice.
        let first = s.get("/_matrix/client/v3/publicRooms?limit=2", b).await.ok();
        assert_eq!(first.body["chunk"].as_array().unwrap().len(), 2);
        assert!(first.body.get("prev_batch").is_none());
        let next = first.body["next_batch"].as_str().unwrap();
        let second = s.get(&format!("/_matrix/client/r0/publicRooms?limit=2&since={next}"), b).await.ok();
        let rest = second.body["chunk"].as_array().unwrap();
        assert_eq!(rest.len(), 1);
        assert!(second.body.get("next_batch").is_none());
        assert!(second.body["prev_batch"].is_string());
        assert!(first.body["chunk"].as_array().unwrap().iter().all(|r| r["room_id"] != rest[0]["room_id"]));
        s.get("/_matrix/client/v3/publicRooms?since=bogus", b).await.err(400, "M_INVALID_PARAM");
        // A malformed server name (a well-formed one is asked over federation).
        s.get("/_matrix/client/v3/publicRooms?server=bad%20name", b).await.err(400, "M_INVALID_PARAM");

        // Searching the name, topic and canonical alias.
        let found = s
            .post("/_matrix/client/v3/publicRooms", b, json!({"filter": {"generic_search_term": "BANANA"}}))
            .await
            .ok();
        assert_eq!(found.body["total_room_count_estimate"], 1);
        let room = &found.body["chunk"][0];
        assert_eq!(room["name"], "Banana split");
        assert_eq!(room["topic"], "Desserts");
        assert_eq!(room["num_joined_members"], 1);
        assert_eq!(room["join_rule"], "public");
        assert_eq!(room["world_readable"], false);
        assert_eq!(room["guest_can_join"], false);
        let none =
            s.post("/_matrix/client/v3/publicRooms", b, json!({"filter": {"generic_search_term": "100%"}})).await;
        assert_eq!(none.ok().body["chunk"], json!([]));

        // Publishing: only a member with power over the canonical alias.
        let list = format!("/_matrix/client/v3/directory/list/room/{}", urlencode(&private));
        let visibility = eventually(s, &list, None, |body| body["visibility"].is_string()).await;
        assert_eq!(visibility["visibility"], "private");
        s.put(&list, b, json!({"visibility": "public"})).await.err(403, "M_FORBIDDEN");
        s.put(&list, a, json!({"visibility": "sideways"})).await.err(400, "M_INVALID_PARAM");
        s.put(&list, a, json!({"visibility": "public"})).await.ok();
        assert_eq!(s.get(&list, None).await.ok().body["visibility"], "public");
        let listed = s.get("/_matrix/client/v3/publicRooms", b).await.ok();
        assert_eq!(listed.body["total_room_count_estimate"], 4);
        s.put(&list, a, json!({"visibility": "private"})).await.ok();
        assert_eq!(s.get(&list, None).await.ok().body["visibility"], "private");
        s.get(&format!("/_matrix/client/v3/directory/list/room/{}", urlencode("!unknown:elsewhere.example")), None)
            .await
            .err(404, "M_NOT_FOUND");
    })
    .await;
}

/// `room_types` keeps rooms of the listed types, `null` standing for rooms
/// without one; no third-party network is bridged here.
#[tokio::test]
async fn the_public_directory_filters_by_room_type() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let a = Some(alice.token.as_str());
        for (name, room_type) in [("Plain", None), ("Space", Some("m.space")), ("Custom", Some("org.example.board"))] {
            let mut body = json!({"visibility": "public", "preset": "public_chat", "name": name});
            if let Some(room_type) = room_type {
                body["creation_content"] = json!({"type": room_type});
            }
            s.post("/_matrix/client/v3/createRoom", a, body).await.ok();
        }
        eventually(s, "/_matrix/client/v3/publicRooms", a, |body| {
            body["chunk"].as_array().unwrap().iter().filter(|room| room["name"].is_string()).count() == 3
        })
        .await;
        let names = async |filter: Value| {
            let found = s.post("/_matrix/client/v3/publicRooms", a, json!({"filter": filter})).await.ok();
            let mut names: Vec<String> = found.body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect();
            names.sort();
            assert_eq!(found.body["total_room_count_estimate"], names.len(), "{}", found.body);
            names
        };
        assert_eq!(names(json!({"room_types": ["m.space"]})).await, ["Space"]);
        assert_eq!(names(json!({"room_types": [null]})).await, ["Plain"]);
        assert_eq!(names(json!({"room_types": [null, "org.example.board"]})).await, ["Custom", "Plain"]);
        assert_eq!(names(json!({"room_types": []})).await, ["Custom", "Plain", "Space"]);
        assert_eq!(
            names(json!({"room_types": ["m.space"], "generic_search_term": "plain"})).await,
            Vec::<String>::new()
        );
        assert_eq!(names(json!({"room_types": ["m.nothing"]})).await, Vec::<String>::new());

        let network = json!({"third_party_instance_id": "irc-libera", "filter": {}});
        let bridged = s.post("/_matrix/client/v3/publicRooms", a, network).await.ok();
        assert_eq!(bridged.body["chunk"], json!([]));
        let everything = s.post("/_matrix/client/v3/publicRooms", a, json!({"include_all_networks": true})).await.ok();
        assert_eq!(everything.body["chunk"].as_array().unwrap().len(), 3);

        let too_many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        s.post("/_matrix/client/v3/publicRooms", a, json!({"filter": {"room_types": too_many}}))
            .await
            .err(400, "M_INVALID_PARAM");
        s.post("/_matrix/client/v3/publicRooms", a, json!({"filter": {"room_types": "m.space"}}))
            .await
            .err(400, "M_BAD_JSON");
    })
    .await;
}

#[tokio::test]
async fn the_operator_can_open_the_directory_to_anonymous_clients() {
    let options = || Options { roomserver: true, open_directory: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({"visibility": "public", "name": "Open"}))
            .await
            .ok();
        let listed = s.get("/_matrix/client/v3/publicRooms", None).await.ok();
        assert_eq!(listed.body["total_room_count_estimate"], 1);
        // A token that is sent must still be valid.
        s.get("/_matrix/client/v3/publicRooms", Some("nope")).await.err(401, "M_UNKNOWN_TOKEN");
    })
    .await;
}

impl Server {
    /// Upload `bytes` as `content_type`; the reply.
    async fn upload(&self, token: Option<&str>, content_type: &str, query: &str, bytes: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/_matrix/media/v3/upload{query}", self.base))
            .header("content-type", content_type)
            .body(bytes);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn download(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn media_uploads_download_with_safe_headers() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let a = Some(alice.token.as_str());
        let (status, reply) = s.upload(a, "text/plain", "?filename=hi.txt", b"hello".to_vec()).await;
        assert_eq!(status, 200, "{reply}");
        let uri = reply["content_uri"].as_str().unwrap();
        let media_id = uri.strip_prefix(&format!("mxc://{SERVER_NAME}/")).expect("an mxc URI of this server");

        let authenticated = format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{media_id}");
        let response = s.download(&authenticated, a).await;
        assert_eq!(response.status().as_u16(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["content-disposition"], "inline; filename*=utf-8''hi.txt");
        assert!(headers["content-security-policy"].to_str().unwrap().starts_with("sandbox"));
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello");
        let response = s.download(&authenticated, None).await;
        assert_eq!(response.status().as_u16(), 401);

        // The legacy path needs no token; a name in the path wins.
        let legacy = format!("/_matrix/media/v3/download/{SERVER_NAME}/{media_id}/other.txt");
        let response = s.download(&legacy, None).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-disposition"], "inline; filename*=utf-8''other.txt");

        // Active content is never shown inline.
        let (_, reply) = s.upload(a, "text/html", "", b"<script>alert(1)</script>".to_vec()).await;
        let html_id = reply["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let response = s.download(&format!("/_matrix/media/r0/download/{SERVER_NAME}/{html_id}"), None).await;
        assert_eq!(response.headers()["content-disposition"], "attachment");

        let config = s.get("/_matrix/client/v1/media/config", a).await.ok();
        assert_eq!(config.body["m.upload.size"], MAX_UPLOAD);

        for path in [
            format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{}", "x".repeat(24)),
            format!("/_matrix/client/v1/media/download/{SERVER_NAME}/..%2F..%2Fmyelin.db"),
        ] {
            s.get(&path, a).await.err(404, "M_NOT_FOUND");
        }
        // Thumbnails: an image scaled into the box, or cropped to fill it.
        let mut png = std::io::Cursor::new(Vec::new());
        image::DynamicImage::new_rgb8(400, 200).write_to(&mut png, image::ImageFormat::Png).unwrap();
        let (_, reply) = s.upload(a, "image/png", "", png.into_inner()).await;
        let image_id = reply["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        for (query, size) in
            [("width=100&height=100&method=scale", (100, 50)), ("width=100&height=100&method=crop", (100, 100))]
        {
            let path = format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{image_id}?{query}");
            let response = s.download(&path, a).await;
            assert_eq!(response.status().as_u16(), 200, "{query}");
            assert_eq!(response.headers()["content-type"], "image/png");
            let thumbnail = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
            assert_eq!((thumbnail.width(), thumbnail.height()), size, "{query}");
        }
        let legacy = format!("/_matrix/media/v3/thumbnail/{SERVER_NAME}/{image_id}?width=32&height=32");
        assert_eq!(s.download(&legacy, None).await.status().as_u16(), 200);
        let thumbnail =
            |id: &str, query: &str| format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{id}?{query}");
        s.get(&thumbnail(&image_id, "width=0&height=10"), a).await.err(400, "M_INVALID_PARAM");
        s.get(&thumbnail(&image_id, "width=10"), a).await.err(400, "M_INVALID_PARAM");
        s.get(&thumbnail(&image_id, "width=10&height=10&method=zoom"), a).await.err(400, "M_INVALID_PARAM");
        s.get(&thumbnail(media_id, "width=10&height=10"), a).await.err(400, "M_UNKNOWN");

        let (status, reply) = s.upload(None, "text/plain", "", b"anonymous".to_vec()).await;
        assert_eq!((status, reply["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
        let (status, _) = s.upload(a, "text/plain", "", vec![b'x'; MAX_UPLOAD as usize + 1]).await;
        assert_eq!(status, 413);
    })
    .await;
}

impl Server {
    /// `PUT` `bytes` to a created `mxc://` URI's upload path; the reply.
    async fn upload_to(&self, path: &str, token: &str, content_type: &str, bytes: Vec<u8>) -> Reply {
        let request =
            self.http.put(format!("{}{path}", self.base)).bearer_auth(token).header("content-type", content_type);
        let response = request.body(bytes).send().await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Reply { status, body, context: format!("[{}] PUT {path}", self.backend) }
    }

    /// `POST /media/v1/create`: the new media id.
    async fn create_media(&self, token: &str) -> String {
        let created = self.post("/_matrix/media/v1/create", Some(token), json!({})).await.ok();
        let uri = created.body["content_uri"].as_str().unwrap();
        uri.strip_prefix(&format!("mxc://{SERVER_NAME}/")).expect("an mxc URI of this server").to_owned()
    }
}

/// `POST /media/v1/create` reserves an `mxc://` URI that only its creator
/// fills, once, before it expires; downloads wait for the content up to
/// `timeout_ms`; each user holds only so many unfilled URIs.
#[tokio::test]
async fn media_created_before_upload_waits_for_its_content() {
    let clock = ManualClock::new(myelin_types::Clock::now_ms(&SystemClock));
    let options = || Options { clock: Some(clock.clone()), ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let (a, b) = (alice.token.as_str(), bob.token.as_str());
        let now = myelin_types::Clock::now_ms(&clock);

        let created = s.post("/_matrix/media/v1/create", Some(a), json!({})).await.ok();
        assert_eq!(created.body["unused_expires_at"], now + 24 * 60 * 60 * 1000, "{}", created.body);
        let id = created.body["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        s.post("/_matrix/media/v1/create", None, json!({})).await.err(401, "M_MISSING_TOKEN");

        // Before the upload: 504 once the client's timeout passes.
        let download = format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{id}");
        s.get(&format!("{download}?timeout_ms=100"), Some(a)).await.err(504, "M_NOT_YET_UPLOADED");
        let legacy = format!("/_matrix/media/v3/download/{SERVER_NAME}/{id}?timeout_ms=0");
        s.get(&legacy, None).await.err(504, "M_NOT_YET_UPLOADED");
        let thumbnail = format!("/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{id}?width=8&height=8&timeout_ms=0");
        s.get(&thumbnail, Some(a)).await.err(504, "M_NOT_YET_UPLOADED");

        // Only the creator uploads.
        let put = format!("/_matrix/media/v3/upload/{SERVER_NAME}/{id}?filename=a.txt");
        s.upload_to(&put, b, "text/plain", b"bob's".to_vec()).await.err(403, "M_FORBIDDEN");

        // A waiting download gets the content as soon as it lands.
        let started = Instant::now();
        let waiting = format!("{download}?timeout_ms=30000");
        let (waited, uploaded) = tokio::join!(s.download(&waiting, Some(b)), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.upload_to(&put, a, "text/plain", b"alice's".to_vec()).await
        });
        assert_eq!(uploaded.ok().body, json!({}));
        assert_eq!(waited.status().as_u16(), 200);
        assert!(started.elapsed() < Duration::from_secs(10), "woken by the upload, not the timeout");
        assert_eq!(waited.headers()["content-disposition"], "inline; filename*=utf-8''a.txt");
        assert_eq!(waited.bytes().await.unwrap().as_ref(), b"alice's");

        // Once.
        s.upload_to(&put, a, "text/plain", b"again".to_vec()).await.err(409, "M_CANNOT_OVERWRITE_MEDIA");
        s.upload_to(&put, b, "text/plain", b"again".to_vec()).await.err(403, "M_FORBIDDEN");
        let (_, reply) = s.upload(Some(a), "text/plain", "", b"direct".to_vec()).await;
        let direct = reply["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let direct_put = format!("/_matrix/media/v3/upload/{SERVER_NAME}/{direct}");
        s.upload_to(&direct_put, a, "text/plain", b"x".to_vec()).await.err(409, "M_CANNOT_OVERWRITE_MEDIA");

        // Only URIs this server created.
        for path in [
            format!("/_matrix/media/v3/upload/{SERVER_NAME}/{}", "x".repeat(24)),
            format!("/_matrix/media/v3/upload/{SERVER_NAME}/..%2F..%2Fmyelin.db"),
            format!("/_matrix/media/v3/upload/other.example/{id}"),
        ] {
            s.upload_to(&path, a, "text/plain", b"x".to_vec()).await.err(404, "M_NOT_FOUND");
        }

        // The legacy r0 path, and the upload limit of every upload.
        let id = s.create_media(a).await;
        let r0 = format!("/_matrix/media/r0/upload/{SERVER_NAME}/{id}");
        let too_large = s.upload_to(&r0, a, "text/plain", vec![b'x'; MAX_UPLOAD as usize + 1]).await;
        assert_eq!(too_large.status.as_u16(), 413, "{}", too_large.context);
        s.upload_to(&r0, a, "application/octet-stream", vec![7; 10]).await.ok();
        let response = s.download(&format!("/_matrix/media/r0/download/{SERVER_NAME}/{id}"), None).await;
        assert_eq!(response.bytes().await.unwrap().as_ref(), [7; 10]);

        // Unused URIs expire after a day.
        let stale = s.create_media(a).await;
        clock.advance_ms(24 * 60 * 60 * 1000 + 1);
        let stale_put = format!("/_matrix/media/v3/upload/{SERVER_NAME}/{stale}");
        s.upload_to(&stale_put, a, "text/plain", b"late".to_vec()).await.err(404, "M_NOT_FOUND");
        let stale_download = format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{stale}?timeout_ms=0");
        s.get(&stale_download, Some(a)).await.err(404, "M_NOT_FOUND");

        // Five unfilled URIs per user (the default), then 429.
        let mut pending = Vec::new();
        for _ in 0..5 {
            pending.push(s.create_media(a).await);
        }
        s.post("/_matrix/media/v1/create", Some(a), json!({})).await.err(429, "M_LIMIT_EXCEEDED");
        s.create_media(b).await;
        let filled = format!("/_matrix/media/v3/upload/{SERVER_NAME}/{}", pending[0]);
        s.upload_to(&filled, a, "text/plain", b"filled".to_vec()).await.ok();
        s.create_media(a).await;
    })
    .await;
}

/// A small web site for URL previews, on loopback: pages with and without
/// OpenGraph tags, an image, redirects (one leaving the allow-list, one to
/// another scheme), a redirect loop and an oversized page. Counts the
/// requests it serves.
async fn preview_site() -> (String, Arc<std::sync::atomic::AtomicUsize>, Vec<u8>) {
    use axum::http::header;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::new_rgb8(40, 20).write_to(&mut png, image::ImageFormat::Png).unwrap();
    let png = png.into_inner();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let html = |body: &'static str| ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body);
    let redirect = |to: String| (StatusCode::FOUND, [(header::LOCATION, to)]);
    let image = png.clone();
    let site = axum::Router::new()
        .route(
            "/page",
            axum::routing::get(move || async move {
                html(
                    r#"<!doctype html><html><head><title>Not this</title>
                    <meta property="og:title" content="A page &amp; its title">
                    <meta property="og:description" content="What the page is about">
                    <meta property="og:image" content="/image.png">
                    <meta property="og:image:width" content="999">
                    </head><body>Hello</body></html>"#,
                )
            }),
        )
        .route(
            "/plain",
            axum::routing::get(move || async move {
                html(r#"<title>Plain title</title><meta name="description" content="Plain description">"#)
            }),
        )
        .route("/image.png", axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "image/png")], image) }))
        .route("/redirect", axum::routing::get(move || async move { redirect("/page".to_owned()) }))
        .route("/escape", axum::routing::get(move || async move { redirect(format!("http://127.0.0.2:{port}/page")) }))
        .route("/loop", axum::routing::get(move || async move { redirect("/loop".to_owned()) }))
        .route("/ftp", axum::routing::get(move || async move { redirect(format!("ftp://127.0.0.1:{port}/page")) }))
        .route(
            "/huge",
            axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "text/html")], vec![b' '; 11 << 20]) }),
        )
        .layer(axum::middleware::from_fn({
            let hits = hits.clone();
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                hits.fetch_add(1, Ordering::SeqCst);
                next.run(request)
            }
        }));
    tokio::spawn(async move { axum::serve(listener, site).await });
    (format!("http://127.0.0.1:{port}"), hits, png)
}

fn preview_path(url: &str) -> String {
    let url: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    format!("/_matrix/client/v1/media/preview_url?url={url}")
}

/// URL previews are off unless the operator enables them.
#[tokio::test]
async fn url_previews_are_off_by_default() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let a = Some(alice.token.as_str());
        s.get(&preview_path("https://example.org/"), a).await.err(404, "M_UNRECOGNIZED");
        s.get("/_matrix/media/v3/preview_url?url=https%3A%2F%2Fexample.org%2F", a).await.err(404, "M_UNRECOGNIZED");
    })
    .await;
}

/// Enabled, previews read OpenGraph properties (or the title and
/// description), keep the image as local media, follow redirects and cache
/// answers; they reach loopback only because the test allow-lists
/// 127.0.0.1/32, and every hop is checked.
#[tokio::test]
async fn url_previews_read_opengraph_within_the_address_policy() {
    use std::sync::atomic::Ordering;
    let (site, hits, png) = preview_site().await;
    let options = || Options { url_previews: true, url_preview_allowlist: &["127.0.0.1/32"], ..Options::default() };
    each_backend(options, async |s| {
        hits.store(0, Ordering::SeqCst);
        let alice = s.admin_register("alice", "wonderland").await;
        let a = Some(alice.token.as_str());

        let page = s.get(&preview_path(&format!("{site}/page")), a).await.ok().body;
        assert_eq!(page["og:title"], "A page & its title", "{page}");
        assert_eq!(page["og:description"], "What the page is about");
        assert_eq!(page["og:image:type"], "image/png");
        assert_eq!(page["matrix:image:size"], png.len());
        assert_eq!((page["og:image:width"].as_u64(), page["og:image:height"].as_u64()), (Some(40), Some(20)));
        let image = page["og:image"].as_str().unwrap();
        let image_id = image.strip_prefix(&format!("mxc://{SERVER_NAME}/")).expect("an mxc URI of this server");
        let stored = s.download(&format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{image_id}"), a).await;
        assert_eq!(stored.bytes().await.unwrap().as_ref(), png.as_slice());
        assert_eq!(hits.load(Ordering::SeqCst), 2, "the page and its image");

        // Cached: the same answer without asking the site again, on either path.
        let again = s.get(&preview_path(&format!("{site}/page")), a).await.ok().body;
        assert_eq!(again, page);
        let legacy = preview_path(&format!("{site}/page")).replace("/client/v1/media/", "/media/v3/");
        assert_eq!(s.get(&legacy, a).await.ok().body, page);
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        let plain = s.get(&preview_path(&format!("{site}/plain")), a).await.ok().body;
        assert_eq!(plain, json!({"og:title": "Plain title", "og:description": "Plain description"}));
        let direct = s.get(&preview_path(&format!("{site}/image.png")), a).await.ok().body;
        assert!(direct["og:image"].as_str().unwrap().starts_with("mxc://"), "{direct}");
        assert_eq!(
            (direct["og:image:type"].as_str(), direct["og:image:width"].as_u64()),
            (Some("image/png"), Some(40))
        );
        let redirected = s.get(&preview_path(&format!("{site}/redirect")), a).await.ok().body;
        assert_eq!(redirected["og:title"], "A page & its title");

        // A redirect is checked like the first request.
        s.get(&preview_path(&format!("{site}/escape")), a).await.err(403, "M_FORBIDDEN");
        s.get(&preview_path(&format!("{site}/loop")), a).await.err(502, "M_UNKNOWN");
        s.get(&preview_path(&format!("{site}/ftp")), a).await.err(502, "M_UNKNOWN");
        s.get(&preview_path(&format!("{site}/huge")), a).await.err(502, "M_TOO_LARGE");
        s.get(&preview_path(&format!("{site}/missing")), a).await.err(502, "M_UNKNOWN");

        for url in ["ftp://127.0.0.1/", "file:///etc/passwd", "not a url"] {
            s.get(&preview_path(url), a).await.err(400, "M_INVALID_PARAM");
        }
        s.get("/_matrix/client/v1/media/preview_url", a).await.err(400, "M_MISSING_PARAM");
        s.get(&preview_path(&format!("{site}/page")), None).await.err(401, "M_MISSING_TOKEN");
    })
    .await;
}

/// Without an allow-list, previews never reach loopback, however it is
/// spelled, and the site never sees a request.
#[tokio::test]
async fn url_previews_refuse_loopback_unless_allowed() {
    use std::sync::atomic::Ordering;
    let (site, hits, _) = preview_site().await;
    let port = site.rsplit(':').next().unwrap().to_owned();
    let options = || Options { url_previews: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let a = Some(alice.token.as_str());
        for host in ["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "127.1", "0x7f000001"] {
            let url = format!("http://{host}:{port}/page");
            let refused = s.get(&preview_path(&url), a).await.err(403, "M_FORBIDDEN");
            assert!(refused.body["error"].as_str().unwrap().contains("may not reach"), "{}", refused.body);
        }
    })
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn key_backups_keep_the_better_copy_per_session() {
    each_backend(Options::default, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let (a, b) = (Some(alice.token.as_str()), Some(bob.token.as_str()));
        let base = "/_matrix/client/v3/room_keys";
        let key = |verified: bool, index: u64, forwards: u64| {
            json!({"is_verified": verified, "first_message_index": index, "forwarded_count": forwards,
                   "session_data": {"ciphertext": format!("{verified}{index}{forwards}")}})
        };
        s.get(&format!("{base}/version"), a).await.err(404, "M_NOT_FOUND");
        let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
        let created = s
            .post(&format!("{base}/version"), a, json!({"algorithm": algorithm, "auth_data": {"public_key": "k1"}}))
            .await
            .ok();
        assert_eq!(created.body["version"], "1");
        let current = s.get(&format!("{base}/version"), a).await.ok();
        assert_eq!((current.body["count"].as_i64(), current.body["etag"].as_str()), (Some(0), Some("0")));
        s.post(&format!("{base}/version"), a, json!({"algorithm": "AAA", "auth_data": {}}))
            .await
            .err(400, "M_INVALID_PARAM");

        let session = format!("{base}/keys/!r:test.local/s1?version=1");
        let put = s.put(&session, a, key(false, 5, 1)).await.ok();
        assert_eq!((put.body["count"].as_i64(), put.body["etag"].as_str()), (Some(1), Some("1")));
        // A worse copy changes nothing; a verified one replaces it.
        let put = s.put(&session, a, key(false, 9, 0)).await.ok();
        assert_eq!(put.body["etag"], "1");
        assert_eq!(s.get(&session, a).await.ok().body["first_message_index"], 5);
        let put = s.put(&session, a, key(true, 9, 9)).await.ok();
        assert_eq!(put.body["etag"], "2");
        assert_eq!(s.get(&session, a).await.ok().body["is_verified"], true);
        let all = json!({"rooms": {"!r2:test.local": {"sessions": {"s2": key(false, 0, 0)}}}});
        assert_eq!(s.put(&format!("{base}/keys?version=1"), a, all).await.ok().body["count"], 2);
        let everything = s.get(&format!("{base}/keys?version=1"), a).await.ok();
        assert_eq!(everything.body["rooms"].as_object().unwrap().len(), 2);
        let room = s.get(&format!("{base}/keys/!r2:test.local?version=1"), a).await.ok();
        assert!(room.body["sessions"]["s2"].is_object(), "{}", room.body);

        // A newer version becomes the one to write to; the old one can still be read.
        let second = s.post(&format!("{base}/version"), a, json!({"algorithm": algorithm, "auth_data": {}})).await.ok();
        assert_eq!(second.body["version"], "2");
        s.put(&session, a, key(true, 0, 0)).await.err(403, "M_WRONG_ROOM_KEYS_VERSION");
        s.get(&session, a).await.ok();
        s.put(&format!("{base}/version/2"), a, json!({"algorithm": "other", "auth_data": {}}))
            .await
            .err(400, "M_INVALID_PARAM");
        s.put(&format!("{base}/version/2"), a, json!({"algorithm": algorithm, "auth_data": {"public_key": "k2"}}))
            .await
            .ok();
        assert_eq!(s.get(&format!("{base}/version/2"), a).await.ok().body["auth_data"]["public_key"], "k2");

        let deleted =
            s.send(reqwest::Method::DELETE, &format!("{base}/keys/!r2:test.local?version=1"), a, None).await.ok();
        assert_eq!(deleted.body["count"], 1);
        s.send(reqwest::Method::DELETE, &format!("{base}/version/1"), a, None).await.ok();
        s.get(&format!("{base}/version/1"), a).await.err(404, "M_NOT_FOUND");
        s.send(reqwest::Method::DELETE, &format!("{base}/version/1"), a, None).await.err(404, "M_NOT_FOUND");

        s.get(&format!("{base}/keys"), a).await.err(400, "M_MISSING_PARAM");
        s.put(&format!("{base}/keys/!r:test.local/s9?version=2"), a, json!({"session_data": {}}))
            .await
            .err(400, "M_BAD_JSON");
        s.get(&format!("{base}/version/x"), a).await.err(404, "M_NOT_FOUND");
        // Backups are per user.
        s.get(&format!("{base}/version"), b).await.err(404, "M_NOT_FOUND");
    })
    .await;
}

#[tokio::test]
async fn user_directory_finds_only_users_sharing_a_room_or_in_public_rooms() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let carol = s.admin_register("carol", "singer").await;
        let dave = s.admin_register("dave", "diver").await;
        let (a, b) = (Some(alice.token.as_str()), Some(bob.token.as_str()));
        s.put(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.user_id),
            a,
            json!({"displayname": "Alice Liddell"}),
        )
        .await
        .ok();
        let shared = s.post("/_matrix/client/v3/createRoom", a, json!({"invite": [bob.user_id]})).await.ok();
        let shared = shared.body["room_id"].as_str().unwrap().to_owned();
        s.post(&format!("/_matrix/client/v3/join/{}", urlencode(&shared)), b, json!({})).await.ok();
        s.post("/_matrix/client/v3/createRoom", Some(&carol.token), json!({"preset": "public_chat"})).await.ok();
        s.post("/_matrix/client/v3/createRoom", Some(&dave.token), json!({})).await.ok();

        let ids = |reply: &Reply| -> Vec<String> {
            reply.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["user_id"].as_str().unwrap().to_owned())
                .collect()
        };
        // The directory follows the rooms as the room server reports them.
        let deadline = Instant::now() + Duration::from_secs(15);
        while ids(&s.user_search(b, json!({"search_term": "liddell"})).await.ok()) != [alice.user_id.as_str()] {
            assert!(Instant::now() < deadline, "[{}] alice never found by display name", s.backend);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let found = s.user_search(b, json!({"search_term": "liddell"})).await.ok();
        assert_eq!(found.body["results"][0]["display_name"], "Alice Liddell");
        assert_eq!(ids(&s.user_search(a, json!({"search_term": "BOB"})).await.ok()), [bob.user_id.as_str()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while ids(&s.user_search(a, json!({"search_term": "carol"})).await.ok()) != [carol.user_id.as_str()] {
            assert!(Instant::now() < deadline, "[{}] a public room's member is never found", s.backend);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Dave shares no room with Alice and is in no public room.
        assert!(ids(&s.user_search(a, json!({"search_term": "dave"})).await.ok()).is_empty());
        let limited = s.user_search(a, json!({"search_term": SERVER_NAME, "limit": 1})).await.ok();
        assert_eq!((ids(&limited).len(), limited.body["limited"].as_bool()), (1, Some(true)));
        s.user_search(a, json!({"search_term": "  "})).await.err(400, "M_INVALID_PARAM");
        s.user_search(a, json!({"limit": 5})).await.err(400, "M_BAD_JSON");

        // Another server's user who joins the shared room is found by the
        // name their member event carries, and only while joined.
        let remote = "@zed:elsewhere.example";
        let remote_member = async |membership: &str, displayname: &str, event_id: &str| {
            use myelin_roomserver::api::{NewRoomEvent, OUTPUT_TOPIC, OutputRecord, StateDelta, StoredEvent};
            let event = StoredEvent {
                event_id: event_id.try_into().unwrap(),
                room_id: shared.as_str().try_into().unwrap(),
                pdu: json!({"type": "m.room.member", "state_key": remote, "sender": remote,
                    "content": {"membership": membership, "displayname": displayname}}),
            };
            let record = OutputRecord::NewRoomEvent(NewRoomEvent {
                event: event.clone(),
                room_version: "12".to_owned(),
                state_delta: StateDelta { added: vec![event], removed: Vec::new() },
                txn: None,
                historical: false,
            });
            s.bus.produce_json(OUTPUT_TOPIC, &shared, &record).await.unwrap();
        };
        remote_member("join", "Zed Zebra", "$remote_join").await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while ids(&s.user_search(a, json!({"search_term": "zebra"})).await.ok()) != [remote] {
            assert!(Instant::now() < deadline, "[{}] another server's user is never found", s.backend);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let found = s.user_search(a, json!({"search_term": "zebra"})).await.ok();
        assert_eq!(found.body["results"][0]["display_name"], "Zed Zebra");
        remote_member("leave", "Zed Zebra", "$remote_leave").await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ids(&s.user_search(a, json!({"search_term": "zebra"})).await.ok()).is_empty() {
            assert!(Instant::now() < deadline, "[{}] a user who left is still found", s.backend);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

impl Server {
    async fn user_search(&self, token: Option<&str>, body: Value) -> Reply {
        self.post("/_matrix/client/v3/user_directory/search", token, body).await
    }
}

#[tokio::test]
async fn guest_registration_is_off_by_default() {
    each_backend(Options::default, async |s| {
        s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
    })
    .await;
}

#[tokio::test]
async fn guests_call_only_the_endpoints_open_to_guests() {
    let options = || Options { guests: true, roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let guest = s.register_guest().await;
        assert!(guest.user_id.ends_with(&format!(":{SERVER_NAME}")), "{}", guest.user_id);
        let g = Some(guest.token.as_str());

        // Open to guests: account maintenance and end-to-end keys.
        let me = s.whoami(&guest.token).await.ok();
        assert_eq!(me.body, json!({"user_id": guest.user_id, "device_id": guest.device_id, "is_guest": true}));
        s.get("/_matrix/client/v3/devices", g).await.ok();
        s.get(&format!("/_matrix/client/v3/devices/{}", guest.device_id), g).await.ok();
        s.put(&format!("/_matrix/client/v3/devices/{}", guest.device_id), g, json!({"display_name": "Kiosk"}))
            .await
            .ok();
        s.put(
            &format!("/_matrix/client/v3/profile/{}/displayname", urlencode(&guest.user_id)),
            g,
            json!({"displayname": "Visitor"}),
        )
        .await
        .ok();
        s.post("/_matrix/client/v3/keys/query", g, json!({"device_keys": {}})).await.ok();

        // Closed to guests.
        for (method, path, body) in [
            (reqwest::Method::POST, "/_matrix/client/v3/createRoom".to_owned(), json!({})),
            (reqwest::Method::GET, "/_matrix/client/v3/joined_rooms".to_owned(), json!({})),
            (reqwest::Method::POST, "/_matrix/client/v3/logout".to_owned(), json!({})),
            (reqwest::Method::POST, "/_matrix/client/v3/account/password".to_owned(), json!({"new_password": "x"})),
            (
                reqwest::Method::PUT,
                format!("/_matrix/client/v3/profile/{}/avatar_url", urlencode(&guest.user_id)),
                json!({"avatar_url": "mxc://x/y"}),
            ),
            (
                reqwest::Method::PUT,
                format!("/_matrix/client/v3/user/{}/account_data/org.example", urlencode(&guest.user_id)),
                json!({}),
            ),
            (reqwest::Method::POST, "/_matrix/client/v3/join/%23anything%3Atest.local".to_owned(), json!({})),
        ] {
            s.send(method, &path, g, Some(&body)).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
        }

        // The token lookup other components use says it is a guest's.
        let identity = s.bus_whoami(&guest.token).await.unwrap();
        assert!(identity.is_guest);
        let alice = s.admin_register("alice", "wonderland").await;
        assert!(!s.bus_whoami(&alice.token).await.unwrap().is_guest);
        assert_eq!(s.whoami(&alice.token).await.ok().body["is_guest"], false);
    })
    .await;
}

/// `token`'s view of `user`'s membership in `room`, from the room state
/// (`None`: never a member).
async fn membership_of(s: &Server, room: &str, token: &str, user: &str) -> Option<String> {
    let state = s.get(&format!("{room}/state"), Some(token)).await.ok();
    state
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
        .map(|e| e["content"]["membership"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn guests_join_only_rooms_that_admit_them_and_leave_when_they_stop() {
    let options = || Options { guests: true, roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let a = Some(alice.token.as_str());
        let guest = s.register_guest().await;
        let g = Some(guest.token.as_str());

        // A public room forbids guests by its preset.
        let created = s.post("/_matrix/client/v3/createRoom", a, json!({"preset": "public_chat"})).await.ok();
        let room_id = created.body["room_id"].as_str().unwrap().to_owned();
        let room = format!("/_matrix/client/v3/rooms/{}", urlencode(&room_id));
        s.post(&format!("{room}/join"), g, json!({})).await.err(403, "M_FORBIDDEN");
        // Nor does a hand-made join event get around it.
        let own_member = format!("{room}/state/m.room.member/{}", urlencode(&guest.user_id));
        s.put(&own_member, g, json!({"membership": "join"})).await.err(403, "M_FORBIDDEN");
        // A room this server is not in cannot be checked: refused, not joined over federation.
        s.post("/_matrix/client/v3/rooms/%21elsewhere%3Aremote.example/join", g, json!({}))
            .await
            .err(403, "M_FORBIDDEN");
        assert_eq!(membership_of(s, &room, &alice.token, &guest.user_id).await, None);

        s.put(&format!("{room}/state/m.room.guest_access"), a, json!({"guest_access": "can_join"})).await.ok();
        s.post(&format!("{room}/join"), g, json!({})).await.ok();
        s.put(&format!("{room}/send/m.room.message/g1"), g, json!({"msgtype": "m.text", "body": "hello"})).await.ok();
        s.get(&format!("{room}/state"), g).await.ok();
        s.get(&format!("{room}/state/m.room.guest_access/"), g).await.ok();
        assert_eq!(membership_of(s, &room, &guest.token, &guest.user_id).await.as_deref(), Some("join"));

        // Guest access ends: the server makes the guest leave, and it cannot come back.
        s.put(&format!("{room}/state/m.room.guest_access"), a, json!({"guest_access": "forbidden"})).await.ok();
        let deadline = Instant::now() + Duration::from_secs(15);
        while membership_of(s, &room, &alice.token, &guest.user_id).await.as_deref() != Some("leave") {
            assert!(Instant::now() < deadline, "[{}] the guest never left", s.backend);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.put(&format!("{room}/send/m.room.message/g2"), g, json!({"body": "?"})).await.err(403, "M_FORBIDDEN");
        s.post(&format!("{room}/join"), g, json!({})).await.err(403, "M_FORBIDDEN");
        // Users are not guests: bob still joins.
        s.post(&format!("{room}/join"), Some(&bob.token), json!({})).await.ok();
        assert_eq!(membership_of(s, &room, &alice.token, &bob.user_id).await.as_deref(), Some("join"));
    })
    .await;
}

#[tokio::test]
async fn guests_upgrade_to_full_accounts() {
    let options = || Options { guests: true, open_registration: true, ..Options::default() };
    each_backend(options, async |s| {
        let path = "/_matrix/client/v3/register";
        let guest = s.register_guest().await;
        let localpart = guest.user_id.trim_start_matches('@').split(':').next().unwrap().to_owned();
        let dummy = json!({"type": "m.login.dummy"});

        // Only the guest's own localpart, and only with a guest's token.
        let body = json!({"guest_access_token": guest.token, "password": "pw", "auth": dummy});
        s.post(path, None, body).await.err(400, "M_MISSING_PARAM");
        let body =
            json!({"guest_access_token": guest.token, "username": "someoneelse", "password": "pw", "auth": dummy});
        s.post(path, None, body).await.err(403, "M_FORBIDDEN");
        let alice = s.admin_register("alice", "wonderland").await;
        let body = json!({"guest_access_token": alice.token, "username": "alice", "password": "pw", "auth": dummy});
        s.post(path, None, body).await.err(403, "M_FORBIDDEN");
        let body = json!({"guest_access_token": "made-up", "username": localpart, "password": "pw", "auth": dummy});
        s.post(path, None, body).await.err(401, "M_UNKNOWN_TOKEN");

        // The dummy stage first, as for any registration.
        let body = json!({"guest_access_token": guest.token, "username": localpart, "password": "new password"});
        let challenge = s.post(path, None, body.clone()).await;
        assert_eq!(challenge.status, StatusCode::UNAUTHORIZED, "{}", challenge.body);
        let mut body = body;
        body["auth"] = dummy.clone();
        let upgraded = Account::from_reply(&s.post(path, None, body.clone()).await.ok().body);
        assert_eq!(upgraded.user_id, guest.user_id);
        assert_eq!(upgraded.device_id, guest.device_id);
        assert_eq!(s.whoami(&upgraded.token).await.ok().body["is_guest"], false);
        s.whoami(&guest.token).await.err(401, "M_UNKNOWN_TOKEN");
        s.get("/_matrix/client/v3/account/3pid", Some(&upgraded.token)).await.ok();
        s.login(&localpart, "new password").await;
        // Once only.
        body["guest_access_token"] = Value::from(upgraded.token);
        s.post(path, None, body).await.err(403, "M_FORBIDDEN");
    })
    .await;
}

/// Guest tokens issued while guests were allowed stop working when the
/// operator turns guest access off: a second client API over the same
/// database, with guests off, refuses them even on the guest endpoints.
#[tokio::test]
async fn guest_tokens_are_refused_once_guest_access_is_off() {
    let options = || Options { guests: true, ..Options::default() };
    each_backend(options, async |s| {
        let guest = s.register_guest().await;
        let alice = s.admin_register("alice", "wonderland").await;
        s.whoami(&guest.token).await.ok();

        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::in_dir(dir.path().to_owned());
        config.global.server_name = SERVER_NAME.to_owned();
        std::fs::write(&config.global.signing_key_path, ServerSigningKey::generate_file_contents()).unwrap();
        let db = Db::connect(&s._db.url).await.unwrap();
        let bus = Bus::new(Arc::new(myelin_bus::MemoryBackend::new(8)), Arc::new(SystemClock));
        let (_trigger, shutdown) = Shutdown::new();
        let started = myelin_clientapi::service::start(Arc::new(config), db, bus, shutdown).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, started.router).await });
        let call = async |method: reqwest::Method, path: &str, token: Option<&str>| {
            let mut request = s.http.request(method, format!("{base}{path}")).json(&json!({}));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            Reply { status, body: response.json().await.unwrap(), context: format!("[{}] off: {path}", s.backend) }
        };
        let (get, post) = (reqwest::Method::GET, reqwest::Method::POST);
        let whoami = "/_matrix/client/v3/account/whoami";
        call(get.clone(), whoami, Some(&guest.token)).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
        call(get.clone(), "/_matrix/client/v3/devices", Some(&guest.token)).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
        call(post, "/_matrix/client/v3/register?kind=guest", None).await.err(403, "M_GUEST_ACCESS_FORBIDDEN");
        call(get, whoami, Some(&alice.token)).await.ok();
    })
    .await;
}

/// OpenID tokens: only for yourself; the federation API's lookup
/// (`clientapi.openid`) names their user until they expire an hour later.
#[tokio::test]
async fn openid_tokens_name_their_user_until_they_expire() {
    let clock = ManualClock::new(myelin_types::Clock::now_ms(&SystemClock));
    let options = || Options { clock: Some(clock.clone()), ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "pw").await;
        let bob = s.admin_register("bob", "pw").await;
        let path = format!("/_matrix/client/v3/user/{}/openid/request_token", alice.user_id);
        let reply = s.post(&path, Some(&alice.token), json!({})).await.ok();
        assert_eq!(reply.body["token_type"], "Bearer", "{}", reply.body);
        assert_eq!(reply.body["matrix_server_name"], SERVER_NAME);
        assert_eq!(reply.body["expires_in"], 3600);
        let token = reply.body["access_token"].as_str().unwrap().to_owned();
        // Not for another user, not without a token.
        s.post(&path, Some(&bob.token), json!({})).await.err(403, "M_FORBIDDEN");
        s.post(&path, None, json!({})).await.err(401, "M_MISSING_TOKEN");

        let lookup = async |token: &str| -> OpenIdReply {
            let request = OpenIdQuery { token_hash: myelin_types::random::token_hash(token) };
            s.bus.request_json(OPENID_QUERY_TOPIC, "k", &request, Duration::from_secs(10)).await.unwrap()
        };
        assert_eq!(lookup(&token).await.map(|u| u.to_string()), Some(alice.user_id.clone()));
        assert_eq!(lookup("not-a-token").await, None);
        // An access token is not an OpenID token.
        assert_eq!(lookup(&alice.token).await, None);
        clock.advance_ms(3_600_001);
        assert_eq!(lookup(&token).await, None, "expired");
    })
    .await;
}

/// Registration with `m.login.registration_token`: tokens an admin made,
/// counted as Synapse does (pending while a session holds one, completed
/// once it registered), refused when used up, expired or unknown.
#[tokio::test]
async fn registration_tokens_gate_registration_and_count_their_uses() {
    let clock = ManualClock::new(myelin_types::Clock::now_ms(&SystemClock));
    let options = || Options {
        open_registration: true,
        registration_requires_token: true,
        clock: Some(clock.clone()),
        ..Options::default()
    };
    each_backend(options, async |s| {
        let admin = s.admin_register_admin("root", "pw").await;
        let user = s.admin_register("mallory", "pw").await;
        let tokens = "/_synapse/admin/v1/registration_tokens";

        // Admin API: only for admins; new, get, list, update, delete.
        s.get(tokens, Some(&user.token)).await.err(403, "M_FORBIDDEN");
        s.get(tokens, None).await.err(401, "M_MISSING_TOKEN");
        let created = s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"token": "once", "uses_allowed": 1})).await.ok();
        assert_eq!(
            created.body,
            json!({"token": "once", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": null})
        );
        s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"token": "once"})).await.err(400, "M_INVALID_PARAM");
        s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"token": "bad token!"})).await.err(400, "M_INVALID_PARAM");
        s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"uses_allowed": -1})).await.err(400, "M_INVALID_PARAM");
        s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"expiry_time": 1})).await.err(400, "M_INVALID_PARAM");
        s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"length": 65})).await.err(400, "M_INVALID_PARAM");
        let generated = s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"length": 24})).await.ok();
        let generated = generated.body["token"].as_str().unwrap().to_owned();
        assert_eq!(generated.len(), 24);
        let soon = myelin_types::Clock::now_ms(&clock) as i64 + 60_000;
        s.post(&format!("{tokens}/new"), Some(&admin.token), json!({"token": "soon", "expiry_time": soon})).await.ok();
        let listed = s.get(tokens, Some(&admin.token)).await.ok();
        assert_eq!(listed.body["registration_tokens"].as_array().unwrap().len(), 3, "{}", listed.body);
        let updated =
            s.put(&format!("{tokens}/{generated}"), Some(&admin.token), json!({"uses_allowed": 0})).await.ok();
        assert_eq!(updated.body["uses_allowed"], 0);
        let valid = s.get(&format!("{tokens}?valid=true"), Some(&admin.token)).await.ok();
        assert_eq!(valid.body["registration_tokens"].as_array().unwrap().len(), 2, "{}", valid.body);
        s.delete(&format!("{tokens}/{generated}"), Some(&admin.token), json!({})).await.ok();
        s.get(&format!("{tokens}/{generated}"), Some(&admin.token)).await.err(404, "M_NOT_FOUND");
        s.put(&format!("{tokens}/nope"), Some(&admin.token), json!({})).await.err(404, "M_NOT_FOUND");

        // Validity, without authentication.
        let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
        assert_eq!(s.get(&format!("{validity}?token=once"), None).await.ok().body, json!({"valid": true}));
        assert_eq!(s.get(&format!("{validity}?token=nope"), None).await.ok().body, json!({"valid": false}));
        s.get(validity, None).await.err(400, "M_INVALID_PARAM");

        // Registering: the token stage is the flow; a wrong token is refused in a 401.
        let path = "/_matrix/client/v3/register";
        let challenge = s.post(path, None, json!({"username": "tina", "password": "pw"})).await;
        assert_eq!(challenge.status, StatusCode::UNAUTHORIZED, "{}", challenge.body);
        assert_eq!(challenge.body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
        let session = challenge.body["session"].as_str().unwrap().to_owned();
        let attempt = |token: &str, session: &str| {
            json!({"username": "tina", "password": "pw",
                   "auth": {"type": "m.login.registration_token", "token": token, "session": session}})
        };
        let wrong = s.post(path, None, attempt("nope", &session)).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
        assert_eq!(wrong.body["errcode"], "M_UNAUTHORIZED");
        s.post(path, None, json!({"username": "tina", "auth": {"type": "m.login.dummy", "session": session}}))
            .await
            .err(400, "M_UNKNOWN");
        let tina = s.post(path, None, attempt("once", &session)).await.ok();
        assert_eq!(tina.body["user_id"], format!("@tina:{SERVER_NAME}"));
        let once = s.get(&format!("{tokens}/once"), Some(&admin.token)).await.ok();
        assert_eq!((once.body["pending"].clone(), once.body["completed"].clone()), (json!(0), json!(1)));
        assert_eq!(s.get(&format!("{validity}?token=once"), None).await.ok().body, json!({"valid": false}));

        // Used up: a second registration is refused.
        let challenge = s.post(path, None, json!({"username": "tom", "password": "pw"})).await;
        let session = challenge.body["session"].as_str().unwrap().to_owned();
        let used_up = s
            .post(path, None, json!({"username": "tom", "auth": {"type": "m.login.registration_token", "token": "once", "session": session}}))
            .await;
        assert_eq!(used_up.status, StatusCode::UNAUTHORIZED, "{}", used_up.body);
        assert_eq!(used_up.body["errcode"], "M_UNAUTHORIZED");

        // Another token finishes the same session.
        let update = s.put(&format!("{tokens}/soon"), Some(&admin.token), json!({"uses_allowed": 1})).await.ok();
        assert_eq!(update.body["uses_allowed"], 1);
        let tom = s
            .post(path, None, json!({"username": "tom", "password": "pw",
                   "auth": {"type": "m.login.registration_token", "token": "soon", "session": session}}))
            .await
            .ok();
        assert_eq!(tom.body["user_id"], format!("@tom:{SERVER_NAME}"));
        let soon_row = s.get(&format!("{tokens}/soon"), Some(&admin.token)).await.ok();
        assert_eq!((soon_row.body["pending"].clone(), soon_row.body["completed"].clone()), (json!(0), json!(1)));
        assert_eq!(s.get(&format!("{validity}?token=soon"), None).await.ok().body, json!({"valid": false}));

        // Expired tokens are invalid.
        s.put(&format!("{tokens}/soon"), Some(&admin.token), json!({"uses_allowed": null})).await.ok();
        assert_eq!(s.get(&format!("{validity}?token=soon"), None).await.ok().body, json!({"valid": true}));
        clock.advance_ms(61_000);
        assert_eq!(s.get(&format!("{validity}?token=soon"), None).await.ok().body, json!({"valid": false}));
    })
    .await;
}

/// Without `registration_requires_token` the validity endpoint is refused.
#[tokio::test]
async fn registration_token_validity_needs_token_registration() {
    let options = || Options { open_registration: true, ..Options::default() };
    each_backend(options, async |s| {
        s.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=x", None)
            .await
            .err(403, "M_FORBIDDEN");
    })
    .await;
}

/// `refresh_token: true` on `/login` and `/register` gives an expiring
/// access token and a refresh token; `/refresh` rotates them (the old
/// refresh token works until the new access token is used); an expired
/// access token gets 401 `M_UNKNOWN_TOKEN` with `soft_logout`, from the
/// client API and from other components' `TokenResolver`.
#[tokio::test]
async fn refresh_tokens_rotate_and_expired_access_tokens_soft_logout() {
    let clock = ManualClock::new(myelin_types::Clock::now_ms(&SystemClock));
    let options = || Options { open_registration: true, clock: Some(clock.clone()), ..Options::default() };
    each_backend(options, async |s| {
        s.admin_register("alice", "pw").await;
        let login = |refresh: bool| {
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "pw", "refresh_token": refresh})
        };
        // Without asking, nothing expires.
        let plain = s.post("/_matrix/client/v3/login", None, login(false)).await.ok();
        assert!(
            plain.body.get("refresh_token").is_none() && plain.body.get("expires_in_ms").is_none(),
            "{}",
            plain.body
        );

        let first = s.post("/_matrix/client/v3/login", None, login(true)).await.ok();
        assert_eq!(first.body["expires_in_ms"], 300_000, "{}", first.body);
        let access1 = first.body["access_token"].as_str().unwrap().to_owned();
        let refresh1 = first.body["refresh_token"].as_str().unwrap().to_owned();
        s.whoami(&access1).await.ok();

        // Refresh: a new pair; the old access token stops working at once.
        let refreshed = s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh1})).await.ok();
        assert_eq!(refreshed.body["expires_in_ms"], 300_000);
        let access2 = refreshed.body["access_token"].as_str().unwrap().to_owned();
        let refresh2 = refreshed.body["refresh_token"].as_str().unwrap().to_owned();
        s.whoami(&access1).await.err(401, "M_UNKNOWN_TOKEN");
        // Until the new access token is used, the old refresh token may be retried.
        let retried = s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh1})).await.ok();
        let access3 = retried.body["access_token"].as_str().unwrap().to_owned();
        let refresh3 = retried.body["refresh_token"].as_str().unwrap().to_owned();
        s.whoami(&access2).await.err(401, "M_UNKNOWN_TOKEN");
        s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh2}))
            .await
            .err(401, "M_UNKNOWN_TOKEN");
        let me = s.whoami(&access3).await.ok();
        assert_eq!(me.body["user_id"], format!("@alice:{SERVER_NAME}"));
        // Used: the refreshed token is retired.
        let gone = s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh1})).await;
        assert_eq!(gone.status.as_u16(), 401, "{}", gone.body);
        assert_eq!(
            (gone.body["errcode"].clone(), gone.body["soft_logout"].clone()),
            (json!("M_UNKNOWN_TOKEN"), json!(true))
        );
        s.post("/_matrix/client/v3/refresh", None, json!({})).await.err(400, "M_BAD_JSON");

        // Expiry: soft logout here and through the token lookup other components use.
        let resolver = myelin_clientapi::api::TokenResolver::new(s.bus.clone());
        let parts = |token: &str| {
            axum::http::Request::builder()
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert!(resolver.authenticate(&parts(&access3)).await.is_ok());
        assert!(resolver.authenticate(&parts(plain.body["access_token"].as_str().unwrap())).await.is_ok());
        clock.advance_ms(300_001);
        let expired = s.whoami(&access3).await.err(401, "M_UNKNOWN_TOKEN");
        assert_eq!(expired.body["soft_logout"], true, "{}", expired.body);
        match resolver.authenticate(&parts(&access3)).await {
            Err(myelin_clientapi::api::ResolveError::Matrix(e)) => assert!(e.soft_logout, "{e:?}"),
            other => panic!("expired token accepted: {other:?}"),
        }
        s.whoami(plain.body["access_token"].as_str().unwrap()).await.ok();
        // The refresh token still works after expiry, and logout ends it.
        let again = s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh3})).await.ok();
        let access4 = again.body["access_token"].as_str().unwrap().to_owned();
        let refresh4 = again.body["refresh_token"].as_str().unwrap().to_owned();
        s.post("/_matrix/client/v3/logout", Some(&access4), json!({})).await.ok();
        s.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh4}))
            .await
            .err(401, "M_UNKNOWN_TOKEN");

        // Registration hands out refresh tokens too.
        let registered = s
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": "rita", "password": "pw", "refresh_token": true,
                  "auth": {"type": "m.login.dummy"}}),
            )
            .await
            .ok();
        assert!(registered.body["refresh_token"].is_string(), "{}", registered.body);
        assert_eq!(registered.body["expires_in_ms"], 300_000);
    })
    .await;
}

/// A space with public children (one suggested, one with a child of its
/// own), a private child and a restricted one, walked by a user who is in
/// none of them.
#[tokio::test]
async fn the_space_hierarchy_shows_what_the_user_may_see_page_by_page() {
    let options = || Options { roomserver: true, ..Options::default() };
    each_backend(options, async |s| {
        let alice = s.admin_register("alice", "wonderland").await;
        let bob = s.admin_register("bob", "builder").await;
        let (a, b) = (Some(alice.token.as_str()), Some(bob.token.as_str()));
        let create = async |body: Value| {
            let reply = s.post("/_matrix/client/v3/createRoom", a, body).await.ok();
            reply.body["room_id"].as_str().unwrap().to_owned()
        };
        let space =
            create(json!({"preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}})).await;
        let lobby = create(json!({"preset": "public_chat", "name": "Lobby", "topic": "Hello"})).await;
        let sub =
            create(json!({"preset": "public_chat", "name": "Sub", "creation_content": {"type": "m.space"}})).await;
        let deep = create(json!({"preset": "public_chat", "name": "Deep"})).await;
        let secret = create(json!({"preset": "private_chat", "name": "Secret"})).await;
        let club = create(json!({"preset": "private_chat", "name": "Club", "initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": lobby}]},
        }]}))
        .await;
        let add_child = async |parent: &str, child: &str, content: Value| {
            let path = format!("/_matrix/client/v3/rooms/{parent}/state/m.space.child/{child}");
            s.put(&path, a, content).await.ok();
        };
        add_child(&space, &secret, json!({"via": [SERVER_NAME], "order": "0"})).await;
        add_child(&space, &lobby, json!({"via": [SERVER_NAME], "order": "a", "suggested": true})).await;
        add_child(&space, &sub, json!({"via": [SERVER_NAME], "order": "b"})).await;
        add_child(&space, &club, json!({"via": [SERVER_NAME], "order": "d"})).await;
        // No `via`: not a child.
        add_child(&space, &deep, json!({})).await;
        add_child(&sub, &deep, json!({"via": [SERVER_NAME]})).await;

        let path = |query: &str| format!("/_matrix/client/v1/rooms/{space}/hierarchy{query}");
        let ids = |body: &Value| -> Vec<String> {
            body["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
        };

        // Bob sees the open rooms, depth first in the children's order.
        let all = s.get(&path(""), b).await.ok().body;
        assert_eq!(ids(&all), [space.as_str(), lobby.as_str(), sub.as_str(), deep.as_str()], "{all}");
        assert!(all.get("next_batch").is_none(), "{all}");
        let root = &all["rooms"][0];
        assert_eq!(root["room_type"], "m.space");
        assert_eq!(root["children_state"].as_array().unwrap().len(), 4, "{root}");
        assert!(root["children_state"].as_array().unwrap().iter().all(|e| e["type"] == "m.space.child"
            && e["origin_server_ts"].is_i64()
            && e["sender"] == alice.user_id.as_str()));
        let lobby_entry = &all["rooms"][1];
        for (key, value) in [
            ("name", json!("Lobby")),
            ("topic", json!("Hello")),
            ("num_joined_members", json!(1)),
            ("join_rule", json!("public")),
            ("world_readable", json!(false)),
            ("guest_can_join", json!(false)),
        ] {
            assert_eq!(lobby_entry[key], value, "{key}: {lobby_entry}");
        }
        // Alice is in every room.
        let mine = s.get(&path(""), a).await.ok().body;
        assert_eq!(
            ids(&mine),
            [space.as_str(), secret.as_str(), lobby.as_str(), sub.as_str(), deep.as_str(), club.as_str()],
            "{mine}"
        );

        // Suggested rooms only; depth.
        assert_eq!(ids(&s.get(&path("?suggested_only=true"), b).await.ok().body), [space.as_str(), lobby.as_str()]);
        assert_eq!(
            ids(&s.get(&path("?max_depth=1"), b).await.ok().body),
            [space.as_str(), lobby.as_str(), sub.as_str()]
        );
        assert_eq!(ids(&s.get(&path("?max_depth=0"), b).await.ok().body), [space.as_str()]);

        // Pages of two.
        let first = s.get(&path("?limit=2"), b).await.ok().body;
        assert_eq!(ids(&first), [space.as_str(), lobby.as_str()]);
        let next = first["next_batch"].as_str().unwrap().to_owned();
        let second = s.get(&path(&format!("?limit=2&from={next}")), b).await.ok().body;
        assert_eq!(ids(&second), [sub.as_str(), deep.as_str()], "{second}");
        assert!(second.get("next_batch").is_none(), "{second}");

        // A restricted room shows once bob is in a room it allows.
        s.post(&format!("/_matrix/client/v3/rooms/{lobby}/join"), b, json!({})).await.ok();
        assert_eq!(
            ids(&s.get(&path(""), b).await.ok().body),
            [space.as_str(), lobby.as_str(), sub.as_str(), deep.as_str(), club.as_str()]
        );

        // Refusals.
        for query in [
            format!("?suggested_only=true&from={next}"),
            format!("?max_depth=3&from={next}"),
            "?from=bogus".to_owned(),
            "?limit=0".to_owned(),
            "?limit=many".to_owned(),
            "?max_depth=-1".to_owned(),
        ] {
            s.get(&path(&query), b).await.err(400, "M_INVALID_PARAM");
        }
        s.get(&format!("/_matrix/client/v1/rooms/{secret}/hierarchy"), b).await.err(403, "M_FORBIDDEN");
        let unknown = format!("/_matrix/client/v1/rooms/!unknown:{SERVER_NAME}/hierarchy");
        s.get(&unknown, b).await.err(403, "M_FORBIDDEN");
        s.get("/_matrix/client/v1/rooms/not-a-room/hierarchy", b).await.err(400, "M_INVALID_PARAM");
        s.get(&path(""), None).await.err(401, "M_MISSING_TOKEN");
    })
    .await;
}

const AS_TOKEN: &str = "irc-as-token";
const HS_TOKEN: &str = "irc-hs-token";

/// An IRC bridge's registration: users `@_irc_…` and `@irc-…`, and
/// aliases `#_irc_…`, exclusively, sending to `url`.
fn irc_registration(url: &str) -> String {
    format!(
        r##"
id: irc
url: {url}
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: _irc_bot
rate_limited: false
namespaces:
  users: [{{exclusive: true, regex: "@_irc_.*"}}, {{exclusive: true, regex: "@irc-.*"}}]
  aliases: [{{exclusive: true, regex: "#_irc_.*"}}]
"##
    )
}

/// Registrations that fail differently when pinged: no URL, and a URL
/// nothing listens on.
fn unreachable_registrations(closed_port: u16) -> [String; 2] {
    [
        "id: nourl\nurl: null\nas_token: nourl-as\nhs_token: nourl-hs\nsender_localpart: nourl_bot\n".to_owned(),
        format!(
            "id: dead\nurl: http://127.0.0.1:{closed_port}\nas_token: dead-as\nhs_token: dead-hs\nsender_localpart: dead_bot\n"
        ),
    ]
}

/// Application services register users of their namespaces without any
/// stage (registration being closed), log in as them, and act as them or
/// their sender with `user_id` and `device_id`; nobody else may register
/// in an exclusive namespace.
#[tokio::test]
async fn application_services_register_log_in_and_act_as_their_users() {
    let options = || Options {
        open_registration: true,
        app_services: vec![irc_registration("http://127.0.0.1:9")],
        ..Options::default()
    };
    each_backend(options, async |s| {
        let register = "/_matrix/client/v3/register";
        let irc = Some(AS_TOKEN);
        let ghost = json!({"type": "m.login.application_service", "username": "_irc_alice", "inhibit_login": true});
        s.post(register, None, ghost.clone()).await.err(401, "M_MISSING_TOKEN");
        s.post(register, Some("not-a-token"), ghost.clone()).await.err(401, "M_UNKNOWN_TOKEN");
        let outside = json!({"type": "m.login.application_service", "username": "bob"});
        s.post(register, irc, outside).await.err(400, "M_EXCLUSIVE");
        let nameless = json!({"type": "m.login.application_service"});
        s.post(register, irc, nameless).await.err(400, "M_MISSING_PARAM");
        let registered = s.post(register, irc, ghost.clone()).await.ok();
        assert_eq!(registered.body["user_id"], format!("@_irc_alice:{SERVER_NAME}"));
        assert!(registered.body.get("access_token").is_none(), "inhibit_login: {}", registered.body);
        s.post(register, irc, ghost).await.err(400, "M_USER_IN_USE");

        // Others may not take the exclusive namespace, even with open
        // registration (and `_` starts only application services' users).
        let human = |name: &str| json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}});
        s.post(register, None, human("irc-mallory")).await.err(400, "M_EXCLUSIVE");
        s.post(register, None, human("_irc_mallory")).await.err(400, "M_INVALID_USERNAME");
        s.get("/_matrix/client/v3/register/available?username=irc-mallory", None).await.err(400, "M_EXCLUSIVE");
        let dashed = json!({"type": "m.login.application_service", "username": "irc-dave", "inhibit_login": true});
        s.post(register, irc, dashed).await.ok();
        s.get("/_matrix/client/v3/register/available?username=mallory", None).await.ok();

        // Identity assertion.
        let whoami = |query: &str| format!("/_matrix/client/v3/account/whoami{query}");
        let sender = s.get(&whoami(""), irc).await.ok();
        assert_eq!(sender.body, json!({"user_id": format!("@_irc_bot:{SERVER_NAME}"), "is_guest": false}));
        let alice_id = format!("@_irc_alice:{SERVER_NAME}");
        let as_alice = s.get(&whoami(&format!("?user_id={}", urlencode(&alice_id))), irc).await.ok();
        assert_eq!(as_alice.body["user_id"], alice_id);
        let bob = s.admin_register("bob", "builder").await;
        s.get(&whoami(&format!("?user_id={}", urlencode(&bob.user_id))), irc).await.err(403, "M_FORBIDDEN");
        let unregistered = format!("?user_id={}", urlencode(&format!("@_irc_nobody:{SERVER_NAME}")));
        s.get(&whoami(&unregistered), irc).await.err(403, "M_FORBIDDEN");
        s.get(&whoami("?user_id=not-a-user"), irc).await.err(400, "M_INVALID_PARAM");
        let no_device = format!("?user_id={}&device_id=NOPE", urlencode(&alice_id));
        s.get(&whoami(&no_device), irc).await.err(400, "M_UNKNOWN_DEVICE");
        // A user's own token ignores the assertion.
        let bob_as_alice = s.get(&whoami(&format!("?user_id={}", urlencode(&alice_id))), Some(&bob.token)).await.ok();
        assert_eq!(bob_as_alice.body["user_id"], bob.user_id);
        // Without a device, what needs one fails.
        let keys = json!({"one_time_keys": {"signed_curve25519:AAAA": {"key": "k"}}});
        s.post("/_matrix/client/v3/keys/upload", irc, keys).await.err(400, "M_MISSING_PARAM");

        // Logging in as a namespace user, then acting with that device.
        let flows = s.get("/_matrix/client/v3/login", None).await.ok();
        assert!(flows.body["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.application_service"));
        let login = |user: &str| {
            json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": user}})
        };
        s.post("/_matrix/client/v3/login", None, login("_irc_alice")).await.err(401, "M_MISSING_TOKEN");
        s.post("/_matrix/client/v3/login", Some(&bob.token), login("_irc_alice")).await.err(401, "M_UNKNOWN_TOKEN");
        s.post("/_matrix/client/v3/login", irc, login("bob")).await.err(400, "M_EXCLUSIVE");
        s.post("/_matrix/client/v3/login", irc, login("_irc_ghost")).await.err(403, "M_FORBIDDEN");
        let session = s.post("/_matrix/client/v3/login", irc, login(&alice_id)).await.ok();
        let alice = Account::from_reply(&session.body);
        assert_eq!(alice.user_id, alice_id);
        let with_device = format!("?user_id={}&device_id={}", urlencode(&alice_id), alice.device_id);
        let asserted = s.get(&whoami(&with_device), irc).await.ok();
        assert_eq!(asserted.body["device_id"], alice.device_id);
        assert_eq!(s.whoami(&alice.token).await.ok().body["user_id"], alice_id);

        // Other components ask the client API, and get the same answers.
        let identity = s.bus_whoami_as(AS_TOKEN, Some(&alice_id)).await.unwrap();
        assert_eq!((identity.user_id.as_str(), identity.app_service.as_deref()), (alice_id.as_str(), Some("irc")));
        assert_eq!(identity.device_id, "");
        let refused = s.bus_whoami_as(AS_TOKEN, Some(&bob.user_id)).await.unwrap_err();
        assert_eq!(refused.errcode, ErrorCode::Forbidden);
        assert_eq!(s.bus_whoami_as(&bob.token, Some(&alice_id)).await.unwrap().user_id.as_str(), bob.user_id);
    })
    .await;
}

/// What the stand-in application service saw: ping bodies, and the aliases
/// it was asked about; and the homeserver it creates rooms on.
#[derive(Default)]
struct StandIn {
    pings: std::sync::Mutex<Vec<Value>>,
    alias_queries: std::sync::Mutex<Vec<String>>,
    user_queries: std::sync::Mutex<Vec<String>>,
    homeserver: std::sync::Mutex<String>,
}

/// What the stand-in answers a query with, after `POST`ing `body` to the
/// homeserver's `path` with its `as_token`: 200 when that succeeded.
async fn as_the_service(homeserver: &std::sync::Mutex<String>, path: &str, body: Value) -> axum::http::StatusCode {
    let homeserver = homeserver.lock().unwrap().clone();
    let sent =
        reqwest::Client::new().post(format!("{homeserver}{path}")).bearer_auth(AS_TOKEN).json(&body).send().await;
    match sent {
        Ok(response) if response.status().is_success() => axum::http::StatusCode::OK,
        _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An application service: it answers pings (refusing a wrong `hs_token`,
/// or the transaction id `refuse`), a query for an alias `#_irc_auto…` by
/// creating a room with that alias as its sender, and a query for a user
/// `@_irc_auto…` by registering that user, before answering 200; other
/// aliases and users it declines (404).
async fn application_service_stand_in() -> (String, Arc<StandIn>) {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    let seen: Arc<StandIn> = Arc::default();
    let authorised = |headers: &HeaderMap| {
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(format!("Bearer {HS_TOKEN}").as_str())
    };
    let pinged = seen.clone();
    let queried = seen.clone();
    let users_queried = seen.clone();
    let app = axum::Router::new()
        .route(
            "/_matrix/app/v1/ping",
            axum::routing::post(move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                pinged.pings.lock().unwrap().push(body.clone());
                if !authorised(&headers) || body["transaction_id"] == "refuse" {
                    let error = json!({"errcode": "M_FORBIDDEN", "error": "refused"});
                    return (StatusCode::FORBIDDEN, axum::Json(error));
                }
                (StatusCode::OK, axum::Json(json!({})))
            }),
        )
        .route(
            "/_matrix/app/v1/rooms/{alias}",
            axum::routing::get(move |headers: HeaderMap, Path(alias): Path<String>| async move {
                queried.alias_queries.lock().unwrap().push(alias.clone());
                let Some(name) = alias.strip_prefix('#').and_then(|a| a.split(':').next()) else {
                    return StatusCode::BAD_REQUEST;
                };
                if !authorised(&headers) || !name.starts_with("_irc_auto") {
                    return StatusCode::NOT_FOUND;
                }
                let body = json!({"preset": "public_chat", "room_alias_name": name});
                as_the_service(&queried.homeserver, "/_matrix/client/v3/createRoom", body).await
            }),
        )
        .route(
            "/_matrix/app/v1/users/{user_id}",
            axum::routing::get(move |headers: HeaderMap, Path(user_id): Path<String>| async move {
                users_queried.user_queries.lock().unwrap().push(user_id.clone());
                let Some(localpart) = user_id.strip_prefix('@').and_then(|u| u.split(':').next()) else {
                    return StatusCode::BAD_REQUEST;
                };
                if !authorised(&headers) || !localpart.starts_with("_irc_auto") {
                    return StatusCode::NOT_FOUND;
                }
                let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
                as_the_service(&users_queried.homeserver, "/_matrix/client/v3/register", body).await
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// Aliases in an exclusive namespace belong to its application service,
/// which may create and delete them; a service may create none outside its
/// namespaces, and is asked to create those of its namespaces that are
/// looked up and missing. Pings reach the service with its `hs_token`.
#[tokio::test]
async fn application_service_aliases_and_pings() {
    let (url, stand_in) = application_service_stand_in().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let options = || {
        let [no_url, dead] = unreachable_registrations(closed);
        Options { roomserver: true, app_services: vec![irc_registration(&url), no_url, dead], ..Options::default() }
    };
    each_backend(options, async |s| {
        let irc = Some(AS_TOKEN);
        let bob = s.admin_register("bob", "builder").await;
        let b = Some(bob.token.as_str());
        let dir = |alias: &str| format!("/_matrix/client/v3/directory/room/{}", urlencode(alias));
        let irc_chan = format!("#_irc_chan:{SERVER_NAME}");

        // The sender creates a room and names it in its namespace.
        let created = s.post("/_matrix/client/v3/createRoom", irc, json!({"preset": "public_chat"})).await.ok();
        let room_id = created.body["room_id"].as_str().unwrap().to_owned();
        s.post(&format!("/_matrix/client/v3/join/{}", urlencode(&room_id)), b, json!({})).await.ok();
        s.put(&dir(&irc_chan), b, json!({"room_id": room_id})).await.err(400, "M_EXCLUSIVE");
        let bobs_room = json!({"room_alias_name": "_irc_mine"});
        s.post("/_matrix/client/v3/createRoom", b, bobs_room).await.err(400, "M_EXCLUSIVE");
        s.put(&dir(&format!("#plain:{SERVER_NAME}")), irc, json!({"room_id": room_id})).await.err(400, "M_EXCLUSIVE");
        s.put(&dir(&irc_chan), irc, json!({"room_id": room_id})).await.ok();
        assert_eq!(s.get(&dir(&irc_chan), None).await.ok().body["room_id"], room_id);
        s.send(reqwest::Method::DELETE, &dir(&irc_chan), b, None).await.err(400, "M_EXCLUSIVE");
        s.send(reqwest::Method::DELETE, &dir(&irc_chan), irc, None).await.ok();
        s.get(&dir(&irc_chan), None).await.err(404, "M_NOT_FOUND");
        assert!(stand_in.alias_queries.lock().unwrap().contains(&irc_chan), "a missing alias is asked of its service");

        // The service creates a missing alias of its namespace when asked;
        // one outside every namespace is not asked about.
        *stand_in.homeserver.lock().unwrap() = s.base.clone();
        let auto = format!("#_irc_auto{}:{SERVER_NAME}", s.backend);
        let found = s.get(&dir(&auto), None).await.ok();
        let joined = s.post(&format!("/_matrix/client/v3/join/{}", urlencode(&auto)), b, json!({})).await.ok();
        assert_eq!(joined.body["room_id"], found.body["room_id"]);
        let plain = format!("#nobody:{SERVER_NAME}");
        s.get(&dir(&plain), None).await.err(404, "M_NOT_FOUND");
        assert!(!stand_in.alias_queries.lock().unwrap().contains(&plain));
        // Other servers' `/query/directory` (through the bus) gets the same.
        let ask = |alias: String| async move {
            let query = AliasQuery { alias };
            let reply: AliasReply =
                s.bus.request_json(ALIAS_QUERY_TOPIC, &query.alias, &query, Duration::from_secs(10)).await.unwrap();
            reply
        };
        let remote_auto = format!("#_irc_autofed{}:{SERVER_NAME}", s.backend);
        let room = ask(remote_auto.clone()).await.expect("the service created it");
        assert_eq!(s.get(&dir(&remote_auto), None).await.ok().body["room_id"], room.as_str());
        assert_eq!(ask(format!("#_irc_declined:{SERVER_NAME}")).await, None);

        // Inviting a missing user of the namespace asks the service, which
        // registers them; a missing user outside every namespace is not
        // asked about, and is invited all the same.
        let newbie = format!("@_irc_autonewbie:{SERVER_NAME}");
        let invite = format!("/_matrix/client/v3/rooms/{}/invite", urlencode(&room_id));
        s.post(&invite, irc, json!({"user_id": newbie})).await.ok();
        let as_newbie = format!("/_matrix/client/v3/account/whoami?user_id={}", urlencode(&newbie));
        assert_eq!(s.get(&as_newbie, irc).await.ok().body["user_id"], newbie);
        let stranger = format!("@stranger:{SERVER_NAME}");
        s.post(&invite, irc, json!({"user_id": stranger})).await.ok();
        let asked = stand_in.user_queries.lock().unwrap().clone();
        assert!(asked.contains(&newbie) && !asked.contains(&stranger), "{asked:?}");

        // Timestamp massaging: the service's `ts` becomes the event's; a
        // user's is ignored; what no event may hold is refused.
        let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", urlencode(&room_id));
        s.put(&format!("{topic}?ts=1600000000000"), irc, json!({"topic": "then"})).await.ok();
        let event = s.get(&format!("{topic}?format=event"), irc).await.ok();
        assert_eq!(event.body["origin_server_ts"], 1_600_000_000_000_u64, "{}", event.body);
        let name = format!("/_matrix/client/v3/rooms/{}/state/m.room.name", urlencode(&room_id));
        s.put(&format!("{name}?ts=1600000000000"), irc, json!({"name": "n"})).await.ok();
        let event = s.get(&format!("{name}?format=event"), irc).await.ok();
        assert_eq!(event.body["origin_server_ts"], 1_600_000_000_000_u64, "{}", event.body);
        s.put(&format!("{topic}?ts=9007199254740992"), irc, json!({"topic": "never"}))
            .await
            .err(400, "M_INVALID_PARAM");
        s.put(&format!("{topic}?ts=soon"), irc, json!({"topic": "never"})).await.err(400, "M_INVALID_PARAM");
        let bobs_member =
            format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", urlencode(&room_id), urlencode(&bob.user_id));
        s.put(&format!("{bobs_member}?ts=1000"), b, json!({"membership": "join", "displayname": "Bob"})).await.ok();
        let event = s.get(&format!("{bobs_member}?format=event"), b).await.ok();
        assert!(event.body["origin_server_ts"].as_u64().unwrap() > 1_600_000_000_000, "{}", event.body);

        // Pings.
        let ping = |id: &str| format!("/_matrix/client/v1/appservice/{id}/ping");
        let pong = s.post(&ping("irc"), irc, json!({"transaction_id": "meow"})).await.ok();
        assert!(pong.body["duration_ms"].is_u64(), "{}", pong.body);
        assert!(stand_in.pings.lock().unwrap().contains(&json!({"transaction_id": "meow"})));
        let refused = s.post(&ping("irc"), irc, json!({"transaction_id": "refuse"})).await;
        assert_eq!(refused.status.as_u16(), 502, "{}", refused.body);
        assert_eq!(refused.body["errcode"], "M_BAD_STATUS");
        assert_eq!(refused.body["status"], 403);
        assert!(refused.body["body"].as_str().unwrap().contains("M_FORBIDDEN"), "{}", refused.body);
        s.post(&ping("irc"), b, json!({})).await.err(403, "M_FORBIDDEN");
        s.post(&ping("nourl"), irc, json!({})).await.err(403, "M_FORBIDDEN");
        s.post(&ping("nourl"), Some("nourl-as"), json!({})).await.err(400, "M_URL_NOT_SET");
        s.post(&ping("dead"), Some("dead-as"), json!({})).await.err(502, "M_CONNECTION_FAILED");
        s.post(&ping("irc"), None, json!({})).await.err(401, "M_MISSING_TOKEN");
    })
    .await;
}
