//! The in-process address table. A daemon owns exactly one [`Router`] value and
//! hands clones of it to its services; nothing here is global, so several
//! daemons can live in one test process.
//!
//! Whoever must react when an address goes away (the activity service, when
//! an exe unit's connection ends) subscribes with [`Router::watch_unbinds`]
//! instead of polling [`Router::is_bound`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::stream::{self, StreamExt};
use golem_model::bus::{BusMessage, Ping, ROUTER_SERVICE};
use golem_model::GolemError;

use crate::address::Address;
use crate::endpoint::{BusCall, Caller, Endpoint, ReplyStream, ServiceEndpoint};

#[derive(Default)]
struct Bindings {
    exact: HashMap<String, Arc<dyn Endpoint>>,
    /// Prefix bindings (such as `/net/` for the net service), longest first.
    prefixes: Vec<(String, Arc<dyn Endpoint>)>,
}

/// How many unbinds a slow subscriber may fall behind before it is told it
/// lagged (and must look at what is bound itself).
const UNBIND_BACKLOG: usize = 1024;

/// Maps addresses to endpoints and performs calls.
#[derive(Clone)]
pub struct Router {
    bindings: Arc<RwLock<Bindings>>,
    /// Every exact address that stopped being bound, as it happens.
    unbinds: tokio::sync::broadcast::Sender<String>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

/// Decode a JSON reply into the message's declared reply type.
pub(crate) fn decode_reply<M: BusMessage>(
    value: serde_json::Value,
) -> Result<M::Reply, GolemError> {
    serde_json::from_value(value)
        .map_err(|error| GolemError::internal(format!("malformed reply to {}: {error}", M::NAME)))
}

pub(crate) fn encode_message<M: BusMessage>(message: &M) -> Result<serde_json::Value, GolemError> {
    serde_json::to_value(message)
        .map_err(|error| GolemError::internal(format!("{} not serializable: {error}", M::NAME)))
}

/// Take the first reply of a stream as the answer of a request/reply call.
pub(crate) async fn first_reply(
    mut replies: ReplyStream,
    address: &str,
) -> Result<serde_json::Value, GolemError> {
    match replies.next().await {
        Some(reply) => reply,
        None => Err(GolemError::internal(format!(
            "endpoint {address} ended without a reply"
        ))),
    }
}

impl Router {
    /// A router with its own `/local/bus` endpoint (answers [`Ping`]).
    pub fn new() -> Self {
        let router = Router {
            bindings: Arc::new(RwLock::new(Bindings::default())),
            unbinds: tokio::sync::broadcast::channel(UNBIND_BACKLOG).0,
        };
        let own_endpoint =
            ServiceEndpoint::new().on(|_caller, ping: Ping| async move { Ok(ping.payload) });
        if let Err(error) = router.bind(ROUTER_SERVICE, own_endpoint) {
            tracing::error!(%error, "router could not bind its own endpoint");
        }
        router
    }

    /// Bind `endpoint` at exactly `address`; Conflict when the address is taken.
    pub fn bind(&self, address: &str, endpoint: impl Endpoint) -> Result<(), GolemError> {
        self.bind_shared(address, Arc::new(endpoint))
    }

    pub fn bind_shared(
        &self,
        address: &str,
        endpoint: Arc<dyn Endpoint>,
    ) -> Result<(), GolemError> {
        Address::parse(address)?;
        let mut bindings = self
            .bindings
            .write()
            .map_err(|_| GolemError::internal("bus router lock poisoned"))?;
        if bindings.exact.contains_key(address) {
            return Err(GolemError::conflict(format!(
                "bus address {address} is already bound"
            )));
        }
        bindings.exact.insert(address.to_string(), endpoint);
        Ok(())
    }

    /// Bind `endpoint` for every address starting with `prefix`.
    pub fn bind_prefix(&self, prefix: &str, endpoint: impl Endpoint) -> Result<(), GolemError> {
        let mut bindings = self
            .bindings
            .write()
            .map_err(|_| GolemError::internal("bus router lock poisoned"))?;
        if bindings.prefixes.iter().any(|(bound, _)| bound == prefix) {
            return Err(GolemError::conflict(format!(
                "bus prefix {prefix} is already bound"
            )));
        }
        bindings
            .prefixes
            .push((prefix.to_string(), Arc::new(endpoint)));
        bindings
            .prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(())
    }

    /// Remove the binding of `address`; true when there was one. Subscribers
    /// of [`Router::watch_unbinds`] hear of it at once.
    pub fn unbind(&self, address: &str) -> bool {
        let removed = match self.bindings.write() {
            Ok(mut bindings) => bindings.exact.remove(address).is_some(),
            Err(_) => false,
        };
        if removed {
            // No subscriber is not an error.
            let _ = self.unbinds.send(address.to_string());
        }
        removed
    }

    /// The exact addresses unbound from now on (by [`Router::unbind`], which
    /// the bus server calls for every address of a connection that ends), in
    /// order. A subscriber more than 1,024 unbinds behind gets
    /// `RecvError::Lagged` and should check what it watches with
    /// [`Router::is_bound`]; [`Router::unbind_all`] (shutdown) is not reported.
    pub fn watch_unbinds(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.unbinds.subscribe()
    }

    /// Drop every binding. Endpoints may hold clones of the router (to call other
    /// services), so a node clears its router at shutdown to break those cycles.
    pub fn unbind_all(&self) {
        if let Ok(mut bindings) = self.bindings.write() {
            bindings.exact.clear();
            bindings.prefixes.clear();
        }
    }

    pub fn is_bound(&self, address: &str) -> bool {
        self.resolve(address).is_some()
    }

    fn resolve(&self, address: &str) -> Option<Arc<dyn Endpoint>> {
        let bindings = self.bindings.read().ok()?;
        if let Some(endpoint) = bindings.exact.get(address) {
            return Some(endpoint.clone());
        }
        bindings
            .prefixes
            .iter()
            .find(|(prefix, _)| address.starts_with(prefix.as_str()))
            .map(|(_, endpoint)| endpoint.clone())
    }

    /// Deliver a call and return its replies. Enforces the visibility rule: a
    /// remote caller reaches only `/public/` addresses.
    pub fn call_stream_raw(&self, call: BusCall) -> ReplyStream {
        let refusal = match Address::parse(&call.address) {
            Err(error) => Some(error),
            Ok(Address::Public(_)) => None,
            Ok(_) if matches!(call.caller, Caller::Remote(_)) => {
                Some(GolemError::forbidden(format!(
                    "bus address {} is not reachable from other nodes",
                    call.address
                )))
            }
            Ok(_) => None,
        };
        if let Some(error) = refusal {
            return stream::once(async move { Err(error) }).boxed();
        }
        match self.resolve(&call.address) {
            Some(endpoint) => endpoint.handle(call),
            None => {
                let error = GolemError::no_endpoint(&call.address);
                stream::once(async move { Err(error) }).boxed()
            }
        }
    }

    pub async fn call_raw(
        &self,
        caller: Caller,
        address: &str,
        message: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, GolemError> {
        let call = BusCall {
            caller,
            address: address.to_string(),
            message: message.to_string(),
            payload,
            attachment: Vec::new(),
            stream: false,
        };
        self.call_once(call).await
    }

    /// Deliver a request/reply call and return its one answer.
    pub async fn call_once(&self, call: BusCall) -> Result<serde_json::Value, GolemError> {
        let address = call.address.clone();
        first_reply(self.call_stream_raw(call), &address).await
    }

    /// Typed request/reply call from inside this node.
    pub async fn call<M: BusMessage>(
        &self,
        address: &str,
        message: &M,
    ) -> Result<M::Reply, GolemError> {
        self.call_as(Caller::Local, address, message).await
    }

    /// Typed request/reply call on behalf of `caller`.
    pub async fn call_as<M: BusMessage>(
        &self,
        caller: Caller,
        address: &str,
        message: &M,
    ) -> Result<M::Reply, GolemError> {
        self.call_with_attachment(caller, address, message, Vec::new())
            .await
    }

    /// Typed request/reply call on behalf of `caller`, carrying raw bytes
    /// beside the message.
    pub async fn call_with_attachment<M: BusMessage>(
        &self,
        caller: Caller,
        address: &str,
        message: &M,
        attachment: Vec<u8>,
    ) -> Result<M::Reply, GolemError> {
        let call = BusCall {
            caller,
            address: address.to_string(),
            message: M::NAME.to_string(),
            payload: encode_message(message)?,
            attachment,
            stream: false,
        };
        decode_reply::<M>(self.call_once(call).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golem_model::{ErrorCode, NodeId};

    #[tokio::test]
    async fn routes_typed_calls_and_answers_ping() {
        let router = Router::new();
        let echoed = router
            .call(
                ROUTER_SERVICE,
                &Ping {
                    payload: "x".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(echoed, "x");
        let missing = router
            .call(
                "/local/nothing",
                &Ping {
                    payload: "x".into(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(missing.code, ErrorCode::NoEndpoint);
        assert!(
            missing.code == golem_model::ErrorCode::NoEndpoint,
            "{}",
            missing.message
        );
    }

    #[tokio::test]
    async fn remote_callers_reach_only_public_addresses() {
        let router = Router::new();
        let public = ServiceEndpoint::new()
            .on(|caller, ping: Ping| async move { Ok(format!("{}:{caller:?}", ping.payload)) });
        router.bind("/public/echo", public).unwrap();
        let remote = Caller::Remote(NodeId::from_bytes([7; 20]));
        let local_refused = router
            .call_as(
                remote,
                ROUTER_SERVICE,
                &Ping {
                    payload: "x".into(),
                },
            )
            .await;
        assert_eq!(local_refused.unwrap_err().code, ErrorCode::Forbidden);
        let public_reply = router
            .call_as(
                remote,
                "/public/echo",
                &Ping {
                    payload: "p".into(),
                },
            )
            .await
            .unwrap();
        assert!(public_reply.starts_with("p:Remote("), "{public_reply}");
    }

    #[tokio::test]
    async fn duplicate_bind_conflicts_and_prefix_catches_rest() {
        let router = Router::new();
        let endpoint =
            || ServiceEndpoint::new().on(|_c, ping: Ping| async move { Ok(ping.payload) });
        router.bind("/local/a", endpoint()).unwrap();
        assert_eq!(
            router.bind("/local/a", endpoint()).unwrap_err().code,
            ErrorCode::Conflict
        );
        router.bind_prefix("/net/", endpoint()).unwrap();
        let reply = router
            .call(
                "/net/0x0707070707070707070707070707070707070707/public/x",
                &Ping {
                    payload: "n".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(reply, "n");
        assert!(router.unbind("/local/a"));
        assert!(!router.is_bound("/local/a"));
    }

    #[tokio::test]
    async fn unbinds_are_reported_to_watchers_in_order() {
        let router = Router::new();
        let endpoint =
            || ServiceEndpoint::new().on(|_c, ping: Ping| async move { Ok(ping.payload) });
        let mut early = router.watch_unbinds();
        router.bind("/local/a", endpoint()).unwrap();
        router.bind("/local/b", endpoint()).unwrap();
        assert!(router.unbind("/local/b"));
        // Unbinding what is not bound is not reported.
        assert!(!router.unbind("/local/b"));
        let mut late = router.watch_unbinds();
        assert!(router.unbind("/local/a"));
        assert_eq!(early.recv().await.unwrap(), "/local/b");
        assert_eq!(early.recv().await.unwrap(), "/local/a");
        assert_eq!(late.recv().await.unwrap(), "/local/a");
        assert!(early.try_recv().is_err());
    }

    #[tokio::test]
    async fn malformed_payload_is_bad_request() {
        let router = Router::new();
        let error = router
            .call_raw(
                Caller::Local,
                ROUTER_SERVICE,
                "Ping",
                serde_json::json!({"wrong": 1}),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(
            error.message.contains("malformed Ping message"),
            "{}",
            error.message
        );
    }
}
