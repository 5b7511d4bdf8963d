//! The room models the output consumer works on, kept between events so
//! that an event in a big room does not reload every member from the
//! database. A model is taken out while its event is evaluated and put back
//! only after the event's write committed; a failed event leaves nothing
//! behind. The stored position checks a model before use, as another
//! pusher process may have moved the room since (its partition moved).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::PusherError;
use crate::storage::{RoomModel, Storage};

/// Entries (state events and log rows) held before the cache starts over:
/// a few 10,000-member rooms, some tens of megabytes.
const CAPACITY: usize = 200_000;

#[derive(Default)]
pub struct RoomCache {
    rooms: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    models: HashMap<String, RoomModel>,
    weight: usize,
}

impl RoomCache {
    /// The room's model, from the cache when it is still current.
    pub async fn take(&self, storage: &Storage, room_id: &str) -> Result<RoomModel, PusherError> {
        let cached = {
            let mut rooms = self.rooms.lock().expect("room cache lock");
            let model = rooms.models.remove(room_id);
            rooms.weight -= model.as_ref().map_or(0, RoomModel::weight);
            model
        };
        let stored = storage.last_pos(room_id).await?;
        match cached {
            Some(model) if model.snapshot.last_pos == stored => Ok(model),
            _ => storage.room_model(room_id).await,
        }
    }

    /// Keep the model of a committed event for the room's next one.
    pub fn put(&self, room_id: &str, model: RoomModel) {
        let weight = model.weight();
        if weight > CAPACITY {
            return;
        }
        let mut rooms = self.rooms.lock().expect("room cache lock");
        if rooms.weight + weight > CAPACITY {
            rooms.models.clear();
            rooms.weight = 0;
        }
        rooms.weight += weight;
        if let Some(old) = rooms.models.insert(room_id.to_owned(), model) {
            rooms.weight -= old.weight();
        }
    }
}

#[cfg(test)]
mod tests {
    use myelin_storage::Db;
    use myelin_testkit::TestDb;
    use serde_json::json;

    use super::*;
    use crate::storage::{EventWrite, StateEntry};

    fn member_event<'a>(event_id: &'a str, pos: i64, user: &str) -> EventWrite<'a> {
        let entry = StateEntry { sender: user.to_owned(), content: json!({"membership": "join"}) };
        EventWrite {
            room_id: "!r:example.org",
            room_version: "11",
            event_id,
            pos,
            ts: 0,
            event: json!({}),
            added: vec![(("m.room.member".to_owned(), user.to_owned()), entry)],
            removed: Vec::new(),
            memberships: vec![(user.to_owned(), "join".to_owned())],
            visibility: None,
            notifications: Vec::new(),
            deliveries: Vec::new(),
            now_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_model_another_process_moved_on_is_reloaded() {
        for db in TestDb::both().await {
            let storage = Storage::open(Db::connect(&db.url).await.unwrap()).await.unwrap();
            let cache = RoomCache::default();
            assert!(storage.write_event(&member_event("$a", 1, "@a:example.org")).await.unwrap());
            let model = cache.take(&storage, "!r:example.org").await.unwrap();
            assert_eq!((model.snapshot.last_pos, model.snapshot.state.len()), (1, 1), "{}", db.name);
            cache.put("!r:example.org", model);

            // Unchanged in the database: the cached model is used as it is.
            let mut model = cache.take(&storage, "!r:example.org").await.unwrap();
            model.snapshot.room_version = Some("cached".to_owned());
            cache.put("!r:example.org", model);
            let model = cache.take(&storage, "!r:example.org").await.unwrap();
            assert_eq!(model.snapshot.room_version.as_deref(), Some("cached"), "{}", db.name);
            cache.put("!r:example.org", model);

            // Another pusher process recorded the next event: reloaded.
            assert!(storage.write_event(&member_event("$b", 2, "@b:example.org")).await.unwrap());
            let model = cache.take(&storage, "!r:example.org").await.unwrap();
            assert_eq!((model.snapshot.last_pos, model.snapshot.state.len()), (2, 2), "{}", db.name);
            assert_eq!(model.memberships.len(), 2, "{}", db.name);
            assert_eq!(model.snapshot.room_version.as_deref(), Some("11"), "{}", db.name);
        }
    }

    #[test]
    fn the_cache_starts_over_rather_than_outgrow_its_bound() {
        let cache = RoomCache::default();
        let big = |members: usize| {
            let mut model = RoomModel::default();
            for n in 0..members {
                let entry = StateEntry { sender: String::new(), content: json!({}) };
                model.snapshot.state.insert(("m.room.member".to_owned(), format!("@{n}:x")), entry);
            }
            model
        };
        cache.put("!a:x", big(CAPACITY / 2));
        cache.put("!b:x", big(CAPACITY / 3));
        assert_eq!(cache.rooms.lock().unwrap().models.len(), 2);
        cache.put("!c:x", big(CAPACITY / 2));
        let rooms = cache.rooms.lock().unwrap();
        assert_eq!(rooms.models.keys().collect::<Vec<_>>(), vec!["!c:x"]);
        assert!(rooms.weight <= CAPACITY);
        drop(rooms);
        cache.put("!huge:x", big(CAPACITY + 1));
        assert!(!cache.rooms.lock().unwrap().models.contains_key("!huge:x"));
    }
}
