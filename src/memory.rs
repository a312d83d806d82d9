//! Giving memory back to the system after a load peak.
//!
//! glibc's allocator keeps what a burst of connections freed: each worker thread allocates
//! from its own arena, and an arena only shrinks from its top, so a few live allocations
//! keep megabytes of freed pages resident (measured: 55 MiB idle after a 1,024-connection
//! burst, against 13 MiB before; BENCHMARKS.md). `malloc_trim` returns the free pages inside
//! every arena. It walks the arenas under their locks, so it runs only after connections
//! have closed in numbers, at most once a second, from a thread of its own.
//!
//! The only `unsafe` in the crate: one call into the C library, on glibc targets.

use std::sync::Once;
use std::time::Duration;

use crate::observability::metrics::METRICS;

/// How often the open connections are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Connections that must have closed since the last trim (from the highest count seen) for
/// the next one to be worth its cost.
const CLOSED_BEFORE_TRIM: i64 = 64;

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

/// When to trim: once the open connections have fallen by [`CLOSED_BEFORE_TRIM`] from the
/// highest count seen since the last trim.
#[derive(Debug, Default)]
struct TrimPolicy {
    high: i64,
}

impl TrimPolicy {
    fn should_trim(&mut self, open: i64) -> bool {
        self.high = self.high.max(open);
        if self.high - open >= CLOSED_BEFORE_TRIM {
            self.high = open;
            return true;
        }
        false
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

    #[test]
    fn trims_once_enough_connections_have_closed() {
        let mut policy = TrimPolicy::default();
        assert!(!policy.should_trim(0));
        assert!(!policy.should_trim(1000), "rising: nothing freed yet");
        assert!(!policy.should_trim(1000 - CLOSED_BEFORE_TRIM + 1));
        assert!(policy.should_trim(1000 - CLOSED_BEFORE_TRIM));
        let level = 1000 - CLOSED_BEFORE_TRIM;
        assert!(
            !policy.should_trim(level - CLOSED_BEFORE_TRIM + 1),
            "counted from the last trim's level, not from the old peak"
        );
        assert!(policy.should_trim(level - CLOSED_BEFORE_TRIM));
    }

    #[test]
    fn steady_or_slowly_changing_load_does_not_trim() {
        let mut policy = TrimPolicy::default();
        for open in [64, 60, 70, 66, 64, 65, 63] {
            assert!(!policy.should_trim(open));
        }
    }
}
