//! Typed REST client of the golem-daemon API, shared by the agents, the CLIs and
//! the tests. It speaks exactly the public Golem REST API with an app-key; it
//! must never reach into a daemon any other way.
#![forbid(unsafe_code)]

use golem_model::identity::{BusInfo, MeResponse};
use golem_model::{ErrorCode, GolemError};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod activity;
pub mod activity_provider;
pub mod market;
pub mod net;
pub mod payment;

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
            Some(429) => ErrorCode::TooManyRequests,
            Some(501) => ErrorCode::NotImplemented,
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
            // Idle connections are dropped before the daemon's 30 s
            // keep-alive closes them, so none is reused as it closes.
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("a client with no TLS settings builds"),
            base_url: base_url.trim_end_matches('/').to_string(),
            app_key: app_key.to_string(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The app-key this client authenticates with (an agent's own web page
    /// checks its users against it).
    pub fn app_key(&self) -> &str {
        &self.app_key
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (url, bytes) = self.send(reqwest::Method::GET, path, None).await?;
        decode(url, &bytes)
    }

    /// `POST` a JSON body and decode the JSON reply.
    async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).map_err(|error| ClientError::Decode {
            url: format!("{}{path}", self.base_url),
            message: format!("cannot encode the request body: {error}"),
        })?;
        let (url, bytes) = self.send(reqwest::Method::POST, path, Some(body)).await?;
        decode(url, &bytes)
    }

    /// `POST` with an optional JSON body, ignoring the reply body (204s).
    async fn post_no_reply<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ClientError> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(|error| ClientError::Decode {
                url: format!("{}{path}", self.base_url),
                message: format!("cannot encode the request body: {error}"),
            })?;
        self.send(reqwest::Method::POST, path, body).await?;
        Ok(())
    }

    /// `DELETE`, ignoring the reply body.
    async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(reqwest::Method::DELETE, path, None).await?;
        Ok(())
    }

    /// Send a request; the reply body of a 2xx, or the daemon's `{"message"}` as an error.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(String, Vec<u8>), ClientError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.app_key);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
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
                method: method.to_string(),
                url,
                status: status.as_u16(),
                message,
            });
        }
        Ok((url, bytes.to_vec()))
    }

    /// `GET /me`: the node identity behind this app-key.
    pub async fn me(&self) -> Result<MeResponse, ClientError> {
        self.get("/me").await
    }

    /// `GET /local-api/v1/bus`: the daemon's bus socket (answered on loopback only).
    pub async fn bus_info(&self) -> Result<BusInfo, ClientError> {
        self.get("/local-api/v1/bus").await
    }
}

fn decode<T: DeserializeOwned>(url: String, bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|error| ClientError::Decode {
        url,
        message: error.to_string(),
    })
}
