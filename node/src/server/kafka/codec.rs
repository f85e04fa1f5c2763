//! Kafka framing: a request frame is a big-endian i32 size, a request header (whose version
//! depends on the API and its version) and the body; a response is a size, a header carrying
//! the correlation id, and the body. Bodies go through the `kafka-protocol` crate.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Why a connection is closed instead of answered (Kafka closes on what it cannot parse).
#[derive(Debug, thiserror::Error)]
pub(super) enum Close {
    #[error("request of {size} bytes is over limits.frame_bytes_max ({max})")]
    TooLarge { size: i64, max: u32 },
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} version {version} is not served (this node serves {min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("{api:?}: Kafka transactions are not supported by Strait; use an idempotent producer (enable.idempotence) without transactional.id")]
    Transactions { api: ApiKey },
    #[error("{api:?} is not served by this node")]
    UnservedApi { api: ApiKey },
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("cannot encode the {api:?} answer: {reason}")]
    Encode { api: ApiKey, reason: String },
}

/// A request's header, parsed.
pub(super) struct Header {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

/// Splits a request frame (without its size) into header and body.
pub(super) fn parse_header(mut frame: Bytes) -> Result<(Header, Bytes), Close> {
    if frame.len() < 8 {
        return Err(Close::Malformed {
            what: "request header".into(),
            reason: format!("{} bytes, at least 8 needed", frame.len()),
        });
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api = ApiKey::try_from(key).map_err(|_| Close::UnknownApi(key))?;
    // Beyond the crate's versions the header layout is unknown; ApiVersions is answered anyway
    // (from the fixed v0 layout's first fields), as Kafka does, so clients can downgrade.
    let valid = api.valid_versions();
    let header_version = if version > valid.max || version < valid.min {
        if api == ApiKey::ApiVersions {
            1
        } else {
            let (min, max) = super::versions::range(api).unwrap_or((valid.min, valid.max));
            return Err(Close::UnsupportedVersion {
                api,
                version,
                min,
                max,
            });
        }
    } else {
        api.request_header_version(version)
    };
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| Close::Malformed {
            what: format!("{api:?} request header"),
            reason: e.to_string(),
        })?;
    Ok((
        Header {
            api,
            version,
            correlation_id: header.correlation_id,
            client_id: header
                .client_id
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
        },
        frame,
    ))
}

/// Decodes a request body of type `R` at the header's version.
pub(super) fn decode<R: Decodable>(header: &Header, body: &mut Bytes) -> Result<R, Close> {
    R::decode(body, header.version).map_err(|e| Close::Malformed {
        what: format!("{:?} v{} request", header.api, header.version),
        reason: e.to_string(),
    })
}

/// Encodes a response frame (size, header, body) for `header`'s request. ApiVersions answers
/// always carry a v0 header, so a client can read them before it knows what we speak.
pub(super) fn encode<R: Encodable>(
    header: &Header,
    version: i16,
    body: &R,
) -> Result<BytesMut, Close> {
    let header_version = if header.api == ApiKey::ApiVersions {
        0
    } else {
        header.api.response_header_version(version)
    };
    let fail = |e: anyhow::Error| Close::Encode {
        api: header.api,
        reason: e.to_string(),
    };
    let size = body.compute_size(version).map_err(fail)?;
    let mut out = BytesMut::with_capacity(4 + 8 + size);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut out, header_version)
        .map_err(fail)?;
    body.encode(&mut out, version).map_err(fail)?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}
