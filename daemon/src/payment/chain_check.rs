//! The provider's check, on chain, of an erc20 payment a requestor reports:
//! the transaction's receipt must exist with status ok, carry `Transfer` events
//! of the network's token contract from the payer to the payee adding up to at
//! least the amount due, and be buried under the network's `confirmations`.
//! Until then the payment is pending; a wrong or reverted transaction is
//! refused. It reads the chain only; it never signs or sends anything.

use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, RootProvider};
use golem_model::payment::Decimal;

use super::erc20::{parse_address, to_wei, Erc20Network};

alloy::sol! {
    event Transfer(address indexed from, address indexed to, uint256 value);
}

/// What the chain says about a reported transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCheck {
    /// Mined with enough confirmations and paying at least the amount due.
    Confirmed { block: u64 },
    /// Not mined, not confirmed enough, or the RPC did not answer: ask again later.
    Pending(String),
    /// The transaction cannot be this payment.
    Invalid(String),
}

/// What a reported transfer must be.
pub struct ExpectedTransfer<'a> {
    pub tx_hash: &'a str,
    pub payer: &'a str,
    pub payee: &'a str,
    pub amount: Decimal,
}

/// Ask `network`'s RPC about `expected` within `timeout`.
pub async fn check_transfer(
    network: &Erc20Network,
    expected: &ExpectedTransfer<'_>,
    timeout: Duration,
) -> TransferCheck {
    let parsed = (|| {
        let hash: B256 = expected
            .tx_hash
            .trim()
            .parse()
            .map_err(|_| format!("{:?} is not a transaction hash", expected.tx_hash))?;
        let token = parse_address("token", &network.token).map_err(|error| error.message)?;
        let payer = parse_address("payer", expected.payer).map_err(|error| error.message)?;
        let payee = parse_address("payee", expected.payee).map_err(|error| error.message)?;
        let due = to_wei(expected.amount).map_err(|error| error.message)?;
        Ok::<_, String>((hash, token, payer, payee, due))
    })();
    let (hash, token, payer, payee, due) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => return TransferCheck::Invalid(reason),
    };
    let url = match network.rpc_url.parse() {
        Ok(url) => url,
        Err(error) => return TransferCheck::Pending(format!("invalid rpc url: {error}")),
    };
    let provider: RootProvider = RootProvider::new_http(url);
    let round = async {
        let chain_id = provider
            .get_chain_id()
            .await
            .map_err(|error| error.to_string())?;
        if chain_id != network.chain_id {
            return Err(format!(
                "rpc {} serves chain {chain_id}, erc20 network {} expects {}",
                network.rpc_url, network.name, network.chain_id
            ));
        }
        let receipt = provider
            .get_transaction_receipt(hash)
            .await
            .map_err(|error| error.to_string())?;
        let Some(receipt) = receipt else {
            return Ok(TransferCheck::Pending(format!(
                "transaction {hash} is not mined yet"
            )));
        };
        if !receipt.status() {
            return Ok(TransferCheck::Invalid(format!(
                "transaction {hash} reverted"
            )));
        }
        let paid = transferred(
            receipt
                .logs()
                .iter()
                .filter(|log| !log.removed)
                .map(|log| &log.inner),
            token,
            payer,
            payee,
        );
        if paid < due {
            return Ok(TransferCheck::Invalid(format!(
                "transaction {hash} moves {} of token {token} from {payer} to {payee}, the payment claims {}",
                super::erc20::format_units(paid),
                expected.amount.normalize()
            )));
        }
        let Some(block) = receipt.block_number else {
            return Ok(TransferCheck::Pending(format!(
                "transaction {hash} has no block yet"
            )));
        };
        let latest = provider
            .get_block_number()
            .await
            .map_err(|error| error.to_string())?;
        let confirmations = (latest + 1).saturating_sub(block);
        if confirmations < network.confirmations {
            return Ok(TransferCheck::Pending(format!(
                "transaction {hash} has {confirmations} of {} confirmation(s)",
                network.confirmations
            )));
        }
        Ok(TransferCheck::Confirmed { block })
    };
    match tokio::time::timeout(timeout, round).await {
        Ok(Ok(check)) => check,
        Ok(Err(error)) => TransferCheck::Pending(format!(
            "erc20 network {} ({}) unreachable: {error}",
            network.name, network.rpc_url
        )),
        Err(_) => TransferCheck::Pending(format!(
            "erc20 network {} ({}) did not answer within {} s",
            network.name,
            network.rpc_url,
            timeout.as_secs()
        )),
    }
}

/// The sum of `Transfer(payer → payee)` events of `token` among `logs`.
fn transferred<'a>(
    logs: impl Iterator<Item = &'a alloy::primitives::Log>,
    token: Address,
    payer: Address,
    payee: Address,
) -> U256 {
    logs.filter(|log| log.address == token)
        .filter_map(|log| {
            <Transfer as alloy::sol_types::SolEvent>::decode_log(log)
                .ok()
                .map(|decoded| decoded.data)
        })
        .filter(|transfer| transfer.from == payer && transfer.to == payee)
        .fold(U256::ZERO, |sum, transfer| {
            sum.saturating_add(transfer.value)
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use alloy::primitives::{address, Log};
    use alloy::sol_types::SolEvent;

    fn log(token: Address, from: Address, to: Address, value: u64) -> Log {
        let event = Transfer {
            from,
            to,
            value: U256::from(value),
        };
        Log {
            address: token,
            data: event.encode_log_data(),
        }
    }

    #[test]
    fn only_the_tokens_transfers_from_payer_to_payee_count() {
        let token = address!("5FbDB2315678afecb367f032d93F642f64180aa3");
        let other_token = address!("e7f1725E7734CE288F8367e1Bb143E90bb3F0512");
        let payer = address!("1111111111111111111111111111111111111111");
        let payee = address!("2222222222222222222222222222222222222222");
        let stranger = address!("3333333333333333333333333333333333333333");
        let logs = [
            log(token, payer, payee, 5),
            log(token, payer, payee, 2),
            log(other_token, payer, payee, 100),
            log(token, payer, stranger, 100),
            log(token, stranger, payee, 100),
        ];
        assert_eq!(transferred(logs.iter(), token, payer, payee), U256::from(7));
        let garbage = Log {
            address: token,
            data: alloy::primitives::LogData::new_unchecked(vec![], vec![1, 2].into()),
        };
        assert_eq!(
            transferred([garbage].iter(), token, payer, payee),
            U256::ZERO
        );
    }
}
