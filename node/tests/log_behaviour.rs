//! The partition log against a simple in-memory model, and against damaged files.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use strait_node::storage::compaction;
use strait_node::storage::{LogConfig, LogError, PartitionLog};
use strait_protocol::batch::{split_batches, DecodeLimits};
use strait_protocol::{BatchBuilder, Compression, Offset, RecordBatch};

fn batch_of(values: &[(Option<String>, Option<Vec<u8>>)], ts: i64) -> RecordBatch {
    let mut b = BatchBuilder::new(Compression::None);
    for (k, v) in values {
        b.push(ts, k.as_deref().map(str::as_bytes), v.as_deref(), &[]);
    }
    b.finish()
}

fn simple_batch(tag: u64, records: usize) -> RecordBatch {
    let values: Vec<_> = (0..records)
        .map(|i| {
            (
                Some(format!("k{}", i % 3)),
                Some(format!("{tag}-{i}").into_bytes()),
            )
        })
        .collect();
    batch_of(&values, 1_000 + tag as i64)
}

/// A batch of `records` records of 100 bytes each.
fn padded_batch(tag: u64, records: usize) -> RecordBatch {
    let values: Vec<_> = (0..records)
        .map(|i| {
            (
                None,
                Some(format!("{tag}-{i}-{}", "x".repeat(90)).into_bytes()),
            )
        })
        .collect();
    batch_of(&values, 1_000 + tag as i64)
}

fn config(settings: &[&str]) -> LogConfig {
    LogConfig::default()
        .with_settings(settings.iter().copied())
        .unwrap()
}

/// Every record from `from` to the high watermark, as (offset, value).
fn read_all(log: &PartitionLog, from: Offset) -> Vec<(u64, Option<Bytes>)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let read = log.read(at, 64 << 10).unwrap();
        if read.batches.is_empty() {
            break;
        }
        for b in split_batches(read.batches, &DecodeLimits::default()).unwrap() {
            for r in b.records(1 << 26).unwrap() {
                if r.offset >= at {
                    out.push((r.offset.0, r.value));
                }
            }
            at = b.next_offset();
        }
    }
    out
}

/// The key `simple_batch` gave the record whose value is `v` ("{tag}-{i}" has key "k{i % 3}").
fn key_of(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(v);
    let i: usize = text
        .rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    format!("k{}", i % 3)
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    AppendAt(u8, u8),
    Read(u16),
    Retain,
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..20).prop_map(Op::Append),
        1 => (1u8..5, 0u8..4).prop_map(|(n, gap)| Op::AppendAt(n, gap)),
        3 => any::<u16>().prop_map(Op::Read),
        1 => Just(Op::Retain),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn log_agrees_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&["segment.bytes=4096", "retention.bytes=12000", "retention.ms=-1", "cleanup.policy=compact,delete"]);
        let (mut log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
        // Model: every record ever appended, by offset, and the expected log start.
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut next = 0u64;
        let mut tag = 0u64;
        for op in ops {
            match op {
                Op::Append(n) | Op::AppendAt(n, _) => {
                    tag += 1;
                    let b = simple_batch(tag, n as usize);
                    let appended = if let Op::AppendAt(_, gap) = op {
                        let at = Offset(next + u64::from(gap));
                        log.append_at(b.with_position(at, Default::default()), 0).unwrap()
                    } else {
                        log.append(b, 0).unwrap()
                    };
                    for i in 0..u64::from(n) {
                        model.push((appended.base_offset.0 + i, format!("{tag}-{i}").into_bytes()));
                    }
                    next = appended.last_offset.0 + 1;
                    prop_assert_eq!(log.log_end(), Offset(next));
                }
                Op::Read(at) => {
                    let start = log.log_start().0;
                    let from = start + u64::from(at) % (next - start + 1);
                    let got = read_all(&log, Offset(from));
                    let want: Vec<_> = model.iter().filter(|(o, _)| *o >= from)
                        .map(|(o, v)| (*o, Some(Bytes::from(v.clone())))).collect();
                    prop_assert_eq!(got, want);
                }
                Op::Retain => {
                    log.apply_retention(0).unwrap();
                    let start = log.log_start().0;
                    let stats = log.stats();
                    // Retention leaves at most the limit plus one segment (it deletes whole ones).
                    prop_assert!(stats.segments == 1 || stats.size_bytes < 12000 + 4096 + 1024, "{:?}", stats);
                    model.retain(|(o, _)| *o >= start);
                    if start > 0 {
                        let below = log.read(Offset(start - 1), 1024);
                        let is_out_of_range = matches!(below, Err(LogError::OffsetOutOfRange { .. }));
                        prop_assert!(is_out_of_range);
                    }
                }
                Op::Compact => {
                    compaction::clean(&log, 0).unwrap();
                    // Sealed records survive only if nothing later has their key.
                    let sealed_below = log.active_segment_base().0;
                    let mut latest = std::collections::HashMap::new();
                    for (o, v) in &model {
                        latest.insert(key_of(v), *o);
                    }
                    model.retain(|(o, v)| *o >= sealed_below || latest.get(&key_of(v)) == Some(o));
                }
                Op::Reopen => {
                    log.close(0).unwrap();
                    drop(log);
                    let (reopened, report) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
                    prop_assert_eq!(report.segments_scanned, 1, "only the active segment is scanned after a clean close");
                    prop_assert!(report.truncated.is_none());
                    log = reopened;
                    prop_assert_eq!(log.log_end(), Offset(next));
                }
            }
        }
        let start = log.log_start();
        let want: Vec<_> = model.iter().map(|(o, v)| (*o, Some(Bytes::from(v.clone())))).collect();
        prop_assert_eq!(read_all(&log, start), want);
    }

    #[test]
    fn a_cut_anywhere_recovers_to_a_prefix_keeping_every_durable_batch(
        acked in 1usize..12, unacked in 0usize..6, cut_seed in any::<u64>(), below in any::<bool>()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let durable_cfg = config(&["flush=always"]);
        let (log, _) = PartitionLog::open(dir.path(), "t/0", durable_cfg.clone(), 0).unwrap();
        for tag in 0..acked {
            log.append(simple_batch(tag as u64, 1 + tag % 4), 0).unwrap();
        }
        let durable_end = log.log_end();
        drop(log);
        let path = dir.path().join(format!("{:020}.log", 0));
        let durable_size = fs::metadata(&path).unwrap().len();
        // Bytes written after the last fsync: the only ones a power cut may take.
        let (log, _) = PartitionLog::open(dir.path(), "t/0", config(&["flush=os"]), 0).unwrap();
        for tag in 0..unacked {
            log.append(simple_batch(100 + tag as u64, 3), 0).unwrap();
        }
        drop(log);
        let full = fs::metadata(&path).unwrap().len();
        let cut = if below || full == durable_size {
            cut_seed % (durable_size + 1)
        } else {
            durable_size + cut_seed % (full - durable_size + 1)
        };
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let (log, _) = PartitionLog::open(dir.path(), "t/0", durable_cfg, 0).unwrap();
        let records = read_all(&log, Offset(0));
        let offsets: Vec<u64> = records.iter().map(|r| r.0).collect();
        prop_assert_eq!(offsets.clone(), (0..offsets.len() as u64).collect::<Vec<_>>(), "a prefix without holes");
        if cut >= durable_size {
            prop_assert!(log.log_end() >= durable_end, "every acknowledged batch survives");
        }
        // The recovered log accepts appends right after its prefix.
        let end = log.log_end();
        let appended = log.append(simple_batch(999, 1), 0).unwrap();
        prop_assert_eq!(appended.base_offset, end);
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_an_error_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["segment.bytes=4096"]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    for tag in 0..40 {
        log.append(padded_batch(tag, 5), 0).unwrap();
    }
    assert!(log.stats().segments > 2);
    let path = dir.path().join(format!("{:020}.log", 0));
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 300).unwrap();
    file.write_all_at(&[byte[0] ^ 0x04], 300).unwrap();
    let err = (0..10)
        .find_map(|o| log.read(Offset(o), 1 << 20).err())
        .expect("the corruption is noticed");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
}

#[test]
fn missing_truncated_and_garbage_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["segment.bytes=4096", "index.interval.bytes=100"]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    for tag in 0..60 {
        log.append(padded_batch(tag, 3), 0).unwrap();
    }
    let want = read_all(&log, Offset(0));
    log.close(0).unwrap();
    drop(log);
    let mut indexes: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 3);
    fs::remove_file(&indexes[0]).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&indexes[1])
        .unwrap();
    f.set_len(f.metadata().unwrap().len() - 3).unwrap();
    fs::write(&indexes[2], [0xffu8; 16]).unwrap();
    let (log, report) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    assert!(report.indexes_rebuilt >= 2, "{report:?}");
    assert_eq!(read_all(&log, Offset(0)), want);
    for o in [0u64, 17, 95, 150] {
        let first = read_all(&log, Offset(o));
        assert_eq!(first.first().map(|r| r.0), Some(o));
    }
}

#[test]
fn a_zero_length_segment_file_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    fs::write(dir.path().join(format!("{:020}.log", 0)), b"").unwrap();
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    assert_eq!(log.log_end(), Offset(0));
    log.append(simple_batch(1, 2), 0).unwrap();
    drop(log);
    // An empty trailing segment, as a crash right after a roll leaves it.
    fs::write(dir.path().join(format!("{:020}.log", 2)), b"").unwrap();
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    assert_eq!(log.log_end(), Offset(2));
    assert_eq!(
        log.append(simple_batch(2, 1), 0).unwrap().base_offset,
        Offset(2)
    );
    assert_eq!(read_all(&log, Offset(0)).len(), 3);
}

#[test]
fn reads_by_timestamp_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) =
        PartitionLog::open(dir.path(), "t/0", config(&["segment.bytes=4096"]), 0).unwrap();
    for tag in 0..50u64 {
        let values = vec![(None, Some(vec![1u8; 100])), (None, Some(vec![2u8; 100]))];
        log.append(batch_of(&values, 10_000 + tag as i64 * 10), 0)
            .unwrap();
    }
    assert_eq!(
        log.offset_for_timestamp(10_000).unwrap(),
        Some((Offset(0), 10_000))
    );
    assert_eq!(
        log.offset_for_timestamp(10_205).unwrap(),
        Some((Offset(42), 10_210))
    );
    assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
}

#[test]
fn retention_by_time_deletes_old_segments_and_reports_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["segment.bytes=4096", "retention.ms=1000"]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    for tag in 0..30 {
        log.append(simple_batch(tag, 10), 0).unwrap();
    }
    // Timestamps are ~1000..1030; at time 5000 every sealed segment is past retention.
    let deleted = log.apply_retention(5_000).unwrap();
    assert!(!deleted.is_empty());
    let start = log.log_start();
    assert!(start > Offset(0));
    match log.read(Offset(0), 1024) {
        Err(LogError::OffsetOutOfRange { start: s, end, .. }) => {
            assert_eq!(s, start);
            assert_eq!(end, Offset(300));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert_eq!(log.stats().segments, 1, "only the active segment is left");
}

#[test]
fn compaction_keeps_exactly_the_latest_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[
        "segment.bytes=1048576",
        "cleanup.policy=compact",
        "delete.retention.ms=1000",
    ]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    const KEYS: u64 = 10_000;
    const RECORDS: u64 = 1_000_000;
    let mut latest = std::collections::BTreeMap::new();
    let mut offset = 0u64;
    while offset < RECORDS {
        let mut b = BatchBuilder::new(Compression::Lz4);
        for _ in 0..500 {
            let key = (offset * 7919) % KEYS;
            b.push(
                100,
                Some(format!("key-{key}").as_bytes()),
                Some(format!("v{offset}").as_bytes()),
                &[],
            );
            latest.insert(key, offset);
            offset += 1;
        }
        log.append(b.finish(), 0).unwrap();
    }
    // Tombstones for 100 keys, written at time 100.
    let mut b = BatchBuilder::new(Compression::None);
    for key in 0..100u64 {
        b.push(100, Some(format!("key-{key}").as_bytes()), None, &[]);
        latest.insert(key, offset);
        offset += 1;
    }
    log.append(b.finish(), 0).unwrap();
    // Roll so every record above sits in a sealed segment.
    let roll_offset = offset;
    log.append(
        batch_of(&[(Some("roll".into()), Some(vec![0u8; 2_000_000]))], 100),
        0,
    )
    .unwrap();

    let stats = compaction::clean(&log, 500).unwrap();
    assert!(stats.segments_cleaned > 0);
    let latest_offsets: std::collections::HashSet<u64> = latest.values().copied().collect();
    let kept: std::collections::BTreeMap<u64, Option<Bytes>> = read_all(&log, Offset(0))
        .into_iter()
        .filter(|(o, _)| *o != roll_offset)
        .collect();
    for o in kept.keys() {
        assert!(
            latest_offsets.contains(o),
            "offset {o} is not the latest of any key"
        );
    }
    assert_eq!(
        kept.len() as u64,
        KEYS,
        "one record per key, tombstones still inside delete.retention.ms"
    );
    for (key, o) in &latest {
        let v = kept
            .get(o)
            .unwrap_or_else(|| panic!("latest offset {o} of key {key} is kept"));
        if *key < 100 {
            assert_eq!(*v, None, "a tombstone is kept until its retention");
        } else {
            assert_eq!(v.as_deref(), Some(format!("v{o}").as_bytes()));
        }
    }
    // After delete.retention.ms the tombstones go, and nothing else does.
    let stats = compaction::clean(&log, 100 + 1000 + 1).unwrap();
    assert_eq!(stats.tombstones_removed, 100);
    let after = read_all(&log, Offset(0));
    assert_eq!(after.len() as u64, KEYS - 100 + 1);
    assert!(after.iter().all(|(_, v)| v.is_some()));
    assert_eq!(
        log.log_end(),
        Offset(roll_offset + 1),
        "offsets are unchanged"
    );
}

#[test]
fn an_interrupted_clean_leaves_the_log_complete() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["segment.bytes=4096", "cleanup.policy=compact"]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    for tag in 0..40 {
        log.append(simple_batch(tag, 4), 0).unwrap();
    }
    let want = read_all(&log, Offset(0));
    drop(log);
    // A crash while writing the copy leaves a partial `.cleaned` file and no index.
    fs::write(
        dir.path().join(format!("{:020}.log.cleaned", 0)),
        b"partial garbage",
    )
    .unwrap();
    let _ = fs::remove_file(dir.path().join(format!("{:020}.index", 0)));
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    assert_eq!(read_all(&log, Offset(0)), want);
    assert!(!Path::new(&dir.path().join(format!("{:020}.log.cleaned", 0))).exists());
}

#[test]
fn segments_roll_by_age_as_well_as_size() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), "t/0", config(&["segment.ms=1000"]), 0).unwrap();
    log.append(simple_batch(1, 1), 0).unwrap();
    log.append(simple_batch(2, 1), 500).unwrap();
    assert_eq!(log.stats().segments, 1);
    log.append(simple_batch(3, 1), 1000).unwrap();
    assert_eq!(
        log.stats().segments,
        2,
        "the first segment was a second old"
    );
    assert_eq!(log.active_segment_base(), Offset(2));
}

#[test]
fn truncation_cuts_at_a_batch_boundary_durably_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["segment.bytes=4096", "flush=always"]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    for tag in 0..60 {
        log.append(padded_batch(tag, 3), 0).unwrap();
    }
    assert!(log.stats().segments > 3, "the test needs several segments");
    assert_eq!(log.log_end(), Offset(180));

    // Inside a batch: refused, nothing changes.
    let e = log.truncate_to(Offset(91), 0).unwrap_err();
    assert!(e.to_string().contains("batch boundary"), "{e}");
    assert_eq!(log.log_end(), Offset(180));

    log.truncate_to(Offset(90), 0).unwrap();
    assert_eq!(log.log_end(), Offset(90));
    assert_eq!(log.high_watermark(), Offset(90));
    let kept = read_all(&log, Offset(0));
    assert_eq!(kept.len(), 90);
    assert_eq!(kept.last().unwrap().0, 89);

    // New appends take the freed offsets; the log reopens the same.
    log.append(simple_batch(999, 2), 0).unwrap();
    assert_eq!(log.log_end(), Offset(92));
    log.close(0).unwrap();
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    assert!(report.truncated.is_none());
    let all = read_all(&log, Offset(0));
    assert_eq!(all.len(), 92);
    assert_eq!(all[90].1.as_deref(), Some(&b"999-0"[..]));

    // Cutting to a segment's own base, and to the very start.
    log.truncate_to(Offset(0), 0).unwrap();
    assert_eq!(log.log_end(), Offset(0));
    assert!(read_all(&log, Offset(0)).is_empty());
    log.append(simple_batch(7, 1), 0).unwrap();
    assert_eq!(read_all(&log, Offset(0)).len(), 1);
}

/// Detected corruption is never swallowed: a read that meets a damaged batch reports it (log
/// line and counter) and takes the partition offline, so nothing is served or appended past
/// it; a reopen that meets damage below the recovery point keeps the partition offline with
/// the segment named; damage past the recovery point is a torn tail, cut and counted.
#[test]
fn detected_corruption_is_counted_and_takes_the_partition_offline() {
    use strait_node::storage::corruption::{self, Action};
    let count = |action: Action| {
        corruption::counts()
            .into_iter()
            .find(|(a, _)| *a == action)
            .map_or(0, |(_, n)| n)
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&["segment.bytes=4096", "flush=always"]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    for tag in 0..40 {
        log.append(padded_batch(tag, 5), 0).unwrap();
    }
    log.close(0).unwrap();
    let path = dir.path().join(format!("{:020}.log", 0));
    let flip = |at: u64| {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
    };

    // At run time: the read that finds it takes the partition offline.
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    let offline_before = count(Action::Offline);
    flip(300);
    let err = (0..10)
        .find_map(|o| log.read(Offset(o), 1 << 20).err())
        .expect("the corruption is noticed");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    assert_eq!(count(Action::Offline), offline_before + 1, "counted");
    let later = log.read(Offset(150), 1 << 20).unwrap_err();
    assert!(
        matches!(later, LogError::Offline { .. }) && later.to_string().contains("segment 0"),
        "the partition is offline and names the segment: {later}"
    );
    let append = log.append(padded_batch(99, 1), 0).unwrap_err();
    assert!(matches!(append, LogError::Offline { .. }), "{append}");
    drop(log);

    // At open: the damaged sealed segment is below the recovery point (its index gone, so it
    // is scanned), so the log stays offline instead of silently dropping or serving it.
    fs::remove_file(dir.path().join(format!("{:020}.index", 0))).unwrap();
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    let reopened = log.read(Offset(150), 1 << 20).unwrap_err();
    assert!(matches!(reopened, LogError::Offline { .. }), "{reopened}");
    assert!(
        reopened.to_string().contains("restore the segment"),
        "{reopened}"
    );
}

/// Offsets near the top of the range: a copied batch whose offsets would pass `Offset::MAX`
/// is refused when parsed (before, its next offset wrapped to a small number and the log
/// skipped it as "already copied"), and an append that would take the log end past the top is
/// refused with nothing written.
#[test]
fn offsets_at_the_top_of_the_range_are_refused_not_wrapped() {
    use strait_protocol::LeaderEpoch;
    let parse = |b: RecordBatch, base: u64| {
        RecordBatch::parse(
            b.with_position(Offset(base), LeaderEpoch(0)).into_bytes(),
            &DecodeLimits::default(),
        )
    };
    for base in [u64::MAX - 2, u64::MAX, Offset::MAX.0 - 3, Offset::MAX.0] {
        let refused = parse(simple_batch(1, 5), base).unwrap_err();
        assert!(
            refused.to_string().contains("largest offset"),
            "{base}: {refused}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = PartitionLog::open(dir.path(), "t/0", config(&[]), 0).unwrap();
    let near_top = parse(simple_batch(1, 1), Offset::MAX.0 - 10).unwrap();
    log.append_copies(vec![(near_top, Default::default())], true, 0)
        .unwrap();
    assert_eq!(log.log_end(), Offset(Offset::MAX.0 - 9));
    let err = log.append(simple_batch(2, 20), 0).unwrap_err();
    assert!(matches!(err, LogError::OffsetsExhausted { .. }), "{err}");
    assert_eq!(
        log.log_end(),
        Offset(Offset::MAX.0 - 9),
        "nothing was written"
    );
    log.append(simple_batch(3, 9), 0).unwrap();
    assert_eq!(log.log_end(), Offset::MAX);
}

/// Provenance travels beside the batches: copies into an identity-mode topic keep their chain
/// in the partition's provenance log, so after a restart the mirror map still skips what was
/// copied and a fetch by a mirror still learns each batch's origin. A crash that lost batches
/// after their provenance was written leaves no entry describing offsets that are not there.
#[test]
fn provenance_survives_reopen_and_never_outlives_its_batches() {
    use strait_node::storage::mirror_map::SourceKey;
    use strait_protocol::{Hop, Provenance};
    let chain = |base_offset| Provenance {
        hops: vec![
            Hop {
                cluster: "origin".into(),
                topic: "t".into(),
                partition: 0,
                base_offset: 1000 + base_offset,
            },
            Hop {
                cluster: "east".into(),
                topic: "t".into(),
                partition: 0,
                base_offset,
            },
        ],
    };
    let key = SourceKey {
        cluster: "east".into(),
        topic: "t".into(),
        partition: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    log.append(simple_batch(0, 2), 0).unwrap(); // a local write: offsets 0..=1
    let copies = vec![
        (simple_batch(1, 3), chain(0)),
        (simple_batch(2, 3), chain(3)),
    ];
    assert_eq!(
        log.append_copies(copies.clone(), false, 0).unwrap(),
        Some((Offset(2), Offset(7)))
    );
    // A resumed copy of the same source offsets is skipped.
    assert_eq!(log.append_copies(copies, false, 0).unwrap(), None);
    // A copy without a chain naming its source is refused.
    let err = log
        .append_copies(vec![(simple_batch(3, 1), Provenance::default())], false, 0)
        .unwrap_err();
    assert!(matches!(err, LogError::NoProvenance { .. }), "{err}");
    let read = log.read(Offset(0), 1 << 20).unwrap();
    let served = log.provenance_of(&read.batches).unwrap();
    assert_eq!(served, vec![(2, chain(0)), (5, chain(3))]);
    drop(log);

    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg.clone(), 0).unwrap();
    assert_eq!(log.mirrored_next(&key), Some(6));
    let read = log.read(Offset(0), 1 << 20).unwrap();
    assert_eq!(
        log.provenance_of(&read.batches).unwrap(),
        vec![(2, chain(0)), (5, chain(3))]
    );
    drop(log);

    // A crash that kept the provenance entry but not the last batch (its bytes cut off).
    let segment = dir.path().join(format!("{:020}.log", 0));
    let size = fs::metadata(&segment).unwrap().len();
    let last_len = simple_batch(2, 3).size_bytes() as u64;
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(size - last_len)
        .unwrap();
    let _ = fs::remove_file(dir.path().join("recovery-point"));
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    assert_eq!(log.log_end(), Offset(5));
    assert_eq!(
        log.mirrored_next(&key),
        Some(3),
        "the lost batch is copied again"
    );
    // The next batch at offset 5 is a local one: no stale chain may describe it.
    log.append(simple_batch(4, 1), 0).unwrap();
    let read = log.read(Offset(0), 1 << 20).unwrap();
    assert_eq!(
        log.provenance_of(&read.batches).unwrap(),
        vec![(2, chain(0))]
    );
}

/// The node never decompresses on produce, so a compacted topic may hold a batch that expands
/// past `max.batch.decompressed.bytes` (a gzip bomb). Its CRC is good: it is what a producer
/// sent, not damage. The cleaner keeps it untouched and cleans around it; the partition stays
/// online.
#[test]
fn the_cleaner_keeps_a_bomb_as_it_came_and_stays_online() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&[
        "segment.bytes=4096",
        "cleanup.policy=compact",
        "max.batch.decompressed.bytes=65536",
    ]);
    let (log, _) = PartitionLog::open(dir.path(), "t/0", cfg, 0).unwrap();
    let mut b = BatchBuilder::new(Compression::Gzip);
    b.push(0, Some(b"bomb"), Some(&vec![0u8; 1 << 20]), &[]);
    let bomb = b.finish();
    log.append(bomb.clone(), 0).unwrap();
    for tag in 0..40 {
        log.append(simple_batch(tag, 4), 0).unwrap();
    }
    let stats = compaction::clean(&log, 0).unwrap();
    assert!(stats.segments_cleaned > 0, "{stats:?}");
    let read = log.read(Offset(0), 1 << 20).unwrap();
    let first = split_batches(read.batches, &DecodeLimits::default()).unwrap();
    // Byte for byte from the magic on (base offset and epoch are the node's).
    assert!(
        first[0].as_bytes()[16..] == bomb.as_bytes()[16..],
        "kept byte for byte"
    );
    // The batches around it were cleaned (160 records of three keys before).
    assert!(read_all(&log, Offset(1)).len() < 160);
}
