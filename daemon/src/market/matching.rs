//! Matching and the catalogue of other nodes' offers: a new demand is matched
//! against every live offer of its subnet, and a new offer against every live
//! demand (a match is an `Initial` proposal event on the demand); offers other
//! nodes announce are checked (origin, expiry, quotas, tombstones) before they
//! are stored. All of it runs inside the market actor's handlers, on the state
//! they own.

use chrono::{DateTime, Utc};
use golem_model::ids::check_id;
use golem_model::market::{
    MarketEvent, OfferBroadcast, OfferUnsubscribed, Proposal, ProposalState, PublishedOffer,
};
use golem_model::{GolemError, NodeId};

use super::actor::Core;
use super::records::{now, ProposalRecord, Role, StoredOffer, Tombstone};
use super::state::{DemandEntry, OfferEntry, State};

/// What taking in one broadcast (or one peer's answer) changed.
#[derive(Debug, Default)]
pub(crate) struct Ingested {
    /// A new offer matched a demand: its events changed.
    pub produced: bool,
    /// A new offer became known.
    pub learnt: bool,
}

/// Take in the offers announced by `origin` (a broadcast's signed origin or
/// the node that answered [`golem_model::market::GetOwnOffers`]).
pub(crate) fn ingest_offers(
    core: &Core,
    state: &mut State,
    origin: NodeId,
    broadcast: OfferBroadcast,
) -> Ingested {
    let mut ingested = Ingested::default();
    if origin == core.node_id {
        return ingested;
    }
    let current = now();
    let mut over_quota = 0usize;
    for tombstone in broadcast.unsubscribed {
        if let Err(error) = apply_unsubscribed(core, state, origin, tombstone, current) {
            tracing::warn!(%origin, %error, "recording an unsubscribed offer failed");
        }
    }
    for published in broadcast.offers {
        match accept_offer(core, state, origin, published, current) {
            Ok(Accepted::OverQuota) => over_quota += 1,
            Ok(Accepted::New(id)) => {
                ingested.learnt = true;
                match match_new_offer(core, state, &id) {
                    Ok(matched) => ingested.produced |= matched,
                    Err(error) => tracing::warn!(%error, "matching a new offer failed"),
                }
            }
            Ok(Accepted::Known) => {}
            Err(error) => tracing::warn!(%origin, %error, "offer dropped"),
        }
    }
    if over_quota > 0 {
        let (held, total) = state.remote_offer_counts(origin);
        let limits = &core.config.limits;
        tracing::debug!(
            %origin,
            dropped = over_quota,
            held,
            total,
            max_offers_per_node = limits.max_offers_per_node,
            max_offers = limits.max_offers,
            "offers over the market's quota dropped (market.max-offers-per-node, market.max-offers)"
        );
    }
    ingested
}

/// Our live offers and recent unsubscriptions (what peers ask us for), of
/// `subnet` when given, and only offer `offer_id` when given.
pub(crate) fn own_offers(
    state: &State,
    subnet: Option<&Option<String>>,
    offer_id: Option<&str>,
) -> OfferBroadcast {
    let current = now();
    let mut offers = Vec::new();
    let mut unsubscribed = Vec::new();
    let entries: Box<dyn Iterator<Item = &OfferEntry>> = match offer_id {
        Some(id) => Box::new(state.offers.get(id).into_iter()),
        None => Box::new(state.offers.values()),
    };
    for entry in entries {
        if !entry.stored.local || entry.stored.published.expiration <= current {
            continue;
        }
        if subnet.is_some_and(|subnet| *subnet != entry.subnet) {
            continue;
        }
        if entry.stored.active {
            offers.push(entry.stored.published.clone());
        } else {
            unsubscribed.push(OfferUnsubscribed {
                offer_id: entry.id().to_string(),
                expiration: entry.stored.published.expiration,
            });
        }
    }
    OfferBroadcast {
        offers,
        unsubscribed,
    }
}

/// Subnets of our live offers and demands, plus `public` and no-subnet.
pub(crate) fn interesting_subnets(state: &State) -> Vec<Option<String>> {
    let current = now();
    let mut subnets: Vec<Option<String>> = vec![Some("public".to_string()), None];
    let mine = state
        .offers
        .values()
        .filter(|entry| entry.stored.local && entry.is_live(current))
        .map(|entry| entry.subnet.clone())
        .chain(
            state
                .demands
                .values()
                .filter(|entry| entry.is_live(current))
                .map(|entry| entry.subnet.clone()),
        );
    for subnet in mine {
        if !subnets.contains(&subnet) {
            subnets.push(subnet);
        }
    }
    subnets
}

fn initial_proposal(
    demand: &DemandEntry,
    offer: &OfferEntry,
    node_id: NodeId,
    created: DateTime<Utc>,
) -> ProposalRecord {
    let published = &offer.stored.published.offer;
    ProposalRecord {
        subscription_id: demand.stored.demand.demand_id.clone(),
        role: Role::Requestor,
        offer_id: published.offer_id.clone(),
        demand_id: demand.stored.demand.demand_id.clone(),
        requestor_id: node_id,
        provider_id: published.provider_id,
        ours: false,
        countered: false,
        proposal: Proposal {
            properties: published.properties.clone(),
            constraints: published.constraints.clone(),
            proposal_id: golem_model::ids::new_id(),
            issuer_id: published.provider_id,
            state: ProposalState::Initial,
            timestamp: created,
            prev_proposal_id: None,
        },
        expiration: Some(
            demand
                .stored
                .expiration
                .min(offer.stored.published.expiration),
        ),
    }
}

/// Record an Initial proposal (and its event) for a demand and an offer.
fn add_match(
    core: &Core,
    state: &mut State,
    demand_id: &str,
    offer_id: &str,
) -> Result<(), GolemError> {
    let created = now();
    if let Err(error) = state.check_room(&core.config.limits, demand_id, 1) {
        tracing::debug!(%demand_id, %offer_id, %error, "match not proposed");
        return Ok(());
    }
    let record = {
        let (Some(demand), Some(offer)) =
            (state.demands.get(demand_id), state.offers.get(offer_id))
        else {
            return Ok(());
        };
        initial_proposal(demand, offer, core.node_id, created)
    };
    let event = MarketEvent::ProposalEvent {
        event_date: created,
        proposal: record.proposal.clone(),
    };
    state.insert_proposal(&core.db, record)?;
    state.push_event(&core.db, demand_id, event)?;
    if let Some(demand) = state.demands.get_mut(demand_id) {
        demand.matched_offers.insert(offer_id.to_string());
    }
    Ok(())
}

/// Match a new demand against every live offer; returns how many matched.
pub(crate) fn match_new_demand(
    core: &Core,
    state: &mut State,
    demand_id: &str,
) -> Result<usize, GolemError> {
    let current = now();
    let Some(demand) = state.demands.get(demand_id) else {
        return Ok(0);
    };
    let mut matching: Vec<(chrono::DateTime<Utc>, String)> = state
        .offers
        .values()
        .filter(|offer| offer.is_live(current) && demand.matches(offer))
        .map(|offer| {
            (
                offer.stored.published.offer.timestamp,
                offer.id().to_string(),
            )
        })
        .collect();
    matching.sort();
    for (_, offer_id) in &matching {
        add_match(core, state, demand_id, offer_id)?;
    }
    Ok(matching.len())
}

/// Match a new offer against every live demand; true when any matched.
pub(crate) fn match_new_offer(
    core: &Core,
    state: &mut State,
    offer_id: &str,
) -> Result<bool, GolemError> {
    let current = now();
    let Some(offer) = state.offers.get(offer_id) else {
        return Ok(false);
    };
    if !offer.is_live(current) {
        return Ok(false);
    }
    let matching: Vec<String> = state
        .demands
        .values()
        .filter(|demand| {
            demand.is_live(current)
                && !demand.matched_offers.contains(offer_id)
                && demand.matches(offer)
        })
        .map(|demand| demand.stored.demand.demand_id.clone())
        .collect();
    for demand_id in &matching {
        add_match(core, state, demand_id, offer_id)?;
    }
    Ok(!matching.is_empty())
}

/// What became of an offer another node announced.
enum Accepted {
    /// Stored under this id.
    New(String),
    /// Already held, expired or unsubscribed: nothing to do.
    Known,
    /// Dropped: its provider or all other nodes together hold their quota.
    OverQuota,
}

/// Validate and store an offer of another node, its expiry cut to the
/// market's cap and within the offer quotas.
fn accept_offer(
    core: &Core,
    state: &mut State,
    origin: NodeId,
    mut published: PublishedOffer,
    current: DateTime<Utc>,
) -> Result<Accepted, GolemError> {
    check_id("offer id", &published.offer.offer_id)?;
    let offer = &published.offer;
    if offer.provider_id != origin {
        return Err(GolemError::forbidden(format!(
            "offer {} claims provider {} but came from {origin}",
            offer.offer_id, offer.provider_id
        )));
    }
    if published.expiration <= current {
        return Ok(Accepted::Known);
    }
    if state
        .tombstones
        .get(&offer.offer_id)
        .is_some_and(|tombstone| tombstone.provider_id == origin)
    {
        // A replay of an offer its provider has unsubscribed.
        return Ok(Accepted::Known);
    }
    if let Some(known) = state.offers.get(&offer.offer_id) {
        if known.stored.published.offer.provider_id != origin {
            return Err(GolemError::conflict(format!(
                "offer id {} is already used by provider {}",
                offer.offer_id, known.stored.published.offer.provider_id
            )));
        }
        return Ok(Accepted::Known);
    }
    let limits = &core.config.limits;
    let (held, total) = state.remote_offer_counts(origin);
    if held >= limits.max_offers_per_node || total >= limits.max_offers {
        return Ok(Accepted::OverQuota);
    }
    published.expiration = published.expiration.min(current + limits.max_expiration);
    let id = published.offer.offer_id.clone();
    let entry = OfferEntry::new(StoredOffer {
        published,
        local: false,
        active: true,
    })?;
    core.db.save_offer(&entry.stored)?;
    state.insert_offer(entry);
    tracing::debug!(offer_id = %id, provider_id = %origin, "offer learnt");
    Ok(Accepted::New(id))
}

fn apply_unsubscribed(
    core: &Core,
    state: &mut State,
    origin: NodeId,
    unsubscribed: OfferUnsubscribed,
    current: DateTime<Utc>,
) -> Result<(), GolemError> {
    if unsubscribed.expiration <= current {
        return Ok(());
    }
    check_id("offer id", &unsubscribed.offer_id)?;
    let id = unsubscribed.offer_id;
    let limits = &core.config.limits;
    let expiration = unsubscribed.expiration.min(current + limits.max_expiration);
    if let Some(known) = state.offers.get(&id) {
        if known.stored.published.offer.provider_id != origin || known.stored.local {
            return Err(GolemError::forbidden(format!(
                "{origin} may not unsubscribe offer {id}"
            )));
        }
        state.remove_offer(&id);
        core.db.delete_offer(&id)?;
    }
    if state.tombstones.len() >= limits.max_offers {
        tracing::debug!(%origin, offer_id = %id, "tombstone not kept: market.max-offers reached");
        return Ok(());
    }
    if let std::collections::hash_map::Entry::Vacant(vacant) = state.tombstones.entry(id) {
        let tombstone = Tombstone {
            provider_id: origin,
            expiration,
        };
        core.db.save_tombstone(vacant.key(), &tombstone)?;
        vacant.insert(tombstone);
    }
    Ok(())
}
