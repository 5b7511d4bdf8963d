//! A stored PDU as ruma's auth rules see it.

use ruma::events::TimelineEventType;
use ruma::state_res::Event;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// The fields of a PDU that the authorization rules read.
#[derive(Debug, Clone, Deserialize)]
pub struct Pdu {
    /// Not part of the JSON from room version 3 on: set from the reference hash.
    #[serde(skip, default = "placeholder_id")]
    pub event_id: OwnedEventId,
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    pub event_type: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Box<RawValue>,
    #[serde(deserialize_with = "event_refs")]
    pub prev_events: Vec<OwnedEventId>,
    #[serde(deserialize_with = "event_refs")]
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    /// Read only by room version 1's state resolution, which orders by it.
    #[serde(default)]
    pub depth: i64,
    /// Failed the checks on receipt: kept so that events citing it fail too.
    #[serde(skip)]
    pub rejected: bool,
}

/// `prev_events`/`auth_events` are `[id, {hashes}]` pairs in room versions 1
/// and 2 and plain ids from version 3 on.
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v1/#event-format>
fn event_refs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<OwnedEventId>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ref {
        Id(OwnedEventId),
        Pair(OwnedEventId, serde::de::IgnoredAny),
    }
    let refs = Vec::<Ref>::deserialize(deserializer)?;
    Ok(refs
        .into_iter()
        .map(|r| match r {
            Ref::Id(id) | Ref::Pair(id, _) => id,
        })
        .collect())
}

fn placeholder_id() -> OwnedEventId {
    EventId::parse("$placeholder").expect("valid event id")
}

impl Pdu {
    pub fn parse(event_id: OwnedEventId, json: &str) -> Result<Self, serde_json::Error> {
        let mut pdu: Self = serde_json::from_str(json)?;
        pdu.event_id = event_id;
        Ok(pdu)
    }
}

impl Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &OwnedEventId {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &OwnedEventId> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&OwnedEventId> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}
