//! The default congestion controller: cubic on short paths, BBR on long ones, chosen per
//! connection from its measured minimum RTT.
//!
//! Measured in one session on this project's machines (docs/benchmarks.md, "Congestion
//! control"): over a 150 ms, 1 %-loss link a flow with cubic copied nothing in 60 s while BBR
//! moved 26 MB/s, and on loopback BBR cost up to ~10 % against cubic. A path's RTT tells them
//! apart long before either matters: a LAN or loopback answers in well under a millisecond, a
//! link between regions in tens. So both controllers see every event of the connection, and
//! the window (what the sender may have in flight) is the one of the controller the path
//! calls for: cubic until the minimum RTT is known and while it is below [`WAN_RTT`], BBR
//! once it is at or above it. A minimum RTT only ever falls, so once it is below the bound
//! the path is short for good and BBR is dropped: a loopback or LAN connection then costs
//! exactly what cubic alone does.
//!
//! quinn's BBR treats a minimum RTT it has never refreshed as expired, so the first round
//! trip that fills the window (a flow's first bulk data) sends it into ProbeRTT: four packets
//! in flight for 200 ms and a round trip, measured as ~0.5 s of a 150 ms link idle just when a
//! backlog starts to move. The adaptive controller lets BBR take that ProbeRTT on the
//! connection's first acknowledgement (the handshake's), when there is nothing to slow down.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::congestion::{
    BbrConfig, Controller, ControllerFactory, ControllerMetrics, CubicConfig,
};
use quinn_proto::RttEstimator;

/// The minimum RTT from which a path counts as long.
pub const WAN_RTT: Duration = Duration::from_millis(10);

/// Which controller a path calls for, from its minimum RTT (None before the first sample).
pub fn long_path(min_rtt: Option<Duration>) -> bool {
    min_rtt.is_some_and(|rtt| rtt >= WAN_RTT)
}

/// Builds [`Adaptive`] controllers.
#[derive(Debug, Default, Clone)]
pub struct AdaptiveConfig {
    cubic: Arc<CubicConfig>,
    bbr: Arc<BbrConfig>,
}

impl ControllerFactory for AdaptiveConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Adaptive {
            cubic: self.cubic.clone().build(now, current_mtu),
            bbr: Some(self.bbr.clone().build(now, current_mtu)),
            min_rtt: None,
            primed: false,
        })
    }
}

/// Cubic and BBR side by side; the path decides whose window counts.
pub struct Adaptive {
    cubic: Box<dyn Controller>,
    /// Dropped once the path is known to be short.
    bbr: Option<Box<dyn Controller>>,
    min_rtt: Option<Duration>,
    /// Whether BBR has seen its first acknowledgement, passed to it as not app-limited so its
    /// first ProbeRTT happens then (see the module's notes).
    primed: bool,
}

impl Adaptive {
    fn active(&self) -> &dyn Controller {
        match &self.bbr {
            Some(bbr) if long_path(self.min_rtt) => &**bbr,
            _ => &*self.cubic,
        }
    }

    /// Whether BBR's window is the one in use (for stats and tests).
    pub fn uses_bbr(&self) -> bool {
        self.bbr.is_some() && long_path(self.min_rtt)
    }
}

impl Controller for Adaptive {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.cubic.on_sent(now, bytes, last_packet_number);
        if let Some(bbr) = &mut self.bbr {
            bbr.on_sent(now, bytes, last_packet_number);
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.min_rtt = Some(rtt.min());
        if !long_path(self.min_rtt) {
            self.bbr = None;
        }
        self.cubic.on_ack(now, sent, bytes, app_limited, rtt);
        if let Some(bbr) = &mut self.bbr {
            bbr.on_ack(now, sent, bytes, app_limited && self.primed, rtt);
        }
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.cubic
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
        if let Some(bbr) = &mut self.bbr {
            bbr.on_end_acks(
                now,
                in_flight,
                app_limited && self.primed,
                largest_packet_num_acked,
            );
            self.primed = true;
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.cubic
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        if let Some(bbr) = &mut self.bbr {
            bbr.on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
        }
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.cubic.on_mtu_update(new_mtu);
        if let Some(bbr) = &mut self.bbr {
            bbr.on_mtu_update(new_mtu);
        }
    }

    fn window(&self) -> u64 {
        self.active().window()
    }

    fn metrics(&self) -> ControllerMetrics {
        self.active().metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Adaptive {
            cubic: self.cubic.clone_box(),
            bbr: self.bbr.as_ref().map(|b| b.clone_box()),
            min_rtt: self.min_rtt,
            primed: self.primed,
        })
    }

    fn initial_window(&self) -> u64 {
        self.cubic.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paths_use_cubic_and_long_ones_bbr() {
        assert!(!long_path(None), "cubic until the path is measured");
        assert!(!long_path(Some(Duration::from_micros(80))), "loopback");
        assert!(!long_path(Some(Duration::from_millis(2))), "a LAN");
        assert!(long_path(Some(WAN_RTT)));
        assert!(
            long_path(Some(Duration::from_millis(150))),
            "between regions"
        );
        let a = Adaptive {
            cubic: Arc::new(CubicConfig::default()).build(Instant::now(), 1200),
            bbr: Some(Arc::new(BbrConfig::default()).build(Instant::now(), 1200)),
            min_rtt: Some(Duration::from_millis(150)),
            primed: false,
        };
        assert!(a.uses_bbr());
        assert_eq!(a.window(), a.bbr.as_ref().unwrap().window());
    }
}
