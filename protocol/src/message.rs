//! Requests and responses, encoded with postcard inside a [`crate::frame`].
//!
//! Enums only ever grow at the end, so an older peer decodes every variant it knows. Record
//! batches never pass through postcard: they travel in the frame's raw payload, as stored.

use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// Protocol versions this build speaks.
pub const VERSION_MIN: u16 = 1;
/// Version 2 added the streaming fetch (`FetchStream`, `FetchCredit`); version 3
/// `DescribeCluster`.
pub const VERSION_MAX: u16 = 3;
/// The first version that serves `FetchStream`.
pub const VERSION_FETCH_STREAM: u16 = 2;
/// The first version that serves `DescribeCluster`.
pub const VERSION_CLUSTER: u16 = 3;

/// How many replicas must have a batch before the produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum Acks {
    /// Fire and forget: the node answers as soon as it has read the request.
    None,
    /// The leader has appended it (and fsynced, if the topic's flush policy says so).
    #[default]
    Leader,
    /// Every in-sync replica has it; on a one-node cluster, the same as `Leader`.
    All,
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "0" => Ok(Acks::None),
            "leader" | "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(format!("unknown acks {other:?}; use none, leader or all")),
        }
    }
}

/// Which offset `ListOffsets` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this one (ms).
    Timestamp(i64),
}

/// A request; each travels on its own QUIC stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    Hello {
        version_min: u16,
        version_max: u16,
        client_id: String,
    },
    Metadata {
        topics: Option<Vec<String>>,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    DescribeTopic {
        name: String,
    },
    /// The frame payload holds one or more whole batches for this partition.
    Produce {
        topic: String,
        partition: u32,
        acks: Acks,
    },
    Fetch {
        topic: String,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
        min_bytes: u32,
        max_bytes: u32,
    },
    ListOffsets {
        topic: String,
        partition: u32,
        spec: OffsetSpec,
    },
    /// Asks for a producer id and epoch for idempotent produce.
    InitProducer {},
    /// Joins (or rejoins) a consumer group; answered when the rebalance's join phase is over.
    JoinGroup(JoinGroup),
    /// Fetches this member's assignment for a generation.
    SyncGroup {
        group: String,
        member_id: String,
        generation: i32,
    },
    Heartbeat {
        group: String,
        member_id: String,
        generation: i32,
    },
    LeaveGroup {
        group: String,
        member_id: String,
    },
    /// Commits offsets; a member passes its id and generation, an admin tool passes an empty
    /// member id (allowed only while the group has no members).
    CommitOffsets {
        group: String,
        member_id: String,
        generation: i32,
        offsets: Vec<CommittedOffset>,
    },
    /// Committed offsets of a group, for the given partitions or all.
    FetchOffsets {
        group: String,
        partitions: Option<Vec<(String, u32)>>,
    },
    ListGroups {},
    DescribeGroup {
        group: String,
    },
    /// Grows a topic to `partitions` partitions (never shrinks).
    AddPartitions {
        name: String,
        partitions: u32,
    },
    /// Creates a read-only mirror topic, the target of flow `flow`.
    CreateMirrorTopic {
        name: String,
        partitions: u32,
        configs: Vec<(String, String)>,
        flow: String,
        source_cluster: String,
        source_topic: String,
    },
    /// Appends batches copied by a mirror flow. Into a prefix-mode mirror topic they land at
    /// the offsets they carry (batches wholly below the log end were copied before and are
    /// skipped); into any other topic (identity mode) at the log end, where each batch's
    /// provenance must end with a hop naming its source partition (batches whose source offsets
    /// were copied before are skipped). Either way a retried request never duplicates.
    MirrorAppend {
        topic: String,
        partition: u32,
        /// One chain per batch of the payload, in order (empty for a batch produced on the
        /// source): provenance travels beside the batch, never inside it.
        provenance: Vec<crate::provenance::Provenance>,
    },
    /// Where a source record lives on this (target) cluster. With `position` set, the answer is
    /// where a consumer that committed `offset` on the source resumes here (the first record at
    /// or after it), rather than the very record at `offset`.
    TranslateOffset {
        source_cluster: String,
        topic: String,
        partition: u32,
        offset: u64,
        position: bool,
    },
    /// The next source offset a flow must copy into `topic`/`partition` from `source_topic` of
    /// `source_cluster`: everything below it is on this cluster. None when nothing was copied.
    MirrorResume {
        topic: String,
        partition: u32,
        source_cluster: String,
        source_topic: String,
    },
    /// Changes settings of an existing topic (`retention.ms`, `flush`, …); settings not named
    /// keep their values. Answers the topic's description with the new settings.
    AlterTopicConfig {
        name: String,
        configs: Vec<(String, String)>,
    },
    /// The node's ACLs, superusers and whether it enforces them (`describe` on the cluster).
    ListAcls {},
    /// Adds a rule and persists it (`alter` on the cluster). Answers the new listing.
    AddAcl {
        rule: crate::acl::AclRule,
    },
    /// Removes a rule added with `AddAcl` (`alter` on the cluster). Answers the new listing.
    RemoveAcl {
        rule: crate::acl::AclRule,
    },
    /// Starts a flow in the node (its cluster's gateway) and persists it (`alter` on the
    /// cluster). `spec` is the flow's JSON (`mirror::FlowSpec`); with `replace`, a flow of the
    /// same name is reconfigured. Answers `FlowChanged`.
    PutFlow {
        spec: String,
        replace: bool,
    },
    /// Stops and forgets a flow (`alter` on the cluster); what it copied stays.
    RemoveFlow {
        name: String,
    },
    /// Failover: stops flow `flow` for the named source topics (all when empty) and makes
    /// their mirror topics writable (`alter` on each mirror topic). Answers `Promoted`.
    PromoteFlow {
        flow: String,
        topics: Vec<String>,
    },
    /// Failback on the old primary: quarantines each partition's tail from `common[p]` on into
    /// `<name>.diverged`, cuts it, and makes the topic a read-only mirror of `mirror_of`
    /// (`alter` on the topic). Answers `FailedBack`.
    FailbackTopic {
        name: String,
        common: Vec<u64>,
        mirror_of: MirrorOrigin,
    },
    /// Opens a fetch that keeps answering on its stream (protocol version 2): one `Fetched`
    /// frame after another, each with whole batches following the last, for as long as the
    /// reader keeps the stream open. The node sends at most the credit the reader granted
    /// (`window_bytes` at first, then what each `FetchCredit` adds), so the reader's memory
    /// stays bounded while a long link stays full without a round trip per answer. A frame
    /// with no batches tells the reader the partition's end every `max_wait_ms` while there is
    /// nothing new. An error ends the stream with an `Error` frame.
    FetchStream {
        topic: String,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
        /// Credit granted up front, in bytes.
        window_bytes: u32,
        /// Most bytes of batches one frame carries (a batch larger than this travels alone).
        frame_bytes_max: u32,
    },
    /// Sent by a reader on an open `FetchStream`: `bytes` more credit, and the next offset it
    /// has stored (what the node reports as the reader's position).
    FetchCredit {
        bytes: u32,
        stored: u64,
    },
    /// The cluster as the answering node's controller sees it: voters, leader, nodes.
    DescribeCluster {},
}

/// A cluster as one node's controller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDescription {
    pub cluster: String,
    /// The node that answered.
    pub node_id: u64,
    /// The controller quorum's voters, and the nodes following its log as learners.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// The controller leader, when there is one.
    pub leader: Option<u64>,
    pub term: u64,
    /// The last metadata entry applied on the answering node.
    pub applied_index: Option<u64>,
    pub nodes: Vec<ClusterNode>,
}

/// A node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub node_id: u64,
    pub address: String,
    pub rack: Option<String>,
    /// Raised at every registration.
    pub incarnation: u64,
    /// `alive`, `fenced` (silent past its session timeout) or `unregistered` (a voter not
    /// heard from yet).
    pub state: String,
    pub voter: bool,
}

/// Which topic of which cluster a mirror topic copies, and through which flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorOrigin {
    pub flow: String,
    pub source_cluster: String,
    pub source_topic: String,
}

/// What a promotion did, per partition of each promoted mirror topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub flow: String,
    pub source_cluster: String,
    /// Whether the whole flow stopped (no topics named) or only some of its topics.
    pub flow_stopped: bool,
    pub topics: Vec<PromotedTopic>,
    /// Records the source held that the promoted copies lack, over all partitions.
    pub records_at_risk: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedTopic {
    pub topic: String,
    pub source_topic: String,
    pub partitions: Vec<PromotedPartition>,
}

/// The recovery point of one promoted partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedPartition {
    pub partition: u32,
    pub last_mirrored_offset: Option<u64>,
    pub next_offset: u64,
    /// The last source end offset the flow saw.
    pub source_end_offset: u64,
    pub records_at_risk: u64,
}

/// One partition's divergent tail, quarantined by a failback: offsets `from..to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diverged {
    pub partition: u32,
    pub from: u64,
    pub to: u64,
    pub records: u64,
}

/// How a group moves partitions between members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum RebalanceProtocol {
    /// Every member revokes everything, then all partitions are reassigned.
    #[default]
    Eager,
    /// Only partitions that move are revoked; the rest keep flowing (incremental cooperative).
    Cooperative,
}

/// A member's join request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinGroup {
    pub group: String,
    /// Empty on the first join; the coordinator assigns one.
    pub member_id: String,
    pub topics: Vec<String>,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub protocol: RebalanceProtocol,
    /// `range`, `roundrobin` or `sticky`.
    pub assignor: String,
    /// Partitions the member still owns (cooperative protocol).
    pub owned: Vec<(String, u32)>,
}

/// A committed offset with its metadata string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub member_id: String,
    pub principal: String,
    pub topics: Vec<String>,
    pub assignment: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    pub group: String,
    /// `empty`, `preparing_rebalance` or `stable`.
    pub state: String,
    pub protocol: RebalanceProtocol,
    pub assignor: String,
    pub generation: i32,
    pub members: Vec<GroupMember>,
}

impl Request {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Metadata { .. } => "metadata",
            Request::CreateTopic { .. } => "create_topic",
            Request::DeleteTopic { .. } => "delete_topic",
            Request::DescribeTopic { .. } => "describe_topic",
            Request::Produce { .. } => "produce",
            Request::Fetch { .. } => "fetch",
            Request::ListOffsets { .. } => "list_offsets",
            Request::InitProducer { .. } => "init_producer",
            Request::JoinGroup(_) => "join_group",
            Request::SyncGroup { .. } => "sync_group",
            Request::Heartbeat { .. } => "heartbeat",
            Request::LeaveGroup { .. } => "leave_group",
            Request::CommitOffsets { .. } => "commit_offsets",
            Request::FetchOffsets { .. } => "fetch_offsets",
            Request::ListGroups { .. } => "list_groups",
            Request::DescribeGroup { .. } => "describe_group",
            Request::CreateMirrorTopic { .. } => "create_mirror_topic",
            Request::MirrorAppend { .. } => "mirror_append",
            Request::TranslateOffset { .. } => "translate_offset",
            Request::MirrorResume { .. } => "mirror_resume",
            Request::AddPartitions { .. } => "add_partitions",
            Request::AlterTopicConfig { .. } => "alter_topic_config",
            Request::ListAcls { .. } => "list_acls",
            Request::AddAcl { .. } => "add_acl",
            Request::RemoveAcl { .. } => "remove_acl",
            Request::PutFlow { .. } => "put_flow",
            Request::RemoveFlow { .. } => "remove_flow",
            Request::PromoteFlow { .. } => "promote_flow",
            Request::FailbackTopic { .. } => "failback_topic",
            Request::FetchStream { .. } => "fetch_stream",
            Request::FetchCredit { .. } => "fetch_credit",
            Request::DescribeCluster {} => "describe_cluster",
        }
    }
}

/// A node of the cluster, as metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u32,
    pub address: String,
}

/// A partition's placement: who leads it, in which epoch, and who replicates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionInfo {
    pub id: u32,
    pub leader: u32,
    pub leader_epoch: u32,
    pub replicas: Vec<u32>,
    pub in_sync: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub cluster: String,
    pub nodes: Vec<NodeInfo>,
    pub topics: Vec<TopicInfo>,
}

/// One partition's numbers in a topic description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStats {
    pub id: u32,
    pub leader: u32,
    pub leader_epoch: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub configs: Vec<(String, String)>,
    pub partitions: Vec<PartitionStats>,
}

/// A response; `Error` answers any request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    Error(WireError),
    Hello {
        version: u16,
        cluster: String,
        node_id: u32,
        principal: String,
    },
    Metadata(Metadata),
    TopicCreated {
        name: String,
        partitions: u32,
    },
    TopicDeleted {
        name: String,
    },
    TopicDescription(TopicDescription),
    /// `base_offset` of the first batch and `last_offset` of the last one written.
    Produced {
        base_offset: u64,
        last_offset: u64,
        log_start: u64,
    },
    /// The frame payload holds whole batches as stored, possibly none.
    Fetched {
        high_watermark: u64,
        log_start: u64,
        /// For mirror principals only: the provenance of each mirrored batch in the payload,
        /// by base offset (batches produced here have none), so a flow copying them on keeps
        /// the whole chain.
        provenance: Vec<(u64, crate::provenance::Provenance)>,
    },
    Offsets {
        offset: u64,
        timestamp_ms: Option<i64>,
    },
    /// Nothing to say (a produce with `acks = none`).
    Ack,
    ProducerInit {
        producer_id: i64,
        producer_epoch: i16,
    },
    Joined {
        generation: i32,
        member_id: String,
        leader: String,
        members: Vec<String>,
    },
    Synced {
        assignment: Vec<(String, u32)>,
    },
    CommittedOffsets(Vec<CommittedOffset>),
    Groups(Vec<GroupDescription>),
    GroupDescription(GroupDescription),
    Translated {
        topic: String,
        partition: u32,
        offset: u64,
    },
    MirrorResume {
        next_source_offset: Option<u64>,
    },
    Acls(crate::acl::AclListing),
    /// A flow was started, reconfigured or removed (`changed` false: it already ran so).
    FlowChanged {
        flow: String,
        changed: bool,
    },
    Promoted(Promotion),
    FailedBack {
        topic: String,
        quarantine: String,
        diverged: Vec<Diverged>,
    },
    Cluster(ClusterDescription),
}
