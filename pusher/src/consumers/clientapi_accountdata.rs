//! `clientapi.accountdata`: `m.ignored_user_list` (whose events never
//! notify the user) and `m.push_rules` (the pusher's own records: the
//! cached ruleset of that user is dropped, so an instance other than the
//! one that changed the rules reads them again).

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::AccountDataUpdate;
use serde_json::Value;

use crate::api::PUSH_RULES_TYPE;
use crate::rules::PushRules;
use crate::storage::Storage;

const IGNORED_USERS_TYPE: &str = "m.ignored_user_list";

pub struct AccountDataConsumer {
    pub storage: Arc<Storage>,
    pub rules: Arc<PushRules>,
}

#[async_trait]
impl Handler for AccountDataConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: AccountDataUpdate =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable account data: {e}")))?;
        if update.room_id.is_some() {
            return Ok(());
        }
        match update.data_type.as_str() {
            PUSH_RULES_TYPE => self.rules.forget(&update.user_id),
            IGNORED_USERS_TYPE => {
                // `{"ignored_users": {"@user:server": {}}}`; anything else ignores nobody.
                let ignored: Vec<String> = update
                    .content
                    .get("ignored_users")
                    .and_then(Value::as_object)
                    .map(|users| users.keys().cloned().collect())
                    .unwrap_or_default();
                self.storage
                    .set_ignored(update.user_id.as_str(), &ignored)
                    .await
                    .map_err(|e| HandleError::Transient(e.to_string()))?;
            }
            _ => {}
        }
        Ok(())
    }
}
