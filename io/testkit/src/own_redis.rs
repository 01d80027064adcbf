//! Server processes of a test's own: for a test that changes the server
//! itself (`SCRIPT FLUSH`, a kill, a restart, TLS).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::TestPki;
use crate::servers::unique;

/// A command for a server binary a test runs of its own (`redis-server`,
/// `pg_ctlcluster`), on the machine's real clock. `scripts/test` runs the
/// suite a second time under libfaketime, whose `LD_PRELOAD` children
/// inherit; servers are not the code under test (the shared ones run on the
/// real clock too), and redis-server's allocator deadlocks under it.
pub fn server_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "LD_PRELOAD" || name.starts_with("FAKETIME") {
            cmd.env_remove(&*name);
        }
    }
    cmd
}

/// A port free now, at or after `base` plus one derived from the process
/// id; each call in a process starts past the last, so servers started at
/// once by parallel tests do not pick the same one before either listens.
pub fn free_port(base: u16) -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let step = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = u16::try_from(std::process::id() % 10_000).expect("below 10,000");
    let mut port = base + pid + step.wrapping_mul(10) % 5_000;
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        port += 1;
    }
    port
}

/// A `redis-server` of the test's own, for a test that changes the server
/// itself (`SCRIPT FLUSH`, a kill): on a free port, persisting to an
/// append-only file (fsync always) in a temporary folder; killed and its
/// folder removed on drop.
#[derive(Debug)]
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// TLS only, on `port`, with these files: certificate, key, CA.
    tls: Option<[PathBuf; 3]>,
}

impl OwnRedis {
    /// Starts one on a free port, with a folder named after `test`.
    pub fn start(test: &str) -> Self {
        Self::start_with(test, None)
    }

    /// Starts one that speaks only TLS, with `pki`'s server certificate,
    /// on 127.0.0.1 and 127.0.0.2 (an address its certificate does not
    /// name). It fails the test, saying why, if redis-server was built
    /// without TLS.
    pub fn start_tls(test: &str, pki: &TestPki) -> Self {
        let files = [
            pki.server_cert.clone(),
            pki.server_key.clone(),
            pki.ca.clone(),
        ];
        Self::start_with(test, Some(files))
    }

    fn start_with(test: &str, tls: Option<[PathBuf; 3]>) -> Self {
        let port = free_port(40_000);
        let dir = std::env::temp_dir().join(format!("callwatch-redis-{}", unique(test)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
            tls,
        };
        r.spawn();
        r
    }

    /// Starts the server (again) on the same port and folder.
    pub fn spawn(&mut self) {
        let log = self.dir.join("redis.log");
        let mut cmd = server_command("redis-server");
        let port = self.port.to_string();
        match &self.tls {
            None => cmd.args(["--port", &port, "--bind", "127.0.0.1"]),
            Some([cert, key, ca]) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .args(["--bind", "127.0.0.1", "127.0.0.2"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test runs redis-server of its own and could not start it: {e}; install Redis (Debian/Ubuntu: apt-get install redis-server)")
            });
        self.child = Some(child);
        self.wait_listening(&log);
    }

    /// Waits until the port takes connections; fails with the server's log
    /// if it exits first (a redis-server built without TLS refuses the TLS
    /// options).
    fn wait_listening(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                let tls = if self.tls.is_some() {
                    " (this test needs a redis-server built with TLS, as Debian's is: \
                     `redis-server --tls-port` must be known to it)"
                } else {
                    ""
                };
                panic!(
                    "redis-server on {} exited ({status}){tls}:\n{said}",
                    self.port
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye, only what the append-only file holds survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL to redis-server");
            child.wait().expect("redis-server reaped");
        }
    }

    /// Its URL: `redis://`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    /// Its URL through `host` (`127.0.0.2` reaches a TLS server by an
    /// address its certificate does not name).
    pub fn url_at(&self, host: &str) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{host}:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
