//! LEB128 varints and zigzag signed varints for the records section of a batch.
//!
//! Reads are bounded: a varint longer than ten bytes, or a length running past the buffer, is a
//! decode error, never a panic.

use crate::batch::DecodeError;

/// Longest encoding of a 64-bit varint.
const VARINT_LEN_MAX: usize = 10;

pub fn put_u64(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Bytes `put_u64` writes for `value`.
pub fn len_u64(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes `put_i64` writes for `value`.
pub fn len_i64(value: i64) -> usize {
    len_u64(((value << 1) ^ (value >> 63)) as u64)
}

pub fn put_i64(buf: &mut Vec<u8>, value: i64) {
    put_u64(buf, ((value << 1) ^ (value >> 63)) as u64);
}

/// A read position in a byte slice.
pub struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, at: 0 }
    }

    pub fn position(&self) -> usize {
        self.at
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..VARINT_LEN_MAX {
            let byte = *self
                .buf
                .get(self.at)
                .ok_or_else(|| truncated(self.at + 1, self.buf.len()))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadRecords(
            "varint longer than 10 bytes".into(),
        ))
    }

    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let raw = self.u64()?;
        Ok((raw >> 1) as i64 ^ -((raw & 1) as i64))
    }

    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.buf.len());
        let end = end.ok_or_else(|| truncated(self.at.saturating_add(len), self.buf.len()))?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }
}

fn truncated(needed: usize, available: usize) -> DecodeError {
    DecodeError::Truncated { needed, available }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn varints_round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut buf = Vec::new();
            put_u64(&mut buf, u);
            put_i64(&mut buf, i);
            let mut c = Cursor::new(&buf);
            prop_assert_eq!(c.u64().unwrap(), u);
            prop_assert_eq!(c.i64().unwrap(), i);
            prop_assert_eq!(c.position(), buf.len());
            prop_assert_eq!(len_u64(u) + len_i64(i), buf.len());
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let buf = [0xffu8; 11];
        assert!(Cursor::new(&buf).u64().is_err());
        assert!(Cursor::new(&[0x80]).u64().is_err());
    }
}
