//! `callwatch migrate`: applies the PostgreSQL migrations of `migrations/`
//! that the database does not have yet.

use std::process::ExitCode;

use anyhow::Context;
use callwatch_io::migrate::MIGRATIONS;

/// Apply pending PostgreSQL migrations (each once; safe to run again).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database, as a URL (`postgres://user@host:port/db`) or key=value
    /// pairs (`host=… dbname=…`).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The schema callwatch's tables live in (created if missing).
    #[arg(long, default_value = "callwatch")]
    schema: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let applied = super::migrate_database(
        &rt,
        &args.database_url,
        &args.schema,
        "--database-url / DATABASE_URL",
    )?;
    if applied.is_empty() {
        println!(
            "schema {} is up to date ({} migration(s))",
            args.schema,
            MIGRATIONS.len()
        );
    } else {
        for v in &applied {
            let m = MIGRATIONS
                .iter()
                .find(|m| m.version == *v)
                .expect("applied from the list");
            println!("applied {} to schema {}", m.name, args.schema);
        }
    }
    Ok(ExitCode::SUCCESS)
}
