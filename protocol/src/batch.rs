//! The record batch: the unit a producer builds, a node stores, a consumer reads and a mirror
//! forwards, byte for byte.
//!
//! Layout (all integers little-endian, fixed width; byte offsets from the batch start):
//!
//! | at | size | field |
//! |----|------|-------|
//! | 0  | 8 | base offset (assigned by the node) |
//! | 8  | 4 | batch length: bytes after this field |
//! | 12 | 4 | leader epoch (assigned by the node) |
//! | 16 | 1 | magic, always [`MAGIC`] |
//! | 17 | 4 | CRC-32C of every byte from 21 to the end |
//! | 21 | 2 | attributes: bits 0–2 codec, bit 3 timestamp type, bit 4 provenance present |
//! | 23 | 4 | last offset delta |
//! | 27 | 8 | first timestamp (ms) |
//! | 35 | 8 | max timestamp (ms) |
//! | 43 | 8 | producer id (-1: none) |
//! | 51 | 2 | producer epoch |
//! | 53 | 4 | base sequence (-1: none) |
//! | 57 | 4 | record count |
//! | 61 | 4 | uncompressed size of the records section |
//! | 65 | … | provenance, when bit 4 is set |
//! | …  | … | records section, compressed with the codec |
//!
//! The node assigns the base offset and leader epoch; both sit before the CRC so it never has to
//! recompute it. Decoding is sans-IO and bounded: sizes are checked before anything is allocated.

use bytes::{BufMut, Bytes, BytesMut};

use crate::ids::{LeaderEpoch, Offset};
use crate::varint;

/// Format version of the batch; bumps on any layout change.
pub const MAGIC: u8 = 1;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 65;
/// Bytes before the batch-length field ends: a reader needs this many to learn the batch size.
pub const LENGTH_PREFIX_LEN: usize = 12;

const AT_BASE_OFFSET: usize = 0;
const AT_BATCH_LENGTH: usize = 8;
const AT_LEADER_EPOCH: usize = 12;
const AT_MAGIC: usize = 16;
const AT_CRC: usize = 17;
const AT_ATTRIBUTES: usize = 21;
const AT_LAST_OFFSET_DELTA: usize = 23;
const AT_FIRST_TIMESTAMP: usize = 27;
const AT_MAX_TIMESTAMP: usize = 35;
const AT_PRODUCER_ID: usize = 43;
const AT_PRODUCER_EPOCH: usize = 51;
const AT_BASE_SEQUENCE: usize = 53;
const AT_RECORD_COUNT: usize = 57;
const AT_RECORDS_SIZE: usize = 61;

const ATTR_CODEC_MASK: u16 = 0b111;
const ATTR_LOG_APPEND_TIME: u16 = 1 << 3;
const ATTR_PROVENANCE: u16 = 1 << 4;
const ATTR_KNOWN: u16 = ATTR_CODEC_MASK | ATTR_LOG_APPEND_TIME | ATTR_PROVENANCE;

/// Most records one batch may declare; bounds the per-batch record vector.
pub const RECORD_COUNT_MAX: u32 = 1 << 20;

/// Compression applied to the records section of a batch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

impl Compression {
    fn code(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!(
                "unknown compression {other:?}; use none, lz4 or zstd"
            )),
        }
    }
}

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

/// Most mirror hops one batch may record: longer paths are refused, which also bounds the
/// provenance a hostile peer can make a node parse.
pub const HOPS_MAX: usize = 16;

/// Every cluster a mirrored batch passed through, oldest first; carried inside the batch so it
/// survives every hop. The first hop is the record's origin; the last is the cluster the batch
/// was copied from most recently, with the offsets it had there (what translation needs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub hops: Vec<Hop>,
}

/// One cluster a batch was copied from, and where it sat there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Hop {
    pub cluster: String,
    pub topic: String,
    pub partition: u32,
    pub base_offset: u64,
}

impl Provenance {
    /// Where the records were first produced.
    pub fn origin(&self) -> Option<&Hop> {
        self.hops.first()
    }

    /// The cluster the batch was copied from last.
    pub fn source(&self) -> Option<&Hop> {
        self.hops.last()
    }

    /// Whether the batch already passed through `cluster`: copying it there again would loop.
    pub fn includes(&self, cluster: &str) -> bool {
        self.hops.iter().any(|h| h.cluster == cluster)
    }
}

/// One record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A decoded record, with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: Offset,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
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
    #[error("batch magic {0} is not supported (expected {MAGIC}); upgrade the client or node")]
    BadMagic(u8),
    #[error("batch CRC mismatch at base offset {base_offset}: stored {stored:#010x}, computed {computed:#010x}; the bytes were corrupted")]
    CrcMismatch {
        base_offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("batch attributes {0:#06x} carry unknown bits or codec")]
    BadAttributes(u16),
    #[error("batch declares {count} records; must be 1..={RECORD_COUNT_MAX} and at most last offset delta + 1 ({span})")]
    BadRecordCount { count: u32, span: u64 },
    #[error("records section decompresses past {max} bytes; raise batch_bytes_decompressed_max or send smaller batches")]
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
    provenance_len: usize,
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
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
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
        let count = read_u32(&bytes, AT_RECORD_COUNT);
        let span = u64::from(read_u32(&bytes, AT_LAST_OFFSET_DELTA)) + 1;
        if count == 0 || count > RECORD_COUNT_MAX || u64::from(count) > span {
            return Err(DecodeError::BadRecordCount { count, span });
        }
        // Every offset arithmetic on this batch (last offset, next offset, record offsets)
        // stays at or below Offset::MAX, so none can wrap.
        let base_offset = read_u64(&bytes, AT_BASE_OFFSET);
        if Offset(base_offset).checked_plus(span).is_none() {
            return Err(DecodeError::OffsetOverflow { base_offset, span });
        }
        let provenance_len = if attributes & ATTR_PROVENANCE != 0 {
            provenance_len(&bytes[HEADER_LEN..], span)?
        } else {
            0
        };
        Ok(RecordBatch {
            bytes,
            provenance_len,
        })
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
        Compression::from_code(read_u16(&self.bytes, AT_ATTRIBUTES) & ATTR_CODEC_MASK)
            .unwrap_or_default()
    }

    pub fn first_timestamp_ms(&self) -> i64 {
        read_i64(&self.bytes, AT_FIRST_TIMESTAMP)
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        read_i64(&self.bytes, AT_MAX_TIMESTAMP)
    }

    pub fn producer_id(&self) -> i64 {
        read_i64(&self.bytes, AT_PRODUCER_ID)
    }

    pub fn producer_epoch(&self) -> i16 {
        i16::from_le_bytes([
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

    /// The origin of a mirrored batch, if it carries one.
    pub fn provenance(&self) -> Option<Provenance> {
        if self.provenance_len == 0 {
            return None;
        }
        decode_provenance(&self.bytes[HEADER_LEN..HEADER_LEN + self.provenance_len]).map(|(p, _)| p)
    }

    /// The same records with `hop` appended to the provenance: what a mirror forwards. The
    /// records section is copied untouched (still compressed as the producer compressed it);
    /// only the provenance, the length and the CRC change.
    pub fn with_hop(&self, hop: Hop) -> Result<RecordBatch, DecodeError> {
        let mut provenance = self.provenance().unwrap_or_default();
        if provenance.hops.len() >= HOPS_MAX {
            return Err(DecodeError::BadRecords(format!(
                "batch already passed through {HOPS_MAX} clusters; refusing to copy it further"
            )));
        }
        provenance.hops.push(hop);
        let encoded = encode_provenance(&provenance);
        let section = &self.bytes[HEADER_LEN + self.provenance_len..];
        let mut out = BytesMut::with_capacity(HEADER_LEN + encoded.len() + section.len());
        out.extend_from_slice(&self.bytes[..HEADER_LEN]);
        out.extend_from_slice(&encoded);
        out.extend_from_slice(section);
        let batch_len = (out.len() - LENGTH_PREFIX_LEN) as u32;
        out[AT_BATCH_LENGTH..AT_BATCH_LENGTH + 4].copy_from_slice(&batch_len.to_le_bytes());
        let attributes = read_u16(&out, AT_ATTRIBUTES) | ATTR_PROVENANCE;
        out[AT_ATTRIBUTES..AT_ATTRIBUTES + 2].copy_from_slice(&attributes.to_le_bytes());
        let crc = crc32c::crc32c(&out[AT_ATTRIBUTES..]);
        out[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(RecordBatch {
            bytes: out.freeze(),
            provenance_len: encoded.len(),
        })
    }

    /// Returns the same batch with the node-assigned fields set, copying only if the bytes are
    /// shared with someone else. The CRC stays valid because both fields precede it.
    pub fn with_position(self, base_offset: Offset, epoch: LeaderEpoch) -> RecordBatch {
        if self.base_offset() == base_offset && self.leader_epoch() == epoch {
            return self;
        }
        let mut bytes = match self.bytes.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        bytes[AT_BASE_OFFSET..AT_BASE_OFFSET + 8].copy_from_slice(&base_offset.0.to_le_bytes());
        bytes[AT_LEADER_EPOCH..AT_LEADER_EPOCH + 4].copy_from_slice(&epoch.0.to_le_bytes());
        RecordBatch {
            bytes: bytes.freeze(),
            provenance_len: self.provenance_len,
        }
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
        bytes[AT_PRODUCER_ID..AT_PRODUCER_ID + 8].copy_from_slice(&producer_id.to_le_bytes());
        bytes[AT_PRODUCER_EPOCH..AT_PRODUCER_EPOCH + 2]
            .copy_from_slice(&producer_epoch.to_le_bytes());
        bytes[AT_BASE_SEQUENCE..AT_BASE_SEQUENCE + 4].copy_from_slice(&base_sequence.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[AT_ATTRIBUTES..]);
        bytes[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        RecordBatch {
            bytes: bytes.freeze(),
            provenance_len: self.provenance_len,
        }
    }

    /// Decodes every record, decompressing at most `decompressed_max` bytes.
    pub fn records(&self, decompressed_max: u32) -> Result<Vec<Record>, DecodeError> {
        let section = self.records_section(decompressed_max)?;
        decode_records(self, section)
    }

    /// Checks, before storing, that the records section cannot expand past `decompressed_max`
    /// nor past what the header declares (a decompression bomb): cheaply from the zstd frame
    /// header when it states its size, by a bounded decompression only for zstd input that
    /// does not. Nothing is decompressed on the common path.
    pub fn check_decompressed_size(&self, decompressed_max: u32) -> Result<(), DecodeError> {
        let declared = read_u32(&self.bytes, AT_RECORDS_SIZE);
        if declared > decompressed_max {
            return Err(DecodeError::DecompressedTooLarge {
                max: decompressed_max,
            });
        }
        match self.compression() {
            Compression::None => {
                let raw = self.bytes.len() - HEADER_LEN - self.provenance_len;
                if raw != declared as usize {
                    return Err(DecodeError::Decompression(format!(
                        "uncompressed records section is {raw} bytes, header says {declared}"
                    )));
                }
                Ok(())
            }
            Compression::Zstd => {
                let raw = &self.bytes[HEADER_LEN + self.provenance_len..];
                let single_frame =
                    zstd::zstd_safe::find_frame_compressed_size(raw).is_ok_and(|n| n == raw.len());
                match zstd::zstd_safe::get_frame_content_size(raw) {
                    Ok(Some(n)) if single_frame && n == u64::from(declared) => Ok(()),
                    Ok(Some(n)) if single_frame => Err(DecodeError::Decompression(format!(
                        "the zstd frame expands to {n} bytes, the batch header says {declared}"
                    ))),
                    _ => self.records_section(decompressed_max).map(|_| ()),
                }
            }
            // An lz4 block cannot state its size, and decoders only ever decompress into a
            // buffer of the declared size, so the declared-size check above is the bound:
            // expanding every lz4 batch here would cost an allocation and a decompression per
            // produced batch for nothing.
            Compression::Lz4 => Ok(()),
        }
    }

    fn records_section(&self, decompressed_max: u32) -> Result<Bytes, DecodeError> {
        let start = HEADER_LEN + self.provenance_len;
        let raw = self.bytes.slice(start..);
        let declared = read_u32(&self.bytes, AT_RECORDS_SIZE);
        if declared > decompressed_max {
            return Err(DecodeError::DecompressedTooLarge {
                max: decompressed_max,
            });
        }
        let declared = declared as usize;
        let out = match self.compression() {
            Compression::None => return Ok(raw),
            Compression::Lz4 => {
                let mut out = vec![0u8; declared];
                let n = lz4_flex::block::decompress_into(&raw, &mut out)
                    .map_err(|e| DecodeError::Decompression(e.to_string()))?;
                out.truncate(n);
                out
            }
            Compression::Zstd => zstd::bulk::decompress(&raw, declared)
                .map_err(|e| DecodeError::Decompression(e.to_string()))?,
        };
        if out.len() != declared {
            return Err(DecodeError::Decompression(format!(
                "records section decompressed to {} bytes, header says {declared}",
                out.len()
            )));
        }
        Ok(Bytes::from(out))
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

/// Builds a batch record by record. Offsets and epoch are left for the node to assign.
#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
    records: Vec<u8>,
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    last_offset_delta: u32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    provenance: Option<Provenance>,
}

impl BatchBuilder {
    /// A builder whose buffer is sized for `capacity_bytes` of records up front, so a batch
    /// grows without reallocating and copying.
    pub fn with_capacity(compression: Compression, capacity_bytes: usize) -> Self {
        let mut b = BatchBuilder::new(compression);
        b.records.reserve(capacity_bytes.min(64 << 20));
        b
    }

    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            records: vec![0u8; HEADER_LEN],
            count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: i64::MIN,
            last_offset_delta: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            provenance: None,
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn provenance(mut self, provenance: Provenance) -> Self {
        self.provenance = Some(provenance);
        self
    }

    pub fn record_count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed size so far, header included: what the batch costs before compression.
    pub fn size_bytes(&self) -> usize {
        self.records.len()
    }

    /// Appends a record at the next offset delta.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let delta = if self.count == 0 {
            0
        } else {
            self.last_offset_delta + 1
        };
        self.push_at(delta, timestamp_ms, key, value, headers);
    }

    /// Appends a record at an explicit offset delta, larger than any before (compaction keeps
    /// the original offsets of the records it retains).
    pub fn push_at(
        &mut self,
        offset_delta: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.count == 0 {
            self.first_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        self.last_offset_delta = offset_delta;
        self.count += 1;
        let ts_delta = timestamp_ms.wrapping_sub(self.first_timestamp_ms);
        // Size the body first so it is written once, straight into the records buffer.
        let mut body_len = 1 + varint::len_i64(ts_delta) + varint::len_u64(u64::from(offset_delta));
        body_len += nullable_len(key) + nullable_len(value) + varint::len_u64(headers.len() as u64);
        for header in headers {
            body_len += varint::len_u64(header.key.len() as u64)
                + header.key.len()
                + nullable_len(header.value.as_deref());
        }
        let records = &mut self.records;
        records.reserve(body_len + 10);
        varint::put_u64(records, body_len as u64);
        records.push(0u8);
        varint::put_i64(records, ts_delta);
        varint::put_u64(records, u64::from(offset_delta));
        put_nullable(records, key);
        put_nullable(records, value);
        varint::put_u64(records, headers.len() as u64);
        for header in headers {
            varint::put_u64(records, header.key.len() as u64);
            records.extend_from_slice(header.key.as_bytes());
            put_nullable(records, header.value.as_deref());
        }
    }

    /// Encodes the batch. Panics if no record was pushed: an empty batch has no offsets.
    pub fn finish(mut self) -> RecordBatch {
        assert!(self.count > 0, "a batch needs at least one record");
        let records_len = self.records.len() - HEADER_LEN;
        let provenance = self
            .provenance
            .as_ref()
            .map(encode_provenance)
            .unwrap_or_default();
        let mut attributes = self.compression.code();
        if self.provenance.is_some() {
            attributes |= ATTR_PROVENANCE;
        }
        let mut header = BytesMut::with_capacity(HEADER_LEN + provenance.len());
        header.put_u64_le(0);
        header.put_u32_le(0); // batch length, set below
        header.put_u32_le(0);
        header.put_u8(MAGIC);
        header.put_u32_le(0); // CRC, set below
        header.put_u16_le(attributes);
        header.put_u32_le(self.last_offset_delta);
        header.put_i64_le(self.first_timestamp_ms);
        header.put_i64_le(self.max_timestamp_ms);
        header.put_i64_le(self.producer_id);
        header.put_i16_le(self.producer_epoch);
        header.put_i32_le(self.base_sequence);
        header.put_u32_le(self.count);
        header.put_u32_le(records_len as u32);
        header.extend_from_slice(&provenance);
        let mut buf = if self.compression == Compression::None && provenance.is_empty() {
            // The common case: the records were written behind a reserved header, so the batch
            // is finished in place without copying them.
            self.records[..HEADER_LEN].copy_from_slice(&header);
            std::mem::take(&mut self.records)
        } else {
            let section = &self.records[HEADER_LEN..];
            let compressed: std::borrow::Cow<'_, [u8]> = match self.compression {
                Compression::Lz4 => lz4_flex::block::compress(section).into(),
                Compression::Zstd => zstd::bulk::compress(section, 1)
                    .unwrap_or_else(|_| unreachable!("zstd compression into a Vec cannot fail"))
                    .into(),
                _ => section.into(),
            };
            let mut buf = Vec::with_capacity(header.len() + compressed.len());
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&compressed);
            buf
        };
        let total = buf.len();
        buf[AT_BATCH_LENGTH..AT_BATCH_LENGTH + 4]
            .copy_from_slice(&((total - LENGTH_PREFIX_LEN) as u32).to_le_bytes());
        let crc = crc32c::crc32c(&buf[AT_ATTRIBUTES..]);
        buf[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        RecordBatch {
            bytes: Bytes::from(buf),
            provenance_len: provenance.len(),
        }
    }
}

fn nullable_len(data: Option<&[u8]>) -> usize {
    match data {
        None => varint::len_i64(-1),
        Some(bytes) => varint::len_i64(bytes.len() as i64) + bytes.len(),
    }
}

fn put_nullable(buf: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => varint::put_i64(buf, -1),
        Some(bytes) => {
            varint::put_i64(buf, bytes.len() as i64);
            buf.extend_from_slice(bytes);
        }
    }
}

fn encode_provenance(p: &Provenance) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + p.hops.len() * 32);
    let hops = &p.hops[..p.hops.len().min(HOPS_MAX)];
    out.push(hops.len() as u8);
    for h in hops {
        for s in [&h.cluster, &h.topic] {
            let len = s.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&s.as_bytes()[..len]);
        }
        out.extend_from_slice(&h.partition.to_le_bytes());
        out.extend_from_slice(&h.base_offset.to_le_bytes());
    }
    out
}

/// Validates the provenance block and answers its length; every hop's source offsets (base
/// plus the batch's span) must fit below [`Offset::MAX`], as the batch's own do.
fn provenance_len(buf: &[u8], span: u64) -> Result<usize, DecodeError> {
    let (provenance, len) = decode_provenance(buf).ok_or_else(|| {
        DecodeError::BadRecords(format!(
            "provenance is truncated, not UTF-8 or longer than {HOPS_MAX} hops"
        ))
    })?;
    if let Some(hop) = provenance
        .hops
        .iter()
        .find(|h| Offset(h.base_offset).checked_plus(span).is_none())
    {
        return Err(DecodeError::OffsetOverflow {
            base_offset: hop.base_offset,
            span,
        });
    }
    Ok(len)
}

/// Decodes a provenance block from the start of `buf`, returning it and its encoded length.
fn decode_provenance(buf: &[u8]) -> Option<(Provenance, usize)> {
    let count = usize::from(*buf.first()?);
    if count == 0 || count > HOPS_MAX {
        return None;
    }
    let mut at = 1;
    let mut hops = Vec::with_capacity(count);
    for _ in 0..count {
        let mut strings = [String::new(), String::new()];
        for s in &mut strings {
            let len = usize::from(u16::from_le_bytes([*buf.get(at)?, *buf.get(at + 1)?]));
            *s = std::str::from_utf8(buf.get(at + 2..at + 2 + len)?)
                .ok()?
                .to_string();
            at += 2 + len;
        }
        let partition = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?);
        let base_offset = u64::from_le_bytes(buf.get(at + 4..at + 12)?.try_into().ok()?);
        at += 12;
        let [cluster, topic] = strings;
        hops.push(Hop {
            cluster,
            topic,
            partition,
            base_offset,
        });
    }
    Some((Provenance { hops }, at))
}

fn decode_records(batch: &RecordBatch, section: Bytes) -> Result<Vec<Record>, DecodeError> {
    let count = batch.record_count();
    let base = batch.base_offset();
    let first_ts = batch.first_timestamp_ms();
    let last_delta = u64::from(batch.last_offset_delta());
    let mut records = Vec::with_capacity(count as usize);
    let mut cursor = varint::Cursor::new(&section);
    let mut prev_delta: Option<u64> = None;
    for _ in 0..count {
        let len = cursor.u64()?;
        let body_start = cursor.position();
        // Every size read below is bounded by the bytes actually present, never by a claim.
        let remaining = (section.len() - body_start) as u64;
        if len > remaining {
            return Err(DecodeError::BadRecords(format!(
                "record of {len} bytes with only {remaining} left in the batch"
            )));
        }
        let len = len as usize;
        let _attributes = cursor.bytes(1)?;
        let ts_delta = cursor.i64()?;
        let delta = cursor.u64()?;
        if delta > last_delta || prev_delta.is_some_and(|p| delta <= p) {
            return Err(DecodeError::BadRecords(format!(
                "offset delta {delta} out of order"
            )));
        }
        prev_delta = Some(delta);
        let key = nullable(&mut cursor, &section)?;
        let value = nullable(&mut cursor, &section)?;
        let header_count = cursor.u64()?;
        // A header takes at least two bytes (key length, value marker).
        if header_count > len as u64
            || header_count > (section.len() - cursor.position()) as u64 / 2
        {
            return Err(DecodeError::BadRecords(format!(
                "{header_count} headers in a {len}-byte record"
            )));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key_len = cursor.u64()? as usize;
            let key = String::from_utf8(cursor.bytes(key_len)?.to_vec())
                .map_err(|_| DecodeError::BadRecords("header key is not UTF-8".into()))?;
            headers.push(Header {
                key,
                value: nullable(&mut cursor, &section)?,
            });
        }
        if cursor.position() - body_start != len {
            return Err(DecodeError::BadRecords(format!(
                "record length {len} does not match its body"
            )));
        }
        records.push(Record {
            offset: base.plus(delta),
            timestamp_ms: first_ts.wrapping_add(ts_delta),
            key,
            value,
            headers,
        });
    }
    if cursor.position() != section.len() {
        return Err(DecodeError::BadRecords(
            "bytes left over after the last record".into(),
        ));
    }
    Ok(records)
}

fn nullable(
    cursor: &mut varint::Cursor<'_>,
    section: &Bytes,
) -> Result<Option<Bytes>, DecodeError> {
    let len = cursor.i64()?;
    if len < 0 {
        return Ok(None);
    }
    let start = cursor.position();
    cursor.bytes(len as usize)?;
    Ok(Some(section.slice(start..start + len as usize)))
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    read_u64(buf, at) as i64
}

/// Reads the base offset and total length from a batch header without validating the rest; the
/// node uses it to walk a segment.
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

pub fn peek_header(buf: &[u8]) -> Option<(Offset, usize)> {
    if buf.len() < LENGTH_PREFIX_LEN {
        return None;
    }
    Some((
        Offset(read_u64(buf, AT_BASE_OFFSET)),
        read_u32(buf, AT_BATCH_LENGTH) as usize + LENGTH_PREFIX_LEN,
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(compression: Compression, n: usize) -> RecordBatch {
        let mut b = BatchBuilder::new(compression);
        for i in 0..n {
            let key = format!("k{i}");
            b.push(
                1000 + i as i64,
                Some(key.as_bytes()),
                Some(&vec![i as u8; i % 50]),
                &[],
            );
        }
        b.finish()
    }

    #[test]
    fn batches_round_trip_under_every_codec() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let batch = sample(c, 100);
            let parsed =
                RecordBatch::parse(batch.as_bytes().clone(), &DecodeLimits::default()).unwrap();
            let records = parsed.records(1 << 20).unwrap();
            assert_eq!(records.len(), 100);
            assert_eq!(records[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(records[7].timestamp_ms, 1007);
            assert_eq!(parsed.last_offset(), Offset(99));
        }
    }

    #[test]
    fn assigning_a_position_keeps_the_crc_valid() {
        let batch = sample(Compression::Lz4, 3).with_position(Offset(500), LeaderEpoch(7));
        let parsed = RecordBatch::parse(batch.into_bytes(), &DecodeLimits::default()).unwrap();
        assert_eq!(parsed.base_offset(), Offset(500));
        assert_eq!(parsed.leader_epoch(), LeaderEpoch(7));
        assert_eq!(parsed.records(1 << 20).unwrap()[2].offset, Offset(502));
    }

    #[test]
    fn a_flipped_bit_is_a_crc_mismatch() {
        let bytes = sample(Compression::None, 5).into_bytes();
        let mut raw = bytes.to_vec();
        let at = raw.len() - 3;
        raw[at] ^= 0x10;
        let err = RecordBatch::parse(Bytes::from(raw), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::CrcMismatch { .. }), "{err}");
    }

    #[test]
    fn oversized_declared_length_is_rejected_before_allocation() {
        let mut raw = vec![0u8; 12];
        raw[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = total_len(&raw, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }));
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let mut b = BatchBuilder::new(Compression::Zstd);
        b.push(0, None, Some(&vec![0u8; 1 << 20]), &[]);
        let batch = b.finish();
        assert!(batch.size_bytes() < 4096, "zeros compress well");
        let err = batch.records(64 << 10).unwrap_err();
        assert_eq!(err, DecodeError::DecompressedTooLarge { max: 64 << 10 });
    }

    #[test]
    fn provenance_survives_encoding_and_hops_accumulate() {
        let hop = |cluster: &str, base_offset| Hop {
            cluster: cluster.into(),
            topic: "orders".into(),
            partition: 3,
            base_offset,
        };
        let p = Provenance {
            hops: vec![hop("east", 1187)],
        };
        let mut b = BatchBuilder::new(Compression::Lz4).provenance(p.clone());
        b.push(
            5,
            None,
            Some(b"v"),
            &[Header {
                key: "h".into(),
                value: None,
            }],
        );
        let limits = DecodeLimits::default();
        let batch = RecordBatch::parse(b.finish().into_bytes(), &limits).unwrap();
        assert_eq!(batch.provenance(), Some(p));
        assert_eq!(batch.records(1024).unwrap()[0].headers[0].key, "h");
        let moved = batch.with_hop(hop("west", 7)).unwrap();
        let reparsed = RecordBatch::parse(moved.as_bytes().clone(), &limits).unwrap();
        let hops = reparsed.provenance().unwrap();
        assert_eq!(hops.origin().unwrap().cluster, "east");
        assert_eq!(hops.source().unwrap(), &hop("west", 7));
        assert!(hops.includes("east") && hops.includes("west") && !hops.includes("north"));
        assert_eq!(
            reparsed.records(1024).unwrap(),
            batch.records(1024).unwrap()
        );
        let plain = {
            let mut b = BatchBuilder::new(Compression::Zstd);
            b.push(1, Some(b"k"), Some(b"v"), &[]);
            b.finish()
        };
        let first = plain.with_hop(hop("east", 0)).unwrap();
        let first = RecordBatch::parse(first.into_bytes(), &limits).unwrap();
        assert_eq!(first.provenance().unwrap().hops.len(), 1);
        assert_eq!(first.records(1024).unwrap(), plain.records(1024).unwrap());
        let mut long = first;
        for i in 1..HOPS_MAX {
            long = long.with_hop(hop(&format!("c{i}"), 0)).unwrap();
        }
        assert!(long.with_hop(hop("one-too-many", 0)).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(
            records in proptest::collection::vec(
                (any::<i32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))), 1..50),
            codec in 0u16..3,
        ) {
            let compression = Compression::from_code(codec).unwrap();
            let mut b = BatchBuilder::new(compression);
            for (ts, k, v) in &records {
                b.push(i64::from(*ts), k.as_deref(), v.as_deref(), &[]);
            }
            let batch = RecordBatch::parse(b.finish().into_bytes(), &DecodeLimits::default()).unwrap();
            let decoded = batch.records(u32::MAX).unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (r, (ts, k, v))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(r.offset, Offset(i as u64));
                prop_assert_eq!(r.timestamp_ms, i64::from(*ts));
                prop_assert_eq!(r.key.as_deref(), k.as_deref());
                prop_assert_eq!(r.value.as_deref(), v.as_deref());
            }
        }

        /// Offsets at the top of the range: a batch whose offsets would run past Offset::MAX
        /// is refused at parse time, and every one accepted has exact, unwrapped arithmetic.
        #[test]
        fn offsets_at_the_u64_limits_are_refused_or_exact(
            base in prop_oneof![
                (Offset::MAX.0 - (1u64 << 20))..=u64::MAX,
                (u64::MAX - (1u64 << 20))..=u64::MAX,
                Just(Offset::MAX.0),
                Just(u64::MAX),
            ],
            extra in 0u32..2000,
            hop_base in prop_oneof![Just(0u64), (Offset::MAX.0 - 4096)..=u64::MAX],
        ) {
            let mut b = BatchBuilder::new(Compression::None);
            b.push(0, None, Some(b"v"), &[]);
            if extra > 0 {
                b.push_at(extra, 0, None, Some(b"w"), &[]);
            }
            b = b.provenance(Provenance {
                hops: vec![Hop { cluster: "src".into(), topic: "t".into(), partition: 0, base_offset: hop_base }],
            });
            let bytes = b.finish().with_position(Offset(base), LeaderEpoch(0)).into_bytes();
            let span = u64::from(extra) + 1;
            let fits = |o: u64| o.checked_add(span).is_some_and(|end| end <= Offset::MAX.0);
            match RecordBatch::parse(bytes, &DecodeLimits::default()) {
                Ok(batch) => {
                    prop_assert!(fits(base) && fits(hop_base));
                    prop_assert_eq!(batch.next_offset().0, base + span);
                    prop_assert!(batch.next_offset() > batch.base_offset());
                    let records = batch.records(u32::MAX).unwrap();
                    prop_assert_eq!(records.last().unwrap().offset.0, base + span - 1);
                }
                Err(e) => {
                    prop_assert!(!(fits(base) && fits(hop_base)), "refused a batch that fits: {}", e);
                    prop_assert!(matches!(e, DecodeError::OffsetOverflow { .. }), "{}", e);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let limits = DecodeLimits { batch_bytes_max: 1 << 16, batch_bytes_decompressed_max: 1 << 16 };
            if let Ok(batches) = split_batches(Bytes::from(raw), &limits) {
                for b in batches {
                    let _ = b.records(1 << 16);
                    let _ = b.provenance();
                }
            }
        }
    }
}
