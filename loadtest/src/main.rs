//! `loadtest`: callwatch's load-test harness.
//!
//! Its scenarios (`engine`, `rebuild`, `pipeline`) are the subject of the
//! load-test issue and are not built yet. Until they are, the binary says
//! so and exits non-zero rather than pretending to measure anything; the
//! engine's throughput can meanwhile be measured with `callwatch replay`
//! and the criterion benches (BENCHMARKS.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "loadtest: no scenario is implemented yet (engine, rebuild and pipeline \
         arrive with the load-test issue).\n\
         Meanwhile: `cargo bench -p callwatch-benches` and `callwatch replay` \
         measure the engine; see BENCHMARKS.md."
    );
    ExitCode::from(2)
}
