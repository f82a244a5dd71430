//! The one error type of the requestor API: every failure a user can meet,
//! each with a message that says what to do next.

use golem_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum RequestorError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Job(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid package {package:?}: {message}")]
    Package { package: String, message: String },
    #[error("{0}")]
    NoOffers(String),
    #[error(
        "budget of {budget} GLM exhausted: {detail} (raise --budget / `budget` in the job file)"
    )]
    BudgetExhausted { budget: String, detail: String },
    #[error("{0}")]
    TasksFailed(String),
    #[error("{0}")]
    Usage(String),
}

impl RequestorError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        RequestorError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = RequestorError> = std::result::Result<T, E>;
