//! Moving files between the requestor and providers, behind [`FileTransfer`]:
//! `publish` gives a URL a provider's exe unit can `transfer` from, `receive`
//! a URL it can upload to. [`HttpFiles`] does it with a small HTTP/1.1 server
//! on the requestor (GET/HEAD with `Range: bytes=N-`, PUT with Content-Length);
//! [`GftpFiles`] does it with gftp over the daemon's bus socket
//! (`gftp://<nodeId>/<hash>` URLs), for requestors on the daemon's machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::{RequestorError, Result};

/// Where providers fetch inputs and put outputs.
#[async_trait::async_trait]
pub trait FileTransfer: Send + Sync {
    /// A URL serving the local file `path` (its file name is kept last).
    async fn publish(&self, path: &Path) -> Result<String>;
    /// A URL that stores an upload at the local path `dest`.
    async fn receive(&self, dest: &Path) -> Result<String>;
}

#[derive(Default)]
struct Routes {
    next: u64,
    published: HashMap<String, PathBuf>,
    receiving: HashMap<String, PathBuf>,
}

/// The HTTP file server; stops when dropped.
pub struct HttpFiles {
    base_url: String,
    routes: Arc<Mutex<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpFiles {
    /// Serve on `addr` (e.g. `127.0.0.1:0`).
    pub async fn start(addr: &str) -> Result<HttpFiles> {
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
                    if let Err(error) = serve(stream, routes).await {
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
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.next += 1;
        let key = format!("{}/{name}", routes.next);
        let (kind, table) = if upload {
            ("u", &mut routes.receiving)
        } else {
            ("f", &mut routes.published)
        };
        table.insert(key.clone(), path.to_path_buf());
        format!("{}/{kind}/{key}", self.base_url)
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
                "cannot use gftp over {}: {error} (is the daemon running on this machine? check --bus-socket)",
                bus_socket.display()
            )))?;
        Ok(GftpFiles {
            gftp,
            slots: Mutex::default(),
        })
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
}

const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

async fn serve(mut stream: TcpStream, routes: Arc<Mutex<Routes>>) -> std::io::Result<()> {
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
    let target = {
        let routes = routes.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            "f" => routes.published.get(key).cloned(),
            "u" => routes.receiving.get(key).cloned(),
            _ => None,
        }
    };
    let Some(target) = target else {
        return stream.write_all(NOT_FOUND).await;
    };
    if method == "PUT" && kind == "u" {
        let length: u64 = header("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let partial = target.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await?;
        let body = &request[header_end..];
        file.write_all(body).await?;
        let mut written = body.len() as u64;
        while written < length {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            file.write_all(&buffer[..read]).await?;
            written += read as u64;
        }
        file.flush().await?;
        drop(file);
        if written < length {
            let _ = tokio::fs::remove_file(&partial).await;
            return stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
        tokio::fs::rename(&partial, &target).await?;
        return stream
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_published_files_and_stores_uploads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let input = dir.path().join("in put.txt");
        std::fs::write(&input, "0123456789").expect("write");
        let files = HttpFiles::start("127.0.0.1:0").await.expect("server");
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
}
