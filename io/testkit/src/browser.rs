//! Headless Chromium for browser tests: a page's DOM once loaded, and
//! screenshots kept under `target/test-artifacts/`. A test that needs it
//! fails, saying what to install, when Chromium is missing: it never
//! passes without a browser.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium runs so far in this process, for their profiles' names.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Headless Chromium, each run with a profile of its own.
#[derive(Debug)]
pub struct Browser {
    exe: PathBuf,
    artifacts: PathBuf,
}

impl Browser {
    /// Chromium, or a failure that says what to install: this test never
    /// passes without a browser.
    pub fn find(target_tmpdir: &str) -> Browser {
        let exe = std::env::var_os("CALLWATCH_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(
            exe.exists(),
            "this browser test needs Chromium at {}: install it \
             (Debian/Ubuntu: apt-get install chromium; scripts/test does so when run as root) \
             or point CALLWATCH_CHROMIUM at a Chromium or Chrome binary",
            exe.display()
        );
        let artifacts = Path::new(target_tmpdir)
            .parent()
            .expect("target/tmp is under target/")
            .join("test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        Browser { exe, artifacts }
    }

    /// Runs Chromium headless with `args` then `url`; its standard output.
    pub fn run(&self, args: &[String], url: &str) -> String {
        let profile = std::env::temp_dir().join(format!(
            "callwatch-chromium-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut child = Command::new(&self.exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            // The browser needs no fake clock (the links are checked by
            // serve's); libfaketime in a browser only risks a hang.
            .env_remove("LD_PRELOAD")
            .env_remove("FAKETIME")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.exe.display()));
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut { out }, &mut text).unwrap();
            text
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("Chromium took over 60 s on {url}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&profile);
        reader.join().unwrap()
    }

    /// The page's DOM once loaded, as Chromium serialises it.
    pub fn dom(&self, url: &str) -> String {
        let dom = self.run(&["--dump-dom".to_owned()], url);
        assert!(dom.contains("</html>"), "no page at {url}: {dom}");
        dom
    }

    /// A screenshot of `url` at `(width, height)`, kept as
    /// `target/test-artifacts/{name}.png`.
    pub fn screenshot(&self, url: &str, name: &str, (width, height): (u32, u32)) {
        let path = self.artifacts.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&path);
        self.run(
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={width},{height}"),
            ],
            url,
        );
        let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(png.starts_with(b"\x89PNG"), "{} is no PNG", path.display());
        eprintln!("screenshot: {}", path.display());
    }
}
