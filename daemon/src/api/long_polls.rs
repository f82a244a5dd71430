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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use golem_model::{ErrorCode, GolemError};

use super::auth::Authenticated;
use super::error::ApiError;

/// Every app-key's open long-polls (one per node, shared by every worker).
#[derive(Clone)]
pub struct LongPolls {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    /// Open polls by app-key name; a key with none has no entry.
    open: Mutex<HashMap<String, usize>>,
}

impl LongPolls {
    /// At most `limit` open long-polls per app-key (at least one).
    pub fn new(limit: usize) -> Self {
        LongPolls {
            inner: Arc::new(Inner {
                limit: limit.max(1),
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Open long-polls of every key.
    pub fn open(&self) -> usize {
        self.inner.lock().values().sum()
    }

    /// Open long-polls of the app-key named `key`.
    pub fn open_for(&self, key: &str) -> usize {
        self.inner.lock().get(key).copied().unwrap_or(0)
    }

    /// Count one more poll of `key`, or refuse it when the key is at the limit.
    pub fn begin(&self, key: &str) -> Result<LongPoll, GolemError> {
        let mut open = self.inner.lock();
        let count = open.entry(key.to_string()).or_insert(0);
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
        Ok(LongPoll {
            inner: self.inner.clone(),
            key: key.to_string(),
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
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
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
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
        let polls = LongPolls::new(2);
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
}
