//! The erc20 networks: built-in names with their RPC URL, chain id and token
//! contract, overridden from `[payment.erc20.<network>]` or
//! `GOLEM_ERC20_<NETWORK>_*`; and exact conversions between decimal amounts
//! and the token's smallest unit.

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use golem_model::payment::Decimal;
use golem_model::GolemError;
use serde::{Deserialize, Serialize};

/// Token decimals (GLM and tGLM).
pub const DECIMALS: u32 = 18;

/// One erc20 network: where to reach it and which token it pays in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Erc20Network {
    pub name: String,
    pub rpc_url: String,
    pub chain_id: u64,
    pub token: String,
    pub confirmations: u64,
    /// Cap of a transfer's max fee per gas, in gwei: the driver never signs
    /// above it, also when replacing a transaction stuck below the network's fee.
    pub max_fee_per_gas: u64,
}

/// The default cap of the max fee per gas, in gwei.
pub const DEFAULT_MAX_FEE_PER_GAS_GWEI: u64 = 500;

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
    /// In gwei (`GOLEM_ERC20_<NETWORK>_MAX_FEE_PER_GAS`, as the original's
    /// `<NETWORK>_MAX_FEE_PER_GAS`).
    pub max_fee_per_gas: Option<u64>,
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
                max_fee_per_gas: DEFAULT_MAX_FEE_PER_GAS_GWEI,
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
        if let Some(cap) = changes.max_fee_per_gas {
            if cap == 0 {
                return Err(GolemError::bad_request(format!(
                    "max-fee-per-gas of erc20 network {name} is 0 gwei; no transfer could be sent: set it in gwei, e.g. {DEFAULT_MAX_FEE_PER_GAS_GWEI}"
                )));
            }
            network.max_fee_per_gas = cap;
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
