//! Moving files between the requestor and providers, behind [`FileTransfer`]:
//! `publish` gives a URL a provider's exe unit can `transfer` from, `receive`
//! a URL it can upload to, `close` ends an upload slot once its task is done.
//! [`HttpFiles`] does it with a small HTTP/1.1 server on the requestor
//! (GET/HEAD with `Range: bytes=N-`, PUT with Content-Length); its URLs carry
//! 128 random bits, so only who was given a URL can use it, and an upload
//! slot takes one upload of at most `max_upload_bytes` (413 beyond; a second
//! PUT is refused with 409 while the first runs and 410 after it). [`GftpFiles`]
//! does it with gftp over the daemon's bus socket (`gftp://<nodeId>/<hash>`
//! URLs), for requestors on the daemon's machine; [`daemon_bus_socket`] asks
//! the daemon where that socket is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{RequestorError, Result};

/// Where providers fetch inputs and put outputs.
#[async_trait::async_trait]
pub trait FileTransfer: Send + Sync {
    /// A URL serving the local file `path` (its file name is kept last).
    async fn publish(&self, path: &Path) -> Result<String>;
    /// A URL that stores one upload at the local path `dest`.
    async fn receive(&self, dest: &Path) -> Result<String>;
    /// Stop serving `url` (an upload slot whose task is done); unknown URLs
    /// are ignored.
    async fn close(&self, url: &str);
}

/// The largest upload an [`HttpFiles`] slot takes unless configured.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// Random bytes in every URL: 128 bits, not guessable.
const TOKEN_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Open,
    /// A PUT is being received: a second one is refused (409).
    Receiving,
    /// An upload completed: the slot takes no other (410).
    Used,
}

struct UploadSlot {
    dest: PathBuf,
    state: SlotState,
}

#[derive(Default)]
struct Routes {
    published: HashMap<String, PathBuf>,
    receiving: HashMap<String, UploadSlot>,
}

/// The HTTP file server; stops when dropped.
pub struct HttpFiles {
    base_url: String,
    routes: Arc<Mutex<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock_routes(routes: &Mutex<Routes>) -> std::sync::MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpFiles {
    /// Serve on `addr` (e.g. `127.0.0.1:0`); one upload takes at most
    /// `max_upload_bytes`.
    pub async fn start(addr: &str, max_upload_bytes: u64) -> Result<HttpFiles> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| RequestorError::io(format!("file server address {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| RequestorError::io("file server address", e))?;
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let serving = routes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let routes = serving.clone();
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, routes, max_upload_bytes).await {
                        tracing::debug!(%error, "file server connection failed");
                    }
                });
            }
        });
        Ok(HttpFiles {
            base_url: format!("http://{local}"),
            routes,
            task,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn register(&self, upload: bool, path: &Path) -> String {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut token = [0u8; TOKEN_BYTES];
        rand::thread_rng().fill_bytes(&mut token);
        let key = format!("{}/{name}", hex::encode(token));
        let mut routes = lock_routes(&self.routes);
        let kind = if upload {
            routes.receiving.insert(
                key.clone(),
                UploadSlot {
                    dest: path.to_path_buf(),
                    state: SlotState::Open,
                },
            );
            "u"
        } else {
            routes.published.insert(key.clone(), path.to_path_buf());
            "f"
        };
        format!("{}/{kind}/{key}", self.base_url)
    }

    /// Stop serving `url`; true when it was served.
    fn unregister(&self, url: &str) -> bool {
        let Some(path) = url.strip_prefix(&self.base_url) else {
            return false;
        };
        let Some((kind, key)) = path.trim_start_matches('/').split_once('/') else {
            return false;
        };
        let mut routes = lock_routes(&self.routes);
        match kind {
            "u" => routes.receiving.remove(key).is_some(),
            "f" => routes.published.remove(key).is_some(),
            _ => false,
        }
    }
}

impl Drop for HttpFiles {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl FileTransfer for HttpFiles {
    async fn publish(&self, path: &Path) -> Result<String> {
        tokio::fs::metadata(path)
            .await
            .map_err(|e| RequestorError::io(path, e))?;
        Ok(self.register(false, path))
    }

    async fn receive(&self, dest: &Path) -> Result<String> {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| RequestorError::io(parent, e))?;
        }
        Ok(self.register(true, dest))
    }

    async fn close(&self, url: &str) {
        if self.unregister(url) {
            tracing::debug!(%url, "file server slot closed");
        }
    }
}

/// gftp over the local daemon's bus: inputs are published as
/// `gftp://<nodeId>/<sha3>`, outputs arrive in upload slots.
pub struct GftpFiles {
    gftp: golem_gftp::Gftp,
    /// Open upload slots, kept until the session ends.
    slots: Mutex<Vec<golem_gftp::Receiving>>,
}

impl GftpFiles {
    /// Connect to the daemon's bus socket (`<data-dir>/bus.sock`).
    pub async fn connect(bus_socket: &Path) -> Result<GftpFiles> {
        let gftp = golem_gftp::Gftp::connect(bus_socket)
            .await
            .map_err(|error| RequestorError::Usage(format!(
                "cannot use gftp over {}: {error} (is the daemon running on this machine? check --bus-socket, or use --package-transport http)",
                bus_socket.display()
            )))?;
        Ok(GftpFiles {
            gftp,
            slots: Mutex::default(),
        })
    }
}

/// The bus socket the daemon behind `client` names (`GET /local-api/v1/bus`,
/// answered to callers on its machine only), for gftp without `--bus-socket`.
pub async fn daemon_bus_socket(client: &golem_client::GolemClient) -> Result<PathBuf> {
    match client.bus_info().await {
        Ok(info) => Ok(PathBuf::from(info.bus_socket)),
        Err(error) => Err(RequestorError::Usage(format!(
            "package-transport gftp (the default) publishes task packages through the daemon's \
             bus socket, and the daemon at {} did not name one ({error}); run golem-requestor on \
             the daemon's machine, pass --bus-socket <data-dir>/bus.sock, or choose \
             --package-transport http with GOLEM_REQUESTOR_FILES_ADDR on an address the \
             providers reach",
            client.base_url()
        ))),
    }
}

#[async_trait::async_trait]
impl FileTransfer for GftpFiles {
    async fn publish(&self, path: &Path) -> Result<String> {
        let url = self.gftp.publish(path).await.map_err(|error| {
            RequestorError::Usage(format!(
                "cannot publish {} over gftp: {error}",
                path.display()
            ))
        })?;
        Ok(url.to_string())
    }

    async fn receive(&self, dest: &Path) -> Result<String> {
        let slot = self.gftp.receive(dest).await.map_err(|error| {
            RequestorError::Usage(format!(
                "cannot receive {} over gftp: {error}",
                dest.display()
            ))
        })?;
        let url = slot.url.to_string();
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
        Ok(url)
    }

    async fn close(&self, url: &str) {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let position = slots.iter().position(|slot| slot.url.to_string() == url);
            position.map(|position| slots.swap_remove(position))
        };
        if let Some(slot) = slot {
            if let Err(error) = self.gftp.close(&slot.url).await {
                tracing::debug!(%url, %error, "cannot close the gftp upload slot");
            }
        }
    }
}

const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A bodiless answer that closes the connection.
fn status_only(status: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes()
}

async fn serve(
    mut stream: TcpStream,
    routes: Arc<Mutex<Routes>>,
    max_upload_bytes: u64,
) -> std::io::Result<()> {
    // Header and body go in separate writes: without this, Nagle's algorithm
    // and the peer's delayed ACK stall every small file by ~40 ms.
    stream.set_nodelay(true)?;
    let mut request = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let header_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&request[..header_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let header = |wanted: &str| {
        head.lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim().to_string())
    };
    let (kind, key) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    if method == "PUT" && kind == "u" {
        let length = header("content-length").and_then(|value| value.parse::<u64>().ok());
        let body = &request[header_end..];
        return receive_upload(&mut stream, &routes, key, length, body, max_upload_bytes).await;
    }
    let target = {
        let routes = lock_routes(&routes);
        match kind {
            "f" => routes.published.get(key).cloned(),
            "u" => routes.receiving.get(key).map(|slot| slot.dest.clone()),
            _ => None,
        }
    };
    let Some(target) = target else {
        return stream.write_all(NOT_FOUND).await;
    };
    if !(method == "GET" || method == "HEAD") || kind != "f" {
        return stream
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    }
    let Ok(mut file) = tokio::fs::File::open(&target).await else {
        return stream.write_all(NOT_FOUND).await;
    };
    let size = file.metadata().await?.len();
    let start = header("range")
        .and_then(|value| {
            value
                .strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<u64>()
                .ok()
        })
        .map(|start| start.min(size));
    let status = if start.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let start = start.unwrap_or(0);
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        size - start
    );
    stream.write_all(head.as_bytes()).await?;
    if method == "GET" {
        file.seek(std::io::SeekFrom::Start(start)).await?;
        tokio::io::copy(&mut file, &mut stream).await?;
    }
    stream.shutdown().await
}

/// One PUT into the upload slot `key`: claimed first (a concurrent or later
/// PUT is refused), written to a partial file, renamed into place when all
/// `length` bytes arrived and the slot is still open; a refused or broken
/// upload leaves the slot open for a retry.
async fn receive_upload(
    stream: &mut TcpStream,
    routes: &Mutex<Routes>,
    key: &str,
    length: Option<u64>,
    already_read: &[u8],
    max_upload_bytes: u64,
) -> std::io::Result<()> {
    let claimed = {
        let mut routes = lock_routes(routes);
        match routes.receiving.get_mut(key) {
            None => Err(NOT_FOUND.to_vec()),
            Some(slot) => match slot.state {
                SlotState::Open => match length {
                    None => Err(status_only("411 Length Required")),
                    Some(length) if length > max_upload_bytes => {
                        Err(status_only("413 Payload Too Large"))
                    }
                    Some(length) => {
                        slot.state = SlotState::Receiving;
                        Ok((slot.dest.clone(), length))
                    }
                },
                SlotState::Receiving => Err(status_only("409 Conflict")),
                SlotState::Used => Err(status_only("410 Gone")),
            },
        }
    };
    let (target, length) = match claimed {
        Ok(claimed) => claimed,
        Err(answer) => return stream.write_all(&answer).await,
    };
    let set_state = |state: Option<SlotState>| {
        let mut routes = lock_routes(routes);
        match (routes.receiving.get_mut(key), state) {
            (Some(slot), Some(state)) => {
                slot.state = state;
                true
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    };
    let partial = target.with_extension("partial");
    let written = write_body(stream, &partial, length, already_read).await;
    match written {
        Ok(written) if written == length => {}
        outcome => {
            let _ = tokio::fs::remove_file(&partial).await;
            set_state(Some(SlotState::Open));
            outcome?;
            return stream.write_all(&status_only("400 Bad Request")).await;
        }
    }
    // The slot may have been closed while the body arrived.
    if !set_state(None) {
        let _ = tokio::fs::remove_file(&partial).await;
        return stream.write_all(&status_only("410 Gone")).await;
    }
    if let Err(error) = tokio::fs::rename(&partial, &target).await {
        set_state(Some(SlotState::Open));
        return Err(error);
    }
    set_state(Some(SlotState::Used));
    stream.write_all(&status_only("201 Created")).await
}

/// Write `length` bytes of body (the first of them `already_read`) to
/// `path`; returns how many arrived before the peer stopped.
async fn write_body(
    stream: &mut TcpStream,
    path: &Path,
    length: u64,
    already_read: &[u8],
) -> std::io::Result<u64> {
    let mut file = tokio::fs::File::create(path).await?;
    let first = &already_read[..already_read
        .len()
        .min(usize::try_from(length).unwrap_or(usize::MAX))];
    file.write_all(first).await?;
    let mut written = first.len() as u64;
    let mut buffer = vec![0u8; 64 * 1024];
    while written < length {
        let wanted = usize::try_from(length - written)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let read = stream.read(&mut buffer[..wanted]).await?;
        if read == 0 {
            break;
        }
        file.write_all(&buffer[..read]).await?;
        written += read as u64;
    }
    file.flush().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_published_files_and_stores_uploads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("in put.txt");
        std::fs::write(&input, "0123456789").expect("write");
        let files = HttpFiles::start("127.0.0.1:0", DEFAULT_MAX_UPLOAD_BYTES)
            .await
            .expect("server");
        let url = files.publish(&input).await.expect("publish");
        assert!(url.ends_with("/in_put.txt"), "{url}");
        let http = reqwest::Client::new();
        let body = http
            .get(&url)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        assert_eq!(body, "0123456789");
        let tail = http
            .get(&url)
            .header("range", "bytes=7-")
            .send()
            .await
            .expect("get");
        assert_eq!(tail.status(), 206);
        assert_eq!(tail.text().await.expect("body"), "789");

        let dest = dir.path().join("out/result.txt");
        let upload = files.receive(&dest).await.expect("receive");
        let response = http
            .put(&upload)
            .body("uploaded")
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), 201);
        assert_eq!(std::fs::read_to_string(&dest).expect("stored"), "uploaded");
        // Uploading to a download URL or fetching an unknown one is refused.
        assert_eq!(
            http.put(&url).body("x").send().await.expect("put").status(),
            405
        );
        let unknown = format!("{}/f/999/nothing", files.base_url());
        assert_eq!(http.get(&unknown).send().await.expect("get").status(), 404);
    }

    /// The token of a file-server URL: the path segment before the name.
    fn token(url: &str) -> String {
        url.rsplit('/').nth(1).unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn urls_carry_128_random_bits_and_sequential_guesses_find_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("secret.txt");
        std::fs::write(&input, "secret").expect("write");
        let files = HttpFiles::start("127.0.0.1:0", DEFAULT_MAX_UPLOAD_BYTES)
            .await
            .expect("server");
        let first = files.publish(&input).await.expect("publish");
        let second = files.publish(&input).await.expect("publish");
        let upload = files
            .receive(&dir.path().join("out"))
            .await
            .expect("receive");
        let tokens = [token(&first), token(&second), token(&upload)];
        for token in &tokens {
            assert_eq!(token.len(), 2 * TOKEN_BYTES, "{token}");
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        }
        assert_ne!(tokens[0], tokens[1]);
        assert_ne!(tokens[1], tokens[2]);
        let http = reqwest::Client::new();
        for guess in 0..4 {
            for kind in ["f", "u"] {
                let url = format!("{}/{kind}/{guess}/secret.txt", files.base_url());
                assert_eq!(http.get(&url).send().await.expect("get").status(), 404);
            }
        }
    }

    #[tokio::test]
    async fn an_upload_slot_takes_one_upload_within_the_limit_until_closed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = HttpFiles::start("127.0.0.1:0", 16).await.expect("server");
        let http = reqwest::Client::new();
        let dest = dir.path().join("result.txt");
        let upload = files.receive(&dest).await.expect("receive");

        // Beyond the limit: 413, nothing stored, the slot stays open.
        let response = http
            .put(&upload)
            .body("x".repeat(17))
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), 413);
        assert!(!dest.exists());

        let response = http
            .put(&upload)
            .body("the result")
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), 201);
        // A second PUT to the same URL cannot replace it.
        let response = http.put(&upload).body("forged").send().await.expect("put");
        assert_eq!(response.status(), 410);
        assert_eq!(
            std::fs::read_to_string(&dest).expect("stored"),
            "the result"
        );

        // A closed slot is gone: 404, like any unknown URL.
        let other = files
            .receive(&dir.path().join("other.txt"))
            .await
            .expect("receive");
        files.close(&other).await;
        let response = http.put(&other).body("late").send().await.expect("put");
        assert_eq!(response.status(), 404);
        assert!(!dir.path().join("other.txt").exists());

        // No Content-Length, no upload (411).
        let open = files
            .receive(&dir.path().join("chunked.txt"))
            .await
            .expect("receive");
        let path = open
            .strip_prefix(files.base_url())
            .unwrap_or_default()
            .to_string();
        let address = files.base_url().trim_start_matches("http://").to_string();
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(format!("PUT {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    }
}
