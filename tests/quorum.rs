//! Controller quorums of real node processes: asking a node how it sees the cluster, waiting
//! for a view, a mesh of voters whose every link runs through its own impairment proxy (so a
//! suite can cut any pair apart), and an observer that records every leader any node names,
//! to show there was never more than one per term.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_protocol::client::Admin;
use strait_protocol::message::ClusterDescription;

use crate::impair::UdpProxy;
use crate::{free_udp_port, NodeProcess, Pki};

/// How the node at `address` sees its cluster, or `None` when it does not answer.
pub async fn describe(pki: &Pki, address: &str) -> Option<ClusterDescription> {
    Admin::new(pki.client(address))
        .describe_cluster()
        .await
        .ok()
}

/// Polls `address` until `done` holds of its description (panics with the last one after
/// `within`); answers it and how long it took.
pub async fn wait_for(
    pki: &Pki,
    address: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&ClusterDescription) -> bool,
) -> (ClusterDescription, Duration) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < within {
        if let Some(d) = describe(pki, address).await {
            if done(&d) {
                return (d, started.elapsed());
            }
            last = Some(d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {within:?} at {address}; last seen: {last:#?}");
}

/// The state (`alive`, `fenced`, `unregistered`) a description gives node `id`.
pub fn state_of(d: &ClusterDescription, id: u64) -> Option<&str> {
    d.nodes
        .iter()
        .find(|n| n.node_id == id)
        .map(|n| n.state.as_str())
}

/// The incarnation a description gives node `id` (0 when it has none).
pub fn incarnation_of(d: &ClusterDescription, id: u64) -> u64 {
    d.nodes
        .iter()
        .find(|n| n.node_id == id)
        .map_or(0, |n| n.incarnation)
}

/// Node settings for quick tests: a node silent for 1 s is fenced; Raft heartbeat 100 ms
/// (so an election starts after 0.8–1.6 s without a leader).
pub const QUICK_TIMEOUTS: &str =
    "[controller]\nsession_timeout_ms = 1000\nheartbeat_interval_ms = 200\nraft_heartbeat_ms = 100\n";

/// `n` voters (ids 1..=n) on loopback, each link through a proxy of its own: node `i` reaches
/// node `j` at `proxies[i][j]`, which relays to `j`'s port. Cutting a link partitions both
/// of its directions' proxies.
pub struct Mesh {
    pub ports: Vec<u16>,
    pub nodes: Vec<Option<NodeProcess>>,
    proxies: BTreeMap<(usize, usize), UdpProxy>,
    configs: Vec<String>,
    /// Each node's durability journal (for [`crate::power_loss`]), when kept.
    pub journals: Option<Vec<std::path::PathBuf>>,
}

impl Mesh {
    /// Starts the proxies and the `n` nodes, data under `dir/n<ID>`.
    pub async fn start(pki: &Pki, dir: &Path, n: usize) -> Mesh {
        Mesh::start_with(pki, dir, n, false).await
    }

    /// [`Mesh::start`], the nodes keeping durability journals (`dir/n<ID>.journal`) when
    /// `journals`, so that a suite can simulate power cuts.
    pub async fn start_with(pki: &Pki, dir: &Path, n: usize, journals: bool) -> Mesh {
        let ports: Vec<u16> = (0..n).map(|_| free_udp_port()).collect();
        let mut proxies = BTreeMap::new();
        for i in 0..n {
            for j in (0..n).filter(|j| *j != i) {
                let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], ports[j]));
                proxies.insert((i, j), UdpProxy::start(upstream).await);
            }
        }
        let configs: Vec<String> = (0..n)
            .map(|i| {
                let voters: Vec<String> = (0..n)
                    .map(|j| {
                        let at = match proxies.get(&(i, j)) {
                            Some(p) => p.address.to_string(),
                            None => format!("127.0.0.1:{}", ports[i]),
                        };
                        format!("\"{}@{at}\"", j + 1)
                    })
                    .collect();
                format!("controllers = [{}]\n{QUICK_TIMEOUTS}", voters.join(", "))
            })
            .collect();
        let mut mesh = Mesh {
            ports,
            nodes: (0..n).map(|_| None).collect(),
            proxies,
            configs,
            journals: journals.then(|| {
                (0..n)
                    .map(|i| dir.join(format!("n{}.journal", i + 1)))
                    .collect()
            }),
        };
        for i in 0..n {
            mesh.restart(pki, dir, i);
        }
        mesh
    }

    /// (Re)starts node index `i` (id `i + 1`) on its port and data.
    pub fn restart(&mut self, pki: &Pki, dir: &Path, i: usize) {
        let journal = self.journals.as_ref().map(|j| j[i].clone());
        let env: Vec<(&str, &Path)> = journal
            .iter()
            .map(|j| ("STRAIT_TEST_DURABLE_JOURNAL", j.as_path()))
            .collect();
        self.nodes[i] = Some(NodeProcess::start_member_with_env(
            pki,
            "east",
            i as u32 + 1,
            &dir.join(format!("n{}", i + 1)),
            &self.configs[i],
            self.ports[i],
            &env,
        ));
    }

    /// The QUIC address of node index `i` (direct, not through a proxy: the test's own view).
    pub fn address(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// Cuts (or heals) the link between node indexes `a` and `b`, both directions.
    pub fn cut(&self, a: usize, b: usize, on: bool) {
        for key in [(a, b), (b, a)] {
            if let Some(p) = self.proxies.get(&key) {
                p.partition(on);
            }
        }
    }

    /// Waits until, in one round of asking, every node names the same leader in the same
    /// term, has applied the same metadata and sees every node alive; answers the round's
    /// descriptions (by node index).
    pub async fn settled(&self, pki: &Pki, within: Duration) -> Vec<ClusterDescription> {
        self.settled_where(pki, within, |_| true).await
    }

    /// [`Mesh::settled`], with `also` holding of every description.
    pub async fn settled_where(
        &self,
        pki: &Pki,
        within: Duration,
        also: impl Fn(&ClusterDescription) -> bool,
    ) -> Vec<ClusterDescription> {
        let n = self.ports.len() as u64;
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < within {
            last.clear();
            for i in 0..self.ports.len() {
                last.push(describe(pki, &self.address(i)).await);
            }
            let first = last[0]
                .as_ref()
                .map(|d| (d.leader, d.term, d.applied_index));
            let agree = last.iter().all(|d| {
                d.as_ref().is_some_and(|d| {
                    d.leader.is_some()
                        && Some((d.leader, d.term, d.applied_index)) == first
                        && (1..=n).all(|id| state_of(d, id) == Some("alive"))
                        && also(d)
                })
            });
            if agree {
                return last.into_iter().flatten().collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the {n} nodes did not settle on one leader and one image within {within:?}; last seen: {last:#?}");
    }

    /// [`Mesh::settled`]'s leader.
    pub async fn agreed(&self, pki: &Pki, within: Duration) -> u64 {
        let views = self.settled(pki, within).await;
        views[0]
            .leader
            .unwrap_or_else(|| panic!("settled without a leader"))
    }
}

/// Term → leader named in it → the nodes that named it.
pub type Terms = BTreeMap<u64, BTreeMap<u64, Vec<u64>>>;

/// Every (term, leader) any node named while it ran, polled every 20 ms from all nodes.
pub struct LeaderLog {
    seen: Arc<Mutex<Terms>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderLog {
    pub fn start(pki: &Pki, addresses: Vec<String>) -> LeaderLog {
        let seen: Arc<Mutex<Terms>> = Arc::default();
        let record = seen.clone();
        let admins: Vec<Admin> = addresses
            .iter()
            .map(|a| Admin::new(pki.client(a)))
            .collect();
        let task = tokio::spawn(async move {
            loop {
                for admin in &admins {
                    let answer =
                        tokio::time::timeout(Duration::from_millis(500), admin.describe_cluster());
                    if let Ok(Ok(d)) = answer.await {
                        if let Some(l) = d.leader {
                            let mut s = record.lock().unwrap_or_else(|e| e.into_inner());
                            let by = s.entry(d.term).or_default().entry(l).or_default();
                            if !by.contains(&d.node_id) {
                                by.push(d.node_id);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        LeaderLog { seen, task }
    }

    /// Stops observing; panics if some term had two leaders; answers the terms seen.
    pub fn check(self) -> Terms {
        self.task.abort();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (term, leaders) in &seen {
            assert!(
                leaders.len() == 1,
                "split brain: term {term} had leaders {leaders:?} (leader → the nodes naming it)"
            );
        }
        seen
    }
}
