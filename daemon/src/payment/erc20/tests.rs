//! Tests of the erc20 driver against a fake JSON-RPC chain: a transfer is
//! signed once, re-broadcast unchanged and awaited whatever the node answers.
#![allow(clippy::unwrap_used)]

use super::*;
use std::str::FromStr;
use std::time::Instant;

use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::keccak256;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn amounts_convert_exactly_to_and_from_wei() {
    let cases = [
        ("0", "0"),
        ("1", "1000000000000000000"),
        ("0.000000000000000001", "1"),
        ("12.5", "12500000000000000000"),
        ("1234567.890123456789012345", "1234567890123456789012345"),
        ("1.0000000000000000001", ""),
    ];
    for (amount, wei) in cases {
        let decimal = Decimal::from_str(amount).unwrap();
        let result = to_wei(decimal);
        if wei.is_empty() {
            let error = result.unwrap_err();
            assert!(error.message.contains("decimal places"), "{error:?}");
            continue;
        }
        let value = result.unwrap();
        assert_eq!(value.to_string(), wei);
        assert_eq!(format_units(value), decimal.normalize().to_string());
    }
    assert!(to_wei(Decimal::from_str("-1").unwrap()).is_err());
}

#[test]
fn networks_take_overrides_and_refuse_unknown_ones() {
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "holesky".to_string(),
        Erc20NetworkOverride {
            rpc_url: Some("http://127.0.0.1:8545".into()),
            chain_id: Some(31337),
            token: Some("0x5FbDB2315678afecb367f032d93F642f64180aa3".into()),
            confirmations: None,
            max_fee_per_gas: Some(40),
        },
    );
    let networks = networks(&overrides).unwrap();
    let holesky = &networks["holesky"];
    assert_eq!(holesky.chain_id, 31337);
    assert_eq!(holesky.rpc_url, "http://127.0.0.1:8545");
    assert_eq!(networks["polygon"].chain_id, 137);
    assert_eq!(holesky.max_fee_per_gas, 40);
    assert_eq!(
        networks["polygon"].max_fee_per_gas,
        DEFAULT_MAX_FEE_PER_GAS_GWEI
    );
    overrides.insert("nowhere".into(), Erc20NetworkOverride::default());
    assert!(super::networks(&overrides).is_err());
    let mut bad = BTreeMap::new();
    bad.insert(
        "holesky".to_string(),
        Erc20NetworkOverride {
            token: Some("0x12".into()),
            ..Default::default()
        },
    );
    let error = super::networks(&bad).unwrap_err();
    assert!(error.message.contains("token contract"), "{error:?}");
}

// ---- the driver against a fake JSON-RPC node ----

const FAKE_CHAIN_ID: u64 = 31337;
/// The account's pending nonce on the fake chain: every transfer is signed with it.
const FAKE_NONCE: u64 = 7;
const FAKE_TOKEN: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const PAYEE: &str = "0x2222222222222222222222222222222222222222";
const PAYMENT: &str = "payment-1";

/// What the fake node knows and was asked.
#[derive(Default)]
struct FakeChain {
    /// The error `eth_sendRawTransaction` answers; `None`: accepted.
    send_error: Option<String>,
    /// Mine a transaction as soon as `eth_sendRawTransaction` accepts it.
    mine_when_accepted: bool,
    /// Every raw transaction sent, in order.
    sent: Vec<String>,
    /// Transactions with a receipt.
    mined: std::collections::HashSet<B256>,
    /// Calls per method.
    calls: BTreeMap<String, usize>,
    /// The block number; every `eth_blockNumber` sees a new block.
    block: u64,
}

/// A tiny HTTP JSON-RPC server on loopback answering what the driver asks.
struct FakeRpc {
    url: String,
    chain: Arc<Mutex<FakeChain>>,
}

impl FakeRpc {
    async fn start() -> FakeRpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let chain = Arc::new(Mutex::new(FakeChain::default()));
        let shared = chain.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
        });
        FakeRpc { url, chain }
    }

    fn chain(&self) -> MutexGuard<'_, FakeChain> {
        self.chain.lock().unwrap()
    }

    fn calls(&self, method: &str) -> usize {
        self.chain().calls.get(method).copied().unwrap_or(0)
    }

    fn sent(&self) -> Vec<String> {
        self.chain().sent.clone()
    }
}

/// HTTP/1.1 with keep-alive: one JSON-RPC request per HTTP request.
async fn serve_connection(mut stream: tokio::net::TcpStream, chain: Arc<Mutex<FakeChain>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        let reply = match serde_json::from_slice::<Value>(&body) {
            Ok(request) => answer(&chain, &request),
            Err(error) => json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": error.to_string()}}),
        }
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn answer(chain: &Mutex<FakeChain>, request: &Value) -> Value {
    let mut chain = chain.lock().unwrap();
    let method = request["method"].as_str().unwrap_or_default();
    *chain.calls.entry(method.to_string()).or_default() += 1;
    let param = request["params"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = match method {
        "eth_chainId" => Ok(json!(format!("{FAKE_CHAIN_ID:#x}"))),
        "eth_blockNumber" => {
            chain.block += 1;
            Ok(json!(format!("{:#x}", 0x11 + chain.block)))
        }
        // balanceOf: 1000 tokens.
        "eth_call" => Ok(json!(format!("0x{:064x}", 1000 * 10u128.pow(DECIMALS)))),
        "eth_estimateGas" => Ok(json!("0xc350")),
        "eth_feeHistory" => Ok(json!({
            "oldestBlock": "0x10",
            "baseFeePerGas": ["0x3b9aca00", "0x3b9aca00"],
            "gasUsedRatio": [0.5],
            "reward": [["0x3b9aca00"]],
        })),
        // 1 ETH for gas.
        "eth_getBalance" => Ok(json!("0xde0b6b3a7640000")),
        "eth_getTransactionCount" => Ok(json!(format!("{FAKE_NONCE:#x}"))),
        "eth_sendRawTransaction" => {
            chain.sent.push(param.clone());
            match chain.send_error.clone() {
                Some(message) => Err(message),
                None => {
                    let hash = raw_hash(&param);
                    if chain.mine_when_accepted {
                        chain.mined.insert(hash);
                    }
                    Ok(json!(hash.to_string()))
                }
            }
        }
        "eth_getTransactionReceipt" => match param.parse::<B256>() {
            Ok(hash) if chain.mined.contains(&hash) => Ok(receipt_json(hash)),
            _ => Ok(Value::Null),
        },
        other => Err(format!("the fake rpc does not answer {other}")),
    };
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": request["id"], "result": result}),
        Err(message) => json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32000, "message": message},
        }),
    }
}

fn receipt_json(hash: B256) -> Value {
    json!({
        "transactionHash": hash.to_string(),
        "transactionIndex": "0x0",
        "blockHash": format!("0x{}", "11".repeat(32)),
        "blockNumber": "0x11",
        "from": "0x1111111111111111111111111111111111111111",
        "to": FAKE_TOKEN,
        "cumulativeGasUsed": "0xc350",
        "gasUsed": "0xc350",
        "effectiveGasPrice": "0x3b9aca00",
        "contractAddress": null,
        "logs": [],
        "logsBloom": format!("0x{}", "00".repeat(256)),
        "type": "0x2",
        "status": "0x1",
    })
}

fn raw_hash(raw: &str) -> B256 {
    keccak256(alloy::hex::decode(raw).unwrap_or_default())
}

fn nonce_of(raw: &str) -> u64 {
    let bytes = alloy::hex::decode(raw).unwrap();
    TxEnvelope::decode_2718(&mut bytes.as_slice())
        .unwrap()
        .nonce()
}

fn fake_networks(rpc: &FakeRpc) -> BTreeMap<String, Erc20Network> {
    let network = Erc20Network {
        name: "holesky".into(),
        rpc_url: rpc.url.clone(),
        chain_id: FAKE_CHAIN_ID,
        token: FAKE_TOKEN.into(),
        confirmations: 1,
        max_fee_per_gas: DEFAULT_MAX_FEE_PER_GAS_GWEI,
    };
    BTreeMap::from([(network.name.clone(), network)])
}

/// A driver on the fake node with [`PAYMENT`] (2.5 tGLM) handed to it.
fn driver_paying(store: &Store, rpc: &FakeRpc) -> Erc20Driver {
    let driver =
        Erc20Driver::start(store, fake_networks(rpc), [7; 32], Arc::new(Notify::new())).unwrap();
    let platform = Platform::parse("erc20-holesky-tglm").unwrap();
    let payer = driver.inner.address.to_string();
    let amount = Decimal::from_str("2.5").unwrap();
    let outcome = driver
        .pay(&platform, PAYMENT, &payer, PAYEE, amount)
        .unwrap();
    assert_eq!(outcome, PayOutcome::Pending);
    driver
}

/// Poll `done` until it holds; bounded, failing with the driver's progress.
async fn until(driver: &Erc20Driver, within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; progress {:?}",
            driver.progress(PAYMENT)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pending_status(driver: &Erc20Driver) -> String {
    match driver.progress(PAYMENT) {
        PayProgress::Pending(status) => status,
        other => panic!("expected a pending transfer, got {other:?}"),
    }
}

/// The raw transactions sent so far: all one transaction, signed once with the chain's nonce.
fn the_one_transaction(rpc: &FakeRpc) -> String {
    let sent = rpc.sent();
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|raw| *raw == sent[0]),
        "re-signed: {sent:?}"
    );
    assert_eq!(nonce_of(&sent[0]), FAKE_NONCE);
    assert_eq!(rpc.calls("eth_getTransactionCount"), 1, "nonce asked once");
    sent[0].clone()
}

#[tokio::test]
async fn already_known_answer_counts_as_sent_and_the_transfer_is_awaited() {
    let rpc = FakeRpc::start().await;
    rpc.chain().send_error = Some("already known".into());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let driver = driver_paying(&store, &rpc);
    until(
        &driver,
        Duration::from_secs(10),
        "a second broadcast",
        || rpc.sent().len() >= 2,
    )
    .await;
    let raw = the_one_transaction(&rpc);
    let hash = raw_hash(&raw);
    let status = pending_status(&driver);
    assert_eq!(
        status,
        format!("transaction {hash} (nonce {FAKE_NONCE}) sent, waiting for 1 confirmation(s)")
    );
    rpc.chain().mined.insert(hash);
    until(&driver, Duration::from_secs(10), "confirmed", || {
        driver.progress(PAYMENT) == PayProgress::Settled(hash.to_string())
    })
    .await;
    the_one_transaction(&rpc);
    driver.stop();
}

#[tokio::test]
async fn nonce_too_low_answer_awaits_the_receipt_and_never_signs_again() {
    let rpc = FakeRpc::start().await;
    rpc.chain().send_error = Some("nonce too low: next nonce 8, tx nonce 7".into());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let driver = driver_paying(&store, &rpc);
    until(&driver, Duration::from_secs(10), "the first answer", || {
        matches!(driver.progress(PAYMENT), PayProgress::Pending(status) if status.contains("is used on chain"))
    })
    .await;
    // Four more rounds of the worker (each asks the chain id first, a new
    // block comes each time): the receipt is asked for every round (the last
    // one may not have asked yet) and nothing is signed again.
    let rounds = rpc.calls("eth_chainId");
    let receipts = rpc.calls("eth_getTransactionReceipt");
    until(&driver, Duration::from_secs(15), "four more rounds", || {
        rpc.calls("eth_chainId") >= rounds + 4
    })
    .await;
    assert!(rpc.calls("eth_getTransactionReceipt") >= receipts + 3);
    let raw = the_one_transaction(&rpc);
    assert!(rpc.sent().len() >= 3);
    let hash = raw_hash(&raw);
    let status = pending_status(&driver);
    assert!(
        status.starts_with(&format!("nonce {FAKE_NONCE} of transaction {hash} is used on chain but the rpc has no receipt of it")),
        "{status}"
    );
    assert!(
        status.contains("never signed again with a new nonce"),
        "{status}"
    );
    // Its receipt shows up (the node caught up): settled with that transaction.
    rpc.chain().mined.insert(hash);
    until(&driver, Duration::from_secs(10), "confirmed", || {
        driver.progress(PAYMENT) == PayProgress::Settled(hash.to_string())
    })
    .await;
    the_one_transaction(&rpc);
    driver.stop();
}

#[tokio::test]
async fn insufficient_funds_answer_keeps_the_signed_transfer_and_retries_it() {
    let rpc = FakeRpc::start().await;
    rpc.chain().send_error =
        Some("insufficient funds for gas * price + value: have 0 want 60000000000000".into());
    rpc.chain().mine_when_accepted = true;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let driver = driver_paying(&store, &rpc);
    until(&driver, Duration::from_secs(10), "a retry", || {
        rpc.sent().len() >= 2
    })
    .await;
    let raw = the_one_transaction(&rpc);
    let address = driver.inner.address;
    assert_eq!(
        pending_status(&driver),
        format!(
            "insufficient ETH for gas on {address} (network holesky); top up and it goes through"
        )
    );
    // Kept as written: the signed transaction, which a restarted driver resumes.
    driver.stop();
    let stored: Transfer = store::decode(
        TREE,
        &driver
            .inner
            .tree
            .get(format!("tx/{PAYMENT}"))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    match stored.stage {
        Stage::Signed {
            nonce,
            raw: stored_raw,
            ..
        } => {
            assert_eq!(nonce, FAKE_NONCE);
            assert_eq!(stored_raw, raw);
        }
        other => panic!("stored as {other:?}"),
    }
    let restarted = Erc20Driver::start(
        &store,
        fake_networks(&rpc),
        [7; 32],
        Arc::new(Notify::new()),
    )
    .unwrap();
    assert!(matches!(
        restarted.progress(PAYMENT),
        PayProgress::Pending(_)
    ));
    // Topped up: the same transaction goes through.
    rpc.chain().send_error = None;
    let hash = raw_hash(&raw);
    until(&restarted, Duration::from_secs(10), "confirmed", || {
        restarted.progress(PAYMENT) == PayProgress::Settled(hash.to_string())
    })
    .await;
    the_one_transaction(&rpc);
    restarted.stop();
}
