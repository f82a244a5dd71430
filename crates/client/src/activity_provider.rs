//! Provider-side calls of the Golem Activity API (`/activity-api/v1`) on
//! [`GolemClient`]: the provider agent's event feed (`GET /events`) and the
//! state and usage of the activities this node hosts (`PUT`; the gets live in `activity.rs`).

use golem_model::activity::{ActivityState, ActivityUsage};
use golem_model::activity_control::ProviderEvent;

use crate::{ClientError, GolemClient};

const ACTIVITY: &str = "/activity-api/v1";

/// Query-string encoding of a timestamp (`+` and `:` must be escaped).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl GolemClient {
    /// Long-poll `GET /events`: provider events strictly after `after_timestamp`
    /// (RFC 3339), waiting up to `timeout_seconds` for one.
    pub async fn provider_activity_events(
        &self,
        after_timestamp: Option<&str>,
        timeout_seconds: f64,
        max_events: u32,
    ) -> Result<Vec<ProviderEvent>, ClientError> {
        let mut path =
            format!("{ACTIVITY}/events?timeout={timeout_seconds}&maxEvents={max_events}");
        if let Some(after) = after_timestamp {
            path.push_str(&format!("&afterTimestamp={}", encode(after)));
        }
        self.get(&path).await
    }

    /// Provider: `PUT /activity/{id}/state` of an activity this node hosts.
    pub async fn set_activity_state(
        &self,
        activity_id: &str,
        state: &ActivityState,
    ) -> Result<(), ClientError> {
        put(
            self,
            &format!("{ACTIVITY}/activity/{activity_id}/state"),
            state,
        )
        .await
    }

    /// Provider: `PUT /activity/{id}/usage` of an activity this node hosts.
    pub async fn set_activity_usage(
        &self,
        activity_id: &str,
        usage: &ActivityUsage,
    ) -> Result<(), ClientError> {
        put(
            self,
            &format!("{ACTIVITY}/activity/{activity_id}/usage"),
            usage,
        )
        .await
    }
}

/// `PUT` a JSON body, ignoring the reply body (204).
async fn put<B: serde::Serialize + ?Sized>(
    client: &GolemClient,
    path: &str,
    body: &B,
) -> Result<(), ClientError> {
    let body = serde_json::to_value(body).map_err(|error| ClientError::Decode {
        url: format!("{}{path}", client.base_url),
        message: format!("cannot encode the request body: {error}"),
    })?;
    client.send(reqwest::Method::PUT, path, Some(body)).await?;
    Ok(())
}
