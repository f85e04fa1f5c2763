//! Strait's batch is Kafka's RecordBatch v2: checked against an independent implementation,
//! the `kafka-protocol` crate's record batch encoder and decoder, both ways and under every
//! codec, plus golden vectors whose bytes were checked by hand against the layout in
//! `docs/architecture.md`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use strait_protocol::batch::{split_batches, DecodeLimits};
use strait_protocol::{BatchBuilder, Compression, Header, LeaderEpoch, Offset, RecordBatch};

type Fixture = (
    i64,
    Option<&'static [u8]>,
    Option<&'static [u8]>,
    Vec<(&'static str, Option<&'static [u8]>)>,
);

/// Records covering what a batch can hold: keys and values present, empty and null, headers
/// with and without values, several of them, timestamps out of order.
fn fixtures() -> Vec<Fixture> {
    vec![
        (1_700_000_000_000, Some(b"k1"), Some(b"hello"), vec![]),
        (
            1_700_000_000_005,
            None,
            Some(b"no key"),
            vec![("trace", Some(b"abc"))],
        ),
        (
            1_700_000_000_002,
            Some(b"tomb"),
            None,
            vec![("a", None), ("b", Some(b""))],
        ),
        (1_700_000_000_009, Some(b""), Some(b""), vec![]),
        (
            1_700_000_000_007,
            Some(b"big"),
            Some(&[7u8; 3000]),
            vec![("h", Some(&[1u8; 40]))],
        ),
    ]
}

fn strait_batch(compression: Compression, producer: Option<(i64, i16, i32)>) -> RecordBatch {
    let mut b = BatchBuilder::new(compression);
    if let Some((id, epoch, seq)) = producer {
        b = b.producer(id, epoch, seq);
    }
    for (ts, k, v, h) in fixtures() {
        let headers: Vec<Header> = h
            .iter()
            .map(|(k, v)| Header {
                key: (*k).into(),
                value: v.map(Bytes::from_static),
            })
            .collect();
        b.push(ts, k, v, &headers);
    }
    b.finish()
}

fn kafka_records(producer: Option<(i64, i16, i32)>) -> Vec<KafkaRecord> {
    let (id, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    fixtures()
        .into_iter()
        .enumerate()
        .map(|(i, (ts, k, v, h))| {
            let mut headers = IndexMap::new();
            for (hk, hv) in h {
                headers.insert(StrBytes::from_static_str(hk), hv.map(Bytes::from_static));
            }
            KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Without a producer the base sequence is -1; the encoder keeps records in one
                // batch while offset minus sequence stays the same.
                sequence: if seq < 0 {
                    i as i32 - 1
                } else {
                    seq + i as i32
                },
                timestamp: ts,
                key: k.map(Bytes::from_static),
                value: v.map(Bytes::from_static),
                headers,
            }
        })
        .collect()
}

fn kafka_codec(c: Compression) -> KafkaCompression {
    match c {
        Compression::None => KafkaCompression::None,
        Compression::Gzip => KafkaCompression::Gzip,
        Compression::Snappy => KafkaCompression::Snappy,
        Compression::Lz4 => KafkaCompression::Lz4,
        _ => KafkaCompression::Zstd,
    }
}

fn kafka_encode(compression: Compression, producer: Option<(i64, i16, i32)>) -> Bytes {
    let records = kafka_records(producer);
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: kafka_codec(compression),
        },
    )
    .unwrap();
    buf.freeze()
}

/// Batches Strait writes decode in kafka-protocol field for field, under every codec.
#[test]
fn strait_batches_decode_in_kafka_protocol() {
    for c in Compression::ALL {
        for producer in [None, Some((4242, 3, 17))] {
            let batch = strait_batch(c, producer).with_position(Offset(1000), LeaderEpoch(5));
            let mut bytes = batch.as_bytes().clone();
            let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
            assert_eq!(set.version, 2);
            assert_eq!(set.compression, kafka_codec(c), "{c}");
            assert_eq!(set.records.len(), fixtures().len());
            for (i, (r, (ts, k, v, h))) in set.records.iter().zip(fixtures()).enumerate() {
                assert_eq!(r.offset, 1000 + i as i64, "{c}");
                assert_eq!(r.timestamp, ts, "{c}");
                assert_eq!(r.timestamp_type, TimestampType::Creation);
                assert_eq!(r.key.as_deref(), k, "{c}");
                assert_eq!(r.value.as_deref(), v, "{c}");
                assert_eq!(r.partition_leader_epoch, 5);
                let headers: Vec<(&str, Option<&[u8]>)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (&**k, v.as_deref()))
                    .collect();
                assert_eq!(headers, h, "{c}");
                let (id, epoch, seq) = producer.unwrap_or((-1, -1, -1));
                assert_eq!((r.producer_id, r.producer_epoch), (id, epoch));
                // The decoder numbers records from the base sequence, -1 included.
                assert_eq!(r.sequence, seq + i as i32);
                assert!(!r.transactional && !r.control);
            }
        }
    }
}

/// Batches kafka-protocol writes (every codec, headers, null keys and values, an idempotent
/// producer) parse in Strait, pass its CRC, and decode to the same records; uncompressed, the
/// two encoders agree to the byte.
#[test]
fn kafka_protocol_batches_decode_in_strait() {
    let limits = DecodeLimits::default();
    for c in Compression::ALL {
        for producer in [None, Some((77, 1, 0))] {
            let bytes = kafka_encode(c, producer);
            let batch = RecordBatch::parse(bytes.clone(), &limits).unwrap();
            assert_eq!(batch.compression(), c);
            assert_eq!(batch.record_count(), 5);
            assert_eq!(batch.last_offset(), Offset(4));
            let (id, epoch, seq) = producer.unwrap_or((-1, -1, -1));
            assert_eq!(
                (
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence()
                ),
                (id, epoch, seq)
            );
            batch
                .check_decompressed_size(limits.batch_bytes_decompressed_max)
                .unwrap();
            let ours = strait_batch(Compression::None, producer)
                .records(1 << 20)
                .unwrap();
            assert_eq!(batch.records(1 << 20).unwrap(), ours, "{c}");
            if c == Compression::None {
                assert_eq!(
                    strait_batch(c, producer).into_bytes(),
                    bytes,
                    "both encoders write the same bytes"
                );
            }
        }
    }
}

/// A few batches with hand-checked bytes: if the encoder drifts from Kafka's layout, these
/// fail before any client notices.
#[test]
fn golden_vectors() {
    // One record: timestamp 1000, key "k", value "v", no headers; offsets and epoch as a node
    // assigns them (base 7, epoch 2).
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1000, Some(b"k"), Some(b"v"), &[]);
    let batch = b.finish().with_position(Offset(7), LeaderEpoch(2));
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 7,             // base offset 7
        0, 0, 0, 0x3a,                      // batch length 58 = 61 - 12 + 9
        0, 0, 0, 2,                         // partition leader epoch 2
        2,                                  // magic
        0x00, 0x00, 0x00, 0x00,             // CRC, checked below
        0, 0,                               // attributes: no codec, create time
        0, 0, 0, 0,                         // last offset delta 0
        0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // base timestamp 1000
        0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // max timestamp 1000
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer id -1
        0xff, 0xff,                         // producer epoch -1
        0xff, 0xff, 0xff, 0xff,             // base sequence -1
        0, 0, 0, 1,                         // one record
        // the record: body length 8 (zigzag 16), attributes, ts delta 0, offset delta 0,
        // key length 1 (zigzag 2) "k", value length 1 (zigzag 2) "v", no headers
        0x10, 0, 0, 0, 0x02, b'k', 0x02, b'v', 0,
    ];
    let bytes = batch.as_bytes();
    assert_eq!(bytes.len(), expected.len());
    assert_eq!(&bytes[..17], &expected[..17]);
    assert_eq!(&bytes[21..], &expected[21..]);
    let crc = u32::from_be_bytes(bytes[17..21].try_into().unwrap());
    assert_eq!(crc, crc32c::crc32c(&expected[21..]));

    // Two records with a header and a null value, lz4 framed: the header up to the codec
    // bits, and the lz4 frame magic at the start of the records.
    let mut b = BatchBuilder::new(Compression::Lz4).producer(9, 0, 100);
    b.push(
        5,
        Some(b"a"),
        None,
        &[Header {
            key: "h".into(),
            value: None,
        }],
    );
    b.push(4, None, Some(b"x"), &[]);
    let lz4 = b.finish();
    let bytes = lz4.as_bytes();
    assert_eq!(&bytes[21..23], &[0, 3], "codec 3: lz4");
    assert_eq!(&bytes[23..27], &[0, 0, 0, 1], "last offset delta 1");
    assert_eq!(
        &bytes[27..35],
        &5i64.to_be_bytes(),
        "base timestamp: the first record's"
    );
    assert_eq!(&bytes[35..43], &5i64.to_be_bytes(), "max timestamp");
    assert_eq!(&bytes[43..51], &9i64.to_be_bytes());
    assert_eq!(&bytes[53..57], &100i32.to_be_bytes());
    assert_eq!(&bytes[61..65], &[0x04, 0x22, 0x4d, 0x18], "lz4 frame magic");
    let records = lz4.records(1 << 10).unwrap();
    assert_eq!(
        records[0].headers,
        vec![Header {
            key: "h".into(),
            value: None
        }]
    );
    assert_eq!(records[1].timestamp_ms, 4);
    let mut set = lz4.as_bytes().clone();
    assert_eq!(
        RecordBatchDecoder::decode(&mut set).unwrap().records.len(),
        2
    );

    // Concatenated batches split exactly.
    let both = [batch.as_bytes().clone(), lz4.as_bytes().clone()].concat();
    assert_eq!(
        split_batches(Bytes::from(both), &DecodeLimits::default())
            .unwrap()
            .len(),
        2
    );
}
