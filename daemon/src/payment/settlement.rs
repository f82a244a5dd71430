//! Settlement: accepted invoices whose driver pays later (erc20) are pending
//! payment orders (`order/<payment>`). The actor's settle timer (every second,
//! and at once when a driver signals through `settled`) hands each order to
//! its driver (again after a crash: `pay` is idempotent per payment id), asks
//! how it is going, and once the driver confirms records the payment, settles
//! the invoice and queues `SendPayment` for the provider, in one write.
//!
//! The same round re-checks, outside the actor, the provider-side erc20
//! payments held until their transaction is confirmed (`incoming.rs`).

use actix::{ActorFutureExt, AsyncContext, Context, WrapFuture};
use chrono::Utc;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};

use super::actor::PaymentActor;
use super::outbox;
use super::state::{flush, stage_payment, PaymentOrder, Writes};
use super::{PayProgress, PaymentDriver, Platform};

/// The payment record of `order`, paid with `details`.
pub(super) fn new_payment(
    payment_id: String,
    payer: NodeId,
    order: &PaymentOrder,
    details: String,
) -> Payment {
    Payment {
        payment_id,
        payer_id: payer,
        payee_id: order.issuer_id,
        payer_addr: order.payer_addr.clone(),
        payee_addr: order.payee_addr.clone(),
        payment_platform: order.platform.clone(),
        amount: order.amount,
        timestamp: Utc::now(),
        agreement_payments: vec![AgreementPayment {
            agreement_id: order.agreement_id.clone(),
            amount: order.amount,
            allocation_id: Some(order.allocation_id.clone()),
        }],
        activity_payments: Vec::new(),
        details,
    }
}

impl PaymentActor {
    pub(super) fn hand_to_driver(&mut self, order: &PaymentOrder, driver: &dyn PaymentDriver) {
        let result = Platform::parse(&order.platform).and_then(|platform| {
            driver.pay(
                &platform,
                &order.payment_id,
                &order.payer_addr,
                &order.payee_addr,
                order.amount,
            )
        });
        match result {
            Ok(_) => self.deps.settled.notify_one(),
            Err(error) => {
                tracing::warn!(payment_id = %order.payment_id, %error.message, "payment not handed to its driver yet");
                self.set_order_status(&order.payment_id, error.message);
            }
        }
    }

    fn set_order_status(&mut self, payment_id: &str, status: String) {
        if let Some(order) = self.state.orders.get_mut(payment_id) {
            order.status = status;
        }
    }

    /// Pending payments (accepted invoices their driver has not settled
    /// yet), earliest due first.
    pub(super) fn pending_payments(&self) -> Vec<PaymentOrder> {
        let mut list: Vec<PaymentOrder> = self.state.orders.values().cloned().collect();
        list.sort_by_key(|order| (order.due, order.created));
        list
    }

    /// Wake the settle round whenever a driver signals a settled payment.
    pub(super) fn watch_settled(&self, ctx: &mut Context<Self>) {
        let settled = self.deps.settled.clone();
        let signal = async move { settled.notified().await };
        ctx.spawn(signal.into_actor(self).map(|(), actor, ctx| {
            actor.settle_round(ctx);
            actor.watch_settled(ctx);
        }));
    }

    /// One round of the settle timer.
    pub(super) fn settle_round(&mut self, ctx: &mut Context<Self>) {
        self.recheck_unverified_payments(ctx);
        let mut settled_any = false;
        for order in self.pending_payments() {
            let driver = match Platform::parse(&order.platform)
                .and_then(|platform| self.deps.drivers.for_platform(&platform))
            {
                Ok(driver) => driver,
                Err(error) => {
                    self.set_order_status(&order.payment_id, error.message);
                    continue;
                }
            };
            match driver.progress(&order.payment_id) {
                PayProgress::Unknown => self.hand_to_driver(&order, driver.as_ref()),
                PayProgress::Pending(status) => self.set_order_status(&order.payment_id, status),
                PayProgress::Settled(details) => {
                    match self.settle_order(&order.payment_id, details) {
                        Ok(()) => settled_any = true,
                        Err(error) => {
                            tracing::error!(payment_id = %order.payment_id, %error.message, "recording a settled payment failed")
                        }
                    }
                }
            }
        }
        if settled_any {
            self.drive_outbox(ctx);
            self.spawn_flush(ctx, "a settled payment");
        }
        self.warn_overdue_orders();
    }

    /// Flush in the background after a change no caller waits for.
    pub(super) fn spawn_flush(&self, ctx: &mut Context<Self>, what: &'static str) {
        let tree = self.deps.tree.clone();
        ctx.spawn(
            async move {
                if let Err(error) = flush(tree).await {
                    tracing::error!(%error.message, "flushing {what} failed");
                }
            }
            .into_actor(self),
        );
    }

    /// Record the payment of a settled order, settle its invoice and queue
    /// `SendPayment`, in one write.
    fn settle_order(&mut self, payment_id: &str, details: String) -> Result<(), GolemError> {
        let Some(order) = self.state.orders.get(payment_id).cloned() else {
            return Ok(()); // already settled
        };
        let in_memory = self.state.invoices.contains_key(&order.invoice_id);
        let mut invoice: Invoice = self.document(&order.invoice_id).map_err(|_| {
            GolemError::internal(format!(
                "invoice {} of payment {payment_id} is missing",
                order.invoice_id
            ))
        })?;
        let payment = new_payment(payment_id.to_string(), self.deps.node_id, &order, details);
        invoice.status = DocumentStatus::Settled;
        let mut writes = Writes::new();
        writes.put(format!("inv/{}", invoice.invoice_id), &invoice)?;
        stage_payment(&mut writes, &payment)?;
        writes.remove(format!("order/{payment_id}"));
        let event = self.stage_event(
            &mut writes,
            PaymentEventType::InvoiceSettledEvent,
            &invoice.invoice_id,
            None,
        )?;
        let staged = outbox::stage(
            &mut self.outbox,
            &mut writes,
            order.issuer_id,
            &SendPayment {
                payment: payment.clone(),
                invoice_ids: vec![invoice.invoice_id.clone()],
            },
        )?;
        self.deps.commit(writes)?;
        tracing::info!(%payment_id, invoice_id = %invoice.invoice_id, "payment settled");
        if in_memory {
            self.state
                .invoices
                .insert(invoice.invoice_id.clone(), invoice);
        }
        self.state.payments.push(payment);
        self.state.orders.remove(payment_id);
        self.add_event(event);
        self.outbox.add(staged);
        self.outbox_dirty = true;
        Ok(())
    }
}
