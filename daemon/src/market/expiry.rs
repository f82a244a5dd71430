//! The sweep, on the market actor's timer: drop what has expired (remote
//! offers and tombstones, subscriptions' pending events, scan iterators),
//! expire unconfirmed and unapproved agreements past their `validTo`, and
//! every [`COMPACTION_PERIOD`] let retention drop old history.

use chrono::{DateTime, Utc};
use golem_model::market::AgreementState;

use super::actor::MarketActor;
use super::agreement_records::update_agreement;
use super::db::Db;
use super::records::{now, Role};
use super::retention::{compact, prune_agreement_history, RetentionLimits, COMPACTION_PERIOD};
use super::state::State;

impl MarketActor {
    pub(crate) fn sweep(&mut self) {
        let current = now();
        let db = &self.core.db;
        let state = &mut self.state;
        let events_dropped =
            expire_offers(db, state, current) | expire_demand_events(db, state, current);
        expire_tombstones(db, state, current);
        let agreements_expired = expire_agreements(db, state, current);
        self.scans.sweep(current);
        let due = state
            .last_compaction
            .is_none_or(|last| (current - last).to_std().unwrap_or_default() >= COMPACTION_PERIOD);
        if due {
            state.last_compaction = Some(current);
            let policy = self.core.config.retention;
            compact(db, state, current, &RetentionLimits::from_policy(&policy));
            let open_invoices = self.core.open_invoices.get().map(|port| port.as_ref());
            prune_agreement_history(
                db,
                &mut state.scheduled_history,
                current,
                &policy,
                open_invoices,
            );
            self.log_sizes();
        }
        if events_dropped {
            self.core.signals.bump_events();
        }
        if agreements_expired {
            self.core.signals.bump_agreements();
        }
    }
}

impl MarketActor {
    /// One debug line per compaction with what the market holds in memory,
    /// so that an operator (or a soak) sees which part grows with the jobs
    /// (`RUST_LOG=golem_daemon::market=debug`).
    fn log_sizes(&self) {
        let state = &self.state;
        let (event_queues, queued_events) = state.events.sizes();
        tracing::debug!(
            offers = state.offers.len(),
            tombstones = state.tombstones.len(),
            demands = state.demands.len(),
            proposals = state.proposals.values().map(|of| of.len()).sum::<usize>(),
            proposal_index = state.proposal_index.len(),
            agreements = state.agreements.len(),
            agreement_events = state.agreement_events.len(),
            finished_agreements = state.finished_agreements.len(),
            finished_demands = state.finished_demands.len(),
            offer_arrivals = state.offer_arrivals.len(),
            demand_arrivals = state.demand_arrivals.len(),
            remote_offers_by_node = state.remote_offers_by_node.len(),
            property_keys = state.keys.len(),
            event_queues,
            queued_events,
            live_scans = self.scans.live.len(),
            ended_scans = self.scans.ended.len(),
            "market sizes"
        );
    }
}

/// Forget expired offers of other nodes, and drop the pending events of
/// expired offers of ours; true when events were dropped.
fn expire_offers(db: &Db, state: &mut State, current: DateTime<Utc>) -> bool {
    let expired: Vec<(String, bool)> = state
        .offers
        .values()
        .filter(|entry| {
            entry.stored.published.expiration <= current
                && (!entry.stored.local || state.events.contains(entry.id()))
        })
        .map(|entry| (entry.id().to_string(), entry.stored.local))
        .collect();
    let mut events_dropped = false;
    for (id, local) in expired {
        if !local {
            state.remove_offer(&id);
            let _ = db.delete_offer(&id);
        }
        events_dropped |= state.drop_events(db, &id).is_ok();
    }
    events_dropped
}

/// Drop the pending events of expired demands; true when any were dropped.
fn expire_demand_events(db: &Db, state: &mut State, current: DateTime<Utc>) -> bool {
    let expired: Vec<String> = state
        .demands
        .values()
        .filter(|entry| {
            entry.stored.expiration <= current
                && state.events.contains(&entry.stored.demand.demand_id)
        })
        .map(|entry| entry.stored.demand.demand_id.clone())
        .collect();
    let mut events_dropped = false;
    for id in expired {
        events_dropped |= state.drop_events(db, &id).is_ok();
    }
    events_dropped
}

fn expire_tombstones(db: &Db, state: &mut State, current: DateTime<Utc>) {
    let expired: Vec<String> = state
        .tombstones
        .iter()
        .filter(|(_, tombstone)| tombstone.expiration <= current)
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        state.tombstones.remove(&id);
        let _ = db.delete_tombstone(&id);
    }
}

/// Expire unconfirmed and unapproved agreements past their `validTo`; true
/// when any expired.
fn expire_agreements(db: &Db, state: &mut State, current: DateTime<Utc>) -> bool {
    let expired: Vec<(Role, String)> = state
        .agreements
        .iter()
        .filter(|(_, record)| {
            matches!(
                record.agreement.state,
                AgreementState::Proposal | AgreementState::Pending
            ) && record.agreement.valid_to <= current
        })
        .map(|(key, _)| key.clone())
        .collect();
    for (role, id) in &expired {
        if let Err(error) = update_agreement(db, state, *role, id, |record| {
            record.agreement.state = AgreementState::Expired
        }) {
            tracing::warn!(agreement_id = %id, %error, "expiring an agreement failed");
        }
    }
    !expired.is_empty()
}
