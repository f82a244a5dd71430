//! REST handlers of `/market-api/v1`, as real clients (yapapi, golem-js) call
//! them: ids are returned as JSON strings with 201, actions answer 204, long
//! polls answer `[]` after their timeout, and every error is `{"message"}`.
//! Property queries (Market API capability level 2, which the original does
//! not implement either) answer 501 with a message rather than a bare 404.
//! Every long-poll holds a [`LongPoll`] permit of its app-key and its
//! `timeout` is cut to [`MARKET_MAX_TIMEOUT`]; scan events stream as SSE
//! when the client asks for `text/event-stream`.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use golem_model::ids::{check_id, RecordId};
use golem_model::market::{AgreementProposal, AgreementState, DemandOfferBase, NewScan, Reason};
use golem_model::{GolemError, NodeId};
use serde::Deserialize;

use super::ownership::SubscriptionKind;
use super::scan_iterators::ScanItems;
use super::MarketService;
use crate::api::auth::Authenticated;
use crate::api::error::ApiResult;
use crate::api::long_polls::LongPoll;
use crate::api::query::{parse_timestamp, timeout_seconds, MARKET_MAX_TIMEOUT};

const PREFIX: &str = "/market-api/v1";
const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_EVENTS: i64 = 20;
const MAX_MAX_EVENTS: i64 = 100;
/// A scan page is larger: the original returns up to 500 offers by default.
const DEFAULT_SCAN_ITEMS: i64 = 500;
const MAX_SCAN_ITEMS: i64 = 100_000;

/// Register every market route on the app.
pub fn configure(market: MarketService) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config.app_data(web::Data::new(market)).service(
            web::scope(PREFIX)
                .route("/offers", web::post().to(subscribe_offer))
                .route("/offers", web::get().to(list_offers))
                .route(
                    "/offers/{subscription}",
                    web::delete().to(unsubscribe_offer),
                )
                .route("/offers/{subscription}/events", web::get().to(offer_events))
                .route(
                    "/offers/{subscription}/proposals/{proposal}",
                    web::get().to(get_offer_proposal),
                )
                .route(
                    "/offers/{subscription}/proposals/{proposal}",
                    web::post().to(counter_offer_proposal),
                )
                .route(
                    "/offers/{subscription}/proposals/{proposal}/reject",
                    web::post().to(reject_offer_proposal),
                )
                .route("/demands", web::post().to(subscribe_demand))
                .route("/demands", web::get().to(list_demands))
                .route(
                    "/demands/{subscription}",
                    web::delete().to(unsubscribe_demand),
                )
                .route(
                    "/demands/{subscription}/events",
                    web::get().to(demand_events),
                )
                .route(
                    "/demands/{subscription}/proposals/{proposal}",
                    web::get().to(get_demand_proposal),
                )
                .route(
                    "/demands/{subscription}/proposals/{proposal}",
                    web::post().to(counter_demand_proposal),
                )
                .route(
                    "/demands/{subscription}/proposals/{proposal}/reject",
                    web::post().to(reject_demand_proposal),
                )
                .route("/agreements", web::post().to(create_agreement))
                .route("/agreements", web::get().to(list_agreements))
                .route("/agreements/{agreement}", web::get().to(get_agreement))
                .route(
                    "/agreements/{agreement}/confirm",
                    web::post().to(confirm_agreement),
                )
                .route(
                    "/agreements/{agreement}/wait",
                    web::post().to(wait_for_approval),
                )
                .route(
                    "/agreements/{agreement}/approve",
                    web::post().to(approve_agreement),
                )
                .route(
                    "/agreements/{agreement}/reject",
                    web::post().to(reject_agreement),
                )
                .route(
                    "/agreements/{agreement}/cancel",
                    web::post().to(cancel_agreement),
                )
                .route(
                    "/agreements/{agreement}/terminate",
                    web::post().to(terminate_agreement),
                )
                .route(
                    "/agreements/{agreement}/terminate/reason",
                    web::post().to(termination_reason),
                )
                .route(
                    "/agreements/{agreement}/terminate/reason",
                    web::get().to(termination_reason),
                )
                .route("/agreementEvents", web::get().to(agreement_events))
                .route("/scan", web::post().to(begin_scan))
                .route("/scan/{scan}/events", web::get().to(scan_events))
                .route("/scan/{scan}", web::delete().to(end_scan))
                .route(
                    "/offers/{subscription}/propertyQuery/{query}",
                    web::post().to(property_query_reply),
                )
                .route(
                    "/demands/{subscription}/propertyQuery/{query}",
                    web::post().to(property_query_reply),
                ),
        );
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    timeout: Option<f64>,
    max_events: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScanEventsQuery {
    timeout: Option<f64>,
    max_events: Option<i64>,
    peer_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimeoutQuery {
    timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionQuery {
    app_session_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgreementEventsQuery {
    timeout: Option<f64>,
    max_events: Option<i64>,
    after_timestamp: Option<String>,
    app_session_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListAgreementsQuery {
    state: Option<AgreementState>,
    app_session_id: Option<String>,
    after_date: Option<String>,
    before_date: Option<String>,
}

/// A long-poll's `timeout`, cut to the Market API's cap ([`MARKET_MAX_TIMEOUT`]).
fn poll_timeout(seconds: Option<f64>) -> Result<Duration, GolemError> {
    timeout_seconds(seconds, DEFAULT_POLL_TIMEOUT, MARKET_MAX_TIMEOUT)
}

fn max_events(value: Option<i64>) -> Result<usize, GolemError> {
    let value = value.unwrap_or(DEFAULT_MAX_EVENTS);
    if !(1..=MAX_MAX_EVENTS).contains(&value) {
        return Err(GolemError::bad_request(format!(
            "maxEvents must be between 1 and {MAX_MAX_EVENTS}, got {value}"
        )));
    }
    Ok(value as usize)
}

/// An optional `Reason` body: empty, `null` or `{"message", ...}`.
fn optional_reason(body: &[u8]) -> Result<Option<Reason>, GolemError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Option<Reason>>(body)
        .map_err(|error| GolemError::bad_request(format!("malformed reason body: {error}")))
}

fn created_id(id: String) -> HttpResponse {
    HttpResponse::Created().json(id)
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

async fn subscribe_offer(
    auth: Authenticated,
    market: web::Data<MarketService>,
    body: web::Json<DemandOfferBase>,
) -> ApiResult<HttpResponse> {
    let id = market
        .subscribe_offer(auth.0.identity, body.into_inner())
        .await?;
    Ok(created_id(id))
}

async fn list_offers(
    auth: Authenticated,
    market: web::Data<MarketService>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(market.list_offers(auth.0.identity).await?))
}

async fn unsubscribe_offer(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    market.unsubscribe_offer(auth.0.identity, &path).await?;
    Ok(no_content())
}

async fn subscribe_demand(
    auth: Authenticated,
    market: web::Data<MarketService>,
    body: web::Json<DemandOfferBase>,
) -> ApiResult<HttpResponse> {
    let id = market
        .subscribe_demand(auth.0.identity, body.into_inner())
        .await?;
    Ok(created_id(id))
}

async fn list_demands(
    auth: Authenticated,
    market: web::Data<MarketService>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(market.list_demands(auth.0.identity).await?))
}

async fn unsubscribe_demand(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    market.unsubscribe_demand(auth.0.identity, &path).await?;
    Ok(no_content())
}

async fn events(
    kind: SubscriptionKind,
    auth: Authenticated,
    market: web::Data<MarketService>,
    subscription: &str,
    query: EventsQuery,
) -> ApiResult<HttpResponse> {
    let max = max_events(query.max_events)?;
    let events = market
        .collect_events(
            auth.0.identity,
            kind,
            subscription,
            poll_timeout(query.timeout)?,
            max,
        )
        .await?;
    Ok(HttpResponse::Ok().json(events))
}

async fn offer_events(
    _poll: LongPoll,
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    events(
        SubscriptionKind::Offer,
        auth,
        market,
        &path,
        query.into_inner(),
    )
    .await
}

async fn demand_events(
    _poll: LongPoll,
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<EventsQuery>,
) -> ApiResult<HttpResponse> {
    events(
        SubscriptionKind::Demand,
        auth,
        market,
        &path,
        query.into_inner(),
    )
    .await
}

async fn get_offer_proposal(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<(RecordId, RecordId)>,
) -> ApiResult<HttpResponse> {
    let (subscription, proposal) = path.into_inner();
    let proposal = market
        .get_proposal(
            auth.0.identity,
            SubscriptionKind::Offer,
            &subscription,
            &proposal,
        )
        .await?;
    Ok(HttpResponse::Ok().json(proposal))
}

async fn get_demand_proposal(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<(RecordId, RecordId)>,
) -> ApiResult<HttpResponse> {
    let (subscription, proposal) = path.into_inner();
    let proposal = market
        .get_proposal(
            auth.0.identity,
            SubscriptionKind::Demand,
            &subscription,
            &proposal,
        )
        .await?;
    Ok(HttpResponse::Ok().json(proposal))
}

async fn counter(
    kind: SubscriptionKind,
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: (RecordId, RecordId),
    body: DemandOfferBase,
) -> ApiResult<HttpResponse> {
    let (subscription, proposal) = path;
    let id = market
        .counter_proposal(auth.0.identity, kind, &subscription, &proposal, body)
        .await?;
    Ok(created_id(id))
}

async fn counter_offer_proposal(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<(RecordId, RecordId)>,
    body: web::Json<DemandOfferBase>,
) -> ApiResult<HttpResponse> {
    counter(
        SubscriptionKind::Offer,
        auth,
        market,
        path.into_inner(),
        body.into_inner(),
    )
    .await
}

async fn counter_demand_proposal(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<(RecordId, RecordId)>,
    body: web::Json<DemandOfferBase>,
) -> ApiResult<HttpResponse> {
    counter(
        SubscriptionKind::Demand,
        auth,
        market,
        path.into_inner(),
        body.into_inner(),
    )
    .await
}

async fn reject(
    kind: SubscriptionKind,
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: (RecordId, RecordId),
    body: &[u8],
) -> ApiResult<HttpResponse> {
    let (subscription, proposal) = path;
    let reason = optional_reason(body)?;
    market
        .reject_proposal(auth.0.identity, kind, &subscription, &proposal, reason)
        .await?;
    Ok(no_content())
}

async fn reject_offer_proposal(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<(RecordId, RecordId)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    reject(
        SubscriptionKind::Offer,
        auth,
        market,
        path.into_inner(),
        &body,
    )
    .await
}

async fn reject_demand_proposal(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<(RecordId, RecordId)>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    reject(
        SubscriptionKind::Demand,
        auth,
        market,
        path.into_inner(),
        &body,
    )
    .await
}

async fn create_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    body: web::Json<AgreementProposal>,
) -> ApiResult<HttpResponse> {
    check_id("proposal id", &body.proposal_id)?;
    let id = market
        .create_agreement(auth.0.identity, &body.proposal_id, body.valid_to)
        .await?;
    Ok(created_id(id))
}

async fn list_agreements(
    auth: Authenticated,
    market: web::Data<MarketService>,
    query: web::Query<ListAgreementsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let after = query
        .after_date
        .as_deref()
        .map(|text| parse_timestamp("afterDate", text))
        .transpose()?;
    let before = query
        .before_date
        .as_deref()
        .map(|text| parse_timestamp("beforeDate", text))
        .transpose()?;
    let agreements = market
        .list_agreements(
            auth.0.identity,
            query.state,
            query.app_session_id.as_deref(),
            after,
            before,
        )
        .await?;
    Ok(HttpResponse::Ok().json(agreements))
}

async fn get_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(market.get_agreement(auth.0.identity, &path)?))
}

async fn confirm_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<SessionQuery>,
) -> ApiResult<HttpResponse> {
    market
        .confirm_agreement(auth.0.identity, &path, query.into_inner().app_session_id)
        .await?;
    Ok(no_content())
}

async fn wait_for_approval(
    _poll: LongPoll,
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<TimeoutQuery>,
) -> ApiResult<HttpResponse> {
    // `timeout=0` means "indefinitely": as long as the cap.
    let timeout = match query.timeout {
        Some(0.0) => MARKET_MAX_TIMEOUT,
        other => poll_timeout(other)?,
    };
    market
        .wait_for_approval(auth.0.identity, &path, timeout)
        .await?;
    Ok(no_content())
}

async fn approve_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<SessionQuery>,
) -> ApiResult<HttpResponse> {
    market
        .approve_agreement(auth.0.identity, &path, query.into_inner().app_session_id)
        .await?;
    Ok(no_content())
}

async fn reject_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let reason = optional_reason(&body)?;
    market
        .reject_agreement(auth.0.identity, &path, reason)
        .await?;
    Ok(no_content())
}

async fn cancel_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let reason = optional_reason(&body)?;
    market
        .cancel_agreement(auth.0.identity, &path, reason)
        .await?;
    Ok(no_content())
}

async fn terminate_agreement(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let reason = optional_reason(&body)?;
    market
        .terminate_agreement(auth.0.identity, &path, reason)
        .await?;
    Ok(no_content())
}

async fn termination_reason(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(market.termination_reason(auth.0.identity, &path).await?))
}

async fn agreement_events(
    _poll: LongPoll,
    _auth: Authenticated,
    market: web::Data<MarketService>,
    query: web::Query<AgreementEventsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let max = max_events(query.max_events)?;
    let after = query
        .after_timestamp
        .as_deref()
        .map(|text| parse_timestamp("afterTimestamp", text))
        .transpose()?;
    let events = market
        .collect_agreement_events(
            after,
            query.app_session_id,
            poll_timeout(query.timeout)?,
            max,
        )
        .await?;
    Ok(HttpResponse::Ok().json(events))
}

async fn begin_scan(
    auth: Authenticated,
    market: web::Data<MarketService>,
    body: web::Json<NewScan>,
) -> ApiResult<HttpResponse> {
    Ok(created_id(
        market
            .begin_scan(auth.0.identity, body.into_inner())
            .await?,
    ))
}

async fn scan_events(
    poll: LongPoll,
    request: HttpRequest,
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<ScanEventsQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let max = query.max_events.unwrap_or(DEFAULT_SCAN_ITEMS);
    if !(0..=MAX_SCAN_ITEMS).contains(&max) {
        return Err(GolemError::bad_request(format!(
            "maxEvents must be between 0 and {MAX_SCAN_ITEMS}, got {max}"
        ))
        .into());
    }
    let max = max as usize;
    if wants_event_stream(&request) && query.peer_id.is_none() {
        // The stream lasts `timeout` (default: the cap) or until the scan ends.
        let lasts = match query.timeout {
            None => MARKET_MAX_TIMEOUT,
            given => poll_timeout(given)?,
        };
        // A first look, so an unknown or foreign scan is a plain 404.
        let first = market
            .collect_scan(auth.0.identity, &path, Duration::ZERO, max.max(1))
            .await?;
        return Ok(scan_stream(
            poll,
            market.into_inner(),
            auth.0.identity,
            path.into_inner().to_string(),
            first,
            lasts,
            max.max(1),
        ));
    }
    let timeout = poll_timeout(query.timeout)?;
    let items = match query.peer_id.as_deref() {
        Some(peer) => {
            let peer: NodeId = peer.trim().parse().map_err(|error| {
                GolemError::bad_request(format!("invalid peerId {peer:?}: {error}"))
            })?;
            market
                .collect_scan_from_peer(auth.0.identity, &path, peer, timeout, max)
                .await?
        }
        None => {
            market
                .collect_scan(auth.0.identity, &path, timeout, max)
                .await?
        }
    };
    Ok(HttpResponse::Ok().json(items))
}

fn wants_event_stream(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// One round of a scan stream waits at most this long, so pings go out between.
const SCAN_STREAM_ROUND: Duration = Duration::from_secs(5);
const SCAN_STREAM_PING: Duration = Duration::from_secs(15);

/// SSE frames of scan items: `event: offer` (or `demand`) and `data: <JSON>`
/// per item, `:ping` every 15 s; ends at `lasts` or when the scan ends. The
/// long-poll permit lives in the stream, so it is given back when the
/// stream ends or the client leaves.
fn scan_stream(
    poll: LongPoll,
    market: std::sync::Arc<MarketService>,
    owner: NodeId,
    id: String,
    first: ScanItems,
    lasts: Duration,
    max: usize,
) -> HttpResponse {
    struct Stream {
        _poll: LongPoll,
        market: std::sync::Arc<MarketService>,
        owner: NodeId,
        id: String,
        pending: Option<ScanItems>,
        ends: tokio::time::Instant,
        next_ping: tokio::time::Instant,
        max: usize,
        done: bool,
    }
    let now = tokio::time::Instant::now();
    let state = Stream {
        _poll: poll,
        market,
        owner,
        id,
        pending: Some(first),
        ends: now + lasts,
        next_ping: now + SCAN_STREAM_PING,
        max,
        done: false,
    };
    let body = futures::stream::unfold(state, |mut stream| async move {
        loop {
            if stream.done {
                return None;
            }
            if let Some(items) = stream.pending.take() {
                if !items.is_empty() {
                    let frames = scan_frames(&items);
                    return Some((Ok::<_, actix_web::Error>(web::Bytes::from(frames)), stream));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= stream.ends {
                return None;
            }
            if now >= stream.next_ping {
                stream.next_ping = now + SCAN_STREAM_PING;
                return Some((Ok(web::Bytes::from_static(b":ping\n\n")), stream));
            }
            let round = SCAN_STREAM_ROUND
                .min(stream.ends - now)
                .min(stream.next_ping - now);
            match stream
                .market
                .collect_scan(stream.owner, &stream.id, round, stream.max)
                .await
            {
                Ok(items) => stream.pending = Some(items),
                Err(error) => {
                    // The scan ended (deleted or expired): so does the stream.
                    tracing::debug!(scan = %stream.id, %error.message, "scan stream ends");
                    stream.done = true;
                }
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(body)
}

fn scan_frames(items: &ScanItems) -> String {
    let mut frames = String::new();
    let mut push = |event: &str, json: serde_json::Result<String>| match json {
        Ok(data) => frames.push_str(&format!("event: {event}\ndata: {data}\n\n")),
        Err(error) => tracing::warn!(%error, "a scan item does not serialize"),
    };
    match items {
        ScanItems::Offers(offers) => {
            for offer in offers {
                push("offer", serde_json::to_string(offer));
            }
        }
        ScanItems::Demands(demands) => {
            for demand in demands {
                push("demand", serde_json::to_string(demand));
            }
        }
    }
    frames
}

async fn end_scan(
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
) -> ApiResult<HttpResponse> {
    market.end_scan(auth.0.identity, &path).await?;
    Ok(no_content())
}

/// `POST /offers|demands/{id}/propertyQuery/{queryId}`: dynamic property
/// queries belong to Market API capability level 2; no market sends
/// `PropertyQueryEvent`s (the original neither), so there is never a query to answer.
async fn property_query_reply(_auth: Authenticated) -> ApiResult<HttpResponse> {
    Err(GolemError::not_implemented(
        "property queries are not supported: this market never sends PropertyQueryEvent (Market API capability level 2, not implemented by the original yagna either)",
    )
    .into())
}
