//! What the payment actor owns and how it is stored: the records in memory
//! ([`State`]), what the actor needs from the rest of the daemon ([`Deps`],
//! shared with the handle and surviving restarts), one change's sled batch
//! ([`Writes`]) and loading everything back from the `payment` tree.
//!
//! Keys of the tree: `alloc/<id>`, `dn/<id>`, `inv/<id>`, `inv-of/<agreement>`
//! (the invoice of an agreement), `charge/<agreement>`, `pay/<id>`,
//! `evt/<seq>`, `seq/`, `order/<payment>`, `verify/<payment>`, `due/<invoice>`, the retention's
//! `prune/<ms>/<what>`, `pruned/totals` and `txused/<transaction>`, and the outbox's
//! `outbox/<seq>` (older builds wrote `out/<seq>`, migrated at load).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use golem_bus::Router;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::totals::DocumentTotals;
use super::{Drivers, Erc20Driver};
use crate::ports::{Agreements, CreatedActivities, HostedActivities};
use crate::store;

pub(super) const TREE: &str = "payment";

/// An erc20 payment held until its transaction is confirmed on chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct UnverifiedPayment {
    pub message: SendPayment,
    pub received: DateTime<Utc>,
    /// What the check waits for, in words.
    pub status: String,
}

/// The bounds of what stays in memory and in sled (`[retention]`).
pub type Retention = crate::retention::RetentionPolicy;

/// Totals of records no longer in memory (`archived`, rebuilt at every load
/// from what sled still holds) or no longer in sled (`pruned`, stored under
/// [`PRUNED_KEY`]), for the status report.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Archived {
    pub documents: DocumentTotals,
    pub released_allocations: BTreeMap<String, usize>,
    /// Payments per (outgoing, platform).
    pub paid: BTreeMap<(bool, String), Decimal>,
}

/// [`Archived`] as JSON (tuple keys are not JSON object keys).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct StoredTotals {
    documents: Vec<((bool, String), (Decimal, Decimal))>,
    released_allocations: BTreeMap<String, usize>,
    paid: Vec<((bool, String), Decimal)>,
}

impl From<&Archived> for StoredTotals {
    fn from(totals: &Archived) -> Self {
        StoredTotals {
            documents: totals.documents.clone().into_iter().collect(),
            released_allocations: totals.released_allocations.clone(),
            paid: totals.paid.clone().into_iter().collect(),
        }
    }
}

impl From<StoredTotals> for Archived {
    fn from(stored: StoredTotals) -> Self {
        Archived {
            documents: stored.documents.into_iter().collect(),
            released_allocations: stored.released_allocations,
            paid: stored.paid.into_iter().collect(),
        }
    }
}

impl Archived {
    pub fn add(&mut self, more: &Archived) {
        super::totals::add_totals(&mut self.documents, more.documents.clone());
        for (platform, count) in &more.released_allocations {
            *self
                .released_allocations
                .entry(platform.clone())
                .or_default() += count;
        }
        for (key, amount) in &more.paid {
            *self.paid.entry(key.clone()).or_default() += amount;
        }
    }

    /// Take away what `less` (a part of these totals) added.
    pub fn subtract(&mut self, less: &Archived) {
        for (key, (requested, accepted)) in &less.documents {
            if let Some(slot) = self.documents.get_mut(key) {
                slot.0 -= requested;
                slot.1 -= accepted;
            }
        }
        for (platform, count) in &less.released_allocations {
            if let Some(slot) = self.released_allocations.get_mut(platform) {
                *slot = slot.saturating_sub(*count);
            }
        }
        for (key, amount) in &less.paid {
            if let Some(slot) = self.paid.get_mut(key) {
                *slot -= amount;
            }
        }
    }
}

/// Where the totals of pruned records are kept.
pub(super) const PRUNED_KEY: &str = "pruned/totals";

/// Records that left memory, to be removed from sled once the history window
/// has passed (`prune/<finished ms>/<what>`): their keys and what they add to
/// the status report.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct PruneEntry {
    pub keys: Vec<String>,
    pub totals: StoredTotals,
}

/// The key of a prune entry: ordered by when the records finished, the same
/// at every start (so scheduling twice overwrites).
pub(super) fn prune_key(finished: DateTime<Utc>, what: &str) -> String {
    let millis = u64::try_from(finished.timestamp_millis()).unwrap_or(0);
    format!("prune/{millis:020}/{what}")
}

/// Stage a payment record and, for an erc20 payment, its transaction mark.
pub(super) fn stage_payment(writes: &mut Writes, payment: &Payment) -> Result<(), GolemError> {
    writes.put(format!("pay/{}", payment.payment_id), payment)?;
    if let Some(key) = transaction_mark(payment) {
        writes.put(key, &payment.payment_id)?;
    }
    Ok(())
}

/// The transaction mark of an erc20 payment (none for other drivers).
fn transaction_mark(payment: &Payment) -> Option<String> {
    super::Platform::parse(&payment.payment_platform)
        .is_ok_and(|platform| platform.driver == "erc20")
        .then(|| transaction_key(&payment.details))
}

/// The key that marks an erc20 transaction as used by a payment to this node,
/// kept when the payment leaves sled so that it cannot pay twice.
pub(super) fn transaction_key(details: &str) -> String {
    format!("txused/{}", details.trim().to_ascii_lowercase())
}

/// An accepted invoice whose payment a driver is still carrying out.
pub type PaymentOrder = PendingPayment;

/// An allocation and whether it was released.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AllocationRecord {
    pub allocation: Allocation,
    pub released: bool,
}

/// What the requestor has charged to allocations for one agreement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct AgreementCharges {
    /// Highest accepted debit-note amount per activity.
    pub by_activity: BTreeMap<String, Decimal>,
    /// Once the invoice is accepted, the agreement costs exactly its amount.
    pub invoice: Option<Decimal>,
    /// The allocation charged so far (the last one used).
    pub allocation_id: Option<String>,
}

impl AgreementCharges {
    pub fn charged(&self) -> Decimal {
        self.invoice
            .unwrap_or_else(|| self.by_activity.values().copied().sum())
    }
}

/// The records in memory: live work plus a bounded window of finished work
/// (`retention.rs`); everything is in sled.
#[derive(Default)]
pub(super) struct State {
    pub orders: BTreeMap<String, PaymentOrder>,
    pub allocations: HashMap<String, AllocationRecord>,
    pub debit_notes: HashMap<String, DebitNote>,
    pub invoices: HashMap<String, Invoice>,
    pub charges: HashMap<String, AgreementCharges>,
    pub payments: Vec<Payment>,
    /// Events with their sequence number (their key), oldest first.
    pub events: VecDeque<(u64, PaymentEvent)>,
    /// Provider: erc20 payments waiting for their transaction's confirmation.
    pub unverified: BTreeMap<String, UnverifiedPayment>,
    /// Provider: due dates of accepted invoices under a payment timeout (`due.rs`).
    pub payment_dues: BTreeMap<String, PaymentDue>,
    pub next_seq: u64,
    pub last_event: Option<DateTime<Utc>>,
    /// What records that left memory add to the status report.
    pub archived: Archived,
    /// What records that left sled add to it (stored under [`PRUNED_KEY`]).
    pub pruned: Archived,
    /// How many entries the prune schedule (`prune/`) holds, so the
    /// history count costs no scan.
    pub scheduled_history: usize,
}

/// What the payment actor uses besides its state. Shared by every instance
/// of the actor (a restart keeps it) and by the handle.
pub(super) struct Deps {
    pub node_id: NodeId,
    pub router: Router,
    pub agreements: Arc<dyn Agreements>,
    pub activities: Option<Arc<dyn HostedActivities>>,
    /// Requestor: the activities this node created, which debit notes must name.
    pub requestor_activities: Option<Arc<dyn CreatedActivities>>,
    pub drivers: Drivers,
    pub tree: sled::Tree,
    /// Bumped after each committed event; long-polls wait on it.
    pub events_changed: watch::Sender<u64>,
    /// Drivers wake the settle round through it when a payment went through.
    pub settled: Arc<Notify>,
    pub erc20: Option<Erc20Driver>,
    pub retention: Retention,
}

impl Deps {
    /// Apply one change's batch. Replies wait for [`flush`] after it.
    pub fn commit(&self, writes: Writes) -> Result<(), GolemError> {
        self.tree
            .apply_batch(writes.batch)
            .map_err(|error| GolemError::internal(format!("payment store write failed: {error}")))
    }

    pub fn our_address(&self) -> String {
        self.node_id.to_string()
    }

    /// A record from sled (`None` when absent).
    pub fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, GolemError> {
        match self
            .tree
            .get(key.as_bytes())
            .map_err(store::StoreError::from)?
        {
            None => Ok(None),
            Some(bytes) => Ok(Some(store::decode(TREE, &bytes)?)),
        }
    }
}

/// Flush the payment tree to disk. Money records are flushed before anyone is
/// told they exist: a crash right after a reply must not forget an acceptance
/// or a payment. Concurrent callers share flushes.
pub(super) async fn flush(tree: sled::Tree) -> Result<(), GolemError> {
    crate::store::flush_tree(tree)
        .await
        .map_err(|error| GolemError::internal(format!("payment store flush failed: {error}")))
}

/// Pending writes of one change, applied atomically.
pub(super) struct Writes {
    pub batch: sled::Batch,
}

impl Writes {
    pub fn new() -> Writes {
        Writes {
            batch: sled::Batch::default(),
        }
    }
    pub fn put<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), GolemError> {
        self.batch.insert(key.as_bytes(), store::encode(value)?);
        Ok(())
    }
    pub fn remove(&mut self, key: String) {
        self.batch.remove(key.as_bytes());
    }
}

pub(super) fn status_error(what: &str, id: &str, status: DocumentStatus) -> GolemError {
    GolemError::conflict(format!("{what} {id} is {status:?}, it cannot change now").to_lowercase())
}

/// The key of the invoice index of an agreement.
pub(super) fn invoice_of_key(agreement_id: &str) -> String {
    format!("inv-of/{agreement_id}")
}

impl State {
    /// Give the maps of the memory window their final size
    /// ([`crate::retention::presize_window`]).
    pub fn presize(&mut self, memory_count: usize) {
        use crate::retention::presize_window;
        presize_window(&mut self.allocations, memory_count);
        presize_window(&mut self.debit_notes, memory_count);
        presize_window(&mut self.invoices, memory_count);
        presize_window(&mut self.charges, memory_count);
    }

    /// Read every record of `tree`; the outbox is loaded by the caller.
    pub fn load(tree: &sled::Tree) -> Result<State, GolemError> {
        let mut state = State::default();
        let mut indexed: HashMap<String, String> = HashMap::new();
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
                "inv-of" => {
                    let invoice_id: String = store::decode(TREE, &value)?;
                    indexed.insert(id.to_string(), invoice_id);
                }
                "charge" => {
                    let charges: AgreementCharges = store::decode(TREE, &value)?;
                    state.charges.insert(id.to_string(), charges);
                }
                "pay" => state.payments.push(store::decode(TREE, &value)?),
                "evt" => {
                    let seq: u64 = id.parse().unwrap_or(0);
                    state.events.push_back((seq, store::decode(TREE, &value)?));
                }
                "seq" => {
                    state.next_seq = store::decode(TREE, &value)?;
                }
                "order" => {
                    let order: PaymentOrder = store::decode(TREE, &value)?;
                    state.orders.insert(id.to_string(), order);
                }
                "due" => {
                    let record: PaymentDue = store::decode(TREE, &value)?;
                    state.payment_dues.insert(id.to_string(), record);
                }
                "verify" => {
                    let held: UnverifiedPayment = store::decode(TREE, &value)?;
                    state.unverified.insert(id.to_string(), held);
                }
                "pruned" => {
                    let stored: StoredTotals = store::decode(TREE, &value)?;
                    state.pruned = stored.into();
                }
                "prune" => state.scheduled_history += 1, // read by the sweep
                "txused" => {}                           // read by the payment check
                "out" | "outbox" => {}                   // the outbox's
                _ => tracing::warn!(%key, "unknown record in the payment tree"),
            }
        }
        // Invoices of older builds have no index entry yet.
        let mut batch = sled::Batch::default();
        let mut missing = 0;
        for invoice in state.invoices.values() {
            if invoice.status != DocumentStatus::Cancelled
                && !indexed.contains_key(&invoice.agreement_id)
            {
                batch.insert(
                    invoice_of_key(&invoice.agreement_id).as_bytes(),
                    store::encode(&invoice.invoice_id)?,
                );
                missing += 1;
            }
        }
        if missing > 0 {
            tree.apply_batch(batch).map_err(store::StoreError::from)?;
        }
        // Payments of older builds have no transaction mark yet.
        let mut batch = sled::Batch::default();
        let mut missing = 0;
        for payment in &state.payments {
            if let Some(key) = transaction_mark(payment) {
                if !tree
                    .contains_key(key.as_bytes())
                    .map_err(store::StoreError::from)?
                {
                    batch.insert(key.as_bytes(), store::encode(&payment.payment_id)?);
                    missing += 1;
                }
            }
        }
        if missing > 0 {
            tree.apply_batch(batch).map_err(store::StoreError::from)?;
        }
        // Keys are zero-padded, so events load in order.
        state.last_event = state.events.back().map(|(_, event)| event.event_date);
        state.payments.sort_by_key(|payment| payment.timestamp);
        Ok(state)
    }
}

/// The invoices as committed to sled, read-only: the market's
/// [`OpenInvoices`](crate::ports::OpenInvoices) port. Cheap to clone.
#[derive(Clone)]
pub struct InvoiceRecords {
    tree: sled::Tree,
}

impl InvoiceRecords {
    pub fn open(store: &store::Store) -> Result<InvoiceRecords, GolemError> {
        Ok(InvoiceRecords {
            tree: store.tree(TREE)?,
        })
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let bytes = self.tree.get(key.as_bytes()).ok()??;
        store::decode(TREE, &bytes).ok()
    }
}

impl crate::ports::OpenInvoices for InvoiceRecords {
    fn has_open_invoice(&self, agreement_id: &str) -> bool {
        let Some(invoice_id) = self.read::<String>(&invoice_of_key(agreement_id)) else {
            return false;
        };
        self.read::<Invoice>(&format!("inv/{invoice_id}"))
            .is_some_and(|invoice| {
                !matches!(
                    invoice.status,
                    DocumentStatus::Settled | DocumentStatus::Rejected | DocumentStatus::Cancelled
                )
            })
    }
}
