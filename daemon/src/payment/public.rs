//! `/public/payment`: what other nodes' payment services may ask of this one,
//! each bus message handled by the actor (`Handler<Incoming<M>>`). Only the
//! counterparty of a document is heard; replies follow the change's flush.

use actix::{Context, Handler, ResponseActFuture, ResponseFuture};
use golem_bus::actor::Incoming;
use golem_bus::ServiceEndpoint;
use golem_model::payment::*;
use golem_model::GolemError;

use super::actor::PaymentActor;
use super::documents::Document;
use super::PaymentSupervisor;

/// The endpoint bound at `/public/payment`.
pub(super) fn endpoint(actor: &PaymentSupervisor) -> ServiceEndpoint {
    ServiceEndpoint::new()
        .on_actor::<SendDebitNote, _, _>(actor.clone())
        .on_actor::<SendInvoice, _, _>(actor.clone())
        .on_actor::<AcceptDebitNote, _, _>(actor.clone())
        .on_actor::<RejectDebitNote, _, _>(actor.clone())
        .on_actor::<AcceptInvoice, _, _>(actor.clone())
        .on_actor::<RejectInvoice, _, _>(actor.clone())
        .on_actor::<SendPayment, _, _>(actor.clone())
        .on_actor::<CancelDebitNote, _, _>(actor.clone())
        .on_actor::<CancelInvoice, _, _>(actor.clone())
}

impl Handler<Incoming<SendDebitNote>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<SendDebitNote>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let caller = self.caller_id(incoming.caller);
        let result = self.receive_debit_note(caller, incoming.message.0);
        self.durable(result, ctx)
    }
}

impl Handler<Incoming<SendInvoice>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(&mut self, incoming: Incoming<SendInvoice>, ctx: &mut Context<Self>) -> Self::Result {
        let caller = self.caller_id(incoming.caller);
        let result = self.receive_invoice(caller, incoming.message.0);
        self.durable(result, ctx)
    }
}

impl PaymentActor {
    /// Provider: the recipient of document `id` answers it (accepted or rejected).
    fn answered<D: Document>(
        &mut self,
        caller: golem_bus::Caller,
        id: &str,
        status: DocumentStatus,
        event: (PaymentEventType, Option<Rejection>),
    ) -> Result<(), GolemError> {
        let caller = self.caller_id(caller);
        self.check_issued::<D>(caller, id)?;
        self.update_document::<D>(id, status, Some(event)).map(drop)
    }
}

impl Handler<Incoming<AcceptDebitNote>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<AcceptDebitNote>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let result = self.answered::<DebitNote>(
            incoming.caller,
            &incoming.message.debit_note_id,
            DocumentStatus::Accepted,
            (PaymentEventType::DebitNoteAcceptedEvent, None),
        );
        self.durable(result, ctx)
    }
}

impl Handler<Incoming<RejectDebitNote>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<RejectDebitNote>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let result = self.answered::<DebitNote>(
            incoming.caller,
            &message.debit_note_id,
            DocumentStatus::Rejected,
            (
                PaymentEventType::DebitNoteRejectedEvent,
                Some(message.rejection),
            ),
        );
        self.durable(result, ctx)
    }
}

impl Handler<Incoming<AcceptInvoice>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<AcceptInvoice>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let invoice_id = incoming.message.invoice_id;
        let result = self.answered::<Invoice>(
            incoming.caller,
            &invoice_id,
            DocumentStatus::Accepted,
            (PaymentEventType::InvoiceAcceptedEvent, None),
        );
        if result.is_ok() {
            if let Err(error) = self.track_payment_due(&invoice_id) {
                tracing::warn!(%invoice_id, %error.message, "recording when the payment is due failed");
            }
        }
        self.durable(result, ctx)
    }
}

impl Handler<Incoming<RejectInvoice>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<RejectInvoice>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let result = self.answered::<Invoice>(
            incoming.caller,
            &message.invoice_id,
            DocumentStatus::Rejected,
            (
                PaymentEventType::InvoiceRejectedEvent,
                Some(message.rejection),
            ),
        );
        self.durable(result, ctx)
    }
}

impl Handler<Incoming<SendPayment>> for PaymentActor {
    type Result = ResponseActFuture<Self, Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<SendPayment>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let caller = self.caller_id(incoming.caller);
        let received = self.receive_payment(caller, incoming.message);
        self.durable_later(received)
    }
}

impl Handler<Incoming<CancelDebitNote>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<CancelDebitNote>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let caller = self.caller_id(incoming.caller);
        let result = self.cancelled_by_issuer::<DebitNote>(caller, &incoming.message.debit_note_id);
        self.durable(result, ctx)
    }
}

impl Handler<Incoming<CancelInvoice>> for PaymentActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<CancelInvoice>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let caller = self.caller_id(incoming.caller);
        let result = self.cancelled_by_issuer::<Invoice>(caller, &incoming.message.invoice_id);
        self.durable(result, ctx)
    }
}
