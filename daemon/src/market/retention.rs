//! What the market forgets, so that memory holds live work and not history
//! (a node that ran 100,000 agreements must answer as fast as a new one):
//!
//! - agreement events older than [`RETENTION`] leave memory and sled (clients
//!   page them within seconds; the provider agent within one long-poll);
//! - an agreement in a final state (Terminated, Rejected, Cancelled, Expired)
//!   leaves memory [`RETENTION`] after compaction first saw it final; its record
//!   stays in sled, where `get_agreement` (and so payment) still reads it;
//! - a demand that is unsubscribed or expired leaves memory and sled
//!   [`RETENTION`] after it ended, with its proposals and events;
//! - a proposal leaves memory and sled once it is past its negotiation
//!   deadline, or [`RETENTION`] after it was made, whichever comes first
//!   (negotiations take seconds; an offer lives for days).
//!
//! Age alone does not bound memory when agreements come fast, so each kind is
//! also bounded by count ([`RetentionLimits`]): beyond it the oldest leave
//! first (final agreements and ended demands by when they ended, proposals of
//! one subscription by when they were made, agreement events by date). A final agreement that
//! left memory is still answered by id from sled.
//!
//! A final agreement that left memory is noted (`agreement-ended/`) and leaves
//! sled too once it ended more than the history window ago, or once more than
//! the history count are noted, the earliest ended first
//! ([`prune_agreement_history`]), unless payment still has an open invoice
//! for it: accounting needs the agreement until the invoice is settled.
//!
//! It runs from the actor's sweep every [`COMPACTION_PERIOD`]; the windows
//! are the `[retention]` settings.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::Db;
use super::records::{is_final, Role};
use super::state::State;

/// How long finished things stay in memory.
pub(crate) const RETENTION: Duration = Duration::from_secs(3600);
/// How often the sweep compacts.
pub(crate) const COMPACTION_PERIOD: Duration = Duration::from_secs(10);

/// How much history memory keeps: by age, and by count (ended demands
/// leave sled with memory: nothing reads them after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetentionLimits {
    pub max_age: Duration,
    /// Agreement events held (the newest).
    pub max_agreement_events: usize,
    /// Final agreements held (the most recently ended).
    pub max_final_agreements: usize,
    /// Ended demands held with their proposals (the most recently ended).
    pub max_ended_demands: usize,
    /// Proposals held per subscription (the newest).
    pub max_proposals_per_subscription: usize,
}

impl Default for RetentionLimits {
    fn default() -> Self {
        RetentionLimits {
            max_age: RETENTION,
            max_agreement_events: 10_000,
            max_final_agreements: 1_000,
            max_ended_demands: 1_000,
            max_proposals_per_subscription: 1_000,
        }
    }
}

impl RetentionLimits {
    /// The market's part of the `[retention]` settings: final agreements held
    /// by the memory count, agreement events by the events count and age.
    pub(crate) fn from_policy(policy: &crate::retention::RetentionPolicy) -> RetentionLimits {
        RetentionLimits {
            max_age: policy.events_age,
            max_agreement_events: policy.events_count,
            max_final_agreements: policy.memory_count,
            max_ended_demands: policy.memory_count,
            ..RetentionLimits::default()
        }
    }
}

/// Agreements pruned per sweep, so one sweep stays short.
const PRUNE_BATCH: usize = 1_000;

/// Remove from sled the final agreements that ended more than
/// `policy.history_age` before `now`, and the earliest ended beyond the
/// newest `policy.history_count` of the schedule (`scheduled` is its size,
/// kept up to date here); a terminated one stays while `open_invoices` has
/// an open invoice for it (or, without the port, always). How many left.
pub(crate) fn prune_agreement_history(
    db: &Db,
    scheduled: &mut usize,
    now: DateTime<Utc>,
    policy: &crate::retention::RetentionPolicy,
    open_invoices: Option<&dyn crate::ports::OpenInvoices>,
) -> usize {
    let Ok(history) = chrono::Duration::from_std(policy.history_age) else {
        return 0;
    };
    let beyond_count = scheduled.saturating_sub(policy.history_count);
    let ended = match db.agreements_to_prune(now - history, beyond_count, PRUNE_BATCH) {
        Ok(ended) => ended,
        Err(error) => {
            tracing::warn!(%error, "cannot read the agreement history schedule");
            return 0;
        }
    };
    let mut pruned = 0;
    for (key, role, id) in ended {
        let record = match db.load_agreement(role, &id) {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(agreement_id = %id, %error, "cannot read an old agreement");
                continue;
            }
        };
        let billed = record.as_ref().is_some_and(|record| {
            record.agreement.state == golem_model::market::AgreementState::Terminated
        });
        let needed = billed && open_invoices.is_none_or(|payment| payment.has_open_invoice(&id));
        if needed {
            continue;
        }
        match db.prune_agreement(&key, role, &id) {
            Ok(()) => {
                pruned += 1;
                *scheduled = scheduled.saturating_sub(1);
            }
            Err(error) => {
                tracing::warn!(agreement_id = %id, %error, "cannot prune an old agreement")
            }
        }
    }
    if pruned > 0 {
        tracing::debug!(pruned, "old agreements left the store");
    }
    pruned
}

/// What one compaction dropped (for the debug log and tests).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Compacted {
    pub agreement_events: usize,
    pub agreements: usize,
    pub demands: usize,
    pub proposals: usize,
}

/// Drop what `limits` no longer keep, as of `now`.
pub(crate) fn compact(
    db: &Db,
    state: &mut State,
    now: DateTime<Utc>,
    limits: &RetentionLimits,
) -> Compacted {
    let Ok(retention) = chrono::Duration::from_std(limits.max_age) else {
        return Compacted::default();
    };
    let oldest_kept = now - retention;
    let agreement_events =
        drop_old_agreement_events(db, state, oldest_kept, limits.max_agreement_events);
    let agreements =
        drop_final_agreements(db, state, now, oldest_kept, limits.max_final_agreements);
    let (demands, proposals_of_demands) =
        drop_ended_demands(db, state, now, oldest_kept, limits.max_ended_demands);
    let stale = drop_stale_proposals(db, state, now, retention);
    let beyond_count =
        drop_proposals_beyond_count(db, state, limits.max_proposals_per_subscription);
    state.proposals.retain(|_, proposals| !proposals.is_empty());
    state
        .proposal_index
        .retain(|_, subscriptions| !subscriptions.is_empty());
    let compacted = Compacted {
        agreement_events,
        agreements,
        demands,
        proposals: proposals_of_demands + stale + beyond_count,
    };
    if compacted != Compacted::default() {
        tracing::debug!(?compacted, "market history compacted");
    }
    compacted
}

/// Agreement events older than `oldest_kept` or beyond `most`; their dates
/// strictly increase, so those are a prefix.
fn drop_old_agreement_events(
    db: &Db,
    state: &mut State,
    oldest_kept: DateTime<Utc>,
    most: usize,
) -> usize {
    let too_many = state.agreement_events.len().saturating_sub(most);
    let old = state
        .agreement_events
        .partition_point(|record| record.event.event_date() < oldest_kept)
        .max(too_many);
    for record in state.agreement_events.drain(..old) {
        if let Err(error) = db.delete_agreement_event(record.seq) {
            tracing::warn!(%error, "cannot delete an old agreement event");
        }
    }
    old
}

/// Final agreements leave memory (not sled) a retention after compaction
/// first saw them final, or, beyond `most`, the earliest ended first.
fn drop_final_agreements(
    db: &Db,
    state: &mut State,
    now: DateTime<Utc>,
    oldest_kept: DateTime<Utc>,
    most: usize,
) -> usize {
    let finals: Vec<(Role, String)> = state
        .agreements
        .iter()
        .filter(|(_, record)| is_final(record.agreement.state))
        .map(|(key, _)| key.clone())
        .collect();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for key in finals {
        let seen = *state.finished_agreements.entry(key.clone()).or_insert(now);
        if seen <= oldest_kept {
            dropped.push(key);
        } else {
            kept.push((seen, key));
        }
    }
    kept.sort();
    let too_many = kept.len().saturating_sub(most);
    dropped.extend(kept.into_iter().take(too_many).map(|(_, key)| key));
    for key in &dropped {
        if let Some(record) = state.agreements.remove(key) {
            let ended = record.terminated_date.unwrap_or(record.agreement.timestamp);
            match db.schedule_agreement_prune(ended, key.0, &key.1) {
                Ok(true) => state.scheduled_history += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(agreement_id = %key.1, %error, "cannot note an ended agreement for pruning")
                }
            }
        }
    }
    state
        .finished_agreements
        .retain(|key, _| state.agreements.contains_key(key));
    dropped.len()
}

/// Demands ended a retention ago leave memory and sled with their proposals
/// and events; how many demands and proposals went.
fn drop_ended_demands(
    db: &Db,
    state: &mut State,
    now: DateTime<Utc>,
    oldest_kept: DateTime<Utc>,
    most: usize,
) -> (usize, usize) {
    let ended: Vec<String> = state
        .demands
        .values()
        .filter(|entry| !entry.is_live(now))
        .map(|entry| entry.stored.demand.demand_id.clone())
        .collect();
    let mut by_end: Vec<(DateTime<Utc>, String)> = ended
        .into_iter()
        .map(|id| {
            let expiration = state.demands[&id].stored.expiration;
            let seen = *state
                .finished_demands
                .entry(id.clone())
                .or_insert_with(|| expiration.min(now));
            (seen, id)
        })
        .collect();
    by_end.sort();
    let too_many = by_end.len().saturating_sub(most);
    let (mut demands, mut proposals) = (0, 0);
    for (rank, (seen, id)) in by_end.into_iter().enumerate() {
        if rank >= too_many && seen > oldest_kept {
            break;
        }
        proposals += drop_proposals_of(db, state, &id);
        let _ = state.drop_events(db, &id);
        if let Some(entry) = state.demands.remove(&id) {
            state.demand_arrivals.remove(&entry.arrival);
        }
        state.finished_demands.remove(&id);
        if let Err(error) = db.delete_demand(&id) {
            tracing::warn!(demand_id = %id, %error, "cannot delete an ended demand");
        }
        demands += 1;
    }
    state
        .finished_demands
        .retain(|id, _| state.demands.contains_key(id));
    (demands, proposals)
}

/// Proposals past their deadline, or made longer than a retention ago.
fn drop_stale_proposals(
    db: &Db,
    state: &mut State,
    now: DateTime<Utc>,
    retention: chrono::Duration,
) -> usize {
    let stale: Vec<(String, String)> = state
        .proposals
        .values()
        .flat_map(|proposals| proposals.values())
        .filter(|record| {
            let deadline = state.proposal_expiration(record).unwrap_or(now);
            deadline.min(record.proposal.timestamp + retention) <= now
        })
        .map(|record| {
            (
                record.subscription_id.clone(),
                record.proposal.proposal_id.clone(),
            )
        })
        .collect();
    remove_proposals(db, state, stale)
}

/// The oldest proposals of every subscription holding more than `most`.
fn drop_proposals_beyond_count(db: &Db, state: &mut State, most: usize) -> usize {
    let mut oldest = Vec::new();
    for (subscription_id, proposals) in &state.proposals {
        let too_many = proposals.len().saturating_sub(most);
        if too_many == 0 {
            continue;
        }
        let mut by_age: Vec<_> = proposals
            .values()
            .map(|record| {
                (
                    record.proposal.timestamp,
                    record.proposal.proposal_id.clone(),
                )
            })
            .collect();
        by_age.sort();
        oldest.extend(
            by_age
                .into_iter()
                .take(too_many)
                .map(|(_, proposal_id)| (subscription_id.clone(), proposal_id)),
        );
    }
    remove_proposals(db, state, oldest)
}

fn remove_proposals(db: &Db, state: &mut State, ids: Vec<(String, String)>) -> usize {
    let count = ids.len();
    for (subscription_id, proposal_id) in ids {
        if let Err(error) = state.remove_proposal(db, &subscription_id, &proposal_id) {
            tracing::warn!(%proposal_id, %error, "cannot delete a stale proposal");
        }
    }
    count
}

fn drop_proposals_of(db: &Db, state: &mut State, subscription_id: &str) -> usize {
    let ids: Vec<String> = state
        .proposals
        .get(subscription_id)
        .map(|proposals| proposals.keys().cloned().collect())
        .unwrap_or_default();
    for proposal_id in &ids {
        if let Err(error) = state.remove_proposal(db, subscription_id, proposal_id) {
            tracing::warn!(%proposal_id, %error, "cannot delete a proposal of an ended demand");
        }
    }
    ids.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::market::records::{
        AgreementEventRecord, AgreementRecord, ProposalRecord, StoredDemand,
    };
    use crate::market::state::DemandEntry;

    const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
    const PROVIDER: &str = "0x2222222222222222222222222222222222222222";

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::open(dir.path()).unwrap().open_tree("market").unwrap();
        (dir, Db { tree })
    }

    fn agreement(id: &str, state: &str, now: DateTime<Utc>) -> AgreementRecord {
        AgreementRecord {
            role: Role::Requestor,
            agreement: serde_json::from_value(json!({
                "agreementId": id,
                "demand": {"properties": {}, "constraints": "()", "demandId": "d1",
                           "requestorId": REQUESTOR, "timestamp": now},
                "offer": {"properties": {}, "constraints": "()", "offerId": "o1",
                          "providerId": PROVIDER, "timestamp": now},
                "validTo": now + chrono::Duration::hours(1),
                "state": state,
                "timestamp": now,
            }))
            .unwrap(),
            subscription_id: "d1".into(),
            offer_proposal_id: "p1".into(),
            terminator: None,
            reason: None,
            terminated_date: None,
        }
    }

    /// A live demand `id` made at `made`, in sled and in `state`.
    fn subscribe_demand(
        db: &Db,
        state: &mut State,
        id: &str,
        made: DateTime<Utc>,
        expiration: DateTime<Utc>,
    ) {
        let demand = StoredDemand {
            demand: serde_json::from_value(json!({
                "properties": {}, "constraints": "()", "demandId": id,
                "requestorId": REQUESTOR, "timestamp": made,
            }))
            .unwrap(),
            expiration,
            active: true,
        };
        db.save_demand(&demand).unwrap();
        state.insert_demand(DemandEntry::new(demand).unwrap());
    }

    fn proposal(id: &str, made: DateTime<Utc>, expiration: DateTime<Utc>) -> ProposalRecord {
        ProposalRecord {
            subscription_id: "d1".into(),
            role: Role::Requestor,
            offer_id: "o1".into(),
            demand_id: "d1".into(),
            requestor_id: REQUESTOR.parse().unwrap(),
            provider_id: PROVIDER.parse().unwrap(),
            ours: false,
            countered: false,
            proposal: serde_json::from_value(json!({
                "properties": {}, "constraints": "()", "proposalId": id,
                "issuerId": PROVIDER, "state": "Initial", "timestamp": made,
            }))
            .unwrap(),
            expiration: Some(expiration),
        }
    }

    #[test]
    fn history_leaves_memory_a_retention_after_it_ends_and_live_work_stays() {
        let (_dir, db) = db();
        let retention = RetentionLimits::default();
        let hour = chrono::Duration::hours(1);
        let start = Utc::now();
        let mut state = State::default();
        for (seq, minutes) in [(1u64, 0i64), (2, 90)] {
            let record = AgreementEventRecord {
                seq,
                role: Role::Requestor,
                app_session_id: None,
                event: serde_json::from_value(json!({
                    "eventType": "AgreementApprovedEvent",
                    "eventDate": start + chrono::Duration::minutes(minutes),
                    "agreementId": "a1",
                }))
                .unwrap(),
            };
            db.save_agreement_event(&record).unwrap();
            state.agreement_events.push(record);
        }
        for (id, agreement_state) in [("a-live", "Approved"), ("a-done", "Terminated")] {
            let record = agreement(id, agreement_state, start);
            db.save_agreement(&record).unwrap();
            state
                .agreements
                .insert((Role::Requestor, id.into()), record);
        }
        subscribe_demand(
            &db,
            &mut state,
            "d1",
            start,
            start + chrono::Duration::minutes(30),
        );
        let stale = proposal("p-old", start, start + chrono::Duration::minutes(5));
        state.insert_proposal(&db, stale).unwrap();

        // At the start nothing has ended long enough ago.
        let first = compact(&db, &mut state, start, &retention);
        assert_eq!(first, Compacted::default());

        // Two hours on: the first event, the final agreement (seen final at the
        // start), the demand (expired at +30 min) and its proposal go.
        let later = start + hour * 2;
        let second = compact(&db, &mut state, later, &retention);
        assert_eq!(
            second,
            Compacted {
                agreement_events: 1,
                agreements: 1,
                demands: 1,
                proposals: 1,
            }
        );
        assert_eq!(state.agreement_events.len(), 1);
        assert!(state
            .agreements
            .contains_key(&(Role::Requestor, "a-live".into())));
        assert!(!state
            .agreements
            .contains_key(&(Role::Requestor, "a-done".into())));
        assert!(state.demands.is_empty() && state.demand_arrivals.is_empty());
        assert!(state.proposals.is_empty() && state.proposal_index.is_empty());
        // The final agreement is still in sled; the rest is gone from it.
        assert!(db
            .load_agreement(Role::Requestor, "a-done")
            .unwrap()
            .is_some());
        assert_eq!(db.tree.scan_prefix("agreement-event/").count(), 1);
        assert_eq!(db.tree.scan_prefix("demand/").count(), 0);
        assert_eq!(db.tree.scan_prefix("proposal/").count(), 0);
    }

    #[test]
    fn ended_demands_beyond_the_count_leave_with_their_proposals_the_earliest_ended_first() {
        let (_dir, db) = db();
        let limits = RetentionLimits {
            max_ended_demands: 2,
            ..RetentionLimits::default()
        };
        let start = Utc::now();
        let mut state = State::default();
        let ids = ["d0", "d1", "d2", "d3", "live"];
        for (minute, id) in ids.into_iter().enumerate() {
            let ended = start + chrono::Duration::minutes(minute as i64);
            let expiration = if id == "live" {
                start + chrono::Duration::hours(1)
            } else {
                ended
            };
            subscribe_demand(&db, &mut state, id, start, expiration);
            let mut made = proposal(
                &format!("p-{id}"),
                start,
                start + chrono::Duration::hours(1),
            );
            made.subscription_id = id.into();
            state.insert_proposal(&db, made).unwrap();
        }
        // Ten minutes on, all but `live` have ended, none an hour ago.
        let now = start + chrono::Duration::minutes(10);
        let compacted = compact(&db, &mut state, now, &limits);
        // Two demands go with their proposals; the other ended demands'
        // proposals are past their deadline (the demand's end) and go too.
        assert_eq!((compacted.demands, compacted.proposals), (2, 4));
        let mut kept: Vec<&str> = state.demands.keys().map(String::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["d2", "d3", "live"], "the two latest ended stay");
        assert_eq!(db.tree.scan_prefix("demand/").count(), 3);
        assert_eq!(db.tree.scan_prefix("proposal/").count(), 1);
    }

    #[test]
    fn history_is_bounded_by_count_too_and_the_oldest_leave_first() {
        let (_dir, db) = db();
        let limits = RetentionLimits {
            max_agreement_events: 3,
            max_final_agreements: 2,
            max_proposals_per_subscription: 4,
            ..RetentionLimits::default()
        };
        let start = Utc::now();
        let mut state = State::default();
        for seq in 0..10u64 {
            let record = AgreementEventRecord {
                seq,
                role: Role::Requestor,
                app_session_id: None,
                event: serde_json::from_value(json!({
                    "eventType": "AgreementApprovedEvent",
                    "eventDate": start + chrono::Duration::milliseconds(seq as i64),
                    "agreementId": format!("a{seq}"),
                }))
                .unwrap(),
            };
            db.save_agreement_event(&record).unwrap();
            state.agreement_events.push(record);
        }
        for n in 0..5i64 {
            let id = format!("final-{n}");
            let record = agreement(&id, "Terminated", start);
            db.save_agreement(&record).unwrap();
            state
                .agreements
                .insert((Role::Requestor, id.clone()), record);
            // Seen final in this order: final-0 first.
            state.finished_agreements.insert(
                (Role::Requestor, id),
                start - chrono::Duration::seconds(10 - n),
            );
        }
        let live = agreement("live", "Approved", start);
        state
            .agreements
            .insert((Role::Requestor, "live".into()), live);
        let deadline = start + chrono::Duration::minutes(30);
        for n in 0..7i64 {
            let made = start - chrono::Duration::seconds(60 - n);
            let record = proposal(&format!("p{n}"), made, deadline);
            state.insert_proposal(&db, record).unwrap();
        }

        let compacted = compact(&db, &mut state, start, &limits);
        assert_eq!(
            compacted,
            Compacted {
                agreement_events: 7,
                agreements: 3,
                demands: 0,
                proposals: 3,
            }
        );
        let events: Vec<u64> = state
            .agreement_events
            .iter()
            .map(|record| record.seq)
            .collect();
        assert_eq!(events, vec![7, 8, 9], "the newest events stay");
        let mut finals: Vec<&str> = state.agreements.keys().map(|(_, id)| id.as_str()).collect();
        finals.sort();
        assert_eq!(finals, vec!["final-3", "final-4", "live"]);
        let mut proposals: Vec<&str> = state.proposals["d1"].keys().map(String::as_str).collect();
        proposals.sort();
        assert_eq!(
            proposals,
            vec!["p3", "p4", "p5", "p6"],
            "the newest proposals stay"
        );
        // Sled still answers a final agreement that left memory.
        assert!(db
            .load_agreement(Role::Requestor, "final-0")
            .unwrap()
            .is_some());
        assert_eq!(db.tree.scan_prefix("agreement-event/").count(), 3);
        assert_eq!(db.tree.scan_prefix("proposal/").count(), 4);
        // Under the bounds, a second pass drops nothing.
        assert_eq!(
            compact(&db, &mut state, start, &limits),
            Compacted::default()
        );
    }

    /// Payment's answer for the test: only `a-unpaid` has an open invoice.
    struct OneOpenInvoice;

    impl crate::ports::OpenInvoices for OneOpenInvoice {
        fn has_open_invoice(&self, agreement_id: &str) -> bool {
            agreement_id == "a-unpaid"
        }
    }

    #[test]
    fn final_agreements_leave_sled_after_the_history_window_unless_an_invoice_is_open() {
        let (_dir, db) = db();
        let limits = RetentionLimits {
            max_final_agreements: 0,
            ..RetentionLimits::default()
        };
        let start = Utc::now();
        let mut state = State::default();
        let ids = [
            ("a-live", "Approved"),
            ("a-paid", "Terminated"),
            ("a-unpaid", "Terminated"),
            ("a-rejected", "Rejected"),
        ];
        for (id, agreement_state) in ids {
            let record = agreement(id, agreement_state, start);
            db.save_agreement(&record).unwrap();
            state
                .agreements
                .insert((Role::Requestor, id.into()), record);
        }
        compact(&db, &mut state, start, &limits);
        assert_eq!(state.agreements.len(), 1, "only the live one in memory");
        let day = crate::retention::RetentionPolicy {
            history_age: Duration::from_secs(24 * 3600),
            ..crate::retention::RetentionPolicy::default()
        };
        assert_eq!(state.scheduled_history, 3, "three final agreements noted");
        let scheduled = &mut state.scheduled_history;
        // Within the window nothing leaves sled.
        assert_eq!(
            prune_agreement_history(&db, scheduled, start, &day, Some(&OneOpenInvoice)),
            0
        );
        // Without payment's answer a terminated agreement stays.
        let later = start + chrono::Duration::days(2);
        assert_eq!(
            prune_agreement_history(&db, scheduled, later, &day, None),
            1
        );
        assert!(db
            .load_agreement(Role::Requestor, "a-rejected")
            .unwrap()
            .is_none());
        // Past the window: the paid one leaves, the unpaid and the live stay.
        assert_eq!(
            prune_agreement_history(&db, scheduled, later, &day, Some(&OneOpenInvoice)),
            1
        );
        let kept = |id: &str| db.load_agreement(Role::Requestor, id).unwrap().is_some();
        assert!(!kept("a-paid"));
        assert!(kept("a-unpaid") && kept("a-live"));
        assert_eq!(db.tree.scan_prefix("agreement/").count(), 2);
        assert_eq!(
            db.tree.scan_prefix("agreement-ended/").count(),
            1,
            "a-unpaid still scheduled"
        );
        assert_eq!(*scheduled, 1, "the count follows the schedule");
    }

    #[test]
    fn beyond_the_history_count_the_earliest_ended_leave_sled_within_the_window() {
        let (_dir, db) = db();
        let limits = RetentionLimits {
            max_final_agreements: 0,
            ..RetentionLimits::default()
        };
        let start = Utc::now();
        let mut state = State::default();
        for minute in 0..5 {
            let id = format!("a-{minute}");
            let mut record = agreement(&id, "Terminated", start);
            record.terminated_date = Some(start + chrono::Duration::minutes(minute));
            db.save_agreement(&record).unwrap();
            state.agreements.insert((Role::Requestor, id), record);
        }
        compact(&db, &mut state, start, &limits);
        assert_eq!(state.scheduled_history, 5);
        let policy = crate::retention::RetentionPolicy {
            history_count: 2,
            ..crate::retention::RetentionPolicy::default()
        };
        // A week of history is kept by age, but only the newest two by count;
        // a-1 has an open invoice in this test's payment, so it stays.
        let pruned = prune_agreement_history(
            &db,
            &mut state.scheduled_history,
            start,
            &policy,
            Some(&OpenFor("a-1")),
        );
        assert_eq!(pruned, 2, "a-0 and a-2 left");
        let kept: Vec<String> = ["a-0", "a-1", "a-2", "a-3", "a-4"]
            .into_iter()
            .filter(|id| db.load_agreement(Role::Requestor, id).unwrap().is_some())
            .map(String::from)
            .collect();
        assert_eq!(kept, ["a-1", "a-3", "a-4"]);
        assert_eq!(state.scheduled_history, 3);
        // The count survives a restart: the schedule is counted, not doubled.
        let reloaded =
            State::load(&db, &crate::market::event_queues::EventQueues::default()).unwrap();
        assert_eq!(reloaded.scheduled_history, 3);
    }

    #[test]
    fn a_final_agreement_still_in_memory_when_the_node_stopped_is_scheduled_at_load() {
        let (_dir, db) = db();
        let start = Utc::now();
        // Final in sled but never compacted out of memory: not scheduled.
        db.save_agreement(&agreement("a-final", "Terminated", start))
            .unwrap();
        db.save_agreement(&agreement("a-live", "Approved", start))
            .unwrap();
        assert_eq!(db.tree.scan_prefix("agreement-ended/").count(), 0);
        let state = State::load(&db, &crate::market::event_queues::EventQueues::default()).unwrap();
        assert_eq!(state.scheduled_history, 1);
        assert_eq!(db.tree.scan_prefix("agreement-ended/").count(), 1);
        // Loading again schedules nothing twice.
        let again = State::load(&db, &crate::market::event_queues::EventQueues::default()).unwrap();
        assert_eq!(again.scheduled_history, 1);
    }

    /// Payment's answer for the count test: one agreement's invoice is open.
    struct OpenFor(&'static str);

    impl crate::ports::OpenInvoices for OpenFor {
        fn has_open_invoice(&self, agreement_id: &str) -> bool {
            agreement_id == self.0
        }
    }
}
