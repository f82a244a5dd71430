//! Invoices: one per agreement, issued on the provider's node, received on
//! the requestor's (checked against the agreed price, `verify.rs`) and
//! accepted there against an allocation, which also pays it: a driver that
//! settles at once (dummy) pays in the acceptance's own write, another
//! (erc20) gets a pending payment order that `settlement.rs` follows.
//!
//! Issuing an invoice for an agreement that has one answers that invoice
//! again when it is the same (same amount and activities), so an agent that
//! crashed before recording it simply issues again; other contents are a
//! Conflict.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use golem_model::ids::new_id;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};

use super::actor::PaymentActor;
use super::documents::{payment_terms, Document};
use super::outbox;
use super::settlement::new_payment;
use super::state::{invoice_of_key, stage_payment, status_error, PaymentOrder, State, Writes};
use super::{PayOutcome, PaymentDriver, Platform};

impl Document for Invoice {
    const NAME: &'static str = "invoice";
    const KEY_PREFIX: &'static str = "inv/";
    const ONE_PER_AGREEMENT: bool = true;
    const RECEIVED_EVENT: PaymentEventType = PaymentEventType::InvoiceReceivedEvent;
    const CANCELLED_EVENT: PaymentEventType = PaymentEventType::InvoiceCancelledEvent;
    type Send = SendInvoice;
    type Reject = RejectInvoice;
    type Cancel = CancelInvoice;
    fn map(state: &State) -> &HashMap<String, Self> {
        &state.invoices
    }
    fn map_mut(state: &mut State) -> &mut HashMap<String, Self> {
        &mut state.invoices
    }
    fn id(&self) -> &str {
        &self.invoice_id
    }
    super::documents::shared_document_fields!();
    fn into_send(self) -> SendInvoice {
        SendInvoice(self)
    }
    fn rejection(id: &str, rejection: Rejection) -> RejectInvoice {
        RejectInvoice {
            invoice_id: id.to_string(),
            rejection,
        }
    }
    fn cancellation(id: &str) -> CancelInvoice {
        CancelInvoice {
            invoice_id: id.to_string(),
        }
    }
    fn same_as(&self, other: &Self) -> bool {
        self.amount == other.amount && self.agreement_id == other.agreement_id
    }
}

impl PaymentActor {
    /// Payments (in memory) of the agreement of debit note or invoice `id`
    /// (the deprecated `GET /debitNotes|invoices/{id}/payments`).
    pub(super) fn document_payments(
        &self,
        id: &str,
        invoice: bool,
    ) -> Result<Vec<Payment>, GolemError> {
        let agreement_id = if invoice {
            self.document::<Invoice>(id)?.agreement_id
        } else {
            self.document::<DebitNote>(id)?.agreement_id
        };
        Ok(self
            .state
            .payments
            .iter()
            .filter(|payment| {
                payment
                    .agreement_payments
                    .iter()
                    .any(|paid| paid.agreement_id == agreement_id)
            })
            .cloned()
            .collect())
    }

    /// The invoice of an agreement (not cancelled): memory, else the sled index.
    pub(super) fn invoice_of_agreement(
        &self,
        agreement_id: &str,
    ) -> Result<Option<Invoice>, GolemError> {
        if let Some(invoice) = self.state.invoices.values().find(|invoice| {
            invoice.agreement_id == agreement_id && invoice.status != DocumentStatus::Cancelled
        }) {
            return Ok(Some(invoice.clone()));
        }
        let Some(id) = self.deps.read::<String>(&invoice_of_key(agreement_id))? else {
            return Ok(None);
        };
        Ok(self
            .find_document::<Invoice>(&id)?
            .filter(|invoice| invoice.status != DocumentStatus::Cancelled))
    }

    /// Provider: issue the invoice of an agreement (one per agreement; the
    /// same one again answers the existing invoice).
    pub(super) fn issue_invoice(&mut self, new: NewInvoice) -> Result<Invoice, GolemError> {
        let amount = parse_amount("amount", &new.amount)?;
        let agreement = self.provider_agreement(&new.agreement_id)?;
        let (platform, payee, payer) = payment_terms(&agreement)?;
        let activity_ids = new.activity_ids.unwrap_or_default();
        if let Some(existing) = self.invoice_of_agreement(&new.agreement_id)? {
            let same_activities = activity_ids.is_empty() || activity_ids == existing.activity_ids;
            if existing.issuer_id == self.deps.node_id
                && existing.amount == amount
                && same_activities
            {
                return Ok(existing);
            }
            return Err(GolemError::conflict(format!(
                "agreement {} already has invoice {} of {}; an invoice of {amount} differs from it",
                new.agreement_id, existing.invoice_id, existing.amount
            )));
        }
        let now = Utc::now();
        let invoice = Invoice {
            invoice_id: new_id(),
            issuer_id: self.deps.node_id,
            recipient_id: agreement.demand.requestor_id,
            payee_addr: payee,
            payer_addr: payer,
            payment_platform: platform,
            timestamp: now,
            agreement_id: new.agreement_id,
            activity_ids,
            amount,
            payment_due_date: new
                .payment_due_date
                .unwrap_or(now + chrono::Duration::days(1)),
            status: DocumentStatus::Issued,
        };
        let mut writes = Writes::new();
        writes.put(format!("inv/{}", invoice.invoice_id), &invoice)?;
        self.index_document(&mut writes, &invoice)?;
        self.deps.commit(writes)?;
        self.state
            .invoices
            .insert(invoice.invoice_id.clone(), invoice.clone());
        Ok(invoice)
    }

    /// Requestor: an invoice arrives from the agreement's provider.
    pub(super) fn receive_invoice(
        &mut self,
        caller: NodeId,
        invoice: Invoice,
    ) -> Result<(), GolemError> {
        self.receive_document(caller, invoice, |actor, agreement, invoice| {
            actor.check_invoice_terms(caller, agreement, invoice)?;
            if let Some(other) = actor.invoice_of_agreement(&invoice.agreement_id)? {
                return Err(GolemError::conflict(format!(
                    "agreement {} already has invoice {}",
                    invoice.agreement_id, other.invoice_id
                )));
            }
            Ok(())
        })
    }

    /// Requestor: accept a received invoice, charge the allocation and pay it
    /// (dummy: at once; the acceptance, charge and payment are one write).
    pub(super) fn accept_invoice(
        &mut self,
        id: &str,
        acceptance: &Acceptance,
    ) -> Result<(), GolemError> {
        let amount = parse_amount("totalAmountAccepted", &acceptance.total_amount_accepted)?;
        let mut invoice: Invoice = self.document(id)?;
        if invoice.recipient_id != self.deps.node_id {
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
        let driver = self.deps.drivers.for_platform(&platform)?;
        let mut writes = Writes::new();
        let charge = self.charge(
            &mut writes,
            &invoice.agreement_id,
            &acceptance.allocation_id,
            &invoice.payment_platform,
            &invoice.payer_addr,
            |charges| charges.invoice = Some(amount),
        )?;
        let payment_id = new_id();
        let acceptance_message = AcceptInvoice {
            invoice_id: id.to_string(),
            total_amount_accepted: amount,
        };
        let accepted = outbox::stage(
            &mut self.outbox,
            &mut writes,
            invoice.issuer_id,
            &acceptance_message,
        )?;
        if !driver.settles_at_once() {
            let mut order = new_order(&invoice, acceptance, payment_id);
            order.due = Some(self.payment_due_of(&invoice));
            invoice.status = DocumentStatus::Accepted;
            writes.put(format!("inv/{id}"), &invoice)?;
            writes.put(format!("order/{}", order.payment_id), &order)?;
            self.deps.commit(writes)?;
            charge.apply(&mut self.state);
            self.state.invoices.insert(id.to_string(), invoice);
            self.state
                .orders
                .insert(order.payment_id.clone(), order.clone());
            self.outbox.add(accepted);
            self.outbox_dirty = true;
            tracing::info!(invoice_id = %id, payment_id = %order.payment_id, platform = %order.platform, due = ?order.due, "invoice accepted; payment pending");
            self.hand_to_driver(&order, driver.as_ref());
            return Ok(());
        }
        let details = pay_at_once(driver.as_ref(), &platform, &payment_id, &invoice)?;
        let payment = new_payment(
            payment_id.clone(),
            self.deps.node_id,
            &new_order(&invoice, acceptance, payment_id.clone()),
            details,
        );
        invoice.status = DocumentStatus::Settled;
        writes.put(format!("inv/{id}"), &invoice)?;
        stage_payment(&mut writes, &payment)?;
        let event =
            self.stage_event(&mut writes, PaymentEventType::InvoiceSettledEvent, id, None)?;
        let paid = outbox::stage(
            &mut self.outbox,
            &mut writes,
            invoice.issuer_id,
            &SendPayment {
                payment: payment.clone(),
                invoice_ids: vec![id.to_string()],
            },
        )?;
        self.deps.commit(writes)?;
        charge.apply(&mut self.state);
        self.state.invoices.insert(id.to_string(), invoice);
        self.state.payments.push(payment);
        self.add_event(event);
        self.outbox.add(accepted);
        self.outbox.add(paid);
        self.outbox_dirty = true;
        Ok(())
    }
}

/// The pending payment of an accepted invoice.
pub(super) fn new_order(
    invoice: &Invoice,
    acceptance: &Acceptance,
    payment_id: String,
) -> PaymentOrder {
    PaymentOrder {
        payment_id,
        invoice_id: invoice.invoice_id.clone(),
        issuer_id: invoice.issuer_id,
        agreement_id: invoice.agreement_id.clone(),
        allocation_id: acceptance.allocation_id.clone(),
        platform: invoice.payment_platform.clone(),
        payer_addr: invoice.payer_addr.clone(),
        payee_addr: invoice.payee_addr.clone(),
        amount: invoice.amount,
        created: Utc::now(),
        due: None,
        status: "accepted, payment queued".to_string(),
    }
}

/// Pay with a driver that settles at once; its details (e.g. a transaction).
fn pay_at_once(
    driver: &dyn PaymentDriver,
    platform: &Platform,
    payment_id: &str,
    invoice: &Invoice,
) -> Result<String, GolemError> {
    match driver.pay(
        platform,
        payment_id,
        &invoice.payer_addr,
        &invoice.payee_addr,
        invoice.amount,
    )? {
        PayOutcome::Settled(details) => Ok(details),
        PayOutcome::Pending => Err(GolemError::internal(format!(
            "driver {} left a payment pending though it settles at once",
            driver.name()
        ))),
    }
}
