//! REST handlers of `/market-api/v1`, as real clients (yapapi, golem-js) call
//! them: ids are returned as JSON strings with 201, actions answer 204, long
//! polls answer `[]` after their timeout, and every error is `{"message"}`.
//! Property queries (Market API capability level 2, which the original does
//! not implement either) answer 501 with a message rather than a bare 404.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use golem_model::ids::{check_id, RecordId};
use golem_model::market::{AgreementProposal, AgreementState, DemandOfferBase, NewScan, Reason};
use golem_model::{GolemError, NodeId};
use serde::Deserialize;

use super::ownership::SubscriptionKind;
use super::MarketService;
use crate::api::auth::Authenticated;
use crate::api::error::ApiResult;
use crate::api::query::parse_timestamp;

const PREFIX: &str = "/market-api/v1";
const DEFAULT_POLL_TIMEOUT: f64 = 5.0;
const MAX_POLL_TIMEOUT: f64 = 600.0;
/// `timeout=0` on `/wait` means "indefinitely"; we stop at an hour.
const INDEFINITE_WAIT: f64 = 3600.0;
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

fn poll_timeout(seconds: Option<f64>) -> Duration {
    let seconds = seconds.unwrap_or(DEFAULT_POLL_TIMEOUT);
    let seconds = if seconds.is_finite() {
        seconds.clamp(0.0, MAX_POLL_TIMEOUT)
    } else {
        DEFAULT_POLL_TIMEOUT
    };
    Duration::from_secs_f64(seconds)
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
            poll_timeout(query.timeout),
            max,
        )
        .await?;
    Ok(HttpResponse::Ok().json(events))
}

async fn offer_events(
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
    auth: Authenticated,
    market: web::Data<MarketService>,
    path: web::Path<RecordId>,
    query: web::Query<TimeoutQuery>,
) -> ApiResult<HttpResponse> {
    let timeout = match query.timeout {
        Some(0.0) => Duration::from_secs_f64(INDEFINITE_WAIT),
        other => poll_timeout(other),
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
            poll_timeout(query.timeout),
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
    let timeout = poll_timeout(query.timeout);
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
