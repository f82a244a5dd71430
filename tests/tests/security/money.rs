//! Security cases: money. Two real daemons agree on a linear price; one side
//! then plays a stand-in that cheats:
//! - a provider stand-in bills above the agreed price, or for an activity the
//!   requestor never created on that agreement: the requestor's daemon refuses;
//! - a requestor stand-in reports a payment (`SendPayment` over the net from
//!   the requestor's node) for a rejected invoice or for less than the amount:
//!   the provider's daemon refuses and the invoice is not settled;
//! - a third node accepts or pays another pair's invoice: Forbidden;
//! - (anvil tier) an erc20 payment naming a transaction that is not a transfer
//!   from the payer to the payee is refused; an unknown transaction leaves the
//!   invoice unsettled.

use std::time::Duration;

use golem_client::GolemClient;
use golem_model::market::{AgreementState, DemandOfferBase};
use golem_model::payment::{
    payment_address, AcceptInvoice, AgreementPayment, Decimal, DocumentStatus, Payment, SendPayment,
};
use golem_model::GolemError;
use golem_tests::abuse::report;
use golem_tests::http::JsonApi;
use golem_tests::negotiation::{negotiate_agreement, spawn_provider_negotiator};
use golem_tests::standin::create_bare_activity;
use golem_tests::{eventually, DaemonProcess, Sandbox};
use serde_json::{json, Value};

/// cpu 0.001/s, env 0.001/s, start fee 0.1: a fresh agreement's one activity
/// may cost about 0.1 + 0.002 × (seconds since approval + 10).
const COEFFS: [f64; 3] = [0.001, 0.001, 0.1];

fn offer(subnet: &str, platform: &str, provider_id: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            format!("golem.com.payment.platform.{platform}.address"): provider_id,
            "golem.com.payment.protocol.version": "3",
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": COEFFS,
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
            "golem.inf.cpu.threads": 1,
        }),
        constraints: format!("(golem.node.debug.subnet={subnet})"),
    }
}

fn demand(subnet: &str, platform: &str, decoration: &Value) -> DemandOfferBase {
    let mut properties = json!({
        "golem.node.debug.subnet": subnet,
        "golem.com.payment.chosen-platform": platform,
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

/// A provider (daemon 0) and a requestor (daemon 1) with approved agreements.
struct Pair {
    provider: GolemClient,
    requestor: GolemClient,
    provider_id: String,
    requestor_id: String,
    allocation_id: String,
    agreements: Vec<String>,
}

/// Negotiate `count` agreements on `platform` between daemons 0 and 1 of `sandbox`.
async fn agree(sandbox: &mut Sandbox, subnet: &str, platform: &str, count: usize) -> Pair {
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let requestor_id = sandbox.daemons()[1].node_id().unwrap();
    let provider = sandbox.daemons()[0].client();
    let requestor = sandbox.daemons()[1].client();
    let allocation = requestor.create_allocation(platform, "100").await.unwrap();
    let decoration = serde_json::to_value(
        requestor
            .demand_decorations(&[&allocation.allocation_id])
            .await
            .unwrap(),
    )
    .unwrap();
    let offer = offer(subnet, platform, &provider_id);
    let offer_id = provider.subscribe_offer(&offer).await.unwrap();
    spawn_provider_negotiator(provider.clone(), offer_id, offer);
    let mut agreements = Vec::new();
    for _ in 0..count {
        let agreement_id =
            negotiate_agreement(&requestor, &demand(subnet, platform, &decoration)).await;
        eventually(Duration::from_secs(10), "the provider's approval", || {
            let provider = provider.clone();
            let id = agreement_id.clone();
            async move {
                let agreement = provider.agreement(&id).await.ok()?;
                (agreement.state == AgreementState::Approved).then_some(())
            }
        })
        .await
        .unwrap();
        agreements.push(agreement_id);
    }
    Pair {
        provider,
        requestor,
        provider_id,
        requestor_id,
        allocation_id: allocation.allocation_id,
        agreements,
    }
}

fn payment_api(daemon: &DaemonProcess) -> JsonApi {
    JsonApi::new(
        format!("{}/payment-api/v1", daemon.api_url),
        &daemon.app_key,
    )
}

/// Provider REST: issue a debit note and send it; the send's status and body.
async fn bill_debit_note(
    provider: &DaemonProcess,
    agreement_id: &str,
    activity_id: &str,
    amount: &str,
) -> (u16, Value) {
    let api = payment_api(provider);
    let (status, note) = api
        .call(
            reqwest::Method::POST,
            "/debitNotes",
            Some(json!({"agreementId": agreement_id, "activityId": activity_id, "totalAmountDue": amount})),
        )
        .await;
    assert_eq!(status, 201, "the provider's own daemon issues it: {note}");
    let id = note["debitNoteId"].as_str().unwrap();
    api.call(
        reqwest::Method::POST,
        &format!("/debitNotes/{id}/send"),
        None,
    )
    .await
}

/// Provider REST: issue an invoice and send it; its id and the send's status and body.
async fn bill_invoice(
    provider: &DaemonProcess,
    agreement_id: &str,
    amount: &str,
) -> (String, u16, Value) {
    let api = payment_api(provider);
    let (status, invoice) = api
        .call(
            reqwest::Method::POST,
            "/invoices",
            Some(json!({"agreementId": agreement_id, "amount": amount})),
        )
        .await;
    assert_eq!(
        status, 201,
        "the provider's own daemon issues it: {invoice}"
    );
    let id = invoice["invoiceId"].as_str().unwrap().to_string();
    let (status, body) = api
        .call(reqwest::Method::POST, &format!("/invoices/{id}/send"), None)
        .await;
    (id, status, body)
}

fn seen(status: u16, body: &Value) -> String {
    format!("{status} {}", body["message"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn provider_cannot_bill_above_the_agreed_price() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let pair = agree(&mut sandbox, "sec-money-cap", "dummy-local-tglm", 1).await;
    let agreement_id = &pair.agreements[0];
    let (activity_id, _exe_unit) =
        create_bare_activity(&pair.requestor, &sandbox.daemons()[0], agreement_id)
            .await
            .unwrap();

    // Honest billing goes through and is charged.
    let (status, body) =
        bill_debit_note(&sandbox.daemons()[0], agreement_id, &activity_id, "0.1").await;
    assert_eq!(status, 200, "{body}");
    let note = pair.requestor.debit_notes().await.unwrap().remove(0);
    pair.requestor
        .accept_debit_note(&note.debit_note_id, "0.1", &pair.allocation_id)
        .await
        .unwrap();

    // Seconds after approval the price allows about 0.13; the provider asks 50.
    let (status, body) =
        bill_debit_note(&sandbox.daemons()[0], agreement_id, &activity_id, "50").await;
    report(
        "debit note far above the agreed linear price",
        "400 refused: amount exceeds the agreed price",
        &seen(status, &body),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("exceeds"),
        "{body}"
    );
    let (invoice_id, status, body) = bill_invoice(&sandbox.daemons()[0], agreement_id, "99").await;
    report(
        "invoice draining the shared allocation (99 of 100)",
        "400 refused: amount exceeds the agreed price",
        &seen(status, &body),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("exceeds"),
        "{body}"
    );
    assert!(pair.requestor.invoice(&invoice_id).await.is_err());
    assert_eq!(pair.requestor.debit_notes().await.unwrap().len(), 1);
}

#[tokio::test]
async fn provider_cannot_bill_activities_the_requestor_did_not_create() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let pair = agree(&mut sandbox, "sec-money-activity", "dummy-local-tglm", 2).await;
    let (first, second) = (&pair.agreements[0], &pair.agreements[1]);
    let (own, _exe_unit) = create_bare_activity(&pair.requestor, &sandbox.daemons()[0], first)
        .await
        .unwrap();
    let (other, _other_exe_unit) =
        create_bare_activity(&pair.requestor, &sandbox.daemons()[0], second)
            .await
            .unwrap();

    let (status, body) =
        bill_debit_note(&sandbox.daemons()[0], first, "activity-invented", "0.1").await;
    report(
        "debit note for an invented activity id",
        "403 refused: activity not created by this requestor on the agreement",
        &seen(status, &body),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not created by this requestor"),
        "{body}"
    );
    let (status, body) = bill_debit_note(&sandbox.daemons()[0], first, &other, "0.1").await;
    report(
        "debit note on agreement A for agreement B's activity",
        "403 refused: activity not created by this requestor on the agreement",
        &seen(status, &body),
    );
    assert_eq!(status, 403, "{body}");
    assert!(pair.requestor.debit_notes().await.unwrap().is_empty());

    let (status, body) = bill_debit_note(&sandbox.daemons()[0], first, &own, "0.1").await;
    assert_eq!(
        status, 200,
        "the agreement's own activity is billed: {body}"
    );
}

/// Send `message` to the provider's payment service from the requestor's node
/// (a stand-in on the requestor daemon's bus socket: the provider sees the
/// requestor's authenticated NodeId as the caller).
async fn as_node<M: golem_model::bus::BusMessage<Reply = ()>>(
    daemon: &DaemonProcess,
    target: &str,
    message: &M,
) -> Result<(), GolemError> {
    let bus = daemon.bus().await.unwrap();
    bus.call(&payment_address(target.parse().unwrap()), message)
        .await
}

fn payment(pair: &Pair, id: &str, agreement_id: &str, amount: &str, details: &str) -> Payment {
    let amount: Decimal = amount.parse().unwrap();
    Payment {
        payment_id: id.into(),
        payer_id: pair.requestor_id.parse().unwrap(),
        payee_id: pair.provider_id.parse().unwrap(),
        payer_addr: pair.requestor_id.clone(),
        payee_addr: pair.provider_id.clone(),
        payment_platform: "dummy-local-tglm".into(),
        amount,
        timestamp: chrono::Utc::now(),
        agreement_payments: vec![AgreementPayment {
            agreement_id: agreement_id.into(),
            amount,
            allocation_id: None,
        }],
        activity_payments: Vec::new(),
        details: details.into(),
    }
}

async fn provider_status(pair: &Pair, invoice_id: &str) -> DocumentStatus {
    pair.provider.invoice(invoice_id).await.unwrap().status
}

#[tokio::test]
async fn requestor_cannot_settle_a_rejected_or_underpaid_invoice() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let pair = agree(&mut sandbox, "sec-money-pay", "dummy-local-tglm", 2).await;
    let (rejected_agreement, accepted_agreement) = (&pair.agreements[0], &pair.agreements[1]);

    // A rejected invoice, then a payment for it.
    let (rejected, status, body) =
        bill_invoice(&sandbox.daemons()[0], rejected_agreement, "0.1").await;
    assert_eq!(status, 200, "{body}");
    pair.requestor
        .reject_invoice(&rejected, "not wanted")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the rejection reaches the provider",
        || {
            let provider = pair.provider.clone();
            let id = rejected.clone();
            async move {
                (provider.invoice(&id).await.ok()?.status == DocumentStatus::Rejected).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let result = as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &SendPayment {
            payment: payment(&pair, "pay-rejected", rejected_agreement, "0.1", "x"),
            invoice_ids: vec![rejected.clone()],
        },
    )
    .await;
    report(
        "SendPayment for a rejected invoice",
        "Conflict: a rejected invoice is never settled",
        &format!("{result:?}"),
    );
    let error = result.unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::Conflict, "{error:?}");
    assert_eq!(
        provider_status(&pair, &rejected).await,
        DocumentStatus::Rejected
    );

    // An accepted invoice (the stand-in accepts it without paying), then less than its amount.
    let (accepted, status, body) =
        bill_invoice(&sandbox.daemons()[0], accepted_agreement, "0.1").await;
    assert_eq!(status, 200, "{body}");
    as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &AcceptInvoice {
            invoice_id: accepted.clone(),
            total_amount_accepted: "0.1".parse().unwrap(),
        },
    )
    .await
    .unwrap();
    let result = as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &SendPayment {
            payment: payment(&pair, "pay-less", accepted_agreement, "0.01", "x"),
            invoice_ids: vec![accepted.clone()],
        },
    )
    .await;
    report(
        "SendPayment of 0.01 for an invoice of 0.1",
        "BadRequest: the payment does not cover the invoice",
        &format!("{result:?}"),
    );
    let error = result.unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::BadRequest, "{error:?}");
    assert_eq!(
        provider_status(&pair, &accepted).await,
        DocumentStatus::Accepted
    );
    assert!(pair.provider.payments().await.unwrap().is_empty());

    // On another platform: refused too.
    let mut elsewhere = payment(&pair, "pay-elsewhere", accepted_agreement, "0.1", "x");
    elsewhere.payment_platform = "erc20-holesky-tglm".into();
    let error = as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &SendPayment {
            payment: elsewhere,
            invoice_ids: vec![accepted.clone()],
        },
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::BadRequest, "{error:?}");

    // The whole amount on the invoice's platform settles it.
    as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &SendPayment {
            payment: payment(&pair, "pay-full", accepted_agreement, "0.1", "x"),
            invoice_ids: vec![accepted.clone()],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        provider_status(&pair, &accepted).await,
        DocumentStatus::Settled
    );
}

#[tokio::test]
async fn a_third_node_cannot_accept_or_pay_another_pairs_invoice() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("third", &["--bootstrap", &bootstrap])
        .unwrap();
    let pair = agree(&mut sandbox, "sec-money-third", "dummy-local-tglm", 1).await;
    let third_id = sandbox.daemons()[2].node_id().unwrap();
    let (invoice_id, status, body) =
        bill_invoice(&sandbox.daemons()[0], &pair.agreements[0], "0.1").await;
    assert_eq!(status, 200, "{body}");

    let result = as_node(
        &sandbox.daemons()[2],
        &pair.provider_id,
        &AcceptInvoice {
            invoice_id: invoice_id.clone(),
            total_amount_accepted: "0.1".parse().unwrap(),
        },
    )
    .await;
    report(
        "AcceptInvoice from a node that is not the invoice's recipient",
        "Forbidden",
        &format!("{result:?}"),
    );
    assert_eq!(result.unwrap_err().code, golem_model::ErrorCode::Forbidden);
    let mut spoofed = payment(&pair, "pay-third", &pair.agreements[0], "0.1", "x");
    spoofed.payer_id = third_id.parse().unwrap();
    let result = as_node(
        &sandbox.daemons()[2],
        &pair.provider_id,
        &SendPayment {
            payment: spoofed,
            invoice_ids: vec![invoice_id.clone()],
        },
    )
    .await;
    report(
        "SendPayment from a third node for another pair's invoice",
        "Forbidden",
        &format!("{result:?}"),
    );
    assert_eq!(result.unwrap_err().code, golem_model::ErrorCode::Forbidden);
    assert_eq!(
        provider_status(&pair, &invoice_id).await,
        DocumentStatus::Received
    );
}

#[tokio::test]
#[ignore = "tier anvil: needs a local anvil chain; scripts/test.sh runs it when anvil is installed (GOLEM_TEST_ANVIL=1)"]
async fn anvil_erc20_payment_must_be_a_confirmed_transfer_from_payer_to_payee() {
    use golem_tests::anvil::{anvil_required, Anvil, ANVIL_CHAIN_ID};
    let bin =
        anvil_required("anvil_erc20_payment_must_be_a_confirmed_transfer_from_payer_to_payee")
            .unwrap();
    const PLATFORM: &str = "erc20-holesky-tglm";
    let mut sandbox = Sandbox::new();
    let anvil = Anvil::start(&bin, sandbox.path()).unwrap();
    let token = anvil.deploy_token().await.unwrap();
    let config = sandbox.path().join("erc20.toml");
    std::fs::write(
        &config,
        format!(
            "[payment.erc20.holesky]\nrpc-url = \"{}\"\nchain-id = {ANVIL_CHAIN_ID}\ntoken = \"{token}\"\n",
            anvil.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    sandbox.daemon_with("p", &["--config", &config]).unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("r", &["--config", &config, "--bootstrap", &bootstrap])
        .unwrap();
    let pair = agree(&mut sandbox, "sec-money-erc20", PLATFORM, 2).await;

    // Someone else's real transfer to the provider: 5 tokens minted to it.
    let dev = anvil.dev_account().await.unwrap();
    let provider_hex = pair.provider_id.trim_start_matches("0x").to_lowercase();
    let five = format!("{:064x}", 5u128 * 1_000_000_000_000_000_000);
    let mint = anvil
        .transact(json!({"from": dev, "to": token, "data": format!("0x40c10f19{provider_hex:0>64}{five}")}))
        .await
        .unwrap();
    let foreign_tx = mint["transactionHash"].as_str().unwrap().to_string();

    let mut invoices = Vec::new();
    for agreement_id in &pair.agreements {
        let (invoice_id, status, body) =
            bill_invoice(&sandbox.daemons()[0], agreement_id, "0.1").await;
        assert_eq!(status, 200, "{body}");
        as_node(
            &sandbox.daemons()[1],
            &pair.provider_id,
            &AcceptInvoice {
                invoice_id: invoice_id.clone(),
                total_amount_accepted: "0.1".parse().unwrap(),
            },
        )
        .await
        .unwrap();
        invoices.push(invoice_id);
    }
    let erc20_payment = |id: &str, agreement_id: &str, tx: &str| {
        let mut payment = payment(&pair, id, agreement_id, "0.1", tx);
        payment.payment_platform = PLATFORM.into();
        payment
    };
    let result = as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &SendPayment {
            payment: erc20_payment("pay-foreign", &pair.agreements[0], &foreign_tx),
            invoice_ids: vec![invoices[0].clone()],
        },
    )
    .await;
    report(
        "erc20 SendPayment naming someone else's transfer to the provider",
        "BadRequest: no Transfer from the payer to the payee",
        &format!("{result:?}"),
    );
    let error = result.unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::BadRequest, "{error:?}");
    assert_eq!(
        provider_status(&pair, &invoices[0]).await,
        DocumentStatus::Accepted
    );

    // A transaction the chain does not know: held, never settled on the payer's word.
    let unknown_tx = format!("0x{}", "ab".repeat(32));
    as_node(
        &sandbox.daemons()[1],
        &pair.provider_id,
        &SendPayment {
            payment: erc20_payment("pay-unknown", &pair.agreements[1], &unknown_tx),
            invoice_ids: vec![invoices[1].clone()],
        },
    )
    .await
    .unwrap();
    // The provider holds it as incoming pending (`payment status`)...
    let provider_daemon = &sandbox.daemons()[0];
    eventually(
        Duration::from_secs(10),
        "the held payment in payment status",
        || async {
            let output = provider_daemon.cli(&["payment", "status", "--json"]).ok()?;
            let status: Value = serde_json::from_slice(&output.stdout).ok()?;
            status["platforms"]
                .as_array()?
                .iter()
                .any(|platform| {
                    platform["platform"] == json!(PLATFORM)
                        && platform["incoming"]["pending"] == json!("0.1")
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    // ...and its re-checks (one per second) never settle it: an absence, so
    // it can only be watched for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = provider_status(&pair, &invoices[1]).await;
    report(
        "erc20 SendPayment naming a transaction that does not exist",
        "held pending, invoice not settled",
        &format!("{status:?}"),
    );
    assert_eq!(status, DocumentStatus::Accepted);
    assert!(pair.provider.payments().await.unwrap().is_empty());
}

#[tokio::test]
async fn golem_requestor_rejects_bills_beyond_the_agreements_limit() {
    use golem_tests::provider::Preset;
    use golem_tests::requestor::{demo_job, Network};
    // 0.25 GLM per second of the agreement, billed every second: honest
    // billing, but past the 0.3 GLM this requestor allows one agreement
    // within two seconds, long before the job (400 extra tasks) ends.
    let preset = Preset::new("pricey", "wasmtime", "0", "0", "0.25");
    let mut network = Network::start(
        1,
        "sec-money-limit",
        Some(preset),
        "debit-note-interval-sec = 1\n",
    )
    .unwrap();
    let dir = network.sandbox.path().join("job");
    let job = demo_job(&dir, 400).unwrap();
    let mut command = network.requestor(&[
        "--max-per-agreement",
        "0.3",
        "script",
        job.to_str().unwrap(),
        "--json",
        "--budget",
        "10",
        "--parallelism",
        "1",
    ]);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("golem-requestor finishes")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let refusal = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event"] == "payment_refused")
        .map(|event| event["message"].as_str().unwrap_or_default().to_string());
    // What the session charged its allocation (the summary; the allocation
    // itself is released at the end).
    let spent: Decimal = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event"] == "summary")
        .map(|summary| match &summary["payments"]["spent"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| panic!("no summary line:\n{stderr}\n{stdout}"))
        .parse()
        .unwrap_or_else(|error| panic!("spent is not an amount ({error}):\n{stdout}"));
    report(
        "provider bills one agreement past golem-requestor's per-agreement limit (0.3 of 10 GLM)",
        "debit note rejected with the reason; at most 0.3 GLM charged",
        &format!("{refusal:?}, spent {spent}"),
    );
    let refusal =
        refusal.unwrap_or_else(|| panic!("no payment_refused event:\n{stderr}\n{stdout}"));
    assert!(refusal.contains("share of the budget"), "{refusal}");
    assert!(spent <= "0.3".parse().unwrap(), "overspent: {spent}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
}
