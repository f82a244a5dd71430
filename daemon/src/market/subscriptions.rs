//! Offers and demands of this node: subscribing, listing, unsubscribing and
//! taking the events of a subscription. Each is a message to the market
//! actor; the long-poll of events waits outside it.

use std::time::Duration;

use actix::{ActorFutureExt, Context, Handler, Message, ResponseActFuture};
use chrono::{DateTime, Utc};
use golem_model::market::{Demand, DemandOfferBase, MarketEvent, Offer, PublishedOffer};
use golem_model::properties::Properties;
use golem_model::{ErrorCode, GolemError, NodeId};

use super::actor::MarketActor;
use super::matching::{match_new_demand, match_new_offer};
use super::ownership::{check_subscription, SubscriptionKind};
use super::records::{now, parse_body_once, ParsedBody, StoredDemand, StoredOffer};
use super::state::{DemandEntry, OfferEntry};
use super::MarketService;

/// The property by which a requestor or provider asks for an expiry (unix ms).
const EXPIRATION_PROPERTY: &str = "golem.srv.comp.expiration";

/// 400 when `properties` ask for an expiry beyond the market's cap.
fn check_requested_expiration(
    properties: &Properties,
    limits: &super::settings::MarketLimits,
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

/// `POST /offers`: an offer the REST worker has already parsed and checked.
#[derive(Message)]
#[rtype(result = "Result<String, GolemError>")]
pub(crate) struct SubscribeOffer {
    pub entry: OfferEntry,
}

/// `POST /demands`: a demand the REST worker has already parsed and checked
/// and answered (sent without waiting: a demand's first proposal is what a
/// requestor waits for, and the answer costs a wake-up of the REST worker).
#[derive(Message)]
#[rtype(result = "Result<String, GolemError>")]
pub(crate) struct SubscribeDemand {
    pub entry: DemandEntry,
}

/// What a new offer or demand is checked against before it reaches the
/// actor: the REST worker parses the body (properties, constraints) and
/// checks it here, so a bad one is refused at once without a message to the
/// actor, and the actor receives a ready entry and only stores and matches
/// it. Nothing here reads or changes the market's state.
#[derive(Clone)]
pub(crate) struct NewSubscriptions {
    pub node_id: NodeId,
    pub subscription_ttl: chrono::Duration,
    pub limits: super::settings::MarketLimits,
}

impl NewSubscriptions {
    /// Refuse a subscription for another identity or with a bad body.
    fn check(
        &self,
        owner: NodeId,
        what: &str,
        body: DemandOfferBase,
    ) -> Result<(ParsedBody, DateTime<Utc>), GolemError> {
        if owner != self.node_id {
            return Err(GolemError::forbidden(format!(
                "{what} can only be published for this node's identity"
            )));
        }
        let parsed = parse_body_once(body)?;
        let created = now();
        check_requested_expiration(&parsed.properties, &self.limits, created)?;
        Ok((parsed, created))
    }

    pub(crate) fn offer(
        &self,
        owner: NodeId,
        body: DemandOfferBase,
    ) -> Result<OfferEntry, GolemError> {
        let (parsed, created) = self.check(owner, "offers", body)?;
        let offer = Offer {
            properties: parsed.properties,
            constraints: parsed.text,
            offer_id: golem_model::ids::new_id(),
            provider_id: owner,
            timestamp: created,
        };
        let stored = StoredOffer {
            published: PublishedOffer {
                offer,
                expiration: created + self.subscription_ttl,
            },
            local: true,
            active: true,
        };
        Ok(OfferEntry::with_constraint(stored, parsed.constraint))
    }

    pub(crate) fn demand(
        &self,
        owner: NodeId,
        body: DemandOfferBase,
    ) -> Result<DemandEntry, GolemError> {
        let (parsed, created) = self.check(owner, "demands", body)?;
        let stored = StoredDemand {
            demand: Demand {
                properties: parsed.properties,
                constraints: parsed.text,
                demand_id: golem_model::ids::new_id(),
                requestor_id: owner,
                timestamp: created,
            },
            expiration: created + self.subscription_ttl,
            active: true,
        };
        Ok(DemandEntry::with_constraint(stored, parsed.constraint))
    }
}

/// `GET /offers`.
#[derive(Message)]
#[rtype(result = "Result<Vec<Offer>, GolemError>")]
pub(crate) struct ListOffers {
    pub owner: NodeId,
}

/// `GET /demands`.
#[derive(Message)]
#[rtype(result = "Result<Vec<Demand>, GolemError>")]
pub(crate) struct ListDemands {
    pub owner: NodeId,
}

/// `DELETE /offers/{id}` or `DELETE /demands/{id}`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct Unsubscribe {
    pub owner: NodeId,
    pub kind: SubscriptionKind,
    pub id: String,
}

/// One look of `GET /offers|demands/{id}/events`: up to `max` pending events,
/// removed as they are taken.
#[derive(Message)]
#[rtype(result = "Result<Vec<MarketEvent>, GolemError>")]
pub(crate) struct TakeEvents {
    pub owner: NodeId,
    pub kind: SubscriptionKind,
    pub id: String,
    pub max: usize,
}

impl MarketService {
    pub async fn subscribe_offer(
        &self,
        owner: NodeId,
        body: DemandOfferBase,
    ) -> Result<String, GolemError> {
        let entry = self.new_subscriptions.offer(owner, body)?;
        self.ask(SubscribeOffer { entry }).await
    }

    pub async fn subscribe_demand(
        &self,
        owner: NodeId,
        body: DemandOfferBase,
    ) -> Result<String, GolemError> {
        let entry = self.new_subscriptions.demand(owner, body)?;
        let id = entry.stored.demand.demand_id.clone();
        // Checked here, so only storing can fail in the actor (logged there):
        // answer without waiting for it. Every later call about this demand
        // is a message queued behind this one, or finds its event queue open.
        self.tell(SubscribeDemand { entry })?;
        Ok(id)
    }

    pub async fn list_offers(&self, owner: NodeId) -> Result<Vec<Offer>, GolemError> {
        self.ask(ListOffers { owner }).await
    }

    pub async fn list_demands(&self, owner: NodeId) -> Result<Vec<Demand>, GolemError> {
        self.ask(ListDemands { owner }).await
    }

    pub async fn unsubscribe_offer(&self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let kind = SubscriptionKind::Offer;
        let id = id.to_string();
        self.ask(Unsubscribe { owner, kind, id }).await
    }

    pub async fn unsubscribe_demand(&self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let kind = SubscriptionKind::Demand;
        let id = id.to_string();
        self.ask(Unsubscribe { owner, kind, id }).await
    }

    /// Long-poll the events of a subscription: returns as soon as there is at
    /// least one, or `[]` after `timeout`. Each event is delivered once.
    pub async fn collect_events(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        id: &str,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<MarketEvent>, GolemError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.signals.events.subscribe();
        crate::long_poll::until_found(deadline, &mut changed, || async move {
            // An open queue of the caller answers without the actor.
            match self.events.take_open(owner, kind, id, now(), max) {
                Some(taken) => super::state::delivered(&self.db, id, taken),
                None => {
                    let id = id.to_string();
                    self.ask(TakeEvents {
                        owner,
                        kind,
                        id,
                        max,
                    })
                    .await
                }
            }
        })
        .await
    }
}

impl MarketActor {
    fn record_offer(&mut self, entry: OfferEntry) -> Result<String, GolemError> {
        let id = entry.id().to_string();
        self.core.db.save_offer(&entry.stored)?;
        self.state.insert_offer(entry);
        if match_new_offer(&self.core, &mut self.state, &id)? {
            self.core.signals.bump_events();
        }
        self.core.signals.bump_catalogue();
        Ok(id)
    }

    /// Store and match a new demand; returns its id and subnet.
    fn record_demand(
        &mut self,
        entry: DemandEntry,
    ) -> Result<(String, Option<String>), GolemError> {
        let id = entry.stored.demand.demand_id.clone();
        let subnet = entry.subnet.clone();
        self.core.db.save_demand(&entry.stored)?;
        self.state.insert_demand(entry);
        let matched = match_new_demand(&self.core, &mut self.state, &id)?;
        if matched > 0 {
            self.core.signals.bump_events();
        }
        self.core.signals.bump_catalogue();
        tracing::info!(demand_id = %id, ?subnet, matched, "demand subscribed");
        Ok((id, subnet))
    }

    fn list_offers(&self, owner: NodeId) -> Vec<Offer> {
        let current = now();
        let mut offers: Vec<Offer> = self
            .state
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

    fn list_demands(&self, owner: NodeId) -> Vec<Demand> {
        let current = now();
        let mut demands: Vec<Demand> = self
            .state
            .demands
            .values()
            .filter(|entry| entry.is_live(current) && entry.stored.demand.requestor_id == owner)
            .map(|entry| entry.stored.demand.clone())
            .collect();
        demands.sort_by_key(|demand| demand.timestamp);
        demands
    }

    /// End offer `id`; returns its subnet (to announce the unsubscription on).
    fn unsubscribe_offer(&mut self, owner: NodeId, id: &str) -> Result<Option<String>, GolemError> {
        let entry = self
            .state
            .offers
            .get_mut(id)
            .filter(|entry| entry.stored.local && entry.stored.published.offer.provider_id == owner)
            .ok_or_else(|| GolemError::not_found(format!("offer {id} not found")))?;
        if !entry.stored.active {
            return Err(GolemError::new(
                ErrorCode::Gone,
                format!("offer {id} already unsubscribed"),
            ));
        }
        if entry.stored.published.expiration <= now() {
            // As the original: an expired subscription is gone (410).
            return Err(GolemError::new(
                ErrorCode::Gone,
                format!("offer {id} has expired; subscribe a new one"),
            ));
        }
        entry.stored.active = false;
        self.core.db.save_offer(&entry.stored)?;
        let subnet = entry.subnet.clone();
        self.state.drop_events(&self.core.db, id)?;
        self.core.signals.bump_events();
        tracing::info!(offer_id = %id, "offer unsubscribed");
        Ok(subnet)
    }

    fn unsubscribe_demand(&mut self, owner: NodeId, id: &str) -> Result<(), GolemError> {
        let entry = self
            .state
            .demands
            .get_mut(id)
            .filter(|entry| entry.stored.demand.requestor_id == owner)
            .ok_or_else(|| GolemError::not_found(format!("demand {id} not found")))?;
        if !entry.stored.active {
            return Err(GolemError::new(
                ErrorCode::Gone,
                format!("demand {id} already unsubscribed"),
            ));
        }
        if entry.stored.expiration <= now() {
            return Err(GolemError::new(
                ErrorCode::Gone,
                format!("demand {id} has expired; subscribe a new one"),
            ));
        }
        entry.stored.active = false;
        self.core.db.save_demand(&entry.stored)?;
        self.state.drop_events(&self.core.db, id)?;
        self.core.signals.bump_events();
        tracing::info!(demand_id = %id, "demand unsubscribed");
        Ok(())
    }
}

impl Handler<SubscribeOffer> for MarketActor {
    type Result = ResponseActFuture<Self, Result<String, GolemError>>;

    /// Store and match the offer, listen on its subnet, then answer (once
    /// flushed) and broadcast it.
    fn handle(&mut self, message: SubscribeOffer, _ctx: &mut Context<Self>) -> Self::Result {
        let subnet = message.entry.subnet.clone();
        let recorded = self.record_offer(message.entry).map(|id| (id, subnet));
        let (id, subnet) = match recorded {
            Ok(recorded) => recorded,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        tracing::info!(offer_id = %id, ?subnet, "offer subscribed");
        // Subscriptions ride on sled's periodic flush: after a crash a client
        // may see a 404 and subscribe again.
        Box::pin(
            self.listen(subnet.clone())
                .map(move |_, actor: &mut MarketActor, ctx| {
                    actor.announce(ctx, Some(&subnet), Some(id.as_str()));
                    Ok(id)
                }),
        )
    }
}

impl Handler<SubscribeDemand> for MarketActor {
    type Result = ResponseActFuture<Self, Result<String, GolemError>>;

    /// Store and match the demand; a subnet we did not listen to yet: listen,
    /// and ask the peers for their offers at once rather than waiting for
    /// their re-announcement.
    fn handle(&mut self, message: SubscribeDemand, _ctx: &mut Context<Self>) -> Self::Result {
        let id = message.entry.stored.demand.demand_id.clone();
        let (id, subnet) = match self.record_demand(message.entry) {
            Ok(subscribed) => subscribed,
            Err(error) => {
                // The client already has the id: it will see a 404 for it.
                tracing::error!(demand_id = %id, %error, "demand could not be stored");
                return Box::pin(actix::fut::ready(Err(error)));
            }
        };
        Box::pin(
            self.listen(subnet)
                .map(move |new_topic, actor: &mut MarketActor, ctx| {
                    if new_topic {
                        actor.pull_offers_from_connected_peers(ctx);
                    }
                    Ok(id)
                }),
        )
    }
}

impl Handler<ListOffers> for MarketActor {
    type Result = Result<Vec<Offer>, GolemError>;

    fn handle(&mut self, message: ListOffers, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.list_offers(message.owner))
    }
}

impl Handler<ListDemands> for MarketActor {
    type Result = Result<Vec<Demand>, GolemError>;

    fn handle(&mut self, message: ListDemands, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.list_demands(message.owner))
    }
}

impl Handler<Unsubscribe> for MarketActor {
    type Result = ResponseActFuture<Self, Result<(), GolemError>>;

    /// End the subscription; an offer's end is announced once it is flushed.
    fn handle(&mut self, message: Unsubscribe, _ctx: &mut Context<Self>) -> Self::Result {
        let Unsubscribe { owner, kind, id } = message;
        let announce = match kind {
            SubscriptionKind::Offer => self.unsubscribe_offer(owner, &id).map(Some),
            SubscriptionKind::Demand => self.unsubscribe_demand(owner, &id).map(|()| None),
        };
        let flushed = self.core.after_flush(announce);
        Box::pin(actix::fut::wrap_future(flushed).map(
            move |announce, actor: &mut MarketActor, ctx| {
                if let Some(subnet) = announce? {
                    actor.announce(ctx, Some(&subnet), Some(id.as_str()));
                }
                Ok(())
            },
        ))
    }
}

impl Handler<TakeEvents> for MarketActor {
    type Result = Result<Vec<MarketEvent>, GolemError>;

    /// Deliveries ride on sled's periodic flush: after a crash a client may
    /// see an event again.
    fn handle(&mut self, message: TakeEvents, _ctx: &mut Context<Self>) -> Self::Result {
        let TakeEvents {
            owner,
            kind,
            id,
            max,
        } = message;
        check_subscription(&self.state, owner, kind, &id, now())?;
        self.state.take_events(&self.core.db, &id, max)
    }
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

    fn new_subscriptions(node_id: NodeId) -> NewSubscriptions {
        let config = MarketSettings::default()
            .to_config()
            .unwrap_or_else(|error| panic!("{error}"));
        NewSubscriptions {
            node_id,
            subscription_ttl: config.subscription_ttl,
            limits: config.limits,
        }
    }

    fn body(properties: serde_json::Value, constraints: &str) -> DemandOfferBase {
        DemandOfferBase {
            properties,
            constraints: constraints.to_string(),
        }
    }

    #[test]
    fn a_new_demand_is_checked_and_parsed_before_the_actor() {
        let us = NodeId::from_bytes([1; 20]);
        let rules = new_subscriptions(us);
        let good = serde_json::json!({ "golem.node.debug.subnet": "s" });
        let entry = rules
            .demand(us, body(good.clone(), "(golem.inf.cpu.threads>=1)"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(entry.subnet.as_deref(), Some("s"));
        assert_eq!(entry.stored.demand.requestor_id, us);
        assert_eq!(
            entry.constraint,
            super::super::records::parse_constraint("(golem.inf.cpu.threads>=1)")
                .unwrap_or_else(|error| panic!("{error}"))
        );
        let offer = rules
            .offer(us, body(good.clone(), "()"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(offer.subnet.as_deref(), Some("s"));

        let refusals = [
            (
                NodeId::from_bytes([2; 20]),
                body(good.clone(), "()"),
                ErrorCode::Forbidden,
            ),
            (
                us,
                body(good.clone(), "(golem.inf.cpu.threads>="),
                ErrorCode::BadRequest,
            ),
            (
                us,
                body(serde_json::json!([1, 2]), "()"),
                ErrorCode::BadRequest,
            ),
            (
                us,
                body(
                    serde_json::json!({ EXPIRATION_PROPERTY: 4_102_444_800_000i64 }),
                    "()",
                ),
                ErrorCode::BadRequest,
            ),
        ];
        for (owner, body, code) in refusals {
            let shown = format!("{body:?}");
            let Err(error) = rules.demand(owner, body) else {
                panic!("accepted {shown}");
            };
            assert_eq!(error.code, code, "{shown}: {}", error.message);
        }
    }
}
