//! Server processes of a test's own: for a test that changes the server
//! itself (`SCRIPT FLUSH`, a kill, a restart).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A `redis-server` of the test's own, for a test that changes the server
/// itself (`SCRIPT FLUSH`, a kill): on a free port, persisting to an
/// append-only file (fsync always) in a temporary folder; killed and its
/// folder removed on drop.
#[derive(Debug)]
pub struct OwnRedis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    /// Starts one on a free port, with a folder named after `test`.
    pub fn start(test: &str) -> Self {
        let pid = std::process::id();
        // A free port near one derived from the process id.
        let mut port = 40_000 + u16::try_from(pid % 20_000).unwrap();
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            port += 1;
        }
        let dir = std::env::temp_dir().join(format!("callwatch-redis-{}", unique(test)));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let mut r = OwnRedis {
            port,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    /// Starts the server (again) on the same port and folder.
    pub fn spawn(&mut self) {
        let child = server_command("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("this test runs redis-server of its own and could not start it: {e}; install Redis (Debian/Ubuntu: apt-get install redis-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
