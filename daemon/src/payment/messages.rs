//! The actor's local messages: one per REST operation (and per read the
//! handle offers), each handled by the actor's code for it. Changes reply
//! after their flush ([`PaymentActor::durable`]); sending a document runs its
//! delivery outside the actor and applies the outcome when it returns.

use std::marker::PhantomData;

use actix::{
    ActorFutureExt, Context, Handler, Message, MessageResult, ResponseActFuture, ResponseFuture,
    WrapFuture,
};
use chrono::{DateTime, Utc};
use golem_bus::Router;
use golem_model::bus::BusMessage;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};

use super::actor::PaymentActor;
use super::documents::Document;
use super::state::PaymentOrder;
use super::state::UnverifiedPayment;

type Reply<T> = Result<T, GolemError>;

macro_rules! message {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* } -> $result:ty) => {
        $(#[$doc])*
        pub(super) struct $name { $(pub $field: $ty),* }
        impl Message for $name {
            type Result = $result;
        }
    };
}

message!(CreateAllocation { body: serde_json::Value } -> Reply<Allocation>);
message!(ListAllocations {} -> Vec<Allocation>);
message!(GetAllocation { id: String } -> Reply<Allocation>);
message!(ReleaseAllocation { id: String } -> Reply<()>);
message!(ReleaseAllAllocations {} -> Reply<Vec<String>>);
message!(GetDemandDecorations { ids: Vec<String> } -> Reply<MarketDecoration>);
message!(IssueDebitNote { new: NewDebitNote } -> Reply<DebitNote>);
message!(AcceptDebitNoteOp { id: String, acceptance: Acceptance } -> Reply<()>);
message!(IssueInvoice { new: NewInvoice } -> Reply<Invoice>);
message!(AcceptInvoiceOp { id: String, acceptance: Acceptance } -> Reply<()>);
message!(
    /// Events after `after`, with their documents' agreements when asked.
    ReadEvents { invoices: bool, after: Option<DateTime<Utc>>, limit: usize, with_agreements: bool }
        -> Vec<(PaymentEvent, Option<String>)>
);
message!(ListPayments {} -> Vec<Payment>);
message!(GetPayment { id: String } -> Reply<Payment>);
message!(
    /// Payments of the agreement a debit note or invoice belongs to.
    DocumentPayments { id: String, invoice: bool } -> Reply<Vec<Payment>>
);
message!(AmendAllocation { id: String, body: serde_json::Value } -> Reply<Allocation>);
message!(ListPendingPayments {} -> Vec<PaymentOrder>);
message!(ListUnverifiedPayments {} -> Vec<UnverifiedPayment>);
message!(GetStatusReport {} -> PaymentStatusReport);
message!(
    /// Provider: the late payments alone (the agent asks after every
    /// agreement; the whole report walks every document in memory).
    GetLatePayments {} -> Vec<PaymentDue>
);
message!(
    /// Fault injection: the handler panics (the supervisor restarts the actor).
    CrashForTest {} -> ()
);
#[cfg(test)]
message!(MemoryCounts {} -> [usize; 6]);
#[cfg(test)]
message!(SweepRetention {} -> ());

/// Tests: run a closure on the actor's state.
#[cfg(test)]
pub(super) struct WithActor<F>(pub F);
#[cfg(test)]
impl<R: 'static, F: FnOnce(&mut PaymentActor) -> R> Message for WithActor<F> {
    type Result = R;
}
#[cfg(test)]
impl<R: 'static, F: FnOnce(&mut PaymentActor) -> R> Handler<WithActor<F>> for PaymentActor {
    type Result = MessageResult<WithActor<F>>;
    fn handle(&mut self, message: WithActor<F>, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult((message.0)(self))
    }
}

/// Every document of a kind in memory.
pub(super) struct ListDocuments<D>(pub PhantomData<D>);
/// One document by id.
pub(super) struct GetDocument<D>(pub String, pub PhantomData<D>);
/// Provider: deliver an issued document, then RECEIVED.
pub(super) struct SendDocument<D>(pub String, pub PhantomData<D>);
/// Requestor: reject a received document.
pub(super) struct RejectDocument<D>(pub String, pub Rejection, pub PhantomData<D>);
/// Issuer: cancel a document not yet accepted (its recipient agrees first).
pub(super) struct CancelDocument<D>(pub String, pub PhantomData<D>);

impl<D: Document> Message for ListDocuments<D> {
    type Result = Vec<D>;
}
impl<D: Document> Message for GetDocument<D> {
    type Result = Reply<D>;
}
impl<D: Document> Message for SendDocument<D> {
    type Result = Reply<D>;
}
impl<D: Document> Message for RejectDocument<D> {
    type Result = Reply<()>;
}
impl<D: Document> Message for CancelDocument<D> {
    type Result = Reply<()>;
}

macro_rules! read {
    ($message:ty, $result:ty, |$actor:ident, $msg:ident| $body:expr) => {
        impl Handler<$message> for PaymentActor {
            type Result = MessageResult<$message>;
            fn handle(&mut self, $msg: $message, _ctx: &mut Context<Self>) -> Self::Result {
                let $actor = &*self;
                let result: $result = $body;
                MessageResult(result)
            }
        }
    };
}

macro_rules! change {
    ($message:ty, $value:ty, |$actor:ident, $msg:ident| $body:expr) => {
        impl Handler<$message> for PaymentActor {
            type Result = ResponseFuture<Reply<$value>>;
            fn handle(&mut self, $msg: $message, ctx: &mut Context<Self>) -> Self::Result {
                let result = {
                    let $actor = &mut *self;
                    $body
                };
                self.durable(result, ctx)
            }
        }
    };
}

read!(ListAllocations, Vec<Allocation>, |actor, _msg| actor
    .allocations());
read!(GetAllocation, Reply<Allocation>, |actor, msg| actor
    .allocation_for_client(&msg.id));
read!(
    GetDemandDecorations,
    Reply<MarketDecoration>,
    |actor, msg| actor.demand_decorations(&msg.ids)
);
read!(ListPayments, Vec<Payment>, |actor, _msg| actor
    .state
    .payments
    .clone());
read!(GetPayment, Reply<Payment>, |actor, msg| actor
    .payment(&msg.id));
read!(DocumentPayments, Reply<Vec<Payment>>, |actor, msg| actor
    .document_payments(&msg.id, msg.invoice));
read!(ListPendingPayments, Vec<PaymentOrder>, |actor, _msg| actor
    .pending_payments());
read!(
    ListUnverifiedPayments,
    Vec<UnverifiedPayment>,
    |actor, _msg| actor.unverified_payments()
);
read!(GetStatusReport, PaymentStatusReport, |actor, _msg| actor
    .status_report());
read!(GetLatePayments, Vec<PaymentDue>, |actor, _msg| actor
    .late_payments());
read!(
    ReadEvents,
    Vec<(PaymentEvent, Option<String>)>,
    |actor, msg| actor.read_events(msg.invoices, msg.after, msg.limit, msg.with_agreements)
);
#[cfg(test)]
read!(MemoryCounts, [usize; 6], |actor, _msg| actor
    .memory_counts());

change!(CreateAllocation, Allocation, |actor, msg| actor
    .create_allocation(&msg.body));
change!(AmendAllocation, Allocation, |actor, msg| actor
    .amend_allocation(&msg.id, &msg.body));
change!(ReleaseAllocation, (), |actor, msg| actor
    .release_allocation(&msg.id));
change!(ReleaseAllAllocations, Vec<String>, |actor, _msg| actor
    .release_all_allocations());
change!(IssueDebitNote, DebitNote, |actor, msg| actor
    .issue_debit_note(msg.new));
change!(AcceptDebitNoteOp, (), |actor, msg| actor
    .accept_debit_note(&msg.id, &msg.acceptance));
change!(IssueInvoice, Invoice, |actor, msg| actor
    .issue_invoice(msg.new));
change!(AcceptInvoiceOp, (), |actor, msg| actor
    .accept_invoice(&msg.id, &msg.acceptance));

impl Handler<CrashForTest> for PaymentActor {
    type Result = ();
    fn handle(&mut self, _: CrashForTest, _ctx: &mut Context<Self>) {
        panic!("payment actor crash requested (fault injection)");
    }
}

#[cfg(test)]
impl Handler<SweepRetention> for PaymentActor {
    type Result = ();
    fn handle(&mut self, _: SweepRetention, _ctx: &mut Context<Self>) {
        self.sweep_retention();
    }
}

impl<D: Document> Handler<ListDocuments<D>> for PaymentActor {
    type Result = Vec<D>;
    fn handle(&mut self, _: ListDocuments<D>, _ctx: &mut Context<Self>) -> Vec<D> {
        self.documents()
    }
}

impl<D: Document> Handler<GetDocument<D>> for PaymentActor {
    type Result = Reply<D>;
    fn handle(&mut self, message: GetDocument<D>, _ctx: &mut Context<Self>) -> Reply<D> {
        self.document(&message.0)
    }
}

impl<D: Document> Handler<RejectDocument<D>> for PaymentActor {
    type Result = ResponseFuture<Reply<()>>;
    fn handle(&mut self, message: RejectDocument<D>, ctx: &mut Context<Self>) -> Self::Result {
        let result = self.reject_document::<D>(&message.0, message.1);
        self.durable(result, ctx)
    }
}

impl<D: Document> Handler<SendDocument<D>> for PaymentActor {
    type Result = ResponseActFuture<Self, Reply<D>>;
    fn handle(&mut self, message: SendDocument<D>, _ctx: &mut Context<Self>) -> Self::Result {
        let id = message.0;
        let (target, send) = match self.document_to_send::<D>(&id) {
            Ok(found) => found,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let call = deliver_with_retries(self.deps.router.clone(), target, send);
        let sent = call.into_actor(self).map(move |delivered, actor, _ctx| {
            delivered?;
            actor.update_document::<D>(&id, DocumentStatus::Received, None)
        });
        self.durable_later(Box::pin(sent))
    }
}

impl<D: Document> Handler<CancelDocument<D>> for PaymentActor {
    type Result = ResponseActFuture<Self, Reply<()>>;
    fn handle(&mut self, message: CancelDocument<D>, _ctx: &mut Context<Self>) -> Self::Result {
        let id = message.0;
        let tell = match self.cancellation_of::<D>(&id) {
            Ok(tell) => tell,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let Some((recipient, cancel)) = tell else {
            let result = self.mark_cancelled::<D>(&id);
            return self.durable_later(Box::pin(actix::fut::ready(result)));
        };
        // Sent: the recipient agrees first (it refuses once it accepted).
        let call = deliver_with_retries(self.deps.router.clone(), recipient, cancel);
        let cancelled = call.into_actor(self).map(move |agreed, actor, _ctx| {
            agreed?;
            actor.mark_cancelled::<D>(&id)
        });
        self.durable_later(Box::pin(cancelled))
    }
}

/// Inline delivery attempts of a send before the REST call fails.
const SEND_ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// Call the payment service of `target`, retrying transient failures.
async fn deliver_with_retries<M: BusMessage<Reply = ()>>(
    router: Router,
    target: NodeId,
    message: M,
) -> Result<(), GolemError> {
    let address = payment_address(target);
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match router.call(&address, &message).await {
            Ok(()) => return Ok(()),
            Err(error) if !error.is_transient() || attempt >= SEND_ATTEMPTS => return Err(error),
            Err(error) => {
                tracing::debug!(%target, attempt, %error.message, "payment delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        }
    }
}
