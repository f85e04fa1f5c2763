//! The Kafka wire, sans-IO: a request frame is a big-endian i32 size, a request header (whose
//! version depends on the API and its version) and the body; a response is a size, a header
//! carrying the correlation id, and the body. Bodies go through the `kafka-protocol` crate, a
//! patched copy that refuses element counts larger than the bytes present (see
//! `vendor/kafka-protocol/STRAIT-PATCHES.md`), so no frame can make the decoder allocate more
//! than a small multiple of its own size.
//!
//! [`decode_request`] is what the node's Kafka listener runs on every frame, and what the
//! `kafka_request` fuzz target feeds.

use bytes::{BufMut, Bytes, BytesMut};
pub use kafka_protocol;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a Kafka connection is closed instead of answered (Kafka closes on what it cannot
/// parse).
#[derive(Debug, thiserror::Error)]
pub enum Close {
    #[error("request size {size} is not within 0..={max} (limits.frame_bytes_max)")]
    TooLarge { size: i64, max: u32 },
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} version {version} is not served (this node serves {min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{api:?}: Kafka transactions are not supported by Strait; use an idempotent producer (enable.idempotence) without transactional.id")]
    Transactions { api: ApiKey },
    #[error("{api:?} is not served by this node")]
    UnservedApi { api: ApiKey },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("cannot encode the {api:?} answer: {reason}")]
    Encode { api: ApiKey, reason: String },
}

/// A request's header, parsed.
#[derive(Debug, Clone)]
pub struct Header {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

/// Splits a request frame (without its size) into header and body.
pub fn parse_header(mut frame: Bytes) -> Result<(Header, Bytes), Close> {
    if frame.len() < 8 {
        return Err(Close::Malformed {
            what: "request header".into(),
            reason: format!("{} bytes, at least 8 needed", frame.len()),
        });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| Close::UnknownApi(key))?;
    // Beyond the crate's versions the header layout is unknown; ApiVersions is answered anyway
    // (from the fixed v0 layout's first fields), as Kafka does, so clients can downgrade.
    let valid = api.valid_versions();
    let header_version = if version > valid.max || version < valid.min {
        if api == ApiKey::ApiVersions {
            1
        } else {
            return Err(Close::UnsupportedVersion {
                api,
                version,
                min: valid.min,
                max: valid.max,
            });
        }
    } else {
        api.request_header_version(version)
    };
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| Close::Malformed {
            what: format!("{api:?} request header"),
            reason: e.to_string(),
        })?;
    Ok((
        Header {
            api,
            version,
            correlation_id: header.correlation_id,
            client_id: header
                .client_id
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
        },
        frame,
    ))
}

/// Decodes a request body of type `R` at the header's version.
pub fn decode<R: Decodable>(header: &Header, body: &mut Bytes) -> Result<R, Close> {
    R::decode(body, header.version).map_err(|e| Close::Malformed {
        what: format!("{:?} v{} request", header.api, header.version),
        reason: e.to_string(),
    })
}

/// Encodes a response frame (size, header, body) for `header`'s request. ApiVersions answers
/// always carry a v0 header, so a client can read them before it knows what we speak.
pub fn encode<R: Encodable>(header: &Header, version: i16, body: &R) -> Result<BytesMut, Close> {
    let mut out = BytesMut::new();
    encode_into(header, version, body, &mut out)?;
    Ok(out)
}

/// Like [`encode`], appending to `out` (a connection reuses one buffer for its answers, so
/// large fetch answers do not touch fresh memory each time).
pub fn encode_into<R: Encodable>(
    header: &Header,
    version: i16,
    body: &R,
    out: &mut BytesMut,
) -> Result<(), Close> {
    let header_version = if header.api == ApiKey::ApiVersions {
        0
    } else {
        header.api.response_header_version(version)
    };
    let fail = |e: &dyn std::fmt::Display| Close::Encode {
        api: header.api,
        reason: e.to_string(),
    };
    let size = body.compute_size(version).map_err(|e| fail(&e))?;
    let start = out.len();
    out.reserve(4 + 8 + size);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(out, header_version)
        .map_err(|e| fail(&e))?;
    body.encode(out, version).map_err(|e| fail(&e))?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A request body, decoded by its API. Only the APIs a node serves are decoded; the rest are
/// answered (ApiVersions, SaslHandshake) or refused from the header alone.
#[derive(Debug)]
pub enum KafkaRequest {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    InitProducerId(InitProducerIdRequest),
    Metadata(MetadataRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    DescribeCluster(DescribeClusterRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
}

/// Decodes a request body by its header's API and version.
pub fn decode_request(header: &Header, mut body: Bytes) -> Result<KafkaRequest, Close> {
    let b = &mut body;
    Ok(match header.api {
        ApiKey::Produce => KafkaRequest::Produce(decode(header, b)?),
        ApiKey::Fetch => KafkaRequest::Fetch(decode(header, b)?),
        ApiKey::ListOffsets => KafkaRequest::ListOffsets(decode(header, b)?),
        ApiKey::OffsetForLeaderEpoch => KafkaRequest::OffsetForLeaderEpoch(decode(header, b)?),
        ApiKey::InitProducerId => KafkaRequest::InitProducerId(decode(header, b)?),
        ApiKey::Metadata => KafkaRequest::Metadata(decode(header, b)?),
        ApiKey::CreateTopics => KafkaRequest::CreateTopics(decode(header, b)?),
        ApiKey::DeleteTopics => KafkaRequest::DeleteTopics(decode(header, b)?),
        ApiKey::CreatePartitions => KafkaRequest::CreatePartitions(decode(header, b)?),
        ApiKey::DescribeConfigs => KafkaRequest::DescribeConfigs(decode(header, b)?),
        ApiKey::IncrementalAlterConfigs => {
            KafkaRequest::IncrementalAlterConfigs(decode(header, b)?)
        }
        ApiKey::DescribeCluster => KafkaRequest::DescribeCluster(decode(header, b)?),
        ApiKey::FindCoordinator => KafkaRequest::FindCoordinator(decode(header, b)?),
        ApiKey::JoinGroup => KafkaRequest::JoinGroup(decode(header, b)?),
        ApiKey::SyncGroup => KafkaRequest::SyncGroup(decode(header, b)?),
        ApiKey::Heartbeat => KafkaRequest::Heartbeat(decode(header, b)?),
        ApiKey::LeaveGroup => KafkaRequest::LeaveGroup(decode(header, b)?),
        ApiKey::OffsetCommit => KafkaRequest::OffsetCommit(decode(header, b)?),
        ApiKey::OffsetFetch => KafkaRequest::OffsetFetch(decode(header, b)?),
        ApiKey::DescribeGroups => KafkaRequest::DescribeGroups(decode(header, b)?),
        ApiKey::ListGroups => KafkaRequest::ListGroups(decode(header, b)?),
        api => return Err(Close::UnservedApi { api }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Metadata v0 request whose body is only a topic count of i32::MAX: the stock crate
    /// reserved ~154 GB for it and aborted the process; it must be a decode error.
    #[test]
    fn a_four_byte_metadata_request_claiming_i32_max_topics_is_refused() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(0);
        frame.put_i32(7);
        frame.put_i16(-1);
        frame.put_i32(i32::MAX);
        let (header, body) = parse_header(frame.freeze()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body.len(), 4);
        let err = decode_request(&header, body).expect_err("an impossible count must fail");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    /// The same with a flexible version (a compact array's varint count).
    #[test]
    fn a_compact_array_count_beyond_the_bytes_present_is_refused() {
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::Metadata as i16);
        frame.put_i16(9);
        frame.put_i32(7);
        frame.put_i16(-1);
        frame.put_u8(0); // header tagged fields
        frame.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]); // topics: 2^31 - 1 elements
        let (header, body) = parse_header(frame.freeze()).unwrap_or_else(|e| panic!("{e}"));
        assert!(decode_request(&header, body).is_err());
    }
}
