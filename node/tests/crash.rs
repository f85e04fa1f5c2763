//! `kill -9` of a real writer process at random moments: every acknowledged batch survives,
//! in order, bit-exact, without duplicates.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_node::storage::{LogConfig, PartitionLog};
use strait_protocol::batch::{split_batches, DecodeLimits};
use strait_protocol::Offset;

/// The value the writer puts in record `i` of batch `seq` of `appender` (see `strait debug`).
fn record_value(appender: u32, seq: u64, i: u32) -> Vec<u8> {
    format!("{appender}:{seq}:{i}:{}", "v".repeat((seq % 97) as usize)).into_bytes()
}

/// A cheap deterministic sequence of "random" kill delays.
fn delays(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            20 + x % 180
        })
        .collect()
}

#[test]
fn acknowledged_batches_survive_twenty_kill_nines() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_strait");
    // Everything acknowledged in any run: (appender, seq) → base offset.
    let mut acked: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let mut next_seq: BTreeMap<u32, u64> = BTreeMap::new();
    for (run, delay_ms) in delays(20).into_iter().enumerate() {
        let mut child = Command::new(bin)
            .args([
                "debug",
                "log-writer",
                "--appenders",
                "4",
                "--segment-bytes",
                "65536",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.push(line);
            }
            lines
        });
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let mut this_run = 0;
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                let (a, seq, base): (u32, u64, u64) = (
                    parts[1].parse().unwrap(),
                    parts[2].parse().unwrap(),
                    parts[3].parse().unwrap(),
                );
                // Each run restarts sequences at 0; keep them distinct per run.
                let key_seq = run as u64 * 1_000_000 + seq;
                assert!(acked.insert((a, key_seq), base).is_none());
                next_seq.insert(a, seq + 1);
                this_run += 1;
            }
        }
        assert!(started.elapsed() >= Duration::from_millis(delay_ms));
        let _ = this_run;
    }
    assert!(
        acked.len() > 100,
        "the writer made progress: {} acks",
        acked.len()
    );

    let config = LogConfig::default()
        .with_settings(["segment.bytes=65536"])
        .unwrap();
    let (log, _) = PartitionLog::open(dir.path(), "crash/0", config, 0).unwrap();
    let mut found: BTreeMap<u64, (u32, u64, Vec<Vec<u8>>)> = BTreeMap::new();
    let mut at = log.log_start();
    let mut last_offset: Option<u64> = None;
    loop {
        let read = log.read(at, 1 << 20).unwrap();
        if read.batches.is_empty() {
            break;
        }
        for b in split_batches(read.batches, &DecodeLimits::default()).unwrap() {
            let records = b.records(1 << 20).unwrap();
            for r in &records {
                assert!(
                    last_offset.is_none_or(|l| r.offset.0 > l),
                    "offsets strictly increase"
                );
                last_offset = Some(r.offset.0);
            }
            let first = String::from_utf8(records[0].value.clone().unwrap().to_vec()).unwrap();
            let mut it = first.split(':');
            let a: u32 = it.next().unwrap().parse().unwrap();
            let seq: u64 = it.next().unwrap().parse().unwrap();
            found.insert(
                b.base_offset().0,
                (
                    a,
                    seq,
                    records
                        .iter()
                        .map(|r| r.value.clone().unwrap().to_vec())
                        .collect(),
                ),
            );
            at = b.next_offset();
        }
    }
    assert_eq!(log.log_end(), Offset(at.0));
    let mut runs_of_base: BTreeMap<u64, usize> = BTreeMap::new();
    for ((a, key_seq), base) in &acked {
        let seq = key_seq % 1_000_000;
        let (fa, fseq, values) = found
            .get(base)
            .unwrap_or_else(|| panic!("acknowledged batch {a}/{seq} at {base} is missing"));
        assert_eq!(
            (*fa, *fseq),
            (*a, seq),
            "the batch at {base} is the one acknowledged there"
        );
        let want: Vec<Vec<u8>> = (0..(1 + (seq % 5) as u32))
            .map(|i| record_value(*a, seq, i))
            .collect();
        assert_eq!(values, &want, "batch {a}/{seq} is bit-exact");
        *runs_of_base.entry(*base).or_default() += 1;
    }
    assert!(
        runs_of_base.values().all(|n| *n == 1),
        "no offset was acknowledged twice"
    );
}
