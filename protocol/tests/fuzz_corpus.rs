//! Runs every fuzz target's checks (`fuzz/checks.rs`) on stable: over seeds built here (every
//! request kind, batches with each codec, decompression bombs), over the committed seed corpus
//! in `fuzz/seeds/<target>/` (the fuzzers start from it: `cargo fuzz run frame fuzz/seeds/frame`),
//! and over a local `fuzz/corpus/<target>/` when a fuzzing run left one, so CI keeps the
//! targets compiling and the corpus passing.
//!
//! `STRAIT_WRITE_SEEDS=1 cargo nextest run -p strait-protocol --test fuzz_corpus` rewrites the
//! seed corpus from `requests()`, `batches()` and `REGRESSIONS` (after a format change); the
//! counts in `SEEDS` must then follow.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

use strait_protocol::acl::{AclRule, Operation, PatternType, Permission, ResourceKind};
use strait_protocol::frame;
use strait_protocol::message::{OffsetSpec, Request};
use strait_protocol::{Acks, BatchBuilder, Compression};

fn requests() -> Vec<Request> {
    let rule = AclRule {
        principal: "app".into(),
        operation: Operation::Read,
        resource: ResourceKind::Topic,
        name: "t".into(),
        pattern: PatternType::Prefixed,
        permission: Permission::Deny,
    };
    vec![
        Request::Hello {
            version_min: 1,
            version_max: 1,
            client_id: "c".into(),
        },
        Request::Metadata {
            topics: Some(vec!["t".into()]),
        },
        Request::CreateTopic {
            name: "t".into(),
            partitions: 3,
            configs: vec![("flush".into(), "always".into())],
        },
        Request::Produce {
            topic: "t".into(),
            partition: 1,
            acks: Acks::All,
        },
        Request::Fetch {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 1 << 20,
        },
        Request::ListOffsets {
            topic: "t".into(),
            partition: 0,
            spec: OffsetSpec::Timestamp(-5),
        },
        Request::CommitOffsets {
            group: "g".into(),
            member_id: "m".into(),
            generation: 3,
            offsets: vec![],
        },
        Request::MirrorAppend {
            topic: "east.t".into(),
            partition: 2,
            provenance: vec![strait_protocol::Provenance {
                hops: vec![strait_protocol::Hop {
                    cluster: "east".into(),
                    topic: "t".into(),
                    partition: 2,
                    base_offset: 40,
                }],
            }],
        },
        Request::AddAcl { rule: rule.clone() },
        Request::RemoveAcl { rule },
        Request::ListAcls {},
    ]
}

fn batches() -> Vec<Vec<u8>> {
    Compression::ALL
        .into_iter()
        .map(|c| {
            let mut b = BatchBuilder::new(c);
            for i in 0..20u32 {
                b.push(i64::from(i), Some(b"key"), Some(&[i as u8; 100]), &[]);
            }
            b.finish().into_bytes().to_vec()
        })
        .collect()
}

/// Counts the bytes allocated, so a test can show a decoder never reserved memory for sizes it
/// was merely told about (nextest runs each test in its own process, so the peak is this
/// test's own).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Inputs the fuzzers once found failing, kept so they stay fixed.
const REGRESSIONS: &[(&str, &[u8])] = &[
    // kafka_request, 2026-12-07 (from design/kafka-wire.md): a Metadata v1 request whose 4-byte
    // body claims i32::MAX topics made the stock kafka-protocol crate reserve ~154 GB and abort.
    (
        "kafka_request",
        &[0, 3, 0, 1, 0, 0, 0, 7, 255, 255, 127, 255, 255, 255],
    ),
    // decompress, 2026-12-02: a record claiming 2^63 bytes and as many headers made the
    // decoder reserve 2.4 GB before reading them.
    (
        "decompress",
        &[
            99, 0, 0, 8, 0, 128, 128, 149, 149, 0, 91, 0, 0, 0, 0, 149, 255, 255, 20, 0, 0, 91, 0,
            0, 0, 0, 0,
        ],
    ),
];

#[test]
fn fuzzer_findings_stay_fixed() {
    for (target, input) in REGRESSIONS {
        let before = ALLOCATOR.allocated();
        match *target {
            "decompress" => checks::decompress(input),
            "batch" => checks::batch(input),
            "frame" => checks::frame(input),
            "kafka_request" => checks::kafka_request(input),
            _ => checks::request(input),
        }
        let peak = ALLOCATOR.max_allocated().saturating_sub(before);
        assert!(
            peak < 1 << 20,
            "{target} input made the decoder reserve {peak} bytes"
        );
    }
}

#[test]
fn seeds_pass_every_check() {
    for req in requests() {
        let f = frame::encode(&req, 0).unwrap();
        checks::frame(&f);
        checks::request(&f[frame::PREFIX_LEN..]);
        // Every truncation of a valid frame is refused cleanly too.
        for cut in 0..f.len() {
            checks::frame(&f[..cut]);
            checks::request(&f[frame::PREFIX_LEN.min(cut)..cut]);
        }
    }
    for k in kafka_requests() {
        checks::kafka_request(&k);
        for cut in 0..k.len() {
            checks::kafka_request(&k[..cut]);
        }
    }
    let all: Vec<u8> = batches().concat();
    checks::batch(&all);
    for b in batches() {
        for cut in (0..b.len()).step_by(7) {
            checks::batch(&b[..cut]);
        }
    }
    // A zstd bomb: 64 MiB of zeros in a few KiB, once declaring its size (refused before
    // storing) and once as a stream that declares nothing, alone and behind a small honest
    // frame (stored, but never expanded past the 1 MiB limit of the checks when read).
    let declared = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
    assert!(declared.len() < 64 << 10, "{}", declared.len());
    let undeclared = {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &vec![0u8; 64 << 20]).unwrap();
        enc.finish().unwrap()
    };
    let small = zstd::bulk::compress(&[1u8; 100], 3).unwrap();
    let behind = [small.as_slice(), declared.as_slice()].concat();
    for (bomb, refused_on_produce) in [(&declared, true), (&undeclared, false), (&behind, false)] {
        let mut input = vec![4u8];
        input.extend_from_slice(bomb);
        checks::decompress(&input);
        let raw = checks::batch_around(4, bomb);
        checks::batch(&raw);
        assert_refused(&raw, refused_on_produce);
    }
    // Every other codec's bomb is stored as it came and refused when read.
    for codec in [1u16, 2, 3] {
        let mut b = BatchBuilder::new(Compression::from_code(codec).unwrap());
        b.push(0, None, Some(&vec![0u8; 8 << 20]), &[]);
        let raw = b.finish().into_bytes().to_vec();
        checks::batch(&raw);
        assert_refused(&raw, false);
    }
}

/// The node's pre-store check refuses a bomb that declares its size; a consumer reading any
/// bomb stops at the bound and names it.
fn assert_refused(raw: &[u8], on_produce: bool) {
    let limits = strait_protocol::DecodeLimits {
        batch_bytes_max: 1 << 20,
        batch_bytes_decompressed_max: 1 << 20,
    };
    let b =
        strait_protocol::RecordBatch::parse(bytes::Bytes::copy_from_slice(raw), &limits).unwrap();
    let checked = b.check_decompressed_size(1 << 20);
    assert_eq!(checked.is_err(), on_produce, "{checked:?}");
    let err = b.records(1 << 20).unwrap_err();
    assert!(err.to_string().contains("decompress"), "{err}");
}

/// How many seed inputs each target's committed corpus holds.
const SEEDS: [(&str, usize); 5] = [
    ("frame", 11),
    ("request", 11),
    ("batch", 5),
    ("decompress", 6),
    ("kafka_request", KAFKA_SEEDS),
];

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("frame", checks::frame),
    ("request", checks::request),
    ("batch", checks::batch),
    ("decompress", checks::decompress),
    ("kafka_request", checks::kafka_request),
];

/// Kafka requests (header and body, without the size) as clients send them, one per API the
/// node serves at its highest advertised version and at the lowest, for the kafka_request
/// target; counted in `SEEDS` (plus its regression).
const KAFKA_SEEDS: usize = 14;

fn kafka_requests() -> Vec<Vec<u8>> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    fn frame<R: Encodable>(api: ApiKey, version: i16, body: &R) -> Vec<u8> {
        let mut out = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("seed")))
            .encode(&mut out, api.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.to_vec()
    }
    let topic = || TopicName(StrBytes::from_static_str("orders"));
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let batch = b.finish().into_bytes();
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch)),
            ])]);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_fetch_offset(3)
                .with_partition_max_bytes(1 << 20)])]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
    ]));
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(bytes::Bytes::from_static(&[0, 1, 0, 0, 0, 0]))]);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(9),
                ]),
        ]);
    let list = ListOffsetsRequest::default().with_topics(vec![
        list_offsets_request::ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default().with_timestamp(-2)
            ]),
    ]);
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(topic())
            .with_num_partitions(3)
            .with_replication_factor(1),
    ]);
    vec![
        frame(ApiKey::Produce, 9, &produce),
        frame(ApiKey::Produce, 3, &produce),
        frame(ApiKey::Fetch, 12, &fetch),
        frame(ApiKey::Fetch, 4, &fetch),
        frame(ApiKey::Metadata, 9, &metadata),
        frame(ApiKey::Metadata, 1, &metadata),
        frame(ApiKey::JoinGroup, 7, &join),
        frame(ApiKey::JoinGroup, 0, &join),
        frame(ApiKey::OffsetCommit, 8, &commit),
        frame(ApiKey::OffsetCommit, 2, &commit),
        frame(ApiKey::ListOffsets, 6, &list),
        frame(ApiKey::ListOffsets, 1, &list),
        frame(ApiKey::CreateTopics, 7, &create),
    ]
}

/// The seed corpus, by target: what `STRAIT_WRITE_SEEDS=1` writes.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for req in requests() {
        let f = frame::encode(&req, 0).unwrap().to_vec();
        out.push(("request", f[frame::PREFIX_LEN..].to_vec()));
        out.push(("frame", f));
    }
    for (codec, b) in batches().into_iter().enumerate() {
        // The decompress target reads [Kafka codec id][records section].
        let mut input = vec![codec as u8];
        input.extend_from_slice(&b[strait_protocol::batch::HEADER_LEN..]);
        out.push(("decompress", input));
        out.push(("batch", b));
    }
    for k in kafka_requests() {
        out.push(("kafka_request", k));
    }
    for (target, input) in REGRESSIONS {
        out.push((target, input.to_vec()));
    }
    out
}

#[test]
fn the_committed_corpus_passes_every_check() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    if std::env::var_os("STRAIT_WRITE_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(fuzz.join("seeds"));
        for (i, (target, input)) in seeds().into_iter().enumerate() {
            let dir = fuzz.join("seeds").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i:03}")), input).unwrap();
        }
    }
    for ((name, check), (seed_target, expected)) in TARGETS.into_iter().zip(SEEDS) {
        assert_eq!(name, seed_target);
        let seeds = run_dir(&fuzz.join("seeds").join(name), check);
        assert_eq!(
            seeds, expected,
            "fuzz/seeds/{name} holds {seeds} inputs, {expected} expected: is the seed corpus committed?"
        );
        let local = run_dir(&fuzz.join("corpus").join(name), check);
        eprintln!("{name}: {seeds} seeds and {local} local corpus inputs checked");
    }
}

/// Runs `check` on every file in `dir` (none if it does not exist); answers how many.
fn run_dir(dir: &Path, check: Check) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut ran = 0;
    for entry in entries.flatten() {
        check(&std::fs::read(entry.path()).unwrap());
        ran += 1;
    }
    ran
}
