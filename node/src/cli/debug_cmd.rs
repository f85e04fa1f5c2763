//! Hidden helpers the crash suites drive as real processes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use strait_node::storage::{LogConfig, PartitionLog};
use strait_protocol::{BatchBuilder, Compression};

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Append numbered batches to a log under `flush = always` from several threads, printing
    /// `ACK <appender> <seq> <base offset>` after each acknowledgement, until killed.
    LogWriter {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        appenders: u32,
        #[arg(long, default_value_t = 65536)]
        segment_bytes: u64,
    },
}

/// The value of record `i` of batch `seq` from `appender`: the crash test recomputes it.
pub fn record_value(appender: u32, seq: u64, i: u32) -> Vec<u8> {
    format!("{appender}:{seq}:{i}:{}", "v".repeat((seq % 97) as usize)).into_bytes()
}

pub fn run(command: DebugCommand) -> anyhow::Result<()> {
    let DebugCommand::LogWriter {
        dir,
        appenders,
        segment_bytes,
    } = command;
    let config = LogConfig::default().with_settings([
        format!("segment.bytes={segment_bytes}").as_str(),
        "flush=always",
    ])?;
    let (log, _) = PartitionLog::open(&dir, "crash/0", config, strait_node::now_ms())?;
    let log = Arc::new(log);
    let threads: Vec<_> = (0..appenders)
        .map(|a| {
            let log = log.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for seq in 0u64.. {
                    let mut b = BatchBuilder::new(Compression::None);
                    for i in 0..(1 + (seq % 5) as u32) {
                        b.push(
                            seq as i64,
                            Some(format!("{a}").as_bytes()),
                            Some(&record_value(a, seq, i)),
                            &[],
                        );
                    }
                    let appended = log.append(b.finish(), strait_node::now_ms())?;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {a} {seq} {}", appended.base_offset.0)?;
                    out.flush()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("an appender panicked"))??;
    }
    Ok(())
}
