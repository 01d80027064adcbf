//! `loadtest engine --report` read the way people read it: in headless
//! Chromium. Two small runs, the second with `--compare` the first and the
//! predecessor's baseline: the page's charts carry labelled ticks on both
//! axes (the percentiles 50 % to 99.99 % on the latency curves), a legend
//! naming this run, the compared report and the baseline, and the summary
//! stays inside the page's width; `.hgrm` files and `timeline.csv` lie
//! beside it. A screenshot is kept in `target/test-artifacts/`.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `CALLWATCH_CHROMIUM`): without
//! it the test fails, saying what to install.

use std::path::Path;
use std::process::Command;

use callwatch_testkit::browser::Browser;

/// One small engine run writing its report to `dir`, with `extra` flags.
fn run(dir: &Path, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "engine",
            "--tracked-keys",
            "20000",
            "--tokens",
            "2000",
            "--chats",
            "200",
            // A second of full speed whatever the machine's speed, so the
            // timeline has its marks (one each 100 ms).
            "--updates",
            "50000000",
            "--duration",
            "1",
            "--shards",
            "1",
            "--no-pin",
            "--report",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `(value, percentile)` rows of an `.hgrm` file, checked for its
/// header and footer.
fn hgrm_rows(path: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"),
        "{}: {text}",
        path.display()
    );
    assert!(text.contains("#[Max     ="), "{text}");
    text.lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split_whitespace();
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_report_draws_labelled_axes_a_baseline_and_a_compared_run() {
    let browser = Browser::find(env!("CARGO_TARGET_TMPDIR"));
    let root =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", std::process::id()));
    let (first, second) = (root.join("first"), root.join("second"));
    let _ = std::fs::remove_dir_all(&root);
    run(&first, &[]);
    run(
        &second,
        &[
            "--baseline",
            "seed",
            "--baseline-secs",
            "1",
            "--compare",
            first.to_str().unwrap(),
        ],
    );

    for name in ["latency.hgrm", "latency-at-max.hgrm"] {
        let rows = hgrm_rows(&second.join(name));
        assert!(rows.len() > 10, "{name}: {rows:?}");
        assert!(
            rows.windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
            "{name} rises: {rows:?}"
        );
        assert_eq!(rows.last().unwrap().1, 1.0, "{name} ends at the maximum");
    }
    let timeline = std::fs::read_to_string(second.join("timeline.csv")).unwrap();
    assert!(timeline.starts_with("seconds,events_per_sec\n") && timeline.lines().count() > 2);

    let url = format!("file://{}", second.join("report.html").display());
    let dom = browser.dom(&url);
    let count = |needle: &str| dom.matches(needle).count();
    for label in ["50%", "90%", "99%", "99.9%", "99.99%"] {
        assert_eq!(
            count(&format!(r#"class="xtick">{label}</text>"#)),
            2,
            "both latency charts mark {label}"
        );
    }
    assert!(count(r#"class="ytick""#) >= 9, "values on every y axis");
    assert!(
        count(r#"class="xtick""#) >= 12,
        "values on the time axis too"
    );
    assert!(dom.contains(r#"class="legend">this run</text>"#));
    assert_eq!(
        count(&format!(r#"class="legend">{}</text>"#, first.display())),
        3,
        "the compared report on every chart"
    );
    assert!(dom.contains(r#"class="legend">predecessor's design"#));
    assert!(
        dom.contains("white-space:pre-wrap"),
        "the summary wraps in its box"
    );
    browser.screenshot(&url, "loadtest-report", (800, 2200));
    let _ = std::fs::remove_dir_all(&root);
}
