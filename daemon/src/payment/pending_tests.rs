//! Service tests of pending payments (drivers that settle later, like erc20):
//! accept → pending with the driver's status → settled, exactly one payment
//! id however often the invoice is accepted or the service restarted.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use golem_bus::Router;
use golem_model::market::Agreement;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};
use serde_json::json;

use super::tests::OwnActivities;
use super::{PayOutcome, PayProgress, PaymentDriver, PaymentService, Platform, Setup};
use crate::ports::Agreements;
use crate::store::Store;

const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
const PROVIDER: &str = "0x2222222222222222222222222222222222222222";
const PLATFORM: &str = "erc20-holesky-tglm";

struct FakeMarket(Vec<Agreement>);

impl Agreements for FakeMarket {
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
        self.0
            .iter()
            .find(|agreement| agreement.agreement_id == id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown agreement {id}")))
    }
}

/// Queues payments; settles those the test marks. Records every call, repeats
/// included, so a payment handed over twice shows.
#[derive(Default)]
struct SlowDriver {
    /// The payment id of every `pay` call.
    pay_calls: Mutex<Vec<String>>,
    /// The payment id of every `progress` call: the settle loop asks once per
    /// pending payment per round, so these count its rounds.
    progress_calls: Mutex<Vec<String>>,
    settled: Mutex<HashSet<String>>,
}

/// More calls than any run of these tests makes: a settle loop handing
/// payments over in a loop panics here (ending that loop) instead of growing
/// the records until memory runs out.
const RUNAWAY_CALLS: usize = 1000;

impl SlowDriver {
    fn record(calls: &Mutex<Vec<String>>, payment_id: &str) {
        let count = {
            let mut calls = calls.lock().unwrap();
            calls.push(payment_id.to_string());
            calls.len()
        };
        assert!(
            count <= RUNAWAY_CALLS,
            "{count} driver calls: the settle loop spins"
        );
    }

    fn pay_calls(&self) -> Vec<String> {
        self.pay_calls.lock().unwrap().clone()
    }

    fn progress_calls(&self, payment_id: &str) -> usize {
        self.progress_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|id| *id == payment_id)
            .count()
    }
}

impl PaymentDriver for SlowDriver {
    fn name(&self) -> &'static str {
        "erc20"
    }
    fn pay(
        &self,
        _platform: &Platform,
        payment_id: &str,
        _payer: &str,
        _payee: &str,
        _amount: Decimal,
    ) -> Result<PayOutcome, GolemError> {
        Self::record(&self.pay_calls, payment_id);
        Ok(PayOutcome::Pending)
    }
    fn progress(&self, payment_id: &str) -> PayProgress {
        Self::record(&self.progress_calls, payment_id);
        if self.settled.lock().unwrap().contains(payment_id) {
            PayProgress::Settled(format!("0xhash-{payment_id}"))
        } else if self
            .pay_calls
            .lock()
            .unwrap()
            .iter()
            .any(|id| id == payment_id)
        {
            PayProgress::Pending("insufficient tGLM, top up".into())
        } else {
            PayProgress::Unknown
        }
    }
    fn describe(&self) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

fn node(text: &str) -> NodeId {
    text.parse().unwrap()
}

fn agreement(agreement_id: &str) -> Agreement {
    let now = chrono::Utc::now();
    serde_json::from_value(json!({
        "agreementId": agreement_id,
        "demand": {
            "properties": {
                "golem.com.payment.chosen-platform": PLATFORM,
                "golem.com.payment.platform.erc20-holesky-tglm.address": REQUESTOR,
            },
            "constraints": "()", "demandId": "d", "requestorId": REQUESTOR, "timestamp": now,
        },
        "offer": {
            "properties": {
                "golem.com.payment.platform.erc20-holesky-tglm.address": PROVIDER,
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

fn invoice(amount: &str) -> Invoice {
    invoice_on("invoice-1", "agreement-1", amount)
}

fn invoice_on(invoice_id: &str, agreement_id: &str, amount: &str) -> Invoice {
    let now = chrono::Utc::now();
    Invoice {
        invoice_id: invoice_id.into(),
        issuer_id: node(PROVIDER),
        recipient_id: node(REQUESTOR),
        payee_addr: PROVIDER.into(),
        payer_addr: REQUESTOR.into(),
        payment_platform: PLATFORM.into(),
        timestamp: now,
        agreement_id: agreement_id.into(),
        activity_ids: vec![],
        amount: amount.parse().unwrap(),
        payment_due_date: now,
        status: DocumentStatus::Issued,
    }
}

fn acceptance(amount: &str, allocation_id: &str) -> Acceptance {
    serde_json::from_value(json!({"totalAmountAccepted": amount, "allocationId": allocation_id}))
        .unwrap()
}

async fn open(dir: &std::path::Path, driver: Arc<SlowDriver>) -> (Store, Router, PaymentService) {
    let store = crate::store::reopen::open_again_async(dir).await;
    let router = Router::new();
    let service = super::open(
        node(REQUESTOR),
        &store,
        &router,
        Arc::new(FakeMarket(vec![
            agreement("agreement-1"),
            agreement("agreement-2"),
        ])),
        Setup {
            extra_drivers: vec![driver],
            requestor_activities: Some(Arc::new(OwnActivities)),
            ..Setup::default()
        },
    )
    .unwrap();
    (store, router, service)
}

async fn close(store: Store, router: Router, service: PaymentService) {
    service.durable().await.unwrap();
    service.stop();
    router.unbind_all();
    drop(service);
    store.flush().await.unwrap();
    drop(store);
}

/// Settle rounds watched where the claim is that nothing more happens.
const WATCHED_ROUNDS: usize = 3;

/// Watch `WATCHED_ROUNDS` rounds of the settle loop, counted by its progress
/// calls for `pending_payment_id` (one per round while that payment is pending),
/// checking `unchanged` after every poll. Bounded: the rounds come one tick
/// apart, so a settle loop that stopped running fails here instead of passing.
async fn watch_settle_rounds(
    driver: &SlowDriver,
    pending_payment_id: &str,
    mut unchanged: impl FnMut(),
) {
    let rounds_before = driver.progress_calls(pending_payment_id);
    let deadline = Instant::now()
        + super::actor::SETTLE_TICK * (WATCHED_ROUNDS as u32 + 1)
        + Duration::from_secs(2);
    while driver.progress_calls(pending_payment_id) < rounds_before + WATCHED_ROUNDS {
        unchanged();
        assert!(
            Instant::now() < deadline,
            "the settle loop ran {} of {WATCHED_ROUNDS} rounds in time",
            driver.progress_calls(pending_payment_id) - rounds_before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unchanged();
}

#[tokio::test]
async fn pending_payment_settles_once_across_duplicate_accepts_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first_driver = Arc::new(SlowDriver::default());
    let (store, router, service) = open(dir.path(), first_driver.clone()).await;
    let allocation = service
        .create_allocation(&json!({"totalAmount": "10", "paymentPlatform": PLATFORM}))
        .await
        .unwrap();
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
        DocumentStatus::Accepted
    );
    assert!(service.payments().await.unwrap().is_empty());
    let pending = service.pending_payments().await.unwrap();
    assert_eq!(pending.len(), 1);
    let payment_id = pending[0].payment_id.clone();
    assert_eq!(first_driver.pay_calls(), vec![payment_id.clone()]);
    assert_eq!(
        service
            .allocation(&allocation.allocation_id)
            .await
            .unwrap()
            .remaining_amount
            .to_string(),
        "6"
    );
    // The driver's words reach the status report.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = service.status_report().await.unwrap();
        let erc20 = report
            .platforms
            .iter()
            .find(|status| status.platform == PLATFORM)
            .unwrap();
        if erc20.pending_payments[0].status.contains("insufficient") {
            assert_eq!(erc20.outgoing.pending.to_string(), "4");
            assert_eq!(erc20.outgoing.accepted.to_string(), "4");
            assert_eq!(erc20.outgoing.paid.to_string(), "0");
            break;
        }
        assert!(Instant::now() < deadline, "status never reached the report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The duplicate accept and the settle rounds that follow hand nothing over again.
    watch_settle_rounds(&first_driver, &payment_id, || {
        assert_eq!(first_driver.pay_calls(), vec![payment_id.clone()]);
    })
    .await;
    close(store, router, service).await;

    // A restart whose driver lost the payment (crash before it was written):
    // the same payment id is handed over again, once, never a new one.
    let second_driver = Arc::new(SlowDriver::default());
    let (store, router, service) = open(dir.path(), second_driver.clone()).await;
    assert_eq!(service.pending_payments().await.unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while second_driver.pay_calls().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the pending payment was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch_settle_rounds(&second_driver, &payment_id, || {
        assert_eq!(second_driver.pay_calls(), vec![payment_id.clone()]);
    })
    .await;
    second_driver
        .settled
        .lock()
        .unwrap()
        .insert(payment_id.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.invoice("invoice-1").await.unwrap().status != DocumentStatus::Settled {
        assert!(Instant::now() < deadline, "the payment never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payments = service.payments().await.unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].payment_id, payment_id);
    assert_eq!(payments[0].details, format!("0xhash-{payment_id}"));
    assert!(service.pending_payments().await.unwrap().is_empty());
    // Accepting again after settlement changes nothing. Watched over settle
    // rounds counted on a second invoice's payment, left pending as a witness.
    service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .await
        .unwrap();
    service
        .receive_invoice(node(PROVIDER), invoice_on("invoice-2", "agreement-2", "1"))
        .await
        .unwrap();
    service
        .accept_invoice("invoice-2", &acceptance("1", &allocation.allocation_id))
        .await
        .unwrap();
    let pending = service.pending_payments().await.unwrap();
    assert_eq!(pending.len(), 1);
    let witness = pending[0].payment_id.clone();
    assert_ne!(witness, payment_id);
    watch_settle_rounds(&second_driver, &witness, || {
        assert_eq!(
            second_driver.pay_calls(),
            vec![payment_id.clone(), witness.clone()]
        );
        assert_eq!(service.deps.tree.scan_prefix("pay/").count(), 1);
    })
    .await;
    close(store, router, service).await;

    // After a restart the settled payment is never handed over again; the
    // witness is resumed, once.
    let third_driver = Arc::new(SlowDriver::default());
    let (store, router, service) = open(dir.path(), third_driver.clone()).await;
    watch_settle_rounds(&third_driver, &witness, || {
        let calls = third_driver.pay_calls();
        assert!(
            calls.is_empty() || calls == vec![witness.clone()],
            "settle loop hand-overs after the restart: {calls:?}"
        );
        assert_eq!(service.deps.tree.scan_prefix("pay/").count(), 1);
    })
    .await;
    assert_eq!(third_driver.pay_calls(), vec![witness.clone()]);
    let report = service.status_report().await.unwrap();
    let erc20 = report
        .platforms
        .iter()
        .find(|status| status.platform == PLATFORM)
        .unwrap();
    assert_eq!(erc20.outgoing.paid.to_string(), "4");
    assert_eq!(erc20.outgoing.pending.to_string(), "1");
    assert_eq!(erc20.allocations.remaining.to_string(), "5");
    close(store, router, service).await;
}

#[test]
fn erc20_networks_come_from_the_config_file_and_env() {
    use crate::config::{env_names, CliOverrides, DaemonConfig};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("daemon.toml");
    std::fs::write(
        &file,
        "[payment.erc20.holesky]\nrpc-url = \"http://127.0.0.1:8545\"\nchain-id = 31337\n",
    )
    .unwrap();
    let token = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
    let env = |name: &str| {
        if name == env_names::erc20("holesky", env_names::ERC20_TOKEN) {
            Some(token.to_string())
        } else if name == "GOLEM_ERC20_POLYGON_CHAIN_ID" {
            Some("0x7a69".to_string())
        } else {
            None
        }
    };
    let overrides = CliOverrides {
        config_file: Some(file),
        ..Default::default()
    };
    let config = DaemonConfig::load(&overrides, env).unwrap();
    let networks = super::erc20::networks(&config.payment.erc20).unwrap();
    assert_eq!(networks["holesky"].rpc_url, "http://127.0.0.1:8545");
    assert_eq!(networks["holesky"].chain_id, 31337);
    assert_eq!(networks["holesky"].token, token);
    assert_eq!(networks["polygon"].chain_id, 31337);
    assert_eq!(networks["mainnet"].chain_id, 1);
    let bad = |name: &str| (name == "GOLEM_ERC20_HOLESKY_CHAIN_ID").then(|| "x".to_string());
    let error = DaemonConfig::load(&CliOverrides::default(), bad).unwrap_err();
    assert!(
        error.to_string().contains("GOLEM_ERC20_HOLESKY_CHAIN_ID"),
        "{error}"
    );
}

struct FakeActivities;

impl crate::ports::HostedActivities for FakeActivities {
    fn agreement_of_activity(&self, activity_id: &str) -> Option<String> {
        (activity_id == "activity-1").then(|| "agreement-1".to_string())
    }
}

#[tokio::test]
async fn debit_note_finds_its_agreement_from_the_activity() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let router = Router::new();
    let service = super::open(
        node(PROVIDER),
        &store,
        &router,
        Arc::new(FakeMarket(vec![agreement("agreement-1")])),
        super::Setup {
            activities: Some(Arc::new(FakeActivities)),
            ..Default::default()
        },
    )
    .unwrap();
    let new = |activity: &str| -> NewDebitNote {
        serde_json::from_value(json!({"activityId": activity, "totalAmountDue": "1.25"})).unwrap()
    };
    let note = service.issue_debit_note(new("activity-1")).await.unwrap();
    assert_eq!(note.agreement_id, "agreement-1");
    assert_eq!(note.payment_platform, PLATFORM);
    assert_eq!(note.total_amount_due.to_string(), "1.25");
    let error = service
        .issue_debit_note(new("activity-9"))
        .await
        .unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::BadRequest);
    assert!(error.message.contains("activity-9"), "{error:?}");
    service.stop();
}

#[tokio::test]
async fn expired_allocations_are_released_and_refuse_charges() {
    let dir = tempfile::tempdir().unwrap();
    let (store, router, service) = open(dir.path(), Arc::new(SlowDriver::default())).await;
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let allocation = service
        .create_allocation(
            &json!({"totalAmount": "10", "paymentPlatform": PLATFORM, "timeout": soon}),
        )
        .await
        .unwrap();
    assert_eq!(service.allocations().await.unwrap().len(), 1);
    service
        .receive_invoice(node(PROVIDER), invoice("4"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(service.allocations().await.unwrap().is_empty());
    let error = service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .await
        .unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::Gone);
    assert!(error.message.contains("expired"), "{error:?}");
    assert_eq!(
        service.invoice("invoice-1").await.unwrap().status,
        DocumentStatus::Received
    );
    // The sweep persists the release.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !service
        .deps
        .read::<super::state::AllocationRecord>(&format!("alloc/{}", allocation.allocation_id))
        .unwrap()
        .unwrap()
        .released
    {
        assert!(
            Instant::now() < deadline,
            "expired allocation never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client sees it Not Found, as the original answers, saying why; the
    // reserved amount is back (no live allocation holds anything).
    let error = service
        .allocation(&allocation.allocation_id)
        .await
        .unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::NotFound);
    assert!(error.message.contains("expired"), "{error:?}");
    let report = service.status_report().await.unwrap();
    let allocations = &report
        .platforms
        .iter()
        .find(|platform| platform.platform == PLATFORM)
        .unwrap()
        .allocations;
    assert_eq!((allocations.count, allocations.released), (0, 1));
    assert_eq!(allocations.remaining, Decimal::ZERO);
    close(store, router, service).await;
}

#[tokio::test]
async fn events_filter_by_the_agreements_app_session_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let router = Router::new();
    let mut with_session = agreement("agreement-1");
    with_session.app_session_id = Some("session-1".into());
    let service = super::open(
        node(REQUESTOR),
        &store,
        &router,
        Arc::new(FakeMarket(vec![with_session])),
        super::Setup::default(),
    )
    .unwrap();
    service
        .receive_invoice(node(PROVIDER), invoice("4"))
        .await
        .unwrap();
    let all = service
        .events_for_session(true, None, Duration::ZERO, 10, None)
        .await;
    assert_eq!(all.len(), 1);
    let mine = service
        .events_for_session(true, None, Duration::ZERO, 10, Some("session-1"))
        .await;
    assert_eq!(mine, all);
    let other = service
        .events_for_session(
            true,
            None,
            Duration::from_millis(100),
            10,
            Some("session-2"),
        )
        .await;
    assert!(other.is_empty());
    service.stop();
}
