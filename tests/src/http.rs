//! A small static file server on loopback for tests: serves a directory over
//! real HTTP/1.1 (GET and HEAD, with `Range: bytes=N-` for resumed downloads,
//! and PUT to store a file), the way providers fetch task packages and images
//! from requestors and exe units upload their outputs. Also [`JsonApi`], a raw
//! REST caller for tests that check exact bodies and status codes.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running file server; stops when dropped.
pub struct FileServer {
    pub base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Serve `root` on `127.0.0.1:<free port>`.
    pub async fn start(root: PathBuf) -> anyhow::Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let root = root.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, root).await;
                });
            }
        });
        Ok(FileServer { base_url, task })
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, root: PathBuf) -> anyhow::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 || request.len() > 64 * 1024 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let header_end = request
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or(0)
        + 4;
    let text = String::from_utf8_lossy(&request[..header_end]).into_owned();
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    let range_start = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("range"))
        .and_then(|(_, value)| {
            value
                .trim()
                .strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        });
    let name = path.trim_start_matches('/');
    if method == "PUT" {
        let length = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(header, _)| header.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = request[header_end..].to_vec();
        while body.len() < length {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&buffer[..read]);
        }
        if name.is_empty() || name.contains("..") {
            stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await?;
            return Ok(());
        }
        tokio::fs::write(root.join(name), &body).await?;
        stream
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let file = if name.is_empty() || name.contains("..") {
        None
    } else {
        tokio::fs::read(root.join(name)).await.ok()
    };
    let Some(content) = file else {
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let start = range_start.unwrap_or(0).min(content.len());
    let status = if range_start.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let header = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        content.len() - start
    );
    stream.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(&content[start..]).await?;
    }
    stream.shutdown().await?;
    Ok(())
}

/// Raw JSON calls to one API of a daemon (`base` includes the API prefix,
/// e.g. `http://127.0.0.1:7465/payment-api/v1`) with an app-key: the status
/// and the body (`Null` when it is not JSON), for asserting exact answers.
pub struct JsonApi {
    http: reqwest::Client,
    base: String,
    app_key: String,
}

impl JsonApi {
    pub fn new(base: impl Into<String>, app_key: &str) -> JsonApi {
        JsonApi {
            http: reqwest::Client::new(),
            base: base.into(),
            app_key: app_key.to_string(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.app_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the daemon answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a whole response body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}
