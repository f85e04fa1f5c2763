//! Routes a parsed request to the room that serves its API, and frames the answer.

use std::sync::Arc;
use strait_protocol::kafka::kafka_protocol;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::listener::Shared;
use super::{data, groups, topics, versions, KafkaConfig};
use crate::server::service::{RequestService, Session};
use strait_protocol::kafka::{self as codec, Close, Header, KafkaRequest};

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

/// Serves one frame, writing the framed answer into `out`; false when the request wants no
/// answer (a produce with acks = 0).
pub(super) async fn dispatch(
    frame: Bytes,
    peer: std::net::SocketAddr,
    session: &Session,
    shared: &Arc<Shared>,
    out: &mut BytesMut,
) -> Result<bool, Close> {
    let (header, body) = codec::parse_header(frame)?;
    let h = &header;
    if h.api == ApiKey::ApiVersions {
        out.extend_from_slice(&api_versions(h)?);
        return Ok(true);
    }
    if h.api == ApiKey::SaslHandshake {
        // Principals come from client certificates; no SASL mechanism is offered.
        let answer = SaslHandshakeResponse::default()
            .with_error_code(ResponseError::UnsupportedSaslMechanism.code());
        return codec::encode_into(h, h.version, &answer, out).map(|()| true);
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
    macro_rules! answer {
        ($handler:path, $request:expr) => {{
            let answer = $handler(&ctx, $request).await;
            codec::encode_into(h, v, &answer, out).map(|()| true)
        }};
    }
    match codec::decode_request(h, body)? {
        KafkaRequest::Produce(r) => match data::produce(&ctx, r).await {
            Some(answer) => codec::encode_into(h, v, &answer, out).map(|()| true),
            None => Ok(false),
        },
        KafkaRequest::Fetch(r) => answer!(data::fetch, r),
        KafkaRequest::ListOffsets(r) => answer!(data::list_offsets, r),
        KafkaRequest::OffsetForLeaderEpoch(r) => answer!(data::offset_for_leader_epoch, r),
        KafkaRequest::InitProducerId(r) => answer!(data::init_producer_id, r),
        KafkaRequest::Metadata(r) => answer!(topics::metadata, r),
        KafkaRequest::CreateTopics(r) => answer!(topics::create_topics, r),
        KafkaRequest::DeleteTopics(r) => answer!(topics::delete_topics, r),
        KafkaRequest::CreatePartitions(r) => answer!(topics::create_partitions, r),
        KafkaRequest::DescribeConfigs(r) => answer!(topics::describe_configs, r),
        KafkaRequest::IncrementalAlterConfigs(r) => answer!(topics::incremental_alter_configs, r),
        KafkaRequest::DescribeCluster(r) => answer!(topics::describe_cluster, r),
        KafkaRequest::FindCoordinator(r) => answer!(topics::find_coordinator, r),
        KafkaRequest::JoinGroup(r) => answer!(groups::join, r),
        KafkaRequest::SyncGroup(r) => answer!(groups::sync, r),
        KafkaRequest::Heartbeat(r) => answer!(groups::heartbeat, r),
        KafkaRequest::LeaveGroup(r) => answer!(groups::leave, r),
        KafkaRequest::OffsetCommit(r) => answer!(groups::offset_commit, r),
        KafkaRequest::OffsetFetch(r) => answer!(groups::offset_fetch, r),
        KafkaRequest::DescribeGroups(r) => answer!(groups::describe_groups, r),
        KafkaRequest::ListGroups(r) => answer!(groups::list_groups, r),
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
