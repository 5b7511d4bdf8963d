//! The pusher over a real embedded bus on SQLite and PostgreSQL, with the
//! real client API (accounts through shared-secret registration, logins,
//! logouts, token lookups) and the real sync API (which serves the
//! `m.push_rules` account data the pusher publishes), all served on one
//! loopback port and driven over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use myelin_bus::{Bus, EmbeddedBackend, Shutdown, ShutdownTrigger};
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::SystemClock;
use reqwest::Method;
use serde_json::{Value, json};
use sha1::Sha1;

const WAIT: Duration = Duration::from_secs(15);
const SHARED_SECRET: &str = "test shared secret";
const PASSWORD: &str = "correct horse battery staple";
const GATEWAY: &str = "https://push.example.org/_matrix/push/v1/notify";

struct Server {
    name: &'static str,
    base: String,
    http: reqwest::Client,
    _trigger: ShutdownTrigger,
    _db: TestDb,
}

async fn servers() -> Vec<Server> {
    let mut out = Vec::new();
    for db in TestDb::both().await {
        out.push(Server::start(db).await);
    }
    out
}

impl Server {
    async fn start(test_db: TestDb) -> Self {
        let db = Db::connect(&test_db.url).await.unwrap();
        let backend = EmbeddedBackend::open(db.clone(), 8).await.unwrap();
        let bus = Bus::new(Arc::new(backend), Arc::new(SystemClock));
        let (trigger, shutdown) = Shutdown::new();
        let mut config = myelin_config::Config::default();
        config.global.server_name = "localhost".to_owned();
        config.client_api.registration_shared_secret = Some(SHARED_SECRET.to_owned());
        let config = Arc::new(config);
        let clientapi =
            myelin_clientapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let syncapi =
            myelin_syncapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let pusher = myelin_pusher::service::start(config, db, bus, shutdown).await.unwrap();
        let router = clientapi.router.merge(syncapi.router).merge(pusher.router);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            name: test_db.name,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _trigger: trigger,
            _db: test_db,
        }
    }

    /// Register `localpart` through the shared-secret endpoint; its access token.
    async fn register(&self, localpart: &str) -> String {
        let url = format!("{}/_synapse/admin/v1/register", self.base);
        let nonce: Value = self.http.get(&url).send().await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap().to_owned();
        let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).unwrap();
        mac.update(format!("{nonce}\0{localpart}\0{PASSWORD}\0notadmin").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body = json!({"nonce": nonce, "username": localpart, "password": PASSWORD, "admin": false, "mac": mac});
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
