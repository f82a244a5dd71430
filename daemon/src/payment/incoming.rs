//! Provider side: payments a requestor reports (`SendPayment`). A payment is
//! recorded, and its invoices become SETTLED, only when every invoice it names
//! was issued by this node to the payer and ACCEPTED by it, the payment is on
//! the invoice's platform between the invoice's addresses, and it covers at
//! least the invoice's amount. An invoice the requestor has not accepted yet
//! answers Unavailable (the payer's outbox retries after its acceptance lands);
//! a rejected or cancelled one never settles.
//!
//! On `erc20` the payer's word is not enough: the transaction named in the
//! payment's details is checked on chain (`chain_check.rs`). A payment whose
//! transaction is not confirmed yet is held in the `verify/` records and
//! re-checked by the settle loop; a transaction that cannot be this payment is
//! refused. One transaction settles one payment only.

use std::time::Duration;

use chrono::Utc;
use golem_model::payment::*;
use golem_model::{GolemError, NodeId};

use super::chain_check::{check_transfer, ExpectedTransfer, TransferCheck};
use actix::{ActorFutureExt, AsyncContext, Context, ResponseActFuture, WrapFuture};

use super::actor::PaymentActor;
use super::state::{stage_payment, transaction_key, UnverifiedPayment, Writes};
use super::{Erc20Network, Platform};

/// How long the first on-chain check may delay the payer's call.
const FIRST_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a re-check of a held payment may take.
const RECHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a reported payment needs after the bookkeeping checks.
enum Verdict {
    /// Already recorded or held: nothing changes.
    Duplicate,
    /// Record it and settle its invoices now (platforms without a chain).
    Settle,
    /// Check its transaction on this erc20 network first.
    OnChain(Erc20Network),
}

fn expected(message: &SendPayment) -> ExpectedTransfer<'_> {
    ExpectedTransfer {
        tx_hash: &message.payment.details,
        payer: &message.payment.payer_addr,
        payee: &message.payment.payee_addr,
        amount: message.payment.amount,
    }
}

impl PaymentActor {
    /// Provider: the requestor reports a payment; record it and settle its
    /// invoices once it is proven, refuse it with the reason otherwise. An
    /// erc20 payment is checked on chain outside the actor; its outcome is
    /// applied when the check returns.
    pub(super) fn receive_payment(
        &mut self,
        caller: NodeId,
        message: SendPayment,
    ) -> ResponseActFuture<Self, Result<(), GolemError>> {
        let payment_id = message.payment.payment_id.clone();
        let verdict = self.check_payment(caller, &message).inspect_err(|error| {
            tracing::warn!(%payment_id, payer = %caller, %error.message, "payment refused");
        });
        let network = match verdict {
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
            Ok(Verdict::Duplicate) => return Box::pin(actix::fut::ready(Ok(()))),
            Ok(Verdict::Settle) => {
                return Box::pin(actix::fut::ready(self.record_payment(&message)))
            }
            Ok(Verdict::OnChain(network)) => network,
        };
        let check = async move {
            let check = check_transfer(&network, &expected(&message), FIRST_CHECK_TIMEOUT).await;
            (check, message)
        };
        Box::pin(check.into_actor(self).map(move |(check, message), actor, _ctx| {
            match check {
                TransferCheck::Confirmed { block } => {
                    tracing::info!(%payment_id, block, tx = %message.payment.details, "erc20 payment confirmed on chain");
                    actor.record_payment(&message)
                }
                TransferCheck::Invalid(reason) => {
                    tracing::warn!(%payment_id, payer = %caller, %reason, "erc20 payment refused");
                    Err(GolemError::bad_request(format!(
                        "payment {payment_id} is refused: {reason}"
                    )))
                }
                TransferCheck::Pending(status) => actor.hold_unverified(message, status),
            }
        }))
    }

    /// The bookkeeping checks of a reported payment (no chain access).
    fn check_payment(&self, caller: NodeId, message: &SendPayment) -> Result<Verdict, GolemError> {
        let payment = &message.payment;
        let id = &payment.payment_id;
        if payment.payer_id != caller || payment.payee_id != self.deps.node_id {
            return Err(GolemError::forbidden(
                "a payment is accepted only from its payer",
            ));
        }
        if message.invoice_ids.is_empty() {
            return Err(GolemError::bad_request(format!(
                "payment {id} names no invoice"
            )));
        }
        let state = &self.state;
        let known = match state.payments.iter().find(|known| &known.payment_id == id) {
            Some(known) => Some(known.clone()),
            None => self.deps.read::<Payment>(&format!("pay/{id}"))?,
        };
        if let Some(existing) = known {
            let same = existing.amount == payment.amount
                && existing.payer_id == payment.payer_id
                && existing.details == payment.details
                && existing.payment_platform == payment.payment_platform;
            if same {
                return Ok(Verdict::Duplicate);
            }
            return Err(GolemError::conflict(format!(
                "payment {id} was already recorded with other contents"
            )));
        }
        if state.unverified.contains_key(id) {
            return Ok(Verdict::Duplicate);
        }
        let claimed: Decimal = payment
            .agreement_payments
            .iter()
            .map(|part| part.amount)
            .sum();
        if claimed > payment.amount {
            return Err(GolemError::bad_request(format!(
                "payment {id} of {} claims {claimed} across its agreements",
                payment.amount
            )));
        }
        for invoice_id in &message.invoice_ids {
            let invoice = self
                .find_document::<Invoice>(invoice_id)?
                .ok_or_else(|| GolemError::not_found(format!("unknown invoice {invoice_id}")))?;
            if invoice.recipient_id != caller || invoice.issuer_id != self.deps.node_id {
                return Err(GolemError::forbidden(format!(
                    "invoice {invoice_id} is not between {caller} and this node"
                )));
            }
            match invoice.status {
                DocumentStatus::Accepted => {}
                DocumentStatus::Issued | DocumentStatus::Received => {
                    return Err(GolemError::unavailable(format!(
                        "invoice {invoice_id} is not accepted yet; a payment settles only an accepted invoice"
                    )))
                }
                status => {
                    return Err(GolemError::conflict(
                        format!(
                            "invoice {invoice_id} is {status:?}; payment {id} cannot settle it"
                        )
                        .to_lowercase(),
                    ))
                }
            }
            if payment.payment_platform != invoice.payment_platform
                || !payment.payer_addr.eq_ignore_ascii_case(&invoice.payer_addr)
                || !payment.payee_addr.eq_ignore_ascii_case(&invoice.payee_addr)
            {
                return Err(GolemError::bad_request(format!(
                    "payment {id} is on {} from {} to {}, invoice {invoice_id} is on {} from {} to {}",
                    payment.payment_platform,
                    payment.payer_addr,
                    payment.payee_addr,
                    invoice.payment_platform,
                    invoice.payer_addr,
                    invoice.payee_addr
                )));
            }
            let towards = |candidate: &Payment| -> Decimal {
                if candidate.agreement_payments.is_empty() {
                    return Decimal::ZERO;
                }
                candidate
                    .agreement_payments
                    .iter()
                    .filter(|part| part.agreement_id == invoice.agreement_id)
                    .map(|part| part.amount)
                    .sum()
            };
            let this_one =
                if payment.agreement_payments.is_empty() && message.invoice_ids.len() == 1 {
                    payment.amount
                } else {
                    towards(payment)
                };
            let earlier: Decimal = state
                .payments
                .iter()
                .filter(|known| known.payee_id == self.deps.node_id)
                .map(towards)
                .sum();
            if this_one + earlier < invoice.amount {
                return Err(GolemError::bad_request(format!(
                    "payment {id} pays {} towards invoice {invoice_id}, which is due {}",
                    (this_one + earlier).normalize(),
                    invoice.amount.normalize()
                )));
            }
        }
        let platform = Platform::parse(&payment.payment_platform)?;
        if platform.driver != "erc20" {
            return Ok(Verdict::Settle);
        }
        self.check_transaction_unused(state, payment)?;
        let network = self
            .deps
            .erc20
            .as_ref()
            .and_then(|driver| driver.network(&platform.network).ok().cloned())
            .ok_or_else(|| {
                GolemError::unavailable(format!(
                    "this node runs no erc20 network {}, so it cannot check payment {id}",
                    platform.network
                ))
            })?;
        Ok(Verdict::OnChain(network))
    }

    /// An erc20 transaction settles one payment: Conflict when another
    /// payment (recorded, or held until confirmed) to this node names it.
    /// Asked again in the same handler step as every write that records or
    /// holds a payment, since the chain check in between runs outside the actor.
    fn check_transaction_unused(
        &self,
        state: &super::state::State,
        payment: &Payment,
    ) -> Result<(), GolemError> {
        let erc20 = Platform::parse(&payment.payment_platform)
            .is_ok_and(|platform| platform.driver == "erc20");
        if !erc20 {
            return Ok(());
        }
        let reused = state
            .payments
            .iter()
            .filter(|known| known.payee_id == self.deps.node_id)
            .filter(|known| known.payment_id != payment.payment_id)
            .map(|known| &known.details)
            .chain(
                state
                    .unverified
                    .iter()
                    .filter(|(id, _)| **id != payment.payment_id)
                    .map(|(_, held)| &held.message.payment.details),
            )
            .any(|details| details.trim().eq_ignore_ascii_case(payment.details.trim()));
        // Payments that left memory keep their transaction's mark in sled.
        let marked = self
            .deps
            .read::<String>(&transaction_key(&payment.details))?
            .is_some_and(|paid| paid != payment.payment_id);
        if reused || marked {
            return Err(GolemError::conflict(format!(
                "transaction {} already paid another payment",
                payment.details
            )));
        }
        Ok(())
    }

    /// Record a checked payment and settle its invoices, in one write.
    pub(super) fn record_payment(&mut self, message: &SendPayment) -> Result<(), GolemError> {
        let payment = &message.payment;
        if self
            .state
            .payments
            .iter()
            .any(|known| known.payment_id == payment.payment_id)
            || self
                .deps
                .read::<Payment>(&format!("pay/{}", payment.payment_id))?
                .is_some()
        {
            return Ok(());
        }
        self.check_transaction_unused(&self.state, payment)?;
        let mut writes = Writes::new();
        stage_payment(&mut writes, payment)?;
        writes.remove(format!("verify/{}", payment.payment_id));
        let mut settled = Vec::new();
        let mut events = Vec::new();
        for invoice_id in &message.invoice_ids {
            let Some(mut invoice) = self.find_document::<Invoice>(invoice_id)? else {
                continue;
            };
            if invoice.status != DocumentStatus::Accepted {
                continue; // checked before; never moves a rejected invoice
            }
            invoice.status = DocumentStatus::Settled;
            writes.put(format!("inv/{invoice_id}"), &invoice)?;
            events.push(self.stage_event(
                &mut writes,
                PaymentEventType::InvoiceSettledEvent,
                invoice_id,
                None,
            )?);
            settled.push(invoice);
        }
        self.deps.commit(writes)?;
        tracing::info!(payment_id = %payment.payment_id, amount = %payment.amount, invoices = ?message.invoice_ids, "payment received; invoices settled");
        for invoice in settled {
            if self.state.invoices.contains_key(&invoice.invoice_id) {
                self.state
                    .invoices
                    .insert(invoice.invoice_id.clone(), invoice);
            }
        }
        self.state.payments.push(payment.clone());
        self.state.unverified.remove(&payment.payment_id);
        for event in events {
            self.add_event(event);
        }
        Ok(())
    }

    /// Keep an erc20 payment whose transaction is not confirmed yet.
    pub(super) fn hold_unverified(
        &mut self,
        message: SendPayment,
        status: String,
    ) -> Result<(), GolemError> {
        let id = message.payment.payment_id.clone();
        let held = UnverifiedPayment {
            message,
            received: Utc::now(),
            status: status.clone(),
        };
        self.check_transaction_unused(&self.state, &held.message.payment)?;
        let mut writes = Writes::new();
        writes.put(format!("verify/{id}"), &held)?;
        self.deps.commit(writes)?;
        self.state.unverified.insert(id.clone(), held);
        tracing::info!(payment_id = %id, %status, "erc20 payment reported; settles once its transaction is confirmed");
        Ok(())
    }

    /// Erc20 payments still waiting for their transaction (oldest first).
    pub(super) fn unverified_payments(&self) -> Vec<UnverifiedPayment> {
        let mut list: Vec<UnverifiedPayment> = self.state.unverified.values().cloned().collect();
        list.sort_by_key(|held| held.received);
        list
    }

    /// Part of the settle round: check held payments on chain again, each
    /// outside the actor (one check per payment at a time).
    pub(super) fn recheck_unverified_payments(&mut self, ctx: &mut Context<Self>) {
        for held in self.unverified_payments() {
            let id = held.message.payment.payment_id.clone();
            if self.rechecking.contains(&id) {
                continue;
            }
            let network = Platform::parse(&held.message.payment.payment_platform)
                .ok()
                .and_then(|platform| {
                    self.deps
                        .erc20
                        .as_ref()
                        .and_then(|driver| driver.network(&platform.network).ok().cloned())
                });
            let Some(network) = network else {
                continue;
            };
            self.rechecking.insert(id.clone());
            let check = async move {
                let check =
                    check_transfer(&network, &expected(&held.message), RECHECK_TIMEOUT).await;
                (check, held)
            };
            ctx.spawn(
                check
                    .into_actor(self)
                    .map(move |(check, held), actor, ctx| {
                        actor.rechecking.remove(&id);
                        actor.apply_recheck(&id, check, held, ctx);
                    }),
            );
        }
    }

    fn apply_recheck(
        &mut self,
        id: &str,
        check: TransferCheck,
        held: UnverifiedPayment,
        ctx: &mut Context<Self>,
    ) {
        match check {
            TransferCheck::Confirmed { block } => {
                tracing::info!(payment_id = %id, block, "erc20 payment confirmed on chain");
                match self.record_payment(&held.message) {
                    Ok(()) => self.spawn_flush(ctx, "a confirmed payment"),
                    Err(error) => {
                        tracing::error!(payment_id = %id, %error.message, "recording a confirmed payment failed")
                    }
                }
            }
            TransferCheck::Invalid(reason) => {
                tracing::warn!(payment_id = %id, %reason, "erc20 payment refused after its check on chain");
                let mut writes = Writes::new();
                writes.remove(format!("verify/{id}"));
                match self.deps.commit(writes) {
                    Ok(()) => {
                        self.state.unverified.remove(id);
                    }
                    Err(error) => {
                        tracing::error!(payment_id = %id, %error.message, "dropping a refused payment failed")
                    }
                }
            }
            TransferCheck::Pending(status) => {
                if let Some(entry) = self.state.unverified.get_mut(id) {
                    entry.status = status;
                }
            }
        }
    }
}
