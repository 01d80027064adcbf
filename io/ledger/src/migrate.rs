//! PostgreSQL schema migrations: the SQL files in `migrations/`, built into
//! the binary, applied in order, each once.
//!
//! All pending migrations run in one transaction that first takes an
//! advisory lock, so two processes starting together cannot both apply
//! one, and a failure leaves the schema as it was. Applied versions are
//! recorded in `callwatch_migrations` inside the target schema.

use tokio_postgres::Client;

/// One migration: its version (the file's numeric prefix), name and SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this list against the files in
/// `migrations/`, so a new file cannot be forgotten here.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_schema.sql",
        sql: include_str!("../../../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "0002_payments.sql",
        sql: include_str!("../../../migrations/0002_payments.sql"),
    },
    Migration {
        version: 3,
        name: "0003_payments_dropped.sql",
        sql: include_str!("../../../migrations/0003_payments_dropped.sql"),
    },
    Migration {
        version: 4,
        name: "0004_grant_ids.sql",
        sql: include_str!("../../../migrations/0004_grant_ids.sql"),
    },
];

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "schema name `{0}` is not allowed: use 1 to 63 lowercase letters, digits or \
         underscores, not starting with a digit"
    )]
    SchemaName(String),
    #[error("migration {version} ({name}) failed: {}", pg_detail(source))]
    Apply {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("PostgreSQL: {}", pg_detail(.0))]
    Db(#[from] tokio_postgres::Error),
}

/// A PostgreSQL error as a person needs it: tokio-postgres displays a
/// server error as just "db error", with the server's message, detail and
/// code one level down.
pub fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Whether `schema` is a name callwatch accepts: 1 to 63 lowercase letters,
/// digits or underscores, not starting with a digit, so it is safe to splice
/// into SQL (it cannot be a bind parameter).
pub fn valid_schema_name(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit()
}

/// A schema name safe to splice into SQL (it cannot be a bind parameter).
fn check_schema(schema: &str) -> Result<(), MigrateError> {
    if valid_schema_name(schema) {
        Ok(())
    } else {
        Err(MigrateError::SchemaName(schema.to_owned()))
    }
}

/// Applies every migration not yet applied in `schema` (created if
/// missing) and returns the versions it applied, oldest first.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, MigrateError> {
    check_schema(schema)?;
    let tx = client.transaction().await?;
    // One lock for every callwatch migrator on this database.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('callwatch_migrations'))",
        &[],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         SET LOCAL search_path TO \"{schema}\";
         CREATE TABLE IF NOT EXISTS callwatch_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM callwatch_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        let fail = |source| MigrateError::Apply {
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(m.sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO callwatch_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(fail)?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_migrations_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations/ exists")
            .map(|e| {
                e.expect("readable entry")
                    .file_name()
                    .into_string()
                    .expect("UTF-8 name")
            })
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i32::try_from(i + 1).unwrap(),
                "versions count up from 1"
            );
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }

    #[test]
    fn schema_names_are_checked() {
        for ok in ["callwatch", "cw_test_1", "_x"] {
            check_schema(ok).unwrap();
        }
        for bad in [
            "",
            "1abc",
            "Callwatch",
            "a-b",
            "a\"; DROP TABLE x; --",
            &"a".repeat(64),
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }
}
