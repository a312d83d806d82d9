//! Giving memory back to the system after a load peak.
//!
//! glibc's allocator keeps what a burst of connections freed: each worker thread allocates
//! from its own arena, and an arena only shrinks from its top, so a few live allocations
//! keep megabytes of freed pages resident (measured: 55 MiB idle after a 1,024-connection
//! burst, against 13 MiB before; BENCHMARKS.md). `malloc_trim` returns the free pages inside
//! every arena. It walks the arenas under their locks, so it runs only after connections
//! have closed in numbers, or after they have risen by thousands and settled (see
//! [`TrimPolicy`]), from a thread of its own.
//!
//! The only `unsafe` in the crate: one call into the C library, on glibc targets.

use std::sync::Once;
use std::time::Duration;

use crate::observability::metrics::METRICS;

/// How often the open connections are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Connections that must have closed since the last trim (from the highest count seen) for
/// the next one to be worth its cost…
const CLOSED_BEFORE_TRIM: i64 = 64;
/// …and the share of that highest count they must be: with thousands of streams open, a
/// client closing 64 connections again and again must not make every worker wait on a
/// trim of a large heap.
const CLOSED_SHARE_BEFORE_TRIM: i64 = 4;
/// Connections that must have opened since the last trim (from the lowest count seen),
/// also a quarter of those open, for a trim once the count has settled: thousands of
/// long-lived streams (SSE) leave the per-request memory of their opening freed between
/// them, ~1 KB a stream (measured: 5,000 streams, 86 → 82 MB).
const OPENED_BEFORE_TRIM: i64 = 1000;
/// Settled: the count moved by at most this share of itself (or 16) since the last look.
/// A ramp slower than that may trim a few times on its way, each after a further rise of a
/// thousand and a quarter, so geometrically few.
const SETTLED_SHARE: i64 = 256;
/// Looks between trims.
const MIN_CHECKS_BETWEEN_TRIMS: u32 = 2;

/// Starts the trimming thread, once per process (on allocators that need it).
pub fn start_trimming() {
    static STARTED: Once = Once::new();
    if !TRIM_SUPPORTED {
        return;
    }
    // A thread of its own, not a runtime task: it sleeps between looks.
    #[allow(clippy::disallowed_methods)]
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("gateway-memory".into())
            .spawn(|| {
                let mut policy = TrimPolicy::default();
                loop {
                    std::thread::sleep(CHECK_EVERY);
                    if policy.should_trim(METRICS.open_connections()) {
                        trim();
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the memory trimming thread; freed memory stays with the process");
        }
    });
}

/// When to trim: once the open connections have fallen by [`CLOSED_BEFORE_TRIM`], and by a
/// [`CLOSED_SHARE_BEFORE_TRIM`]th, from the highest count seen since the last trim; or once
/// they have risen by [`OPENED_BEFORE_TRIM`], and by a quarter of those open, from the
/// lowest, and settled; and not within [`MIN_CHECKS_BETWEEN_TRIMS`] looks of the last.
#[derive(Debug, Default)]
struct TrimPolicy {
    high: i64,
    low: i64,
    last: i64,
    since_trim: u32,
}

impl TrimPolicy {
    fn should_trim(&mut self, open: i64) -> bool {
        self.high = self.high.max(open);
        self.low = self.low.min(open);
        self.since_trim = self.since_trim.saturating_add(1);
        let closed = self.high - open;
        let fell = closed >= CLOSED_BEFORE_TRIM && closed >= self.high / CLOSED_SHARE_BEFORE_TRIM;
        let opened = open - self.low;
        let settled = (open - self.last).abs() <= (open / SETTLED_SHARE).max(16);
        let rose = opened >= OPENED_BEFORE_TRIM && opened >= open / 4 && settled;
        self.last = open;
        let enough = (fell || rose) && self.since_trim >= MIN_CHECKS_BETWEEN_TRIMS;
        if enough {
            self.high = open;
            self.low = open;
            self.since_trim = 0;
        }
        enough
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_SUPPORTED: bool = true;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const TRIM_SUPPORTED: bool = false;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim takes no pointers and may be called from any thread at any
    // time; it takes each arena's lock itself.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crate denies `unsafe_code` rather than forbidding it so that this file can allow
    /// it for one call; nothing else may.
    #[test]
    fn unsafe_code_lives_in_this_file_only() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    visit(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/memory.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (number, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or_default();
                        let unsafe_use = [
                            "unsafe {",
                            "unsafe fn",
                            "unsafe impl",
                            "unsafe extern",
                            "unsafe_code",
                        ]
                        .iter()
                        .any(|pattern| code.contains(pattern));
                        if unsafe_use
                            && !code.contains("deny(unsafe_code)")
                            && !code.contains("forbid(unsafe_code)")
                        {
                            found.push(format!("{}:{}: {line}", path.display(), number + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        visit(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(
            found.is_empty(),
            "unsafe outside src/memory.rs:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn trims_once_enough_connections_have_closed() {
        let mut policy = TrimPolicy::default();
        assert!(!policy.should_trim(0));
        assert!(!policy.should_trim(1000), "rising: nothing freed yet");
        assert!(!policy.should_trim(800), "fewer than a quarter closed");
        assert!(policy.should_trim(750));
        assert!(
            !policy.should_trim(0),
            "not on the very next look, however many closed"
        );
        assert!(policy.should_trim(0), "counted from the last trim's level");
        assert!(!policy.should_trim(0), "nothing closed since");
    }

    #[test]
    fn a_small_drop_from_a_large_count_does_not_trim() {
        let mut policy = TrimPolicy::default();
        assert!(!policy.should_trim(10_000), "risen, not yet settled");
        assert!(policy.should_trim(10_000), "risen by thousands and settled");
        for _ in 0..10 {
            assert!(!policy.should_trim(10_000 - CLOSED_BEFORE_TRIM));
            assert!(!policy.should_trim(10_000));
        }
    }

    #[test]
    fn a_burst_of_64_closing_trims() {
        let mut policy = TrimPolicy::default();
        assert!(!policy.should_trim(64));
        assert!(policy.should_trim(0));
    }

    #[test]
    fn thousands_of_streams_opened_trim_once_settled_and_once_only() {
        let mut policy = TrimPolicy::default();
        for open in [0, 2_000, 5_000, 9_000, 9_900] {
            assert!(!policy.should_trim(open), "{open}: still rising");
        }
        assert!(policy.should_trim(9_930), "settled within 1/256");
        for open in [9_900, 9_950, 9_880, 9_900, 10_500] {
            assert!(
                !policy.should_trim(open),
                "{open}: no new rise of thousands"
            );
        }
        let mut small = TrimPolicy::default();
        for open in [0, 900, 900, 900] {
            assert!(!small.should_trim(open), "{open}: under a thousand opened");
        }
    }

    #[test]
    fn steady_or_slowly_changing_load_does_not_trim() {
        let mut policy = TrimPolicy::default();
        for open in [64, 60, 70, 66, 64, 65, 63] {
            assert!(!policy.should_trim(open));
        }
    }
}
