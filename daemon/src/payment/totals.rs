//! The requested and accepted totals of debit notes and invoices per
//! direction and platform: what `payment status` shows, and what the records
//! that left memory still add to it (kept in [`Archived`](super::state::Archived)).

use std::collections::BTreeMap;

use golem_model::payment::*;
use golem_model::NodeId;

/// Requested and accepted amounts per (outgoing, platform).
pub(super) type DocumentTotals = BTreeMap<(bool, String), (Decimal, Decimal)>;

/// What `notes` and `invoices` (all documents of the agreements they belong
/// to) add to the report: an agreement's invoice, when it has one that stands,
/// replaces its debit notes; otherwise the highest note per activity counts.
pub(super) fn document_totals<'a>(
    me: NodeId,
    notes: impl Iterator<Item = &'a DebitNote>,
    invoices: impl Iterator<Item = &'a Invoice>,
) -> DocumentTotals {
    let mut requested: BTreeMap<(bool, String, String), Decimal> = BTreeMap::new();
    let mut accepted: BTreeMap<(bool, String, String), Decimal> = BTreeMap::new();
    for note in notes {
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
    for invoice in invoices.filter(|invoice| {
        !matches!(
            invoice.status,
            DocumentStatus::Rejected | DocumentStatus::Cancelled
        )
    }) {
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
    let mut totals = DocumentTotals::new();
    for ((outgoing, platform, _), amount) in requested {
        totals.entry((outgoing, platform)).or_default().0 += amount;
    }
    for ((outgoing, platform, _), amount) in accepted {
        totals.entry((outgoing, platform)).or_default().1 += amount;
    }
    totals
}

/// Add `more` to `totals`.
pub(super) fn add_totals(totals: &mut DocumentTotals, more: DocumentTotals) {
    for (key, (requested, accepted)) in more {
        let slot = totals.entry(key).or_default();
        slot.0 += requested;
        slot.1 += accepted;
    }
}
