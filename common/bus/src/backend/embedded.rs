//! The default backend: an append-only table in the server's own database
//! (SQLite or PostgreSQL) with in-process wake-ups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use myelin_storage::sqlx::{self, Row};
use myelin_storage::{Db, Migration, WritePool, with_db};
use tokio::sync::watch;

use super::{Backend, Consumer, Wakeups, partition_of, partitions_for, wait_for_wakeup};
use crate::{BusError, Headers, Offset, Partition, Record, metrics};

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sqlite: "
        CREATE TABLE bus_partitions (topic TEXT NOT NULL, part BIGINT NOT NULL, last_pos BIGINT NOT NULL,
            PRIMARY KEY (topic, part));
        CREATE TABLE bus_log (topic TEXT NOT NULL, part BIGINT NOT NULL, pos BIGINT NOT NULL,
            record_key TEXT NOT NULL, headers TEXT, payload BLOB NOT NULL,
            PRIMARY KEY (topic, part, pos));
        CREATE TABLE bus_offsets (group_id TEXT NOT NULL, topic TEXT NOT NULL, part BIGINT NOT NULL,
            committed BIGINT NOT NULL, PRIMARY KEY (group_id, topic, part));
        CREATE TABLE bus_poison (group_id TEXT NOT NULL, topic TEXT NOT NULL, part BIGINT NOT NULL,
            pos BIGINT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (group_id, topic, part, pos));",
    postgres: "
        CREATE TABLE bus_partitions (topic TEXT NOT NULL, part BIGINT NOT NULL, last_pos BIGINT NOT NULL,
            PRIMARY KEY (topic, part));
        CREATE TABLE bus_log (topic TEXT NOT NULL, part BIGINT NOT NULL, pos BIGINT NOT NULL,
            record_key TEXT NOT NULL, headers TEXT, payload BYTEA NOT NULL,
            PRIMARY KEY (topic, part, pos));
        CREATE TABLE bus_offsets (group_id TEXT NOT NULL, topic TEXT NOT NULL, part BIGINT NOT NULL,
            committed BIGINT NOT NULL, PRIMARY KEY (group_id, topic, part));
        CREATE TABLE bus_poison (group_id TEXT NOT NULL, topic TEXT NOT NULL, part BIGINT NOT NULL,
            pos BIGINT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (group_id, topic, part, pos));",
}];

/// Safety net for wake-ups; in one process they arrive at once.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

pub struct EmbeddedBackend {
    db: Db,
    partitions: u32,
    wakeups: Arc<Wakeups>,
}

impl EmbeddedBackend {
    /// Open the log in `db`, creating its tables. Topics get `partitions`
    /// partitions each (records of one key always share one).
    pub async fn open(db: Db, partitions: u32) -> Result<Self, BusError> {
        db.migrate("bus", MIGRATIONS).await?;
        Ok(Self { db, partitions, wakeups: Arc::new(Wakeups::default()) })
    }
}

/// A record to append: its key, its headers as stored, its payload.
type Append<'a> = (&'a str, Option<String>, &'a [u8]);

impl EmbeddedBackend {
    /// Append `records` in one write transaction and return where each
    /// landed. On SQLite, where every component shares one writer, a commit
    /// per record would queue behind everyone else's that many times.
    async fn append(&self, topic: &str, records: &[Append<'_>]) -> Result<Vec<(Partition, Offset)>, BusError> {
        let partitions = partitions_for(topic, self.partitions);
        // The counter row stays locked until commit, so positions of a
        // partition become visible in order: a reader never skips past one
        // that commits later.
        let landed = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let mut landed = Vec::with_capacity(records.len());
            for (key, headers, payload) in records {
                let partition = partition_of(key, partitions);
                let pos: i64 = sqlx::query_scalar(
                    "INSERT INTO bus_partitions (topic, part, last_pos) VALUES ($1, $2, 1) \
                     ON CONFLICT (topic, part) DO UPDATE SET last_pos = bus_partitions.last_pos + 1 \
                     RETURNING last_pos",
                )
                .bind(topic)
                .bind(i64::from(partition))
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO bus_log (topic, part, pos, record_key, headers, payload) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(topic)
                    .bind(i64::from(partition))
                    .bind(pos)
                    .bind(*key)
                    .bind(headers.as_deref())
                    .bind(*payload)
                    .execute(&mut *tx)
                    .await?;
                landed.push((partition, pos));
            }
            tx.commit().await?;
            landed
        });
        self.wakeups.notify(topic);
        Ok(landed)
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn produce(
        &self,
        topic: &str,
        key: &str,
        headers: &Headers,
        payload: &[u8],
    ) -> Result<(Partition, Offset), BusError> {
        let headers = (!headers.is_empty()).then(|| serde_json::to_string(headers)).transpose()?;
        let landed = self.append(topic, &[(key, headers, payload)]).await?;
        Ok(landed[0])
    }

    async fn produce_batch(&self, topic: &str, records: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        if !records.is_empty() {
            let records: Vec<Append<'_>> =
                records.iter().map(|(key, payload)| (key.as_str(), None, payload.as_slice())).collect();
            self.append(topic, &records).await?;
        }
        Ok(())
    }

    async fn consumer(&self, group: &str, topic: &str) -> Result<Box<dyn Consumer>, BusError> {
        let wakeup = self.wakeups.subscribe(topic);
        let rows = with_db!(&self.db, pool => {
            sqlx::query("SELECT part, committed FROM bus_offsets WHERE group_id = $1 AND topic = $2")
                .bind(group)
                .bind(topic)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| Ok((row.try_get::<i64, _>(0)? as Partition, row.try_get::<i64, _>(1)?)))
                .collect::<Result<HashMap<_, _>, sqlx::Error>>()?
        });
        let partitions = partitions_for(topic, self.partitions);
        let positions = (0..partitions).map(|p| rows.get(&p).copied().unwrap_or(0)).collect();
        Ok(Box::new(EmbeddedConsumer {
            db: self.db.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            positions,
            wakeup,
        }))
    }

    async fn record_poison(&self, group: &str, record: &Record, reason: &str) -> Result<(), BusError> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO bus_poison (group_id, topic, part, pos, reason) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (group_id, topic, part, pos) DO UPDATE SET reason = excluded.reason",
            )
            .bind(group)
            .bind(&record.topic)
            .bind(i64::from(record.partition))
            .bind(record.offset)
            .bind(reason)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    async fn poison_count(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        let n: i64 = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM bus_poison WHERE group_id = $1 AND topic = $2")
                .bind(group)
                .bind(topic)
                .fetch_one(pool)
                .await?
        });
        Ok(n as u64)
    }
}

struct EmbeddedConsumer {
    db: Db,
    group: String,
    topic: String,
    /// Last offset handed out, per partition (starts at the committed one).
    positions: Vec<Offset>,
    wakeup: watch::Receiver<u64>,
}

impl EmbeddedConsumer {
    /// Partitions whose head is past this consumer's position: one cheap
    /// read instead of a query per partition on every wake-up. The same read
    /// gives the group's lag, as everything handed out before is committed.
    async fn partitions_with_news(&self) -> Result<Vec<Partition>, BusError> {
        let heads: Vec<(i64, i64)> = with_db!(&self.db, pool => {
            sqlx::query_as("SELECT part, last_pos FROM bus_partitions WHERE topic = $1")
                .bind(&self.topic)
                .fetch_all(pool)
                .await?
        });
        let behind: Vec<(Partition, i64)> = heads
            .into_iter()
            .filter_map(|(part, head)| {
                let position = self.positions.get(part as usize)?;
                (head > *position).then_some((part as Partition, head - position))
            })
            .collect();
        metrics::consumer_lag(&self.group, &self.topic, behind.iter().map(|(_, n)| n).sum());
        Ok(behind.into_iter().map(|(part, _)| part).collect())
    }

    async fn fetch(&self, partition: Partition, after: Offset, limit: i64) -> Result<Vec<Record>, BusError> {
        let rows = with_db!(&self.db, pool => {
            sqlx::query(
                "SELECT pos, record_key, headers, payload FROM bus_log \
                 WHERE topic = $1 AND part = $2 AND pos > $3 ORDER BY pos LIMIT $4",
            )
            .bind(&self.topic)
            .bind(i64::from(partition))
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| {
                let headers: Option<String> = row.try_get(2)?;
                Ok((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?, headers, row.try_get::<Vec<u8>, _>(3)?))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        rows.into_iter()
            .map(|(offset, key, headers, payload)| {
                let headers = headers.map(|h| serde_json::from_str(&h)).transpose()?.unwrap_or_default();
                Ok(Record { topic: self.topic.clone(), partition, offset, key, headers, payload })
            })
            .collect()
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, BusError> {
        loop {
            self.wakeup.borrow_and_update();
            let per_partition = (max / self.positions.len()).max(1) as i64;
            let mut batch = Vec::new();
            for partition in self.partitions_with_news().await? {
                let records = self.fetch(partition, self.positions[partition as usize], per_partition).await?;
                if let Some(last) = records.last() {
                    self.positions[partition as usize] = last.offset;
                }
                batch.extend(records);
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
            wait_for_wakeup(&mut self.wakeup, FALLBACK_POLL).await;
        }
    }

    async fn commit(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO bus_offsets (group_id, topic, part, committed) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, topic, part) DO UPDATE SET committed = excluded.committed",
            )
            .bind(&self.group)
            .bind(&self.topic)
            .bind(i64::from(partition))
            .bind(offset)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
