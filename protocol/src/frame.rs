//! Frames: how one message and its raw payload sit on a stream.
//!
//! `[header length: u32 LE][payload length: u32 LE][header: postcard][payload: raw bytes]`
//!
//! The eight-byte prefix is checked against the limits before anything is allocated. The payload
//! carries record batches untouched, so no batch is ever re-encoded on its way through.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 8;
/// Largest postcard header accepted; headers are small, payloads carry the bulk.
pub const HEADER_BYTES_MAX: u32 = 1 << 20;

/// Bounds applied to frames read from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest header plus payload.
    pub frame_bytes_max: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            frame_bytes_max: 64 << 20,
        }
    }
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the maximum of {max}; send less per request or raise frame_bytes_max")]
    TooLarge { size: u64, max: u32 },
    #[error("frame header of {size} bytes exceeds the maximum of {HEADER_BYTES_MAX}")]
    HeaderTooLarge { size: u32 },
    #[error("frame header is not a valid message: {0}")]
    BadHeader(String),
    #[error("frame could not be encoded: {0}")]
    Encode(String),
}

/// The two lengths a prefix announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLengths {
    pub header: u32,
    pub payload: u32,
}

impl FrameLengths {
    pub fn total(&self) -> usize {
        self.header as usize + self.payload as usize
    }
}

/// Reads and checks a prefix.
pub fn decode_prefix(
    prefix: [u8; PREFIX_LEN],
    limits: &FrameLimits,
) -> Result<FrameLengths, FrameError> {
    let header = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let payload = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if header > HEADER_BYTES_MAX {
        return Err(FrameError::HeaderTooLarge { size: header });
    }
    let total = u64::from(header) + u64::from(payload);
    if total > u64::from(limits.frame_bytes_max) {
        return Err(FrameError::TooLarge {
            size: total,
            max: limits.frame_bytes_max,
        });
    }
    Ok(FrameLengths { header, payload })
}

/// Decodes the header of a frame whose body (header then payload) has been read.
pub fn decode_header<T: DeserializeOwned>(header: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(header).map_err(|e| FrameError::BadHeader(e.to_string()))?;
    // A header with bytes left over is not the message it starts like.
    if !rest.is_empty() {
        return Err(FrameError::BadHeader(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Encodes the prefix and header of a frame; the payload chunks follow it unchanged.
pub fn encode<T: Serialize>(message: &T, payload_len: usize) -> Result<Bytes, FrameError> {
    let header = postcard::to_allocvec(message).map_err(|e| FrameError::Encode(e.to_string()))?;
    let payload_len =
        u32::try_from(payload_len).map_err(|_| FrameError::Encode("payload over 4 GiB".into()))?;
    let mut buf = BytesMut::with_capacity(PREFIX_LEN + header.len());
    buf.put_u32_le(header.len() as u32);
    buf.put_u32_le(payload_len);
    buf.extend_from_slice(&header);
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::message::{Acks, Request};

    #[test]
    fn frames_round_trip_and_oversized_prefixes_are_refused() {
        let req = Request::Produce {
            topic: "orders".into(),
            partition: 3,
            acks: Acks::All,
        };
        let frame = encode(&req, 100).unwrap();
        let prefix: [u8; 8] = frame[..8].try_into().unwrap();
        let lengths = decode_prefix(prefix, &FrameLimits::default()).unwrap();
        assert_eq!(lengths.payload, 100);
        let back: Request = decode_header(&frame[8..8 + lengths.header as usize]).unwrap();
        assert_eq!(back, req);
        let mut huge = [0u8; 8];
        huge[4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_prefix(huge, &FrameLimits::default()),
            Err(FrameError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_headers_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_header::<Request>(&raw);
            let _ = decode_header::<crate::message::Response>(&raw);
        }
    }
}
