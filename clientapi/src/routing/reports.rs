//! Reporting content to the server's admins (events, rooms, users), and
//! the admin endpoints that list the reports.

use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedEventId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{AdminUser, AuthedUser};
use crate::error::{ClientApiError, Result};
use crate::json::{MatrixJson, MatrixPath, MatrixQuery};
use crate::producers::roomserver;
use crate::routing::{parse_room_id, parse_user_id};
use crate::service::AppState;
use crate::storage::reports::{self, NewReport, Report, ReportKind};

/// The longest reason kept, in bytes.
const MAX_REASON_LEN: usize = 4096;

/// The most reports one admin page lists.
const MAX_PAGE: i64 = 1000;

#[derive(Deserialize)]
pub struct EventReportBody {
    reason: Option<String>,
    /// From -100 (most offensive) to 0; dropped from the spec in v1.13 but
    /// still sent by clients.
    score: Option<i64>,
}

#[derive(Deserialize)]
pub struct ReasonBody {
    reason: String,
}

fn check_reason(reason: Option<&str>) -> Result<(), MatrixError> {
    match reason {
        Some(reason) if reason.len() > MAX_REASON_LEN => {
            Err(MatrixError::invalid_param(format!("reason is longer than {MAX_REASON_LEN} bytes")))
        }
        _ => Ok(()),
    }
}

/// A room this server has; `404 M_NOT_FOUND` (the spec's answer) otherwise.
fn room_not_found(error: ClientApiError) -> ClientApiError {
    match error {
        ClientApiError::Matrix(e) if e.status == 404 || e.status == 403 => {
            MatrixError::not_found("The room was not found").into()
        }
        other => other,
    }
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreporteventid>
///
/// `404 M_NOT_FOUND` for an event not in the room or hidden from the
/// reporter by history visibility, so a report cannot probe for events.
pub async fn report_event(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, event_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<EventReportBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = OwnedEventId::try_from(event_id.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid event id: {event_id}")))?;
    check_reason(body.reason.as_deref())?;
    if body.score.is_some_and(|score| !(-100..=0).contains(&score)) {
        return Err(MatrixError::invalid_param("score must be between -100 and 0").into());
    }
    let event = roomserver::user_event(&state.bus, &user.user_id, &room_id, &event_id).await.map_err(|e| match e {
        ClientApiError::Matrix(e) if e.status == 404 || e.status == 403 => {
            MatrixError::not_found("The event was not found or you may not see it").into()
        }
        other => other,
    })?;
    let sender = event.pdu.get("sender").and_then(Value::as_str);
    let report = NewReport {
        kind: ReportKind::Event,
        received_ts: state.now_ms(),
        reporter: user.user_id.as_str(),
        room_id: Some(room_id.as_str()),
        event_id: Some(event_id.as_str()),
        target_user_id: sender,
        reason: body.reason.as_deref(),
        score: body.score,
    };
    reports::insert(&state.db, &report).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreport>
pub async fn report_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    check_reason(Some(&body.reason))?;
    roomserver::room_version(&state.bus, &room_id).await.map_err(room_not_found)?;
    let report = NewReport {
        kind: ReportKind::Room,
        received_ts: state.now_ms(),
        reporter: user.user_id.as_str(),
        room_id: Some(room_id.as_str()),
        event_id: None,
        target_user_id: None,
        reason: Some(&body.reason),
        score: None,
    };
    reports::insert(&state.db, &report).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/users/{userId}/report`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3usersuseridreport>
///
/// `404 M_NOT_FOUND` for an unknown user of this server; a user of another
/// server is taken on trust (this server cannot tell).
pub async fn report_user(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(target): MatrixPath<String>,
    MatrixJson(body): MatrixJson<ReasonBody>,
) -> Result<Json<Value>> {
    let target = parse_user_id(&target)?;
    check_reason(Some(&body.reason))?;
    if target.server_name().as_str() == state.server_name()
        && !crate::storage::accounts::exists(&state.db, target.localpart()).await?
    {
        return Err(MatrixError::not_found("The user was not found").into());
    }
    let report = NewReport {
        kind: ReportKind::User,
        received_ts: state.now_ms(),
        reporter: user.user_id.as_str(),
        room_id: None,
        event_id: None,
        target_user_id: Some(target.as_str()),
        reason: Some(&body.reason),
        score: None,
    };
    reports::insert(&state.db, &report).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    from: i64,
    limit: Option<i64>,
    /// `b` (the default, newest first) or `f`.
    dir: Option<String>,
}

/// Synapse's report shape: `user_id` is the reporter, `sender` the event's sender.
fn report_json(report: &Report) -> Value {
    let mut out = json!({
        "id": report.report_id,
        "received_ts": report.received_ts,
        "user_id": report.reporter,
        "reason": report.reason,
    });
    match report.kind.as_str() {
        "event" => {
            out["room_id"] = json!(report.room_id);
            out["event_id"] = json!(report.event_id);
            out["sender"] = json!(report.target_user_id);
            out["score"] = json!(report.score);
        }
        "room" => out["room_id"] = json!(report.room_id),
        _ => out["target_user_id"] = json!(report.target_user_id),
    }
    out
}

async fn list(state: &AppState, kind: ReportKind, field: &str, query: PageQuery) -> Result<Json<Value>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) || query.from < 0 {
        return Err(MatrixError::invalid_param(format!("limit must be 1 to {MAX_PAGE} and from at least 0")).into());
    }
    let newest_first = match query.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(MatrixError::invalid_param("dir must be b or f").into()),
    };
    let (page, total) = reports::list(&state.db, kind, query.from, limit, newest_first).await?;
    let mut body = json!({ field: page.iter().map(report_json).collect::<Vec<_>>(), "total": total });
    let next = query.from + i64::try_from(page.len()).unwrap_or(i64::MAX);
    if next < total {
        body["next_token"] = json!(next);
    }
    Ok(Json(body))
}

/// `GET /_synapse/admin/v1/event_reports`
/// <https://element-hq.github.io/synapse/latest/admin_api/event_reports.html>
pub async fn list_event_reports(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixQuery(query): MatrixQuery<PageQuery>,
) -> Result<Json<Value>> {
    list(&state, ReportKind::Event, "event_reports", query).await
}

/// `GET /_myelin/admin/v1/room_reports`: room reports, shaped like Synapse's event reports.
pub async fn list_room_reports(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixQuery(query): MatrixQuery<PageQuery>,
) -> Result<Json<Value>> {
    list(&state, ReportKind::Room, "room_reports", query).await
}

/// `GET /_myelin/admin/v1/user_reports`: user reports, shaped like Synapse's event reports.
pub async fn list_user_reports(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixQuery(query): MatrixQuery<PageQuery>,
) -> Result<Json<Value>> {
    list(&state, ReportKind::User, "user_reports", query).await
}

/// `GET /_synapse/admin/v1/event_reports/{report_id}`
/// <https://element-hq.github.io/synapse/latest/admin_api/event_reports.html#show-details-of-a-specific-event-report>
pub async fn get_event_report(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixPath(report_id): MatrixPath<i64>,
) -> Result<Json<Value>> {
    let report = reports::get(&state.db, report_id)
        .await?
        .filter(|r| r.kind == ReportKind::Event.as_str())
        .ok_or_else(|| MatrixError::not_found("No such report"))?;
    Ok(Json(report_json(&report)))
}

/// `DELETE /_synapse/admin/v1/event_reports/{report_id}`
/// <https://element-hq.github.io/synapse/latest/admin_api/event_reports.html#delete-a-specific-event-report>
pub async fn delete_event_report(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixPath(report_id): MatrixPath<i64>,
) -> Result<Json<Value>> {
    if !reports::delete(&state.db, report_id).await? {
        return Err(MatrixError::not_found("No such report").into());
    }
    Ok(Json(json!({})))
}
