//! `callwatch generate`: a simulated market's events as JSON Lines, the
//! input for replay benchmarks and experiments.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use engine::sim::{Market, MarketConfig};

/// Write a seeded simulated market's events as JSON Lines (mostly prices).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many events, the chats' subscriptions and settings included.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The seed; the same seed gives the same file.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[command(flatten)]
    market: MarketArgs,
    /// Where to write; `-` is stdout.
    #[arg(long, value_name = "FILE", default_value = "-")]
    output: PathBuf,
}

/// The shape of a simulated market.
#[derive(Debug, Clone, clap::Args)]
pub struct MarketArgs {
    /// Distinct tokens (popularity follows a Zipf law).
    #[arg(long, default_value_t = 2_000)]
    pub tokens: u64,
    /// Calling channels.
    #[arg(long, default_value_t = 40)]
    pub channels: u64,
    /// Subscribed chats.
    #[arg(long, default_value_t = 50)]
    pub chats: u64,
    /// Share of token events that are calls; the rest are prices.
    #[arg(long, default_value_t = 0.02)]
    pub call_share: f64,
}

impl MarketArgs {
    pub fn config(&self, seed: u64) -> anyhow::Result<MarketConfig> {
        anyhow::ensure!(self.tokens > 0, "--tokens must be at least 1");
        anyhow::ensure!(self.channels > 0, "--channels must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.call_share),
            "--call-share must be between 0 and 1"
        );
        Ok(MarketConfig {
            seed,
            tokens: self.tokens,
            channels: self.channels,
            chats: self.chats,
            call_share: self.call_share,
            ..MarketConfig::default()
        })
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let market = Market::new(args.market.config(args.seed)?);
    let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(
            File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        )
    };
    // Progress on stderr, drawn only when stderr is a terminal.
    let progress = indicatif::ProgressBar::new(args.events);
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "generating [{bar:40}] {human_pos}/{human_len} events ({per_sec}, {eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut buf = Vec::with_capacity(1 << 17);
    for (i, event) in market.take(usize::try_from(args.events)?).enumerate() {
        event.write_json(&mut buf);
        if buf.len() >= 1 << 16 {
            out.write_all(&buf)?;
            buf.clear();
            progress.set_position(i as u64);
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    progress.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}
