//! What leaves memory, so a node that runs for months holds its live work and
//! a bounded window of history, not every agreement it ever billed.
//!
//! - Finished agreements: once an agreement's invoice is SETTLED, REJECTED or
//!   CANCELLED, the invoice, the agreement's debit notes and its charges leave
//!   memory when they are older than [`Retention::finished_age`] or beyond the
//!   newest [`Retention::finished_count`] finished agreements. They stay in
//!   sled: `GET /debitNotes/{id}`, `GET /invoices/{id}` and every message
//!   naming them read them there (the lists show what is in memory: clients
//!   fetch documents by id and follow events).
//! - Released allocations: the same bounds, by their last update.
//! - Events: at most [`Retention::events_count`], none older than
//!   [`Retention::events_age`], in memory and in sled (clients long-poll with
//!   `afterTimestamp`; a cursor older than the window reads from its start).
//!
//! The status report keeps counting what left memory through [`Archived`],
//! rebuilt the same way at every start (the sweep runs right after loading).
//! Payments stay in memory: they are what proves a transaction was used.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use golem_model::payment::*;

use super::actor::PaymentActor;
use super::state::Retention;
use super::totals::{add_totals, document_totals};
use crate::store;

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
        self.archive_finished_agreements(retention);
        self.archive_released_allocations(retention);
        self.drop_old_events(retention);
    }

    fn archive_finished_agreements(&mut self, retention: Retention) {
        let finished_invoices: Vec<(chrono::DateTime<Utc>, String)> = self
            .state
            .invoices
            .values()
            .filter(|invoice| finished(invoice.status))
            .map(|invoice| (invoice.timestamp, invoice.agreement_id.clone()))
            .collect();
        if finished_invoices.len() <= retention.finished_count
            && finished_invoices.iter().all(|(at, _)| {
                Utc::now() - *at
                    < chrono::Duration::from_std(retention.finished_age).unwrap_or_default()
            })
        {
            return;
        }
        let leaving = beyond(
            finished_invoices,
            retention.finished_count,
            retention.finished_age,
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
            add_totals(
                &mut self.state.archived.documents,
                document_totals(me, notes.iter(), invoices.iter()),
            );
        }
    }

    fn archive_released_allocations(&mut self, retention: Retention) {
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
        for id in beyond(released, retention.finished_count, retention.finished_age) {
            if let Some(record) = self.state.allocations.remove(&id) {
                *self
                    .state
                    .archived
                    .released_allocations
                    .entry(record.allocation.payment_platform)
                    .or_default() += 1;
            }
        }
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

    /// How many records of each kind are in memory (tests, diagnostics).
    #[cfg(test)]
    pub(super) fn memory_counts(&self) -> [usize; 5] {
        [
            self.state.debit_notes.len(),
            self.state.invoices.len(),
            self.state.allocations.len(),
            self.state.events.len(),
            self.state.charges.len(),
        ]
    }
}
