//! The five codecs Kafka defines for a batch's records section, each through a well-kept crate:
//! gzip (flate2), snappy (snap; Kafka's xerial framing as well as raw), lz4 frame format
//! (lz4_flex) and zstd.
//!
//! Decompression is always bounded by the caller's `max` bytes and streams into its output, so a
//! batch that expands past it (a decompression bomb) costs at most `max` bytes before it is
//! refused. Formats that state their size up front (zstd's frame content size, snappy's
//! preamble) are checked before anything is decompressed.

use std::io::{Read, Write};

use super::DecodeError;

/// Compression applied to the records section of a batch (attribute bits 0–2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Xerial's snappy stream header, as Kafka's Java clients write it: magic, version 1,
/// compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Xerial's default block: input is compressed 32 KiB at a time.
const XERIAL_BLOCK: usize = 32 << 10;

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Kafka's codec id.
    pub fn code(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Compression::ALL.into_iter().find(|c| c.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses a records section.
    pub(super) fn compress(self, section: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => section.to_vec(),
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(section.len() / 2 + 64),
                    flate2::Compression::fast(),
                );
                enc.write_all(section)
                    .and_then(|_| enc.finish())
                    .unwrap_or_else(|_| unreachable!("gzip into a Vec cannot fail"))
            }
            Compression::Snappy => {
                let mut out = Vec::with_capacity(
                    XERIAL_HEADER_LEN + snap::raw::max_compress_len(section.len()) + 64,
                );
                out.extend_from_slice(&XERIAL_MAGIC);
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                let mut encoder = snap::raw::Encoder::new();
                for block in section.chunks(XERIAL_BLOCK) {
                    let at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    let start = out.len();
                    out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                    let n = encoder
                        .compress(block, &mut out[start..])
                        .unwrap_or_else(|_| unreachable!("snappy into a buffer of its bound"));
                    out.truncate(start + n);
                    out[at..at + 4].copy_from_slice(&(n as i32).to_be_bytes());
                }
                out
            }
            Compression::Lz4 => {
                // Independent 64 KiB blocks without a content checksum: what Kafka's Java
                // clients write and read.
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                    info,
                    Vec::with_capacity(section.len() / 2 + 64),
                );
                enc.write_all(section)
                    .map_err(|e| e.to_string())
                    .and_then(|_| enc.finish().map_err(|e| e.to_string()))
                    .unwrap_or_else(|_| unreachable!("lz4 into a Vec cannot fail"))
            }
            Compression::Zstd => zstd::bulk::compress(section, 1)
                .unwrap_or_else(|_| unreachable!("zstd compression into a Vec cannot fail")),
        }
    }

    /// Refuses, from headers alone, a section whose stated size is past `max`: zstd frames
    /// that declare their content size. Other codecs state nothing the node could trust
    /// without decompressing, so they are bounded when decompressed.
    pub(super) fn check_declared_size(self, raw: &[u8], max: u32) -> Result<(), DecodeError> {
        if self == Compression::Zstd {
            if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(raw) {
                if n > u64::from(max) {
                    return Err(DecodeError::DecompressedTooLarge { max });
                }
            }
        }
        Ok(())
    }

    /// Decompresses a records section into at most `max` bytes.
    pub(super) fn decompress(self, raw: &[u8], max: u32) -> Result<Vec<u8>, DecodeError> {
        self.check_declared_size(raw, max)?;
        match self {
            Compression::None => {
                if raw.len() > max as usize {
                    return Err(DecodeError::DecompressedTooLarge { max });
                }
                Ok(raw.to_vec())
            }
            Compression::Gzip => bounded(flate2::read::MultiGzDecoder::new(raw), raw.len(), max),
            Compression::Snappy => snappy(raw, max),
            Compression::Lz4 => bounded(lz4_flex::frame::FrameDecoder::new(raw), raw.len(), max),
            Compression::Zstd => {
                let dec = zstd::stream::read::Decoder::with_buffer(raw)
                    .map_err(|e| DecodeError::Decompression(format!("zstd: {e}")))?;
                bounded(dec, raw.len(), max)
            }
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown compression {s:?}; use none, gzip, snappy, lz4 or zstd")
            })
    }
}

/// Reads a decoder to its end, refusing output past `max` bytes.
fn bounded(reader: impl Read, raw_len: usize, max: u32) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(raw_len.saturating_mul(4).min(max as usize).min(1 << 20));
    reader
        .take(u64::from(max) + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Decompression(e.to_string()))?;
    if out.len() > max as usize {
        return Err(DecodeError::DecompressedTooLarge { max });
    }
    Ok(out)
}

/// Snappy as Kafka clients send it: xerial-framed (Java) or one raw block (librdkafka may).
/// Every block's decompressed size is read from its preamble and summed before any is
/// decompressed.
fn snappy(raw: &[u8], max: u32) -> Result<Vec<u8>, DecodeError> {
    let bad = |what: String| DecodeError::Decompression(format!("snappy: {what}"));
    let mut blocks = Vec::new();
    if raw.len() >= XERIAL_HEADER_LEN && raw[..8] == XERIAL_MAGIC {
        let mut at = XERIAL_HEADER_LEN;
        while at < raw.len() {
            let len = raw
                .get(at..at + 4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("truncated block length".into()))?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|len| (at + 4).checked_add(len))
                .filter(|end| *end <= raw.len())
                .ok_or_else(|| bad(format!("block of {len} bytes runs past the section")))?;
            blocks.push(&raw[at + 4..end]);
            at = end;
        }
    } else {
        blocks.push(raw);
    }
    let mut total = 0usize;
    for block in &blocks {
        total =
            total.saturating_add(snap::raw::decompress_len(block).map_err(|e| bad(e.to_string()))?);
        if total > max as usize {
            return Err(DecodeError::DecompressedTooLarge { max });
        }
    }
    let mut out = vec![0u8; total];
    let mut decoder = snap::raw::Decoder::new();
    let mut at = 0;
    for block in blocks {
        at += decoder
            .decompress(block, &mut out[at..])
            .map_err(|e| bad(e.to_string()))?;
    }
    out.truncate(at);
    Ok(out)
}
