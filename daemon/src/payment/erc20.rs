//! The `erc20` payment driver: ERC-20 token transfers over Ethereum JSON-RPC
//! (alloy), signed with the node's secp256k1 key. Networks are configured by
//! name (RPC URL, chain id, token contract, confirmations) and stay idle until a
//! payment needs them, so an unreachable RPC never blocks start-up.
//!
//! Transfers live in the sled `erc20` tree. A transfer is signed with the next
//! nonce and the signed transaction is written (with the advanced nonce) before
//! it is broadcast, so after a crash or an RPC outage the very same transaction
//! is re-broadcast: a payment can never be sent twice. Missing tokens or gas
//! leave the transfer queued with a readable status until the account is
//! topped up. It never holds its lock across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{
    EthereumWallet, NetworkTransactionBuilder, ReceiptResponse, TransactionBuilder,
};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use chrono::{DateTime, Utc};
use golem_model::payment::Decimal;
use golem_model::GolemError;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::driver::{PayOutcome, PayProgress, PaymentDriver, Platform};
use crate::store::{self, Store};

const TREE: &str = "erc20";
/// Token decimals (GLM and tGLM).
pub const DECIMALS: u32 = 18;
/// How long one RPC round may take before the network counts as unreachable.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry period of queued or unconfirmed transfers.
const TICK: Duration = Duration::from_secs(1);
/// Receipt polls right after a broadcast (auto-mining chains answer at once).
const QUICK_POLLS: u32 = 20;
const QUICK_POLL: Duration = Duration::from_millis(25);

alloy::sol! {
    function transfer(address to, uint256 amount) returns (bool);
    function balanceOf(address owner) returns (uint256);
    function mint(address to, uint256 amount);
}

/// One erc20 network: where to reach it and which token it pays in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Erc20Network {
    pub name: String,
    pub rpc_url: String,
    pub chain_id: u64,
    pub token: String,
    pub confirmations: u64,
}

/// Overrides of one network from the config file or environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Erc20NetworkOverride {
    pub rpc_url: Option<String>,
    /// Decimal, or `0x` hex in the environment.
    #[serde(deserialize_with = "golem_settings::de::optional_decimal_or_hex")]
    pub chain_id: Option<u64>,
    pub token: Option<String>,
    pub confirmations: Option<u64>,
}

/// The built-in networks: name, RPC URL, chain id, token contract.
const DEFAULT_NETWORKS: &[(&str, &str, u64, &str)] = &[
    (
        "holesky",
        "https://holesky.rpc-node.dev.golem.network",
        17000,
        "0x8888888815bf4DB87e57B609A50f938311EEd068",
    ),
    (
        "sepolia",
        "https://ethereum-sepolia-rpc.publicnode.com",
        11155111,
        "0x167b15ada84c63427c6c813B915a42eFC72E7175",
    ),
    (
        "amoy",
        "https://rpc-amoy.polygon.technology",
        80002,
        "0x2b60e60d3fb0b36a7ccb388f9e71570da4c4594f",
    ),
    (
        "polygon",
        "https://polygon-rpc.com",
        137,
        "0x0B220b82F3eA3B7F6d9A1D8ab58930C064A2b5Bf",
    ),
    (
        "mainnet",
        "https://ethereum-rpc.publicnode.com",
        1,
        "0x7DD9c5Cba05E151C895FDe1CF355C9A1D5DA6429",
    ),
];

/// Names of the erc20 networks (the config module reads their env overrides).
pub fn network_names() -> Vec<&'static str> {
    DEFAULT_NETWORKS.iter().map(|(name, ..)| *name).collect()
}

/// The networks after applying `overrides` to the defaults.
pub fn networks(
    overrides: &BTreeMap<String, Erc20NetworkOverride>,
) -> Result<BTreeMap<String, Erc20Network>, GolemError> {
    let mut networks = BTreeMap::new();
    for (name, rpc_url, chain_id, token) in DEFAULT_NETWORKS {
        networks.insert(
            name.to_string(),
            Erc20Network {
                name: name.to_string(),
                rpc_url: rpc_url.to_string(),
                chain_id: *chain_id,
                token: token.to_string(),
                confirmations: 1,
            },
        );
    }
    for (name, changes) in overrides {
        let network = networks.get_mut(name).ok_or_else(|| {
            GolemError::bad_request(format!(
                "unknown erc20 network {name:?} in the payment config; known: {}",
                network_names().join(", ")
            ))
        })?;
        if let Some(url) = &changes.rpc_url {
            network.rpc_url = url.clone();
        }
        if let Some(chain_id) = changes.chain_id {
            network.chain_id = chain_id;
        }
        if let Some(token) = &changes.token {
            network.token = token.clone();
        }
        if let Some(confirmations) = changes.confirmations {
            network.confirmations = confirmations.max(1);
        }
    }
    for network in networks.values() {
        parse_address("token contract", &network.token)?;
        network
            .rpc_url
            .parse::<reqwest_url::Url>()
            .map_err(|error| {
                GolemError::bad_request(format!(
                    "invalid rpc url {:?} of erc20 network {}: {error}",
                    network.rpc_url, network.name
                ))
            })?;
    }
    Ok(networks)
}

mod reqwest_url {
    pub use alloy::transports::http::reqwest::Url;
}

pub fn parse_address(what: &str, text: &str) -> Result<Address, GolemError> {
    text.trim().parse::<Address>().map_err(|error| {
        GolemError::bad_request(format!("invalid {what} address {text:?}: {error}"))
    })
}

/// Token amount in the smallest unit (18 decimals); refuses finer amounts.
pub fn to_wei(amount: Decimal) -> Result<U256, GolemError> {
    let amount = amount.normalize();
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(GolemError::bad_request(format!(
            "amount {amount} is negative"
        )));
    }
    if amount.scale() > DECIMALS {
        return Err(GolemError::bad_request(format!(
            "amount {amount} has more than {DECIMALS} decimal places; erc20 tokens cannot pay it exactly"
        )));
    }
    let mantissa = u128::try_from(amount.mantissa())
        .map_err(|_| GolemError::bad_request(format!("amount {amount} is out of range")))?;
    Ok(U256::from(mantissa) * U256::from(10u64).pow(U256::from(DECIMALS - amount.scale())))
}

/// A smallest-unit amount as a decimal string with 18 decimals (trailing zeros trimmed).
pub fn format_units(wei: U256) -> String {
    let digits = format!("{wei:0>19}");
    let (whole, fraction) = digits.split_at(digits.len() - DECIMALS as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{fraction}")
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", tag = "state")]
enum Stage {
    /// Waiting to be signed (funds, gas or RPC missing so far).
    Queued,
    /// Signed with `nonce` and written; broadcast until mined.
    Signed {
        nonce: u64,
        tx_hash: String,
        raw: String,
    },
    Confirmed {
        tx_hash: String,
        block: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transfer {
    payment_id: String,
    network: String,
    payee: String,
    amount: Decimal,
    created: DateTime<Utc>,
    stage: Stage,
    /// What it is waiting for, in words (not persisted meaningfully).
    status: String,
}

struct Inner {
    networks: BTreeMap<String, Erc20Network>,
    signer: PrivateKeySigner,
    address: Address,
    tree: sled::Tree,
    transfers: Mutex<BTreeMap<String, Transfer>>,
    /// Wakes the worker (new transfer).
    wake: Notify,
    /// Told when a transfer is confirmed (the payment service settles).
    settled: Arc<Notify>,
    shutdown: CancellationToken,
}

/// Handle to the erc20 driver. Cheap to clone.
#[derive(Clone)]
pub struct Erc20Driver {
    inner: Arc<Inner>,
}

fn rpc_error(network: &Erc20Network, error: impl std::fmt::Display) -> String {
    format!(
        "rpc {} of erc20 network {} failed: {error}; check it is reachable (GOLEM_ERC20_{}_RPC_URL)",
        network.rpc_url,
        network.name,
        network.name.to_uppercase()
    )
}

impl Erc20Driver {
    /// Open the transfer queue and start the worker; contacts no RPC.
    pub fn start(
        store: &Store,
        networks: BTreeMap<String, Erc20Network>,
        secret: [u8; 32],
        settled: Arc<Notify>,
    ) -> Result<Erc20Driver, GolemError> {
        let signer = PrivateKeySigner::from_bytes(&B256::from(secret))
            .map_err(|error| GolemError::internal(format!("node key cannot sign: {error}")))?;
        let tree = store.tree(TREE)?;
        let mut transfers = BTreeMap::new();
        for entry in tree.scan_prefix("tx/") {
            let (_, value) = entry.map_err(store::StoreError::from)?;
            let transfer: Transfer = store::decode(TREE, &value)?;
            transfers.insert(transfer.payment_id.clone(), transfer);
        }
        let driver = Erc20Driver {
            inner: Arc::new(Inner {
                networks,
                address: signer.address(),
                signer,
                tree,
                transfers: Mutex::new(transfers),
                wake: Notify::new(),
                settled,
                shutdown: CancellationToken::new(),
            }),
        };
        tokio::spawn(driver.clone().run());
        Ok(driver)
    }

    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }

    pub fn networks(&self) -> Vec<Erc20Network> {
        self.inner.networks.values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Transfer>> {
        self.inner
            .transfers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn network(&self, name: &str) -> Result<&Erc20Network, GolemError> {
        self.inner.networks.get(name).ok_or_else(|| {
            GolemError::bad_request(format!("erc20 network {name} is not configured"))
        })
    }

    fn save(&self, transfer: &Transfer, next_nonce: Option<u64>) -> Result<(), GolemError> {
        let mut batch = sled::Batch::default();
        batch.insert(
            format!("tx/{}", transfer.payment_id).as_bytes(),
            store::encode(transfer)?,
        );
        if let Some(nonce) = next_nonce {
            batch.insert(
                format!("nonce/{}", transfer.network).as_bytes(),
                store::encode(&nonce)?,
            );
        }
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(|error| GolemError::internal(format!("erc20 store write failed: {error}")))?;
        self.inner
            .tree
            .flush()
            .map_err(|error| GolemError::internal(format!("erc20 store flush failed: {error}")))?;
        Ok(())
    }

    fn stored_nonce(&self, network: &str) -> u64 {
        self.inner
            .tree
            .get(format!("nonce/{network}").as_bytes())
            .ok()
            .flatten()
            .and_then(|value| store::decode::<u64>(TREE, &value).ok())
            .unwrap_or(0)
    }

    fn set_status(&self, payment_id: &str, status: String) {
        if let Some(transfer) = self.lock().get_mut(payment_id) {
            if transfer.status != status {
                tracing::info!(%payment_id, %status, "erc20 transfer");
            }
            transfer.status = status;
        }
    }

    /// Transfers not confirmed yet, oldest first.
    fn open_transfers(&self) -> Vec<Transfer> {
        let mut list: Vec<Transfer> = self
            .lock()
            .values()
            .filter(|transfer| !matches!(transfer.stage, Stage::Confirmed { .. }))
            .cloned()
            .collect();
        list.sort_by_key(|transfer| transfer.created);
        list
    }

    async fn run(self) {
        loop {
            let mut by_network: BTreeMap<String, Vec<Transfer>> = BTreeMap::new();
            for transfer in self.open_transfers() {
                by_network
                    .entry(transfer.network.clone())
                    .or_default()
                    .push(transfer);
            }
            for (name, transfers) in by_network {
                let Ok(network) = self.network(&name).cloned() else {
                    continue;
                };
                let round = self.process_network(&network, transfers);
                if tokio::time::timeout(RPC_TIMEOUT * 3, round).await.is_err() {
                    tracing::warn!(network = %name, "erc20 round timed out");
                }
            }
            let woken = self.inner.wake.notified();
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn process_network(&self, network: &Erc20Network, transfers: Vec<Transfer>) {
        let url = match network.rpc_url.parse() {
            Ok(url) => url,
            Err(error) => {
                for transfer in &transfers {
                    self.set_status(&transfer.payment_id, format!("invalid rpc url: {error}"));
                }
                return;
            }
        };
        let provider: RootProvider = RootProvider::new_http(url);
        match tokio::time::timeout(RPC_TIMEOUT, provider.get_chain_id()).await {
            Ok(Ok(chain_id)) if chain_id == network.chain_id => {}
            Ok(Ok(chain_id)) => {
                for transfer in &transfers {
                    self.set_status(
                        &transfer.payment_id,
                        format!(
                            "rpc {} serves chain {chain_id}, erc20 network {} expects {}; fix GOLEM_ERC20_{}_CHAIN_ID or the rpc url",
                            network.rpc_url,
                            network.name,
                            network.chain_id,
                            network.name.to_uppercase()
                        ),
                    );
                }
                return;
            }
            Ok(Err(error)) => {
                let status = rpc_error(network, error);
                for transfer in &transfers {
                    self.set_status(&transfer.payment_id, status.clone());
                }
                return;
            }
            Err(_) => {
                let status = rpc_error(network, "no answer within 10 s");
                for transfer in &transfers {
                    self.set_status(&transfer.payment_id, status.clone());
                }
                return;
            }
        }
        for transfer in transfers {
            let payment_id = transfer.payment_id.clone();
            if let Err(status) = self.advance(&provider, network, transfer).await {
                self.set_status(&payment_id, status);
                // Keep order: a later transfer must not take a nonce first.
                return;
            }
        }
    }

    /// Move one transfer forward as far as it goes now; Err is its status.
    async fn advance(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        mut transfer: Transfer,
    ) -> Result<(), String> {
        if transfer.stage == Stage::Queued {
            let signed = self.sign(provider, network, &transfer).await?;
            let (envelope, nonce) = signed;
            let tx_hash = envelope.tx_hash().to_string();
            transfer.stage = Stage::Signed {
                nonce,
                tx_hash: tx_hash.clone(),
                raw: alloy::hex::encode_prefixed(envelope.encoded_2718()),
            };
            transfer.status = format!("signed as {tx_hash} (nonce {nonce}), broadcasting");
            self.save(&transfer, Some(nonce + 1))
                .map_err(|error| error.message)?;
            self.lock()
                .insert(transfer.payment_id.clone(), transfer.clone());
        }
        let Stage::Signed {
            nonce,
            tx_hash,
            raw,
        } = transfer.stage.clone()
        else {
            return Ok(());
        };
        let hash: B256 = tx_hash
            .parse()
            .map_err(|error| format!("stored transaction hash is invalid: {error}"))?;
        if let Some(done) = self.receipt(provider, network, hash).await? {
            return self.finish(transfer, done, &tx_hash);
        }
        let raw_bytes = alloy::hex::decode(&raw)
            .map_err(|error| format!("stored transaction is invalid: {error}"))?;
        // "nonce too low": this nonce is used on chain, by this very transaction
        // (mined, receipt not visible yet) or by another one; either way it is
        // only ever awaited, never signed again with a new nonce (that could pay twice).
        let mut nonce_used = false;
        if let Err(error) = provider.send_raw_transaction(&raw_bytes).await {
            let text = error.to_string();
            nonce_used = text.contains("nonce too low");
            let known =
                nonce_used || text.contains("already known") || text.contains("already imported");
            if !known {
                if text.contains("insufficient funds") {
                    return Err(format!(
                        "insufficient ETH for gas on {} (network {}); top up and it goes through",
                        self.inner.address, network.name
                    ));
                }
                return Err(rpc_error(network, text));
            }
        }
        for _ in 0..QUICK_POLLS {
            if let Some(done) = self.receipt(provider, network, hash).await? {
                return self.finish(transfer, done, &tx_hash);
            }
            tokio::time::sleep(QUICK_POLL).await;
        }
        if nonce_used {
            return Err(format!(
                "nonce {nonce} of transaction {tx_hash} is used on chain but the rpc has no receipt of it: mined and not visible yet, or another transaction from {} took the nonce; waiting for its receipt (it is never signed again with a new nonce, which could pay twice)",
                self.inner.address
            ));
        }
        Err(format!(
            "transaction {tx_hash} (nonce {nonce}) sent, waiting for {} confirmation(s)",
            network.confirmations
        ))
    }

    /// `Some(Ok(block))` when mined with enough confirmations, `Some(Err)` when reverted.
    async fn receipt(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        hash: B256,
    ) -> Result<Option<Result<u64, ()>>, String> {
        let receipt = provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|error| rpc_error(network, error))?;
        let Some(receipt) = receipt else {
            return Ok(None);
        };
        if !receipt.status() {
            return Ok(Some(Err(())));
        }
        let block = receipt.block_number().unwrap_or(0);
        if network.confirmations > 1 {
            let latest = provider
                .get_block_number()
                .await
                .map_err(|error| rpc_error(network, error))?;
            if latest + 1 < block + network.confirmations {
                return Ok(None);
            }
        }
        Ok(Some(Ok(block)))
    }

    fn finish(
        &self,
        mut transfer: Transfer,
        done: Result<u64, ()>,
        tx_hash: &str,
    ) -> Result<(), String> {
        match done {
            Ok(block) => {
                transfer.stage = Stage::Confirmed {
                    tx_hash: tx_hash.to_string(),
                    block,
                };
                transfer.status = format!("confirmed in block {block}");
                self.save(&transfer, None).map_err(|error| error.message)?;
                tracing::info!(payment_id = %transfer.payment_id, %tx_hash, block, "erc20 transfer confirmed");
                self.lock().insert(transfer.payment_id.clone(), transfer);
                self.inner.settled.notify_one();
                Ok(())
            }
            Err(()) => {
                // Reverted: nothing moved, the nonce is spent; sign again later.
                transfer.stage = Stage::Queued;
                let status = format!(
                    "transaction {tx_hash} reverted (token balance or contract?); it will be retried"
                );
                transfer.status = status.clone();
                self.save(&transfer, None).map_err(|error| error.message)?;
                self.lock().insert(transfer.payment_id.clone(), transfer);
                Err(status)
            }
        }
    }

    /// Check funds and gas, then sign with the next nonce.
    async fn sign(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        transfer: &Transfer,
    ) -> Result<(TxEnvelope, u64), String> {
        let from = self.inner.address;
        let token = parse_address("token", &network.token).map_err(|error| error.message)?;
        let payee = parse_address("payee", &transfer.payee).map_err(|error| error.message)?;
        let wei = to_wei(transfer.amount).map_err(|error| error.message)?;
        let balance = token_balance(provider, token, from)
            .await
            .map_err(|error| rpc_error(network, error))?;
        if balance < wei {
            return Err(format!(
                "insufficient {} on {from} (network {}): balance {}, payment needs {}; top up (on test networks: golem-daemon payment fund --network {}) and it goes through",
                token_symbol(network),
                network.name,
                format_units(balance),
                transfer.amount,
                network.name
            ));
        }
        let input = transferCall {
            to: payee,
            amount: wei,
        }
        .abi_encode();
        let request = TransactionRequest::default()
            .with_from(from)
            .with_to(token)
            .with_input(input);
        let gas = provider
            .estimate_gas(request.clone())
            .await
            .map_err(|error| format!("estimating gas of the token transfer failed: {error}"))?;
        let fees = provider
            .estimate_eip1559_fees()
            .await
            .map_err(|error| rpc_error(network, error))?;
        let gas_limit = gas + gas / 5;
        let eth = provider
            .get_balance(from)
            .await
            .map_err(|error| rpc_error(network, error))?;
        let needed = U256::from(gas_limit) * U256::from(fees.max_fee_per_gas);
        if eth < needed {
            return Err(format!(
                "insufficient ETH for gas on {from} (network {}): balance {}, needs {}; top up and it goes through",
                network.name,
                format_units(eth),
                format_units(needed)
            ));
        }
        let chain_nonce = provider
            .get_transaction_count(from)
            .pending()
            .await
            .map_err(|error| rpc_error(network, error))?;
        let nonce = chain_nonce.max(self.stored_nonce(&network.name));
        let request = request
            .with_chain_id(network.chain_id)
            .with_nonce(nonce)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let wallet = EthereumWallet::from(self.inner.signer.clone());
        let envelope = request
            .build(&wallet)
            .await
            .map_err(|error| format!("signing the transfer failed: {error}"))?;
        Ok((envelope, nonce))
    }
}

fn token_symbol(network: &Erc20Network) -> &'static str {
    if matches!(network.name.as_str(), "polygon" | "mainnet") {
        "GLM"
    } else {
        "tGLM"
    }
}

/// `balanceOf(owner)` of `token`.
pub async fn token_balance(
    provider: &RootProvider,
    token: Address,
    owner: Address,
) -> Result<U256, String> {
    let request = TransactionRequest::default()
        .with_to(token)
        .with_input(balanceOfCall { owner }.abi_encode());
    let bytes = provider
        .call(request)
        .await
        .map_err(|error| error.to_string())?;
    balanceOfCall::abi_decode_returns(&bytes)
        .map_err(|error| format!("token {token} answered balanceOf oddly: {error}"))
}

impl PaymentDriver for Erc20Driver {
    fn name(&self) -> &'static str {
        "erc20"
    }

    fn pay(
        &self,
        platform: &Platform,
        payment_id: &str,
        payer: &str,
        payee: &str,
        amount: Decimal,
    ) -> Result<PayOutcome, GolemError> {
        let network = self.network(&platform.network)?;
        let payer_address = parse_address("payer", payer)?;
        if payer_address != self.inner.address {
            return Err(GolemError::bad_request(format!(
                "payer {payer} is not this node's address {}",
                self.inner.address
            )));
        }
        parse_address("payee", payee)?;
        to_wei(amount)?;
        // Checked and written under the lock: a concurrent pay() of the same id
        // (the accept path and the settle loop) must not overwrite a transfer
        // the worker has signed meanwhile, which would sign it again.
        let mut transfers = self.lock();
        if transfers.contains_key(payment_id) {
            return Ok(PayOutcome::Pending); // idempotent
        }
        let transfer = Transfer {
            payment_id: payment_id.to_string(),
            network: network.name.clone(),
            payee: payee.to_string(),
            amount,
            created: Utc::now(),
            stage: Stage::Queued,
            status: "queued".to_string(),
        };
        self.save(&transfer, None)?;
        transfers.insert(payment_id.to_string(), transfer);
        drop(transfers);
        self.inner.wake.notify_one();
        Ok(PayOutcome::Pending)
    }

    fn progress(&self, payment_id: &str) -> PayProgress {
        match self.lock().get(payment_id) {
            None => PayProgress::Unknown,
            Some(Transfer {
                stage: Stage::Confirmed { tx_hash, .. },
                ..
            }) => PayProgress::Settled(tx_hash.clone()),
            Some(transfer) => PayProgress::Pending(transfer.status.clone()),
        }
    }

    fn describe(&self) -> Vec<serde_json::Value> {
        self.inner
            .networks
            .values()
            .map(|network| {
                serde_json::json!({
                    "driver": "erc20",
                    "network": network.name,
                    "platform": format!("erc20-{}-{}", network.name, token_symbol(network).to_lowercase()),
                    "rpcUrl": network.rpc_url,
                    "chainId": network.chain_id,
                    "token": network.token,
                    "confirmations": network.confirmations,
                    "address": self.inner.address.to_string(),
                })
            })
            .collect()
    }
}

/// `payment fund` on a local dev chain (anvil): ETH for gas from the chain's
/// first unlocked dev account and freshly minted test tokens. Returns the
/// transaction hashes.
pub async fn fund_local(
    network: &Erc20Network,
    to: Address,
    tokens: Decimal,
    eth: Decimal,
) -> Result<Vec<String>, GolemError> {
    let url = network
        .rpc_url
        .parse()
        .map_err(|error| GolemError::bad_request(format!("invalid rpc url: {error}")))?;
    let provider: RootProvider = RootProvider::new_http(url);
    let unavailable = |error: String| GolemError::unavailable(rpc_error(network, error));
    let chain_id = tokio::time::timeout(RPC_TIMEOUT, provider.get_chain_id())
        .await
        .map_err(|_| unavailable("no answer within 10 s".into()))?
        .map_err(|error| unavailable(error.to_string()))?;
    if chain_id != network.chain_id {
        return Err(GolemError::bad_request(format!(
            "rpc {} serves chain {chain_id}, erc20 network {} expects {}",
            network.rpc_url, network.name, network.chain_id
        )));
    }
    let accounts = provider
        .get_accounts()
        .await
        .map_err(|error| unavailable(error.to_string()))?;
    let Some(dev) = accounts.first().copied() else {
        return Err(GolemError::bad_request(format!(
            "erc20 network {} at {} has no unlocked dev account, so it is not a local test chain; get test tokens from its faucet instead",
            network.name, network.rpc_url
        )));
    };
    let token = parse_address("token", &network.token)?;
    let mut hashes = Vec::new();
    let requests = [
        TransactionRequest::default()
            .with_from(dev)
            .with_to(to)
            .with_value(to_wei(eth)?),
        TransactionRequest::default()
            .with_from(dev)
            .with_to(token)
            .with_input(
                mintCall {
                    to,
                    amount: to_wei(tokens)?,
                }
                .abi_encode(),
            ),
    ];
    for request in requests {
        let pending = provider
            .send_transaction(request)
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        let receipt: alloy::rpc::types::TransactionReceipt = pending
            .get_receipt()
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        if !receipt.status() {
            return Err(GolemError::internal(format!(
                "funding transaction {} reverted; is {} the test token contract?",
                receipt.transaction_hash, network.token
            )));
        }
        hashes.push(receipt.transaction_hash.to_string());
    }
    Ok(hashes)
}

/// Token and ETH balances of `owner` on `network` (for `payment accounts`).
pub async fn balances(
    network: &Erc20Network,
    owner: Address,
) -> Result<(String, String), GolemError> {
    let url = network
        .rpc_url
        .parse()
        .map_err(|error| GolemError::bad_request(format!("invalid rpc url: {error}")))?;
    let provider: RootProvider = RootProvider::new_http(url);
    let token = parse_address("token", &network.token)?;
    let round = async {
        let tokens = token_balance(&provider, token, owner).await?;
        let eth = provider
            .get_balance(owner)
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>((format_units(tokens), format_units(eth)))
    };
    tokio::time::timeout(RPC_TIMEOUT, round)
        .await
        .map_err(|_| GolemError::unavailable(rpc_error(network, "no answer within 10 s")))?
        .map_err(|error| GolemError::unavailable(rpc_error(network, error)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::time::Instant;

    use alloy::consensus::Transaction as _;
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
            },
        );
        let networks = networks(&overrides).unwrap();
        let holesky = &networks["holesky"];
        assert_eq!(holesky.chain_id, 31337);
        assert_eq!(holesky.rpc_url, "http://127.0.0.1:8545");
        assert_eq!(networks["polygon"].chain_id, 137);
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
        };
        BTreeMap::from([(network.name.clone(), network)])
    }

    /// A driver on the fake node with [`PAYMENT`] (2.5 tGLM) handed to it.
    fn driver_paying(store: &Store, rpc: &FakeRpc) -> Erc20Driver {
        let driver =
            Erc20Driver::start(store, fake_networks(rpc), [7; 32], Arc::new(Notify::new()))
                .unwrap();
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
    async fn until(
        driver: &Erc20Driver,
        within: Duration,
        what: &str,
        mut done: impl FnMut() -> bool,
    ) {
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
        // Three more rounds of the worker (each asks the chain id first): the
        // receipt is asked for every round and nothing is signed again.
        let rounds = rpc.calls("eth_chainId");
        let receipts = rpc.calls("eth_getTransactionReceipt");
        until(
            &driver,
            Duration::from_secs(15),
            "three more rounds",
            || rpc.calls("eth_chainId") >= rounds + 3,
        )
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
}
