//! Storage of the log. A backend only appends, hands out records from the
//! committed offset on, and stores commits and poison records; everything
//! else (ordering policy, retries, request/reply) is common code.

pub mod embedded;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::{BusError, Headers, Offset, Partition, Record};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Append to the partition `key` maps to; returns where it landed.
    async fn produce(
        &self,
        topic: &str,
        key: &str,
        headers: &Headers,
        payload: &[u8],
    ) -> Result<(Partition, Offset), BusError>;

    /// Append `(key, payload)` records, each to the partition its key maps
    /// to, in one round trip where the backend can (records of one key keep
    /// their order).
    async fn produce_batch(&self, topic: &str, records: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        for (key, payload) in records {
            self.produce(topic, key, &Headers::default(), payload).await?;
        }
        Ok(())
    }

    /// Join consumer group `group` on `topic`, starting after its committed offsets.
    async fn consumer(&self, group: &str, topic: &str) -> Result<Box<dyn Consumer>, BusError>;

    /// Keep a record the group gave up on, for operators to inspect.
    async fn record_poison(&self, group: &str, record: &Record, reason: &str) -> Result<(), BusError>;

    /// How many records `group` skipped as poison on `topic`.
    async fn poison_count(&self, group: &str, topic: &str) -> Result<u64, BusError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// Wait until records are available and return up to `max` of them,
    /// each partition's records in offset order.
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, BusError>;

    /// Durably mark every record of `partition` up to `offset` as handled.
    async fn commit(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError>;
}

/// Number of partitions the in-process backends give a topic. Reply topics
/// have a single reader, so one partition.
pub(crate) fn partitions_for(topic: &str, default: u32) -> u32 {
    if topic.starts_with(crate::reply::REPLY_TOPIC_PREFIX) { 1 } else { default.max(1) }
}

/// Stable key → partition mapping (FNV-1a): the same key lands on the same
/// partition in every process and every release.
pub(crate) fn partition_of(key: &str, partitions: u32) -> Partition {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions
}

/// In-process wake-ups: one counter per topic that producers bump and
/// consumers watch, so a consumer never misses a record appended between
/// its empty read and its wait.
#[derive(Default)]
pub(crate) struct Wakeups(std::sync::Mutex<std::collections::HashMap<String, watch::Sender<u64>>>);

impl Wakeups {
    pub(crate) fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        let mut map = self.0.lock().expect("wakeups lock");
        map.entry(topic.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    pub(crate) fn notify(&self, topic: &str) {
        let map = self.0.lock().expect("wakeups lock");
        if let Some(tx) = map.get(topic) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Wait for a wake-up, or `fallback` at most (a safety net, not the path).
pub(crate) async fn wait_for_wakeup(rx: &mut watch::Receiver<u64>, fallback: std::time::Duration) {
    let _ = tokio::time::timeout(fallback, rx.changed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_spreads_keys() {
        assert_eq!(partition_of("!room:a", 8), partition_of("!room:a", 8));
        let used: std::collections::HashSet<_> = (0..64).map(|i| partition_of(&format!("!r{i}:x"), 8)).collect();
        assert!(used.len() > 4);
        assert_eq!(partitions_for("reply.abc", 8), 1);
        assert_eq!(partitions_for("roomserver.input", 8), 8);
    }
}
