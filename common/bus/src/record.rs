use serde::{Deserialize, Serialize};

pub type Partition = u32;
/// Position of a record within its partition, increasing. Where it starts is
/// the backend's business (the embedded log at 1, Kafka at 0).
pub type Offset = i64;

/// Metadata that travels beside a payload. Only request/reply uses it today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Topic the reply goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Milliseconds since the epoch after which nobody waits for the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// On a reply: the responder failed with this reason instead of answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a reply with `error`: the responder kept failing on something
    /// that may pass later (a busy database), so the caller may try again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unavailable: bool,
}

impl Headers {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One entry of the log as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: Partition,
    pub offset: Offset,
    pub key: String,
    pub headers: Headers,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}
