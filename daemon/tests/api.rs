//! Service tests of the REST surface itself (issue 21): long-polls that end
//! when their client leaves, the per-app-key limit of open long-polls, the
//! timeout caps, CORS, and the operations added to the Payment and Activity
//! APIs. Each drives a daemon library started on port 0 over real TCP.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::{Duration, Instant};

use golem_daemon::config::DaemonConfig;
use golem_daemon::Node;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const APP_KEY: &str = "api-test-key";

fn test_config(data_dir: &std::path::Path) -> DaemonConfig {
    DaemonConfig {
        data_dir: data_dir.to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_workers: 1,
        autoconf_appkey: Some(APP_KEY.into()),
        ..DaemonConfig::default()
    }
}

fn base(node: &Node) -> String {
    format!("http://{}", node.api_addr)
}

/// Open a long-poll over a raw TCP connection (no client library that might
/// keep the connection in a pool) and return the connection.
async fn open_poll(node: &Node, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(node.api_addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {APP_KEY}\r\nAccept: application/json\r\n\r\n",
        node.api_addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Wait until the daemon counts `expected` open long-polls; panics after `within`.
async fn wait_for_open(node: &Node, expected: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let open = node.long_polls.open();
        if open == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} long-polls open, expected {expected} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// TCP connections to `port` the daemon still holds in CLOSE-WAIT (the peer
/// left, the daemon has not closed its side), from /proc/net/tcp.
fn close_wait_on(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == "08"
                })
                .count()
        })
        .sum()
}

#[actix_rt::test]
async fn a_client_that_leaves_ends_its_long_poll_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    let demand: String = http
        .post(format!("{}/market-api/v1/demands", base(&node)))
        .bearer_auth(APP_KEY)
        .json(&json!({"properties": {"golem.node.debug.subnet": "api-test"}, "constraints": "()"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let scan: String = http
        .post(format!("{}/market-api/v1/scan", base(&node)))
        .bearer_auth(APP_KEY)
        .json(&json!({"type": "offer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let polls = [
        format!("/market-api/v1/demands/{demand}/events?timeout=60"),
        "/market-api/v1/agreementEvents?timeout=60".to_string(),
        format!("/market-api/v1/scan/{scan}/events?timeout=60"),
        "/activity-api/v1/events?timeout=60".to_string(),
        "/payment-api/v1/debitNoteEvents?timeout=60".to_string(),
        "/payment-api/v1/invoiceEvents?timeout=60".to_string(),
    ];
    let port = node.api_addr.port();
    for (round, path) in polls.iter().enumerate() {
        let stream = open_poll(&node, path).await;
        wait_for_open(&node, 1, Duration::from_secs(5)).await;
        if round % 2 == 0 {
            // An orderly close (FIN), as a client that gives up does.
            drop(stream);
        } else {
            // An abrupt one (RST).
            stream.set_zero_linger().unwrap();
            drop(stream);
        }
        let left = Instant::now();
        wait_for_open(&node, 0, Duration::from_secs(1)).await;
        eprintln!("{path}: ended {:?} after the client left", left.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            close_wait_on(port),
            0,
            "{path}: a socket is left in CLOSE-WAIT"
        );
    }

    // Many at once, all abandoned.
    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(open_poll(&node, "/payment-api/v1/invoiceEvents?timeout=60").await);
    }
    wait_for_open(&node, 20, Duration::from_secs(5)).await;
    drop(streams);
    wait_for_open(&node, 0, Duration::from_secs(1)).await;

    // A poll whose client stays is still answered at its timeout.
    let started = Instant::now();
    let answer = http
        .get(format!(
            "{}/payment-api/v1/invoiceEvents?timeout=0.3",
            base(&node)
        ))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(node.long_polls.open(), 0);
    node.stop().await;
}

#[actix_rt::test]
async fn an_app_key_beyond_its_long_poll_limit_gets_429() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.api.max_long_polls_per_key = 2;
    let node = golem_daemon::start(config).await.unwrap();
    let first = open_poll(&node, "/payment-api/v1/debitNoteEvents?timeout=60").await;
    let _second = open_poll(&node, "/market-api/v1/agreementEvents?timeout=60").await;
    wait_for_open(&node, 2, Duration::from_secs(5)).await;
    assert_eq!(node.long_polls.open_for("autoconfigured"), 2);
    let http = reqwest::Client::new();
    let counted: Value = http
        .get(format!("{}/local-api/v1/long-polls", base(&node)))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counted, json!({"open": 2, "mine": 2}));

    let refused = http
        .get(format!(
            "{}/payment-api/v1/invoiceEvents?timeout=0",
            base(&node)
        ))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("api.max-long-polls-per-key")
            && message.contains("GOLEM_API_MAX_LONG_POLLS_PER_KEY"),
        "{message}"
    );
    // Every long-polling route counts (the permit is taken before the
    // route looks at its ids, so unknown ids still meet the limit).
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/market-api/v1/offers/s1/events?timeout=0",
        ),
        (
            reqwest::Method::GET,
            "/market-api/v1/demands/s1/events?timeout=0",
        ),
        (
            reqwest::Method::GET,
            "/market-api/v1/agreementEvents?timeout=0",
        ),
        (
            reqwest::Method::GET,
            "/market-api/v1/scan/s1/events?timeout=0",
        ),
        (
            reqwest::Method::POST,
            "/market-api/v1/agreements/a1/wait?timeout=1",
        ),
        (
            reqwest::Method::GET,
            "/activity-api/v1/activity/a1/exec/b1?timeout=0",
        ),
        (reqwest::Method::GET, "/activity-api/v1/events?timeout=0"),
        (
            reqwest::Method::GET,
            "/payment-api/v1/debitNoteEvents?timeout=0",
        ),
        (
            reqwest::Method::GET,
            "/payment-api/v1/invoiceEvents?timeout=0",
        ),
    ] {
        let response = http
            .request(method.clone(), format!("{}{path}", base(&node)))
            .bearer_auth(APP_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 429, "{method} {path}");
    }

    // Other calls of the key are not limited.
    let me = http
        .get(format!("{}/me", base(&node)))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    // One leaves: there is room again.
    drop(first);
    wait_for_open(&node, 1, Duration::from_secs(1)).await;
    let allowed = http
        .get(format!(
            "{}/payment-api/v1/invoiceEvents?timeout=0",
            base(&node)
        ))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    node.stop().await;
}

#[actix_rt::test]
async fn timeouts_are_capped_per_api_and_nonsense_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    for (path, cap) in [
        ("/market-api/v1/agreementEvents", 600),
        ("/activity-api/v1/events", 600),
        ("/payment-api/v1/invoiceEvents", 60),
    ] {
        let refused = http
            .get(format!("{}{path}?timeout=-1", base(&node)))
            .bearer_auth(APP_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{path}");
        let body: Value = refused.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("cut to {cap} s")),
            "{path}: {message}"
        );

        // A huge value is accepted (cut to the cap): the poll waits.
        let waiting = http
            .get(format!("{}{path}?timeout=1e300", base(&node)))
            .bearer_auth(APP_KEY)
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        assert!(
            waiting.as_ref().is_err_and(|error| error.is_timeout()),
            "{path}: {waiting:?}"
        );
    }
    wait_for_open(&node, 0, Duration::from_secs(1)).await;
    node.stop().await;
}

#[actix_rt::test]
async fn cors_lets_allowed_origins_in_and_keeps_the_app_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.api.allow_origin = vec!["http://localhost:3000".into()];
    let node = golem_daemon::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/payment-api/v1/allocations", base(&node));

    // A browser's preflight: no app-key, answered with what may be sent.
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_string())
    };
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    let methods = header(&preflight, "access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = header(&preflight, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert!(header(&preflight, "access-control-max-age").is_some());

    // The actual request still needs the app-key, and carries the header.
    let actual = http
        .post(&url)
        .header("Origin", "http://localhost:3000")
        .bearer_auth(APP_KEY)
        .json(&json!({"totalAmount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(actual.status(), 201);
    assert_eq!(
        header(&actual, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    let without_key = http
        .get(&url)
        .header("Origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(without_key.status(), 401);
    assert_eq!(
        header(&without_key, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000"),
        "the page may read why it was refused"
    );

    // Another origin: preflight refused, responses without CORS headers.
    let foreign_preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_preflight.status(), 403);
    assert!(header(&foreign_preflight, "access-control-allow-origin").is_none());
    let foreign = http
        .get(&url)
        .header("Origin", "http://evil.example")
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 200);
    assert!(header(&foreign, "access-control-allow-origin").is_none());
    node.stop().await;
}

#[actix_rt::test]
async fn cors_is_off_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/me", base(&node)))
        .header("Origin", "http://localhost:3000")
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/me", base(&node)))
        .header("Origin", "http://localhost:3000")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 403);
    node.stop().await;
}

#[actix_rt::test]
async fn allocations_are_amended_but_never_below_spent() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/payment-api/v1/allocations", base(&node)))
        .bearer_auth(APP_KEY)
        .json(&json!({"totalAmount": "5", "makeDeposit": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["allocationId"].as_str().unwrap();
    let amend = |body: Value, id: String| {
        let http = http.clone();
        let url = format!("{}/payment-api/v1/allocations/{id}", base(&node));
        async move {
            let response = http
                .put(url)
                .bearer_auth(APP_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let timeout = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let (status, amended) = amend(
        json!({"totalAmount": "7.5", "timeout": timeout}),
        id.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{amended}");
    assert_eq!(amended["totalAmount"], "7.5");
    assert_eq!(amended["remainingAmount"], "7.5");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(amended["timeout"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&timeout).unwrap()
    );
    let stored: Value = http
        .get(format!("{}/payment-api/v1/allocations/{id}", base(&node)))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["totalAmount"], "7.5");

    // (Below spent: `payment::restart_tests`, which charges an allocation.)
    let (status, body) = amend(json!({"totalAmount": "-1"}), id.to_string()).await;
    assert_eq!(status, 400, "{body}");
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, body) = amend(json!({"timeout": past}), id.to_string()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = amend(json!({"totalAmount": "1"}), "no-such-allocation".into()).await;
    assert_eq!(status, 404, "{body}");

    // A released allocation is gone for good: 404 as the original (it finds
    // only allocations not yet released), and the message says so.
    http.delete(format!("{}/payment-api/v1/allocations/{id}", base(&node)))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    let (status, body) = amend(json!({"totalAmount": "9"}), id.to_string()).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.to_string().contains("released"), "{body}");
    node.stop().await;
}

#[actix_rt::test]
async fn added_operations_answer_as_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", base(&node)))
            .bearer_auth(APP_KEY)
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    for (method, path, status) in [
        (
            reqwest::Method::POST,
            "/activity-api/v1/activity/a1b2c3/encrypted",
            501,
        ),
        (
            reqwest::Method::GET,
            "/payment-api/v1/payments/no-such-payment",
            404,
        ),
        (
            reqwest::Method::GET,
            "/payment-api/v1/invoices/no-such-invoice/payments",
            404,
        ),
        (
            reqwest::Method::GET,
            "/payment-api/v1/debitNotes/no-such-note/payments",
            404,
        ),
        (
            reqwest::Method::POST,
            "/payment-api/v1/invoices/no-such-invoice/cancel",
            404,
        ),
        (
            reqwest::Method::POST,
            "/payment-api/v1/debitNotes/no-such-note/cancel",
            404,
        ),
        (reqwest::Method::GET, "/payment-api/v1/payments/status", 200),
    ] {
        let response = call(method.clone(), path).await.unwrap();
        let code = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(code, status, "{method} {path}: {body}");
        if status == 501 {
            assert!(
                body["message"].as_str().unwrap().contains("not supported"),
                "{body}"
            );
        }
    }

    // Status lists platforms; a filter that matches none lists none.
    let http = reqwest::Client::new();
    http.post(format!("{}/payment-api/v1/allocations", base(&node)))
        .bearer_auth(APP_KEY)
        .json(&json!({"totalAmount": "2", "paymentPlatform": "erc20-holesky-tglm"}))
        .send()
        .await
        .unwrap();
    let status = |query: &'static str| {
        let http = http.clone();
        let url = format!("{}/payment-api/v1/payments/status{query}", base(&node));
        async move {
            let body: Value = http
                .get(url)
                .bearer_auth(APP_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["platforms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|platform| platform["platform"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert!(status("").await.contains(&"erc20-holesky-tglm".to_string()));
    assert_eq!(
        status("?driver=erc20&network=holesky").await,
        vec!["erc20-holesky-tglm".to_string()]
    );
    assert!(status("?network=mainnet").await.is_empty());
    node.stop().await;
}

/// A started binary, killed when the test ends (also when it fails).
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary itself, with the origins from its flag and from the environment.
#[actix_rt::test]
async fn cors_through_the_binary_from_flags_and_environment() {
    for (flags, env) in [
        (
            vec![
                "--api-allow-origin",
                "http://a.example",
                "--api-allow-origin",
                "http://b.example",
            ],
            None,
        ),
        (vec![], Some("http://a.example, http://b.example")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_golem-daemon"));
        command
            .args(["--data-dir", dir.path().to_str().unwrap(), "run"])
            .args(["--api-addr", &format!("127.0.0.1:{port}")])
            .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&flags)
            .env("GOLEM_AUTOCONF_APPKEY", APP_KEY)
            .env_remove("GOLEM_API_ALLOW_ORIGIN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(origins) = env {
            command.env("GOLEM_API_ALLOW_ORIGIN", origins);
        }
        let daemon = Started(command.spawn().unwrap());
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("{base}/version/get"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the daemon did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (origin, allowed) in [
            ("http://a.example", true),
            ("http://b.example", true),
            ("http://c.example", false),
        ] {
            let preflight = http
                .request(reqwest::Method::OPTIONS, format!("{base}/me"))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "GET")
                .header("Access-Control-Request-Headers", "authorization")
                .send()
                .await
                .unwrap();
            assert_eq!(
                preflight.status().as_u16(),
                if allowed { 204 } else { 403 },
                "{origin} {flags:?} {env:?}"
            );
            let actual = http
                .get(format!("{base}/me"))
                .header("Origin", origin)
                .bearer_auth(APP_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(actual.status(), 200);
            assert_eq!(
                actual
                    .headers()
                    .get("access-control-allow-origin")
                    .map(|value| value.to_str().unwrap().to_string()),
                allowed.then(|| origin.to_string()),
                "{origin} {flags:?} {env:?}"
            );
        }
        drop(daemon);
    }
}

/// Send `GET /me` on `stream` and read the whole answer (head and its
/// `content-length` body), so the connection is ready for the next request.
async fn get_me_on(stream: &mut TcpStream, node: &Node) -> Result<String, std::io::Error> {
    use tokio::io::AsyncReadExt;
    let request = format!(
        "GET /me HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {APP_KEY}\r\n\r\n",
        node.api_addr
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let head_end = text.find("\r\n\r\n").unwrap_or(text.len()) + 4;
    let body_length: usize = text[..head_end]
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut missing = (head_end + body_length).saturating_sub(answer.len());
    while missing > 0 {
        let read = stream.read(&mut buffer[..missing.min(4096)]).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        missing -= read;
    }
    Ok(text)
}

/// A kept-alive connection idle for longer than actix's 5 s default is still
/// served: clients (aiohttp keeps idle connections 15 s, ours 20 s) must not
/// reuse a connection the server is closing at that moment.
#[tokio::test]
async fn an_idle_connection_is_kept_longer_than_the_clients_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let mut stream = TcpStream::connect(node.api_addr).await.unwrap();
    let first = get_me_on(&mut stream, &node).await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let again = get_me_on(&mut stream, &node)
        .await
        .expect("the daemon closed a connection idle for 8 s");
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}
