//! [`Gftp`]: one process's gftp over its bus connection to the local daemon.
//! The serving side binds `/public/gftp/<name>` on that connection (the daemon
//! forwards calls of other nodes to it, and unbinds everything when the
//! connection closes); the client side calls `/net/<nodeId>/public/gftp/<name>`.
//!
//! Transfers are pipelined: up to [`TransferConfig::in_flight`] chunks of
//! [`TransferConfig::chunk_size`] bytes travel at once, while a blocking
//! thread reads or writes the file and hashes it in passing. Downloads are
//! checked against the sha3 in the URL; uploads end with the sha3 the
//! receiver checks. File IO never runs on the async threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::stream::{self, StreamExt, TryStreamExt};
use golem_bus::{BusClient, ServiceEndpoint};
use golem_model::gftp::{
    file_address, GetChunk, GetMetadata, GftpChunk, GftpMetadata, GftpUrl, UploadChunk,
    UploadFinished, MAX_CHUNK_SIZE,
};
use golem_model::{GolemError, NodeId};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha3::{Digest, Sha3_256};
use tokio::sync::{mpsc, watch};

use crate::error::GftpError;
use crate::hash::{hash_reader, hex_digest, OrderedHasher};

/// Chunk size of transfers: 1 MiB (the original's 40 KiB caps throughput).
pub const DEFAULT_CHUNK_SIZE: u64 = 1024 * 1024;
/// Chunks in flight at once.
pub const DEFAULT_IN_FLIGHT: usize = 8;
/// Length of the random name of an upload slot (as the original's).
const UPLOAD_NAME_LEN: usize = 65;
/// The most an upload slot accepts unless [`Gftp::with_upload_limit`] says
/// otherwise: chunks that would end beyond it are refused.
pub const DEFAULT_UPLOAD_LIMIT: u64 = 64 << 30;
/// How far past the bytes received so far a chunk may start: room for
/// chunks that arrive out of order from a pipelining uploader, but no hole
/// that would make a sparse file far larger than what was sent.
pub const MAX_UPLOAD_AHEAD: u64 = 64 * MAX_CHUNK_SIZE;

/// How transfers are cut and pipelined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferConfig {
    /// Bytes per chunk, at most [`MAX_CHUNK_SIZE`].
    pub chunk_size: u64,
    /// Chunks requested before the first answer is awaited.
    pub in_flight: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }
}

/// A file that an upload slot received completely (and verified, when the
/// uploader sent a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFile {
    pub path: PathBuf,
    pub size: u64,
    /// sha3-256, lowercase hex, of what was received.
    pub hash: String,
}

type Finished = Option<Result<ReceivedFile, String>>;

/// An open upload slot: its URL, and a way to wait until an upload completes.
pub struct Receiving {
    pub url: GftpUrl,
    pub path: PathBuf,
    done: watch::Receiver<Finished>,
}

impl Receiving {
    /// Wait until an uploader finished (with a matching hash). Fails when the
    /// slot is closed first.
    pub async fn finished(&mut self) -> Result<ReceivedFile, GftpError> {
        loop {
            if let Some(outcome) = self.done.borrow_and_update().clone() {
                return outcome.map_err(|message| GftpError::protocol(&self.url, message));
            }
            if self.done.changed().await.is_err() {
                return Err(GftpError::protocol(
                    &self.url,
                    "the upload slot was closed before an upload finished",
                ));
            }
        }
    }
}

enum Served {
    Published { path: PathBuf },
    Receiving,
}

/// gftp for one process. Cheap to clone; everything it serves stops being
/// served when the last clone (and so the bus connection) is dropped, or on
/// [`Gftp::close`].
#[derive(Clone)]
pub struct Gftp {
    bus: BusClient,
    node_id: NodeId,
    config: TransferConfig,
    upload_limit: u64,
    served: Arc<Mutex<HashMap<String, Served>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gftp {
    /// Connect to the daemon's bus socket (`<data-dir>/bus.sock`).
    pub async fn connect(bus_socket: &Path) -> Result<Gftp, GftpError> {
        let bus = BusClient::connect(bus_socket, "gftp").await?;
        Gftp::new(bus)
    }

    /// Use an existing bus connection (an exe unit's, a CLI's).
    pub fn new(bus: BusClient) -> Result<Gftp, GftpError> {
        let node_id = bus.node_id().ok_or(GftpError::NoNodeId)?;
        Ok(Gftp {
            bus,
            node_id,
            config: TransferConfig::default(),
            upload_limit: DEFAULT_UPLOAD_LIMIT,
            served: Arc::default(),
        })
    }

    /// Change chunk size and pipelining (the chunk size is capped at [`MAX_CHUNK_SIZE`]).
    pub fn with_config(mut self, config: TransferConfig) -> Gftp {
        self.config = TransferConfig {
            chunk_size: config.chunk_size.clamp(1, MAX_CHUNK_SIZE),
            in_flight: config.in_flight.max(1),
        };
        self
    }

    /// The most bytes an upload slot opened by [`Gftp::receive`] accepts
    /// (default [`DEFAULT_UPLOAD_LIMIT`]); an uploader's chunk that would end
    /// beyond it is refused.
    pub fn with_upload_limit(mut self, bytes: u64) -> Gftp {
        self.upload_limit = bytes;
        self
    }

    /// The node whose daemon serves this process's files.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Serve the file at `path` as `gftp://<our node>/<sha3 of its content>`.
    /// The file is hashed now and kept open; publishing it again returns the same URL.
    pub async fn publish(&self, path: &Path) -> Result<GftpUrl, GftpError> {
        let owned_path = path.to_path_buf();
        let (file, size, hash) = tokio::task::spawn_blocking(move || {
            let mut file = File::open(&owned_path)
                .map_err(|error| GftpError::io(owned_path.display(), error))?;
            let size = file
                .metadata()
                .map_err(|error| GftpError::io(owned_path.display(), error))?
                .len();
            let hash = hash_reader(&mut file)
                .map_err(|error| GftpError::io(owned_path.display(), error))?;
            Ok::<_, GftpError>((file, size, hash))
        })
        .await??;
        let url = GftpUrl::new(self.node_id, hash.clone());
        if lock(&self.served).contains_key(&hash) {
            return Ok(url);
        }
        let file = Arc::new(file);
        let endpoint = ServiceEndpoint::new()
            .on(move |_caller, _: GetMetadata| async move { Ok(GftpMetadata { file_size: size }) })
            .on(move |_caller, get: GetChunk| {
                let file = file.clone();
                async move { read_chunk(file, size, get).await }
            });
        let address = file_address(&hash);
        match self.bus.bind(&address, endpoint).await {
            Ok(()) => {}
            // Same content published by another process of this node: its URL works as well.
            Err(error) if error.code == golem_model::ErrorCode::Conflict => {
                tracing::debug!(%url, "already published by another process on this node");
                return Ok(url);
            }
            Err(error) => return Err(GftpError::Bind { address, error }),
        }
        lock(&self.served).insert(
            hash,
            Served::Published {
                path: path.to_path_buf(),
            },
        );
        tracing::debug!(%url, path = %path.display(), size, "published");
        Ok(url)
    }

    /// Open an upload slot that stores what is uploaded to its URL at `path`
    /// (created, or truncated, now; parent directories are created).
    pub async fn receive(&self, path: &Path) -> Result<Receiving, GftpError> {
        let owned_path = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || create_file(&owned_path)).await??;
        let name: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(UPLOAD_NAME_LEN)
            .map(char::from)
            .collect();
        let url = GftpUrl::new(self.node_id, name.clone());
        let (done_sender, done) = watch::channel(None);
        let slot = Arc::new(Mutex::new(UploadSlot {
            file,
            path: path.to_path_buf(),
            hasher: OrderedHasher::default(),
            limit: self.upload_limit,
            received: 0,
            finished: false,
            done: done_sender,
        }));
        let chunk_slot = slot.clone();
        let endpoint = ServiceEndpoint::new()
            .on(move |_caller, upload: UploadChunk| {
                let slot = chunk_slot.clone();
                async move {
                    tokio::task::spawn_blocking(move || lock(&slot).write(upload.chunk))
                        .await
                        .map_err(|error| GolemError::internal(error.to_string()))?
                }
            })
            .on(move |_caller, finished: UploadFinished| {
                let slot = slot.clone();
                async move {
                    tokio::task::spawn_blocking(move || lock(&slot).finish(finished.hash))
                        .await
                        .map_err(|error| GolemError::internal(error.to_string()))?
                }
            });
        let address = file_address(&name);
        self.bus
            .bind(&address, endpoint)
            .await
            .map_err(|error| GftpError::Bind { address, error })?;
        lock(&self.served).insert(name, Served::Receiving);
        tracing::debug!(%url, path = %path.display(), "receiving");
        Ok(Receiving {
            url,
            path: path.to_path_buf(),
            done,
        })
    }

    /// Stop serving `url` (published or receiving); false when this instance did not serve it.
    pub async fn close(&self, url: &GftpUrl) -> Result<bool, GftpError> {
        if url.node_id != self.node_id || lock(&self.served).remove(&url.name).is_none() {
            return Ok(false);
        }
        let address = file_address(&url.name);
        self.bus
            .unbind(&address)
            .await
            .map_err(|error| GftpError::Bind { address, error })?;
        Ok(true)
    }

    /// The local files this instance publishes, by URL.
    pub fn published(&self) -> Vec<(GftpUrl, PathBuf)> {
        lock(&self.served)
            .iter()
            .filter_map(|(name, served)| match served {
                Served::Published { path } => {
                    Some((GftpUrl::new(self.node_id, name.clone()), path.clone()))
                }
                Served::Receiving => None,
            })
            .collect()
    }

    /// Download `url` into `destination` (created or truncated, parents
    /// created); the file is removed again when the transfer or the hash
    /// check fails. Returns the number of bytes.
    pub async fn download(&self, url: &GftpUrl, destination: &Path) -> Result<u64, GftpError> {
        let owned = destination.to_path_buf();
        let file = tokio::task::spawn_blocking(move || create_file(&owned)).await??;
        let result = self.download_to_file(url, file).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(destination).await;
        }
        result
    }

    /// Download `url` into an open, empty, writable file (truncated to zero
    /// again when the transfer or the hash check fails).
    pub async fn download_to_file(&self, url: &GftpUrl, file: File) -> Result<u64, GftpError> {
        self.download_to_file_limited(url, file, None).await
    }

    /// The size of the file `url` names, as its publisher announces it.
    pub async fn remote_size(&self, url: &GftpUrl) -> Result<u64, GftpError> {
        let metadata = self
            .bus
            .call(&url.remote_address(), &GetMetadata {})
            .await
            .map_err(|error| GftpError::remote(url, error))?;
        Ok(metadata.file_size)
    }

    /// The file's size and its first chunk, asked for together: a file that
    /// fits one chunk (a task's input, typically) arrives one round trip
    /// after the call instead of two (size first, then the bytes). A
    /// publisher answers a chunk that reaches past the end with the bytes
    /// there are.
    async fn size_and_first_chunk(&self, url: &GftpUrl) -> Result<(u64, Vec<u8>), GftpError> {
        let chunk_size = self.config.chunk_size;
        let first_chunk = GetChunk {
            offset: 0,
            size: chunk_size,
        };
        let address = url.remote_address();
        let (size, chunk) =
            futures::join!(self.remote_size(url), self.bus.call(&address, &first_chunk));
        let size = size?;
        let chunk = chunk.map_err(|error| GftpError::remote(url, error))?;
        let first_chunk = decode_chunk(url, chunk, 0, chunk_size.min(size))?;
        Ok((size, first_chunk))
    }

    /// The bytes of `url` from offset `start` to `size` (what
    /// [`Gftp::remote_size`] said), in order, chunk by chunk, with
    /// [`TransferConfig::in_flight`] chunks asked for at once. Each chunk is
    /// checked to be the one asked for and to fit `size`; nothing is hashed
    /// here: the caller checks what the bytes must be (a task package's
    /// own digest, for one). Dropping the stream stops the transfer.
    pub fn read_from(
        &self,
        url: &GftpUrl,
        size: u64,
        start: u64,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, GftpError>> + Send + 'static {
        let chunk_size = self.config.chunk_size;
        let (bus, address) = (self.bus.clone(), url.remote_address());
        let offsets = (start.min(size)..size).step_by(chunk_size as usize);
        let url = url.clone();
        stream::iter(offsets)
            .map(move |offset| {
                let (bus, address, url) = (bus.clone(), address.clone(), url.clone());
                async move {
                    let chunk = bus
                        .call(
                            &address,
                            &GetChunk {
                                offset,
                                size: chunk_size,
                            },
                        )
                        .await
                        .map_err(|error| GftpError::remote(&url, error))?;
                    let expected = chunk_size.min(size - offset);
                    decode_chunk(&url, chunk, offset, expected)
                }
            })
            .buffered(self.config.in_flight)
    }

    /// [`Gftp::download_to_file`], refused before anything is written
    /// ([`GftpError::TooLarge`]) when the publisher announces more than
    /// `limit` bytes; the writer never writes past the announced size.
    pub async fn download_to_file_limited(
        &self,
        url: &GftpUrl,
        file: File,
        limit: Option<u64>,
    ) -> Result<u64, GftpError> {
        // Our published files are named by their sha3 and checked below; other
        // publishers (golem-js over the GSB API) name files by UUID, which
        // carries no hash to check.
        let (size, first_chunk) = self.size_and_first_chunk(url).await?;
        if let Some(limit) = limit.filter(|limit| size > *limit) {
            return Err(GftpError::TooLarge {
                url: url.clone(),
                size,
                limit,
            });
        }
        let (sender, receiver) = mpsc::channel::<Vec<u8>>(self.config.in_flight);
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, receiver));

        let rest = self.read_from(url, size, first_chunk.len() as u64);
        let mut chunks = std::pin::pin!(stream::once(async { Ok(first_chunk) }).chain(rest));
        let mut fetch_error = None;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => {
                    if sender.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(error) => {
                    fetch_error = Some(error);
                    break;
                }
            }
        }
        drop(sender);
        let (file, written) = writer.await?;
        let outcome = match (fetch_error, written) {
            (Some(error), _) | (None, Err(error)) => Err(error),
            (None, Ok((bytes, _))) if bytes != size => Err(GftpError::protocol(
                url,
                format!("transfer ended after {bytes} of {size} bytes"),
            )),
            (None, Ok((_, actual))) if url.is_content_hash() && actual != url.name => {
                Err(GftpError::HashMismatch {
                    url: url.clone(),
                    expected: url.name.clone(),
                    actual,
                })
            }
            (None, Ok((bytes, _))) => Ok(bytes),
        };
        if outcome.is_err() {
            let _ = file.set_len(0);
        }
        if let Ok(bytes) = &outcome {
            tracing::debug!(%url, bytes, "downloaded");
        }
        outcome
    }

    /// Upload the file at `source` to an upload slot `url`; the receiver checks its sha3.
    pub async fn upload(&self, source: &Path, url: &GftpUrl) -> Result<u64, GftpError> {
        let owned = source.to_path_buf();
        let file = tokio::task::spawn_blocking(move || {
            File::open(&owned).map_err(|error| GftpError::io(owned.display(), error))
        })
        .await??;
        self.upload_from_file(file, url).await
    }

    /// Upload an open, readable file (read from its start) to an upload slot `url`.
    pub async fn upload_from_file(&self, file: File, url: &GftpUrl) -> Result<u64, GftpError> {
        let address = url.remote_address();
        let chunk_size = self.config.chunk_size;
        let (sender, receiver) = mpsc::channel::<GftpChunk>(self.config.in_flight);
        let reader_url = url.clone();
        let reader =
            tokio::task::spawn_blocking(move || read_chunks(file, chunk_size, sender, &reader_url));
        let bus = self.bus.clone();
        let sent = stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|chunk| (chunk, receiver))
        })
        .map(|chunk| {
            let (bus, address) = (bus.clone(), address.clone());
            async move { bus.call(&address, &UploadChunk { chunk }).await }
        })
        .buffered(self.config.in_flight)
        .map_err(|error| GftpError::remote(url, error))
        .try_for_each(|()| async { Ok(()) })
        .await;
        // Dropping the chunk stream (on error) stops the reader.
        let read = reader.await?;
        sent?;
        let (size, hash) = read?;
        self.bus
            .call(&address, &UploadFinished { hash: Some(hash) })
            .await
            .map_err(|error| GftpError::remote(url, error))?;
        tracing::debug!(%url, bytes = size, "uploaded");
        Ok(size)
    }
}

fn create_file(path: &Path) -> Result<File, GftpError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|error| GftpError::io(parent.display(), error))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|error| GftpError::io(path.display(), error))
}

/// Serve one `GetChunk` of a published file.
async fn read_chunk(
    file: Arc<File>,
    file_size: u64,
    get: GetChunk,
) -> Result<GftpChunk, GolemError> {
    if get.offset > file_size {
        return Err(GolemError::bad_request(format!(
            "offset {} is past the end of the file ({file_size} bytes)",
            get.offset
        )));
    }
    if get.size > MAX_CHUNK_SIZE {
        return Err(GolemError::bad_request(format!(
            "chunk of {} bytes asked; at most {MAX_CHUNK_SIZE} are served at once",
            get.size
        )));
    }
    let length = get.size.min(file_size - get.offset) as usize;
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; length];
        file.read_exact_at(&mut buffer, get.offset)
            .map_err(|error| {
                GolemError::internal(format!(
                    "cannot read {length} bytes at offset {} of the published file: {error}",
                    get.offset
                ))
            })?;
        Ok(GftpChunk {
            offset: get.offset,
            content: BASE64.encode(&buffer),
        })
    })
    .await
    .map_err(|error| GolemError::internal(error.to_string()))?
}

/// The bytes of a chunk that must start at `offset` and hold `expected` bytes.
fn decode_chunk(
    url: &GftpUrl,
    chunk: GftpChunk,
    offset: u64,
    expected: u64,
) -> Result<Vec<u8>, GftpError> {
    if chunk.offset != offset {
        return Err(GftpError::protocol(
            url,
            format!(
                "chunk at offset {} where {offset} was asked for",
                chunk.offset
            ),
        ));
    }
    let bytes = BASE64.decode(chunk.content.as_bytes()).map_err(|error| {
        GftpError::protocol(
            url,
            format!("chunk at offset {offset} is not base64: {error}"),
        )
    })?;
    if bytes.len() as u64 != expected {
        return Err(GftpError::protocol(
            url,
            format!(
                "chunk at offset {offset} has {} bytes where {expected} were expected",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// The downloader's writer thread: checked chunks arrive in order; write
/// and hash them. Returns the bytes written and their sha3.
fn write_chunks(
    mut file: File,
    mut chunks: mpsc::Receiver<Vec<u8>>,
) -> (File, Result<(u64, String), GftpError>) {
    let mut hasher = Sha3_256::new();
    let mut written = 0u64;
    let mut step = || -> Result<(u64, String), GftpError> {
        while let Some(bytes) = chunks.blocking_recv() {
            file.write_all(&bytes)
                .map_err(|error| GftpError::io("the destination file", error))?;
            hasher.update(&bytes);
            written += bytes.len() as u64;
        }
        file.flush()
            .map_err(|error| GftpError::io("the destination file", error))?;
        Ok((written, hex_digest(hasher.clone())))
    };
    let result = step();
    (file, result)
}

/// The uploader's reader thread: read, hash and encode chunks in order.
fn read_chunks(
    mut file: File,
    chunk_size: u64,
    chunks: mpsc::Sender<GftpChunk>,
    url: &GftpUrl,
) -> Result<(u64, String), GftpError> {
    let mut hasher = Sha3_256::new();
    let mut offset = 0u64;
    let mut buffer = vec![0u8; chunk_size as usize];
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            let read = file
                .read(&mut buffer[filled..])
                .map_err(|error| GftpError::io("the source file", error))?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            break;
        }
        hasher.update(&buffer[..filled]);
        let chunk = GftpChunk {
            offset,
            content: BASE64.encode(&buffer[..filled]),
        };
        offset += filled as u64;
        if chunks.blocking_send(chunk).is_err() {
            return Err(GftpError::protocol(url, "upload stopped"));
        }
        if filled < buffer.len() {
            break;
        }
    }
    Ok((offset, hex_digest(hasher)))
}

/// The receiving side of an upload slot.
struct UploadSlot {
    file: File,
    path: PathBuf,
    hasher: OrderedHasher,
    /// No chunk may end beyond this many bytes.
    limit: u64,
    /// Bytes of chunks written so far (a repeated chunk counts again).
    received: u64,
    finished: bool,
    done: watch::Sender<Finished>,
}

impl UploadSlot {
    fn write(&mut self, chunk: GftpChunk) -> Result<(), GolemError> {
        if self.finished {
            return Err(GolemError::conflict(
                "this upload already finished; ask for a new upload url",
            ));
        }
        if chunk.content.len() as u64 > MAX_CHUNK_SIZE.div_ceil(3) * 4 {
            return Err(GolemError::bad_request(format!(
                "chunk larger than {MAX_CHUNK_SIZE} bytes"
            )));
        }
        let bytes = BASE64
            .decode(chunk.content.as_bytes())
            .map_err(|error| GolemError::bad_request(format!("chunk is not base64: {error}")))?;
        let end = chunk.offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|end| end > self.limit) {
            return Err(GolemError::bad_request(format!(
                "chunk at offset {} of {} bytes ends beyond this upload slot's limit of {} bytes",
                chunk.offset,
                bytes.len(),
                self.limit
            )));
        }
        if chunk.offset > self.received.saturating_add(MAX_UPLOAD_AHEAD) {
            return Err(GolemError::bad_request(format!(
                "chunk at offset {} starts more than {MAX_UPLOAD_AHEAD} bytes past the {} received so far; send chunks in order",
                chunk.offset, self.received
            )));
        }
        self.file
            .write_all_at(&bytes, chunk.offset)
            .map_err(|error| {
                GolemError::internal(format!("cannot write the received chunk: {error}"))
            })?;
        self.hasher.feed(chunk.offset, &bytes);
        self.received = self.received.saturating_add(bytes.len() as u64);
        Ok(())
    }

    fn finish(&mut self, expected: Option<String>) -> Result<(), GolemError> {
        if self.finished {
            return Ok(());
        }
        let io = |error: std::io::Error| {
            GolemError::internal(format!("cannot check the received file: {error}"))
        };
        self.file.flush().map_err(io)?;
        let size = self.file.metadata().map_err(io)?.len();
        let actual = match self.hasher.finish(size) {
            Some(hash) => hash,
            None => {
                let positioned = PositionedReader {
                    file: &self.file,
                    offset: 0,
                };
                hash_reader(positioned).map_err(io)?
            }
        };
        if let Some(expected) = expected {
            if expected.to_ascii_lowercase() != actual {
                // Start over: the uploader may retry into the same slot.
                let _ = self.file.set_len(0);
                self.hasher = OrderedHasher::default();
                self.received = 0;
                return Err(GolemError::bad_request(format!(
                    "uploaded file hash {actual} does not match the expected {expected}; upload it again"
                )));
            }
        }
        self.finished = true;
        self.done.send_replace(Some(Ok(ReceivedFile {
            path: self.path.clone(),
            size,
            hash: actual,
        })));
        Ok(())
    }
}

/// Reads a shared file from offset 0 without moving its cursor.
struct PositionedReader<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn slot(dir: &Path, name: &str, limit: u64) -> UploadSlot {
        let path = dir.join(name);
        UploadSlot {
            file: create_file(&path).unwrap(),
            path,
            hasher: OrderedHasher::default(),
            limit,
            received: 0,
            finished: false,
            done: watch::channel(None).0,
        }
    }

    fn chunk(offset: u64, bytes: &[u8]) -> GftpChunk {
        GftpChunk {
            offset,
            content: BASE64.encode(bytes),
        }
    }

    /// The exploit: an UploadChunk with a huge offset used to make a sparse
    /// file far beyond anything announced; now it is refused and the file
    /// stays as small as what was really received.
    #[test]
    fn chunks_beyond_the_slot_limit_or_far_ahead_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut slot = slot(dir.path(), "limited.bin", 10 * MAX_CHUNK_SIZE);
        slot.write(chunk(0, b"hello")).unwrap();
        for offset in [u64::MAX - 2, 1 << 50, 10 * MAX_CHUNK_SIZE - 2] {
            let error = slot.write(chunk(offset, b"abc")).unwrap_err();
            assert_eq!(error.code, golem_model::ErrorCode::BadRequest);
            assert!(error.message.contains("limit"), "{}", error.message);
        }
        assert_eq!(
            std::fs::metadata(dir.path().join("limited.bin"))
                .unwrap()
                .len(),
            5
        );
        let mut roomy = self::slot(dir.path(), "roomy.bin", u64::MAX);
        let error = roomy.write(chunk(MAX_UPLOAD_AHEAD + 1, b"x")).unwrap_err();
        assert!(error.message.contains("in order"), "{}", error.message);
        assert_eq!(
            std::fs::metadata(dir.path().join("roomy.bin"))
                .unwrap()
                .len(),
            0
        );
        // Out-of-order chunks within the window are fine.
        roomy.write(chunk(3, b"lo")).unwrap();
        roomy.write(chunk(0, b"hel")).unwrap();
        roomy.finish(None).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("roomy.bin")).unwrap(),
            b"hello"
        );
    }
}
