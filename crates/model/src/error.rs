//! The one error shape of the project: a closed [`ErrorCode`] plus a human message.
//! Services convert their own `thiserror` enums into it at their boundary; the
//! REST layer maps the code to an HTTP status and the bus carries it verbatim.

use serde::{Deserialize, Serialize};

/// Every failure a caller can observe falls into one of these classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    /// Nothing is bound at the called bus address (yet): an exe unit not
    /// connected, a node's service not started. Transient for outboxes.
    NoEndpoint,
    Conflict,
    Gone,
    PayloadTooLarge,
    /// A per-client quota is used up (e.g. open long-polls of one app-key);
    /// the same call succeeds once some of the client's work ends.
    TooManyRequests,
    Timeout,
    Unavailable,
    /// A documented API call this node deliberately does not serve (e.g. the
    /// Market API's capability-level-2 property queries).
    NotImplemented,
    Internal,
}

impl ErrorCode {
    /// The HTTP status a REST response with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound | ErrorCode::NoEndpoint => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Gone => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Timeout => 408,
            ErrorCode::Unavailable => 503,
            ErrorCode::NotImplemented => 501,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error as it travels between components: over REST as `{"message": ...}`
/// with the status of `code`, over the bus as this whole struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct GolemError {
    pub code: ErrorCode,
    pub message: String,
}

impl GolemError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        GolemError {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotImplemented, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    /// No endpoint is bound at `address`.
    pub fn no_endpoint(address: &str) -> Self {
        Self::new(
            ErrorCode::NoEndpoint,
            format!("endpoint address not found: {address}"),
        )
    }

    /// Whether the same call may succeed later unchanged: the other side was
    /// unreachable, slow, not bound yet, or failed inside. Outboxes retry
    /// these; anything else is a final answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::Internal
                | ErrorCode::NoEndpoint
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_an_error_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::NoEndpoint,
            ErrorCode::Conflict,
            ErrorCode::Gone,
            ErrorCode::PayloadTooLarge,
            ErrorCode::TooManyRequests,
            ErrorCode::Timeout,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            let status = code.http_status();
            assert!((400..600).contains(&status), "{code:?} -> {status}");
        }
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Gone.http_status(), 410);
    }

    #[test]
    fn error_round_trips_as_json() {
        let error = GolemError::not_found("no such agreement");
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(json, r#"{"code":"NotFound","message":"no such agreement"}"#);
        let back: GolemError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, error);
    }
}
