//! Query-string values several services' REST routes share.

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

#[cfg(test)]
mod tests {
    use super::*;

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
