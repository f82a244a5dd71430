//! gftp: file transfer between Golem nodes over the bus, compatible in shape
//! with the original's gftp.
//!
//! A process connected to its daemon's bus socket ([`Gftp::connect`], or
//! [`Gftp::new`] on an existing `BusClient`) can
//! - [`Gftp::publish`] a local file: it is served at `/public/gftp/<sha3>` and
//!   addressed `gftp://<nodeId>/<sha3>` (messages `GetMetadata`, `GetChunk`);
//! - [`Gftp::receive`] into a local file: an upload slot with a random name
//!   (messages `UploadChunk`, `UploadFinished` with the sha3 to check);
//!   [`Receiving::finished`] waits for the upload;
//! - [`Gftp::download`] a `gftp://` URL (the content is checked against the
//!   sha3 in the URL) and [`Gftp::upload`] to an upload slot's URL;
//! - [`Gftp::close`] what it serves. Everything it serves disappears when its
//!   bus connection closes.
//!
//! Wire messages live in `golem_model::gftp`. The `gftp` binary
//! ([`rpc`], [`config`]) speaks yapapi's line-based JSON-RPC on stdin/stdout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), golem_gftp::GftpError> {
//! use golem_gftp::Gftp;
//! let gftp = Gftp::connect("/var/lib/golem/bus.sock".as_ref()).await?;
//! let url = gftp.publish("input.bin".as_ref()).await?;          // on the requestor
//! let bytes = gftp.download(&url, "copy.bin".as_ref()).await?;   // on any node
//! let mut slot = gftp.receive("out/result.txt".as_ref()).await?; // on the requestor
//! // ... a provider calls gftp.upload(path, &slot.url) ...
//! let received = slot.finished().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod config;
mod error;
mod hash;
pub mod rpc;
mod service;

pub use error::GftpError;
pub use golem_model::gftp::GftpUrl;
pub use hash::hash_reader;
pub use service::{
    Gftp, ReceivedFile, Receiving, TransferConfig, DEFAULT_CHUNK_SIZE, DEFAULT_IN_FLIGHT,
    DEFAULT_UPLOAD_LIMIT, MAX_UPLOAD_AHEAD,
};
