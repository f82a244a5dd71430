//! A request's headers, copied out of its connection's read buffer before
//! any handler sees them, so that what actix keeps after a request ends
//! stays small.
//!
//! actix-http parses header values as slices of the connection's 8 KiB read
//! buffer, and keeps every finished request's head (and `HttpRequest`) in
//! per-worker pools of 128 for reuse, headers and all. A pooled head thus
//! pins the whole read buffer of a connection that is long gone, plus a
//! header map sized for 16 names. After a burst of abandoned long-polls that
//! was ~8.7 MiB held on two workers (heaptrack, docs/benchmarks.md
//! "Abandoned long-polls"). Copying the values into a map of the right size
//! frees the buffer and the large map when the request starts; the pools
//! then hold ~1 KiB per head. This module must not drop or change any header.
//!
//! Only requests that may wait get the copy ([`may_wait`]): pools fill up
//! from many requests open at once, which long-polls are, while a copy on
//! every short request cost ~10 % of `GET /me`'s throughput.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{HeaderMap, HeaderValue};

/// For a request that may wait, replace its header map by one of its own
/// size whose values own their bytes (the read buffer and the parser's map
/// are freed here); other requests are left as they are.
pub fn detach_from_read_buffer(request: &mut ServiceRequest) {
    if !may_wait(request.path()) {
        return;
    }
    let headers = &mut request.head_mut().headers;
    *headers = owned_copy(headers);
}

/// Whether `path` is one of the routes that long-poll or stream: market,
/// scan, activity and payment events, an agreement's `/wait`, and a batch's
/// results (`/activity/{id}/exec/{batch}`).
pub fn may_wait(path: &str) -> bool {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let last = segments.next().unwrap_or_default();
    let before_last = segments.next().unwrap_or_default();
    matches!(
        last,
        "events" | "agreementEvents" | "debitNoteEvents" | "invoiceEvents" | "wait"
    ) || before_last == "exec"
}

fn owned_copy(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len_keys());
    for (name, value) in headers.iter() {
        // A value that was valid stays valid; should the copy ever fail, the
        // original (sharing the buffer) is kept rather than lost.
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), owned);
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderName;

    #[test]
    fn every_waiting_route_gets_the_copy_and_short_ones_do_not() {
        for path in [
            "/market-api/v1/offers/o1/events",
            "/market-api/v1/demands/d1/events",
            "/market-api/v1/scan/s1/events",
            "/market-api/v1/agreementEvents",
            "/market-api/v1/agreements/a1/wait",
            "/activity-api/v1/events",
            "/activity-api/v1/activity/a1/exec/b1",
            "/payment-api/v1/debitNoteEvents",
            "/payment-api/v1/invoiceEvents/",
        ] {
            assert!(may_wait(path), "{path} waits");
        }
        for path in [
            "/me",
            "/",
            "",
            "/activity-api/v1/activity/a1/exec",
            "/activity-api/v1/activity/a1/state",
            "/market-api/v1/agreements/a1",
            "/payment-api/v1/invoices",
        ] {
            assert!(!may_wait(path), "{path} does not wait");
        }
    }

    #[test]
    fn the_copy_keeps_every_value_in_order_in_a_map_of_its_size() {
        let mut parsed = HeaderMap::with_capacity(16);
        let accept = HeaderName::from_static("accept");
        parsed.append(accept.clone(), HeaderValue::from_static("application/json"));
        parsed.append(
            accept.clone(),
            HeaderValue::from_static("text/event-stream"),
        );
        let mut secret = HeaderValue::from_static("Bearer k");
        secret.set_sensitive(true);
        parsed.insert(HeaderName::from_static("authorization"), secret);
        parsed.insert(
            HeaderName::from_static("x-custom"),
            HeaderValue::from_static("1"),
        );

        let copy = owned_copy(&parsed);

        let values: Vec<_> = copy.get_all(&accept).collect();
        assert_eq!(values, ["application/json", "text/event-stream"]);
        let authorization = copy.get("authorization").unwrap_or_else(|| panic!("lost"));
        assert_eq!(authorization, "Bearer k");
        assert!(authorization.is_sensitive());
        assert_eq!(
            copy.get("x-custom").map(|value| value.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!((copy.len(), copy.len_keys()), (4, 3));
        assert!(
            copy.capacity() < parsed.capacity(),
            "the copy is sized for its {} names, not the parser's {}",
            copy.len_keys(),
            parsed.capacity()
        );
    }
}
