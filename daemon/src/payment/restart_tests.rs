//! The payment actor dies mid-agreement and its supervisor starts it again
//! from sled: nothing acknowledged is lost. Two nodes in one process, their
//! routers joined by a stand-in for the net (`/net/<node>/...` calls enter
//! the other node's router as `Caller::Remote`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use golem_bus::{BusCall, Caller, Endpoint, ReplyStream, Router};
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};
use serde_json::json;

use super::tests::{agreement, node, FakeMarket, OwnActivities, PROVIDER, REQUESTOR};
use super::{PaymentService, Setup};
use crate::store::Store;

/// `/net/<node>/<rest>` of a node: into `<node>`'s router as a remote call from `me`.
struct FakeNet {
    me: NodeId,
    routers: Arc<RwLock<HashMap<NodeId, Router>>>,
}

impl Endpoint for FakeNet {
    fn handle(&self, call: BusCall) -> ReplyStream {
        let rest = call.address.trim_start_matches("/net/");
        let (target, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let router = target
            .parse::<NodeId>()
            .ok()
            .and_then(|target| self.routers.read().unwrap().get(&target).cloned());
        match router {
            Some(router) => router.call_stream_raw(BusCall {
                caller: Caller::Remote(self.me),
                address: path.to_string(),
                ..call
            }),
            None => {
                let error = GolemError::no_endpoint(&call.address);
                Box::pin(futures::stream::once(async move { Err(error) }))
            }
        }
    }
}

fn open(
    dir: &std::path::Path,
    me: &str,
    routers: &Arc<RwLock<HashMap<NodeId, Router>>>,
) -> (Store, Router, PaymentService) {
    let store = Store::open(dir).unwrap();
    let router = Router::new();
    router
        .bind_prefix(
            "/net/",
            FakeNet {
                me: node(me),
                routers: routers.clone(),
            },
        )
        .unwrap();
    routers.write().unwrap().insert(node(me), router.clone());
    let service = super::open(
        node(me),
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

async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn crash(service: &PaymentService) {
    let before = service.restarts();
    service.crash_for_test().await;
    eventually("the payment actor was started again", || async {
        (service.restarts() > before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_crashed_payment_actor_restarts_from_sled_and_the_agreement_completes() {
    let routers = Arc::new(RwLock::new(HashMap::new()));
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_dir = tempfile::tempdir().unwrap();
    let (_r_store, r_router, requestor) = open(requestor_dir.path(), REQUESTOR, &routers);
    let (_p_store, p_router, provider) = open(provider_dir.path(), PROVIDER, &routers);

    let allocation = requestor
        .create_allocation(&json!({"totalAmount": "10"}))
        .await
        .unwrap();
    let new_note: NewDebitNote = serde_json::from_value(json!({
        "agreementId": "agreement-1", "activityId": "activity-1", "totalAmountDue": "2"
    }))
    .unwrap();
    let note = provider.issue_debit_note(new_note).await.unwrap();
    provider.send_debit_note(&note.debit_note_id).await.unwrap();
    let acceptance = |amount: &str| -> Acceptance {
        serde_json::from_value(
            json!({"totalAmountAccepted": amount, "allocationId": allocation.allocation_id}),
        )
        .unwrap()
    };
    requestor
        .accept_debit_note(&note.debit_note_id, &acceptance("2"))
        .await
        .unwrap();
    eventually("the provider hears of the acceptance", || async {
        let status = provider.debit_note(&note.debit_note_id).await.ok()?.status;
        (status == DocumentStatus::Accepted).then_some(())
    })
    .await;

    // Both actors die after the acceptance; their supervisors start them again.
    crash(&requestor).await;
    crash(&provider).await;
    assert_eq!(
        requestor
            .debit_note(&note.debit_note_id)
            .await
            .unwrap()
            .status,
        DocumentStatus::Accepted
    );
    let charged = requestor
        .allocation(&allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(
        (
            charged.spent_amount.to_string(),
            charged.remaining_amount.to_string()
        ),
        ("2".to_string(), "8".to_string())
    );

    // The invoice is issued, sent and accepted; the requestor dies right after
    // the acceptance, before its outbox may have told the provider.
    let new_invoice: NewInvoice =
        serde_json::from_value(json!({"agreementId": "agreement-1", "amount": "5"})).unwrap();
    let invoice = provider.issue_invoice(new_invoice.clone()).await.unwrap();
    let again = provider.issue_invoice(new_invoice).await.unwrap();
    assert_eq!(
        again.invoice_id, invoice.invoice_id,
        "the same invoice again"
    );
    let other: NewInvoice =
        serde_json::from_value(json!({"agreementId": "agreement-1", "amount": "6"})).unwrap();
    let error = provider.issue_invoice(other).await.unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::Conflict);
    provider.send_invoice(&invoice.invoice_id).await.unwrap();
    requestor
        .accept_invoice(&invoice.invoice_id, &acceptance("5"))
        .await
        .unwrap();
    crash(&requestor).await;

    eventually("the provider sees the invoice settled", || async {
        let status = provider.invoice(&invoice.invoice_id).await.ok()?.status;
        (status == DocumentStatus::Settled).then_some(())
    })
    .await;
    assert_eq!(
        requestor.invoice(&invoice.invoice_id).await.unwrap().status,
        DocumentStatus::Settled
    );
    assert_eq!(
        requestor
            .debit_note(&note.debit_note_id)
            .await
            .unwrap()
            .status,
        DocumentStatus::Accepted
    );
    let charged = requestor
        .allocation(&allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(
        (
            charged.spent_amount.to_string(),
            charged.remaining_amount.to_string()
        ),
        ("5".to_string(), "5".to_string()),
        "the invoice replaces the debit note's charge, once"
    );
    assert_eq!(requestor.payments().await.unwrap().len(), 1);
    assert_eq!(provider.payments().await.unwrap().len(), 1);
    requestor.stop();
    provider.stop();
    r_router.unbind_all();
    p_router.unbind_all();
}

#[tokio::test]
async fn the_issuer_cancels_what_is_not_accepted_and_the_recipient_hears_it() {
    use golem_model::ErrorCode;
    let routers = Arc::new(RwLock::new(HashMap::new()));
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_dir = tempfile::tempdir().unwrap();
    let (_r_store, r_router, requestor) = open(requestor_dir.path(), REQUESTOR, &routers);
    let (_p_store, p_router, provider) = open(provider_dir.path(), PROVIDER, &routers);
    let allocation = requestor
        .create_allocation(&json!({"totalAmount": "10"}))
        .await
        .unwrap();
    let note = |amount: &str| -> NewDebitNote {
        serde_json::from_value(json!({
            "agreementId": "agreement-1", "activityId": "activity-1", "totalAmountDue": amount
        }))
        .unwrap()
    };

    // Never sent: cancelled on the issuer's node alone.
    let unsent = provider.issue_debit_note(note("1")).await.unwrap();
    provider
        .cancel_debit_note(&unsent.debit_note_id)
        .await
        .unwrap();
    assert_eq!(
        provider
            .debit_note(&unsent.debit_note_id)
            .await
            .unwrap()
            .status,
        DocumentStatus::Cancelled
    );

    // Sent, not accepted: the recipient marks it cancelled, with an event.
    let sent = provider.issue_debit_note(note("2")).await.unwrap();
    provider.send_debit_note(&sent.debit_note_id).await.unwrap();
    provider
        .cancel_debit_note(&sent.debit_note_id)
        .await
        .unwrap();
    assert_eq!(
        requestor
            .debit_note(&sent.debit_note_id)
            .await
            .unwrap()
            .status,
        DocumentStatus::Cancelled
    );
    let events = requestor.events(false, None, Duration::ZERO, 100).await;
    assert!(
        events.iter().any(
            |event| event.event_type == PaymentEventType::DebitNoteCancelledEvent
                && event.debit_note_id.as_deref() == Some(sent.debit_note_id.as_str())
        ),
        "{events:?}"
    );
    let acceptance = |amount: &str| -> Acceptance {
        serde_json::from_value(
            json!({"totalAmountAccepted": amount, "allocationId": allocation.allocation_id}),
        )
        .unwrap()
    };
    let error = requestor
        .accept_debit_note(&sent.debit_note_id, &acceptance("2"))
        .await
        .unwrap_err();
    assert_eq!(
        error.code,
        ErrorCode::Conflict,
        "a cancelled note: {error:?}"
    );

    // Accepted: neither side cancels it.
    let accepted = provider.issue_debit_note(note("4")).await.unwrap();
    provider
        .send_debit_note(&accepted.debit_note_id)
        .await
        .unwrap();
    requestor
        .accept_debit_note(&accepted.debit_note_id, &acceptance("4"))
        .await
        .unwrap();
    let refused = requestor
        .incoming(
            node(PROVIDER),
            CancelDebitNote {
                debit_note_id: accepted.debit_note_id.clone(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "{refused:?}");
    eventually("the provider hears of the acceptance", || async {
        let status = provider
            .debit_note(&accepted.debit_note_id)
            .await
            .ok()?
            .status;
        (status == DocumentStatus::Accepted).then_some(())
    })
    .await;
    let error = provider
        .cancel_debit_note(&accepted.debit_note_id)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict, "{error:?}");
    // Only the issuer cancels, and only the issuer is heard.
    let error = requestor
        .cancel_debit_note(&accepted.debit_note_id)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");

    // The allocation cannot go below what the accepted note spent.
    let error = requestor
        .amend_allocation(&allocation.allocation_id, &json!({"totalAmount": "3"}))
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(error.message.contains("cannot go below"), "{error:?}");
    let amended = requestor
        .amend_allocation(&allocation.allocation_id, &json!({"totalAmount": "4"}))
        .await
        .unwrap();
    assert_eq!(
        (
            amended.spent_amount.to_string(),
            amended.remaining_amount.to_string()
        ),
        ("4".to_string(), "0".to_string())
    );

    // An invoice sent and not accepted is cancelled the same way.
    let invoice = provider
        .issue_invoice(
            serde_json::from_value(json!({"agreementId": "agreement-1", "amount": "4"})).unwrap(),
        )
        .await
        .unwrap();
    provider.send_invoice(&invoice.invoice_id).await.unwrap();
    provider.cancel_invoice(&invoice.invoice_id).await.unwrap();
    assert_eq!(
        requestor.invoice(&invoice.invoice_id).await.unwrap().status,
        DocumentStatus::Cancelled
    );
    let events = requestor.events(true, None, Duration::ZERO, 100).await;
    assert_eq!(
        events.last().map(|event| event.event_type),
        Some(PaymentEventType::InvoiceCancelledEvent)
    );
    requestor.stop();
    provider.stop();
    r_router.unbind_all();
    p_router.unbind_all();
}
