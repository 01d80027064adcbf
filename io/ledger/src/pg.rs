//! Where PostgreSQL is (the `[postgres]` section of the service's
//! settings), and the connections the ledger's users keep.

use callwatch_common::secret::SecretUrl;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::migrate::{self, MigrateError};
use crate::server::{PgServer, PgUrlError};

/// The `[postgres]` section of the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// A connection string (`host=… dbname=… user=…` or `postgres://…`),
    /// TLS by its `sslmode` and `sslrootcert` as libpq reads them (see
    /// [`crate::server`]); never printed unmasked. Empty: no audit rows
    /// and no subscriptions of record [default: empty].
    pub url: SecretUrl,
    /// The schema holding callwatch's tables [default: `callwatch`].
    pub schema: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: SecretUrl::default(),
            schema: "callwatch".to_owned(),
        }
    }
}

impl PostgresConfig {
    /// The connection string, when one is configured.
    pub fn url(&self) -> Option<&str> {
        (!self.url.is_empty()).then_some(self.url.expose())
    }

    /// The server, when one is configured.
    pub fn server(&self) -> Result<Option<PgServer>, PgUrlError> {
        self.url().map(PgServer::parse).transpose()
    }

    /// What is wrong with it, each problem named.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.server() {
            problems.push(format!("postgres.url: {e}"));
        }
        if !migrate::valid_schema_name(&self.schema) {
            problems.push(format!(
                "postgres.schema `{}`: use 1 to 63 lowercase letters, digits or underscores",
                self.schema
            ));
        }
        problems
    }
}

/// Why connecting and migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL may hold a password: the error names the server's answer
    /// only, and `hint` says where the URL came from.
    #[error("cannot connect to PostgreSQL (check {hint}): {detail}")]
    Connect { hint: String, detail: String },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
}

/// Connects to `url` and applies the migrations `schema` lacks, returning
/// their versions.
pub async fn connect_and_migrate(
    url: &str,
    schema: &str,
    hint: &str,
) -> Result<Vec<i32>, ConnectError> {
    let failed = |detail: String| ConnectError::Connect {
        hint: hint.to_owned(),
        detail,
    };
    let server = PgServer::parse(url).map_err(|e| failed(e.to_string()))?;
    let (mut client, conn) = server
        .connect()
        .await
        .map_err(|e| failed(migrate::pg_detail(&e)))?;
    let driver = tokio::spawn(conn);
    let applied = migrate::migrate(&mut client, schema).await;
    drop(client);
    let _ = driver.await;
    Ok(applied?)
}

/// The client in `slot`, connecting to `server` first when there is none
/// or it has closed: for tasks that keep one PostgreSQL connection and
/// make it again after a failure.
pub async fn connected<'a>(
    server: &PgServer,
    slot: &'a mut Option<Client>,
) -> Result<&'a mut Client, tokio_postgres::Error> {
    if slot.as_ref().is_none_or(Client::is_closed) {
        let (client, connection) = server.connect().await?;
        // Its error reaches the caller through the client's next call.
        tokio::spawn(connection);
        *slot = Some(client);
    }
    Ok(slot.as_mut().expect("connected above"))
}
