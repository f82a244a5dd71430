//! The requested and accepted totals of debit notes and invoices per
//! direction and platform: what `payment status` shows, and what the records
//! that left memory still add to it (kept in [`Archived`](super::state::Archived)).

use std::collections::{BTreeMap, HashMap};

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
    let stands = |status: DocumentStatus| {
        !matches!(status, DocumentStatus::Rejected | DocumentStatus::Cancelled)
    };
    let accepted = |status: DocumentStatus| {
        matches!(status, DocumentStatus::Accepted | DocumentStatus::Settled)
    };
    // The standing invoice of each (direction, agreement); a later one
    // replaces an earlier one. One pass, so the report costs n log n.
    let mut invoiced: HashMap<(bool, &str), &Invoice> = HashMap::new();
    for invoice in invoices.filter(|invoice| stands(invoice.status)) {
        invoiced.insert(
            (invoice.recipient_id == me, invoice.agreement_id.as_str()),
            invoice,
        );
    }
    // Otherwise the highest standing note per (direction, activity).
    let mut highest: HashMap<(bool, &str, &str), (&str, Decimal, Decimal)> = HashMap::new();
    for note in notes.filter(|note| stands(note.status)) {
        let outgoing = note.recipient_id == me;
        if invoiced.contains_key(&(outgoing, note.agreement_id.as_str())) {
            continue;
        }
        let key = (
            outgoing,
            note.agreement_id.as_str(),
            note.activity_id.as_str(),
        );
        let slot = highest.entry(key).or_insert((
            note.payment_platform.as_str(),
            Decimal::default(),
            Decimal::default(),
        ));
        slot.1 = slot.1.max(note.total_amount_due);
        if accepted(note.status) {
            slot.2 = slot.2.max(note.total_amount_due);
        }
    }
    let mut sums: HashMap<(bool, &str), (Decimal, Decimal)> = HashMap::new();
    let mut add = |outgoing: bool, platform: &'a str, requested: Decimal, accepted: Decimal| {
        let slot = sums.entry((outgoing, platform)).or_default();
        slot.0 += requested;
        slot.1 += accepted;
    };
    for ((outgoing, _), invoice) in invoiced {
        let taken = if accepted(invoice.status) {
            invoice.amount
        } else {
            Decimal::default()
        };
        add(outgoing, &invoice.payment_platform, invoice.amount, taken);
    }
    for ((outgoing, ..), (platform, requested, taken)) in highest {
        add(outgoing, platform, requested, taken);
    }
    sums.into_iter()
        .map(|((outgoing, platform), amounts)| ((outgoing, platform.to_string()), amounts))
        .collect()
}

/// Add `more` to `totals`.
pub(super) fn add_totals(totals: &mut DocumentTotals, more: DocumentTotals) {
    for (key, (requested, accepted)) in more {
        let slot = totals.entry(key).or_default();
        slot.0 += requested;
        slot.1 += accepted;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::payment::tests::{issued_debit_note, issued_invoice, node, PROVIDER, REQUESTOR};

    fn note(agreement: &str, activity: &str, amount: &str, status: DocumentStatus) -> DebitNote {
        DebitNote {
            status,
            ..issued_debit_note(
                &format!("dn-{agreement}-{activity}-{amount}"),
                agreement,
                activity,
                amount,
            )
        }
    }

    fn invoice(agreement: &str, amount: &str, status: DocumentStatus) -> Invoice {
        Invoice {
            status,
            ..issued_invoice(&format!("inv-{agreement}-{amount}"), agreement, amount)
        }
    }

    #[test]
    fn an_invoice_that_stands_replaces_its_notes_otherwise_the_highest_note_per_activity_counts() {
        use DocumentStatus::*;
        let notes = [
            // a1: two activities, notes rising; no invoice.
            note("a1", "x", "1", Accepted),
            note("a1", "x", "3", Received),
            note("a1", "y", "2", Accepted),
            // a2: notes replaced by its accepted invoice.
            note("a2", "z", "5", Accepted),
            // a3: its invoice was rejected, so its notes count.
            note("a3", "w", "4", Accepted),
            // A rejected note never counts.
            note("a4", "v", "9", Rejected),
        ];
        let invoices = [
            invoice("a2", "7", Settled),
            invoice("a3", "8", Rejected),
            invoice("a5", "6", Received),
        ];
        let me = node(REQUESTOR);
        let totals = document_totals(me, notes.iter(), invoices.iter());
        let outgoing = totals[&(true, "dummy-local-tglm".to_string())];
        // requested: a1 3 + 2, a2 7, a3 4, a5 6 = 22; accepted: a1 1 + 2, a2 7, a3 4 = 14.
        assert_eq!(outgoing, ("22".parse().unwrap(), "14".parse().unwrap()));
        assert_eq!(totals.len(), 1, "all outgoing, one platform");
        // The provider sees the same documents as incoming.
        let theirs = document_totals(node(PROVIDER), notes.iter(), invoices.iter());
        assert_eq!(
            theirs[&(false, "dummy-local-tglm".to_string())],
            ("22".parse().unwrap(), "14".parse().unwrap())
        );
    }
}
