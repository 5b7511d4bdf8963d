//! Reporting events, rooms and users, and the admin endpoints that list them.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, Server};

/// Reports are stored for admins; an event the reporter may not see, an
/// unknown room or user get 404 `M_NOT_FOUND`; only admins read reports.
#[tokio::test]
async fn reports_reach_the_admins_and_hidden_content_is_not_found() {
    let server = Server::start(Backend::Postgres).await;
    let admin = server.register_as("admin", true).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let name = server.server_name();
    let room_id = server.create_room(&alice, json!({"preset": "public_chat"})).await;
    // Alice's room only shows history to members from their join on.
    let (status, reply) = server
        .put(
            &alice,
            &format!("/_matrix/client/v3/rooms/{room_id}/state/m.room.history_visibility"),
            json!({"history_visibility": "joined"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let hidden = server.send_message(&alice, &room_id, "t1", "before bob").await;
    let (status, reply) = server.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/join"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let visible = server.send_message(&alice, &room_id, "t2", "after bob joined").await;

    let report_event = |event_id: &str| format!("/_matrix/client/v3/rooms/{room_id}/report/{event_id}");
    let (status, reply) = server.post(&bob, &report_event(&visible), json!({"reason": "rude", "score": -100})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!({}));
    // Hidden by history visibility, unknown, bad score, bad id.
    let (status, reply) = server.post(&bob, &report_event(&hidden), json!({"reason": "probe"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
    let (status, reply) = server.post(&bob, &report_event("$nothere"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
    let (status, reply) = server.post(&bob, &report_event(&visible), json!({"score": 5})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_INVALID_PARAM");
    let (status, reply) = server.post(&bob, &report_event("not-an-event"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_INVALID_PARAM");

    // Rooms and users.
    let (status, reply) =
        server.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/report"), json!({"reason": "spam room"})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) =
        server.post(&bob, &format!("/_matrix/client/v3/rooms/!unknown:{name}/report"), json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
    let (status, reply) = server.post(&bob, &format!("/_matrix/client/v3/rooms/{room_id}/report"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "reason is required: {reply}");
    assert_eq!(reply["errcode"], "M_BAD_JSON");
    let (status, reply) = server
        .post(&bob, &format!("/_matrix/client/v3/users/@alice:{name}/report"), json!({"reason": "harassment"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reply) =
        server.post(&bob, &format!("/_matrix/client/v3/users/@nobody:{name}/report"), json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");

    // Admins see them; others are refused.
    let (status, reply) = server.get(&bob, "/_synapse/admin/v1/event_reports").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{reply}");
    assert_eq!(reply["errcode"], "M_FORBIDDEN");
    let (status, reply) = server.get(&admin, "/_synapse/admin/v1/event_reports").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["total"], 1, "{reply}");
    let report = &reply["event_reports"][0];
    assert_eq!(report["event_id"], visible.as_str());
    assert_eq!(report["room_id"], room_id.as_str());
    assert_eq!(report["user_id"], format!("@bob:{name}"));
    assert_eq!(report["sender"], format!("@alice:{name}"));
    assert_eq!(report["reason"], "rude");
    assert_eq!(report["score"], -100);
    let id = report["id"].as_i64().unwrap();
    let (status, one) = server.get(&admin, &format!("/_synapse/admin/v1/event_reports/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(&one, report);
    let (status, reply) = server.get(&admin, "/_myelin/admin/v1/room_reports").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["room_reports"][0]["room_id"], room_id.as_str(), "{reply}");
    assert_eq!(reply["room_reports"][0]["reason"], "spam room", "{reply}");
    let (status, reply) = server.get(&admin, "/_myelin/admin/v1/user_reports?dir=f&limit=10").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["user_reports"][0]["target_user_id"], format!("@alice:{name}"), "{reply}");
    let (status, reply) = server.get(&admin, "/_synapse/admin/v1/event_reports?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(reply["errcode"], "M_INVALID_PARAM");

    // Deleting one.
    let delete = crate::harness::json_request(
        reqwest::Method::DELETE,
        &server.url(&format!("/_synapse/admin/v1/event_reports/{id}")),
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(delete.0, StatusCode::OK, "{}", delete.1);
    let (status, reply) = server.get(&admin, &format!("/_synapse/admin/v1/event_reports/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{reply}");
    assert_eq!(reply["errcode"], "M_NOT_FOUND");
}
