//! HTTP handlers, mounted under both `/_matrix/client/v3` and the legacy
//! `r0`, and the admin's per-room push limit under `/_myelin/admin/v1`.

mod admin;
mod extract;
mod notifications;
mod push_rules;
mod pushers;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use myelin_clientapi::api::TokenResolver;

use crate::rules::PushRules;
use crate::storage::Storage;

#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub rules: Arc<PushRules>,
    pub auth: Arc<TokenResolver>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0"] {
        // Clients call both with and without the trailing slash of the spec's paths.
        for all in ["pushrules/", "pushrules"] {
            router = router.route(&format!("{prefix}/{all}"), get(push_rules::get_all));
        }
        for global in ["pushrules/global/", "pushrules/global"] {
            router = router.route(&format!("{prefix}/{global}"), get(push_rules::get_global));
        }
        let rule = format!("{prefix}/pushrules/global/{{kind}}/{{ruleId}}");
        router = router
            .route(&rule, get(push_rules::get_rule).put(push_rules::put_rule).delete(push_rules::delete_rule))
            .route(&format!("{rule}/enabled"), get(push_rules::get_enabled).put(push_rules::put_enabled))
            .route(&format!("{rule}/actions"), get(push_rules::get_actions).put(push_rules::put_actions))
            .route(&format!("{prefix}/pushers"), get(pushers::get_pushers))
            .route(&format!("{prefix}/pushers/set"), post(pushers::set_pusher))
            .route(&format!("{prefix}/notifications"), get(notifications::get_notifications));
    }
    let room_content = "/_myelin/admin/v1/rooms/{roomId}/push_content";
    router = router.route(room_content, get(admin::get_room_content).put(admin::put_room_content));
    router.with_state(state)
}
