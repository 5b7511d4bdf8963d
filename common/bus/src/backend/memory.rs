//! In-memory backend for unit tests: same semantics as the embedded one,
//! gone with the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Backend, Consumer, Wakeups, partition_of, partitions_for, wait_for_wakeup};
use crate::{BusError, Headers, Offset, Partition, Record};

type Key = (String, String, Partition);

#[derive(Default)]
struct State {
    /// topic → partition → records (offset = index + 1).
    logs: HashMap<String, Vec<Vec<Record>>>,
    committed: HashMap<Key, Offset>,
    poison: HashMap<(String, String), u64>,
}

#[derive(Clone)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
    partitions: u32,
    wakeups: Arc<Wakeups>,
}

impl MemoryBackend {
    pub fn new(partitions: u32) -> Self {
        Self { state: Arc::default(), partitions, wakeups: Arc::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory bus lock")
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn produce(
        &self,
        topic: &str,
        key: &str,
        headers: &Headers,
        payload: &[u8],
    ) -> Result<(Partition, Offset), BusError> {
        let count = partitions_for(topic, self.partitions);
        let partition = partition_of(key, count);
        let offset = {
            let mut state = self.lock();
            let log = state.logs.entry(topic.to_owned()).or_insert_with(|| vec![Vec::new(); count as usize]);
            let records = &mut log[partition as usize];
            let offset = records.len() as Offset + 1;
            records.push(Record {
                topic: topic.to_owned(),
                partition,
                offset,
                key: key.to_owned(),
                headers: headers.clone(),
                payload: payload.to_vec(),
            });
            offset
        };
        self.wakeups.notify(topic);
        Ok((partition, offset))
    }

    async fn consumer(&self, group: &str, topic: &str) -> Result<Box<dyn Consumer>, BusError> {
        let wakeup = self.wakeups.subscribe(topic);
        let count = partitions_for(topic, self.partitions);
        let positions = {
            let state = self.lock();
            (0..count)
                .map(|p| state.committed.get(&(group.to_owned(), topic.to_owned(), p)).copied().unwrap_or(0))
                .collect()
        };
        Ok(Box::new(MemoryConsumer {
            backend: self.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            positions,
            wakeup,
        }))
    }

    async fn record_poison(&self, group: &str, record: &Record, _reason: &str) -> Result<(), BusError> {
        *self.lock().poison.entry((group.to_owned(), record.topic.clone())).or_default() += 1;
        Ok(())
    }

    async fn poison_count(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        Ok(self.lock().poison.get(&(group.to_owned(), topic.to_owned())).copied().unwrap_or(0))
    }
}

struct MemoryConsumer {
    backend: MemoryBackend,
    group: String,
    topic: String,
    positions: Vec<Offset>,
    wakeup: watch::Receiver<u64>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, BusError> {
        loop {
            self.wakeup.borrow_and_update();
            let per_partition = (max / self.positions.len()).max(1);
            let batch: Vec<Record> = {
                let state = self.backend.lock();
                let mut batch = Vec::new();
                let partitions = state.logs.get(&self.topic).map(Vec::as_slice).unwrap_or_default();
                for (partition, records) in partitions.iter().enumerate() {
                    let start = self.positions[partition] as usize;
                    let taken: Vec<Record> = records.iter().skip(start).take(per_partition).cloned().collect();
                    if let Some(last) = taken.last() {
                        self.positions[partition] = last.offset;
                    }
                    batch.extend(taken);
                }
                batch
            };
            if !batch.is_empty() {
                return Ok(batch);
            }
            wait_for_wakeup(&mut self.wakeup, Duration::from_secs(1)).await;
        }
    }

    async fn commit(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError> {
        self.backend.lock().committed.insert((self.group.clone(), self.topic.clone(), partition), offset);
        Ok(())
    }
}
