//! The sender's tables: `federationapi_joined_members` (who is joined to
//! each room, from the room server's state deltas) and
//! `federationapi_queue` (PDUs and EDUs not yet delivered, per destination).

use myelin_storage::{Db, sqlx, with_db};

/// What a queued row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pdu,
    /// An EDU (`{"edu_type", "content"}`) that must arrive.
    Edu,
    /// A typing EDU: worthless once `expires_ms` (kept beside it) has passed.
    Typing,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pdu => "pdu",
            Self::Edu => "edu",
            Self::Typing => "typing",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "edu" => Self::Edu,
            "typing" => Self::Typing,
            _ => Self::Pdu,
        }
    }
}

/// One queued PDU or EDU (its JSON in `pdu`, named for the first kind).
pub struct Queued {
    pub seq: i64,
    pub kind: Kind,
    pub pdu: String,
}

pub async fn set_joined(db: &Db, room_id: &str, user_id: &str, server_name: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO federationapi_joined_members (room_id, user_id, server_name) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(server_name)
        .execute(pool)
        .await
        .map(drop)
    })
}

pub async fn set_not_joined(db: &Db, room_id: &str, user_id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM federationapi_joined_members WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(drop)
    })
}

/// Servers with at least one joined member in the room.
pub async fn joined_servers(db: &Db, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar(
            "SELECT DISTINCT server_name FROM federationapi_joined_members WHERE room_id = $1 ORDER BY server_name",
        )
        .bind(room_id)
        .fetch_all(pool)
        .await
    })
}

/// Queue a PDU for `destination`; queuing the same event twice is a no-op.
pub async fn enqueue(db: &Db, destination: &str, event_id: &str, pdu: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO federationapi_queue (destination, event_id, pdu) VALUES ($1, $2, $3) \
             ON CONFLICT (destination, event_id) DO NOTHING",
        )
        .bind(destination)
        .bind(event_id)
        .bind(pdu)
        .execute(pool)
        .await
        .map(drop)
    })
}

/// Queue an EDU for `destination` under `key`, which is unique per EDU.
pub async fn enqueue_edu(db: &Db, destination: &str, kind: Kind, key: &str, edu: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO federationapi_queue (destination, event_id, pdu, kind) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (destination, event_id) DO NOTHING",
        )
        .bind(destination)
        .bind(key)
        .bind(edu)
        .bind(kind.as_str())
        .execute(pool)
        .await
        .map(drop)
    })
}

/// The oldest `limit` rows queued for `destination`.
pub async fn pending(db: &Db, destination: &str, limit: i64) -> Result<Vec<Queued>, sqlx::Error> {
    let rows: Vec<(i64, String, String)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT seq, kind, pdu FROM federationapi_queue WHERE destination = $1 ORDER BY seq LIMIT $2",
        )
        .bind(destination)
        .bind(limit)
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(|(seq, kind, pdu)| Queued { seq, kind: Kind::parse(&kind), pdu }).collect())
}

/// Whether `user_id` is joined to `room_id`, as far as the sender knows.
pub async fn is_joined(db: &Db, room_id: &str, user_id: &str) -> Result<bool, sqlx::Error> {
    let count: i64 = with_db!(db, pool => {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM federationapi_joined_members WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_one(pool)
        .await?
    });
    Ok(count > 0)
}

/// Forget what `destination` acknowledged: everything up to `seq`.
pub async fn delivered(db: &Db, destination: &str, seq: i64) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM federationapi_queue WHERE destination = $1 AND seq <= $2")
            .bind(destination)
            .bind(seq)
            .execute(pool)
            .await
            .map(drop)
    })
}

/// Destinations with something queued (to resume after a restart).
pub async fn destinations(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT DISTINCT destination FROM federationapi_queue ORDER BY destination")
            .fetch_all(pool)
            .await
    })
}
