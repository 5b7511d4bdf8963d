//! The few Client-Server API calls the scenarios need.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    pub user_id: String,
}

/// One reply: its JSON body and its size in bytes.
pub struct Reply {
    pub body: Value,
    pub bytes: usize,
}

impl Client {
    /// Registers `localpart` through `/_synapse/admin/v1/register`.
    pub async fn register(http: &reqwest::Client, base: &str, secret: &str, localpart: &str) -> Result<Self> {
        let endpoint = format!("{base}/_synapse/admin/v1/register");
        let nonce: Value = http.get(&endpoint).send().await?.error_for_status()?.json().await?;
        let nonce = nonce["nonce"].as_str().context("no nonce")?;
        let password = format!("{localpart}-password");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())?;
        mac.update(format!("{nonce}\0{localpart}\0{password}\0notadmin").as_bytes());
        let body = json!({
            "nonce": nonce, "username": localpart, "password": password, "admin": false,
            "mac": hex::encode(mac.finalize().into_bytes()),
        });
        let response = http.post(&endpoint).json(&body).send().await?;
        let status = response.status();
        let reply: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("register {localpart}: {status} {reply}");
        }
        let token = reply["access_token"].as_str().context("no access token")?.to_owned();
        let user_id = reply["user_id"].as_str().context("no user_id")?.to_owned();
        Ok(Self { http: http.clone(), base: base.to_owned(), token, user_id })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Reply> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{path}: request failed"))?;
        let status = response.status();
        let bytes = response.bytes().await.with_context(|| format!("{path}: reading the body"))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(Reply { body, bytes: bytes.len() })
    }

    pub async fn create_room(&self, body: Value) -> Result<String> {
        let reply = self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", &[], Some(body)).await?;
        Ok(reply.body["room_id"].as_str().context("no room_id")?.to_owned())
    }

    pub async fn join(&self, room_id: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/join");
        self.call(reqwest::Method::POST, &path, &[], Some(json!({}))).await?;
        Ok(())
    }

    /// `POST /join/{roomId}?server_name=…`: a join through another server.
    pub async fn join_via(&self, room_id: &str, server: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/join/{}", encode(room_id));
        self.call(reqwest::Method::POST, &path, &[("server_name", server)], Some(json!({}))).await?;
        Ok(())
    }

    /// The number of members `GET /rooms/{roomId}/joined_members` lists.
    pub async fn joined_member_count(&self, room_id: &str) -> Result<usize> {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", encode(room_id));
        let reply = self.call(reqwest::Method::GET, &path, &[], None).await?;
        Ok(reply.body["joined"].as_object().map_or(0, |joined| joined.len()))
    }

    /// An http pusher keyed `pushkey` at the push gateway `url`.
    pub async fn set_http_pusher(&self, pushkey: &str, url: &str) -> Result<()> {
        let body = json!({"kind": "http", "app_id": "org.example.bench", "pushkey": pushkey,
            "app_display_name": "bench", "device_display_name": "bench", "lang": "en", "data": {"url": url}});
        self.call(reqwest::Method::POST, "/_matrix/client/v3/pushers/set", &[], Some(body)).await?;
        Ok(())
    }

    pub async fn send_text(&self, room_id: &str, txn_id: &str, body: &str) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn_id}");
        let reply =
            self.call(reqwest::Method::PUT, &path, &[], Some(json!({"msgtype": "m.text", "body": body}))).await?;
        Ok(reply.body["event_id"].as_str().context("no event_id")?.to_owned())
    }

    /// One `/sync` with an optional inline filter.
    pub async fn sync_filtered(&self, since: Option<&str>, timeout_ms: u64, filter: Option<&str>) -> Result<Reply> {
        let timeout = timeout_ms.to_string();
        let mut query = vec![("timeout", timeout.as_str())];
        if let Some(since) = since {
            query.push(("since", since));
        }
        if let Some(filter) = filter {
            query.push(("filter", filter));
        }
        let reply = self.call(reqwest::Method::GET, "/_matrix/client/v3/sync", &query, None).await?;
        reply.body["next_batch"].as_str().context("no next_batch")?;
        Ok(reply)
    }

    /// One `/sync`; returns `next_batch` and the response.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Result<(String, Value)> {
        let reply = self.sync_filtered(since, timeout_ms, None).await?;
        let next = reply.body["next_batch"].as_str().unwrap_or_default().to_owned();
        Ok((next, reply.body))
    }

    /// One page of `/messages` backwards from `from` (or from the newest event).
    pub async fn messages_back(&self, room_id: &str, from: Option<&str>, limit: usize) -> Result<Value> {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/messages");
        let limit = limit.to_string();
        let mut query = vec![("dir", "b"), ("limit", limit.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        Ok(self.call(reqwest::Method::GET, &path, &query, None).await?.body)
    }

    /// Long-polls from `since` until a timeline event with `body` arrives;
    /// returns the new token and when the event arrived.
    pub async fn sync_until_body(&self, since: &str, body: &str) -> Result<(String, Instant)> {
        let mut since = since.to_owned();
        for _ in 0..100 {
            let (next, reply) = self.sync(Some(&since), 30_000).await?;
            let arrived = Instant::now();
            let found = reply["rooms"]["join"].as_object().into_iter().flat_map(|rooms| rooms.values()).any(|room| {
                room["timeline"]["events"].as_array().into_iter().flatten().any(|e| e["content"]["body"] == body)
            });
            if found {
                return Ok((next, arrived));
            }
            since = next;
        }
        bail!("event {body:?} never arrived through /sync")
    }

    /// Long-polls from `since` with `filter` until `found` holds for a
    /// response, or `deadline` passes; returns when that response arrived.
    pub async fn sync_until(
        &self,
        since: &str,
        filter: &str,
        deadline: Instant,
        found: impl Fn(&Value) -> bool,
    ) -> Result<Instant> {
        let mut since = since.to_owned();
        while Instant::now() < deadline {
            let reply = self.sync_filtered(Some(&since), 30_000, Some(filter)).await?;
            let arrived = Instant::now();
            if found(&reply.body) {
                return Ok(arrived);
            }
            since = reply.body["next_batch"].as_str().unwrap_or_default().to_owned();
        }
        bail!("what was awaited never arrived through /sync")
    }
}

/// Percent-encodes a path segment (room ids carry `!` and `:`).
fn encode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
