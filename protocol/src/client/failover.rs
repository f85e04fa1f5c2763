//! A group consumer that survives the loss of its cluster: it consumes from the primary while
//! the primary answers, and when the primary has failed every probe for `failover_after`, it
//! moves the group to the replica cluster (which a mirror flow keeps a copy on), resuming from
//! the translated committed offsets. It can move back when told to, or on its own once the
//! primary has been healthy for `failback_after`.
//!
//! Resuming: on the replica, each partition starts at the later of two positions — what the
//! flow's checkpoints committed there for the group, and what this consumer itself last
//! committed on the primary, translated. So nothing committed is consumed again: the only
//! records seen twice are those consumed after the last commit on the primary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::conn::{unexpected, Client, ClientError, ClientOptions};
use super::consumer::{Consumer, ConsumerConfig, ConsumerRecord};
use super::group::{GroupConfig, TopicPartition};
use crate::message::{Request, Response};

/// One cluster a failover client can use.
#[derive(Debug, Clone)]
pub struct ClusterEndpoint {
    /// The cluster's name (mirror topics on the replica are named after it).
    pub name: String,
    pub bootstrap: Vec<String>,
}

/// How the replica names the primary's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TopicMapping {
    /// `orders` of cluster `east` is `east.orders` on the replica, at identical offsets.
    #[default]
    Prefix,
    /// Same name on both sides; offsets differ and are translated by the replica.
    Identity,
}

impl TopicMapping {
    /// The replica's name for topic `topic` of cluster `primary`.
    pub fn replica_topic(self, primary: &str, topic: &str) -> String {
        match self {
            TopicMapping::Prefix => format!("{primary}.{topic}"),
            TopicMapping::Identity => topic.to_string(),
        }
    }
}

/// When to switch clusters.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    pub mapping: TopicMapping,
    /// How long every probe of the active primary must fail before the group moves.
    pub failover_after: Duration,
    /// Move back to the primary once it has answered every probe for this long; None: only
    /// when told (`fail_back`).
    pub failback_after: Option<Duration>,
    pub probe_interval: Duration,
    /// Longest a probe (connect included) may take before it counts as failed.
    pub probe_timeout: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            mapping: TopicMapping::Prefix,
            failover_after: Duration::from_secs(2),
            failback_after: None,
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// Which cluster a failover client is using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Replica,
}

/// One move between clusters, for logs and for the operator.
#[derive(Debug, Clone)]
pub struct Switch {
    pub from: String,
    pub to: String,
    pub at: Instant,
    /// What this consumer had committed on the cluster it left, in that cluster's names.
    pub committed_before: BTreeMap<TopicPartition, u64>,
    /// Where the group resumed, in the new cluster's names.
    pub resumed_at: BTreeMap<TopicPartition, u64>,
}

/// A group consumer that fails over between a primary and a replica cluster.
pub struct FailoverConsumer {
    primary: ClusterEndpoint,
    replica: ClusterEndpoint,
    tls: Arc<rustls::ClientConfig>,
    topics: Vec<String>,
    group: GroupConfig,
    consumer_config: ConsumerConfig,
    config: FailoverConfig,
    side: Side,
    client: Arc<Client>,
    consumer: Consumer,
    health: watch::Receiver<Health>,
    probe: tokio::task::JoinHandle<()>,
    switches: Vec<Switch>,
}

/// What the probe task knows about the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Health {
    /// Every probe failed for at least `failover_after`.
    down: bool,
    /// Every probe succeeded for at least `failback_after` (when set).
    healthy_long_enough: bool,
}

impl FailoverConsumer {
    /// Starts consuming `topics` (as named on the primary) as a member of `group.group`.
    pub fn new(
        primary: ClusterEndpoint,
        replica: ClusterEndpoint,
        tls: rustls::ClientConfig,
        topics: &[&str],
        group: GroupConfig,
        consumer_config: ConsumerConfig,
        config: FailoverConfig,
    ) -> Self {
        let tls = Arc::new(tls);
        let client = client_for(&primary, &tls);
        let mut consumer = Consumer::new(client.clone(), consumer_config.clone());
        consumer.subscribe(topics, group.clone());
        let (health, probe) = spawn_probe(&primary, &tls, &config);
        FailoverConsumer {
            primary,
            replica,
            tls,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group,
            consumer_config,
            config,
            side: Side::Primary,
            client,
            consumer,
            health,
            probe,
            switches: Vec::new(),
        }
    }

    /// Which cluster the group consumes from now.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The active cluster's name.
    pub fn active_cluster(&self) -> &str {
        match self.side {
            Side::Primary => &self.primary.name,
            Side::Replica => &self.replica.name,
        }
    }

    /// Every move so far.
    pub fn switches(&self) -> &[Switch] {
        &self.switches
    }

    /// The consumer on the active cluster (for commits, positions, assignment).
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Records from the active cluster; moves the group first when the primary is down (or,
    /// with `failback_after`, healthy again).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let health = *self.health.borrow();
        match self.side {
            Side::Primary if health.down => {
                self.fail_over().await?;
            }
            Side::Replica if health.healthy_long_enough => {
                self.fail_back().await?;
            }
            _ => {}
        }
        if self.side == Side::Replica {
            return self.consumer.poll(timeout).await;
        }
        // On the primary, a poll stuck on a dead cluster (a commit retrying) must not delay
        // the failover: the probe's verdict wins.
        let mut health = self.health.clone();
        tokio::select! {
            records = self.consumer.poll(timeout) => match records {
                Err(e) if e.is_retriable() => Ok(Vec::new()),
                other => other,
            },
            _ = health.wait_for(|h| h.down) => Ok(Vec::new()),
        }
    }

    /// Moves the group to the replica now.
    pub async fn fail_over(&mut self) -> Result<(), ClientError> {
        if self.side == Side::Replica {
            return Ok(());
        }
        let (from, to) = (self.primary.clone(), self.replica.clone());
        let topics: Vec<String> = self
            .topics
            .iter()
            .map(|t| self.config.mapping.replica_topic(&from.name, t))
            .collect();
        let replica = client_for(&to, &self.tls);
        let mut resume = self.checkpointed(&replica, &topics).await?;
        for ((topic, partition), offset) in self.consumer.committed() {
            let mapped = self.config.mapping.replica_topic(&from.name, topic);
            let translated = match self.config.mapping {
                TopicMapping::Prefix => *offset,
                TopicMapping::Identity => {
                    translate(&replica, &from.name, topic, *partition, *offset).await?
                }
            };
            let slot = resume.entry((mapped, *partition)).or_insert(translated);
            *slot = (*slot).max(translated);
        }
        // Commits on the primary may cover records the flow had not copied yet: those are
        // not on the replica, so the group resumes at the replica's end rather than past it.
        let admin = super::admin::Admin::new(replica.clone());
        for ((topic, partition), offset) in resume.iter_mut() {
            let (end, _) = admin
                .list_offset(topic, *partition, crate::message::OffsetSpec::Latest)
                .await?;
            *offset = (*offset).min(end);
        }
        self.switch(Side::Replica, replica, &topics, resume, from.name, to.name)
            .await
    }

    /// Moves the group back to the primary now (offsets carried back the same way).
    pub async fn fail_back(&mut self) -> Result<(), ClientError> {
        if self.side == Side::Primary {
            return Ok(());
        }
        let (from, to) = (self.replica.clone(), self.primary.clone());
        let primary = client_for(&to, &self.tls);
        let mut resume = self.checkpointed(&primary, &self.topics.clone()).await?;
        for ((topic, partition), offset) in self.consumer.committed() {
            let Some(original) = self
                .topics
                .iter()
                .find(|t| self.config.mapping.replica_topic(&to.name, t) == *topic)
            else {
                continue;
            };
            let back = match self.config.mapping {
                TopicMapping::Prefix => *offset,
                TopicMapping::Identity => {
                    match translate(&primary, &from.name, topic, *partition, *offset).await {
                        Ok(o) => o,
                        Err(_) => continue, // not copied back: keep the primary's own commit
                    }
                }
            };
            let slot = resume.entry((original.clone(), *partition)).or_insert(back);
            *slot = (*slot).max(back);
        }
        let topics = self.topics.clone();
        self.switch(Side::Primary, primary, &topics, resume, from.name, to.name)
            .await
    }

    async fn switch(
        &mut self,
        side: Side,
        client: Arc<Client>,
        topics: &[String],
        resume: BTreeMap<TopicPartition, u64>,
        from: String,
        to: String,
    ) -> Result<(), ClientError> {
        commit_as_admin(&client, &self.group.group, &resume).await?;
        let mut consumer = Consumer::new(client.clone(), self.consumer_config.clone());
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names, self.group.clone());
        let committed_before = self.consumer.committed().clone();
        // The old consumer is dropped without leaving: its cluster may be gone.
        self.consumer = consumer;
        self.client = client;
        self.side = side;
        tracing::warn!(group = %self.group.group, %from, %to, "consumer group failed over");
        self.switches.push(Switch {
            from,
            to,
            at: Instant::now(),
            committed_before,
            resumed_at: resume,
        });
        Ok(())
    }

    /// The group's committed offsets on `client`'s cluster for `topics`.
    async fn checkpointed(
        &self,
        client: &Arc<Client>,
        topics: &[String],
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        let req = Request::FetchOffsets {
            group: self.group.group.clone(),
            partitions: None,
        };
        match client.call(&req, &[]).await?.0 {
            Response::CommittedOffsets(list) => Ok(list
                .into_iter()
                .filter(|c| topics.contains(&c.topic))
                .map(|c| ((c.topic, c.partition), c.offset))
                .collect()),
            other => Err(unexpected("fetch_offsets", other)),
        }
    }
}

impl Drop for FailoverConsumer {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

fn client_for(cluster: &ClusterEndpoint, tls: &Arc<rustls::ClientConfig>) -> Arc<Client> {
    let mut opts = ClientOptions::new(cluster.bootstrap.clone(), (**tls).clone());
    opts.client_id = format!("strait-failover-{}", cluster.name);
    Client::new(opts)
}

/// Where a consumer that committed `offset` on `source_cluster` resumes on `client`'s cluster.
async fn translate(
    client: &Arc<Client>,
    source_cluster: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<u64, ClientError> {
    let req = Request::TranslateOffset {
        source_cluster: source_cluster.into(),
        topic: topic.into(),
        partition,
        offset,
        position: true,
    };
    match client.call(&req, &[]).await?.0 {
        Response::Translated { offset, .. } => Ok(offset),
        other => Err(unexpected("translate_offset", other)),
    }
}

/// Commits offsets for a group with no members on that cluster (as `group reset-offsets`
/// does). A group already active there keeps its own offsets.
async fn commit_as_admin(
    client: &Arc<Client>,
    group: &str,
    offsets: &BTreeMap<TopicPartition, u64>,
) -> Result<(), ClientError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let admin = super::admin::Admin::new(client.clone());
    match admin.commit_group_offsets(group, offsets, "failover").await {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some() => {
            tracing::warn!(%group, error = %e, "group already active on the new cluster; it keeps its own offsets");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A producer that writes to the primary while it answers, and to the replica's copy of each
/// topic (mapped like the consumer's: `east.orders` for prefix mirrors) once the primary has
/// failed every probe for `failover_after`. A prefix mirror takes writes only after it was
/// promoted (`strait mirror promote`); until then the replica refuses them with an error that
/// says so, which the delivery futures carry. With `failback_after` set it returns to the
/// primary once that has been healthy that long.
pub struct FailoverProducer {
    primary: ClusterEndpoint,
    replica: ClusterEndpoint,
    tls: Arc<rustls::ClientConfig>,
    producer_config: super::producer::ProducerConfig,
    config: FailoverConfig,
    side: Side,
    producer: super::producer::Producer,
    health: watch::Receiver<Health>,
    probe: tokio::task::JoinHandle<()>,
}

impl FailoverProducer {
    pub fn new(
        primary: ClusterEndpoint,
        replica: ClusterEndpoint,
        tls: rustls::ClientConfig,
        producer_config: super::producer::ProducerConfig,
        config: FailoverConfig,
    ) -> Self {
        let tls = Arc::new(tls);
        let producer =
            super::producer::Producer::new(client_for(&primary, &tls), producer_config.clone());
        let (health, probe) = spawn_probe(&primary, &tls, &config);
        FailoverProducer {
            primary,
            replica,
            tls,
            producer_config,
            config,
            side: Side::Primary,
            producer,
            health,
            probe,
        }
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// Queues a record for `topic` (named as on the primary) on the active cluster.
    pub async fn send(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[crate::batch::Header],
    ) -> Result<super::producer::DeliveryFuture, ClientError> {
        let health = *self.health.borrow();
        let to = match self.side {
            Side::Primary if health.down => Some(Side::Replica),
            Side::Replica if health.healthy_long_enough => Some(Side::Primary),
            _ => None,
        };
        if let Some(side) = to {
            let cluster = match side {
                Side::Primary => &self.primary,
                Side::Replica => &self.replica,
            };
            // Batches still queued for the old cluster fail with it; their futures say so.
            self.producer = super::producer::Producer::new(
                client_for(cluster, &self.tls),
                self.producer_config.clone(),
            );
            self.side = side;
            tracing::warn!(to = %cluster.name, "producer failed over");
        }
        let name = match self.side {
            Side::Primary => topic.to_string(),
            Side::Replica => self.config.mapping.replica_topic(&self.primary.name, topic),
        };
        self.producer
            .send(&name, partition, key, value, headers)
            .await
    }

    pub async fn flush(&self) {
        self.producer.flush().await;
    }
}

impl Drop for FailoverProducer {
    fn drop(&mut self) {
        self.probe.abort();
    }
}

fn spawn_probe(
    primary: &ClusterEndpoint,
    tls: &Arc<rustls::ClientConfig>,
    config: &FailoverConfig,
) -> (watch::Receiver<Health>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Health {
        down: false,
        healthy_long_enough: false,
    });
    let task = tokio::spawn(probe(primary.clone(), tls.clone(), config.clone(), tx));
    (rx, task)
}

/// Probes the primary every `probe_interval` with a metadata request on a fresh connection
/// after any failure, and publishes whether it is down / healthy long enough.
async fn probe(
    primary: ClusterEndpoint,
    tls: Arc<rustls::ClientConfig>,
    config: FailoverConfig,
    health: watch::Sender<Health>,
) {
    let mut last_ok = Instant::now();
    let mut ok_since: Option<Instant> = None;
    let mut client: Option<Arc<Client>> = None;
    loop {
        let c = client.get_or_insert_with(|| {
            let mut opts = ClientOptions::new(primary.bootstrap.clone(), (*tls).clone());
            opts.client_id = "strait-failover-probe".into();
            opts.connect_timeout = config.probe_timeout;
            opts.request_timeout = config.probe_timeout;
            Client::new(opts)
        });
        let req = Request::Metadata {
            topics: Some(Vec::new()),
        };
        let ok = matches!(
            tokio::time::timeout(config.probe_timeout, c.call_with_retries(&req, &[], 1)).await,
            Ok(Ok(_))
        );
        let now = Instant::now();
        if ok {
            last_ok = now;
            ok_since.get_or_insert(now);
        } else {
            client = None;
            ok_since = None;
        }
        let state = Health {
            down: !ok && now.duration_since(last_ok) >= config.failover_after,
            healthy_long_enough: match (config.failback_after, ok_since) {
                (Some(after), Some(since)) => now.duration_since(since) >= after,
                _ => false,
            },
        };
        health.send_if_modified(|h| {
            let changed = *h != state;
            *h = state;
            changed
        });
        tokio::time::sleep(config.probe_interval).await;
    }
}
