//! State at every event without copying the whole state per event: a
//! snapshot is its parent plus a few changed entries, and every
//! [`CHECKPOINT_INTERVAL`] deltas a full checkpoint bounds how far a read
//! has to walk back.

use std::collections::BTreeMap;

use myelin_storage::sqlx;

use super::{SqlResult, Tx, on_tx};

/// Deltas allowed between two full checkpoints.
pub const CHECKPOINT_INTERVAL: i64 = 64;

/// `(type, state_key)` → event id.
pub type StateMap = BTreeMap<(String, String), String>;

/// The full state a snapshot stands for (`None`: the empty state before a
/// create event).
pub async fn resolve_snapshot(tx: &mut Tx, snapshot: Option<i64>) -> SqlResult<StateMap> {
    let mut chain = Vec::new();
    let mut next = snapshot;
    while let Some(id) = next {
        chain.push(id);
        next = on_tx!(tx, c => {
            sqlx::query_scalar::<_, Option<i64>>("SELECT parent FROM roomserver_state_snapshots WHERE snapshot_id = $1")
                .bind(id)
                .fetch_one(c)
                .await?
        });
    }
    let mut state = StateMap::new();
    for id in chain.into_iter().rev() {
        let entries: Vec<(String, String, String)> = on_tx!(tx, c => {
            sqlx::query_as(
                "SELECT event_type, state_key, event_id FROM roomserver_state_entries WHERE snapshot_id = $1",
            )
            .bind(id)
            .fetch_all(c)
            .await?
        });
        for (event_type, state_key, event_id) in entries {
            state.insert((event_type, state_key), event_id);
        }
    }
    Ok(state)
}

/// Record the state `parent` + `changes` and return its snapshot id.
pub async fn append_state(tx: &mut Tx, room_id: &str, parent: Option<i64>, changes: &StateMap) -> SqlResult<i64> {
    let parent_chain = match parent {
        Some(id) => Some(on_tx!(tx, c => {
            sqlx::query_scalar::<_, i64>("SELECT chain_len FROM roomserver_state_snapshots WHERE snapshot_id = $1")
                .bind(id)
                .fetch_one(c)
                .await?
        })),
        None => None,
    };
    let (parent, chain_len, entries) = match parent_chain {
        Some(len) if len + 1 < CHECKPOINT_INTERVAL => (parent, len + 1, changes.clone()),
        _ => {
            let mut full = resolve_snapshot(tx, parent).await?;
            full.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
            (None, 0, full)
        }
    };
    let id: i64 = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO roomserver_state_snapshots (room_id, parent, chain_len) VALUES ($1, $2, $3) \
             RETURNING snapshot_id",
        )
        .bind(room_id)
        .bind(parent)
        .bind(chain_len)
        .fetch_one(c)
        .await?
    });
    for ((event_type, state_key), event_id) in &entries {
        on_tx!(tx, c => {
            sqlx::query(
                "INSERT INTO roomserver_state_entries (snapshot_id, event_type, state_key, event_id) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(event_type)
            .bind(state_key)
            .bind(event_id)
            .execute(c)
            .await?;
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use myelin_storage::{Db, with_db};

    use super::*;
    use crate::storage::MIGRATIONS;

    async fn count(db: &Db, table_sql: &'static str) -> i64 {
        with_db!(db, pool => sqlx::query_scalar::<_, i64>(table_sql).fetch_one(pool).await.unwrap())
    }

    /// 300 state changes cost about one entry each, plus a checkpoint every
    /// 64, and every snapshot still resolves to the full state.
    #[tokio::test]
    async fn snapshots_store_deltas_with_bounded_checkpoints() {
        for test_db in myelin_testkit::TestDb::both().await {
            let db = Db::connect(&test_db.url).await.unwrap();
            db.migrate("roomserver", MIGRATIONS).await.unwrap();
            let mut tx = Tx::write(&db).await.unwrap();
            let mut expected = StateMap::new();
            let mut snapshot = None;
            let mut snapshots = Vec::new();
            for i in 0..300 {
                // 10 distinct keys, overwritten in turn, like a busy room's members.
                let key = ("m.room.member".to_owned(), format!("@u{}:x", i % 10));
                let change = StateMap::from([(key.clone(), format!("$e{i}"))]);
                snapshot = Some(append_state(&mut tx, "!r:x", snapshot, &change).await.unwrap());
                expected.insert(key, format!("$e{i}"));
                snapshots.push((snapshot, expected.clone()));
            }
            for (snapshot, state) in snapshots.iter().step_by(37) {
                assert_eq!(&resolve_snapshot(&mut tx, *snapshot).await.unwrap(), state, "{}", test_db.name);
            }
            tx.commit().await.unwrap();
            let entries = count(&db, "SELECT COUNT(*) FROM roomserver_state_entries").await;
            // One entry per change, plus a full (10-entry) copy every 64 changes.
            assert!(entries <= 300 + 10 * (300 / CHECKPOINT_INTERVAL + 1), "{entries} entries on {}", test_db.name);
            let longest = count(&db, "SELECT MAX(chain_len) FROM roomserver_state_snapshots").await;
            assert!(longest < CHECKPOINT_INTERVAL);
            db.close().await;
        }
    }
}
