//! Reading balances and funding accounts on a local dev chain (`payment
//! fund`, `payment accounts`): plain RPC calls, no transfer queue.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use golem_model::payment::Decimal;
use golem_model::GolemError;

use super::{
    balanceOfCall, format_units, mintCall, parse_address, rpc_error, to_wei, Erc20Network,
    RPC_TIMEOUT,
};

pub(super) fn token_symbol(network: &Erc20Network) -> &'static str {
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
