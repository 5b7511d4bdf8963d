//! `clientapi.forgotten`: rooms users forgot, into the read model (the
//! next `/sync` and history reads leave them out).

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::RoomForgotten;

use crate::storage::Storage;

pub struct ForgottenConsumer {
    pub storage: Arc<Storage>,
}

#[async_trait]
impl Handler for ForgottenConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let forgotten: RoomForgotten =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable forgotten room: {e}")))?;
        self.storage.forget_room(&forgotten).await.map_err(|e| HandleError::Transient(e.to_string()))
    }
}
