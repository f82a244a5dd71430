//! Exploit tests of the payment service's trust checks, without a network:
//! messages are handed to `/public/payment` as if from the named node (the
//! router's `Caller::Remote` is what the net layer authenticates).
//! - requestor side: debit notes for activities this node did not create, and
//!   documents above the agreed linear price, are refused;
//! - provider side: a payment settles only an accepted invoice, paid in full,
//!   on its platform; a rejected invoice never settles; an erc20 payment waits
//!   for its transaction and one transaction pays once;
//! - a third node gets Forbidden for each of the six messages.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use golem_bus::{Caller, Router};
use golem_model::market::Agreement;
use golem_model::payment::*;
use golem_model::{ErrorCode, GolemError, NodeId};
use serde_json::json;

use super::tests::OwnActivities;
use super::{PaymentService, Setup};
use crate::ports::Agreements;
use crate::store::Store;

const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
const PROVIDER: &str = "0x2222222222222222222222222222222222222222";
const STRANGER: &str = "0x3333333333333333333333333333333333333333";
const DUMMY: &str = "dummy-local-tglm";
const ERC20: &str = "erc20-holesky-tglm";

fn node(text: &str) -> NodeId {
    text.parse().unwrap()
}

struct FakeMarket(BTreeMap<String, Agreement>);

impl Agreements for FakeMarket {
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
        self.0
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown agreement {id}")))
    }
}

/// An agreement approved 100 s ago: cpu 0.01/s on 2 threads, env 0.001/s, start fee 0.5.
/// Cap of one activity: (100 + 10 s grace) × (0.01 × 2 + 0.001) + 0.5 = 2.81, +1% = 2.8381.
fn agreement(id: &str, platform: &str) -> Agreement {
    let now = chrono::Utc::now();
    serde_json::from_value(json!({
        "agreementId": id,
        "demand": {
            "properties": {
                "golem.com.payment.chosen-platform": platform,
                format!("golem.com.payment.platform.{platform}.address"): REQUESTOR,
            },
            "constraints": "()", "demandId": "d", "requestorId": REQUESTOR, "timestamp": now,
        },
        "offer": {
            "properties": {
                format!("golem.com.payment.platform.{platform}.address"): PROVIDER,
                "golem.com.pricing.model.linear.coeffs": [0.01, 0.001, 0.5],
                "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
                "golem.inf.cpu.threads": 2,
            },
            "constraints": "()", "offerId": "o", "providerId": PROVIDER, "timestamp": now,
        },
        "validTo": now + chrono::Duration::hours(1),
        "approvedDate": now - chrono::Duration::seconds(100),
        "state": "Approved",
        "timestamp": now - chrono::Duration::seconds(101),
    }))
    .unwrap()
}

fn market() -> Arc<FakeMarket> {
    let agreements = [
        agreement("agreement-1", DUMMY),
        agreement("agreement-2", DUMMY),
        agreement("agreement-3", ERC20),
        agreement("agreement-4", ERC20),
    ];
    Arc::new(FakeMarket(
        agreements
            .into_iter()
            .map(|agreement| (agreement.agreement_id.clone(), agreement))
            .collect(),
    ))
}

/// The payment service of `me`; on the provider, erc20 points at a closed port.
fn service(dir: &std::path::Path, me: &str) -> (Store, Router, PaymentService) {
    let store = Store::open(dir).unwrap();
    let router = Router::new();
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "holesky".to_string(),
        super::Erc20NetworkOverride {
            rpc_url: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        },
    );
    let networks = super::erc20::networks(&overrides).unwrap();
    let service = super::open(
        node(me),
        &store,
        &router,
        market(),
        Setup {
            erc20: Some((networks, [7u8; 32])),
            requestor_activities: Some(Arc::new(OwnActivities)),
            ..Setup::default()
        },
    )
    .unwrap();
    (store, router, service)
}

async fn from<M: golem_model::bus::BusMessage<Reply = ()>>(
    router: &Router,
    sender: &str,
    message: &M,
) -> Result<(), GolemError> {
    router
        .call_as(
            Caller::Remote(node(sender)),
            PAYMENT_PUBLIC_SERVICE,
            message,
        )
        .await
}

fn debit_note(id: &str, activity: &str, amount: &str) -> DebitNote {
    DebitNote {
        debit_note_id: id.into(),
        issuer_id: node(PROVIDER),
        recipient_id: node(REQUESTOR),
        payee_addr: PROVIDER.into(),
        payer_addr: REQUESTOR.into(),
        payment_platform: DUMMY.into(),
        previous_debit_note_id: None,
        timestamp: chrono::Utc::now(),
        agreement_id: "agreement-1".into(),
        activity_id: activity.into(),
        total_amount_due: amount.parse().unwrap(),
        usage_counter_vector: None,
        payment_due_date: None,
        status: DocumentStatus::Issued,
    }
}

fn invoice(id: &str, agreement: &str, activities: &[&str], amount: &str) -> Invoice {
    let now = chrono::Utc::now();
    Invoice {
        invoice_id: id.into(),
        issuer_id: node(PROVIDER),
        recipient_id: node(REQUESTOR),
        payee_addr: PROVIDER.into(),
        payer_addr: REQUESTOR.into(),
        payment_platform: DUMMY.into(),
        timestamp: now,
        agreement_id: agreement.into(),
        activity_ids: activities.iter().map(|id| id.to_string()).collect(),
        amount: amount.parse().unwrap(),
        payment_due_date: now,
        status: DocumentStatus::Issued,
    }
}

#[tokio::test]
async fn requestor_refuses_foreign_activities_and_amounts_above_the_agreed_price() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, router, service) = service(dir.path(), REQUESTOR);

    let error = from(
        &router,
        PROVIDER,
        &SendDebitNote(debit_note("dn-invented", "activity-invented", "1")),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    assert!(
        error.message.contains("not created by this requestor"),
        "{error:?}"
    );
    // The activity exists, but on another agreement.
    let mut other_agreement = debit_note("dn-other", "activity-1", "1");
    other_agreement.agreement_id = "agreement-2".into();
    let error = from(&router, PROVIDER, &SendDebitNote(other_agreement))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");

    let error = from(
        &router,
        PROVIDER,
        &SendDebitNote(debit_note("dn-drain", "activity-1", "2.9")),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    assert!(error.message.contains("exceeds"), "{error:?}");
    // Inflated usage does not lift the time bounds.
    let mut inflated = debit_note("dn-inflated", "activity-1", "50");
    inflated.usage_counter_vector = Some(json!([1000, 5000]));
    assert!(from(&router, PROVIDER, &SendDebitNote(inflated))
        .await
        .is_err());
    from(
        &router,
        PROVIDER,
        &SendDebitNote(debit_note("dn-fair", "activity-1", "2.8")),
    )
    .await
    .unwrap();
    assert!(service.debit_note("dn-drain").await.is_err());
    assert!(service.debit_note("dn-invented").await.is_err());

    // Invoices: the agreement's one activity caps them; foreign activities are refused.
    let error = from(
        &router,
        PROVIDER,
        &SendInvoice(invoice("inv-drain", "agreement-1", &[], "1000")),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    let error = from(
        &router,
        PROVIDER,
        &SendInvoice(invoice(
            "inv-foreign",
            "agreement-1",
            &["activity-1", "activity-x"],
            "1",
        )),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    // A third node cannot send documents on the agreement.
    let mut spoofed = invoice("inv-stranger", "agreement-1", &[], "1");
    spoofed.issuer_id = node(STRANGER);
    let error = from(&router, STRANGER, &SendInvoice(spoofed))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    let error = from(
        &router,
        STRANGER,
        &SendInvoice(invoice("inv-3", "agreement-1", &[], "1")),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    let error = from(
        &router,
        STRANGER,
        &SendDebitNote(debit_note("dn-3", "activity-1", "1")),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    from(
        &router,
        PROVIDER,
        &SendInvoice(invoice("inv-fair", "agreement-1", &["activity-1"], "2.83")),
    )
    .await
    .unwrap();
    service.stop();
}

fn payment(id: &str, agreement: &str, amount: &str, platform: &str, details: &str) -> Payment {
    Payment {
        payment_id: id.into(),
        payer_id: node(REQUESTOR),
        payee_id: node(PROVIDER),
        payer_addr: REQUESTOR.into(),
        payee_addr: PROVIDER.into(),
        payment_platform: platform.into(),
        amount: amount.parse().unwrap(),
        timestamp: chrono::Utc::now(),
        agreement_payments: vec![AgreementPayment {
            agreement_id: agreement.into(),
            amount: amount.parse().unwrap(),
            allocation_id: None,
        }],
        activity_payments: Vec::new(),
        details: details.into(),
    }
}

fn send_payment(payment: Payment, invoice_id: &str) -> SendPayment {
    SendPayment {
        payment,
        invoice_ids: vec![invoice_id.to_string()],
    }
}

async fn issue(service: &PaymentService, agreement: &str, amount: &str) -> Invoice {
    service
        .issue_invoice(
            serde_json::from_value(json!({"agreementId": agreement, "amount": amount})).unwrap(),
        )
        .await
        .unwrap()
}

fn accept(invoice_id: &str, amount: &str) -> AcceptInvoice {
    AcceptInvoice {
        invoice_id: invoice_id.into(),
        total_amount_accepted: amount.parse().unwrap(),
    }
}

fn rejection() -> Rejection {
    serde_json::from_value(json!({"rejectionReason": "BAD_SERVICE"})).unwrap()
}

#[tokio::test]
async fn provider_settles_only_accepted_invoices_paid_in_full_by_their_payer() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, router, service) = service(dir.path(), PROVIDER);

    // Rejected: a payment never settles it.
    let rejected = issue(&service, "agreement-1", "2").await;
    let id = rejected.invoice_id.clone();
    let error = from(
        &router,
        REQUESTOR,
        &send_payment(payment("pay-early", "agreement-1", "2", DUMMY, "x"), &id),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.code,
        ErrorCode::Unavailable,
        "not accepted yet: {error:?}"
    );
    let reject = RejectInvoice {
        invoice_id: id.clone(),
        rejection: rejection(),
    };
    let error = from(&router, STRANGER, &reject).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    from(&router, REQUESTOR, &reject).await.unwrap();
    let error = from(
        &router,
        REQUESTOR,
        &send_payment(payment("pay-rejected", "agreement-1", "2", DUMMY, "x"), &id),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict, "{error:?}");
    assert!(error.message.contains("rejected"), "{error:?}");
    assert_eq!(
        service.invoice(&id).await.unwrap().status,
        DocumentStatus::Rejected
    );
    assert!(service.payments().await.unwrap().is_empty());

    // Accepted: only by its recipient; paid in full, on its platform, by its payer.
    let accepted = issue(&service, "agreement-2", "2").await;
    let id = accepted.invoice_id.clone();
    let error = from(&router, STRANGER, &accept(&id, "2"))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    from(&router, REQUESTOR, &accept(&id, "2")).await.unwrap();
    let error = from(
        &router,
        REQUESTOR,
        &send_payment(payment("pay-less", "agreement-2", "1.99", DUMMY, "x"), &id),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    assert!(error.message.contains("due 2"), "{error:?}");
    let mut inflated = payment("pay-inflated", "agreement-2", "1", DUMMY, "x");
    inflated.agreement_payments[0].amount = "2".parse().unwrap();
    let error = from(&router, REQUESTOR, &send_payment(inflated, &id))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    let error = from(
        &router,
        REQUESTOR,
        &send_payment(payment("pay-platform", "agreement-2", "2", ERC20, "x"), &id),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    // A third node, in the requestor's name or in its own.
    for payer in [REQUESTOR, STRANGER] {
        let mut by_stranger = payment("pay-stranger", "agreement-2", "2", DUMMY, "x");
        by_stranger.payer_id = node(payer);
        let error = from(&router, STRANGER, &send_payment(by_stranger, &id))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Forbidden, "payer {payer}: {error:?}");
    }
    assert_eq!(
        service.invoice(&id).await.unwrap().status,
        DocumentStatus::Accepted
    );
    assert!(service.payments().await.unwrap().is_empty());
    let paid = send_payment(payment("pay-ok", "agreement-2", "2", DUMMY, "x"), &id);
    from(&router, REQUESTOR, &paid).await.unwrap();
    from(&router, REQUESTOR, &paid).await.unwrap(); // duplicate
    assert_eq!(
        service.invoice(&id).await.unwrap().status,
        DocumentStatus::Settled
    );
    assert_eq!(service.payments().await.unwrap().len(), 1);

    // Debit notes: only their recipient accepts or rejects them.
    let note = service
        .issue_debit_note(
            serde_json::from_value(
                json!({"agreementId": "agreement-2", "activityId": "activity-1", "totalAmountDue": "1"}),
            )
            .unwrap(),
        ).await
        .unwrap();
    let accept_note = AcceptDebitNote {
        debit_note_id: note.debit_note_id.clone(),
        total_amount_accepted: "1".parse().unwrap(),
    };
    let reject_note = RejectDebitNote {
        debit_note_id: note.debit_note_id.clone(),
        rejection: rejection(),
    };
    let error = from(&router, STRANGER, &accept_note).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    let error = from(&router, STRANGER, &reject_note).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    from(&router, REQUESTOR, &accept_note).await.unwrap();
    service.stop();
}

#[tokio::test]
async fn erc20_payments_wait_for_their_transaction_and_one_transaction_pays_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, router, service) = service(dir.path(), PROVIDER);
    let tx = format!("0x{}", "ab".repeat(32));
    let first = issue(&service, "agreement-3", "1").await;
    let second = issue(&service, "agreement-4", "1").await;
    for invoice in [&first, &second] {
        from(&router, REQUESTOR, &accept(&invoice.invoice_id, "1"))
            .await
            .unwrap();
    }
    // The RPC is unreachable: the payment is held, the invoice not settled.
    from(
        &router,
        REQUESTOR,
        &send_payment(
            payment("pay-3", "agreement-3", "1", ERC20, &tx),
            &first.invoice_id,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        service.invoice(&first.invoice_id).await.unwrap().status,
        DocumentStatus::Accepted
    );
    assert!(service.payments().await.unwrap().is_empty());
    let held = service.unverified_payments().await;
    assert_eq!(held.len(), 1);
    assert!(held[0].status.contains("holesky"), "{:?}", held[0].status);
    let report = service.status_report().await.unwrap();
    let erc20 = report
        .platforms
        .iter()
        .find(|status| status.platform == ERC20)
        .unwrap();
    assert_eq!(erc20.incoming.pending.to_string(), "1");
    assert_eq!(erc20.incoming.paid.to_string(), "0");
    // The same transaction cannot pay a second invoice.
    let error = from(
        &router,
        REQUESTOR,
        &send_payment(
            payment("pay-4", "agreement-4", "1", ERC20, &tx),
            &second.invoice_id,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict, "{error:?}");
    // Two payments naming one transaction can both pass the check, which
    // runs before the unlocked chain check: recording or holding the second
    // is refused too, under the lock that writes it.
    let racing = send_payment(
        payment("pay-5", "agreement-4", "1", ERC20, &tx),
        &second.invoice_id,
    );
    let again = racing.clone();
    let error = service
        .with_actor(move |actor| actor.record_payment(&again))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict, "{error:?}");
    let error = service
        .with_actor(move |actor| actor.hold_unverified(racing, "waiting".into()))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict, "{error:?}");
    assert_eq!(service.unverified_payments().await.len(), 1);
    // Not a transaction hash at all: refused at once.
    let error = from(
        &router,
        REQUESTOR,
        &send_payment(
            payment("pay-4b", "agreement-4", "1", ERC20, "paid, trust me"),
            &second.invoice_id,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest, "{error:?}");
    assert_eq!(
        service.invoice(&second.invoice_id).await.unwrap().status,
        DocumentStatus::Accepted
    );
    service.stop();
}
