//! `golem-daemon payment ...`: status, accounts, driver list and
//! release-allocations ask the running daemon over its bus socket
//! (`/local/payment`); `fund` talks to the erc20 network's RPC itself (the node
//! key and network config are all it needs), so it works whether or not the
//! daemon runs.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use golem_bus::BusClient;
use golem_model::bus::BusMessage;
use golem_model::payment::{
    Account, Decimal, GetPaymentStatus, ListAccounts, ListPaymentDrivers, PaymentStatusReport,
    ReleaseAllocations, PAYMENT_LOCAL_SERVICE,
};

use super::erc20;
use crate::config::{self, DaemonConfig};

#[derive(Debug, Subcommand)]
pub enum PaymentCommand {
    /// Per platform: amounts requested, accepted, paid and pending (both ways) and allocations
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// The node's payment accounts (platform, address, send/receive)
    Accounts {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Payment drivers and their networks
    #[command(subcommand)]
    Driver(DriverCommand),
    /// Release every live allocation (what is left of them is freed)
    ReleaseAllocations {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Get test tokens on a local dev chain (anvil): mints tokens and sends ETH for gas
    Fund {
        /// erc20 network, as configured (point it at anvil with GOLEM_ERC20_<NETWORK>_RPC_URL, _CHAIN_ID, _TOKEN)
        #[arg(long, default_value = "holesky")]
        network: String,
        /// Tokens to mint
        #[arg(long, default_value = "1000")]
        amount: Decimal,
        /// ETH for gas to send from the chain's dev account
        #[arg(long, default_value = "10")]
        eth: Decimal,
        /// Address to fund [default: this node's]
        #[arg(long)]
        address: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DriverCommand {
    /// List drivers, networks, RPC URLs, chain ids and token contracts
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

async fn ask<M: BusMessage>(data_dir: &Path, message: M) -> anyhow::Result<M::Reply> {
    let socket = config::bus_socket_path(data_dir);
    let client = BusClient::connect(&socket, "golem-daemon-cli")
        .await
        .context(
            "payment records are kept by the running daemon: start it with `golem-daemon run`",
        )?;
    Ok(client.call(PAYMENT_LOCAL_SERVICE, &message).await?)
}

/// Run one `payment` subcommand.
pub fn execute(config: &DaemonConfig, command: PaymentCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let data_dir = config.data_dir.clone();
    match command {
        PaymentCommand::Status { json } => {
            let report = runtime.block_on(ask(&data_dir, GetPaymentStatus))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_status(&report);
            }
        }
        PaymentCommand::Accounts { json } => {
            let accounts = runtime.block_on(ask(&data_dir, ListAccounts))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&accounts)?);
            } else {
                print_accounts(&accounts);
            }
        }
        PaymentCommand::Driver(DriverCommand::List { json }) => {
            let drivers = runtime.block_on(ask(&data_dir, ListPaymentDrivers))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&drivers)?);
            } else {
                println!(
                    "{:<8} {:<9} {:<20} {:<10} {:<44} RPC",
                    "DRIVER", "NETWORK", "PLATFORM", "CHAIN", "TOKEN"
                );
                for driver in drivers {
                    let text = |key: &str| match &driver[key] {
                        serde_json::Value::String(text) => text.clone(),
                        serde_json::Value::Null => "-".to_string(),
                        other => other.to_string(),
                    };
                    println!(
                        "{:<8} {:<9} {:<20} {:<10} {:<44} {}",
                        text("driver"),
                        text("network"),
                        text("platform"),
                        text("chainId"),
                        text("token"),
                        text("rpcUrl")
                    );
                }
            }
        }
        PaymentCommand::ReleaseAllocations { json } => {
            let ids = runtime.block_on(ask(&data_dir, ReleaseAllocations))?;
            if json {
                println!("{}", serde_json::json!({ "released": ids }));
            } else {
                println!("released {} allocation(s)", ids.len());
                for id in ids {
                    println!("  {id}");
                }
            }
        }
        PaymentCommand::Fund {
            network,
            amount,
            eth,
            address,
            json,
        } => {
            let networks = erc20::networks(&config.payment.erc20)?;
            let chosen = networks.get(&network).with_context(|| {
                format!(
                    "unknown erc20 network {network:?}; known: {}",
                    erc20::network_names().join(", ")
                )
            })?;
            let to = match address {
                Some(address) => erc20::parse_address("funded", &address)?,
                None => {
                    let (key, _) =
                        crate::identity::NodeKey::load_or_create(&data_dir.join("identity.key"))?;
                    erc20::parse_address("node", &key.node_id().to_string())?
                }
            };
            let hashes = runtime.block_on(erc20::fund_local(chosen, to, amount, eth))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "network": network,
                        "address": to.to_string(),
                        "tokens": amount.to_string(),
                        "eth": eth.to_string(),
                        "transactions": hashes,
                    })
                );
            } else {
                println!("funded {to} on {network}: {amount} tokens, {eth} ETH for gas");
                for hash in hashes {
                    println!("  {hash}");
                }
            }
        }
    }
    Ok(())
}

fn print_status(report: &PaymentStatusReport) {
    println!("node {}", report.node_id);
    if report.platforms.is_empty() {
        println!("no payments, documents or allocations yet");
        return;
    }
    for status in &report.platforms {
        println!("\n{}", status.platform);
        println!(
            "  {:<10} {:>14} {:>14} {:>14} {:>14}",
            "", "REQUESTED", "ACCEPTED", "PAID", "PENDING"
        );
        for (name, flow) in [
            ("outgoing", &status.outgoing),
            ("incoming", &status.incoming),
        ] {
            println!(
                "  {:<10} {:>14} {:>14} {:>14} {:>14}",
                name,
                flow.requested.to_string(),
                flow.accepted.to_string(),
                flow.paid.to_string(),
                flow.pending.to_string()
            );
        }
        let allocations = &status.allocations;
        println!(
            "  allocations: {} live ({} released), total {}, spent {}, remaining {}",
            allocations.count,
            allocations.released,
            allocations.total,
            allocations.spent,
            allocations.remaining
        );
        let now = chrono::Utc::now();
        for pending in &status.pending_payments {
            let due = match pending.due {
                Some(due) if due < now => format!(" (OVERDUE since {})", due.to_rfc3339()),
                Some(due) => format!(" (due {})", due.to_rfc3339()),
                None => String::new(),
            };
            println!(
                "  pending payment {} of invoice {}: {} to {}{due} — {}",
                pending.payment_id,
                pending.invoice_id,
                pending.amount,
                pending.payee_addr,
                pending.status
            );
        }
    }
    for late in &report.late_payments {
        let state = match late.settled_at {
            Some(at) => format!("paid late at {}", at.to_rfc3339()),
            None => "NOT PAID".to_string(),
        };
        println!(
            "late payer {}: invoice {} ({}) accepted {}, due {} (payment timeout {} s): {state}",
            late.payer_id,
            late.invoice_id,
            late.amount,
            late.accepted_at.to_rfc3339(),
            late.due.to_rfc3339(),
            late.payment_timeout_sec
        );
    }
}

fn print_accounts(accounts: &[Account]) {
    println!(
        "{:<20} {:<44} {:<5} {:<7}",
        "PLATFORM", "ADDRESS", "SEND", "RECEIVE"
    );
    for account in accounts {
        println!(
            "{:<20} {:<44} {:<5} {:<7}",
            account.platform, account.address, account.send, account.receive
        );
    }
}
