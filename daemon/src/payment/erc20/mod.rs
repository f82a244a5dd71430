//! The `erc20` payment driver: ERC-20 token transfers over Ethereum JSON-RPC
//! (alloy), signed with the node's secp256k1 key. Networks are configured by
//! name (RPC URL, chain id, token contract, confirmations) and stay idle until a
//! payment needs them, so an unreachable RPC never blocks start-up.
//!
//! Transfers live in the sled `erc20` tree. The worker signs every queued
//! transfer of a round with consecutive nonces (the driver keeps the next one
//! per network) and writes them, with the advanced nonce, in one batch before
//! any is broadcast; it then sends them all without waiting for receipts, so
//! many transfers land in one block, and asks for the receipts of everything
//! in flight together when a new block comes. After a crash or an RPC outage
//! the very same transactions are re-broadcast: a payment can never be sent
//! twice. A transaction stuck below the network's fee (its max fee under the
//! next block's base fee) is replaced with the same nonce and fees raised by
//! at least 10 %, never above the network's `max-fee-per-gas` (`fees.rs`); the
//! hashes it replaced are kept and awaited too, since any one of them may be
//! the one mined. Missing tokens or gas leave the transfer queued with a
//! readable status until the account is topped up. It never holds its lock
//! across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy::consensus::{Transaction as _, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::eips::BlockNumberOrTag;
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
/// How long one RPC round may take before the network counts as unreachable.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Period of the worker's rounds while transfers are open (each asks for the
/// block number; receipts only when it moved).
const TICK: Duration = Duration::from_millis(200);
/// Receipts and re-broadcasts at least this often even when no block came.
const RECHECK: Duration = Duration::from_secs(2);
/// Quick rounds after a broadcast (auto-mining chains answer at once).
const QUICK_ROUNDS: u32 = 20;
const QUICK_ROUND: Duration = Duration::from_millis(25);

alloy::sol! {
    function transfer(address to, uint256 amount) returns (bool);
    function balanceOf(address owner) returns (uint256);
    function mint(address to, uint256 amount);
}

mod fees;
mod funding;
mod networks;
#[cfg(test)]
mod tests;

use fees::Fees;
use funding::token_symbol;
pub use funding::{balances, fund_local, token_balance};
pub use networks::{
    format_units, network_names, networks, parse_address, to_wei, Erc20Network,
    Erc20NetworkOverride, DECIMALS, DEFAULT_MAX_FEE_PER_GAS_GWEI,
};

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
        /// Earlier transactions of the same nonce this one replaced (stuck
        /// below the network's fee); one of them may still be the one mined.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaced: Vec<String>,
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
        self.save_all(std::slice::from_ref(transfer), next_nonce)
    }

    /// Write `transfers` (and the next nonce of their network) in one batch, flushed.
    fn save_all(&self, transfers: &[Transfer], next_nonce: Option<u64>) -> Result<(), GolemError> {
        let mut batch = sled::Batch::default();
        for transfer in transfers {
            batch.insert(
                format!("tx/{}", transfer.payment_id).as_bytes(),
                store::encode(transfer)?,
            );
        }
        if let (Some(nonce), Some(first)) = (next_nonce, transfers.first()) {
            batch.insert(
                format!("nonce/{}", first.network).as_bytes(),
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
        let mut watches: BTreeMap<String, NetworkWatch> = BTreeMap::new();
        let mut quick_rounds = 0;
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
                let watch = watches.entry(name.clone()).or_default();
                let round = self.process_network(&network, transfers, watch);
                match tokio::time::timeout(RPC_TIMEOUT * 3, round).await {
                    Ok(true) => quick_rounds = QUICK_ROUNDS,
                    Ok(false) => {}
                    Err(_) => {
                        tracing::warn!(network = %name, "erc20 round timed out");
                        watch.last_block = None;
                    }
                }
            }
            let pause = if quick_rounds > 0 {
                quick_rounds -= 1;
                QUICK_ROUND
            } else {
                TICK
            };
            let woken = self.inner.wake.notified();
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// A provider for `network` once it answers with the configured chain id;
    /// Err is the status of every transfer waiting on it.
    async fn connect(&self, network: &Erc20Network) -> Result<RootProvider, String> {
        let url = network
            .rpc_url
            .parse()
            .map_err(|error| format!("invalid rpc url: {error}"))?;
        let provider: RootProvider = RootProvider::new_http(url);
        match tokio::time::timeout(RPC_TIMEOUT, provider.get_chain_id()).await {
            Ok(Ok(chain_id)) if chain_id == network.chain_id => Ok(provider),
            Ok(Ok(chain_id)) => Err(format!(
                "rpc {} serves chain {chain_id}, erc20 network {} expects {}; fix GOLEM_ERC20_{}_CHAIN_ID or the rpc url",
                network.rpc_url,
                network.name,
                network.chain_id,
                network.name.to_uppercase()
            )),
            Ok(Err(error)) => Err(rpc_error(network, error)),
            Err(_) => Err(rpc_error(network, "no answer within 10 s")),
        }
    }

    /// One round on one network: confirm what was mined, replace what is
    /// stuck below the network's fee and re-broadcast the rest (when a new
    /// block came, or [`RECHECK`] passed), then sign every queued transfer
    /// with consecutive nonces and broadcast them without waiting for receipts.
    /// True when it sent new transactions.
    async fn process_network(
        &self,
        network: &Erc20Network,
        transfers: Vec<Transfer>,
        watch: &mut NetworkWatch,
    ) -> bool {
        let provider = match self.connect(network).await {
            Ok(provider) => provider,
            Err(status) => {
                for transfer in &transfers {
                    self.set_status(&transfer.payment_id, status.clone());
                }
                return false;
            }
        };
        let (queued, signed): (Vec<Transfer>, Vec<Transfer>) = transfers
            .into_iter()
            .partition(|transfer| transfer.stage == Stage::Queued);
        if !signed.is_empty() {
            let block = match provider.get_block_number().await {
                Ok(block) => block,
                Err(error) => {
                    let status = rpc_error(network, error);
                    for transfer in signed.iter().chain(&queued) {
                        self.set_status(&transfer.payment_id, status.clone());
                    }
                    return false;
                }
            };
            if watch.is_due(block) {
                watch.checked(block);
                let in_flight = self.confirm_mined(&provider, network, signed).await;
                let in_flight = self.replace_stuck(&provider, network, in_flight).await;
                self.broadcast(&provider, network, &in_flight).await;
            }
        }
        if queued.is_empty() {
            return false;
        }
        let fresh = self.sign_queued(&provider, network, queued).await;
        self.broadcast(&provider, network, &fresh).await;
        // Auto-mining chains answer at once: look at the receipts next round.
        watch.last_block = None;
        !fresh.is_empty()
    }

    /// Ask for the receipts of every signed transfer (all its transactions)
    /// at once; settle the mined ones, queue the reverted ones again. Returns
    /// those still in flight, in nonce order.
    async fn confirm_mined(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        signed: Vec<Transfer>,
    ) -> Vec<Transfer> {
        let checks = signed
            .iter()
            .map(|transfer| self.mined_transaction(provider, network, transfer));
        let results = futures::future::join_all(checks).await;
        let mut in_flight = Vec::new();
        for (transfer, result) in signed.into_iter().zip(results) {
            match result {
                Ok(Some((tx_hash, done))) => {
                    if let Err(status) = self.finish(transfer.clone(), done, &tx_hash) {
                        self.set_status(&transfer.payment_id, status);
                    }
                }
                Ok(None) => in_flight.push(transfer),
                Err(status) => {
                    self.set_status(&transfer.payment_id, status);
                    in_flight.push(transfer);
                }
            }
        }
        in_flight.sort_by_key(|transfer| transfer.nonce());
        in_flight
    }

    /// The transaction of `transfer` that was mined (the latest first, then
    /// those it replaced: only one of them can be, they share the nonce).
    async fn mined_transaction(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        transfer: &Transfer,
    ) -> Result<Option<(String, Result<u64, ()>)>, String> {
        let Stage::Signed {
            tx_hash, replaced, ..
        } = &transfer.stage
        else {
            return Ok(None);
        };
        for hash in std::iter::once(tx_hash).chain(replaced.iter().rev()) {
            let parsed: B256 = hash
                .parse()
                .map_err(|error| format!("stored transaction hash is invalid: {error}"))?;
            if let Some(done) = self.receipt(provider, network, parsed).await? {
                return Ok(Some((hash.clone(), done)));
            }
        }
        Ok(None)
    }

    /// Replace each transaction whose max fee is below the next block's base
    /// fee: same nonce, higher fees (see `fees.rs`), written before it is sent.
    async fn replace_stuck(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        in_flight: Vec<Transfer>,
    ) -> Vec<Transfer> {
        if in_flight.is_empty() {
            return in_flight;
        }
        let next_base_fee = match provider
            .get_fee_history(1, BlockNumberOrTag::Latest, &[])
            .await
        {
            Ok(history) => history.base_fee_per_gas.last().copied().unwrap_or(0),
            Err(error) => {
                tracing::debug!(network = %network.name, %error, "no fee history; stuck transactions wait");
                return in_flight;
            }
        };
        let mut estimate = None;
        let mut result = Vec::with_capacity(in_flight.len());
        for transfer in in_flight {
            let Some(envelope) = transfer.envelope() else {
                result.push(transfer);
                continue;
            };
            let signed = fees_of(&envelope);
            if !fees::is_stuck(signed, next_base_fee) {
                result.push(transfer);
                continue;
            }
            if estimate.is_none() {
                estimate = match provider.estimate_eip1559_fees().await {
                    Ok(fees) => Some(Fees {
                        max_fee: fees.max_fee_per_gas,
                        priority_fee: fees.max_priority_fee_per_gas,
                    }),
                    Err(error) => {
                        self.set_status(&transfer.payment_id, rpc_error(network, error));
                        result.push(transfer);
                        continue;
                    }
                };
            }
            let network_fees = estimate.unwrap_or(signed);
            match self
                .replace(
                    network,
                    transfer.clone(),
                    &envelope,
                    signed,
                    network_fees,
                    next_base_fee,
                )
                .await
            {
                Ok(replaced) => result.push(replaced),
                Err(status) => {
                    self.set_status(&transfer.payment_id, status);
                    result.push(transfer);
                }
            }
        }
        result
    }

    async fn replace(
        &self,
        network: &Erc20Network,
        mut transfer: Transfer,
        envelope: &TxEnvelope,
        signed: Fees,
        estimate: Fees,
        next_base_fee: u128,
    ) -> Result<Transfer, String> {
        let Stage::Signed {
            nonce,
            tx_hash: old_hash,
            mut replaced,
            ..
        } = transfer.stage.clone()
        else {
            return Ok(transfer);
        };
        let cap = u128::from(network.max_fee_per_gas) * fees::WEI_PER_GWEI;
        let stuck = format!(
            "transaction {old_hash} (nonce {nonce}) is stuck below the network's fee (next base fee {} gwei, its max fee {} gwei)",
            fees::gwei(next_base_fee),
            fees::gwei(signed.max_fee)
        );
        let new_fees = fees::replacement(signed, estimate, next_base_fee, cap)
            .map_err(|why| format!("{stuck}; {why}"))?;
        let to = envelope
            .to()
            .ok_or_else(|| format!("stored transaction {old_hash} has no recipient"))?;
        let request = TransactionRequest::default()
            .with_from(self.inner.address)
            .with_to(to)
            .with_input(envelope.input().clone())
            .with_chain_id(network.chain_id)
            .with_nonce(nonce)
            .with_gas_limit(envelope.gas_limit())
            .with_max_fee_per_gas(new_fees.max_fee)
            .with_max_priority_fee_per_gas(new_fees.priority_fee);
        let wallet = EthereumWallet::from(self.inner.signer.clone());
        let replacement = request
            .build(&wallet)
            .await
            .map_err(|error| format!("signing the replacement failed: {error}"))?;
        let tx_hash = replacement.tx_hash().to_string();
        replaced.push(old_hash.clone());
        transfer.stage = Stage::Signed {
            nonce,
            tx_hash: tx_hash.clone(),
            raw: alloy::hex::encode_prefixed(replacement.encoded_2718()),
            replaced,
        };
        transfer.status = format!(
            "{stuck}; replaced by {tx_hash} (max fee {} gwei, priority fee {} gwei)",
            fees::gwei(new_fees.max_fee),
            fees::gwei(new_fees.priority_fee)
        );
        // Written before it is sent: after a crash, all of its transactions are awaited.
        self.save_all(std::slice::from_ref(&transfer), None)
            .map_err(|error| error.message)?;
        tracing::info!(payment_id = %transfer.payment_id, %old_hash, %tx_hash, nonce,
            max_fee_gwei = %fees::gwei(new_fees.max_fee), "erc20 transaction stuck below the network's fee; replaced");
        self.lock()
            .insert(transfer.payment_id.clone(), transfer.clone());
        Ok(transfer)
    }

    /// Send each signed transaction (in nonce order) without waiting for its
    /// receipt; "already known" and "nonce too low" count as sent.
    async fn broadcast(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        signed: &[Transfer],
    ) {
        for transfer in signed {
            let Stage::Signed {
                nonce,
                tx_hash,
                raw,
                ..
            } = &transfer.stage
            else {
                continue;
            };
            let status = match alloy::hex::decode(raw) {
                Err(error) => format!("stored transaction is invalid: {error}"),
                Ok(bytes) => match provider.send_raw_transaction(&bytes).await {
                    Ok(_) => self.sent_status(transfer, network, tx_hash, *nonce),
                    Err(error) => {
                        let text = error.to_string();
                        if text.contains("nonce too low") {
                            // This nonce is used on chain, by this very transaction
                            // (mined, receipt not visible yet), one it replaced, or
                            // another one; it is only ever awaited, never signed again
                            // with a new nonce (that could pay twice).
                            format!(
                                "nonce {nonce} of transaction {tx_hash} is used on chain but the rpc has no receipt of it: mined and not visible yet, or another transaction from {} took the nonce; waiting for its receipt (it is never signed again with a new nonce, which could pay twice)",
                                self.inner.address
                            )
                        } else if text.contains("already known")
                            || text.contains("already imported")
                        {
                            self.sent_status(transfer, network, tx_hash, *nonce)
                        } else if text.contains("insufficient funds") {
                            format!(
                                "insufficient ETH for gas on {} (network {}); top up and it goes through",
                                self.inner.address, network.name
                            )
                        } else {
                            rpc_error(network, text)
                        }
                    }
                },
            };
            self.set_status(&transfer.payment_id, status);
        }
    }

    /// The status of a transfer whose transaction the node has.
    fn sent_status(
        &self,
        transfer: &Transfer,
        network: &Erc20Network,
        tx_hash: &str,
        nonce: u64,
    ) -> String {
        let waiting = format!(
            "transaction {tx_hash} (nonce {nonce}) sent, waiting for {} confirmation(s)",
            network.confirmations
        );
        match &transfer.stage {
            // Keep saying why it was replaced.
            Stage::Signed { replaced, .. } if !replaced.is_empty() => format!(
                "{waiting}; it replaced {} (stuck below the network's fee)",
                replaced.join(", ")
            ),
            _ => waiting,
        }
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

    /// Sign the queued transfers, oldest first, with consecutive nonces as
    /// far as tokens and gas cover them (counting what is in flight), and
    /// write them with the next nonce in one batch before any is sent.
    /// Returns the signed ones; the first one not covered says why in its status.
    async fn sign_queued(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        queued: Vec<Transfer>,
    ) -> Vec<Transfer> {
        match self.sign_batch(provider, network, &queued).await {
            Ok(signed) => signed,
            Err((signed, payment_id, status)) => {
                self.set_status(&payment_id, status);
                signed
            }
        }
    }

    async fn sign_batch(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        queued: &[Transfer],
    ) -> Result<Vec<Transfer>, (Vec<Transfer>, String, String)> {
        let from = self.inner.address;
        let first = queued[0].payment_id.clone();
        let fail = |status: String| (Vec::new(), first.clone(), status);
        let token = parse_address("token", &network.token).map_err(|error| fail(error.message))?;
        let mut tokens = token_balance(provider, token, from)
            .await
            .map_err(|error| fail(rpc_error(network, error)))?;
        let mut eth = provider
            .get_balance(from)
            .await
            .map_err(|error| fail(rpc_error(network, error)))?;
        // What the transactions in flight will take from both balances.
        for transfer in self.open_transfers() {
            if transfer.network != network.name {
                continue;
            }
            if let Some(envelope) = transfer.envelope() {
                let gas = U256::from(envelope.gas_limit()) * U256::from(envelope.max_fee_per_gas());
                eth = eth.saturating_sub(gas);
                if let Ok(wei) = to_wei(transfer.amount) {
                    tokens = tokens.saturating_sub(wei);
                }
            }
        }
        let estimate = provider
            .estimate_eip1559_fees()
            .await
            .map_err(|error| fail(rpc_error(network, error)))?;
        let cap = u128::from(network.max_fee_per_gas) * fees::WEI_PER_GWEI;
        let offer = fees::first_offer(
            Fees {
                max_fee: estimate.max_fee_per_gas,
                priority_fee: estimate.max_priority_fee_per_gas,
            },
            cap,
        );
        let chain_nonce = provider
            .get_transaction_count(from)
            .pending()
            .await
            .map_err(|error| fail(rpc_error(network, error)))?;
        let mut nonce = chain_nonce.max(self.stored_nonce(&network.name));
        let wallet = EthereumWallet::from(self.inner.signer.clone());
        let mut signed = Vec::new();
        let mut stopped = None;
        for transfer in queued {
            match self
                .sign_one(
                    provider,
                    network,
                    transfer,
                    token,
                    nonce,
                    offer,
                    &wallet,
                    &mut tokens,
                    &mut eth,
                )
                .await
            {
                Ok(transfer) => {
                    signed.push(transfer);
                    nonce += 1;
                }
                Err(status) => {
                    // Keep order: a later transfer must not take a nonce first.
                    stopped = Some((transfer.payment_id.clone(), status));
                    break;
                }
            }
        }
        if !signed.is_empty() {
            if let Err(error) = self.save_all(&signed, Some(nonce)) {
                let status = error.message;
                return Err((Vec::new(), first, status));
            }
            let mut transfers = self.lock();
            for transfer in &signed {
                transfers.insert(transfer.payment_id.clone(), transfer.clone());
            }
        }
        match stopped {
            None => Ok(signed),
            Some((payment_id, status)) => Err((signed, payment_id, status)),
        }
    }

    /// Check that tokens and gas cover `transfer`, then sign it with `nonce`.
    #[allow(clippy::too_many_arguments)] // one transfer of a batch and the batch's running totals
    async fn sign_one(
        &self,
        provider: &RootProvider,
        network: &Erc20Network,
        transfer: &Transfer,
        token: Address,
        nonce: u64,
        offer: Fees,
        wallet: &EthereumWallet,
        tokens: &mut U256,
        eth: &mut U256,
    ) -> Result<Transfer, String> {
        let from = self.inner.address;
        let payee = parse_address("payee", &transfer.payee).map_err(|error| error.message)?;
        let wei = to_wei(transfer.amount).map_err(|error| error.message)?;
        if *tokens < wei {
            return Err(format!(
                "insufficient {} on {from} (network {}): balance {} after the transfers in flight, payment needs {}; top up (on test networks: golem-daemon payment fund --network {}) and it goes through",
                token_symbol(network),
                network.name,
                format_units(*tokens),
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
        let gas_limit = gas + gas / 5;
        let needed = U256::from(gas_limit) * U256::from(offer.max_fee);
        if *eth < needed {
            return Err(format!(
                "insufficient ETH for gas on {from} (network {}): balance {} after the transfers in flight, needs {}; top up and it goes through",
                network.name,
                format_units(*eth),
                format_units(needed)
            ));
        }
        let envelope = request
            .with_chain_id(network.chain_id)
            .with_nonce(nonce)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(offer.max_fee)
            .with_max_priority_fee_per_gas(offer.priority_fee)
            .build(wallet)
            .await
            .map_err(|error| format!("signing the transfer failed: {error}"))?;
        *tokens -= wei;
        *eth -= needed;
        let tx_hash = envelope.tx_hash().to_string();
        let mut transfer = transfer.clone();
        transfer.stage = Stage::Signed {
            nonce,
            tx_hash: tx_hash.clone(),
            raw: alloy::hex::encode_prefixed(envelope.encoded_2718()),
            replaced: Vec::new(),
        };
        transfer.status = format!("signed as {tx_hash} (nonce {nonce}), broadcasting");
        Ok(transfer)
    }
}

/// When a network's in-flight transactions were last looked at.
#[derive(Default)]
struct NetworkWatch {
    last_block: Option<u64>,
    at: Option<std::time::Instant>,
}

impl NetworkWatch {
    /// Look again when a block came (or on the first round), and at least every [`RECHECK`].
    fn is_due(&self, block: u64) -> bool {
        self.last_block != Some(block) || self.at.is_none_or(|at| at.elapsed() >= RECHECK)
    }

    fn checked(&mut self, block: u64) {
        self.last_block = Some(block);
        self.at = Some(std::time::Instant::now());
    }
}

/// The fees a signed transaction offers.
fn fees_of(envelope: &TxEnvelope) -> Fees {
    Fees {
        max_fee: envelope.max_fee_per_gas(),
        priority_fee: envelope.max_priority_fee_per_gas().unwrap_or(0),
    }
}

impl Transfer {
    /// Its current signed transaction, decoded.
    fn envelope(&self) -> Option<TxEnvelope> {
        let Stage::Signed { raw, .. } = &self.stage else {
            return None;
        };
        let bytes = alloy::hex::decode(raw).ok()?;
        TxEnvelope::decode_2718(&mut bytes.as_slice()).ok()
    }

    fn nonce(&self) -> u64 {
        match &self.stage {
            Stage::Signed { nonce, .. } => *nonce,
            _ => u64::MAX,
        }
    }
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
