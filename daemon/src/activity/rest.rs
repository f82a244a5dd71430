//! REST routes of the Activity API (`/activity-api/v1`): requestor control
//! (create, destroy, exec, batch results polled or as SSE, state, usage,
//! running command, agreement) and the provider agent's event feed. Shapes
//! follow the original, including its traps: create accepts a bare JSON
//! string or an object and answers in the same form. Batch results (polled
//! or SSE) and provider events hold a long-poll permit of their app-key;
//! every `timeout` is cut to [`ACTIVITY_MAX_TIMEOUT`]; the encrypted
//! ExeScript channel answers 501.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::stream::{self, StreamExt};
use golem_bus::Caller;
use golem_model::activity::parse_exe_script;
use golem_model::activity_control::CreateActivityResult;
use golem_model::ids::{check_id, RecordId};
use golem_model::GolemError;
use serde::Deserialize;

use super::ActivityService;
use crate::api::error::{ApiError, ApiResult};
use crate::api::long_polls::LongPoll;
use crate::api::query::{parse_timestamp, timeout_seconds, ACTIVITY_MAX_TIMEOUT};

const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(60);
const SSE_PING_INTERVAL: Duration = Duration::from_secs(15);

pub fn configure(activity: ActivityService) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config.service(
            web::scope("/activity-api/v1")
                .app_data(web::Data::new(activity))
                .route("/activity", web::post().to(create_activity))
                .route("/activity/{id}", web::delete().to(destroy_activity))
                .route("/activity/{id}/exec", web::post().to(exec))
                .route("/activity/{id}/encrypted", web::post().to(encrypted))
                .route("/activity/{id}/exec/{batch}", web::get().to(batch_results))
                .route("/activity/{id}/state", web::get().to(state))
                .route("/activity/{id}/state", web::put().to(set_state))
                .route("/activity/{id}/usage", web::get().to(usage))
                .route("/activity/{id}/usage", web::put().to(set_usage))
                .route("/activity/{id}/command", web::get().to(running_command))
                .route("/activity/{id}/agreement", web::get().to(agreement_of))
                .route("/events", web::get().to(provider_events)),
        );
    }
}

#[derive(Debug, Deserialize)]
struct TimeoutQuery {
    timeout: Option<f64>,
}

/// A `timeout` query value, cut to the Activity API's cap ([`ACTIVITY_MAX_TIMEOUT`]).
fn seconds(value: Option<f64>) -> Result<Option<Duration>, ApiError> {
    match value {
        None => Ok(None),
        given => Ok(Some(timeout_seconds(
            given,
            Duration::ZERO,
            ACTIVITY_MAX_TIMEOUT,
        )?)),
    }
}

/// `POST /activity`: body `"<agreementId>"` (yapapi) or `{"agreementId": ...}` (golem-js).
async fn create_activity(
    activity: web::Data<ActivityService>,
    query: web::Query<TimeoutQuery>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError(GolemError::bad_request(format!(
            "malformed JSON body: {error}"
        )))
    })?;
    let (agreement_id, object_form) = match &value {
        serde_json::Value::String(id) => (id.clone(), false),
        serde_json::Value::Object(fields) => {
            match fields.get("agreementId").and_then(|id| id.as_str()) {
                Some(id) => (id.to_string(), true),
                None => {
                    return Err(ApiError(GolemError::bad_request(
                        "the body object needs a string agreementId",
                    )))
                }
            }
        }
        _ => {
            return Err(ApiError(GolemError::bad_request(
                "send the agreement id as a JSON string or {\"agreementId\": ...}",
            )))
        }
    };
    check_id("agreement id", &agreement_id)?;
    let timeout = seconds(query.timeout)?.unwrap_or(DEFAULT_CREATE_TIMEOUT);
    let activity_id = activity.requestor.create(&agreement_id, timeout).await?;
    if object_form {
        return Ok(HttpResponse::Created().json(CreateActivityResult {
            activity_id,
            credentials: None,
        }));
    }
    Ok(HttpResponse::Created().json(activity_id))
}

async fn destroy_activity(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    activity.requestor.destroy(&path).await?;
    Ok(HttpResponse::Ok().json(()))
}

/// `POST /activity/{id}/encrypted`: the original's encrypted ExeScript
/// channel (SGX exe units with a secure channel). No exe unit here offers
/// one, so it answers 501 rather than a bare 404.
async fn encrypted(_path: web::Path<RecordId>) -> ApiResult<HttpResponse> {
    Err(ApiError(GolemError::not_implemented(
        "encrypted ExeScript calls are not supported: they need an SGX exe unit with a secure channel, which no exe unit of this node offers; use POST /activity/{id}/exec",
    )))
}

#[derive(Debug, Deserialize)]
struct ExecRequest {
    text: String,
}

async fn exec(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
    request: web::Json<ExecRequest>,
) -> ApiResult<HttpResponse> {
    let commands = parse_exe_script(&request.text).map_err(|error| {
        ApiError(GolemError::bad_request(format!(
            "invalid ExeScript in `text`: {error}"
        )))
    })?;
    if commands.is_empty() {
        return Err(ApiError(GolemError::bad_request(
            "the ExeScript has no commands",
        )));
    }
    let batch_id = activity.requestor.exec(&path, commands).await?;
    Ok(HttpResponse::Ok().json(batch_id))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultsQuery {
    timeout: Option<f64>,
    command_index: Option<u32>,
}

async fn batch_results(
    poll: LongPoll,
    request: HttpRequest,
    activity: web::Data<ActivityService>,
    path: web::Path<(RecordId, RecordId)>,
    query: web::Query<ResultsQuery>,
) -> ApiResult<HttpResponse> {
    let (activity_id, batch_id) = path.into_inner();
    let wants_events = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_events {
        return sse(
            poll,
            activity.requestor.batch_events(&activity_id, &batch_id)?,
        );
    }
    let timeout = seconds(query.timeout)?;
    let results = activity
        .requestor
        .batch_results(&activity_id, &batch_id, query.command_index, timeout)
        .await?;
    Ok(HttpResponse::Ok().json(results))
}

/// Runtime events as Server-Sent Events, with a `:ping` comment every 15 s.
/// The long-poll permit lives as long as the stream.
fn sse(poll: LongPoll, events: golem_bus::ReplyStream) -> ApiResult<HttpResponse> {
    let ping = tokio::time::interval_at(
        tokio::time::Instant::now() + SSE_PING_INTERVAL,
        SSE_PING_INTERVAL,
    );
    let body = stream::unfold(
        (events, ping, 0u64, poll),
        |(mut events, mut ping, sent, poll)| async move {
            tokio::select! {
                item = events.next() => match item {
                    Some(Ok(event)) => {
                        let frame = format!("event: runtime\ndata: {event}\nid: {sent}\n\n");
                        Some((Ok::<_, actix_web::Error>(web::Bytes::from(frame)), (events, ping, sent + 1, poll)))
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "batch event stream ended with an error");
                        None
                    }
                    None => None,
                },
                _ = ping.tick() => Some((Ok(web::Bytes::from_static(b":ping\n\n")), (events, ping, sent, poll))),
            }
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body))
}

async fn state(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    if activity.requestor.find(&path).is_some() {
        return Ok(HttpResponse::Ok().json(activity.requestor.state(&path).await?));
    }
    if activity.provider.hosts(&path) {
        return Ok(HttpResponse::Ok().json(
            activity
                .provider
                .activity_state(Caller::Local, &path)
                .await?,
        ));
    }
    Err(ApiError(GolemError::not_found(format!(
        "unknown activity {path}"
    ))))
}

async fn usage(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    if activity.requestor.find(&path).is_some() {
        return Ok(HttpResponse::Ok().json(activity.requestor.usage(&path).await?));
    }
    if activity.provider.hosts(&path) {
        return Ok(HttpResponse::Ok().json(
            activity
                .provider
                .activity_usage(Caller::Local, &path)
                .await?,
        ));
    }
    Err(ApiError(GolemError::not_found(format!(
        "unknown activity {path}"
    ))))
}

/// Provider side: the agent sets the state of an activity this node hosts.
async fn set_state(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
    state: web::Json<golem_model::activity::ActivityState>,
) -> ApiResult<HttpResponse> {
    if !activity.provider.hosts(&path) {
        return Err(ApiError(GolemError::not_found(format!(
            "activity {path} is not hosted by this node"
        ))));
    }
    activity
        .provider
        .set_state(&path, state.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Provider side: the agent sets the usage counters of an activity this node hosts.
async fn set_usage(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
    usage: web::Json<golem_model::activity::ActivityUsage>,
) -> ApiResult<HttpResponse> {
    if !activity.provider.hosts(&path) {
        return Err(ApiError(GolemError::not_found(format!(
            "activity {path} is not hosted by this node"
        ))));
    }
    activity
        .provider
        .set_usage(&path, usage.into_inner())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn running_command(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    let command = activity.requestor.running_command(&path).await?;
    Ok(HttpResponse::Ok().json(command.into_iter().collect::<Vec<_>>()))
}

/// `GET /activity/{id}/agreement` (golem-js): the agreement id as a JSON string.
async fn agreement_of(
    activity: web::Data<ActivityService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    match activity.requestor.find(&path) {
        Some(record) => Ok(HttpResponse::Ok().json(record.agreement_id)),
        None => Err(ApiError(GolemError::not_found(format!(
            "unknown activity {path}"
        )))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    after_timestamp: Option<String>,
    timeout: Option<f64>,
    max_events: Option<usize>,
    #[allow(dead_code)]
    app_session_id: Option<String>,
}

/// `GET /events`: what the provider agent must do (create/destroy activities).
async fn provider_events(
    _poll: LongPoll,
    activity: web::Data<ActivityService>,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    let after = query
        .after_timestamp
        .as_deref()
        .map(|text| parse_timestamp("afterTimestamp", text))
        .transpose()?;
    let timeout = timeout_seconds(query.timeout, Duration::from_secs(5), ACTIVITY_MAX_TIMEOUT)?;
    let max_events = query.max_events.unwrap_or(100).clamp(1, 1000);
    // Built after the wait, so a waiting poll holds no response head.
    let events = activity.provider.events(after, timeout, max_events).await?;
    Ok(HttpResponse::Ok().json(events))
}
