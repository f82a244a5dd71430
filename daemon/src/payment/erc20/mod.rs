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

mod funding;
mod networks;
#[cfg(test)]
mod tests;

use funding::token_symbol;
pub use funding::{balances, fund_local, token_balance};
pub use networks::{
    format_units, network_names, networks, parse_address, to_wei, Erc20Network,
    Erc20NetworkOverride, DECIMALS,
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
