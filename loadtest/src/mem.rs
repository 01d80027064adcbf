//! The process's resident memory and its threads' waits for a CPU, read
//! from /proc (Linux).

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

/// Nanoseconds the calling thread has spent runnable but waiting for a
/// CPU: time another task held the core it was due on (the second field
/// of its `schedstat`). `None` where /proc does not say.
pub fn own_run_queue_wait() -> Option<u64> {
    schedstat_wait(std::path::Path::new("/proc/thread-self"))
}

/// The same for every thread of this process whose name starts with
/// `prefix`, by thread id.
pub fn run_queue_waits(prefix: &str) -> Vec<(u64, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let tid = task.file_name().to_str()?.parse().ok()?;
            (name.starts_with(prefix)).then_some(())?;
            Some((tid, schedstat_wait(&dir)?))
        })
        .collect()
}

fn schedstat_wait(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("schedstat"))
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn run_queue_waits_find_the_named_threads_and_no_others() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        // A thread takes its name as it starts running, so the test waits
        // until it has.
        let waiter = std::thread::Builder::new()
            .name("cw-test-waiter".into())
            .spawn(move || {
                ready_tx.send(()).expect("the test is waiting");
                rx.recv()
            })
            .expect("spawning a thread");
        ready.recv().expect("the waiter started");
        let found = run_queue_waits("cw-test-waiter");
        assert_eq!(found.len(), 1, "exactly the one named thread: {found:?}");
        assert!(run_queue_waits("no-such-thread").is_empty());
        assert!(own_run_queue_wait().is_some());
        tx.send(()).expect("the waiter is alive");
        waiter.join().expect("no panic").expect("a message");
    }
}
