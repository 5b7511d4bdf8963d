//! The sync API's read model: events in stream order, the state log (from
//! which the state at any stream position is derived), current state,
//! memberships with their history, filters, account data and receipts.
//!
//! Stream positions are assigned on first insert of an event id, so a
//! redelivered output record is a no-op. Writes are serialized in this
//! process so that positions become visible in increasing order; readers
//! never look past the position the notifier published.

mod account_data;
mod counts;
mod erased;
mod forgotten;
mod keys;
mod migrations;
mod presence;
mod receipts;
mod room_list;
mod search;
mod to_device;
mod unsigned;

use std::collections::{BTreeSet, HashMap};

use myelin_roomserver::api::NewRoomEvent;
use myelin_storage::{Db, WritePool, sqlx, with_db};
use myelin_types::redaction;
use myelin_types::ruma::UserId;
use serde_json::Value;
use tokio::sync::Mutex;

pub use migrations::MIGRATIONS;

/// Keeps a row `l` of `syncapi_membership_log` only if it comes after
/// every membership of the same user and room that the user forgot (a
/// macro, so that queries stay static strings).
macro_rules! not_forgotten {
    () => {
        "NOT EXISTS (SELECT 1 FROM syncapi_forgotten f JOIN syncapi_membership_log m \
         ON m.user_id = f.user_id AND m.room_id = f.room_id AND m.event_id = f.event_id \
         WHERE f.user_id = l.user_id AND f.room_id = l.room_id AND l.stream_pos <= m.stream_pos)"
    };
}
pub use account_data::ignored_users_in;
pub use presence::Presence;
pub use search::{KEYS as SEARCH_KEYS, SearchHit, SearchPage, SearchTerms, words_of};
pub use unsigned::Related;

use crate::SyncApiError;
use crate::visibility::{HistoryChange, HistoryVisibility};

const MEMBER: &str = "m.room.member";

/// The state entries of room `$1` after position `$2`, as `concat!` pieces:
/// the latest log entry of each (type, state key) that is not a removal.
macro_rules! state_at_sql {
    ($condition:literal) => {
        concat!(
            "SELECT e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id \
             FROM syncapi_state_log l JOIN syncapi_events e ON e.event_id = l.event_id \
             WHERE l.room_id = $1 AND l.stream_pos <= $2 ",
            $condition,
            " AND l.stream_pos = (\
               SELECT MAX(m.stream_pos) FROM syncapi_state_log m WHERE m.room_id = l.room_id \
               AND m.event_type = l.event_type AND m.state_key = l.state_key AND m.stream_pos <= $2) \
             ORDER BY e.stream_pos"
        )
    };
}
const STATE_AT: &str = state_at_sql!("");
const STATE_AT_WITHOUT_MEMBERS: &str = state_at_sql!("AND l.event_type <> 'm.room.member'");
const MEMBERS_AT: &str = state_at_sql!("AND l.event_type = 'm.room.member'");
const SPACE_CHILDREN_AT: &str = state_at_sql!("AND l.event_type = 'm.space.child'");
const REDACTION: &str = "m.room.redaction";

/// An event as `/sync` and `/messages` read it back.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub pos: i64,
    pub event_id: String,
    pub pdu: Value,
    /// `(device id, txn id)` of the local client that sent it.
    pub txn: Option<(String, String)>,
}

/// A change of one user's membership in one room.
#[derive(Debug, Clone)]
pub struct MembershipChange {
    pub room_id: String,
    pub pos: i64,
    pub membership: String,
}

/// What one stored output record changed.
#[derive(Debug)]
pub struct Applied {
    pub pos: i64,
    /// Users who may see something new: those joined after the event, and
    /// those whose membership it changed.
    pub users: BTreeSet<String>,
    /// The device list position of the last user who newly joined: those
    /// who now share a room with them see them in `device_lists.changed`.
    pub device_list_pos: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Row5 = (i64, String, String, Option<String>, Option<String>);

pub struct Storage {
    db: Db,
    write_lock: Mutex<()>,
    /// Accounts deactivated with `erase` (see [`Storage::is_erased`]).
    erased: std::sync::RwLock<std::collections::HashSet<String>>,
}

struct Fields {
    event_type: String,
    state_key: Option<String>,
    sender: String,
}

fn fields(pdu: &Value) -> Result<Fields, ApplyError> {
    let text = |key: &str| pdu.get(key).and_then(Value::as_str).map(str::to_owned);
    let event_type = text("type").ok_or_else(|| ApplyError::Malformed("no type".to_owned()))?;
    let sender = text("sender").ok_or_else(|| ApplyError::Malformed("no sender".to_owned()))?;
    Ok(Fields { event_type, state_key: text("state_key"), sender })
}

fn membership_of(pdu: &Value) -> String {
    pdu.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str).unwrap_or("leave").to_owned()
}

/// The event a PDU relates to and how (`content.m.relates_to`), for
/// relation types that name one (not replies, which clients nest).
fn relation_of(pdu: &Value) -> Option<(&str, &str)> {
    let relates_to = pdu.get("content")?.get("m.relates_to")?;
    Some((relates_to.get("event_id")?.as_str()?, relates_to.get("rel_type")?.as_str()?))
}

/// The stored event `pdu` by `author` as `record`'s redaction leaves it,
/// or `None` when the redaction does not take effect (see [`redaction`]).
/// `auth_state` holds the room's current create and power levels events.
fn redact_stored(
    record: &NewRoomEvent,
    redactor: &str,
    author: &str,
    pdu: &str,
    auth_state: &[Option<Value>],
) -> Option<Value> {
    let rules = redaction::rules_of(&record.room_version)?;
    let room =
        redaction::RoomAuth { rules: &rules, create: auth_state[0].as_ref(), power_levels: auth_state[1].as_ref() };
    let (redactor, author) = (<&UserId>::try_from(redactor).ok()?, <&UserId>::try_from(author).ok()?);
    if !redaction::may_redact(&room, redactor, author) {
        return None;
    }
    let target: Value = serde_json::from_str(pdu).ok()?;
    let because = myelin_types::events::client_event(
        &record.event.pdu,
        record.event.event_id.as_str(),
        record.event.room_id.as_str(),
    );
    redaction::redacted(&target, &rules, because)
}

fn to_row((pos, event_id, pdu, device, txn): Row5) -> Result<EventRow, SyncApiError> {
    let pdu = serde_json::from_str(&pdu).map_err(|e| SyncApiError::Corrupt(format!("event {event_id}: {e}")))?;
    let txn = match (device, txn) {
        (Some(device), Some(txn)) => Some((device, txn)),
        _ => None,
    };
    Ok(EventRow { pos, event_id, pdu, txn })
}

impl Storage {
    pub async fn open(db: Db) -> Result<Self, SyncApiError> {
        db.migrate("syncapi", MIGRATIONS).await?;
        let storage = Self { db, write_lock: Mutex::new(()), erased: Default::default() };
        storage.load_erased().await?;
        Ok(storage)
    }

    /// The highest stream position written so far (0 when empty).
    pub async fn max_pos(&self) -> Result<i64, SyncApiError> {
        let max: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM syncapi_events").fetch_one(pool).await?
        });
        Ok(max.unwrap_or(0))
    }

    /// Store one accepted event with its state change. `Ok(None)`: the event
    /// was stored before (a redelivery), nothing changed.
    pub async fn apply(&self, record: &NewRoomEvent) -> Result<Option<Applied>, ApplyError> {
        if record.historical {
            return self.apply_historical(record).await;
        }
        let main = &record.event;
        let room_id = main.room_id.as_str();
        let main_fields = fields(&main.pdu)?;
        let mut added = Vec::with_capacity(record.state_delta.added.len());
        for event in &record.state_delta.added {
            let f = fields(&event.pdu)?;
            let Some(state_key) = f.state_key.clone() else {
                return Err(ApplyError::Malformed(format!("state event {} has no state_key", event.event_id)));
            };
            added.push((event, f, state_key));
        }
        let main_pdu = main.pdu.to_string();
        let redaction_target =
            (main_fields.event_type == REDACTION).then(|| redaction::target_of(&main.pdu).map(str::to_owned)).flatten();
        let (txn_device, txn_id) = match &record.txn {
            Some(txn) => (Some(txn.device_id.clone()), Some(txn.txn_id.clone())),
            None => (None, None),
        };

        let search_sql = search::sql(&self.db);
        let searchable = search::searchable(&main_fields.event_type, &main.pdu);
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let seen: Option<i64> = sqlx::query_scalar("SELECT stream_pos FROM syncapi_events WHERE event_id = $1")
                .bind(main.event_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if seen.is_some() {
                return Ok(None);
            }
            // State that arrived without its own timeline entry (a state
            // resolution, or the whole room with a join to another server's
            // room) is stored first, each at a position of its own, so that
            // it is state before the event that brought it.
            let mut own_pos: HashMap<&str, i64> = HashMap::new();
            for (event, f, state_key) in &added {
                if event.event_id == main.event_id {
                    continue;
                }
                let stored: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO syncapi_events (event_id, room_id, sender, event_type, state_key, pdu, timeline) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (event_id) DO NOTHING RETURNING stream_pos",
                )
                .bind(event.event_id.as_str())
                .bind(room_id)
                .bind(&f.sender)
                .bind(&f.event_type)
                .bind(state_key)
                .bind(event.pdu.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(stored) = stored {
                    own_pos.insert(event.event_id.as_str(), stored);
                }
            }
            let pos: Option<i64> = sqlx::query_scalar(
                "INSERT INTO syncapi_events (event_id, room_id, sender, event_type, state_key, pdu, timeline, \
                 txn_device_id, txn_id) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8) \
                 ON CONFLICT (event_id) DO NOTHING RETURNING stream_pos",
            )
            .bind(main.event_id.as_str())
            .bind(room_id)
            .bind(&main_fields.sender)
            .bind(&main_fields.event_type)
            .bind(main_fields.state_key.as_deref())
            .bind(&main_pdu)
            .bind(txn_device.as_deref())
            .bind(txn_id.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(pos) = pos else {
                return Ok(None);
            };
            if let Some((key, text)) = &searchable {
                sqlx::query(search_sql.insert).bind(pos).bind(text).bind(*key).bind(room_id).execute(&mut *tx).await?;
            }
            let mut users = BTreeSet::new();
            let mut device_list_pos = None;
            for (event, f, state_key) in &added {
                // An event stored before (state resolution brought it back) changes the state now.
                let at = own_pos.get(event.event_id.as_str()).copied().unwrap_or(pos);
                let replaced: Option<String> = sqlx::query_scalar(
                    "SELECT event_id FROM syncapi_current_state \
                     WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
                )
                .bind(room_id)
                .bind(&f.event_type)
                .bind(state_key)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(replaced) = replaced.filter(|r| r != event.event_id.as_str()) {
                    sqlx::query(
                        "INSERT INTO syncapi_replaced_state (event_id, replaced_id) VALUES ($1, $2) \
                         ON CONFLICT (event_id) DO NOTHING",
                    )
                    .bind(event.event_id.as_str())
                    .bind(replaced)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO syncapi_current_state (room_id, event_type, state_key, event_id, stream_pos) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, event_type, state_key) \
                     DO UPDATE SET event_id = excluded.event_id, stream_pos = excluded.stream_pos",
                )
                .bind(room_id)
                .bind(&f.event_type)
                .bind(state_key)
                .bind(event.event_id.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO syncapi_state_log (room_id, event_type, state_key, stream_pos, event_id) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(room_id)
                .bind(&f.event_type)
                .bind(state_key)
                .bind(at)
                .bind(event.event_id.as_str())
                .execute(&mut *tx)
                .await?;
                if f.event_type == MEMBER {
                    let membership = membership_of(&event.pdu);
                    if membership == "join" {
                        let before: Option<String> = sqlx::query_scalar(
                            "SELECT membership FROM syncapi_memberships WHERE room_id = $1 AND user_id = $2",
                        )
                        .bind(room_id)
                        .bind(state_key)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if before.as_deref() != Some("join") {
                            let change: i64 = sqlx::query_scalar(
                                "INSERT INTO syncapi_device_list_changes (user_id) VALUES ($1) RETURNING stream_pos",
                            )
                            .bind(state_key)
                            .fetch_one(&mut *tx)
                            .await?;
                            device_list_pos = Some(change);
                        }
                    }
                    for sql in [
                        "INSERT INTO syncapi_memberships (room_id, user_id, membership, event_id, stream_pos) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE SET \
                         membership = excluded.membership, event_id = excluded.event_id, stream_pos = excluded.stream_pos",
                        "INSERT INTO syncapi_membership_log (room_id, user_id, membership, event_id, stream_pos) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    ] {
                        sqlx::query(sql)
                            .bind(room_id)
                            .bind(state_key)
                            .bind(&membership)
                            .bind(event.event_id.as_str())
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                    }
                    users.insert(state_key.clone());
                }
            }
            for (event_type, state_key) in &record.state_delta.removed {
                sqlx::query("DELETE FROM syncapi_current_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
                    .bind(room_id)
                    .bind(event_type)
                    .bind(state_key)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO syncapi_state_log (room_id, event_type, state_key, stream_pos, event_id) \
                     VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING",
                )
                .bind(room_id)
                .bind(event_type)
                .bind(state_key)
                .bind(pos)
                .execute(&mut *tx)
                .await?;
                if event_type == MEMBER {
                    for sql in [
                        "UPDATE syncapi_memberships SET membership = 'leave', event_id = NULL, stream_pos = $3 \
                         WHERE room_id = $1 AND user_id = $2",
                        "INSERT INTO syncapi_membership_log (room_id, user_id, membership, event_id, stream_pos) \
                         VALUES ($1, $2, 'leave', NULL, $3) ON CONFLICT DO NOTHING",
                    ] {
                        sqlx::query(sql).bind(room_id).bind(state_key).bind(pos).execute(&mut *tx).await?;
                    }
                    users.insert(state_key.clone());
                }
            }
            if let Some((parent, rel_type)) = relation_of(&main.pdu) {
                sqlx::query(
                    "INSERT INTO syncapi_relations \
                     (room_id, parent_id, rel_type, child_id, child_type, child_sender, stream_pos) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (child_id) DO NOTHING",
                )
                .bind(room_id)
                .bind(parent)
                .bind(rel_type)
                .bind(main.event_id.as_str())
                .bind(&main_fields.event_type)
                .bind(&main_fields.sender)
                .bind(pos)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(target) = redaction_target.as_deref() {
                let found: Option<(String, String)> =
                    sqlx::query_as("SELECT sender, pdu FROM syncapi_events WHERE event_id = $1 AND room_id = $2")
                        .bind(target)
                        .bind(room_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let mut auth_state = Vec::with_capacity(2);
                for event_type in ["m.room.create", "m.room.power_levels"] {
                    let pdu: Option<String> = sqlx::query_scalar(
                        "SELECT e.pdu FROM syncapi_current_state c JOIN syncapi_events e ON e.event_id = c.event_id \
                         WHERE c.room_id = $1 AND c.event_type = $2 AND c.state_key = ''",
                    )
                    .bind(room_id)
                    .bind(event_type)
                    .fetch_optional(&mut *tx)
                    .await?;
                    auth_state.push(pdu.and_then(|text| serde_json::from_str::<Value>(&text).ok()));
                }
                if let Some((author, pdu)) = found
                    && let Some(stripped) = redact_stored(record, &main_fields.sender, &author, &pdu, &auth_state)
                {
                    sqlx::query("UPDATE syncapi_events SET pdu = $1 WHERE event_id = $2")
                        .bind(stripped.to_string())
                        .bind(target)
                        .execute(&mut *tx)
                        .await?;
                    // A redacted event's content no longer relates it to anything.
                    sqlx::query("DELETE FROM syncapi_relations WHERE child_id = $1")
                        .bind(target)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(search_sql.delete).bind(target).execute(&mut *tx).await?;
                }
            }
            let joined: Vec<String> = sqlx::query_scalar(
                "SELECT user_id FROM syncapi_memberships WHERE room_id = $1 AND membership = 'join'",
            )
            .bind(room_id)
            .fetch_all(&mut *tx)
            .await?;
            users.extend(joined);
            tx.commit().await?;
            Ok(Some(Applied { pos, users, device_list_pos }))
        })
    }

    /// Every membership change of `user_id` up to `upto`, oldest first.
    /// A backfilled event: placed before everything stored (history
    /// counts down from position -1), with no effect on state, memberships
    /// or relations, and nobody to wake: it is for `/messages` only.
    async fn apply_historical(&self, record: &NewRoomEvent) -> Result<Option<Applied>, ApplyError> {
        let main = &record.event;
        let f = fields(&main.pdu)?;
        let search_sql = search::sql(&self.db);
        let searchable = search::searchable(&f.event_type, &main.pdu);
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let known: Option<i64> = sqlx::query_scalar("SELECT stream_pos FROM syncapi_events WHERE event_id = $1")
                .bind(main.event_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if known.is_some() {
                return Ok(None);
            }
            let lowest: Option<i64> =
                sqlx::query_scalar("SELECT MIN(stream_pos) FROM syncapi_events").fetch_one(&mut *tx).await?;
            let pos = lowest.unwrap_or(0).min(0) - 1;
            sqlx::query(
                "INSERT INTO syncapi_events (stream_pos, event_id, room_id, sender, event_type, state_key, pdu, \
                 timeline) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
            )
            .bind(pos)
            .bind(main.event_id.as_str())
            .bind(main.room_id.as_str())
            .bind(&f.sender)
            .bind(&f.event_type)
            .bind(f.state_key.as_deref())
            .bind(main.pdu.to_string())
            .execute(&mut *tx)
            .await?;
            if let Some((key, text)) = &searchable {
                let room_id = main.room_id.as_str();
                sqlx::query(search_sql.insert).bind(pos).bind(text).bind(*key).bind(room_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Some(Applied { pos, users: BTreeSet::new(), device_list_pos: None }))
        })
    }

    /// Whether the room's earliest timeline event here is its create event:
    /// then it has all the room's history (a room joined over federation
    /// starts at the join).
    pub async fn has_whole_history(&self, room_id: &str) -> Result<bool, SyncApiError> {
        let first: Option<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT event_type FROM syncapi_events WHERE room_id = $1 AND timeline = 1 \
                 ORDER BY stream_pos LIMIT 1",
            )
            .bind(room_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(first.as_deref() == Some("m.room.create"))
    }

    /// The user's membership changes in one room or all, oldest first,
    /// leaving out those up to a membership the user forgot (`/forget`):
    /// a forgotten room is one the user has never been in, until they
    /// come back.
    pub async fn membership_changes(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        upto: i64,
    ) -> Result<Vec<MembershipChange>, SyncApiError> {
        let rows: Vec<(String, i64, String)> = with_db!(&self.db, pool => {
            match room_id {
                None => sqlx::query_as(concat!(
                    "SELECT room_id, stream_pos, membership FROM syncapi_membership_log l \
                     WHERE user_id = $1 AND stream_pos <= $2 AND ",
                    not_forgotten!(),
                    " ORDER BY stream_pos",
                ))
                .bind(user_id)
                .bind(upto)
                .fetch_all(pool)
                .await?,
                Some(room_id) => sqlx::query_as(concat!(
                    "SELECT room_id, stream_pos, membership FROM syncapi_membership_log l \
                     WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3 AND ",
                    not_forgotten!(),
                    " ORDER BY stream_pos",
                ))
                .bind(user_id)
                .bind(room_id)
                .bind(upto)
                .fetch_all(pool)
                .await?,
            }
        });
        Ok(rows.into_iter().map(|(room_id, pos, membership)| MembershipChange { room_id, pos, membership }).collect())
    }

    /// Rooms with timeline events in `(after, upto]`.
    pub async fn rooms_with_events(&self, after: i64, upto: i64) -> Result<BTreeSet<String>, SyncApiError> {
        let rooms: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT room_id FROM syncapi_events WHERE stream_pos > $1 AND stream_pos <= $2 AND timeline = 1",
            )
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(rooms.into_iter().collect())
    }

    /// Up to `limit` timeline events of a room in `(after, upto]`, newest
    /// first when `backwards`, else oldest first.
    pub async fn events_between(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
        backwards: bool,
        limit: i64,
    ) -> Result<Vec<EventRow>, SyncApiError> {
        let rows: Vec<Row5> = with_db!(&self.db, pool => {
            if backwards {
                sqlx::query_as(
                    "SELECT stream_pos, event_id, pdu, txn_device_id, txn_id FROM syncapi_events \
                     WHERE room_id = $1 AND timeline = 1 AND stream_pos > $2 AND stream_pos <= $3 \
                     ORDER BY stream_pos DESC LIMIT $4",
                )
                .bind(room_id)
                .bind(after)
                .bind(upto)
                .bind(limit)
                .fetch_all(pool)
                .await?
            } else {
                sqlx::query_as(
                    "SELECT stream_pos, event_id, pdu, txn_device_id, txn_id FROM syncapi_events \
                     WHERE room_id = $1 AND timeline = 1 AND stream_pos > $2 AND stream_pos <= $3 \
                     ORDER BY stream_pos ASC LIMIT $4",
                )
                .bind(room_id)
                .bind(after)
                .bind(upto)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        });
        rows.into_iter().map(to_row).collect()
    }

    /// Up to `limit` events relating to `parent` in `(after, upto]`
    /// (optionally of one relation type and event type), newest first when
    /// `backwards`.
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        room_id: &str,
        parent: &str,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        after: i64,
        upto: i64,
        backwards: bool,
        limit: i64,
    ) -> Result<Vec<EventRow>, SyncApiError> {
        let sql = if backwards {
            "SELECT e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id FROM syncapi_relations r \
             JOIN syncapi_events e ON e.event_id = r.child_id \
             WHERE r.room_id = $1 AND r.parent_id = $2 AND ($3 = '' OR r.rel_type = $3) \
             AND ($4 = '' OR r.child_type = $4) AND r.stream_pos > $5 AND r.stream_pos <= $6 \
             ORDER BY r.stream_pos DESC LIMIT $7"
        } else {
            "SELECT e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id FROM syncapi_relations r \
             JOIN syncapi_events e ON e.event_id = r.child_id \
             WHERE r.room_id = $1 AND r.parent_id = $2 AND ($3 = '' OR r.rel_type = $3) \
             AND ($4 = '' OR r.child_type = $4) AND r.stream_pos > $5 AND r.stream_pos <= $6 \
             ORDER BY r.stream_pos ASC LIMIT $7"
        };
        let rows: Vec<Row5> = with_db!(&self.db, pool => {
            sqlx::query_as(sql)
                .bind(room_id)
                .bind(parent)
                .bind(rel_type.unwrap_or_default())
                .bind(event_type.unwrap_or_default())
                .bind(after)
                .bind(upto)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_row).collect()
    }

    /// Thread roots of the room with their latest reply's position, most
    /// recently active first, active before `before`; `participant` keeps
    /// only threads that user started or replied in.
    pub async fn threads(
        &self,
        room_id: &str,
        participant: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(EventRow, i64)>, SyncApiError> {
        type Row = (i64, String, String, Option<String>, Option<String>, i64);
        let rows: Vec<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id, t.latest FROM \
                 (SELECT parent_id, MAX(stream_pos) AS latest FROM syncapi_relations \
                  WHERE room_id = $1 AND rel_type = 'm.thread' GROUP BY parent_id) t \
                 JOIN syncapi_events e ON e.event_id = t.parent_id \
                 WHERE t.latest < $2 AND ($3 = '' OR e.sender = $3 OR EXISTS (SELECT 1 FROM syncapi_relations p \
                   WHERE p.room_id = $1 AND p.parent_id = t.parent_id AND p.rel_type = 'm.thread' \
                   AND p.child_sender = $3)) \
                 ORDER BY t.latest DESC LIMIT $4",
            )
            .bind(room_id)
            .bind(before)
            .bind(participant.unwrap_or_default())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(pos, event_id, pdu, device, txn, latest)| Ok((to_row((pos, event_id, pdu, device, txn))?, latest)))
            .collect()
    }

    /// One event of a room by id, timeline or state.
    pub async fn event(&self, room_id: &str, event_id: &str) -> Result<Option<EventRow>, SyncApiError> {
        let row: Option<Row5> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT stream_pos, event_id, pdu, txn_device_id, txn_id FROM syncapi_events \
                 WHERE room_id = $1 AND event_id = $2",
            )
            .bind(room_id)
            .bind(event_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(to_row).transpose()
    }

    /// The room's state after the event at `at` (and everything before it).
    pub async fn state_at(&self, room_id: &str, at: i64) -> Result<Vec<EventRow>, SyncApiError> {
        self.state_rows_at(room_id, at, STATE_AT).await
    }

    /// [`Self::state_at`] without member events: what a lazy-loading sync
    /// starts from, sparing it every member of a large room.
    pub async fn state_at_without_members(&self, room_id: &str, at: i64) -> Result<Vec<EventRow>, SyncApiError> {
        self.state_rows_at(room_id, at, STATE_AT_WITHOUT_MEMBERS).await
    }

    /// Only the member events of [`Self::state_at`] (`/members`).
    pub async fn members_at(&self, room_id: &str, at: i64) -> Result<Vec<EventRow>, SyncApiError> {
        self.state_rows_at(room_id, at, MEMBERS_AT).await
    }

    /// The `m.space.child` entries of the room's state at `at`.
    pub async fn space_children_at(&self, room_id: &str, at: i64) -> Result<Vec<EventRow>, SyncApiError> {
        self.state_rows_at(room_id, at, SPACE_CHILDREN_AT).await
    }

    async fn state_rows_at(&self, room_id: &str, at: i64, sql: &'static str) -> Result<Vec<EventRow>, SyncApiError> {
        let rows: Vec<Row5> = with_db!(&self.db, pool => {
            sqlx::query_as(sql).bind(room_id).bind(at).fetch_all(pool).await?
        });
        rows.into_iter().map(to_row).collect()
    }

    /// Every change of the room's `m.room.history_visibility` up to `upto`, oldest first.
    pub async fn history_visibility_changes(
        &self,
        room_id: &str,
        upto: i64,
    ) -> Result<Vec<HistoryChange>, SyncApiError> {
        let rows: Vec<(i64, Option<String>)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT l.stream_pos, e.pdu FROM syncapi_state_log l \
                 LEFT JOIN syncapi_events e ON e.event_id = l.event_id \
                 WHERE l.room_id = $1 AND l.event_type = 'm.room.history_visibility' AND l.state_key = '' \
                 AND l.stream_pos <= $2 ORDER BY l.stream_pos",
            )
            .bind(room_id)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(pos, pdu)| {
                let pdu: Option<Value> = pdu
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| SyncApiError::Corrupt(format!("history visibility at {pos}: {e}")))?;
                let visibility = HistoryVisibility::from_content(pdu.as_ref().map(|p| &p["content"]));
                Ok(HistoryChange { pos, visibility })
            })
            .collect()
    }

    /// `(type, state_key)` entries of the room's state that changed in `(after, upto]`.
    pub async fn state_changed_between(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<BTreeSet<(String, String)>, SyncApiError> {
        let rows: Vec<(String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT DISTINCT event_type, state_key FROM syncapi_state_log \
                 WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3",
            )
            .bind(room_id)
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().collect())
    }

    pub async fn insert_filter(&self, user_id: &str, filter: &str) -> Result<i64, SyncApiError> {
        let _guard = self.write_lock.lock().await;
        let id: i64 = with_db!(&self.db, pool => {
            sqlx::query_scalar("INSERT INTO syncapi_filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id")
                .bind(user_id)
                .bind(filter)
                .fetch_one(pool)
                .await?
        });
        Ok(id)
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<Value>, SyncApiError> {
        let text: Option<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT filter FROM syncapi_filters WHERE user_id = $1 AND filter_id = $2")
                .bind(user_id)
                .bind(filter_id)
                .fetch_optional(pool)
                .await?
        });
        text.map(|t| serde_json::from_str(&t).map_err(|e| SyncApiError::Corrupt(format!("filter {filter_id}: {e}"))))
            .transpose()
    }
}
