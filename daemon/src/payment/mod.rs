//! Payment service: allocations, debit notes, invoices, payments and their
//! events. The provider's node issues debit notes and invoices and sends them to
//! the requestor's node (`/net/<requestor>/public/payment`); the requestor's node
//! accepts them against an allocation and sends acceptances, rejections and
//! payments back through the persisted outbox (`crate::outbox`).
//!
//! The records are owned by one supervised actor, [`PaymentActor`], on its own
//! thread ("payment"); [`PaymentService`] is the handle the REST API and the
//! daemon use (its methods send the actor messages). Every record lives in the
//! sled `payment` tree and every change is one batch flushed before the reply,
//! so a restart (of the daemon, or of the actor after a panic) loses nothing
//! and never charges twice. Handling of remote messages is idempotent and only
//! the agreement's counterparty is heard. It must never await a remote call
//! while it holds the state, nor use floats for money.
//!
//! Code map: `actor.rs` (the actor, its timers), `messages.rs` (REST
//! operations as messages), `public.rs` / `local.rs` (bus endpoints),
//! `state.rs` (records and storage), `allocations.rs`, `documents.rs` (what
//! debit notes and invoices share), `debit_notes.rs`, `invoices.rs`,
//! `settlement.rs` (pending payments, drivers), `due.rs` (payment
//! deadlines, late payers), `incoming.rs` (payments received), `verify.rs` (checks of incoming documents), `events.rs`,
//! `status.rs`, `retention.rs` (what leaves memory), `outbox.rs`, `rest.rs`,
//! `cli.rs`, the drivers (`driver.rs`, `erc20/`, `chain_check.rs`).

mod actor;
mod allocations;
mod chain_check;
pub mod cli;
mod debit_notes;
mod documents;
mod driver;
mod due;
pub mod erc20;
mod events;
mod incoming;
mod invoices;
mod lifecycle;
mod local;
mod messages;
mod outbox;
mod public;
pub mod rest;
mod retention;
mod settlement;
mod state;
mod status;
mod totals;
mod verify;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};
use golem_bus::actor::{deliver, ServiceArbiter, Supervised};
use golem_bus::Router;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

pub use actor::PaymentActor;
pub use driver::{Drivers, PayOutcome, PayProgress, PaymentDriver, Platform, DEFAULT_PLATFORM};
pub use erc20::{Erc20Driver, Erc20Network, Erc20NetworkOverride};
pub use state::PaymentOrder;
pub use state::{InvoiceRecords, Retention};

use crate::ports::{Agreements, CreatedActivities, HostedActivities};
use crate::store::Store;
use messages::*;
use state::{flush, Deps, TREE};

/// The payment part of the daemon config (`[payment.erc20.<network>]` in TOML,
/// `GOLEM_ERC20_<NETWORK>_{RPC_URL,CHAIN_ID,TOKEN,CONFIRMATIONS,MAX_FEE_PER_GAS}`
/// in the env).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PaymentConfig {
    /// Overrides of the built-in erc20 networks, by network name.
    pub erc20: BTreeMap<String, Erc20NetworkOverride>,
}

type PaymentSupervisor = Supervised<PaymentActor>;

/// Handle to the payment service. Cheap to clone.
#[derive(Clone)]
pub struct PaymentService {
    actor: PaymentSupervisor,
    deps: Arc<Deps>,
    /// The actor's thread, stopped by [`PaymentService::stop`].
    arbiter: ServiceArbiter,
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
    retention: Retention,
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
    retention: Retention,
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
            retention,
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
    // Loaded here so a broken store fails the start; later instances load in `started()`.
    let loaded = lifecycle::load(&tree)?;
    let (events_changed, _) = watch::channel(0);
    let deps = Arc::new(Deps {
        node_id,
        router: router.clone(),
        agreements,
        activities: setup.activities,
        requestor_activities: setup.requestor_activities,
        drivers: Drivers::new(drivers),
        tree,
        events_changed,
        settled,
        erc20: erc20_driver,
        retention: setup.retention,
    });
    let arbiter = ServiceArbiter::current_or_spawn("payment").map_err(|error| {
        GolemError::internal(format!("cannot start the payment thread: {error}"))
    })?;
    let first = Mutex::new(Some(loaded));
    let factory_deps = deps.clone();
    let actor = Supervised::start("payment", arbiter.handle(), move || {
        let loaded = first
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        PaymentActor::new(factory_deps.clone(), loaded)
    });
    router.bind(PAYMENT_PUBLIC_SERVICE, public::endpoint(&actor))?;
    router.bind(PAYMENT_LOCAL_SERVICE, local::endpoint(&actor))?;
    Ok(PaymentService {
        actor,
        deps,
        arbiter,
    })
}

impl PaymentService {
    /// Stop the actor (not restarted after this) and its thread, and the drivers.
    pub fn stop(&self) {
        self.actor.stop();
        if let Some(erc20) = &self.deps.erc20 {
            erc20.stop();
        }
        self.arbiter.stop();
    }

    pub fn node_id(&self) -> NodeId {
        self.deps.node_id
    }

    /// How many times the actor was started again after dying.
    pub fn restarts(&self) -> u64 {
        self.actor.restarts()
    }

    /// Fault injection for tests: the actor panics (and is started again).
    #[doc(hidden)]
    pub async fn crash_for_test(&self) {
        let _ = deliver(&self.actor, CrashForTest {}).await;
    }

    async fn ask<M, T>(&self, message: M) -> Result<T, GolemError>
    where
        M: Message<Result = Result<T, GolemError>> + Send + 'static,
        T: Send + 'static,
        PaymentActor: actix::Handler<M>,
    {
        deliver(&self.actor, message).await?
    }

    async fn read<M, T>(&self, message: M) -> Result<T, GolemError>
    where
        M: Message<Result = T> + Send + 'static,
        T: Send + 'static,
        PaymentActor: actix::Handler<M>,
    {
        deliver(&self.actor, message).await
    }

    /// Flush committed changes to disk (every change already waits for it).
    pub async fn durable(&self) -> Result<(), GolemError> {
        flush(self.deps.tree.clone()).await
    }

    /// Create an allocation from the client's body (yapapi's and golem-js's shapes).
    pub async fn create_allocation(
        &self,
        body: &serde_json::Value,
    ) -> Result<Allocation, GolemError> {
        self.ask(CreateAllocation { body: body.clone() }).await
    }

    pub async fn allocations(&self) -> Result<Vec<Allocation>, GolemError> {
        self.read(ListAllocations {}).await
    }

    pub async fn allocation(&self, id: &str) -> Result<Allocation, GolemError> {
        self.ask(GetAllocation { id: id.to_string() }).await
    }

    /// Amend a live allocation: `totalAmount` (not below spent) and/or `timeout`.
    pub async fn amend_allocation(
        &self,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Allocation, GolemError> {
        self.ask(AmendAllocation {
            id: id.to_string(),
            body: body.clone(),
        })
        .await
    }

    /// Release: what is left is freed; the allocation can no longer be charged.
    pub async fn release_allocation(&self, id: &str) -> Result<(), GolemError> {
        self.ask(ReleaseAllocation { id: id.to_string() }).await
    }

    /// Release every live allocation (`payment release-allocations`); returns their ids.
    pub async fn release_all_allocations(&self) -> Result<Vec<String>, GolemError> {
        self.ask(ReleaseAllAllocations {}).await
    }

    /// Properties and constraints a demand needs to be paid from `ids`.
    pub async fn demand_decorations(&self, ids: &[String]) -> Result<MarketDecoration, GolemError> {
        self.ask(GetDemandDecorations { ids: ids.to_vec() }).await
    }

    /// Provider: issue a debit note (status ISSUED); amounts never decrease per activity.
    pub async fn issue_debit_note(&self, new: NewDebitNote) -> Result<DebitNote, GolemError> {
        self.ask(IssueDebitNote { new }).await
    }

    pub async fn debit_notes(&self) -> Result<Vec<DebitNote>, GolemError> {
        self.read(ListDocuments::<DebitNote>(PhantomData)).await
    }

    pub async fn debit_note(&self, id: &str) -> Result<DebitNote, GolemError> {
        self.ask(GetDocument::<DebitNote>(id.to_string(), PhantomData))
            .await
    }

    /// Provider: deliver an issued debit note to the requestor (retried), then RECEIVED.
    pub async fn send_debit_note(&self, id: &str) -> Result<DebitNote, GolemError> {
        self.ask(SendDocument::<DebitNote>(id.to_string(), PhantomData))
            .await
    }

    /// Issuer: cancel a debit note not yet accepted; a sent one only when
    /// its recipient agrees (Conflict when it accepted it meanwhile).
    pub async fn cancel_debit_note(&self, id: &str) -> Result<(), GolemError> {
        self.ask(CancelDocument::<DebitNote>(id.to_string(), PhantomData))
            .await
    }

    /// Issuer: cancel an invoice not yet accepted (as [`Self::cancel_debit_note`]).
    pub async fn cancel_invoice(&self, id: &str) -> Result<(), GolemError> {
        self.ask(CancelDocument::<Invoice>(id.to_string(), PhantomData))
            .await
    }

    /// Payments of the agreement of a debit note (`invoice` false) or invoice.
    pub async fn document_payments(
        &self,
        id: &str,
        invoice: bool,
    ) -> Result<Vec<Payment>, GolemError> {
        self.ask(DocumentPayments {
            id: id.to_string(),
            invoice,
        })
        .await
    }

    /// Requestor: accept a received debit note, charging the allocation.
    pub async fn accept_debit_note(
        &self,
        id: &str,
        acceptance: &Acceptance,
    ) -> Result<(), GolemError> {
        self.ask(AcceptDebitNoteOp {
            id: id.to_string(),
            acceptance: acceptance.clone(),
        })
        .await
    }

    /// Requestor: reject a received debit note.
    pub async fn reject_debit_note(
        &self,
        id: &str,
        rejection: Rejection,
    ) -> Result<(), GolemError> {
        self.ask(RejectDocument::<DebitNote>(
            id.to_string(),
            rejection,
            PhantomData,
        ))
        .await
    }

    /// Provider: issue the invoice of an agreement (one per agreement; the
    /// same invoice again answers the existing one, other contents Conflict).
    pub async fn issue_invoice(&self, new: NewInvoice) -> Result<Invoice, GolemError> {
        self.ask(IssueInvoice { new }).await
    }

    pub async fn invoices(&self) -> Result<Vec<Invoice>, GolemError> {
        self.read(ListDocuments::<Invoice>(PhantomData)).await
    }

    pub async fn invoice(&self, id: &str) -> Result<Invoice, GolemError> {
        self.ask(GetDocument::<Invoice>(id.to_string(), PhantomData))
            .await
    }

    /// Provider: deliver an issued invoice to the requestor (retried), then RECEIVED.
    pub async fn send_invoice(&self, id: &str) -> Result<Invoice, GolemError> {
        self.ask(SendDocument::<Invoice>(id.to_string(), PhantomData))
            .await
    }

    /// Requestor: accept a received invoice, charge the allocation and pay it.
    pub async fn accept_invoice(
        &self,
        id: &str,
        acceptance: &Acceptance,
    ) -> Result<(), GolemError> {
        self.ask(AcceptInvoiceOp {
            id: id.to_string(),
            acceptance: acceptance.clone(),
        })
        .await
    }

    /// Requestor: reject a received invoice.
    pub async fn reject_invoice(&self, id: &str, rejection: Rejection) -> Result<(), GolemError> {
        self.ask(RejectDocument::<Invoice>(
            id.to_string(),
            rejection,
            PhantomData,
        ))
        .await
    }

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

    /// [`events`](Self::events) of documents whose agreement has
    /// `app_session_id`. Waits outside the actor, on the events watch.
    pub async fn events_for_session(
        &self,
        invoices: bool,
        after: Option<DateTime<Utc>>,
        timeout: Duration,
        max_events: usize,
        app_session_id: Option<&str>,
    ) -> Vec<PaymentEvent> {
        let mut changed = self.deps.events_changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let read = ReadEvents {
            invoices,
            after,
            limit: if app_session_id.is_some() {
                usize::MAX
            } else {
                max_events
            },
            with_agreements: app_session_id.is_some(),
        };
        let look = || async move {
            // A failed read counts as nothing yet: the client waits on.
            let candidates = self.read(ReadEvents { ..read }).await.unwrap_or_default();
            // Agreements are read outside the actor.
            let found: Vec<PaymentEvent> = candidates
                .into_iter()
                .filter(|(_, agreement_id)| match app_session_id {
                    None => true,
                    Some(session) => agreement_id
                        .as_deref()
                        .and_then(|id| self.deps.agreements.agreement(id).ok())
                        .is_some_and(|agreement| {
                            agreement.app_session_id.as_deref() == Some(session)
                        }),
                })
                .map(|(event, _)| event)
                .take(max_events)
                .collect();
            Ok(found)
        };
        crate::long_poll::until_found(deadline, &mut changed, look)
            .await
            .unwrap_or_default()
    }

    pub async fn payments(&self) -> Result<Vec<Payment>, GolemError> {
        self.read(ListPayments {}).await
    }

    pub async fn payment(&self, id: &str) -> Result<Payment, GolemError> {
        self.ask(GetPayment { id: id.to_string() }).await
    }

    /// Pending payments (accepted invoices their driver has not settled yet).
    pub async fn pending_payments(&self) -> Result<Vec<PaymentOrder>, GolemError> {
        self.read(ListPendingPayments {}).await
    }

    /// `payment status`.
    pub async fn status_report(&self) -> Result<PaymentStatusReport, GolemError> {
        self.read(GetStatusReport {}).await
    }

    /// Provider: accepted invoices not paid within the agreement's payment
    /// timeout (still unpaid, or paid late).
    pub async fn late_payments(&self) -> Result<Vec<PaymentDue>, GolemError> {
        self.read(GetLatePayments {}).await
    }

    /// Accounts of this node: one per platform, sending only where a driver runs.
    pub fn accounts(&self, requestor: bool) -> Vec<Account> {
        status::accounts(&self.deps, requestor)
    }

    /// What `payment driver list` shows.
    pub fn drivers_report(&self) -> Vec<serde_json::Value> {
        status::drivers_report(&self.deps)
    }
}

#[cfg(test)]
impl PaymentService {
    /// Hand `message` to the actor as if `caller` had sent it over the bus.
    async fn incoming<M>(&self, caller: NodeId, message: M) -> Result<M::Reply, GolemError>
    where
        M: golem_model::bus::BusMessage,
        PaymentActor: actix::Handler<golem_bus::actor::Incoming<M>>,
    {
        let caller = if caller == self.deps.node_id {
            golem_bus::Caller::Local
        } else {
            golem_bus::Caller::Remote(caller)
        };
        self.ask(golem_bus::actor::Incoming { caller, message })
            .await
    }

    async fn receive_debit_note(&self, caller: NodeId, note: DebitNote) -> Result<(), GolemError> {
        self.incoming(caller, SendDebitNote(note)).await
    }

    async fn receive_invoice(&self, caller: NodeId, invoice: Invoice) -> Result<(), GolemError> {
        self.incoming(caller, SendInvoice(invoice)).await
    }

    async fn unverified_payments(&self) -> Vec<state::UnverifiedPayment> {
        self.read(ListUnverifiedPayments {})
            .await
            .unwrap_or_default()
    }

    /// Run `f` on the actor (tests of its internals).
    async fn with_actor<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut PaymentActor) -> R + Send + 'static,
    {
        self.read(WithActor(f))
            .await
            .expect("the payment actor answers")
    }

    async fn memory_counts(&self) -> [usize; 6] {
        self.read(MemoryCounts {}).await.unwrap_or_default()
    }

    async fn sweep_retention(&self) {
        let _ = self.read(SweepRetention {}).await;
    }
}

#[cfg(test)]
mod pending_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod verify_tests;
