//! A local anvil chain for the erc20 payment tests: finding the binary (gated
//! by `GOLEM_TEST_ANVIL=1`), starting it on a free port with a state file (so a
//! stop and restart keeps the chain), deploying the GLM-like test token from
//! `contracts/GLMTest.bin`, and reading token balances over plain JSON-RPC.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// The anvil tier's gate for a test that needs the chain (`anvil_*`, ignored by
/// default): the binary, or an error naming what is missing.
pub fn anvil_required(test: &str) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        std::env::var("GOLEM_TEST_ANVIL").ok().as_deref() == Some("1"),
        "{test} needs anvil: set GOLEM_TEST_ANVIL=1 after scripts/ensure-anvil.sh, or run scripts/test.sh, which runs this tier only when anvil is installed"
    );
    anvil_gate(test)?.ok_or_else(|| anyhow::anyhow!("{test}: anvil not found"))
}

/// Gate of an optional anvil part of a test: `Ok(None)` (after printing a skip note) when
/// `GOLEM_TEST_ANVIL` is not `1`; the binary when it is; an error when it is
/// set but anvil cannot be found.
pub fn anvil_gate(test: &str) -> anyhow::Result<Option<PathBuf>> {
    if std::env::var("GOLEM_TEST_ANVIL").ok().as_deref() != Some("1") {
        eprintln!("skipping {test}: set GOLEM_TEST_ANVIL=1 (anvil from scripts/ensure-anvil.sh) to run it");
        return Ok(None);
    }
    if let Ok(bin) = std::env::var("GOLEM_ANVIL_BIN") {
        let path = PathBuf::from(&bin);
        if !path.is_file() {
            bail!("GOLEM_ANVIL_BIN={bin} does not exist; run scripts/ensure-anvil.sh");
        }
        return Ok(Some(native_anvil(path)));
    }
    let cache = std::env::var("GOLEM_ANVIL_CACHE")
        .map(PathBuf::from)
        .or_else(|_| {
            std::env::var("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("golem-anvil"))
        })
        .or_else(|_| std::env::var("HOME").map(|dir| PathBuf::from(dir).join(".cache/golem-anvil")))
        .map_err(|_| anyhow!("no HOME to find the anvil cache in; set GOLEM_ANVIL_BIN"))?;
    let bin = cache.join("node_modules/.bin/anvil");
    if !bin.exists() {
        bail!(
            "GOLEM_TEST_ANVIL=1 but anvil is missing at {}: run scripts/ensure-anvil.sh or set GOLEM_ANVIL_BIN",
            bin.display()
        );
    }
    Ok(Some(native_anvil(bin)))
}

/// npm's `anvil` is a node script (`@foundry-rs/anvil/bin.mjs`) that starts
/// the platform's binary as its child; killing the script leaves that child
/// running (CI found six anvil processes orphaned after the anvil tier). The
/// binary itself is started when it is beside the script.
fn native_anvil(bin: PathBuf) -> PathBuf {
    let Ok(script) = bin.canonicalize() else {
        return bin;
    };
    if script.file_name().and_then(|name| name.to_str()) != Some("bin.mjs") {
        return bin;
    }
    let Some(scope) = script.parent().and_then(Path::parent) else {
        return bin;
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let native = scope
        .join(format!("anvil-{}-{arch}", std::env::consts::OS))
        .join("bin/anvil");
    if native.is_file() {
        native
    } else {
        bin
    }
}

/// The test token's creation bytecode (hex), committed with its source.
pub fn token_bytecode() -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contracts/GLMTest.bin");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().trim_start_matches("0x").to_string())
}

/// One anvil process (chain id 31337, auto-mining).
pub struct Anvil {
    bin: PathBuf,
    pub port: u16,
    pub url: String,
    state: PathBuf,
    log: PathBuf,
    /// Arguments added to every start (e.g. `--block-time 1`).
    extra_args: Vec<String>,
    child: Option<Child>,
    http: reqwest::Client,
}

pub const ANVIL_CHAIN_ID: u64 = 31337;

impl Anvil {
    /// Start anvil on a free port, its state kept in `dir`.
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Anvil> {
        Anvil::start_with(bin, dir, &[])
    }

    /// [`start`](Self::start) with more arguments (`--block-time 1`, `--no-mining`).
    pub fn start_with(bin: &Path, dir: &Path, extra_args: &[&str]) -> anyhow::Result<Anvil> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut anvil = Anvil {
            bin: bin.to_path_buf(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            state: dir.join("anvil-state.json"),
            log: dir.join("anvil.log"),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            child: None,
            http: reqwest::Client::new(),
        };
        anvil.spawn()?;
        Ok(anvil)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--host", "127.0.0.1"])
            .arg("--state")
            .arg(&self.state)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(answer) = self.blocking_rpc("eth_chainId", json!([])) {
                if answer.as_str().is_some() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "anvil did not answer on {} within 20 s:\n{}",
                    self.url,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn blocking_rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let url = self.url.clone();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        // A throwaway thread: callers may be inside a runtime.
        std::thread::spawn(move || -> anyhow::Result<Value> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let reply: Value = reqwest::Client::new()
                    .post(&url)
                    .json(&body)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await?
                    .json()
                    .await?;
                Ok(reply["result"].clone())
            })
        })
        .join()
        .map_err(|_| anyhow!("rpc thread panicked"))?
    }

    /// Stop with SIGINT (anvil writes its state file) and wait.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("anvil did not stop within 15 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Start again on the same port from the saved state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let reply: Value = self
            .http
            .post(&self.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await?
            .json()
            .await?;
        if let Some(error) = reply.get("error") {
            bail!("{method} failed: {error}");
        }
        Ok(reply["result"].clone())
    }

    /// The first unlocked dev account.
    pub async fn dev_account(&self) -> anyhow::Result<String> {
        let accounts = self.rpc("eth_accounts", json!([])).await?;
        accounts[0]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("anvil has no dev account: {accounts}"))
    }

    /// Send from the dev account and wait for the receipt.
    pub async fn transact(&self, tx: Value) -> anyhow::Result<Value> {
        let hash = self.rpc("eth_sendTransaction", json!([tx])).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).await?;
            if !receipt.is_null() {
                if receipt["status"] != json!("0x1") {
                    bail!("transaction {hash} failed: {receipt}");
                }
                return Ok(receipt);
            }
            if Instant::now() > deadline {
                bail!("transaction {hash} not mined within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Deploy the GLM-like test token; returns its address.
    pub async fn deploy_token(&self) -> anyhow::Result<String> {
        let from = self.dev_account().await?;
        let receipt = self
            .transact(json!({"from": from, "data": format!("0x{}", token_bytecode()?), "gas": "0x300000"}))
            .await?;
        receipt["contractAddress"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("deployment without contract address: {receipt}"))
    }

    /// `balanceOf(owner)` of `token` in its smallest unit.
    pub async fn token_balance(&self, token: &str, owner: &str) -> anyhow::Result<u128> {
        let owner = owner.trim_start_matches("0x").to_lowercase();
        let data = format!("0x70a08231{owner:0>64}");
        let result = self
            .rpc("eth_call", json!([{"to": token, "data": data}, "latest"]))
            .await?;
        parse_quantity(&result)
    }

    /// Native balance in wei.
    pub async fn eth_balance(&self, owner: &str) -> anyhow::Result<u128> {
        parse_quantity(&self.rpc("eth_getBalance", json!([owner, "latest"])).await?)
    }

    /// Turn auto-mining off (transactions wait in the pool until [`mine`](Self::mine)) or on.
    pub async fn set_automine(&self, on: bool) -> anyhow::Result<()> {
        self.rpc("evm_setAutomine", json!([on])).await?;
        Ok(())
    }

    /// Mine one block now (with whatever the pool holds).
    pub async fn mine(&self) -> anyhow::Result<()> {
        self.rpc("evm_mine", json!([])).await?;
        Ok(())
    }

    /// The base fee the next block will ask (a jump leaves cheaper pooled transactions stuck).
    pub async fn set_next_base_fee(&self, wei: u128) -> anyhow::Result<()> {
        self.rpc(
            "anvil_setNextBlockBaseFeePerGas",
            json!([format!("{wei:#x}")]),
        )
        .await?;
        Ok(())
    }

    /// Remove a pending transaction from the pool, as if it was never sent.
    pub async fn drop_transaction(&self, hash: &str) -> anyhow::Result<()> {
        self.rpc("anvil_dropTransaction", json!([hash])).await?;
        Ok(())
    }

    /// The transaction (`null` when the chain and pool do not know it).
    pub async fn transaction(&self, hash: &str) -> anyhow::Result<Value> {
        self.rpc("eth_getTransactionByHash", json!([hash])).await
    }

    /// The receipt (`null` until mined).
    pub async fn receipt(&self, hash: &str) -> anyhow::Result<Value> {
        self.rpc("eth_getTransactionReceipt", json!([hash])).await
    }

    /// Transactions in the pool: (pending, queued behind a nonce gap).
    pub async fn pool(&self) -> anyhow::Result<(u64, u64)> {
        let status = self.rpc("txpool_status", json!([])).await?;
        let count = |field: &str| -> anyhow::Result<u64> {
            match &status[field] {
                Value::Number(number) => number
                    .as_u64()
                    .ok_or_else(|| anyhow!("txpool_status {field} is {number}")),
                other => Ok(parse_quantity(other)? as u64),
            }
        };
        Ok((count("pending")?, count("queued")?))
    }

    /// The base fee per gas of the latest block.
    pub async fn base_fee(&self) -> anyhow::Result<u128> {
        let block = self
            .rpc("eth_getBlockByNumber", json!(["latest", false]))
            .await?;
        parse_quantity(&block["baseFeePerGas"])
    }

    /// Number of transactions `owner` sent (its nonce).
    pub async fn nonce(&self, owner: &str) -> anyhow::Result<u64> {
        Ok(parse_quantity(
            &self
                .rpc("eth_getTransactionCount", json!([owner, "latest"]))
                .await?,
        )? as u64)
    }
}

fn parse_quantity(value: &Value) -> anyhow::Result<u128> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("expected a hex quantity, got {value}"))?
        .trim_start_matches("0x");
    let text = text.trim_start_matches('0');
    if text.is_empty() {
        return Ok(0);
    }
    u128::from_str_radix(text, 16).with_context(|| format!("quantity {value} out of range"))
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
