//! `InputPdus` and `JoinedRemoteRoom`: PDUs from other servers, through
//! the one validation pipeline (DESIGN.md invariant 4). The state-free
//! checks and everything that asks the federation API (keys, missing
//! events) run first, outside any transaction, since the bus may share the
//! database; then one transaction applies the room checks to every PDU.
//! Each PDU fails alone; only a database error fails the request.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu>

use std::collections::HashSet;

use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedServerName, RoomId, RoomVersionId, UserId};
use serde_json::Value;

use super::{InputConsumer, Outcome};
use crate::api::{
    Backfill, FEDERATION_QUERY_TOPIC, FederationQuery, FederationQueryOk, FederationQueryReply, InputOk, InputPdus,
    InputReply, JoinedRemoteRoom, MAX_SERVER_READ_EVENTS, NewRoomEvent, PduKind, PduOutcome, PduResult,
};
use crate::error::RequestError;
use crate::events::pdu::Pdu;
use crate::events::receive::{FEDERATION_QUERY_TIMEOUT, KeyRing, Received, fetch_pdus, parse};
use crate::events::remote::{IdState, RemoteRoom, auth_order};
use crate::storage::{EventStatus, Tx};

/// Most events asked for at once when filling gaps before a batch.
const MISSING_EVENTS_LIMIT: u32 = 20;
/// Most prev events whose state is asked for (`/state_ids`) in one batch,
/// and most events fetched for one such state: a larger gap leaves the
/// event aside rather than fetch a whole room event by event.
const STATE_FETCHES: usize = 5;
const STATE_EVENTS_LIMIT: usize = 500;
/// Earliest events looked at for backward extremities, and most
/// extremities backfilled from at once.
const BACKFILL_FROM_LIMIT: i64 = 20;

/// One PDU after the state-free checks.
type Checked = Result<Received, (Option<OwnedEventId>, String)>;

/// What filling a batch's gaps brought: events to store as outliers (in
/// auth order), missing timeline events (oldest first), and the state
/// another server gave for prev events still missing, by prev event.
struct Gaps {
    outliers: Vec<Received>,
    timeline: Vec<Received>,
    states: Vec<(OwnedEventId, Vec<OwnedEventId>)>,
}

impl InputConsumer {
    /// The state-free checks for a list of PDUs, asking for the keys their
    /// signatures need (once per server per request).
    pub(super) async fn check_all(
        &self,
        keys: &mut KeyRing,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        pdus: Vec<Value>,
    ) -> Vec<Checked> {
        let parsed: Vec<_> = pdus.into_iter().map(|pdu| parse(pdu, room_id, rules)).collect();
        for signers in parsed.iter().flatten().map(|parsed| parsed.signers(rules)) {
            for (server, key_ids) in signers {
                keys.fetch(&self.bus, &server, &key_ids).await;
            }
        }
        parsed
            .into_iter()
            .map(|parsed| {
                parsed
                    .and_then(|parsed| parsed.verify(keys, rules))
                    .map_err(|dropped| (dropped.event_id, dropped.reason))
            })
            .collect()
    }

    /// Ids cited by `events` that are neither among them nor stored.
    async fn unknown_refs(
        &self,
        events: &[&Received],
        refs: impl Fn(&Received) -> Vec<OwnedEventId>,
    ) -> Result<Vec<OwnedEventId>, RequestError> {
        let have: HashSet<&OwnedEventId> = events.iter().map(|event| &event.event_id).collect();
        let cited = events.iter().flat_map(|event| refs(event)).filter(|id| !have.contains(id)).collect();
        self.unknown_ids(cited).await
    }

    /// Of `ids`, those this server neither stores nor rejected, once each.
    async fn unknown_ids(&self, ids: Vec<OwnedEventId>) -> Result<Vec<OwnedEventId>, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let mut unknown = Vec::new();
        for id in ids {
            if unknown.contains(&id) {
                continue;
            }
            if tx.known_event(id.as_str()).await?.is_none() && tx.rejected_event(id.as_str()).await?.is_none() {
                unknown.push(id);
            }
        }
        tx.commit().await?;
        Ok(unknown)
    }

    /// The ids of the state before `prev` and of its auth chain, as `origin`
    /// tells them (`/state_ids`); `None` when it could not.
    async fn state_ids(
        &self,
        room_id: &RoomId,
        origin: &OwnedServerName,
        prev: &OwnedEventId,
    ) -> Option<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let query = FederationQuery::StateIds {
            room_id: room_id.to_owned(),
            servers: vec![origin.clone()],
            event_id: prev.clone(),
        };
        let reply: Result<FederationQueryReply, _> =
            self.bus.request_json(FEDERATION_QUERY_TOPIC, origin.as_str(), &query, FEDERATION_QUERY_TIMEOUT).await;
        match reply {
            Ok(Ok(FederationQueryOk::StateIds { pdu_ids, auth_chain_ids })) => Some((pdu_ids, auth_chain_ids)),
            other => {
                tracing::info!(%prev, ?other, "state at a missing prev event unavailable");
                None
            }
        }
    }

    /// Ask `origin` for what the batch cites but this server lacks: missing
    /// prev events of timeline PDUs (`/get_missing_events`, processed as
    /// timeline events before the batch), for prev events still missing
    /// after that the state before them (`/state_ids`, with them and the
    /// state and auth chain events this server lacks fetched as outliers),
    /// and missing auth events (`/event`, stored as outliers). Whatever
    /// cannot be had is left to the checks: a PDU without its auth events
    /// is rejected (not remembered), one without its prev events or their
    /// state is kept as an outlier.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#pdus>
    async fn fill_gaps(
        &self,
        keys: &mut KeyRing,
        room: &RemoteRoom,
        origin: &OwnedServerName,
        batch: &[&Received],
        kind: PduKind,
    ) -> Result<Gaps, RequestError> {
        let room_id = room.room_id.clone();
        let key = origin.as_str();
        let mut missing_timeline = Vec::new();
        let mut states = Vec::new();
        let mut wanted = Vec::new();
        if kind == PduKind::Timeline {
            let prevs = self.unknown_refs(batch, |event| event.pdu.prev_events.clone()).await?;
            if !prevs.is_empty() {
                let latest: Vec<OwnedEventId> = batch
                    .iter()
                    .filter(|event| event.pdu.prev_events.iter().any(|prev| prevs.contains(prev)))
                    .map(|event| event.event_id.clone())
                    .collect();
                let earliest = self.extremities(&room_id).await?;
                let query = FederationQuery::MissingEvents {
                    room_id: room_id.clone(),
                    servers: vec![origin.clone()],
                    earliest,
                    latest,
                    limit: MISSING_EVENTS_LIMIT,
                };
                if let Some(pdus) = fetch_pdus(&self.bus, key, &query).await {
                    let checked = self.check_all(keys, &room_id, room.rules(), pdus).await;
                    missing_timeline = checked.into_iter().flatten().collect();
                    missing_timeline.sort_by_key(|event: &Received| event.depth);
                }
            }
            let all: Vec<&Received> = batch.iter().copied().chain(missing_timeline.iter()).collect();
            for prev in
                self.unknown_refs(&all, |event| event.pdu.prev_events.clone()).await?.into_iter().take(STATE_FETCHES)
            {
                let Some((state_ids, chain_ids)) = self.state_ids(&room_id, origin, &prev).await else { continue };
                let cited = state_ids.iter().chain(&chain_ids).cloned().chain([prev.clone()]).collect();
                let unknown = self.unknown_ids(cited).await?;
                if unknown.len() > STATE_EVENTS_LIMIT {
                    tracing::info!(%prev, count = unknown.len(), "state at a missing prev event too large to fetch");
                    continue;
                }
                wanted.extend(unknown);
                states.push((prev, state_ids));
            }
        }
        let all: Vec<&Received> = batch.iter().copied().chain(missing_timeline.iter()).collect();
        let mut fetch = self.unknown_refs(&all, |event| event.pdu.auth_events.clone()).await?;
        for id in wanted {
            if !fetch.contains(&id) {
                fetch.push(id);
            }
        }
        let mut outliers = Vec::new();
        if !fetch.is_empty() {
            let query =
                FederationQuery::Events { room_id: room_id.clone(), servers: vec![origin.clone()], event_ids: fetch };
            if let Some(pdus) = fetch_pdus(&self.bus, key, &query).await {
                outliers = self.check_all(keys, &room_id, room.rules(), pdus).await.into_iter().flatten().collect();
            }
        }
        Ok(Gaps { outliers: auth_order(outliers), timeline: missing_timeline, states })
    }

    async fn extremities(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let ids = tx.forward_extremities(room_id.as_str(), 20).await?;
        tx.commit().await?;
        ids.into_iter()
            .map(|(id, _)| OwnedEventId::try_from(id).map_err(|e| RequestError::Internal(e.to_string())))
            .collect()
    }

    /// `InputPdus`: one result per PDU, in the order received.
    pub(super) async fn input_pdus(&self, correlation_id: &str, input: InputPdus) -> Result<Outcome, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let room = RemoteRoom::load(&mut tx, &input.room_id).await?;
        tx.commit().await?;
        let Some(mut room) = room else {
            let reason = format!("this server is not in room {}", input.room_id);
            let results = input
                .pdus
                .iter()
                .map(|_| PduResult { event_id: None, outcome: PduOutcome::Rejected { reason: reason.clone() } })
                .collect();
            return self.finish(correlation_id, InputOk::PdusProcessed { results }, Vec::new()).await;
        };
        let rules = room.rules().clone();
        let mut keys = KeyRing::new(&self.signer);
        let checked = self.check_all(&mut keys, &input.room_id, &rules, input.pdus).await;
        let valid: Vec<&Received> = checked.iter().flatten().collect();
        let gaps = self.fill_gaps(&mut keys, &room, &input.origin, &valid, input.kind).await?;

        let mut tx = Tx::write(&self.db).await?;
        let mut outputs = Vec::new();
        for event in gaps.outliers {
            room.process(&mut tx, event, PduKind::Outlier).await?;
        }
        for (prev, state_ids) in gaps.states {
            room.take_state_after(&mut tx, prev, state_ids).await?;
        }
        for event in gaps.timeline {
            outputs.extend(room.process(&mut tx, event, PduKind::Timeline).await?.output);
        }
        // Deepest last, so that a batch listing a child before its parent still links up.
        let mut order: Vec<usize> = (0..checked.len()).collect();
        order.sort_by_key(|&i| checked[i].as_ref().map_or(0, |event| event.depth));
        let mut results: Vec<Option<PduResult>> = vec![None; checked.len()];
        let mut checked: Vec<Option<Checked>> = checked.into_iter().map(Some).collect();
        for i in order {
            let result = match checked[i].take().expect("each PDU is processed once") {
                Err((event_id, reason)) => PduResult { event_id, outcome: PduOutcome::Rejected { reason } },
                Ok(event) => {
                    let event_id = Some(event.event_id.clone());
                    let processed = room.process(&mut tx, event, input.kind).await?;
                    outputs.extend(processed.output);
                    PduResult { event_id, outcome: processed.outcome }
                }
            };
            results[i] = Some(result);
        }
        let results = results.into_iter().map(|result| result.expect("every PDU has a result")).collect();
        if input.kind == PduKind::Backfill {
            // Readers place each historical event before everything they
            // have, so the newest must come first (see `InputRequest::Backfill`).
            outputs.reverse();
        }
        self.commit_with(tx, correlation_id, InputOk::PdusProcessed { results }, outputs).await
    }

    /// `Backfill`: the history before the earliest events this server has
    /// of the room, asked of the other servers joined to it, through the
    /// pipeline as old events (never current state, never pushed).
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#backfilling-and-retrieving-missing-events>
    pub(super) async fn backfill(&self, correlation_id: &str, request: Backfill) -> Result<Outcome, RequestError> {
        let room_id = request.room_id;
        let mut tx = Tx::read(&self.db).await?;
        if tx.room(room_id.as_str()).await?.is_none() {
            return Err(RequestError::NotFound(format!("unknown room {room_id}")));
        }
        // Backward extremities: prev events of the earliest events that
        // are not in this server's timeline.
        let mut from: Vec<OwnedEventId> = Vec::new();
        for (event_id, json) in tx.earliest_events(room_id.as_str(), BACKFILL_FROM_LIMIT).await? {
            let event_id = OwnedEventId::try_from(event_id).map_err(|e| RequestError::Internal(e.to_string()))?;
            for prev in Pdu::parse(event_id, &json)?.prev_events {
                let in_timeline =
                    tx.known_event(prev.as_str()).await?.is_some_and(|e| e.status != EventStatus::Outlier);
                if !in_timeline && tx.rejected_event(prev.as_str()).await?.is_none() && !from.contains(&prev) {
                    from.push(prev);
                }
            }
        }
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for user in tx.joined_users(room_id.as_str()).await? {
            if let Ok(user) = UserId::parse(&user)
                && user.server_name() != self.signer.server_name
                && !servers.iter().any(|s| s == user.server_name())
            {
                servers.push(user.server_name().to_owned());
            }
        }
        tx.commit().await?;
        let Some(origin) = servers.first().cloned().filter(|_| !from.is_empty()) else {
            // Nothing older to ask for, and nothing changed: no need to remember the request.
            return Ok(Outcome { reply: InputOk::PdusProcessed { results: Vec::new() }, outputs: Vec::new() });
        };
        from.truncate(BACKFILL_FROM_LIMIT as usize);
        let limit = request.limit.min(MAX_SERVER_READ_EVENTS);
        let query = FederationQuery::Backfill { room_id: room_id.clone(), servers, from, limit };
        let pdus = fetch_pdus(&self.bus, origin.as_str(), &query).await.unwrap_or_default();
        self.input_pdus(correlation_id, InputPdus { origin, room_id, kind: PduKind::Backfill, pdus }).await
    }

    /// `JoinedRemoteRoom`: validate the `send_join` state and auth chain
    /// like any PDUs (as outliers), then start the room from that state and
    /// the join event.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#joining-rooms>
    pub(super) async fn joined_remote_room(
        &self,
        correlation_id: &str,
        joined: JoinedRemoteRoom,
    ) -> Result<Outcome, RequestError> {
        let version = RoomVersionId::try_from(joined.room_version.as_str())
            .map_err(|_| RequestError::UnsupportedRoomVersion(joined.room_version.clone()))?;
        let mut room = RemoteRoom::new(joined.room_id.clone(), version)?;
        let rules = room.rules().clone();
        let mut keys = KeyRing::new(&self.signer);
        let join = self.check_all(&mut keys, &joined.room_id, &rules, vec![joined.join_event]).await.pop();
        let join = match join {
            Some(Ok(join)) => join,
            Some(Err((_, reason))) => return Err(RequestError::BadJson(format!("join event: {reason}"))),
            None => return Err(RequestError::Internal("join event vanished".into())),
        };
        let state = self.check_all(&mut keys, &joined.room_id, &rules, joined.state).await;
        let chain = self.check_all(&mut keys, &joined.room_id, &rules, joined.auth_chain).await;
        let state_ids: HashSet<OwnedEventId> = state.iter().flatten().map(|event| event.event_id.clone()).collect();
        let mut seen = HashSet::new();
        let everything: Vec<Received> =
            state.into_iter().chain(chain).flatten().filter(|event| seen.insert(event.event_id.clone())).collect();

        let mut tx = Tx::write(&self.db).await?;
        if tx.room(joined.room_id.as_str()).await?.is_some() {
            // Joining again a room this server knows: the join is an ordinary PDU.
            let mut known = RemoteRoom::load(&mut tx, &joined.room_id).await?.expect("room exists");
            let event_id = join.event_id.clone();
            let processed = known.process(&mut tx, join, PduKind::Timeline).await?;
            return match processed.outcome {
                PduOutcome::Accepted | PduOutcome::AlreadyKnown => {
                    let outputs = processed.output.into_iter().collect();
                    self.commit_with(tx, correlation_id, InputOk::EventSent { event_id }, outputs).await
                }
                PduOutcome::SoftFailed { reason } | PduOutcome::Rejected { reason } => {
                    Err(RequestError::Forbidden(format!("join event refused: {reason}")))
                }
            };
        }
        tx.insert_room(joined.room_id.as_str(), room.version.as_str()).await?;
        let mut state = IdState::new();
        for event in auth_order(everything) {
            let in_state = state_ids.contains(&event.event_id);
            let (event_id, key) =
                (event.event_id.clone(), event.pdu.state_key.clone().map(|k| (event.pdu.event_type.to_string(), k)));
            let processed = room.process(&mut tx, event, PduKind::Outlier).await?;
            match (&processed.outcome, in_state, key) {
                (PduOutcome::Accepted | PduOutcome::AlreadyKnown, true, Some(key)) => {
                    state.insert(key, event_id);
                }
                (PduOutcome::Rejected { reason }, true, _) => {
                    tracing::info!(%event_id, %reason, "state event of a send_join response rejected");
                }
                _ => {}
            }
        }
        if !state.contains_key(&("m.room.create".to_owned(), String::new())) {
            return Err(RequestError::Forbidden("the room state has no valid create event".into()));
        }
        let event_id = join.event_id.clone();
        let output = room.start_from_join(&mut tx, &join, state).await?.map_err(RequestError::Forbidden)?;
        self.commit_with(tx, correlation_id, InputOk::EventSent { event_id }, vec![output]).await
    }

    /// Store the reply (and the records to replay) and commit.
    pub(super) async fn commit_with(
        &self,
        mut tx: Tx,
        correlation_id: &str,
        reply: InputOk,
        outputs: Vec<NewRoomEvent>,
    ) -> Result<Outcome, RequestError> {
        tx.insert_request(
            correlation_id,
            &serde_json::to_string(&InputReply::Ok(reply.clone()))?,
            &serde_json::to_string(&outputs)?,
        )
        .await?;
        tx.commit().await?;
        Ok(Outcome { reply, outputs })
    }

    pub(super) async fn finish(
        &self,
        correlation_id: &str,
        reply: InputOk,
        outputs: Vec<NewRoomEvent>,
    ) -> Result<Outcome, RequestError> {
        let tx = Tx::write(&self.db).await?;
        self.commit_with(tx, correlation_id, reply, outputs).await
    }
}
