//! A Redis Cluster of a test's own: three masters with one replica each,
//! six `redis-server --cluster-enabled yes` on free ports, joined by
//! `redis-cli --cluster create`. Killed and their folders removed on drop.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::own_redis::{free_port, server_command};
use crate::servers::unique;

/// Nodes of a test cluster: three masters, three replicas.
const NODES: usize = 6;

/// A node's timeout: how long a master may be silent before its replica
/// takes over. Short, so a failover test does not wait long.
pub const NODE_TIMEOUT_MS: u64 = 1_000;

/// A running cluster.
#[derive(Debug)]
pub struct OwnCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

/// A free port whose cluster bus port (10,000 above) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port(20_000);
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = server_command("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}; install Redis (Debian/Ubuntu: apt-get install redis-server redis-tools)"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl OwnCluster {
    /// Starts six nodes in a folder named after `test`, makes them one
    /// cluster, and waits until every node says it is whole.
    pub fn start(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("callwatch-cluster-{}", unique(test)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let mut cluster = OwnCluster {
            ports: Vec::new(),
            dir,
            children: Vec::new(),
        };
        for _ in 0..NODES {
            let port = cluster_port();
            cluster.ports.push(port);
            let child = cluster.spawn(port);
            cluster.children.push(Some(child));
        }
        for &port in &cluster.ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = server_command("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_whole(&cluster.ports.clone());
        cluster
    }

    fn spawn(&self, port: u16) -> Child {
        let node_dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).expect("a node's folder");
        server_command("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&node_dir)
            .arg("--logfile")
            .arg(node_dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test runs a Redis Cluster of its own and could not start redis-server: {e}; install Redis (Debian/Ubuntu: apt-get install redis-server)")
            })
    }

    /// Waits until each of `ports` reports `cluster_state:ok` and three
    /// masters with every slot served.
    fn wait_whole(&self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let whole = ports.iter().all(|&p| {
                let info = cli(p, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if whole {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test cluster did not come together"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A node's URL, to start from: the client finds the others.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.ports[0])
    }

    /// The ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.live()
            .into_iter()
            .filter(|&p| cli(p, &["role"]).starts_with("master"))
            .collect()
    }

    /// The ports of the nodes still running.
    fn live(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(&p, _)| p)
            .collect()
    }

    /// The port of the master serving `key` now, by `CLUSTER NODES`.
    pub fn master_of(&self, key: &str) -> u16 {
        let live = self.live();
        let slot: u64 = cli(live[0], &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>…`
        for line in cli(live[0], &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                let addr = fields[1].split('@').next().unwrap_or_default();
                let port = addr.rsplit(':').next().unwrap_or_default();
                return port.parse().expect("a node's port");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// SIGKILL of the node on `port`, then waits until the cluster is whole
    /// again without it (its replica promoted).
    pub fn kill_and_fail_over(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node of this cluster");
        if let Some(mut child) = self.children[i].take() {
            child.kill().expect("SIGKILL to redis-server");
            child.wait().expect("redis-server reaped");
        }
        // Until the others notice (the node timeout), they still call the
        // cluster whole: wait for a master in its place first.
        let masters = NODES / 2;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.masters().len() < masters {
            assert!(
                Instant::now() < deadline,
                "no replica took over from {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let live = self.live();
        self.wait_whole(&live);
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
