//! The client side of the bus socket, used by exe units and CLIs: connect with a
//! `Hello`, call any address of the node, and bind addresses of one's own whose
//! calls are then served in this process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use futures::stream::{self, StreamExt};
use golem_model::bus::BusMessage;
use golem_model::{GolemError, NodeId};
use tokio::net::UnixStream;

use crate::connection::Connection;
use crate::endpoint::{BusCall, Caller, Endpoint, ReplyStream};
use crate::frame::{read_frame, write_frame, Frame, FrameError, PROTOCOL_VERSION};
use crate::router::{decode_reply, encode_message, first_reply};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the bus socket {path}: {source} (is the daemon running?)")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("the daemon refused the bus connection: {0}")]
    Refused(String),
    #[error("bus handshake failed: {0}")]
    Handshake(String),
}

type Endpoints = Arc<RwLock<HashMap<String, Arc<dyn Endpoint>>>>;

/// A connection to a daemon's bus socket. Cheap to clone; the connection closes
/// (and everything it bound is unbound) when the last clone is dropped.
#[derive(Clone)]
pub struct BusClient {
    connection: Arc<Connection>,
    endpoints: Endpoints,
    node_id: Option<NodeId>,
    _lifetime: Arc<CloseOnDrop>,
}

struct CloseOnDrop(Arc<Connection>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl BusClient {
    pub async fn connect(path: &Path, client_name: &str) -> Result<BusClient, ConnectError> {
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ConnectError::Socket {
                    path: path.display().to_string(),
                    source,
                })?;
        let hello = Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: client_name.to_string(),
        };
        write_frame(&mut stream, &hello)
            .await
            .map_err(|error| ConnectError::Handshake(error.to_string()))?;
        let mut buffer = Vec::new();
        let node_id = match read_frame(&mut stream, &mut buffer).await {
            Ok(Frame::Welcome { node_id, .. }) => node_id,
            Ok(Frame::Goodbye { message }) => return Err(ConnectError::Refused(message)),
            Ok(other) => {
                return Err(ConnectError::Handshake(format!(
                    "unexpected first frame {other:?}"
                )))
            }
            Err(error) => return Err(ConnectError::Handshake(error.to_string())),
        };
        let (reader, writer) = stream.into_split();
        let connection = Connection::start("daemon".to_string(), writer);
        let endpoints: Endpoints = Arc::default();
        tokio::spawn(read_loop(reader, connection.clone(), endpoints.clone()));
        let lifetime = Arc::new(CloseOnDrop(connection.clone()));
        Ok(BusClient {
            connection,
            endpoints,
            node_id,
            _lifetime: lifetime,
        })
    }

    /// The NodeId of the daemon this client is connected to.
    pub fn node_id(&self) -> Option<NodeId> {
        self.node_id
    }

    pub fn call_stream_raw(
        &self,
        address: &str,
        message: &str,
        payload: serde_json::Value,
    ) -> ReplyStream {
        self.connection.call(BusCall {
            caller: Caller::Local,
            address: address.to_string(),
            message: message.to_string(),
            payload,
            attachment: Vec::new(),
            stream: true,
        })
    }

    pub async fn call_raw(
        &self,
        address: &str,
        message: &str,
        payload: serde_json::Value,
    ) -> Result<serde_json::Value, GolemError> {
        self.call_raw_with_attachment(address, message, payload, Vec::new())
            .await
    }

    async fn call_raw_with_attachment(
        &self,
        address: &str,
        message: &str,
        payload: serde_json::Value,
        attachment: Vec<u8>,
    ) -> Result<serde_json::Value, GolemError> {
        let replies = self.connection.call(BusCall {
            caller: Caller::Local,
            address: address.to_string(),
            message: message.to_string(),
            payload,
            attachment,
            stream: false,
        });
        first_reply(replies, address).await
    }

    /// Typed request/reply call.
    pub async fn call<M: BusMessage>(
        &self,
        address: &str,
        message: &M,
    ) -> Result<M::Reply, GolemError> {
        self.call_with_attachment(address, message, Vec::new())
            .await
    }

    /// Typed request/reply call carrying raw bytes beside the message.
    pub async fn call_with_attachment<M: BusMessage>(
        &self,
        address: &str,
        message: &M,
        attachment: Vec<u8>,
    ) -> Result<M::Reply, GolemError> {
        let value = self
            .call_raw_with_attachment(address, M::NAME, encode_message(message)?, attachment)
            .await?;
        decode_reply::<M>(value)
    }

    /// Serve calls for `address` in this process with `endpoint`.
    pub async fn bind(&self, address: &str, endpoint: impl Endpoint) -> Result<(), GolemError> {
        if let Ok(mut endpoints) = self.endpoints.write() {
            endpoints.insert(address.to_string(), Arc::new(endpoint));
        }
        let address_owned = address.to_string();
        let result = self
            .connection
            .control(move |request_id| Frame::Bind {
                request_id,
                address: address_owned,
            })
            .await;
        if result.is_err() {
            if let Ok(mut endpoints) = self.endpoints.write() {
                endpoints.remove(address);
            }
        }
        result
    }

    pub async fn unbind(&self, address: &str) -> Result<(), GolemError> {
        let address_owned = address.to_string();
        self.connection
            .control(move |request_id| Frame::Unbind {
                request_id,
                address: address_owned,
            })
            .await?;
        if let Ok(mut endpoints) = self.endpoints.write() {
            endpoints.remove(address);
        }
        Ok(())
    }

    /// Resolves when the connection to the daemon is gone.
    pub async fn closed(&self) {
        self.connection.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.connection.closed.is_cancelled()
    }
}

async fn read_loop(
    mut reader: tokio::net::unix::OwnedReadHalf,
    connection: Arc<Connection>,
    endpoints: Endpoints,
) {
    let mut buffer = Vec::new();
    loop {
        let frame = tokio::select! {
            _ = connection.closed.cancelled() => break,
            frame = read_frame(&mut reader, &mut buffer) => frame,
        };
        match frame {
            Ok(Frame::Reply { request_id, body }) => connection.deliver_reply(request_id, body),
            Ok(Frame::Call {
                request_id,
                address,
                message,
                caller,
                stream,
                payload,
                attachment,
            }) => {
                let endpoint = endpoints
                    .read()
                    .ok()
                    .and_then(|map| map.get(&address).cloned());
                let replies = match endpoint {
                    Some(endpoint) => {
                        let caller = caller.map(Caller::Remote).unwrap_or(Caller::Local);
                        endpoint.handle(BusCall {
                            caller,
                            address,
                            message,
                            payload,
                            attachment,
                            stream,
                        })
                    }
                    None => {
                        let error = GolemError::no_endpoint(&address);
                        stream::once(async move { Err(error) }).boxed()
                    }
                };
                connection.serve_call(request_id, replies, stream);
            }
            Ok(Frame::Goodbye { message }) => {
                tracing::debug!(reason = %message, "daemon closed the bus connection");
                break;
            }
            Ok(other) => {
                tracing::warn!(frame = ?other, "unexpected frame from the daemon");
            }
            Err(FrameError::Closed) => break,
            Err(error) => {
                tracing::warn!(%error, "bus connection to the daemon failed");
                break;
            }
        }
    }
    connection.close();
}
