//! Builds a batch record by record, as a Kafka producer does. Offsets and the leader epoch are
//! left for the node to assign.

use bytes::Bytes;

use super::{
    records, Compression, Header, RecordBatch, AT_ATTRIBUTES, AT_BATCH_LENGTH, AT_CRC, HEADER_LEN,
    LENGTH_PREFIX_LEN, MAGIC,
};

#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
    /// The records section, written behind room for the header.
    records: Vec<u8>,
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    last_offset_delta: u32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
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
        }
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
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
        let (body, total) = records::encoded_len(offset_delta, ts_delta, key, value, headers);
        self.records.reserve(total);
        records::put(
            &mut self.records,
            body,
            offset_delta,
            ts_delta,
            key,
            value,
            headers,
        );
    }

    /// Encodes the batch. Panics if no record was pushed: an empty batch has no offsets.
    pub fn finish(mut self) -> RecordBatch {
        assert!(self.count > 0, "a batch needs at least one record");
        let mut buf = if self.compression == Compression::None {
            // The records were written behind a reserved header, so the batch is finished in
            // place without copying them.
            std::mem::take(&mut self.records)
        } else {
            let compressed = self.compression.compress(&self.records[HEADER_LEN..]);
            let mut buf = Vec::with_capacity(HEADER_LEN + compressed.len());
            buf.resize(HEADER_LEN, 0);
            buf.extend_from_slice(&compressed);
            buf
        };
        let total = buf.len();
        let mut header = [0u8; HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            header[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&0i64.to_be_bytes()); // base offset: the node's
        put(&((total - LENGTH_PREFIX_LEN) as u32).to_be_bytes());
        put(&(-1i32).to_be_bytes()); // partition leader epoch: the node's
        put(&[MAGIC]);
        put(&[0; 4]); // CRC, below
        put(&self.compression.code().to_be_bytes());
        put(&self.last_offset_delta.to_be_bytes());
        put(&self.first_timestamp_ms.to_be_bytes());
        put(&self.max_timestamp_ms.to_be_bytes());
        put(&self.producer_id.to_be_bytes());
        put(&self.producer_epoch.to_be_bytes());
        put(&self.base_sequence.to_be_bytes());
        put(&self.count.to_be_bytes());
        buf[..HEADER_LEN].copy_from_slice(&header);
        let crc = crc32c::crc32c(&buf[AT_ATTRIBUTES..]);
        buf[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        debug_assert_eq!(
            u32::from_be_bytes(
                buf[AT_BATCH_LENGTH..AT_BATCH_LENGTH + 4]
                    .try_into()
                    .unwrap_or_default()
            ) as usize,
            total - LENGTH_PREFIX_LEN
        );
        RecordBatch {
            bytes: Bytes::from(buf),
        }
    }
}
