//! A user's push rules: read (the server defaults until the user changes
//! something), changed (compare and swap on the stored version, retried),
//! and published as `m.push_rules` account data after every change.
//! Evaluation reads them through a per-user cache, dropped on every change
//! this process makes and on every `m.push_rules` record it consumes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use myelin_bus::Bus;
use myelin_types::ruma::push::Ruleset;
use myelin_types::ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::PusherError;
use crate::producers;
use crate::storage::Storage;

/// Compare-and-swap attempts before a change gives up.
const MAX_ATTEMPTS: usize = 8;

/// The rule kinds of the `global` ruleset, in the order clients list them.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

/// Cached rulesets before the cache starts over, bounding its memory.
const CACHE_CAPACITY: usize = 10_000;

pub struct PushRules {
    pub storage: Arc<Storage>,
    pub bus: Bus,
    cache: Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>,
    /// Bumped by every [`PushRules::forget`], so that a ruleset read before
    /// a change is not cached after it.
    generation: AtomicU64,
}

impl PushRules {
    pub fn new(storage: Arc<Storage>, bus: Bus) -> Self {
        Self { storage, bus, cache: Mutex::default(), generation: AtomicU64::new(0) }
    }

    /// The user's ruleset for evaluation, from the cache when possible.
    pub async fn cached(&self, user_id: &UserId) -> Result<Arc<Ruleset>, PusherError> {
        if let Some(ruleset) = self.cache.lock().expect("rules cache lock").get(user_id) {
            return Ok(ruleset.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let ruleset = Arc::new(self.get(user_id).await?);
        let mut cache = self.cache.lock().expect("rules cache lock");
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(ruleset);
        }
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(user_id.to_owned(), ruleset.clone());
        Ok(ruleset)
    }

    /// Drop the cached ruleset: it changed.
    pub fn forget(&self, user_id: &UserId) {
        let mut cache = self.cache.lock().expect("rules cache lock");
        self.generation.fetch_add(1, Ordering::SeqCst);
        cache.remove(user_id);
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Ruleset, PusherError> {
        Ok(match self.storage.rules(user_id.as_str()).await? {
            Some(stored) => stored.ruleset,
            None => Ruleset::server_default(user_id),
        })
    }

    /// Apply `change` to the user's ruleset, store the result and publish
    /// it. `change` runs again on a fresh copy when another change won the
    /// race; its error leaves everything as it was.
    pub async fn modify<T>(
        &self,
        user_id: &OwnedUserId,
        mut change: impl FnMut(&mut Ruleset) -> Result<T, PusherError>,
    ) -> Result<T, PusherError> {
        for _ in 0..MAX_ATTEMPTS {
            let (mut ruleset, expected) = match self.storage.rules(user_id.as_str()).await? {
                Some(stored) => (stored.ruleset, Some(stored.version)),
                None => (Ruleset::server_default(user_id), None),
            };
            let out = change(&mut ruleset)?;
            if self.storage.swap_rules(user_id.as_str(), &ruleset, expected).await? {
                self.forget(user_id);
                self.publish(user_id).await?;
                return Ok(out);
            }
        }
        Err(PusherError::Contended(user_id.to_string()))
    }

    /// Publish the user's ruleset once, the first time they log in, so
    /// that clients see the defaults in `/sync`. A redelivered login finds
    /// it published and does nothing.
    pub async fn publish_defaults_once(&self, user_id: &OwnedUserId) -> Result<(), PusherError> {
        if self.storage.rules_published(user_id.as_str()).await? {
            return Ok(());
        }
        // `false` when a ruleset is already stored: that one is published.
        self.storage.swap_rules(user_id.as_str(), &Ruleset::server_default(user_id), None).await?;
        self.publish(user_id).await
    }

    /// Publish the stored ruleset. Two publishers can race (a change and a
    /// first login, or two instances); each checks after producing that the
    /// version it sent is still the stored one and sends again otherwise,
    /// so the last record for the user always carries the latest ruleset.
    async fn publish(&self, user_id: &OwnedUserId) -> Result<(), PusherError> {
        let mut current = self.storage.rules(user_id.as_str()).await?;
        while let Some(stored) = current {
            producers::account_data::push_rules(
                &self.bus,
                user_id,
                json!({ "global": ruleset_json(&stored.ruleset)? }),
            )
            .await?;
            current = self.storage.rules(user_id.as_str()).await?;
            if current.as_ref().is_some_and(|now| now.version == stored.version) {
                self.storage.mark_rules_published(user_id.as_str()).await?;
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A ruleset as clients read it: every kind present, even when empty.
pub fn ruleset_json(ruleset: &Ruleset) -> Result<Value, PusherError> {
    let mut value = serde_json::to_value(ruleset).map_err(|e| PusherError::Corrupt(e.to_string()))?;
    if let Value::Object(kinds) = &mut value {
        for kind in KINDS {
            kinds.entry(kind).or_insert_with(|| json!([]));
        }
    }
    Ok(value)
}
