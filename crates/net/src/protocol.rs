//! Wire protocol of remote bus calls (`/golem/call/2`): one request-response
//! exchange per call over a fresh yamux stream. Each direction carries a single
//! frame: a 4-byte big-endian length followed by that many bytes of JSON; a
//! call's frame may go on after its JSON object with the call's attachment,
//! raw bytes (VPN packets; version 1 had no attachments). The
//! codec refuses frames above the configured limit before reading them, so a
//! peer cannot make us buffer more than `max_message_size`; parsing the JSON is
//! left to the node, which answers malformed requests with `BadRequest`.
//!
//! Reply streams are pulled: a call flagged `stream` is answered with a first
//! [`StreamChunk`], and the caller asks for each next chunk with a
//! [`WirePull`] until a chunk says `end`. The responder buffers a bounded
//! number of items, so a slow caller slows the producer down.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use golem_model::GolemError;
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// Protocol name of remote bus calls.
pub const CALL_PROTOCOL: StreamProtocol = StreamProtocol::new("/golem/call/2");

/// A remote bus call as sent on the wire. The caller's NodeId is deliberately
/// absent: the receiver derives it from the authenticated connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireCall {
    pub address: String,
    pub message: String,
    pub payload: serde_json::Value,
    /// Ask for a reply stream: the answer is a [`StreamChunk`] and further
    /// chunks are pulled with [`WirePull`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Raw bytes sent after the JSON object (empty for most calls).
    #[serde(skip)]
    pub attachment: Vec<u8>,
}

/// Ask for the next chunk of reply stream `pull` (or drop it with `cancel`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WirePull {
    pub pull: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

/// Any request frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireRequest {
    Call(WireCall),
    Pull(WirePull),
}

/// The answer to a request frame.
pub type WireReply = Result<serde_json::Value, GolemError>;

/// A request frame's bytes: its JSON object, then a call's attachment.
pub fn encode_request(request: &WireRequest) -> serde_json::Result<Vec<u8>> {
    let mut frame = serde_json::to_vec(request)?;
    if let WireRequest::Call(call) = request {
        frame.extend_from_slice(&call.attachment);
    }
    Ok(frame)
}

/// Parse a request frame: one JSON object, and after it a call's attachment
/// (any other request followed by bytes is malformed).
pub fn decode_request(frame: &[u8]) -> Result<WireRequest, String> {
    let mut objects = serde_json::Deserializer::from_slice(frame).into_iter::<WireRequest>();
    let mut request = match objects.next() {
        Some(request) => request.map_err(|error| error.to_string())?,
        None => return Err("empty request".into()),
    };
    let rest = &frame[objects.byte_offset()..];
    match &mut request {
        WireRequest::Call(call) => call.attachment = rest.to_vec(),
        WireRequest::Pull(_) if rest.iter().all(u8::is_ascii_whitespace) => {}
        WireRequest::Pull(_) => {
            return Err(format!(
                "{} bytes after a pull request, which takes no attachment",
                rest.len()
            ))
        }
    }
    Ok(request)
}

/// A piece of a reply stream, carried as the `Ok` value of a [`WireReply`]:
/// the items ready so far (at least one unless the stream ended or the
/// responder's wait expired) and whether the stream is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamChunk {
    pub stream: u64,
    pub items: Vec<WireReply>,
    pub end: bool,
}

/// Length-prefixed byte frames with a size limit, for request-response.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }

    async fn read_frame<T: AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Vec<u8>> {
        let mut header = [0u8; 4];
        io.read_exact(&mut header).await?;
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes exceeds the limit of {} bytes",
                    self.max_frame
                ),
            ));
        }
        let mut frame = vec![0u8; len];
        io.read_exact(&mut frame).await?;
        Ok(frame)
    }

    async fn write_frame<T: AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        frame: Vec<u8>,
    ) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|len| *len as usize <= self.max_frame)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "frame of {} bytes exceeds the limit of {} bytes",
                        frame.len(),
                        self.max_frame
                    ),
                )
            })?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(&frame).await?;
        io.flush().await?;
        io.close().await
    }
}

#[async_trait::async_trait]
impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, res).await
    }
}

/// Extra room a frame needs around the payload for the JSON envelope.
pub(crate) const ENVELOPE_OVERHEAD: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    #[test]
    fn calls_carry_their_attachment_after_the_json() {
        let call = WireCall {
            address: "/public/vpn/n".into(),
            message: "VpnPackets".into(),
            payload: serde_json::json!({"networkId": "n"}),
            stream: false,
            attachment: vec![0, 2, b'}', 0xff, b' '],
        };
        let frame = encode_request(&WireRequest::Call(call)).expect("encode");
        let Ok(WireRequest::Call(decoded)) = decode_request(&frame) else {
            panic!("not a call")
        };
        assert_eq!(decoded.attachment, vec![0, 2, b'}', 0xff, b' ']);
        assert_eq!(decoded.payload["networkId"], "n");

        let mut pull = encode_request(&WireRequest::Pull(WirePull {
            pull: 1,
            cancel: false,
        }))
        .expect("encode");
        assert!(decode_request(&pull).is_ok());
        pull.extend_from_slice(b"junk");
        let error = decode_request(&pull).expect_err("trailing bytes");
        assert!(error.contains("4 bytes after a pull request"), "{error}");
        assert!(decode_request(b"").is_err());
        assert!(decode_request(b"not json").is_err());
    }

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        futures::executor::block_on(async {
            let mut codec = FrameCodec::new(8);
            let mut buffer = futures::io::Cursor::new(Vec::new());
            codec
                .write_request(&CALL_PROTOCOL, &mut buffer, b"hello".to_vec())
                .await
                .expect("write");
            buffer.set_position(0);
            let frame = codec
                .read_request(&CALL_PROTOCOL, &mut buffer)
                .await
                .expect("read");
            assert_eq!(frame, b"hello");

            let mut big = futures::io::Cursor::new(Vec::new());
            assert!(codec
                .write_request(&CALL_PROTOCOL, &mut big, vec![0; 9])
                .await
                .is_err());
            let mut forged = futures::io::Cursor::new(u32::MAX.to_be_bytes().to_vec());
            let error = codec
                .read_request(&CALL_PROTOCOL, &mut forged)
                .await
                .expect_err("too large");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        });
    }
}
