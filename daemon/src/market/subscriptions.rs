//! Offers and demands: subscribing, listing, unsubscribing, matching, taking
//! the events of a subscription, and taking in offers learnt from other nodes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_model::ids::check_id;
use golem_model::market::{
    Demand, DemandOfferBase, MarketEvent, Offer, OfferBroadcast, OfferUnsubscribed, Proposal,
    ProposalState, PublishedOffer,
};
use golem_model::properties::Properties;
use golem_model::{GolemError, NodeId};

use super::state::{
    now, parse_constraint, DemandEntry, OfferEntry, ProposalRecord, Role, State, StoredDemand,
    StoredOffer, Tombstone,
};
use super::{new_id, Inner, MarketService};

/// What kind of subscription an id must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    Offer,
    Demand,
}

/// The property by which a requestor or provider asks for an expiry (unix ms).
const EXPIRATION_PROPERTY: &str = "golem.srv.comp.expiration";

/// 400 when `properties` ask for an expiry beyond the market's cap.
fn check_requested_expiration(
    properties: &Properties,
    limits: &super::MarketLimits,
    current: DateTime<Utc>,
) -> Result<(), GolemError> {
    let Some(value) = properties.get(EXPIRATION_PROPERTY) else {
        return Ok(());
    };
    let Some(millis) = value.as_f64() else {
        return Err(GolemError::bad_request(format!(
            "{EXPIRATION_PROPERTY} must be a unix time in milliseconds, got {value}"
        )));
    };
    let cap = current + limits.max_expiration;
    if millis > cap.timestamp_millis() as f64 {
        return Err(GolemError::bad_request(format!(
            "{EXPIRATION_PROPERTY} = {millis} is beyond {}, the furthest expiry this market accepts \
             (market.max-expiration-secs / GOLEM_MARKET_MAX_EXPIRATION_SECS = {})",
            cap.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            limits.max_expiration.num_seconds()
        )));
    }
    Ok(())
}

pub(crate) fn parse_body(body: DemandOfferBase) -> Result<(Properties, String), GolemError> {
    let properties = Properties::from_json(body.properties)
        .map_err(|error| GolemError::bad_request(format!("invalid properties: {error}")))?;
    parse_constraint(&body.constraints)?;
    Ok((properties, body.constraints))
}

impl MarketService {
    pub async fn subscribe_offer(
        &self,
        owner: NodeId,
        body: DemandOfferBase,
    ) -> Result<String, GolemError> {
        let inner = &self.inner;
        if owner != inner.node_id {
            return Err(GolemError::forbidden(
                "offers can only be published for this node's identity",
            ));
        }
        let (properties, constraints) = parse_body(body)?;
        let created = now();
        check_requested_expiration(&properties, &inner.config.limits, created)?;
        let offer = Offer {
            properties,
            constraints,
            offer_id: new_id(),
            provider_id: owner,
            timestamp: created,
        };
        let stored = StoredOffer {
            published: PublishedOffer {
                offer,
                expiration: created + inner.config.subscription_ttl,
            },
            local: true,
            active: true,
        };
        let entry = OfferEntry::new(stored)?;
        let id = entry.id().to_string();
        let subnet = entry.subnet.clone();
        {
            let mut state = inner.lock();
            inner.db.save_offer(&entry.stored)?;
            state.insert_offer(entry);
            let produced = match_new_offer(inner, &mut state, &id)?;
            if produced {
                inner.bump_events();
            }
        }
        inner.bump_catalogue();
        tracing::info!(offer_id = %id, ?subnet, "offer subscribed");
        self.ensure_topic(subnet.clone()).await;
        self.announce_offer_soon(subnet, id.clone());
        Ok(id)
    }

    pub async fn subscribe_demand(
        &self,
        owner: NodeId,
        body: DemandOfferBase,
    ) -> Result<String, GolemError> {
        let inner = &self.inner;
        if owner != inner.node_id {
            return Err(GolemError::forbidden(
                "demands can only be published for this node's identity",
            ));
        }
        let (properties, constraints) = parse_body(body)?;
        let created = now();
        check_requested_expiration(&properties, &inner.config.limits, created)?;
        let stored = StoredDemand {
            demand: Demand {
                properties,
                constraints,
                demand_id: new_id(),
                requestor_id: owner,
                timestamp: created,
            },
            expiration: created + inner.config.subscription_ttl,
            active: true,
        };
        let entry = DemandEntry::new(stored)?;
        let id = entry.stored.demand.demand_id.clone();
        let subnet = entry.subnet.clone();
        let matched = {
            let mut state = inner.lock();
            inner.db.save_demand(&entry.stored)?;
            state.insert_demand(entry);
            let matched = match_new_demand(inner, &mut state, &id)?;
            if matched > 0 {
                inner.bump_events();
            }
            matched
        };
        inner.bump_catalogue();
        tracing::info!(demand_id = %id, ?subnet, matched, "demand subscribed");
        // A subnet we did not listen to yet: listen, and ask the peers for
        // their offers at once rather than waiting for their re-announcement.
        if self.ensure_topic(subnet).await {
            self.pull_offers_from_connected_peers();
        }
        Ok(id)
    }

    pub fn list_offers(&self, owner: NodeId) -> Vec<Offer> {
        let current = now();
        let state = self.inner.lock();
        let mut offers: Vec<Offer> = state
            .offers
            .values()
            .filter(|entry| {
                entry.stored.local
                    && entry.is_live(current)
                    && entry.stored.published.offer.provider_id == owner
            })
            .map(|entry| entry.stored.published.offer.clone())
            .collect();
        offers.sort_by_key(|offer| offer.timestamp);
        offers
    }

    pub fn list_demands(&self, owner: NodeId) -> Vec<Demand> {
        let current = now();
        let state = self.inner.lock();
        let mut demands: Vec<Demand> = state
            .demands
            .values()
            .filter(|entry| entry.is_live(current) && entry.stored.demand.requestor_id == owner)
            .map(|entry| entry.stored.demand.clone())
            .collect();
        demands.sort_by_key(|demand| demand.timestamp);
        demands
    }

    pub async fn unsubscribe_offer(&self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let inner = &self.inner;
        let subnet = {
            let mut state = inner.lock();
            let entry = state
                .offers
                .get_mut(id)
                .filter(|entry| {
                    entry.stored.local && entry.stored.published.offer.provider_id == owner
                })
                .ok_or_else(|| GolemError::not_found(format!("offer {id} not found")))?;
            if !entry.stored.active {
                return Err(GolemError::new(
                    golem_model::ErrorCode::Gone,
                    format!("offer {id} already unsubscribed"),
                ));
            }
            if entry.stored.published.expiration <= now() {
                // As the original: an expired subscription is gone (410).
                return Err(GolemError::new(
                    golem_model::ErrorCode::Gone,
                    format!("offer {id} has expired; subscribe a new one"),
                ));
            }
            entry.stored.active = false;
            inner.db.save_offer(&entry.stored)?;
            let subnet = entry.subnet.clone();
            state.drop_events(&inner.db, id)?;
            subnet
        };
        inner.bump_events();
        self.persist().await?;
        tracing::info!(offer_id = %id, "offer unsubscribed");
        self.announce_offer_soon(subnet, id.to_string());
        Ok(())
    }

    pub async fn unsubscribe_demand(&self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let inner = &self.inner;
        {
            let mut state = inner.lock();
            let entry = state
                .demands
                .get_mut(id)
                .filter(|entry| entry.stored.demand.requestor_id == owner)
                .ok_or_else(|| GolemError::not_found(format!("demand {id} not found")))?;
            if !entry.stored.active {
                return Err(GolemError::new(
                    golem_model::ErrorCode::Gone,
                    format!("demand {id} already unsubscribed"),
                ));
            }
            if entry.stored.expiration <= now() {
                return Err(GolemError::new(
                    golem_model::ErrorCode::Gone,
                    format!("demand {id} has expired; subscribe a new one"),
                ));
            }
            entry.stored.active = false;
            inner.db.save_demand(&entry.stored)?;
            state.drop_events(&inner.db, id)?;
        }
        inner.bump_events();
        self.persist().await?;
        tracing::info!(demand_id = %id, "demand unsubscribed");
        Ok(())
    }

    /// Long-poll the events of a subscription: returns as soon as there is at
    /// least one, or `[]` after `timeout`. Each event is delivered once.
    pub async fn collect_events(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        id: &str,
        timeout: Duration,
        max_events: usize,
    ) -> Result<Vec<MarketEvent>, GolemError> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = inner.events_changed.subscribe();
        loop {
            {
                let mut state = inner.lock();
                check_subscription(&state, owner, kind, id, now())?;
                let events = state.take_events(&inner.db, id, max_events)?;
                if !events.is_empty() {
                    return Ok(events);
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
            }
        }
    }

    /// Offers announced by `origin` (a broadcast's signed origin or the node
    /// that answered [`golem_model::market::GetOwnOffers`]).
    pub(crate) fn ingest_offers(&self, origin: NodeId, broadcast: OfferBroadcast) {
        let inner = &self.inner;
        if origin == inner.node_id {
            return;
        }
        let current = now();
        let mut produced = false;
        let mut learnt = false;
        let mut over_quota = 0usize;
        let mut state = inner.lock();
        for tombstone in broadcast.unsubscribed {
            if let Err(error) = apply_unsubscribed(inner, &mut state, origin, tombstone, current) {
                tracing::warn!(%origin, %error, "recording an unsubscribed offer failed");
            }
        }
        for published in broadcast.offers {
            match accept_offer(inner, &mut state, origin, published, current) {
                Ok(Accepted::OverQuota) => over_quota += 1,
                Ok(Accepted::New(id)) => {
                    learnt = true;
                    match match_new_offer(inner, &mut state, &id) {
                        Ok(matched) => produced |= matched,
                        Err(error) => tracing::warn!(%error, "matching a new offer failed"),
                    }
                }
                Ok(Accepted::Known) => {}
                Err(error) => tracing::warn!(%origin, %error, "offer dropped"),
            }
        }
        if over_quota > 0 {
            let (held, total) = state.remote_offer_counts(origin);
            let limits = &inner.config.limits;
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
        drop(state);
        if produced {
            inner.bump_events();
        }
        if learnt {
            inner.bump_catalogue();
        }
    }

    /// Our live offers and recent unsubscriptions (what peers ask us for), of
    /// `subnet` when given, and only offer `offer_id` when given.
    pub(crate) fn own_offers(
        &self,
        subnet: Option<&Option<String>>,
        offer_id: Option<&str>,
    ) -> OfferBroadcast {
        let current = now();
        let state = self.inner.lock();
        let mut offers = Vec::new();
        let mut unsubscribed = Vec::new();
        let entries: Box<dyn Iterator<Item = &super::state::OfferEntry>> = match offer_id {
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
    pub(crate) fn interesting_subnets(&self) -> Vec<Option<String>> {
        let current = now();
        let state = self.inner.lock();
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

    /// Drop what has expired: remote offers and tombstones, subscriptions'
    /// pending events, and unconfirmed or unapproved agreements.
    pub(crate) fn sweep(&self) {
        let inner = &self.inner;
        let current = now();
        let mut state = inner.lock();
        let expired_offers: Vec<String> = state
            .offers
            .values()
            .filter(|entry| {
                entry.stored.published.expiration <= current
                    && (!entry.stored.local || state.events.contains_key(entry.id()))
            })
            .map(|entry| entry.id().to_string())
            .collect();
        let mut events_dropped = false;
        for id in expired_offers {
            let local = state
                .offers
                .get(&id)
                .is_some_and(|entry| entry.stored.local);
            if !local {
                state.remove_offer(&id);
                let _ = inner.db.delete_offer(&id);
            }
            events_dropped |= state.drop_events(&inner.db, &id).is_ok();
        }
        let expired_tombstones: Vec<String> = state
            .tombstones
            .iter()
            .filter(|(_, tombstone)| tombstone.expiration <= current)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_tombstones {
            state.tombstones.remove(&id);
            let _ = inner.db.delete_tombstone(&id);
        }
        let expired_demands: Vec<String> = state
            .demands
            .values()
            .filter(|entry| {
                entry.stored.expiration <= current
                    && state.events.contains_key(&entry.stored.demand.demand_id)
            })
            .map(|entry| entry.stored.demand.demand_id.clone())
            .collect();
        for id in expired_demands {
            events_dropped |= state.drop_events(&inner.db, &id).is_ok();
        }
        let agreements_expired = super::agreements::expire_agreements(inner, &mut state, current);
        state.scans.sweep(current);
        let due = state.last_compaction.is_none_or(|last| {
            (current - last).to_std().unwrap_or_default() >= super::retention::COMPACTION_PERIOD
        });
        if due {
            state.last_compaction = Some(current);
            super::retention::compact(&inner.db, &mut state, current, super::retention::RETENTION);
        }
        drop(state);
        if events_dropped {
            inner.bump_events();
        }
        if agreements_expired {
            inner.bump_agreements();
        }
    }
}

/// An owned, not unsubscribed subscription: still live, or expired at the given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriptionStatus {
    Live,
    Expired(DateTime<Utc>),
}

fn kind_name(kind: SubscriptionKind) -> &'static str {
    match kind {
        SubscriptionKind::Offer => "offer",
        SubscriptionKind::Demand => "demand",
    }
}

/// The status of subscription `id` of `kind` owned by `owner`; 404 when it is
/// unknown, another identity's, or unsubscribed.
pub(crate) fn owned_subscription(
    state: &State,
    owner: NodeId,
    kind: SubscriptionKind,
    id: &str,
    current: DateTime<Utc>,
) -> Result<SubscriptionStatus, GolemError> {
    let expiration = match kind {
        SubscriptionKind::Offer => state
            .offers
            .get(id)
            .filter(|entry| {
                entry.stored.local
                    && entry.stored.active
                    && entry.stored.published.offer.provider_id == owner
            })
            .map(|entry| entry.stored.published.expiration),
        SubscriptionKind::Demand => state
            .demands
            .get(id)
            .filter(|entry| entry.stored.active && entry.stored.demand.requestor_id == owner)
            .map(|entry| entry.stored.expiration),
    };
    match expiration {
        Some(expiration) if expiration <= current => Ok(SubscriptionStatus::Expired(expiration)),
        Some(_) => Ok(SubscriptionStatus::Live),
        None => Err(GolemError::not_found(format!(
            "{} subscription {id} not found",
            kind_name(kind)
        ))),
    }
}

/// 404 unless `id` is a live subscription of `kind` owned by `owner` (an
/// expired one is 404 too, as the original answers its events).
pub(crate) fn check_subscription(
    state: &State,
    owner: NodeId,
    kind: SubscriptionKind,
    id: &str,
    current: DateTime<Utc>,
) -> Result<(), GolemError> {
    match owned_subscription(state, owner, kind, id, current)? {
        SubscriptionStatus::Live => Ok(()),
        SubscriptionStatus::Expired(_) => Err(GolemError::not_found(format!(
            "{} subscription {id} not found",
            kind_name(kind)
        ))),
    }
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
            proposal_id: new_id(),
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
    inner: &Inner,
    state: &mut State,
    demand_id: &str,
    offer_id: &str,
) -> Result<(), GolemError> {
    let created = now();
    if let Err(error) = state.check_room(&inner.config.limits, demand_id, 1) {
        tracing::debug!(%demand_id, %offer_id, %error, "match not proposed");
        return Ok(());
    }
    let record = {
        let (Some(demand), Some(offer)) =
            (state.demands.get(demand_id), state.offers.get(offer_id))
        else {
            return Ok(());
        };
        initial_proposal(demand, offer, inner.node_id, created)
    };
    let event = MarketEvent::ProposalEvent {
        event_date: created,
        proposal: record.proposal.clone(),
    };
    state.insert_proposal(&inner.db, record)?;
    state.push_event(&inner.db, demand_id, event)?;
    if let Some(demand) = state.demands.get_mut(demand_id) {
        demand.matched_offers.insert(offer_id.to_string());
    }
    Ok(())
}

/// Match a new demand against every live offer; returns how many matched.
fn match_new_demand(
    inner: &Inner,
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
        add_match(inner, state, demand_id, offer_id)?;
    }
    Ok(matching.len())
}

/// Match a new offer against every live demand; true when any matched.
fn match_new_offer(inner: &Inner, state: &mut State, offer_id: &str) -> Result<bool, GolemError> {
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
        add_match(inner, state, demand_id, offer_id)?;
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
    inner: &Inner,
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
    let limits = &inner.config.limits;
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
    inner.db.save_offer(&entry.stored)?;
    state.insert_offer(entry);
    tracing::debug!(offer_id = %id, provider_id = %origin, "offer learnt");
    Ok(Accepted::New(id))
}

fn apply_unsubscribed(
    inner: &Inner,
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
    let limits = &inner.config.limits;
    let expiration = unsubscribed.expiration.min(current + limits.max_expiration);
    if let Some(known) = state.offers.get(&id) {
        if known.stored.published.offer.provider_id != origin || known.stored.local {
            return Err(GolemError::forbidden(format!(
                "{origin} may not unsubscribe offer {id}"
            )));
        }
        state.remove_offer(&id);
        inner.db.delete_offer(&id)?;
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
        inner.db.save_tombstone(vacant.key(), &tombstone)?;
        vacant.insert(tombstone);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::MarketSettings;

    #[test]
    fn a_requested_expiry_beyond_the_cap_is_a_bad_request() {
        let limits = MarketSettings::default()
            .to_config()
            .unwrap_or_else(|error| panic!("{error}"))
            .limits;
        let current = now();
        let properties = |millis: serde_json::Value| {
            Properties::from_json(serde_json::json!({ EXPIRATION_PROPERTY: millis }))
                .unwrap_or_else(|error| panic!("{error}"))
        };
        let soon = current.timestamp_millis() + 3_600_000;
        assert!(check_requested_expiration(&properties(soon.into()), &limits, current).is_ok());
        let none = Properties::from_json(serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
        assert!(check_requested_expiration(&none, &limits, current).is_ok());
        for far in [
            serde_json::json!(4_102_444_800_000i64),
            serde_json::json!(1e300),
            serde_json::json!("tomorrow"),
        ] {
            let error =
                check_requested_expiration(&properties(far.clone()), &limits, current).unwrap_err();
            assert_eq!(error.code, golem_model::ErrorCode::BadRequest, "{far}");
        }
        let error =
            check_requested_expiration(&properties(4_102_444_800_000i64.into()), &limits, current)
                .unwrap_err();
        assert!(
            error.message.contains("max-expiration-secs"),
            "{}",
            error.message
        );
    }
}
