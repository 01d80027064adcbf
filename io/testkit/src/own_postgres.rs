//! A PostgreSQL cluster of a test's own (Debian's `pg_createcluster`), on
//! a free port, trusting every local connection: for a test that stops the
//! server, or serves TLS. Dropped, stopped first, on drop.

use std::path::{Path, PathBuf};

use crate::own_redis::{free_port, server_command};
use crate::pki::TestPki;
use crate::servers::unique;

/// A cluster of the test's own.
#[derive(Debug)]
pub struct OwnPostgres {
    version: String,
    name: String,
    pub port: u16,
}

/// Runs `program` (on the real clock), failing the test with its output if
/// it fails.
fn run(program: &str, args: &[&str]) {
    let out = server_command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`{program}` could not run: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn missing(what: &str) -> ! {
    panic!(
        "this test runs a PostgreSQL cluster of its own and needs {what}: install \
         PostgreSQL's server with Debian's cluster tools (apt-get install postgresql)"
    )
}

/// The newest PostgreSQL version with cluster tools here.
fn newest_version() -> String {
    if server_command("pg_createcluster")
        .arg("--version")
        .output()
        .is_err()
    {
        missing("pg_createcluster");
    }
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .unwrap_or_else(|_| missing("/etc/postgresql"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|v| v.parse::<u32>().is_ok())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap());
    versions
        .pop()
        .unwrap_or_else(|| missing("a version under /etc/postgresql"))
}

impl OwnPostgres {
    /// Creates and starts a cluster on a free port, named after `test`,
    /// without TLS (Debian turns it on where a snake-oil certificate is
    /// installed; a test's own cluster serves TLS only when asked).
    pub fn create(test: &str) -> OwnPostgres {
        let cluster = Self::created(test);
        cluster.append("postgresql.conf", "\nssl = off\n");
        cluster.ctl(&["start"]);
        cluster
    }

    /// Creates and starts one that also serves TLS with `pki`'s server
    /// certificate: plain and TLS connections over TCP both allowed.
    pub fn create_tls(test: &str, pki: &TestPki) -> OwnPostgres {
        let cluster = Self::created(test);
        let cert = cluster.owned_copy(&pki.server_cert);
        let key = cluster.owned_copy(&pki.server_key);
        let ssl = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        );
        cluster.append("postgresql.conf", &ssl);
        cluster.append(
            "pg_hba.conf",
            "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        );
        cluster.ctl(&["start"]);
        cluster
    }

    /// Appends `text` to one of its configuration files; later lines win.
    fn append(&self, file: &str, text: &str) {
        let path = self.config_dir().join(file);
        let mut all = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        all.push_str(text);
        std::fs::write(&path, all).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    fn created(test: &str) -> OwnPostgres {
        let version = newest_version();
        let port = free_port(20_000);
        // Made before the cluster, so a failure part-way is cleaned up too.
        let cluster = OwnPostgres {
            version,
            name: unique(test),
            port,
        };
        let port = port.to_string();
        let args = [&cluster.version, &cluster.name, "-p", &port];
        let args = [&args[..], &["--start-conf", "manual", "--", "-A", "trust"]].concat();
        run("pg_createcluster", &args);
        cluster
    }

    fn config_dir(&self) -> PathBuf {
        Path::new("/etc/postgresql")
            .join(&self.version)
            .join(&self.name)
    }

    /// `file` copied into the cluster's configuration folder, owned by
    /// `postgres` with mode 0600: the server refuses a key others can read.
    fn owned_copy(&self, file: &Path) -> PathBuf {
        let to = self
            .config_dir()
            .join(file.file_name().expect("a file name"));
        std::fs::copy(file, &to).expect("copied into the cluster's folder");
        let to_text = to.to_str().expect("a UTF-8 path");
        run("chown", &["postgres:postgres", to_text]);
        run("chmod", &["0600", to_text]);
        to
    }

    /// `pg_ctlcluster … action`, e.g. `start`, or `stop -m immediate`.
    pub fn ctl(&self, action: &[&str]) {
        let mut args = vec!["--skip-systemctl-redirect", &self.version, &self.name];
        args.extend_from_slice(action);
        run("pg_ctlcluster", &args);
    }

    /// A connection string for its `postgres` database, over TCP.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user=postgres",
            self.port
        )
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = server_command("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}
