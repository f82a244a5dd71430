//! Typed requestor-side calls of the Golem Activity API (`/activity-api/v1`) on
//! [`GolemClient`]: create (yapapi's bare-string form), destroy, exec, batch
//! results with a long-poll timeout, the SSE event stream of a batch, state and
//! usage.

use futures::{Stream, StreamExt};
use golem_model::activity::{
    ActivityState, ActivityUsage, ExeScriptCommand, ExeScriptCommandResult, RuntimeEvent,
};

use crate::{ClientError, GolemClient};

const ACTIVITY: &str = "/activity-api/v1";

impl GolemClient {
    /// `POST /activity` with the agreement id as a bare JSON string; the new activity id.
    /// `timeout_seconds` bounds how long the daemon waits for the exe unit.
    pub async fn create_activity(
        &self,
        agreement_id: &str,
        timeout_seconds: f64,
    ) -> Result<String, ClientError> {
        self.post(
            &format!("{ACTIVITY}/activity?timeout={timeout_seconds}"),
            agreement_id,
        )
        .await
    }

    /// `DELETE /activity/{id}`.
    pub async fn destroy_activity(&self, activity_id: &str) -> Result<(), ClientError> {
        self.delete(&format!("{ACTIVITY}/activity/{activity_id}"))
            .await
    }

    /// `POST /activity/{id}/exec`: the batch id.
    pub async fn exec(
        &self,
        activity_id: &str,
        commands: &[ExeScriptCommand],
    ) -> Result<String, ClientError> {
        let text = serde_json::to_string(commands).map_err(|error| ClientError::Decode {
            url: format!("{}{ACTIVITY}/activity/{activity_id}/exec", self.base_url),
            message: format!("cannot encode the script: {error}"),
        })?;
        self.post(
            &format!("{ACTIVITY}/activity/{activity_id}/exec"),
            &serde_json::json!({ "text": text }),
        )
        .await
    }

    /// `GET /activity/{id}/exec/{batch}?timeout=`: the results so far (cumulative).
    pub async fn batch_results(
        &self,
        activity_id: &str,
        batch_id: &str,
        timeout_seconds: f64,
    ) -> Result<Vec<ExeScriptCommandResult>, ClientError> {
        self.get(&format!(
            "{ACTIVITY}/activity/{activity_id}/exec/{batch_id}?timeout={timeout_seconds}"
        ))
        .await
    }

    /// Poll a batch until its last result says `isBatchFinished`, with rounds of
    /// `round_seconds`, giving up after `total` with a timeout error.
    pub async fn wait_batch(
        &self,
        activity_id: &str,
        batch_id: &str,
        total: std::time::Duration,
    ) -> Result<Vec<ExeScriptCommandResult>, ClientError> {
        let deadline = std::time::Instant::now() + total;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let round = left.as_secs_f64().clamp(0.0, 5.0);
            let results = self.batch_results(activity_id, batch_id, round).await?;
            if results
                .last()
                .is_some_and(|result| result.is_batch_finished)
            {
                return Ok(results);
            }
            if std::time::Instant::now() >= deadline {
                return Err(ClientError::Api {
                    method: "GET".into(),
                    url: format!(
                        "{}{ACTIVITY}/activity/{activity_id}/exec/{batch_id}",
                        self.base_url
                    ),
                    status: 408,
                    message: format!(
                        "batch {batch_id} did not finish within {:.1} s",
                        total.as_secs_f64()
                    ),
                });
            }
        }
    }

    /// The batch's runtime events as Server-Sent Events, ending with the batch.
    pub async fn batch_events(
        &self,
        activity_id: &str,
        batch_id: &str,
    ) -> Result<impl Stream<Item = Result<RuntimeEvent, ClientError>>, ClientError> {
        let url = format!(
            "{}{ACTIVITY}/activity/{activity_id}/exec/{batch_id}",
            self.base_url
        );
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.app_key)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(ClientError::Api {
                method: "GET".into(),
                url,
                status: status.as_u16(),
                message,
            });
        }
        let body = Box::pin(response.bytes_stream());
        let stream = futures::stream::unfold(
            (body, Vec::new(), std::collections::VecDeque::new(), false),
            move |(mut body, mut buffer, mut ready, mut done)| {
                let url = url.clone();
                async move {
                    loop {
                        if let Some(event) = ready.pop_front() {
                            return Some((event, (body, buffer, ready, done)));
                        }
                        if done {
                            return None;
                        }
                        match body.next().await {
                            None => done = true,
                            Some(Err(source)) => {
                                ready.push_back(Err(ClientError::Unreachable {
                                    url: url.clone(),
                                    source,
                                }));
                                done = true;
                            }
                            Some(Ok(chunk)) => {
                                buffer.extend_from_slice(&chunk);
                                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                                    let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                                    if let Some(event) =
                                        parse_sse_frame(&String::from_utf8_lossy(&frame))
                                    {
                                        ready.push_back(event);
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
        Ok(stream)
    }

    /// `GET /activity/{id}/state`.
    pub async fn activity_state(&self, activity_id: &str) -> Result<ActivityState, ClientError> {
        self.get(&format!("{ACTIVITY}/activity/{activity_id}/state"))
            .await
    }

    /// `GET /activity/{id}/usage`.
    pub async fn activity_usage(&self, activity_id: &str) -> Result<ActivityUsage, ClientError> {
        self.get(&format!("{ACTIVITY}/activity/{activity_id}/usage"))
            .await
    }
}

/// One SSE frame: `event: runtime` + `data: <json>`; comments (`:ping`) are skipped.
fn parse_sse_frame(frame: &str) -> Option<Result<RuntimeEvent, ClientError>> {
    let data: String = frame
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    if data.is_empty() {
        return None;
    }
    Some(
        serde_json::from_str(&data).map_err(|error| ClientError::Decode {
            url: "activity event stream".into(),
            message: format!("bad runtime event {data:?}: {error}"),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_frames_parse_and_pings_are_skipped() {
        assert!(parse_sse_frame(":ping\n\n").is_none());
        let frame = "event: runtime\ndata: {\"batch_id\":\"b\",\"index\":0,\"timestamp\":\"2024-01-01T00:00:00\",\"kind\":{\"finished\":{\"return_code\":0,\"message\":null}}}\n\n";
        let event = parse_sse_frame(frame)
            .expect("an event")
            .expect("it parses");
        assert_eq!(event.batch_id, "b");
        assert!(parse_sse_frame("data: {oops\n\n")
            .expect("an event")
            .is_err());
    }
}
