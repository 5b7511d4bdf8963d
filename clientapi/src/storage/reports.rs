//! Content reports: what users reported (an event, a room or a user), kept
//! for the server's admins.

use myelin_storage::{Db, sqlx, with_db};

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Event,
    Room,
    User,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Room => "room",
            Self::User => "user",
        }
    }
}

pub struct NewReport<'a> {
    pub kind: ReportKind,
    pub received_ts: i64,
    pub reporter: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub target_user_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub score: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub report_id: i64,
    pub received_ts: i64,
    pub reporter: String,
    pub kind: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub target_user_id: Option<String>,
    pub reason: Option<String>,
    pub score: Option<i64>,
}

type ReportRow =
    (i64, i64, String, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>);

fn report(
    (report_id, received_ts, reporter, kind, room_id, event_id, target_user_id, reason, score): ReportRow,
) -> Report {
    Report { report_id, received_ts, reporter, kind, room_id, event_id, target_user_id, reason, score }
}

pub async fn insert(db: &Db, report: &NewReport<'_>) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar(
            "INSERT INTO clientapi_reports (received_ts, reporter, kind, room_id, event_id, target_user_id, reason, \
             score) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING report_id",
        )
        .bind(report.received_ts)
        .bind(report.reporter)
        .bind(report.kind.as_str())
        .bind(report.room_id)
        .bind(report.event_id)
        .bind(report.target_user_id)
        .bind(report.reason)
        .bind(report.score)
        .fetch_one(pool)
        .await
    })
}

/// One page of reports of `kind`, oldest first, or newest first when
/// `newest_first`, skipping `from`; and how many there are in all.
pub async fn list(
    db: &Db,
    kind: ReportKind,
    from: i64,
    limit: i64,
    newest_first: bool,
) -> Result<(Vec<Report>, i64), sqlx::Error> {
    with_db!(db, pool => {
        let reports: Vec<ReportRow> = (if newest_first {
            sqlx::query_as(
                "SELECT report_id, received_ts, reporter, kind, room_id, event_id, target_user_id, reason, score \
                 FROM clientapi_reports WHERE kind = $1 ORDER BY report_id DESC LIMIT $2 OFFSET $3",
            )
        } else {
            sqlx::query_as(
                "SELECT report_id, received_ts, reporter, kind, room_id, event_id, target_user_id, reason, score \
                 FROM clientapi_reports WHERE kind = $1 ORDER BY report_id LIMIT $2 OFFSET $3",
            )
        })
        .bind(kind.as_str())
        .bind(limit)
        .bind(from)
        .fetch_all(pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM clientapi_reports WHERE kind = $1")
            .bind(kind.as_str())
            .fetch_one(pool)
            .await?;
        Ok((reports.into_iter().map(report).collect(), total))
    })
}

pub async fn get(db: &Db, report_id: i64) -> Result<Option<Report>, sqlx::Error> {
    let row: Option<ReportRow> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT report_id, received_ts, reporter, kind, room_id, event_id, target_user_id, reason, score \
             FROM clientapi_reports WHERE report_id = $1",
        )
        .bind(report_id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(report))
}

pub async fn delete(db: &Db, report_id: i64) -> Result<bool, sqlx::Error> {
    with_db!(db, pool => {
        let done = sqlx::query("DELETE FROM clientapi_reports WHERE report_id = $1").bind(report_id).execute(pool).await?;
        Ok(done.rows_affected() > 0)
    })
}
