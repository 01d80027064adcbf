//! The process's resident memory, read from /proc (Linux).

/// Resident set size in bytes, or 0 where /proc is not there.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

fn page_size() -> u64 {
    // Every Linux this runs on uses 4 KiB base pages for RSS accounting in
    // statm; reading it needs libc, which this crate does not otherwise use.
    4096
}
