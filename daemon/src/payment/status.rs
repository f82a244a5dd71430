//! What `payment status`, `payment driver list` and the accounts endpoints
//! show: per platform, what was requested, accepted, paid and is pending, both
//! ways, plus the allocations. Records that left memory (`retention.rs`) are
//! counted through their totals kept in [`Archived`](super::state::Archived),
//! and so are those that left sled (the stored totals).

use std::collections::BTreeMap;

use golem_model::payment::*;

use super::actor::PaymentActor;
use super::state::Deps;
use super::totals::{add_totals, document_totals};
use super::Platform;

impl PaymentActor {
    /// `payment status`.
    pub(super) fn status_report(&self) -> PaymentStatusReport {
        let state = &self.state;
        let me = self.deps.node_id;
        let mut report: BTreeMap<String, PlatformStatus> = BTreeMap::new();
        let mut left = state.archived.clone();
        left.add(&state.pruned);
        let mut totals = document_totals(me, state.debit_notes.values(), state.invoices.values());
        add_totals(&mut totals, left.documents.clone());
        for ((outgoing, platform), (requested, accepted)) in totals {
            let status = entry(&mut report, &platform);
            let way = if outgoing {
                &mut status.outgoing
            } else {
                &mut status.incoming
            };
            way.requested += requested;
            way.accepted += accepted;
        }
        for payment in &state.payments {
            let status = entry(&mut report, &payment.payment_platform);
            if payment.payer_id == me {
                status.outgoing.paid += payment.amount;
            }
            if payment.payee_id == me {
                status.incoming.paid += payment.amount;
            }
        }
        for ((outgoing, platform), amount) in &left.paid {
            let status = entry(&mut report, platform);
            if *outgoing {
                status.outgoing.paid += amount;
            } else {
                status.incoming.paid += amount;
            }
        }
        for order in state.orders.values() {
            let status = entry(&mut report, &order.platform);
            status.outgoing.pending += order.amount;
            status.pending_payments.push(order.clone());
        }
        // Payments reported to us whose transaction is not confirmed yet.
        for held in state.unverified.values() {
            let payment = &held.message.payment;
            entry(&mut report, &payment.payment_platform)
                .incoming
                .pending += payment.amount;
        }
        for (platform, released) in &left.released_allocations {
            entry(&mut report, platform).allocations.released += released;
        }
        let now = chrono::Utc::now();
        for record in state.allocations.values() {
            let allocation = &record.allocation;
            let status = entry(&mut report, &allocation.payment_platform);
            // Past its timeout it holds nothing, also before the sweep releases it.
            if record.released || super::allocations::is_expired(allocation, now) {
                status.allocations.released += 1;
                continue;
            }
            status.allocations.count += 1;
            status.allocations.total += allocation.total_amount;
            status.allocations.spent += allocation.spent_amount;
            status.allocations.remaining += allocation.remaining_amount;
        }
        PaymentStatusReport {
            late_payments: self.late_payments(),
            node_id: me,
            platforms: report
                .into_values()
                .map(PlatformStatus::normalized)
                .collect(),
        }
    }
}

fn entry<'a>(
    report: &'a mut BTreeMap<String, PlatformStatus>,
    platform: &str,
) -> &'a mut PlatformStatus {
    report
        .entry(platform.to_string())
        .or_insert_with(|| PlatformStatus::new(platform))
}

/// Accounts of this node: one per platform, sending only where a driver runs.
pub(super) fn accounts(deps: &Deps, requestor: bool) -> Vec<Account> {
    let drivers = deps.drivers.names();
    Platform::known()
        .into_iter()
        .map(|platform| {
            let available = drivers.contains(&platform.driver.as_str());
            Account {
                address: deps.our_address(),
                send: requestor && available,
                receive: !requestor,
                platform: platform.name,
                driver: platform.driver,
                network: platform.network,
                token: platform.token,
            }
        })
        .collect()
}

/// What `payment driver list` shows.
pub(super) fn drivers_report(deps: &Deps) -> Vec<serde_json::Value> {
    deps.drivers
        .all()
        .iter()
        .flat_map(|driver| driver.describe())
        .collect()
}
