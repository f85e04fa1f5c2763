//! The record batch: Kafka's RecordBatch v2 (magic 2), byte for byte. It is the unit a producer
//! builds, a node stores, a consumer reads and a mirror forwards, unchanged, so a batch built
//! by any Kafka client can be stored and served as it came, and the other way round.
//!
//! Layout (integers big-endian; byte offsets from the batch start):
//!
//! | at | size | field |
//! |----|------|-------|
//! | 0  | 8 | base offset (assigned by the node) |
//! | 8  | 4 | batch length: bytes after this field |
//! | 12 | 4 | partition leader epoch (assigned by the node) |
//! | 16 | 1 | magic, always [`MAGIC`] |
//! | 17 | 4 | CRC-32C of every byte from 21 to the end |
//! | 21 | 2 | attributes: bits 0–2 codec, 3 timestamp type, 4 transactional, 5 control, 6 delete horizon |
//! | 23 | 4 | last offset delta |
//! | 27 | 8 | base timestamp (ms) |
//! | 35 | 8 | max timestamp (ms) |
//! | 43 | 8 | producer id (-1: none) |
//! | 51 | 2 | producer epoch |
//! | 53 | 4 | base sequence (-1: none) |
//! | 57 | 4 | record count |
//! | 61 | … | records, compressed as a whole with the codec |
//!
//! The node assigns the base offset and leader epoch; both sit before the CRC so it never has to
//! recompute it. Decoding is sans-IO and bounded: sizes are checked before anything is
//! allocated, and decompression stops at the caller's bound. Where a batch was mirrored from is
//! not part of it (see [`crate::provenance`]).

mod builder;
mod codec;
mod records;
#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

pub use builder::BatchBuilder;
pub use codec::Compression;
pub use records::{Header, Record};

use crate::ids::{LeaderEpoch, Offset};

/// Format version of the batch: Kafka's current one.
pub const MAGIC: u8 = 2;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 61;
/// Bytes before the batch-length field ends: a reader needs this many to learn the batch size.
pub const LENGTH_PREFIX_LEN: usize = 12;
/// Bytes up to the end of the partition leader epoch: the node-assigned fields (base offset,
/// epoch) and the batch length between them, all before the CRC's range.
pub const POSITION_PREFIX_LEN: usize = 16;

const AT_BASE_OFFSET: usize = 0;
const AT_BATCH_LENGTH: usize = 8;
const AT_LEADER_EPOCH: usize = 12;
const AT_MAGIC: usize = 16;
const AT_CRC: usize = 17;
const AT_ATTRIBUTES: usize = 21;
const AT_LAST_OFFSET_DELTA: usize = 23;
const AT_BASE_TIMESTAMP: usize = 27;
const AT_MAX_TIMESTAMP: usize = 35;
const AT_PRODUCER_ID: usize = 43;
const AT_PRODUCER_EPOCH: usize = 51;
const AT_BASE_SEQUENCE: usize = 53;
const AT_RECORD_COUNT: usize = 57;

const ATTR_CODEC_MASK: u16 = 0b111;
const ATTR_LOG_APPEND_TIME: u16 = 1 << 3;
const ATTR_TRANSACTIONAL: u16 = 1 << 4;
const ATTR_CONTROL: u16 = 1 << 5;
const ATTR_DELETE_HORIZON: u16 = 1 << 6;
const ATTR_KNOWN: u16 = ATTR_CODEC_MASK
    | ATTR_LOG_APPEND_TIME
    | ATTR_TRANSACTIONAL
    | ATTR_CONTROL
    | ATTR_DELETE_HORIZON;

/// Most records one batch may declare; bounds the per-batch record vector.
pub const RECORD_COUNT_MAX: u32 = 1 << 20;

/// Bounds applied while decoding batches from untrusted bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest batch accepted, header included, as stored.
    pub batch_bytes_max: u32,
    /// Largest records section after decompression.
    pub batch_bytes_decompressed_max: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            batch_bytes_max: 16 << 20,
            batch_bytes_decompressed_max: 64 << 20,
        }
    }
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("batch is truncated: {needed} bytes needed, {available} present")]
    Truncated { needed: usize, available: usize },
    #[error("batch of {size} bytes exceeds the maximum of {max}; send smaller batches or raise batch_bytes_max")]
    TooLarge { size: u64, max: u32 },
    #[error("batch length field says {declared} bytes but {actual} follow it")]
    LengthMismatch { declared: u32, actual: usize },
    #[error("batch magic {0} is not supported (expected {MAGIC}, Kafka's RecordBatch v2); upgrade the client")]
    BadMagic(u8),
    #[error("batch CRC mismatch at base offset {base_offset}: stored {stored:#010x}, computed {computed:#010x}; the bytes were corrupted")]
    CrcMismatch {
        base_offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("batch attributes {0:#06x} carry unknown bits or codec")]
    BadAttributes(u16),
    #[error("transactional and control batches are not supported yet (Strait has no transactions); produce without a transactional id")]
    Transactional,
    #[error("batch declares {count} records; must be 1..={RECORD_COUNT_MAX} and at most last offset delta + 1 ({span})")]
    BadRecordCount { count: u32, span: u64 },
    #[error("records section decompresses past {max} bytes; raise max.batch.decompressed.bytes or send smaller batches")]
    DecompressedTooLarge { max: u32 },
    #[error("records section is corrupt: {0}")]
    BadRecords(String),
    #[error("decompression failed: {0}")]
    Decompression(String),
    #[error("batch offsets {base_offset} + {span} run past the largest offset {max}; the sender is broken or hostile", max = Offset::MAX)]
    OffsetOverflow { base_offset: u64, span: u64 },
}

/// A validated batch: its bytes passed the size, structure and CRC checks.
///
/// Cloning is cheap (shared [`Bytes`]); the bytes are exactly what was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates one whole batch (the buffer must hold exactly one).
    pub fn parse(bytes: Bytes, limits: &DecodeLimits) -> Result<RecordBatch, DecodeError> {
        let declared = total_len(&bytes, limits)?;
        if declared != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                declared: read_u32(&bytes, AT_BATCH_LENGTH),
                actual: bytes.len() - LENGTH_PREFIX_LEN,
            });
        }
        if bytes[AT_MAGIC] != MAGIC {
            return Err(DecodeError::BadMagic(bytes[AT_MAGIC]));
        }
        let stored = read_u32(&bytes, AT_CRC);
        let computed = crc32c::crc32c(&bytes[AT_ATTRIBUTES..]);
        if stored != computed {
            return Err(DecodeError::CrcMismatch {
                base_offset: read_u64(&bytes, AT_BASE_OFFSET),
                stored,
                computed,
            });
        }
        let attributes = read_u16(&bytes, AT_ATTRIBUTES);
        if attributes & !ATTR_KNOWN != 0
            || Compression::from_code(attributes & ATTR_CODEC_MASK).is_none()
        {
            return Err(DecodeError::BadAttributes(attributes));
        }
        if attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL) != 0 {
            return Err(DecodeError::Transactional);
        }
        let count = read_u32(&bytes, AT_RECORD_COUNT);
        let delta = read_u32(&bytes, AT_LAST_OFFSET_DELTA);
        let span = u64::from(delta) + 1;
        if count == 0
            || count > RECORD_COUNT_MAX
            || u64::from(count) > span
            || delta > i32::MAX as u32
        {
            return Err(DecodeError::BadRecordCount { count, span });
        }
        // Every offset arithmetic on this batch (last offset, next offset, record offsets)
        // stays at or below Offset::MAX, so none can wrap.
        let base_offset = read_u64(&bytes, AT_BASE_OFFSET);
        if Offset(base_offset).checked_plus(span).is_none() {
            return Err(DecodeError::OffsetOverflow { base_offset, span });
        }
        Ok(RecordBatch { bytes })
    }

    /// The batch's bytes as stored and sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn base_offset(&self) -> Offset {
        Offset(read_u64(&self.bytes, AT_BASE_OFFSET))
    }

    pub fn last_offset_delta(&self) -> u32 {
        read_u32(&self.bytes, AT_LAST_OFFSET_DELTA)
    }

    pub fn last_offset(&self) -> Offset {
        self.base_offset().plus(u64::from(self.last_offset_delta()))
    }

    /// The offset the record after this batch gets.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(read_u32(&self.bytes, AT_LEADER_EPOCH))
    }

    pub fn compression(&self) -> Compression {
        Compression::from_code(self.attributes() & ATTR_CODEC_MASK).unwrap_or_default()
    }

    /// Whether the timestamps are the broker's append time rather than the producer's.
    pub fn log_append_time(&self) -> bool {
        self.attributes() & ATTR_LOG_APPEND_TIME != 0
    }

    fn attributes(&self) -> u16 {
        read_u16(&self.bytes, AT_ATTRIBUTES)
    }

    /// The timestamp the records' deltas are relative to (Kafka's base timestamp).
    pub fn first_timestamp_ms(&self) -> i64 {
        read_i64(&self.bytes, AT_BASE_TIMESTAMP)
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        read_i64(&self.bytes, AT_MAX_TIMESTAMP)
    }

    pub fn producer_id(&self) -> i64 {
        read_i64(&self.bytes, AT_PRODUCER_ID)
    }

    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes([
            self.bytes[AT_PRODUCER_EPOCH],
            self.bytes[AT_PRODUCER_EPOCH + 1],
        ])
    }

    pub fn base_sequence(&self) -> i32 {
        read_u32(&self.bytes, AT_BASE_SEQUENCE) as i32
    }

    pub fn record_count(&self) -> u32 {
        read_u32(&self.bytes, AT_RECORD_COUNT)
    }

    /// Returns the same batch with the node-assigned fields set, copying only if the bytes are
    /// shared with someone else. The CRC stays valid because both fields precede it.
    pub fn with_position(self, base_offset: Offset, epoch: LeaderEpoch) -> RecordBatch {
        if self.base_offset() == base_offset && self.leader_epoch() == epoch {
            return self;
        }
        let prefix = self.position_prefix(base_offset, epoch);
        let mut bytes = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        bytes[..POSITION_PREFIX_LEN].copy_from_slice(&prefix);
        RecordBatch {
            bytes: bytes.freeze(),
        }
    }

    /// The batch's first [`POSITION_PREFIX_LEN`] bytes with the node-assigned fields set: what
    /// a log writes in front of the rest of the received bytes instead of copying the batch.
    pub fn position_prefix(
        &self,
        base_offset: Offset,
        epoch: LeaderEpoch,
    ) -> [u8; POSITION_PREFIX_LEN] {
        let mut prefix = [0u8; POSITION_PREFIX_LEN];
        prefix.copy_from_slice(&self.bytes[..POSITION_PREFIX_LEN]);
        prefix[AT_BASE_OFFSET..AT_BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_be_bytes());
        prefix[AT_LEADER_EPOCH..AT_LEADER_EPOCH + 4].copy_from_slice(&epoch.0.to_be_bytes());
        prefix
    }

    /// The same batch under another idempotent identity, its CRC recomputed. A producer
    /// re-numbers a batch it built when an earlier batch of its partition failed for good (that
    /// sequence range was never written, so later ones would never fit); the node never calls
    /// this: it stores batches as they come.
    pub fn with_producer(
        self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> RecordBatch {
        let mut bytes = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        bytes[AT_PRODUCER_ID..AT_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
        bytes[AT_PRODUCER_EPOCH..AT_PRODUCER_EPOCH + 2]
            .copy_from_slice(&producer_epoch.to_be_bytes());
        bytes[AT_BASE_SEQUENCE..AT_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[AT_ATTRIBUTES..]);
        bytes[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch {
            bytes: bytes.freeze(),
        }
    }

    /// Decodes every record, decompressing at most `decompressed_max` bytes.
    pub fn records(&self, decompressed_max: u32) -> Result<Vec<Record>, DecodeError> {
        let section = self.records_section(decompressed_max)?;
        records::decode(self, section)
    }

    /// Refuses, before storing, a batch whose header states it expands past
    /// `decompressed_max` (a zstd frame that declares its content size). Nothing is
    /// decompressed here: every other bomb is caught by the bounded decompression of whoever
    /// reads the records (consumers, compaction).
    pub fn check_decompressed_size(&self, decompressed_max: u32) -> Result<(), DecodeError> {
        self.compression()
            .check_declared_size(&self.bytes[HEADER_LEN..], decompressed_max)
    }

    fn records_section(&self, decompressed_max: u32) -> Result<Bytes, DecodeError> {
        match self.compression() {
            Compression::None => Ok(self.bytes.slice(HEADER_LEN..)),
            codec => codec
                .decompress(&self.bytes[HEADER_LEN..], decompressed_max)
                .map(Bytes::from),
        }
    }
}

/// Reads the total size of the batch starting at `buf`, bounded by `limits`, from its first
/// [`LENGTH_PREFIX_LEN`] bytes. Fails before anything is allocated for an oversized batch.
pub fn total_len(buf: &[u8], limits: &DecodeLimits) -> Result<usize, DecodeError> {
    if buf.len() < LENGTH_PREFIX_LEN {
        return Err(DecodeError::Truncated {
            needed: LENGTH_PREFIX_LEN,
            available: buf.len(),
        });
    }
    let total = u64::from(read_u32(buf, AT_BATCH_LENGTH)) + LENGTH_PREFIX_LEN as u64;
    if total > u64::from(limits.batch_bytes_max) {
        return Err(DecodeError::TooLarge {
            size: total,
            max: limits.batch_bytes_max,
        });
    }
    if total < HEADER_LEN as u64 {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: total as usize,
        });
    }
    Ok(total as usize)
}

/// Splits a buffer of concatenated batches into validated batches without copying.
pub fn split_batches(
    mut buf: Bytes,
    limits: &DecodeLimits,
) -> Result<Vec<RecordBatch>, DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = total_len(&buf, limits)?;
        if len > buf.len() {
            return Err(DecodeError::Truncated {
                needed: len,
                available: buf.len(),
            });
        }
        out.push(RecordBatch::parse(buf.split_to(len), limits)?);
    }
    Ok(out)
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    read_u64(buf, at) as i64
}

/// The base offset and the next offset after a stored batch, from its first bytes, without
/// checking anything (for counting what a fetch served).
pub fn peek_offsets(buf: &[u8]) -> Option<(Offset, Offset)> {
    if buf.len() < AT_LAST_OFFSET_DELTA + 4 {
        return None;
    }
    let base = read_u64(buf, AT_BASE_OFFSET);
    let delta = u64::from(read_u32(buf, AT_LAST_OFFSET_DELTA));
    Some((
        Offset(base),
        Offset(base.saturating_add(delta).saturating_add(1)),
    ))
}

/// Reads the base offset and total length from a batch header without validating the rest; the
/// node uses it to walk a segment.
pub fn peek_header(buf: &[u8]) -> Option<(Offset, usize)> {
    if buf.len() < LENGTH_PREFIX_LEN {
        return None;
    }
    Some((
        Offset(read_u64(buf, AT_BASE_OFFSET)),
        read_u32(buf, AT_BATCH_LENGTH) as usize + LENGTH_PREFIX_LEN,
    ))
}
