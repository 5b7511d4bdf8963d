//! The push rules API: <https://spec.matrix.org/v1.16/client-server-api/#push-rules-api>.
//! Only the `global` scope exists. Every change is published as
//! `m.push_rules` account data (`rules.rs`).

use axum::Json;
use axum::extract::State;
use myelin_types::ruma::push::{
    Action, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule, NewPushRule, NewSimplePushRule,
    PushCondition, RemovePushRuleError, RuleKind, Ruleset,
};
use myelin_types::ruma::{OwnedRoomId, OwnedUserId};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Authed, MatrixJson, MatrixPath, MatrixQuery};
use crate::PusherError;
use crate::rules::{KINDS, ruleset_json};

fn parse_kind(kind: &str) -> Result<RuleKind, PusherError> {
    if !KINDS.contains(&kind) {
        return Err(MatrixError::invalid_param(format!("Unknown push rule kind {kind:?}")).into());
    }
    Ok(RuleKind::from(kind))
}

fn rule_not_found() -> PusherError {
    MatrixError::not_found("No such push rule").into()
}

/// The rule as clients read it, or `404 M_NOT_FOUND`.
fn find_rule(ruleset: &Ruleset, kind: &str, rule_id: &str) -> Result<Value, PusherError> {
    let mut all = ruleset_json(ruleset)?;
    let rules = all.get_mut(kind).and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
    rules.into_iter().find(|rule| rule["rule_id"] == rule_id).ok_or_else(rule_not_found)
}

/// GET /_matrix/client/v3/pushrules/
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrules>
pub async fn get_all(State(state): State<AppState>, Authed(caller): Authed) -> Result<Json<Value>, PusherError> {
    let ruleset = state.rules.get(&caller.identity.user_id).await?;
    Ok(Json(json!({ "global": ruleset_json(&ruleset)? })))
}

/// GET /_matrix/client/v3/pushrules/global/
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobal>
pub async fn get_global(State(state): State<AppState>, Authed(caller): Authed) -> Result<Json<Value>, PusherError> {
    let ruleset = state.rules.get(&caller.identity.user_id).await?;
    Ok(Json(ruleset_json(&ruleset)?))
}

/// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobalkindruleid>
pub async fn get_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, PusherError> {
    parse_kind(&kind)?;
    let ruleset = state.rules.get(&caller.identity.user_id).await?;
    Ok(Json(find_rule(&ruleset, &kind, &rule_id)?))
}

#[derive(Deserialize)]
pub struct Placement {
    before: Option<String>,
    after: Option<String>,
}

#[derive(Deserialize)]
pub struct RuleBody {
    actions: Vec<Action>,
    #[serde(default)]
    conditions: Vec<PushCondition>,
    pattern: Option<String>,
}

fn new_rule(kind: &str, rule_id: String, body: RuleBody) -> Result<NewPushRule, PusherError> {
    let RuleBody { actions, conditions, pattern } = body;
    Ok(match kind {
        "override" => NewPushRule::Override(NewConditionalPushRule::new(rule_id, conditions, actions)),
        "underride" => NewPushRule::Underride(NewConditionalPushRule::new(rule_id, conditions, actions)),
        "content" => {
            let pattern =
                pattern.ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, "Content rules need a pattern"))?;
            NewPushRule::Content(NewPatternedPushRule::new(rule_id, pattern, actions))
        }
        "room" => {
            let room_id = OwnedRoomId::try_from(rule_id)
                .map_err(|_| MatrixError::invalid_param("The rule id of a room rule must be a room id"))?;
            NewPushRule::Room(NewSimplePushRule::new(room_id, actions))
        }
        "sender" => {
            let user_id = OwnedUserId::try_from(rule_id)
                .map_err(|_| MatrixError::invalid_param("The rule id of a sender rule must be a user id"))?;
            NewPushRule::Sender(NewSimplePushRule::new(user_id, actions))
        }
        other => return Err(MatrixError::invalid_param(format!("Unknown push rule kind {other:?}")).into()),
    })
}

fn insert_error(error: InsertPushRuleError) -> PusherError {
    match error {
        InsertPushRuleError::UnknownRuleId => MatrixError::not_found("The before or after rule does not exist").into(),
        other => MatrixError::invalid_param(other.to_string()).into(),
    }
}

/// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3pushrulesglobalkindruleid>
pub async fn put_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
    MatrixQuery(placement): MatrixQuery<Placement>,
    MatrixJson(body): MatrixJson<RuleBody>,
) -> Result<Json<Value>, PusherError> {
    parse_kind(&kind)?;
    // Checked here as well as by ruma so that it holds for every kind,
    // whatever the rule id has to parse as.
    if rule_id.starts_with('.') {
        return Err(
            MatrixError::invalid_param("Rule ids starting with '.' are reserved for server-default rules").into()
        );
    }
    let rule = new_rule(&kind, rule_id, body)?;
    let (before, after) = (placement.before.as_deref(), placement.after.as_deref());
    state
        .rules
        .modify(&caller.identity.user_id, |ruleset| ruleset.insert(rule.clone(), after, before).map_err(insert_error))
        .await?;
    Ok(Json(json!({})))
}

/// DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3pushrulesglobalkindruleid>
pub async fn delete_rule(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, PusherError> {
    let kind = parse_kind(&kind)?;
    state
        .rules
        .modify(&caller.identity.user_id, |ruleset| {
            ruleset.remove(kind.clone(), &rule_id).map_err(|error| match error {
                // The spec only has 404 here: there is no user rule of that id to delete.
                RemovePushRuleError::ServerDefault => {
                    MatrixError::not_found("Server-default rules cannot be deleted").into()
                }
                _ => rule_not_found(),
            })
        })
        .await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidenabled>
pub async fn get_enabled(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, PusherError> {
    let kind = parse_kind(&kind)?;
    let ruleset = state.rules.get(&caller.identity.user_id).await?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(rule_not_found)?;
    Ok(Json(json!({ "enabled": rule.enabled() })))
}

#[derive(Deserialize)]
pub struct EnabledBody {
    enabled: bool,
}

/// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidenabled>
pub async fn put_enabled(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<EnabledBody>,
) -> Result<Json<Value>, PusherError> {
    let kind = parse_kind(&kind)?;
    state
        .rules
        .modify(&caller.identity.user_id, |ruleset| {
            ruleset.set_enabled(kind.clone(), &rule_id, body.enabled).map_err(|_| rule_not_found())
        })
        .await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3pushrulesglobalkindruleidactions>
pub async fn get_actions(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>, PusherError> {
    let kind = parse_kind(&kind)?;
    let ruleset = state.rules.get(&caller.identity.user_id).await?;
    let rule = ruleset.get(kind, &rule_id).ok_or_else(rule_not_found)?;
    Ok(Json(json!({ "actions": rule.actions() })))
}

#[derive(Deserialize)]
pub struct ActionsBody {
    actions: Vec<Action>,
}

/// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3pushrulesglobalkindruleidactions>
pub async fn put_actions(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixPath((kind, rule_id)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<ActionsBody>,
) -> Result<Json<Value>, PusherError> {
    let kind = parse_kind(&kind)?;
    state
        .rules
        .modify(&caller.identity.user_id, |ruleset| {
            ruleset.set_actions(kind.clone(), &rule_id, body.actions.clone()).map_err(|_| rule_not_found())
        })
        .await?;
    Ok(Json(json!({})))
}
