//! The bus server: exposes a [`Router`] on a Unix socket. Each connection must
//! open with a `Hello` of our protocol version; then it may call any address of
//! the node and bind `/local/` or `/public/` addresses of its own, which stay
//! bound until it unbinds them or disconnects. Garbage, oversized frames and
//! version mismatches end that one connection with a `Goodbye` saying why; the
//! server itself keeps accepting.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use golem_model::{GolemError, NodeId};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::address::Address;
use crate::connection::{Connection, ForwardingEndpoint};
use crate::endpoint::{BusCall, Caller};
use crate::frame::{read_frame, write_frame, Frame, FrameError, ReplyBody, PROTOCOL_VERSION};
use crate::router::Router;

/// How long a new connection may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Create the socket at `path` with mode 0600, replacing a stale socket file.
pub fn bind_socket(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        // Refuse to steal the socket of a live node; remove a stale one.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another process is serving the bus socket {}",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accept connections until `shutdown` is cancelled.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    node_id: Option<NodeId>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let router = router.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(
                    async move { serve_connection(stream, router, node_id, shutdown).await },
                );
            }
            Err(error) => {
                tracing::warn!(%error, "bus socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn refuse(stream: &mut UnixStream, message: String) {
    tracing::warn!(reason = %message, "refused a bus connection");
    let _ = write_frame(stream, &Frame::Goodbye { message }).await;
}

async fn serve_connection(
    mut stream: UnixStream,
    router: Router,
    node_id: Option<NodeId>,
    shutdown: CancellationToken,
) {
    let mut buffer = Vec::new();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream, &mut buffer)).await;
    let client_name = match hello {
        Err(_) => return refuse(&mut stream, "no Hello frame within 5 s".into()).await,
        Ok(Err(FrameError::Closed)) => return,
        Ok(Err(error)) => {
            return refuse(&mut stream, format!("expected a Hello frame: {error}")).await
        }
        Ok(Ok(Frame::Hello {
            protocol_version,
            client_name,
        })) if protocol_version == PROTOCOL_VERSION => client_name,
        Ok(Ok(Frame::Hello {
            protocol_version, ..
        })) => {
            let message = format!(
                "bus protocol version {protocol_version} is not supported; this daemon speaks version {PROTOCOL_VERSION}"
            );
            return refuse(&mut stream, message).await;
        }
        Ok(Ok(_)) => return refuse(&mut stream, "the first frame must be Hello".into()).await,
    };
    if write_frame(
        &mut stream,
        &Frame::Welcome {
            protocol_version: PROTOCOL_VERSION,
            node_id,
        },
    )
    .await
    .is_err()
    {
        return;
    }
    tracing::debug!(client = %client_name, "bus client connected");

    let (mut reader, writer) = stream.into_split();
    let connection = Connection::start(client_name.clone(), writer);
    let bound_here: Arc<Mutex<Vec<String>>> = Arc::default();
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => {
                connection.send(Frame::Goodbye { message: "daemon is shutting down".into() });
                break;
            }
            frame = read_frame(&mut reader, &mut buffer) => frame,
        };
        match frame {
            Ok(Frame::Call {
                request_id,
                address,
                message,
                stream,
                payload,
                attachment,
                ..
            }) => {
                // Processes on the socket are inside the node: their calls are local.
                let call = BusCall {
                    caller: Caller::Local,
                    address,
                    message,
                    payload,
                    attachment,
                    stream,
                };
                connection.serve_call(request_id, router.call_stream_raw(call), stream);
            }
            Ok(Frame::Reply { request_id, body }) => connection.deliver_reply(request_id, body),
            Ok(Frame::Bind {
                request_id,
                address,
            }) => {
                let body = match bind_for_connection(&router, &connection, &address) {
                    Ok(()) => {
                        if let Ok(mut bound) = bound_here.lock() {
                            bound.push(address);
                        }
                        ReplyBody::Ok {
                            value: serde_json::Value::Null,
                        }
                    }
                    Err(error) => ReplyBody::Err { error },
                };
                connection.send(Frame::Reply { request_id, body });
            }
            Ok(Frame::Unbind {
                request_id,
                address,
            }) => {
                let owned = bound_here.lock().map(|mut bound| {
                    let before = bound.len();
                    bound.retain(|held| held != &address);
                    before != bound.len()
                });
                let body = if owned.unwrap_or(false) {
                    router.unbind(&address);
                    ReplyBody::Ok {
                        value: serde_json::Value::Null,
                    }
                } else {
                    ReplyBody::Err {
                        error: GolemError::not_found(format!(
                            "{address} is not bound by this connection"
                        )),
                    }
                };
                connection.send(Frame::Reply { request_id, body });
            }
            Ok(Frame::Goodbye { .. }) | Err(FrameError::Closed) => break,
            Ok(Frame::Hello { .. } | Frame::Welcome { .. }) => {
                let message = "unexpected handshake frame after Hello".to_string();
                tracing::warn!(client = %client_name, reason = %message, "closing bus connection");
                connection.send(Frame::Goodbye { message });
                break;
            }
            Err(error) => {
                tracing::warn!(client = %client_name, %error, "closing bus connection after a bad frame");
                connection.send(Frame::Goodbye {
                    message: error.to_string(),
                });
                break;
            }
        }
    }
    if let Ok(bound) = bound_here.lock() {
        for address in bound.iter() {
            router.unbind(address);
        }
    }
    connection.close();
    tracing::debug!(client = %client_name, "bus client disconnected");
}

fn bind_for_connection(
    router: &Router,
    connection: &Arc<Connection>,
    address: &str,
) -> Result<(), GolemError> {
    match Address::parse(address)? {
        Address::Local(_) | Address::Public(_) => {}
        Address::Remote { .. } => {
            return Err(GolemError::forbidden(
                "a process on the bus socket cannot bind /net/ addresses",
            ));
        }
    }
    router.bind_shared(
        address,
        Arc::new(ForwardingEndpoint {
            connection: connection.clone(),
        }),
    )
}
