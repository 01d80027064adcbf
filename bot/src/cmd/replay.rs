//! `callwatch replay`: CONTRACT.md's replay command.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use callwatch_ingest::replay::{ReplayOptions, run as replay};

use super::EngineArgs;

/// Replay JSON Lines events through the engine and print the alerts.
///
/// Bad lines are reported on stderr as {"line": N, "error": "..."} and
/// skipped; a summary object ends stderr. Exit status: 0 on success (also
/// with rejected lines), 2 on a bad line under --strict, 1 on any other
/// failure.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events to read; `-` is stdin.
    #[arg(long, value_name = "FILE", default_value = "-")]
    input: PathBuf,
    /// Where to write alerts; `-` is stdout.
    #[arg(long, value_name = "FILE", default_value = "-")]
    output: PathBuf,
    /// Stop with exit status 2 at the first bad line.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

fn is_dash(p: &std::path::Path) -> bool {
    p.as_os_str() == "-"
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let opts = ReplayOptions {
        engine: args.engine.config()?,
        strict: args.strict,
    };
    // The input is opened first, so a missing input file leaves no empty
    // output file behind.
    let input: Box<dyn BufRead> = if is_dash(&args.input) {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        Box::new(BufReader::with_capacity(256 * 1024, file))
    };
    let output: Box<dyn Write + Send> = if is_dash(&args.output) {
        Box::new(io::stdout())
    } else {
        let file = File::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
        Box::new(file)
    };
    let stderr = io::stderr();
    let mut errors = BufWriter::new(stderr.lock());
    let summary = replay(input, output, &mut errors, &opts);
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            let _ = errors.flush();
            return Err(e.into());
        }
    };
    writeln!(errors, "{}", summary.to_json())?;
    errors.flush()?;
    Ok(if summary.stopped_at_bad_line {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
