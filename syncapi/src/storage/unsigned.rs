//! What the server adds to the `unsigned` of events it serves: the child
//! events bundled as aggregations, and the state entry a state event replaced.

use std::collections::HashMap;

use myelin_storage::{Db, sqlx, with_db};
use serde_json::Value;

use super::{EventRow, Row5, Storage, to_row};
use crate::SyncApiError;

/// `IN` over a JSON array of strings bound as one parameter, as each dialect
/// reads it (a list of any length, one static SQL text per dialect).
macro_rules! in_json_list {
    ($db:expr, $before:literal, $param:literal, $after:literal) => {
        match $db {
            Db::Sqlite(_) => concat!($before, " IN (SELECT value FROM json_each(", $param, "))", $after),
            Db::Postgres(_) => {
                concat!($before, " IN (SELECT jsonb_array_elements_text(CAST(", $param, " AS jsonb)))", $after)
            }
        }
    };
}

/// An event relating to one of the events being served, by a relation type
/// that is bundled (`m.replace`, `m.thread`, `m.reference`).
#[derive(Debug, Clone)]
pub struct Related {
    pub parent_id: String,
    pub rel_type: String,
    pub sender: String,
    pub pos: i64,
    pub event_id: String,
    /// Only for `m.replace`: the replacement itself is bundled.
    pub replacement: Option<EventRow>,
}

/// The state entry a state event replaced.
#[derive(Debug, Clone)]
pub struct Replaced {
    pub event_id: String,
    pub sender: String,
    pub content: Value,
}

type RelatedRow = (String, String, String, i64, String, Option<String>, Option<String>, Option<String>);

impl Storage {
    /// Every event of the room relating to one of `parents` by a bundled
    /// relation type, oldest first.
    pub async fn related_to(&self, room_id: &str, parents: &[&str]) -> Result<Vec<Related>, SyncApiError> {
        if parents.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(parents).expect("strings serialize");
        let sql = in_json_list!(
            &self.db,
            "SELECT r.parent_id, r.rel_type, r.child_sender, r.stream_pos, r.child_id, \
             CASE WHEN r.rel_type = 'm.replace' THEN e.pdu END, e.txn_device_id, e.txn_id \
             FROM syncapi_relations r JOIN syncapi_events e ON e.event_id = r.child_id \
             WHERE r.room_id = $1 AND r.rel_type IN ('m.replace', 'm.thread', 'm.reference') AND r.parent_id",
            "$2",
            " ORDER BY r.stream_pos"
        );
        let rows: Vec<RelatedRow> = with_db!(&self.db, pool => {
            sqlx::query_as(sql).bind(room_id).bind(&list).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(parent_id, rel_type, sender, pos, event_id, pdu, device, txn)| {
                let replacement = pdu.map(|pdu| to_row((pos, event_id.clone(), pdu, device, txn))).transpose()?;
                Ok(Related { parent_id, rel_type, sender, pos, event_id, replacement })
            })
            .collect()
    }

    /// The state entries that each of `event_ids` replaced, by event id.
    pub async fn replaced_state(&self, event_ids: &[&str]) -> Result<HashMap<String, Replaced>, SyncApiError> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list = serde_json::to_string(event_ids).expect("strings serialize");
        let sql = in_json_list!(
            &self.db,
            "SELECT s.event_id, p.event_id, p.sender, p.pdu FROM syncapi_replaced_state s \
             JOIN syncapi_events p ON p.event_id = s.replaced_id WHERE s.event_id",
            "$1",
            ""
        );
        let rows: Vec<(String, String, String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(sql).bind(&list).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(event_id, replaced_id, sender, pdu)| {
                let pdu: Value = serde_json::from_str(&pdu)
                    .map_err(|e| SyncApiError::Corrupt(format!("event {replaced_id}: {e}")))?;
                let content = pdu.get("content").cloned().unwrap_or_else(|| Value::Object(Default::default()));
                Ok((event_id, Replaced { event_id: replaced_id, sender, content }))
            })
            .collect()
    }

    /// The events of the room with these ids (those the read model holds).
    pub async fn rows(&self, room_id: &str, event_ids: &[&str]) -> Result<Vec<EventRow>, SyncApiError> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(event_ids).expect("strings serialize");
        let sql = in_json_list!(
            &self.db,
            "SELECT stream_pos, event_id, pdu, txn_device_id, txn_id FROM syncapi_events \
             WHERE room_id = $1 AND event_id",
            "$2",
            ""
        );
        let rows: Vec<Row5> = with_db!(&self.db, pool => {
            sqlx::query_as(sql).bind(room_id).bind(&list).fetch_all(pool).await?
        });
        rows.into_iter().map(to_row).collect()
    }
}
