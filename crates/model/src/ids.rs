//! The shape of record ids (agreements, activities, proposals, subscriptions,
//! batches, scans) as they arrive from REST paths and from other nodes. Every
//! id this network issues is lowercase hex (32 or 64 digits) or a UUID, so an id
//! is accepted only when it is 1 to [`MAX_ID_LEN`] hex digits and dashes. A
//! checked id can then go into sled keys, file paths and URLs without escaping:
//! it cannot hold `/`, `..`, `?`, `%` or control characters.

use serde::{Deserialize, Serialize};

use crate::GolemError;

/// A fresh random id: 32 lowercase hex digits (128 bits from the OS's
/// generator). The one id generator of the node: agreements' proposals,
/// activities, batches, debit notes, invoices, allocations and payments.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Longest accepted id (a 64-digit agreement id with room to spare).
pub const MAX_ID_LEN: usize = 128;

/// Ok when `id` has the shape of an id; BadRequest naming `what` otherwise.
pub fn check_id(what: &str, id: &str) -> Result<(), GolemError> {
    let well_formed = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() || byte == b'-');
    if well_formed {
        return Ok(());
    }
    let shown: String = id.chars().take(40).collect();
    Err(GolemError::bad_request(format!(
        "malformed {what} {shown:?}: expected 1 to {MAX_ID_LEN} hex digits or a UUID"
    )))
}

/// An id that passed [`check_id`]; as a REST path parameter a malformed one is
/// refused by the extractor (400) before any handler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(String);

impl RecordId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        check_id("id", &text).map_err(|error| error.message)?;
        Ok(RecordId(text))
    }
}

impl From<RecordId> for String {
    fn from(id: RecordId) -> String {
        id.0
    }
}

impl std::ops::Deref for RecordId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_well_formed_and_distinct() {
        let first = new_id();
        assert_eq!(first.len(), 32);
        assert!(check_id("id", &first).is_ok());
        assert_ne!(first, new_id());
    }

    use crate::ErrorCode;

    #[test]
    fn issued_ids_and_uuids_pass() {
        for id in [
            "0123456789abcdef0123456789abcdef",
            &"ab".repeat(32),
            "0123",
            "123e4567-e89b-12d3-a456-426614174000",
            "ABCDEF",
        ] {
            assert!(check_id("agreement id", id).is_ok(), "{id}");
        }
    }

    #[test]
    fn paths_urls_and_oversized_ids_are_refused() {
        for id in [
            "",
            "../../etc",
            "a/b",
            "abc?x=1",
            "ab%2f",
            "ab\ncd",
            "not-hex-zz",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            let error = check_id("activity id", id).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest, "{id:?}");
            assert!(error.message.contains("malformed activity id"), "{error:?}");
        }
    }

    #[test]
    fn record_id_deserializes_only_well_formed_ids() {
        let ok: Result<RecordId, _> = serde_json::from_str("\"00ff\"");
        assert_eq!(ok.map(String::from).ok().as_deref(), Some("00ff"));
        let bad: Result<RecordId, _> = serde_json::from_str("\"..\"");
        assert!(bad.is_err());
    }
}
