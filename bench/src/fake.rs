//! A remote homeserver the federation scenarios play: its own server name
//! (`127.0.0.1:<port>`), an ed25519 signing key, and just enough of the
//! Server-Server API over HTTPS for the target to join its rooms and fetch
//! what it is missing. It signs and hashes its events and X-Matrix-signs
//! its requests; it does not check the target's signatures (it is a load
//! generator, and the target is the server under test).
//!
//! Rooms are version 10 (both Myelin and Synapse join those) and linear:
//! every event has the previous one as its only `prev_events`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use myelin_types::ruma::signatures::{hash_and_sign_event, reference_hash, sign_event, sign_json};
use myelin_types::ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use myelin_types::signing::ServerSigningKey;
use serde::Deserialize;
use serde_json::{Value, json};

const ROOM_VERSION: RoomVersionId = RoomVersionId::V10;

/// Writes a test CA (`ca.pem`, for the target to trust) and a certificate
/// for `127.0.0.1` and `localhost` it signed (`tls.crt`, `tls.key`, for
/// the fake server) into `dir`.
pub fn write_pki(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Myelin bench CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&leaf_key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("tls.crt"), leaf.pem())?;
    std::fs::write(dir.join("tls.key"), leaf_key.serialize_pem())?;
    Ok(())
}

/// One room as its only resident server sees it.
struct Room {
    events: HashMap<String, Value>,
    /// Event ids in the order they were added (the room is linear).
    order: Vec<String>,
    /// Current state: `(type, state_key)` to event id.
    state: BTreeMap<(String, String), String>,
    latest: String,
    depth: u64,
}

impl Room {
    fn state_id(&self, event_type: &str, state_key: &str) -> Option<String> {
        self.state.get(&(event_type.to_owned(), state_key.to_owned())).cloned()
    }

    /// The current state events of `keys`, to cite as auth events.
    fn cite(&self, keys: &[(&str, &str)]) -> Result<Vec<String>> {
        keys.iter()
            .map(|(event_type, state_key)| {
                self.state_id(event_type, state_key).with_context(|| format!("no {event_type} {state_key} in the room"))
            })
            .collect()
    }

    fn add(&mut self, id: String, pdu: Value) {
        if let (Some(event_type), Some(state_key)) = (pdu["type"].as_str(), pdu["state_key"].as_str()) {
            self.state.insert((event_type.to_owned(), state_key.to_owned()), id.clone());
        }
        self.depth = self.depth.max(pdu["depth"].as_u64().unwrap_or(0));
        self.latest = id.clone();
        self.order.push(id.clone());
        self.events.insert(id, pdu);
    }

    /// The state before `event_id`, replayed from the start of the room.
    fn state_before(&self, event_id: &str) -> Option<Vec<String>> {
        let position = self.order.iter().position(|id| id == event_id)?;
        let mut state = BTreeMap::new();
        for id in &self.order[..position] {
            let pdu = &self.events[id];
            if let (Some(event_type), Some(state_key)) = (pdu["type"].as_str(), pdu["state_key"].as_str()) {
                state.insert((event_type, state_key), id.clone());
            }
        }
        Some(state.into_values().collect())
    }

    /// Every event the `events` cite through `auth_events`, transitively.
    fn auth_chain<'a>(&self, events: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = events.into_iter().cloned().collect();
        while let Some(id) = pending.pop() {
            for auth in self.events.get(&id).and_then(|pdu| pdu["auth_events"].as_array()).into_iter().flatten() {
                if let Some(auth) = auth.as_str()
                    && seen.insert(auth.to_owned())
                {
                    pending.push(auth.to_owned());
                }
            }
        }
        seen.into_iter().collect()
    }

    fn pdus(&self, ids: &[String]) -> Vec<Value> {
        ids.iter().filter_map(|id| self.events.get(id).cloned()).collect()
    }
}

/// Two conflicting forks and the event that merges them
/// ([`FakeServer::conflicting_forks`]).
pub struct Forks {
    /// Each fork's PDUs, oldest first.
    pub forks: Vec<Vec<Value>>,
    /// The id of each fork's newest event.
    pub tips: Vec<String>,
    pub merge: Value,
    pub merge_id: String,
}

pub struct FakeServer {
    /// `127.0.0.1:<port>`.
    pub name: String,
    key: ServerSigningKey,
    rooms: Mutex<HashMap<String, Room>>,
    http: reqwest::Client,
    /// The target's federation base URL and server name.
    target_url: String,
    target_name: String,
    txn: std::sync::atomic::AtomicU64,
}

impl FakeServer {
    /// Serves the fake over HTTPS on a free loopback port with the
    /// certificate in `tls_dir` (see [`write_pki`]).
    pub async fn start(tls_dir: &Path, target_url: &str, target_name: &str) -> Result<Arc<Self>> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let tls =
            axum_server::tls_rustls::RustlsConfig::from_pem_file(tls_dir.join("tls.crt"), tls_dir.join("tls.key"))
                .await
                .with_context(|| format!("reading the certificate in {}", tls_dir.display()))?;
        let listener = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))?;
        listener.set_nonblocking(true)?;
        let name = format!("127.0.0.1:{}", listener.local_addr()?.port());
        let server = Arc::new(Self {
            name,
            key: ServerSigningKey::parse(&ServerSigningKey::generate_file_contents())?,
            rooms: Mutex::new(HashMap::new()),
            // The target's own federation certificate is whatever it
            // generated for itself; the target is not what is under scrutiny here.
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(std::time::Duration::from_secs(600))
                .build()?,
            target_url: target_url.trim_end_matches('/').to_owned(),
            target_name: target_name.to_owned(),
            txn: Default::default(),
        });
        let app = Router::new()
            .route("/_matrix/key/v2/server", get(server_keys))
            .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(make_join))
            .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(send_join))
            .route("/_matrix/federation/v1/event/{event_id}", get(event))
            .route("/_matrix/federation/v1/state_ids/{room_id}", get(state_ids))
            .route("/_matrix/federation/v1/state/{room_id}", get(state))
            .route("/_matrix/federation/v1/get_missing_events/{room_id}", post(missing_events))
            .route("/_matrix/federation/v1/send/{txn_id}", put(|| async { Json(json!({"pdus": {}})) }))
            .fallback(|| async { not_found("not served by the load generator's fake server") })
            .with_state(server.clone());
        let serve = axum_server::from_tcp_rustls(listener, tls).serve(app.into_make_service());
        tokio::spawn(async move {
            if let Err(error) = serve.await {
                eprintln!("fake server stopped: {error}");
            }
        });
        Ok(server)
    }

    /// The fake's user `@<localpart>:<its name>`.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// A public room created by `@creator` with `members` more of the
    /// fake's users joined; returns its id.
    pub fn create_room(&self, members: usize) -> Result<String> {
        let room_id = format!("!{}:{}", myelin_types::random::alphanumeric(18), self.name);
        let creator = self.user("creator");
        let mut room =
            Room { events: HashMap::new(), order: Vec::new(), state: BTreeMap::new(), latest: String::new(), depth: 0 };
        let state = |event_type: &str, state_key: &str, content: Value| json!({"type": event_type, "state_key": state_key, "sender": creator, "content": content});
        let create = state("m.room.create", "", json!({"creator": creator, "room_version": ROOM_VERSION.as_str()}));
        self.append(&room_id, &mut room, create, &[])?;
        let create = room.latest.clone();
        self.append(&room_id, &mut room, state("m.room.member", &creator, json!({"membership": "join"})), &[&create])?;
        let creator_join = room.latest.clone();
        let power_levels = json!({"users": {&creator: 100}, "users_default": 0, "events_default": 0,
            "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0});
        self.append(&room_id, &mut room, state("m.room.power_levels", "", power_levels), &[&create, &creator_join])?;
        let power_levels = room.latest.clone();
        let join_rules = state("m.room.join_rules", "", json!({"join_rule": "public"}));
        self.append(&room_id, &mut room, join_rules, &[&create, &power_levels, &creator_join])?;
        let join_rules = room.latest.clone();
        for n in 0..members {
            let user = self.user(&format!("m{n}"));
            let join = json!({"type": "m.room.member", "state_key": user, "sender": user,
                "content": {"membership": "join"}});
            self.append(&room_id, &mut room, join, &[&create, &power_levels, &join_rules])?;
        }
        self.rooms.lock().expect("rooms lock").insert(room_id.clone(), room);
        Ok(room_id)
    }

    /// `count` messages from the room's creator, each on top of the one
    /// before, added to the room; returns the PDUs in order and the last one's id.
    pub fn messages(&self, room_id: &str, count: usize, tag: &str) -> Result<(Vec<Value>, String)> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let room = rooms.get_mut(room_id).context("no such room")?;
        let creator = self.user("creator");
        let cite = |event_type: &str, state_key: &str| {
            room.state_id(event_type, state_key).with_context(|| format!("no {event_type} in the room"))
        };
        let auth = [cite("m.room.create", "")?, cite("m.room.power_levels", "")?, cite("m.room.member", &creator)?];
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let mut pdus = Vec::with_capacity(count);
        for n in 0..count {
            let message = json!({"type": "m.room.message", "sender": creator,
                "content": {"msgtype": "m.text", "body": format!("{tag} {n}")}});
            self.append(room_id, room, message, &auth)?;
            pdus.push(room.events[&room.latest].clone());
        }
        Ok((pdus, room.latest.clone()))
    }

    /// Two forks off the room's newest event, each of `changes` member
    /// events in which members `m0`, `m1`… change their display names (the
    /// same members on both forks, so every change conflicts with its twin),
    /// and a message from the creator on top of both forks. The room goes on
    /// from the merging message.
    pub fn conflicting_forks(&self, room_id: &str, changes: usize) -> Result<Forks> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let room = rooms.get_mut(room_id).context("no such room")?;
        let base = (room.latest.clone(), room.depth, room.state.clone());
        let (mut forks, mut tips) = (Vec::new(), Vec::new());
        for tag in ["a", "b"] {
            (room.latest, room.depth, room.state) = base.clone();
            let mut pdus = Vec::with_capacity(changes);
            for n in 0..changes {
                let user = self.user(&format!("m{n}"));
                let auth = room.cite(&[
                    ("m.room.create", ""),
                    ("m.room.power_levels", ""),
                    ("m.room.join_rules", ""),
                    ("m.room.member", &user),
                ])?;
                let change = json!({"type": "m.room.member", "state_key": user, "sender": user,
                    "content": {"membership": "join", "displayname": format!("{tag}{n}")}});
                let prev = vec![room.latest.clone()];
                self.append_after(room_id, room, change, &auth, &prev)?;
                pdus.push(room.events[&room.latest].clone());
            }
            forks.push(pdus);
            tips.push(room.latest.clone());
        }
        let creator = self.user("creator");
        // The creator's own state is the same on both forks.
        let auth = room.cite(&[("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", &creator)])?;
        let message = json!({"type": "m.room.message", "sender": creator,
            "content": {"msgtype": "m.text", "body": "on top of both forks"}});
        self.append_after(room_id, room, message, &auth, &tips)?;
        Ok(Forks { forks, tips, merge: room.events[&room.latest].clone(), merge_id: room.latest.clone() })
    }

    /// Signs and hashes `fields` as the next event of `room`, citing `auth`.
    fn append(&self, room_id: &str, room: &mut Room, fields: Value, auth: &[&str]) -> Result<()> {
        let prev = if room.latest.is_empty() { Vec::new() } else { vec![room.latest.clone()] };
        let auth: Vec<String> = auth.iter().map(|id| (*id).to_owned()).collect();
        self.append_after(room_id, room, fields, &auth, &prev)
    }

    /// Signs and hashes `fields` as an event of `room` on top of `prev`, citing `auth`.
    fn append_after(
        &self,
        room_id: &str,
        room: &mut Room,
        fields: Value,
        auth: &[String],
        prev: &[String],
    ) -> Result<()> {
        let mut fields = fields;
        let object = fields.as_object_mut().context("event fields are an object")?;
        object.insert("room_id".to_owned(), json!(room_id));
        object.insert("prev_events".to_owned(), json!(prev));
        object.insert("auth_events".to_owned(), json!(auth));
        object.insert("depth".to_owned(), json!(room.depth + 1));
        object.insert("origin".to_owned(), json!(self.name));
        object.insert("origin_server_ts".to_owned(), json!(crate::now_ms() as u64));
        let mut object = canonical(fields)?;
        let rules = ROOM_VERSION.rules().context("room version rules")?;
        hash_and_sign_event(&self.name, &self.key.keypair, &mut object, &rules.redaction)?;
        let id = format!("${}", reference_hash(&object, &rules)?);
        room.add(id, Value::from(CanonicalJsonValue::Object(object)));
        Ok(())
    }

    /// `PUT /_matrix/federation/v1/send/{txnId}` of `pdus` to the target;
    /// returns the PDUs it did not accept (id and error).
    pub async fn send_transaction(&self, pdus: &[Value]) -> Result<Vec<(String, String)>> {
        let txn_id = format!("{}-{}", crate::now_ms(), self.txn.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let body = json!({"origin": self.name, "origin_server_ts": crate::now_ms() as u64, "pdus": pdus});
        let reply = self.request(reqwest::Method::PUT, &format!("/_matrix/federation/v1/send/{txn_id}"), body).await?;
        let failed = reply["pdus"].as_object().into_iter().flatten();
        Ok(failed
            .filter(|(_, outcome)| outcome.get("error").is_some())
            .map(|(id, outcome)| (id.clone(), outcome["error"].to_string()))
            .collect())
    }

    /// An X-Matrix-signed request to the target.
    async fn request(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let mut signed = canonical(json!({"method": method.as_str(), "uri": path, "origin": self.name,
            "destination": self.target_name, "content": body}))?;
        sign_json(&self.name, &self.key.keypair, &mut signed)?;
        let signature = Value::from(CanonicalJsonValue::Object(signed))["signatures"][&self.name][self.key.key_id()]
            .as_str()
            .context("no signature")?
            .to_owned();
        let authorization = format!(
            "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{signature}\"",
            self.name,
            self.target_name,
            self.key.key_id()
        );
        let response = self
            .http
            .request(method, format!("{}{path}", self.target_url))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{path}: request failed"))?;
        let status = response.status();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {reply}");
        }
        Ok(reply)
    }

    fn room<T>(&self, room_id: &str, read: impl FnOnce(&mut Room) -> T) -> Result<T, Reject> {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        rooms.get_mut(room_id).map(read).ok_or_else(|| not_found("unknown room"))
    }
}

fn canonical(value: Value) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value)? {
        CanonicalJsonValue::Object(object) => Ok(object),
        _ => bail!("not a JSON object"),
    }
}

/// An error answer in the spec's shape: status, `errcode`, `error`.
struct Reject(StatusCode, &'static str, String);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let Self(status, errcode, error) = self;
        (status, Json(json!({"errcode": errcode, "error": error}))).into_response()
    }
}

fn not_found(message: &str) -> Reject {
    Reject(StatusCode::NOT_FOUND, "M_NOT_FOUND", message.to_owned())
}

fn bad_request(message: &str) -> Reject {
    Reject(StatusCode::BAD_REQUEST, "M_BAD_JSON", message.to_owned())
}

/// `GET /_matrix/key/v2/server`
async fn server_keys(State(server): State<Arc<FakeServer>>) -> Result<Json<Value>, Reject> {
    let keys = json!({
        "server_name": server.name,
        "valid_until_ts": crate::now_ms() as u64 + 24 * 3600 * 1000,
        "verify_keys": {server.key.key_id(): {"key": server.key.public_key_base64()}},
        "old_verify_keys": {},
    });
    let mut keys = canonical(keys).map_err(|e| bad_request(&e.to_string()))?;
    sign_json(&server.name, &server.key.keypair, &mut keys).map_err(|e| bad_request(&e.to_string()))?;
    Ok(Json(Value::from(CanonicalJsonValue::Object(keys))))
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`: a join
/// template on top of the room's newest event.
async fn make_join(
    State(server): State<Arc<FakeServer>>,
    UrlPath((room_id, user_id)): UrlPath<(String, String)>,
) -> Result<Json<Value>, Reject> {
    let origin = user_id.split_once(':').map(|(_, server)| server.to_owned()).unwrap_or_default();
    server.room(&room_id, |room| {
        let auth: Vec<String> = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")]
            .iter()
            .filter_map(|(event_type, state_key)| room.state_id(event_type, state_key))
            .collect();
        Json(json!({"room_version": ROOM_VERSION.as_str(), "event": {
            "type": "m.room.member", "room_id": room_id, "sender": user_id, "state_key": user_id,
            "content": {"membership": "join"}, "origin": origin, "origin_server_ts": crate::now_ms() as u64,
            "prev_events": [room.latest], "auth_events": auth, "depth": room.depth + 1,
        }}))
    })
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`: the fake
/// counter-signs the join, adds it to the room and answers with the
/// room's full state (members are never omitted) and its auth chain.
async fn send_join(
    State(server): State<Arc<FakeServer>>,
    UrlPath((room_id, event_id)): UrlPath<(String, String)>,
    Json(event): Json<Value>,
) -> Result<Json<Value>, Reject> {
    let rules = ROOM_VERSION.rules().ok_or_else(|| bad_request("room version rules"))?;
    let mut object = canonical(event).map_err(|e| bad_request(&e.to_string()))?;
    if reference_hash(&object, &rules).map(|hash| format!("${hash}")).ok().as_deref() != Some(event_id.as_str()) {
        return Err(bad_request("the event id is not the event's reference hash"));
    }
    sign_event(&server.name, &server.key.keypair, &mut object, &rules.redaction)
        .map_err(|e| bad_request(&e.to_string()))?;
    let event = Value::from(CanonicalJsonValue::Object(object));
    server.room(&room_id, |room| {
        let state: Vec<String> = room.state.values().cloned().collect();
        let auth_chain = room.auth_chain(&state);
        let answer = json!({
            "origin": server.name,
            "event": event,
            "state": room.pdus(&state),
            "auth_chain": room.pdus(&auth_chain),
            "members_omitted": false,
        });
        room.add(event_id, event);
        Json(answer)
    })
}

/// `GET /_matrix/federation/v1/event/{eventId}`
async fn event(
    State(server): State<Arc<FakeServer>>,
    UrlPath(event_id): UrlPath<String>,
) -> Result<Json<Value>, Reject> {
    let rooms = server.rooms.lock().expect("rooms lock");
    let pdu = rooms.values().find_map(|room| room.events.get(&event_id)).ok_or_else(|| not_found("unknown event"))?;
    Ok(Json(json!({"origin": server.name, "origin_server_ts": crate::now_ms() as u64, "pdus": [pdu]})))
}

#[derive(Deserialize)]
struct AtEvent {
    event_id: String,
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=…`
async fn state_ids(
    State(server): State<Arc<FakeServer>>,
    UrlPath(room_id): UrlPath<String>,
    Query(at): Query<AtEvent>,
) -> Result<Json<Value>, Reject> {
    server.room(&room_id, |room| {
        let state = room.state_before(&at.event_id).ok_or_else(|| not_found("unknown event"))?;
        let auth_chain = room.auth_chain(&state);
        Ok(Json(json!({"pdu_ids": state, "auth_chain_ids": auth_chain})))
    })?
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=…`
async fn state(
    State(server): State<Arc<FakeServer>>,
    UrlPath(room_id): UrlPath<String>,
    Query(at): Query<AtEvent>,
) -> Result<Json<Value>, Reject> {
    server.room(&room_id, |room| {
        let state = room.state_before(&at.event_id).ok_or_else(|| not_found("unknown event"))?;
        let auth_chain = room.auth_chain(&state);
        Ok(Json(json!({"pdus": room.pdus(&state), "auth_chain": room.pdus(&auth_chain)})))
    })?
}

#[derive(Deserialize)]
struct MissingEvents {
    #[serde(default)]
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    #[serde(default = "ten")]
    limit: usize,
}

fn ten() -> usize {
    10
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`: the events
/// before `latest_events` back to `earliest_events`, oldest first.
async fn missing_events(
    State(server): State<Arc<FakeServer>>,
    UrlPath(room_id): UrlPath<String>,
    Json(request): Json<MissingEvents>,
) -> Result<Json<Value>, Reject> {
    server.room(&room_id, |room| {
        let earliest: HashSet<&String> = request.earliest_events.iter().collect();
        let mut found = Vec::new();
        let mut pending: Vec<String> = request.latest_events.clone();
        let mut seen = HashSet::new();
        while let Some(id) = pending.pop() {
            for prev in room.events.get(&id).and_then(|pdu| pdu["prev_events"].as_array()).into_iter().flatten() {
                let Some(prev) = prev.as_str().map(str::to_owned) else { continue };
                if found.len() < request.limit && !earliest.contains(&prev) && seen.insert(prev.clone()) {
                    found.push(prev.clone());
                    pending.push(prev);
                }
            }
        }
        found.reverse();
        Json(json!({"events": room.pdus(&found)}))
    })
}

#[cfg(test)]
mod tests {
    use myelin_types::ruma::serde::Base64;
    use myelin_types::ruma::signatures::{PublicKeyMap, Verified, verify_event};

    use super::*;

    async fn fake() -> (Arc<FakeServer>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("myelin-bench-pki-{}-{}", std::process::id(), crate::now_ms()));
        write_pki(&dir).unwrap();
        // No target: these tests only ask the fake itself.
        (FakeServer::start(&dir, "https://127.0.0.1:1", "localhost").await.unwrap(), dir)
    }

    /// Every event cites the one before, is named by its reference hash
    /// and carries a valid hash and signature of the fake's key.
    #[tokio::test]
    async fn events_are_chained_hashed_and_signed() {
        let (fake, dir) = fake().await;
        let room = fake.create_room(2).unwrap();
        let (pdus, last) = fake.messages(&room, 3, "m").unwrap();
        let rules = ROOM_VERSION.rules().unwrap();
        let keys: PublicKeyMap =
            [(fake.name.clone(), [(fake.key.key_id(), Base64::parse(fake.key.public_key_base64()).unwrap())].into())]
                .into();
        let mut previous: Option<String> = None;
        for pdu in &pdus {
            let object = canonical(pdu.clone()).unwrap();
            assert_eq!(verify_event(&keys, &object, &rules).unwrap(), Verified::All);
            if let Some(previous) = &previous {
                assert_eq!(pdu["prev_events"], json!([previous]));
            }
            previous = Some(format!("${}", reference_hash(&object, &rules).unwrap()));
        }
        assert_eq!(previous.as_deref(), Some(last.as_str()));

        // Tampered content no longer matches its hash.
        let mut tampered = canonical(pdus[0].clone()).unwrap();
        tampered.insert("content".to_owned(), CanonicalJsonValue::Object(Default::default()));
        assert_eq!(verify_event(&keys, &tampered, &rules).unwrap(), Verified::Signatures);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The forks start at the same event, change the same members, and the
    /// merging message sits on both tips.
    #[tokio::test]
    async fn conflicting_forks_share_a_parent_and_meet_in_one_message() {
        let (fake, dir) = fake().await;
        let room = fake.create_room(4).unwrap();
        let parent = fake.rooms.lock().unwrap()[&room].latest.clone();
        let forks = fake.conflicting_forks(&room, 3).unwrap();
        assert_eq!(forks.forks.len(), 2);
        for fork in &forks.forks {
            assert_eq!(fork.len(), 3);
            assert_eq!(fork[0]["prev_events"], json!([parent]));
        }
        let keys = |fork: &[Value]| fork.iter().map(|pdu| pdu["state_key"].clone()).collect::<Vec<_>>();
        assert_eq!(keys(&forks.forks[0]), keys(&forks.forks[1]), "the same members change on both forks");
        assert_ne!(forks.forks[0][0]["content"], forks.forks[1][0]["content"]);
        assert_eq!(forks.merge["prev_events"], json!(forks.tips));
        assert!(fake.conflicting_forks(&room, 5).is_err(), "only members can change");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// `/send_join` over HTTPS: a join named by its reference hash is
    /// answered with the room's state and auth chain; one named otherwise
    /// is refused with `M_BAD_JSON`.
    #[tokio::test]
    async fn send_join_answers_state_and_refuses_a_wrong_event_id() {
        let (fake, dir) = fake().await;
        let room = fake.create_room(3).unwrap();
        let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
        let base = format!("https://{}/_matrix/federation", fake.name);
        let user = "@joiner:localhost";
        let template: Value = http
            .get(format!("{base}/v1/make_join/{}/{}", encode(&room), encode(user)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(template["room_version"], "10");
        let mut event = canonical(template["event"].clone()).unwrap();
        let rules = ROOM_VERSION.rules().unwrap();
        let key = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
        hash_and_sign_event("localhost", &key.keypair, &mut event, &rules.redaction).unwrap();
        let event_id = format!("${}", reference_hash(&event, &rules).unwrap());
        let event = Value::from(CanonicalJsonValue::Object(event));

        let wrong = http
            .put(format!("{base}/v2/send_join/{}/{}", encode(&room), encode("$not-its-hash")))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        assert_eq!(wrong.json::<Value>().await.unwrap()["errcode"], "M_BAD_JSON");

        let answer: Value = http
            .put(format!("{base}/v2/send_join/{}/{}", encode(&room), encode(&event_id)))
            .json(&event)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Create, power levels, join rules, the creator and three members.
        assert_eq!(answer["state"].as_array().unwrap().len(), 7, "{answer}");
        assert_eq!(answer["auth_chain"].as_array().unwrap().len(), 4, "{answer}");
        assert!(answer["event"]["signatures"][&fake.name].is_object(), "counter-signed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn encode(segment: &str) -> String {
        form_urlencoded::byte_serialize(segment.as_bytes()).collect()
    }
}
