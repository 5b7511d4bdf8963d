//! The full-text index `/search` reads: SQLite's FTS5 and PostgreSQL's
//! `tsvector` with a GIN index, one entry per searchable timeline event,
//! keyed by its stream position and removed when the event is redacted.
//!
//! Both dialects tokenize the same way as far as clients can tell: words
//! are runs of letters and digits, compared without letter case, and every
//! word of a search term matches as a prefix ("fox" finds "foxes"). No
//! stemming and no stop words, so that a term means the same in every
//! language and on both backends.

use myelin_storage::{Db, sqlx, with_db};
use serde_json::Value;

use super::{EventRow, Storage, to_row};
use crate::SyncApiError;

/// The searchable keys, the event type each belongs to, and its field in
/// `content`.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("content.body", "m.room.message", "body"),
    ("content.name", "m.room.name", "name"),
    ("content.topic", "m.room.topic", "topic"),
];

/// The index entry of an event: its key and text, if it has one.
pub(super) fn searchable(event_type: &str, pdu: &Value) -> Option<(&'static str, String)> {
    let (key, _, field) = KEYS.iter().find(|(_, kind, _)| *kind == event_type)?;
    // PostgreSQL text cannot hold NUL; it separates nothing worth finding.
    let text = pdu.get("content")?.get(*field)?.as_str()?.replace('\0', " ");
    Some((*key, text))
}

/// The words of a search term as the index compares them.
pub fn words_of(term: &str) -> Vec<String> {
    term.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
}

/// One dialect's statements. Every query binds, in order: the match
/// expression, the searched keys (`,key,key,`), the user, the page start
/// (a stream position to stay below, or a rank offset), the page size.
pub(super) struct Sql {
    /// Binds position, text, key, room.
    pub insert: &'static str,
    /// Binds the redacted event's id.
    pub delete: &'static str,
    recent: &'static str,
    rank: &'static str,
    /// Binds match, keys, user, a cap, and whether to read each PDU.
    positions: &'static str,
}

/// The rooms the user (`$3`) is joined to, as an SQL literal for `concat!`.
macro_rules! joined {
    () => {
        "SELECT room_id FROM syncapi_memberships WHERE user_id = $3 AND membership = 'join'"
    };
}

const SQLITE: Sql = Sql {
    insert: "INSERT INTO syncapi_search (rowid, words, field, room_id) VALUES ($1, $2, $3, $4)",
    delete: "DELETE FROM syncapi_search WHERE rowid = (SELECT stream_pos FROM syncapi_events WHERE event_id = $1)",
    recent: concat!(
        "SELECT e.room_id, e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id, -s.rank FROM \
         (SELECT rowid AS pos, rank FROM syncapi_search WHERE syncapi_search MATCH $1 \
          AND instr($2, ',' || field || ',') > 0 AND room_id IN (",
        joined!(),
        ") AND rowid < $4 ORDER BY rowid DESC LIMIT $5) s \
         JOIN syncapi_events e ON e.stream_pos = s.pos ORDER BY s.pos DESC"
    ),
    rank: concat!(
        "SELECT e.room_id, e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id, -s.rank FROM \
         (SELECT rowid AS pos, rank FROM syncapi_search WHERE syncapi_search MATCH $1 \
          AND instr($2, ',' || field || ',') > 0 AND room_id IN (",
        joined!(),
        ") ORDER BY rank, rowid DESC LIMIT $5 OFFSET $4) s \
         JOIN syncapi_events e ON e.stream_pos = s.pos ORDER BY s.rank, s.pos DESC"
    ),
    positions: concat!(
        "SELECT e.room_id, e.stream_pos, e.sender, e.event_type, e.state_key IS NOT NULL, \
         CASE WHEN $5 THEN e.pdu END FROM \
         (SELECT rowid AS pos FROM syncapi_search WHERE syncapi_search MATCH $1 \
          AND instr($2, ',' || field || ',') > 0 AND room_id IN (",
        joined!(),
        ") ORDER BY rowid DESC LIMIT $4) s JOIN syncapi_events e ON e.stream_pos = s.pos"
    ),
};

const POSTGRES: Sql = Sql {
    insert: "INSERT INTO syncapi_search (stream_pos, vector, field, room_id) \
             VALUES ($1, to_tsvector('simple', $2), $3, $4)",
    delete: "DELETE FROM syncapi_search WHERE stream_pos = \
             (SELECT stream_pos FROM syncapi_events WHERE event_id = $1)",
    recent: concat!(
        "SELECT e.room_id, e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id, \
         CAST(ts_rank(s.vector, q) AS FLOAT8) FROM syncapi_search s \
         CROSS JOIN to_tsquery('simple', $1) q JOIN syncapi_events e ON e.stream_pos = s.stream_pos \
         WHERE s.vector @@ q AND strpos($2, ',' || s.field || ',') > 0 AND s.room_id IN (",
        joined!(),
        ") AND s.stream_pos < $4 ORDER BY s.stream_pos DESC LIMIT $5"
    ),
    rank: concat!(
        "SELECT e.room_id, e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id, \
         CAST(ts_rank(s.vector, q) AS FLOAT8) AS score FROM syncapi_search s \
         CROSS JOIN to_tsquery('simple', $1) q JOIN syncapi_events e ON e.stream_pos = s.stream_pos \
         WHERE s.vector @@ q AND strpos($2, ',' || s.field || ',') > 0 AND s.room_id IN (",
        joined!(),
        ") ORDER BY score DESC, s.stream_pos DESC LIMIT $5 OFFSET $4"
    ),
    positions: concat!(
        "SELECT e.room_id, e.stream_pos, e.sender, e.event_type, e.state_key IS NOT NULL, \
         CASE WHEN $5 THEN e.pdu END FROM syncapi_search s JOIN syncapi_events e ON e.stream_pos = s.stream_pos \
         WHERE s.vector @@ to_tsquery('simple', $1) AND strpos($2, ',' || s.field || ',') > 0 AND s.room_id IN (",
        joined!(),
        ") ORDER BY s.stream_pos DESC LIMIT $4"
    ),
};

pub(super) fn sql(db: &Db) -> &'static Sql {
    match db {
        Db::Sqlite(_) => &SQLITE,
        Db::Postgres(_) => &POSTGRES,
    }
}

/// What to look for: words (each a prefix of a word in the text) in some
/// of the searchable keys.
pub struct SearchTerms<'a> {
    pub words: &'a [String],
    pub keys: &'a [&'static str],
}

impl SearchTerms<'_> {
    /// The match expression in `db`'s dialect. Words hold only letters and
    /// digits (see [`words_of`]), so neither syntax can be injected.
    fn expression(&self, db: &Db) -> String {
        match db {
            Db::Sqlite(_) => self.words.iter().map(|word| format!("\"{word}\"*")).collect::<Vec<_>>().join(" "),
            Db::Postgres(_) => self.words.iter().map(|word| format!("{word}:*")).collect::<Vec<_>>().join(" & "),
        }
    }

    fn key_list(&self) -> String {
        format!(",{},", self.keys.join(","))
    }
}

/// Where a page of results starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPage {
    /// Newest first, below this stream position.
    Recent { before: i64 },
    /// Best match first, after skipping this many.
    Rank { offset: i64 },
}

/// One matching event and how well it matched (higher is better).
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub room_id: String,
    pub row: EventRow,
    pub rank: f64,
}

type HitRow = (String, i64, String, String, Option<String>, Option<String>, f64);

impl Storage {
    /// Up to `limit` matching events in rooms `user_id` is joined to, in
    /// `page`'s order. Visibility is the caller's to check.
    pub async fn search(
        &self,
        user_id: &str,
        terms: &SearchTerms<'_>,
        page: SearchPage,
        limit: i64,
    ) -> Result<Vec<SearchHit>, SyncApiError> {
        let statements = sql(&self.db);
        let (statement, start) = match page {
            SearchPage::Recent { before } => (statements.recent, before),
            SearchPage::Rank { offset } => (statements.rank, offset),
        };
        let expression = terms.expression(&self.db);
        let rows: Vec<HitRow> = with_db!(&self.db, pool => {
            sqlx::query_as(statement)
                .bind(&expression)
                .bind(terms.key_list())
                .bind(user_id)
                .bind(start)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(room_id, pos, event_id, pdu, device, txn, rank)| {
                Ok(SearchHit { room_id, row: to_row((pos, event_id, pdu, device, txn))?, rank })
            })
            .collect()
    }

    /// Up to `cap` matching events (newest first) in rooms `user_id` is
    /// joined to, for counting the ones the requester may see: their room,
    /// position, sender, type and whether they are state; their PDU only
    /// `with_pdu` (a filter on content needs it).
    pub async fn search_positions(
        &self,
        user_id: &str,
        terms: &SearchTerms<'_>,
        cap: i64,
        with_pdu: bool,
    ) -> Result<Vec<CountedMatch>, SyncApiError> {
        let expression = terms.expression(&self.db);
        let rows: Vec<(String, i64, String, String, bool, Option<String>)> = with_db!(&self.db, pool => {
            sqlx::query_as(sql(&self.db).positions)
                .bind(&expression)
                .bind(terms.key_list())
                .bind(user_id)
                .bind(cap)
                .bind(with_pdu)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(room_id, pos, sender, event_type, is_state, pdu)| {
                let event = match pdu {
                    Some(pdu) => {
                        serde_json::from_str(&pdu).map_err(|e| SyncApiError::Corrupt(format!("event at {pos}: {e}")))?
                    }
                    None => serde_json::json!({ "type": event_type, "sender": sender }),
                };
                Ok(CountedMatch { room_id, pos, is_state, event })
            })
            .collect()
    }
}

/// One match [`Storage::search_positions`] found.
#[derive(Debug)]
pub struct CountedMatch {
    pub room_id: String,
    pub pos: i64,
    pub is_state: bool,
    /// The PDU, or only its `type` and `sender` when it was not read.
    pub event: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use myelin_testkit::TestDb;
    use serde_json::json;

    use super::*;
    use crate::storage::MIGRATIONS;

    #[test]
    fn words_are_runs_of_letters_and_digits_in_lower_case() {
        assert_eq!(words_of("  The Quick-brown fox's 100% \"x\" "), ["the", "quick", "brown", "fox", "s", "100", "x"]);
        assert_eq!(words_of("Grüße, 東京"), ["grüße", "東京"]);
        assert!(words_of(" *:& \" ").is_empty());
    }

    #[test]
    fn only_string_fields_of_searchable_types_are_indexed() {
        let message = json!({"type": "m.room.message", "content": {"body": "a\u{0}b"}});
        assert_eq!(searchable("m.room.message", &message), Some(("content.body", "a b".to_owned())));
        let topic = json!({"content": {"topic": "hello"}});
        assert_eq!(searchable("m.room.topic", &topic), Some(("content.topic", "hello".to_owned())));
        assert_eq!(searchable("m.room.message", &json!({"content": {"body": 3}})), None);
        assert_eq!(searchable("m.reaction", &json!({"content": {"body": "x"}})), None);
    }

    /// Letters and digits Unicode calls alphanumeric but a tokenizer may
    /// not (combining marks, superscripts, letter numerals, case changes
    /// that add marks) make queries that match nothing, never errors.
    #[tokio::test]
    async fn unusual_words_make_valid_queries() {
        for test_db in TestDb::both().await {
            let storage = Storage::open(Db::connect(&test_db.url).await.unwrap()).await.unwrap();
            let keys: Vec<&str> = KEYS.iter().map(|(key, _, _)| *key).collect();
            for term in ["\u{345}", "\u{903}", "²", "Ⅷ", "ǅ", "İstanbul", "ﬁ", "\u{e000}", "a\u{301}"] {
                let words = words_of(term);
                if words.is_empty() {
                    continue; // refused before any query (`M_INVALID_PARAM`)
                }
                let terms = SearchTerms { words: &words, keys: &keys };
                for page in [SearchPage::Recent { before: i64::MAX }, SearchPage::Rank { offset: 0 }] {
                    let found = storage.search("@a:x", &terms, page, 10).await;
                    assert!(found.is_ok(), "[{}] {term:?} ({words:?}): {found:?}", test_db.name);
                }
                let counted = storage.search_positions("@a:x", &terms, 10, true).await;
                assert!(counted.is_ok(), "[{}] {term:?} ({words:?}): {counted:?}", test_db.name);
            }
        }
    }

    /// Migration 11 indexes what earlier versions stored: timeline messages,
    /// names and topics with a string in their field, and nothing else. An
    /// event PostgreSQL's `jsonb` cannot read does not stop it.
    #[tokio::test]
    async fn events_stored_before_the_index_existed_are_found() {
        for test_db in TestDb::both().await {
            let db = Db::connect(&test_db.url).await.unwrap();
            let before_index = MIGRATIONS.iter().position(|m| m.version == 11).unwrap();
            db.migrate("syncapi", &MIGRATIONS[..before_index]).await.unwrap();
            let stored = [
                (1, "m.room.message", json!({"body": "Quick brown fox"}), 1),
                (2, "m.room.message", json!({"body": 5, "text": "quick"}), 1),
                (3, "m.room.topic", json!({"topic": "quicker topics"}), 1),
                (4, "m.room.message", json!({"body": "quick but \u{0} inside"}), 1),
                (5, "m.room.name", json!({"name": "quick"}), 0),
                (6, "m.room.message", json!({"body": "slow"}), 1),
            ];
            with_db!(&db, pool => {
                for (pos, event_type, content, timeline) in stored {
                    let pdu = json!({"type": event_type, "sender": "@a:x", "content": content}).to_string();
                    sqlx::query(
                        "INSERT INTO syncapi_events (stream_pos, event_id, room_id, sender, event_type, pdu, timeline) \
                         VALUES ($1, $2, '!r:x', '@a:x', $3, $4, $5)",
                    )
                    .bind(pos)
                    .bind(format!("$e{pos}"))
                    .bind(event_type)
                    .bind(pdu)
                    .bind(timeline)
                    .execute(pool)
                    .await
                    .unwrap();
                }
                sqlx::query(
                    "INSERT INTO syncapi_memberships (room_id, user_id, membership, stream_pos) \
                     VALUES ('!r:x', '@a:x', 'join', 1)",
                )
                .execute(pool)
                .await
                .unwrap();
            });
            let storage = Storage::open(db).await.unwrap();

            let keys: Vec<&str> = KEYS.iter().map(|(key, _, _)| *key).collect();
            let found = |word: &str, user: &str| {
                let words = vec![word.to_owned()];
                let (storage, keys) = (&storage, &keys);
                let user = user.to_owned();
                async move {
                    let terms = SearchTerms { words: &words, keys };
                    let hits =
                        storage.search(&user, &terms, SearchPage::Recent { before: i64::MAX }, 10).await.unwrap();
                    hits.iter().map(|hit| hit.row.pos).collect::<Vec<_>>()
                }
            };
            let quick = found("quick", "@a:x").await;
            let expected: &[i64] = if test_db.name == "sqlite" { &[4, 3, 1] } else { &[3, 1] };
            assert_eq!(quick, expected, "[{}]", test_db.name);
            assert_eq!(found("slow", "@a:x").await, [6], "[{}]", test_db.name);
            assert!(found("quick", "@b:x").await.is_empty(), "[{}] only members' rooms", test_db.name);
        }
    }
}
