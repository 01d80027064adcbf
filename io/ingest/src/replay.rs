//! `replay`: JSON Lines events through the sharded engine to JSON Lines
//! alerts, with bad lines reported and a summary at the end.
//!
//! Three threads of our own besides the shards: the caller's reads, parses
//! and routes; a writer merges the shards' effects and writes them; the
//! shards decide. Every queue between them is bounded, so a slow output
//! slows the input instead of filling memory.

use std::io::{self, BufRead, Write};
use std::time::Instant;

use engine::EngineConfig;
use engine::effect::JsonLines;
use engine::event::{limits, write_json_string};
use engine::ingest::{Ingest, Outcome};
use engine::router::{self, EngineStopped};

use crate::lines::{Line, LineReader};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub engine: EngineConfig,
    /// Stop at the first bad line.
    pub strict: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySummary {
    /// Lines that were not blank (good and bad).
    pub events_read: u64,
    pub rejected: u64,
    pub blank: u64,
    pub alerts: u64,
    pub seconds: f64,
    /// `strict` was set and a bad line stopped the run.
    pub stopped_at_bad_line: bool,
}

impl ReplaySummary {
    pub fn events_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events_read as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The summary as the one JSON object that ends stderr.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"events_read\": {}, \"rejected\": {}, \"blank_lines\": {}, \"alerts\": {}, \"seconds\": {:.3}, \"events_per_sec\": {:.0}}}",
            self.events_read,
            self.rejected,
            self.blank,
            self.alerts,
            self.seconds,
            self.events_per_sec()
        )
    }
}

/// Why a replay could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("invalid engine configuration: {0}")]
    Config(#[from] engine::config::ConfigError),
    #[error("reading input: {0}")]
    Input(#[source] io::Error),
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
    #[error("writing diagnostics: {0}")]
    Diagnostics(#[source] io::Error),
    #[error(transparent)]
    Engine(#[from] EngineStopped),
}

/// Bytes of output gathered before a write.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// Room past `OUTPUT_CHUNK` for the alert that crosses it, so the buffer
/// keeps its first allocation: an alert's fixed fields take a few hundred
/// bytes, and a callers list 21 bytes a channel at most (a longer one
/// grows the buffer once, for the rest of the run).
const MAX_ALERT_BYTES: usize = 16 * 1024;

/// Replays `input` to `output`, reporting bad lines on `errors` as they
/// come. The summary is returned, not printed: the caller decides.
pub fn run<R, W, E>(
    input: R,
    output: W,
    errors: &mut E,
    opts: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError>
where
    R: BufRead,
    W: Write + Send,
    E: Write,
{
    let started = Instant::now();
    let (mut router, mut effects, workers) = router::start(&opts.engine)?;
    let mut summary = ReplaySummary {
        events_read: 0,
        rejected: 0,
        blank: 0,
        alerts: 0,
        seconds: 0.0,
        stopped_at_bad_line: false,
    };
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("callwatch-writer".into())
            .spawn_scoped(scope, move || -> Result<u64, ReplayError> {
                let mut output = output;
                let mut buf = Vec::with_capacity(OUTPUT_CHUNK + MAX_ALERT_BYTES);
                let mut json = JsonLines::new();
                let mut alerts = 0u64;
                while let Some(batch) = effects.next_batch()? {
                    for effect in &batch {
                        json.write(effect, &mut buf);
                        // Written as it fills, not once per batch: a
                        // batch of a thousand alerts would outgrow it.
                        if buf.len() >= OUTPUT_CHUNK {
                            output.write_all(&buf).map_err(ReplayError::Output)?;
                            buf.clear();
                        }
                    }
                    alerts += batch.len() as u64;
                    effects.recycle(batch);
                }
                output.write_all(&buf).map_err(ReplayError::Output)?;
                output.flush().map_err(ReplayError::Output)?;
                Ok(alerts)
            })
            .expect("spawning the writer thread");

        let read = feed(input, errors, opts.strict, &mut router, &mut summary);
        // Closing the router lets the shards and then the writer finish,
        // also after a read error, so that nothing is left half-written.
        let finished = router.finish();
        let written = writer.join().expect("the writer thread does not panic");
        let joined = workers.join();
        // The writer's error explains an engine that stopped early (a
        // closed output stops the shards, which stops the router).
        summary.alerts = written?;
        read?;
        finished?;
        joined?;
        Ok::<(), ReplayError>(())
    })?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Reads, parses and routes every line; reports bad ones.
fn feed<R: BufRead, E: Write>(
    input: R,
    errors: &mut E,
    strict: bool,
    router: &mut router::Router,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let mut reader = LineReader::new(input, limits::MAX_LINE_BYTES);
    let mut ingest = Ingest::new();
    let mut report = Vec::with_capacity(256);
    while let Some(line) = reader.next_line().map_err(ReplayError::Input)? {
        let outcome = match line {
            Line::Text(text) => ingest.line(text),
            Line::Overlong(len) => ingest.overlong_line(len),
        };
        match outcome {
            Outcome::Blank => summary.blank += 1,
            Outcome::Event(env) => {
                summary.events_read += 1;
                router.submit(env)?;
            }
            Outcome::Bad { seq, error } => {
                summary.events_read += 1;
                summary.rejected += 1;
                report.clear();
                report.extend_from_slice(b"{\"line\": ");
                report.extend_from_slice(seq.to_string().as_bytes());
                report.extend_from_slice(b", \"error\": ");
                write_json_string(&mut report, &error.to_string());
                report.extend_from_slice(b"}\n");
                errors
                    .write_all(&report)
                    .map_err(ReplayError::Diagnostics)?;
                if strict {
                    summary.stopped_at_bad_line = true;
                    break;
                }
            }
        }
    }
    Ok(())
}
