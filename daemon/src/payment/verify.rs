//! What the requestor's payment service checks before it records a debit note
//! or an invoice from a provider, beyond who sent it (`check_incoming`):
//! - every activity a document names was created by this node, on that
//!   agreement, with that provider (a provider cannot bill invented activities
//!   or another agreement's);
//! - the amount stays within what the agreement's linear price allows for the
//!   time since approval (`golem_model::pricing`): a debit note for its one
//!   activity, an invoice for the agreement's activities together.
//!
//! Refusals are errors to the sender (the provider's send call fails with the
//! reason) and a warning in our log. It must never trust a field the provider
//! wrote when our own records can answer, and never hold the state lock while
//! it asks the activity service.

use std::collections::BTreeMap;

use chrono::Utc;
use golem_model::market::Agreement;
use golem_model::payment::{DebitNote, Decimal, Invoice};
use golem_model::pricing::{reported_usage, LinearPricing, PricingError};
use golem_model::{GolemError, NodeId};

use super::actor::PaymentActor;

fn over_cap(what: &str, id: &str, error: PricingError) -> GolemError {
    match error {
        PricingError::OverCap { .. } => {
            GolemError::bad_request(format!("{what} {id} is refused: amount {error}"))
        }
        other => GolemError::bad_request(format!("{what} {id} is refused: {other}")),
    }
}

impl PaymentActor {
    /// `activity_id` was created by this node on `agreement_id` with `provider`.
    fn check_own_activity(
        &self,
        what: &str,
        id: &str,
        activity_id: &str,
        agreement_id: &str,
        provider: NodeId,
    ) -> Result<(), GolemError> {
        let created = self
            .deps
            .requestor_activities
            .as_ref()
            .and_then(|activities| activities.created_activity(activity_id));
        match created {
            Some((agreement, owner)) if agreement == agreement_id && owner == provider => Ok(()),
            _ => {
                tracing::warn!(%id, %activity_id, %agreement_id, %provider, "{what} names an activity this node did not create on its agreement; refused");
                Err(GolemError::forbidden(format!(
                    "{what} {id} is refused: activity {activity_id} was not created by this requestor on agreement {agreement_id}"
                )))
            }
        }
    }

    /// A debit note from `caller` names our activity of its agreement and asks
    /// no more than the agreed price allows.
    pub(super) fn check_debit_note_terms(
        &self,
        caller: NodeId,
        agreement: &Agreement,
        note: &DebitNote,
    ) -> Result<(), GolemError> {
        self.check_own_activity(
            "debit note",
            &note.debit_note_id,
            &note.activity_id,
            &agreement.agreement_id,
            caller,
        )?;
        let pricing = LinearPricing::of_agreement(agreement)
            .map_err(|error| over_cap("debit note", &note.debit_note_id, error))?;
        let reported = reported_usage(note.usage_counter_vector.as_ref());
        pricing
            .check_amount(
                note.total_amount_due,
                approved_at(agreement),
                Utc::now(),
                &[reported],
            )
            .map_err(|error| {
                tracing::warn!(debit_note_id = %note.debit_note_id, agreement_id = %agreement.agreement_id, %error, "debit note above the agreed price; refused");
                over_cap("debit note", &note.debit_note_id, error)
            })?;
        Ok(())
    }

    /// An invoice from `caller` names only our activities of its agreement and
    /// asks no more than the agreed price allows for the agreement's
    /// activities (those it names and those debit notes were received for).
    pub(super) fn check_invoice_terms(
        &self,
        caller: NodeId,
        agreement: &Agreement,
        invoice: &Invoice,
    ) -> Result<(), GolemError> {
        for activity_id in &invoice.activity_ids {
            self.check_own_activity(
                "invoice",
                &invoice.invoice_id,
                activity_id,
                &agreement.agreement_id,
                caller,
            )?;
        }
        // The latest usage each activity reported, from the debit notes we hold
        // (each was checked when it arrived).
        let mut activities: BTreeMap<String, (Decimal, Vec<Decimal>)> = invoice
            .activity_ids
            .iter()
            .map(|id| (id.clone(), (Decimal::ZERO, Vec::new())))
            .collect();
        for note in self.state.debit_notes.values().filter(|note| {
            note.agreement_id == agreement.agreement_id && note.recipient_id == self.deps.node_id
        }) {
            let entry = activities
                .entry(note.activity_id.clone())
                .or_insert((Decimal::ZERO, Vec::new()));
            if note.total_amount_due >= entry.0 {
                *entry = (
                    note.total_amount_due,
                    reported_usage(note.usage_counter_vector.as_ref()),
                );
            }
        }
        let reported: Vec<Vec<Decimal>> =
            activities.into_values().map(|(_, usage)| usage).collect();
        let pricing = LinearPricing::of_agreement(agreement)
            .map_err(|error| over_cap("invoice", &invoice.invoice_id, error))?;
        pricing
            .check_amount(invoice.amount, approved_at(agreement), Utc::now(), &reported)
            .map_err(|error| {
                tracing::warn!(invoice_id = %invoice.invoice_id, agreement_id = %agreement.agreement_id, %error, "invoice above the agreed price; refused");
                over_cap("invoice", &invoice.invoice_id, error)
            })?;
        Ok(())
    }
}

/// When billing could start: the approval, or the agreement's creation when
/// this node has no approval date.
fn approved_at(agreement: &Agreement) -> chrono::DateTime<Utc> {
    agreement.approved_date.unwrap_or(agreement.timestamp)
}
