//! End-to-end tests of payments on `dummy-local-tglm` between two real daemons:
//! allocation → demand decorations → agreement → debit notes → invoice →
//! accept → settled on both sides, with duplicate accepts, over-budget
//! refusals, bad input and a requestor restart in between. Offers carry a
//! linear price (a start fee of 5) and debit notes name an activity the
//! requestor created (`create_bare_activity`), as the requestor's daemon
//! refuses anything else.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::{Duration, Instant};

use golem_client::GolemClient;
use golem_model::market::DemandOfferBase;
use golem_model::payment::{DocumentStatus, PaymentEvent, PaymentEventType};
use golem_tests::http::JsonApi;
use golem_tests::negotiation::{negotiate_agreement, spawn_provider_negotiator, wait_approved};
use golem_tests::standin::create_bare_activity;
use golem_tests::{eventually, DaemonProcess, Sandbox};
use serde_json::{json, Value};

const SUBNET: &str = "e2e-payment";
const PLATFORM: &str = "dummy-local-tglm";

fn offer(provider_id: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.com.payment.platform.dummy-local-tglm.address": provider_id,
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
    for property in decoration["properties"].as_array().unwrap() {
        properties[property["key"].as_str().unwrap()] = property["value"].clone();
    }
    let constraints: Vec<&str> = decoration["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|constraint| constraint.as_str().unwrap())
        .collect();
    DemandOfferBase {
        properties,
        constraints: format!(
            "(&(golem.node.debug.subnet={SUBNET})\n\t{})",
            constraints.join("\n\t")
        ),
    }
}

/// Raw REST access for exact bodies and status codes.
struct Rest {
    api: JsonApi,
}

impl Rest {
    fn of(daemon: &DaemonProcess) -> Rest {
        Rest {
            api: JsonApi::new(
                format!("{}/payment-api/v1", daemon.api_url),
                &daemon.app_key,
            ),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api.call(method, path, body).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Collect `count` events of one kind, following the `eventDate` cursor as clients do.
async fn collect_events(client: &GolemClient, invoices: bool, count: usize) -> Vec<PaymentEvent> {
    let mut events: Vec<PaymentEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        assert!(Instant::now() < deadline, "only {events:?} arrived");
        let after = events.last().map(|event| {
            event
                .event_date
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
        let batch = client
            .payment_events(invoices, after.as_deref(), 2.0, 100)
            .await
            .unwrap();
        events.extend(batch);
    }
    events
}

/// How long "nothing more happens" is watched: far beyond a loopback round
/// trip between two daemons, and past the first retries of their outboxes,
/// which is when a duplicate would show.
const QUIET: Duration = Duration::from_secs(3);

/// The event date as the `afterTimestamp` cursor clients send.
fn cursor(event: &PaymentEvent) -> String {
    event
        .event_date
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Assert that no event of this kind comes after `after` for [`QUIET`]
/// (long-polling, so one arriving at any moment of that time is seen).
async fn assert_no_more_events(client: &GolemClient, invoices: bool, after: &str) {
    let deadline = Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let more = client
            .payment_events(invoices, Some(after), left.as_secs_f64().max(0.1), 100)
            .await
            .unwrap();
        assert!(more.is_empty(), "unexpected events after {after}: {more:?}");
    }
}

/// All events of one kind from the start: exactly `count` arrive, and no more
/// within [`QUIET`].
async fn collect_exactly(client: &GolemClient, invoices: bool, count: usize) -> Vec<PaymentEvent> {
    let events = collect_events(client, invoices, count).await;
    assert_eq!(events.len(), count, "{events:?}");
    assert_no_more_events(client, invoices, &cursor(&events[count - 1])).await;
    events
}

#[tokio::test]
async fn debit_notes_and_invoice_are_paid_between_two_daemons() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let requestor_id = sandbox.daemons()[1].node_id().unwrap();
    let provider = sandbox.daemons()[0].client();
    let provider_rest = Rest::of(&sandbox.daemons()[0]);
    let mut requestor = sandbox.daemons()[1].client();
    let mut requestor_rest = Rest::of(&sandbox.daemons()[1]);

    // Allocation with yapapi's exact body.
    let now = chrono::Utc::now();
    let (status, allocation) = requestor_rest
        .post(
            "/allocations",
            json!({
                "allocationId": "", "address": requestor_id, "paymentPlatform": PLATFORM,
                "totalAmount": "10", "spentAmount": "", "remainingAmount": "",
                "timestamp": now.to_rfc3339(), "timeout": (now + chrono::Duration::days(3650)).to_rfc3339(),
                "makeDeposit": false,
            }),
        )
        .await;
    assert_eq!(status, 201, "{allocation}");
    let allocation_id = allocation["allocationId"].as_str().unwrap().to_string();
    assert_eq!(allocation["address"], json!(requestor_id));
    assert_eq!(allocation["paymentPlatform"], json!(PLATFORM));
    assert_eq!(allocation["totalAmount"], json!("10"));
    assert_eq!(allocation["spentAmount"], json!("0"));
    assert_eq!(allocation["remainingAmount"], json!("10"));
    assert_eq!(allocation["makeDeposit"], json!(false));

    // A second, small allocation to prove over-budget refusals; erc20 is known too.
    let small = requestor.create_allocation(PLATFORM, "1").await.unwrap();
    let erc20 = requestor
        .create_allocation("erc20-holesky-tglm", "1")
        .await
        .unwrap();
    assert_eq!(erc20.payment_platform, "erc20-holesky-tglm");

    let (status, decoration) = requestor_rest
        .get(&format!("/demandDecorations?allocationIds={allocation_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        decoration,
        json!({
            "properties": [
                {"key": "golem.com.payment.platform.dummy-local-tglm.address", "value": requestor_id},
                {"key": "golem.com.payment.protocol.version", "value": "3"},
            ],
            "constraints": [
                "(golem.com.payment.platform.dummy-local-tglm.address=*)",
                "(golem.com.payment.protocol.version>1)",
            ],
        })
    );

    // Bad input.
    for body in [
        json!({"totalAmount": "ten", "paymentPlatform": PLATFORM}),
        json!({"totalAmount": "-1", "paymentPlatform": PLATFORM}),
        json!({"totalAmount": "1", "paymentPlatform": "nochain-x-y"}),
        json!({"totalAmount": "1", "address": "0x0000000000000000000000000000000000000001"}),
    ] {
        let (status, reply) = requestor_rest.post("/allocations", body.clone()).await;
        assert_eq!(status, 400, "{body} → {reply}");
        assert!(reply["message"].is_string());
    }
    assert_eq!(requestor_rest.get("/allocations/nope").await.0, 404);
    assert_eq!(requestor_rest.get("/debitNotes/nope").await.0, 404);
    assert_eq!(
        requestor_rest
            .get("/demandDecorations?allocationIds=nope")
            .await
            .0,
        404
    );

    // Agreement.
    let offer_id = provider
        .subscribe_offer(&offer(&provider_id))
        .await
        .unwrap();
    spawn_provider_negotiator(provider.clone(), offer_id, offer(&provider_id));
    let agreement_id = negotiate_agreement(&requestor, &demand(&decoration)).await;
    // The provider records its approval once the requestor has acknowledged it.
    wait_approved(&provider, &agreement_id).await;
    let (activity_id, _exe_unit) =
        create_bare_activity(&requestor, &sandbox.daemons()[0], &agreement_id)
            .await
            .unwrap();

    // Provider issues and sends two debit notes; amounts never decrease.
    let first = provider
        .issue_debit_note(&agreement_id, &activity_id, "1.5")
        .await
        .unwrap();
    assert_eq!(first.status, DocumentStatus::Issued);
    assert_eq!(first.payment_platform, PLATFORM);
    assert_eq!(first.payer_addr, requestor_id);
    assert_eq!(first.payee_addr, provider_id);
    provider
        .send_debit_note(&first.debit_note_id)
        .await
        .unwrap();
    let second = provider
        .issue_debit_note(&agreement_id, &activity_id, "2.5")
        .await
        .unwrap();
    assert_eq!(
        second.previous_debit_note_id.as_deref(),
        Some(first.debit_note_id.as_str())
    );
    provider
        .send_debit_note(&second.debit_note_id)
        .await
        .unwrap();
    let (status, reply) = provider_rest
        .post(
            "/debitNotes",
            json!({"agreementId": agreement_id, "activityId": activity_id, "totalAmountDue": "2"}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, _) = provider_rest
        .post(
            "/debitNotes",
            json!({"agreementId": agreement_id, "activityId": activity_id, "totalAmountDue": "1e"}),
        )
        .await;
    assert_eq!(status, 400);
    // The requestor cannot bill its own agreement.
    let (status, reply) = requestor_rest
        .post(
            "/debitNotes",
            json!({"agreementId": agreement_id, "activityId": activity_id, "totalAmountDue": "9"}),
        )
        .await;
    assert_eq!(status, 403, "{reply}");

    // The requestor sees both, once and in order, and accepts them.
    let events = collect_exactly(&requestor, false, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|event| event.event_type)
            .collect::<Vec<_>>(),
        vec![PaymentEventType::DebitNoteReceivedEvent; 2]
    );
    assert_eq!(
        events[0].debit_note_id.as_deref(),
        Some(first.debit_note_id.as_str())
    );
    assert_eq!(
        events[1].debit_note_id.as_deref(),
        Some(second.debit_note_id.as_str())
    );
    let received = requestor.debit_note(&second.debit_note_id).await.unwrap();
    assert_eq!(received.status, DocumentStatus::Received);
    assert_eq!(received.total_amount_due.to_string(), "2.5");

    // Bad acceptances.
    let accept_path = format!("/debitNotes/{}/accept", first.debit_note_id);
    let (status, _) = requestor_rest
        .post(
            &accept_path,
            json!({"totalAmountAccepted": "abc", "allocationId": allocation_id}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = requestor_rest
        .post(
            &accept_path,
            json!({"totalAmountAccepted": "1.5", "allocationId": "nope"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = requestor_rest
        .post(
            &accept_path,
            json!({"totalAmountAccepted": "1.5", "allocationId": erc20.allocation_id}),
        )
        .await;
    assert_eq!(
        status, 400,
        "an allocation of another platform must be refused"
    );
    let (status, _) = provider_rest
        .post(
            &accept_path,
            json!({"totalAmountAccepted": "1.5", "allocationId": allocation_id}),
        )
        .await;
    assert_eq!(status, 403, "the issuer cannot accept its own debit note");

    requestor
        .accept_debit_note(&first.debit_note_id, "1.5", &allocation_id)
        .await
        .unwrap();
    requestor
        .accept_debit_note(&second.debit_note_id, "2.5", &allocation_id)
        .await
        .unwrap();
    requestor
        .accept_debit_note(&second.debit_note_id, "2.5", &allocation_id)
        .await
        .unwrap(); // duplicate: changes nothing
    let charged = requestor.allocation(&allocation_id).await.unwrap();
    assert_eq!(charged.spent_amount.to_string(), "2.5");
    assert_eq!(charged.remaining_amount.to_string(), "7.5");

    // Two acceptances reach the provider; the duplicate adds none.
    let accepted = collect_exactly(&provider, false, 2).await;
    assert_eq!(
        accepted
            .iter()
            .map(|event| (event.event_type, event.debit_note_id.as_deref()))
            .collect::<Vec<_>>(),
        [
            (
                PaymentEventType::DebitNoteAcceptedEvent,
                Some(first.debit_note_id.as_str())
            ),
            (
                PaymentEventType::DebitNoteAcceptedEvent,
                Some(second.debit_note_id.as_str())
            ),
        ]
    );
    assert_eq!(
        provider
            .debit_note(&second.debit_note_id)
            .await
            .unwrap()
            .status,
        DocumentStatus::Accepted
    );

    // Invoice.
    let invoice = provider.issue_invoice(&agreement_id, "4").await.unwrap();
    assert_eq!(invoice.status, DocumentStatus::Issued);
    provider.send_invoice(&invoice.invoice_id).await.unwrap();
    provider.send_invoice(&invoice.invoice_id).await.unwrap(); // resend: changes nothing
                                                               // Sent twice, received once.
    let events = collect_exactly(&requestor, true, 1).await;
    assert_eq!(events[0].event_type, PaymentEventType::InvoiceReceivedEvent);
    assert_eq!(
        events[0].invoice_id.as_deref(),
        Some(invoice.invoice_id.as_str())
    );
    let (status, received) = requestor_rest
        .get(&format!("/invoices/{}", invoice.invoice_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(received["status"], json!("RECEIVED"));
    assert_eq!(received["amount"], json!("4"));
    assert_eq!(received["agreementId"], json!(agreement_id));

    // Restart the requestor between receipt and accept: nothing is lost.
    sandbox.daemons()[1].restart().unwrap();
    requestor = sandbox.daemons()[1].client();
    requestor_rest = Rest::of(&sandbox.daemons()[1]);
    let after_restart = requestor.invoice(&invoice.invoice_id).await.unwrap();
    assert_eq!(after_restart.status, DocumentStatus::Received);
    assert_eq!(
        requestor
            .allocation(&allocation_id)
            .await
            .unwrap()
            .spent_amount
            .to_string(),
        "2.5"
    );

    // Over budget: 4 - 2.5 already charged = 1.5 > 1 left in the small allocation.
    let (status, reply) = requestor_rest
        .post(
            &format!("/invoices/{}/accept", invoice.invoice_id),
            json!({"totalAmountAccepted": "4", "allocationId": small.allocation_id}),
        )
        .await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("left"),
        "{reply}"
    );
    assert_eq!(
        requestor
            .allocation(&small.allocation_id)
            .await
            .unwrap()
            .spent_amount
            .to_string(),
        "0"
    );

    let started = Instant::now();
    requestor
        .accept_invoice(&invoice.invoice_id, "4", &allocation_id)
        .await
        .unwrap();
    let accept_ms = started.elapsed().as_secs_f64() * 1000.0;
    requestor
        .accept_invoice(&invoice.invoice_id, "4", &allocation_id)
        .await
        .unwrap(); // duplicate
    assert_eq!(
        requestor.invoice(&invoice.invoice_id).await.unwrap().status,
        DocumentStatus::Settled
    );
    let paid = requestor.allocation(&allocation_id).await.unwrap();
    assert_eq!(
        paid.spent_amount.to_string(),
        "4",
        "spent equals the invoice amount"
    );
    assert_eq!(paid.remaining_amount.to_string(), "6");
    let payments = requestor.payments().await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].amount.to_string(), "4");
    // Accepted twice, settled once.
    let settled = collect_exactly(&requestor, true, 2).await;
    assert_eq!(
        settled
            .iter()
            .map(|event| (event.event_type, event.invoice_id.as_deref()))
            .collect::<Vec<_>>(),
        [
            (
                PaymentEventType::InvoiceReceivedEvent,
                Some(invoice.invoice_id.as_str())
            ),
            (
                PaymentEventType::InvoiceSettledEvent,
                Some(invoice.invoice_id.as_str())
            ),
        ]
    );

    // The provider learns of the acceptance and the payment.
    eventually(
        Duration::from_secs(20),
        "the provider sees the invoice settled",
        || {
            let provider = provider.clone();
            let id = invoice.invoice_id.clone();
            async move {
                let invoice = provider.invoice(&id).await.ok()?;
                (invoice.status == DocumentStatus::Settled).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let provider_payments = provider.payments().await.unwrap();
    assert_eq!(provider_payments.len(), 1);
    assert_eq!(provider_payments[0].payment_id, payments[0].payment_id);
    let provider_events = collect_exactly(&provider, true, 2).await;
    assert_eq!(
        provider_events
            .iter()
            .map(|event| (event.event_type, event.invoice_id.as_deref()))
            .collect::<Vec<_>>(),
        [
            (
                PaymentEventType::InvoiceAcceptedEvent,
                Some(invoice.invoice_id.as_str())
            ),
            (
                PaymentEventType::InvoiceSettledEvent,
                Some(invoice.invoice_id.as_str())
            ),
        ]
    );

    // Accounts and release.
    let accounts = requestor.requestor_accounts().await.unwrap();
    assert!(accounts.iter().any(|account| account.platform == PLATFORM
        && account.send
        && account.address == requestor_id));
    requestor.release_allocation(&allocation_id).await.unwrap();
    // Released: Not Found, as the original answers.
    assert_eq!(
        requestor_rest
            .get(&format!("/allocations/{allocation_id}"))
            .await
            .0,
        404
    );
    eprintln!("invoice accept → settled (REST round trip on dummy): {accept_ms:.2} ms");
}

/// An allocation whose `timeout` passes is released by the daemon: `GET`
/// answers 404 (as the original) saying it expired, the list no longer has it
/// and what it reserved is free again in `payment status`.
#[tokio::test]
async fn allocation_is_released_at_its_timeout() {
    let mut sandbox = Sandbox::new();
    sandbox.daemon("r").unwrap();
    let daemon = &sandbox.daemons()[0];
    let requestor = daemon.client();
    let rest = Rest::of(daemon);
    let requestor_id = daemon.node_id().unwrap();
    let timeout = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (status, allocation) = rest
        .post(
            "/allocations",
            json!({"address": requestor_id, "paymentPlatform": PLATFORM,
                "totalAmount": "7", "timeout": timeout.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 201, "{allocation}");
    let id = allocation["allocationId"].as_str().unwrap().to_string();
    assert_eq!(rest.get(&format!("/allocations/{id}")).await.0, 200);
    let reserved = || {
        let out = daemon.cli(&["payment", "status", "--json"]).unwrap();
        let status: Value = serde_json::from_slice(&out.stdout).unwrap();
        status["platforms"][0]["allocations"].clone()
    };
    assert_eq!(reserved()["remaining"], json!("7"));
    let (code, body) = eventually(
        Duration::from_secs(10),
        "the allocation to expire",
        || async {
            let (code, body) = rest.get(&format!("/allocations/{id}")).await;
            (code == 404).then_some((code, body))
        },
    )
    .await
    .unwrap();
    assert_eq!(code, 404);
    assert!(body.to_string().contains("expired"), "{body}");
    assert!(requestor.allocations().await.unwrap().is_empty());
    let allocations = reserved();
    assert_eq!(allocations["remaining"], json!("0"), "{allocations}");
    assert_eq!(allocations["released"], json!(1), "{allocations}");
}

/// The provider's daemon is down when the requestor accepts: the acceptance
/// waits in the requestor's outbox and reaches the provider after its restart.
#[tokio::test]
async fn acceptance_reaches_a_provider_restarted_after_send() {
    let mut sandbox = Sandbox::new();
    sandbox.daemon("r").unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("p", &["--bootstrap", &bootstrap])
        .unwrap();
    let requestor = sandbox.daemons()[0].client();
    let provider_id = sandbox.daemons()[1].node_id().unwrap();
    let provider = sandbox.daemons()[1].client();
    let allocation = requestor.create_allocation(PLATFORM, "10").await.unwrap();
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
    wait_approved(&provider, &agreement_id).await;
    let (activity_id, exe_unit) =
        create_bare_activity(&requestor, &sandbox.daemons()[1], &agreement_id)
            .await
            .unwrap();
    let note = provider
        .issue_debit_note(&agreement_id, &activity_id, "3")
        .await
        .unwrap();
    provider.send_debit_note(&note.debit_note_id).await.unwrap();
    collect_events(&requestor, false, 1).await;

    drop(exe_unit);
    sandbox.daemons()[1].kill();
    requestor
        .accept_debit_note(&note.debit_note_id, "3", &allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(
        requestor
            .allocation(&allocation.allocation_id)
            .await
            .unwrap()
            .spent_amount
            .to_string(),
        "3"
    );
    sandbox.daemons()[1].restart().unwrap();
    let provider = sandbox.daemons()[1].client();
    eventually(
        Duration::from_secs(60),
        "the acceptance reaches the restarted provider",
        || {
            let provider = provider.clone();
            let id = note.debit_note_id.clone();
            async move {
                let note = provider.debit_note(&id).await.ok()?;
                (note.status == DocumentStatus::Accepted).then_some(())
            }
        },
    )
    .await
    .unwrap();
    // Delivered once, though retried while the provider was down.
    let events = collect_exactly(&provider, false, 1).await;
    assert_eq!(
        (events[0].event_type, events[0].debit_note_id.as_deref()),
        (
            PaymentEventType::DebitNoteAcceptedEvent,
            Some(note.debit_note_id.as_str())
        )
    );
    assert_eq!(
        requestor
            .allocation(&allocation.allocation_id)
            .await
            .unwrap()
            .spent_amount
            .to_string(),
        "3",
        "charged once"
    );
}

fn percentile(samples: &mut [Duration], fraction: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 * fraction) as usize).min(samples.len() - 1)].as_secs_f64()
        * 1000.0
}

/// Benchmark: 1,000 debit notes accepted across 100 agreements (rate), and
/// invoice accept → settled on `dummy`. Prints a table; asserts only outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with scripts/bench/payment.sh"]
async fn bench_payment() {
    const AGREEMENTS: usize = 100;
    const NOTES_PER_AGREEMENT: usize = 10;
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let provider = sandbox.daemons()[0].client();
    let requestor = sandbox.daemons()[1].client();
    let allocation = requestor
        .create_allocation(PLATFORM, "1000000")
        .await
        .unwrap();
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
    let mut agreements = Vec::new();
    for _ in 0..AGREEMENTS {
        agreements.push(negotiate_agreement(&requestor, &demand(&decoration)).await);
    }
    for agreement_id in &agreements {
        wait_approved(&provider, agreement_id).await;
    }
    // One activity per agreement, as the requestor's daemon bills only those.
    let mut activities = std::collections::HashMap::new();
    let mut exe_units = Vec::new();
    for agreement_id in &agreements {
        let (activity_id, exe_unit) =
            create_bare_activity(&requestor, &sandbox.daemons()[0], agreement_id)
                .await
                .unwrap();
        activities.insert(agreement_id.clone(), activity_id);
        exe_units.push(exe_unit);
    }

    // Provider: 10 increasing debit notes per agreement, agreements in parallel.
    use futures::StreamExt;
    let started = Instant::now();
    let sent: Vec<Vec<String>> = futures::stream::iter(agreements.clone())
        .map(|agreement_id| {
            let provider = provider.clone();
            let activity_id = activities[&agreement_id].clone();
            async move {
                let mut ids = Vec::new();
                for step in 1..=NOTES_PER_AGREEMENT {
                    let amount = format!("0.{step}");
                    let amount = if step == 10 { "1".to_string() } else { amount };
                    let note = provider
                        .issue_debit_note(&agreement_id, &activity_id, &amount)
                        .await
                        .unwrap();
                    provider.send_debit_note(&note.debit_note_id).await.unwrap();
                    ids.push(note.debit_note_id);
                }
                ids
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let send_elapsed = started.elapsed();
    let total = AGREEMENTS * NOTES_PER_AGREEMENT;
    let received = collect_events(&requestor, false, total).await;
    assert_eq!(received.len(), total);

    // Requestor: accept all 1,000.
    let notes: Vec<(String, String)> = {
        let all = requestor.debit_notes().await.unwrap();
        all.into_iter()
            .map(|note| (note.debit_note_id, note.total_amount_due.to_string()))
            .collect()
    };
    assert_eq!(notes.len(), total);
    let started = Instant::now();
    futures::stream::iter(notes)
        .map(|(id, amount)| {
            let requestor = requestor.clone();
            let allocation_id = allocation.allocation_id.clone();
            async move {
                requestor
                    .accept_debit_note(&id, &amount, &allocation_id)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let accept_elapsed = started.elapsed();
    let charged = requestor
        .allocation(&allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(charged.spent_amount.to_string(), AGREEMENTS.to_string());
    let started = Instant::now();
    let accepted_on_provider = collect_events(&provider, false, total).await.len();
    let provider_seen = started.elapsed();
    assert_eq!(accepted_on_provider, total);
    drop(sent);

    // Invoice accept → settled (requestor REST) and → settled seen by the provider.
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for agreement_id in agreements.iter().take(50) {
        let invoice = provider.issue_invoice(agreement_id, "1").await.unwrap();
        provider.send_invoice(&invoice.invoice_id).await.unwrap();
        let started = Instant::now();
        requestor
            .accept_invoice(&invoice.invoice_id, "1", &allocation.allocation_id)
            .await
            .unwrap();
        local.push(started.elapsed());
        loop {
            if provider.invoice(&invoice.invoice_id).await.unwrap().status
                == DocumentStatus::Settled
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        remote.push(started.elapsed());
    }
    let charged = requestor
        .allocation(&allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(charged.spent_amount.to_string(), AGREEMENTS.to_string());

    println!("\n| Measure | Value |\n|---|---|");
    println!(
        "| {total} debit notes issued + sent across {AGREEMENTS} agreements (16 in flight) | {:.0} /s |",
        total as f64 / send_elapsed.as_secs_f64()
    );
    println!(
        "| {total} debit notes accepted via REST (16 in flight) | {:.0} /s ({:.0} ms total) |",
        total as f64 / accept_elapsed.as_secs_f64(),
        accept_elapsed.as_secs_f64() * 1000.0
    );
    println!(
        "| acceptances delivered to the provider (events read after the last accept) | {:.0} ms |",
        provider_seen.as_secs_f64() * 1000.0
    );
    println!(
        "| invoice accept → SETTLED on requestor (REST call, dummy), p50 / p90 of {} | {:.2} ms / {:.2} ms |",
        local.len(),
        percentile(&mut local, 0.5),
        percentile(&mut local, 0.9)
    );
    println!(
        "| invoice accept → SETTLED seen on provider, p50 / p90 of {} | {:.2} ms / {:.2} ms |",
        remote.len(),
        percentile(&mut remote, 0.5),
        percentile(&mut remote, 0.9)
    );
}
