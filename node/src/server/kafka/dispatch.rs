//! Routes a parsed request to the room that serves its API, and frames the answer.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::codec::{self, Close, Header};
use super::listener::Shared;
use super::{data, groups, topics, versions, KafkaConfig};
use crate::server::service::{RequestService, Session};

/// What a handler needs: the service, the session of the connection, the listener's settings,
/// and the request's header.
pub(super) struct Ctx<'a> {
    pub service: &'a RequestService,
    pub peer: std::net::SocketAddr,
    pub session: &'a Session,
    pub config: &'a KafkaConfig,
    pub header: &'a Header,
}

impl Ctx<'_> {
    pub fn version(&self) -> i16 {
        self.header.version
    }
}

/// Serves one frame; None when the request wants no answer (a produce with acks = 0).
pub(super) async fn dispatch(
    frame: Bytes,
    peer: std::net::SocketAddr,
    session: &Session,
    shared: &Arc<Shared>,
) -> Result<Option<BytesMut>, Close> {
    let (header, mut body) = codec::parse_header(frame)?;
    let h = &header;
    if h.api == ApiKey::ApiVersions {
        return api_versions(h).map(Some);
    }
    if h.api == ApiKey::SaslHandshake {
        // Principals come from client certificates; no SASL mechanism is offered.
        let answer = SaslHandshakeResponse::default()
            .with_error_code(ResponseError::UnsupportedSaslMechanism.code());
        return codec::encode(h, h.version, &answer).map(Some);
    }
    let Some((min, max)) = versions::range(h.api) else {
        if versions::is_transactional(h.api) {
            return Err(Close::Transactions { api: h.api });
        }
        return Err(Close::UnservedApi { api: h.api });
    };
    if h.version < min || h.version > max {
        return Err(Close::UnsupportedVersion {
            api: h.api,
            version: h.version,
            min,
            max,
        });
    }
    let ctx = Ctx {
        service: &shared.service,
        peer,
        session,
        config: &shared.config,
        header: h,
    };
    let v = h.version;
    macro_rules! serve {
        ($ty:ty, $handler:path) => {{
            let request: $ty = codec::decode(h, &mut body)?;
            let answer = $handler(&ctx, request).await;
            codec::encode(h, v, &answer).map(Some)
        }};
    }
    match h.api {
        ApiKey::Produce => {
            let request: ProduceRequest = codec::decode(h, &mut body)?;
            match data::produce(&ctx, request).await {
                Some(answer) => codec::encode(h, v, &answer).map(Some),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => serve!(FetchRequest, data::fetch),
        ApiKey::ListOffsets => serve!(ListOffsetsRequest, data::list_offsets),
        ApiKey::OffsetForLeaderEpoch => {
            serve!(OffsetForLeaderEpochRequest, data::offset_for_leader_epoch)
        }
        ApiKey::InitProducerId => serve!(InitProducerIdRequest, data::init_producer_id),
        ApiKey::Metadata => serve!(MetadataRequest, topics::metadata),
        ApiKey::CreateTopics => serve!(CreateTopicsRequest, topics::create_topics),
        ApiKey::DeleteTopics => serve!(DeleteTopicsRequest, topics::delete_topics),
        ApiKey::CreatePartitions => serve!(CreatePartitionsRequest, topics::create_partitions),
        ApiKey::DescribeConfigs => serve!(DescribeConfigsRequest, topics::describe_configs),
        ApiKey::IncrementalAlterConfigs => {
            serve!(
                IncrementalAlterConfigsRequest,
                topics::incremental_alter_configs
            )
        }
        ApiKey::DescribeCluster => serve!(DescribeClusterRequest, topics::describe_cluster),
        ApiKey::FindCoordinator => serve!(FindCoordinatorRequest, topics::find_coordinator),
        ApiKey::JoinGroup => serve!(JoinGroupRequest, groups::join),
        ApiKey::SyncGroup => serve!(SyncGroupRequest, groups::sync),
        ApiKey::Heartbeat => serve!(HeartbeatRequest, groups::heartbeat),
        ApiKey::LeaveGroup => serve!(LeaveGroupRequest, groups::leave),
        ApiKey::OffsetCommit => serve!(OffsetCommitRequest, groups::offset_commit),
        ApiKey::OffsetFetch => serve!(OffsetFetchRequest, groups::offset_fetch),
        ApiKey::DescribeGroups => serve!(DescribeGroupsRequest, groups::describe_groups),
        ApiKey::ListGroups => serve!(ListGroupsRequest, groups::list_groups),
        api => Err(Close::UnservedApi { api }),
    }
}

/// ApiVersions: what this node serves. A version beyond ours gets a v0 answer with
/// UNSUPPORTED_VERSION and the list, so the client can retry with one we speak.
fn api_versions(h: &Header) -> Result<BytesMut, Close> {
    let (min, max) = versions::range(ApiKey::ApiVersions).unwrap_or((0, 0));
    let keys = versions::SUPPORTED
        .iter()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    let answer = ApiVersionsResponse::default().with_api_keys(keys);
    if h.version < min || h.version > max {
        let answer = answer.with_error_code(ResponseError::UnsupportedVersion.code());
        return codec::encode(h, 0, &answer);
    }
    codec::encode(h, h.version, &answer)
}
