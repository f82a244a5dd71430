//! The REST API (actix-web): authentication, the shared error shape, and the
//! routes of each service. It binds before anything else answers and is handed
//! every service handle it serves; it must not hold state of its own.

pub mod auth;
pub mod cors;
pub mod error;
pub mod gsb;
pub mod local;
pub mod long_polls;
pub mod query;
pub mod request_headers;

use std::net::{SocketAddr, TcpListener};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{middleware, web, App, HttpResponse, HttpServer};
use golem_model::identity::MeResponse;

use self::auth::{Authenticated, BodyLimit};
use crate::activity::ActivityService;
use crate::identity::IdentityService;
use crate::market::MarketService;
use crate::net::NetService;
use crate::payment::PaymentService;
use crate::vpn::VpnService;

/// The `[api]` section of the daemon config file (kebab-case keys, every one
/// optional), `GOLEM_API_*` in the environment and the `--api-*` flags of
/// `golem-daemon run`. (The older top-level `api-addr`, `api-workers` and
/// `api-body-limit` keep their names.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApiSettings {
    /// Long-polls one app-key may hold open at once (events, batch results,
    /// `/wait`); one more is answered 429. yapapi and golem-js hold three or
    /// four per session, a provider agent two.
    pub max_long_polls_per_key: usize,
    /// Browser origins let in by CORS (`scheme://host[:port]`, `*` for any);
    /// empty: no CORS headers at all and every preflight refused.
    pub allow_origin: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_long_polls_per_key: 100,
            allow_origin: Vec::new(),
        }
    }
}

/// Handles of the services the API serves.
#[derive(Clone)]
pub struct ApiDeps {
    pub identity: IdentityService,
    pub net: NetService,
    pub market: MarketService,
    pub activity: ActivityService,
    pub payment: PaymentService,
    pub vpn: VpnService,
    /// The GSB API's bound services (one per node: every worker shares it).
    pub gsb: gsb::GsbApi,
    /// Where the bus socket is, for the node's own agents (`/local-api/v1/bus`).
    pub bus: local::BusLocation,
    /// Open long-polls per app-key (one per node).
    pub long_polls: long_polls::LongPolls,
    /// Browser origins let in by CORS.
    pub allowed_origins: cors::AllowedOrigins,
}

pub struct ApiServer {
    pub local_addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    /// Stop accepting, finish in-flight requests (briefly) and wait for the workers.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

async fn me(auth: Authenticated) -> HttpResponse {
    let info = &auth.0;
    HttpResponse::Ok().json(MeResponse {
        identity: info.identity,
        name: info.name.clone(),
        role: info.role.clone(),
    })
}

/// `GET /net-api/v1/status`: the facts of `golem-daemon net status`.
async fn net_status(net: web::Data<NetService>) -> HttpResponse {
    HttpResponse::Ok().json(net.status().await)
}

/// `GET /net-api/v2/net/status`: the v1 facts plus the fields of ya-client's
/// v2 `Status` (`nodeId`, `listenIp`, `publicIp`, `sessions`).
async fn net_status_v2(net: web::Data<NetService>) -> HttpResponse {
    let status = net.status().await;
    let first_ip = |addrs: &[String]| {
        addrs.iter().find_map(|addr| {
            let mut parts = addr.split('/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(""), Some("ip4" | "ip6"), Some(ip)) => Some(ip.to_string()),
                _ => None,
            }
        })
    };
    let listen_ip = first_ip(&status.listen_addrs);
    let public_ip = first_ip(&status.external_addrs);
    let sessions = status.connected.len();
    let mut body = serde_json::to_value(&status).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = body.as_object_mut() {
        object.insert("nodeId".into(), serde_json::json!(status.node_id));
        object.insert("listenIp".into(), serde_json::json!(listen_ip));
        object.insert("publicIp".into(), serde_json::json!(public_ip));
        object.insert("sessions".into(), serde_json::json!(sessions));
    }
    HttpResponse::Ok().json(body)
}

/// `GET /version/get` as the original answers it; golem-js refuses versions below 0.15.2.
async fn version() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "current": {
            "version": crate::COMPATIBLE_YAGNA_VERSION,
            "name": format!("golem-daemon {}", env!("CARGO_PKG_VERSION")),
            "seen": true,
            "releaseTs": "2026-11-23T00:00:00",
            "insertionTs": "2026-11-23T00:00:00",
            "updateTs": "2026-11-23T00:00:00",
        },
        "pending": null,
    }))
}

/// Every route, on an App being built (shared by the server and service tests).
pub fn configure(deps: ApiDeps, body_limit: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config
            .app_data(web::Data::new(deps.identity.clone()))
            .app_data(web::Data::new(deps.net.clone()))
            .app_data(web::Data::new(BodyLimit(body_limit)))
            .app_data(web::Data::new(deps.long_polls.clone()))
            .app_data(web::Data::new(deps.allowed_origins.clone()))
            .app_data(error::json_config(body_limit))
            .app_data(error::query_config())
            .app_data(error::path_config())
            .route("/me", web::get().to(me))
            .route("/version/get", web::get().to(version))
            .route("/net-api/v1/status", web::get().to(net_status))
            .route("/net-api/v2/net/status", web::get().to(net_status_v2))
            .configure(crate::market::rest::configure(deps.market.clone()))
            .configure(crate::activity::rest::configure(deps.activity.clone()))
            .configure(crate::payment::rest::configure(deps.payment.clone()))
            .configure(crate::vpn::rest::configure(deps.vpn.clone()))
            .configure(gsb::configure(deps.gsb.clone()))
            .configure(local::configure(deps.bus.clone()));
    }
}

/// Bind the REST API on `listener` and start serving.
pub fn start(
    listener: TcpListener,
    workers: usize,
    body_limit: usize,
    deps: ApiDeps,
) -> std::io::Result<ApiServer> {
    let local_addr = listener.local_addr()?;
    let workers = if workers == 0 {
        std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(2)
    } else {
        workers
    };
    let server = HttpServer::new(move || {
        App::new()
            .wrap(middleware::from_fn(auth::require_app_key))
            .wrap(middleware::from_fn(cors::cors))
            .wrap(middleware::from_fn(access_log))
            .configure(configure(deps.clone(), body_limit))
            .default_service(web::to(error::no_such_route))
    })
    .workers(workers)
    // A client that closes its side ends its request: the handler (a
    // long-poll, say) is dropped at once instead of holding the socket in
    // CLOSE-WAIT until its timeout. No client we serve half-closes a
    // connection and then waits for the answer.
    .h1_allow_half_closed(false)
    // An idle kept-alive connection stays open longer than the clients' own
    // idle limits (aiohttp under yapapi: 15 s; our client: 20 s), so a client
    // never reuses a connection the server is closing at that moment (it
    // failed as `IncompleteMessage` with the 5 s default).
    .keep_alive(std::time::Duration::from_secs(IDLE_CONNECTION_SECS))
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(ApiServer {
        local_addr,
        handle,
        task,
    })
}

/// How long the server keeps an idle client connection open.
const IDLE_CONNECTION_SECS: u64 = 30;

/// One debug line per request (`RUST_LOG=golem_daemon::api::access=debug`):
/// method, path with query (`authToken` redacted), status and time to the response head, for
/// following what a client such as yapapi or golem-js does and when. Costs one
/// level check when the target is off.
async fn access_log(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The outermost layer, so the first to touch a request: a long-poll's
    // headers stop pinning the connection's read buffer before anything
    // else runs (and while the request is still unshared).
    request_headers::detach_from_read_buffer(&mut request);
    if !tracing::enabled!(target: "golem_daemon::api::access", tracing::Level::DEBUG) {
        return next.call(request).await;
    }
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let uri = auth::redacted_uri(request.uri());
    let response = next.call(request).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &response {
        Ok(response) => tracing::debug!(target: "golem_daemon::api::access", %method, %uri,
            status = response.status().as_u16(), elapsed_ms, "request"),
        Err(error) => tracing::debug!(target: "golem_daemon::api::access", %method, %uri,
            %error, elapsed_ms, "request failed"),
    }
    response
}
