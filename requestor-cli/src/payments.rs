//! Paying providers: a background task per session that follows the debit-note
//! and invoice events of the requestor's daemon and accepts, from the session's
//! allocation, the documents of this session's agreements as they arrive (so
//! agreements are never killed for slow acceptance). It records what was
//! accepted per agreement and notices when the allocation cannot cover a
//! document (the budget is exhausted).
//!
//! It never accepts blindly: each agreement has a limit (its share of the
//! job's budget, or `--max-per-agreement`), and a document above it, or above
//! what the agreement's linear price allows for the time since approval
//! (`golem_model::pricing`), is rejected with the reason instead of being
//! charged to the shared allocation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use golem_client::GolemClient;
use golem_model::payment::{PaymentEvent, PaymentEventType};
use golem_model::pricing::{reported_usage, LinearPricing};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::events::{Event, EventSink};
use crate::market::lock;

/// What this session owes and paid on one agreement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgreementPayments {
    pub provider_id: String,
    pub provider_name: String,
    /// The highest debit-note total accepted (debit notes are cumulative).
    pub debit_notes_accepted: Decimal,
    pub invoice_amount: Option<Decimal>,
    pub invoice_accepted: bool,
    /// Set when a document could not be accepted.
    pub refused: Option<String>,
}

/// What this session agreed to pay on one agreement, at most.
#[derive(Debug, Clone)]
struct Limits {
    /// The agreement's share of the job's budget.
    limit: Decimal,
    /// The agreed price and approval time, read once from the agreement.
    price: Option<(LinearPricing, DateTime<Utc>)>,
}

#[derive(Default)]
struct Ledger {
    agreements: HashMap<String, AgreementPayments>,
    limits: HashMap<String, Limits>,
    budget_exhausted: Option<String>,
}

/// Which document a refusal is about.
#[derive(Clone, Copy)]
enum Document {
    DebitNote,
    Invoice,
}

impl Document {
    fn name(self) -> &'static str {
        match self {
            Document::DebitNote => "debit note",
            Document::Invoice => "invoice",
        }
    }
}

/// Why this session refuses a document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// Above this agreement's share of the budget: more work would overspend.
    OverShare(String),
    /// Above what the agreed price allows for the time and usage so far.
    OverPrice(String),
    /// The agreement's price cannot be read, so the document cannot be checked.
    Unchecked(String),
}

impl Refusal {
    fn message(&self) -> &str {
        match self {
            Refusal::OverShare(message)
            | Refusal::OverPrice(message)
            | Refusal::Unchecked(message) => message,
        }
    }
}

/// Why `amount` cannot be accepted on an agreement limited by `limit` and
/// priced by `price`, if it cannot. Activities of an invoice: this session
/// creates one per agreement.
fn refusal(
    document: Document,
    id: &str,
    amount: Decimal,
    limit: Decimal,
    price: Option<&(LinearPricing, DateTime<Utc>)>,
    reported: Vec<Decimal>,
    now: DateTime<Utc>,
) -> Option<Refusal> {
    let what = document.name();
    if amount > limit {
        return Some(Refusal::OverShare(format!(
            "{what} {id} asks {} GLM, above this agreement's share of the budget ({} GLM)",
            amount.normalize(),
            limit.normalize()
        )));
    }
    let (pricing, approved) = price?;
    pricing
        .check_amount(amount, *approved, now, &[reported])
        .err()
        .map(|error| Refusal::OverPrice(format!("{what} {id} is above the agreed price: {error}")))
}

/// The session's payment follower; stops when dropped.
pub struct Payments {
    ledger: Arc<Mutex<Ledger>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Payments {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Payments {
    /// Follow events from now on for `allocation_id`.
    pub fn start(client: GolemClient, allocation_id: String, events: EventSink) -> Payments {
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let since = chrono::Utc::now() - chrono::Duration::seconds(1);
        let tasks = [false, true]
            .into_iter()
            .map(|invoices| {
                let follower = Follower {
                    client: client.clone(),
                    allocation_id: allocation_id.clone(),
                    ledger: ledger.clone(),
                    events: events.clone(),
                };
                tokio::spawn(follower.run(invoices, since))
            })
            .collect();
        Payments { ledger, tasks }
    }

    /// Pay this agreement's documents from now on, up to `limit` GLM in all.
    pub fn track(
        &self,
        agreement_id: &str,
        provider_id: &str,
        provider_name: &str,
        limit: Decimal,
    ) {
        let mut ledger = lock(&self.ledger);
        ledger
            .limits
            .entry(agreement_id.to_string())
            .or_insert(Limits { limit, price: None });
        ledger
            .agreements
            .entry(agreement_id.to_string())
            .or_insert_with(|| AgreementPayments {
                provider_id: provider_id.to_string(),
                provider_name: provider_name.to_string(),
                ..AgreementPayments::default()
            });
    }

    pub fn budget_exhausted(&self) -> Option<String> {
        lock(&self.ledger).budget_exhausted.clone()
    }

    pub fn snapshot(&self) -> HashMap<String, AgreementPayments> {
        lock(&self.ledger).agreements.clone()
    }

    /// Wait until every agreement in `agreement_ids` has its invoice accepted
    /// (or refused), for at most `timeout`; the ids still waiting.
    pub async fn wait_invoices(&self, agreement_ids: &[String], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let waiting: Vec<String> = {
                let ledger = lock(&self.ledger);
                agreement_ids
                    .iter()
                    .filter(|id| {
                        ledger
                            .agreements
                            .get(*id)
                            .is_none_or(|a| !a.invoice_accepted && a.refused.is_none())
                    })
                    .cloned()
                    .collect()
            };
            if waiting.is_empty() || Instant::now() >= deadline {
                return waiting;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct Follower {
    client: GolemClient,
    allocation_id: String,
    ledger: Arc<Mutex<Ledger>>,
    events: EventSink,
}

impl Follower {
    async fn run(self, invoices: bool, since: chrono::DateTime<chrono::Utc>) {
        let mut after = since.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        loop {
            let batch = match self
                .client
                .payment_events(invoices, Some(&after), 1.0, 100)
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::debug!(%error, "payment events failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for event in batch {
                after = event
                    .event_date
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                self.handle(event).await;
            }
        }
    }

    async fn handle(&self, event: PaymentEvent) {
        match event.event_type {
            PaymentEventType::DebitNoteReceivedEvent => {
                let Some(id) = event.debit_note_id else {
                    return;
                };
                let Ok(note) = self.client.debit_note(&id).await else {
                    return;
                };
                let Some(name) = self.ours(&note.agreement_id) else {
                    return;
                };
                let amount = note.total_amount_due;
                if self.accepted_at_least(&note.agreement_id, amount) {
                    return;
                }
                let reported = reported_usage(note.usage_counter_vector.as_ref());
                if let Some(reason) = self
                    .refusal(
                        Document::DebitNote,
                        &id,
                        &note.agreement_id,
                        amount,
                        reported,
                    )
                    .await
                {
                    if let Err(error) = self.client.reject_debit_note(&id, reason.message()).await {
                        tracing::warn!(debit_note_id = %id, %error, "rejecting a debit note failed");
                    }
                    self.refused(&note.agreement_id, name, reason);
                    return;
                }
                match self
                    .client
                    .accept_debit_note(&id, &amount.to_string(), &self.allocation_id)
                    .await
                {
                    Ok(()) => {
                        if let Some(entry) =
                            lock(&self.ledger).agreements.get_mut(&note.agreement_id)
                        {
                            entry.debit_notes_accepted = entry.debit_notes_accepted.max(amount);
                        }
                        self.events.emit(Event::DebitNoteAccepted {
                            agreement_id: note.agreement_id,
                            provider_name: name,
                            amount: amount.to_string(),
                        });
                    }
                    Err(error) => {
                        let refusal = self
                            .accept_failed(&note.agreement_id, amount, error.to_string())
                            .await;
                        self.refused(&note.agreement_id, name, refusal);
                    }
                }
            }
            PaymentEventType::InvoiceReceivedEvent => {
                let Some(id) = event.invoice_id else { return };
                let Ok(invoice) = self.client.invoice(&id).await else {
                    return;
                };
                let Some(name) = self.ours(&invoice.agreement_id) else {
                    return;
                };
                if let Some(entry) = lock(&self.ledger).agreements.get_mut(&invoice.agreement_id) {
                    entry.invoice_amount = Some(invoice.amount);
                }
                if let Some(reason) = self
                    .refusal(
                        Document::Invoice,
                        &id,
                        &invoice.agreement_id,
                        invoice.amount,
                        Vec::new(),
                    )
                    .await
                {
                    if let Err(error) = self.client.reject_invoice(&id, reason.message()).await {
                        tracing::warn!(invoice_id = %id, %error, "rejecting an invoice failed");
                    }
                    self.refused(&invoice.agreement_id, name, reason);
                    return;
                }
                match self
                    .client
                    .accept_invoice(&id, &invoice.amount.to_string(), &self.allocation_id)
                    .await
                {
                    Ok(()) => {
                        if let Some(entry) =
                            lock(&self.ledger).agreements.get_mut(&invoice.agreement_id)
                        {
                            entry.invoice_accepted = true;
                        }
                        self.events.emit(Event::InvoiceAccepted {
                            agreement_id: invoice.agreement_id,
                            provider_name: name,
                            amount: invoice.amount.to_string(),
                        });
                    }
                    Err(error) => {
                        let refusal = self
                            .accept_failed(&invoice.agreement_id, invoice.amount, error.to_string())
                            .await;
                        self.refused(&invoice.agreement_id, name, refusal);
                    }
                }
            }
            _ => {}
        }
    }

    /// Why a document of `amount` on `agreement_id` must be rejected, if it must.
    async fn refusal(
        &self,
        document: Document,
        id: &str,
        agreement_id: &str,
        amount: Decimal,
        reported: Vec<Decimal>,
    ) -> Option<Refusal> {
        let known = lock(&self.ledger).limits.get(agreement_id).cloned()?;
        let limits = match known.price {
            Some(_) => known,
            None => {
                let price = match self.client.agreement(agreement_id).await {
                    Ok(agreement) => match LinearPricing::of_agreement(&agreement) {
                        Ok(pricing) => Some((
                            pricing,
                            agreement.approved_date.unwrap_or(agreement.timestamp),
                        )),
                        Err(error) => {
                            return Some(Refusal::Unchecked(format!(
                                "{} {id} cannot be checked: {error}",
                                document.name()
                            )))
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%agreement_id, %error, "reading the agreement's price failed; checking the limit only");
                        None
                    }
                };
                let mut ledger = lock(&self.ledger);
                let entry = ledger.limits.get_mut(agreement_id)?;
                entry.price = price;
                entry.clone()
            }
        };
        refusal(
            document,
            id,
            amount,
            limits.limit,
            limits.price.as_ref(),
            reported,
            Utc::now(),
        )
    }

    fn ours(&self, agreement_id: &str) -> Option<String> {
        lock(&self.ledger)
            .agreements
            .get(agreement_id)
            .map(|entry| entry.provider_name.clone())
    }

    fn accepted_at_least(&self, agreement_id: &str, amount: Decimal) -> bool {
        lock(&self.ledger)
            .agreements
            .get(agreement_id)
            .is_some_and(|entry| entry.debit_notes_accepted >= amount && amount > Decimal::ZERO)
    }

    /// Classify a failed accept of `amount` (the agreement's total so far):
    /// when the allocation no longer covers what it adds to the debit notes
    /// accepted before, the budget is spent (more work could not be paid for).
    async fn accept_failed(&self, agreement_id: &str, amount: Decimal, message: String) -> Refusal {
        let accepted = lock(&self.ledger)
            .agreements
            .get(agreement_id)
            .map_or(Decimal::ZERO, |entry| entry.debit_notes_accepted);
        let needed = amount - accepted;
        match self.client.allocation(&self.allocation_id).await {
            Ok(allocation) if allocation.remaining_amount < needed => Refusal::OverShare(message),
            _ => Refusal::Unchecked(message),
        }
    }

    fn refused(&self, agreement_id: &str, provider_name: String, refusal: Refusal) {
        let message = refusal.message().to_string();
        let mut ledger = lock(&self.ledger);
        if let Some(entry) = ledger.agreements.get_mut(agreement_id) {
            entry.refused = Some(message.clone());
        }
        if matches!(refusal, Refusal::OverShare(_)) {
            ledger
                .budget_exhausted
                .get_or_insert_with(|| message.clone());
        }
        drop(ledger);
        self.events.emit(Event::PaymentRefused {
            agreement_id: agreement_id.to_string(),
            provider_name,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golem_model::properties::Properties;
    use serde_json::json;

    fn dec(text: &str) -> Decimal {
        text.parse().expect("a decimal")
    }

    #[test]
    fn documents_above_the_agreement_share_or_the_agreed_price_are_refused() {
        let pricing = LinearPricing::of_offer(
            &Properties::from_json(json!({
                "golem.com.pricing.model.linear.coeffs": [0.0, 0.01, 0.1],
                "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
            }))
            .expect("properties"),
        )
        .expect("a price");
        let approved = Utc::now();
        let price = (pricing, approved);
        // 50 s (+10 s grace) × 0.01 + 0.1 = 0.7, +1% = 0.707.
        let at = approved + chrono::Duration::seconds(50);
        let check = |amount: &str, limit: &str| {
            refusal(
                Document::DebitNote,
                "dn",
                dec(amount),
                dec(limit),
                Some(&price),
                Vec::new(),
                at,
            )
        };
        assert_eq!(check("0.7", "1"), None);
        let over_share = check("0.7", "0.5").expect("refused");
        assert!(
            matches!(over_share, Refusal::OverShare(_)),
            "{over_share:?}"
        );
        assert!(
            over_share.message().contains("share of the budget"),
            "{over_share:?}"
        );
        let over_price = check("0.8", "5").expect("refused");
        assert!(
            matches!(over_price, Refusal::OverPrice(_)),
            "{over_price:?}"
        );
        assert!(
            over_price.message().contains("agreed price"),
            "{over_price:?}"
        );
        // Without a known price, the share alone applies.
        assert_eq!(
            refusal(
                Document::Invoice,
                "inv",
                dec("0.9"),
                dec("1"),
                None,
                Vec::new(),
                at
            ),
            None
        );
    }
}
