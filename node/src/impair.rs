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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl UdpProxy {
    /// Starts relaying to `upstream` on a thread of its own: the "network" must not wait for
    /// the busy runtime of the processes it connects, or it drops what the kernel cannot
    /// buffer meanwhile, and those drops would count as impairment nobody asked for.
    pub async fn start(upstream: SocketAddr) -> UdpProxy {
        let front = bind_std(None).expect("bind the proxy");
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
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = control.clone();
        std::thread::Builder::new()
            .name("udp-proxy".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(front) = UdpSocket::from_std(front) else {
                        return;
                    };
                    tokio::select! {
                        _ = relay(Arc::new(front), upstream, shared) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("start the proxy thread");
        UdpProxy {
            address,
            control,
            stop: Some(stop),
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock(c: &Mutex<Control>) -> std::sync::MutexGuard<'_, Control> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// Longest datagram relayed (QUIC's are at most ~1.5 KB here; GSO batches are split by the
/// kernel before they reach a socket).
const DATAGRAM_MAX: usize = 65_536;

async fn relay(front: Arc<UdpSocket>, upstream: SocketAddr, control: Arc<Mutex<Control>>) {
    // Per client: its delay line upstream and the task relaying its answers (both stop when
    // the proxy does, as this map is dropped with the relay).
    let mut paths: HashMap<SocketAddr, (DelayLine, AbortOnDrop)> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        let line = match paths.entry(client) {
            std::collections::hash_map::Entry::Occupied(path) => &path.into_mut().0,
            std::collections::hash_map::Entry::Vacant(path) => {
                let Ok(back) = bind(Some(upstream)) else {
                    continue;
                };
                let back = Arc::new(back);
                let answers = tokio::spawn(downstream(
                    back.clone(),
                    front.clone(),
                    client,
                    control.clone(),
                ));
                let line = DelayLine::start(Exit::Connected(back));
                &path.insert((line, AbortOnDrop(answers))).0
            }
        };
        schedule(&control, Direction::Up, &buf[..n], line);
    }
}

/// A loopback socket with a router's worth of buffer (as the endpoints ask for), so the relay
/// itself drops nothing it was not told to; connected to `peer` when given.
/// Socket buffer of each relay socket: 64 MiB holds about half a second of a fast loopback
/// stream.
const PROXY_BUFFER: usize = 64 << 20;

fn bind(peer: Option<SocketAddr>) -> std::io::Result<UdpSocket> {
    UdpSocket::from_std(bind_std(peer)?)
}

fn bind_std(peer: Option<SocketAddr>) -> std::io::Result<std::net::UdpSocket> {
    let limits = strait_protocol::transport::TransportLimits::default();
    let socket = strait_protocol::transport::udp_socket(([127, 0, 0, 1], 0).into(), &limits)?;
    // Past the kernel's cap when allowed (root): the relay shares the CPUs with the processes
    // it connects, and a router's buffer, not the scheduler, should decide what it drops.
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, PROXY_BUFFER);
    let _ = rustix::net::sockopt::set_socket_send_buffer_size_force(&socket, PROXY_BUFFER);
    if let Some(peer) = peer {
        socket.connect(peer)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

async fn downstream(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    control: Arc<Mutex<Control>>,
) {
    let line = DelayLine::start(Exit::To(front, client));
    let mut buf = vec![0u8; DATAGRAM_MAX];
    loop {
        match back.recv(&mut buf).await {
            Ok(n) => schedule(&control, Direction::Down, &buf[..n], &line),
            // An ICMP "port unreachable" for an earlier datagram (the upstream was not up yet,
            // or restarts): a router forgets it, and so does the relay.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

/// Where a delay line's datagrams leave.
enum Exit {
    Connected(Arc<UdpSocket>),
    To(Arc<UdpSocket>, SocketAddr),
}

/// One path's datagrams in flight, sent in order of departure time and, at equal times, in
/// order of arrival — a wire keeps order unless jitter or reordering says otherwise. (A timer
/// task per datagram does not: tasks woken in the same tick run in any order, and QUIC reads
/// such reordering as loss.)
struct DelayLine {
    tx: tokio::sync::mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayLine {
    fn start(exit: Exit) -> DelayLine {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        DelayLine {
            tx,
            task: tokio::spawn(deliver(rx, exit)),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn deliver(mut rx: tokio::sync::mpsc::UnboundedReceiver<(Instant, Vec<u8>)>, exit: Exit) {
    use std::cmp::Reverse;
    let mut queue: std::collections::BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> =
        std::collections::BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((_, _, d))) = queue.pop() else {
                break;
            };
            let _ = match &exit {
                Exit::Connected(socket) => socket.send(&d).await,
                Exit::To(socket, to) => socket.send_to(&d, to).await,
            };
        }
        let arrived = match queue.peek().map(|Reverse((at, _, _))| *at) {
            Some(at) => tokio::select! {
                item = rx.recv() => item,
                _ = tokio::time::sleep_until(at) => continue,
            },
            None => rx.recv().await,
        };
        let Some((at, d)) = arrived else {
            return;
        };
        queue.push(Reverse((at, seq, d)));
        seq += 1;
    }
}

/// Decides a datagram's fate and queues it (and any duplicate) for its departure time.
fn schedule(control: &Mutex<Control>, direction: Direction, datagram: &[u8], line: &DelayLine) {
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
    for at in departures {
        let _ = line.tx.send((at, datagram.to_vec()));
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
