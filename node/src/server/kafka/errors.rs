//! The service's errors as Kafka error codes: the nearest code a Kafka client knows how to
//! act on (retry, refresh metadata, give up), with the service's message beside it wherever
//! the response has room for one.

use kafka_protocol::ResponseError as K;
use strait_protocol::kafka::kafka_protocol;
use strait_protocol::{ErrorCode, WireError};

/// What a refused request was about: Kafka has one authorization error per resource kind.
#[derive(Debug, Clone, Copy)]
pub(super) enum About {
    Topic,
    Group,
    Cluster,
}

/// Kafka's code for `e`, when the request was about `about`.
pub(super) fn code(e: &WireError, about: About) -> i16 {
    let k = match e.code {
        ErrorCode::UNKNOWN_TOPIC | ErrorCode::UNKNOWN_PARTITION => K::UnknownTopicOrPartition,
        ErrorCode::TOPIC_EXISTS => K::TopicAlreadyExists,
        ErrorCode::INVALID_TOPIC => K::InvalidTopicException,
        ErrorCode::INVALID_CONFIG => K::InvalidConfig,
        ErrorCode::OFFSET_OUT_OF_RANGE => K::OffsetOutOfRange,
        ErrorCode::CORRUPT_BATCH => K::CorruptMessage,
        ErrorCode::FRAME_TOO_LARGE => K::MessageTooLarge,
        ErrorCode::MALFORMED_FRAME | ErrorCode::INVALID_REQUEST => K::InvalidRequest,
        ErrorCode::UNSUPPORTED_VERSION => K::UnsupportedVersion,
        ErrorCode::NOT_LEADER => K::NotLeaderOrFollower,
        ErrorCode::STORAGE | ErrorCode::WRITE_FAILED | ErrorCode::PARTITION_OFFLINE => {
            K::KafkaStorageError
        }
        ErrorCode::UNAUTHORIZED => match about {
            About::Topic => K::TopicAuthorizationFailed,
            About::Group => K::GroupAuthorizationFailed,
            About::Cluster => K::ClusterAuthorizationFailed,
        },
        // Kafka has no read-only topics; a writer that may not write gets this one, and the
        // message names the flow that owns the topic.
        ErrorCode::READ_ONLY_TOPIC => K::TopicAuthorizationFailed,
        ErrorCode::TIMEOUT | ErrorCode::RESOURCE_EXHAUSTED | ErrorCode::THROTTLED => {
            K::RequestTimedOut
        }
        ErrorCode::OUT_OF_ORDER_SEQUENCE => K::OutOfOrderSequenceNumber,
        ErrorCode::PRODUCER_FENCED => K::InvalidProducerEpoch,
        ErrorCode::REBALANCE_IN_PROGRESS => K::RebalanceInProgress,
        ErrorCode::UNKNOWN_MEMBER => K::UnknownMemberId,
        ErrorCode::ILLEGAL_GENERATION => K::IllegalGeneration,
        ErrorCode::GROUP_NOT_EMPTY => K::NonEmptyGroup,
        ErrorCode::UNKNOWN_GROUP => K::GroupIdNotFound,
        _ => K::UnknownServerError,
    };
    k.code()
}

/// Kafka's code for an error, with its message (for the fields that carry one).
pub(super) fn with_message(e: &WireError, about: About) -> (i16, Option<String>) {
    (code(e, about), Some(e.message.clone()))
}
