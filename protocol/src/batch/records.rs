//! Records inside a batch, as Kafka lays them out: each a zigzag varint length, an attribute
//! byte, zigzag varints for the timestamp and offset deltas, key and value (length -1 for
//! null) and headers. Every size read is bounded by the bytes present, never by a claim.

use bytes::Bytes;

use super::{DecodeError, RecordBatch};
use crate::ids::Offset;
use crate::varint;

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

/// Bytes one record takes in a records section.
pub(super) fn encoded_len(
    offset_delta: u32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> (usize, usize) {
    let mut body = 1
        + varint::len_i64(timestamp_delta)
        + varint::len_i64(i64::from(offset_delta))
        + nullable_len(key)
        + nullable_len(value)
        + varint::len_i64(headers.len() as i64);
    for h in headers {
        body +=
            varint::len_i64(h.key.len() as i64) + h.key.len() + nullable_len(h.value.as_deref());
    }
    (body, varint::len_i64(body as i64) + body)
}

/// Writes one record (its body is `body_len` bytes, from [`encoded_len`]).
pub(super) fn put(
    out: &mut Vec<u8>,
    body_len: usize,
    offset_delta: u32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) {
    varint::put_i64(out, body_len as i64);
    out.push(0u8);
    varint::put_i64(out, timestamp_delta);
    varint::put_i64(out, i64::from(offset_delta));
    put_nullable(out, key);
    put_nullable(out, value);
    varint::put_i64(out, headers.len() as i64);
    for h in headers {
        varint::put_i64(out, h.key.len() as i64);
        out.extend_from_slice(h.key.as_bytes());
        put_nullable(out, h.value.as_deref());
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

/// Decodes the records of `batch` from its (decompressed) records section.
pub(super) fn decode(batch: &RecordBatch, section: Bytes) -> Result<Vec<Record>, DecodeError> {
    let count = batch.record_count();
    let base = batch.base_offset();
    let first_ts = batch.first_timestamp_ms();
    let append_time = batch.log_append_time().then(|| batch.max_timestamp_ms());
    let last_delta = u64::from(batch.last_offset_delta());
    let bad = |what: String| DecodeError::BadRecords(what);
    let mut records = Vec::with_capacity(count as usize);
    let mut cursor = varint::Cursor::new(&section);
    let mut prev_delta: Option<u64> = None;
    for _ in 0..count {
        let len = cursor.i64()?;
        let body_start = cursor.position();
        let remaining = (section.len() - body_start) as u64;
        let len = u64::try_from(len)
            .ok()
            .filter(|len| *len <= remaining)
            .ok_or_else(|| {
                bad(format!(
                    "record of {len} bytes with {remaining} left in the batch"
                ))
            })? as usize;
        let _attributes = cursor.bytes(1)?;
        let ts_delta = cursor.i64()?;
        let delta =
            u64::try_from(cursor.i64()?).map_err(|_| bad("negative offset delta".into()))?;
        if delta > last_delta || prev_delta.is_some_and(|p| delta <= p) {
            return Err(bad(format!("offset delta {delta} out of order")));
        }
        prev_delta = Some(delta);
        let key = nullable(&mut cursor, &section)?;
        let value = nullable(&mut cursor, &section)?;
        let header_count = cursor.i64()?;
        // A header takes at least two bytes (key length, value marker).
        let header_count = u64::try_from(header_count)
            .ok()
            .filter(|n| *n <= len as u64 && *n <= (section.len() - cursor.position()) as u64 / 2)
            .ok_or_else(|| bad(format!("{header_count} headers in a {len}-byte record")))?;
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key_len = usize::try_from(cursor.i64()?)
                .map_err(|_| bad("header key of negative length".into()))?;
            let key = String::from_utf8(cursor.bytes(key_len)?.to_vec())
                .map_err(|_| bad("header key is not UTF-8".into()))?;
            headers.push(Header {
                key,
                value: nullable(&mut cursor, &section)?,
            });
        }
        if cursor.position() - body_start != len {
            return Err(bad(format!("record length {len} does not match its body")));
        }
        records.push(Record {
            offset: base.plus(delta),
            timestamp_ms: append_time.unwrap_or_else(|| first_ts.wrapping_add(ts_delta)),
            key,
            value,
            headers,
        });
    }
    if cursor.position() != section.len() {
        return Err(bad("bytes left over after the last record".into()));
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
    cursor.bytes(usize::try_from(len).unwrap_or(usize::MAX))?;
    Ok(Some(section.slice(start..start + len as usize)))
}
