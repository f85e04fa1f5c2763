//! Wire error codes: stable numbers, never reused, each with a message naming cause and fix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable numeric error code. Unknown codes from newer peers are kept as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    pub const UNKNOWN_TOPIC: ErrorCode = ErrorCode(1);
    pub const TOPIC_EXISTS: ErrorCode = ErrorCode(2);
    pub const INVALID_TOPIC: ErrorCode = ErrorCode(3);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(4);
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = ErrorCode(5);
    pub const CORRUPT_BATCH: ErrorCode = ErrorCode(6);
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(7);
    pub const MALFORMED_FRAME: ErrorCode = ErrorCode(8);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(9);
    pub const NOT_LEADER: ErrorCode = ErrorCode(10);
    pub const STORAGE: ErrorCode = ErrorCode(11);
    pub const PARTITION_OFFLINE: ErrorCode = ErrorCode(12);
    pub const UNKNOWN_PARTITION: ErrorCode = ErrorCode(13);
    pub const HELLO_REQUIRED: ErrorCode = ErrorCode(14);
    pub const UNAUTHORIZED: ErrorCode = ErrorCode(15);
    pub const WRITE_FAILED: ErrorCode = ErrorCode(16);
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(17);
    pub const READ_ONLY_TOPIC: ErrorCode = ErrorCode(18);
    pub const INTERNAL: ErrorCode = ErrorCode(19);
    pub const TIMEOUT: ErrorCode = ErrorCode(20);
    pub const OUT_OF_ORDER_SEQUENCE: ErrorCode = ErrorCode(21);
    pub const PRODUCER_FENCED: ErrorCode = ErrorCode(22);
    pub const REBALANCE_IN_PROGRESS: ErrorCode = ErrorCode(23);
    pub const UNKNOWN_MEMBER: ErrorCode = ErrorCode(24);
    pub const ILLEGAL_GENERATION: ErrorCode = ErrorCode(25);
    pub const GROUP_NOT_EMPTY: ErrorCode = ErrorCode(26);
    pub const UNKNOWN_GROUP: ErrorCode = ErrorCode(27);
    /// A node-wide resource (file descriptors, memory budget) would run out.
    pub const RESOURCE_EXHAUSTED: ErrorCode = ErrorCode(28);
    /// The principal is over its byte-rate quota for longer than a request may wait.
    pub const THROTTLED: ErrorCode = ErrorCode(29);
    /// A member's group protocol does not match the group's (a Kafka client joining a group
    /// of Strait consumers, or members with no assignor in common).
    pub const INCONSISTENT_GROUP_PROTOCOL: ErrorCode = ErrorCode(30);

    /// Whether a client may retry the same request and expect it to succeed.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NOT_LEADER
                | ErrorCode::WRITE_FAILED
                | ErrorCode::TIMEOUT
                | ErrorCode::THROTTLED
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::UNKNOWN_TOPIC => "unknown_topic",
            ErrorCode::TOPIC_EXISTS => "topic_exists",
            ErrorCode::INVALID_TOPIC => "invalid_topic",
            ErrorCode::INVALID_CONFIG => "invalid_config",
            ErrorCode::OFFSET_OUT_OF_RANGE => "offset_out_of_range",
            ErrorCode::CORRUPT_BATCH => "corrupt_batch",
            ErrorCode::FRAME_TOO_LARGE => "frame_too_large",
            ErrorCode::MALFORMED_FRAME => "malformed_frame",
            ErrorCode::UNSUPPORTED_VERSION => "unsupported_version",
            ErrorCode::NOT_LEADER => "not_leader",
            ErrorCode::STORAGE => "storage",
            ErrorCode::PARTITION_OFFLINE => "partition_offline",
            ErrorCode::UNKNOWN_PARTITION => "unknown_partition",
            ErrorCode::HELLO_REQUIRED => "hello_required",
            ErrorCode::UNAUTHORIZED => "unauthorized",
            ErrorCode::WRITE_FAILED => "write_failed",
            ErrorCode::INVALID_REQUEST => "invalid_request",
            ErrorCode::READ_ONLY_TOPIC => "read_only_topic",
            ErrorCode::INTERNAL => "internal",
            ErrorCode::TIMEOUT => "timeout",
            ErrorCode::OUT_OF_ORDER_SEQUENCE => "out_of_order_sequence",
            ErrorCode::PRODUCER_FENCED => "producer_fenced",
            ErrorCode::REBALANCE_IN_PROGRESS => "rebalance_in_progress",
            ErrorCode::UNKNOWN_MEMBER => "unknown_member",
            ErrorCode::ILLEGAL_GENERATION => "illegal_generation",
            ErrorCode::GROUP_NOT_EMPTY => "group_not_empty",
            ErrorCode::UNKNOWN_GROUP => "unknown_group",
            ErrorCode::RESOURCE_EXHAUSTED => "resource_exhausted",
            ErrorCode::THROTTLED => "throttled",
            ErrorCode::INCONSISTENT_GROUP_PROTOCOL => "inconsistent_group_protocol",
            _ => "unknown",
        }
    }
}

/// An error as the peer is told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (error {} {})",
            self.message,
            self.code.0,
            self.code.name()
        )
    }
}
