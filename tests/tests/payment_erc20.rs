//! End-to-end tests of the erc20 driver with two real daemons whose `holesky`
//! network is pointed (through the config file) at a local chain:
//! - always: an unreachable RPC does not block start-up; an accepted invoice
//!   stays a pending payment with a clear status; the `payment` CLI commands.
//! - with `GOLEM_TEST_ANVIL=1`: on anvil with the GLM-like test token,
//!   allocation → debit notes → invoice → accept → paid, the provider's token
//!   balance changing by exactly the invoiced amount, through an empty wallet
//!   (pending until `payment fund`), a requestor restart between accept and
//!   settle, anvil stopped and restarted, duplicate and over-budget accepts;
//!   the requestor killed between signing and mining, its transaction re-sent
//!   unchanged after the restart.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use golem_client::GolemClient;
use golem_model::market::DemandOfferBase;
use golem_model::payment::{Allocation, DocumentStatus};
use golem_tests::anvil::{anvil_gate, anvil_required, Anvil, ANVIL_CHAIN_ID};
use golem_tests::negotiation::{negotiate_agreement, spawn_provider_negotiator};
use golem_tests::standin::create_bare_activity;
use golem_tests::{eventually, stdout_of, DaemonProcess, Sandbox};
use serde_json::{json, Value};

const SUBNET: &str = "e2e-payment-erc20";
const PLATFORM: &str = "erc20-holesky-tglm";
const WEI: u128 = 1_000_000_000_000_000_000;

fn offer(provider_id: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.com.payment.platform.erc20-holesky-tglm.address": provider_id,
            "golem.com.payment.protocol.version": "3",
            "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 5.0],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }),
        constraints: format!("(golem.node.debug.subnet={SUBNET})"),
    }
}

fn demand(decoration: &Value) -> DemandOfferBase {
    let mut properties = json!({
        "golem.node.debug.subnet": SUBNET,
        "golem.com.payment.chosen-platform": PLATFORM,
    });
    let mut constraints = vec![format!("(golem.node.debug.subnet={SUBNET})")];
    for property in decoration["properties"].as_array().unwrap() {
        properties[property["key"].as_str().unwrap()] = property["value"].clone();
    }
    for constraint in decoration["constraints"].as_array().unwrap() {
        constraints.push(constraint.as_str().unwrap().to_string());
    }
    DemandOfferBase {
        properties,
        constraints: format!("(&{})", constraints.join("\n\t")),
    }
}

/// A config file pointing `holesky` at `rpc_url`.
fn write_config(dir: &Path, rpc_url: &str, token: &str) -> PathBuf {
    let path = dir.join("erc20.toml");
    std::fs::write(
        &path,
        format!(
            "[payment.erc20.holesky]\nrpc-url = \"{rpc_url}\"\nchain-id = {ANVIL_CHAIN_ID}\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    path
}

struct Parties {
    provider: GolemClient,
    requestor: GolemClient,
    provider_id: String,
    requestor_id: String,
    agreement_id: String,
    allocation: Allocation,
    /// An activity the requestor created on the agreement, which debit notes name.
    activity_id: String,
    /// Holds the activity's stand-in exe unit on the provider's bus.
    _exe_unit: golem_bus::BusClient,
}

/// Provider `p` and requestor `r` with `config`, an erc20 allocation of
/// `budget` and an approved agreement paid on erc20-holesky-tglm.
async fn parties(sandbox: &mut Sandbox, config: &Path, budget: &str) -> Parties {
    let config = config.to_str().unwrap();
    sandbox.daemon_with("p", &["--config", config]).unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("r", &["--config", config, "--bootstrap", &bootstrap])
        .unwrap();
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let requestor_id = sandbox.daemons()[1].node_id().unwrap();
    let provider = sandbox.daemons()[0].client();
    let requestor = sandbox.daemons()[1].client();
    let allocation = requestor.create_allocation(PLATFORM, budget).await.unwrap();
    let decoration = serde_json::to_value(
        requestor
            .demand_decorations(&[&allocation.allocation_id])
            .await
            .unwrap(),
    )
    .unwrap();
    let offer_id = provider
        .subscribe_offer(&offer(&provider_id))
        .await
        .unwrap();
    spawn_provider_negotiator(provider.clone(), offer_id, offer(&provider_id));
    let agreement_id = negotiate_agreement(&requestor, &demand(&decoration)).await;
    eventually(
        Duration::from_secs(10),
        "the provider's agreement approved",
        || {
            let provider = provider.clone();
            let id = agreement_id.clone();
            async move {
                let agreement = provider.agreement(&id).await.ok()?;
                (agreement.state == golem_model::market::AgreementState::Approved).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let (activity_id, exe_unit) =
        create_bare_activity(&requestor, &sandbox.daemons()[0], &agreement_id)
            .await
            .unwrap();
    Parties {
        provider,
        requestor,
        provider_id,
        requestor_id,
        agreement_id,
        allocation,
        activity_id,
        _exe_unit: exe_unit,
    }
}

/// Debit notes 1 and 1.5 accepted, then an invoice of `amount` received by the requestor.
async fn bill(parties: &Parties, amount: &str) -> String {
    for due in ["1", "1.5"] {
        let note = parties
            .provider
            .issue_debit_note(&parties.agreement_id, &parties.activity_id, due)
            .await
            .unwrap();
        parties
            .provider
            .send_debit_note(&note.debit_note_id)
            .await
            .unwrap();
        parties
            .requestor
            .accept_debit_note(&note.debit_note_id, due, &parties.allocation.allocation_id)
            .await
            .unwrap();
    }
    let invoice = parties
        .provider
        .issue_invoice(&parties.agreement_id, amount)
        .await
        .unwrap();
    parties
        .provider
        .send_invoice(&invoice.invoice_id)
        .await
        .unwrap();
    invoice.invoice_id
}

fn status_json(daemon: &DaemonProcess) -> Value {
    serde_json::from_str(&stdout_of(daemon.cli(&["payment", "status", "--json"]).unwrap()).unwrap())
        .unwrap()
}

fn platform_status<'a>(status: &'a Value, platform: &str) -> &'a Value {
    status["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["platform"] == json!(platform))
        .unwrap_or_else(|| panic!("no {platform} in {status}"))
}

/// The pending payment's status text on the requestor (`payment status --json`).
fn pending_status(daemon: &DaemonProcess) -> Option<String> {
    let status = status_json(daemon);
    let platform = platform_status(&status, PLATFORM);
    platform["pendingPayments"][0]["status"]
        .as_str()
        .map(String::from)
}

async fn wait_pending_status(daemon: &DaemonProcess, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = pending_status(daemon);
        if let Some(text) = &status {
            if text.contains(needle) {
                return text.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "pending payment status never mentioned {needle:?}; last: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn unreachable_rpc_leaves_the_payment_pending_with_a_clear_status() {
    let mut sandbox = Sandbox::new();
    // A port nothing listens on: start-up must not care.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        sandbox.path(),
        &format!("http://127.0.0.1:{closed}"),
        "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    );
    let started = Instant::now();
    let parties = parties(&mut sandbox, &config, "10").await;
    assert!(started.elapsed() < Duration::from_secs(60));
    let invoice_id = bill(&parties, "2.5").await;
    parties
        .requestor
        .accept_invoice(&invoice_id, "2.5", &parties.allocation.allocation_id)
        .await
        .unwrap();
    let provider_dir = sandbox.daemons()[0].data_dir.clone();
    let requestor = &sandbox.daemons()[1];
    let status = wait_pending_status(requestor, "rpc http://127.0.0.1").await;
    assert!(status.contains("holesky"), "{status}");
    assert_eq!(
        parties.requestor.invoice(&invoice_id).await.unwrap().status,
        DocumentStatus::Accepted
    );
    assert!(parties.requestor.payments().await.unwrap().is_empty());

    let report = status_json(requestor);
    let erc20 = platform_status(&report, PLATFORM);
    assert_eq!(erc20["outgoing"]["requested"], json!("2.5"));
    assert_eq!(erc20["outgoing"]["accepted"], json!("2.5"));
    assert_eq!(erc20["outgoing"]["paid"], json!("0"));
    assert_eq!(erc20["outgoing"]["pending"], json!("2.5"));
    assert_eq!(erc20["allocations"]["spent"], json!("2.5"));
    assert_eq!(erc20["allocations"]["remaining"], json!("7.5"));
    let text = stdout_of(requestor.cli(&["payment", "status"]).unwrap()).unwrap();
    assert!(
        text.contains(PLATFORM) && text.contains("pending payment"),
        "{text}"
    );

    // Provider view: invoice accepted (not settled), incoming accepted.
    eventually(
        Duration::from_secs(10),
        "acceptance on the provider",
        || {
            let provider = parties.provider.clone();
            let id = invoice_id.clone();
            async move {
                (provider.invoice(&id).await.ok()?.status == DocumentStatus::Accepted).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let provider_report = serde_json::from_str::<Value>(
        &stdout_of(
            golem_tests::daemon_cli(&provider_dir, &["payment", "status", "--json"]).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        platform_status(&provider_report, PLATFORM)["incoming"]["accepted"],
        json!("2.5")
    );

    // The other payment commands.
    let drivers: Value = serde_json::from_str(
        &stdout_of(
            requestor
                .cli(&["payment", "driver", "list", "--json"])
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let holesky = drivers
        .as_array()
        .unwrap()
        .iter()
        .find(|driver| driver["network"] == json!("holesky"))
        .unwrap();
    assert_eq!(holesky["chainId"], json!(ANVIL_CHAIN_ID));
    assert_eq!(
        holesky["rpcUrl"],
        json!(format!("http://127.0.0.1:{closed}"))
    );
    assert!(drivers
        .as_array()
        .unwrap()
        .iter()
        .any(|driver| driver["platform"] == json!("dummy-local-tglm")));
    let accounts: Value = serde_json::from_str(
        &stdout_of(requestor.cli(&["payment", "accounts", "--json"]).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(accounts.as_array().unwrap().iter().any(|account| {
        account["platform"] == json!(PLATFORM)
            && account["send"] == json!(true)
            && account["address"] == json!(parties.requestor_id)
    }));
    // fund needs the chain: a clear error naming the rpc.
    let output = requestor
        .cli(&[
            "payment",
            "fund",
            "--network",
            "holesky",
            "--config",
            config.to_str().unwrap(),
        ])
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rpc http://127.0.0.1"), "{stderr}");
    let output = requestor
        .cli(&["payment", "fund", "--network", "nowhere"])
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown erc20 network"));

    let released: Value = serde_json::from_str(
        &stdout_of(
            requestor
                .cli(&["payment", "release-allocations", "--json"])
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        released["released"],
        json!([parties.allocation.allocation_id])
    );
    assert!(parties.requestor.allocations().await.unwrap().is_empty());
    let _ = parties.provider_id;
}

#[tokio::test]
#[ignore = "tier anvil: needs a local anvil chain; scripts/test.sh runs it when anvil is installed (GOLEM_TEST_ANVIL=1)"]
async fn anvil_erc20_invoice_is_paid_once_through_faults() {
    let bin = anvil_required("anvil_erc20_invoice_is_paid_once_through_faults").unwrap();
    let mut sandbox = Sandbox::new();
    let mut anvil = Anvil::start(&bin, sandbox.path()).unwrap();
    let token = anvil.deploy_token().await.unwrap();
    let config = write_config(sandbox.path(), &anvil.url, &token);
    let parties = parties(&mut sandbox, &config, "10").await;
    let small = parties
        .requestor
        .create_allocation(PLATFORM, "0.5")
        .await
        .unwrap();
    let invoice_id = bill(&parties, "2.5").await;
    let provider_before = anvil
        .token_balance(&token, &parties.provider_id)
        .await
        .unwrap();
    assert_eq!(provider_before, 0);

    // Over budget: refused, nothing charged.
    let error = parties
        .requestor
        .accept_invoice(&invoice_id, "2.5", &small.allocation_id)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("left"), "{error}");
    assert_eq!(
        parties
            .requestor
            .allocation(&small.allocation_id)
            .await
            .unwrap()
            .spent_amount
            .to_string(),
        "0"
    );

    // Accept with an empty wallet: pending, with a status that says why.
    parties
        .requestor
        .accept_invoice(&invoice_id, "2.5", &parties.allocation.allocation_id)
        .await
        .unwrap();
    // Duplicate accept changes nothing.
    parties
        .requestor
        .accept_invoice(&invoice_id, "2.5", &parties.allocation.allocation_id)
        .await
        .unwrap();
    let requestor = &mut sandbox.daemons()[1];
    let status = wait_pending_status(requestor, "insufficient").await;
    assert!(status.contains("payment fund"), "{status}");

    // Requestor restarted between accept and settle: still one pending payment.
    requestor.restart().unwrap();
    let status = status_json(requestor);
    assert_eq!(
        platform_status(&status, PLATFORM)["pendingPayments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The chain goes away and comes back (state kept): still waiting, clearly.
    anvil.stop().unwrap();
    wait_pending_status(requestor, "rpc http://127.0.0.1").await;
    anvil.restart().unwrap();
    wait_pending_status(requestor, "insufficient").await;

    // Top-up through the CLI (mint + ETH for gas from the dev account): paid.
    let funded = stdout_of(
        requestor
            .cli(&[
                "payment",
                "fund",
                "--network",
                "holesky",
                "--amount",
                "100",
                "--config",
                config.to_str().unwrap(),
            ])
            .unwrap(),
    )
    .unwrap();
    assert!(funded.contains("funded"), "{funded}");
    let requestor_client = requestor.client();
    eventually(
        Duration::from_secs(30),
        "the invoice settled on the requestor",
        || {
            let client = requestor_client.clone();
            let id = invoice_id.clone();
            async move {
                (client.invoice(&id).await.ok()?.status == DocumentStatus::Settled).then_some(())
            }
        },
    )
    .await
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the invoice settled on the provider",
        || {
            let client = parties.provider.clone();
            let id = invoice_id.clone();
            async move {
                (client.invoice(&id).await.ok()?.status == DocumentStatus::Settled).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let expected = 25 * WEI / 10;
    assert_eq!(
        anvil
            .token_balance(&token, &parties.provider_id)
            .await
            .unwrap(),
        expected
    );
    assert_eq!(
        anvil
            .token_balance(&token, &parties.requestor_id)
            .await
            .unwrap(),
        100 * WEI - expected
    );
    let payments = requestor_client.payments().await.unwrap();
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert!(
        payments[0].details.starts_with("0x"),
        "{:?}",
        payments[0].details
    );
    assert_eq!(payments[0].amount.to_string(), "2.5");

    // A second invoice whose transaction is in flight (mining paused) when
    // anvil stops: after the restart the very same signed transaction is
    // re-broadcast and mined; nothing is paid twice.
    let decoration = serde_json::to_value(
        requestor_client
            .demand_decorations(&[&parties.allocation.allocation_id])
            .await
            .unwrap(),
    )
    .unwrap();
    let second_agreement = negotiate_agreement(&requestor_client, &demand(&decoration)).await;
    eventually(
        Duration::from_secs(10),
        "the second agreement approved",
        || {
            let provider = parties.provider.clone();
            let id = second_agreement.clone();
            async move {
                let agreement = provider.agreement(&id).await.ok()?;
                (agreement.state == golem_model::market::AgreementState::Approved).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let second = parties
        .provider
        .issue_invoice(&second_agreement, "1.5")
        .await
        .unwrap();
    parties
        .provider
        .send_invoice(&second.invoice_id)
        .await
        .unwrap();
    anvil.rpc("evm_setAutomine", json!([false])).await.unwrap();
    requestor_client
        .accept_invoice(&second.invoice_id, "1.5", &parties.allocation.allocation_id)
        .await
        .unwrap();
    wait_pending_status(requestor, "sent, waiting").await;
    anvil.restart().unwrap(); // auto-mining again, from the saved state
    eventually(
        Duration::from_secs(30),
        "the second invoice settled",
        || {
            let client = requestor_client.clone();
            let id = second.invoice_id.clone();
            async move {
                (client.invoice(&id).await.ok()?.status == DocumentStatus::Settled).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let expected = expected + 15 * WEI / 10;

    // Another restart, then a watch over five ticks of the daemon's transfer
    // and settle loops (1 s each; a re-broadcast or a second payment would
    // come from them): each invoice stays paid exactly once the whole time.
    requestor.restart().unwrap();
    let watch_until = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(
            anvil.nonce(&parties.requestor_id).await.unwrap(),
            2,
            "two transactions, one per invoice"
        );
        assert_eq!(
            anvil
                .token_balance(&token, &parties.provider_id)
                .await
                .unwrap(),
            expected
        );
        if Instant::now() >= watch_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = status_json(requestor);
    let erc20 = platform_status(&status, PLATFORM);
    assert_eq!(erc20["outgoing"]["paid"], json!("4"));
    assert_eq!(erc20["outgoing"]["pending"], json!("0"));
    // Both allocations: 10 - 4 and the untouched 0.5.
    assert_eq!(erc20["allocations"]["remaining"], json!("6.5"));
    let main = requestor
        .client()
        .allocation(&parties.allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(main.remaining_amount.to_string(), "6");
    assert_eq!(requestor.client().payments().await.unwrap().len(), 2);
}

/// The hash in a pending payment's "transaction 0x… (nonce N) sent" status.
fn transaction_hash_in(status: &str) -> String {
    let at = status
        .find("transaction 0x")
        .unwrap_or_else(|| panic!("no transaction hash in {status:?}"))
        + "transaction ".len();
    let hash = &status[at..at + 66];
    assert!(hash[2..].chars().all(|c| c.is_ascii_hexdigit()), "{status}");
    hash.to_string()
}

/// The crash window of the erc20 queue: the requestor daemon is killed
/// (SIGKILL) after its transfer is signed and stored but before it is mined,
/// and the broadcast is lost too (dropped from anvil's pool, as if the kill
/// came before the send). A block is mined meanwhile, so the fee estimate
/// changes and a transaction signed afresh would differ. After the restart
/// the stored raw transaction is sent again (same hash, same nonce) and, once
/// mined, the provider is paid exactly once.
#[tokio::test]
#[ignore = "tier anvil: needs a local anvil chain; scripts/test.sh runs it when anvil is installed (GOLEM_TEST_ANVIL=1)"]
async fn anvil_erc20_requestor_killed_before_mining_resends_the_same_transaction() {
    let bin =
        anvil_required("anvil_erc20_requestor_killed_before_mining_resends_the_same_transaction")
            .unwrap();
    let mut sandbox = Sandbox::new();
    let anvil = Anvil::start(&bin, sandbox.path()).unwrap();
    let token = anvil.deploy_token().await.unwrap();
    let config = write_config(sandbox.path(), &anvil.url, &token);
    let parties = parties(&mut sandbox, &config, "10").await;
    let invoice_id = bill(&parties, "2.5").await;
    let requestor = &mut sandbox.daemons()[1];
    let funded = stdout_of(
        requestor
            .cli(&[
                "payment",
                "fund",
                "--network",
                "holesky",
                "--amount",
                "100",
                "--config",
                config.to_str().unwrap(),
            ])
            .unwrap(),
    )
    .unwrap();
    assert!(funded.contains("funded"), "{funded}");
    assert_eq!(anvil.nonce(&parties.requestor_id).await.unwrap(), 0);

    // Signed, stored and broadcast, but not mined.
    anvil.set_automine(false).await.unwrap();
    parties
        .requestor
        .accept_invoice(&invoice_id, "2.5", &parties.allocation.allocation_id)
        .await
        .unwrap();
    let status = wait_pending_status(requestor, "sent, waiting").await;
    let hash = transaction_hash_in(&status);
    assert!(status.contains("(nonce 0)"), "{status}");
    let pooled = anvil.transaction(&hash).await.unwrap();
    assert!(pooled["blockNumber"].is_null(), "{pooled}");
    assert_eq!(pooled["nonce"], json!("0x0"));
    assert_eq!(anvil.pool().await.unwrap(), (1, 0));

    requestor.kill();
    anvil.drop_transaction(&hash).await.unwrap();
    assert!(anvil.transaction(&hash).await.unwrap().is_null());
    assert_eq!(anvil.pool().await.unwrap(), (0, 0));
    let fee_before = anvil.base_fee().await.unwrap();
    anvil.mine().await.unwrap();
    assert_ne!(
        anvil.base_fee().await.unwrap(),
        fee_before,
        "the fee estimate must change, or a re-signed transaction would look the same"
    );
    assert_eq!(anvil.nonce(&parties.requestor_id).await.unwrap(), 0);

    // Restarted: the same transaction is back in the pool, nothing else, over
    // three ticks of the transfer loop (1 s each), until it is mined.
    requestor.restart().unwrap();
    eventually(
        Duration::from_secs(30),
        "the stored transaction sent again",
        || {
            let anvil = &anvil;
            let hash = hash.clone();
            async move { (!anvil.transaction(&hash).await.ok()?.is_null()).then_some(()) }
        },
    )
    .await
    .unwrap();
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            anvil.pool().await.unwrap(),
            (1, 0),
            "one transaction pooled"
        );
        let pooled = anvil.transaction(&hash).await.unwrap();
        assert_eq!(pooled["nonce"], json!("0x0"), "{pooled}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = wait_pending_status(requestor, "sent, waiting").await;
    assert_eq!(transaction_hash_in(&status), hash);
    anvil.mine().await.unwrap();
    assert_eq!(anvil.receipt(&hash).await.unwrap()["status"], json!("0x1"));

    let requestor_client = requestor.client();
    for (side, client) in [
        ("requestor", requestor_client.clone()),
        ("provider", parties.provider.clone()),
    ] {
        eventually(
            Duration::from_secs(30),
            &format!("the invoice settled on the {side}"),
            || {
                let client = client.clone();
                let id = invoice_id.clone();
                async move {
                    (client.invoice(&id).await.ok()?.status == DocumentStatus::Settled)
                        .then_some(())
                }
            },
        )
        .await
        .unwrap();
        let payments = client.payments().await.unwrap();
        assert_eq!(payments.len(), 1, "{side}: {payments:?}");
        assert_eq!(payments[0].details, hash, "{side}");
        assert_eq!(payments[0].amount.to_string(), "2.5", "{side}");
    }

    // Paid once, and it stays so over five ticks of the transfer and settle
    // loops (automine still off: anything sent would sit in the pool).
    let expected = 25 * WEI / 10;
    let watch_until = Instant::now() + Duration::from_secs(5);
    loop {
        assert_eq!(anvil.nonce(&parties.requestor_id).await.unwrap(), 1);
        assert_eq!(anvil.pool().await.unwrap(), (0, 0), "nothing more sent");
        assert_eq!(
            anvil
                .token_balance(&token, &parties.provider_id)
                .await
                .unwrap(),
            expected
        );
        if Instant::now() >= watch_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        anvil
            .token_balance(&token, &parties.requestor_id)
            .await
            .unwrap(),
        100 * WEI - expected
    );
    assert_eq!(requestor_client.payments().await.unwrap().len(), 1);
    let status = status_json(requestor);
    let erc20 = platform_status(&status, PLATFORM);
    assert_eq!(erc20["outgoing"]["paid"], json!("2.5"));
    assert_eq!(erc20["outgoing"]["pending"], json!("0"));
}

/// Benchmark (run by scripts/bench/payment.sh): invoice accept → settled on
/// anvil with auto-mine, a funded requestor, 10 agreements.
#[tokio::test]
#[ignore]
async fn bench_payment_erc20() {
    let Some(bin) = anvil_gate("bench_payment_erc20").unwrap() else {
        return;
    };
    const INVOICES: usize = 10;
    let mut sandbox = Sandbox::new();
    let anvil = Anvil::start(&bin, sandbox.path()).unwrap();
    let token = anvil.deploy_token().await.unwrap();
    let config = write_config(sandbox.path(), &anvil.url, &token);
    let first = parties(&mut sandbox, &config, "1000").await;
    stdout_of(
        sandbox.daemons()[1]
            .cli(&[
                "payment",
                "fund",
                "--network",
                "holesky",
                "--config",
                config.to_str().unwrap(),
            ])
            .unwrap(),
    )
    .unwrap();
    let provider_id = first.provider_id.clone();
    let decoration = serde_json::to_value(
        first
            .requestor
            .demand_decorations(&[&first.allocation.allocation_id])
            .await
            .unwrap(),
    )
    .unwrap();
    let mut agreements = vec![first.agreement_id.clone()];
    while agreements.len() < INVOICES {
        agreements.push(negotiate_agreement(&first.requestor, &demand(&decoration)).await);
    }
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for agreement_id in &agreements {
        eventually(Duration::from_secs(10), "provider approval", || {
            let provider = first.provider.clone();
            let id = agreement_id.clone();
            async move {
                let agreement = provider.agreement(&id).await.ok()?;
                (agreement.state == golem_model::market::AgreementState::Approved).then_some(())
            }
        })
        .await
        .unwrap();
        let invoice = first
            .provider
            .issue_invoice(agreement_id, "1")
            .await
            .unwrap();
        first
            .provider
            .send_invoice(&invoice.invoice_id)
            .await
            .unwrap();
        let started = Instant::now();
        first
            .requestor
            .accept_invoice(&invoice.invoice_id, "1", &first.allocation.allocation_id)
            .await
            .unwrap();
        loop {
            if first
                .requestor
                .invoice(&invoice.invoice_id)
                .await
                .unwrap()
                .status
                == DocumentStatus::Settled
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        local.push(started.elapsed());
        loop {
            if first
                .provider
                .invoice(&invoice.invoice_id)
                .await
                .unwrap()
                .status
                == DocumentStatus::Settled
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        remote.push(started.elapsed());
    }
    assert_eq!(
        anvil.token_balance(&token, &provider_id).await.unwrap(),
        INVOICES as u128 * WEI
    );
    let median = |list: &mut Vec<Duration>| {
        list.sort();
        list[list.len() / 2].as_secs_f64() * 1000.0
    };
    let max = |list: &Vec<Duration>| list.iter().max().unwrap().as_secs_f64() * 1000.0;
    println!("\n| Measure (erc20 on anvil, auto-mine) | Value |\n|---|---|");
    println!(
        "| invoice accept → settled on the requestor (median / max of {INVOICES}) | {:.0} ms / {:.0} ms |",
        median(&mut local),
        max(&local)
    );
    println!(
        "| invoice accept → settled seen by the provider (median / max of {INVOICES}) | {:.0} ms / {:.0} ms |",
        median(&mut remote),
        max(&remote)
    );
}
