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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long requests must stop before the trim runs.
pub const QUIET: Duration = Duration::from_millis(100);
/// At most one trim per this interval, however many bursts end.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

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
        let (sender, receiver) = mpsc::channel();
        let releases = Arc::new(AtomicU64::new(0));
        let counter = releases.clone();
        let spawned = std::thread::Builder::new()
            .name("golem-heap-release".into())
            .spawn(move || release_after_bursts(receiver, &counter));
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

fn release_after_bursts(requests: mpsc::Receiver<()>, releases: &AtomicU64) {
    let mut last_release: Option<Instant> = None;
    while requests.recv().is_ok() {
        loop {
            match requests.recv_timeout(QUIET) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if let Some(wait) = last_release.and_then(|at| MIN_INTERVAL.checked_sub(at.elapsed())) {
            std::thread::sleep(wait);
        }
        let started = Instant::now();
        let supported = crate::release_free_pages();
        last_release = Some(Instant::now());
        releases.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            supported,
            elapsed_us = started.elapsed().as_micros() as u64,
            "released the allocator's free pages after a burst"
        );
    }
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
}
