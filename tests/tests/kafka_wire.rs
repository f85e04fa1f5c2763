//! The Kafka listener at the byte level, with the `kafka-protocol` crate as the client: every
//! advertised API version is answered with a response the client decodes, hostile frames
//! close only their own connection, SASL is refused, a mirror refuses Kafka producers naming
//! its flow, and a plaintext listener is only allowed on loopback.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strait_tests::{free_tcp_port, free_udp_port, NodeProcess, Pki};

/// A node with a plaintext Kafka listener on loopback.
fn node(pki: &Pki, dir: &std::path::Path, extra: &str) -> (NodeProcess, String) {
    node_of("east", pki, dir, extra)
}

fn node_of(cluster: &str, pki: &Pki, dir: &std::path::Path, extra: &str) -> (NodeProcess, String) {
    let kafka = format!("127.0.0.1:{}", free_tcp_port());
    let config = format!("[kafka]\nlisten = \"{kafka}\"\nplaintext = true\n{extra}");
    (NodeProcess::start(pki, cluster, dir, &config), kafka)
}

fn connect(address: &str) -> TcpStream {
    let s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends one request and answers the response body (after the header), or None when the node
/// closed the connection instead.
fn call<R: Encodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    body: &R,
) -> Option<bytes::Bytes> {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(StrBytes::from_static_str("wire-test")))
        .encode(&mut frame, api.request_header_version(version))
        .unwrap();
    body.encode(&mut frame, version).unwrap();
    raw(s, &frame)
}

/// Sends a raw frame body (the size is added); answers the response after its header.
fn raw(s: &mut TcpStream, frame: &[u8]) -> Option<bytes::Bytes> {
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    s.write_all(&out).ok()?;
    read_response(s)
}

fn read_response(s: &mut TcpStream) -> Option<bytes::Bytes> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut body).ok()?;
    Some(bytes::Bytes::from(body))
}

fn decode<R: Decodable>(api: ApiKey, version: i16, mut body: bytes::Bytes) -> R {
    let header = ResponseHeader::decode(
        &mut body,
        if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        },
    )
    .unwrap();
    assert_eq!(header.correlation_id, 42);
    let r = R::decode(&mut body, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
    assert_eq!(
        body.remaining(),
        0,
        "{api:?} v{version}: bytes left after the response"
    );
    r
}

/// Sends one request and decodes its answer; panics if the node closed the connection.
fn ask<R: Encodable, A: Decodable>(s: &mut TcpStream, api: ApiKey, version: i16, body: &R) -> A {
    let answer = call(s, api, version, body)
        .unwrap_or_else(|| panic!("{api:?} v{version}: the node closed the connection"));
    decode(api, version, answer)
}

/// Every version of every API the node advertises gets an answer the client decodes, and
/// the advertised list is what the node serves.
#[test]
fn every_advertised_version_is_answered() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "");
    let mut s = connect(&kafka);
    let versions: ApiVersionsResponse = ask(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    let advertised: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let served: Vec<(i16, i16, i16)> = strait_node::server::kafka::supported_apis()
        .into_iter()
        .map(|(k, _, min, max)| (k, min, max))
        .collect();
    assert_eq!(advertised, served);
    assert!(
        !advertised
            .iter()
            .any(|(k, _, _)| *k == ApiKey::SaslHandshake as i16),
        "SASL is not offered"
    );
    let topic = || TopicName(StrBytes::from_static_str("wire"));
    for (key, min, max) in advertised {
        let api = ApiKey::try_from(key).unwrap();
        for v in min..=max {
            let mut s = connect(&kafka);
            macro_rules! check {
                ($req:expr, $resp:ty) => {{
                    let answer = call(&mut s, api, v, &$req)
                        .unwrap_or_else(|| panic!("{api:?} v{v}: the node closed the connection"));
                    let _: $resp = decode(api, v, answer);
                }};
            }
            match api {
                ApiKey::Produce => check!(ProduceRequest::default().with_acks(1), ProduceResponse),
                ApiKey::Fetch => check!(
                    FetchRequest::default().with_topics(vec![fetch_request::FetchTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![fetch_request::FetchPartition::default()])]),
                    FetchResponse
                ),
                ApiKey::ListOffsets => check!(
                    ListOffsetsRequest::default().with_topics(vec![
                        list_offsets_request::ListOffsetsTopic::default()
                            .with_name(topic())
                            .with_partitions(vec![
                                list_offsets_request::ListOffsetsPartition::default()
                                    .with_timestamp(-1)
                            ])
                    ]),
                    ListOffsetsResponse
                ),
                ApiKey::Metadata => check!(
                    MetadataRequest::default().with_topics(Some(vec![
                        metadata_request::MetadataRequestTopic::default().with_name(Some(topic()))
                    ])),
                    MetadataResponse
                ),
                ApiKey::OffsetCommit => check!(
                    OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_generation_id_or_member_epoch(-1),
                    OffsetCommitResponse
                ),
                ApiKey::OffsetFetch => check!(
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopic::default()
                                .with_name(topic())
                                .with_partition_indexes(vec![0])
                        ])),
                    OffsetFetchResponse
                ),
                ApiKey::FindCoordinator => check!(
                    FindCoordinatorRequest::default()
                        .with_key(if v < 4 {
                            StrBytes::from_static_str("g")
                        } else {
                            StrBytes::default()
                        })
                        .with_coordinator_keys(if v >= 4 {
                            vec![StrBytes::from_static_str("g")]
                        } else {
                            vec![]
                        }),
                    FindCoordinatorResponse
                ),
                ApiKey::JoinGroup => check!(
                    JoinGroupRequest::default().with_session_timeout_ms(10),
                    JoinGroupResponse
                ),
                ApiKey::Heartbeat => check!(
                    HeartbeatRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g"))),
                    HeartbeatResponse
                ),
                ApiKey::LeaveGroup => check!(
                    LeaveGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g")))
                        .with_member_id(if v < 3 {
                            StrBytes::from_static_str("m")
                        } else {
                            StrBytes::default()
                        })
                        .with_members(if v >= 3 {
                            vec![leave_group_request::MemberIdentity::default()
                                .with_member_id(StrBytes::from_static_str("m"))]
                        } else {
                            vec![]
                        }),
                    LeaveGroupResponse
                ),
                ApiKey::SyncGroup => check!(
                    SyncGroupRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("g"))),
                    SyncGroupResponse
                ),
                ApiKey::DescribeGroups => check!(
                    DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(StrBytes::from_static_str("g"))]),
                    DescribeGroupsResponse
                ),
                ApiKey::ListGroups => check!(ListGroupsRequest::default(), ListGroupsResponse),
                ApiKey::ApiVersions => check!(ApiVersionsRequest::default(), ApiVersionsResponse),
                ApiKey::CreateTopics => check!(
                    CreateTopicsRequest::default().with_topics(vec![
                        create_topics_request::CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string(format!("created-{v}"))))
                            .with_num_partitions(1)
                            .with_replication_factor(1)
                    ]),
                    CreateTopicsResponse
                ),
                ApiKey::DeleteTopics => check!(
                    DeleteTopicsRequest::default()
                        .with_topic_names(if v < 6 {
                            vec![TopicName(StrBytes::from_static_str("nothing"))]
                        } else {
                            vec![]
                        })
                        .with_topics(if v >= 6 {
                            vec![delete_topics_request::DeleteTopicState::default()
                                .with_name(Some(TopicName(StrBytes::from_static_str("nothing"))))]
                        } else {
                            vec![]
                        }),
                    DeleteTopicsResponse
                ),
                ApiKey::InitProducerId => {
                    check!(InitProducerIdRequest::default(), InitProducerIdResponse)
                }
                ApiKey::OffsetForLeaderEpoch => check!(
                    OffsetForLeaderEpochRequest::default().with_topics(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                            .with_topic(topic())
                            .with_partitions(vec![
                                offset_for_leader_epoch_request::OffsetForLeaderPartition::default(
                                )
                            ])
                    ]),
                    OffsetForLeaderEpochResponse
                ),
                ApiKey::DescribeConfigs => check!(
                    DescribeConfigsRequest::default().with_resources(vec![
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("wire")),
                        describe_configs_request::DescribeConfigsResource::default()
                            .with_resource_type(4)
                            .with_resource_name(StrBytes::from_static_str("1")),
                    ]),
                    DescribeConfigsResponse
                ),
                ApiKey::CreatePartitions => check!(
                    CreatePartitionsRequest::default().with_topics(vec![
                        create_partitions_request::CreatePartitionsTopic::default()
                            .with_name(topic())
                            .with_count(1)
                    ]),
                    CreatePartitionsResponse
                ),
                ApiKey::IncrementalAlterConfigs => check!(
                    IncrementalAlterConfigsRequest::default().with_resources(vec![
                        incremental_alter_configs_request::AlterConfigsResource::default()
                            .with_resource_type(2)
                            .with_resource_name(StrBytes::from_static_str("wire"))
                    ]),
                    IncrementalAlterConfigsResponse
                ),
                ApiKey::DescribeCluster => {
                    check!(DescribeClusterRequest::default(), DescribeClusterResponse)
                }
                other => panic!("{other:?} is advertised but this test does not know it: add it"),
            }
        }
    }
}

/// Hostile frames close their own connection; the node keeps serving everyone else.
#[test]
fn hostile_frames_close_only_their_connection() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (mut n, kafka) = node(&pki, &dir.path().join("n"), "");
    // The 4-byte Metadata body claiming i32::MAX topics (it aborted the process with the stock
    // kafka-protocol crate), at v1, a version the node serves, so it reaches the decoder.
    let mut s = connect(&kafka);
    assert!(raw(
        &mut s,
        &[0, 3, 0, 1, 0, 0, 0, 7, 255, 255, 127, 255, 255, 255]
    )
    .is_none());
    // A size beyond limits.frame_bytes_max, a negative size, an unknown API, a version beyond
    // what is served.
    let mut s = connect(&kafka);
    s.write_all(&i32::MAX.to_be_bytes()).unwrap();
    assert!(read_response(&mut s).is_none());
    let mut s = connect(&kafka);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(read_response(&mut s).is_none());
    let mut s = connect(&kafka);
    assert!(raw(&mut s, &[0x7f, 0x00, 0, 0, 0, 0, 0, 7, 255, 255]).is_none());
    let mut s = connect(&kafka);
    assert!(call(&mut s, ApiKey::Fetch, 16, &FetchRequest::default()).is_none());
    // A transaction API is refused the same way (it is never advertised).
    let mut s = connect(&kafka);
    assert!(call(&mut s, ApiKey::EndTxn, 3, &EndTxnRequest::default()).is_none());
    // Still serving, still alive.
    let mut s = connect(&kafka);
    let m: MetadataResponse = ask(&mut s, ApiKey::Metadata, 9, &MetadataRequest::default());
    assert_eq!(m.brokers.len(), 1);
    assert!(n.is_running());
    // The refusals are logged with their causes (the log is read as it comes).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = n.log_lines().join("\n");
        if log.contains("exceeds the") && log.contains("Kafka transactions are not supported") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SaslHandshake is answered with the unsupported-mechanism error; ApiVersions beyond what is
/// served gets a v0 answer with UNSUPPORTED_VERSION and the list.
#[test]
fn sasl_is_refused_and_apiversions_downgrades() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "");
    let mut s = connect(&kafka);
    let sasl: SaslHandshakeResponse = ask(
        &mut s,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
    );
    assert_eq!(
        sasl.error_code,
        kafka_protocol::ResponseError::UnsupportedSaslMechanism.code()
    );
    // ApiVersions v9 (beyond the crate too): only its header fields are read.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(9);
    frame.put_i32(42);
    frame.put_i16(-1);
    let mut s = connect(&kafka);
    let answer: ApiVersionsResponse = decode(ApiKey::ApiVersions, 0, raw(&mut s, &frame).unwrap());
    assert_eq!(
        answer.error_code,
        kafka_protocol::ResponseError::UnsupportedVersion.code()
    );
    assert!(!answer.api_keys.is_empty());
}

/// A Kafka producer writing into a mirror topic gets TOPIC_AUTHORIZATION_FAILED with a
/// message naming the flow that owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_refuses_kafka_producers_naming_its_flow() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let east = NodeProcess::start(&pki, "east", &dir.path().join("east"), "");
    strait_protocol::client::Admin::new(pki.client(&east.address))
        .create_topic("orders", 1, Vec::new())
        .await
        .unwrap();
    let (west, kafka) = node_of(
        "west",
        &pki,
        &dir.path().join("west"),
        &format!(
            "[[flows]]\nname = \"east-to-west\"\nsource_bootstrap = [\"{}\"]\ntopics = \"orders\"\nrefresh_ms = 200\n",
            east.address
        ),
    );
    let mut b = strait_protocol::BatchBuilder::new(strait_protocol::Compression::None);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("east.orders")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(b.finish().into_bytes())),
            ])]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = connect(&kafka);
        let r: ProduceResponse = ask(&mut s, ApiKey::Produce, 9, &produce);
        let p = &r.responses[0].partition_responses[0];
        if p.error_code == kafka_protocol::ResponseError::UnknownTopicOrPartition.code() {
            assert!(
                std::time::Instant::now() < deadline,
                "the mirror topic never appeared: {}",
                west.log_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(
            p.error_code,
            kafka_protocol::ResponseError::TopicAuthorizationFailed.code()
        );
        let message = p
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("east-to-west") && message.contains("mirror"),
            "{message}"
        );
        break;
    }
}

/// A plaintext Kafka listener anywhere but loopback is refused at start, saying why.
#[test]
fn a_plaintext_listener_off_loopback_is_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let refused = NodeProcess::try_start_on(
        &pki,
        "east",
        &dir.path().join("n"),
        "[kafka]\nlisten = \"0.0.0.0:19999\"\nplaintext = true\n",
        free_udp_port(),
    );
    let err = match refused {
        Ok(_) => panic!("a plaintext listener off loopback started"),
        Err(log) => log.join("\n"),
    };
    assert!(
        err.contains("plaintext = true is allowed only on a loopback address"),
        "{err}"
    );
}

fn produce_request(topic: &str, acks: i16, batch: bytes::Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch)),
            ])])
}

fn batch_of(n: usize, tag: &str) -> bytes::Bytes {
    let mut b = strait_protocol::BatchBuilder::new(strait_protocol::Compression::None);
    for i in 0..n {
        b.push(
            1_000 + i as i64,
            None,
            Some(format!("{tag}{i}").as_bytes()),
            &[],
        );
    }
    b.finish().into_bytes()
}

fn fetch_request(topic: &str, offset: i64, wait_ms: i32, min_bytes: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// acks = 0 gets no answer at all (the next request's answer comes first), and the batch is
/// stored; a fetch at an offset inside a batch returns the whole batch; a fetch with nothing
/// new waits for data up to its max wait and answers as soon as data arrives;
/// OffsetForLeaderEpoch answers the current epoch's end.
#[test]
fn acks_zero_whole_batches_long_polls_and_leader_epochs() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_n, kafka) = node(&pki, &dir.path().join("n"), "auto_create_topics = true\n");
    let mut s = connect(&kafka);
    // Metadata creates the topic (auto-creation on).
    let _: MetadataResponse = ask(
        &mut s,
        ApiKey::Metadata,
        9,
        &MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))])),
    );
    // acks = 0: no answer; the following request's answer is the next thing on the wire.
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(41)
        .encode(&mut frame, ApiKey::Produce.request_header_version(9))
        .unwrap();
    produce_request("t", 0, batch_of(10, "a"))
        .encode(&mut frame, 9)
        .unwrap();
    let mut out = (frame.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    s.write_all(&out).unwrap();
    let acked: ProduceResponse = ask(
        &mut s,
        ApiKey::Produce,
        9,
        &produce_request("t", -1, batch_of(5, "b")),
    );
    let p = &acked.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 10),
        "the acks=0 batch took offsets 0..=9"
    );
    // Inside a batch: offset 4 returns the whole first batch, from its base offset 0.
    let f: FetchResponse = ask(&mut s, ApiKey::Fetch, 12, &fetch_request("t", 4, 0, 1));
    let data = &f.responses[0].partitions[0];
    assert_eq!(data.high_watermark, 15);
    let records = data.records.clone().unwrap();
    let first = strait_protocol::batch::split_batches(records, &Default::default()).unwrap();
    assert_eq!(first[0].base_offset().0, 0, "the whole batch, not a cut");
    assert_eq!(first[0].record_count(), 10);
    // A long poll at the end: nothing for its max wait...
    let started = std::time::Instant::now();
    let f: FetchResponse = ask(&mut s, ApiKey::Fetch, 12, &fetch_request("t", 15, 400, 1));
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "answered before its max wait"
    );
    assert!(f.responses[0].partitions[0]
        .records
        .as_ref()
        .is_none_or(|r| r.is_empty()));
    // ...and answered as soon as a batch arrives (from another connection).
    let address = kafka.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut w = connect(&address);
        call(
            &mut w,
            ApiKey::Produce,
            9,
            &produce_request("t", 1, batch_of(3, "c")),
        )
        .unwrap();
    });
    let started = std::time::Instant::now();
    let f: FetchResponse = ask(
        &mut s,
        ApiKey::Fetch,
        12,
        &fetch_request("t", 15, 10_000, 1),
    );
    writer.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the long poll missed the append"
    );
    let got = f.responses[0].partitions[0].records.clone().unwrap();
    let got = strait_protocol::batch::split_batches(got, &Default::default()).unwrap();
    assert_eq!(got[0].base_offset().0, 15);
    // OffsetForLeaderEpoch: epoch 0 (the only one) ends at the log end; a newer current
    // epoch than the node's is unknown to it.
    let epoch_request = |current: i32| {
        OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_current_leader_epoch(current)
                        .with_leader_epoch(0),
                ]),
        ])
    };
    let e: OffsetForLeaderEpochResponse =
        ask(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &epoch_request(0));
    let p = &e.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 18));
    let e: OffsetForLeaderEpochResponse =
        ask(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &epoch_request(3));
    assert_eq!(
        e.topics[0].partitions[0].error_code,
        kafka_protocol::ResponseError::UnknownLeaderEpoch.code()
    );
}

fn metadata_error(kafka: &str, topic: &str) -> i16 {
    let mut s = connect(kafka);
    let m: MetadataResponse = ask(
        &mut s,
        ApiKey::Metadata,
        9,
        &MetadataRequest::default()
            .with_allow_auto_topic_creation(true)
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(TopicName(StrBytes::from_string(topic.into()))))])),
    );
    m.topics[0].error_code
}

/// Auto-creation is off unless configured; when on, it is subject to the create ACL.
#[test]
fn auto_creation_is_off_by_default_and_follows_the_create_acl() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_off, kafka) = node(&pki, &dir.path().join("off"), "");
    assert_eq!(
        metadata_error(&kafka, "nothing"),
        kafka_protocol::ResponseError::UnknownTopicOrPartition.code()
    );
    // On, with ACLs: ANONYMOUS (plaintext) may create `made.*` only.
    let acls = "auto_create_topics = true\n[security]\nauthorization = true\nacls = [\n\
        { principal = \"ANONYMOUS\", operation = \"create\", resource = \"topic\", name = \"made.\", pattern = \"prefixed\" },\n\
        { principal = \"ANONYMOUS\", operation = \"describe\", resource = \"topic\", name = \"*\" },\n]\n";
    let (_on, kafka) = node(&pki, &dir.path().join("on"), acls);
    assert_eq!(
        metadata_error(&kafka, "made.here"),
        0,
        "created on first use"
    );
    assert_eq!(
        metadata_error(&kafka, "elsewhere"),
        kafka_protocol::ResponseError::TopicAuthorizationFailed.code(),
        "creating outside the ACL is refused"
    );
}
