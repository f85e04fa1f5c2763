//! The consumer: assigned partitions, positions, long-poll fetches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::admin::Admin;
use super::conn::{unexpected, Client, ClientError};
use super::group::{
    self, GroupConfig, Membership, RebalanceEvent, Subscription, ToConsumer, TopicPartition,
};
use crate::batch::{split_batches, DecodeLimits, Header};
use crate::error::ErrorCode;
use crate::message::{CommittedOffset, OffsetSpec, RebalanceProtocol, Request, Response};

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
    /// Most records one `poll` returns (Kafka's `max.poll.records`). Records fetched beyond
    /// it wait in the consumer for the next poll; positions, and so commits, cover only what
    /// `poll` has handed out.
    pub max_poll_records: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait_ms: 500,
            min_bytes: 1,
            partition_bytes_max: 1 << 20,
            reset: OffsetSpec::Earliest,
            limits: DecodeLimits::default(),
            max_poll_records: 500,
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
/// Every assigned partition keeps one fetch in flight, re-issued as soon as its answer arrives
/// while less than one poll's worth of its records is waiting, so the network works while the
/// application processes what `poll` returned and memory stays bounded.
///
/// Two offsets per partition, as in Kafka: the *position* is the next record `poll` will hand
/// out (what `commit` commits: a commit never covers a record the application has not been
/// given), and the *fetch offset* is where the next fetch starts (past records already fetched
/// and waiting in the consumer).
pub struct Consumer {
    client: Arc<Client>,
    config: ConsumerConfig,
    positions: BTreeMap<(String, u32), u64>,
    fetch_offsets: BTreeMap<(String, u32), u64>,
    buffered: VecDeque<ConsumerRecord>,
    /// How many records of each partition wait in `buffered`.
    buffered_per_partition: BTreeMap<(String, u32), usize>,
    in_flight: tokio::task::JoinSet<FetchAnswer>,
    fetching: std::collections::BTreeSet<(String, u32)>,
    group: Option<Membership>,
    listener: Option<RebalanceListener>,
    /// What this consumer last committed successfully, per partition.
    committed: BTreeMap<TopicPartition, u64>,
}

/// Called with each rebalance event from inside `poll`.
pub type RebalanceListener = Box<dyn FnMut(&RebalanceEvent) + Send>;

/// A fetch's answer, tagged with what it asked for so answers overtaken by a seek are dropped.
type FetchAnswer = ((String, u32), u64, Result<(Response, Bytes), ClientError>);

impl Consumer {
    pub fn new(client: Arc<Client>, config: ConsumerConfig) -> Self {
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            fetch_offsets: BTreeMap::new(),
            buffered: VecDeque::new(),
            buffered_per_partition: BTreeMap::new(),
            in_flight: tokio::task::JoinSet::new(),
            fetching: Default::default(),
            group: None,
            listener: None,
            committed: BTreeMap::new(),
        }
    }

    /// Assigns partitions, each starting at the offset `spec` names.
    pub async fn assign(
        &mut self,
        partitions: &[(String, u32)],
        spec: OffsetSpec,
    ) -> Result<(), ClientError> {
        let admin = Admin::new(self.client.clone());
        self.clear();
        for (topic, p) in partitions {
            let (offset, _) = admin.list_offset(topic, *p, spec).await?;
            self.set_position((topic.clone(), *p), offset);
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
                    format!("topic {topic:?} does not exist; create it with `strait topic create {topic} --partitions N`, or see what exists with `strait topic list`"),
                ))
            })?;
        let parts: Vec<(String, u32)> = t
            .partitions
            .iter()
            .map(|p| (topic.to_string(), p.id))
            .collect();
        self.assign(&parts, spec).await
    }

    /// Moves a partition's position: the next `poll` returns records from `offset` on, and
    /// records already fetched for it are dropped.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) {
        let key = (topic.to_string(), partition);
        if self.buffered_per_partition.remove(&key).is_some() {
            self.buffered
                .retain(|r| !(&*r.topic == topic && r.partition == partition));
        }
        self.set_position(key, offset);
    }

    /// The next offset `poll` will hand out, per partition: what `commit` commits.
    pub fn positions(&self) -> &BTreeMap<(String, u32), u64> {
        &self.positions
    }

    fn set_position(&mut self, key: (String, u32), offset: u64) {
        self.fetch_offsets.insert(key.clone(), offset);
        self.positions.insert(key, offset);
    }

    /// Forgets every partition, buffered record and fetch in flight.
    fn clear(&mut self) {
        self.positions.clear();
        self.fetch_offsets.clear();
        self.buffered.clear();
        self.buffered_per_partition.clear();
        self.in_flight.abort_all();
        self.fetching.clear();
    }

    /// Hands out up to `max_poll_records` buffered records, advancing each partition's
    /// position past them; a partition with nothing left buffered moves to its fetch offset
    /// (past any gap at the end of its last batch).
    fn hand_out(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffered.len().min(self.config.max_poll_records.max(1));
        let out: Vec<ConsumerRecord> = self.buffered.drain(..n).collect();
        // Records of a partition arrive in runs (one fetch answer each): settle the
        // bookkeeping once per run, not once per record.
        let mut i = 0;
        while i < out.len() {
            let (topic, partition) = (&out[i].topic, out[i].partition);
            let run = out[i..]
                .iter()
                .take_while(|r| r.partition == partition && Arc::ptr_eq(&r.topic, topic))
                .count();
            let key = (topic.to_string(), partition);
            let last = out[i + run - 1].offset;
            i += run;
            let left = self.buffered_per_partition.get_mut(&key).map(|count| {
                *count = count.saturating_sub(run);
                *count
            });
            let position = match left {
                Some(0) => {
                    // Nothing of the partition waits any more: move on to its fetch offset,
                    // past any gap at the end of its last batch.
                    self.buffered_per_partition.remove(&key);
                    self.fetch_offsets.get(&key).copied().unwrap_or(last + 1)
                }
                _ => last + 1,
            };
            self.positions.insert(key, position);
        }
        out
    }

    /// Returns the records available now, waiting up to `timeout` for some to arrive.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        if self.group.is_some() {
            self.group_step(timeout).await?;
        }
        if !self.buffered.is_empty() {
            self.start_fetches();
            return Ok(self.hand_out());
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
            if self.fetch_offsets.get(&key) != Some(&asked) {
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
                    self.seek(&key.0.clone(), key.1, offset);
                }
                Err(e) => return Err(e),
            }
            if !self.buffered.is_empty() {
                self.start_fetches();
                return Ok(self.hand_out());
            }
        }
    }

    /// Joins a consumer group for `topics`; the group's coordinator assigns partitions and
    /// `poll` starts each at the group's committed offset (else at the reset policy's).
    pub fn subscribe(&mut self, topics: &[&str], config: GroupConfig) {
        self.clear();
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        self.group = Some(group::start(
            self.client.clone(),
            config,
            Subscription::Topics(topics),
        ));
    }

    /// Joins a consumer group for every topic whose whole name matches `pattern`, including
    /// topics created later.
    pub fn subscribe_pattern(
        &mut self,
        pattern: &str,
        config: GroupConfig,
    ) -> Result<(), ClientError> {
        let anchored = format!("^(?:{pattern})$");
        let re = regex::Regex::new(&anchored)
            .map_err(|e| ClientError::Invalid(format!("bad topic pattern {pattern:?}: {e}")))?;
        self.clear();
        self.group = Some(group::start(
            self.client.clone(),
            config,
            Subscription::Pattern(re),
        ));
        Ok(())
    }

    /// Called with every rebalance event, from inside `poll`.
    pub fn set_rebalance_listener(
        &mut self,
        listener: impl FnMut(&RebalanceEvent) + Send + 'static,
    ) {
        self.listener = Some(Box::new(listener));
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.positions.keys().cloned().collect()
    }

    /// Whether this member is between learning of a rebalance and applying its outcome.
    pub fn is_rebalancing(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.rebalancing.load(std::sync::atomic::Ordering::Acquire))
    }

    /// This member's id and generation, once it has joined.
    pub fn membership(&self) -> Option<(String, i32)> {
        self.group
            .as_ref()
            .filter(|g| g.generation >= 0)
            .map(|g| (g.member_id.clone(), g.generation))
    }

    /// Commits the current positions of all assigned partitions and waits for the node.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets: Vec<(TopicPartition, u64)> = self
            .positions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits the current positions in the background; the handle tells how it went.
    pub fn commit_async(&mut self) -> tokio::task::JoinHandle<Result<(), ClientError>> {
        let request = self.commit_request(
            self.positions
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        );
        let client = self.client.clone();
        tokio::spawn(async move {
            match request {
                Some(r) => client.call(&r, &[]).await.map(|_| ()),
                None => Ok(()),
            }
        })
    }

    /// Commits explicit offsets (the next offset to read, per partition).
    pub async fn commit_offsets(
        &mut self,
        offsets: Vec<(TopicPartition, u64)>,
    ) -> Result<(), ClientError> {
        if let Some(request) = self.commit_request(offsets.clone()) {
            self.client.call(&request, &[]).await?;
            if let Some(g) = self.group.as_mut() {
                g.last_commit = std::time::Instant::now();
            }
            self.committed.extend(offsets);
        }
        Ok(())
    }

    /// The offsets this consumer last committed successfully (by `commit`, `commit_offsets`
    /// or auto-commit), per partition.
    pub fn committed(&self) -> &BTreeMap<TopicPartition, u64> {
        &self.committed
    }

    fn commit_request(&self, offsets: Vec<(TopicPartition, u64)>) -> Option<Request> {
        let g = self.group.as_ref()?;
        if offsets.is_empty() {
            return None;
        }
        let offsets = offsets
            .into_iter()
            .map(|((topic, partition), offset)| CommittedOffset {
                topic,
                partition,
                offset,
                metadata: String::new(),
            })
            .collect();
        Some(Request::CommitOffsets {
            group: g.config.group.clone(),
            member_id: g.member_id.clone(),
            generation: g.generation,
            offsets,
        })
    }

    /// Commits (when auto-commit is on), leaves the group and stops fetching.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let Some(g) = self.group.as_ref() else {
            return Ok(());
        };
        if g.config.auto_commit_interval_ms.is_some() {
            let _ = self.commit().await;
        }
        let g = self
            .group
            .take()
            .unwrap_or_else(|| unreachable!("checked above"));
        group::leave(&self.client, &g.config.group, &g.member_id).await
    }

    /// Applies what the membership task decided, waits for a first assignment, auto-commits.
    async fn group_step(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(g) = self.group.as_mut() else {
                return Ok(());
            };
            let event = if g.assigned_once {
                g.events.try_recv().ok()
            } else {
                // Nothing to fetch before the first assignment: wait for it.
                match tokio::time::timeout_at(deadline, g.events.recv()).await {
                    Ok(e) => e,
                    Err(_) => return Ok(()),
                }
            };
            let Some(event) = event else { break };
            self.apply(event).await?;
        }
        let due = self
            .group
            .as_ref()
            .is_some_and(|g| g.auto_commit_interval_ms_elapsed());
        if due {
            self.commit().await?;
        }
        Ok(())
    }

    async fn apply(&mut self, event: ToConsumer) -> Result<(), ClientError> {
        match event {
            ToConsumer::RevokeAll(ack) => {
                if let Some(g) = self.group.as_ref() {
                    g.rebalancing
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                let all = self.assignment();
                self.revoke(&all).await;
                let _ = ack.send(());
            }
            ToConsumer::Lost => {
                let all = self.assignment();
                self.drop_partitions(&all);
                self.notify(RebalanceEvent::Lost(all));
            }
            ToConsumer::Assigned {
                generation,
                member_id,
                assignment,
            } => {
                let cooperative = {
                    let Some(g) = self.group.as_mut() else {
                        return Ok(());
                    };
                    g.generation = generation;
                    g.member_id = member_id;
                    g.assigned_once = true;
                    g.rebalancing
                        .store(false, std::sync::atomic::Ordering::Release);
                    g.config.protocol == RebalanceProtocol::Cooperative
                };
                let current = self.assignment();
                let revoked: Vec<TopicPartition> = current
                    .iter()
                    .filter(|tp| !assignment.contains(tp))
                    .cloned()
                    .collect();
                let added: Vec<TopicPartition> = assignment
                    .iter()
                    .filter(|tp| !current.contains(tp))
                    .cloned()
                    .collect();
                if !revoked.is_empty() {
                    self.revoke(&revoked).await;
                }
                self.start_partitions(&added).await?;
                if !added.is_empty() {
                    self.notify(RebalanceEvent::Assigned(added));
                }
                if cooperative && !revoked.is_empty() {
                    if let Some(g) = self.group.as_ref() {
                        // Hand the revoked partitions on: one more join completes the move.
                        let _ = g.rejoin.send(());
                    }
                }
            }
        }
        Ok(())
    }

    async fn revoke(&mut self, partitions: &[TopicPartition]) {
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.config.auto_commit_interval_ms.is_some())
        {
            let offsets: Vec<(TopicPartition, u64)> = partitions
                .iter()
                .filter_map(|tp| self.positions.get(tp).map(|o| (tp.clone(), *o)))
                .collect();
            if let Err(e) = self.commit_offsets(offsets).await {
                tracing::warn!(error = %e, "commit before revocation failed");
            }
        }
        self.drop_partitions(partitions);
        self.notify(RebalanceEvent::Revoked(partitions.to_vec()));
    }

    fn drop_partitions(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.positions.remove(tp);
            self.fetch_offsets.remove(tp);
            self.buffered_per_partition.remove(tp);
        }
        self.buffered.retain(|r| {
            !partitions
                .iter()
                .any(|(t, p)| &*r.topic == t && r.partition == *p)
        });
    }

    /// Starts newly assigned partitions at their committed offsets, else at the reset policy.
    async fn start_partitions(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let Some(g) = self.group.as_ref() else {
            return Ok(());
        };
        let req = Request::FetchOffsets {
            group: g.config.group.clone(),
            partitions: Some(partitions.to_vec()),
        };
        let committed = match self.client.call(&req, &[]).await?.0 {
            Response::CommittedOffsets(c) => c,
            other => return Err(unexpected("fetch_offsets", other)),
        };
        let admin = Admin::new(self.client.clone());
        for tp in partitions {
            let offset = match committed
                .iter()
                .find(|c| c.topic == tp.0 && c.partition == tp.1)
            {
                Some(c) => c.offset,
                None => admin.list_offset(&tp.0, tp.1, self.config.reset).await?.0,
            };
            self.set_position(tp.clone(), offset);
        }
        Ok(())
    }

    fn notify(&mut self, event: RebalanceEvent) {
        if let Some(l) = self.listener.as_mut() {
            l(&event);
        }
    }

    /// Issues a fetch for every assigned partition that has none in flight and less than one
    /// poll's worth of records waiting.
    fn start_fetches(&mut self) {
        for ((topic, partition), offset) in &self.fetch_offsets {
            let key = (topic.clone(), *partition);
            if self.fetching.contains(&key)
                || self
                    .buffered_per_partition
                    .get(&key)
                    .is_some_and(|n| *n >= self.config.max_poll_records)
            {
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
        let Some(position) = self.fetch_offsets.get(key).copied() else {
            return Ok(());
        };
        let topic: Arc<str> = key.0.as_str().into();
        let mut next = position;
        let mut added = 0usize;
        for batch in split_batches(payload, &self.config.limits)? {
            for r in batch.records(self.config.limits.batch_bytes_decompressed_max)? {
                if r.offset.0 >= position {
                    added += 1;
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
        self.fetch_offsets.insert(key.clone(), next);
        if added > 0 {
            *self.buffered_per_partition.entry(key.clone()).or_default() += added;
        } else if !self.buffered_per_partition.contains_key(key) {
            // Nothing new to hand out (a gap, or compacted away): the position moves on too.
            self.positions.insert(key.clone(), next);
        }
        Ok(())
    }
}
