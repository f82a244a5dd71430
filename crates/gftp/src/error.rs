//! [`GftpError`]: everything a gftp operation can fail with, worded so that the
//! user knows what to do next.

use golem_model::gftp::{GftpUrl, GftpUrlError};
use golem_model::{ErrorCode, GolemError};

#[derive(Debug, thiserror::Error)]
pub enum GftpError {
    #[error(transparent)]
    Connect(#[from] golem_bus::client::ConnectError),
    #[error("the daemon did not tell its node id on the bus handshake; is it a golem-daemon?")]
    NoNodeId,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Url(#[from] GftpUrlError),
    #[error(
        "{url} is not published on node {node} (never published, closed, or its publisher exited)"
    )]
    NotPublished { url: GftpUrl, node: String },
    #[error("{url}: {error}")]
    Remote { url: GftpUrl, error: GolemError },
    #[error("{url}: content hash mismatch: expected {expected}, got {actual}; the received data was discarded")]
    HashMismatch {
        url: GftpUrl,
        expected: String,
        actual: String,
    },
    #[error("{url}: {message}")]
    Protocol { url: GftpUrl, message: String },
    #[error("{url} has {size} bytes, more than the {limit} this download may write")]
    TooLarge { url: GftpUrl, size: u64, limit: u64 },
    #[error("cannot serve {address} on the bus: {error}")]
    Bind { address: String, error: GolemError },
    #[error("{0} is not served by this gftp instance")]
    NotServed(GftpUrl),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GftpError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> GftpError {
        GftpError::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Classify the error of a call to the file's address on another node.
    pub(crate) fn remote(url: &GftpUrl, error: GolemError) -> GftpError {
        if error.code == ErrorCode::NoEndpoint {
            return GftpError::NotPublished {
                url: url.clone(),
                node: url.node_id.to_string(),
            };
        }
        GftpError::Remote {
            url: url.clone(),
            error,
        }
    }

    pub(crate) fn protocol(url: &GftpUrl, message: impl Into<String>) -> GftpError {
        GftpError::Protocol {
            url: url.clone(),
            message: message.into(),
        }
    }
}

impl From<tokio::task::JoinError> for GftpError {
    fn from(error: tokio::task::JoinError) -> Self {
        GftpError::Internal(format!("a file task failed: {error}"))
    }
}
