//! Typed REST client of the golem-daemon API, shared by the agents, the CLIs and
//! the tests. It speaks exactly the public Golem REST API with an app-key; it
//! must never reach into a daemon any other way.
#![forbid(unsafe_code)]

use golem_model::identity::MeResponse;
use golem_model::{ErrorCode, GolemError};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {url}: {source} (is golem-daemon running? check --api-url / YAGNA_API_URL)")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{method} {url} failed with HTTP {status}: {message}")]
    Api {
        method: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("unexpected reply from {url}: {message}")]
    Decode { url: String, message: String },
}

impl ClientError {
    /// The HTTP status of an API error, if the daemon answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<ClientError> for GolemError {
    fn from(error: ClientError) -> Self {
        let code = match error.status() {
            Some(401) => ErrorCode::Unauthorized,
            Some(403) => ErrorCode::Forbidden,
            Some(404) => ErrorCode::NotFound,
            Some(409) => ErrorCode::Conflict,
            Some(410) => ErrorCode::Gone,
            Some(400) => ErrorCode::BadRequest,
            None => ErrorCode::Unavailable,
            Some(_) => ErrorCode::Internal,
        };
        GolemError::new(code, error.to_string())
    }
}

/// A client of one daemon's REST API authenticated with one app-key.
#[derive(Clone)]
pub struct GolemClient {
    http: reqwest::Client,
    base_url: String,
    app_key: String,
}

impl GolemClient {
    /// `base_url` like `http://127.0.0.1:7465` (no trailing slash needed).
    pub fn new(base_url: &str, app_key: &str) -> Self {
        GolemClient {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            app_key: app_key.to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.app_key)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|body| {
                    body.get("message")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api {
                method: "GET".into(),
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode {
            url,
            message: error.to_string(),
        })
    }

    /// `GET /me`: the node identity behind this app-key.
    pub async fn me(&self) -> Result<MeResponse, ClientError> {
        self.get("/me").await
    }
}
