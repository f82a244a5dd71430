//! The market in memory: offers (ours and those learnt from other nodes) in
//! their compact matching form, demands with compiled constraints, proposals
//! by subscription, agreements still in play, and the pending events of every
//! subscription. The market actor owns the one [`State`]; every change is
//! written through to sled ([`Db`]) as it is made, so [`State::load`] after a
//! restart (or a supervisor's restart of the actor) finds exactly what was there.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use golem_model::constraints::{CompiledConstraint, Constraint, KeyTable, MatchForm};
use golem_model::market::{AgreementOperationEvent, MarketEvent, Proposal, ProposalState};
use golem_model::{GolemError, NodeId};

use super::db::Db;
use super::event_queues::{Access, EventQueues};
use super::records::{
    is_final, now, parse_constraint, subnet_of, AgreementEventRecord, AgreementRecord,
    ProposalRecord, Role, StoredDemand, StoredOffer, SubscriptionKind, Tombstone,
};

/// An offer in memory, with its constraint parsed once and its properties in
/// the compact [`MatchForm`] (built by [`State::insert_offer`]).
pub(crate) struct OfferEntry {
    pub stored: StoredOffer,
    pub constraint: Constraint,
    pub subnet: Option<String>,
    pub form: MatchForm,
    /// Position in the order offers became known here (scan iterators page on it).
    pub arrival: u64,
}

impl OfferEntry {
    pub(crate) fn new(stored: StoredOffer) -> Result<OfferEntry, GolemError> {
        let constraint = parse_constraint(&stored.published.offer.constraints)?;
        Ok(OfferEntry::with_constraint(stored, constraint))
    }

    /// An entry whose `constraint` was parsed from `stored`'s text already.
    pub(crate) fn with_constraint(stored: StoredOffer, constraint: Constraint) -> OfferEntry {
        let subnet = subnet_of(&stored.published.offer.properties);
        OfferEntry {
            stored,
            constraint,
            subnet,
            form: MatchForm::default(),
            arrival: 0,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.stored.published.offer.offer_id
    }

    pub(crate) fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.stored.active && self.stored.published.expiration > now
    }
}

pub(crate) struct DemandEntry {
    pub stored: StoredDemand,
    pub constraint: Constraint,
    /// `constraint` resolved against the market's [`KeyTable`] (built by
    /// [`State::insert_demand`]).
    pub compiled: CompiledConstraint,
    pub subnet: Option<String>,
    /// Offers this demand already produced an Initial proposal for.
    pub matched_offers: HashSet<String>,
    /// Position in the order demands were subscribed here (scan iterators page on it).
    pub arrival: u64,
}

impl DemandEntry {
    pub(crate) fn new(stored: StoredDemand) -> Result<DemandEntry, GolemError> {
        let constraint = parse_constraint(&stored.demand.constraints)?;
        Ok(DemandEntry::with_constraint(stored, constraint))
    }

    /// An entry whose `constraint` was parsed from `stored`'s text already
    /// (compiled against the key table when the actor inserts it).
    pub(crate) fn with_constraint(stored: StoredDemand, constraint: Constraint) -> DemandEntry {
        let subnet = subnet_of(&stored.demand.properties);
        DemandEntry {
            stored,
            constraint,
            compiled: CompiledConstraint::default(),
            subnet,
            matched_offers: HashSet::new(),
            arrival: 0,
        }
    }

    pub(crate) fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.stored.active && self.stored.expiration > now
    }

    /// The two-way match (`match_both_ways(..).is_match()`), the demand's side
    /// evaluated on the offer's compact form.
    pub(crate) fn matches(&self, offer: &OfferEntry) -> bool {
        self.subnet == offer.subnet
            && self.compiled.matches(&offer.form)
            && offer.constraint.matches(&self.stored.demand.properties)
    }
}

/// Everything the market knows, in memory.
#[derive(Default)]
pub(crate) struct State {
    pub offers: HashMap<String, OfferEntry>,
    pub tombstones: HashMap<String, Tombstone>,
    pub demands: HashMap<String, DemandEntry>,
    /// subscription id → proposal id → record.
    pub proposals: HashMap<String, HashMap<String, ProposalRecord>>,
    /// proposal id → the subscriptions holding a record of it (two when a node
    /// negotiates with itself).
    pub proposal_index: HashMap<String, Vec<String>>,
    pub agreements: HashMap<(Role, String), AgreementRecord>,
    /// subscription id → pending events, oldest first (shared with the
    /// long-polls, see [`EventQueues`]).
    pub events: EventQueues,
    pub agreement_events: Vec<AgreementEventRecord>,
    pub next_seq: u64,
    /// Agreement events get strictly increasing millisecond dates, so clients
    /// paging with `afterTimestamp` (µs in yapapi, ms in golem-js) never skip
    /// nor repeat one.
    pub last_agreement_event_date: Option<DateTime<Utc>>,
    /// Property keys numbered for the compact matching forms of this market.
    pub keys: KeyTable,
    /// Offer ids by [`OfferEntry::arrival`], and demand ids by [`DemandEntry::arrival`].
    pub offer_arrivals: BTreeMap<u64, String>,
    pub demand_arrivals: BTreeMap<u64, String>,
    pub next_arrival: u64,
    /// How many offers of each other node are held (see [`super::settings::MarketLimits`]).
    pub remote_offers_by_node: HashMap<NodeId, usize>,
    /// How many offers of other nodes are held in all.
    pub remote_offers: usize,
    /// When compaction first saw an agreement final / a demand ended
    /// (`retention.rs` drops them a retention later; memory only).
    pub finished_agreements: HashMap<(Role, String), DateTime<Utc>>,
    pub finished_demands: HashMap<String, DateTime<Utc>>,
    pub last_compaction: Option<DateTime<Utc>>,
    /// How many final agreements wait in sled's history schedule
    /// (`agreement-ended/`), so the count bound costs no scan.
    pub scheduled_history: usize,
}

impl State {
    fn take_arrival(&mut self) -> u64 {
        self.next_arrival += 1;
        self.next_arrival
    }

    /// Store an offer, laying its properties out for matching.
    pub(crate) fn insert_offer(&mut self, mut entry: OfferEntry) {
        entry.form = MatchForm::new(&entry.stored.published.offer.properties, &mut self.keys);
        entry.arrival = self.take_arrival();
        let id = entry.id().to_string();
        self.offer_arrivals.insert(entry.arrival, id.clone());
        self.count_remote_offer(&entry, true);
        if entry.stored.local && entry.stored.active {
            let access = Access {
                owner: entry.stored.published.offer.provider_id,
                kind: SubscriptionKind::Offer,
                expiration: entry.stored.published.expiration,
            };
            self.events.open(&id, access);
        }
        if let Some(replaced) = self.offers.insert(id, entry) {
            self.offer_arrivals.remove(&replaced.arrival);
            self.count_remote_offer(&replaced, false);
        }
    }

    /// Forget an offer (memory only; the caller deletes its record).
    pub(crate) fn remove_offer(&mut self, id: &str) -> Option<OfferEntry> {
        let entry = self.offers.remove(id)?;
        self.offer_arrivals.remove(&entry.arrival);
        self.count_remote_offer(&entry, false);
        Some(entry)
    }

    fn count_remote_offer(&mut self, entry: &OfferEntry, added: bool) {
        if entry.stored.local {
            return;
        }
        let provider = entry.stored.published.offer.provider_id;
        let count = self.remote_offers_by_node.entry(provider).or_default();
        if added {
            *count += 1;
            self.remote_offers += 1;
        } else {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.remote_offers_by_node.remove(&provider);
            }
            self.remote_offers = self.remote_offers.saturating_sub(1);
        }
    }

    /// Offers of `provider` held, and offers of other nodes held in all.
    pub(crate) fn remote_offer_counts(&self, provider: NodeId) -> (usize, usize) {
        (
            self.remote_offers_by_node
                .get(&provider)
                .copied()
                .unwrap_or(0),
            self.remote_offers,
        )
    }

    /// Ok when subscription `subscription_id` can take `proposals` more
    /// proposal records and one more event; Conflict naming the limit otherwise.
    pub(crate) fn check_room(
        &self,
        limits: &super::settings::MarketLimits,
        subscription_id: &str,
        proposals: usize,
    ) -> Result<(), GolemError> {
        let held = self.proposals.get(subscription_id).map_or(0, HashMap::len);
        if held + proposals > limits.max_proposals_per_subscription {
            return Err(GolemError::conflict(format!(
                "subscription {subscription_id} holds {held} proposals, the limit \
                 (market.max-proposals-per-subscription / GOLEM_MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION = {})",
                limits.max_proposals_per_subscription
            )));
        }
        let pending = self.events.pending(subscription_id);
        if pending >= limits.max_events_per_subscription {
            return Err(GolemError::conflict(format!(
                "subscription {subscription_id} has {pending} undelivered events, the limit \
                 (market.max-events-per-subscription / GOLEM_MARKET_MAX_EVENTS_PER_SUBSCRIPTION = {}); \
                 its owner must take them first",
                limits.max_events_per_subscription
            )));
        }
        Ok(())
    }

    /// Store a demand, compiling its constraint for matching.
    pub(crate) fn insert_demand(&mut self, mut entry: DemandEntry) {
        entry.compiled = CompiledConstraint::compile(&entry.constraint, &mut self.keys);
        entry.arrival = self.take_arrival();
        let id = entry.stored.demand.demand_id.clone();
        self.demand_arrivals.insert(entry.arrival, id.clone());
        if entry.stored.active {
            let access = Access {
                owner: entry.stored.demand.requestor_id,
                kind: SubscriptionKind::Demand,
                expiration: entry.stored.expiration,
            };
            self.events.open(&id, access);
        }
        if let Some(replaced) = self.demands.insert(id, entry) {
            self.demand_arrivals.remove(&replaced.arrival);
        }
    }

    /// When `record` stops being negotiable: its own expiry or its
    /// subscription's, whichever comes first.
    pub(crate) fn proposal_expiration(&self, record: &ProposalRecord) -> Option<DateTime<Utc>> {
        let subscription = match record.role {
            Role::Requestor => self
                .demands
                .get(&record.subscription_id)
                .map(|demand| demand.stored.expiration),
            Role::Provider => self
                .offers
                .get(&record.subscription_id)
                .map(|offer| offer.stored.published.expiration),
        };
        [record.expiration, subscription]
            .into_iter()
            .flatten()
            .min()
    }

    /// The state a client sees: an Initial or Draft proposal past its
    /// expiration is Expired (derived, so nothing has to be rewritten when a
    /// subscription with many proposals expires).
    pub(crate) fn proposal_state(
        &self,
        record: &ProposalRecord,
        current: DateTime<Utc>,
    ) -> ProposalState {
        match record.proposal.state {
            ProposalState::Initial | ProposalState::Draft
                if self
                    .proposal_expiration(record)
                    .is_some_and(|expiration| expiration <= current) =>
            {
                ProposalState::Expired
            }
            state => state,
        }
    }

    /// `record`'s proposal as a client sees it (see [`State::proposal_state`]).
    pub(crate) fn proposal_view(
        &self,
        record: &ProposalRecord,
        current: DateTime<Utc>,
    ) -> Proposal {
        Proposal {
            state: self.proposal_state(record, current),
            ..record.proposal.clone()
        }
    }
}

/// Forget `taken` events in sled (they are delivered) and return them.
pub(crate) fn delivered(
    db: &Db,
    subscription_id: &str,
    taken: Vec<(u64, MarketEvent)>,
) -> Result<Vec<MarketEvent>, GolemError> {
    taken
        .into_iter()
        .map(|(seq, event)| {
            db.delete_event(subscription_id, seq)?;
            Ok(event)
        })
        .collect()
}

impl State {
    /// Load every record into a fresh [`State`] whose events go to `events`
    /// (emptied first: the handle outlives restarts of the actor).
    pub(crate) fn load(db: &Db, events: &EventQueues) -> Result<State, GolemError> {
        events.clear();
        let mut state = State {
            events: events.clone(),
            ..State::default()
        };
        for (_, stored) in db.scan::<StoredOffer>("offer/")? {
            let entry = OfferEntry::new(stored)?;
            state.insert_offer(entry);
        }
        for (key, tombstone) in db.scan::<Tombstone>("tombstone/")? {
            let id = key.trim_start_matches("tombstone/").to_string();
            state.tombstones.insert(id, tombstone);
        }
        for (_, stored) in db.scan::<StoredDemand>("demand/")? {
            let entry = DemandEntry::new(stored)?;
            state.insert_demand(entry);
        }
        for (_, record) in db.scan::<ProposalRecord>("proposal/")? {
            if record.role == Role::Requestor && record.proposal.prev_proposal_id.is_none() {
                if let Some(demand) = state.demands.get_mut(&record.subscription_id) {
                    demand.matched_offers.insert(record.offer_id.clone());
                }
            }
            state.index_proposal(record);
        }
        // Final agreements stay in sled only (read there on demand), noted
        // for the history pruning: those that were in memory when the node
        // stopped were not yet.
        for (_, record) in db.scan::<AgreementRecord>("agreement/")? {
            if is_final(record.agreement.state) {
                let ended = record.terminated_date.unwrap_or(record.agreement.timestamp);
                db.schedule_agreement_prune(ended, record.role, &record.agreement.agreement_id)?;
                continue;
            }
            state
                .agreements
                .insert((record.role, record.agreement.agreement_id.clone()), record);
        }
        let mut max_seq = 0;
        for (key, event) in db.scan::<MarketEvent>("event/")? {
            let mut parts = key.rsplitn(2, '/');
            let seq = parts
                .next()
                .and_then(|seq| seq.parse::<u64>().ok())
                .unwrap_or(0);
            let subscription_id = parts
                .next()
                .map(|rest| rest.trim_start_matches("event/").to_string())
                .unwrap_or_default();
            max_seq = max_seq.max(seq);
            state.events.push(&subscription_id, seq, event);
        }
        for (_, record) in db.scan::<AgreementEventRecord>("agreement-event/")? {
            max_seq = max_seq.max(record.seq);
            state.last_agreement_event_date = Some(record.event.event_date());
            state.agreement_events.push(record);
        }
        state.next_seq = max_seq + 1;
        state.scheduled_history = db.count_scheduled_agreements()?;
        Ok(state)
    }
}

impl State {
    pub(crate) fn index_proposal(&mut self, record: ProposalRecord) {
        let subscriptions = self
            .proposal_index
            .entry(record.proposal.proposal_id.clone())
            .or_default();
        if !subscriptions.contains(&record.subscription_id) {
            subscriptions.push(record.subscription_id.clone());
        }
        self.proposals
            .entry(record.subscription_id.clone())
            .or_default()
            .insert(record.proposal.proposal_id.clone(), record);
    }

    pub(crate) fn insert_proposal(
        &mut self,
        db: &Db,
        record: ProposalRecord,
    ) -> Result<(), GolemError> {
        db.save_proposal(&record)?;
        self.index_proposal(record);
        Ok(())
    }

    pub(crate) fn remove_proposal(
        &mut self,
        db: &Db,
        subscription_id: &str,
        proposal_id: &str,
    ) -> Result<(), GolemError> {
        db.delete_proposal(subscription_id, proposal_id)?;
        if let Some(proposals) = self.proposals.get_mut(subscription_id) {
            proposals.remove(proposal_id);
        }
        if let Some(subscriptions) = self.proposal_index.get_mut(proposal_id) {
            subscriptions.retain(|id| id != subscription_id);
        }
        Ok(())
    }

    pub(crate) fn proposal(
        &self,
        subscription_id: &str,
        proposal_id: &str,
    ) -> Option<&ProposalRecord> {
        self.proposals.get(subscription_id)?.get(proposal_id)
    }

    /// Change a proposal record in place and write it through.
    pub(crate) fn update_proposal(
        &mut self,
        db: &Db,
        subscription_id: &str,
        proposal_id: &str,
        change: impl FnOnce(&mut ProposalRecord),
    ) -> Result<(), GolemError> {
        let record = self
            .proposals
            .get_mut(subscription_id)
            .and_then(|proposals| proposals.get_mut(proposal_id))
            .ok_or_else(|| GolemError::not_found(format!("proposal {proposal_id} not found")))?;
        change(record);
        db.save_proposal(record)
    }

    /// The record of `proposal_id` that satisfies `filter` (at most one does
    /// for the filters the service uses).
    pub(crate) fn find_proposal(
        &self,
        proposal_id: &str,
        filter: impl Fn(&ProposalRecord) -> bool,
    ) -> Option<&ProposalRecord> {
        self.proposal_index
            .get(proposal_id)?
            .iter()
            .filter_map(|subscription_id| self.proposal(subscription_id, proposal_id))
            .find(|record| filter(record))
    }

    pub(crate) fn push_event(
        &mut self,
        db: &Db,
        subscription_id: &str,
        event: MarketEvent,
    ) -> Result<(), GolemError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        db.save_event(subscription_id, seq, &event)?;
        self.events.push(subscription_id, seq, event);
        Ok(())
    }

    /// Remove and return up to `max` pending events of a subscription.
    pub(crate) fn take_events(
        &mut self,
        db: &Db,
        subscription_id: &str,
        max: usize,
    ) -> Result<Vec<MarketEvent>, GolemError> {
        delivered(db, subscription_id, self.events.take(subscription_id, max))
    }

    pub(crate) fn drop_events(&mut self, db: &Db, subscription_id: &str) -> Result<(), GolemError> {
        if let Some(queue) = self.events.remove(subscription_id) {
            for (seq, _) in queue {
                db.delete_event(subscription_id, seq)?;
            }
        }
        Ok(())
    }

    /// A date for a new agreement event, strictly after the previous one.
    pub(crate) fn next_agreement_event_date(&mut self) -> DateTime<Utc> {
        let mut date = now();
        if let Some(last) = self.last_agreement_event_date {
            if date <= last {
                date = last + chrono::Duration::milliseconds(1);
            }
        }
        self.last_agreement_event_date = Some(date);
        date
    }

    pub(crate) fn push_agreement_event(
        &mut self,
        db: &Db,
        role: Role,
        app_session_id: Option<String>,
        event: AgreementOperationEvent,
    ) -> Result<(), GolemError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = AgreementEventRecord {
            seq,
            role,
            app_session_id,
            event,
        };
        db.save_agreement_event(&record)?;
        self.agreement_events.push(record);
        Ok(())
    }

    pub(crate) fn save_agreement(
        &mut self,
        db: &Db,
        record: AgreementRecord,
    ) -> Result<(), GolemError> {
        db.save_agreement(&record)?;
        self.agreements
            .insert((record.role, record.agreement.agreement_id.clone()), record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{MarketLimits, MarketSettings};
    use golem_model::market::Offer;
    use golem_model::market::PublishedOffer;
    use golem_model::properties::Properties;

    fn node(byte: u8) -> NodeId {
        format!("0x{}", hex::encode([byte; 20]))
            .parse()
            .unwrap_or_else(|error| panic!("node id: {error:?}"))
    }

    fn offer(id: &str, provider: NodeId, local: bool) -> OfferEntry {
        let stored = StoredOffer {
            published: PublishedOffer {
                offer: Offer {
                    properties: Properties::from_json(serde_json::json!({}))
                        .unwrap_or_else(|error| panic!("{error}")),
                    constraints: String::new(),
                    offer_id: id.to_string(),
                    provider_id: provider,
                    timestamp: now(),
                },
                expiration: now() + chrono::Duration::hours(1),
            },
            local,
            active: true,
        };
        OfferEntry::new(stored).unwrap_or_else(|error| panic!("{error}"))
    }

    fn limits() -> MarketLimits {
        MarketSettings::default()
            .to_config()
            .unwrap_or_else(|error| panic!("{error}"))
            .limits
    }

    #[test]
    fn remote_offers_are_counted_per_node_and_in_total() {
        let mut state = State::default();
        let (a, b) = (node(1), node(2));
        state.insert_offer(offer("a1", a, false));
        state.insert_offer(offer("a2", a, false));
        state.insert_offer(offer("b1", b, false));
        state.insert_offer(offer("own", b, true));
        assert_eq!(state.remote_offer_counts(a), (2, 3));
        // The same id again replaces, it does not count twice.
        state.insert_offer(offer("a1", a, false));
        assert_eq!(state.remote_offer_counts(a), (2, 3));
        state.remove_offer("a1");
        state.remove_offer("own");
        assert_eq!(state.remote_offer_counts(a), (1, 2));
        assert_eq!(state.remote_offer_counts(b), (1, 2));
        state.remove_offer("a2");
        assert!(!state.remote_offers_by_node.contains_key(&a));
    }

    #[test]
    fn a_subscription_refuses_proposals_and_events_beyond_its_limits() {
        let limits = MarketLimits {
            max_proposals_per_subscription: 2,
            max_events_per_subscription: 1,
            ..limits()
        };
        let state = State::default();
        assert!(state.check_room(&limits, "sub", 2).is_ok());
        let error = state.check_room(&limits, "sub", 3).unwrap_err();
        assert_eq!(error.code, golem_model::ErrorCode::Conflict);
        assert!(
            error.message.contains("max-proposals-per-subscription"),
            "{}",
            error.message
        );
        state.events.push(
            "sub",
            1,
            MarketEvent::ProposalRejectedEvent {
                event_date: now(),
                proposal_id: "00".into(),
                reason: None,
            },
        );
        let error = state.check_room(&limits, "sub", 1).unwrap_err();
        assert!(
            error.message.contains("max-events-per-subscription"),
            "{}",
            error.message
        );
        assert!(state.check_room(&limits, "other", 1).is_ok());
    }
}
