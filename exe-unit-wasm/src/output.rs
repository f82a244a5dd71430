//! The module's stdout and stderr: each write goes to the core as an
//! [`OutputChunk`] through the bounded channel, so output streams while the
//! module runs and a module that prints faster than it is captured waits.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use golem_exe_unit::{OutputChunk, OutputSender};
use tokio::io::AsyncWrite;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// How much a module may write per `check_write` permit.
const WRITE_BUDGET: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

impl Channel {
    fn chunk(self, bytes: Vec<u8>) -> OutputChunk {
        match self {
            Channel::Stdout => OutputChunk::Stdout(bytes),
            Channel::Stderr => OutputChunk::Stderr(bytes),
        }
    }
}

/// A WASI output stream that forwards to the core.
#[derive(Clone)]
pub struct OutputPipe {
    sender: OutputSender,
    channel: Channel,
}

impl OutputPipe {
    pub fn new(sender: OutputSender, channel: Channel) -> OutputPipe {
        OutputPipe { sender, channel }
    }
}

impl IsTerminal for OutputPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(AsyncOutput {
            sender: PollSender::new(self.sender.clone()),
            channel: self.channel,
        })
    }
}

impl OutputStream for OutputPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self.sender.try_send(self.channel.chunk(bytes.to_vec())) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(StreamError::Closed),
            // `check_write` saw room and writes of one module are sequential,
            // so this means a bug rather than a slow reader.
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => Err(
                StreamError::LastOperationFailed(wasmtime::Error::msg("output channel is full")),
            ),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.sender.is_closed() {
            return Err(StreamError::Closed);
        }
        Ok(if self.sender.capacity() > 0 {
            WRITE_BUDGET
        } else {
            0
        })
    }
}

#[async_trait::async_trait]
impl Pollable for OutputPipe {
    async fn ready(&mut self) {
        if self.sender.capacity() == 0 {
            // Wait for room; dropping the permit gives the slot back for `write`.
            let _ = self.sender.reserve().await;
        }
    }
}

struct AsyncOutput {
    sender: PollSender<OutputChunk>,
    channel: Channel,
}

impl AsyncWrite for AsyncOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let broken = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        if ready!(this.sender.poll_reserve(context)).is_err() {
            return Poll::Ready(Err(broken()));
        }
        this.sender
            .send_item(this.channel.chunk(buffer.to_vec()))
            .map_err(|_| broken())?;
        Poll::Ready(Ok(buffer.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
