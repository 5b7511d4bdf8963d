//! The few Client-Server API calls the scenarios need.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
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
        let reply: Value = http.post(&endpoint).json(&body).send().await?.error_for_status()?.json().await?;
        let token = reply["access_token"].as_str().context("no access token")?.to_owned();
        Ok(Self { http: http.clone(), base: base.to_owned(), token })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    pub async fn create_room(&self, body: Value) -> Result<String> {
        let reply = self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(body)).await?;
        Ok(reply["room_id"].as_str().context("no room_id")?.to_owned())
    }

    pub async fn join(&self, room_id: &str) -> Result<()> {
        self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/rooms/{room_id}/join"), Some(json!({}))).await?;
        Ok(())
    }

    pub async fn send_text(&self, room_id: &str, txn_id: &str, body: &str) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn_id}");
        let reply = self.call(reqwest::Method::PUT, &path, Some(json!({"msgtype": "m.text", "body": body}))).await?;
        Ok(reply["event_id"].as_str().context("no event_id")?.to_owned())
    }

    /// One `/sync`; returns `next_batch` and the response.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Result<(String, Value)> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let reply = self.call(reqwest::Method::GET, &path, None).await?;
        let next = reply["next_batch"].as_str().context("no next_batch")?.to_owned();
        Ok((next, reply))
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
}
