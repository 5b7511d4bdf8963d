//! Answers `clientapi.media`: a local upload's metadata, so that the
//! federation API serves it to other servers without reading our tables
//! (it reads the bytes from the shared media store).

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;

use crate::api::{MediaInfo, MediaQuery, MediaReply};
use crate::media::MediaStore;
use crate::storage::media;

pub const GROUP: &str = "clientapi.media";

pub struct MediaResponder {
    pub db: Db,
}

#[async_trait]
impl Responder for MediaResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let MediaQuery { media_id } =
            request.json().map_err(|e| HandleError::Poison(format!("bad media query: {e}")))?;
        let reply: MediaReply = if MediaStore::is_valid_id(&media_id) {
            let found = media::get(&self.db, &media_id).await.map_err(|e| HandleError::Transient(e.to_string()))?;
            found.map(|record| MediaInfo { content_type: record.content_type, filename: record.filename })
        } else {
            None
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
