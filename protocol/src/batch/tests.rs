use bytes::Bytes;
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
            &[Header {
                key: "h".into(),
                value: (i % 3 != 0).then(|| Bytes::from(format!("v{i}"))),
            }],
        );
    }
    b.finish()
}

#[test]
fn batches_round_trip_under_every_codec() {
    for c in Compression::ALL {
        let batch = sample(c, 100);
        let parsed =
            RecordBatch::parse(batch.as_bytes().clone(), &DecodeLimits::default()).unwrap();
        assert_eq!(parsed.compression(), c);
        let records = parsed.records(1 << 20).unwrap();
        assert_eq!(records.len(), 100, "{c}");
        assert_eq!(records[7].key.as_deref(), Some(&b"k7"[..]));
        assert_eq!(records[7].timestamp_ms, 1007);
        assert_eq!(records[7].headers[0].value.as_deref(), Some(&b"v7"[..]));
        assert_eq!(records[6].headers[0].value, None);
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
    raw[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = total_len(&raw, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { .. }));
}

/// Rewrites the attributes of a finished batch (and its CRC), as a foreign producer might.
fn with_attributes(batch: &RecordBatch, attributes: u16) -> Bytes {
    let mut raw = batch.as_bytes().to_vec();
    raw[AT_ATTRIBUTES..AT_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&raw[AT_ATTRIBUTES..]);
    raw[AT_CRC..AT_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(raw)
}

#[test]
fn transactional_and_control_batches_are_refused_by_name() {
    let batch = sample(Compression::None, 2);
    for bit in [ATTR_TRANSACTIONAL, ATTR_CONTROL] {
        let err =
            RecordBatch::parse(with_attributes(&batch, bit), &DecodeLimits::default()).unwrap_err();
        assert_eq!(err, DecodeError::Transactional);
        assert!(err.to_string().contains("transactional id"), "{err}");
    }
    let err =
        RecordBatch::parse(with_attributes(&batch, 1 << 7), &DecodeLimits::default()).unwrap_err();
    assert_eq!(err, DecodeError::BadAttributes(1 << 7));
    let err = RecordBatch::parse(with_attributes(&batch, 5), &DecodeLimits::default()).unwrap_err();
    assert_eq!(err, DecodeError::BadAttributes(5));
}

/// A megabyte of zeros compresses to almost nothing under every codec; decompression stops at
/// the bound and names it, and only zstd's declared size is refused before decompressing.
#[test]
fn every_codec_stops_a_bomb_at_the_bound() {
    for c in Compression::ALL
        .into_iter()
        .filter(|c| *c != Compression::None)
    {
        let mut b = BatchBuilder::new(c);
        b.push(0, None, Some(&vec![0u8; 1 << 20]), &[]);
        let batch = b.finish();
        assert!(batch.size_bytes() < 64 << 10, "{c}: zeros compress well");
        let err = batch.records(64 << 10).unwrap_err();
        assert_eq!(
            err,
            DecodeError::DecompressedTooLarge { max: 64 << 10 },
            "{c}"
        );
        assert!(batch.records(2 << 20).is_ok(), "{c}");
        let declared = batch.check_decompressed_size(64 << 10);
        if c == Compression::Zstd {
            assert_eq!(
                declared,
                Err(DecodeError::DecompressedTooLarge { max: 64 << 10 })
            );
        } else {
            assert_eq!(declared, Ok(()), "{c}: nothing is decompressed on produce");
        }
    }
}

#[test]
fn raw_snappy_is_read_as_well_as_xerial_framing() {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..20 {
        b.push(i, Some(b"key"), Some(&[b'x'; 100]), &[]);
    }
    let plain = b.finish();
    let section = &plain.as_bytes()[HEADER_LEN..];
    let raw = snap::raw::Encoder::new().compress_vec(section).unwrap();
    let mut bytes = plain.as_bytes()[..HEADER_LEN].to_vec();
    bytes.extend_from_slice(&raw);
    let len = (bytes.len() - LENGTH_PREFIX_LEN) as u32;
    bytes[AT_BATCH_LENGTH..AT_BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    let snappy = with_attributes(
        &RecordBatch {
            bytes: Bytes::from(bytes),
        },
        Compression::Snappy.code(),
    );
    let batch = RecordBatch::parse(snappy, &DecodeLimits::default()).unwrap();
    assert_eq!(
        batch.records(1 << 20).unwrap(),
        plain.records(1 << 20).unwrap()
    );
    let framed = sample(Compression::Snappy, 3);
    assert_eq!(
        &framed.as_bytes()[HEADER_LEN..HEADER_LEN + 8],
        b"\x82SNAPPY\0"
    );
}

#[test]
fn log_append_time_gives_every_record_the_batch_time() {
    let batch = sample(Compression::None, 3);
    let stamped = RecordBatch::parse(
        with_attributes(&batch, ATTR_LOG_APPEND_TIME),
        &DecodeLimits::default(),
    )
    .unwrap();
    let records = stamped.records(1 << 20).unwrap();
    assert!(records
        .iter()
        .all(|r| r.timestamp_ms == batch.max_timestamp_ms()));
}

proptest! {
    #[test]
    fn records_round_trip(
        records in proptest::collection::vec(
            (any::<i32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))), 1..50),
        codec in 0u16..5,
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
    ) {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(0, None, Some(b"v"), &[]);
        if extra > 0 {
            b.push_at(extra, 0, None, Some(b"w"), &[]);
        }
        let bytes = b.finish().with_position(Offset(base), LeaderEpoch(0)).into_bytes();
        let span = u64::from(extra) + 1;
        let fits = |o: u64| o.checked_add(span).is_some_and(|end| end <= Offset::MAX.0);
        match RecordBatch::parse(bytes, &DecodeLimits::default()) {
            Ok(batch) => {
                prop_assert!(fits(base));
                prop_assert_eq!(batch.next_offset().0, base + span);
                prop_assert!(batch.next_offset() > batch.base_offset());
                let records = batch.records(u32::MAX).unwrap();
                prop_assert_eq!(records.last().unwrap().offset.0, base + span - 1);
            }
            Err(e) => {
                prop_assert!(!fits(base), "refused a batch that fits: {}", e);
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
            }
        }
    }
}
