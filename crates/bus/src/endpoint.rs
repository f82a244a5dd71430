//! What an address is bound to: an [`Endpoint`] turns a [`BusCall`] into a
//! stream of replies. [`ServiceEndpoint`] builds one from typed handlers, one per
//! [`BusMessage`], so services never touch raw JSON. A call may carry an
//! attachment, raw bytes beside its JSON payload, for messages whose bulk is
//! binary (VPN packets); [`ServiceEndpoint::on_with_attachment`] hands it over.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use golem_model::bus::BusMessage;
use golem_model::{GolemError, NodeId};
use serde::Serialize;

/// Who made a call. Handlers of `/public/` addresses use this to check ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A component of this node (a service, an exe unit, a CLI on the bus socket).
    Local,
    /// Another node, authenticated by the net service.
    Remote(NodeId),
}

/// One call as an endpoint sees it.
#[derive(Debug, Clone)]
pub struct BusCall {
    pub caller: Caller,
    pub address: String,
    pub message: String,
    pub payload: serde_json::Value,
    /// Raw bytes beside the payload (empty unless the message carries bulk
    /// binary data); they cross the bus socket and the net as they are.
    pub attachment: Vec<u8>,
    /// The caller reads every item (request/stream) rather than only the first.
    pub stream: bool,
}

/// Replies of one call: a single item for request/reply, several for streams.
pub type ReplyStream = BoxStream<'static, Result<serde_json::Value, GolemError>>;

pub trait Endpoint: Send + Sync + 'static {
    fn handle(&self, call: BusCall) -> ReplyStream;
}

type Handler = Box<dyn Fn(Caller, serde_json::Value, Vec<u8>) -> ReplyStream + Send + Sync>;

/// An endpoint that dispatches on the message name to typed handlers.
#[derive(Default)]
pub struct ServiceEndpoint {
    handlers: HashMap<&'static str, Handler>,
}

fn decode<M: BusMessage>(payload: serde_json::Value) -> Result<M, GolemError> {
    serde_json::from_value(payload)
        .map_err(|error| GolemError::bad_request(format!("malformed {} message: {error}", M::NAME)))
}

fn encode<T: Serialize>(value: &T) -> Result<serde_json::Value, GolemError> {
    serde_json::to_value(value)
        .map_err(|error| GolemError::internal(format!("reply not serializable: {error}")))
}

impl ServiceEndpoint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handle `M` with an async request/reply function (an attachment, if
    /// the caller sent one, is ignored).
    pub fn on<M, F, Fut>(self, handler: F) -> Self
    where
        M: BusMessage,
        F: Fn(Caller, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Reply, GolemError>> + Send + 'static,
    {
        self.on_with_attachment(move |caller, message: M, _attachment| handler(caller, message))
    }

    /// Handle `M` with an async request/reply function that also takes the
    /// call's attachment (empty when the caller sent none).
    pub fn on_with_attachment<M, F, Fut>(mut self, handler: F) -> Self
    where
        M: BusMessage,
        F: Fn(Caller, M, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Reply, GolemError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let boxed: Handler = Box::new(move |caller, payload, attachment| {
            let message = match decode::<M>(payload) {
                Ok(message) => message,
                Err(error) => return stream::once(async move { Err(error) }).boxed(),
            };
            let handler = handler.clone();
            stream::once(async move {
                let reply = handler(caller, message, attachment).await?;
                encode(&reply)
            })
            .boxed()
        });
        self.handlers.insert(M::NAME, boxed);
        self
    }

    /// Handle `M` with a function returning a stream of items.
    pub fn on_stream<M, T, F, S>(mut self, handler: F) -> Self
    where
        M: BusMessage,
        T: Serialize + Send + 'static,
        F: Fn(Caller, M) -> S + Send + Sync + 'static,
        S: futures::Stream<Item = Result<T, GolemError>> + Send + 'static,
    {
        let boxed: Handler =
            Box::new(
                move |caller, payload, _attachment| match decode::<M>(payload) {
                    Ok(message) => handler(caller, message)
                        .map(|item| item.and_then(|value| encode(&value)))
                        .boxed(),
                    Err(error) => stream::once(async move { Err(error) }).boxed(),
                },
            );
        self.handlers.insert(M::NAME, boxed);
        self
    }
}

impl Endpoint for ServiceEndpoint {
    fn handle(&self, call: BusCall) -> ReplyStream {
        match self.handlers.get(call.message.as_str()) {
            Some(handler) => handler(call.caller, call.payload, call.attachment),
            None => {
                let error = GolemError::not_found(format!(
                    "{} has no handler for message {}",
                    call.address, call.message
                ));
                stream::once(async move { Err(error) }).boxed()
            }
        }
    }
}
