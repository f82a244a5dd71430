//! The `gftp server` protocol that yapapi speaks: one JSON-RPC 2.0 request per
//! line on stdin, one response per line on stdout, with params by name:
//!
//! | method | params | result |
//! |---|---|---|
//! | `version` | – | `"0.13.0 (golem-rs x.y.z)"` (yapapi reads the first word as semver) |
//! | `publish` | `{files: [path]}` | `[{file, url}]` |
//! | `receive` | `{output_file}` | `{file, url}` (the upload lands later) |
//! | `close` | `{urls: [url]}` | `["ok" \| "error"]` per url |
//! | `download` | `{url, output_file}` | `{file, url}` once downloaded and verified |
//! | `upload` | `{file, url}` | `{file, url}` once uploaded and verified by the receiver |
//! | `shutdown` | – | `"ok"`, then the server exits |
//!
//! Errors are `{"error": {"code", "message"}}` with the JSON-RPC codes. The bus
//! connection is opened on the first method that needs it, so `version`
//! answers even when no daemon runs. Requests run concurrently.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OnceCell};

use crate::error::GftpError;
use crate::service::{Gftp, TransferConfig};
use golem_model::gftp::GftpUrl;

/// What `version` answers: the original gftp version whose behaviour this
/// matches (yapapi uses `close` from 0.7.3 on), then ours.
pub const VERSION: &str = concat!("0.13.0 (golem-rs ", env!("CARGO_PKG_VERSION"), ")");

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const SERVER_ERROR: i64 = -32000;

struct RpcError {
    code: i64,
    message: String,
}

impl From<GftpError> for RpcError {
    fn from(error: GftpError) -> Self {
        RpcError {
            code: SERVER_ERROR,
            message: error.to_string(),
        }
    }
}

fn invalid_params(message: impl Into<String>) -> RpcError {
    RpcError {
        code: INVALID_PARAMS,
        message: message.into(),
    }
}

struct Server {
    bus_socket: PathBuf,
    transfer: TransferConfig,
    gftp: OnceCell<Gftp>,
}

impl Server {
    async fn gftp(&self) -> Result<&Gftp, GftpError> {
        self.gftp
            .get_or_try_init(|| async {
                Ok::<_, GftpError>(
                    Gftp::connect(&self.bus_socket)
                        .await?
                        .with_config(self.transfer),
                )
            })
            .await
    }
}

/// Serve requests from `input` until EOF or `shutdown`; answers go to `output`.
pub async fn serve<R, W>(
    input: R,
    output: W,
    bus_socket: &Path,
    transfer: TransferConfig,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let server = Arc::new(Server {
        bus_socket: bus_socket.to_path_buf(),
        transfer,
        gftp: OnceCell::new(),
    });
    let (lines, mut to_write) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(line) = to_write.recv().await {
            output.write_all(line.as_bytes()).await?;
            output.write_all(b"\n").await?;
            output.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let (shutdown_sender, mut shutdown) = mpsc::channel::<()>(1);
    let mut input = input.lines();
    loop {
        let line = tokio::select! {
            _ = shutdown.recv() => break,
            line = input.next_line() => line?,
        };
        let Some(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(error) => {
                let _ = lines.send(error_line(
                    &Value::Null,
                    PARSE_ERROR,
                    &format!("parse error: {error}"),
                ));
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let method = match (request.get("jsonrpc"), request.get("method")) {
            (Some(Value::String(version)), Some(Value::String(method))) if version == "2.0" => {
                method.clone()
            }
            _ => {
                let message = "invalid request: expected {\"jsonrpc\": \"2.0\", \"method\": ..., \"params\": {...}, \"id\": ...}";
                let _ = lines.send(error_line(&id, INVALID_REQUEST, message));
                continue;
            }
        };
        let params = request.get("params").cloned().unwrap_or(json!({}));
        let (server, lines, shutdown_sender) =
            (server.clone(), lines.clone(), shutdown_sender.clone());
        tokio::spawn(async move {
            tracing::debug!(%method, "rpc request");
            let answer = execute(&server, &method, params).await;
            let line = match answer {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
                Err(error) => error_line(&id, error.code, &error.message),
            };
            let _ = lines.send(line);
            if method == "shutdown" {
                let _ = shutdown_sender.send(()).await;
            }
        });
    }
    drop(lines);
    drop(server);
    writer.await.map_err(std::io::Error::other)??;
    Ok(())
}

fn error_line(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

fn params<T: for<'de> Deserialize<'de>>(method: &str, params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params)
        .map_err(|error| invalid_params(format!("invalid params of {method}: {error}")))
}

fn parse_url(text: &str) -> Result<GftpUrl, RpcError> {
    text.parse::<GftpUrl>()
        .map_err(|error| invalid_params(error.to_string()))
}

#[derive(Deserialize)]
struct PublishParams {
    files: Vec<PathBuf>,
}
#[derive(Deserialize)]
struct ReceiveParams {
    output_file: PathBuf,
}
#[derive(Deserialize)]
struct CloseParams {
    urls: Vec<String>,
}
#[derive(Deserialize)]
struct DownloadParams {
    url: String,
    output_file: PathBuf,
}
#[derive(Deserialize)]
struct UploadParams {
    file: PathBuf,
    url: String,
}

fn file_result(file: &Path, url: &GftpUrl) -> Value {
    json!({"file": file, "url": url.to_string()})
}

async fn execute(server: &Server, method: &str, raw: Value) -> Result<Value, RpcError> {
    match method {
        "version" => Ok(json!(VERSION)),
        "shutdown" => Ok(json!("ok")),
        "publish" => {
            let PublishParams { files } = params(method, raw)?;
            if files.is_empty() {
                return Err(invalid_params("publish needs at least one file in \"files\""));
            }
            let gftp = server.gftp().await?;
            let mut published = Vec::with_capacity(files.len());
            for file in files {
                let url = gftp.publish(&file).await?;
                published.push(file_result(&file, &url));
            }
            Ok(Value::Array(published))
        }
        "receive" => {
            let ReceiveParams { output_file } = params(method, raw)?;
            let receiving = server.gftp().await?.receive(&output_file).await?;
            Ok(file_result(&output_file, &receiving.url))
        }
        "close" => {
            let CloseParams { urls } = params(method, raw)?;
            if urls.is_empty() {
                return Err(invalid_params("close needs at least one url in \"urls\""));
            }
            let gftp = server.gftp().await?;
            let mut statuses = Vec::with_capacity(urls.len());
            for url in urls {
                let closed = match url.parse::<GftpUrl>() {
                    Ok(url) => gftp.close(&url).await.unwrap_or(false),
                    Err(_) => false,
                };
                statuses.push(json!(if closed { "ok" } else { "error" }));
            }
            Ok(Value::Array(statuses))
        }
        "download" => {
            let DownloadParams { url, output_file } = params(method, raw)?;
            let url = parse_url(&url)?;
            server.gftp().await?.download(&url, &output_file).await?;
            Ok(file_result(&output_file, &url))
        }
        "upload" => {
            let UploadParams { file, url } = params(method, raw)?;
            let url = parse_url(&url)?;
            server.gftp().await?.upload(&file, &url).await?;
            Ok(file_result(&file, &url))
        }
        other => Err(RpcError {
            code: METHOD_NOT_FOUND,
            message: format!(
                "unknown method {other:?}: use version, publish, receive, close, download, upload or shutdown"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn talk(requests: &str) -> Vec<Value> {
        let (mut to_server, server_input) = tokio::io::duplex(64 * 1024);
        let (server_output, from_server) = tokio::io::duplex(64 * 1024);
        let serving = tokio::spawn(async move {
            serve(
                tokio::io::BufReader::new(server_input),
                server_output,
                Path::new("/nonexistent/bus.sock"),
                TransferConfig::default(),
            )
            .await
        });
        to_server.write_all(requests.as_bytes()).await.unwrap();
        drop(to_server);
        let mut replies = Vec::new();
        let mut reader = tokio::io::BufReader::new(from_server).lines();
        while let Some(line) = reader.next_line().await.unwrap() {
            replies.push(serde_json::from_str(&line).unwrap());
        }
        serving.await.unwrap().unwrap();
        replies
    }

    #[tokio::test]
    async fn answers_version_without_a_daemon_and_explains_errors() {
        let replies = talk(concat!(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"version\"}\n",
            "not json\n",
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"fly\",\"params\":{}}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"publish\",\"params\":{\"files\":[\"/x\"]}}\n",
            "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"download\",\"params\":{\"url\":\"http://x\",\"output_file\":\"/tmp/x\"}}\n",
        ))
        .await;
        let by_id = |id: i64| {
            replies
                .iter()
                .find(|reply| reply["id"] == json!(id))
                .unwrap()
                .clone()
        };
        assert_eq!(by_id(1)["result"], json!(VERSION));
        let parse = replies.iter().find(|reply| reply["id"].is_null()).unwrap();
        assert_eq!(parse["error"]["code"], json!(PARSE_ERROR));
        assert_eq!(by_id(2)["error"]["code"], json!(METHOD_NOT_FOUND));
        let no_daemon = by_id(3)["error"]["message"].as_str().unwrap().to_string();
        assert!(no_daemon.contains("is the daemon running"), "{no_daemon}");
        assert_eq!(by_id(4)["error"]["code"], json!(INVALID_PARAMS));
    }
}
