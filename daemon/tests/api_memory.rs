//! What the daemon still has allocated after a burst of abandoned long-polls
//! (issue 21, "RSS back within 1 MiB"): a daemon library on port 0 with one
//! API worker gets 300 long-polls over raw TCP whose clients then all leave;
//! the bytes still allocated afterwards, counted by dhat (this test binary's
//! global allocator), must stay small. Before the fix actix's per-worker
//! pools kept each finished request's head with a 16-slot header map and its
//! connection's whole 8 KiB read buffer (~3.7 MiB for 256 pooled heads).
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::{Duration, Instant};

use golem_daemon::config::DaemonConfig;
use golem_daemon::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const APP_KEY: &str = "memory-test-key";
const POLLS: usize = 300;
/// Bytes the burst may leave allocated: the pooled heads (2 × 128 on one
/// worker) at ~1 KiB each, plus room for the services' own background work.
const LEFT_AFTER_BURST: i64 = 1024 * 1024;

async fn send(node: &Node, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(node.api_addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {APP_KEY}\r\nAccept: application/json\r\nUser-Agent: memory-test\r\n\r\n",
        node.api_addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Connections on the API port the daemon has not closed yet (ESTABLISHED,
/// CLOSE-WAIT or LAST-ACK on its side), from /proc/net/tcp.
fn daemon_side_connections(port: u16) -> usize {
    let local = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3
                && fields[1].ends_with(&local)
                && ["01", "08", "09"].contains(&fields[3])
        })
        .count()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn allocated_bytes() -> i64 {
    dhat::HeapStats::get().curr_bytes as i64
}

#[actix_rt::test]
async fn abandoned_long_polls_leave_little_allocated() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let dir = tempfile::tempdir().unwrap();
    let mut config = DaemonConfig {
        data_dir: dir.path().to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_workers: 1,
        autoconf_appkey: Some(APP_KEY.into()),
        ..DaemonConfig::default()
    };
    config.api.max_long_polls_per_key = POLLS;
    let node = golem_daemon::start(config).await.unwrap();
    let port = node.api_addr.port();
    // Every route of the burst answered once, so what they allocate once
    // (caches, lazily built state) is in the baseline.
    let paths = [
        "/payment-api/v1/debitNoteEvents",
        "/payment-api/v1/invoiceEvents",
        "/market-api/v1/agreementEvents",
    ];
    for path in paths {
        let mut stream = send(&node, &format!("{path}?timeout=0")).await;
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200", "{path}");
    }
    wait_until("warm-up connections closed", || {
        daemon_side_connections(port) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = allocated_bytes();

    let mut clients = Vec::new();
    for index in 0..POLLS {
        let path = paths[index % paths.len()];
        clients.push(send(&node, &format!("{path}?timeout=60")).await);
    }
    wait_until("every poll open", || node.long_polls.open() == POLLS).await;
    let while_open = allocated_bytes();
    drop(clients);
    wait_until("every poll ended", || node.long_polls.open() == 0).await;
    wait_until("every connection closed", || {
        daemon_side_connections(port) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = allocated_bytes();

    eprintln!(
        "allocated: {before} before, {while_open} with {POLLS} polls open, {after} after (+{} bytes)",
        after - before
    );
    assert!(
        after - before < LEFT_AFTER_BURST,
        "{POLLS} abandoned long-polls left {} bytes allocated (at most {LEFT_AFTER_BURST})",
        after - before
    );
    node.stop().await;
}
