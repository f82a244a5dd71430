//! Payment deadlines from the agreement's `golem.com.scheme.payu.payment-timeout-sec?`,
//! enforced on both sides. The requestor's node gives each pending payment of
//! an accepted invoice its due date (acceptance + timeout, or the invoice's
//! `paymentDueDate` when earlier), stored with the order so a restart keeps
//! it; orders are handed to drivers at once, earliest due first, and one past
//! its due date is logged once as a warning. The provider's node records, for
//! each invoice it issued that was accepted, when its payment is due
//! (`due/<invoice>`); the expiry timer marks the requestor a late payer once
//! that passes with the invoice not settled (a warning, persisted, in
//! `payment status` and `GET /local-api/v1/late-payments`). It only reads and
//! reports: it never moves money nor changes a document.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use golem_model::market::Agreement;
use golem_model::payment::*;
use golem_model::GolemError;

use super::actor::PaymentActor;
use super::state::{PaymentOrder, Writes};

const DUE_PREFIX: &str = "due/";

/// The payment timeout the agreement's offer states, in seconds.
pub(super) fn payment_timeout_sec(agreement: &Agreement) -> Option<u64> {
    let value = agreement.offer.properties.get(PAYMENT_TIMEOUT_PROPERTY)?;
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|v| *v >= 0.0).map(|v| v as u64))
}

/// When the payment of `invoice`, accepted at `accepted`, is due.
pub(super) fn due_date(
    timeout_sec: Option<u64>,
    invoice: &Invoice,
    accepted: DateTime<Utc>,
) -> DateTime<Utc> {
    match timeout_sec {
        Some(seconds) => {
            let by_timeout = accepted + Duration::seconds(seconds.min(i64::MAX as u64) as i64);
            by_timeout.min(invoice.payment_due_date)
        }
        None => invoice.payment_due_date,
    }
}

impl PaymentActor {
    /// Requestor: the due date of the payment of `invoice`, accepted now.
    pub(super) fn payment_due_of(&self, invoice: &Invoice) -> DateTime<Utc> {
        let timeout = self
            .deps
            .agreements
            .agreement(&invoice.agreement_id)
            .ok()
            .and_then(|agreement| payment_timeout_sec(&agreement));
        due_date(timeout, invoice, Utc::now())
    }

    /// Requestor: warn once about each pending payment past its due date.
    pub(super) fn warn_overdue_orders(&mut self) {
        for order in newly_overdue(&self.state.orders, &mut self.overdue_warned, Utc::now()) {
            let due = order.due.map(|due| due.to_rfc3339()).unwrap_or_default();
            tracing::warn!(payment_id = %order.payment_id, invoice_id = %order.invoice_id,
                agreement_id = %order.agreement_id, %due, status = %order.status,
                "payment past its due date (payment-timeout-sec of the agreement); the driver is still on it");
        }
    }

    /// Provider: the requestor accepted invoice `invoice_id` this node issued;
    /// record when its payment is due when the agreement has a payment timeout.
    pub(super) fn track_payment_due(&mut self, invoice_id: &str) -> Result<(), GolemError> {
        if self.state.payment_dues.contains_key(invoice_id) {
            return Ok(()); // an acceptance delivered again
        }
        let invoice: Invoice = self.document(invoice_id)?;
        if invoice.issuer_id != self.deps.node_id || invoice.status != DocumentStatus::Accepted {
            return Ok(());
        }
        let Some(timeout) = self
            .deps
            .agreements
            .agreement(&invoice.agreement_id)
            .ok()
            .and_then(|agreement| payment_timeout_sec(&agreement))
        else {
            return Ok(());
        };
        let accepted_at = Utc::now();
        let record = PaymentDue {
            invoice_id: invoice.invoice_id.clone(),
            agreement_id: invoice.agreement_id.clone(),
            payer_id: invoice.recipient_id,
            amount: invoice.amount,
            accepted_at,
            payment_timeout_sec: timeout,
            due: due_date(Some(timeout), &invoice, accepted_at),
            late_since: None,
            settled_at: None,
        };
        self.save_due(record)
    }

    fn save_due(&mut self, record: PaymentDue) -> Result<(), GolemError> {
        let mut writes = Writes::new();
        writes.put(format!("{DUE_PREFIX}{}", record.invoice_id), &record)?;
        self.commit_now(writes)?;
        self.state
            .payment_dues
            .insert(record.invoice_id.clone(), record);
        Ok(())
    }

    /// Provider (expiry timer): mark late payers, note late payments that
    /// arrived, forget dues paid in time.
    pub(super) fn check_payment_dues(&mut self) {
        let now = Utc::now();
        let open: Vec<PaymentDue> = self
            .state
            .payment_dues
            .values()
            .filter(|record| record.settled_at.is_none())
            .cloned()
            .collect();
        for mut record in open {
            let settled = matches!(
                self.find_document::<Invoice>(&record.invoice_id),
                Ok(Some(invoice)) if invoice.status == DocumentStatus::Settled
            );
            let result = if settled && record.late_since.is_none() {
                self.forget_due(&record.invoice_id)
            } else if settled {
                record.settled_at = Some(now);
                tracing::info!(invoice_id = %record.invoice_id, payer_id = %record.payer_id,
                    due = %record.due.to_rfc3339(), "late payer paid the invoice");
                self.save_due(record)
            } else if record.late_since.is_none() && record.due < now {
                record.late_since = Some(now);
                tracing::warn!(invoice_id = %record.invoice_id, agreement_id = %record.agreement_id,
                    payer_id = %record.payer_id, amount = %record.amount,
                    accepted_at = %record.accepted_at.to_rfc3339(), due = %record.due.to_rfc3339(),
                    payment_timeout_sec = record.payment_timeout_sec,
                    "late payer: the requestor has not paid the accepted invoice within the agreed payment timeout");
                self.save_due(record)
            } else {
                Ok(())
            };
            if let Err(error) = result {
                tracing::warn!(%error.message, "recording a payment due date failed");
            }
        }
    }

    fn forget_due(&mut self, invoice_id: &str) -> Result<(), GolemError> {
        let mut writes = Writes::new();
        writes.remove(format!("{DUE_PREFIX}{invoice_id}"));
        self.commit_now(writes)?;
        self.state.payment_dues.remove(invoice_id);
        Ok(())
    }

    /// Commit and flush at once: a late payer is reported only once it is
    /// on disk. Blocks the actor for one flush, and only on a change of a
    /// due record (an acceptance, a due date passing, a late payment).
    fn commit_now(&self, writes: Writes) -> Result<(), GolemError> {
        self.deps.commit(writes)?;
        self.deps
            .tree
            .flush()
            .map(drop)
            .map_err(|error| GolemError::internal(format!("payment store flush failed: {error}")))
    }

    /// Late payments (paid late or still unpaid), oldest due first.
    pub(super) fn late_payments(&self) -> Vec<PaymentDue> {
        let mut list: Vec<PaymentDue> = self
            .state
            .payment_dues
            .values()
            .filter(|record| record.late_since.is_some())
            .cloned()
            .collect();
        list.sort_by_key(|record| record.due);
        list
    }
}

/// The pending orders past their due date not warned about yet, now noted in
/// `warned`; orders no longer pending leave `warned`, so it never holds more
/// than the pending orders (it held every overdue payment ever made).
fn newly_overdue<'a>(
    orders: &'a BTreeMap<String, PaymentOrder>,
    warned: &mut HashSet<String>,
    now: DateTime<Utc>,
) -> Vec<&'a PaymentOrder> {
    warned.retain(|payment_id| orders.contains_key(payment_id));
    orders
        .values()
        .filter(|order| order.due.is_some_and(|due| due < now))
        .filter(|order| warned.insert(order.payment_id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::invoices::new_order;
    use super::*;

    /// Each overdue order is warned about once, and the set of warned orders
    /// forgets those that were paid (it grew with every late payment).
    #[test]
    fn overdue_orders_are_warned_once_and_forgotten_when_paid() {
        let acceptance: Acceptance = serde_json::from_value(
            serde_json::json!({"totalAmountAccepted": "1", "allocationId": "alloc"}),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let now = Utc::now();
        let mut orders = BTreeMap::new();
        for index in 0..3 {
            let mut order = new_order(&invoice(1), &acceptance, format!("pay{index}"));
            order.due = Some(now - Duration::seconds(1));
            orders.insert(order.payment_id.clone(), order);
        }
        let mut warned = HashSet::new();
        assert_eq!(newly_overdue(&orders, &mut warned, now).len(), 3);
        assert!(newly_overdue(&orders, &mut warned, now).is_empty());
        orders.remove("pay0");
        orders.remove("pay1");
        assert!(newly_overdue(&orders, &mut warned, now).is_empty());
        assert_eq!(warned.len(), 1);
        orders.clear();
        newly_overdue(&orders, &mut warned, now);
        assert!(warned.is_empty());
    }

    fn invoice(due_in_days: i64) -> Invoice {
        let now = Utc::now();
        Invoice {
            invoice_id: "inv".into(),
            issuer_id: golem_model::NodeId::from_bytes([1; 20]),
            recipient_id: golem_model::NodeId::from_bytes([2; 20]),
            payee_addr: String::new(),
            payer_addr: String::new(),
            payment_platform: "dummy-local-tglm".into(),
            timestamp: now,
            agreement_id: "agr".into(),
            activity_ids: Vec::new(),
            amount: Decimal::ONE,
            payment_due_date: now + Duration::days(due_in_days),
            status: DocumentStatus::Received,
        }
    }

    #[test]
    fn the_timeout_is_read_from_the_agreements_offer() {
        let with = |value: serde_json::Value| {
            let mut agreement = crate::payment::tests::agreement();
            agreement.offer.properties = golem_model::properties::Properties::from_json(
                serde_json::json!({ PAYMENT_TIMEOUT_PROPERTY: value }),
            )
            .unwrap();
            payment_timeout_sec(&agreement)
        };
        assert_eq!(with(serde_json::json!(120)), Some(120));
        assert_eq!(with(serde_json::json!(90.5)), Some(90));
        assert_eq!(with(serde_json::json!(-1)), None);
        assert_eq!(with(serde_json::json!("soon")), None);
        assert_eq!(
            payment_timeout_sec(&crate::payment::tests::agreement()),
            None
        );
    }

    #[test]
    fn the_timeout_after_acceptance_or_the_invoice_date_whichever_first() {
        let accepted = Utc::now();
        let far = invoice(1);
        assert_eq!(
            due_date(Some(120), &far, accepted),
            accepted + Duration::seconds(120)
        );
        assert_eq!(due_date(None, &far, accepted), far.payment_due_date);
        let near = invoice(0);
        assert_eq!(due_date(Some(7200), &near, accepted), near.payment_due_date);
    }
}
