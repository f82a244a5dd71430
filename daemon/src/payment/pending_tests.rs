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
use crate::activity::Agreements;
use crate::store::Store;

const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
const PROVIDER: &str = "0x2222222222222222222222222222222222222222";
const PLATFORM: &str = "erc20-holesky-tglm";

struct FakeMarket(Agreement);

impl Agreements for FakeMarket {
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
        if id == self.0.agreement_id {
            Ok(self.0.clone())
        } else {
            Err(GolemError::not_found(format!("unknown agreement {id}")))
        }
    }
}

/// Queues payments; settles those the test marks.
#[derive(Default)]
struct SlowDriver {
    handed: Mutex<Vec<String>>,
    settled: Mutex<HashSet<String>>,
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
        let mut handed = self.handed.lock().unwrap();
        if !handed.iter().any(|id| id == payment_id) {
            handed.push(payment_id.to_string());
        }
        Ok(PayOutcome::Pending)
    }
    fn progress(&self, payment_id: &str) -> PayProgress {
        if self.settled.lock().unwrap().contains(payment_id) {
            PayProgress::Settled(format!("0xhash-{payment_id}"))
        } else if self
            .handed
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

fn agreement() -> Agreement {
    let now = chrono::Utc::now();
    serde_json::from_value(json!({
        "agreementId": "agreement-1",
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
    let now = chrono::Utc::now();
    Invoice {
        invoice_id: "invoice-1".into(),
        issuer_id: node(PROVIDER),
        recipient_id: node(REQUESTOR),
        payee_addr: PROVIDER.into(),
        payer_addr: REQUESTOR.into(),
        payment_platform: PLATFORM.into(),
        timestamp: now,
        agreement_id: "agreement-1".into(),
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
    let mut tries = 0;
    let store = loop {
        match Store::open(dir) {
            Ok(store) => break store,
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{error}"),
        }
    };
    let router = Router::new();
    let service = super::open(
        node(REQUESTOR),
        &store,
        &router,
        Arc::new(FakeMarket(agreement())),
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

#[tokio::test]
async fn pending_payment_settles_once_across_duplicate_accepts_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first_driver = Arc::new(SlowDriver::default());
    let (store, router, service) = open(dir.path(), first_driver.clone()).await;
    let allocation = service
        .create_allocation(&json!({"totalAmount": "10", "paymentPlatform": PLATFORM}))
        .unwrap();
    service
        .receive_invoice(node(PROVIDER), invoice("4"))
        .unwrap();
    service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .unwrap();
    service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .unwrap();
    assert_eq!(
        service.invoice("invoice-1").unwrap().status,
        DocumentStatus::Accepted
    );
    assert!(service.payments().is_empty());
    let pending = service.pending_payments();
    assert_eq!(pending.len(), 1);
    let payment_id = pending[0].payment_id.clone();
    assert_eq!(
        *first_driver.handed.lock().unwrap(),
        vec![payment_id.clone()]
    );
    assert_eq!(
        service
            .allocation(&allocation.allocation_id)
            .unwrap()
            .remaining_amount
            .to_string(),
        "6"
    );
    // The driver's words reach the status report.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let report = service.status_report();
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
    close(store, router, service).await;

    // A restart whose driver lost the payment (crash before it was written):
    // the same payment id is handed over again, never a new one.
    let second_driver = Arc::new(SlowDriver::default());
    let (store, router, service) = open(dir.path(), second_driver.clone()).await;
    assert_eq!(service.pending_payments().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while second_driver.handed.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the pending payment was not resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *second_driver.handed.lock().unwrap(),
        vec![payment_id.clone()]
    );
    second_driver
        .settled
        .lock()
        .unwrap()
        .insert(payment_id.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.invoice("invoice-1").unwrap().status != DocumentStatus::Settled {
        assert!(Instant::now() < deadline, "the payment never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payments = service.payments();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].payment_id, payment_id);
    assert_eq!(payments[0].details, format!("0xhash-{payment_id}"));
    assert!(service.pending_payments().is_empty());
    // Accepting again after settlement changes nothing.
    service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .unwrap();
    assert_eq!(service.payments().len(), 1);
    close(store, router, service).await;

    let third_driver = Arc::new(SlowDriver::default());
    let (store, router, service) = open(dir.path(), third_driver.clone()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(third_driver.handed.lock().unwrap().is_empty());
    assert_eq!(service.payments().len(), 1);
    let report = service.status_report();
    let erc20 = report
        .platforms
        .iter()
        .find(|status| status.platform == PLATFORM)
        .unwrap();
    assert_eq!(erc20.outgoing.paid.to_string(), "4");
    assert_eq!(erc20.outgoing.pending.to_string(), "0");
    assert_eq!(erc20.allocations.remaining.to_string(), "6");
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

impl super::ActivityAgreements for FakeActivities {
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
        Arc::new(FakeMarket(agreement())),
        super::Setup {
            activities: Some(Arc::new(FakeActivities)),
            ..Default::default()
        },
    )
    .unwrap();
    let new = |activity: &str| -> NewDebitNote {
        serde_json::from_value(json!({"activityId": activity, "totalAmountDue": "1.25"})).unwrap()
    };
    let note = service.issue_debit_note(new("activity-1")).unwrap();
    assert_eq!(note.agreement_id, "agreement-1");
    assert_eq!(note.payment_platform, PLATFORM);
    assert_eq!(note.total_amount_due.to_string(), "1.25");
    let error = service.issue_debit_note(new("activity-9")).unwrap_err();
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
        .unwrap();
    assert_eq!(service.allocations().len(), 1);
    service
        .receive_invoice(node(PROVIDER), invoice("4"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(service.allocations().is_empty());
    let error = service
        .accept_invoice("invoice-1", &acceptance("4", &allocation.allocation_id))
        .unwrap_err();
    assert_eq!(error.code, golem_model::ErrorCode::Gone);
    assert!(error.message.contains("expired"), "{error:?}");
    assert_eq!(
        service.invoice("invoice-1").unwrap().status,
        DocumentStatus::Received
    );
    // The sweep persists the release.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !service.lock().allocations[&allocation.allocation_id].released {
        assert!(
            Instant::now() < deadline,
            "expired allocation never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    close(store, router, service).await;
}

#[tokio::test]
async fn events_filter_by_the_agreements_app_session_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let router = Router::new();
    let mut with_session = agreement();
    with_session.app_session_id = Some("session-1".into());
    let service = super::open(
        node(REQUESTOR),
        &store,
        &router,
        Arc::new(FakeMarket(with_session)),
        super::Setup::default(),
    )
    .unwrap();
    service
        .receive_invoice(node(PROVIDER), invoice("4"))
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
