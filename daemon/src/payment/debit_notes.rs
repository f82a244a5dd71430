//! Debit notes: issued on the provider's node (amounts never decrease per
//! activity), received on the requestor's (checked against the agreement and
//! the activities this node created, `verify.rs`), accepted there against an
//! allocation (charged up to the highest accepted amount per activity) or
//! rejected. What they share with invoices is in `documents.rs`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use golem_model::ids::new_id;
use golem_model::market::Agreement;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};

use super::actor::PaymentActor;
use super::documents::{payment_terms, Document};
use super::outbox;
use super::state::{status_error, State, Writes};

impl Document for DebitNote {
    const NAME: &'static str = "debit note";
    const KEY_PREFIX: &'static str = "dn/";
    const ONE_PER_AGREEMENT: bool = false;
    const RECEIVED_EVENT: PaymentEventType = PaymentEventType::DebitNoteReceivedEvent;
    const CANCELLED_EVENT: PaymentEventType = PaymentEventType::DebitNoteCancelledEvent;
    type Send = SendDebitNote;
    type Reject = RejectDebitNote;
    type Cancel = CancelDebitNote;
    fn map(state: &State) -> &HashMap<String, Self> {
        &state.debit_notes
    }
    fn map_mut(state: &mut State) -> &mut HashMap<String, Self> {
        &mut state.debit_notes
    }
    fn id(&self) -> &str {
        &self.debit_note_id
    }
    super::documents::shared_document_fields!();
    fn into_send(self) -> SendDebitNote {
        SendDebitNote(self)
    }
    fn rejection(id: &str, rejection: Rejection) -> RejectDebitNote {
        RejectDebitNote {
            debit_note_id: id.to_string(),
            rejection,
        }
    }
    fn cancellation(id: &str) -> CancelDebitNote {
        CancelDebitNote {
            debit_note_id: id.to_string(),
        }
    }
    fn same_as(&self, other: &Self) -> bool {
        self.total_amount_due == other.total_amount_due && self.activity_id == other.activity_id
    }
}

impl PaymentActor {
    /// Provider: issue a debit note (status ISSUED); amounts never decrease per activity.
    pub(super) fn issue_debit_note(&mut self, new: NewDebitNote) -> Result<DebitNote, GolemError> {
        let agreement_id = match &new.agreement_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => self
                .deps
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
        let (platform, payee, payer) = payment_terms(&agreement)?;
        let me = self.deps.node_id;
        let previous = self
            .state
            .debit_notes
            .values()
            .filter(|note| {
                note.issuer_id == me
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
            issuer_id: me,
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
        self.deps.commit(writes)?;
        self.state
            .debit_notes
            .insert(note.debit_note_id.clone(), note.clone());
        Ok(note)
    }

    /// Requestor: a debit note arrives from the agreement's provider.
    pub(super) fn receive_debit_note(
        &mut self,
        caller: NodeId,
        note: DebitNote,
    ) -> Result<(), GolemError> {
        self.receive_document(caller, note, |actor, agreement, note| {
            actor.check_debit_note_terms(caller, agreement, note)?;
            actor.check_not_decreasing(agreement, note)
        })
    }

    /// Notes may arrive out of order (retries, concurrent sends); what is
    /// refused is a provider whose amounts went down over time.
    fn check_not_decreasing(
        &self,
        _agreement: &Agreement,
        note: &DebitNote,
    ) -> Result<(), GolemError> {
        let decreasing = self.state.debit_notes.values().any(|other| {
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
        Ok(())
    }

    /// Requestor: accept a received debit note, charging the allocation.
    pub(super) fn accept_debit_note(
        &mut self,
        id: &str,
        acceptance: &Acceptance,
    ) -> Result<(), GolemError> {
        let amount = parse_amount("totalAmountAccepted", &acceptance.total_amount_accepted)?;
        let in_memory = self.state.debit_notes.contains_key(id);
        let mut note: DebitNote = self.document(id)?;
        if note.recipient_id != self.deps.node_id {
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
        let activity_id = note.activity_id.clone();
        let charge = self.charge(
            &mut writes,
            &note.agreement_id,
            &acceptance.allocation_id,
            &note.payment_platform,
            &note.payer_addr,
            |charges| {
                if charges.invoice.is_none() {
                    let entry = charges.by_activity.entry(activity_id).or_default();
                    *entry = (*entry).max(amount);
                }
            },
        )?;
        note.status = DocumentStatus::Accepted;
        writes.put(format!("dn/{id}"), &note)?;
        let staged = outbox::stage(
            &mut self.outbox,
            &mut writes,
            note.issuer_id,
            &AcceptDebitNote {
                debit_note_id: id.to_string(),
                total_amount_accepted: amount,
            },
        )?;
        self.deps.commit(writes)?;
        charge.apply(&mut self.state);
        if in_memory {
            self.state.debit_notes.insert(id.to_string(), note);
        }
        self.outbox.add(staged);
        self.outbox_dirty = true;
        Ok(())
    }
}
