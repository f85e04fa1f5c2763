//! What each fuzz target checks, shared with the stable corpus test
//! (`protocol/tests/fuzz_corpus.rs`) so both exercise the same code: no input may panic,
//! allocate past the configured limits, or decode to something that does not re-encode to
//! itself.

#![allow(dead_code)] // each fuzz target uses one of these

use bytes::Bytes;
use strait_protocol::batch::{split_batches, DecodeLimits, RecordBatch};
use strait_protocol::frame::{self, FrameLimits, PREFIX_LEN};
use strait_protocol::message::{Request, Response};

const MAX: u32 = 1 << 20;
const LIMITS: DecodeLimits = DecodeLimits {
    batch_bytes_max: MAX,
    batch_bytes_decompressed_max: MAX,
};

/// A frame as a node reads it: the prefix checked against the limit before any allocation,
/// then the header decoded as a request (and, as a client would, as a response).
pub fn frame(data: &[u8]) {
    let Some(prefix) = data.get(..PREFIX_LEN) else {
        return;
    };
    let mut p = [0u8; PREFIX_LEN];
    p.copy_from_slice(prefix);
    let Ok(lengths) = frame::decode_prefix(
        p,
        &FrameLimits {
            frame_bytes_max: MAX,
        },
    ) else {
        return;
    };
    assert!(
        lengths.total() <= MAX as usize,
        "a frame over the limit passed"
    );
    let Some(header) = data[PREFIX_LEN..].get(..lengths.header as usize) else {
        return;
    };
    request(header);
    let _ = frame::decode_header::<Response>(header);
}

/// Every request decoder (one postcard enum): whatever decodes re-encodes to the same message.
pub fn request(data: &[u8]) {
    if let Ok(req) = frame::decode_header::<Request>(data) {
        let _ = req.kind();
        let encoded = frame::encode(&req, 0).expect("a decoded request encodes");
        let back: Request =
            frame::decode_header(&encoded[PREFIX_LEN..]).expect("an encoded request decodes");
        assert_eq!(back, req);
    }
}

/// Batches as a node receives them (split, CRC, sizes, decompression bound) and as a consumer
/// reads them (every record).
pub fn batch(data: &[u8]) {
    let Ok(batches) = split_batches(Bytes::copy_from_slice(data), &LIMITS) else {
        return;
    };
    for b in batches {
        inspect(&b);
    }
}

/// Decompression of a hostile records section: `data[0]` picks the codec (Kafka's ids 0-4),
/// the rest is the section. It is framed as a batch with a valid CRC, so every input reaches
/// the decompressors.
pub fn decompress(data: &[u8]) {
    let Some((codec, section)) = data.split_first() else {
        return;
    };
    let raw = batch_around(u16::from(*codec % 5), section);
    if let Ok(b) = RecordBatch::parse(Bytes::from(raw), &LIMITS) {
        inspect(&b);
    }
}

fn inspect(b: &RecordBatch) {
    let _ = b.check_decompressed_size(MAX);
    if let Ok(records) = b.records(MAX) {
        assert!(records.len() <= b.record_count() as usize);
        let bytes: usize = records
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
            })
            .sum();
        assert!(
            bytes <= MAX as usize,
            "records larger than the decompression limit"
        );
    }
}

/// A one-record Kafka RecordBatch v2 header (big-endian, see `batch/mod.rs`) around an
/// arbitrary records section.
pub fn batch_around(codec: u16, section: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(61 + section.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((61 - 12 + section.len()) as u32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    b.extend_from_slice(&codec.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes()); // record count
    b.extend_from_slice(section);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A Kafka request as the node's Kafka listener reads it (after the size, which is checked
/// against the limit before any read): the header, then the body decoded by its API. No input
/// may panic or make the decoder reserve memory for counts the bytes cannot hold (the fuzz
/// run sets `-malloc_limit_mb`).
pub fn kafka_request(data: &[u8]) {
    use strait_protocol::kafka;
    let Ok((header, body)) = kafka::parse_header(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = kafka::decode_request(&header, body);
}
