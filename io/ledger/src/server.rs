//! A PostgreSQL server as a connection string describes it, with the TLS
//! its `sslmode` asks for: [`PgServer::connect`] is the one place the I/O
//! side connects to PostgreSQL.
//!
//! tokio-postgres reads `sslmode` only up to `require` and knows no
//! `sslrootcert`, so both are taken out of the string here and the rest is
//! left to it. The modes, as libpq names them:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | no | |
//! | `prefer` (the default) | no: callwatch has always connected in the clear here, and still does | |
//! | `require` | yes, or the connection fails | not checked (as libpq); with `sslrootcert`, checked as `verify-ca` (as libpq) |
//! | `verify-ca` | yes | signed by a trusted root |
//! | `verify-full` | yes | signed by a trusted root and naming the host |
//!
//! The trusted roots are the PEM file `sslrootcert` names, or without one
//! (or with `sslrootcert=system`) the public webpki roots. libpq's `allow`
//! is refused.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use callwatch_common::conninfo;
use percent_encoding::percent_decode_str;
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{self, Check};

/// What a connection string's `sslmode` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, PgUrlError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(PgUrlError(format!(
                    "sslmode `{other}` is not supported: use disable, prefer, require, \
                     verify-ca or verify-full"
                )));
            }
        })
    }

    /// Whether the connection is encrypted.
    pub fn encrypts(self) -> bool {
        !matches!(self, SslMode::Disable | SslMode::Prefer)
    }
}

/// Why a connection string cannot be used. Never holds the string itself:
/// it may carry a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PgUrlError(String);

/// The stream of a connection to a [`PgServer`].
pub type PgStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// A connection to a [`PgServer`]: spawn it, and its client works.
pub type PgConnection = tokio_postgres::Connection<Socket, PgStream>;

/// A PostgreSQL server to connect to: the parsed connection string and the
/// TLS its `sslmode` asks for. `Debug` shows no password.
#[derive(Clone)]
pub struct PgServer {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for PgServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres's own Debug of the config shows no password.
        f.debug_struct("PgServer")
            .field("config", &self.config)
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PgServer {
    /// The server `url` (`postgres://…` or `keyword = value`) describes,
    /// with its roots read if its `sslmode` verifies.
    pub fn parse(url: &str) -> Result<PgServer, PgUrlError> {
        let options = TlsOptions::take(url)?;
        let mut config: tokio_postgres::Config = options
            .rest
            .parse()
            .map_err(|e| PgUrlError(format!("not a PostgreSQL connection string ({e})")))?;
        let mode = options.mode;
        config.ssl_mode(if mode.encrypts() {
            DriverSslMode::Require
        } else {
            DriverSslMode::Disable
        });
        let check = match mode {
            SslMode::VerifyFull => Check::ChainAndHost,
            SslMode::VerifyCa => Check::Chain,
            // libpq: `require` with a root certificate is `verify-ca`.
            SslMode::Require if options.root_cert.is_some() => Check::Chain,
            _ => Check::Nothing,
        };
        let roots = match check {
            Check::Nothing => rustls::RootCertStore::empty(),
            _ => tls::roots(options.root_cert.as_deref()).map_err(PgUrlError)?,
        };
        let client = tls::client_config(check, roots).map_err(PgUrlError)?;
        Ok(PgServer {
            config,
            mode,
            tls: MakeRustlsConnect::new(client),
        })
    }

    /// What its `sslmode` asks for.
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// The connection string's settings, TLS aside.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Gives up on a connection attempt after `limit`.
    pub fn set_connect_timeout(&mut self, limit: std::time::Duration) {
        self.config.connect_timeout(limit);
    }

    /// Connects: a client, and the connection to spawn. A TLS failure
    /// (no TLS on the server, a certificate not trusted or not naming the
    /// host) is the error's cause.
    pub async fn connect(&self) -> Result<(Client, PgConnection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

impl FromStr for PgServer {
    type Err = PgUrlError;

    fn from_str(url: &str) -> Result<PgServer, PgUrlError> {
        PgServer::parse(url)
    }
}

/// `sslmode` and `sslrootcert`, taken out of a connection string.
struct TlsOptions {
    /// The string without them, for tokio-postgres.
    rest: String,
    mode: SslMode,
    /// `None` for the public roots (`sslrootcert=system` too).
    root_cert: Option<PathBuf>,
}

impl TlsOptions {
    fn take(url: &str) -> Result<TlsOptions, PgUrlError> {
        let mut options = TlsOptions {
            rest: String::new(),
            mode: SslMode::Prefer,
            root_cert: None,
        };
        let mut take = |key: &str, value: &str| -> Result<bool, PgUrlError> {
            match key {
                "sslmode" => options.mode = SslMode::parse(value)?,
                "sslrootcert" if value == "system" => options.root_cert = None,
                "sslrootcert" => options.root_cert = Some(PathBuf::from(value)),
                _ => return Ok(false),
            }
            Ok(true)
        };
        let rest = if conninfo::is_url(url) {
            take_from_query(url, &mut take)?
        } else {
            take_from_pairs(url, &mut take)?
        };
        options.rest = rest;
        Ok(options)
    }
}

/// Options the type takes: `Ok(true)` for one it took out.
type Take<'a> = dyn FnMut(&str, &str) -> Result<bool, PgUrlError> + 'a;

fn take_from_query(url: &str, take: &mut Take<'_>) -> Result<String, PgUrlError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !take(&decode(key), &decode(value))? {
            kept.push(pair);
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn take_from_pairs(url: &str, take: &mut Take<'_>) -> Result<String, PgUrlError> {
    let pairs = conninfo::pairs(url)
        .ok_or_else(|| PgUrlError("not a PostgreSQL connection string".to_owned()))?;
    let mut kept = Vec::new();
    for pair in pairs {
        if !take(pair.key, &pair.value)? {
            kept.push(&url[pair.span]);
        }
    }
    Ok(kept.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(url: &str) -> (String, SslMode, Option<PathBuf>) {
        let o = TlsOptions::take(url).unwrap();
        (o.rest, o.mode, o.root_cert)
    }

    #[test]
    fn tls_options_are_taken_out_of_both_forms() {
        assert_eq!(
            taken("host=db sslmode = 'verify-full' user=cw sslrootcert=/ca\\ dir/ca.pem"),
            (
                "host=db user=cw".to_owned(),
                SslMode::VerifyFull,
                Some(PathBuf::from("/ca dir/ca.pem"))
            )
        );
        assert_eq!(
            taken("postgres://cw:pw@db/cw?sslmode=require&application_name=x&sslrootcert=system"),
            (
                "postgres://cw:pw@db/cw?application_name=x".to_owned(),
                SslMode::Require,
                None
            )
        );
        assert_eq!(
            taken("postgresql://db/cw?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca"),
            (
                "postgresql://db/cw".to_owned(),
                SslMode::VerifyCa,
                Some(PathBuf::from("/etc/ca.pem"))
            )
        );
        assert_eq!(taken("host=db").1, SslMode::Prefer, "the default");
    }

    #[test]
    fn each_mode_asks_the_driver_for_tls_or_not() {
        let mode = |url: &str| PgServer::parse(url).unwrap().config.get_ssl_mode();
        assert_eq!(mode("host=db"), DriverSslMode::Disable, "prefer: as before");
        assert_eq!(mode("host=db sslmode=disable"), DriverSslMode::Disable);
        assert_eq!(mode("host=db sslmode=require"), DriverSslMode::Require);
        assert_eq!(mode("host=db sslmode=verify-full"), DriverSslMode::Require);
        assert_eq!(
            mode("postgres://db/x?sslmode=verify-ca"),
            DriverSslMode::Require
        );
    }

    #[test]
    fn errors_name_the_problem_and_not_the_password() {
        for (url, needle) in [
            ("host=db password=hunter2 sslmode=allow", "sslmode `allow`"),
            (
                "host=db password=hunter2 sslmode=verify-full sslrootcert=/nowhere.pem",
                "/nowhere.pem",
            ),
            (
                "host=db password='hunter2",
                "not a PostgreSQL connection string",
            ),
            (
                "host=db password=hunter2 port=x",
                "not a PostgreSQL connection string",
            ),
        ] {
            let e = PgServer::parse(url).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains("hunter2"), "{url}: {e}");
        }
        let server = PgServer::parse("postgres://cw:hunter2@db/cw").unwrap();
        assert!(!format!("{server:?}").contains("hunter2"));
    }
}
