//! Routes for the node's own agents, not part of the Golem public API:
//! `GET /local-api/v1/bus` tells a local caller with an app-key where the bus
//! socket is, so `golem-provider` started with only `YAGNA_API_URL` and
//! `YAGNA_APPKEY` (as the original's agent is) hands its exe units the socket
//! of the daemon it talks to. It answers only callers on a loopback address: the
//! path is of no use elsewhere and says something about the host.
//! `GET /local-api/v1/long-polls` tells how many REST long-polls are open
//! (all keys, and the caller's key), for benchmarks and operators checking
//! that clients which left are not still held.

use std::path::PathBuf;

use actix_web::{web, HttpRequest, HttpResponse};
use golem_model::identity::BusInfo;
use golem_model::{ErrorCode, GolemError};

use super::auth::Authenticated;
use super::error::ApiError;

/// Where this daemon's bus listens (shared by every worker).
#[derive(Clone, Debug)]
pub struct BusLocation {
    pub socket: PathBuf,
}

async fn bus_info(
    request: HttpRequest,
    auth: Authenticated,
    location: web::Data<BusLocation>,
) -> Result<HttpResponse, ApiError> {
    let local = request
        .peer_addr()
        .is_some_and(|address| address.ip().is_loopback());
    if !local {
        return Err(GolemError::new(
            ErrorCode::Forbidden,
            "the bus socket is told only to callers on a loopback address",
        )
        .into());
    }
    Ok(HttpResponse::Ok().json(BusInfo {
        bus_socket: location.socket.display().to_string(),
        node_id: auth.0.identity,
    }))
}

/// `GET /local-api/v1/long-polls`: `{"open": <all keys>, "mine": <the caller's key>}`.
async fn long_polls(
    auth: Authenticated,
    polls: web::Data<super::long_polls::LongPolls>,
) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "open": polls.open(),
        "mine": polls.open_for(&auth.0.name),
    }))
}

/// The `/local-api/v1` routes.
pub fn configure(location: BusLocation) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config
            .app_data(web::Data::new(location))
            .route("/local-api/v1/bus", web::get().to(bus_info))
            .route("/local-api/v1/long-polls", web::get().to(long_polls));
    }
}
