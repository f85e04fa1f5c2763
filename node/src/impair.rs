//! A UDP impairment proxy for the WAN suites and `strait bench wan`: this kernel has no
//! `netem`, and QUIC is UDP, so one relay in the path sees every packet. Per direction it
//! delays (with jitter), drops, reorders, duplicates and rate-limits datagrams, and a partition
//! switch drops everything while it is on — all changeable while traffic flows. Loopback only.
//!
//! Each client address gets its own upstream socket, so the server sees one peer per client
//! as it would without the proxy. Randomness is a seeded xorshift, so a run is repeatable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

/// What one direction does to the datagrams crossing it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    /// Added uniformly at random in 0..jitter, so packets may overtake each other.
    pub jitter: Duration,
    /// Probability (0..1) that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is held back an extra `delay + jitter` (reordering).
    pub reorder: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Bytes per second the direction carries; None for no cap.
    pub rate_bytes_per_s: Option<u64>,
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

struct Control {
    up: Impairment,
    down: Impairment,
    partitioned: bool,
    rng: u64,
    /// When each direction's rate cap frees up next.
    next_free: [Instant; 2],
    dropped: u64,
    forwarded: u64,
}

/// A running proxy in front of `upstream`; clients connect to [`UdpProxy::address`].
pub struct UdpProxy {
    pub address: SocketAddr,
    control: Arc<Mutex<Control>>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    pub async fn start(upstream: SocketAddr) -> UdpProxy {
        let front = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind the proxy"),
        );
        let address = front.local_addr().expect("proxy address");
        let now = Instant::now();
        let control = Arc::new(Mutex::new(Control {
            up: Impairment::default(),
            down: Impairment::default(),
            partitioned: false,
            rng: 0x9E37_79B9_7F4A_7C15,
            next_free: [now, now],
            dropped: 0,
            forwarded: 0,
        }));
        let task = tokio::spawn(relay(front, upstream, control.clone()));
        UdpProxy {
            address,
            control,
            task,
        }
    }

    /// Sets one direction's impairment (both when `None`).
    pub fn set(&self, direction: Option<Direction>, impairment: Impairment) {
        let mut c = lock(&self.control);
        match direction {
            Some(Direction::Up) => c.up = impairment,
            Some(Direction::Down) => c.down = impairment,
            None => {
                c.up = impairment;
                c.down = impairment;
            }
        }
    }

    /// Drops every datagram both ways while on.
    pub fn partition(&self, on: bool) {
        lock(&self.control).partitioned = on;
    }

    /// (datagrams forwarded, datagrams dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        let c = lock(&self.control);
        (c.forwarded, c.dropped)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(c: &Mutex<Control>) -> std::sync::MutexGuard<'_, Control> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Longest datagram relayed (QUIC's are at most ~1.5 KB here; GSO batches are split by the
/// kernel before they reach a socket).
const DATAGRAM_MAX: usize = 65_536;

async fn relay(front: Arc<UdpSocket>, upstream: SocketAddr, control: Arc<Mutex<Control>>) {
    let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        let back = match backs.get(&client) {
            Some(b) => b.clone(),
            None => {
                let Ok(b) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if b.connect(upstream).await.is_err() {
                    continue;
                }
                let b = Arc::new(b);
                backs.insert(client, b.clone());
                tokio::spawn(downstream(
                    b.clone(),
                    front.clone(),
                    client,
                    control.clone(),
                ));
                b
            }
        };
        let datagram = buf[..n].to_vec();
        schedule(&control, Direction::Up, datagram, move |d| {
            let back = back.clone();
            async move {
                let _ = back.send(&d).await;
            }
        });
    }
}

async fn downstream(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    control: Arc<Mutex<Control>>,
) {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        let Ok(n) = back.recv(&mut buf).await else {
            return;
        };
        let front = front.clone();
        schedule(&control, Direction::Down, buf[..n].to_vec(), move |d| {
            let front = front.clone();
            async move {
                let _ = front.send_to(&d, client).await;
            }
        });
    }
}

/// Decides a datagram's fate and sends it (and any duplicate) at its departure time.
fn schedule<F, Fut>(control: &Mutex<Control>, direction: Direction, datagram: Vec<u8>, send: F)
where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let departures = {
        let mut c = lock(control);
        let imp = match direction {
            Direction::Up => c.up,
            Direction::Down => c.down,
        };
        if c.partitioned || chance(&mut c.rng, imp.loss) {
            c.dropped += 1;
            return;
        }
        c.forwarded += 1;
        let now = Instant::now();
        let slot = usize::from(direction == Direction::Down);
        let mut at = now;
        if let Some(rate) = imp.rate_bytes_per_s.filter(|r| *r > 0) {
            let free = c.next_free[slot].max(now);
            let cost = Duration::from_secs_f64(datagram.len() as f64 / rate as f64);
            c.next_free[slot] = free + cost;
            at = free + cost;
        }
        let jitter = imp.jitter.mul_f64(uniform(&mut c.rng));
        at += imp.delay + jitter;
        if chance(&mut c.rng, imp.reorder) {
            at += imp.delay + imp.jitter;
        }
        let mut departures = vec![at];
        if chance(&mut c.rng, imp.duplicate) {
            departures.push(at + Duration::from_micros(100));
        }
        departures
    };
    let send = Arc::new(send);
    for at in departures {
        let (d, send) = (datagram.clone(), send.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            send(d).await;
        });
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn uniform(rng: &mut u64) -> f64 {
    (next(rng) >> 11) as f64 / (1u64 << 53) as f64
}

fn chance(rng: &mut u64, p: f64) -> bool {
    p > 0.0 && uniform(rng) < p
}
