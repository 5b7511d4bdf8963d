//! The pusher over a real embedded bus on SQLite and PostgreSQL, with the
//! real room server, client API (accounts through shared-secret
//! registration, logins, logouts, token lookups, rooms, receipts) and sync
//! API (which serves the `m.push_rules` account data and the counts the
//! pusher publishes), all served on one loopback port and driven over
//! HTTP, and a recording push gateway on another loopback port.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use hmac::{Hmac, KeyInit, Mac};
use myelin_bus::{Bus, EmbeddedBackend, Shutdown, ShutdownTrigger};
use myelin_config::PushContent;
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::SystemClock;
use myelin_types::signing::ServerSigningKey;
use reqwest::Method;
use serde_json::{Value, json};
use sha1::Sha1;

const WAIT: Duration = Duration::from_secs(30);
const SHARED_SECRET: &str = "test shared secret";
const PASSWORD: &str = "correct horse battery staple";
const GATEWAY: &str = "https://push.example.org/_matrix/push/v1/notify";

/// A push gateway that records every notification it accepts. Pushkeys in
/// `fail_once` are answered 500 the first time, those in `reject` are
/// reported back as rejected.
#[derive(Default)]
struct Gateway {
    delivered: Mutex<Vec<Value>>,
    attempts: AtomicU64,
    fail_once: Mutex<HashSet<String>>,
    reject: Mutex<HashSet<String>>,
}

async fn notify(State(gateway): State<Arc<Gateway>>, axum::Json(body): axum::Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    gateway.attempts.fetch_add(1, Ordering::SeqCst);
    let pushkey = body["notification"]["devices"][0]["pushkey"].as_str().unwrap_or_default().to_owned();
    if gateway.fail_once.lock().unwrap().remove(&pushkey) {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response();
    }
    gateway.delivered.lock().unwrap().push(body);
    let rejected: Vec<String> = gateway.reject.lock().unwrap().get(&pushkey).cloned().into_iter().collect();
    axum::Json(json!({ "rejected": rejected })).into_response()
}

impl Gateway {
    /// Notifications delivered to `pushkey`, oldest first.
    fn to(&self, pushkey: &str) -> Vec<Value> {
        let delivered = self.delivered.lock().unwrap();
        delivered.iter().filter(|b| b["notification"]["devices"][0]["pushkey"] == pushkey).cloned().collect()
    }

    /// Event ids delivered to `pushkey`, oldest first.
    fn events_to(&self, pushkey: &str) -> Vec<String> {
        self.to(pushkey).iter().map(|b| b["notification"]["event_id"].as_str().unwrap_or("").to_owned()).collect()
    }

    /// The `n`th notification (from 0) delivered to `pushkey`, once delivered.
    async fn nth(&self, pushkey: &str, n: usize) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(body) = self.to(pushkey).into_iter().nth(n) {
                return body;
            }
            assert!(Instant::now() < deadline, "push {n} never reached {pushkey}: {:?}", self.to(pushkey));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The notification of `event_id` to `pushkey`, once delivered.
    async fn wait_for(&self, pushkey: &str, event_id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.to(pushkey).into_iter().find(|b| b["notification"]["event_id"] == event_id);
            if let Some(body) = found {
                return body;
            }
            assert!(Instant::now() < deadline, "{event_id} never pushed to {pushkey}: {:?}", self.events_to(pushkey));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Server {
    name: &'static str,
    base: String,
    http: reqwest::Client,
    gateway: Arc<Gateway>,
    gateway_url: String,
    bus: Bus,
    txn: AtomicU64,
    _trigger: ShutdownTrigger,
    _db: TestDb,
    _keys: tempfile::TempDir,
}

async fn servers() -> Vec<Server> {
    servers_with(PushContent::Full).await
}

async fn servers_with(content: PushContent) -> Vec<Server> {
    let mut out = Vec::new();
    for db in TestDb::both().await {
        out.push(Server::start(db, content, true).await);
    }
    out
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

impl Server {
    async fn start(test_db: TestDb, content: PushContent, allow_private_gateways: bool) -> Self {
        // Delivery warnings in the output of a failing test.
        myelin_testkit::capture_logs("myelin_pusher=debug,info");
        let db = Db::connect(&test_db.url).await.unwrap();
        let backend = EmbeddedBackend::open(db.clone(), 8).await.unwrap();
        let bus = Bus::new(Arc::new(backend), Arc::new(SystemClock));
        let (trigger, shutdown) = Shutdown::new();
        let mut config = myelin_config::Config::default();
        config.global.server_name = "localhost".to_owned();
        config.client_api.registration_shared_secret = Some(SHARED_SECRET.to_owned());
        config.client_api.allow_guest_access = true;
        config.pusher.content = content;
        config.pusher.allow_private_gateways = allow_private_gateways;
        let keys = tempfile::tempdir().unwrap();
        config.global.signing_key_path = keys.path().join("signing.key");
        std::fs::write(&config.global.signing_key_path, ServerSigningKey::generate_file_contents()).unwrap();
        let config = Arc::new(config);
        myelin_roomserver::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let clientapi =
            myelin_clientapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let syncapi =
            myelin_syncapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let pusher = myelin_pusher::service::start(config, db, bus.clone(), shutdown).await.unwrap();
        let base = serve(clientapi.router.merge(syncapi.router).merge(pusher.router)).await;
        let gateway = Arc::new(Gateway::default());
        let recorder = axum::Router::new()
            .route("/_matrix/push/v1/notify", axum::routing::post(notify))
            .with_state(gateway.clone());
        let gateway_url = format!("{}/_matrix/push/v1/notify", serve(recorder).await);
        Self {
            name: test_db.name,
            base,
            http: reqwest::Client::new(),
            gateway,
            gateway_url,
            bus,
            txn: AtomicU64::new(0),
            _trigger: trigger,
            _db: test_db,
            _keys: keys,
        }
    }

    /// Register `localpart` through the shared-secret endpoint; its access token.
    async fn register(&self, localpart: &str) -> String {
        self.register_as(localpart, false).await
    }

    /// Register through the shared-secret API, as a server admin if `admin`.
    async fn register_as(&self, localpart: &str, admin: bool) -> String {
        let url = format!("{}/_synapse/admin/v1/register", self.base);
        let nonce: Value = self.http.get(&url).send().await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap().to_owned();
        let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).unwrap();
        let kind = if admin { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{localpart}\0{PASSWORD}\0{kind}").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body = json!({"nonce": nonce, "username": localpart, "password": PASSWORD, "admin": admin, "mac": mac});
        let response = self.http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "[{}] registering {localpart}", self.name);
        let reply: Value = response.json().await.unwrap();
        reply["access_token"].as_str().unwrap().to_owned()
    }

    /// Log `localpart` in on another device; its access token.
    async fn login(&self, localpart: &str, device_id: &str) -> String {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD, "device_id": device_id});
        let (status, reply) = self.call(Method::POST, "/login", None, Some(&body.to_string())).await;
        assert_eq!(status, 200, "[{}] login {localpart}: {reply}", self.name);
        reply["access_token"].as_str().unwrap().to_owned()
    }

    /// A request under `/_matrix/client/v3` with a raw body; status and JSON body.
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}/_matrix/client/v3{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A request that must succeed; its body.
    async fn ok(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let text = body.map(|b| b.to_string());
        let (status, reply) = self.call(method, path, Some(token), text.as_deref()).await;
        assert_eq!(status, 200, "[{}] {path}: {reply}", self.name);
        reply
    }

    /// A request that must fail with `status` and `errcode`.
    async fn fails(&self, method: Method, path: &str, token: Option<&str>, body: &str, status: u16, errcode: &str) {
        let body = (!body.is_empty()).then_some(body);
        let (got, reply) = self.call(method.clone(), path, token, body).await;
        assert_eq!(
            (got, reply["errcode"].as_str()),
            (status, Some(errcode)),
            "[{}] {method} {path}: {reply}",
            self.name
        );
    }

    /// The `m.push_rules` content `/sync` serves, once `done` holds for it.
    async fn synced_rules(&self, token: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let body = self.ok(Method::GET, "/sync", token, None).await;
            let events = body["account_data"]["events"].as_array().cloned().unwrap_or_default();
            if let Some(rules) = events.iter().find(|e| e["type"] == "m.push_rules")
                && done(&rules["content"])
            {
                return rules["content"].clone();
            }
            assert!(Instant::now() < deadline, "[{}] /sync never showed the expected push rules: {body}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pushers(&self, token: &str) -> Vec<Value> {
        self.ok(Method::GET, "/pushers", token, None).await["pushers"].as_array().unwrap().clone()
    }

    /// `/pushers` until `done` holds for the list.
    async fn pushers_until(&self, token: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let pushers = self.pushers(token).await;
            if done(&pushers) {
                return pushers;
            }
            assert!(Instant::now() < deadline, "[{}] pushers never got there: {pushers:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Server {
    async fn create_room(&self, token: &str, body: Value) -> String {
        let created = self.ok(Method::POST, "/createRoom", token, Some(body)).await;
        created["room_id"].as_str().unwrap().to_owned()
    }

    async fn join(&self, token: &str, room: &str) {
        self.ok(Method::POST, &format!("/join/{room}"), token, Some(json!({}))).await;
    }

    /// Send a message event with `content`; its event id.
    async fn send(&self, token: &str, room: &str, content: Value) -> String {
        self.send_event(token, room, "m.room.message", content).await
    }

    async fn send_event(&self, token: &str, room: &str, event_type: &str, content: Value) -> String {
        let txn = self.txn.fetch_add(1, Ordering::SeqCst);
        let path = format!("/rooms/{room}/send/{event_type}/t{txn}");
        self.ok(Method::PUT, &path, token, Some(content)).await["event_id"].as_str().unwrap().to_owned()
    }

    /// An http pusher at the recording gateway, keyed `pushkey`.
    async fn gateway_pusher(&self, token: &str, pushkey: &str, format: Option<&str>) {
        self.pusher_at(token, pushkey, &self.gateway_url, format).await;
    }

    async fn pusher_at(&self, token: &str, pushkey: &str, url: &str, format: Option<&str>) {
        let mut body = http_pusher(pushkey, "App");
        body["data"] = json!({ "url": url, "extra": "kept" });
        if let Some(format) = format {
            body["data"]["format"] = json!(format);
        }
        self.ok(Method::POST, "/pushers/set", token, Some(body)).await;
    }

    /// `unread_notifications` of a joined room in an initial `/sync`, once `done` holds for it.
    async fn counts_until(&self, token: &str, room: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let body = self.ok(Method::GET, "/sync", token, None).await;
            let counts = &body["rooms"]["join"][room]["unread_notifications"];
            if done(counts) {
                return counts.clone();
            }
            assert!(Instant::now() < deadline, "[{}] counts never got there: {counts}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

fn keys(object: &Value) -> Vec<String> {
    let mut keys: Vec<String> = object.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

fn ids(rules: &Value) -> Vec<String> {
    rules.as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap().to_owned()).collect()
}

fn rule<'a>(rules: &'a Value, id: &str) -> &'a Value {
    rules.as_array().unwrap().iter().find(|r| r["rule_id"] == id).unwrap_or_else(|| panic!("no rule {id}: {rules}"))
}

fn http_pusher(pushkey: &str, display: &str) -> Value {
    json!({"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": display,
        "device_display_name": "phone", "lang": "en", "data": {"url": GATEWAY, "format": "event_id_only"}})
}

#[tokio::test]
async fn default_rules_are_served_and_published_at_first_login() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let all = s.ok(Method::GET, "/pushrules/", &alice, None).await;
        let global = &all["global"];
        for kind in ["override", "content", "room", "sender", "underride"] {
            assert!(global[kind].is_array(), "[{}] {kind} missing: {global}", s.name);
        }
        let overrides = ids(&global["override"]);
        assert_eq!(overrides[0], ".m.rule.master", "[{}]", s.name);
        for id in
            [".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.is_user_mention", ".m.rule.is_room_mention"]
        {
            assert!(overrides.contains(&id.to_owned()), "[{}] {id} missing: {overrides:?}", s.name);
        }
        assert!(ids(&global["underride"]).contains(&".m.rule.message".to_owned()), "[{}]", s.name);
        let master = rule(&global["override"], ".m.rule.master");
        assert_eq!((&master["default"], &master["enabled"]), (&json!(true), &json!(false)), "[{}]", s.name);
        let mention = rule(&global["override"], ".m.rule.is_user_mention");
        assert!(mention["conditions"].to_string().contains("@alice:localhost"), "[{}] {mention}", s.name);

        // The legacy prefix, the global ruleset alone, and one rule.
        let response = s.http.get(format!("{}/_matrix/client/r0/pushrules/global/", s.base)).bearer_auth(&alice);
        let r0: Value = response.send().await.unwrap().json().await.unwrap();
        assert_eq!(&r0, global, "[{}]", s.name);
        let one = s.ok(Method::GET, "/pushrules/global/override/.m.rule.master", &alice, None).await;
        assert_eq!(&one, master, "[{}]", s.name);

        // Published at registration (a login) without any change.
        let synced = s.synced_rules(&alice, |_| true).await;
        assert_eq!(&synced["global"], global, "[{}]", s.name);
    }
}

#[tokio::test]
async fn rules_are_added_ordered_changed_and_removed_and_sync_follows() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let put = |id: &'static str, query: &'static str, pattern: &'static str| {
            let path = format!("/pushrules/global/content/{id}{query}");
            let body = json!({"pattern": pattern, "actions": ["notify"]});
            let s = &s;
            let alice = alice.clone();
            async move { s.ok(Method::PUT, &path, &alice, Some(body)).await }
        };
        put("a", "", "apple").await;
        put("b", "", "banana").await;
        put("c", "?after=a", "cherry").await;
        put("d", "?before=b", "date").await;
        let content = s.ok(Method::GET, "/pushrules/global/", &alice, None).await["content"].clone();
        assert_eq!(ids(&content), ["d", "b", "a", "c"], "[{}]", s.name);
        // Moving an existing rule keeps its content.
        put("a", "?before=d", "apricot").await;
        let a = s.ok(Method::GET, "/pushrules/global/content/a", &alice, None).await;
        assert_eq!(
            a,
            json!({"rule_id": "a", "pattern": "apricot", "actions": ["notify"], "default": false, "enabled": true})
        );
        s.ok(Method::DELETE, "/pushrules/global/content/b", &alice, None).await;
        let content = s.ok(Method::GET, "/pushrules/global/", &alice, None).await["content"].clone();
        assert_eq!(ids(&content), ["a", "d", "c"], "[{}]", s.name);

        // Room, sender and override rules; a new override rule goes right after the master rule.
        let room = "/pushrules/global/room/!room:localhost";
        s.ok(Method::PUT, room, &alice, Some(json!({"actions": []}))).await;
        let sender = "/pushrules/global/sender/@bob:localhost";
        s.ok(Method::PUT, sender, &alice, Some(json!({"actions": ["notify"]}))).await;
        let conditions = json!([{"kind": "event_match", "key": "type", "pattern": "m.call.invite"}]);
        let body = json!({"conditions": conditions, "actions": ["notify", {"set_tweak": "sound", "value": "ring"}]});
        s.ok(Method::PUT, "/pushrules/global/override/calls", &alice, Some(body)).await;
        let global = s.ok(Method::GET, "/pushrules/global/", &alice, None).await;
        assert_eq!(ids(&global["room"]), ["!room:localhost"], "[{}]", s.name);
        assert_eq!(ids(&global["sender"]), ["@bob:localhost"], "[{}]", s.name);
        assert_eq!(ids(&global["override"])[..2], [".m.rule.master", "calls"], "[{}]", s.name);
        assert_eq!(rule(&global["override"], "calls")["conditions"], conditions, "[{}]", s.name);

        let synced = s.synced_rules(&alice, |c| c["global"] == global).await;
        assert_eq!(ids(&synced["global"]["content"]), ["a", "d", "c"], "[{}]", s.name);
    }
}

#[tokio::test]
async fn rules_are_enabled_disabled_and_given_actions() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let message = "/pushrules/global/underride/.m.rule.message";
        assert_eq!(s.ok(Method::GET, &format!("{message}/enabled"), &alice, None).await, json!({"enabled": true}));
        s.ok(Method::PUT, &format!("{message}/enabled"), &alice, Some(json!({"enabled": false}))).await;
        assert_eq!(s.ok(Method::GET, &format!("{message}/enabled"), &alice, None).await, json!({"enabled": false}));

        let actions = json!(["notify", {"set_tweak": "highlight"}]);
        s.ok(Method::PUT, &format!("{message}/actions"), &alice, Some(json!({"actions": actions}))).await;
        assert_eq!(s.ok(Method::GET, &format!("{message}/actions"), &alice, None).await, json!({"actions": actions}));

        s.ok(Method::PUT, "/pushrules/global/content/mine", &alice, Some(json!({"pattern": "x", "actions": []}))).await;
        s.ok(Method::PUT, "/pushrules/global/content/mine/enabled", &alice, Some(json!({"enabled": false}))).await;
        // Updating a rule keeps it disabled.
        s.ok(Method::PUT, "/pushrules/global/content/mine", &alice, Some(json!({"pattern": "y", "actions": []}))).await;
        let mine = s.ok(Method::GET, "/pushrules/global/content/mine", &alice, None).await;
        assert_eq!((&mine["enabled"], &mine["pattern"]), (&json!(false), &json!("y")), "[{}]", s.name);

        let synced = s
            .synced_rules(&alice, |c| {
                c["global"]["content"].as_array().is_some_and(|r| r.iter().any(|r| r["pattern"] == "y"))
            })
            .await;
        let synced_message = rule(&synced["global"]["underride"], ".m.rule.message");
        assert_eq!((&synced_message["enabled"], &synced_message["actions"]), (&json!(false), &actions));
    }
}

#[tokio::test]
async fn push_rule_requests_are_checked() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let t = Some(alice.as_str());
        let notify = r#"{"actions": ["notify"]}"#;
        // Unknown kind.
        s.fails(Method::GET, "/pushrules/global/bogus/x", t, "", 400, "M_INVALID_PARAM").await;
        s.fails(Method::PUT, "/pushrules/global/bogus/x", t, notify, 400, "M_INVALID_PARAM").await;
        s.fails(Method::DELETE, "/pushrules/global/bogus/x", t, "", 400, "M_INVALID_PARAM").await;
        s.fails(Method::GET, "/pushrules/global/bogus/x/enabled", t, "", 400, "M_INVALID_PARAM").await;
        // Unknown rule.
        s.fails(Method::GET, "/pushrules/global/override/nope", t, "", 404, "M_NOT_FOUND").await;
        s.fails(Method::DELETE, "/pushrules/global/override/nope", t, "", 404, "M_NOT_FOUND").await;
        s.fails(Method::GET, "/pushrules/global/override/nope/enabled", t, "", 404, "M_NOT_FOUND").await;
        let enable = r#"{"enabled": true}"#;
        s.fails(Method::PUT, "/pushrules/global/override/nope/enabled", t, enable, 404, "M_NOT_FOUND").await;
        s.fails(Method::GET, "/pushrules/global/override/nope/actions", t, "", 404, "M_NOT_FOUND").await;
        s.fails(Method::PUT, "/pushrules/global/override/nope/actions", t, notify, 404, "M_NOT_FOUND").await;
        // A rule of another kind is not found under this one.
        s.fails(Method::GET, "/pushrules/global/underride/.m.rule.master", t, "", 404, "M_NOT_FOUND").await;
        // Server-default rules cannot be replaced or deleted; ids are checked.
        s.fails(Method::PUT, "/pushrules/global/override/.m.rule.master", t, notify, 400, "M_INVALID_PARAM").await;
        s.fails(Method::PUT, "/pushrules/global/override/.mine", t, notify, 400, "M_INVALID_PARAM").await;
        s.fails(Method::DELETE, "/pushrules/global/override/.m.rule.master", t, "", 404, "M_NOT_FOUND").await;
        s.fails(Method::PUT, "/pushrules/global/override/a%5Cb", t, notify, 400, "M_INVALID_PARAM").await;
        s.fails(Method::PUT, "/pushrules/global/room/not-a-room", t, notify, 400, "M_INVALID_PARAM").await;
        s.fails(Method::PUT, "/pushrules/global/sender/not-a-user", t, notify, 400, "M_INVALID_PARAM").await;
        s.fails(Method::PUT, "/pushrules/global/content/nopattern", t, notify, 400, "M_MISSING_PARAM").await;
        // Placement relative to a missing rule, or to a server-default one.
        s.fails(Method::PUT, "/pushrules/global/override/x?before=nope", t, notify, 404, "M_NOT_FOUND").await;
        let path = "/pushrules/global/override/x?after=.m.rule.master";
        s.fails(Method::PUT, path, t, notify, 400, "M_INVALID_PARAM").await;
        // Bodies.
        s.fails(Method::PUT, "/pushrules/global/override/x", t, "{not json", 400, "M_NOT_JSON").await;
        s.fails(Method::PUT, "/pushrules/global/override/x", t, r#"{"actions": "notify"}"#, 400, "M_BAD_JSON").await;
        let path = "/pushrules/global/override/.m.rule.master/enabled";
        s.fails(Method::PUT, path, t, r#"{"enabled": "yes"}"#, 400, "M_BAD_JSON").await;
        s.fails(Method::PUT, path, t, "", 400, "M_NOT_JSON").await;
        // Tokens.
        s.fails(Method::GET, "/pushrules/", None, "", 401, "M_MISSING_TOKEN").await;
        s.fails(Method::GET, "/pushrules/", Some("nonsense"), "", 401, "M_UNKNOWN_TOKEN").await;
        s.fails(Method::PUT, "/pushrules/global/override/x", None, notify, 401, "M_MISSING_TOKEN").await;
        // None of that changed anything.
        let global = s.ok(Method::GET, "/pushrules/global/", &alice, None).await;
        assert!(!ids(&global["override"]).contains(&"x".to_owned()), "[{}]", s.name);
        assert!(rule(&global["override"], ".m.rule.master")["enabled"] == json!(false), "[{}]", s.name);
    }
}

#[tokio::test]
async fn pushers_are_set_listed_replaced_and_deleted() {
    for s in servers().await {
        let alice = s.register("alice").await;
        assert!(s.pushers(&alice).await.is_empty(), "[{}]", s.name);
        let mut first = http_pusher("key1", "App");
        first["profile_tag"] = json!("tag");
        first["data"]["custom"] = json!({"kept": true});
        s.ok(Method::POST, "/pushers/set", &alice, Some(first.clone())).await;
        let listed = s.pushers(&alice).await;
        let mut expected = first.clone();
        expected.as_object_mut().unwrap().remove("append");
        assert_eq!(listed, [expected], "[{}]", s.name);

        // Same app id and pushkey: replaced.
        s.ok(Method::POST, "/pushers/set", &alice, Some(http_pusher("key1", "Renamed"))).await;
        let listed = s.pushers(&alice).await;
        assert_eq!(listed.len(), 1, "[{}] {listed:?}", s.name);
        assert_eq!(listed[0]["app_display_name"], "Renamed", "[{}]", s.name);
        assert!(listed[0].get("profile_tag").is_none(), "[{}]", s.name);

        // Another pushkey, an email pusher and a plain http gateway URL.
        let mut second = http_pusher("key2", "App");
        second["data"] = json!({"url": "http://127.0.0.1:5000/_matrix/push/v1/notify"});
        s.ok(Method::POST, "/pushers/set", &alice, Some(second)).await;
        let email = json!({"kind": "email", "app_id": "m.email", "pushkey": "alice@example.org",
            "app_display_name": "Email", "device_display_name": "alice@example.org", "lang": "en", "data": {}});
        s.ok(Method::POST, "/pushers/set", &alice, Some(email)).await;
        // Listed by app id, then pushkey.
        let keys: Vec<Value> = s.pushers(&alice).await.iter().map(|p| p["pushkey"].clone()).collect();
        assert_eq!(keys, [json!("alice@example.org"), json!("key1"), json!("key2")], "[{}]", s.name);

        // `kind: null` deletes.
        let delete = json!({"kind": null, "app_id": "org.example.app", "pushkey": "key1"});
        s.ok(Method::POST, "/pushers/set", &alice, Some(delete)).await;
        let keys: Vec<Value> = s.pushers(&alice).await.iter().map(|p| p["pushkey"].clone()).collect();
        assert_eq!(keys, [json!("alice@example.org"), json!("key2")], "[{}]", s.name);
    }
}

#[tokio::test]
async fn a_pushkey_moves_between_users_unless_appended() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        s.ok(Method::POST, "/pushers/set", &alice, Some(http_pusher("shared", "App"))).await;
        let mut appended = http_pusher("shared", "App");
        appended["append"] = json!(true);
        s.ok(Method::POST, "/pushers/set", &bob, Some(appended)).await;
        assert_eq!(s.pushers(&alice).await.len(), 1, "[{}]", s.name);
        assert_eq!(s.pushers(&bob).await.len(), 1, "[{}]", s.name);
        // Without `append` the other users' pushers with that app id and pushkey go.
        s.ok(Method::POST, "/pushers/set", &carol, Some(http_pusher("shared", "App"))).await;
        assert!(s.pushers(&alice).await.is_empty(), "[{}]", s.name);
        assert!(s.pushers(&bob).await.is_empty(), "[{}]", s.name);
        assert_eq!(s.pushers(&carol).await.len(), 1, "[{}]", s.name);
    }
}

#[tokio::test]
async fn logging_out_removes_the_pushers_of_that_token() {
    for s in servers().await {
        let first = s.register("alice").await;
        let second = s.login("alice", "PHONE").await;
        s.ok(Method::POST, "/pushers/set", &first, Some(http_pusher("laptop", "App"))).await;
        s.ok(Method::POST, "/pushers/set", &second, Some(http_pusher("phone", "App"))).await;
        assert_eq!(s.pushers(&first).await.len(), 2, "[{}]", s.name);
        s.ok(Method::POST, "/logout", &second, Some(json!({}))).await;
        let left = s.pushers_until(&first, |p| p.len() == 1).await;
        assert_eq!(left[0]["pushkey"], "laptop", "[{}]", s.name);
        // The revoked token no longer works here either.
        s.fails(Method::GET, "/pushers", Some(&second), "", 401, "M_UNKNOWN_TOKEN").await;
    }
}

#[tokio::test]
async fn pusher_requests_are_checked() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let t = Some(alice.as_str());
        let set = |change: &dyn Fn(&mut Value)| {
            let mut body = http_pusher("key", "App");
            change(&mut body);
            body.to_string()
        };
        let cases: Vec<(String, u16, &str)> = vec![
            (set(&|b| b["data"]["url"] = json!("https://push.example.org/notify")), 400, "M_INVALID_PARAM"),
            (
                set(&|b| b["data"]["url"] = json!("https://push.example.org/_matrix/push/v1/notify/x")),
                400,
                "M_INVALID_PARAM",
            ),
            (
                set(&|b| b["data"]["url"] = json!("ftp://push.example.org/_matrix/push/v1/notify")),
                400,
                "M_INVALID_PARAM",
            ),
            (set(&|b| b["data"]["url"] = json!("not a url")), 400, "M_INVALID_PARAM"),
            (set(&|b| b["data"] = json!({"format": "event_id_only"})), 400, "M_INVALID_PARAM"),
            (set(&|b| b["data"]["format"] = json!("full")), 400, "M_INVALID_PARAM"),
            (set(&|b| b["pushkey"] = json!("k".repeat(513))), 400, "M_INVALID_PARAM"),
            (set(&|b| b["app_id"] = json!("a".repeat(65))), 400, "M_INVALID_PARAM"),
            (set(&|b| b["kind"] = json!("carrier-pigeon")), 400, "M_INVALID_PARAM"),
            (set(&|b| drop(b.as_object_mut().unwrap().remove("app_display_name"))), 400, "M_MISSING_PARAM"),
            (set(&|b| drop(b.as_object_mut().unwrap().remove("data"))), 400, "M_MISSING_PARAM"),
            (set(&|b| drop(b.as_object_mut().unwrap().remove("kind"))), 400, "M_BAD_JSON"),
            (set(&|b| b["pushkey"] = json!(7)), 400, "M_BAD_JSON"),
            ("{not json".to_owned(), 400, "M_NOT_JSON"),
        ];
        for (body, status, errcode) in &cases {
            s.fails(Method::POST, "/pushers/set", t, body, *status, errcode).await;
        }
        // The limits themselves are allowed.
        let longest = set(&|b| {
            b["pushkey"] = json!("k".repeat(512));
            b["app_id"] = json!("a".repeat(64));
        });
        let (status, reply) = s.call(Method::POST, "/pushers/set", t, Some(&longest)).await;
        assert_eq!(status, 200, "[{}] {reply}", s.name);
        assert_eq!(s.pushers(&alice).await.len(), 1, "[{}]", s.name);
        s.fails(Method::GET, "/pushers", None, "", 401, "M_MISSING_TOKEN").await;
        s.fails(Method::POST, "/pushers/set", None, &set(&|_| {}), 401, "M_MISSING_TOKEN").await;
    }
}

/// An admin lowers what gateways learn of one room's events (to a bare
/// wake-up here) and lifts the limit again; nobody else may.
#[tokio::test]
async fn an_admin_limits_what_gateways_learn_of_one_room() {
    for s in servers().await {
        let at = s.name;
        let root = s.register_as("root", true).await;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        s.gateway_pusher(&bob, "bob", None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        let path = format!("{}/_myelin/admin/v1/rooms/{room}/push_content", s.base);
        let admin = |method: Method, token: &str, body: Value| {
            let request = s.http.request(method, &path).bearer_auth(token).json(&body);
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            }
        };
        let (status, reply) = admin(Method::PUT, &alice, json!({"push_content": "none"})).await;
        assert_eq!((status, reply["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "[{at}] not an admin");
        let (status, reply) = admin(Method::PUT, &root, json!({"push_content": "everything"})).await;
        assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "[{at}] {reply}");
        assert_eq!(admin(Method::PUT, &root, json!({"push_content": "none"})).await.0, 200, "[{at}]");
        assert_eq!(admin(Method::GET, &root, Value::Null).await.1, json!({"push_content": "none"}), "[{at}]");

        s.send(&alice, &room, text("quiet")).await;
        let body = s.gateway.nth("bob", 0).await;
        assert_eq!(keys(&body["notification"]), ["counts", "devices", "prio"], "[{at}] {body}");
        assert_eq!(admin(Method::PUT, &root, json!({"push_content": null})).await.0, 200, "[{at}]");
        s.send(&alice, &room, text("loud")).await;
        let body = s.gateway.nth("bob", 1).await;
        assert_eq!(body["notification"]["content"], text("loud"), "[{at}] the server's level again");
    }
}

/// Exact notification keys per level (DESIGN.md invariant 9), for a plain
/// room, a pusher asking for `event_id_only`, an encrypted room, and an
/// invite (`user_is_target`).
#[tokio::test]
async fn gateways_receive_exactly_the_keys_their_level_allows() {
    const FULL: &[&str] = &[
        "event_id",
        "room_id",
        "type",
        "sender",
        "sender_display_name",
        "room_name",
        "content",
        "counts",
        "devices",
        "prio",
    ];
    const METADATA: &[&str] =
        &["event_id", "room_id", "type", "sender", "sender_display_name", "room_name", "counts", "devices", "prio"];
    const EVENT_ID_ONLY: &[&str] = &["event_id", "room_id", "counts", "devices", "prio"];
    const NONE: &[&str] = &["counts", "devices", "prio"];
    let levels = [
        (PushContent::Full, FULL),
        (PushContent::Metadata, METADATA),
        (PushContent::EventIdOnly, EVENT_ID_ONLY),
        (PushContent::None, NONE),
    ];
    for (level, expected) in levels {
        let encrypted_expected = if level == PushContent::None { NONE } else { EVENT_ID_ONLY };
        for s in servers_with(level).await {
            let at = format!("[{} {level:?}]", s.name);
            let alice = s.register("alice").await;
            let bob = s.register("bob").await;
            let carol = s.register("carol").await;
            let name = json!({"displayname": "Alice"});
            s.ok(Method::PUT, "/profile/@alice:localhost/displayname", &alice, Some(name)).await;
            s.gateway_pusher(&bob, "bob", None).await;
            s.gateway_pusher(&carol, "carol", Some("event_id_only")).await;

            let room = s.create_room(&bob, json!({"preset": "public_chat", "name": "Gated"})).await;
            s.join(&alice, &room).await;
            s.join(&carol, &room).await;
            // Bob's pushes arrive in order: this message, the encrypted one, the invite.
            let event = s.send(&alice, &room, text("hello")).await;
            let body = s.gateway.nth("bob", 0).await;
            assert_eq!(keys(&body), ["notification"], "{at} {body}");
            let n = &body["notification"];
            assert_eq!(keys(n), sorted(expected), "{at} {n}");
            if level >= PushContent::EventIdOnly {
                assert_eq!((&n["event_id"], &n["room_id"]), (&json!(event), &json!(room)), "{at}");
            }
            if level >= PushContent::Metadata {
                assert_eq!(
                    (&n["type"], &n["sender"], &n["sender_display_name"], &n["room_name"]),
                    (&json!("m.room.message"), &json!("@alice:localhost"), &json!("Alice"), &json!("Gated")),
                    "{at}"
                );
            }
            if level == PushContent::Full {
                assert_eq!(n["content"], text("hello"), "{at}");
            }
            assert_eq!(keys(&n["counts"]), ["unread"], "{at} {n}");
            assert!(n["counts"]["unread"].as_u64().unwrap() >= 1, "{at} {n}");
            let devices = n["devices"].as_array().unwrap();
            assert_eq!(devices.len(), 1, "{at}");
            assert_eq!(keys(&devices[0]), ["app_id", "data", "pushkey", "tweaks"], "{at} {n}");
            assert_eq!(devices[0]["data"], json!({"extra": "kept"}), "{at} the URL stays home");
            assert!(matches!(n["prio"].as_str(), Some("high" | "low")), "{at} {n}");

            // The pusher's own format lowers the level, never raises it.
            let body = s.gateway.nth("carol", 0).await;
            let own = if level == PushContent::None { NONE } else { EVENT_ID_ONLY };
            assert_eq!(keys(&body["notification"]), sorted(own), "{at} {body}");

            // Encrypted rooms: event ids at most, whatever the server allows.
            let encryption = json!([{"type": "m.room.encryption", "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]);
            let secret_room = s
                .create_room(&bob, json!({"preset": "public_chat", "name": "Secret", "initial_state": encryption}))
                .await;
            s.join(&alice, &secret_room).await;
            let ciphertext = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "opaque",
                "sender_key": "k", "session_id": "s", "device_id": "D"});
            let event = s.send_event(&alice, &secret_room, "m.room.encrypted", ciphertext).await;
            let body = s.gateway.nth("bob", 1).await;
            if level >= PushContent::EventIdOnly {
                assert_eq!(body["notification"]["event_id"], event, "{at}");
            }
            assert_eq!(keys(&body["notification"]), sorted(encrypted_expected), "{at} {body}");
            assert!(!body.to_string().contains("opaque"), "{at} {body}");

            // Member events say whether the recipient is their target.
            let other = s.create_room(&alice, json!({"preset": "private_chat", "name": "Other"})).await;
            // The creator's first member event carries no display name; a change gives it one.
            let name = json!({"displayname": "Alice B"});
            s.ok(Method::PUT, "/profile/@alice:localhost/displayname", &alice, Some(name)).await;
            s.ok(Method::POST, &format!("/rooms/{other}/invite"), &alice, Some(json!({"user_id": "@bob:localhost"})))
                .await;
            let invite = s.gateway.nth("bob", 2).await;
            let n = &invite["notification"];
            if level >= PushContent::Metadata {
                let mut with_target = expected.to_vec();
                with_target.push("user_is_target");
                assert_eq!(keys(n), sorted(&with_target), "{at} {n}");
                assert_eq!(n["user_is_target"], true, "{at}");
                assert_eq!(n["prio"], "high", "{at}");
            } else {
                assert_eq!(keys(n), sorted(expected), "{at} {n}");
            }
        }
    }
}

/// Each case sends an event that must not reach the subject, then one that
/// must. The first is handled before the second: in the same room they are
/// handled in order, and across rooms the second is sent only once the
/// watcher (Carol, a member of every room) got the first. Each pusher's
/// notifications are delivered in order, so the subject's gateway requests
/// show whether the first was ever queued for them.
#[tokio::test]
async fn pushes_go_only_to_those_who_should_get_them() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let carol = s.register("carol").await;
        let dave = s.register("dave").await;
        let erin = s.register("erin").await;
        let frank = s.register("frank").await;
        let gina = s.register("gina").await;
        for (token, key) in [(&alice, "alice"), (&carol, "carol"), (&dave, "dave"), (&erin, "erin")] {
            s.gateway_pusher(token, key, None).await;
        }
        s.gateway_pusher(&frank, "frank", None).await;
        s.gateway_pusher(&gina, "gina", None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat", "name": "A"})).await;
        for token in [&carol, &dave, &erin] {
            s.join(token, &room).await;
        }
        let settle = |event: String| {
            let s = &s;
            async move { s.gateway.wait_for("carol", &event).await }
        };
        let pushes_until = |pushkey: &'static str, n: usize| {
            let s = &s;
            async move {
                let deadline = Instant::now() + WAIT;
                while s.gateway.to(pushkey).len() < n {
                    assert!(Instant::now() < deadline, "[{}] {pushkey} never got {n} pushes", s.name);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                s.gateway.to(pushkey)
            }
        };

        // A muted room (a room rule without actions).
        let rule = format!("/pushrules/global/room/{room}");
        s.ok(Method::PUT, &rule, &dave, Some(json!({"actions": []}))).await;
        let muted = s.send(&alice, &room, text("muted")).await;
        // Evaluated before the rule goes.
        settle(muted.clone()).await;
        s.ok(Method::DELETE, &rule, &dave, None).await;
        let heard = s.send(&alice, &room, text("heard")).await;
        s.gateway.wait_for("dave", &heard).await;
        assert_eq!(s.gateway.events_to("dave"), std::slice::from_ref(&heard), "[{at}] muted room");
        assert!(s.gateway.events_to("carol").contains(&muted), "[{at}] others still hear it");

        // An override rule with `dont_notify`.
        let quiet = json!({"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "*secret*"}],
            "actions": ["dont_notify"]});
        s.ok(Method::PUT, "/pushrules/global/override/quiet", &dave, Some(quiet)).await;
        s.send(&alice, &room, text("a secret")).await;
        let loud = s.send(&alice, &room, text("loud")).await;
        s.gateway.wait_for("dave", &loud).await;
        assert_eq!(s.gateway.events_to("dave"), [heard.clone(), loud.clone()], "[{at}] dont_notify override");

        // An ignored sender.
        let ignore = json!({"ignored_users": {"@alice:localhost": {}}});
        s.ok(Method::PUT, "/user/@dave:localhost/account_data/m.ignored_user_list", &dave, Some(ignore)).await;
        // The ignore list travels on the bus; give the pusher's consumer time to store it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.send(&alice, &room, text("from alice")).await;
        let from_erin = s.send(&erin, &room, text("from erin")).await;
        s.gateway.wait_for("dave", &from_erin).await;
        assert_eq!(s.gateway.events_to("dave"), [heard.clone(), loud.clone(), from_erin.clone()], "[{at}] ignored");

        // The sender themself.
        let by_dave = s.send(&dave, &room, text("by dave")).await;
        let for_dave = s.send(&erin, &room, text("for dave")).await;
        s.gateway.wait_for("dave", &for_dave).await;
        assert!(!s.gateway.events_to("dave").contains(&by_dave), "[{at}] the sender themself");
        assert!(!s.gateway.events_to("erin").contains(&for_dave), "[{at}] the sender themself");

        // A member who left; then an invite elsewhere reaches them.
        s.ok(Method::POST, &format!("/rooms/{room}/leave"), &erin, Some(json!({}))).await;
        let after_leave = s.send(&alice, &room, text("after erin left")).await;
        settle(after_leave.clone()).await;
        let erin_before = s.gateway.to("erin").len();
        let other = s.create_room(&frank, json!({"preset": "public_chat", "name": "B"})).await;
        s.join(&carol, &other).await;
        s.ok(Method::POST, &format!("/rooms/{other}/invite"), &frank, Some(json!({"user_id": "@erin:localhost"})))
            .await;
        let erin_saw = pushes_until("erin", erin_before + 1).await;
        assert_eq!(erin_saw.last().unwrap()["notification"]["type"], "m.room.member", "[{at}]");
        assert!(!s.gateway.events_to("erin").contains(&after_leave), "[{at}] a member who left");

        // Another room's member, an invitee and a world-readable room's non-member.
        s.ok(Method::POST, &format!("/rooms/{other}/invite"), &frank, Some(json!({"user_id": "@gina:localhost"})))
            .await;
        pushes_until("gina", 1).await;
        let readable = json!([{"type": "m.room.history_visibility", "state_key": "",
            "content": {"history_visibility": "world_readable"}}]);
        let open = s.create_room(&alice, json!({"preset": "public_chat", "initial_state": readable})).await;
        s.join(&carol, &open).await;
        let in_a = s.send(&alice, &room, text("only room A")).await;
        settle(in_a).await;
        let in_open = s.send(&alice, &open, text("readable by all")).await;
        settle(in_open).await;
        let in_b = s.send(&frank, &other, text("room B")).await;
        settle(in_b.clone()).await;
        let for_frank = s.send(&carol, &other, text("for frank")).await;
        s.gateway.wait_for("frank", &for_frank).await;
        assert_eq!(s.gateway.events_to("frank"), [for_frank], "[{at}] other rooms and world-readable ones");
        let third = s.create_room(&alice, json!({"preset": "private_chat", "name": "C"})).await;
        s.ok(Method::POST, &format!("/rooms/{third}/invite"), &alice, Some(json!({"user_id": "@gina:localhost"})))
            .await;
        let gina_saw = pushes_until("gina", 2).await;
        assert!(
            gina_saw.iter().all(|b| b["notification"]["type"] == "m.room.member"),
            "[{at}] an invitee gets invites only: {gina_saw:?}"
        );
        assert!(!s.gateway.events_to("gina").contains(&in_b), "[{at}]");
    }
}

#[tokio::test]
async fn counts_rise_in_sync_and_a_read_receipt_clears_them() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        s.send(&alice, &room, text("one")).await;
        let mention = json!({"msgtype": "m.text", "body": "hey bob", "m.mentions": {"user_ids": ["@bob:localhost"]}});
        let last = s.send(&alice, &room, mention).await;
        let counts = s.counts_until(&bob, &room, |c| c["notification_count"] == 2).await;
        assert_eq!(counts, json!({"notification_count": 2, "highlight_count": 1}), "[{at}]");
        // The sender is not notified of their own messages.
        let own = s.counts_until(&alice, &room, |c| c.is_object()).await;
        assert_eq!(own, json!({"notification_count": 0, "highlight_count": 0}), "[{at}]");

        s.ok(Method::POST, &format!("/rooms/{room}/receipt/m.read/{last}"), &bob, Some(json!({}))).await;
        let counts = s.counts_until(&bob, &room, |c| c["notification_count"] == 0).await;
        assert_eq!(counts, json!({"notification_count": 0, "highlight_count": 0}), "[{at}]");

        // Threads are counted apart too.
        let thread = json!({"msgtype": "m.text", "body": "in thread",
            "m.relates_to": {"rel_type": "m.thread", "event_id": last}});
        let in_thread = s.send(&alice, &room, thread).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let body = s.ok(Method::GET, "/sync", &bob, None).await;
            let joined = &body["rooms"]["join"][&room];
            if joined["unread_notifications"]["notification_count"] == 1 {
                let threads = &joined["unread_thread_notifications"];
                assert_eq!(threads, &json!({ &last: {"notification_count": 1, "highlight_count": 0}}), "[{at}]");
                break;
            }
            assert!(Instant::now() < deadline, "[{at}] thread never counted: {joined}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let receipt = json!({"thread_id": last});
        s.ok(Method::POST, &format!("/rooms/{room}/receipt/m.read/{in_thread}"), &bob, Some(receipt)).await;
        s.counts_until(&bob, &room, |c| c["notification_count"] == 0).await;

        // A private receipt clears them as well.
        let again = s.send(&alice, &room, text("again")).await;
        s.counts_until(&bob, &room, |c| c["notification_count"] == 1).await;
        s.ok(Method::POST, &format!("/rooms/{room}/receipt/m.read.private/{again}"), &bob, Some(json!({}))).await;
        s.counts_until(&bob, &room, |c| c["notification_count"] == 0).await;
    }
}

#[tokio::test]
async fn notifications_are_listed_filtered_and_paginated() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        let plain = s.send(&alice, &room, text("plain")).await;
        let mention = json!({"msgtype": "m.text", "body": "hey bob", "m.mentions": {"user_ids": ["@bob:localhost"]}});
        let highlight = s.send(&alice, &room, mention).await;
        s.counts_until(&bob, &room, |c| c["notification_count"] == 2).await;

        let all = s.ok(Method::GET, "/notifications", &bob, None).await;
        let listed = all["notifications"].as_array().unwrap();
        let ids: Vec<&Value> = listed.iter().map(|n| &n["event"]["event_id"]).collect();
        assert_eq!(ids, [&json!(highlight), &json!(plain)], "[{at}] newest first");
        let first = &listed[0];
        assert_eq!(keys(first), ["actions", "event", "read", "room_id", "ts"], "[{at}] {first}");
        assert_eq!((&first["room_id"], &first["read"]), (&json!(room), &json!(false)), "[{at}]");
        assert_eq!(first["event"]["content"]["body"], "hey bob", "[{at}]");
        assert!(all.get("next_token").is_none(), "[{at}] {all}");

        let only = s.ok(Method::GET, "/notifications?only=highlight", &bob, None).await;
        let only: Vec<&Value> =
            only["notifications"].as_array().unwrap().iter().map(|n| &n["event"]["event_id"]).collect();
        assert_eq!(only, [&json!(highlight)], "[{at}]");

        let page = s.ok(Method::GET, "/notifications?limit=1", &bob, None).await;
        assert_eq!(page["notifications"][0]["event"]["event_id"], highlight, "[{at}]");
        let token = page["next_token"].as_str().unwrap().to_owned();
        let next = s.ok(Method::GET, &format!("/notifications?limit=1&from={token}"), &bob, None).await;
        assert_eq!(next["notifications"][0]["event"]["event_id"], plain, "[{at}]");

        // Read receipts show in `read`.
        s.ok(Method::POST, &format!("/rooms/{room}/receipt/m.read/{highlight}"), &bob, Some(json!({}))).await;
        let deadline = Instant::now() + WAIT;
        while s.ok(Method::GET, "/notifications", &bob, None).await["notifications"][0]["read"] != true {
            assert!(Instant::now() < deadline, "[{at}] never read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let t = Some(bob.as_str());
        for bad in ["?limit=abc", "?limit=0", "?limit=-3", "?only=everything", "?from=abc", "?from=-1"] {
            s.fails(Method::GET, &format!("/notifications{bad}"), t, "", 400, "M_INVALID_PARAM").await;
        }
        s.fails(Method::GET, "/notifications", None, "", 401, "M_MISSING_TOKEN").await;
    }
}

#[tokio::test]
async fn rejected_pushkeys_lose_their_pusher_and_failures_are_retried() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        s.gateway.reject.lock().unwrap().insert("stale".to_owned());
        s.gateway.fail_once.lock().unwrap().insert("flaky".to_owned());
        s.gateway_pusher(&bob, "stale", None).await;
        s.gateway_pusher(&bob, "flaky", None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        let first = s.send(&alice, &room, text("first")).await;

        s.gateway.wait_for("stale", &first).await;
        let left = s.pushers_until(&bob, |p| p.len() == 1).await;
        assert_eq!(left[0]["pushkey"], "flaky", "[{at}] the rejected pushkey's pusher is gone");
        let second = s.send(&alice, &room, text("second")).await;

        // 500 first, then delivered once after the backoff, and in order.
        s.gateway.wait_for("flaky", &second).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(s.gateway.events_to("flaky"), [first.clone(), second.clone()], "[{at}]");
        assert_eq!(s.gateway.events_to("stale"), [first], "[{at}] nothing more for the removed pusher");
    }
}

/// Without `pusher.allow_private_gateways`, loopback gateways get nothing:
/// neither by name (refused by the resolver) nor by address.
#[tokio::test]
async fn loopback_gateways_are_refused_unless_allowed() {
    for db in TestDb::both().await {
        let s = Server::start(db, PushContent::Full, false).await;
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let by_name = s.gateway_url.replace("127.0.0.1", "localhost");
        s.pusher_at(&bob, "by-address", &s.gateway_url, None).await;
        s.pusher_at(&bob, "by-name", &by_name, None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        s.send(&alice, &room, text("hello")).await;
        // Recorded as a notification, so evaluated and queued ...
        s.counts_until(&bob, &room, |c| c["notification_count"] == 1).await;
        // ... but never delivered, first attempt and retries alike.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(s.gateway.attempts.load(Ordering::SeqCst), 0, "[{at}]");
    }
}

/// Backfilled events reach `roomserver.output` flagged historical: they
/// are never pushed, counted or listed.
#[tokio::test]
async fn backfilled_history_never_pushes() {
    use myelin_roomserver::api::{NewRoomEvent, OUTPUT_TOPIC, OutputRecord, StateDelta, StoredEvent};
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        s.gateway_pusher(&bob, "bob", None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        let pdu = json!({"type": "m.room.message", "sender": "@alice:localhost", "room_id": room,
            "content": text("old news"), "origin_server_ts": 1, "depth": 1});
        let old = NewRoomEvent {
            event: StoredEvent {
                event_id: "$backfilled-event".try_into().unwrap(),
                room_id: room.as_str().try_into().unwrap(),
                pdu,
            },
            room_version: "12".to_owned(),
            state_delta: StateDelta::default(),
            txn: None,
            historical: true,
        };
        // Keyed by room like the room server's own records, so handled before what follows.
        s.bus.produce_json(OUTPUT_TOPIC, &room, &OutputRecord::NewRoomEvent(old)).await.unwrap();
        let fresh = s.send(&alice, &room, text("news")).await;
        s.gateway.wait_for("bob", &fresh).await;
        assert_eq!(s.gateway.events_to("bob"), std::slice::from_ref(&fresh), "[{at}]");
        let listed = s.ok(Method::GET, "/notifications", &bob, None).await;
        let ids: Vec<&Value> =
            listed["notifications"].as_array().unwrap().iter().map(|n| &n["event"]["event_id"]).collect();
        assert_eq!(ids, [&json!(fresh)], "[{at}]");
        // A receipt for the old event marks nothing read.
        s.ok(Method::POST, &format!("/rooms/{room}/receipt/m.read/$backfilled-event"), &bob, Some(json!({}))).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = s.counts_until(&bob, &room, |c| c.is_object()).await;
        assert_eq!(counts["notification_count"], 1, "[{at}]");
    }
}

/// `@room` highlights only when the sender may notify the room (power
/// levels, with the creator's own privilege in room version 12).
#[tokio::test]
async fn room_mentions_need_the_power_to_notify_the_room() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        s.join(&carol, &room).await;
        let everyone = json!({"msgtype": "m.text", "body": "@room hi", "m.mentions": {"room": true}});
        s.send(&alice, &room, everyone.clone()).await;
        s.send(&bob, &room, everyone).await;
        let counts = s.counts_until(&carol, &room, |c| c["notification_count"] == 2).await;
        assert_eq!(counts["highlight_count"], 1, "[{at}] only the creator's @room highlights: {counts}");
    }
}

/// Deleting a device and changing the password (which logs the other
/// devices out) revoke tokens, and with them the pushers those tokens set.
#[tokio::test]
async fn device_deletion_and_password_changes_remove_those_devices_pushers() {
    for s in servers().await {
        let at = s.name;
        let laptop = s.register("alice").await;
        let phone = s.login("alice", "PHONE").await;
        let tablet = s.login("alice", "TABLET").await;
        for (token, key) in [(&laptop, "laptop"), (&phone, "phone"), (&tablet, "tablet")] {
            s.ok(Method::POST, "/pushers/set", token, Some(http_pusher(key, "App"))).await;
        }
        assert_eq!(s.pushers(&laptop).await.len(), 3, "[{at}]");
        // Both go through user-interactive authentication with the password.
        let with_password = |session: &Value, password: &str| {
            json!({"type": "m.login.password", "session": session, "password": password,
                "identifier": {"type": "m.id.user", "user": "alice"}})
        };

        let (status, reply) = s.call(Method::DELETE, "/devices/TABLET", Some(&laptop), Some("{}")).await;
        assert_eq!(status, 401, "[{at}] {reply}");
        let body = json!({"auth": with_password(&reply["session"], PASSWORD)});
        s.ok(Method::DELETE, "/devices/TABLET", &laptop, Some(body)).await;
        let left = s.pushers_until(&laptop, |p| p.len() == 2).await;
        assert!(left.iter().all(|p| p["pushkey"] != "tablet"), "[{at}] {left:?}");

        let change = json!({"new_password": "a new password"});
        let (status, reply) = s.call(Method::POST, "/account/password", Some(&laptop), Some(&change.to_string())).await;
        assert_eq!(status, 401, "[{at}] {reply}");
        let body = json!({"new_password": "a new password", "auth": with_password(&reply["session"], PASSWORD)});
        s.ok(Method::POST, "/account/password", &laptop, Some(body)).await;
        let left = s.pushers_until(&laptop, |p| p.len() == 1).await;
        assert_eq!(left[0]["pushkey"], "laptop", "[{at}] the device that changed it keeps its pusher");
        s.fails(Method::GET, "/pushers", Some(&phone), "", 401, "M_UNKNOWN_TOKEN").await;
    }
}

/// A pusher whose device logged out, and every pusher of a deactivated
/// user, receives nothing afterwards. As in the other negative cases, a
/// watcher (Carol) receiving a later event shows the earlier one was
/// handled; the subjects' gateway requests then show what reached them.
#[tokio::test]
async fn logged_out_devices_and_deactivated_users_are_pushed_nothing_more() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let carol = s.register("carol").await;
        let laptop = s.register("bob").await;
        let phone = s.login("bob", "PHONE").await;
        let dave = s.register("dave").await;
        s.gateway_pusher(&carol, "carol", None).await;
        s.gateway_pusher(&laptop, "bob-laptop", None).await;
        s.gateway_pusher(&phone, "bob-phone", None).await;
        s.gateway_pusher(&dave, "dave", None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        for token in [&carol, &laptop, &dave] {
            s.join(token, &room).await;
        }
        let first = s.send(&alice, &room, text("everyone")).await;
        for pushkey in ["carol", "bob-laptop", "bob-phone", "dave"] {
            s.gateway.wait_for(pushkey, &first).await;
        }

        s.ok(Method::POST, "/logout", &phone, Some(json!({}))).await;
        s.pushers_until(&laptop, |p| p.len() == 1).await;
        let with_password = json!({"auth": {"type": "m.login.password", "password": PASSWORD,
            "identifier": {"type": "m.id.user", "user": "dave"}}});
        let (status, reply) = s.call(Method::POST, "/account/deactivate", Some(&dave), Some("{}")).await;
        assert_eq!(status, 401, "[{at}] {reply}");
        let mut body = with_password;
        body["auth"]["session"] = reply["session"].clone();
        s.ok(Method::POST, "/account/deactivate", &dave, Some(body)).await;

        let after = s.send(&alice, &room, text("after")).await;
        let last = s.send(&alice, &room, text("last")).await;
        s.gateway.wait_for("carol", &last).await;
        s.gateway.wait_for("bob-laptop", &last).await;
        assert_eq!(s.gateway.events_to("bob-laptop"), [first.clone(), after, last], "[{at}] the device still in");
        assert_eq!(s.gateway.events_to("bob-phone"), std::slice::from_ref(&first), "[{at}] the logged-out device");
        assert_eq!(s.gateway.events_to("dave"), std::slice::from_ref(&first), "[{at}] the deactivated user");
    }
}

/// Guests may not set pushers (the spec opens no push endpoint to them), so
/// a guest, joined or not, is never pushed; the members are.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
#[tokio::test]
async fn guests_can_have_no_pushers() {
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        s.gateway_pusher(&bob, "bob", None).await;
        let (status, reply) = s.call(Method::POST, "/register?kind=guest", None, Some("{}")).await;
        assert_eq!(status, 200, "[{at}] {reply}");
        let guest = reply["access_token"].as_str().unwrap().to_owned();
        let mut pusher = http_pusher("guest", "App");
        pusher["data"] = json!({ "url": s.gateway_url });
        let pusher = pusher.to_string();
        s.fails(Method::POST, "/pushers/set", Some(&guest), &pusher, 403, "M_GUEST_ACCESS_FORBIDDEN").await;
        s.fails(Method::GET, "/pushers", Some(&guest), "", 403, "M_GUEST_ACCESS_FORBIDDEN").await;
        s.fails(Method::GET, "/pushrules/", Some(&guest), "", 403, "M_GUEST_ACCESS_FORBIDDEN").await;
        s.fails(Method::GET, "/notifications", Some(&guest), "", 403, "M_GUEST_ACCESS_FORBIDDEN").await;

        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        let unjoined = s.send(&alice, &room, text("before the guest joins")).await;
        s.gateway.wait_for("bob", &unjoined).await;
        let guest_access = json!({"guest_access": "can_join"});
        s.ok(Method::PUT, &format!("/rooms/{room}/state/m.room.guest_access"), &alice, Some(guest_access)).await;
        s.ok(Method::POST, &format!("/rooms/{room}/join"), &guest, Some(json!({}))).await;
        let joined = s.send(&alice, &room, text("after the guest joined")).await;
        s.gateway.wait_for("bob", &joined).await;
        assert!(s.gateway.to("guest").is_empty(), "[{at}] a guest was pushed");
    }
}

/// PDUs from another server, through the room server's pipeline as the
/// federation API hands them over (`InputPdus` on `roomserver.input`): a
/// fake "remote.test:8448" signs them and answers the room server's key
/// queries with its key, as the federation API would after fetching it.
mod remote {
    use std::sync::Arc;

    use async_trait::async_trait;
    use myelin_bus::{HandleError, Record, Responder, Shutdown, ShutdownTrigger};
    use myelin_roomserver::api::{
        FEDERATION_QUERY_TOPIC, FederationQuery, FederationQueryOk, FederationQueryReply, INPUT_TOPIC, InputOk,
        InputPdus, InputReply, InputRequest, PduKind, PduOutcome, QUERY_TOPIC, QueryOk, QueryReply, QueryRequest,
        REQUEST_TIMEOUT, StoredEvent, VerifyKey,
    };
    use myelin_types::ruma::signatures::{hash_and_sign_event, reference_hash};
    use myelin_types::ruma::{CanonicalJsonValue, RoomVersionId};
    use myelin_types::signing::ServerSigningKey;
    use myelin_types::{ErrorCode, MatrixError};
    use serde_json::{Value, json};

    use super::Server;

    pub const REMOTE: &str = "remote.test:8448";

    pub struct Peer {
        key: ServerSigningKey,
    }

    #[async_trait]
    impl Responder for Peer {
        async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
            let query: FederationQuery = record.json().map_err(|e| HandleError::Poison(e.to_string()))?;
            let reply: FederationQueryReply = match query {
                FederationQuery::ServerKeys { server_name, .. } if server_name.as_str() == REMOTE => {
                    Ok(FederationQueryOk::ServerKeys {
                        keys: vec![VerifyKey {
                            key_id: self.key.key_id(),
                            public_key: self.key.public_key_base64(),
                            valid_until_ts: Some(u64::MAX / 2),
                            expired_ts: None,
                        }],
                    })
                }
                _ => Err(MatrixError::new(ErrorCode::NotFound, "unknown to the fake peer")),
            };
            Ok(serde_json::to_vec(&reply).unwrap())
        }
    }

    /// The remote server's view of one local room.
    pub struct Remote {
        pub room_id: String,
        version: RoomVersionId,
        peer: Arc<Peer>,
        _stop: ShutdownTrigger,
    }

    impl Remote {
        pub async fn start(s: &Server, room_id: &str) -> Self {
            let key = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
            let peer = Arc::new(Peer { key });
            let (stop, shutdown): (ShutdownTrigger, Shutdown) = Shutdown::new();
            s.bus.serve("test.peer", FEDERATION_QUERY_TOPIC, peer.clone(), shutdown);
            let create = Self::state_of(s, room_id, "m.room.create", "").await;
            let version = create.pdu["content"]["room_version"].as_str().unwrap_or("1").try_into().unwrap();
            Self { room_id: room_id.to_owned(), version, peer, _stop: stop }
        }

        /// The current state event at `(event_type, state_key)`, as alice may see it.
        pub async fn state_of(s: &Server, room_id: &str, event_type: &str, state_key: &str) -> StoredEvent {
            let request = QueryRequest::RoomState {
                room_id: room_id.try_into().unwrap(),
                requester: "@alice:localhost".try_into().unwrap(),
                event_type: Some(event_type.to_owned()),
                state_key: Some(state_key.to_owned()),
            };
            let reply: QueryReply = s.bus.request_json(QUERY_TOPIC, room_id, &request, REQUEST_TIMEOUT).await.unwrap();
            match reply.unwrap() {
                QueryOk::State { mut events } => events.pop().unwrap_or_else(|| panic!("no {event_type} in the room")),
                other => panic!("unexpected reply {other:?}"),
            }
        }

        /// A signed PDU on top of `prev` (an event id with its depth), citing
        /// `auth` (the create event is added where the room version lists it).
        pub async fn pdu(&self, s: &Server, fields: Value, prev: &StoredEvent, auth: &[&str]) -> (String, Value) {
            let mut auth: Vec<String> = auth.iter().map(|id| (*id).to_owned()).collect();
            if self.version != RoomVersionId::V12 {
                auth.insert(0, Self::state_of(s, &self.room_id, "m.room.create", "").await.event_id.to_string());
            }
            let mut fields = fields;
            let object = fields.as_object_mut().unwrap();
            object.insert("room_id".to_owned(), json!(self.room_id));
            object.insert("prev_events".to_owned(), json!([prev.event_id]));
            object.insert("depth".to_owned(), json!(prev.pdu["depth"].as_i64().unwrap() + 1));
            object.insert("auth_events".to_owned(), json!(auth));
            object.insert("origin_server_ts".to_owned(), json!(now()));
            object.insert("origin".to_owned(), json!(REMOTE));
            let rules = self.version.rules().unwrap();
            let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(fields).unwrap() else {
                panic!()
            };
            hash_and_sign_event(REMOTE, &self.peer.key.keypair, &mut object, &rules.redaction).unwrap();
            let id = format!("${}", reference_hash(&object, &rules).unwrap());
            (id, serde_json::to_value(&object).unwrap())
        }

        /// Hand PDUs to the room server as the federation API does; their outcomes.
        pub async fn send(&self, s: &Server, pdus: Vec<Value>) -> Vec<PduOutcome> {
            let request = InputRequest::InputPdus(InputPdus {
                origin: REMOTE.try_into().unwrap(),
                room_id: self.room_id.as_str().try_into().unwrap(),
                kind: PduKind::Timeline,
                pdus,
            });
            let reply: InputReply =
                s.bus.request_json(INPUT_TOPIC, &self.room_id, &request, REQUEST_TIMEOUT).await.unwrap();
            match reply.unwrap() {
                InputOk::PdusProcessed { results } => results.into_iter().map(|r| r.outcome).collect(),
                other => panic!("unexpected reply {other:?}"),
            }
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    }
}

/// Rejected and soft-failed PDUs from another server never push, and a
/// remote member is never pushed by this server (no notification, hence no
/// counts for them), while what the remote member sends pushes the locals.
#[tokio::test]
async fn remote_users_and_rejected_or_soft_failed_events_never_push() {
    use myelin_pusher::api::{COUNTS_TOPIC, RoomCounts};
    use myelin_roomserver::api::PduOutcome;
    use remote::{REMOTE, Remote};
    for s in servers().await {
        let at = s.name;
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        s.gateway_pusher(&alice, "alice", None).await;
        s.gateway_pusher(&bob, "bob", None).await;
        let room = s.create_room(&alice, json!({"preset": "public_chat"})).await;
        s.join(&bob, &room).await;
        let remote = Remote::start(&s, &room).await;
        let rob = format!("@rob:{REMOTE}");
        let power_levels = Remote::state_of(&s, &room, "m.room.power_levels", "").await.event_id.to_string();
        let join_rules = Remote::state_of(&s, &room, "m.room.join_rules", "").await.event_id.to_string();

        // Rob of the remote server joins.
        let bob_join = Remote::state_of(&s, &room, "m.room.member", "@bob:localhost").await;
        let join = json!({"type": "m.room.member", "state_key": rob, "sender": rob, "content": {"membership": "join"}});
        let (rob_join_id, rob_join) = remote.pdu(&s, join, &bob_join, &[&power_levels, &join_rules]).await;
        assert_eq!(remote.send(&s, vec![rob_join]).await, [PduOutcome::Accepted], "[{at}]");
        let rob_join = Remote::state_of(&s, &room, "m.room.member", &rob).await;
        assert_eq!(rob_join.event_id.as_str(), rob_join_id, "[{at}]");

        // Rejected: a message from someone who never joined. Then rob's, which pushes.
        let stranger = format!("@stranger:{REMOTE}");
        let message =
            |sender: &str, body: &str| json!({"type": "m.room.message", "sender": sender, "content": text(body)});
        let (rejected, rejected_pdu) =
            remote.pdu(&s, message(&stranger, "not a member"), &rob_join, &[&power_levels]).await;
        let (from_rob, from_rob_pdu) =
            remote.pdu(&s, message(&rob, "hello from afar"), &rob_join, &[&power_levels, &rob_join_id]).await;
        let outcomes = remote.send(&s, vec![rejected_pdu, from_rob_pdu]).await;
        assert!(matches!(outcomes[0], PduOutcome::Rejected { .. }), "[{at}] {outcomes:?}");
        assert_eq!(outcomes[1], PduOutcome::Accepted, "[{at}]");
        s.gateway.wait_for("bob", &from_rob).await;
        s.gateway.wait_for("alice", &from_rob).await;
        assert_eq!(s.gateway.events_to("bob"), std::slice::from_ref(&from_rob), "[{at}] a rejected event");

        // Soft-failed: alice bans rob, who sends from the state before the ban.
        let ban = json!({"membership": "ban"});
        s.ok(Method::PUT, &format!("/rooms/{room}/state/m.room.member/{rob}"), &alice, Some(ban)).await;
        let (soft_failed, soft_failed_pdu) =
            remote.pdu(&s, message(&rob, "after the ban"), &rob_join, &[&power_levels, &rob_join_id]).await;
        let outcomes = remote.send(&s, vec![soft_failed_pdu]).await;
        assert!(matches!(outcomes[0], PduOutcome::SoftFailed { .. }), "[{at}] {outcomes:?}");
        let after = s.send(&alice, &room, text("after the soft failure")).await;
        s.gateway.wait_for("bob", &after).await;
        assert_eq!(s.gateway.events_to("bob"), [from_rob.clone(), after.clone()], "[{at}] a soft-failed event");
        assert!(!s.gateway.events_to("alice").contains(&rejected), "[{at}]");
        assert!(!s.gateway.events_to("alice").contains(&soft_failed), "[{at}]");

        // A remote member: bob's counts follow every push, rob has none, ever.
        // The pusher handles the room's events in order, so once bob's count
        // for the last one is published, anything for rob before it was too.
        let mut consumer = s.bus.backend().consumer("test.counts", COUNTS_TOPIC).await.unwrap();
        let mut counted = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !counted.iter().any(|c: &RoomCounts| c.user_id.as_str() == "@bob:localhost" && c.notification_count == 2)
        {
            assert!(Instant::now() < deadline, "[{at}] bob's counts never reached 2: {counted:?}");
            if let Ok(batch) = tokio::time::timeout(Duration::from_millis(200), consumer.next_batch(100)).await {
                counted.extend(batch.unwrap().iter().map(|r| r.json::<RoomCounts>().unwrap()));
            }
        }
        while let Ok(batch) = tokio::time::timeout(Duration::from_millis(500), consumer.next_batch(100)).await {
            counted.extend(batch.unwrap().iter().map(|r| r.json::<RoomCounts>().unwrap()));
        }
        assert!(counted.iter().all(|c| c.user_id.server_name() == "localhost"), "[{at}] {counted:?}");
    }
}
