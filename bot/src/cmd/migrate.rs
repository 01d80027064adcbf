//! `callwatch migrate`: applies the PostgreSQL migrations of `migrations/`
//! that the database does not have yet.

use std::process::ExitCode;

use callwatch_common::secret::SecretUrl;
use callwatch_ledger::migrate::MIGRATIONS;
use callwatch_ledger::pg::connect_and_migrate;

use super::ConfigArgs;

/// Apply pending PostgreSQL migrations (each once; safe to run again).
#[derive(Debug, clap::Args)]
#[command(after_help = super::environment_help())]
pub struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// The database, as a URL (`postgres://user@host:port/db`) or key=value
    /// pairs (`host=… dbname=…`) [default: postgres.url, or DATABASE_URL].
    #[arg(long)]
    database_url: Option<SecretUrl>,
    /// The schema callwatch's tables live in, created if missing [default:
    /// postgres.schema, or CALLWATCH_SCHEMA, or `callwatch`].
    #[arg(long)]
    schema: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    let url = match &args.database_url {
        Some(url) => url.expose().to_owned(),
        None => settings.postgres.url().map(str::to_owned).ok_or_else(|| {
            anyhow::anyhow!("no database: pass --database-url, or set DATABASE_URL or postgres.url")
        })?,
    };
    let schema = args.schema.clone().unwrap_or(settings.postgres.schema);
    anyhow::ensure!(
        callwatch_ledger::migrate::valid_schema_name(&schema),
        "--schema `{schema}`: use 1 to 63 lowercase letters, digits or underscores"
    );
    let applied = super::runtime()?.block_on(connect_and_migrate(
        &url,
        &schema,
        "--database-url / DATABASE_URL / postgres.url",
    ))?;
    if applied.is_empty() {
        println!(
            "schema {schema} is up to date ({} migration(s))",
            MIGRATIONS.len()
        );
    } else {
        for v in &applied {
            let m = MIGRATIONS
                .iter()
                .find(|m| m.version == *v)
                .expect("applied from the list");
            println!("applied {} to schema {schema}", m.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
