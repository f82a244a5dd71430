//! Give the allocator's free pages back to the system after a burst ends, on
//! a thread of its own.
//!
//! glibc's malloc keeps the pages a burst freed (1,000 abandoned long-polls:
//! ~10 MiB; the connections a node made in its first minute and then closed
//! for its peer target: ~17 MiB) until `malloc_trim`. The code that sees a
//! burst end (the REST API's long-polls, the net's closed connections) holds
//! a [`HeapRelease`] handle; one thread serves every handle of a process.
//! [`HeapRelease::request`] is cheap and may be
//! called from an async worker: it only wakes the `golem-heap-release`
//! thread, which waits until requests stop for [`QUIET`] (the rest of the
//! burst ends meanwhile), trims at most once per [`MIN_INTERVAL`], and goes
//! back to sleep. A trim walks every arena under its lock (milliseconds), so
//! it must never run on a worker. The thread ends with the last handle.
//!
//! Not every burst is seen by a caller (a DHT walk's queries ending, caches
//! expiring, a soak's records leaving with their retention), so the thread
//! also looks at the allocator's bytes in use and free every
//! [`CHECK_INTERVAL`] (glibc's `mallinfo2`, microseconds) and trims when at
//! least [`FREE_WORTH_RELEASING`] are free and either figure has moved by
//! [`CHANGE_WORTH_RELEASING`] since its last trim. Free bytes alone cannot
//! say whether their pages are resident (a trim leaves its chunks free, only
//! their pages go), but a heap that has not changed since a trim has nothing
//! new to give back, so an idle node does not trim again and again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long requests must stop before the trim runs.
pub const QUIET: Duration = Duration::from_millis(100);
/// At most one trim per this interval, however many bursts end.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often the thread looks at the allocator's free bytes.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Free bytes that make a trim worth it.
pub const FREE_WORTH_RELEASING: usize = 4 * 1024 * 1024;
/// How far the bytes in use or free must have moved since the last trim.
pub const CHANGE_WORTH_RELEASING: usize = 1024 * 1024;

/// A handle to the release thread (cheap to clone).
#[derive(Clone)]
pub struct HeapRelease {
    requests: Option<mpsc::Sender<()>>,
    releases: Arc<AtomicU64>,
}

impl HeapRelease {
    /// Start the release thread. Should the thread fail to start, requests
    /// are ignored (the memory is only kept longer).
    pub fn start() -> Self {
        Self::start_checking_every(CHECK_INTERVAL)
    }

    /// [`HeapRelease::start`] with the free bytes looked at every
    /// `check_interval` (tests).
    pub fn start_checking_every(check_interval: Duration) -> Self {
        let (sender, receiver) = mpsc::channel();
        let releases = Arc::new(AtomicU64::new(0));
        let counter = releases.clone();
        let spawned = std::thread::Builder::new()
            .name("golem-heap-release".into())
            .spawn(move || release_after_bursts(receiver, check_interval, &counter));
        let requests = match spawned {
            Ok(_) => Some(sender),
            Err(error) => {
                tracing::warn!(%error, "cannot start the heap-release thread; freed memory is kept");
                None
            }
        };
        HeapRelease { requests, releases }
    }

    /// Ask for a trim once the current burst has ended.
    pub fn request(&self) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(());
        }
    }

    /// Trims done so far.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for HeapRelease {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HeapRelease")
            .field("running", &self.requests.is_some())
            .field("releases", &self.releases())
            .finish()
    }
}

fn release_after_bursts(
    requests: mpsc::Receiver<()>,
    check_interval: Duration,
    releases: &AtomicU64,
) {
    let mut last_release: Option<Instant> = None;
    // The heap right after the last trim (or at start).
    let mut after_release = crate::heap_usage();
    loop {
        let reason = match requests.recv_timeout(check_interval) {
            Ok(()) => {
                loop {
                    match requests.recv_timeout(QUIET) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                "a burst ended"
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => match (crate::heap_usage(), after_release) {
                (Some(now), Some(then)) if worth_releasing(now, then) => "free memory grew",
                _ => continue,
            },
        };
        if let Some(wait) = last_release.and_then(|at| MIN_INTERVAL.checked_sub(at.elapsed())) {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let free_before = crate::heap_usage().map(|usage| usage.free);
        let supported = crate::release_free_pages();
        last_release = Some(Instant::now());
        after_release = crate::heap_usage();
        releases.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            reason,
            supported,
            free_before,
            elapsed_us = started.elapsed().as_micros() as u64,
            "released the allocator's free pages"
        );
    }
}

/// Enough is free, and the heap has changed since the last trim.
fn worth_releasing(now: crate::HeapUsage, after_release: crate::HeapUsage) -> bool {
    now.free >= FREE_WORTH_RELEASING
        && (now.free.abs_diff(after_release.free) >= CHANGE_WORTH_RELEASING
            || now.in_use.abs_diff(after_release.in_use) >= CHANGE_WORTH_RELEASING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_a_burst_make_one_release() {
        let release = HeapRelease::start();
        for _ in 0..50 {
            release.request();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while release.releases() == 0 {
            assert!(Instant::now() < deadline, "no release within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(QUIET * 3);
        assert_eq!(release.releases(), 1, "50 requests at once are one burst");
    }

    #[test]
    fn a_changed_heap_with_much_free_is_worth_a_release() {
        let usage = |in_use_mib: usize, free_mib: usize| crate::HeapUsage {
            in_use: in_use_mib << 20,
            free: free_mib << 20,
        };
        assert!(
            worth_releasing(usage(4, 20), usage(22, 2)),
            "records retired"
        );
        assert!(
            worth_releasing(usage(4, 20), usage(4, 12)),
            "more freed since"
        );
        assert!(
            !worth_releasing(usage(4, 20), usage(4, 20)),
            "nothing changed since the last trim"
        );
        assert!(!worth_releasing(usage(30, 3), usage(10, 0)), "little free");
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_memory_no_caller_reports_is_released_by_the_periodic_check() {
        let release = HeapRelease::start_checking_every(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            release.releases(),
            0,
            "nothing was freed, nothing to release"
        );
        // 32 MiB in arena-sized blocks, freed but for the last one (so the
        // heap's top stays in use and glibc cannot shrink it by itself).
        let mut blocks: Vec<Vec<u8>> = (0..32 * 8).map(|_| vec![1u8; 128 * 1024 - 64]).collect();
        let keep = blocks.split_off(blocks.len() - 1);
        drop(blocks);
        let deadline = Instant::now() + Duration::from_secs(10);
        while release.releases() == 0 {
            assert!(
                Instant::now() < deadline,
                "32 MiB freed and no release within 10 s (free bytes: {:?})",
                crate::heap_usage()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let released = release.releases();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            release.releases(),
            released,
            "what is left free after a release does not make it release again"
        );
        drop(keep);
    }
}
