//! The Kafka APIs this node serves and the version ranges it advertises in ApiVersions. Only
//! ranges the tests exercise are listed (the codec round trip of every version in
//! `tests/tests/kafka_wire.rs`, and the real clients in `tests/kafka-clients/`); anything else a
//! client asks for closes the connection, as Kafka does.

use kafka_protocol::messages::ApiKey;
use strait_protocol::kafka::kafka_protocol;

/// `(API, lowest version, highest version)`. The highest versions stop short of the ones that
/// address topics by id (Fetch 13, Metadata 10 answers with ids, Produce 13), since topics here
/// are named, and of those that need transactions or KRaft-only features.
pub(super) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 9),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
];

/// The advertised range of `api`, if it is served at all.
pub(super) fn range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(a, _, _)| *a == api)
        .map(|(_, min, max)| (*min, *max))
}

/// The APIs served, as `(key, name, min, max)` (for docs and tests).
pub fn supported_apis() -> Vec<(i16, String, i16, i16)> {
    SUPPORTED
        .iter()
        .map(|(a, min, max)| (*a as i16, format!("{a:?}"), *min, *max))
        .collect()
}

/// The APIs of Kafka transactions: answered with a clear refusal (never advertised).
pub(super) fn is_transactional(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::AddPartitionsToTxn
            | ApiKey::AddOffsetsToTxn
            | ApiKey::EndTxn
            | ApiKey::TxnOffsetCommit
            | ApiKey::WriteTxnMarkers
            | ApiKey::DescribeTransactions
            | ApiKey::ListTransactions
    )
}
