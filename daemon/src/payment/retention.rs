//! What leaves memory and, later, sled, so a node that runs for months holds
//! its live work and bounded windows of history, not every agreement it ever
//! billed (the windows are the `[retention]` settings, [`Retention`]).
//!
//! - Finished agreements: once an agreement's invoice is SETTLED, REJECTED or
//!   CANCELLED, the invoice, the agreement's debit notes and its charges leave
//!   memory when they are older than `memory_age` or beyond the newest
//!   `memory_count` finished agreements. They stay in sled: `GET
//!   /debitNotes/{id}`, `GET /invoices/{id}` and every message naming them
//!   read them there (the lists show what is in memory: clients fetch
//!   documents by id and follow events).
//! - Released allocations: the same bounds, by their last update.
//! - Payments: the same bounds, by their date, once no invoice they pay
//!   towards is still open in memory (a partial payment counts towards the
//!   rest). Looked up by id in sled; an erc20 transaction keeps its mark
//!   (`txused/`) so it never pays twice.
//! - Events: at most `events_count`, none older than `events_age`, in memory
//!   and in sled (clients long-poll with `afterTimestamp`; a cursor older than
//!   the window reads from its start).
//! - History: what left memory is scheduled (`prune/<finished>/<what>`) and
//!   leaves sled `history_age` after it finished, or sooner once the schedule
//!   holds more than `history_count` entries (the earliest finished go
//!   first), its amounts moving into the stored totals (`pruned/totals`).
//!   Open documents are never scheduled.
//!
//! The status report keeps counting what left memory through [`Archived`],
//! rebuilt the same way at every start (the sweep runs right after loading),
//! and what left sled through the stored totals.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use golem_model::payment::*;
use golem_model::GolemError;

use super::actor::PaymentActor;
use super::state::{prune_key, Archived, PruneEntry, Retention, StoredTotals, PRUNED_KEY};
use super::totals::document_totals;
use crate::store;

/// Prune entries handled per sweep, so one sweep stays short.
const PRUNE_BATCH: usize = 1_000;

/// How often the actor sweeps.
pub(super) const SWEEP_PERIOD: Duration = Duration::from_secs(10);

fn finished(status: DocumentStatus) -> bool {
    matches!(
        status,
        DocumentStatus::Settled | DocumentStatus::Rejected | DocumentStatus::Cancelled
    )
}

/// The keys to drop: those beyond the newest `count` or older than the cutoff.
fn beyond<K: Clone>(
    mut items: Vec<(chrono::DateTime<Utc>, K)>,
    retention_count: usize,
    age: Duration,
) -> Vec<K> {
    items.sort_by_key(|item| std::cmp::Reverse(item.0));
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
    items
        .into_iter()
        .enumerate()
        .filter(|(rank, (at, _))| *rank >= retention_count || *at < cutoff)
        .map(|(_, (_, key))| key)
        .collect()
}

impl PaymentActor {
    /// Move finished records out of memory and old events out of memory and sled.
    pub(super) fn sweep_retention(&mut self) {
        let retention = self.deps.retention;
        let mut schedule = PruneSchedule::new(self.deps.tree.clone());
        self.archive_finished_agreements(retention, &mut schedule);
        self.archive_released_allocations(retention, &mut schedule);
        self.archive_payments(retention, &mut schedule);
        let added = schedule.added;
        match self.deps.tree.apply_batch(schedule.batch) {
            Ok(()) => self.state.scheduled_history += added,
            Err(error) => {
                tracing::warn!(%error, "scheduling finished payment records for pruning failed")
            }
        }
        self.drop_old_events(retention);
        self.prune_history(retention);
        self.log_sizes();
    }

    /// One debug line per sweep with what payment holds in memory, so that an
    /// operator (or a soak) sees which part grows with the jobs
    /// (`RUST_LOG=golem_daemon::payment=debug`).
    fn log_sizes(&self) {
        let state = &self.state;
        tracing::debug!(
            orders = state.orders.len(),
            allocations = state.allocations.len(),
            debit_notes = state.debit_notes.len(),
            invoices = state.invoices.len(),
            charges = state.charges.len(),
            payments = state.payments.len(),
            events = state.events.len(),
            unverified = state.unverified.len(),
            payment_dues = state.payment_dues.len(),
            rechecking = self.rechecking.len(),
            overdue_warned = self.overdue_warned.len(),
            "payment sizes"
        );
    }

    fn archive_finished_agreements(&mut self, retention: Retention, schedule: &mut PruneSchedule) {
        let finished_invoices: Vec<(chrono::DateTime<Utc>, String)> = self
            .state
            .invoices
            .values()
            .filter(|invoice| finished(invoice.status))
            .map(|invoice| (invoice.timestamp, invoice.agreement_id.clone()))
            .collect();
        if finished_invoices.len() <= retention.memory_count
            && finished_invoices.iter().all(|(at, _)| {
                Utc::now() - *at
                    < chrono::Duration::from_std(retention.memory_age).unwrap_or_default()
            })
        {
            return;
        }
        let leaving = beyond(
            finished_invoices,
            retention.memory_count,
            retention.memory_age,
        );
        let mut notes_of: HashMap<&str, Vec<String>> = HashMap::new();
        for note in self.state.debit_notes.values() {
            notes_of
                .entry(note.agreement_id.as_str())
                .or_default()
                .push(note.debit_note_id.clone());
        }
        let mut notes_leaving: Vec<(String, Vec<String>)> = Vec::new();
        for agreement_id in &leaving {
            let notes = notes_of.remove(agreement_id.as_str()).unwrap_or_default();
            notes_leaving.push((agreement_id.clone(), notes));
        }
        let me = self.deps.node_id;
        for (agreement_id, note_ids) in notes_leaving {
            let notes: Vec<DebitNote> = note_ids
                .iter()
                .filter_map(|id| self.state.debit_notes.remove(id))
                .collect();
            let invoice_ids: Vec<String> = self
                .state
                .invoices
                .values()
                .filter(|invoice| invoice.agreement_id == agreement_id)
                .map(|invoice| invoice.invoice_id.clone())
                .collect();
            let invoices: Vec<Invoice> = invoice_ids
                .iter()
                .filter_map(|id| self.state.invoices.remove(id))
                .collect();
            self.state.charges.remove(&agreement_id);
            let totals = Archived {
                documents: document_totals(me, notes.iter(), invoices.iter()),
                ..Archived::default()
            };
            self.state.archived.add(&totals);
            let mut keys: Vec<String> = notes
                .iter()
                .map(|note| format!("dn/{}", note.debit_note_id))
                .collect();
            keys.extend(
                invoices
                    .iter()
                    .map(|invoice| format!("inv/{}", invoice.invoice_id)),
            );
            keys.push(super::state::invoice_of_key(&agreement_id));
            keys.push(format!("charge/{agreement_id}"));
            let finished = invoices
                .iter()
                .map(|invoice| invoice.timestamp)
                .max()
                .unwrap_or_else(Utc::now);
            schedule.add(
                finished,
                &format!("agreement/{agreement_id}"),
                keys,
                &totals,
            );
        }
    }

    fn archive_released_allocations(&mut self, retention: Retention, schedule: &mut PruneSchedule) {
        let released: Vec<(chrono::DateTime<Utc>, String)> = self
            .state
            .allocations
            .values()
            .filter(|record| record.released)
            .map(|record| {
                (
                    record.allocation.updated_ts,
                    record.allocation.allocation_id.clone(),
                )
            })
            .collect();
        for id in beyond(released, retention.memory_count, retention.memory_age) {
            if let Some(record) = self.state.allocations.remove(&id) {
                let allocation = record.allocation;
                let mut totals = Archived::default();
                totals
                    .released_allocations
                    .insert(allocation.payment_platform.clone(), 1);
                self.state.archived.add(&totals);
                schedule.add(
                    allocation.updated_ts,
                    &format!("allocation/{id}"),
                    vec![format!("alloc/{id}")],
                    &totals,
                );
            }
        }
    }

    /// Payments leave memory by the same bounds, once nothing they pay
    /// towards is open: an invoice still awaiting the rest keeps them.
    fn archive_payments(&mut self, retention: Retention, schedule: &mut PruneSchedule) {
        if self.state.payments.len() <= retention.memory_count
            && self.state.payments.first().is_none_or(|oldest| {
                Utc::now() - oldest.timestamp
                    < chrono::Duration::from_std(retention.memory_age).unwrap_or_default()
            })
        {
            return;
        }
        let open: std::collections::HashSet<&str> = self
            .state
            .invoices
            .values()
            .filter(|invoice| !finished(invoice.status))
            .map(|invoice| invoice.agreement_id.as_str())
            .collect();
        let candidates: Vec<(chrono::DateTime<Utc>, String)> = self
            .state
            .payments
            .iter()
            .filter(|payment| {
                !payment
                    .agreement_payments
                    .iter()
                    .any(|part| open.contains(part.agreement_id.as_str()))
            })
            .map(|payment| (payment.timestamp, payment.payment_id.clone()))
            .collect();
        let leaving: std::collections::HashSet<String> =
            beyond(candidates, retention.memory_count, retention.memory_age)
                .into_iter()
                .collect();
        if leaving.is_empty() {
            return;
        }
        let me = self.deps.node_id;
        let mut kept = Vec::with_capacity(self.state.payments.len());
        for payment in std::mem::take(&mut self.state.payments) {
            if !leaving.contains(&payment.payment_id) {
                kept.push(payment);
                continue;
            }
            let mut totals = Archived::default();
            for outgoing in [true, false] {
                let mine = if outgoing {
                    payment.payer_id == me
                } else {
                    payment.payee_id == me
                };
                if mine {
                    totals
                        .paid
                        .insert((outgoing, payment.payment_platform.clone()), payment.amount);
                }
            }
            self.state.archived.add(&totals);
            schedule.add(
                payment.timestamp,
                &format!("payment/{}", payment.payment_id),
                vec![format!("pay/{}", payment.payment_id)],
                &totals,
            );
        }
        self.state.payments = kept;
    }

    /// Remove from sled what finished more than `history_age` ago, and the
    /// earliest finished beyond the newest `history_count` entries, moving
    /// their amounts from the memory-left totals into the stored ones, in one
    /// batch.
    fn prune_history(&mut self, retention: Retention) {
        let beyond_count = self
            .state
            .scheduled_history
            .saturating_sub(retention.history_count);
        let cutoff = prune_key(
            Utc::now() - chrono::Duration::from_std(retention.history_age).unwrap_or_default(),
            "",
        );
        let mut batch = sled::Batch::default();
        let mut moved = Archived::default();
        let mut pruned = 0;
        for (rank, entry) in self
            .deps
            .tree
            .scan_prefix("prune/")
            .take(PRUNE_BATCH)
            .enumerate()
        {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "reading the payment prune schedule failed");
                    return;
                }
            };
            if rank >= beyond_count && key.as_ref() >= cutoff.as_bytes() {
                break;
            }
            batch.remove(key);
            match store::decode::<PruneEntry>(super::state::TREE, &value) {
                Ok(entry) => {
                    for record in entry.keys {
                        batch.remove(record.as_bytes());
                    }
                    moved.add(&entry.totals.into());
                }
                Err(error) => tracing::warn!(%error, "dropping a corrupt prune entry"),
            }
            pruned += 1;
        }
        if pruned == 0 {
            return;
        }
        let mut stored = self.state.pruned.clone();
        stored.add(&moved);
        match store::encode(&StoredTotals::from(&stored)) {
            Ok(bytes) => batch.insert(PRUNED_KEY, bytes),
            Err(error) => {
                tracing::warn!(%error, "cannot encode the pruned payment totals");
                return;
            }
        }
        if let Err(error) = self.deps.tree.apply_batch(batch) {
            tracing::warn!(%error, "pruning old payment records failed");
            return;
        }
        self.state.archived.subtract(&moved);
        self.state.pruned = stored;
        self.state.scheduled_history = self.state.scheduled_history.saturating_sub(pruned);
        tracing::debug!(pruned, "old payment records left the store");
    }

    fn drop_old_events(&mut self, retention: Retention) {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(retention.events_age).unwrap_or_default();
        let mut batch = sled::Batch::default();
        let mut dropped = 0;
        while let Some((seq, event)) = self.state.events.front() {
            if self.state.events.len() <= retention.events_count && event.event_date >= cutoff {
                break;
            }
            batch.remove(format!("evt/{seq:020}").as_bytes());
            self.state.events.pop_front();
            dropped += 1;
        }
        if dropped > 0 {
            if let Err(error) = self
                .deps
                .tree
                .apply_batch(batch)
                .map_err(store::StoreError::from)
            {
                tracing::warn!(%error, "removing old payment events from the store failed");
            }
            tracing::debug!(dropped, "old payment events dropped");
        }
    }

    /// A payment from memory, or from sled once it left memory.
    pub(super) fn payment(&self, id: &str) -> Result<Payment, GolemError> {
        if let Some(payment) = self
            .state
            .payments
            .iter()
            .find(|payment| payment.payment_id == id)
        {
            return Ok(payment.clone());
        }
        self.deps
            .read(&format!("pay/{id}"))?
            .ok_or_else(|| GolemError::not_found(format!("unknown payment {id}")))
    }

    /// How many records of each kind are in memory (tests, diagnostics).
    #[cfg(test)]
    pub(super) fn memory_counts(&self) -> [usize; 6] {
        [
            self.state.debit_notes.len(),
            self.state.invoices.len(),
            self.state.allocations.len(),
            self.state.events.len(),
            self.state.charges.len(),
            self.state.payments.len(),
        ]
    }
}

/// Prune entries for records that left memory, written in one batch.
struct PruneSchedule {
    tree: sled::Tree,
    batch: sled::Batch,
    /// Entries not in sled before (a restart archives what it loaded again).
    added: usize,
}

impl PruneSchedule {
    fn new(tree: sled::Tree) -> PruneSchedule {
        PruneSchedule {
            tree,
            batch: sled::Batch::default(),
            added: 0,
        }
    }

    fn add(
        &mut self,
        finished: chrono::DateTime<Utc>,
        what: &str,
        keys: Vec<String>,
        totals: &Archived,
    ) {
        let entry = PruneEntry {
            keys,
            totals: totals.into(),
        };
        let key = prune_key(finished, what);
        match store::encode(&entry) {
            Ok(bytes) => {
                if !matches!(self.tree.contains_key(key.as_bytes()), Ok(true)) {
                    self.added += 1;
                }
                self.batch.insert(key.as_bytes(), bytes);
            }
            Err(error) => tracing::warn!(%error, "cannot encode a prune entry"),
        }
    }
}
