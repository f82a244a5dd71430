//! Wire framing of the bus socket: a 4-byte big-endian length followed by that
//! many bytes: one JSON object encoding a [`Frame`], and for a `Call` its
//! attachment, raw bytes right after the object (VPN packets travel so,
//! without base64 or JSON escaping). Frames above [`MAX_FRAME_LEN`], bodies
//! that are not a valid frame and trailing bytes after any other frame are
//! refused with [`FrameError`].

use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version spoken by this build. A `Hello` with another version is refused.
/// Version 2 added call attachments (bytes after a `Call`'s JSON).
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest frame body accepted (16 MiB): large enough for a transfer chunk,
/// small enough that a garbage length cannot make the reader allocate gigabytes.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Identifies a call on the connection it was sent over; each side numbers its own calls.
pub type RequestId = u64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Frame {
    /// First frame of every connection, from the connecting side.
    Hello {
        protocol_version: u32,
        client_name: String,
    },
    /// The accepting side's answer to a good `Hello`.
    Welcome {
        protocol_version: u32,
        node_id: Option<NodeId>,
    },
    /// Last frame before the sender closes the connection, saying why.
    Goodbye { message: String },
    /// Ask the router to deliver calls for `address` over this connection.
    Bind {
        request_id: RequestId,
        address: String,
    },
    /// Stop delivering calls for `address`.
    Unbind {
        request_id: RequestId,
        address: String,
    },
    /// Invoke `message` on `address`; `caller` is set by the router for calls it forwards.
    Call {
        request_id: RequestId,
        address: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller: Option<NodeId>,
        /// The caller wants every item (`Item`s then `End`) rather than one `Ok`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stream: bool,
        payload: serde_json::Value,
        /// Raw bytes carried after the JSON object (empty for most calls).
        #[serde(skip)]
        attachment: Vec<u8>,
    },
    /// One piece of the answer to the call `request_id` sent by the receiver.
    Reply {
        request_id: RequestId,
        body: ReplyBody,
    },
}

/// A reply: one `Ok` or `Err` ends a call; streams send `Item`s and then `End` (or `Err`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum ReplyBody {
    Ok { value: serde_json::Value },
    Item { value: serde_json::Value },
    End,
    Err { error: GolemError },
}

impl ReplyBody {
    pub fn is_last(&self) -> bool {
        !matches!(self, ReplyBody::Item { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds the limit of {MAX_FRAME_LEN} bytes")]
    TooLarge { length: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("malformed frame: {0} bytes after a frame that takes no attachment")]
    TrailingBytes(usize),
    #[error("connection closed")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// Read one frame; `Closed` on a clean end of stream before a length prefix.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<Frame, FrameError> {
    let mut length_bytes = [0u8; 4];
    match reader.read_exact(&mut length_bytes).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FrameError::Closed)
        }
        Err(error) => return Err(error.into()),
    }
    let length = u32::from_be_bytes(length_bytes) as usize;
    if length > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { length });
    }
    buffer.clear();
    buffer.resize(length, 0);
    reader.read_exact(buffer).await?;
    decode_body(buffer)
}

/// Split a frame body into its JSON object and what follows it.
fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    let mut objects = serde_json::Deserializer::from_slice(body).into_iter::<Frame>();
    let mut frame = match objects.next() {
        Some(frame) => frame?,
        // An empty body: let serde say what is missing.
        None => serde_json::from_slice::<Frame>(body)?,
    };
    let rest = &body[objects.byte_offset()..];
    match &mut frame {
        Frame::Call { attachment, .. } => attachment.extend_from_slice(rest),
        _ if rest.iter().all(u8::is_ascii_whitespace) => {}
        _ => return Err(FrameError::TrailingBytes(rest.len())),
    }
    Ok(frame)
}

/// Append one encoded frame (length prefix + body) to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    serde_json::to_writer(&mut *out, frame)?;
    if let Frame::Call { attachment, .. } = frame {
        out.extend_from_slice(attachment);
    }
    let length = out.len() - start - 4;
    if length > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLarge { length });
    }
    out[start..start + 4].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(())
}

/// Write one frame and flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> Result<(), FrameError> {
    let mut out = Vec::new();
    encode_frame(frame, &mut out)?;
    writer.write_all(&out).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_frames() -> Vec<Frame> {
        vec![
            Frame::Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "test".into(),
            },
            Frame::Bind {
                request_id: 1,
                address: "/local/exeunit/a".into(),
            },
            Frame::Call {
                request_id: 7,
                address: "/local/identity".into(),
                message: "GetIdentity".into(),
                caller: None,
                stream: false,
                payload: serde_json::json!({"a": [1, 2, "x"]}),
                attachment: Vec::new(),
            },
            Frame::Call {
                request_id: 9,
                address: "/public/vpn/n".into(),
                message: "VpnPackets".into(),
                caller: None,
                stream: false,
                payload: serde_json::json!({"networkId": "n"}),
                attachment: vec![0, 3, b'{', b' ', 0xff, b'}', b'\n'],
            },
            Frame::Reply {
                request_id: 7,
                body: ReplyBody::Err {
                    error: GolemError::not_found("x"),
                },
            },
            Frame::Reply {
                request_id: 8,
                body: ReplyBody::End,
            },
        ]
    }

    #[tokio::test]
    async fn frames_round_trip_through_a_byte_stream() {
        let mut bytes = Vec::new();
        for frame in sample_frames() {
            encode_frame(&frame, &mut bytes).unwrap();
        }
        let mut reader = bytes.as_slice();
        let mut buffer = Vec::new();
        for expected in sample_frames() {
            assert_eq!(
                read_frame(&mut reader, &mut buffer).await.unwrap(),
                expected
            );
        }
        assert!(matches!(
            read_frame(&mut reader, &mut buffer).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn refuses_oversized_length_without_allocating() {
        let bytes = (u32::MAX).to_be_bytes();
        let mut reader = &bytes[..];
        let result = read_frame(&mut reader, &mut Vec::new()).await;
        assert!(
            matches!(result, Err(FrameError::TooLarge { length }) if length == u32::MAX as usize)
        );
    }

    #[tokio::test]
    async fn refuses_garbage_body() {
        let mut bytes = 5u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"hello");
        let mut reader = bytes.as_slice();
        let result = read_frame(&mut reader, &mut Vec::new()).await;
        assert!(
            matches!(result, Err(FrameError::Malformed(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn refuses_bytes_after_a_frame_without_attachment() {
        let mut bytes = Vec::new();
        encode_frame(
            &Frame::Goodbye {
                message: "bye".into(),
            },
            &mut bytes,
        )
        .unwrap();
        bytes.extend_from_slice(b"xyz");
        let length = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&length.to_be_bytes());
        let mut reader = bytes.as_slice();
        let result = read_frame(&mut reader, &mut Vec::new()).await;
        assert!(
            matches!(result, Err(FrameError::TrailingBytes(3))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_a_hang() {
        let mut bytes = 100u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{\"type\":");
        let mut reader = bytes.as_slice();
        assert!(read_frame(&mut reader, &mut Vec::new()).await.is_err());
    }
}
