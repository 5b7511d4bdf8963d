//! The room directory: local aliases (`clientapi_room_aliases`), the rooms
//! published in the public directory (`clientapi_published_rooms`), and the
//! summaries the directory shows (`clientapi_room_summaries` with the joined
//! members in `clientapi_directory_members`), built from `roomserver.output`.

use myelin_storage::sqlx::AssertSqlSafe;
use myelin_storage::{Db, WritePool, sqlx, with_db};

/// Map `alias` to `room_id`; `false` when the alias is taken.
pub async fn create_alias(
    db: &Db,
    alias: &str,
    room_id: &str,
    creator: &str,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let done = with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO clientapi_room_aliases (alias, room_id, creator, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (alias) DO NOTHING",
        )
        .bind(alias)
        .bind(room_id)
        .bind(creator)
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// `(room_id, creator)` of the alias.
pub async fn alias(db: &Db, alias: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_as("SELECT room_id, creator FROM clientapi_room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(pool)
            .await
    })
}

pub async fn delete_alias(db: &Db, alias: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM clientapi_room_aliases WHERE alias = $1").bind(alias).execute(pool).await?;
    });
    Ok(())
}

/// The room's local aliases, oldest first.
pub async fn aliases_of(db: &Db, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT alias FROM clientapi_room_aliases WHERE room_id = $1 ORDER BY created_ms, alias")
            .bind(room_id)
            .fetch_all(pool)
            .await
    })
}

/// Point the room's local aliases at the room that replaces it, and move
/// its place in the public directory there too (a room upgrade).
pub async fn move_to_replacement(db: &Db, room_id: &str, replacement: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("UPDATE clientapi_room_aliases SET room_id = $2 WHERE room_id = $1")
            .bind(room_id)
            .bind(replacement)
            .execute(&mut *tx)
            .await?;
        let published = sqlx::query("DELETE FROM clientapi_published_rooms WHERE room_id = $1")
            .bind(room_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if published > 0 {
            sqlx::query("INSERT INTO clientapi_published_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING")
                .bind(replacement)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Publish the room in the public directory, or take it out.
pub async fn set_published(db: &Db, room_id: &str, published: bool) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        if published {
            sqlx::query("INSERT INTO clientapi_published_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING")
                .bind(room_id)
                .execute(pool)
                .await?;
        } else {
            sqlx::query("DELETE FROM clientapi_published_rooms WHERE room_id = $1").bind(room_id).execute(pool).await?;
        }
    });
    Ok(())
}

pub async fn is_published(db: &Db, room_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT room_id FROM clientapi_published_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(found.is_some())
}

/// Whether the read model has seen the room.
pub async fn room_known(db: &Db, room_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT room_id FROM clientapi_room_summaries WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(found.is_some())
}

/// A summary field, each set from one state event type (empty state key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Topic,
    CanonicalAlias,
    AvatarUrl,
    JoinRule,
    HistoryVisibility,
    GuestAccess,
    RoomType,
}

/// The SQL that sets one field (the column name cannot be a parameter).
macro_rules! upsert {
    ($column:literal) => {
        concat!(
            "INSERT INTO clientapi_room_summaries (room_id, ",
            $column,
            ") VALUES ($1, $2) ON CONFLICT (room_id) DO UPDATE SET ",
            $column,
            " = excluded.",
            $column
        )
    };
}

impl Field {
    fn upsert_sql(self) -> &'static str {
        match self {
            Self::Name => upsert!("name"),
            Self::Topic => upsert!("topic"),
            Self::CanonicalAlias => upsert!("canonical_alias"),
            Self::AvatarUrl => upsert!("avatar_url"),
            Self::JoinRule => upsert!("join_rule"),
            Self::HistoryVisibility => upsert!("history_visibility"),
            Self::GuestAccess => upsert!("guest_access"),
            Self::RoomType => upsert!("room_type"),
        }
    }
}

/// One change of the read model, from one state event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryChange {
    /// The field's new value (`None`: unset).
    Set(Field, Option<String>),
    /// A member joined or changed their room profile.
    Joined { user_id: String, displayname: Option<String>, avatar_url: Option<String> },
    /// A member is no longer joined.
    Left { user_id: String },
}

/// Apply the changes one output record made, in one transaction. Each sets
/// a value (never increments), so a redelivered record changes nothing.
pub async fn apply(db: &Db, room_id: &str, changes: &[SummaryChange]) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("INSERT INTO clientapi_room_summaries (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING")
            .bind(room_id)
            .execute(&mut *tx)
            .await?;
        for change in changes {
            match change {
                SummaryChange::Set(field, value) => {
                    sqlx::query(field.upsert_sql()).bind(room_id).bind(value.as_deref()).execute(&mut *tx).await?;
                }
                SummaryChange::Joined { user_id, displayname, avatar_url } => {
                    sqlx::query(
                        "INSERT INTO clientapi_directory_members (room_id, user_id, displayname, avatar_url) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id) \
                         DO UPDATE SET displayname = excluded.displayname, avatar_url = excluded.avatar_url",
                    )
                    .bind(room_id)
                    .bind(user_id)
                    .bind(displayname)
                    .bind(avatar_url)
                    .execute(&mut *tx)
                    .await?;
                }
                SummaryChange::Left { user_id } => {
                    sqlx::query("DELETE FROM clientapi_directory_members WHERE room_id = $1 AND user_id = $2")
                        .bind(room_id)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
    });
    Ok(())
}

/// The users of `server_name` joined to the room.
pub async fn joined_local_members(db: &Db, room_id: &str, server_name: &str) -> Result<Vec<String>, sqlx::Error> {
    // Server names hold no `%` or `_`, so the pattern matches them literally.
    let pattern = format!("%:{server_name}");
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT user_id FROM clientapi_directory_members WHERE room_id = $1 AND user_id LIKE $2")
            .bind(room_id)
            .bind(&pattern)
            .fetch_all(pool)
            .await
    })
}

/// A published room as the directory lists it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub room_id: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub join_rule: Option<String>,
    pub history_visibility: Option<String>,
    pub guest_access: Option<String>,
    pub room_type: Option<String>,
    pub joined_members: i64,
}

type SummaryRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

/// `LIKE` pattern for a case-insensitive substring search (`''` matches all).
fn pattern(search: Option<&str>) -> String {
    match search.map(str::trim).filter(|s| !s.is_empty()) {
        None => String::new(),
        Some(term) => {
            let escaped: String = term
                .to_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '\\' | '%' | '_' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("%{escaped}%")
        }
    }
}

/// Which published rooms a directory page lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryFilter {
    /// Matched against the name, topic and canonical alias, ignoring case.
    pub search: Option<String>,
    /// `None` (or empty): every type; `Some(None)` inside: rooms without a type.
    pub room_types: Option<Vec<Option<String>>>,
}

/// The `WHERE` clause of a directory query: `$1` is the search pattern,
/// the named room types follow from `$2`. Built per request because the
/// number of types varies; only placeholders are formatted in.
fn directory_condition(filter: &DirectoryFilter) -> (String, Vec<&str>) {
    let mut sql = String::from(
        "($1 = '' OR LOWER(COALESCE(s.name, '')) LIKE $1 ESCAPE '\\' \
         OR LOWER(COALESCE(s.topic, '')) LIKE $1 ESCAPE '\\' \
         OR LOWER(COALESCE(s.canonical_alias, '')) LIKE $1 ESCAPE '\\')",
    );
    let Some(types) = filter.room_types.as_ref().filter(|types| !types.is_empty()) else { return (sql, Vec::new()) };
    let named: Vec<&str> = types.iter().flatten().map(String::as_str).collect();
    let mut alternatives = Vec::new();
    if types.iter().any(Option::is_none) {
        alternatives.push("s.room_type IS NULL".to_owned());
    }
    if !named.is_empty() {
        let placeholders: Vec<String> = (0..named.len()).map(|i| format!("${}", i + 2)).collect();
        alternatives.push(format!("s.room_type IN ({})", placeholders.join(", ")));
    }
    sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    (sql, named)
}

/// Published rooms matching `filter`, most joined members first, and how
/// many match in all.
pub async fn published(
    db: &Db,
    filter: &DirectoryFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Summary>, i64), sqlx::Error> {
    let pattern = pattern(filter.search.as_deref());
    let (condition, room_types) = directory_condition(filter);
    let next = room_types.len() + 2;
    let rows_sql = format!(
        "SELECT p.room_id, s.name, s.topic, s.canonical_alias, s.avatar_url, s.join_rule, \
         s.history_visibility, s.guest_access, s.room_type, \
         (SELECT COUNT(*) FROM clientapi_directory_members m WHERE m.room_id = p.room_id) AS joined \
         FROM clientapi_published_rooms p LEFT JOIN clientapi_room_summaries s ON s.room_id = p.room_id \
         WHERE {condition} ORDER BY joined DESC, p.room_id LIMIT ${next} OFFSET ${}",
        next + 1
    );
    let total_sql = format!(
        "SELECT COUNT(*) FROM clientapi_published_rooms p \
         LEFT JOIN clientapi_room_summaries s ON s.room_id = p.room_id WHERE {condition}"
    );
    let (rows, total): (Vec<SummaryRow>, i64) = with_db!(db, pool => {
        let mut rows = sqlx::query_as(AssertSqlSafe(rows_sql.as_str())).bind(&pattern);
        let mut total = sqlx::query_scalar(AssertSqlSafe(total_sql.as_str())).bind(&pattern);
        for room_type in &room_types {
            rows = rows.bind(*room_type);
            total = total.bind(*room_type);
        }
        (rows.bind(limit).bind(offset).fetch_all(pool).await?, total.fetch_one(pool).await?)
    });
    let summaries = rows
        .into_iter()
        .map(
            |(
                room_id,
                name,
                topic,
                canonical_alias,
                avatar_url,
                join_rule,
                history_visibility,
                guest_access,
                room_type,
                joined_members,
            )| Summary {
                room_id,
                name,
                topic,
                canonical_alias,
                avatar_url,
                join_rule,
                history_visibility,
                guest_access,
                room_type,
                joined_members,
            },
        )
        .collect();
    Ok((summaries, total))
}

/// A user the user directory found: id, display name and avatar.
pub type FoundUser = (String, Option<String>, Option<String>);

/// Users who share a room with `requester` or are in a public room, whose
/// id or display name contains `term` (any letter case), by id, at most
/// `limit`. Profiles are those of this server's users; deactivated
/// accounts are left out.
pub async fn search_users(
    db: &Db,
    requester: &str,
    server_name: &str,
    term: &str,
    limit: i64,
) -> Result<Vec<FoundUser>, sqlx::Error> {
    let pattern = format!("%{}%", term.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    with_db!(db, pool => {
        sqlx::query_as(
            "SELECT m.user_id, COALESCE(MAX(a.displayname), MAX(m.displayname)), \
             COALESCE(MAX(a.avatar_url), MAX(m.avatar_url)) FROM clientapi_directory_members m \
             LEFT JOIN clientapi_accounts a ON '@' || a.localpart || ':' || $2 = m.user_id \
             WHERE (m.room_id IN (SELECT room_id FROM clientapi_directory_members WHERE user_id = $1) \
                    OR m.room_id IN (SELECT room_id FROM clientapi_room_summaries WHERE join_rule = 'public')) \
             AND (a.deactivated IS NULL OR NOT a.deactivated) \
             AND (lower(m.user_id) LIKE $3 ESCAPE '\\' \
                  OR lower(COALESCE(a.displayname, m.displayname, '')) LIKE $3 ESCAPE '\\') \
             GROUP BY m.user_id ORDER BY m.user_id LIMIT $4",
        )
        .bind(requester)
        .bind(server_name)
        .bind(&pattern)
        .bind(limit)
        .fetch_all(pool)
        .await
    })
}
