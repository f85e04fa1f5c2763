//! Background work: interval flushes, sealed-segment syncs, retention and compaction, on one
//! maintenance thread per node (they do file I/O, so never on an async worker); and the clean
//! close at shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{Broker, Partition, Topic};
use crate::now_ms;
use crate::storage::{compaction, FlushPolicy};

impl Broker {
    /// Starts the background workers: interval flushes, sealed-segment syncs, retention and
    /// compaction. They run on blocking threads since they do file I/O.
    pub fn start_background(self: &Arc<Self>, retention_check: Duration) {
        let broker = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("strait-maintenance".into())
            .spawn(move || {
                let mut last_retention = std::time::Instant::now();
                let mut last_flush: BTreeMap<String, i64> = BTreeMap::new();
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                    let Some(b) = broker.upgrade() else { return };
                    let now = now_ms();
                    let check = last_retention.elapsed() >= retention_check;
                    for t in b.topics() {
                        for p in &t.partitions {
                            b.maintain(&t, p, now, check, &mut last_flush);
                        }
                    }
                    if check {
                        last_retention = std::time::Instant::now();
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the maintenance thread: {e}"));
    }

    fn maintain(
        &self,
        t: &Topic,
        p: &Partition,
        now: i64,
        check: bool,
        last_flush: &mut BTreeMap<String, i64>,
    ) {
        let log = &p.log;
        if let FlushPolicy::IntervalMs(ms) = t.config.flush {
            let last = last_flush.entry(log.name().to_string()).or_insert(now);
            if now - *last >= ms as i64 {
                *last = now;
                if let Err(e) = log.flush(now) {
                    warn!(log = log.name(), error = %e, "interval flush failed");
                }
                p.grown.send_replace(log.high_watermark().0);
            }
        }
        if let Err(e) = log.flush_sealed(now) {
            warn!(log = log.name(), error = %e, "sealed segment sync failed");
        }
        if check {
            if let Err(e) = log.apply_retention(now) {
                warn!(log = log.name(), error = %e, "retention failed");
            }
            if t.config.cleanup.compact {
                match compaction::clean(log, now) {
                    Ok(s) if s.segments_cleaned > 0 => info!(
                        log = log.name(),
                        cleaned = s.segments_cleaned,
                        records_before = s.records_before,
                        records_after = s.records_after,
                        "compacted"
                    ),
                    Ok(_) => {}
                    Err(e) => warn!(log = log.name(), error = %e, "compaction failed"),
                }
            }
        }
    }

    /// Flushes and closes every log: the next start recovers nothing.
    pub fn close(&self) {
        for t in self.topics() {
            for p in &t.partitions {
                if let Err(e) = p.log.close(now_ms()) {
                    warn!(log = p.log.name(), error = %e, "close failed");
                }
            }
        }
        info!("broker closed");
    }
}
