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
use golem_tests::negotiation::{negotiate_agreement, spawn_provider_negotiator, wait_approved};
use golem_tests::standin::create_bare_activity;
use golem_tests::{eventually, stdout_of, DaemonProcess, Sandbox};
use serde_json::{json, Value};

const SUBNET: &str = "e2e-payment-erc20";
const PLATFORM: &str = "erc20-holesky-tglm";
const WEI: u128 = 1_000_000_000_000_000_000;
/// The offers' `golem.com.scheme.payu.payment-timeout-sec?`: long enough for
/// the anvil tests to pay in time, short enough to watch a payer be late.
const PAYMENT_TIMEOUT_SEC: i64 = 5;

fn offer(provider_id: &str) -> DemandOfferBase {
    offer_in(SUBNET, provider_id)
}

fn offer_in(subnet: &str, provider_id: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            "golem.com.payment.platform.erc20-holesky-tglm.address": provider_id,
            "golem.com.payment.protocol.version": "3",
            "golem.com.scheme.payu.payment-timeout-sec?": PAYMENT_TIMEOUT_SEC,
            "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 5.0],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }),
        constraints: format!("(golem.node.debug.subnet={subnet})"),
    }
}

fn demand(decoration: &Value) -> DemandOfferBase {
    demand_in(SUBNET, decoration)
}

fn demand_in(subnet: &str, decoration: &Value) -> DemandOfferBase {
    let mut properties = json!({
        "golem.node.debug.subnet": subnet,
        "golem.com.payment.chosen-platform": PLATFORM,
    });
    let mut constraints = vec![format!("(golem.node.debug.subnet={subnet})")];
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

/// The demand decoration of `allocation_id`, as JSON.
async fn decoration(requestor: &GolemClient, allocation_id: &str) -> Value {
    serde_json::to_value(
        requestor
            .demand_decorations(&[allocation_id])
            .await
            .unwrap(),
    )
    .unwrap()
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
    let decoration = decoration(&requestor, &allocation.allocation_id).await;
    let offer_id = provider
        .subscribe_offer(&offer(&provider_id))
        .await
        .unwrap();
    spawn_provider_negotiator(provider.clone(), offer_id, offer(&provider_id));
    let agreement_id = negotiate_agreement(&requestor, &demand(&decoration)).await;
    wait_approved(&provider, &agreement_id).await;
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

/// A config whose `holesky` rpc is a loopback port nothing listens on (the port too).
fn unreachable_rpc_config(sandbox: &Sandbox) -> (u16, PathBuf) {
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
    (closed, config)
}

#[tokio::test]
async fn unreachable_rpc_leaves_the_payment_pending_with_a_clear_status() {
    let mut sandbox = Sandbox::new();
    // A port nothing listens on: start-up must not care.
    let (closed, config) = unreachable_rpc_config(&sandbox);
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

/// `payment-timeout-sec` on both sides. The requestor cannot pay (its rpc is
/// down): its pending payment carries the due date (acceptance + the
/// agreement's timeout) and shows OVERDUE once it passed; the provider's
/// node records the requestor as a late payer (its status and the local
/// API). Both survive a restart.
#[tokio::test]
async fn payment_timeout_passed_marks_the_payment_overdue_and_the_requestor_a_late_payer() {
    let mut sandbox = Sandbox::new();
    let (_closed, config) = unreachable_rpc_config(&sandbox);
    let parties = parties(&mut sandbox, &config, "10").await;
    let invoices = invoices_sent(&parties, 1, "2.5").await;
    let invoice_id = invoices[0].clone();
    let accepted = chrono::Utc::now();
    accept_all(
        &parties.requestor,
        &invoices,
        "2.5",
        &parties.allocation.allocation_id,
    )
    .await;
    // Nothing is late yet.
    assert!(parties.provider.late_payments().await.unwrap().is_empty());
    let requestor = &sandbox.daemons()[1];
    let report = status_json(requestor);
    let pending = &platform_status(&report, PLATFORM)["pendingPayments"][0];
    let due: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(pending["due"].clone()).unwrap();
    let expected = accepted + chrono::Duration::seconds(PAYMENT_TIMEOUT_SEC);
    assert!(
        (due - expected).num_milliseconds().abs() < 2_000,
        "due {due}, accepted {accepted}"
    );
    let late = eventually(
        Duration::from_secs(PAYMENT_TIMEOUT_SEC as u64 + 10),
        "the provider records a late payer",
        || async {
            let late = parties.provider.late_payments().await.ok()?;
            (!late.is_empty()).then_some(late)
        },
    )
    .await
    .unwrap();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].invoice_id, invoice_id);
    assert_eq!(late[0].payer_id.to_string(), parties.requestor_id);
    assert_eq!(late[0].payment_timeout_sec, PAYMENT_TIMEOUT_SEC as u64);
    assert!(late[0].late_since.is_some() && late[0].settled_at.is_none());
    assert_eq!(late[0].amount.to_string(), "2.5");
    let text = stdout_of(requestor.cli(&["payment", "status"]).unwrap()).unwrap();
    assert!(text.contains("OVERDUE since"), "{text}");
    let provider = &mut sandbox.daemons()[0];
    let text = stdout_of(provider.cli(&["payment", "status"]).unwrap()).unwrap();
    assert!(
        text.contains(&format!("late payer {}", parties.requestor_id)) && text.contains("NOT PAID"),
        "{text}"
    );
    // Recorded on disk: a restarted provider still knows.
    provider.restart().unwrap();
    let after = provider.client().late_payments().await.unwrap();
    assert_eq!(after, late);
    // So is the requestor's due date.
    let requestor = &mut sandbox.daemons()[1];
    requestor.restart().unwrap();
    let report = status_json(requestor);
    let pending = &platform_status(&report, PLATFORM)["pendingPayments"][0];
    assert_eq!(pending["due"], json!(due), "{pending}");
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
    let decoration = decoration(&requestor_client, &parties.allocation.allocation_id).await;
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
    let decoration = decoration(&first.requestor, &first.allocation.allocation_id).await;
    let mut agreements = vec![first.agreement_id.clone()];
    while agreements.len() < INVOICES {
        agreements.push(negotiate_agreement(&first.requestor, &demand(&decoration)).await);
    }
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for agreement_id in &agreements {
        wait_approved(&first.provider, agreement_id).await;
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

/// `payment fund` of the requestor (daemon 1): tokens and ETH for gas from anvil's dev account.
fn fund_requestor(sandbox: &mut Sandbox, config: &Path, amount: &str) {
    fund(&sandbox.daemons()[1], config, amount);
}

/// `payment fund` of `daemon`.
fn fund(daemon: &DaemonProcess, config: &Path, amount: &str) {
    let funded = stdout_of(
        daemon
            .cli(&[
                "payment",
                "fund",
                "--network",
                "holesky",
                "--amount",
                amount,
                "--config",
                config.to_str().unwrap(),
            ])
            .unwrap(),
    )
    .unwrap();
    assert!(funded.contains("funded"), "{funded}");
}

/// `count` approved agreements between the parties (the first is theirs),
/// each with an invoice of `amount` sent to the requestor; the invoice ids.
async fn invoices_sent(parties: &Parties, count: usize, amount: &str) -> Vec<String> {
    let decoration = decoration(&parties.requestor, &parties.allocation.allocation_id).await;
    let mut agreements = vec![parties.agreement_id.clone()];
    while agreements.len() < count {
        agreements.push(negotiate_agreement(&parties.requestor, &demand(&decoration)).await);
    }
    let mut invoices = Vec::new();
    for agreement_id in &agreements {
        invoices.push(send_invoice(&parties.provider, agreement_id, amount).await);
    }
    invoices
}

/// Wait for the provider's approval of `agreement_id`, then issue and send its invoice.
async fn send_invoice(provider: &GolemClient, agreement_id: &str, amount: &str) -> String {
    wait_approved(provider, agreement_id).await;
    let invoice = provider.issue_invoice(agreement_id, amount).await.unwrap();
    provider.send_invoice(&invoice.invoice_id).await.unwrap();
    invoice.invoice_id
}

/// Accept all `invoices` at once (concurrent REST calls).
async fn accept_all(
    requestor: &GolemClient,
    invoices: &[String],
    amount: &str,
    allocation_id: &str,
) {
    let accepts = invoices
        .iter()
        .map(|id| requestor.accept_invoice(id, amount, allocation_id));
    for result in futures::future::join_all(accepts).await {
        result.unwrap();
    }
}

/// Wait until every invoice is settled on `client`.
async fn all_settled(client: &GolemClient, invoices: &[String], within: Duration) {
    eventually(within, "every invoice settled", || async {
        for id in invoices {
            if client.invoice(id).await.ok()?.status != DocumentStatus::Settled {
                return None;
            }
        }
        Some(())
    })
    .await
    .unwrap();
}

/// The (pending, queued) counts of anvil's pool once it holds `count` pending.
async fn pooled(anvil: &Anvil, count: u64) {
    eventually(
        Duration::from_secs(30),
        &format!("{count} transactions pooled"),
        || async { (anvil.pool().await.ok()? == (count, 0)).then_some(()) },
    )
    .await
    .unwrap();
}

/// On chain: the requestor sent exactly `transactions`, the provider holds `wei` of the token.
async fn assert_chain_totals(
    anvil: &Anvil,
    token: &str,
    parties: &Parties,
    transactions: u64,
    wei: u128,
) {
    assert_eq!(
        anvil.nonce(&parties.requestor_id).await.unwrap(),
        transactions,
        "transactions sent"
    );
    assert_eq!(
        anvil
            .token_balance(token, &parties.provider_id)
            .await
            .unwrap(),
        wei,
        "the provider's tokens"
    );
}

fn quantity(value: &Value) -> u128 {
    u128::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Transfers in flight on a chain that mines only when told: anvil with the
/// test token, the parties (allocation of `budget`), the requestor funded
/// with 100 tGLM, `count` invoices of `amount` sent, then auto-mining off
/// and all of them accepted at once.
struct InFlight {
    parties: Parties,
    invoices: Vec<String>,
    token: String,
    anvil: Anvil,
    sandbox: Sandbox,
}

async fn accepted_with_mining_off(
    test: &str,
    budget: &str,
    count: usize,
    amount: &str,
) -> InFlight {
    let bin = anvil_required(test).unwrap();
    let mut sandbox = Sandbox::new();
    let anvil = Anvil::start(&bin, sandbox.path()).unwrap();
    let token = anvil.deploy_token().await.unwrap();
    let config = write_config(sandbox.path(), &anvil.url, &token);
    let parties = parties(&mut sandbox, &config, budget).await;
    fund_requestor(&mut sandbox, &config, "100");
    let invoices = invoices_sent(&parties, count, amount).await;
    anvil.set_automine(false).await.unwrap();
    accept_all(
        &parties.requestor,
        &invoices,
        amount,
        &parties.allocation.allocation_id,
    )
    .await;
    InFlight {
        parties,
        invoices,
        token,
        anvil,
        sandbox,
    }
}

/// Pipelined nonces: six invoices accepted together are all signed and sent
/// before any is mined (automine off: all six wait in the pool, nonces 0..5
/// without a gap), and one mined block takes them all; the provider is paid
/// each exactly once.
#[tokio::test]
#[ignore = "tier anvil: needs a local anvil chain; scripts/test.sh runs it when anvil is installed (GOLEM_TEST_ANVIL=1)"]
async fn anvil_erc20_transfers_accepted_together_land_in_one_block() {
    let InFlight {
        parties,
        invoices,
        token,
        anvil,
        sandbox: _daemons,
    } = accepted_with_mining_off(
        "anvil_erc20_transfers_accepted_together_land_in_one_block",
        "100",
        6,
        "1",
    )
    .await;
    pooled(&anvil, 6).await;
    anvil.mine().await.unwrap();
    all_settled(&parties.requestor, &invoices, Duration::from_secs(30)).await;
    all_settled(&parties.provider, &invoices, Duration::from_secs(30)).await;

    let payments = parties.requestor.payments().await.unwrap();
    assert_eq!(payments.len(), 6, "{payments:?}");
    let mut blocks = std::collections::BTreeSet::new();
    let mut nonces = std::collections::BTreeSet::new();
    for payment in &payments {
        let receipt = anvil.receipt(&payment.details).await.unwrap();
        assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
        blocks.insert(quantity(&receipt["blockNumber"]));
        nonces.insert(quantity(
            &anvil.transaction(&payment.details).await.unwrap()["nonce"],
        ));
    }
    assert_eq!(blocks.len(), 1, "one block took them all: {blocks:?}");
    assert_eq!(nonces, (0..6).collect(), "consecutive nonces");
    assert_chain_totals(&anvil, &token, &parties, 6, 6 * WEI).await;
}

/// Fee replacement: the transfer is signed for the base fee of the moment,
/// then the next block asks 100 gwei (far above its max fee), so no block
/// takes it. The driver replaces it (same nonce, fees raised by at least
/// 10 %), the replacement is mined, and the provider is paid once, by it.
#[tokio::test]
#[ignore = "tier anvil: needs a local anvil chain; scripts/test.sh runs it when anvil is installed (GOLEM_TEST_ANVIL=1)"]
async fn anvil_erc20_transaction_stuck_below_the_fee_is_replaced_and_confirms() {
    let InFlight {
        parties,
        invoices,
        token,
        anvil,
        mut sandbox,
    } = accepted_with_mining_off(
        "anvil_erc20_transaction_stuck_below_the_fee_is_replaced_and_confirms",
        "10",
        1,
        "2.5",
    )
    .await;
    let requestor = &sandbox.daemons()[1];
    let status = wait_pending_status(requestor, "sent, waiting").await;
    let stuck = transaction_hash_in(&status);
    let stuck_tx = anvil.transaction(&stuck).await.unwrap();
    let stuck_fee = quantity(&stuck_tx["maxFeePerGas"]);
    let stuck_tip = quantity(&stuck_tx["maxPriorityFeePerGas"]);
    let gwei = 1_000_000_000u128;
    assert!(stuck_fee < 100 * gwei, "{stuck_tx}");
    anvil.set_next_base_fee(100 * gwei).await.unwrap();
    anvil.mine().await.unwrap();
    assert!(
        anvil.receipt(&stuck).await.unwrap().is_null(),
        "a block asking 100 gwei cannot take it"
    );

    let status = wait_pending_status(requestor, "replaced").await;
    assert!(status.contains("stuck below the network's fee"), "{status}");
    let status = wait_pending_status(requestor, &format!("it replaced {stuck}")).await;
    let replacement = transaction_hash_in(&status);
    assert_ne!(replacement, stuck);
    let replacement_tx = anvil.transaction(&replacement).await.unwrap();
    assert_eq!(replacement_tx["nonce"], stuck_tx["nonce"], "same nonce");
    let fee = quantity(&replacement_tx["maxFeePerGas"]);
    let tip = quantity(&replacement_tx["maxPriorityFeePerGas"]);
    assert!(
        fee * 100 >= stuck_fee * 110 && fee > 100 * gwei * 7 / 8,
        "{replacement_tx}"
    );
    assert!(tip * 100 >= stuck_tip * 110, "{replacement_tx}");
    assert!(fee <= 500 * gwei, "under the default cap: {replacement_tx}");

    anvil.mine().await.unwrap();
    assert_eq!(
        anvil.receipt(&replacement).await.unwrap()["status"],
        json!("0x1")
    );
    all_settled(&parties.requestor, &invoices, Duration::from_secs(30)).await;
    all_settled(&parties.provider, &invoices, Duration::from_secs(30)).await;
    let payments = parties.requestor.payments().await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].details, replacement);
    assert!(anvil.receipt(&stuck).await.unwrap().is_null());
    assert_chain_totals(&anvil, &token, &parties, 1, 25 * WEI / 10).await;
}

/// A requestor killed with four transfers in flight: while it is down two
/// of them are mined and the other two are lost from the pool. After the
/// restart the driver finds the mined ones by their receipts and sends the
/// lost ones again, the very same transactions; nothing is paid twice.
#[tokio::test]
#[ignore = "tier anvil: needs a local anvil chain; scripts/test.sh runs it when anvil is installed (GOLEM_TEST_ANVIL=1)"]
async fn anvil_erc20_restart_with_transfers_in_flight_pays_nothing_twice() {
    let InFlight {
        parties,
        invoices,
        token,
        anvil,
        mut sandbox,
    } = accepted_with_mining_off(
        "anvil_erc20_restart_with_transfers_in_flight_pays_nothing_twice",
        "100",
        4,
        "1",
    )
    .await;
    pooled(&anvil, 4).await;
    let mut by_nonce = std::collections::BTreeMap::new();
    let pool = anvil.rpc("txpool_content", json!([])).await.unwrap();
    for (_, by_sender) in pool["pending"].as_object().unwrap() {
        for (nonce, tx) in by_sender.as_object().unwrap() {
            by_nonce.insert(
                nonce.parse::<u64>().unwrap(),
                tx["hash"].as_str().unwrap().to_string(),
            );
        }
    }
    assert_eq!(
        by_nonce.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );

    let requestor = &mut sandbox.daemons()[1];
    requestor.kill();
    for nonce in [2, 3] {
        anvil.drop_transaction(&by_nonce[&nonce]).await.unwrap();
    }
    anvil.mine().await.unwrap();
    assert_eq!(anvil.nonce(&parties.requestor_id).await.unwrap(), 2);
    assert_eq!(anvil.pool().await.unwrap(), (0, 0));

    requestor.restart().unwrap();
    pooled(&anvil, 2).await;
    for nonce in [2, 3] {
        let tx = anvil.transaction(&by_nonce[&nonce]).await.unwrap();
        assert!(
            !tx.is_null(),
            "nonce {nonce}: the stored transaction sent again"
        );
    }
    anvil.mine().await.unwrap();
    let requestor_client = requestor.client();
    all_settled(&requestor_client, &invoices, Duration::from_secs(30)).await;
    all_settled(&parties.provider, &invoices, Duration::from_secs(30)).await;
    let mut paid: Vec<String> = requestor_client
        .payments()
        .await
        .unwrap()
        .into_iter()
        .map(|payment| payment.details)
        .collect();
    paid.sort();
    let mut sent: Vec<String> = by_nonce.values().cloned().collect();
    sent.sort();
    assert_eq!(paid, sent, "each invoice paid by its one transaction");
    // And it stays so over a few rounds of the driver and settle loops.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(anvil.pool().await.unwrap(), (0, 0), "nothing more sent");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_chain_totals(&anvil, &token, &parties, 4, 4 * WEI).await;
}

/// Benchmark (scripts/bench/erc20.sh): anvil mining a block every second;
/// ten providers, ten agreements each; the requestor accepts the 100
/// invoices at once. Prints the time until all are settled, the blocks and
/// transactions it took. The goal is ≤ 5 s (transfers pipelined into a few
/// blocks, not one per block); it is measured, never asserted.
#[tokio::test]
#[ignore = "benchmark: scripts/bench/erc20.sh runs it with anvil (GOLEM_TEST_ANVIL=1)"]
async fn bench_erc20_hundred_invoices_to_ten_payees() {
    const PAYEES: usize = 10;
    const PER_PAYEE: usize = 10;
    let bin = anvil_required("bench_erc20_hundred_invoices_to_ten_payees").unwrap();
    let mut sandbox = Sandbox::new();
    let anvil = Anvil::start_with(&bin, sandbox.path(), &["--block-time", "1"]).unwrap();
    let token = anvil.deploy_token().await.unwrap();
    let config = write_config(sandbox.path(), &anvil.url, &token);
    let config_arg = config.to_str().unwrap().to_string();
    sandbox
        .daemon_with("r", &["--config", &config_arg])
        .unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    for index in 0..PAYEES {
        sandbox
            .daemon_with(
                &format!("p{index}"),
                &["--config", &config_arg, "--bootstrap", &bootstrap],
            )
            .unwrap();
    }
    let requestor = sandbox.daemons()[0].client();
    fund(&sandbox.daemons()[0], &config, "1000");
    let allocation = requestor.create_allocation(PLATFORM, "1000").await.unwrap();
    let decoration = decoration(&requestor, &allocation.allocation_id).await;
    let mut invoices = Vec::new();
    let mut payees = Vec::new();
    for index in 0..PAYEES {
        let daemon = &sandbox.daemons()[index + 1];
        let provider = daemon.client();
        let provider_id = daemon.node_id().unwrap();
        let subnet = format!("bench-erc20-{index}");
        let offer = offer_in(&subnet, &provider_id);
        let offer_id = provider.subscribe_offer(&offer).await.unwrap();
        spawn_provider_negotiator(provider.clone(), offer_id, offer);
        for _ in 0..PER_PAYEE {
            let agreement_id =
                negotiate_agreement(&requestor, &demand_in(&subnet, &decoration)).await;
            invoices.push(send_invoice(&provider, &agreement_id, "1").await);
        }
        payees.push(provider_id);
    }
    // Received by the requestor before the clock starts.
    eventually(Duration::from_secs(30), "all invoices received", || async {
        let received = requestor.invoices().await.ok()?;
        (received.len() >= invoices.len()).then_some(())
    })
    .await
    .unwrap();

    let first_block = quantity(&anvil.rpc("eth_blockNumber", json!([])).await.unwrap());
    let started = Instant::now();
    accept_all(&requestor, &invoices, "1", &allocation.allocation_id).await;
    let accepted = started.elapsed();
    eventually(Duration::from_secs(120), "all invoices settled", || async {
        let settled = requestor
            .invoices()
            .await
            .ok()?
            .iter()
            .filter(|invoice| invoice.status == DocumentStatus::Settled)
            .count();
        (settled == invoices.len()).then_some(())
    })
    .await
    .unwrap();
    let settled = started.elapsed();

    let payments = requestor.payments().await.unwrap();
    let mut blocks = std::collections::BTreeMap::<u128, usize>::new();
    for payment in &payments {
        let receipt = anvil.receipt(&payment.details).await.unwrap();
        *blocks.entry(quantity(&receipt["blockNumber"])).or_default() += 1;
    }
    let requestor_id = sandbox.daemons()[0].node_id().unwrap();
    let transactions = anvil.nonce(&requestor_id).await.unwrap();
    let mut paid = 0;
    for payee in &payees {
        paid += anvil.token_balance(&token, payee).await.unwrap();
    }
    println!("\n| Measure (erc20 on anvil --block-time 1, {} invoices to {PAYEES} payees accepted at once) | Value |\n|---|---|", invoices.len());
    println!("| all accepts answered | {:.2} s |", accepted.as_secs_f64());
    println!(
        "| accept → all settled on the requestor | {:.2} s |",
        settled.as_secs_f64()
    );
    println!(
        "| blocks holding the transfers | {} (of {} mined from the accepts to this table) |",
        blocks.len(),
        quantity(&anvil.rpc("eth_blockNumber", json!([])).await.unwrap()) - first_block
    );
    println!(
        "| transfers per block | {:?} |",
        blocks.values().collect::<Vec<_>>()
    );
    println!("| transactions sent (requestor nonce) | {transactions} |");
    println!("| payments recorded | {} |", payments.len());
    println!("| tokens received by the payees | {} GLM |", paid / WEI);
}
