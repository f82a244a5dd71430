//! Query-string values several services' REST routes share.

use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_model::GolemError;

/// An RFC 3339 timestamp parameter such as `afterTimestamp`. Clients send
/// `...+00:00`, and the `+` sometimes arrives decoded as a space.
pub fn parse_timestamp(name: &str, text: &str) -> Result<DateTime<Utc>, GolemError> {
    let fixed = text.trim().replace(' ', "+");
    DateTime::parse_from_rfc3339(&fixed)
        .map(|date| date.with_timezone(&Utc))
        .map_err(|error| GolemError::bad_request(format!("invalid {name} {text:?}: {error}")))
}

/// The longest wait a `timeout` query value asks for, per API. Larger values
/// (infinity included) are cut to it silently, so a client written for the
/// original, which sets no bound, is never refused; NaN and negative values
/// are refused with 400. Documented in the README's "REST API limits".
pub const MARKET_MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// See [`MARKET_MAX_TIMEOUT`]; batch results, provider events and create's wait.
pub const ACTIVITY_MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// See [`MARKET_MAX_TIMEOUT`]; debit note and invoice events.
pub const PAYMENT_MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// A `timeout` query value in seconds: `default` when absent, cut to `max`
/// when larger (silently), 400 when NaN or negative.
pub fn timeout_seconds(
    value: Option<f64>,
    default: Duration,
    max: Duration,
) -> Result<Duration, GolemError> {
    match value {
        None => Ok(default.min(max)),
        Some(seconds) if seconds.is_nan() || seconds < 0.0 => Err(GolemError::bad_request(
            format!(
                "invalid timeout {seconds}: use seconds >= 0 (longer waits than {} s are cut to {} s)",
                max.as_secs(),
                max.as_secs()
            ),
        )),
        Some(seconds) => Ok(bounded_seconds(seconds, max)),
    }
}

/// A timeout in seconds given by a client or another node, bounded before it
/// becomes a [`Duration`] (which panics on huge, negative or NaN values):
/// NaN and negatives are zero, anything above `max` (infinity included) is `max`.
pub fn bounded_seconds(seconds: f64, max: Duration) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    if seconds >= max.as_secs_f64() {
        return max;
    }
    Duration::from_secs_f64(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded_before_they_become_durations() {
        let max = Duration::from_secs(8);
        for (given, expected) in [
            (1e300, max),
            (f64::INFINITY, max),
            (f64::NAN, Duration::ZERO),
            (-1e300, Duration::ZERO),
            (f64::NEG_INFINITY, Duration::ZERO),
            (-0.0, Duration::ZERO),
            (2.5, Duration::from_millis(2500)),
        ] {
            assert_eq!(bounded_seconds(given, max), expected, "{given}");
        }
    }

    #[test]
    fn timeout_values_are_cut_to_the_cap_and_nonsense_is_refused() {
        let default = Duration::from_secs(5);
        let max = Duration::from_secs(60);
        let ok = |value| timeout_seconds(value, default, max).unwrap();
        assert_eq!(ok(None), default);
        assert_eq!(ok(Some(0.0)), Duration::ZERO);
        assert_eq!(ok(Some(1.5)), Duration::from_millis(1500));
        assert_eq!(ok(Some(61.0)), max);
        assert_eq!(ok(Some(f64::INFINITY)), max);
        for bad in [-1.0, f64::NAN, f64::NEG_INFINITY] {
            let error = timeout_seconds(Some(bad), default, max).unwrap_err();
            assert!(error.message.contains("cut to 60 s"), "{}", error.message);
        }
    }

    #[test]
    fn accepts_offsets_z_and_a_decoded_plus() {
        let expected: DateTime<Utc> = "2026-11-23T18:24:29.439149Z".parse().unwrap();
        for text in [
            "2026-11-23T18:24:29.439149+00:00",
            "2026-11-23T18:24:29.439149Z",
            "2026-11-23T18:24:29.439149 00:00",
        ] {
            assert_eq!(
                parse_timestamp("afterTimestamp", text).unwrap(),
                expected,
                "{text}"
            );
        }
        let error = parse_timestamp("afterTimestamp", "yesterday").unwrap_err();
        assert!(
            error
                .message
                .starts_with("invalid afterTimestamp \"yesterday\""),
            "{}",
            error.message
        );
    }
}
