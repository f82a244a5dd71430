//! A long run of finished agreements keeps what the payment actor holds in
//! memory bounded, while every debit note and invoice stays answerable by id
//! and the status report keeps counting all of them, before and after a
//! restart; past the history window they leave sled as well, the report still
//! counting them, and an open invoice keeps its records.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use golem_bus::Router;
use golem_model::market::Agreement;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};
use serde_json::json;

use super::tests::{agreement_made, issued_debit_note, issued_invoice, node, PROVIDER, REQUESTOR};
use super::{PaymentService, Retention, Setup};
use crate::ports::{Agreements, CreatedActivities};
use crate::store::Store;

const AGREEMENTS: usize = 40;
const KEEP: usize = 5;
const KEEP_EVENTS: usize = 12;

/// Agreements `agreement-<n>`, each with one activity `activity-<n>`.
struct ManyAgreements;

impl Agreements for ManyAgreements {
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
        Ok(agreement_made(
            id,
            chrono::Utc::now() - chrono::Duration::seconds(1),
        ))
    }
}

impl CreatedActivities for ManyAgreements {
    fn created_activity(&self, activity_id: &str) -> Option<(String, NodeId)> {
        let n = activity_id.strip_prefix("activity-")?;
        Some((format!("agreement-{n}"), node(PROVIDER)))
    }
}

async fn open(dir: &std::path::Path) -> (Store, Router, PaymentService) {
    open_with(dir, Duration::from_secs(3600)).await
}

/// The service with the test's memory and event bounds and `history` as the
/// time finished records stay in sled.
async fn open_with(dir: &std::path::Path, history: Duration) -> (Store, Router, PaymentService) {
    open_keeping(dir, history, usize::MAX).await
}

/// Same, with at most `history_count` prune entries kept. A test that
/// reopens its data dir waits for the previous instance to let go of it.
async fn open_keeping(
    dir: &std::path::Path,
    history: Duration,
    history_count: usize,
) -> (Store, Router, PaymentService) {
    let store = crate::store::reopen::open_again_async(dir).await;
    let router = Router::new();
    let service = super::open(
        node(REQUESTOR),
        &store,
        &router,
        Arc::new(ManyAgreements),
        Setup {
            requestor_activities: Some(Arc::new(ManyAgreements)),
            retention: Retention {
                memory_count: KEEP,
                memory_age: Duration::from_secs(3600),
                events_count: KEEP_EVENTS,
                events_age: Duration::from_secs(3600),
                history_age: history,
                history_count,
            },
            ..Setup::default()
        },
    )
    .unwrap();
    (store, router, service)
}

fn debit_note(n: usize) -> DebitNote {
    issued_debit_note(
        &format!("dn-{n}"),
        &format!("agreement-{n}"),
        &format!("activity-{n}"),
        "1",
    )
}

fn invoice(n: usize) -> Invoice {
    Invoice {
        activity_ids: vec![format!("activity-{n}")],
        ..issued_invoice(&format!("inv-{n}"), &format!("agreement-{n}"), "2")
    }
}

fn acceptance(amount: &str, allocation_id: &str) -> Acceptance {
    serde_json::from_value(json!({"totalAmountAccepted": amount, "allocationId": allocation_id}))
        .unwrap()
}

async fn check_everything_answers(service: &PaymentService) {
    let [notes, invoices, allocations, events, charges, payments] = service.memory_counts().await;
    assert!(payments <= KEEP, "{payments} payments in memory");
    assert!(notes <= KEEP, "{notes} debit notes in memory");
    assert!(invoices <= KEEP, "{invoices} invoices in memory");
    assert!(charges <= KEEP, "{charges} charges in memory");
    assert!(
        allocations <= KEEP + 1,
        "{allocations} allocations in memory"
    );
    assert!(events <= KEEP_EVENTS, "{events} events in memory");
    for n in 0..AGREEMENTS {
        let note = service.debit_note(&format!("dn-{n}")).await.unwrap();
        assert_eq!(note.status, DocumentStatus::Accepted, "dn-{n}");
        let invoice = service.invoice(&format!("inv-{n}")).await.unwrap();
        assert_eq!(invoice.status, DocumentStatus::Settled, "inv-{n}");
    }
    check_status_counts_everything(service).await;
}

/// The status report's line for the tests' platform.
async fn dummy_status(service: &PaymentService) -> PlatformStatus {
    let report = service.status_report().await.unwrap();
    report
        .platforms
        .into_iter()
        .find(|status| status.platform == "dummy-local-tglm")
        .unwrap()
}

async fn check_status_counts_everything(service: &PaymentService) {
    let dummy = dummy_status(service).await;
    let all = (2 * AGREEMENTS).to_string();
    assert_eq!(dummy.outgoing.requested.to_string(), all);
    assert_eq!(dummy.outgoing.accepted.to_string(), all);
    assert_eq!(dummy.outgoing.paid.to_string(), all);
    assert_eq!(dummy.allocations.released, AGREEMENTS);
    assert_eq!(dummy.allocations.count, 1);
    // The newest events are still there for a client that follows them.
    let latest = service.events(true, None, Duration::ZERO, 1000).await;
    assert!(!latest.is_empty());
    assert_eq!(
        latest.last().unwrap().invoice_id.as_deref(),
        Some(format!("inv-{}", AGREEMENTS - 1).as_str())
    );
}

/// `AGREEMENTS` agreements, each with a debit note and an invoice accepted
/// and paid from one budget allocation, and a spare allocation released.
async fn run_agreements(service: &PaymentService) -> Allocation {
    let budget = service
        .create_allocation(&json!({"totalAmount": "1000"}))
        .await
        .unwrap();
    for n in 0..AGREEMENTS {
        let spare = service
            .create_allocation(&json!({"totalAmount": "1"}))
            .await
            .unwrap();
        service
            .release_allocation(&spare.allocation_id)
            .await
            .unwrap();
        service
            .receive_debit_note(node(PROVIDER), debit_note(n))
            .await
            .unwrap();
        service
            .accept_debit_note(&format!("dn-{n}"), &acceptance("1", &budget.allocation_id))
            .await
            .unwrap();
        service
            .receive_invoice(node(PROVIDER), invoice(n))
            .await
            .unwrap();
        service
            .accept_invoice(&format!("inv-{n}"), &acceptance("2", &budget.allocation_id))
            .await
            .unwrap();
        if n % 10 == 9 {
            service.sweep_retention().await;
        }
    }
    budget
}

#[tokio::test]
async fn finished_agreements_leave_memory_but_stay_answerable_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let (store, router, service) = open(dir.path()).await;
    let budget = run_agreements(&service).await;
    service.sweep_retention().await;
    check_everything_answers(&service).await;
    // A second invoice for a finished agreement is still refused.
    let mut second = invoice(0);
    second.invoice_id = "inv-0-again".into();
    let error = service
        .receive_invoice(node(PROVIDER), second)
        .await
        .unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::Conflict, "{error:?}");
    let spent = service.allocation(&budget.allocation_id).await.unwrap();
    assert_eq!(spent.spent_amount.to_string(), (2 * AGREEMENTS).to_string());

    service.stop();
    router.unbind_all();
    drop(service);
    drop(store);
    let (_store, _router, service) = open(dir.path()).await;
    check_everything_answers(&service).await;
    service.stop();
}

/// Records of `prefix` in the payment tree.
fn stored(store: &Store, prefix: &str) -> usize {
    store.tree("payment").unwrap().scan_prefix(prefix).count()
}

#[tokio::test]
async fn settled_history_leaves_sled_and_the_status_keeps_its_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (store, router, service) = open_with(dir.path(), Duration::ZERO).await;
    run_agreements(&service).await;
    // An invoice still open (received, not accepted) of one more agreement.
    let open_n = AGREEMENTS;
    service
        .receive_debit_note(node(PROVIDER), debit_note(open_n))
        .await
        .unwrap();
    service
        .receive_invoice(node(PROVIDER), invoice(open_n))
        .await
        .unwrap();
    service.sweep_retention().await;
    service.sweep_retention().await;
    // What left memory left sled too; what memory keeps is still there.
    let bounds = [
        ("dn/", KEEP + 1),
        ("inv/", KEEP + 1),
        ("pay/", KEEP),
        ("alloc/", KEEP + 1),
        ("charge/", KEEP + 1),
        ("prune/", 3 * KEEP),
    ];
    for (prefix, most) in bounds {
        let count = stored(&store, prefix);
        assert!(
            count <= most,
            "{count} records {prefix}* in sled, at most {most}"
        );
    }
    // The open invoice and its debit note are never pruned.
    let open = service.invoice(&format!("inv-{open_n}")).await.unwrap();
    assert_eq!(open.status, DocumentStatus::Received);
    service.debit_note(&format!("dn-{open_n}")).await.unwrap();
    // The newest finished ones still answer; pruned ones are gone.
    let newest = AGREEMENTS - 1;
    service.invoice(&format!("inv-{newest}")).await.unwrap();
    let error = service.invoice("inv-0").await.unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::NotFound, "{error:?}");
    check_requested_and_paid(&service).await;
    // The totals of what left sled survive a restart.
    service.stop();
    router.unbind_all();
    drop(service);
    drop(store);
    let (_store, _router, service) = open_with(dir.path(), Duration::ZERO).await;
    check_requested_and_paid(&service).await;
    service.stop();
}

#[tokio::test]
async fn history_beyond_the_count_leaves_sled_within_the_window_and_restarts_keep_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let week = Duration::from_secs(7 * 24 * 3600);
    let (store, router, service) = open_keeping(dir.path(), week, KEEP).await;
    run_agreements(&service).await;
    service.sweep_retention().await;
    // A week of history by age, but only the newest KEEP entries by count.
    assert_eq!(stored(&store, "prune/"), KEEP);
    let bounds = [("dn/", 2 * KEEP), ("inv/", 2 * KEEP), ("pay/", 2 * KEEP)];
    for (prefix, most) in bounds {
        let count = stored(&store, prefix);
        assert!(
            count <= most,
            "{count} records {prefix}* in sled, at most {most}"
        );
    }
    let error = service.invoice("inv-0").await.unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::NotFound, "{error:?}");
    let dummy = dummy_status(&service).await;
    assert_eq!(
        dummy.outgoing.paid.to_string(),
        (2 * AGREEMENTS).to_string()
    );
    // A restart loads what sled holds and archives it again: the schedule is
    // not counted twice, so nothing more leaves.
    service.stop();
    router.unbind_all();
    drop(service);
    drop(store);
    let (store, _router, service) = open_keeping(dir.path(), week, KEEP).await;
    service.sweep_retention().await;
    service.sweep_retention().await;
    assert_eq!(stored(&store, "prune/"), KEEP);
    let dummy = dummy_status(&service).await;
    assert_eq!(
        dummy.outgoing.paid.to_string(),
        (2 * AGREEMENTS).to_string()
    );
    service.stop();
}

/// The report counts every finished agreement (2 GLM each) plus the open
/// invoice (2 GLM requested, not accepted), every payment and release.
async fn check_requested_and_paid(service: &PaymentService) {
    let dummy = dummy_status(service).await;
    assert_eq!(
        dummy.outgoing.requested.to_string(),
        (2 * AGREEMENTS + 2).to_string()
    );
    assert_eq!(
        dummy.outgoing.accepted.to_string(),
        (2 * AGREEMENTS).to_string()
    );
    assert_eq!(
        dummy.outgoing.paid.to_string(),
        (2 * AGREEMENTS).to_string()
    );
    assert_eq!(dummy.allocations.released, AGREEMENTS);
}
