//! Open long-polls per app-key: every long-polling route (market events,
//! agreement and scan events, `/wait`, batch results and their SSE stream,
//! provider events, payment events) takes a [`LongPoll`] before it waits and
//! holds it for as long as the request is in progress. A client may hold at
//! most `api.max-long-polls-per-key` at once; one more is answered 429.
//!
//! The count is the daemon's own view of what is still waiting: a
//! [`LongPoll`] is given back when its handler future (or SSE body) is
//! dropped, which actix-web does when the response is written or the
//! connection ends. The server refuses half-closed HTTP/1 connections
//! (`api::start`), so a client that goes away ends its poll at once instead
//! of at the poll's timeout; tests and `scripts/bench/longpoll.sh` read the
//! count to prove it.
//!
//! The registry also notices when a burst of polls ends: when the open
//! polls fall to a quarter of a peak of at least [`BURST_POLLS`], it asks
//! [`HeapRelease`] to give the burst's freed pages back to the system.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use golem_model::{ErrorCode, GolemError};

use super::auth::Authenticated;
use super::error::ApiError;
use golem_heap_trim::{BurstEnd, HeapRelease};

/// Open polls that make a burst worth releasing memory after (each held
/// connection costs ~10 KiB while it waits; fewer are not worth a trim).
pub const BURST_POLLS: usize = 64;

/// Every app-key's open long-polls (one per node, shared by every worker).
#[derive(Clone)]
pub struct LongPolls {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    open: Mutex<OpenPolls>,
    heap_release: HeapRelease,
}

struct OpenPolls {
    /// Open polls by app-key name; a key with none has no entry.
    by_key: HashMap<String, usize>,
    /// Open polls of every key.
    total: usize,
    /// The peak of `total` since the last release of memory.
    burst: BurstEnd,
}

impl Default for OpenPolls {
    fn default() -> Self {
        OpenPolls {
            by_key: HashMap::new(),
            total: 0,
            burst: BurstEnd::new(BURST_POLLS, 4),
        }
    }
}

impl LongPolls {
    /// At most `limit` open long-polls per app-key (at least one); memory
    /// is given back through `heap_release` after a burst.
    pub fn new(limit: usize, heap_release: HeapRelease) -> Self {
        LongPolls {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                open: Mutex::new(OpenPolls::default()),
                heap_release,
            }),
        }
    }

    /// Open long-polls of every key.
    pub fn open(&self) -> usize {
        self.inner.lock().total
    }

    /// Open long-polls of the app-key named `key`.
    pub fn open_for(&self, key: &str) -> usize {
        self.inner.lock().by_key.get(key).copied().unwrap_or(0)
    }

    /// Count one more poll of `key`, or refuse it when the key is at the limit.
    pub fn begin(&self, key: &str) -> Result<LongPoll, GolemError> {
        let mut open = self.inner.lock();
        let open = &mut *open;
        let count = open.by_key.entry(key.to_string()).or_insert(0);
        if *count >= self.inner.limit {
            return Err(GolemError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "app-key {key:?} already has {} open long-polls, the most allowed; wait for one to end \
                     (raise it with the setting api.max-long-polls-per-key, \
                     GOLEM_API_MAX_LONG_POLLS_PER_KEY or --api-max-long-polls-per-key)",
                    self.inner.limit
                ),
            ));
        }
        *count += 1;
        open.total += 1;
        open.burst.opened(open.total);
        Ok(LongPoll {
            inner: self.inner.clone(),
            key: key.to_string(),
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenPolls> {
        // The map holds plain counters: a panic elsewhere cannot leave it inconsistent.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open long-poll; given back when dropped. As an extractor it counts
/// the request's app-key (429 when the key is at its limit).
pub struct LongPoll {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        let mut open = self.inner.lock();
        let Some(count) = open.by_key.get_mut(&self.key) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            open.by_key.remove(&self.key);
        }
        open.total = open.total.saturating_sub(1);
        let total = open.total;
        if open.burst.closed(total) {
            // A burst of keys leaves a large map behind, too.
            open.by_key.shrink_to_fit();
            drop(open);
            self.inner.heap_release.request();
        }
    }
}

impl FromRequest for LongPoll {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let key = request
            .extensions()
            .get::<Authenticated>()
            .map(|auth| auth.0.name.clone());
        let polls = request.app_data::<web::Data<LongPolls>>().cloned();
        std::future::ready(match (key, polls) {
            (Some(key), Some(polls)) => polls.begin(&key).map_err(ApiError),
            (None, _) => Err(ApiError(GolemError::new(
                ErrorCode::Unauthorized,
                "missing app-key",
            ))),
            (_, None) => Err(ApiError(GolemError::internal(
                "the long-poll registry is not configured",
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_the_limit_and_dropping_gives_back() {
        let polls = LongPolls::new(2, HeapRelease::start());
        let first = polls.begin("a").unwrap_or_else(|error| panic!("{error}"));
        let _second = polls.begin("a").unwrap_or_else(|error| panic!("{error}"));
        let refused = polls
            .begin("a")
            .err()
            .map(|error| (error.code, error.message));
        let (code, message) = refused.unwrap_or_else(|| panic!("a third poll was allowed"));
        assert_eq!(code, ErrorCode::TooManyRequests);
        assert!(message.contains("api.max-long-polls-per-key"), "{message}");
        let _other = polls
            .begin("b")
            .unwrap_or_else(|error| panic!("another key is counted apart: {error}"));
        assert_eq!((polls.open_for("a"), polls.open()), (2, 3));
        drop(first);
        assert_eq!(polls.open_for("a"), 1);
        assert!(polls.begin("a").is_ok(), "room again after a drop");
    }

    #[test]
    fn the_end_of_a_burst_releases_memory_once_and_a_few_polls_never() {
        let release = HeapRelease::start();
        let polls = LongPolls::new(10_000, release.clone());
        let few: Vec<LongPoll> = (0..BURST_POLLS - 1)
            .map(|index| polls.begin(&format!("few-{}", index % 3)))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        drop(few);
        let burst: Vec<LongPoll> = (0..1000)
            .map(|index| polls.begin(&format!("key-{index}")))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        let capacity_in_burst = polls.inner.lock().by_key.capacity();
        drop(burst);
        assert_eq!(polls.open(), 0);
        assert!(
            polls.inner.lock().by_key.capacity() < capacity_in_burst / 4,
            "the per-key map shrinks after the burst"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while release.releases() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no release within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(golem_heap_trim::QUIET * 3);
        assert_eq!(
            release.releases(),
            1,
            "one burst, one release; the few polls none"
        );
    }
}
