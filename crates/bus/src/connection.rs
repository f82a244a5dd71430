//! One established socket connection, as both sides see it: a writer task fed by
//! a channel, the table of calls this side is waiting on, and the code that turns
//! an endpoint's reply stream into `Reply` frames. The server and the client run
//! their own read loops on top of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};
use golem_model::GolemError;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::endpoint::{BusCall, Caller, Endpoint, ReplyStream};
use crate::frame::{encode_frame, Frame, ReplyBody, RequestId};

pub(crate) struct Connection {
    /// Name of the peer for logs (the client name from `Hello`, or "daemon").
    pub peer_name: String,
    outgoing: mpsc::UnboundedSender<Frame>,
    pending: Mutex<HashMap<RequestId, mpsc::UnboundedSender<ReplyBody>>>,
    next_request_id: AtomicU64,
    pub closed: CancellationToken,
}

impl Connection {
    /// Create the connection state and start its writer task on `writer`.
    pub fn start<W>(peer_name: String, writer: W) -> Arc<Connection>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (outgoing, receiver) = mpsc::unbounded_channel();
        let connection = Arc::new(Connection {
            peer_name,
            outgoing,
            pending: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
        });
        tokio::spawn(write_loop(writer, receiver, connection.closed.clone()));
        connection
    }

    pub fn send(&self, frame: Frame) {
        // A send after close is dropped: the peer is gone and pending calls were failed.
        let _ = self.outgoing.send(frame);
    }

    fn register(self: &Arc<Self>) -> (RequestId, mpsc::UnboundedReceiver<ReplyBody>, PendingGuard) {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(request_id, sender);
        }
        let guard = PendingGuard {
            connection: Arc::downgrade(self),
            request_id,
        };
        (request_id, receiver, guard)
    }

    /// Send a call to the peer and return the stream of its replies.
    pub fn call(self: &Arc<Self>, call: BusCall) -> ReplyStream {
        if self.closed.is_cancelled() {
            return closed_stream(&self.peer_name);
        }
        let (request_id, receiver, guard) = self.register();
        let caller = match call.caller {
            Caller::Local => None,
            Caller::Remote(node) => Some(node),
        };
        self.send(Frame::Call {
            request_id,
            address: call.address,
            message: call.message,
            caller,
            stream: call.stream,
            payload: call.payload,
            attachment: call.attachment,
        });
        replies_from(receiver, guard, self.peer_name.clone())
    }

    /// Send a control frame (Bind/Unbind) built around a fresh request id and wait for its reply.
    pub async fn control(
        self: &Arc<Self>,
        build: impl FnOnce(RequestId) -> Frame,
    ) -> Result<(), GolemError> {
        if self.closed.is_cancelled() {
            return Err(disconnected(&self.peer_name));
        }
        let (request_id, receiver, guard) = self.register();
        self.send(build(request_id));
        let mut replies = replies_from(receiver, guard, self.peer_name.clone());
        match replies.next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(error),
            None => Err(disconnected(&self.peer_name)),
        }
    }

    /// Route a reply frame to the call waiting for it (ignored when nobody waits any more).
    pub fn deliver_reply(&self, request_id: RequestId, body: ReplyBody) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let last = body.is_last();
        if let Some(sender) = pending.get(&request_id) {
            let _ = sender.send(body);
        }
        if last {
            pending.remove(&request_id);
        }
    }

    /// Mark the connection closed and fail every call still waiting on it.
    pub fn close(&self) {
        self.closed.cancel();
        let drained: Vec<_> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => Vec::new(),
        };
        for (_, sender) in drained {
            let _ = sender.send(ReplyBody::Err {
                error: disconnected(&self.peer_name),
            });
        }
    }

    /// Answer an incoming call by running `endpoint` and sending its replies back.
    pub fn serve_call(self: &Arc<Self>, request_id: RequestId, replies: ReplyStream, stream: bool) {
        let connection = self.clone();
        tokio::spawn(async move {
            let mut replies = replies;
            if !stream {
                let body = match replies.next().await {
                    Some(Ok(value)) => ReplyBody::Ok { value },
                    Some(Err(error)) => ReplyBody::Err { error },
                    None => ReplyBody::Err {
                        error: GolemError::internal("endpoint ended without a reply"),
                    },
                };
                connection.send(Frame::Reply { request_id, body });
                return;
            }
            loop {
                tokio::select! {
                    _ = connection.closed.cancelled() => return,
                    item = replies.next() => {
                        let (body, last) = match item {
                            Some(Ok(value)) => (ReplyBody::Item { value }, false),
                            Some(Err(error)) => (ReplyBody::Err { error }, true),
                            None => (ReplyBody::End, true),
                        };
                        connection.send(Frame::Reply { request_id, body });
                        if last {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Forgets a pending call when its reply stream is dropped early.
pub(crate) struct PendingGuard {
    connection: std::sync::Weak<Connection>,
    request_id: RequestId,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.upgrade() {
            if let Ok(mut pending) = connection.pending.lock() {
                pending.remove(&self.request_id);
            }
        }
    }
}

fn disconnected(peer_name: &str) -> GolemError {
    GolemError::unavailable(format!("bus connection to {peer_name} closed"))
}

fn closed_stream(peer_name: &str) -> ReplyStream {
    let error = disconnected(peer_name);
    stream::once(async move { Err(error) }).boxed()
}

fn replies_from(
    receiver: mpsc::UnboundedReceiver<ReplyBody>,
    guard: PendingGuard,
    peer_name: String,
) -> ReplyStream {
    stream::unfold(Some((receiver, guard)), move |state| {
        let peer_name = peer_name.clone();
        async move {
            let (mut receiver, guard) = state?;
            match receiver.recv().await {
                Some(ReplyBody::Ok { value }) => Some((Ok(value), None)),
                Some(ReplyBody::Item { value }) => Some((Ok(value), Some((receiver, guard)))),
                Some(ReplyBody::End) => None,
                Some(ReplyBody::Err { error }) => Some((Err(error), None)),
                None => Some((Err(disconnected(&peer_name)), None)),
            }
        }
    })
    .boxed()
}

async fn write_loop<W>(
    mut writer: W,
    mut frames: mpsc::UnboundedReceiver<Frame>,
    closed: CancellationToken,
) where
    W: AsyncWrite + Unpin,
{
    let mut buffer = Vec::with_capacity(8 * 1024);
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => None,
            frame = frames.recv() => frame,
        };
        let Some(first) = first else { break };
        buffer.clear();
        let mut next = Some(first);
        // Batch whatever is already queued into one write.
        while let Some(frame) = next {
            if let Err(error) = encode_frame(&frame, &mut buffer) {
                tracing::warn!(%error, "dropping a bus frame that cannot be encoded");
            }
            next = if buffer.len() < 256 * 1024 {
                frames.try_recv().ok()
            } else {
                None
            };
        }
        if writer.write_all(&buffer).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
    // Flush a final Goodbye, if one was queued before closing.
    while let Ok(frame) = frames.try_recv() {
        buffer.clear();
        if encode_frame(&frame, &mut buffer).is_ok() && writer.write_all(&buffer).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Endpoint that forwards calls to a peer over its connection (addresses the peer bound).
pub(crate) struct ForwardingEndpoint {
    pub connection: Arc<Connection>,
}

impl Endpoint for ForwardingEndpoint {
    fn handle(&self, call: BusCall) -> ReplyStream {
        self.connection.call(call)
    }
}
