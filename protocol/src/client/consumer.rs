//! The consumer: assigned partitions, positions, long-poll fetches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::admin::Admin;
use super::conn::{unexpected, Client, ClientError};
use crate::batch::{split_batches, DecodeLimits, Header};
use crate::error::ErrorCode;
use crate::message::{OffsetSpec, Request, Response};

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Longest a fetch waits on the node for new data.
    pub max_wait_ms: u32,
    pub min_bytes: u32,
    /// Most bytes fetched per partition per request.
    pub partition_bytes_max: u32,
    /// Where to go when a position is out of range (e.g. deleted by retention).
    pub reset: OffsetSpec,
    pub limits: DecodeLimits,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            partition_bytes_max: 1 << 20,
            reset: OffsetSpec::Earliest,
            limits: DecodeLimits::default(),
        }
    }
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Reads assigned partitions from their positions on.
///
/// Every assigned partition keeps one fetch in flight, re-issued as soon as its answer arrives,
/// so the network works while the application processes what `poll` returned.
pub struct Consumer {
    client: Arc<Client>,
    config: ConsumerConfig,
    positions: BTreeMap<(String, u32), u64>,
    buffered: VecDeque<ConsumerRecord>,
    in_flight: tokio::task::JoinSet<FetchAnswer>,
    fetching: std::collections::BTreeSet<(String, u32)>,
}

/// A fetch's answer, tagged with what it asked for so answers overtaken by a seek are dropped.
type FetchAnswer = ((String, u32), u64, Result<(Response, Bytes), ClientError>);

impl Consumer {
    pub fn new(client: Arc<Client>, config: ConsumerConfig) -> Self {
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            buffered: VecDeque::new(),
            in_flight: tokio::task::JoinSet::new(),
            fetching: Default::default(),
        }
    }

    /// Assigns partitions, each starting at the offset `spec` names.
    pub async fn assign(
        &mut self,
        partitions: &[(String, u32)],
        spec: OffsetSpec,
    ) -> Result<(), ClientError> {
        let admin = Admin::new(self.client.clone());
        self.positions.clear();
        self.buffered.clear();
        self.in_flight.abort_all();
        self.fetching.clear();
        for (topic, p) in partitions {
            let (offset, _) = admin.list_offset(topic, *p, spec).await?;
            self.positions.insert((topic.clone(), *p), offset);
        }
        Ok(())
    }

    /// Assigns every partition of a topic.
    pub async fn assign_topic(&mut self, topic: &str, spec: OffsetSpec) -> Result<(), ClientError> {
        let meta = Admin::new(self.client.clone())
            .metadata(Some(vec![topic.into()]))
            .await?;
        let t = meta
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                ClientError::Wire(crate::error::WireError::new(
                    ErrorCode::UNKNOWN_TOPIC,
                    format!("topic {topic:?} does not exist"),
                ))
            })?;
        let parts: Vec<(String, u32)> = t
            .partitions
            .iter()
            .map(|p| (topic.to_string(), p.id))
            .collect();
        self.assign(&parts, spec).await
    }

    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) {
        self.positions.insert((topic.into(), partition), offset);
        self.buffered
            .retain(|r| !(&*r.topic == topic && r.partition == partition));
    }

    /// The next offset to be returned per partition.
    pub fn positions(&self) -> &BTreeMap<(String, u32), u64> {
        &self.positions
    }

    /// Returns the records available now, waiting up to `timeout` for some to arrive.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        if self.positions.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.start_fetches();
            let next = tokio::time::timeout_at(deadline, self.in_flight.join_next()).await;
            let Ok(Some(joined)) = next else {
                return Ok(Vec::new());
            };
            let Ok((key, asked, result)) = joined else {
                continue;
            };
            self.fetching.remove(&key);
            if self.positions.get(&key) != Some(&asked) {
                continue; // a seek overtook this fetch
            }
            match result {
                Ok((Response::Fetched { .. }, payload)) => self.take_batches(&key, payload)?,
                Ok((other, _)) => return Err(unexpected("fetch", other)),
                Err(e) if e.code() == Some(ErrorCode::OFFSET_OUT_OF_RANGE) => {
                    let (offset, _) = Admin::new(self.client.clone())
                        .list_offset(&key.0, key.1, self.config.reset)
                        .await?;
                    tracing::warn!(topic = %key.0, partition = key.1, reset_to = offset, "position out of range; reset");
                    self.positions.insert(key, offset);
                }
                Err(e) => return Err(e),
            }
            if !self.buffered.is_empty() {
                self.start_fetches();
                return Ok(self.buffered.drain(..).collect());
            }
        }
    }

    /// Issues a fetch for every assigned partition that has none in flight.
    fn start_fetches(&mut self) {
        for ((topic, partition), offset) in &self.positions {
            let key = (topic.clone(), *partition);
            if self.fetching.contains(&key) {
                continue;
            }
            self.fetching.insert(key.clone());
            let client = self.client.clone();
            let req = Request::Fetch {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                max_wait_ms: self.config.max_wait_ms,
                min_bytes: self.config.min_bytes,
                max_bytes: self.config.partition_bytes_max,
            };
            let asked = *offset;
            self.in_flight
                .spawn(async move { (key, asked, client.call(&req, &[]).await) });
        }
    }

    fn take_batches(&mut self, key: &(String, u32), payload: Bytes) -> Result<(), ClientError> {
        let Some(position) = self.positions.get(key).copied() else {
            return Ok(());
        };
        let topic: Arc<str> = key.0.as_str().into();
        let mut next = position;
        for batch in split_batches(payload, &self.config.limits)? {
            for r in batch.records(self.config.limits.batch_bytes_decompressed_max)? {
                if r.offset.0 >= position {
                    self.buffered.push_back(ConsumerRecord {
                        topic: topic.clone(),
                        partition: key.1,
                        offset: r.offset.0,
                        timestamp_ms: r.timestamp_ms,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    });
                }
            }
            next = next.max(batch.next_offset().0);
        }
        self.positions.insert(key.clone(), next);
        Ok(())
    }
}
