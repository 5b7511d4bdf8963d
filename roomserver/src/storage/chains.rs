//! The stored auth-chain index (see `events::cover`): each state event's
//! position, written with the event, and the links between chains.

use std::collections::{HashMap, HashSet};

use myelin_storage::sqlx::{self, AssertSqlSafe};
use ruma::OwnedEventId;

use super::{EventStatus, KnownColumns, KnownEvent, NewEvent, SqlResult, Tx, on_tx};
use crate::events::cover::{AuthPlace, Link, Placement, Position, place};
use crate::events::pdu::Pdu;

/// Ids per query: far below both databases' bound on parameters.
const BATCH: usize = 500;

/// `$first, $first+1, …` for `count` parameters: the only text spliced
/// into these statements, so they stay safe from injection.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// event id, then status, state before, state after, PDU.
type IdKnownColumns = (String, String, Option<i64>, Option<i64>, String);

/// event id, room id, chain, seq, type, state key.
type AuthColumns = (String, String, i64, i64, String, Option<String>);

/// A room's index in memory while its unplaced events are placed.
#[derive(Default)]
struct RoomCover {
    /// Each placed state event's position and `(type, state key)`.
    placed: HashMap<String, (Position, (String, String))>,
    tips: HashMap<i64, i64>,
    highest_chain: i64,
}

impl RoomCover {
    fn record(&mut self, event_id: String, key: (String, String), at: Position) {
        let tip = self.tips.entry(at.chain).or_insert(at.seq);
        *tip = (*tip).max(at.seq);
        self.highest_chain = self.highest_chain.max(at.chain);
        self.placed.insert(event_id, (at, key));
    }

    /// `event_id`'s placement if all its auth events are placed (and recorded).
    fn place(&mut self, event_id: &str, key: &(String, String), auth_events: &[OwnedEventId]) -> Option<Placement> {
        let auth: Vec<AuthPlace> = auth_events
            .iter()
            .map(|id| {
                let (position, auth_key) = self.placed.get(id.as_str())?;
                let same_key = auth_key == key;
                let is_tip = same_key && self.tips.get(&position.chain) == Some(&position.seq);
                Some(AuthPlace { position: *position, same_key, is_tip })
            })
            .collect::<Option<_>>()?;
        let placement = place(&auth, self.highest_chain + 1);
        self.record(event_id.to_owned(), key.clone(), placement.position);
        Some(placement)
    }
}

/// What places a state event in the index.
struct StateEvent<'a> {
    event_id: &'a str,
    room_id: &'a str,
    event_type: &'a str,
    state_key: &'a str,
    auth_events: &'a [OwnedEventId],
}

impl Tx {
    /// Give a stored state event its position when all its auth events have
    /// one (in the same transaction as the event, so that an event and its
    /// position are never apart). Without one the event is only left out of
    /// the index, which makes resolution read its auth chain instead.
    pub(super) async fn place_in_chain_cover(&mut self, event: &NewEvent<'_>) -> SqlResult<()> {
        let (Some(state_key), Some(auth_events)) = (event.state_key, event.auth_events) else { return Ok(()) };
        let event = StateEvent {
            event_id: event.event_id,
            room_id: event.room_id,
            event_type: event.event_type,
            state_key,
            auth_events,
        };
        self.place_state_event(&event).await.map(|_| ())
    }

    /// Place the room's state events that have no position: those stored
    /// before the index existed, and those whose auth events had none then.
    /// Each pass over them in the order they were stored places those whose
    /// auth events now have one, until a pass places nothing; the room's
    /// index is read once and written in batches. The number placed.
    pub async fn place_unindexed_state(&mut self, room_id: &str) -> SqlResult<usize> {
        let rows: Vec<(String, String, String, String)> = on_tx!(self, c => {
            sqlx::query_as(
                "SELECT e.event_id, e.event_type, e.state_key, e.pdu FROM roomserver_events e \
                 WHERE e.room_id = $1 AND e.state_key IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM roomserver_auth_chains c WHERE c.event_id = e.event_id) \
                 ORDER BY e.stream_pos",
            )
            .bind(room_id)
            .fetch_all(c)
            .await?
        });
        // A stored PDU that no longer parses has no auth events to place it by.
        let mut pending: Vec<(String, (String, String), Vec<OwnedEventId>)> = rows
            .into_iter()
            .filter_map(|(id, kind, key, pdu)| {
                let parsed = Pdu::parse(OwnedEventId::try_from(id.as_str()).ok()?, &pdu).ok()?;
                Some((id, (kind, key), parsed.auth_events))
            })
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let mut cover = self.room_cover(room_id).await?;
        let (mut positions, mut links) = (Vec::new(), Vec::new());
        loop {
            let before = pending.len();
            pending.retain(|(event_id, key, auth_events)| match cover.place(event_id, key, auth_events) {
                Some(placement) => {
                    positions.push((event_id.clone(), placement.position));
                    links.extend(placement.links);
                    false
                }
                None => true,
            });
            if pending.len() == before {
                break;
            }
        }
        self.insert_positions(room_id, &positions).await?;
        self.insert_links(room_id, &links).await?;
        Ok(positions.len())
    }

    /// The room's placed events and chain tips.
    async fn room_cover(&mut self, room_id: &str) -> SqlResult<RoomCover> {
        let rows: Vec<(String, i64, i64, String, Option<String>)> = on_tx!(self, c => {
            sqlx::query_as(
                "SELECT c.event_id, c.chain_id, c.seq, e.event_type, e.state_key FROM roomserver_auth_chains c \
                 JOIN roomserver_events e ON e.event_id = c.event_id WHERE c.room_id = $1",
            )
            .bind(room_id)
            .fetch_all(c)
            .await?
        });
        let mut cover = RoomCover::default();
        for (event_id, chain, seq, kind, key) in rows {
            let Some(key) = key else { continue };
            cover.record(event_id, (kind, key), Position { chain, seq });
        }
        Ok(cover)
    }

    async fn insert_positions(&mut self, room_id: &str, positions: &[(String, Position)]) -> SqlResult<()> {
        for batch in positions.chunks(BATCH / 4) {
            let rows: Vec<String> = (0..batch.len()).map(|n| format!("({})", placeholders(n * 4 + 1, 4))).collect();
            let sql = format!(
                "INSERT INTO roomserver_auth_chains (event_id, room_id, chain_id, seq) VALUES {}",
                rows.join(", ")
            );
            on_tx!(self, c => {
                let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
                for (event_id, at) in batch {
                    query = query.bind(event_id.as_str()).bind(room_id).bind(at.chain).bind(at.seq);
                }
                query.execute(c).await?;
            });
        }
        Ok(())
    }

    async fn insert_links(&mut self, room_id: &str, links: &[Link]) -> SqlResult<()> {
        for batch in links.chunks(BATCH / 5) {
            let rows: Vec<String> = (0..batch.len()).map(|n| format!("({})", placeholders(n * 5 + 1, 5))).collect();
            let sql = format!(
                "INSERT INTO roomserver_auth_chain_links (room_id, origin_chain, origin_seq, target_chain, \
                 target_seq) VALUES {}",
                rows.join(", ")
            );
            on_tx!(self, c => {
                let mut query = sqlx::query(AssertSqlSafe(sql.as_str()));
                for link in batch {
                    query = query
                        .bind(room_id)
                        .bind(link.origin.chain)
                        .bind(link.origin.seq)
                        .bind(link.target.chain)
                        .bind(link.target.seq);
                }
                query.execute(c).await?;
            });
        }
        Ok(())
    }

    /// Give `event` its position if all its auth events have one; whether it did.
    async fn place_state_event(&mut self, event: &StateEvent<'_>) -> SqlResult<bool> {
        // An event citing no auth events (a create event; from room version
        // 12, whose events never cite it, also the creator's join) starts a
        // chain with no links: its auth chain is empty.
        let (state_key, auth_events) = (event.state_key, event.auth_events);
        let cited: HashSet<&str> = auth_events.iter().map(|id| id.as_str()).collect();
        let cited: Vec<&str> = cited.into_iter().collect();
        let rows: Vec<AuthColumns> = if cited.is_empty() {
            Vec::new()
        } else {
            // By event id alone, which SQLite looks up by its key; the room is
            // compared here (a filter on it could make it scan the room).
            let sql = format!(
                "SELECT c.event_id, c.room_id, c.chain_id, c.seq, e.event_type, e.state_key \
                 FROM roomserver_auth_chains c JOIN roomserver_events e ON e.event_id = c.event_id \
                 WHERE c.event_id IN ({})",
                placeholders(1, cited.len())
            );
            on_tx!(self, c => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()));
                for id in &cited {
                    query = query.bind(*id);
                }
                query.fetch_all(c).await?
            })
        };
        let rows: Vec<AuthColumns> = rows.into_iter().filter(|row| row.1 == event.room_id).collect();
        if rows.len() < cited.len() {
            return Ok(false);
        }
        let mut auth = Vec::with_capacity(rows.len());
        for (_, _, chain, seq, kind, key) in rows {
            let same_key = kind == event.event_type && key.as_deref() == Some(state_key);
            let is_tip = same_key && self.chain_tip(event.room_id, chain).await? == seq;
            auth.push(AuthPlace { position: Position { chain, seq }, same_key, is_tip });
        }
        // A new chain's id is only needed when no tip is continued.
        let new_chain: i64 = if auth.iter().any(|a| a.same_key && a.is_tip) {
            0
        } else {
            on_tx!(self, c => {
                sqlx::query_scalar(
                    "SELECT COALESCE(MAX(chain_id), 0) + 1 FROM roomserver_auth_chains WHERE room_id = $1",
                )
                .bind(event.room_id)
                .fetch_one(c)
                .await?
            })
        };
        let placed = place(&auth, new_chain);
        on_tx!(self, c => {
            sqlx::query("INSERT INTO roomserver_auth_chains (event_id, room_id, chain_id, seq) VALUES ($1, $2, $3, $4)")
                .bind(event.event_id)
                .bind(event.room_id)
                .bind(placed.position.chain)
                .bind(placed.position.seq)
                .execute(c)
                .await?;
        });
        for link in placed.links {
            on_tx!(self, c => {
                sqlx::query(
                    "INSERT INTO roomserver_auth_chain_links (room_id, origin_chain, origin_seq, target_chain, \
                     target_seq) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(event.room_id)
                .bind(link.origin.chain)
                .bind(link.origin.seq)
                .bind(link.target.chain)
                .bind(link.target.seq)
                .execute(c)
                .await?;
            });
        }
        Ok(true)
    }

    async fn chain_tip(&mut self, room_id: &str, chain: i64) -> SqlResult<i64> {
        on_tx!(self, c => {
            sqlx::query_scalar("SELECT MAX(seq) FROM roomserver_auth_chains WHERE room_id = $1 AND chain_id = $2")
                .bind(room_id)
                .bind(chain)
                .fetch_one(c)
                .await
        })
    }

    /// The positions of those of `ids` that have one.
    pub async fn chain_positions(
        &mut self,
        room_id: &str,
        ids: &[&OwnedEventId],
    ) -> SqlResult<HashMap<OwnedEventId, Position>> {
        let mut positions = HashMap::with_capacity(ids.len());
        for batch in ids.chunks(BATCH) {
            // By event id alone, as in `place_in_chain_cover`.
            let sql = format!(
                "SELECT event_id, room_id, chain_id, seq FROM roomserver_auth_chains WHERE event_id IN ({})",
                placeholders(1, batch.len())
            );
            let rows: Vec<(String, String, i64, i64)> = on_tx!(self, c => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()));
                for id in batch {
                    query = query.bind(id.as_str());
                }
                query.fetch_all(c).await?
            });
            for (id, room, chain, seq) in rows {
                if room == room_id
                    && let Ok(id) = OwnedEventId::try_from(id)
                {
                    positions.insert(id, Position { chain, seq });
                }
            }
        }
        Ok(positions)
    }

    /// Every link of the room's chain cover.
    pub async fn chain_links(&mut self, room_id: &str) -> SqlResult<Vec<Link>> {
        let rows: Vec<(i64, i64, i64, i64)> = on_tx!(self, c => {
            sqlx::query_as(
                "SELECT origin_chain, origin_seq, target_chain, target_seq FROM roomserver_auth_chain_links \
                 WHERE room_id = $1",
            )
            .bind(room_id)
            .fetch_all(c)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(chain, seq, target_chain, target_seq)| Link {
                origin: Position { chain, seq },
                target: Position { chain: target_chain, seq: target_seq },
            })
            .collect())
    }

    /// The events of the room on `chains` with a seq in the chain's range
    /// `(low, high]`.
    pub async fn chain_events(
        &mut self,
        room_id: &str,
        chains: &HashMap<i64, (i64, i64)>,
    ) -> SqlResult<Vec<(OwnedEventId, Position)>> {
        let ids: Vec<i64> = chains.keys().copied().collect();
        let mut events = Vec::new();
        for batch in ids.chunks(BATCH) {
            let sql = format!(
                "SELECT event_id, chain_id, seq FROM roomserver_auth_chains WHERE room_id = $1 AND chain_id IN ({})",
                placeholders(2, batch.len())
            );
            let rows: Vec<(String, i64, i64)> = on_tx!(self, c => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(room_id);
                for chain in batch {
                    query = query.bind(*chain);
                }
                query.fetch_all(c).await?
            });
            for (id, chain, seq) in rows {
                let (low, high) = chains[&chain];
                if seq > low
                    && seq <= high
                    && let Ok(id) = OwnedEventId::try_from(id)
                {
                    events.push((id, Position { chain, seq }));
                }
            }
        }
        Ok(events)
    }

    /// The stored events among `ids`, as [`Tx::known_event`] reads one.
    pub async fn known_events(&mut self, ids: &[&OwnedEventId]) -> SqlResult<Vec<(OwnedEventId, KnownEvent)>> {
        let mut events = Vec::with_capacity(ids.len());
        for batch in ids.chunks(BATCH) {
            let sql = format!(
                "SELECT event_id, status, state_before, state_after, pdu FROM roomserver_events \
                 WHERE event_id IN ({})",
                placeholders(1, batch.len())
            );
            let rows: Vec<IdKnownColumns> = on_tx!(self, c => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()));
                for id in batch {
                    query = query.bind(id.as_str());
                }
                query.fetch_all(c).await?
            });
            for (id, status, state_before, state_after, pdu) in rows {
                let columns: KnownColumns = (status, state_before, state_after, pdu);
                if let Ok(id) = OwnedEventId::try_from(id) {
                    events.push((id, KnownEvent::from(columns)));
                }
            }
        }
        Ok(events)
    }
}

impl From<KnownColumns> for KnownEvent {
    fn from((status, state_before, state_after, pdu): KnownColumns) -> Self {
        Self { status: EventStatus::parse(&status), state_before, state_after, pdu }
    }
}
