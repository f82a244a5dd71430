//! [`ReplyTrap`]: a loopback TCP proxy in front of a daemon's REST API that
//! swallows the answer to one request. The daemon does the work; its client
//! never hears of it. This makes a crash window deterministic — the daemon has
//! done what the client asked, the client has not recorded it yet — instead of
//! racing a signal against the client.
//!
//! It works on HTTP/1.1 bytes, not on parsed messages: a client sends its next
//! request on a connection only after reading the previous answer in full
//! (reqwest does not pipeline), so once the trigger's request line has passed
//! on a connection, every byte the daemon sends back on it answers that request
//! or a later one, and none of it is forwarded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// A running trap; stops, with every connection it relays, when dropped.
///
/// It serves on a thread and runtime of its own: the harness waits for
/// processes synchronously (e.g. [`ProviderAgent::start`](crate::provider::ProviderAgent::start)),
/// which would stall a trap on the test's own runtime.
pub struct ReplyTrap {
    /// Where clients connect instead of the daemon (`http://127.0.0.1:<port>`).
    pub url: String,
    /// `host:port` of the daemon, once [`forward_to`](Self::forward_to) named it.
    upstream: Arc<Mutex<Option<String>>>,
    tripped: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
}

impl ReplyTrap {
    /// Listen on a free loopback port. The first request whose request line
    /// is `request_line` (e.g. `POST /payment-api/v1/invoices HTTP/1.1`)
    /// reaches the daemon; nothing the daemon answers on that connection
    /// reaches the client. Every other connection is relayed both ways.
    pub fn start(request_line: &str) -> anyhow::Result<ReplyTrap> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let upstream: Arc<Mutex<Option<String>>> = Arc::default();
        let (tripped_sender, tripped) = watch::channel(false);
        let (stop, stopped) = oneshot::channel::<()>();
        let trigger = format!("{request_line}\r\n").into_bytes();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let serve_upstream = upstream.clone();
        std::thread::Builder::new()
            .name("reply-trap".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = serve(listener, serve_upstream, trigger, tripped_sender) => {}
                    }
                });
                // Dropping the runtime ends every relay it still runs.
            })?;
        Ok(ReplyTrap {
            url,
            upstream,
            tripped,
            stop: Some(stop),
        })
    }

    /// Relay connections to the daemon whose API is at `api_url` (`http://host:port`).
    pub fn forward_to(&self, api_url: &str) {
        let address = api_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        *self
            .upstream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(address);
    }

    /// Wait until the trapped request has been passed to the daemon.
    pub async fn tripped(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut tripped = self.tripped.clone();
        tokio::time::timeout(timeout, tripped.wait_for(|tripped| *tripped))
            .await
            .map_err(|_| anyhow!("no request line matched the trap within {timeout:?}"))?
            .map_err(|_| anyhow!("the trap stopped"))?;
        Ok(())
    }
}

impl Drop for ReplyTrap {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Accept clients and relay each to the upstream named then.
async fn serve(
    listener: TcpListener,
    upstream: Arc<Mutex<Option<String>>>,
    trigger: Vec<u8>,
    tripped: watch::Sender<bool>,
) {
    let armed = Arc::new(AtomicBool::new(true));
    let tripped = Arc::new(tripped);
    let trigger = Arc::new(trigger);
    while let Ok((client, _)) = listener.accept().await {
        let target = upstream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        // Not told where the daemon is yet: the client sees the connection close.
        let Some(target) = target else { continue };
        let (armed, tripped, trigger) = (armed.clone(), tripped.clone(), trigger.clone());
        tokio::spawn(async move {
            let _ = relay(client, &target, &trigger, &armed, &tripped).await;
        });
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Relay one client connection to `target` until either side closes.
async fn relay(
    client: TcpStream,
    target: &str,
    trigger: &[u8],
    armed: &AtomicBool,
    tripped: &watch::Sender<bool>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(target).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let holding = AtomicBool::new(false);
    let requests = async {
        let mut buffer = vec![0u8; 16 * 1024];
        // The end of what came before, so a request line split across reads is seen.
        let mut window: Vec<u8> = Vec::new();
        loop {
            let read = client_read.read(&mut buffer).await?;
            if read == 0 {
                return server_write.shutdown().await;
            }
            let chunk = &buffer[..read];
            window.extend_from_slice(chunk);
            let trapped = !holding.load(Ordering::SeqCst)
                && contains(&window, trigger)
                && armed.swap(false, Ordering::SeqCst);
            if trapped {
                // Set before the request can be complete at the daemon, so
                // its answer can only come after.
                holding.store(true, Ordering::SeqCst);
            }
            let keep_from = window.len().saturating_sub(trigger.len());
            window.drain(..keep_from);
            server_write.write_all(chunk).await?;
            if trapped {
                tripped.send_replace(true);
            }
        }
    };
    let replies = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = server_read.read(&mut buffer).await?;
            if read == 0 {
                return client_write.shutdown().await;
            }
            if holding.load(Ordering::SeqCst) {
                continue; // swallowed
            }
            client_write.write_all(&buffer[..read]).await?;
        }
    };
    tokio::try_join!(requests, replies)?;
    Ok(())
}
