//! The one definition of what this provider earned, shared by `golem-provider
//! status` and the dashboard: each invoice of this agent's agreements counts
//! by its status at the daemon, and the totals are cumulative steps of one
//! road (an invoice that was paid was also accepted, and issued):
//!
//! - **invoiced**: every invoice issued, except cancelled ones;
//! - **accepted**: the requestor accepted it (`Accepted`, `Settled`, or
//!   `Failed`: accepted, but the payment failed);
//! - **paid**: `Settled`;
//! - **rejected**: the requestor refused it;
//! - **late**: invoiced, neither paid nor rejected, and past its due date.
//!
//! It does no IO: callers hand it the daemon's invoices (or, when the daemon
//! cannot be asked, the invoices the agent's state knows of, as issued).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use golem_model::payment::{DocumentStatus, Invoice};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::state::AgentState;

/// What [`totals`] and [`daily`] need of one invoice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceFacts {
    pub invoice_id: String,
    pub agreement_id: String,
    pub platform: String,
    pub amount: Decimal,
    pub status: DocumentStatus,
    pub issued_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// Where an invoice stands on the road issued → accepted → paid, or off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Standing {
    Issued,
    Accepted,
    Paid,
    Rejected,
    Late,
    Cancelled,
}

impl InvoiceFacts {
    pub fn from_invoice(invoice: &Invoice) -> InvoiceFacts {
        InvoiceFacts {
            invoice_id: invoice.invoice_id.clone(),
            agreement_id: invoice.agreement_id.clone(),
            platform: invoice.payment_platform.clone(),
            amount: invoice.amount,
            status: invoice.status,
            issued_at: invoice.timestamp,
            due_at: invoice.payment_due_date,
        }
    }

    fn invoiced(&self) -> bool {
        self.status != DocumentStatus::Cancelled
    }

    fn accepted(&self) -> bool {
        matches!(
            self.status,
            DocumentStatus::Accepted | DocumentStatus::Settled | DocumentStatus::Failed
        )
    }

    fn paid(&self) -> bool {
        self.status == DocumentStatus::Settled
    }

    fn rejected(&self) -> bool {
        self.status == DocumentStatus::Rejected
    }

    fn late(&self, now: DateTime<Utc>) -> bool {
        self.invoiced() && !self.paid() && !self.rejected() && self.due_at < now
    }

    /// The one word a table shows for this invoice.
    pub fn standing(&self, now: DateTime<Utc>) -> Standing {
        if !self.invoiced() {
            Standing::Cancelled
        } else if self.paid() {
            Standing::Paid
        } else if self.rejected() {
            Standing::Rejected
        } else if self.late(now) {
            Standing::Late
        } else if self.accepted() {
            Standing::Accepted
        } else {
            Standing::Issued
        }
    }
}

/// A number of invoices and their sum, in GLM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    pub count: usize,
    pub amount: Decimal,
}

impl Tally {
    fn add(&mut self, amount: Decimal) {
        self.count += 1;
        self.amount += amount;
    }
}

/// The earnings of a set of invoices, by the module's definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub invoiced: Tally,
    pub accepted: Tally,
    pub paid: Tally,
    pub rejected: Tally,
    pub late: Tally,
}

pub fn totals<'a>(
    invoices: impl IntoIterator<Item = &'a InvoiceFacts>,
    now: DateTime<Utc>,
) -> Totals {
    let mut totals = Totals::default();
    for invoice in invoices {
        let steps = [
            (invoice.invoiced(), &mut totals.invoiced),
            (invoice.accepted(), &mut totals.accepted),
            (invoice.paid(), &mut totals.paid),
            (invoice.rejected(), &mut totals.rejected),
            (invoice.late(now), &mut totals.late),
        ];
        for (counts, tally) in steps {
            if counts {
                tally.add(invoice.amount);
            }
        }
    }
    totals
}

/// One day of the chart: what was invoiced and paid on invoices issued that
/// day (UTC), per payment platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    pub platforms: BTreeMap<String, Totals>,
}

/// The last `days` days up to `now`'s date, oldest first, every day present
/// (an empty one has no platforms).
pub fn daily(invoices: &[InvoiceFacts], now: DateTime<Utc>, days: u32) -> Vec<Day> {
    let today = now.date_naive();
    (0..days)
        .rev()
        .map(|back| {
            let date = today - chrono::Days::new(u64::from(back));
            let mut platforms: BTreeMap<String, Vec<&InvoiceFacts>> = BTreeMap::new();
            for invoice in invoices.iter().filter(|i| i.issued_at.date_naive() == date) {
                platforms
                    .entry(invoice.platform.clone())
                    .or_default()
                    .push(invoice);
            }
            Day {
                date,
                platforms: platforms
                    .into_iter()
                    .map(|(platform, list)| (platform, totals(list, now)))
                    .collect(),
            }
        })
        .collect()
}

/// The daemon's invoices of this agent's agreements (those in `state`).
pub fn ours(state: &AgentState, invoices: &[Invoice]) -> Vec<InvoiceFacts> {
    let agreements: HashSet<&String> = state.agreements.keys().collect();
    invoices
        .iter()
        .filter(|invoice| agreements.contains(&invoice.agreement_id))
        .map(InvoiceFacts::from_invoice)
        .collect()
}

/// The sent invoices the agent's state knows of, counted as issued: what can
/// be said without the daemon.
pub fn from_state(state: &AgentState) -> Vec<InvoiceFacts> {
    state
        .agreements
        .values()
        .filter_map(|agreement| {
            let invoice = agreement.invoice.as_ref().filter(|invoice| invoice.sent)?;
            Some(InvoiceFacts {
                invoice_id: invoice.invoice_id.clone(),
                agreement_id: agreement.agreement_id.clone(),
                platform: String::new(),
                amount: invoice.amount,
                status: DocumentStatus::Issued,
                issued_at: agreement.approved_at,
                due_at: DateTime::<Utc>::MAX_UTC,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn invoice(id: &str, amount: &str, status: DocumentStatus, due_in_sec: i64) -> InvoiceFacts {
        let now = now();
        InvoiceFacts {
            invoice_id: id.into(),
            agreement_id: format!("a-{id}"),
            platform: "dummy-local-tglm".into(),
            amount: amount.parse().unwrap(),
            status,
            issued_at: now - chrono::Duration::hours(1),
            due_at: now + chrono::Duration::seconds(due_in_sec),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-05T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_settled_invoice_counts_as_invoiced_accepted_and_paid() {
        let totals = totals(&[invoice("1", "1.5", DocumentStatus::Settled, -60)], now());
        for (what, tally) in [
            ("invoiced", totals.invoiced),
            ("accepted", totals.accepted),
            ("paid", totals.paid),
        ] {
            assert_eq!(tally.amount, Decimal::new(15, 1), "{what}");
            assert_eq!(tally.count, 1, "{what}");
        }
        assert_eq!(
            totals.late,
            Tally::default(),
            "paid past its due date is not late"
        );
        assert_eq!(totals.rejected, Tally::default());
    }

    #[test]
    fn late_rejected_and_cancelled_follow_the_definition() {
        let invoices = [
            invoice("issued", "1", DocumentStatus::Issued, 60),
            invoice("late", "2", DocumentStatus::Accepted, -60),
            invoice("late-unaccepted", "4", DocumentStatus::Received, -60),
            invoice("rejected", "8", DocumentStatus::Rejected, -60),
            invoice("cancelled", "16", DocumentStatus::Cancelled, -60),
            invoice("failed", "32", DocumentStatus::Failed, 60),
        ];
        let totals = totals(&invoices, now());
        assert_eq!(totals.invoiced.amount, Decimal::from(47));
        assert_eq!(totals.accepted.amount, Decimal::from(34));
        assert_eq!(totals.paid.amount, Decimal::ZERO);
        assert_eq!(totals.late.amount, Decimal::from(6));
        assert_eq!(totals.rejected.amount, Decimal::from(8));
        let standings: Vec<Standing> = invoices.iter().map(|i| i.standing(now())).collect();
        assert_eq!(
            standings,
            [
                Standing::Issued,
                Standing::Late,
                Standing::Late,
                Standing::Rejected,
                Standing::Cancelled,
                Standing::Accepted
            ]
        );
    }

    #[test]
    fn daily_has_every_day_and_splits_platforms() {
        let mut old = invoice("old", "1", DocumentStatus::Settled, 0);
        old.issued_at = now() - chrono::Duration::days(3);
        let mut other = invoice("other", "2", DocumentStatus::Accepted, 60);
        other.platform = "erc20-holesky-tglm".into();
        let today = invoice("today", "4", DocumentStatus::Settled, 60);
        let ancient = {
            let mut ancient = invoice("ancient", "8", DocumentStatus::Settled, 0);
            ancient.issued_at = now() - chrono::Duration::days(40);
            ancient
        };
        let days = daily(&[old, other, today, ancient], now(), 30);
        assert_eq!(days.len(), 30);
        assert_eq!(days[29].date, now().date_naive());
        assert_eq!(days[29].platforms.len(), 2);
        assert_eq!(
            days[29].platforms["dummy-local-tglm"].paid.amount,
            Decimal::from(4)
        );
        assert_eq!(
            days[29].platforms["erc20-holesky-tglm"].accepted.amount,
            Decimal::from(2)
        );
        assert_eq!(
            days[26].platforms["dummy-local-tglm"].paid.amount,
            Decimal::from(1)
        );
        let all: usize = days.iter().map(|day| day.platforms.len()).sum();
        assert_eq!(all, 3, "the invoice of 40 days ago is outside the chart");
    }
}
