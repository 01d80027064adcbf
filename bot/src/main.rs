//! `callwatch`: the command line of the callwatch service.
//!
//! Each subcommand lives in a file of its own under `cmd/`; they share the
//! engine flags in [`cmd::EngineArgs`].
//!
//! # Layout
//! - `cmd/replay.rs`: events from a file through the engine, alerts out
//!   (CONTRACT.md, "The replay command").
//! - `cmd/demo.rs`: the embedded default: a simulated market, readable alerts.
//! - `cmd/generate.rs`: write a simulated market's events as JSON Lines.
//! - `cmd/migrate.rs`: apply the PostgreSQL migrations.
//! - `cmd/rebuild.rs`: load the tracked entries from Redis, timed.
//! - `cmd/serve.rs`: the live service.
//! - `cmd/feed.rs`: the sources alone (calls from posts, DEX prices).
//! - `cmd/config.rs`: the service's resolved configuration, secrets masked.
//!
//! Everything else is in the library crates under `io/`; this binary parses
//! flags, installs logging and calls them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

// mimalloc: the shards allocate little, but the writer and the parser's
// occasional allocations contend less than with the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Follows token calls by Telegram channels and alerts subscribers.
#[derive(Debug, Parser)]
#[command(name = "callwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Replay(cmd::replay::Args),
    Demo(cmd::demo::Args),
    Generate(cmd::generate::Args),
    Migrate(cmd::migrate::Args),
    Rebuild(cmd::rebuild::Args),
    Config(cmd::config::Args),
    Serve(cmd::serve::Args),
    Feed(cmd::feed::Args),
}

/// A write to a closed pipe (`callwatch demo | head`) ends the process
/// quietly, as it does for other command-line tools, instead of a panic in
/// the middle of printing: Rust ignores SIGPIPE unless told otherwise.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default at the start of
    // main, before any thread is spawned, races with nothing.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are successes; every usage error exits 1, as
            // CONTRACT.md asks of a bad flag (clap's own default is 2, which
            // replay keeps for a bad line under --strict).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    restore_sigpipe();
    // serve sets its own level and format from its settings.
    if !matches!(cli.command, Command::Serve(_) | Command::Feed(_))
        && let Err(e) = cmd::init_logging("warn", false)
    {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Replay(args) => cmd::replay::run(&args),
        Command::Demo(args) => cmd::demo::run(&args),
        Command::Generate(args) => cmd::generate::run(&args),
        Command::Migrate(args) => cmd::migrate::run(&args),
        Command::Rebuild(args) => cmd::rebuild::run(&args),
        Command::Config(args) => cmd::config::run(&args),
        Command::Serve(args) => cmd::serve::run(&args),
        Command::Feed(args) => cmd::feed::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
