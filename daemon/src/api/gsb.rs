//! The GSB API (`/gsb-api/v1`) as golem-js uses it for file transfer: a REST
//! client binds a bus service (`POST /services` with `{listen: {on, components}}`),
//! then opens a WebSocket on `/services/{servicesId}` with subprotocol
//! `gsb+flexbuffers` and answers the calls other components make to that address.
//!
//! Each bus call of a listed component (message name) becomes one binary frame
//! `{id, component, payload}` (FlexBuffers map) to the socket; the client answers
//! `{id, payload}`. Payloads are converted between the bus's JSON and FlexBuffers
//! (`content` bytes are base64 text on the bus, as `golem_model::gftp` carries
//! them, and blobs on the socket). Calls made before the socket connects wait
//! for it (the SDK starts the transfer without waiting for the socket to open).
//! `DELETE /services/{servicesId}` unbinds the address, closes the socket and fails
//! pending calls. Bound addresses must be under `/public/`, so a golem-js file at
//! `/public/gftp/<uuid>` is reachable by remote exe units.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use futures::stream::{self, StreamExt};
use golem_bus::{BusCall, Endpoint, ReplyStream, Router};
use golem_model::{ErrorCode, GolemError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};

/// The WebSocket subprotocol golem-js asks for.
pub const SUBPROTOCOL: &str = "gsb+flexbuffers";
/// How long a bus call waits for the socket client's answer (the original's default).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest frame accepted from the socket.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Bound GSB API services of this node. Cheap to clone.
#[derive(Clone)]
pub struct GsbApi {
    router: Router,
    services: Arc<Mutex<HashMap<String, Arc<Service>>>>,
}

struct Service {
    id: String,
    on: String,
    components: Vec<String>,
    next_request: AtomicU64,
    /// Frames to the socket; buffered until a socket takes `outgoing_rx`.
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    outgoing_rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<u8>>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    closed: CancellationToken,
}

#[derive(Debug, Deserialize)]
struct ServicesRequest {
    listen: Option<ListenRequest>,
}

#[derive(Debug, Deserialize)]
struct ListenRequest {
    on: String,
    components: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ServicesResponse {
    services_id: String,
    listen: ListenResponse,
}

#[derive(Debug, Serialize)]
struct ListenResponse {
    on: String,
    components: Vec<String>,
    links: Links,
}

#[derive(Debug, Serialize)]
struct Links {
    messages: String,
}

impl GsbApi {
    pub fn new(router: Router) -> GsbApi {
        GsbApi {
            router,
            services: Arc::default(),
        }
    }

    fn find(&self, id: &str) -> Result<Arc<Service>, GolemError> {
        self.services
            .lock()
            .map_err(|_| GolemError::internal("gsb api lock poisoned"))?
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("no bound GSB services {id}")))
    }

    /// Bind `on` for `components`; returns the services id.
    pub fn bind(&self, on: &str, components: Vec<String>) -> Result<String, GolemError> {
        let rest = on.strip_prefix("/public/").unwrap_or_default();
        if rest.is_empty() || rest.split('/').any(str::is_empty) {
            return Err(GolemError::bad_request(format!(
                "listen.on {on:?} must be a /public/... bus address such as /public/gftp/<id>"
            )));
        }
        if components.is_empty() || components.iter().any(String::is_empty) {
            return Err(GolemError::bad_request(
                "listen.components must name at least one message, e.g. [\"GetMetadata\", \"GetChunk\"]",
            ));
        }
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let service = Arc::new(Service {
            id: golem_model::ids::new_id(),
            on: on.to_string(),
            components,
            next_request: AtomicU64::new(1),
            outgoing,
            outgoing_rx: Mutex::new(Some(outgoing_rx)),
            pending: Mutex::default(),
            closed: CancellationToken::new(),
        });
        self.router
            .bind_shared(on, Arc::new(ServiceEndpoint(service.clone())))?;
        let id = service.id.clone();
        match self.services.lock() {
            Ok(mut services) => {
                services.insert(id.clone(), service);
            }
            Err(_) => {
                self.router.unbind(on);
                return Err(GolemError::internal("gsb api lock poisoned"));
            }
        }
        tracing::debug!(services_id = %id, %on, "gsb api services bound");
        Ok(id)
    }

    /// Unbind the services `id`: close its socket and fail its pending calls.
    pub fn unbind(&self, id: &str) -> Result<(), GolemError> {
        let service = self
            .services
            .lock()
            .map_err(|_| GolemError::internal("gsb api lock poisoned"))?
            .remove(id)
            .ok_or_else(|| GolemError::not_found(format!("no bound GSB services {id}")))?;
        self.router.unbind(&service.on);
        service.closed.cancel();
        if let Ok(mut pending) = service.pending.lock() {
            pending.clear();
        }
        tracing::debug!(services_id = %id, on = %service.on, "gsb api services unbound");
        Ok(())
    }
}

/// The bus side of one bound service: forwards calls to the socket client.
struct ServiceEndpoint(Arc<Service>);

impl Endpoint for ServiceEndpoint {
    fn handle(&self, call: BusCall) -> ReplyStream {
        let service = self.0.clone();
        stream::once(async move { service.forward(call).await }).boxed()
    }
}

impl Service {
    async fn forward(&self, call: BusCall) -> Result<Value, GolemError> {
        if !self.components.contains(&call.message) {
            return Err(GolemError::not_found(format!(
                "{} has no handler for message {} (bound components: {})",
                self.on,
                call.message,
                self.components.join(", ")
            )));
        }
        let id = self
            .next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let frame = encode_request(&id, &call.message, &call.payload)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| GolemError::internal("gsb api lock poisoned"))?
            .insert(id.clone(), reply_tx);
        if self.outgoing.send(frame).is_err() || self.closed.is_cancelled() {
            return Err(self.gone());
        }
        let reply = tokio::select! {
            reply = reply_rx => reply.map_err(|_| self.gone()),
            _ = self.closed.cancelled() => Err(self.gone()),
            _ = tokio::time::sleep(CALL_TIMEOUT) => Err(GolemError::timeout(format!(
                "the GSB API client of {} did not answer {} within {} s",
                self.on, call.message, CALL_TIMEOUT.as_secs()
            ))),
        };
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
        reply
    }

    fn gone(&self) -> GolemError {
        GolemError::new(
            ErrorCode::Gone,
            format!("the GSB API services at {} were unbound", self.on),
        )
    }

    /// A frame from the socket client: `{id, payload}`.
    fn answer(&self, frame: &[u8]) -> Result<(), GolemError> {
        let root = flexbuffers::Reader::get_root(frame).map_err(|error| {
            GolemError::bad_request(format!("not a FlexBuffers frame: {error}"))
        })?;
        let map = root
            .get_map()
            .map_err(|error| GolemError::bad_request(format!("frame is not a map: {error}")))?;
        let id = map
            .index("id")
            .map_err(|_| GolemError::bad_request("frame has no id"))?;
        let id = match flex_to_json(&id)? {
            Value::String(text) => text,
            Value::Number(number) => number.to_string(),
            other => {
                return Err(GolemError::bad_request(format!(
                    "frame id {other} is not a string"
                )))
            }
        };
        let payload = match map.index("payload") {
            Ok(payload) => flex_to_json(&payload)?,
            Err(_) => Value::Null,
        };
        let sender = self
            .pending
            .lock()
            .map_err(|_| GolemError::internal("gsb api lock poisoned"))?
            .remove(&id);
        match sender {
            Some(sender) => {
                let _ = sender.send(payload);
                Ok(())
            }
            None => Err(GolemError::not_found(format!(
                "no pending call with id {id}"
            ))),
        }
    }
}

/// `{id, component, payload}` as FlexBuffers; `content` (base64 on the bus) becomes a blob.
fn encode_request(id: &str, component: &str, payload: &Value) -> Result<Vec<u8>, GolemError> {
    let mut builder = flexbuffers::Builder::new(flexbuffers::BuilderOptions::empty());
    {
        let mut map = builder.start_map();
        map.push("id", id);
        map.push("component", component);
        match payload {
            Value::Object(fields) => push_map(&mut map.start_map("payload"), fields)?,
            other => push_value(&mut map, "payload", other)?,
        }
        map.end_map();
    }
    Ok(builder.view().to_vec())
}

fn push_map(
    map: &mut flexbuffers::MapBuilder<'_>,
    fields: &serde_json::Map<String, Value>,
) -> Result<(), GolemError> {
    for (key, value) in fields {
        if key == "content" {
            if let Value::String(text) = value {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|error| {
                        GolemError::bad_request(format!("content is not base64: {error}"))
                    })?;
                map.push(key, flexbuffers::Blob(bytes.as_slice()));
                continue;
            }
        }
        push_value(map, key, value)?;
    }
    Ok(())
}

fn push_value(
    map: &mut flexbuffers::MapBuilder<'_>,
    key: &str,
    value: &Value,
) -> Result<(), GolemError> {
    match value {
        Value::Null => map.push(key, ()),
        Value::Bool(flag) => map.push(key, *flag),
        Value::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                map.push(key, unsigned);
            } else if let Some(signed) = number.as_i64() {
                map.push(key, signed);
            } else {
                map.push(key, number.as_f64().unwrap_or_default());
            }
        }
        Value::String(text) => map.push(key, text.as_str()),
        Value::Object(fields) => push_map(&mut map.start_map(key), fields)?,
        Value::Array(items) => {
            let mut vector = map.start_vector(key);
            for item in items {
                match item {
                    Value::Null => vector.push(()),
                    Value::Bool(flag) => vector.push(*flag),
                    Value::Number(number) => vector.push(number.as_f64().unwrap_or_default()),
                    Value::String(text) => vector.push(text.as_str()),
                    other => {
                        return Err(GolemError::bad_request(format!(
                            "nested {other} in an array is not supported by the GSB API bridge"
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}

/// A FlexBuffers value as JSON; blobs become base64 text (the bus's form of bytes).
fn flex_to_json(reader: &flexbuffers::Reader<&[u8]>) -> Result<Value, GolemError> {
    use flexbuffers::FlexBufferType as Type;
    let bad = |error: flexbuffers::ReaderError| {
        GolemError::bad_request(format!("malformed FlexBuffers frame: {error}"))
    };
    let kind = reader.flexbuffer_type();
    Ok(match kind {
        Type::Null => Value::Null,
        Type::Bool => Value::Bool(reader.as_bool()),
        Type::Int | Type::IndirectInt => Value::from(reader.as_i64()),
        Type::UInt | Type::IndirectUInt => Value::from(reader.as_u64()),
        Type::Float | Type::IndirectFloat => Value::from(reader.as_f64()),
        Type::Key | Type::String => Value::String(reader.get_str().map_err(bad)?.to_string()),
        Type::Blob => Value::String(
            base64::engine::general_purpose::STANDARD.encode(reader.get_blob().map_err(bad)?.0),
        ),
        Type::Map => {
            let map = reader.get_map().map_err(bad)?;
            let mut fields = serde_json::Map::new();
            for (key, value) in map.iter_keys().zip(map.iter_values()) {
                fields.insert(key.to_string(), flex_to_json(&value)?);
            }
            Value::Object(fields)
        }
        _ if kind.is_vector() => {
            let vector = reader.get_vector().map_err(bad)?;
            let mut items = Vec::with_capacity(vector.len());
            for item in vector.iter() {
                items.push(flex_to_json(&item)?);
            }
            Value::Array(items)
        }
        other => {
            return Err(GolemError::bad_request(format!(
                "unsupported FlexBuffers type {other:?}"
            )))
        }
    })
}

pub fn configure(gsb: GsbApi) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config: &mut web::ServiceConfig| {
        config.service(
            web::scope("/gsb-api/v1")
                .app_data(web::Data::new(gsb))
                .route("/services", web::post().to(bind_services))
                .route("/services/{id}", web::delete().to(unbind_services))
                .route("/services/{id}", web::get().to(messages)),
        );
    }
}

async fn bind_services(gsb: web::Data<GsbApi>, body: web::Bytes) -> ApiResult<HttpResponse> {
    let request: ServicesRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError(GolemError::bad_request(format!(
            "malformed services body: {error}"
        )))
    })?;
    let listen = request.listen.ok_or_else(|| {
        ApiError(GolemError::bad_request(
            "the body needs {\"listen\": {\"on\": ..., \"components\": [...]}}",
        ))
    })?;
    let services_id = gsb.bind(&listen.on, listen.components.clone())?;
    Ok(HttpResponse::Created().json(ServicesResponse {
        listen: ListenResponse {
            on: listen.on,
            components: listen.components,
            links: Links {
                messages: format!("gsb-api/v1/services/{services_id}"),
            },
        },
        services_id,
    }))
}

async fn unbind_services(
    gsb: web::Data<GsbApi>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    gsb.unbind(&path)?;
    Ok(HttpResponse::Ok().json(()))
}

/// `GET /services/{id}` with a WebSocket upgrade: the socket answering the calls.
async fn messages(
    gsb: web::Data<GsbApi>,
    path: web::Path<String>,
    request: HttpRequest,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let service = gsb.find(&path)?;
    let Some(outgoing) = service.outgoing_rx.lock().ok().and_then(|mut rx| rx.take()) else {
        return Err(ApiError(GolemError::conflict(format!(
            "GSB services {} already have a connected socket",
            service.id
        ))));
    };
    let handshake = actix_ws::handle(&request, body);
    let (mut response, session, messages) = match handshake {
        Ok(parts) => parts,
        Err(error) => {
            if let Ok(mut rx) = service.outgoing_rx.lock() {
                *rx = Some(outgoing);
            }
            return Err(ApiError(GolemError::bad_request(format!(
                "open this endpoint as a WebSocket (subprotocol {SUBPROTOCOL}): {error}"
            ))));
        }
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    actix_web::rt::spawn(serve_socket(service, session, messages, outgoing));
    Ok(response)
}

async fn serve_socket(
    service: Arc<Service>,
    mut session: actix_ws::Session,
    messages: actix_ws::MessageStream,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let span = tracing::debug_span!("gsb_socket", services_id = %service.id);
    let _entered = span.enter();
    let mut messages = messages.max_frame_size(MAX_FRAME).aggregate_continuations();
    let mut close = true;
    loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let Some(frame) = frame else { break };
                if session.binary(frame).await.is_err() {
                    close = false;
                    break;
                }
            }
            message = messages.recv() => match message {
                Some(Ok(actix_ws::AggregatedMessage::Binary(frame))) => {
                    if let Err(error) = service.answer(&frame) {
                        tracing::warn!(%error, "ignoring a frame from the GSB API client");
                    }
                }
                Some(Ok(actix_ws::AggregatedMessage::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        close = false;
                        break;
                    }
                }
                Some(Ok(actix_ws::AggregatedMessage::Text(_)))
                | Some(Ok(actix_ws::AggregatedMessage::Pong(_))) => {}
                Some(Ok(actix_ws::AggregatedMessage::Close(_))) | None => break,
                Some(Err(error)) => {
                    tracing::debug!(%error, "GSB API socket failed");
                    break;
                }
            },
            _ = service.closed.cancelled() => break,
        }
    }
    if close {
        let _ = session.close(None).await;
    }
    // A later socket may take over the same services (frames queued meanwhile stay).
    if !service.closed.is_cancelled() {
        if let Ok(mut rx) = service.outgoing_rx.lock() {
            *rx = Some(outgoing);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_carry_content_as_a_blob_and_answers_come_back_as_base64() {
        let payload = json!({"chunk": {"offset": 3, "content": "aGVsbG8="}});
        let frame = encode_request("7", "UploadChunk", &payload).unwrap();
        let root = flexbuffers::Reader::get_root(frame.as_slice()).unwrap();
        let map = root.as_map();
        assert_eq!(map.idx("id").as_str(), "7");
        assert_eq!(map.idx("component").as_str(), "UploadChunk");
        let chunk = map.idx("payload").as_map().idx("chunk").as_map();
        assert_eq!(chunk.idx("offset").as_u64(), 3);
        assert_eq!(
            chunk.idx("content").flexbuffer_type(),
            flexbuffers::FlexBufferType::Blob
        );
        assert_eq!(chunk.idx("content").as_blob().0, b"hello");
        // And back: the whole frame as JSON, the blob as base64.
        assert_eq!(
            flex_to_json(&root).unwrap(),
            json!({"id": "7", "component": "UploadChunk", "payload": payload})
        );
    }

    #[test]
    fn empty_payloads_and_bad_base64() {
        let frame = encode_request("1", "GetMetadata", &json!({})).unwrap();
        let root = flexbuffers::Reader::get_root(frame.as_slice()).unwrap();
        assert_eq!(flex_to_json(&root).unwrap()["payload"], json!({}));
        let error =
            encode_request("1", "UploadChunk", &json!({"chunk": {"content": "%%"}})).unwrap_err();
        assert!(error.message.contains("not base64"), "{}", error.message);
    }

    #[tokio::test]
    async fn binding_checks_the_address_and_routes_calls_to_the_socket_side() {
        let router = Router::new();
        let gsb = GsbApi::new(router.clone());
        let error = gsb
            .bind("/local/identity", vec!["GetMetadata".into()])
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(gsb.bind("/public/gftp/x", vec![]).is_err());
        let id = gsb
            .bind("/public/gftp/abc-1", vec!["GetMetadata".into()])
            .unwrap();
        let again = gsb
            .bind("/public/gftp/abc-1", vec!["GetMetadata".into()])
            .unwrap_err();
        assert_eq!(again.code, ErrorCode::Conflict);

        // Play the socket client: read the request frame, answer it.
        let service = gsb.find(&id).unwrap();
        let mut frames = service.outgoing_rx.lock().unwrap().take().unwrap();
        let client = tokio::spawn(async move {
            let frame = frames.recv().await.unwrap();
            let request =
                flex_to_json(&flexbuffers::Reader::get_root(frame.as_slice()).unwrap()).unwrap();
            assert_eq!(request["component"], "GetMetadata");
            let mut builder = flexbuffers::Builder::new(flexbuffers::BuilderOptions::empty());
            {
                let mut map = builder.start_map();
                map.push("id", request["id"].as_str().unwrap());
                map.start_map("payload").push("fileSize", 42u64);
            }
            service.answer(builder.view()).unwrap();
        });
        let reply: golem_model::gftp::GftpMetadata = router
            .call("/public/gftp/abc-1", &golem_model::gftp::GetMetadata {})
            .await
            .unwrap();
        assert_eq!(reply.file_size, 42);
        client.await.unwrap();

        // A message outside the bound components is refused without reaching the client.
        let refused = router
            .call(
                "/public/gftp/abc-1",
                &golem_model::gftp::GetChunk { offset: 0, size: 1 },
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::NotFound);

        gsb.unbind(&id).unwrap();
        assert!(!router.is_bound("/public/gftp/abc-1"));
        assert_eq!(gsb.unbind(&id).unwrap_err().code, ErrorCode::NotFound);
    }
}
