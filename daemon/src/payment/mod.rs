//! Payment service: allocations, debit notes, invoices, payments and their
//! events. The provider's node issues debit notes and invoices and sends them to
//! the requestor's node (`/net/<requestor>/public/payment`); the requestor's node
//! accepts them against an allocation and sends acceptances, rejections and
//! payments back through a persistent outbox that retries with bounded backoff.
//!
//! Every record lives in the sled `payment` tree and every change is written in
//! one batch, so a restart loses nothing and never charges twice. Handling of
//! remote messages is idempotent and only the agreement's counterparty is
//! heard. It must never hold its lock across an await, nor use floats for money.

mod chain_check;
pub mod cli;
mod driver;
pub mod erc20;
mod incoming;
pub mod rest;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_bus::{Caller, Router, ServiceEndpoint};
use golem_model::market::{Agreement, AgreementState};
use golem_model::payment::*;
use golem_model::{ErrorCode, GolemError, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::ports::{CreatedActivities, HostedActivities};
pub use driver::{Drivers, PayOutcome, PayProgress, PaymentDriver, Platform, DEFAULT_PLATFORM};
pub use erc20::{Erc20Driver, Erc20Network, Erc20NetworkOverride};

/// The payment part of the daemon config (`[payment.erc20.<network>]` in TOML,
/// `GOLEM_ERC20_<NETWORK>_{RPC_URL,CHAIN_ID,TOKEN,CONFIRMATIONS}` in the env).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PaymentConfig {
    /// Overrides of the built-in erc20 networks, by network name.
    pub erc20: BTreeMap<String, Erc20NetworkOverride>,
}

/// Period of the settle loop when no driver wakes it.
const SETTLE_TICK: Duration = Duration::from_secs(1);

use crate::ports::Agreements;
use crate::store::{self, Store};

const TREE: &str = "payment";
/// Inline delivery attempts of a `send` before the REST call fails.
const SEND_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Outbox messages in flight to one node at a time.
const OUTBOX_CONCURRENCY: usize = 32;

/// An allocation and whether it was released.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AllocationRecord {
    allocation: Allocation,
    released: bool,
}

/// What the requestor has charged to allocations for one agreement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AgreementCharges {
    /// Highest accepted debit-note amount per activity.
    by_activity: BTreeMap<String, Decimal>,
    /// Once the invoice is accepted, the agreement costs exactly its amount.
    invoice: Option<Decimal>,
    /// The allocation charged so far (the last one used).
    allocation_id: Option<String>,
}

impl AgreementCharges {
    fn charged(&self) -> Decimal {
        self.invoice
            .unwrap_or_else(|| self.by_activity.values().copied().sum())
    }
}

/// A message waiting to reach another node's payment service.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Outgoing {
    AcceptDebitNote(AcceptDebitNote),
    RejectDebitNote(RejectDebitNote),
    AcceptInvoice(AcceptInvoice),
    RejectInvoice(RejectInvoice),
    SendPayment(SendPayment),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutboxEntry {
    target: NodeId,
    message: Outgoing,
}

/// An accepted invoice whose payment a driver is still carrying out.
pub type PaymentOrder = PendingPayment;

#[derive(Default)]
struct State {
    orders: BTreeMap<String, PaymentOrder>,
    allocations: HashMap<String, AllocationRecord>,
    debit_notes: HashMap<String, DebitNote>,
    invoices: HashMap<String, Invoice>,
    charges: HashMap<String, AgreementCharges>,
    payments: Vec<Payment>,
    events: Vec<PaymentEvent>,
    outbox: BTreeMap<u64, OutboxEntry>,
    /// Provider: erc20 payments waiting for their transaction's confirmation.
    unverified: BTreeMap<String, incoming::UnverifiedPayment>,
    next_seq: u64,
    last_event: Option<DateTime<Utc>>,
}

/// What debit notes and invoices share in how they are stored, listed, sent
/// and moved through their statuses.
trait Document: Clone + serde::Serialize + Send + 'static {
    /// The kind's name in messages.
    const NAME: &'static str;
    /// Prefix of the kind's keys in the payment tree.
    const KEY_PREFIX: &'static str;
    fn map(state: &State) -> &HashMap<String, Self>;
    fn map_mut(state: &mut State) -> &mut HashMap<String, Self>;
    fn issuer_id(&self) -> NodeId;
    fn recipient_id(&self) -> NodeId;
    fn timestamp(&self) -> DateTime<Utc>;
    fn status(&self) -> DocumentStatus;
    fn set_status(&mut self, status: DocumentStatus);
}

impl Document for DebitNote {
    const NAME: &'static str = "debit note";
    const KEY_PREFIX: &'static str = "dn/";
    fn map(state: &State) -> &HashMap<String, Self> {
        &state.debit_notes
    }
    fn map_mut(state: &mut State) -> &mut HashMap<String, Self> {
        &mut state.debit_notes
    }
    fn issuer_id(&self) -> NodeId {
        self.issuer_id
    }
    fn recipient_id(&self) -> NodeId {
        self.recipient_id
    }
    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }
    fn status(&self) -> DocumentStatus {
        self.status
    }
    fn set_status(&mut self, status: DocumentStatus) {
        self.status = status;
    }
}

impl Document for Invoice {
    const NAME: &'static str = "invoice";
    const KEY_PREFIX: &'static str = "inv/";
    fn map(state: &State) -> &HashMap<String, Self> {
        &state.invoices
    }
    fn map_mut(state: &mut State) -> &mut HashMap<String, Self> {
        &mut state.invoices
    }
    fn issuer_id(&self) -> NodeId {
        self.issuer_id
    }
    fn recipient_id(&self) -> NodeId {
        self.recipient_id
    }
    fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }
    fn status(&self) -> DocumentStatus {
        self.status
    }
    fn set_status(&mut self, status: DocumentStatus) {
        self.status = status;
    }
}

struct Inner {
    node_id: NodeId,
    router: Router,
    agreements: Arc<dyn Agreements>,
    activities: Option<Arc<dyn HostedActivities>>,
    /// Requestor: the activities this node created, which debit notes must name.
    requestor_activities: Option<Arc<dyn CreatedActivities>>,
    drivers: Drivers,
    tree: sled::Tree,
    state: Mutex<State>,
    events_changed: watch::Sender<u64>,
    outbox_changed: Notify,
    /// Drivers wake the settle loop through it when a payment went through.
    settled: Arc<Notify>,
    erc20: Option<Erc20Driver>,
    shutdown: CancellationToken,
}

/// Handle to the payment service. Cheap to clone.
#[derive(Clone)]
pub struct PaymentService {
    inner: Arc<Inner>,
}

use golem_model::ids::new_id;

/// Pending writes of one change, applied atomically.
struct Writes {
    batch: sled::Batch,
}

impl Writes {
    fn new() -> Writes {
        Writes {
            batch: sled::Batch::default(),
        }
    }
    fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), GolemError> {
        self.batch.insert(key.as_bytes(), store::encode(value)?);
        Ok(())
    }
    fn remove(&mut self, key: String) {
        self.batch.remove(key.as_bytes());
    }
}

fn status_error(what: &str, id: &str, status: DocumentStatus) -> GolemError {
    GolemError::conflict(format!("{what} {id} is {status:?}, it cannot change now").to_lowercase())
}

/// Open the payment records and bind `/public/payment`; start the outbox.
/// Only the dummy driver runs (tests of the accounting), and no activity is
/// known, so debit notes from providers are refused.
pub fn start(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    agreements: Arc<dyn Agreements>,
) -> Result<PaymentService, GolemError> {
    open(node_id, store, router, agreements, Setup::default())
}

/// What the variants of `start` add to the bare service.
#[derive(Default)]
struct Setup {
    erc20: Option<(BTreeMap<String, Erc20Network>, [u8; 32])>,
    extra_drivers: Vec<Arc<dyn PaymentDriver>>,
    activities: Option<Arc<dyn HostedActivities>>,
    requestor_activities: Option<Arc<dyn CreatedActivities>>,
}

/// Start the payment service with every driver: dummy and erc20 (networks from
/// `config`, signing with the node key `secret`), `activities` to find the
/// agreement of a debit note given only its activity, and
/// `requestor_activities` to check that debit notes from providers name
/// activities this node created. Contacts no RPC endpoint.
#[allow(clippy::too_many_arguments)] // the services it depends on, each named
pub fn start_with(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    agreements: Arc<dyn Agreements>,
    activities: Arc<dyn HostedActivities>,
    requestor_activities: Arc<dyn CreatedActivities>,
    config: &PaymentConfig,
    secret: [u8; 32],
) -> Result<PaymentService, GolemError> {
    let networks = erc20::networks(&config.erc20)?;
    open(
        node_id,
        store,
        router,
        agreements,
        Setup {
            erc20: Some((networks, secret)),
            activities: Some(activities),
            requestor_activities: Some(requestor_activities),
            ..Setup::default()
        },
    )
}

fn open(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    agreements: Arc<dyn Agreements>,
    setup: Setup,
) -> Result<PaymentService, GolemError> {
    let settled = Arc::new(Notify::new());
    let mut drivers: Vec<Arc<dyn PaymentDriver>> = vec![Arc::new(driver::DummyDriver)];
    drivers.extend(setup.extra_drivers);
    let mut erc20_driver = None;
    if let Some((networks, secret)) = setup.erc20 {
        let driver = Erc20Driver::start(store, networks, secret, settled.clone())?;
        drivers.push(Arc::new(driver.clone()));
        erc20_driver = Some(driver);
    }
    let tree = store.tree(TREE)?;
    let mut state = State::default();
    for entry in tree.iter() {
        let (key, value) = entry.map_err(store::StoreError::from)?;
        let key = String::from_utf8_lossy(&key).into_owned();
        let (kind, id) = key.split_once('/').unwrap_or((key.as_str(), ""));
        match kind {
            "alloc" => {
                let record: AllocationRecord = store::decode(TREE, &value)?;
                state.allocations.insert(id.to_string(), record);
            }
            "dn" => {
                let note: DebitNote = store::decode(TREE, &value)?;
                state.debit_notes.insert(id.to_string(), note);
            }
            "inv" => {
                let invoice: Invoice = store::decode(TREE, &value)?;
                state.invoices.insert(id.to_string(), invoice);
            }
            "charge" => {
                let charges: AgreementCharges = store::decode(TREE, &value)?;
                state.charges.insert(id.to_string(), charges);
            }
            "pay" => state.payments.push(store::decode(TREE, &value)?),
            "evt" => state.events.push(store::decode(TREE, &value)?),
            "out" => {
                let seq: u64 = id.parse().unwrap_or(0);
                state.outbox.insert(seq, store::decode(TREE, &value)?);
            }
            "seq" => {
                state.next_seq = store::decode(TREE, &value)?;
            }
            "order" => {
                let order: PaymentOrder = store::decode(TREE, &value)?;
                state.orders.insert(id.to_string(), order);
            }
            "verify" => {
                let held: incoming::UnverifiedPayment = store::decode(TREE, &value)?;
                state.unverified.insert(id.to_string(), held);
            }
            _ => tracing::warn!(%key, "unknown record in the payment tree"),
        }
    }
    // Keys are zero-padded, so events and outbox entries load in order.
    state.last_event = state.events.last().map(|event| event.event_date);
    state.payments.sort_by_key(|payment| payment.timestamp);
    let (events_changed, _) = watch::channel(0);
    let service = PaymentService {
        inner: Arc::new(Inner {
            node_id,
            router: router.clone(),
            agreements,
            activities: setup.activities,
            requestor_activities: setup.requestor_activities,
            drivers: Drivers::new(drivers),
            tree,
            state: Mutex::new(state),
            events_changed,
            outbox_changed: Notify::new(),
            settled,
            erc20: erc20_driver,
            shutdown: CancellationToken::new(),
        }),
    };
    router.bind(PAYMENT_PUBLIC_SERVICE, service.public_endpoint())?;
    router.bind(PAYMENT_LOCAL_SERVICE, service.local_endpoint())?;
    tokio::spawn(service.clone().run_outbox());
    tokio::spawn(service.clone().run_settler());
    Ok(service)
}

impl PaymentService {
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
        if let Some(erc20) = &self.inner.erc20 {
            erc20.stop();
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn our_address(&self) -> String {
        self.inner.node_id.to_string()
    }

    fn commit(&self, writes: Writes) -> Result<(), GolemError> {
        // Money records are flushed before anyone is told they exist: a crash
        // right after a reply must not forget an acceptance or a payment.
        self.inner
            .tree
            .apply_batch(writes.batch)
            .map_err(|error| GolemError::internal(format!("payment store write failed: {error}")))
    }

    /// Flush committed changes to disk. Every REST reply and bus reply after a
    /// change waits for this, so a crash right after a reply never forgets an
    /// acceptance or a payment; concurrent callers share flushes.
    pub async fn durable(&self) -> Result<(), GolemError> {
        // A blocking flush on the blocking pool: sled's own flush_async stalled
        // under many concurrent callers.
        let tree = self.inner.tree.clone();
        tokio::task::spawn_blocking(move || tree.flush())
            .await
            .map_err(|error| GolemError::internal(format!("payment store flush failed: {error}")))?
            .map(|_| ())
            .map_err(|error| GolemError::internal(format!("payment store flush failed: {error}")))
    }

    /// Record an event (strictly increasing `eventDate`, millisecond steps, so a
    /// client's cursor at millisecond precision never repeats or skips one).
    fn push_event(
        state: &mut State,
        writes: &mut Writes,
        event_type: PaymentEventType,
        id: &str,
        rejection: Option<Rejection>,
    ) -> Result<(), GolemError> {
        let now = Utc::now();
        let now = now
            - chrono::Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000_000));
        let event_date = match state.last_event {
            Some(last) if now <= last => last + chrono::Duration::milliseconds(1),
            _ => now,
        };
        state.last_event = Some(event_date);
        let event = PaymentEvent {
            event_type,
            event_date,
            invoice_id: event_type.is_invoice().then(|| id.to_string()),
            debit_note_id: (!event_type.is_invoice()).then(|| id.to_string()),
            rejection,
        };
        let seq = Self::next_seq(state, writes)?;
        writes.put(format!("evt/{seq:020}"), &event)?;
        state.events.push(event);
        Ok(())
    }

    fn next_seq(state: &mut State, writes: &mut Writes) -> Result<u64, GolemError> {
        state.next_seq += 1;
        writes.put("seq/".to_string(), &state.next_seq)?;
        Ok(state.next_seq)
    }

    fn enqueue(
        state: &mut State,
        writes: &mut Writes,
        target: NodeId,
        message: Outgoing,
    ) -> Result<(), GolemError> {
        let seq = Self::next_seq(state, writes)?;
        let entry = OutboxEntry { target, message };
        writes.put(format!("out/{seq:020}"), &entry)?;
        state.outbox.insert(seq, entry);
        Ok(())
    }

    fn after_commit(&self, events: bool, outbox: bool) {
        if events {
            self.inner.events_changed.send_modify(|count| *count += 1);
        }
        if outbox {
            self.inner.outbox_changed.notify_one();
        }
    }

    // ---------------- allocations ----------------

    /// Create an allocation from the client's body (yapapi's and golem-js's shapes).
    pub fn create_allocation(&self, body: &serde_json::Value) -> Result<Allocation, GolemError> {
        let field = |name: &str| body.get(name).filter(|value| !value.is_null());
        let platform = match field("paymentPlatform") {
            None => Platform::parse(DEFAULT_PLATFORM)?,
            Some(serde_json::Value::String(name)) if name.is_empty() => {
                Platform::parse(DEFAULT_PLATFORM)?
            }
            Some(serde_json::Value::String(name)) => Platform::parse(name)?,
            Some(serde_json::Value::Object(parts)) => {
                let part = |key: &str| parts.get(key).and_then(|value| value.as_str());
                Platform::from_parts(part("driver"), part("network"), part("token"))?
            }
            Some(other) => {
                return Err(GolemError::bad_request(format!(
                    "paymentPlatform must be a string or {{driver, network, token}}, got {other}"
                )))
            }
        };
        let our = self.our_address();
        let address = match field("address") {
            None => our.clone(),
            Some(serde_json::Value::String(address)) if address.is_empty() => our.clone(),
            Some(serde_json::Value::String(address)) if address.eq_ignore_ascii_case(&our) => {
                our.clone()
            }
            Some(other) => {
                return Err(GolemError::bad_request(format!(
                    "address {other} is not this node's address {our}"
                )))
            }
        };
        let total = parse_amount(
            "totalAmount",
            field("totalAmount").unwrap_or(&serde_json::Value::Null),
        )?;
        let timeout = match field("timeout") {
            None => None,
            Some(value) => Some(
                serde_json::from_value::<DateTime<Utc>>(value.clone()).map_err(|error| {
                    GolemError::bad_request(format!("invalid timeout {value}: {error}"))
                })?,
            ),
        };
        let make_deposit = field("makeDeposit")
            .and_then(|value| value.as_bool())
            .unwrap_or(false);
        let now = Utc::now();
        let allocation = Allocation {
            allocation_id: new_id(),
            address,
            payment_platform: platform.name,
            total_amount: total,
            spent_amount: Decimal::ZERO,
            remaining_amount: total,
            timestamp: now,
            timeout,
            make_deposit,
            created_ts: now,
            updated_ts: now,
        };
        let record = AllocationRecord {
            allocation: allocation.clone(),
            released: false,
        };
        let mut state = self.lock();
        let mut writes = Writes::new();
        writes.put(format!("alloc/{}", allocation.allocation_id), &record)?;
        self.commit(writes)?;
        state
            .allocations
            .insert(allocation.allocation_id.clone(), record);
        Ok(allocation)
    }

    pub fn allocations(&self) -> Vec<Allocation> {
        let state = self.lock();
        let mut list: Vec<Allocation> = state
            .allocations
            .values()
            .filter(|record| !record.released && !is_expired(&record.allocation, Utc::now()))
            .map(|record| record.allocation.clone())
            .collect();
        list.sort_by_key(|allocation| allocation.created_ts);
        list
    }

    fn live_allocation<'a>(state: &'a State, id: &str) -> Result<&'a Allocation, GolemError> {
        match state.allocations.get(id) {
            None => Err(GolemError::not_found(format!("unknown allocation {id}"))),
            Some(record) if record.released => Err(GolemError::new(
                ErrorCode::Gone,
                format!("allocation {id} was released"),
            )),
            Some(record) if is_expired(&record.allocation, Utc::now()) => Err(GolemError::new(
                ErrorCode::Gone,
                format!(
                    "allocation {id} expired at {}; create a new one",
                    record
                        .allocation
                        .timeout
                        .map(|at| at.to_rfc3339())
                        .unwrap_or_default()
                ),
            )),
            Some(record) => Ok(&record.allocation),
        }
    }

    /// Release allocations whose timeout passed (what is left is freed).
    fn release_expired(&self) {
        let now = Utc::now();
        let expired: Vec<String> = self
            .lock()
            .allocations
            .values()
            .filter(|record| !record.released && is_expired(&record.allocation, now))
            .map(|record| record.allocation.allocation_id.clone())
            .collect();
        for id in expired {
            match self.release_allocation(&id) {
                Ok(()) => tracing::info!(allocation_id = %id, "allocation expired; released"),
                Err(error) => {
                    tracing::warn!(allocation_id = %id, %error.message, "releasing an expired allocation failed")
                }
            }
        }
    }

    pub fn allocation(&self, id: &str) -> Result<Allocation, GolemError> {
        Self::live_allocation(&self.lock(), id).cloned()
    }

    /// Release: what is left is freed; the allocation can no longer be charged.
    pub fn release_allocation(&self, id: &str) -> Result<(), GolemError> {
        let mut state = self.lock();
        let mut record = match state.allocations.get(id) {
            None => return Err(GolemError::not_found(format!("unknown allocation {id}"))),
            Some(record) => record.clone(),
        };
        if record.released {
            return Ok(());
        }
        record.released = true;
        record.allocation.updated_ts = Utc::now();
        let mut writes = Writes::new();
        writes.put(format!("alloc/{id}"), &record)?;
        self.commit(writes)?;
        state.allocations.insert(id.to_string(), record);
        Ok(())
    }

    /// Properties and constraints a demand needs to be paid from `ids`.
    pub fn demand_decorations(&self, ids: &[String]) -> Result<MarketDecoration, GolemError> {
        let state = self.lock();
        let mut properties = Vec::new();
        let mut constraints = Vec::new();
        for id in ids {
            let allocation = Self::live_allocation(&state, id)?;
            let key = format!(
                "golem.com.payment.platform.{}.address",
                allocation.payment_platform
            );
            if properties
                .iter()
                .any(|property: &MarketProperty| property.key == key)
            {
                continue;
            }
            constraints.push(format!("({key}=*)"));
            properties.push(MarketProperty {
                key,
                value: allocation.address.clone(),
            });
        }
        properties.push(MarketProperty {
            key: "golem.com.payment.protocol.version".into(),
            value: PAYMENT_PROTOCOL_VERSION.into(),
        });
        constraints.push("(golem.com.payment.protocol.version>1)".into());
        Ok(MarketDecoration {
            properties,
            constraints,
        })
    }

    // ---------------- agreements ----------------

    /// The agreement's platform, payee (offer) and payer (demand) addresses.
    fn payment_terms(agreement: &Agreement) -> Result<(String, String, String), GolemError> {
        let address_key = |platform: &str| format!("golem.com.payment.platform.{platform}.address");
        let text = |value: Option<&serde_json::Value>| {
            value.and_then(|value| value.as_str()).map(String::from)
        };
        let chosen = text(
            agreement
                .demand
                .properties
                .get("golem.com.payment.chosen-platform"),
        );
        let platform = match chosen {
            Some(platform) => platform,
            None => Platform::known()
                .into_iter()
                .map(|platform| platform.name)
                .find(|platform| {
                    agreement
                        .offer
                        .properties
                        .get(&address_key(platform))
                        .is_some()
                        && agreement
                            .demand
                            .properties
                            .get(&address_key(platform))
                            .is_some()
                })
                .ok_or_else(|| {
                    GolemError::bad_request(format!(
                        "agreement {} names no payment platform both sides have",
                        agreement.agreement_id
                    ))
                })?,
        };
        let payee =
            text(agreement.offer.properties.get(&address_key(&platform))).ok_or_else(|| {
                GolemError::bad_request(format!(
                    "the offer of agreement {} has no {} address",
                    agreement.agreement_id, platform
                ))
            })?;
        let payer =
            text(agreement.demand.properties.get(&address_key(&platform))).ok_or_else(|| {
                GolemError::bad_request(format!(
                    "the demand of agreement {} has no {} address",
                    agreement.agreement_id, platform
                ))
            })?;
        Ok((platform, payee, payer))
    }

    /// The agreement, when this node is its provider and it may be billed.
    fn provider_agreement(&self, agreement_id: &str) -> Result<Agreement, GolemError> {
        let agreement = self.inner.agreements.agreement(agreement_id)?;
        if agreement.offer.provider_id != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "this node is not the provider of agreement {agreement_id}"
            )));
        }
        if !matches!(
            agreement.state,
            AgreementState::Approved | AgreementState::Terminated
        ) {
            return Err(GolemError::conflict(format!(
                "agreement {agreement_id} is {:?}; only approved or terminated agreements are billed",
                agreement.state
            )));
        }
        Ok(agreement)
    }

    /// The agreement, when this node is its requestor and `caller` its provider.
    fn check_incoming(&self, caller: NodeId, agreement_id: &str) -> Result<Agreement, GolemError> {
        let agreement = self.inner.agreements.agreement(agreement_id)?;
        if agreement.demand.requestor_id != self.inner.node_id
            || agreement.offer.provider_id != caller
        {
            return Err(GolemError::forbidden(format!(
                "{caller} is not the provider of agreement {agreement_id} with this node"
            )));
        }
        Ok(agreement)
    }

    fn caller_id(&self, caller: Caller) -> NodeId {
        match caller {
            Caller::Local => self.inner.node_id,
            Caller::Remote(node) => node,
        }
    }

    // ---------------- debit notes ----------------

    /// Provider: issue a debit note (status ISSUED); amounts never decrease per activity.
    pub fn issue_debit_note(&self, new: NewDebitNote) -> Result<DebitNote, GolemError> {
        let agreement_id = match &new.agreement_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => self
                .inner
                .activities
                .as_ref()
                .and_then(|activities| activities.agreement_of_activity(&new.activity_id))
                .ok_or_else(|| {
                    GolemError::bad_request(format!(
                        "this node hosts no activity {}; give its agreementId too",
                        new.activity_id
                    ))
                })?,
        };
        let amount = parse_amount("totalAmountDue", &new.total_amount_due)?;
        let agreement = self.provider_agreement(&agreement_id)?;
        let (platform, payee, payer) = Self::payment_terms(&agreement)?;
        let mut state = self.lock();
        let previous = state
            .debit_notes
            .values()
            .filter(|note| {
                note.issuer_id == self.inner.node_id
                    && note.agreement_id == agreement_id
                    && note.activity_id == new.activity_id
            })
            .max_by_key(|note| (note.total_amount_due, note.timestamp));
        if let Some(previous) = previous {
            if amount < previous.total_amount_due {
                return Err(GolemError::bad_request(format!(
                    "debit note amounts never decrease: {amount} < {} of debit note {}",
                    previous.total_amount_due, previous.debit_note_id
                )));
            }
        }
        let note = DebitNote {
            debit_note_id: new_id(),
            issuer_id: self.inner.node_id,
            recipient_id: agreement.demand.requestor_id,
            payee_addr: payee,
            payer_addr: payer,
            payment_platform: platform,
            previous_debit_note_id: previous.map(|note| note.debit_note_id.clone()),
            timestamp: Utc::now(),
            agreement_id,
            activity_id: new.activity_id,
            total_amount_due: amount,
            usage_counter_vector: new.usage_counter_vector,
            payment_due_date: new.payment_due_date,
            status: DocumentStatus::Issued,
        };
        let mut writes = Writes::new();
        writes.put(format!("dn/{}", note.debit_note_id), &note)?;
        self.commit(writes)?;
        state
            .debit_notes
            .insert(note.debit_note_id.clone(), note.clone());
        Ok(note)
    }

    pub fn debit_notes(&self) -> Vec<DebitNote> {
        self.documents()
    }

    pub fn debit_note(&self, id: &str) -> Result<DebitNote, GolemError> {
        self.document(id)
    }

    /// Provider: deliver an issued debit note to the requestor (retried), then RECEIVED.
    pub async fn send_debit_note(&self, id: &str) -> Result<DebitNote, GolemError> {
        self.send_document(id, SendDebitNote).await
    }

    fn update_debit_note(
        &self,
        id: &str,
        status: DocumentStatus,
        event: Option<(PaymentEventType, Option<Rejection>)>,
    ) -> Result<DebitNote, GolemError> {
        self.update_document(id, status, event)
    }

    /// Requestor: a debit note arrives from the agreement's provider.
    fn receive_debit_note(&self, caller: NodeId, mut note: DebitNote) -> Result<(), GolemError> {
        if note.recipient_id != self.inner.node_id || note.issuer_id != caller {
            return Err(GolemError::forbidden(
                "a debit note is accepted only from its issuer, addressed to this node",
            ));
        }
        let agreement = self.check_incoming(caller, &note.agreement_id)?;
        let (platform, _, payer) = Self::payment_terms(&agreement)?;
        if note.payment_platform != platform || !note.payer_addr.eq_ignore_ascii_case(&payer) {
            return Err(GolemError::bad_request(format!(
                "debit note {} does not match the payment terms of agreement {}",
                note.debit_note_id, note.agreement_id
            )));
        }
        self.check_debit_note_terms(caller, &agreement, &note)?;
        let mut state = self.lock();
        if let Some(existing) = state.debit_notes.get(&note.debit_note_id) {
            if existing.total_amount_due == note.total_amount_due
                && existing.activity_id == note.activity_id
            {
                return Ok(()); // duplicate delivery
            }
            return Err(GolemError::conflict(format!(
                "debit note {} was already received with other contents",
                note.debit_note_id
            )));
        }
        // Notes may arrive out of order (retries, concurrent sends); what is
        // refused is a provider whose amounts went down over time.
        let decreasing = state.debit_notes.values().any(|other| {
            other.agreement_id == note.agreement_id
                && other.activity_id == note.activity_id
                && ((other.timestamp <= note.timestamp
                    && other.total_amount_due > note.total_amount_due)
                    || (other.timestamp >= note.timestamp
                        && other.total_amount_due < note.total_amount_due))
        });
        if decreasing {
            return Err(GolemError::conflict(format!(
                "debit note {} lowers the amount due of activity {}; amounts never decrease",
                note.debit_note_id, note.activity_id
            )));
        }
        note.status = DocumentStatus::Received;
        let mut writes = Writes::new();
        writes.put(format!("dn/{}", note.debit_note_id), &note)?;
        Self::push_event(
            &mut state,
            &mut writes,
            PaymentEventType::DebitNoteReceivedEvent,
            &note.debit_note_id,
            None,
        )?;
        self.commit(writes)?;
        state.debit_notes.insert(note.debit_note_id.clone(), note);
        drop(state);
        self.after_commit(true, false);
        Ok(())
    }

    /// Charge `allocation_id` so the agreement has cost `new_charges`; refuses over-budget.
    fn charge(
        state: &mut State,
        writes: &mut Writes,
        agreement_id: &str,
        allocation_id: &str,
        platform: &str,
        payer_addr: &str,
        update: impl FnOnce(&mut AgreementCharges),
    ) -> Result<(), GolemError> {
        let allocation = Self::live_allocation(state, allocation_id)?.clone();
        if allocation.payment_platform != platform
            || !allocation.address.eq_ignore_ascii_case(payer_addr)
        {
            return Err(GolemError::bad_request(format!(
                "allocation {allocation_id} is for {} {}, the document is for {platform} {payer_addr}",
                allocation.payment_platform, allocation.address
            )));
        }
        let mut charges = state.charges.get(agreement_id).cloned().unwrap_or_default();
        let before = charges.charged();
        update(&mut charges);
        let delta = charges.charged() - before;
        if delta > allocation.remaining_amount {
            return Err(GolemError::conflict(format!(
                "allocation {allocation_id} has {} left, accepting needs {delta}",
                allocation.remaining_amount
            )));
        }
        let mut allocation = allocation;
        allocation.spent_amount = (allocation.spent_amount + delta).normalize();
        allocation.remaining_amount = (allocation.remaining_amount - delta).normalize();
        allocation.updated_ts = Utc::now();
        charges.allocation_id = Some(allocation_id.to_string());
        let record = AllocationRecord {
            allocation,
            released: false,
        };
        writes.put(format!("alloc/{allocation_id}"), &record)?;
        writes.put(format!("charge/{agreement_id}"), &charges)?;
        state.allocations.insert(allocation_id.to_string(), record);
        state.charges.insert(agreement_id.to_string(), charges);
        Ok(())
    }

    /// Requestor: accept a received debit note, charging the allocation.
    pub fn accept_debit_note(&self, id: &str, acceptance: &Acceptance) -> Result<(), GolemError> {
        let amount = parse_amount("totalAmountAccepted", &acceptance.total_amount_accepted)?;
        let mut state = self.lock();
        let note = state
            .debit_notes
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown debit note {id}")))?;
        if note.recipient_id != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "debit note {id} was issued by this node; only its recipient may accept it"
            )));
        }
        if amount != note.total_amount_due {
            return Err(GolemError::bad_request(format!(
                "totalAmountAccepted {amount} differs from the debit note's totalAmountDue {}",
                note.total_amount_due
            )));
        }
        match note.status {
            DocumentStatus::Accepted => return Ok(()), // already done: changes nothing
            DocumentStatus::Received => {}
            status => return Err(status_error("debit note", id, status)),
        }
        let mut writes = Writes::new();
        Self::charge(
            &mut state,
            &mut writes,
            &note.agreement_id,
            &acceptance.allocation_id,
            &note.payment_platform,
            &note.payer_addr,
            |charges| {
                if charges.invoice.is_none() {
                    let entry = charges
                        .by_activity
                        .entry(note.activity_id.clone())
                        .or_default();
                    *entry = (*entry).max(amount);
                }
            },
        )?;
        let mut note = note;
        note.status = DocumentStatus::Accepted;
        writes.put(format!("dn/{id}"), &note)?;
        Self::enqueue(
            &mut state,
            &mut writes,
            note.issuer_id,
            Outgoing::AcceptDebitNote(AcceptDebitNote {
                debit_note_id: id.to_string(),
                total_amount_accepted: amount,
            }),
        )?;
        if let Err(error) = self.commit(writes) {
            // The in-memory charge must not outlive a failed write.
            drop(state);
            self.reload_after_failure();
            return Err(error);
        }
        state.debit_notes.insert(id.to_string(), note);
        drop(state);
        self.after_commit(false, true);
        Ok(())
    }

    /// Requestor: reject a received debit note.
    pub fn reject_debit_note(&self, id: &str, rejection: Rejection) -> Result<(), GolemError> {
        let mut state = self.lock();
        let mut note = state
            .debit_notes
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown debit note {id}")))?;
        if note.recipient_id != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "debit note {id} was issued by this node; only its recipient may reject it"
            )));
        }
        match note.status {
            DocumentStatus::Rejected => return Ok(()),
            DocumentStatus::Received => {}
            status => return Err(status_error("debit note", id, status)),
        }
        note.status = DocumentStatus::Rejected;
        let mut writes = Writes::new();
        writes.put(format!("dn/{id}"), &note)?;
        Self::enqueue(
            &mut state,
            &mut writes,
            note.issuer_id,
            Outgoing::RejectDebitNote(RejectDebitNote {
                debit_note_id: id.to_string(),
                rejection,
            }),
        )?;
        self.commit(writes)?;
        state.debit_notes.insert(id.to_string(), note);
        drop(state);
        self.after_commit(false, true);
        Ok(())
    }

    // ---------------- invoices ----------------

    /// Provider: issue the invoice of an agreement (one per agreement).
    pub fn issue_invoice(&self, new: NewInvoice) -> Result<Invoice, GolemError> {
        let amount = parse_amount("amount", &new.amount)?;
        let agreement = self.provider_agreement(&new.agreement_id)?;
        let (platform, payee, payer) = Self::payment_terms(&agreement)?;
        let mut state = self.lock();
        if let Some(existing) = state.invoices.values().find(|invoice| {
            invoice.agreement_id == new.agreement_id && invoice.status != DocumentStatus::Cancelled
        }) {
            return Err(GolemError::conflict(format!(
                "agreement {} already has invoice {}",
                new.agreement_id, existing.invoice_id
            )));
        }
        let now = Utc::now();
        let invoice = Invoice {
            invoice_id: new_id(),
            issuer_id: self.inner.node_id,
            recipient_id: agreement.demand.requestor_id,
            payee_addr: payee,
            payer_addr: payer,
            payment_platform: platform,
            timestamp: now,
            agreement_id: new.agreement_id,
            activity_ids: new.activity_ids.unwrap_or_default(),
            amount,
            payment_due_date: new
                .payment_due_date
                .unwrap_or(now + chrono::Duration::days(1)),
            status: DocumentStatus::Issued,
        };
        let mut writes = Writes::new();
        writes.put(format!("inv/{}", invoice.invoice_id), &invoice)?;
        self.commit(writes)?;
        state
            .invoices
            .insert(invoice.invoice_id.clone(), invoice.clone());
        Ok(invoice)
    }

    pub fn invoices(&self) -> Vec<Invoice> {
        self.documents()
    }

    pub fn invoice(&self, id: &str) -> Result<Invoice, GolemError> {
        self.document(id)
    }

    /// Provider: deliver an issued invoice to the requestor (retried), then RECEIVED.
    pub async fn send_invoice(&self, id: &str) -> Result<Invoice, GolemError> {
        self.send_document(id, SendInvoice).await
    }

    fn update_invoice(
        &self,
        id: &str,
        status: DocumentStatus,
        event: Option<(PaymentEventType, Option<Rejection>)>,
    ) -> Result<Invoice, GolemError> {
        self.update_document(id, status, event)
    }

    // ---------------- what debit notes and invoices share ----------------

    /// Every document of kind `D`, oldest first.
    fn documents<D: Document>(&self) -> Vec<D> {
        let mut list: Vec<D> = D::map(&self.lock()).values().cloned().collect();
        list.sort_by_key(|document| document.timestamp());
        list
    }

    fn document<D: Document>(&self, id: &str) -> Result<D, GolemError> {
        D::map(&self.lock())
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown {} {id}", D::NAME)))
    }

    /// Provider: deliver an issued document to its recipient (retried), then RECEIVED.
    async fn send_document<D, M>(
        &self,
        id: &str,
        message: impl FnOnce(D) -> M,
    ) -> Result<D, GolemError>
    where
        D: Document,
        M: golem_model::bus::BusMessage<Reply = ()>,
    {
        let document: D = self.document(id)?;
        if document.issuer_id() != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "{} {id} was not issued by this node",
                D::NAME
            )));
        }
        let target = document.recipient_id();
        self.deliver_with_retries(target, &message(document))
            .await?;
        let updated = self.update_document(id, DocumentStatus::Received, None)?;
        self.durable().await?;
        Ok(updated)
    }

    /// Move a document forward to `status` (never backwards), with its event, in one write.
    fn update_document<D: Document>(
        &self,
        id: &str,
        status: DocumentStatus,
        event: Option<(PaymentEventType, Option<Rejection>)>,
    ) -> Result<D, GolemError> {
        let mut state = self.lock();
        let mut document = D::map(&state)
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown {} {id}", D::NAME)))?;
        if status.rank() <= document.status().rank() {
            return Ok(document);
        }
        document.set_status(status);
        let mut writes = Writes::new();
        writes.put(format!("{}{id}", D::KEY_PREFIX), &document)?;
        let has_event = event.is_some();
        if let Some((event_type, rejection)) = event {
            Self::push_event(&mut state, &mut writes, event_type, id, rejection)?;
        }
        self.commit(writes)?;
        D::map_mut(&mut state).insert(id.to_string(), document.clone());
        drop(state);
        self.after_commit(has_event, false);
        Ok(document)
    }

    /// Requestor: an invoice arrives from the agreement's provider.
    fn receive_invoice(&self, caller: NodeId, mut invoice: Invoice) -> Result<(), GolemError> {
        if invoice.recipient_id != self.inner.node_id || invoice.issuer_id != caller {
            return Err(GolemError::forbidden(
                "an invoice is accepted only from its issuer, addressed to this node",
            ));
        }
        let agreement = self.check_incoming(caller, &invoice.agreement_id)?;
        let (platform, _, payer) = Self::payment_terms(&agreement)?;
        if invoice.payment_platform != platform || !invoice.payer_addr.eq_ignore_ascii_case(&payer)
        {
            return Err(GolemError::bad_request(format!(
                "invoice {} does not match the payment terms of agreement {}",
                invoice.invoice_id, invoice.agreement_id
            )));
        }
        self.check_invoice_terms(caller, &agreement, &invoice)?;
        let mut state = self.lock();
        if let Some(existing) = state.invoices.get(&invoice.invoice_id) {
            if existing.amount == invoice.amount && existing.agreement_id == invoice.agreement_id {
                return Ok(());
            }
            return Err(GolemError::conflict(format!(
                "invoice {} was already received with other contents",
                invoice.invoice_id
            )));
        }
        if let Some(other) = state
            .invoices
            .values()
            .find(|other| other.agreement_id == invoice.agreement_id)
        {
            return Err(GolemError::conflict(format!(
                "agreement {} already has invoice {}",
                invoice.agreement_id, other.invoice_id
            )));
        }
        invoice.status = DocumentStatus::Received;
        let mut writes = Writes::new();
        writes.put(format!("inv/{}", invoice.invoice_id), &invoice)?;
        Self::push_event(
            &mut state,
            &mut writes,
            PaymentEventType::InvoiceReceivedEvent,
            &invoice.invoice_id,
            None,
        )?;
        self.commit(writes)?;
        state.invoices.insert(invoice.invoice_id.clone(), invoice);
        drop(state);
        self.after_commit(true, false);
        Ok(())
    }

    /// Requestor: accept a received invoice, charge the allocation and pay it
    /// (dummy: at once; the acceptance, charge and payment are one write).
    pub fn accept_invoice(&self, id: &str, acceptance: &Acceptance) -> Result<(), GolemError> {
        let amount = parse_amount("totalAmountAccepted", &acceptance.total_amount_accepted)?;
        let mut state = self.lock();
        let invoice = state
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown invoice {id}")))?;
        if invoice.recipient_id != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "invoice {id} was issued by this node; only its recipient may accept it"
            )));
        }
        if amount != invoice.amount {
            return Err(GolemError::bad_request(format!(
                "totalAmountAccepted {amount} differs from the invoice amount {}",
                invoice.amount
            )));
        }
        match invoice.status {
            DocumentStatus::Accepted | DocumentStatus::Settled => return Ok(()),
            DocumentStatus::Received => {}
            status => return Err(status_error("invoice", id, status)),
        }
        let platform = Platform::parse(&invoice.payment_platform)?;
        let driver = self.inner.drivers.for_platform(&platform)?;
        let mut writes = Writes::new();
        Self::charge(
            &mut state,
            &mut writes,
            &invoice.agreement_id,
            &acceptance.allocation_id,
            &invoice.payment_platform,
            &invoice.payer_addr,
            |charges| charges.invoice = Some(amount),
        )?;
        let payment_id = new_id();
        if !driver.settles_at_once() {
            return self.accept_into_order(state, writes, invoice, acceptance, payment_id, driver);
        }
        let details = match driver.pay(
            &platform,
            &payment_id,
            &invoice.payer_addr,
            &invoice.payee_addr,
            amount,
        ) {
            Ok(PayOutcome::Settled(details)) => details,
            Ok(PayOutcome::Pending) => {
                drop(state);
                self.reload_after_failure();
                return Err(GolemError::internal(format!(
                    "driver {} left a payment pending though it settles at once",
                    driver.name()
                )));
            }
            Err(error) => {
                drop(state);
                self.reload_after_failure();
                return Err(error);
            }
        };
        let payment = Payment {
            payment_id: payment_id.clone(),
            payer_id: self.inner.node_id,
            payee_id: invoice.issuer_id,
            payer_addr: invoice.payer_addr.clone(),
            payee_addr: invoice.payee_addr.clone(),
            payment_platform: invoice.payment_platform.clone(),
            amount,
            timestamp: Utc::now(),
            agreement_payments: vec![AgreementPayment {
                agreement_id: invoice.agreement_id.clone(),
                amount,
                allocation_id: Some(acceptance.allocation_id.clone()),
            }],
            activity_payments: Vec::new(),
            details,
        };
        let mut invoice = invoice;
        invoice.status = DocumentStatus::Settled;
        writes.put(format!("inv/{id}"), &invoice)?;
        writes.put(format!("pay/{payment_id}"), &payment)?;
        Self::push_event(
            &mut state,
            &mut writes,
            PaymentEventType::InvoiceSettledEvent,
            id,
            None,
        )?;
        Self::enqueue(
            &mut state,
            &mut writes,
            invoice.issuer_id,
            Outgoing::AcceptInvoice(AcceptInvoice {
                invoice_id: id.to_string(),
                total_amount_accepted: amount,
            }),
        )?;
        Self::enqueue(
            &mut state,
            &mut writes,
            invoice.issuer_id,
            Outgoing::SendPayment(SendPayment {
                payment: payment.clone(),
                invoice_ids: vec![id.to_string()],
            }),
        )?;
        if let Err(error) = self.commit(writes) {
            drop(state);
            self.reload_after_failure();
            return Err(error);
        }
        state.invoices.insert(id.to_string(), invoice);
        state.payments.push(payment);
        drop(state);
        self.after_commit(true, true);
        Ok(())
    }

    /// Accept an invoice whose driver pays later: the charge, the order and the
    /// acceptance are one write; the driver gets the payment after it (pay is
    /// idempotent per payment id, and the settle loop hands it over again when
    /// a crash came between).
    fn accept_into_order(
        &self,
        mut state: MutexGuard<'_, State>,
        mut writes: Writes,
        mut invoice: Invoice,
        acceptance: &Acceptance,
        payment_id: String,
        driver: Arc<dyn PaymentDriver>,
    ) -> Result<(), GolemError> {
        let id = invoice.invoice_id.clone();
        let order = PaymentOrder {
            payment_id: payment_id.clone(),
            invoice_id: id.clone(),
            issuer_id: invoice.issuer_id,
            agreement_id: invoice.agreement_id.clone(),
            allocation_id: acceptance.allocation_id.clone(),
            platform: invoice.payment_platform.clone(),
            payer_addr: invoice.payer_addr.clone(),
            payee_addr: invoice.payee_addr.clone(),
            amount: invoice.amount,
            created: Utc::now(),
            status: "accepted, payment queued".to_string(),
        };
        invoice.status = DocumentStatus::Accepted;
        writes.put(format!("inv/{id}"), &invoice)?;
        writes.put(format!("order/{payment_id}"), &order)?;
        Self::enqueue(
            &mut state,
            &mut writes,
            invoice.issuer_id,
            Outgoing::AcceptInvoice(AcceptInvoice {
                invoice_id: id.clone(),
                total_amount_accepted: invoice.amount,
            }),
        )?;
        if let Err(error) = self.commit(writes) {
            drop(state);
            self.reload_after_failure();
            return Err(error);
        }
        state.invoices.insert(id.clone(), invoice);
        state.orders.insert(payment_id.clone(), order.clone());
        drop(state);
        self.after_commit(false, true);
        tracing::info!(invoice_id = %id, %payment_id, platform = %order.platform, "invoice accepted; payment pending");
        self.hand_to_driver(&order, driver.as_ref());
        Ok(())
    }

    fn hand_to_driver(&self, order: &PaymentOrder, driver: &dyn PaymentDriver) {
        let result = Platform::parse(&order.platform).and_then(|platform| {
            driver.pay(
                &platform,
                &order.payment_id,
                &order.payer_addr,
                &order.payee_addr,
                order.amount,
            )
        });
        match result {
            Ok(_) => self.inner.settled.notify_one(),
            Err(error) => {
                tracing::warn!(payment_id = %order.payment_id, %error.message, "payment not handed to its driver yet");
                self.set_order_status(&order.payment_id, error.message);
            }
        }
    }

    fn set_order_status(&self, payment_id: &str, status: String) {
        if let Some(order) = self.lock().orders.get_mut(payment_id) {
            order.status = status;
        }
    }

    /// Pending payments (accepted invoices their driver has not settled yet).
    pub fn pending_payments(&self) -> Vec<PaymentOrder> {
        let mut list: Vec<PaymentOrder> = self.lock().orders.values().cloned().collect();
        list.sort_by_key(|order| order.created);
        list
    }

    /// Follow pending payments until their driver settles them; then record the
    /// payment, settle the invoice and tell the provider, in one write.
    async fn run_settler(self) {
        loop {
            self.release_expired();
            self.recheck_unverified_payments().await;
            for order in self.pending_payments() {
                let driver = match Platform::parse(&order.platform)
                    .and_then(|platform| self.inner.drivers.for_platform(&platform))
                {
                    Ok(driver) => driver,
                    Err(error) => {
                        self.set_order_status(&order.payment_id, error.message);
                        continue;
                    }
                };
                match driver.progress(&order.payment_id) {
                    PayProgress::Unknown => self.hand_to_driver(&order, driver.as_ref()),
                    PayProgress::Pending(status) => {
                        self.set_order_status(&order.payment_id, status)
                    }
                    PayProgress::Settled(details) => {
                        if let Err(error) = self.settle_order(&order.payment_id, details) {
                            tracing::error!(payment_id = %order.payment_id, %error.message, "recording a settled payment failed");
                        } else if let Err(error) = self.durable().await {
                            tracing::error!(%error.message, "flushing a settled payment failed");
                        }
                    }
                }
            }
            let settled = self.inner.settled.notified();
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = settled => {}
                _ = tokio::time::sleep(SETTLE_TICK) => {}
            }
        }
    }

    fn settle_order(&self, payment_id: &str, details: String) -> Result<(), GolemError> {
        let mut state = self.lock();
        let Some(order) = state.orders.get(payment_id).cloned() else {
            return Ok(()); // already settled
        };
        let mut invoice = state
            .invoices
            .get(&order.invoice_id)
            .cloned()
            .ok_or_else(|| {
                GolemError::internal(format!(
                    "invoice {} of payment {payment_id} is missing",
                    order.invoice_id
                ))
            })?;
        let payment = Payment {
            payment_id: payment_id.to_string(),
            payer_id: self.inner.node_id,
            payee_id: order.issuer_id,
            payer_addr: order.payer_addr.clone(),
            payee_addr: order.payee_addr.clone(),
            payment_platform: order.platform.clone(),
            amount: order.amount,
            timestamp: Utc::now(),
            agreement_payments: vec![AgreementPayment {
                agreement_id: order.agreement_id.clone(),
                amount: order.amount,
                allocation_id: Some(order.allocation_id.clone()),
            }],
            activity_payments: Vec::new(),
            details,
        };
        invoice.status = DocumentStatus::Settled;
        let mut writes = Writes::new();
        writes.put(format!("inv/{}", invoice.invoice_id), &invoice)?;
        writes.put(format!("pay/{payment_id}"), &payment)?;
        writes.remove(format!("order/{payment_id}"));
        Self::push_event(
            &mut state,
            &mut writes,
            PaymentEventType::InvoiceSettledEvent,
            &invoice.invoice_id,
            None,
        )?;
        Self::enqueue(
            &mut state,
            &mut writes,
            order.issuer_id,
            Outgoing::SendPayment(SendPayment {
                payment: payment.clone(),
                invoice_ids: vec![invoice.invoice_id.clone()],
            }),
        )?;
        self.commit(writes)?;
        tracing::info!(%payment_id, invoice_id = %invoice.invoice_id, "payment settled");
        state.invoices.insert(invoice.invoice_id.clone(), invoice);
        state.payments.push(payment);
        state.orders.remove(payment_id);
        drop(state);
        self.after_commit(true, true);
        Ok(())
    }

    /// `payment status`: per platform, what was requested, accepted, paid and
    /// is pending, both ways, plus the allocations.
    pub fn status_report(&self) -> PaymentStatusReport {
        let state = self.lock();
        let me = self.inner.node_id;
        let mut report: BTreeMap<String, PlatformStatus> = BTreeMap::new();
        // Requested: invoices when there are, otherwise the highest debit notes.
        let mut requested: BTreeMap<(bool, String, String), Decimal> = BTreeMap::new();
        let mut accepted: BTreeMap<(bool, String, String), Decimal> = BTreeMap::new();
        for note in state.debit_notes.values() {
            if matches!(
                note.status,
                DocumentStatus::Rejected | DocumentStatus::Cancelled
            ) {
                continue;
            }
            let outgoing = note.recipient_id == me;
            let key = (
                outgoing,
                note.payment_platform.clone(),
                format!("{}/{}", note.agreement_id, note.activity_id),
            );
            let slot = requested.entry(key.clone()).or_default();
            *slot = (*slot).max(note.total_amount_due);
            if matches!(
                note.status,
                DocumentStatus::Accepted | DocumentStatus::Settled
            ) {
                let slot = accepted.entry(key).or_default();
                *slot = (*slot).max(note.total_amount_due);
            }
        }
        let invoiced: Vec<&Invoice> = state
            .invoices
            .values()
            .filter(|invoice| {
                !matches!(
                    invoice.status,
                    DocumentStatus::Rejected | DocumentStatus::Cancelled
                )
            })
            .collect();
        for invoice in &invoiced {
            let outgoing = invoice.recipient_id == me;
            let prefix = format!("{}/", invoice.agreement_id);
            requested.retain(|(way, _, key), _| !(*way == outgoing && key.starts_with(&prefix)));
            accepted.retain(|(way, _, key), _| !(*way == outgoing && key.starts_with(&prefix)));
            let key = (outgoing, invoice.payment_platform.clone(), prefix);
            requested.insert(key.clone(), invoice.amount);
            if matches!(
                invoice.status,
                DocumentStatus::Accepted | DocumentStatus::Settled
            ) {
                accepted.insert(key, invoice.amount);
            }
        }
        for ((outgoing, platform, _), amount) in requested {
            let status = report
                .entry(platform.clone())
                .or_insert_with(|| PlatformStatus::new(&platform));
            let way = if outgoing {
                &mut status.outgoing
            } else {
                &mut status.incoming
            };
            way.requested += amount;
        }
        for ((outgoing, platform, _), amount) in accepted {
            let status = report
                .entry(platform.clone())
                .or_insert_with(|| PlatformStatus::new(&platform));
            let way = if outgoing {
                &mut status.outgoing
            } else {
                &mut status.incoming
            };
            way.accepted += amount;
        }
        for payment in &state.payments {
            let platform = &payment.payment_platform;
            let status = report
                .entry(platform.clone())
                .or_insert_with(|| PlatformStatus::new(platform));
            if payment.payer_id == me {
                status.outgoing.paid += payment.amount;
            }
            if payment.payee_id == me {
                status.incoming.paid += payment.amount;
            }
        }
        for order in state.orders.values() {
            let status = report
                .entry(order.platform.clone())
                .or_insert_with(|| PlatformStatus::new(&order.platform));
            status.outgoing.pending += order.amount;
            status.pending_payments.push(order.clone());
        }
        // Payments reported to us whose transaction is not confirmed yet.
        for held in state.unverified.values() {
            let platform = &held.message.payment.payment_platform;
            let status = report
                .entry(platform.clone())
                .or_insert_with(|| PlatformStatus::new(platform));
            status.incoming.pending += held.message.payment.amount;
        }
        for record in state.allocations.values() {
            let allocation = &record.allocation;
            let platform = &allocation.payment_platform;
            let status = report
                .entry(platform.clone())
                .or_insert_with(|| PlatformStatus::new(platform));
            if record.released {
                status.allocations.released += 1;
                continue;
            }
            status.allocations.count += 1;
            status.allocations.total += allocation.total_amount;
            status.allocations.spent += allocation.spent_amount;
            status.allocations.remaining += allocation.remaining_amount;
        }
        PaymentStatusReport {
            node_id: me,
            platforms: report
                .into_values()
                .map(PlatformStatus::normalized)
                .collect(),
        }
    }

    /// Release every live allocation (`payment release-allocations`); returns their ids.
    pub fn release_all_allocations(&self) -> Result<Vec<String>, GolemError> {
        let ids: Vec<String> = self
            .allocations()
            .into_iter()
            .map(|allocation| allocation.allocation_id)
            .collect();
        for id in &ids {
            self.release_allocation(id)?;
        }
        Ok(ids)
    }

    /// What `payment driver list` shows.
    pub fn drivers_report(&self) -> Vec<serde_json::Value> {
        self.inner
            .drivers
            .all()
            .iter()
            .flat_map(|driver| driver.describe())
            .collect()
    }

    /// `/local/payment`: what the `golem-daemon payment` commands ask the running daemon.
    fn local_endpoint(&self) -> ServiceEndpoint {
        let on_status = self.clone();
        let on_drivers = self.clone();
        let on_accounts = self.clone();
        let on_release = self.clone();
        ServiceEndpoint::new()
            .on(move |_caller, _: GetPaymentStatus| {
                let service = on_status.clone();
                async move { Ok(service.status_report()) }
            })
            .on(move |_caller, _: ListPaymentDrivers| {
                let service = on_drivers.clone();
                async move { Ok(service.drivers_report()) }
            })
            .on(move |_caller, _: ListAccounts| {
                let service = on_accounts.clone();
                async move {
                    let mut accounts = service.accounts(true);
                    accounts.extend(service.accounts(false));
                    Ok(accounts)
                }
            })
            .on(move |_caller, _: ReleaseAllocations| {
                let service = on_release.clone();
                async move {
                    let ids = service.release_all_allocations()?;
                    service.durable().await?;
                    Ok(ids)
                }
            })
    }

    /// Requestor: reject a received invoice.
    pub fn reject_invoice(&self, id: &str, rejection: Rejection) -> Result<(), GolemError> {
        let mut state = self.lock();
        let mut invoice = state
            .invoices
            .get(id)
            .cloned()
            .ok_or_else(|| GolemError::not_found(format!("unknown invoice {id}")))?;
        if invoice.recipient_id != self.inner.node_id {
            return Err(GolemError::forbidden(format!(
                "invoice {id} was issued by this node; only its recipient may reject it"
            )));
        }
        match invoice.status {
            DocumentStatus::Rejected => return Ok(()),
            DocumentStatus::Received => {}
            status => return Err(status_error("invoice", id, status)),
        }
        invoice.status = DocumentStatus::Rejected;
        let mut writes = Writes::new();
        writes.put(format!("inv/{id}"), &invoice)?;
        Self::enqueue(
            &mut state,
            &mut writes,
            invoice.issuer_id,
            Outgoing::RejectInvoice(RejectInvoice {
                invoice_id: id.to_string(),
                rejection,
            }),
        )?;
        self.commit(writes)?;
        state.invoices.insert(id.to_string(), invoice);
        drop(state);
        self.after_commit(false, true);
        Ok(())
    }

    /// After a failed write, rebuild memory from the store (drops half-applied changes).
    fn reload_after_failure(&self) {
        tracing::error!("a payment change was not written; reloading the payment records");
        let mut state = self.lock();
        for entry in self.inner.tree.scan_prefix("alloc/").flatten() {
            if let Ok(record) = store::decode::<AllocationRecord>(TREE, &entry.1) {
                state
                    .allocations
                    .insert(record.allocation.allocation_id.clone(), record);
            }
        }
        for entry in self.inner.tree.scan_prefix("charge/").flatten() {
            let key = String::from_utf8_lossy(&entry.0).into_owned();
            if let Ok(charges) = store::decode::<AgreementCharges>(TREE, &entry.1) {
                state
                    .charges
                    .insert(key.trim_start_matches("charge/").to_string(), charges);
            }
        }
    }

    // ---------------- events, payments, accounts ----------------

    /// Events strictly after `after`, waiting up to `timeout` for the first one.
    pub async fn events(
        &self,
        invoices: bool,
        after: Option<DateTime<Utc>>,
        timeout: Duration,
        max_events: usize,
    ) -> Vec<PaymentEvent> {
        self.events_for_session(invoices, after, timeout, max_events, None)
            .await
    }

    /// [`events`](Self::events) of documents whose agreement has `app_session_id`.
    pub async fn events_for_session(
        &self,
        invoices: bool,
        after: Option<DateTime<Utc>>,
        timeout: Duration,
        max_events: usize,
        app_session_id: Option<&str>,
    ) -> Vec<PaymentEvent> {
        let mut changed = self.inner.events_changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            let candidates: Vec<(PaymentEvent, Option<String>)> = {
                let state = self.lock();
                let start = match after {
                    None => 0,
                    Some(after) => state
                        .events
                        .partition_point(|event| event.event_date <= after),
                };
                let agreement_of = |event: &PaymentEvent| -> Option<String> {
                    if let Some(id) = &event.invoice_id {
                        return state.invoices.get(id).map(|doc| doc.agreement_id.clone());
                    }
                    event
                        .debit_note_id
                        .as_ref()
                        .and_then(|id| state.debit_notes.get(id))
                        .map(|doc| doc.agreement_id.clone())
                };
                state.events[start..]
                    .iter()
                    .filter(|event| event.event_type.is_invoice() == invoices)
                    .take(if app_session_id.is_some() {
                        usize::MAX
                    } else {
                        max_events
                    })
                    .map(|event| {
                        let agreement = app_session_id.and_then(|_| agreement_of(event));
                        (event.clone(), agreement)
                    })
                    .collect()
            };
            // Agreements are read outside the payment lock.
            let found: Vec<PaymentEvent> = candidates
                .into_iter()
                .filter(|(_, agreement_id)| match app_session_id {
                    None => true,
                    Some(session) => agreement_id
                        .as_deref()
                        .and_then(|id| self.inner.agreements.agreement(id).ok())
                        .is_some_and(|agreement| {
                            agreement.app_session_id.as_deref() == Some(session)
                        }),
                })
                .map(|(event, _)| event)
                .take(max_events)
                .collect();
            if !found.is_empty() {
                return found;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Vec::new(),
            }
        }
    }

    pub fn payments(&self) -> Vec<Payment> {
        self.lock().payments.clone()
    }

    /// Accounts of this node: one per platform, sending only where a driver runs.
    pub fn accounts(&self, requestor: bool) -> Vec<Account> {
        let drivers = self.inner.drivers.names();
        Platform::known()
            .into_iter()
            .map(|platform| {
                let available = drivers.contains(&platform.driver.as_str());
                Account {
                    address: self.our_address(),
                    send: requestor && available,
                    receive: !requestor,
                    platform: platform.name,
                    driver: platform.driver,
                    network: platform.network,
                    token: platform.token,
                }
            })
            .collect()
    }

    // ---------------- delivery ----------------

    /// Call the payment service of `target`, retrying transient failures.
    async fn deliver_with_retries<M: golem_model::bus::BusMessage<Reply = ()>>(
        &self,
        target: NodeId,
        message: &M,
    ) -> Result<(), GolemError> {
        let address = payment_address(target);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.inner.router.call(&address, message).await {
                Ok(()) => return Ok(()),
                Err(error) if !is_transient(&error) || attempt >= SEND_ATTEMPTS => {
                    return Err(error)
                }
                Err(error) => {
                    tracing::debug!(%target, attempt, %error.message, "payment delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }

    async fn deliver_once(&self, entry: &OutboxEntry) -> Result<(), GolemError> {
        let address = payment_address(entry.target);
        let router = &self.inner.router;
        match &entry.message {
            Outgoing::AcceptDebitNote(message) => router.call(&address, message).await,
            Outgoing::RejectDebitNote(message) => router.call(&address, message).await,
            Outgoing::AcceptInvoice(message) => router.call(&address, message).await,
            Outgoing::RejectInvoice(message) => router.call(&address, message).await,
            Outgoing::SendPayment(message) => router.call(&address, message).await,
        }
    }

    /// Deliver outbox entries in order per target; transient failures back off
    /// (bounded) and retry, definitive refusals are logged and dropped.
    async fn run_outbox(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let pending: Vec<(u64, OutboxEntry)> = self
                .lock()
                .outbox
                .iter()
                .map(|(seq, entry)| (*seq, entry.clone()))
                .collect();
            let mut by_target: BTreeMap<NodeId, Vec<(u64, OutboxEntry)>> = BTreeMap::new();
            for (seq, entry) in pending {
                by_target
                    .entry(entry.target)
                    .or_default()
                    .push((seq, entry));
            }
            let rounds = by_target.into_values().map(|entries| {
                let service = self.clone();
                async move {
                    // In order per target, up to OUTBOX_CONCURRENCY at a time
                    // (handling is idempotent and never moves a status back).
                    for chunk in entries.chunks(OUTBOX_CONCURRENCY) {
                        let results = futures::future::join_all(
                            chunk.iter().map(|(_, entry)| service.deliver_once(entry)),
                        )
                        .await;
                        let mut delivered = true;
                        for ((seq, entry), result) in chunk.iter().zip(results) {
                            match result {
                                Ok(()) => service.remove_outbox(*seq),
                                Err(error) if is_transient(&error) => {
                                    tracing::debug!(target = %entry.target, %error.message, "payment message not delivered yet");
                                    delivered = false;
                                }
                                Err(error) => {
                                    tracing::warn!(target = %entry.target, %error.message, "payment message refused; dropping it");
                                    service.remove_outbox(*seq);
                                }
                            }
                        }
                        if !delivered {
                            return false;
                        }
                    }
                    true
                }
            });
            let all_delivered = futures::future::join_all(rounds)
                .await
                .into_iter()
                .all(|delivered| delivered);
            let wait = if all_delivered {
                backoff = FIRST_BACKOFF;
                None
            } else {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                Some(wait)
            };
            let notified = self.inner.outbox_changed.notified();
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = notified, if wait.is_none() => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::ZERO)), if wait.is_some() => {}
            }
        }
    }

    fn remove_outbox(&self, seq: u64) {
        let mut state = self.lock();
        if let Err(error) = self.inner.tree.remove(format!("out/{seq:020}").as_bytes()) {
            tracing::error!(%error, "removing a delivered payment message failed");
            return;
        }
        state.outbox.remove(&seq);
    }

    /// `/public/payment`: what other nodes' payment services may ask of us.
    fn public_endpoint(&self) -> ServiceEndpoint {
        let on_debit_note = self.clone();
        let on_invoice = self.clone();
        let on_accept_note = self.clone();
        let on_reject_note = self.clone();
        let on_accept_invoice = self.clone();
        let on_reject_invoice = self.clone();
        let on_payment = self.clone();
        ServiceEndpoint::new()
            .on(move |caller, SendDebitNote(note)| {
                let service = on_debit_note.clone();
                async move {
                    service.receive_debit_note(service.caller_id(caller), note)?;
                    service.durable().await
                }
            })
            .on(move |caller, SendInvoice(invoice)| {
                let service = on_invoice.clone();
                async move {
                    service.receive_invoice(service.caller_id(caller), invoice)?;
                    service.durable().await
                }
            })
            .on(move |caller, message: AcceptDebitNote| {
                let service = on_accept_note.clone();
                async move {
                    service.check_issued_note(service.caller_id(caller), &message.debit_note_id)?;
                    service
                        .update_debit_note(
                            &message.debit_note_id,
                            DocumentStatus::Accepted,
                            Some((PaymentEventType::DebitNoteAcceptedEvent, None)),
                        )
                        .map(|_| ())?;
                    service.durable().await
                }
            })
            .on(move |caller, message: RejectDebitNote| {
                let service = on_reject_note.clone();
                async move {
                    service.check_issued_note(service.caller_id(caller), &message.debit_note_id)?;
                    service
                        .update_debit_note(
                            &message.debit_note_id,
                            DocumentStatus::Rejected,
                            Some((
                                PaymentEventType::DebitNoteRejectedEvent,
                                Some(message.rejection),
                            )),
                        )
                        .map(|_| ())?;
                    service.durable().await
                }
            })
            .on(move |caller, message: AcceptInvoice| {
                let service = on_accept_invoice.clone();
                async move {
                    service.check_issued_invoice(service.caller_id(caller), &message.invoice_id)?;
                    service
                        .update_invoice(
                            &message.invoice_id,
                            DocumentStatus::Accepted,
                            Some((PaymentEventType::InvoiceAcceptedEvent, None)),
                        )
                        .map(|_| ())?;
                    service.durable().await
                }
            })
            .on(move |caller, message: RejectInvoice| {
                let service = on_reject_invoice.clone();
                async move {
                    service.check_issued_invoice(service.caller_id(caller), &message.invoice_id)?;
                    service
                        .update_invoice(
                            &message.invoice_id,
                            DocumentStatus::Rejected,
                            Some((
                                PaymentEventType::InvoiceRejectedEvent,
                                Some(message.rejection),
                            )),
                        )
                        .map(|_| ())?;
                    service.durable().await
                }
            })
            .on(move |caller, message: SendPayment| {
                let service = on_payment.clone();
                async move {
                    service
                        .receive_payment(service.caller_id(caller), message)
                        .await?;
                    service.durable().await
                }
            })
    }

    /// Only the recipient of a debit note we issued may accept or reject it.
    fn check_issued_note(&self, caller: NodeId, id: &str) -> Result<(), GolemError> {
        let note = self.debit_note(id)?;
        if note.issuer_id != self.inner.node_id || note.recipient_id != caller {
            return Err(GolemError::forbidden(format!(
                "{caller} is not the recipient of debit note {id}"
            )));
        }
        Ok(())
    }

    fn check_issued_invoice(&self, caller: NodeId, id: &str) -> Result<(), GolemError> {
        let invoice = self.invoice(id)?;
        if invoice.issuer_id != self.inner.node_id || invoice.recipient_id != caller {
            return Err(GolemError::forbidden(format!(
                "{caller} is not the recipient of invoice {id}"
            )));
        }
        Ok(())
    }
}

/// An allocation is expired once its timeout has passed.
fn is_expired(allocation: &Allocation, now: DateTime<Utc>) -> bool {
    allocation.timeout.is_some_and(|timeout| timeout <= now)
}

/// Failures worth retrying: the node is unreachable or slow, or its payment
/// service is not bound yet.
fn is_transient(error: &GolemError) -> bool {
    error.is_transient()
}

#[cfg(test)]
mod pending_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;
