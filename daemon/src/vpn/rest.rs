//! REST routes of the Net API, the same handlers under `/net-api/v1` and
//! `/net-api/v2/vpn`, as yapapi and golem-js call them: every success is 200
//! (`null` where there is nothing to say), POSTs of addresses and nodes are
//! idempotent, and errors are `{"message"}` (404 for a network that is not
//! the caller's, 400 naming the field for a bad address).
//!
//! `GET /net/{id}/tcp/{ip}/{port}` is a WebSocket carrying one TCP stream in
//! binary messages (text is taken too). The connection is made before the 101
//! answer; a refusal or timeout is an HTTP error instead. The server pings
//! every 5 s and gives up after 10 s of silence; the client's Close sends FIN
//! at once; the remote's FIN is passed on after its last byte, as a Close.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use golem_model::vpn::{NetworkAddress, NetworkNode, NewNetwork};
use golem_model::GolemError;

use super::actor::{
    AddAddress, AddNode, ConnectTarget, CreateNetwork, DeleteNetwork, ListNetworks, NetworkView,
    ReadNetwork, RemoveNode, StackOf,
};
use super::address::parse_port;
use super::stack::{ConnectionEvent, TcpConnection};
use super::VpnService;
use crate::api::auth::Authenticated;
use crate::api::error::{ApiError, ApiResult};

/// Where the Net API lives: the original's v1, and v2's `vpn` part.
const PREFIXES: [&str; 2] = ["/net-api/v1", "/net-api/v2/vpn"];
const PING_INTERVAL: Duration = Duration::from_secs(5);
const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// The largest WebSocket message taken (yapapi sends up to 64 KiB).
const MAX_MESSAGE: usize = 1024 * 1024;

/// Register the Net API's routes under both prefixes.
pub fn configure(vpn: VpnService) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config.app_data(web::Data::new(vpn));
        for prefix in PREFIXES {
            config.service(
                web::scope(prefix)
                    .route("/net", web::get().to(list_networks))
                    .route("/net", web::post().to(create_network))
                    .route("/net/{id}", web::get().to(get_network))
                    .route("/net/{id}", web::delete().to(delete_network))
                    .route("/net/{id}/addresses", web::get().to(list_addresses))
                    .route("/net/{id}/addresses", web::post().to(add_address))
                    .route("/net/{id}/nodes", web::get().to(list_nodes))
                    .route("/net/{id}/nodes", web::post().to(add_node))
                    .route("/net/{id}/nodes/{node}", web::delete().to(remove_node))
                    .route("/net/{id}/tcp", web::get().to(list_connections))
                    .route("/net/{id}/tcp/{ip}/{port}", web::get().to(connect_tcp))
                    .route("/net/{id}/listen-tcp/{port}", web::get().to(listen_tcp))
                    .route("/net/{id}/proxy", web::get().to(list_proxies)),
            );
        }
    }
}

fn null() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::Value::Null)
}

async fn create_network(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    body: web::Json<NewNetwork>,
) -> ApiResult<HttpResponse> {
    let network = vpn
        .ask(CreateNetwork {
            owner: auth.0.identity,
            request: body.into_inner(),
        })
        .await?;
    Ok(HttpResponse::Ok().json(network))
}

async fn list_networks(vpn: web::Data<VpnService>, auth: Authenticated) -> ApiResult<HttpResponse> {
    let networks = vpn
        .ask(ListNetworks {
            owner: auth.0.identity,
        })
        .await?;
    Ok(HttpResponse::Ok().json(networks))
}

async fn read(
    vpn: &VpnService,
    auth: Authenticated,
    id: String,
    view: NetworkView,
) -> ApiResult<HttpResponse> {
    let value = vpn
        .ask(ReadNetwork {
            owner: auth.0.identity,
            id,
            view,
        })
        .await?;
    Ok(HttpResponse::Ok().json(value))
}

/// The network as its owner sees it (404 for anyone else).
async fn owned(vpn: &VpnService, auth: Authenticated, id: String) -> ApiResult<()> {
    vpn.ask(ReadNetwork {
        owner: auth.0.identity,
        id,
        view: NetworkView::Network,
    })
    .await?;
    Ok(())
}

/// `listen-tcp` (experimental in the original, used by no client): 501 for
/// the owner, saying what to use instead.
async fn listen_tcp(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, _port) = path.into_inner();
    owned(&vpn, auth, id).await?;
    Err(GolemError::not_implemented(
        "listening for TCP connections from members is not supported; \
         open connections to a member with GET /net/{id}/tcp/{ip}/{port}",
    )
    .into())
}

/// `GET /net/{id}/proxy`: this node runs no proxies of a network, so `[]`.
async fn list_proxies(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    owned(&vpn, auth, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(Vec::<serde_json::Value>::new()))
}

async fn get_network(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    read(&vpn, auth, id.into_inner(), NetworkView::Network).await
}

async fn list_addresses(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    read(&vpn, auth, id.into_inner(), NetworkView::Addresses).await
}

async fn list_nodes(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    read(&vpn, auth, id.into_inner(), NetworkView::Nodes).await
}

async fn delete_network(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    vpn.ask(DeleteNetwork {
        owner: auth.0.identity,
        id: id.into_inner(),
    })
    .await?;
    Ok(null())
}

async fn add_address(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
    body: web::Json<NetworkAddress>,
) -> ApiResult<HttpResponse> {
    vpn.ask(AddAddress {
        owner: auth.0.identity,
        id: id.into_inner(),
        address: body.into_inner(),
    })
    .await?;
    Ok(null())
}

async fn add_node(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
    body: web::Json<NetworkNode>,
) -> ApiResult<HttpResponse> {
    vpn.ask(AddNode {
        owner: auth.0.identity,
        id: id.into_inner(),
        node: body.into_inner(),
    })
    .await?;
    Ok(null())
}

async fn remove_node(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, node) = path.into_inner();
    vpn.ask(RemoveNode {
        owner: auth.0.identity,
        id,
        node,
    })
    .await?;
    Ok(null())
}

async fn list_connections(
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let stack = vpn
        .ask(StackOf {
            owner: auth.0.identity,
            id: id.into_inner(),
        })
        .await?;
    Ok(HttpResponse::Ok().json(stack.connections().await))
}

/// The WebSocket: checks, connects, and only then upgrades.
async fn connect_tcp(
    request: HttpRequest,
    body: web::Payload,
    vpn: web::Data<VpnService>,
    auth: Authenticated,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (id, ip, port) = path.into_inner();
    let port = parse_port(&port)?;
    let (stack, remote) = vpn
        .ask(ConnectTarget {
            owner: auth.0.identity,
            id: id.clone(),
            ip,
            port,
        })
        .await?;
    let (response, session, messages) = actix_ws::handle(&request, body).map_err(|error| {
        ApiError(GolemError::bad_request(format!(
            "not a WebSocket upgrade request: {error}"
        )))
    })?;
    let started = Instant::now();
    let connection = stack.connect(remote).await?;
    tracing::debug!(
        network_id = %id,
        %remote,
        local = %connection.local,
        connect_ms = started.elapsed().as_millis() as u64,
        "vpn tcp connection open"
    );
    let messages = messages
        .max_frame_size(MAX_MESSAGE)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    actix_web::rt::spawn(pump(session, messages, connection));
    Ok(response)
}

/// Move bytes between the WebSocket and its TCP connection until either ends.
async fn pump(
    mut session: actix_ws::Session,
    mut messages: actix_ws::AggregatedMessageStream,
    mut connection: TcpConnection,
) {
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    // One write in flight at a time: the client's next message is read once
    // the stack has taken the previous one (back-pressure), while data from
    // the other side keeps flowing.
    let mut writing: Option<tokio::sync::oneshot::Receiver<Result<(), GolemError>>> = None;
    let close_reason = loop {
        tokio::select! {
            written = async { writing.as_mut().expect("guarded by the select condition").await }, if writing.is_some() => {
                writing = None;
                if !matches!(written, Ok(Ok(()))) {
                    break Some(close(CloseCode::Away, "the connection is closed"));
                }
            }
            message = messages.recv(), if writing.is_none() => {
                last_heard = Instant::now();
                match message {
                    Some(Ok(AggregatedMessage::Binary(data))) => {
                        writing = Some(connection.write(data));
                    }
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        writing = Some(connection.write(text.into_bytes()));
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => {
                        if session.pong(&payload).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    // The client's Close: FIN now (dropping the connection), then answer it.
                    Some(Ok(AggregatedMessage::Close(_))) | None => break Some(close(CloseCode::Normal, "")),
                    Some(Err(error)) => break Some(close(CloseCode::Protocol, &error.to_string())),
                }
            }
            event = connection.events.recv() => match event {
                Some(ConnectionEvent::Data(data)) => {
                    if session.binary(data).await.is_err() {
                        break None;
                    }
                }
                Some(ConnectionEvent::Closed(reason)) => break Some(close(CloseCode::Normal, &reason)),
                None => break Some(close(CloseCode::Away, "the network was removed")),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    break Some(close(CloseCode::Away, "no answer to pings for 10 s"));
                }
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
        }
    };
    drop(connection);
    if let Some(reason) = close_reason {
        let _ = session.close(Some(reason)).await;
    }
}

fn close(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: (!description.is_empty()).then(|| description.to_string()),
    }
}
