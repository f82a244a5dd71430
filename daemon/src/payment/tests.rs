//! Service tests of the payment records without a network: a fake market
//! supplies one agreement, messages from the provider are handed in directly.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use golem_bus::Router;
use golem_model::market::Agreement;
use golem_model::payment::*;
use golem_model::{ErrorCode, GolemError, NodeId};
use serde_json::json;

use super::{PaymentService, Setup};
use crate::ports::Agreements;
use crate::ports::CreatedActivities;
use crate::store::Store;

pub(super) const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
pub(super) const PROVIDER: &str = "0x2222222222222222222222222222222222222222";

pub(super) struct FakeMarket(pub(super) Agreement);

impl Agreements for FakeMarket {
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
        if id == self.0.agreement_id {
            Ok(self.0.clone())
        } else {
            Err(GolemError::not_found(format!("unknown agreement {id}")))
        }
    }
}

/// The activities this requestor created: `activity-1` on `agreement-1` with the provider.
pub(super) struct OwnActivities;

impl CreatedActivities for OwnActivities {
    fn created_activity(&self, activity_id: &str) -> Option<(String, NodeId)> {
        (activity_id == "activity-1").then(|| ("agreement-1".to_string(), node(PROVIDER)))
    }
}

/// An Approved agreement `id` between [`REQUESTOR`] and [`PROVIDER`] on the
/// dummy platform, priced 10 GLM per activity start, made at `now`.
pub(super) fn agreement_made(id: &str, now: chrono::DateTime<chrono::Utc>) -> Agreement {
    serde_json::from_value(json!({
        "agreementId": id,
        "demand": {
            "properties": {
                "golem.com.payment.chosen-platform": "dummy-local-tglm",
                "golem.com.payment.platform.dummy-local-tglm.address": REQUESTOR,
            },
            "constraints": "()", "demandId": "d", "requestorId": REQUESTOR, "timestamp": now,
        },
        "offer": {
            "properties": {
                "golem.com.payment.platform.dummy-local-tglm.address": PROVIDER,
                "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 10.0],
                "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
            },
            "constraints": "()", "offerId": "o", "providerId": PROVIDER, "timestamp": now,
        },
        "validTo": now + chrono::Duration::hours(1),
        "state": "Approved",
        "timestamp": now,
    }))
    .unwrap()
}

pub(super) fn agreement() -> Agreement {
    agreement_made("agreement-1", chrono::Utc::now())
}

pub(super) fn node(text: &str) -> NodeId {
    text.parse().unwrap()
}

/// A debit note the provider issued to the requestor, on the tests' platform.
pub(super) fn issued_debit_note(
    id: &str,
    agreement_id: &str,
    activity_id: &str,
    amount: &str,
) -> DebitNote {
    DebitNote {
        debit_note_id: id.into(),
        issuer_id: node(PROVIDER),
        recipient_id: node(REQUESTOR),
        payee_addr: PROVIDER.into(),
        payer_addr: REQUESTOR.into(),
        payment_platform: "dummy-local-tglm".into(),
        previous_debit_note_id: None,
        timestamp: chrono::Utc::now(),
        agreement_id: agreement_id.into(),
        activity_id: activity_id.into(),
        total_amount_due: amount.parse().unwrap(),
        usage_counter_vector: None,
        payment_due_date: None,
        status: DocumentStatus::Issued,
    }
}

/// An invoice the provider issued to the requestor, on the tests' platform.
pub(super) fn issued_invoice(id: &str, agreement_id: &str, amount: &str) -> Invoice {
    let now = chrono::Utc::now();
    Invoice {
        invoice_id: id.into(),
        issuer_id: node(PROVIDER),
        recipient_id: node(REQUESTOR),
        payee_addr: PROVIDER.into(),
        payer_addr: REQUESTOR.into(),
        payment_platform: "dummy-local-tglm".into(),
        timestamp: now,
        agreement_id: agreement_id.into(),
        activity_ids: vec![],
        amount: amount.parse().unwrap(),
        payment_due_date: now,
        status: DocumentStatus::Issued,
    }
}

fn debit_note(id: &str, amount: &str, offset_ms: i64) -> DebitNote {
    DebitNote {
        timestamp: chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms),
        ..issued_debit_note(id, "agreement-1", "activity-1", amount)
    }
}

fn invoice(amount: &str) -> Invoice {
    issued_invoice("invoice-1", "agreement-1", amount)
}

fn acceptance(amount: &str, allocation_id: &str) -> Acceptance {
    serde_json::from_value(json!({"totalAmountAccepted": amount, "allocationId": allocation_id}))
        .unwrap()
}

async fn open(dir: &std::path::Path) -> (Store, Router, PaymentService) {
    // The previous instance's outbox task may still hold the database briefly.
    let store = crate::store::reopen::open_again_async(dir).await;
    let router = Router::new();
    let service = super::open(
        node(REQUESTOR),
        &store,
        &router,
        Arc::new(FakeMarket(agreement())),
        Setup {
            requestor_activities: Some(Arc::new(OwnActivities)),
            ..Setup::default()
        },
    )
    .unwrap();
    (store, router, service)
}

#[tokio::test]
async fn accepting_charges_once_refuses_over_budget_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let allocation_id;
    {
        let (store, router, service) = open(dir.path()).await;
        let allocation = service
            .create_allocation(
                &json!({"totalAmount": "5", "paymentPlatform": "dummy-local-tglm",
                "allocationId": "", "spentAmount": "", "remainingAmount": ""}),
            )
            .await
            .unwrap();
        allocation_id = allocation.allocation_id.clone();

        let first = debit_note("dn-1", "2", 0);
        service
            .receive_debit_note(node(PROVIDER), first.clone())
            .await
            .unwrap();
        service
            .receive_debit_note(node(PROVIDER), first.clone())
            .await
            .unwrap(); // duplicate
        let stranger = node("0x3333333333333333333333333333333333333333");
        let error = service
            .receive_debit_note(stranger, debit_note("dn-x", "3", 5))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Forbidden);
        let error = service
            .receive_debit_note(node(PROVIDER), debit_note("dn-lower", "1", 10_000))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict, "{error:?}");

        let error = service
            .accept_debit_note("dn-1", &acceptance("2.5", &allocation_id))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        service
            .accept_debit_note("dn-1", &acceptance("2", &allocation_id))
            .await
            .unwrap();
        service
            .accept_debit_note("dn-1", &acceptance("2", &allocation_id))
            .await
            .unwrap();
        assert_eq!(
            service
                .allocation(&allocation_id)
                .await
                .unwrap()
                .spent_amount
                .to_string(),
            "2"
        );

        service
            .receive_invoice(node(PROVIDER), invoice("7"))
            .await
            .unwrap();
        let error = service
            .accept_invoice("invoice-1", &acceptance("7", &allocation_id))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Conflict, "7 - 2 charged > 3 left");
        assert_eq!(
            service
                .allocation(&allocation_id)
                .await
                .unwrap()
                .spent_amount
                .to_string(),
            "2"
        );
        assert_eq!(
            service.invoice("invoice-1").await.unwrap().status,
            DocumentStatus::Received
        );
        service.durable().await.unwrap();
        service.stop();
        router.unbind_all(); // the endpoint holds the service: break the cycle
        drop(service);
        drop(store);
    }
    let (_store, _router, service) = open(dir.path()).await;
    assert_eq!(
        service
            .allocation(&allocation_id)
            .await
            .unwrap()
            .remaining_amount
            .to_string(),
        "3"
    );
    assert_eq!(
        service.debit_note("dn-1").await.unwrap().status,
        DocumentStatus::Accepted
    );
    let received = service.events(true, None, Duration::ZERO, 100).await;
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].event_type,
        PaymentEventType::InvoiceReceivedEvent
    );
    assert_eq!(
        service.events(false, None, Duration::ZERO, 100).await.len(),
        1
    );
    service.stop();
}

#[tokio::test]
async fn invoices_settle_on_dummy_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _router, service) = open(dir.path()).await;
    let allocation = service
        .create_allocation(&json!({"totalAmount": "10"}))
        .await
        .unwrap();
    assert_eq!(allocation.payment_platform, "dummy-local-tglm");
    service
        .receive_invoice(node(PROVIDER), invoice("4"))
        .await
        .unwrap();
    service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .await
        .unwrap();
    service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .await
        .unwrap();
    assert_eq!(
        service.invoice("invoice-1").await.unwrap().status,
        DocumentStatus::Settled
    );
    let payments = service.payments().await.unwrap();
    assert_eq!(payments.len(), 1);
    let by_id = service.payment(&payments[0].payment_id).await.unwrap();
    assert_eq!(by_id, payments[0]);
    assert_eq!(
        service.payment("no-such-payment").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        service.document_payments("invoice-1", true).await.unwrap(),
        payments
    );
    let allocation = service.allocation(&allocation.allocation_id).await.unwrap();
    assert_eq!(allocation.spent_amount.to_string(), "4");
    let events = service.events(true, None, Duration::ZERO, 100).await;
    assert_eq!(
        events
            .iter()
            .map(|event| event.event_type)
            .collect::<Vec<_>>(),
        vec![
            PaymentEventType::InvoiceReceivedEvent,
            PaymentEventType::InvoiceSettledEvent
        ]
    );
    assert!(events[0].event_date < events[1].event_date);
    let after = service
        .events(true, Some(events[0].event_date), Duration::ZERO, 100)
        .await;
    assert_eq!(after, vec![events[1].clone()]);
    service.stop();
}
